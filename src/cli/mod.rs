//! The subcommands besides serving: each reads the config and reports, and none is on the
//! request path.

pub mod check;
pub mod demo;
pub mod explain;
pub mod hash_password;
pub mod healthcheck;
pub mod passkeys;
