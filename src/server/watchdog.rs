//! The deadline for slow and idle client connections (`server.header_read_timeout`).
//!
//! hyper's own header timer arms a timer for every request, a measurable share of a proxy's
//! CPU time (docs/PERF-NOTES.md). This is coarser and cheaper: one timer per connection
//! per period. A connection is closed when, for a whole period, nothing was written to it and
//! no request on it was being handled: a client too slow to finish a request head (slowloris)
//! or an idle keep-alive connection goes after one to two periods, while a long download
//! (bytes written) or a slow upload (its request is being handled) is left alone.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::conn::ConnInfo;

/// What one connection did lately.
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

    /// Forgets earlier socket reads, so [`Activity::socket_was_read`] tells of reads from now.
    pub fn clear_socket_read(&self) {
        self.socket_read.store(false, Ordering::Relaxed);
    }

    /// The socket was read since [`Activity::clear_socket_read`].
    pub fn socket_was_read(&self) -> bool {
        self.socket_read.load(Ordering::Relaxed)
    }

    /// Completes once a whole `period` passed with no write and no request being handled.
    pub async fn stalled(&self, period: Duration) {
        let mut seen = self.writes.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(period).await;
            let now = self.writes.load(Ordering::Relaxed);
            if now == seen && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

/// A client stream that records its writes (and that it was read) in its connection's
/// [`Activity`].
pub struct Watched<S> {
    inner: S,
    conn: Arc<ConnInfo>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, conn: Arc<ConnInfo>) -> Watched<S> {
        Watched { inner, conn }
    }

    fn wrote(&self) {
        self.conn.activity.writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // One plain store per read: the read is a system call, this is not measurable.
        self.conn
            .activity
            .socket_read
            .store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
