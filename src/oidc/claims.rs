//! Who a verified ID token names, by the provider's rules: the subject (the key), the name
//! from `username_claim`, the groups from `groups_claim`, and the `allowed_*` checks. The
//! token's signature, issuer, audience, times and nonce are checked before (see `provider`).

use serde_json::{Map, Value};

use super::config::ProviderConfig;
use crate::gate::rules::is_group_name;

/// A provider's user, as one sign-in showed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's key for the user: never reassigned, unlike an email.
    pub sub: String,
    /// The `username_claim`'s value.
    pub username: String,
    /// The `groups_claim`'s values that are group names (others are dropped and logged).
    pub groups: Vec<String>,
}

/// Why a verified token's user may not sign in here. Shown to the person and logged (the
/// provider with it); never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    #[error("the provider sent no usable subject (sub)")]
    Subject,
    #[error("the provider sent no {0:?} claim to name you by")]
    NoUsername(String),
    #[error(
        "the provider's {0:?} claim is not a name that can be passed on (visible ASCII, at most 256 characters)"
    )]
    BadUsername(String),
    #[error("the email address is not one address of the form local@domain")]
    BadEmail,
    #[error("the provider has not verified the email address")]
    EmailUnverified,
    #[error("the provider sent no email address, and only some email domains may sign in")]
    NoEmail,
    #[error("the email address is not in a domain allowed here")]
    Domain,
    #[error("this account is not among the users allowed here")]
    User,
    #[error("this account is in none of the groups allowed here")]
    Group,
}

/// The user `claims` (a verified ID token's payload) names, if `config` lets them in.
pub fn identify(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
) -> Result<Identity, NotAllowed> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
        .ok_or(NotAllowed::Subject)?;
    let username = username(config, claims)?;
    check_email(config, claims)?;
    if !config.allowed_users.is_empty() && !config.allowed_users.contains(&username) {
        return Err(NotAllowed::User);
    }
    let groups = groups(config, claims);
    if !config.allowed_groups.is_empty()
        && !groups.iter().any(|g| config.allowed_groups.contains(g))
    {
        return Err(NotAllowed::Group);
    }
    Ok(Identity {
        sub: sub.to_string(),
        username,
        groups,
    })
}

/// The name `username_claim` gives, fit for the identity header.
fn username(config: &ProviderConfig, claims: &Map<String, Value>) -> Result<String, NotAllowed> {
    let claim = &config.username_claim;
    let value = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| NotAllowed::NoUsername(claim.clone()))?;
    let header_safe = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !header_safe {
        return Err(NotAllowed::BadUsername(claim.clone()));
    }
    Ok(value.to_string())
}

/// The email rules: whenever the email names the user or is checked against
/// `allowed_domains`, it must be exactly one `local@domain` that the provider verified, and
/// its domain must be allowed.
fn check_email(config: &ProviderConfig, claims: &Map<String, Value>) -> Result<(), NotAllowed> {
    let names_user = config.username_claim == "email";
    if !names_user && config.allowed_domains.is_empty() {
        return Ok(());
    }
    let Some(email) = claims.get("email").and_then(Value::as_str) else {
        return Err(NotAllowed::NoEmail);
    };
    let domain = email_domain(email).ok_or(NotAllowed::BadEmail)?;
    if !verified(claims.get("email_verified")) {
        return Err(NotAllowed::EmailUnverified);
    }
    if !config.allowed_domains.is_empty()
        && !config.allowed_domains.iter().any(|d| d.admits(&domain))
    {
        return Err(NotAllowed::Domain);
    }
    Ok(())
}

/// `email_verified` is a boolean; some providers send the string "true".
fn verified(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
        || matches!(value, Some(Value::String(s)) if s == "true")
}

/// The domain of an address that is exactly one `local@domain`, lower-cased and without a
/// trailing dot; `None` for anything else: a second `@`, an empty part, quotes, spaces or
/// other characters an address of a person does not need. Being strict here is what keeps
/// `a@evil.com@example.com` out: whatever part another parser would take as the domain, this
/// one takes none.
pub fn email_domain(email: &str) -> Option<String> {
    let (local, domain) = email.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return None;
    }
    let domain = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let domain_ok = domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok);
    domain_ok.then_some(domain)
}

/// The group names in `groups_claim` (an array of strings, or one string). Values that are no
/// group name (a Keycloak full path like "/staff", say) are dropped: fewer groups only ever
/// mean less access.
fn groups(config: &ProviderConfig, claims: &Map<String, Value>) -> Vec<String> {
    let Some(claim) = &config.groups_claim else {
        return Vec::new();
    };
    let values: Vec<&str> = match claims.get(claim) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    let mut groups: Vec<String> = Vec::new();
    for value in values {
        if !is_group_name(value) {
            tracing::debug!(
                provider = config.id.as_str(),
                group = value,
                "a group from the provider is not a group name (letters, digits and -_. only); ignored"
            );
            continue;
        }
        if !groups.iter().any(|g| g == value) {
            groups.push(value.to_string());
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::config::DomainRule;
    use serde_json::json;

    fn provider(edit: impl FnOnce(&mut ProviderConfig)) -> ProviderConfig {
        let mut p = ProviderConfig {
            id: "corp".into(),
            name: "Corp".into(),
            issuer: "https://id.example.com".into(),
            client_id: "c".into(),
            client_secret: "s".to_string().into(),
            scopes: vec!["openid".into()],
            username_claim: "email".into(),
            groups_claim: Some("groups".into()),
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            logout_at_provider: false,
            ca: None,
        };
        edit(&mut p);
        p
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_one_plain_address_has_a_domain() {
        assert_eq!(
            email_domain("Ann@Example.COM.").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            email_domain("a.b+c@x.example.com").as_deref(),
            Some("x.example.com")
        );
        for bad in [
            "a@evil.com@example.com",
            "\"a@evil.com\"@example.com",
            "a @example.com",
            "@example.com",
            "a@",
            "a@example",
            "a@.example.com",
            "a@example..com",
            "a..b@example.com",
            "a@exa mple.com",
            "a@example.com ",
            "a\0@example.com",
            "a(x)@example.com",
            "a@-example.com",
        ] {
            assert_eq!(email_domain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_verified_address_in_an_allowed_domain_signs_in() {
        let p = provider(|p| p.allowed_domains = vec![DomainRule::parse("example.com").unwrap()]);
        let ann = claims(
            json!({"sub": "1", "email": "ann@example.com", "email_verified": true, "groups": ["staff", "/full/path", "staff"]}),
        );
        assert_eq!(
            identify(&p, &ann),
            Ok(Identity {
                sub: "1".into(),
                username: "ann@example.com".into(),
                groups: vec!["staff".into()],
            })
        );
    }

    #[test]
    fn the_domain_and_verification_rules_refuse() {
        let p = provider(|p| p.allowed_domains = vec![DomainRule::parse(".example.com").unwrap()]);
        let cases = [
            (
                json!({"sub": "1", "email": "a@evil.com@x.example.com", "email_verified": true}),
                NotAllowed::BadEmail,
            ),
            (
                json!({"sub": "1", "email": "a@x.example.com.evil.com", "email_verified": true}),
                NotAllowed::Domain,
            ),
            (
                json!({"sub": "1", "email": "a@example.com", "email_verified": true}),
                NotAllowed::Domain,
            ),
            (
                json!({"sub": "1", "email": "a@x.example.com", "email_verified": false}),
                NotAllowed::EmailUnverified,
            ),
            (
                json!({"sub": "1", "email": "a@x.example.com"}),
                NotAllowed::EmailUnverified,
            ),
            (json!({"sub": "1"}), NotAllowed::NoUsername("email".into())),
            (
                json!({"email": "a@x.example.com", "email_verified": true}),
                NotAllowed::Subject,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(identify(&p, &claims(c.clone())), Err(want), "{c}");
        }
        let ok = claims(json!({"sub": "1", "email": "a@x.example.com", "email_verified": "true"}));
        assert!(identify(&p, &ok).is_ok());
    }

    #[test]
    fn other_claims_name_users_and_the_lists_filter() {
        let p = provider(|p| {
            p.username_claim = "preferred_username".into();
            p.allowed_users = vec!["ann".into()];
        });
        // The email is neither the name nor checked: an unverified one does not matter.
        let ann = claims(
            json!({"sub": "1", "preferred_username": "ann", "email": "x", "email_verified": false}),
        );
        assert_eq!(identify(&p, &ann).unwrap().username, "ann");
        let bob = claims(json!({"sub": "2", "preferred_username": "bob"}));
        assert_eq!(identify(&p, &bob), Err(NotAllowed::User));
        let odd = claims(json!({"sub": "3", "preferred_username": "Jos\u{e9}"}));
        assert_eq!(
            identify(&p, &odd),
            Err(NotAllowed::BadUsername("preferred_username".into()))
        );
        let none = claims(json!({"sub": "4"}));
        assert_eq!(
            identify(&p, &none),
            Err(NotAllowed::NoUsername("preferred_username".into()))
        );

        let g = provider(|p| {
            p.username_claim = "sub".into();
            p.allowed_groups = vec!["staff".into()];
        });
        let staff = claims(json!({"sub": "5", "groups": "staff"}));
        assert_eq!(
            identify(&g, &staff).unwrap().groups,
            vec!["staff".to_string()]
        );
        let other = claims(json!({"sub": "6", "groups": ["ops"]}));
        assert_eq!(identify(&g, &other), Err(NotAllowed::Group));
    }
}
