//! The metrics listener (`[metrics] listen`): `GET /metrics` and nothing else, on a socket of
//! its own, so the numbers are never served next to the app through the main listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;
use crate::http::error::Refusal;
use crate::http::response;

/// This listener's answers are all sessiongate's own: nothing streams through.
type Body = response::Body<Empty<Bytes>>;

/// The content type of the OpenMetrics text format, which Prometheus asks for and accepts.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves scrapes from `listener` until `shutdown` completes. A scrape is small and quick, so
/// connections still open then are simply dropped.
pub async fn serve_metrics(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: the next one may work.
                Err(e) => {
                    tracing::debug!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let app = app.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(app.config.server.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(answer(&app, &req)) }
                }),
            );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

fn answer(app: &App, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return Refusal::NotMetrics.response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Refusal::not_allowed("GET", req.method()).response();
    }
    refresh_gauges(app);
    // As encoded: the exposition ends with "# EOF", after which nothing may follow.
    response::full(StatusCode::OK, OPENMETRICS, app.metrics.encode())
}

/// Sets the gauges that describe state from whoever owns that state, at the moment of the
/// scrape: nothing on the request path keeps them up to date.
fn refresh_gauges(app: &App) {
    let m = &app.metrics;
    let open = app.config.server.max_connections - app.connections.available_permits();
    m.connections.set(open as i64);
    m.tunnels.set(app.gate.tunnels().len() as i64);
    if let Some(store) = app.gate.sessions().memory() {
        m.sessions.set(store.len() as i64);
    }
}
