//! The access policy: the users (password hashes, groups) and the rules, built together from
//! one validated config and swapped whole on reload, so a request always sees one consistent
//! set. It answers two questions: who a session's owner is now, and what a request may do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use sha2::Digest;

use crate::credentials::password::{PasswordHash, dummy_like};
use crate::credentials::totp::TotpSecret;
use crate::gate::rules::{Access, DefaultAccess, Principal, Rule, RuleSet, Target};
use crate::http::paths;
use crate::http::redirect::HostPattern;
use crate::ops::outcome::Outcome;
use crate::session::Revoked;
use crate::session::identity::{Account, Owner, Profile, UserId, UserNames};

/// A `[[users]]` entry, validated: what a policy is built from.
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub password_hash: PasswordHash,
    pub groups: Vec<String>,
    /// With a secret, signing in takes a code from an authenticator app after the password.
    pub totp: Option<TotpSecret>,
}

/// The parts of a validated config a policy is made of, loaded and checked together.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig<'c> {
    pub users: &'c [UserConfig],
    /// `auth.public_paths` (as public rules) followed by `[[rules]]`, and `auth.default`.
    pub rules: &'c RuleSet,
    /// `auth.redirect_hosts`.
    pub redirect_hosts: &'c [HostPattern],
    /// The configured providers' ids and fingerprints: their users' sessions count while their
    /// provider is configured as when they signed in.
    pub providers: &'c [(String, u32)],
}

/// A configured user as the request path needs them.
pub struct User {
    pub id: UserId,
    /// What rules, logs and the app call the user: the `[[users]]` name, or a provider's
    /// user's `{provider id}:{username claim}`.
    pub name: String,
    /// What the stores file their sessions under: the name, or a provider user's key (see
    /// `session::identity::provider_key`).
    pub key: String,
    /// A provider's user: their provider and latest profile. `None`: a configured user.
    pub profile: Option<Arc<Profile>>,
    /// The name, ready for the identity header.
    pub identity: HeaderValue,
    pub groups: Vec<String>,
    /// The groups, comma-separated, ready for the groups header (empty when there are none).
    pub groups_value: HeaderValue,
    pub password_hash: PasswordHash,
    /// With a secret, signing in takes a code after the password.
    pub totp: Option<TotpSecret>,
    /// A fingerprint of `password_hash` and the TOTP secret: sessions made under other
    /// credentials (a new password, a second factor added, changed or removed) are over.
    pub credentials: u32,
}

/// What the session stores know of a user.
impl Account for User {
    fn id(&self) -> UserId {
        self.id
    }

    // The stores file sessions under the key, which for a configured user is the name.
    #[allow(clippy::misnamed_getters)]
    fn name(&self) -> &str {
        &self.key
    }

    fn credentials(&self) -> u32 {
        self.credentials
    }

    fn profile(&self) -> Option<&Profile> {
        self.profile.as_deref()
    }
}

impl User {
    /// The provider user `profile` describes, filed under `key` as `id`, whose sessions count
    /// while their provider's fingerprint is `credentials`. `dummy` stands in for a password
    /// hash they do not have (nothing checks it: no password sign-in finds them).
    pub fn of_provider(
        id: UserId,
        key: &str,
        profile: Arc<Profile>,
        credentials: u32,
        dummy: &PasswordHash,
    ) -> Option<User> {
        Some(User {
            id,
            name: profile.name.clone(),
            key: key.to_string(),
            identity: HeaderValue::from_str(&profile.name).ok()?,
            groups: profile.groups.clone(),
            groups_value: HeaderValue::from_str(&profile.groups.join(",")).ok()?,
            password_hash: dummy.clone(),
            totp: None,
            credentials,
            profile: Some(profile),
        })
    }

    /// Whether this is a provider's user (their groups come from the provider).
    pub fn is_provider_user(&self) -> bool {
        self.profile.is_some()
    }
}

/// What the rules say about a request (`Public`, `Allow`, `LoginRequired` or `Forbidden`), and
/// the rule that said it (`None`: no rule matched, `auth.default` decided).
#[derive(Debug, Clone, Copy)]
pub struct Judgement<'p> {
    pub outcome: Outcome,
    pub rule: Option<&'p Rule>,
}

/// A provider user as built, and the profile it was built from.
type BuiltFrom = (Arc<Profile>, Arc<User>);

pub struct Policy {
    by_name: HashMap<String, Arc<User>>,
    /// Indexed by `UserId`: `None` for names this process knew but the config no longer has.
    by_id: Vec<Option<Arc<User>>>,
    rules: RuleSet,
    /// For each rule, the users its `allow` lets in (groups resolved), sorted; empty for
    /// public and deny rules.
    allowed: Vec<Vec<UserId>>,
    /// Checked for unknown users at login, so that they take as long as known ones.
    dummy: PasswordHash,
    redirect_hosts: Vec<HostPattern>,
    /// Some rule names a host: only then is a request's host looked up.
    host_rules: bool,
    /// The configured providers' fingerprints, by id.
    providers: HashMap<String, u32>,
    /// Where provider users' profiles are (shared by every policy).
    names: Arc<UserNames>,
    /// Provider users as this policy has built them, with the profile each was built from.
    provider_users: Mutex<HashMap<UserId, BuiltFrom>>,
}

impl Policy {
    /// Builds the policy of a validated config. Names are interned in `names`, which outlives
    /// every policy, so a user keeps their id across reloads.
    pub fn build(config: PolicyConfig<'_>, names: &Arc<UserNames>) -> Policy {
        let mut by_name = HashMap::new();
        let mut by_id: Vec<Option<Arc<User>>> = Vec::new();
        for u in config.users {
            let id = names.intern(&u.name);
            let user = Arc::new(User {
                id,
                name: u.name.clone(),
                key: u.name.clone(),
                profile: None,
                identity: HeaderValue::from_str(&u.name)
                    .expect("validated user names are header-safe"),
                groups: u.groups.clone(),
                groups_value: HeaderValue::from_str(&u.groups.join(","))
                    .expect("validated group names are header-safe"),
                password_hash: u.password_hash.clone(),
                totp: u.totp.clone(),
                credentials: fingerprint(&u.password_hash, u.totp.as_ref()),
            });
            if by_id.len() <= id.index() {
                by_id.resize(id.index() + 1, None);
            }
            by_id[id.index()] = Some(user.clone());
            by_name.insert(u.name.clone(), user);
        }
        let allowed = config
            .rules
            .rules
            .iter()
            .map(|rule| {
                let Access::Allow(who) = &rule.access else {
                    return Vec::new();
                };
                let mut ids: Vec<UserId> = by_name
                    .values()
                    .filter(|u| who.iter().any(|p| admits(p, u)))
                    .map(|u| u.id)
                    .collect();
                ids.sort_by_key(|id| id.index());
                ids
            })
            .collect();
        Policy {
            by_name,
            by_id,
            rules: config.rules.clone(),
            allowed,
            dummy: dummy_like(config.users.first().map(|u| &u.password_hash)),
            redirect_hosts: config.redirect_hosts.to_vec(),
            host_rules: config.rules.rules.iter().any(|r| r.host.is_some()),
            providers: config.providers.iter().cloned().collect(),
            names: names.clone(),
            provider_users: Mutex::default(),
        }
    }

    /// Every configured user.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    /// The configured user called `name` (exactly).
    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// The user a session's owner is today: `None` when the user was removed or their password
    /// changed since the session began.
    /// A provider's user: only while their provider is configured as when they signed in.
    pub fn current(&self, owner: Owner) -> Option<Arc<User>> {
        if let Some(Some(user)) = self.by_id.get(owner.user.index()) {
            return (user.credentials == owner.credentials).then(|| user.clone());
        }
        self.provider_user(owner)
    }

    /// [`current`](Self::current) for someone who is not in the config: a provider's user,
    /// built from their latest profile (once per profile).
    fn provider_user(&self, owner: Owner) -> Option<Arc<User>> {
        let profile = self.names.profile(owner.user)?;
        if self.providers.get(&profile.provider) != Some(&owner.credentials) {
            return None;
        }
        let mut built = self
            .provider_users
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((from, user)) = built.get(&owner.user)
            && Arc::ptr_eq(from, &profile)
        {
            return Some(user.clone());
        }
        let key = self.names.key_of(owner.user)?;
        let user = Arc::new(User::of_provider(
            owner.user,
            &key,
            profile.clone(),
            owner.credentials,
            &self.dummy,
        )?);
        built.insert(owner.user, (profile, user.clone()));
        Some(user)
    }

    /// The fingerprint provider `id` has in this policy, if it is configured.
    pub fn provider_fingerprint(&self, id: &str) -> Option<u32> {
        self.providers.get(id).copied()
    }

    /// The users of `old` whose sessions this policy ends: removed, or given new credentials.
    pub fn revoked_since<'a>(&self, old: &'a Policy) -> Vec<Revoked<'a>> {
        old.users()
            .filter_map(|user| {
                let keep = match self.user(&user.name) {
                    None => None,
                    Some(now) if now.credentials != user.credentials => Some(now.credentials),
                    Some(_) => return None,
                };
                Some(Revoked {
                    name: &user.name,
                    keep,
                })
            })
            .collect()
    }

    pub fn dummy_hash(&self) -> &PasswordHash {
        &self.dummy
    }

    /// Whether any rule names a host.
    pub fn has_host_rules(&self) -> bool {
        self.host_rules
    }

    /// `auth.redirect_hosts`: where a return address after login may point besides this site.
    pub fn redirect_hosts(&self) -> &[HostPattern] {
        &self.redirect_hosts
    }

    /// What the rules say about `target` for `user` (`None`: nobody logged in). The path is
    /// judged as written and, when a lenient backend could read it as another path, as that
    /// path too; the stricter answer stands.
    pub fn judge(&self, user: Option<&User>, target: &Target<'_>) -> Judgement<'_> {
        let shape = paths::shape(target.path);
        let first = self.judge_reading(user, target, shape.unambiguous);
        if shape.is_plain() {
            return first;
        }
        match paths::backend_reading(target.path) {
            None => first,
            Some(path) => {
                let other = Target {
                    path: &path,
                    ..*target
                };
                let second = self.judge_reading(user, &other, true);
                if second.outcome > first.outcome {
                    second
                } else {
                    first
                }
            }
        }
    }

    fn judge_reading(
        &self,
        user: Option<&User>,
        target: &Target<'_>,
        unambiguous: bool,
    ) -> Judgement<'_> {
        let Some((index, rule)) = self.rules.first_match(target, unambiguous) else {
            let outcome = match (self.rules.default, user) {
                (DefaultAccess::Deny, _) => Outcome::Forbidden,
                (DefaultAccess::Login, Some(_)) => Outcome::Allow,
                (DefaultAccess::Login, None) => Outcome::LoginRequired,
            };
            return Judgement {
                outcome,
                rule: None,
            };
        };
        let outcome = match (&rule.access, user) {
            (Access::Public, _) => Outcome::Public,
            (Access::Deny, _) => Outcome::Forbidden,
            (Access::Allow(_), None) => Outcome::LoginRequired,
            (Access::Allow(who), Some(u)) => {
                // A provider's user is not in the table made from the config: asked directly.
                let allowed = if u.is_provider_user() {
                    who.iter().any(|p| admits(p, u))
                } else {
                    self.allowed[index]
                        .binary_search_by_key(&u.id.index(), |id| id.index())
                        .is_ok()
                };
                if allowed {
                    Outcome::Allow
                } else {
                    Outcome::Forbidden
                }
            }
        };
        Judgement {
            outcome,
            rule: Some(rule),
        }
    }
}

fn admits(principal: &Principal, user: &User) -> bool {
    match principal {
        Principal::User(name) => *name == user.name,
        Principal::Group(group) => user.groups.contains(group),
    }
}

/// The first 32 bits of SHA-256 over the hash as written and, for a user with a second factor,
/// its secret: the same on every replica and after a restart, and different once the password
/// or the second factor changes (32 bits of a hash over a 160-bit secret tell nothing about it).
/// Without TOTP it is the hash's alone, as before, so upgrading signs nobody out.
fn fingerprint(hash: &PasswordHash, totp: Option<&TotpSecret>) -> u32 {
    let mut h = sha2::Sha256::new();
    h.update(hash.as_str().as_bytes());
    if let Some(totp) = totp {
        h.update(b"\0totp\0");
        h.update(totp.secret_bytes());
    }
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}
