//! Sessions: random ids, the signed cookie that carries them, and the server-side stores (in
//! memory, or in Redis with a short-lived replica cache in front).

pub mod browser;
pub mod cache;
pub mod cookie;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod redis_link;
pub mod sessions;
pub mod tunnels;

pub use cookie::CookieSigner;
pub use keys::{SessionKey, SessionKeys};
pub use memory::{MemoryStore, Owner, Session, SessionId, SessionMeta, StoreError};
pub use sessions::{SessionInfo, Sessions};
