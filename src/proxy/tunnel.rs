//! Upgraded connections (WebSockets and any other protocol the upstream switches to): once the
//! gate let the upgrade through and the upstream answered 101, bytes flow both ways unbuffered
//! through fixed buffers, and sessiongate never reads a frame. The tunnel ends when either side
//! closes, or when sessiongate closes it:
//! - its session ends (logout, sign out everywhere, a reload, another replica: see
//!   `session::tunnels`), or reaches its absolute timeout;
//! - no byte moved either way for `upstream.tunnel_idle_timeout`;
//! - shutdown, after `server.shutdown_timeout`.
//!
//! A client that sent bytes after its upgrade request before the 101 came back gets no tunnel:
//! the connection is closed without relaying them (see [`EarlyBytes`]).
//!
//! Traffic in a tunnel counts as use of its session (written back at most once per
//! `session.touch_interval`), so a live dashboard does not idle its user out; a tunnel that
//! checks and finds its session gone (idled out, ended) closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use crate::gate::Gate;
use crate::http::conn::ConnInfo;
use crate::session::SessionId;
use crate::session::tunnels::Registered;

/// Per direction: the buffer `copy_bidirectional_with_sizes` copies through. Fixed, so a
/// tunnel's memory does not depend on what flows in it. 16 KiB made an idle tunnel cost 33.7
/// KiB (nginx: 18); 8 KiB is nginx's own proxy buffer size, and larger messages simply take
/// more reads.
const BUFFER: usize = 8 * 1024;

/// How often at most a tunnel looks at its clocks.
const TICK: Duration = Duration::from_secs(1);

/// The session a tunnel belongs to.
pub struct Binding {
    pub id: SessionId,
    /// When the session started: its absolute timeout ends the tunnel too.
    pub started: SystemTime,
}

/// How long a tunnel may live, from the config.
#[derive(Clone, Copy)]
pub struct Limits {
    /// `upstream.tunnel_idle_timeout`: no byte either way for this long closes it.
    pub idle: Duration,
    /// `session.touch_interval`: how often its session is checked (and its use written back).
    pub check_every: Duration,
    /// `session.absolute_timeout`: its session's end, and so the tunnel's.
    pub absolute: Duration,
}

/// A tunnel about to start: both sides' upgrades, and what it holds while it runs.
pub struct Tunnel {
    /// The client connection, to tell bytes it sent before the 101 ([`EarlyBytes`]).
    pub conn: Arc<ConnInfo>,
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    /// Its entry in the registry, which signals when its session ends.
    pub registered: Registered,
    /// `None`: a tunnel on a public path without a session.
    pub binding: Option<Binding>,
    /// One of `server.max_connections`.
    pub permit: OwnedSemaphorePermit,
}

/// The client sent bytes after its upgrade request before the 101 was written back: hyper
/// had read them past the request head, and the upgraded connection holds them ahead of
/// anything read from the socket later. No client of a relayed protocol may do this (RFC 6455
/// §4.1: the client waits for the server's answer before sending anything more), and they
/// were sent without knowing whether the app would switch, so they may be an HTTP request
/// meant for the app directly (a known way of slipping requests past proxies). The tunnel is
/// closed rather than the bytes discarded: discarding would leave both sides out of step in
/// the new protocol, and closing tells the client at once.
#[derive(Debug, thiserror::Error)]
#[error("the client sent bytes before the upgrade was answered")]
struct EarlyBytes;

/// Relays between the client's and the upstream's side once both upgrades complete, until one
/// of the ends in the module comment, holding the tunnel's permit and registry entry for as
/// long as it runs. Its session is checked by `gate`, as a request's is.
pub fn spawn(tunnel: Tunnel, gate: Arc<Gate>, limits: Limits) {
    let Tunnel {
        conn,
        client,
        upstream,
        registered,
        binding,
        permit,
    } = tunnel;
    tokio::spawn(async move {
        let _permit = permit;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!("upgrade not completed: {e}");
                return;
            }
        };
        let epoch = Instant::now();
        let last_byte = Arc::new(AtomicU64::new(0));
        let mut client = Counted {
            inner: TokioIo::new(client),
            epoch,
            last_byte: last_byte.clone(),
            unchecked: Some(conn),
        };
        let mut upstream = TokioIo::new(upstream);
        let relay =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER);
        let watch = watch(&gate, limits, binding.as_ref(), epoch, &last_byte);
        let why = tokio::select! {
            done = relay => match done {
                Ok(_) => "closed by one side",
                Err(e) if e.get_ref().is_some_and(|e| e.is::<EarlyBytes>()) => {
                    tracing::info!("upgrade closed without relaying: {e}");
                    return;
                }
                Err(_) => "connection failed",
            },
            () = registered.close.notified() => "its session ended",
            why = watch => why,
        };
        tracing::debug!("tunnel closed: {why}");
    });
}

/// Resolves with the reason when the tunnel must close: the session's absolute timeout, no
/// bytes for `limits.idle`, or the session gone when the gate checks it (once per
/// `limits.check_every`, writing the use back if bytes moved meanwhile).
async fn watch(
    gate: &Gate,
    limits: Limits,
    binding: Option<&Binding>,
    epoch: Instant,
    last_byte: &AtomicU64,
) -> &'static str {
    let tick = TICK
        .min(limits.idle / 4)
        .min(limits.check_every)
        .max(Duration::from_millis(20));
    let absolute_end = binding.map(|b| {
        let left = (b.started + limits.absolute)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let absolute = async {
        match absolute_end {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(absolute);
    let mut checked = Instant::now();
    let mut bytes_at_check = last_byte.load(Ordering::Relaxed);
    let mut ticks = tokio::time::interval(tick);
    loop {
        tokio::select! {
            () = &mut absolute => return "its session reached the absolute timeout",
            _ = ticks.tick() => {}
        }
        let last = Duration::from_millis(last_byte.load(Ordering::Relaxed));
        if epoch.elapsed().saturating_sub(last) >= limits.idle {
            return "no bytes for upstream.tunnel_idle_timeout";
        }
        let Some(b) = binding else { continue };
        if checked.elapsed() < limits.check_every {
            continue;
        }
        let now_bytes = last_byte.load(Ordering::Relaxed);
        let live = gate.tunnel_live(&b.id, now_bytes != bytes_at_check).await;
        checked = Instant::now();
        bytes_at_check = now_bytes;
        match live {
            Ok(true) => {}
            Ok(false) => return "its session ended",
            // The store could not answer: an open tunnel is not cut for a blip; it is checked
            // again next time, and a session ended meanwhile still closes it by its signal.
            Err(_) => {}
        }
    }
}

/// The client's side of a tunnel, noting when a byte last moved either way (milliseconds
/// since the tunnel's epoch).
struct Counted<T> {
    inner: T,
    epoch: Instant,
    last_byte: Arc<AtomicU64>,
    /// Until the first read: the client connection, whose socket reads tell bytes hyper had
    /// buffered before the 101 from bytes sent after it.
    unchecked: Option<Arc<ConnInfo>>,
}

impl<T> Counted<T> {
    fn moved(&self) {
        self.last_byte
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if let Some(conn) = &self.unchecked {
            conn.activity.clear_socket_read();
        }
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        // hyper's upgraded connection hands out what it had buffered first, without reading
        // the socket: bytes on the first read with no socket read under it came before the 101.
        if let Some(conn) = self.unchecked.take()
            && got
            && !conn.activity.socket_was_read()
        {
            return Poll::Ready(Err(io::Error::other(EarlyBytes)));
        }
        if got {
            self.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
