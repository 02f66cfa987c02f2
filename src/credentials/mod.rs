//! What a user proves and how it is checked: password hashes (argon2id, bcrypt) checked on
//! their own threads, and TOTP secrets and codes. The policy holds these; the sign-in steps
//! in `auth` use them.

mod hash_pool;
pub mod passkey;
pub mod password;
pub mod sealed;
pub mod totp;
