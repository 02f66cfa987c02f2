//! HTTP building blocks every layer above may use: responses, header and path handling, the
//! host and upgrade checks, size limits, and the one map from a refusal to its answer.

pub mod conn;
pub mod error;
pub mod headers;
pub mod host;
pub mod limits;
pub mod paths;
pub mod redirect;
pub mod response;
pub mod tls;
pub mod upgrade;
