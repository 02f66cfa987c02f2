//! The open tunnels (upgraded connections, WebSockets) and the session each belongs to, so
//! that a session's end closes them: logout, sign out everywhere, a reload that removes the
//! user, a session ended on another replica. Only close signals live here; the relay that
//! listens for them is the proxy's.
//!
//! Endings are rare next to requests, so closing walks every open tunnel instead of keeping
//! per-session lists in step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::Notify;

use super::identity::Owner;
use super::keys::SessionKey;

type Hasher = foldhash::fast::RandomState;

struct Open {
    /// `None`: a tunnel on a public path without a session; only shutdown and its own idle
    /// timeout end it.
    session: Option<(SessionKey, Owner)>,
    close: Arc<Notify>,
}

#[derive(Default)]
pub struct Tunnels {
    open: DashMap<u64, Open, Hasher>,
    next: AtomicU64,
    /// Signalled whenever a tunnel goes, for shutdown to wait on.
    gone: Notify,
}

/// A tunnel's place in the registry; dropping it takes the tunnel out.
pub struct Registered {
    tunnels: Arc<Tunnels>,
    id: u64,
    /// Notified when the tunnel must close.
    pub close: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.tunnels.open.remove(&self.id);
        self.tunnels.gone.notify_waiters();
    }
}

impl Tunnels {
    pub fn register(self: &Arc<Self>, session: Option<(SessionKey, Owner)>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.open.insert(
            id,
            Open {
                session,
                close: close.clone(),
            },
        );
        Registered {
            tunnels: self.clone(),
            id,
            close,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Closes the tunnels `doomed` picks; how many.
    fn close_where(&self, doomed: impl Fn(&Open) -> bool) -> usize {
        let mut n = 0;
        for entry in self.open.iter() {
            if doomed(entry.value()) {
                // A stored permit: the relay sees it even if it is not waiting this instant.
                entry.close.notify_one();
                n += 1;
            }
        }
        n
    }

    /// The session named `key` ended.
    pub fn session_ended(&self, key: &SessionKey) -> usize {
        self.close_where(|o| o.session.as_ref().is_some_and(|(k, _)| k == key))
    }

    /// Sessions whose owner `doomed` picks ended (sign out everywhere, a reload).
    pub fn owners_ended(&self, doomed: impl Fn(Owner) -> bool) -> usize {
        self.close_where(|o| o.session.as_ref().is_some_and(|(_, owner)| doomed(*owner)))
    }

    /// Every tunnel (shutdown).
    pub fn close_all(&self) -> usize {
        self.close_where(|_| true)
    }

    /// Waits until no tunnel is open.
    pub async fn wait_empty(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.open.is_empty() {
                return;
            }
            gone.await;
        }
    }
}
