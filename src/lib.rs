//! sessiongate: a reverse proxy that puts a session login in front of any HTTP backend.
//!
//! The binary (`main.rs`) only parses the command line; everything else lives here so tests
//! can start the proxy in-process on a loopback port with [`serve`]. docs/ARCHITECTURE.md has
//! the whole map. The layers, from the top down; a module imports only from layers below its
//! own (`tests/it/architecture.rs` fails on any import cycle):
//!
//! - `cli`: the subcommands besides serving (check, explain, demo, healthcheck).
//! - `server`: listeners (the proxy's, the http redirect's, the metrics'), connections and
//!   their watchdog, signals, `run`.
//! - `handler`: one request's phases (screen, route, decide, answer, log) and the endpoints
//!   that need the whole `App` (forward-auth, the sessions page).
//! - `app`: wires everything at start and on reload; nothing below it imports it.
//! - `config`: the file's types, its validation (a module per section), the files it names.
//! - `auth`: the sign-in steps, logout, CSRF tokens, failure limits, the sign-in cookies.
//! - `oidc`: OpenID Connect providers: discovery and keys, the authorization request, the
//!   checks of the ID token, and who it names.
//! - `pages`: the templates and every page a person sees.
//! - `proxy`: the upstream leg and its pool, the tunnel relay, readiness.
//! - `gate`: the one access decision, from the policy (users, groups, rules) and the session.
//! - `credentials`: password hashes and their threads, TOTP secrets and codes.
//! - `session`: ids, owners, the cookie, the memory and Redis stores, the replica cache,
//!   tunnels.
//! - `http`: responses, headers, paths, host and upgrade checks, return addresses, limits,
//!   TLS material, connection facts, and `http::error`, the one map from a refusal to its
//!   answer.
//! - `ops`: logging, metrics and the one name of a request's outcome.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod gate;
pub mod handler;
pub mod http;
pub mod oidc;
pub mod ops;
pub mod pages;
pub mod proxy;
pub mod server;
pub mod session;

pub use app::App;
pub use config::Config;
pub use server::metrics::serve_metrics;
pub use server::{run, serve, serve_redirect};
