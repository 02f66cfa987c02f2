//! Whether the upstream accepts connections, for `{prefix}/readyz` and `sessiongate check`: a
//! TCP connect with a short deadline. readyz probes on demand and keeps the answer for a
//! second, so a flood of readiness requests costs the upstream one connection a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::net::TcpStream;

/// How long a probe's answer stands.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A probe never waits longer than this, whatever `upstream.timeout` says: readiness checkers
/// time out after a few seconds themselves.
const MAX_DEADLINE: Duration = Duration::from_secs(2);

/// How long a probe waits for the connection: `upstream.timeout`, at most 2 s.
pub fn deadline(upstream_timeout: Duration) -> Duration {
    upstream_timeout.min(MAX_DEADLINE)
}

/// Why the upstream was not reached.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// Opens a TCP connection to `authority` (a name is resolved first, as the proxy does) and
/// closes it again, within `deadline`.
pub async fn connect(authority: &Authority, deadline: Duration) -> Result<(), Unreachable> {
    match tokio::time::timeout(deadline, TcpStream::connect(authority.as_str())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Unreachable::Connect(e)),
        Err(_) => Err(Unreachable::Timeout(deadline)),
    }
}

/// The upstream's last probe result, shared by every worker.
pub struct UpstreamProbe {
    pub authority: Authority,
    deadline: Duration,
    /// When the last probe ended and whether it connected. Held only to read or write it.
    last: Mutex<Option<(Instant, bool)>>,
    /// Held while a probe runs, so callers arriving meanwhile wait for its answer instead of
    /// opening connections of their own. A tokio mutex: workers are separate runtimes, and
    /// waiting for it must not hold up the worker's other requests.
    probing: tokio::sync::Mutex<()>,
}

impl UpstreamProbe {
    /// A probe of `authority` with the [`deadline`] for `timeout` (`upstream.timeout`).
    pub fn new(authority: Authority, timeout: Duration) -> UpstreamProbe {
        UpstreamProbe {
            authority,
            deadline: deadline(timeout),
            last: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the upstream accepted a connection in the last probe, probing first if that
    /// answer is older than a second.
    pub async fn accepts(&self) -> bool {
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let _probing = self.probing.lock().await;
        // Another caller may have probed while this one waited.
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let accepted = connect(&self.authority, self.deadline).await.is_ok();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), accepted));
        accepted
    }

    fn fresh(&self) -> Option<bool> {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, accepted)| accepted)
    }
}
