//! Forwarding to the upstream: request rewriting, a pool of keep-alive HTTP/1.1 connections,
//! and streaming bodies in both directions.
//!
//! Plain upstreams use our own pool of hyper HTTP/1 connections, and each connection is driven
//! by the request that uses it, inside that request's task, instead of by a task of its own
//! (as hyper-util's legacy `Client` does): no spawned task, no cross-task wake-up and no
//! mutex per request. Pools are per worker thread, so a connection is only ever polled by the
//! runtime whose reactor it is registered with (docs/PERF-NOTES.md: the upstream leg is
//! the biggest cost in a proxy like this).

pub mod readiness;
pub mod target;
pub mod tunnel;

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thread_local::ThreadLocal;
use tokio::net::TcpStream;

use crate::gate::policy::User;
use crate::http::error::Refusal;
use crate::http::headers;
use crate::http::response;
use crate::ops::metrics::UpstreamFailure;
use crate::proxy::target::UpstreamTarget;

/// Idle connections kept per upstream and worker; more than the busiest expected concurrency
/// is waste.
const MAX_IDLE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    #[error("the upstream failed: {0}")]
    Upstream(hyper::Error),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// From the https client; the text carries the whole cause chain (e.g. the TLS error).
    #[error("the upstream failed: {chain}")]
    Client {
        kind: UpstreamFailure,
        chain: String,
    },
    /// Not the upstream: the client's request body broke while it streamed there.
    #[error(transparent)]
    ClientBody(BodyError),
}

impl ProxyError {
    /// How the upstream failed, as the metrics count it; `None` when it did not (the client's
    /// body broke).
    pub fn failure(&self) -> Option<UpstreamFailure> {
        match self {
            ProxyError::Connect(_) => Some(UpstreamFailure::Connect),
            ProxyError::Timeout(_) => Some(UpstreamFailure::Timeout),
            ProxyError::Upstream(_) => Some(UpstreamFailure::Reset),
            ProxyError::Client { kind, .. } => Some(*kind),
            ProxyError::ClientBody(_) => None,
        }
    }

    /// A failed send from hyper's HTTP/1 client: the client's body breaking (bad chunked
    /// framing, cut short) is told apart from the upstream failing, which any client could
    /// otherwise pass off as the upstream's fault at will.
    fn from_send(e: hyper::Error) -> ProxyError {
        if client_body_broke(&e) {
            ProxyError::ClientBody(BodyError(Box::new(e)))
        } else {
            ProxyError::Upstream(e)
        }
    }
}

/// A failed upstream leg as the client is answered: the upstream's failure, unless it was the
/// client's own body.
impl<'a> From<&'a ProxyError> for Refusal<'a> {
    fn from(e: &'a ProxyError) -> Refusal<'a> {
        match e {
            ProxyError::ClientBody(cause) => Refusal::MalformedBody { cause },
            ProxyError::Timeout(_) => Refusal::Upstream {
                timed_out: true,
                cause: e,
            },
            _ => Refusal::Upstream {
                timed_out: false,
                cause: e,
            },
        }
    }
}

/// The client's request body broke while it streamed to the upstream: malformed chunked
/// framing (a bad size line, a missing CRLF, an oversized chunk size, a malformed trailer), a
/// body cut short, an HTTP/2 stream reset. Holds hyper's error for the send, whose innermost
/// cause is the parse error on the client's connection: it says what was wrong.
#[derive(Debug)]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut cause: &(dyn std::error::Error + 'static) = &*self.0;
        while let Some(deeper) = cause.source() {
            cause = deeper;
        }
        write!(f, "malformed request body: {cause}")
    }
}

impl std::error::Error for BodyError {}

/// Whether a failed send on a plain upstream was the request body's fault. hyper's HTTP/1
/// client reports a body that failed as a user error whose cause is the body's own error; our
/// request bodies are the client's `Incoming`, whose errors are `hyper::Error`s from the
/// client's connection. Any other failure (the upstream closing, refusing, timing out) has no
/// such cause.
fn client_body_broke(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(h) = e.downcast_ref::<hyper::Error>()
        && h.is_user()
        && std::error::Error::source(h).is_some_and(|cause| cause.is::<hyper::Error>())
    {
        return true;
    }
    e.source().is_some_and(client_body_broke)
}

type UpstreamConn = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>;

/// One keep-alive connection to the upstream: the handle requests are sent with, and the
/// connection future that does the I/O, polled by whoever holds the pair.
struct Leg {
    sender: SendRequest<Incoming>,
    /// Boxed: a hyper connection is large, and a leg moves in and out of the pool and into
    /// the response body on every request. `None` once it has completed (closed or failed).
    conn: Option<Box<UpstreamConn>>,
}

impl Leg {
    /// Lets the connection do its I/O: write a queued request, read a response, notice a close.
    ///
    /// A completed connection is dropped at once, not kept: its request queue goes with it,
    /// and hyper hands a request still queued there back to its sender as unsent. Kept, the
    /// finished connection would never take that request off the queue, and the request would
    /// wait for the upstream timeout (an upstream closing an idle keep-alive connection made
    /// exactly that: a 504 after 30 s).
    fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Poll::Ready(result) = Pin::new(&mut **conn).poll(cx) {
            self.conn = None;
            if let Err(e) = result {
                tracing::debug!("upstream connection ended: {e}");
            }
        }
    }

    fn is_open(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.drive(cx);
        self.sender.poll_ready(cx)
    }
}

/// Idle connections, one list per worker thread (see the module comment).
struct Pool {
    idle: ThreadLocal<RefCell<Vec<Leg>>>,
}

impl Pool {
    fn local(&self) -> &RefCell<Vec<Leg>> {
        self.idle.get_or(|| RefCell::new(Vec::new()))
    }

    /// The most recently used idle connection, the likeliest to still be open.
    fn take(&self) -> Option<Leg> {
        let mut idle = self.local().borrow_mut();
        while let Some(leg) = idle.pop() {
            if leg.is_open() {
                return Some(leg);
            }
        }
        None
    }

    fn put(&self, leg: Leg) {
        if !leg.is_open() {
            return;
        }
        let mut idle = self.local().borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(leg);
        }
    }
}

/// How requests reach the upstream.
enum Transport {
    /// Plain HTTP/1.1 over our own pool of ready connections (the fast path for sidecars).
    Plain(Arc<Pool>),
    /// HTTPS through hyper-util's pooled client and hyper-rustls; HTTP/2 when the upstream
    /// offers it in ALPN.
    Tls(Box<Client<HttpsConnector<HttpConnector>, TlsRequestBody>>),
}

pub struct Upstream {
    authority: http::uri::Authority,
    host: HeaderValue,
    timeout: Duration,
    transport: Transport,
}

/// What the proxy adds to a request on its way upstream.
pub struct Forwarding<'a> {
    pub identity_header: &'a http::HeaderName,
    pub groups_header: &'a http::HeaderName,
    /// The session's user, or `None` on a public path without a session.
    pub user: Option<&'a User>,
    /// The peer's address as a header value.
    pub peer: &'a HeaderValue,
    /// The peer is a trusted proxy: extend its X-Forwarded-For and keep its -Proto/-Host.
    pub trusted_peer: bool,
    pub proto: &'static str,
    pub own_cookie: &'a str,
}

impl Upstream {
    pub fn new(config: &UpstreamTarget) -> Upstream {
        let transport = match &config.tls {
            None => Transport::Plain(Arc::new(Pool {
                idle: ThreadLocal::new(),
            })),
            Some(tls) => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.enforce_http(false);
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls.client).clone())
                    .https_only();
                let builder = match &tls.server_name {
                    Some(name) => builder.with_server_name_resolver(
                        hyper_rustls::FixedServerNameResolver::new(name.clone()),
                    ),
                    None => builder,
                };
                let connector = builder.enable_all_versions().wrap_connector(http);
                Transport::Tls(Box::new(
                    Client::builder(TokioExecutor::new()).build(connector),
                ))
            }
        };
        Upstream {
            host: HeaderValue::from_str(config.authority.as_str())
                .expect("an authority is a valid header value"),
            authority: config.authority.clone(),
            timeout: config.timeout,
            transport,
        }
    }

    /// Rewrites `req` for the upstream: origin-form target, hop-by-hop headers removed, every
    /// client copy of the identity and groups headers removed and ours set, our cookie removed, forwarding
    /// headers overwritten unless a trusted proxy sent them (clients are not trusted to set
    /// them), and headers that would override the authorised path removed.
    pub fn prepare<B>(&self, req: &mut Request<B>, fwd: Forwarding<'_>) {
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        let host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
            .unwrap_or_else(|| self.host.clone());
        *req.uri_mut() = target;
        *req.version_mut() = Version::HTTP_11;

        let h = req.headers_mut();
        headers::scrub_request(h, fwd.identity_header, fwd.groups_header, fwd.trusted_peer);
        headers::strip_cookie(h, fwd.own_cookie);
        if fwd.trusted_peer {
            headers::append_forwarded_for(h, fwd.peer);
            if !h.contains_key(headers::X_FORWARDED_PROTO) {
                h.insert(
                    headers::X_FORWARDED_PROTO,
                    HeaderValue::from_static(fwd.proto),
                );
            }
            // The trusted proxy's X-Forwarded-Host, if it sent one, names the host the rules
            // judged (the screen refused it otherwise, `host::screen`), so either header the
            // app reads gives it the host that was judged.
            if !h.contains_key(headers::X_FORWARDED_HOST) {
                h.insert(headers::X_FORWARDED_HOST, host.clone());
            }
        } else {
            // Anything a client says about where it came from is overwritten: the host judged
            // is the request's own, and that is the X-Forwarded-Host the app receives.
            h.insert(headers::X_FORWARDED_FOR, fwd.peer.clone());
            h.insert(
                headers::X_FORWARDED_PROTO,
                HeaderValue::from_static(fwd.proto),
            );
            h.insert(headers::X_FORWARDED_HOST, host.clone());
        }
        h.insert(header::HOST, host);
        if let Some(user) = fwd.user {
            h.insert(fwd.identity_header.clone(), user.identity.clone());
            h.insert(fwd.groups_header.clone(), user.groups_value.clone());
        }
    }

    /// Sends a prepared request and returns the upstream's response head; the body streams
    /// after. `timeout` bounds the wait for the response head.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<UpstreamBody>, ProxyError> {
        let res = tokio::time::timeout(self.timeout, self.send_on_pool(req))
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))??;
        let (mut parts, body) = res.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    async fn send_on_pool(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match &self.transport {
            Transport::Plain(pool) => self.send_plain(pool, req).await,
            Transport::Tls(client) => self.send_tls(client, req).await,
        }
    }

    async fn send_plain(
        &self,
        pool: &Arc<Pool>,
        mut req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        loop {
            let (mut leg, fresh) = match pool.take() {
                Some(leg) => (leg, false),
                None => (self.connect().await?, true),
            };
            // A pooled connection may have been closed by the upstream while idle: driving it
            // shows that now, and the next one is tried.
            if let Err(e) = poll_fn(|cx| leg.poll_ready(cx)).await {
                if fresh {
                    return Err(ProxyError::Upstream(e));
                }
                continue;
            }
            let mut sending = std::pin::pin!(leg.sender.try_send_request(req));
            let sent = poll_fn(|cx| {
                leg.drive(cx);
                sending.as_mut().poll(cx)
            })
            .await;
            match sent {
                Ok(res) => return Ok(wrap(pool, res, leg)),
                // Not written at all (the connection closed first): safe to retry elsewhere.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(ProxyError::from_send(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Leg, ProxyError> {
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(ProxyError::Connect)?;
        // Small request/response pairs must not wait for Nagle's algorithm.
        stream.set_nodelay(true).map_err(ProxyError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Upstream)?;
        Ok(Leg {
            sender,
            conn: Some(Box::new(conn)),
        })
    }

    async fn send_tls(
        &self,
        client: &Client<HttpsConnector<HttpConnector>, TlsRequestBody>,
        mut req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        // The pooled client wants an absolute URI; it picks connections by scheme and authority.
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| ProxyError::Client {
            kind: UpstreamFailure::Connect,
            chain: e.to_string(),
        })?;
        let (parts, body) = req.into_parts();
        // Nothing can break in a request without a body: no slot, no allocation.
        let fault = (!body.is_end_stream()).then(Arc::default);
        let req = Request::from_parts(
            parts,
            TlsRequestBody {
                inner: body,
                fault: fault.clone(),
            },
        );
        let res = client.request(req).await.map_err(|e| {
            if let Some(broke) = fault.as_deref().and_then(TlsRequestBody::take_fault) {
                return ProxyError::ClientBody(BodyError(Box::new(broke)));
            }
            ProxyError::Client {
                kind: client_failure(&e),
                chain: error_chain(&e),
            }
        })?;
        Ok(res.map(|inner| UpstreamBody { inner, leg: None }))
    }
}

/// The upstream's answer to an upgrade request.
pub enum UpgradeAnswer {
    /// 101: the head to pass back (hop-by-hop headers removed, `Connection: upgrade` and the
    /// upstream's `Upgrade` set again), and the upstream's side of the tunnel to come.
    Switched {
        head: http::response::Parts,
        upstream: hyper::upgrade::OnUpgrade,
    },
    /// Anything else, passed back as a normal response.
    Refused(Response<UpstreamBody>),
}

impl Upstream {
    /// Sends a prepared upgrade request (`Connection`/`Upgrade` set again by the caller) on a
    /// connection of its own, never a pooled one: if the upstream switches protocols, that
    /// connection becomes the tunnel and is never used for another request. `timeout` bounds
    /// the wait for the answer's head.
    pub async fn send_upgrade(&self, req: Request<Incoming>) -> Result<UpgradeAnswer, ProxyError> {
        let mut res = tokio::time::timeout(self.timeout, self.send_upgrade_on_own(req))
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))??;
        if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = res.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            return Ok(UpgradeAnswer::Refused(Response::from_parts(
                parts,
                UpstreamBody {
                    inner: body,
                    leg: None,
                },
            )));
        }
        let upstream = hyper::upgrade::on(&mut res);
        let (mut head, _) = res.into_parts();
        let protocol = head.headers.get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut head.headers);
        if let Some(protocol) = protocol {
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(header::UPGRADE, protocol);
        }
        Ok(UpgradeAnswer::Switched { head, upstream })
    }

    async fn send_upgrade_on_own(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match &self.transport {
            Transport::Plain(_) => {
                let stream = TcpStream::connect(self.authority.as_str())
                    .await
                    .map_err(ProxyError::Connect)?;
                stream.set_nodelay(true).map_err(ProxyError::Connect)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(ProxyError::Upstream)?;
                // Drives the connection until the upgrade hands its socket over (or it ends).
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!("upstream upgrade connection ended: {e}");
                    }
                });
                sender
                    .send_request(req)
                    .await
                    .map_err(ProxyError::from_send)
            }
            // hyper-util's client takes a connection that switched protocols out of its pool.
            Transport::Tls(client) => {
                let res = self.send_tls(client, req).await?;
                Ok(res.map(|body| body.inner))
            }
        }
    }
}

/// Ties a response to the pooled connection it came on: the body drives the connection while
/// it streams and returns it to the pool when done.
fn wrap(pool: &Arc<Pool>, res: Response<Incoming>, leg: Leg) -> Response<UpstreamBody> {
    res.map(|inner| {
        let mut body = UpstreamBody {
            inner,
            leg: Some((leg, pool.clone())),
        };
        // Bodiless responses (HEAD, 204, 304, Content-Length: 0) are never polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    })
}

/// What went wrong in the https client: a rustls error anywhere in the causes is TLS, any
/// other failure to connect is connect, the rest (a closed or broken connection) reset.
fn client_failure(e: &hyper_util::client::legacy::Error) -> UpstreamFailure {
    if std::error::Error::source(e).is_some_and(caused_by_tls) {
        UpstreamFailure::Tls
    } else if e.is_connect() {
        UpstreamFailure::Connect
    } else {
        UpstreamFailure::Reset
    }
}

/// Whether `e` is, or wraps, a rustls error. The connector wraps it in `io::Error`s, whose
/// `source()` skips the error they hold, so those are opened with `get_ref`.
fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return caused_by_tls(inner);
    }
    e.source().is_some_and(caused_by_tls)
}

/// An error and all its causes on one line, e.g.
/// "client error (Connect): invalid peer certificate: UnknownIssuer".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request body on its way to an https upstream. hyper-util's client sends an HTTP/2 request
/// body from a task of its own, and when the body fails it only reports that it reset the
/// stream; so the client's error is kept here, to tell a client's broken body (a 400) from
/// the upstream failing. (Plain upstreams need no wrapper: hyper's HTTP/1 client hands the
/// body's error back with the failed send.)
struct TlsRequestBody {
    inner: Incoming,
    /// Where the client's body error is put; `None` for a request without a body.
    fault: Option<Arc<std::sync::Mutex<Option<hyper::Error>>>>,
}

/// What the https client is told when the client's request body fails; the error itself
/// stays in [`TlsRequestBody`]'s slot.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke")]
struct ClientBodyBroke;

impl TlsRequestBody {
    fn take_fault(slot: &std::sync::Mutex<Option<hyper::Error>>) -> Option<hyper::Error> {
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl HttpBody for TlsRequestBody {
    type Data = Bytes;
    type Error = ClientBodyBroke;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyBroke>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                if let Some(slot) = &self.fault {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                Poll::Ready(Some(Err(ClientBodyBroke)))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of every answer on the main listener: one sessiongate wrote, or the upstream's
/// streamed through.
pub type Body = response::Body<UpstreamBody>;

/// An upstream response body. For plain upstreams it also drives the connection the body
/// arrives on; read to the end, that connection goes back to the pool, and a body dropped
/// half-read takes its connection with it.
pub struct UpstreamBody {
    inner: Incoming,
    leg: Option<(Leg, Arc<Pool>)>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some((leg, pool)) = self.leg.take() {
            pool.put(leg);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some((leg, _)) = &mut self.leg {
            leg.drive(cx);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.leg = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Instant;

    use futures_util::StreamExt;
    use http::{Method, StatusCode};
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Either, Empty, Full, StreamBody};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    /// How long a test waits for something that takes milliseconds, before it fails.
    const GENEROUS: Duration = Duration::from_secs(30);

    #[test]
    fn a_body_error_names_the_innermost_cause() {
        let cause = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "Invalid chunk size line: missing size digit",
        );
        let e = BodyError(Box::new(cause));
        assert_eq!(
            e.to_string(),
            "malformed request body: Invalid chunk size line: missing size digit"
        );
        assert!(!client_body_broke(&std::io::Error::other(
            "connection reset"
        )));
    }

    /// How the upstream answers a request.
    enum Answer {
        /// At once, with the number of the connection it came on as the body.
        Now,
        /// Once the test releases held requests.
        Held,
        /// Not at all: the connection is closed after the request was read.
        Close,
        /// A body's first chunk, and then nothing more, ever.
        Endless,
    }

    /// What the upstream has seen.
    #[derive(Default, Clone, Debug)]
    struct Seen {
        /// Connections accepted, numbered from 0 in that order.
        accepted: usize,
        /// Connections ended and closed the whole way: the other side has the close.
        closed: usize,
        /// Each request's connection and path, in arrival order.
        requests: Vec<(usize, String)>,
        /// Requests held right now.
        held: usize,
    }

    /// What the upstream's connections share.
    #[derive(Clone)]
    struct Shared {
        seen: Arc<watch::Sender<Seen>>,
        /// How the next requests are answered; `Answer::Now` once it runs out.
        plan: Arc<Mutex<VecDeque<Answer>>>,
        release: watch::Receiver<bool>,
        close_idle: watch::Receiver<()>,
    }

    /// An upstream on 127.0.0.1 that answers as the test plans, closes its idle connections
    /// when told to, and reports what it saw.
    struct Backend {
        addr: SocketAddr,
        shared: Shared,
        release: watch::Sender<bool>,
        close_idle: watch::Sender<()>,
    }

    impl Backend {
        async fn start() -> Backend {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (release, released) = watch::channel(false);
            let (close_idle, closing) = watch::channel(());
            let shared = Shared {
                seen: Arc::new(watch::channel(Seen::default()).0),
                plan: Arc::default(),
                release: released,
                close_idle: closing,
            };
            let accepting = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let mut id = 0;
                    accepting.seen.send_modify(|s| {
                        id = s.accepted;
                        s.accepted += 1;
                    });
                    tokio::spawn(accepting.clone().serve(stream, id));
                }
            });
            Backend {
                addr,
                shared,
                release,
                close_idle,
            }
        }

        fn plan(&self, answers: impl IntoIterator<Item = Answer>) {
            self.shared.plan.lock().unwrap().extend(answers);
        }

        fn release_held(&self) {
            self.release.send_replace(true);
        }

        /// Closes every connection now idle, as an upstream's keep-alive timeout does.
        fn close_idle(&self) {
            self.close_idle.send_replace(());
        }

        fn seen(&self) -> Seen {
            self.shared.seen.borrow().clone()
        }

        /// Waits until what the upstream saw passes `until`.
        async fn wait(&self, until: impl Fn(&Seen) -> bool) -> Seen {
            let mut seen = self.shared.seen.subscribe();
            let waited = tokio::time::timeout(GENEROUS, seen.wait_for(|s| until(s))).await;
            let seen = waited.expect("the upstream never saw it").unwrap();
            seen.clone()
        }
    }

    impl Shared {
        async fn serve(self, stream: TcpStream, id: usize) {
            // A second handle on the socket: hyper's is gone when the connection ends, and
            // this one tells when the pool's side has the close (below).
            let std_stream = stream.into_std().unwrap();
            let watcher = std_stream.try_clone().unwrap();
            let stream = TcpStream::from_std(std_stream).unwrap();
            let answering = self.clone();
            let service = service_fn(move |req| answering.clone().answer(id, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let mut close_idle = self.close_idle.clone();
            close_idle.borrow_and_update();
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    Ok(()) = close_idle.changed() => conn.as_mut().graceful_shutdown(),
                }
            }
            // Counted closed only once the pool's kernel acknowledged the close: from then on
            // the pool's next read of this connection sees it closed, and no test races the
            // close on its way.
            let _ = watcher.shutdown(std::net::Shutdown::Both);
            let deadline = Instant::now() + GENEROUS;
            while !close_acknowledged(&watcher) {
                assert!(
                    Instant::now() < deadline,
                    "the close was never acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.seen.send_modify(|s| s.closed += 1);
        }

        async fn answer(
            self,
            id: usize,
            req: Request<Incoming>,
        ) -> Result<Response<UnsyncBoxBody<Bytes, Infallible>>, std::io::Error> {
            let path = req.uri().path().to_owned();
            let answer = self.plan.lock().unwrap().pop_front().unwrap_or(Answer::Now);
            self.seen
                .send_modify(|s| s.requests.push((id, path.clone())));
            let body = match answer {
                Answer::Now => Full::new(Bytes::from(id.to_string())).boxed_unsync(),
                Answer::Held => {
                    self.seen.send_modify(|s| s.held += 1);
                    let _ = self.release.clone().wait_for(|released| *released).await;
                    self.seen.send_modify(|s| s.held -= 1);
                    Full::new(Bytes::from(id.to_string())).boxed_unsync()
                }
                // hyper closes a connection whose service fails, without an answer.
                Answer::Close => return Err(std::io::Error::other("no answer")),
                Answer::Endless => {
                    let first = Frame::data(Bytes::from_static(b"first"));
                    let frames = futures_util::stream::once(std::future::ready(Ok(first)))
                        .chain(futures_util::stream::pending());
                    StreamBody::new(frames).boxed_unsync()
                }
            };
            let mut res = Response::new(body);
            if path == "/204" {
                *res.status_mut() = StatusCode::NO_CONTENT;
                *res.body_mut() = Empty::new().boxed_unsync();
            }
            Ok(res)
        }
    }

    /// Whether the other end acknowledged this socket's close: the TCP state is past FIN_WAIT1
    /// (FIN_WAIT2, TIME_WAIT or CLOSE in the kernel's numbering), so the other end's kernel
    /// holds the close.
    fn close_acknowledged(socket: &std::net::TcpStream) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain integers, for which all-zero bytes are a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes to `info`, which is that large.
        let got = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        got == 0 && matches!(info.tcpi_state, 5..=7)
    }

    /// A client's connection to the proxy, in memory: a hyper server whose service sends each
    /// request upstream, as the handler does. Dropping it drops the connection and with it
    /// whatever the request still holds of the upstream.
    struct Front {
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        failed: Arc<Mutex<Option<ProxyError>>>,
        tasks: [JoinHandle<()>; 2],
    }

    impl Front {
        async fn open(upstream: &Arc<Upstream>) -> Front {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let failed = Arc::new(Mutex::new(None));
            let (upstream, failing) = (upstream.clone(), failed.clone());
            let service = service_fn(move |req| {
                let (upstream, failing) = (upstream.clone(), failing.clone());
                async move {
                    Ok::<_, Infallible>(match upstream.send(req).await {
                        Ok(res) => res.map(Either::Left),
                        Err(e) => {
                            *failing.lock().unwrap() = Some(e);
                            Response::new(Either::Right(Empty::<Bytes>::new()))
                        }
                    })
                }
            });
            let serving = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
                .await
                .unwrap();
            let tasks = [
                tokio::spawn(async move { drop(serving.await) }),
                tokio::spawn(async move { drop(conn.await) }),
            ];
            Front {
                sender,
                failed,
                tasks,
            }
        }

        /// The upstream's answer, or the pool's error.
        async fn send(
            &mut self,
            req: Request<Full<Bytes>>,
        ) -> Result<Response<Incoming>, ProxyError> {
            let res = self.sender.send_request(req).await.unwrap();
            match self.failed.lock().unwrap().take() {
                Some(e) => Err(e),
                None => Ok(res),
            }
        }
    }

    impl Drop for Front {
        fn drop(&mut self) {
            for task in &self.tasks {
                task.abort();
            }
        }
    }

    fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
        let body = match method {
            Method::POST => Full::new(Bytes::from_static(b"order=1")),
            _ => Full::default(),
        };
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "app.test")
            .body(body)
            .unwrap()
    }

    /// A request through its own client connection: the upstream's status and body.
    async fn fetch(
        upstream: &Arc<Upstream>,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, String), ProxyError> {
        let res = Front::open(upstream).await.send(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8(body.to_vec()).unwrap()))
    }

    /// A GET answered 200: the body, the number of the connection it came on.
    async fn get(upstream: &Arc<Upstream>, path: &str) -> String {
        let (status, body) = fetch(upstream, request(Method::GET, path)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        body
    }

    fn upstream_to(addr: SocketAddr, timeout: Duration) -> Arc<Upstream> {
        Arc::new(Upstream::new(&UpstreamTarget {
            authority: addr.to_string().parse().unwrap(),
            tls: None,
            timeout,
            tunnel_idle_timeout: GENEROUS,
        }))
    }

    /// Idle connections in this thread's pool (a test's runtime is its one thread).
    fn idle(upstream: &Upstream) -> usize {
        match &upstream.transport {
            Transport::Plain(pool) => pool.local().borrow().len(),
            Transport::Tls(_) => 0,
        }
    }

    #[tokio::test]
    async fn a_connection_is_kept_and_reused_and_bodiless_answers_free_it_at_once() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        assert_eq!(get(&upstream, "/a").await, "0");
        assert_eq!(idle(&upstream), 1);
        // Neither answer has a body to read to its end: the connection goes back at once.
        let (status, _) = fetch(&upstream, request(Method::HEAD, "/b")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let (status, _) = fetch(&upstream, request(Method::GET, "/204"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(get(&upstream, "/c").await, "0");
        assert_eq!(backend.seen().accepted, 1);
        assert_eq!(idle(&upstream), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced_and_the_request_succeeds() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        assert_eq!(get(&upstream, "/first").await, "0");
        backend.close_idle();
        backend.wait(|s| s.closed == 1).await;

        assert_eq!(get(&upstream, "/second").await, "1");
        let seen = backend.seen();
        assert_eq!(seen.accepted, 2);
        // The request reached the upstream once, on the new connection.
        assert_eq!(seen.requests, [(0, "/first".into()), (1, "/second".into())]);
    }

    #[tokio::test]
    async fn every_closed_idle_connection_is_passed_over() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        hold_at_once(&backend, &upstream, 3).await;
        assert_eq!(idle(&upstream), 3);
        backend.close_idle();
        backend.wait(|s| s.closed == 3).await;

        assert_eq!(get(&upstream, "/after").await, "3");
        assert_eq!(backend.seen().accepted, 4);
        assert_eq!(idle(&upstream), 1);
    }

    /// `n` requests at the upstream at the same time, all held until every one has arrived
    /// (so each needed a connection of its own), then answered.
    async fn hold_at_once(backend: &Backend, upstream: &Arc<Upstream>, n: usize) {
        backend.plan((0..n).map(|_| Answer::Held));
        let paths: Vec<String> = (0..n).map(|i| format!("/held/{i}")).collect();
        let all = futures_util::future::join_all(paths.iter().map(|path| get(upstream, path)));
        let release = async {
            backend.wait(|s| s.held == n).await;
            backend.release_held();
        };
        let (bodies, ()) = tokio::join!(all, release);
        let connections: std::collections::BTreeSet<String> = bodies.into_iter().collect();
        assert_eq!(connections.len(), n, "one connection each");
    }

    #[tokio::test]
    async fn requests_at_the_same_time_each_get_a_connection_and_the_latest_idle_one_is_reused() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        // No queue: none of the four waits for another's connection.
        hold_at_once(&backend, &upstream, 4).await;
        assert_eq!(idle(&upstream), 4);

        // One at a time, they all take the connection most recently put back, and the other
        // three stay idle for the upstream to close when it likes.
        let first = get(&upstream, "/1").await;
        for path in ["/2", "/3"] {
            assert_eq!(get(&upstream, path).await, first);
        }
        assert_eq!(backend.seen().accepted, 4);
        assert_eq!(idle(&upstream), 4);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        // Three descriptors a connection: the pool's socket and the upstream's two handles.
        let needed = 3 * (MAX_IDLE as u64 + 1) + 256;
        let limit = rlimit::increase_nofile_limit(needed).unwrap();
        assert!(
            limit >= needed,
            "needs {needed} file descriptors, the limit is {limit}"
        );
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        hold_at_once(&backend, &upstream, MAX_IDLE + 1).await;
        // The one over the limit is closed when its answer ends.
        backend.wait(|s| s.closed == 1).await;
        assert_eq!(idle(&upstream), MAX_IDLE);
    }

    #[tokio::test]
    async fn a_request_the_upstream_received_is_never_sent_again() {
        for method in [Method::GET, Method::POST] {
            let backend = Backend::start().await;
            let upstream = upstream_to(backend.addr, GENEROUS);
            assert_eq!(get(&upstream, "/warm").await, "0");
            // The pooled connection takes the request, and the upstream closes it unanswered.
            // The upstream may have acted on it: it is not sent again (on a new connection it
            // would be answered), and the client gets 502.
            backend.plan([Answer::Close]);
            let err = fetch(&upstream, request(method.clone(), "/order"))
                .await
                .unwrap_err();
            assert!(matches!(err, ProxyError::Upstream(_)), "{method}: {err}");
            assert_eq!(Refusal::from(&err).status(), StatusCode::BAD_GATEWAY);
            assert_eq!(err.failure(), Some(UpstreamFailure::Reset));
            backend.wait(|s| s.closed == 1).await;
            let seen = backend.seen();
            assert_eq!(seen.requests, [(0, "/warm".into()), (0, "/order".into())]);
            assert_eq!(seen.accepted, 1, "{method}");
        }
    }

    #[tokio::test]
    async fn a_new_connection_that_fails_is_not_retried() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        backend.plan([Answer::Close]);
        let err = fetch(&upstream, request(Method::GET, "/"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Upstream(_)), "{err}");
        backend.wait(|s| s.closed == 1).await;
        assert_eq!(backend.seen().accepted, 1);
        assert_eq!(backend.seen().requests.len(), 1);
        // The pool is not left broken: the next request gets a connection of its own.
        assert_eq!(get(&upstream, "/").await, "1");
    }

    #[tokio::test]
    async fn an_upstream_refusing_connections_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = upstream_to(addr, GENEROUS);
        let err = fetch(&upstream, request(Method::GET, "/"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Connect(_)), "{err}");
        assert_eq!(Refusal::from(&err).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(idle(&upstream), 0);
    }

    #[tokio::test]
    async fn an_answer_later_than_the_timeout_is_a_504_and_its_connection_is_not_kept() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, Duration::from_millis(200));
        backend.plan([Answer::Held]);
        let err = fetch(&upstream, request(Method::GET, "/slow"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Timeout(_)), "{err}");
        assert_eq!(Refusal::from(&err).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(idle(&upstream), 0);
        backend.release_held();
        backend.wait(|s| s.closed == 1).await;
        assert_eq!(get(&upstream, "/next").await, "1");
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_takes_its_connection_with_it() {
        let backend = Backend::start().await;
        let upstream = upstream_to(backend.addr, GENEROUS);
        backend.plan([Answer::Endless]);
        let mut front = Front::open(&upstream).await;
        let mut res = front.send(request(Method::GET, "/endless")).await.unwrap();
        let first = res.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        drop((res, front));

        // Half a body leaves the connection in the middle of an answer: never reused.
        backend.wait(|s| s.closed == 1).await;
        assert_eq!(idle(&upstream), 0);
        assert_eq!(get(&upstream, "/next").await, "1");
    }
}
