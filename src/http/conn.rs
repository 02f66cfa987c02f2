//! What sessiongate knows about the connection a request came on, computed once per connection
//! by the server and read by the handler, the sign-in, the upgrade checks and the tunnels.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use http::HeaderValue;

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

/// What one connection did lately: the server's watchdog reads it to close slow and idle
/// connections, the handler marks requests in flight, a tunnel asks about socket reads.
#[derive(Debug, Default)]
pub struct Activity {
    writes: AtomicU64,
    in_flight: AtomicU32,
    /// Set on every read from the socket; a tunnel clears it to tell the bytes hyper had
    /// already buffered from those read afterwards (see `tunnel`).
    socket_read: AtomicBool,
}

/// A request being handled; the connection counts as busy until it is dropped.
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn begin(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Bytes were written to the client.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The socket was read.
    pub fn read(&self) {
        self.socket_read.store(true, Ordering::Relaxed);
    }

    /// How many writes so far: unchanged over a period means nothing was written in it.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// No request on the connection is being handled.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Forgets earlier socket reads, so [`Activity::socket_was_read`] tells of reads from now.
    pub fn clear_socket_read(&self) {
        self.socket_read.store(false, Ordering::Relaxed);
    }

    /// The socket was read since [`Activity::clear_socket_read`].
    pub fn socket_was_read(&self) -> bool {
        self.socket_read.load(Ordering::Relaxed)
    }
}
