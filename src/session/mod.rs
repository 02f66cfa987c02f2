//! Sessions: random ids, who owns them (`identity`), the signed cookie that carries them, and
//! the server-side stores (in memory, or in Redis with a short-lived replica cache in front).

pub mod browser;
pub mod cache;
pub mod cookie;
pub mod identity;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod redis_link;
pub mod sessions;
pub mod state;
pub mod tunnels;
pub mod user_data;

pub use cookie::CookieSigner;
pub use identity::{Account, Owner};
pub use keys::{SessionKey, SessionKeys};
pub use memory::{MemoryStore, Session, SessionId, SessionMeta, StoreError};
pub use sessions::{Revoked, SessionInfo, Sessions};
