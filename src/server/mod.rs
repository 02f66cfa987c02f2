//! The server: listening sockets, the accept loop with one task per connection, HTTPS with the
//! protocol ALPN chose, the watchdog on slow and idle connections, the redirect listener,
//! signals, and `run`, the whole process.

mod connection;
pub mod error;
mod https;
mod listen;
pub mod metrics;
mod redirect;
mod run;
mod serve;
mod signals;
mod watchdog;

pub(crate) use listen::{descriptors_needed, listen};
pub use redirect::serve_redirect;
pub use run::run;
pub use serve::serve;
