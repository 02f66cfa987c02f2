//! The integration tests: one binary, so the crate and its dependencies link once for all of
//! them, with a module per behaviour area. Each test starts its own servers on loopback ports
//! (or runs the built binary), so tests share nothing but the process.
//!
//! What is global to a process does not belong here: a fail point switched on by one test
//! would fail every other test's store at the same moment, so the fail-closed tests are a
//! binary of their own (tests/failpoints). Tests here set no environment variable, signal
//! handler, resource limit, current directory or global tracing subscriber in this process
//! (children they start get their own); a test that captures logs uses a subscriber scoped
//! to its thread (`common::Captured`). Only the demo test (`cli`) uses a fixed port, 8080.

mod common;

mod access_rules;
mod architecture;
mod browser;
mod browser_harness;
mod browser_oidc;
mod browser_passkeys;
mod cli;
mod container;
mod deploy_examples;
mod edge_proxies;
mod example_config;
mod expiry;
mod explain_matrix;
mod forward_auth;
mod login_flow;
mod login_page;
mod metrics;
mod oidc_lifecycle;
mod oidc_provider;
mod oidc_sign_in;
mod passkey_admin;
mod passkey_token_check;
mod passkeys;
mod proxying;
mod readiness;
mod redis_harness;
mod redis_outage;
mod redis_replicas;
mod redis_sentinel;
mod redis_store;
mod reload;
mod rules_cli;
mod security_bruteforce;
mod security_chunked;
mod security_cookies;
mod security_csrf;
mod security_headers;
mod security_hosts;
mod security_identity;
mod security_limits;
mod security_logs;
mod security_paths;
mod security_redirect;
mod security_smuggling;
mod security_upgrades;
mod sessions_page;
mod state_dir;
mod state_sessions;
mod tls;
mod totp;
mod websockets;
mod ws_harness;
