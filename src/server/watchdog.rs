//! The deadline for slow and idle client connections (`server.header_read_timeout`).
//!
//! hyper's own header timer arms a timer for every request, a measurable share of a proxy's
//! CPU time (docs/PERF-NOTES.md). This is coarser and cheaper: one timer per connection
//! per period. A connection is closed when, for a whole period, nothing was written to it and
//! no request on it was being handled: a client too slow to finish a request head (slowloris)
//! or an idle keep-alive connection goes after one to two periods, while a long download
//! (bytes written) or a slow upload (its request is being handled) is left alone.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::conn::{Activity, ConnInfo};

/// Serves one connection until it ends, or until the watchdog finds it slow or idle for
/// `deadline` (then it is dropped, which closes it). `conn` is kept twice in this future, so
/// it is best a small one: a pinned reference to the connection.
pub async fn until_stalled<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    info: &ConnInfo,
    deadline: Duration,
    peer: SocketAddr,
) {
    tokio::select! {
        biased;
        ended = conn => if let Err(e) = ended {
            tracing::debug!("connection from {peer} ended: {e}");
        },
        () = stalled(&info.activity, deadline) => {
            tracing::debug!("closed a slow or idle connection from {peer}");
        }
    }
}

/// Completes once a whole `period` passed with no write and no request being handled.
async fn stalled(activity: &Activity, period: Duration) {
    let mut seen = activity.writes();
    loop {
        tokio::time::sleep(period).await;
        let now = activity.writes();
        if now == seen && activity.is_idle() {
            return;
        }
        seen = now;
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
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // One plain store per read: the read is a system call, this is not measurable.
        self.conn.activity.read();
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
            self.conn.activity.wrote();
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
            self.conn.activity.wrote();
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
