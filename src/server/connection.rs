//! Serving one accepted connection: the facts known about it, the protocol builders, the
//! handler as its service, and the HTTP/1 side of the graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::app::App;
use crate::handler;
use crate::http::conn::{Activity, ConnInfo};
use crate::http::limits::MAX_HEAD_BYTES;
use crate::proxy::Body;
use crate::server::watchdog::{Watched, until_stalled};

/// How an accepted connection is served: one builder per protocol, and what asks HTTP/1
/// connections to finish.
#[derive(Clone)]
pub struct Protocols {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// `true` asks every HTTP/1 connection, plain or TLS, to finish its request and close.
    pub stop_http1: watch::Receiver<bool>,
}

impl Protocols {
    pub fn new(stop_http1: watch::Receiver<bool>) -> Protocols {
        // No hyper header timer and no HTTP/2 pings: the watchdog closes slow and idle
        // connections for a fraction of the cost (src/server/watchdog.rs). The header count is
        // left at hyper's default of 100 (more get 431): setting it explicitly, even to 100,
        // makes hyper initialise a header array on every request instead of using an
        // uninitialised one.
        let mut http1 = http1::Builder::new();
        http1
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        Protocols {
            http1,
            http2,
            stop_http1,
        }
    }
}

/// Serves a connection on a plain-http listener (HTTP/1.1) in its own task.
pub fn spawn_plain(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    protocols: &Protocols,
) {
    let deadline = app.config.server.header_read_timeout;
    let info = Arc::new(conn_info(&app, peer, "http", permit));
    let io = TokioIo::new(Watched::new(stream, info.clone()));
    let service = service(app, info.clone());
    let http1 = protocols.http1.clone();
    let stop = protocols.stop_http1.clone();
    tokio::spawn(async move {
        // hyper's connection is made and pinned here, where it is polled: a future handed to
        // an async block or function by value is kept there twice (as it came and where it
        // is polled). Passed down by value, it made each idle connection's task 5.1 KiB;
        // pinned here, 1.8 KiB (heaptrack, 10,000 idle keep-alive connections).
        let conn = http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        until_stalled(until_asked_to_stop(conn, stop), &info, deadline, peer).await;
    });
}

/// The handler as a connection's service. hyper keeps room for one of its futures in every
/// connection, idle or not: 6.2 KiB today, the largest share of an idle connection after
/// hyper's two 8 KiB buffers.
pub fn service(
    app: Arc<App>,
    info: Arc<ConnInfo>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<>,
> + use<> {
    service_fn(move |req| handler::handle(app.clone(), info.clone(), req))
}

/// Serves an HTTP/1 connection (plain or TLS); once `stop` says so, lets its request in flight
/// finish and closes it (what `GracefulShutdown::watch` does for HTTP/2).
pub async fn until_asked_to_stop<I, S, B>(
    mut conn: Pin<&mut http1::UpgradeableConnection<I, S>>,
    mut stop: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::select! {
        ended = conn.as_mut() => return ended,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// What the handler knows about a connection from `peer`, which holds `permit` until it ends.
pub fn conn_info(
    app: &App,
    peer: SocketAddr,
    proto: &'static str,
    permit: OwnedSemaphorePermit,
) -> ConnInfo {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ConnInfo {
        peer: ip,
        peer_header: HeaderValue::from_str(&ip.to_string()).expect("an IP address is header-safe"),
        trusted: app
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip)),
        proto,
        activity: Activity::default(),
        permit: std::sync::Mutex::new(Some(permit)),
    }
}
