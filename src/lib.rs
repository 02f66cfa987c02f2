//! sessiongate: a reverse proxy that puts a session login in front of any HTTP backend.
//!
//! The binary (`main.rs`) only parses the command line; everything else lives here so tests
//! can start the proxy in-process on a loopback port with [`serve`].

pub mod app;
pub mod auth;
pub mod check;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod explain;
pub mod forward_auth;
pub mod gate;
pub mod handler;
pub mod headers;
pub mod healthcheck;
pub mod host;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod page;
pub mod pages;
pub mod paths;
pub mod policy;
pub mod proxy;
pub mod readiness;
pub mod redis_link;
pub mod refusal;
pub mod request_error;
pub mod response;
pub mod rules;
pub mod server;
pub mod session;
pub mod sessions_page;
pub mod tls;
pub mod tunnel;
pub mod upgrade;
pub mod watchdog;

pub use app::App;
pub use config::Config;
pub use metrics_server::serve_metrics;
pub use server::{run, serve, serve_redirect};
