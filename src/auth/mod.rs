//! Signing in: the sign-in and code steps, logout, their forms and CSRF tokens, the failure
//! limits and the cookies a sign-in sets. What a user proves is checked in `credentials`.

pub mod cookies;
pub mod csrf;
pub mod form;
pub mod limiter;
pub mod login;
pub mod passkey;
pub mod pending;
pub mod provider;
pub mod provider_attempts;
pub mod second_factor;
pub mod shared_limiter;
pub mod sign_in;

pub use sign_in::SignIn;
