//! What operators watch: the access and event logs, the Prometheus metrics (their listener is in `server`).

pub mod logging;
pub mod metrics;
pub mod outcome;
