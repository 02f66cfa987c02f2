//! A `[[providers]]` entry, validated (by `config::providers`): what a provider is built from.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;

/// One provider as configured.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Letters, digits, `-` and `_`: in the callback URL and in its users' keys and names.
    pub id: String,
    /// What the button says: "Sign in with {name}".
    pub name: String,
    /// As written; discovery reads `{issuer}/.well-known/openid-configuration`, and the ID
    /// token's `iss` must be exactly this.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Always holds `openid`.
    pub scopes: Vec<String>,
    /// The claim that names the user (`email` by default).
    pub username_claim: String,
    /// The claim whose values become the user's groups.
    pub groups_claim: Option<String>,
    pub allowed_domains: Vec<DomainRule>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// Signing out also ends the session at the provider (its `end_session_endpoint`).
    pub logout_at_provider: bool,
    /// CA certificates to trust for this provider instead of the bundled roots.
    pub ca: Option<PathBuf>,
}

/// An `allowed_domains` entry: `example.com` (that domain exactly) or `.example.com` (any
/// subdomain of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRule {
    Exactly(String),
    Below(String),
}

impl DomainRule {
    /// The rule `entry` writes, lower-cased; `None` if it is not a domain.
    pub fn parse(entry: &str) -> Option<DomainRule> {
        let (below, domain) = match entry.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let domain = domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if domain.len() > 253 || !domain.split('.').all(label_ok) {
            return None;
        }
        Some(if below {
            DomainRule::Below(domain)
        } else {
            DomainRule::Exactly(domain)
        })
    }

    /// Whether `domain` (already lower-cased, without a trailing dot) passes.
    pub fn admits(&self, domain: &str) -> bool {
        match self {
            DomainRule::Exactly(d) => domain == d,
            DomainRule::Below(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl ProviderConfig {
    /// A fingerprint of what decides who this provider's users are: a reload that changes the
    /// issuer, the client or any of the claims and `allowed_*` lists ends the sessions made
    /// under the old ones (they sign in again under the new). Its name, scopes or logout
    /// setting change nothing about who someone is.
    pub fn fingerprint(&self) -> u32 {
        let mut h = sha2::Sha256::new();
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        field(&self.issuer);
        field(&self.client_id);
        field(self.client_secret.expose_secret());
        field(&self.username_claim);
        field(self.groups_claim.as_deref().unwrap_or("\0"));
        for d in &self.allowed_domains {
            match d {
                DomainRule::Exactly(d) => field(d),
                DomainRule::Below(d) => field(&format!(".{d}")),
            }
        }
        field("\0users");
        self.allowed_users.iter().for_each(|u| field(u));
        field("\0groups");
        self.allowed_groups.iter().for_each(|g| field(g));
        let digest = h.finalize();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_rules_match_whole_labels_only() {
        let exact = DomainRule::parse("Example.COM.").unwrap();
        assert_eq!(exact, DomainRule::Exactly("example.com".into()));
        assert!(exact.admits("example.com"));
        for no in [
            "a.example.com",
            "evilexample.com",
            "example.com.evil.com",
            "com",
        ] {
            assert!(!exact.admits(no), "{no}");
        }
        let below = DomainRule::parse(".example.com").unwrap();
        assert!(below.admits("a.example.com"));
        assert!(below.admits("x.y.example.com"));
        for no in [
            "example.com",
            "evilexample.com",
            "a.example.com.evil.com",
            ".example.com",
        ] {
            assert!(!below.admits(no), "{no}");
        }
        for bad in ["", ".", "a..b", "exa mple.com", "a@b.com", "..example.com"] {
            assert_eq!(DomainRule::parse(bad), None, "{bad:?}");
        }
    }
}
