//! What operators watch: the access and event logs, the Prometheus metrics and their listener.

pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod outcome;
