//! The plain-HTTP listener of `server.redirect_http`: every request gets 308 to https, so the
//! sign-in never runs over plain HTTP.

use std::future::Future;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::http::error::Refusal;
use crate::http::host::{self, HostProblem};
use crate::http::response;
use crate::proxy::Body;

/// Answers every request on a plain-http listener with 308 to the same path on https, so
/// the login flow never runs over plain HTTP. `https_port` is the TLS listener's port.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed on the redirect listener: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let service = service_fn(move |req| async move {
            Ok::<_, std::convert::Infallible>(https_redirect(&req, https_port))
        });
        let conn = http1.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(conn);
    }
}

fn https_redirect<B>(req: &http::Request<B>, https_port: u16) -> http::Response<Body> {
    // The redirect goes to the canonical host: never to a host the https listener would refuse.
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => host::canonical(h.as_bytes()).map_err(HostProblem::Invalid),
        (None, _) => Err(HostProblem::Missing),
        (Some(_), Some(_)) => Err(HostProblem::Repeated),
    };
    let host = match host {
        Ok(host) => host,
        Err(problem) => return Refusal::BadHost(problem).response(),
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        Ok(location) => response::redirect(StatusCode::PERMANENT_REDIRECT, location),
        Err(_) => Refusal::RedirectTarget.response(),
    }
}
