//! What sessiongate knows about the connection a request came on, computed once per connection
//! and shared by the handler, the login and the server.

use std::net::IpAddr;

use http::HeaderValue;

use crate::server::watchdog::Activity;

pub struct ConnInfo {
    pub peer: IpAddr,
    /// The peer's IP address, ready to be sent as X-Forwarded-For.
    pub peer_header: HeaderValue,
    /// The peer is a configured trusted proxy: its X-Forwarded-* headers are believed.
    pub trusted: bool,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
    /// For the slow and idle connection deadline.
    pub activity: Activity,
    /// This connection's place under `server.max_connections`. Released when the connection
    /// ends, or handed to the tunnel it becomes (an upgrade), which then holds it.
    pub permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ConnInfo {
    /// The connection's permit, for the tunnel it becomes; `None` if already taken.
    pub fn take_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The address a request comes from: the peer, or behind trusted proxies the nearest
    /// X-Forwarded-For entry that is not one of them (entries further left are the client's
    /// own claims and cannot be believed).
    pub fn client_addr(&self, headers: &http::HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
        if !self.trusted {
            return self.peer;
        }
        let mut chain: Vec<IpAddr> = headers
            .get_all(crate::http::headers::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        while let Some(addr) = chain.pop() {
            if !trusted.iter().any(|net| net.contains(&addr)) {
                return addr;
            }
        }
        self.peer
    }
}
