//! Where the upstream is and how to reach it: made from `[upstream]` when the config is
//! validated, read by the pool that connects to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port` to connect to, as written (resolved at connect time).
    pub authority: http::uri::Authority,
    /// Set for `https://` upstreams.
    pub tls: Option<UpstreamTls>,
    pub timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

#[derive(Clone)]
pub struct UpstreamTls {
    pub client: Arc<rustls::ClientConfig>,
    /// `upstream.ca`: the private CA the client trusts instead of the bundled roots.
    pub ca: Option<PathBuf>,
    /// Name checked against the upstream's certificate (and sent as SNI), if not the URL's host.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}
