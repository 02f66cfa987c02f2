//! `[[providers]]`: OpenID Connect providers people may sign in with, and the two keys that go
//! with them, `auth.auto_redirect` and `server.public_url`. Everything is checked here but
//! reachability: a provider down at start does not stop sessiongate (`check` reports it).

use std::path::PathBuf;

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
    check_issuer(&key("issuer"), &p.issuer)?;
    if p.client_id.is_empty() || p.client_id.chars().any(char::is_control) {
        return Err(invalid(
            key("client_id"),
            "must be the client id the provider gave (not empty)",
        ));
    }
    let client_secret = match (p.client_secret, &p.client_secret_file) {
        (Some(secret), None) => secret,
        (None, Some(path)) => read_secret(&key("client_secret_file"), path)?,
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("client_secret"),
                "set client_secret or client_secret_file, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                key("client_secret_file"),
                "is missing: set client_secret_file (or client_secret) to the secret the provider gave",
            ));
        }
    };
    let scopes = scopes(&key("scopes"), p.scopes)?;
    let username_claim = claim_name(&key("username_claim"), p.username_claim, "email")?;
    let groups_claim = match p.groups_claim {
        None => None,
        Some(c) => Some(claim_name(&key("groups_claim"), Some(c), "")?),
    };
    let allowed_domains = p
        .allowed_domains
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(j, d)| {
            DomainRule::parse(d).ok_or_else(|| invalid(format!("providers[{i}].allowed_domains[{j}]"), format!("{d:?} is not a domain: write \"example.com\" for that domain, \".example.com\" for its subdomains")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_groups = p.allowed_groups.unwrap_or_default();
    if !allowed_groups.is_empty() && groups_claim.is_none() {
        return Err(invalid(
            key("allowed_groups"),
            "needs groups_claim: the claim the provider puts the groups in",
        ));
    }
    if let Some(g) = allowed_groups.iter().find(|g| !is_group_name(g)) {
        return Err(invalid(
            key("allowed_groups"),
            format!("{g:?} is not a group name (letters, digits and -_. only)"),
        ));
    }
    let ca = p.ca.map(PathBuf::from);
    if let Some(path) = &ca {
        crate::http::tls::client_config(Some(path)).map_err(|e| invalid(key("ca"), e))?;
    }
    Ok(ProviderConfig {
        id: p.id,
        name: name.to_string(),
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
