//! Who a session belongs to: a user's name, interned as a small number that means that name
//! for the life of the process, and the [`Account`] view of a user that the stores work with.
//!
//! Sessions hold a [`UserId`] instead of the name (it keeps a session at 24 bytes). The table
//! only ever grows: a reload that removes, adds or reorders `[[users]]` never gives an id to
//! another name, so a live session can never come to name someone else. A name removed and
//! added back keeps its id; whether its sessions still count is the policy's business (it
//! compares the session's credentials fingerprint, see `gate::policy`).
//!
//! These types live here, below the gate, because sessions store them: the policy builds its
//! users from them, and the stores never need the policy itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// A user's name, interned by [`UserNames`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(u32);

impl UserId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Whom a session belongs to: the user (an interned name) and a fingerprint of that user's
/// password hash when they logged in. A reload that changes the user's password changes the
/// fingerprint, which ends every session made with the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub user: UserId,
    pub credentials: u32,
}

/// What the stores need to know of a user: the id sessions hold, the name (a shared store
/// indexes a user's sessions by it) and the fingerprint of the credentials sessions are made
/// with. The policy's users are accounts.
pub trait Account {
    fn id(&self) -> UserId;
    fn name(&self) -> &str;
    fn credentials(&self) -> u32;

    /// A provider's user's profile, which a shared store keeps with each session so that
    /// every replica knows them; `None` for a configured user.
    fn profile(&self) -> Option<&Profile> {
        None
    }

    /// The owner a new session of this user gets.
    fn owner(&self) -> Owner {
        Owner {
            user: self.id(),
            credentials: self.credentials(),
        }
    }
}

/// The request path holds its users in `Arc`s.
impl<A: Account + ?Sized> Account for Arc<A> {
    fn id(&self) -> UserId {
        (**self).id()
    }

    fn name(&self) -> &str {
        (**self).name()
    }

    fn credentials(&self) -> u32 {
        (**self).credentials()
    }

    fn profile(&self) -> Option<&Profile> {
        (**self).profile()
    }
}

/// A provider's user as their latest sign-in described them. The config does not know them,
/// so this is what their sessions are checked and forwarded with: the groups from the
/// provider's claim and the name the app sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The provider's `id`.
    pub provider: String,
    /// `{provider id}:{username claim}`: the name rules and the app see.
    pub name: String,
    pub groups: Vec<String>,
    /// When this sign-in happened (Unix ms): a newer profile replaces an older one.
    pub signed_in_ms: u64,
}

/// What separates the provider from the subject in a provider user's key. A control
/// character, which no configured name may hold, so no `[[users]]` name is ever such a key.
const KEY_SEPARATOR: char = '\u{1f}';

/// The key sessions of the user `sub` of `provider` are filed under: never their email or
/// name, which a provider may give to someone else later.
pub fn provider_key(provider: &str, sub: &str) -> String {
    format!("{provider}{KEY_SEPARATOR}{sub}")
}

/// Whether `key` is a provider user's key (see [`provider_key`]).
pub fn is_provider_key(key: &str) -> bool {
    key.contains(KEY_SEPARATOR)
}

/// A provider user's key and latest profile.
type KeyedProfile = (Arc<str>, Arc<Profile>);

/// The append-only table of every user name this process has known.
#[derive(Default)]
pub struct UserNames {
    ids: Mutex<HashMap<Box<str>, UserId>>,
    /// The names by id, for what writes sessions out (`session::state`).
    names: RwLock<Vec<Arc<str>>>,
    /// The profiles of provider users, by id (configured users have none).
    profiles: RwLock<HashMap<UserId, KeyedProfile>>,
}

impl UserNames {
    /// The id of `name`, made on first use. Only config loading calls it: names come from the
    /// config, never from a request, so the table is bounded by what operators configured.
    pub fn intern(&self, name: &str) -> UserId {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let id = UserId(u32::try_from(ids.len()).expect("fewer than 2^32 user names"));
        ids.insert(name.into(), id);
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        names.push(name.into());
        id
    }

    /// The name (or provider user's key) `id` stands for.
    pub fn name(&self, id: UserId) -> Option<Arc<str>> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        names.get(id.index()).cloned()
    }

    /// Every provider user's key and latest profile.
    pub fn profiles(&self) -> Vec<(Arc<str>, Arc<Profile>)> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        profiles.values().cloned().collect()
    }

    /// The id of `name` if it was ever interned. For names read back from a shared store,
    /// which must not grow the table.
    pub fn get(&self, name: &str) -> Option<UserId> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(name).copied()
    }

    /// The id of the provider user `key` (see [`provider_key`]), with `profile` as theirs
    /// unless a newer sign-in's is known. Called by a sign-in, and by a shared store reading a
    /// session another replica made: the table grows by one entry per provider user who ever
    /// signed in, never by what a request merely claims.
    pub fn intern_profile(&self, key: &str, profile: Profile) -> UserId {
        let id = self.intern(key);
        let mut profiles = self.profiles.write().unwrap_or_else(|e| e.into_inner());
        let newer = profiles
            .get(&id)
            .is_none_or(|(_, known)| known.signed_in_ms <= profile.signed_in_ms);
        if newer {
            profiles.insert(id, (key.into(), Arc::new(profile)));
        }
        id
    }

    /// The profile of provider user `id`; `None` for a configured user.
    pub fn profile(&self, id: UserId) -> Option<Arc<Profile>> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        profiles.get(&id).map(|(_, p)| p.clone())
    }

    /// The key of provider user `id`; `None` for a configured user.
    pub fn key_of(&self, id: UserId) -> Option<Arc<str>> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        profiles.get(&id).map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_keeps_its_name_whatever_is_interned_later() {
        let names = UserNames::default();
        let alice = names.intern("alice");
        let bob = names.intern("bob");
        assert_ne!(alice, bob);
        assert_eq!(names.intern("alice"), alice);
        for other in ["carol", "Alice", "alice ", ""] {
            assert_ne!(names.intern(other), alice, "{other:?}");
        }
    }

    #[test]
    fn a_provider_user_keeps_the_profile_of_their_latest_sign_in() {
        let names = UserNames::default();
        let profile = |groups: &[&str], at| Profile {
            provider: "corp".into(),
            name: "corp:ann".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            signed_in_ms: at,
        };
        let key = provider_key("corp", "sub-1");
        assert!(is_provider_key(&key) && !is_provider_key("corp:ann"));
        let id = names.intern_profile(&key, profile(&["staff"], 10));
        assert_eq!(names.intern_profile(&key, profile(&["ops"], 5)), id);
        assert_eq!(names.profile(id).unwrap().groups, ["staff"]);
        names.intern_profile(&key, profile(&["ops"], 20));
        assert_eq!(names.profile(id).unwrap().groups, ["ops"]);
        assert_ne!(
            names.intern_profile(&provider_key("corp", "sub-2"), profile(&[], 1)),
            id
        );
        assert!(names.profile(names.intern("ann")).is_none());
    }
}
