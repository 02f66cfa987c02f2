//! Sessions: random ids, the signed cookie that carries them, and the server-side store.

pub mod cookie;
pub mod store;

pub use cookie::CookieSigner;
pub use store::{Owner, Session, SessionId, SessionStore, StoreError};
