//! Sessions: random ids, the signed cookie that carries them, and the server-side stores (in
//! memory, or in Redis with a short-lived replica cache in front).

pub mod browser;
pub mod cache;
pub mod cookie;
pub mod keys;
pub mod redis;
pub mod sessions;
pub mod store;
pub mod tunnels;

pub use cookie::CookieSigner;
pub use keys::{SessionKey, SessionKeys};
pub use sessions::{SessionInfo, Sessions};
pub use store::{Owner, Session, SessionId, SessionMeta, SessionStore, StoreError};
