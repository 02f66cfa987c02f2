//! sessiongate: a reverse proxy that puts a session login in front of any HTTP backend.
//!
//! The binary (`main.rs`) only parses the command line; everything else lives here so tests
//! can start the proxy in-process on a loopback port with [`serve`]. docs/ARCHITECTURE.md
//! has the map; in one line each, from the top down (a module imports only those below it):

/// Wires everything at start and on reload; nothing below it imports it.
pub mod app;
/// The sign-in steps and factors, CSRF tokens, failure limits, return addresses.
pub mod auth;
/// The subcommands besides serving: check, explain, demo, healthcheck.
pub mod cli;
/// The file's types, its validation (a module per section), and reading the files it names.
pub mod config;
/// The one access decision, from the policy (users, groups, rules) and the session.
pub mod gate;
/// One request's path through named phases: screen, route, decide, answer, log.
pub mod handler;
/// Responses, headers, paths, host and upgrade checks, limits, the refusal map.
pub mod http;
/// Logging and metrics.
pub mod ops;
/// The templates and every page a person sees.
pub mod pages;
/// The upstream leg and its pool, the WebSocket relay, readiness.
pub mod proxy;
/// Listeners, connections and their watchdog, TLS, the errors that stop a start.
pub mod server;
/// Sessions: cookies, keys, the memory and Redis stores, the replica cache, tunnels.
pub mod session;

pub use app::App;
pub use config::Config;
pub use ops::metrics_server::serve_metrics;
pub use server::{run, serve, serve_redirect};
