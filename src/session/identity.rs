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
use std::sync::{Arc, Mutex};

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
}

/// The append-only table of every user name this process has known.
#[derive(Default)]
pub struct UserNames {
    ids: Mutex<HashMap<Box<str>, UserId>>,
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
        id
    }

    /// The id of `name` if it was ever interned. For names read back from a shared store,
    /// which must not grow the table.
    pub fn get(&self, name: &str) -> Option<UserId> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(name).copied()
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
}
