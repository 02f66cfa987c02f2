//! Everything about logging in: the form and its POST, password checks, return addresses.

pub mod cookies;
pub mod csrf;
pub mod form;
mod hash_pool;
pub mod limiter;
pub mod login;
pub mod password;
pub mod pending;
pub mod redirect;
pub mod second_factor;
pub mod shared_limiter;
pub mod sign_in;
pub mod totp;

pub use sign_in::SignIn;
