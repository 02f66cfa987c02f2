//! `[[providers]]`: OpenID Connect providers people may sign in with, and the two keys that go
//! with them, `auth.auto_redirect` and `server.public_url`. Everything is checked here but
//! reachability: a provider down at start does not stop sessiongate (`check` reports it).

use std::path::PathBuf;

use secrecy::SecretString;

use crate::config::error::{ConfigError, invalid};
use crate::config::file;
use crate::config::files::read_secret;
use crate::config::session::{SameSite, SessionConfig};
use crate::gate::policy::UserConfig;
use crate::gate::rules::is_group_name;
use crate::oidc::config::{DomainRule, ProviderConfig};

pub(super) fn validate_providers(
    list: Vec<file::Provider>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (i, p) in list.into_iter().enumerate() {
        let provider = validate_provider(i, p)?;
        if providers.iter().any(|other| other.id == provider.id) {
            return Err(invalid(
                format!("providers[{i}].id"),
                format!("provider {:?} is configured twice", provider.id),
            ));
        }
        providers.push(provider);
    }
    Ok(providers)
}

fn validate_provider(i: usize, p: file::Provider) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let name = check_names(i, &p)?;
    check_issuer(&key("issuer"), &p.issuer)?;
    let client_secret = client_secret(i, p.client_secret, p.client_secret_file.as_deref())?;
    let scopes = scopes(&key("scopes"), p.scopes)?;
    let username_claim = claim_name(&key("username_claim"), p.username_claim, "email")?;
    let groups_claim = match p.groups_claim {
        None => None,
        Some(c) => Some(claim_name(&key("groups_claim"), Some(c), "")?),
    };
    let allowed_domains = allowed_domains(i, p.allowed_domains.unwrap_or_default())?;
    let allowed_groups = p.allowed_groups.unwrap_or_default();
    check_allowed_groups(i, &allowed_groups, groups_claim.is_some())?;
    let ca = p.ca.map(PathBuf::from);
    if let Some(path) = &ca {
        crate::http::tls::client_config(Some(path)).map_err(|e| invalid(key("ca"), e))?;
    }
    Ok(ProviderConfig {
        id: p.id,
        name,
        issuer: p.issuer,
        client_id: p.client_id,
        client_secret,
        scopes,
        username_claim,
        groups_claim,
        allowed_domains,
        allowed_users: p.allowed_users.unwrap_or_default(),
        allowed_groups,
        logout_at_provider: p.logout_at_provider.unwrap_or(false),
        ca,
    })
}

/// `id` (in URLs and user names), `name` (on the button) and `client_id`; the name, trimmed.
fn check_names(i: usize, p: &file::Provider) -> Result<String, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let id_ok = !p.id.is_empty()
        && p.id.len() <= 64
        && p.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(invalid(
            key("id"),
            format!(
                "{:?} must be 1 to 64 letters, digits, - and _ (it is in URLs and user names)",
                p.id
            ),
        ));
    }
    let name = p.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(
            key("name"),
            "must be 1 to 64 characters (the button says \"Sign in with NAME\")",
        ));
    }
    if p.client_id.is_empty() || p.client_id.chars().any(char::is_control) {
        return Err(invalid(
            key("client_id"),
            "must be the client id the provider gave (not empty)",
        ));
    }
    Ok(name.to_string())
}

/// `client_secret`, or the file `client_secret_file` names: exactly one of them.
fn client_secret(
    i: usize,
    secret: Option<SecretString>,
    file: Option<&str>,
) -> Result<SecretString, ConfigError> {
    match (secret, file) {
        (Some(secret), None) => Ok(secret),
        (None, Some(path)) => read_secret(&format!("providers[{i}].client_secret_file"), path),
        (Some(_), Some(_)) => Err(invalid(
            format!("providers[{i}].client_secret"),
            "set client_secret or client_secret_file, not both",
        )),
        (None, None) => Err(invalid(
            format!("providers[{i}].client_secret_file"),
            "is missing: set client_secret_file (or client_secret) to the secret the provider gave",
        )),
    }
}

fn allowed_domains(i: usize, written: Vec<String>) -> Result<Vec<DomainRule>, ConfigError> {
    written
        .iter()
        .enumerate()
        .map(|(j, d)| {
            DomainRule::parse(d).ok_or_else(|| {
                invalid(
                    format!("providers[{i}].allowed_domains[{j}]"),
                    format!("{d:?} is not a domain: write \"example.com\" for that domain, \".example.com\" for its subdomains"),
                )
            })
        })
        .collect()
}

/// `allowed_groups` are group names, and need a claim to read groups from.
fn check_allowed_groups(i: usize, groups: &[String], claim: bool) -> Result<(), ConfigError> {
    let key = format!("providers[{i}].allowed_groups");
    if !groups.is_empty() && !claim {
        return Err(invalid(
            key,
            "needs groups_claim: the claim the provider puts the groups in",
        ));
    }
    if let Some(g) = groups.iter().find(|g| !is_group_name(g)) {
        return Err(invalid(
            key,
            format!("{g:?} is not a group name (letters, digits and -_. only)"),
        ));
    }
    Ok(())
}

/// An issuer is an https URL without query or fragment; plain http only on this machine (a
/// provider for tests or a try-out), where nobody on the network can change its answers.
fn check_issuer(key: &str, issuer: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(issuer)
        .map_err(|e| invalid(key, format!("{issuer:?} is not a URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty()
    {
        return Err(invalid(
            key,
            format!(
                "{issuer:?} must be an https URL without query or fragment, exactly as the provider names itself (plain http only for a provider on this machine)"
            ),
        ));
    }
    Ok(())
}

fn scopes(key: &str, scopes: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let scopes = scopes.unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(
            key,
            "must include \"openid\" (without it there is no ID token)",
        ));
    }
    if let Some(s) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(invalid(key, format!("{s:?} is not a scope")));
    }
    Ok(scopes)
}

fn claim_name(key: &str, claim: Option<String>, default: &str) -> Result<String, ConfigError> {
    let claim = claim.unwrap_or_else(|| default.to_string());
    if claim.is_empty() || claim.len() > 128 || claim.chars().any(char::is_control) {
        return Err(invalid(key, format!("{claim:?} is not a claim name")));
    }
    Ok(claim)
}

/// No `[[users]]` name may look like a provider's user (`{id}:...`): whoever signs in at that
/// provider could otherwise choose a name there and be taken for the local user.
pub(super) fn check_user_names(
    users: &[UserConfig],
    providers: &[ProviderConfig],
) -> Result<(), ConfigError> {
    for (i, u) in users.iter().enumerate() {
        if let Some(p) = providers.iter().find(|p| {
            u.name
                .strip_prefix(p.id.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
        }) {
            return Err(invalid(
                format!("users[{i}].name"),
                format!(
                    "{:?} starts with \"{}:\", which names users of the provider {:?}; rename the user",
                    u.name, p.id, p.id
                ),
            ));
        }
    }
    Ok(())
}

/// `server.public_url`: the scheme, host and port browsers reach sessiongate at, when an
/// outer proxy changes them; the provider's callback is built on it.
pub(super) fn validate_public_url(url: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(text) = url else {
        return Ok(None);
    };
    let key = "server.public_url";
    let url =
        url::Url::parse(text).map_err(|e| invalid(key, format!("{text:?} is not a URL ({e})")))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(invalid(
            key,
            format!(
                "{text:?} must be like \"https://login.example.com\": a scheme, a host and an optional port, nothing else"
            ),
        ));
    }
    Ok(Some(url.as_str().trim_end_matches('/').to_string()))
}

/// A provider sends the browser back from its own site: a `SameSite=Strict` cookie would not
/// come with it, so every sign-in would restart and the first page after it look signed out.
pub(super) fn check_same_site(
    session: &SessionConfig,
    providers: &[ProviderConfig],
) -> Result<(), ConfigError> {
    if !providers.is_empty() && session.same_site == SameSite::Strict {
        return Err(invalid(
            "session.same_site",
            "\"strict\" cannot be used with [[providers]]: browsers do not send a strict cookie with the provider's redirect back; use \"lax\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
PUBLIC
[upstream]
url = "http://127.0.0.1:3000"
[session]
SESSION
[[providers]]
id = "corp"
name = "Corp"
issuer = "https://id.example.com"
client_id = "c"
client_secret = "s"
EXTRA
"#;

    fn error(public: &str, session: &str, extra: &str) -> String {
        let toml = BASE
            .replace("PUBLIC", public)
            .replace("SESSION", session)
            .replace("EXTRA", extra);
        match Config::from_toml(&toml) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_provider_alone_is_a_way_in() {
        assert_eq!(error("", "", ""), "ok");
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("", "", "scopes = [\"email\"]", "providers[0].scopes"),
            (
                "",
                "",
                "allowed_groups = [\"staff\"]",
                "providers[0].allowed_groups",
            ),
            (
                "",
                "",
                "groups_claim = \"g\"\nallowed_groups = [\"a b\"]",
                "providers[0].allowed_groups",
            ),
            (
                "",
                "",
                "allowed_domains = [\"a@b.com\"]",
                "providers[0].allowed_domains[0]",
            ),
            (
                "",
                "",
                "client_secret_file = \"/x\"",
                "providers[0].client_secret",
            ),
            ("", "same_site = \"strict\"", "", "session.same_site"),
            (
                "public_url = \"https://a.example.com/path\"",
                "",
                "",
                "server.public_url",
            ),
            (
                "",
                "",
                "[[providers]]\nid = \"corp\"\nname = \"Again\"\nissuer = \"https://x.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"",
                "providers[1].id",
            ),
        ];
        for (public, session, extra, key) in cases {
            let e = error(public, session, extra);
            assert!(e.contains(key), "{extra:?}: {e}");
        }
        for (issuer, ok) in [
            ("http://id.example.com", false),
            ("https://id.example.com?x=1", false),
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000/realms/x", true),
        ] {
            let toml = BASE
                .replace("PUBLIC", "")
                .replace("SESSION", "")
                .replace("EXTRA", "")
                .replace("https://id.example.com", issuer);
            assert_eq!(Config::from_toml(&toml).is_ok(), ok, "{issuer}");
        }
        let bad_id = BASE
            .replace("PUBLIC", "")
            .replace("SESSION", "")
            .replace("EXTRA", "")
            .replace("id = \"corp\"", "id = \"co rp\"");
        assert!(
            Config::from_toml(&bad_id)
                .unwrap_err()
                .to_string()
                .contains("providers[0].id")
        );
    }
}
