//! WebSocket and streaming helpers: a real upstream app that accepts WebSocket upgrades itself
//! (hyper with upgrades, then tokio-tungstenite on the upgraded connection), serves
//! server-sent events and slow bodies one chunk per release, and a page whose script opens a
//! WebSocket; and a client that does the handshake over plain TCP or TLS and then speaks
//! WebSocket through tokio-tungstenite.
//!
//! The client sends its handshake with hyper rather than tungstenite's own client: hyper reads
//! a refusal's whole body (tungstenite keeps only the bytes that came with the head), keeps
//! bytes that arrive right after the 101, and gives plain and TLS connections the same type.
//! No frame is encoded or parsed here; tokio-tungstenite does all of it on both sides.
//!
//! Every wait has a generous deadline instead of a fixed sleep: on a busy machine running many
//! test binaries at once, a loopback round trip can take seconds.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, CONTENT_TYPE, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::Resp;
use super::tls::{Ca, connector};

/// How long any single step (connect, handshake, one message, a close) may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The largest message (and frame: tungstenite sends a message as one frame) either side
/// accepts. Both sides use the same limit, so a test of large messages through sessiongate
/// fails at sessiongate and not at a helper's own limit.
pub const MAX_MESSAGE: usize = 2 << 20;

/// The events `GET /events` sends, each but the first after a [`WsUpstream::release_event`].
pub const EVENTS: [&str; 3] = ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"];

/// The chunks of `GET /slow-body`, each after a [`WsUpstream::release_body`].
pub const BODY_CHUNKS: [&str; 3] = ["chunk 1\n", "chunk 2\n", "chunk 3\n"];

/// The close code of a close frame that carried none (RFC 6455, 7.1.5).
pub const NO_STATUS: u16 = 1005;

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

// ---------------------------------------------------------------------------------------------
// Upstream

type Body = BoxBody<Bytes, hyper::Error>;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// How one upstream socket ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketEnd {
    /// The client sent a close frame with this code ([`NO_STATUS`] when it had none).
    ClientClosed(u16),
    /// The upstream sent a close frame with this code ([`WsUpstream::close_all`]).
    UpstreamClosed(u16),
    /// The upstream dropped the connection without a close frame ([`WsUpstream::drop_all`]).
    UpstreamDropped,
    /// The connection ended (EOF, reset, protocol error, failed upgrade) with no close frame
    /// from either side; what tungstenite or hyper said.
    Dropped(String),
}

impl SocketEnd {
    /// A close handshake, from either side (not just a TCP connection that ended).
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            SocketEnd::ClientClosed(_) | SocketEnd::UpstreamClosed(_)
        )
    }
}

/// What the upstream has seen, in a watch channel so a test can wait for a change instead of
/// polling on a timer.
#[derive(Default)]
struct State {
    connections: usize,
    requests: Vec<Recorded>,
    handshakes: Vec<Vec<(String, String)>>,
    open: usize,
    ends: Vec<SocketEnd>,
    messages: usize,
    events_sent: usize,
    chunks_sent: usize,
}

/// What the upstream tells every open socket to do.
#[derive(Clone, Debug)]
enum Command {
    Text(String),
    Close(u16, String),
    Drop,
}

struct Shared {
    state: watch::Sender<State>,
    // Semaphores and not `Notify`: a release before the body waits for it is kept, and two
    // releases are two chunks.
    events: Semaphore,
    body: Semaphore,
    commands: broadcast::Sender<Command>,
}

/// The upstream app of [`start_ws_upstream`]. Its accept loop stops when it is dropped (open
/// connections carry on until they end).
pub struct WsUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A WebSocket upstream on 127.0.0.1 over plain HTTP/1.1:
///
/// - `GET /ws` and `GET /ws/...` with an upgrade: 101, then every text and binary message is
///   echoed back unchanged (pings answered by tungstenite). The request's headers are kept
///   ([`WsUpstream::handshakes`]) and the socket counted until it ends ([`WsUpstream::ends`]).
///   The first offered subprotocol is accepted. Without an upgrade: 426; with a bad key or a
///   version other than 13: 400.
/// - `/refuse`: 403 with a short text body and no upgrade, whatever was asked.
/// - `GET /events`: `text/event-stream` with the [`EVENTS`], the first at once and each other
///   one after a [`WsUpstream::release_event`].
/// - `GET /slow-body`: the head at once, then each of the [`BODY_CHUNKS`] after a
///   [`WsUpstream::release_body`].
/// - `GET /page`: an HTML page whose script opens a WebSocket to `/ws` on its own origin.
/// - anything else: the JSON echo of [`super::echo`].
///
/// The releases are shared: run one `/events` (and one `/slow-body`) at a time.
pub async fn start_ws_upstream() -> WsUpstream {
    start(None).await
}

/// [`start_ws_upstream`] over TLS (HTTP/1.1 only) with a certificate for localhost and
/// 127.0.0.1 signed by `ca`.
pub async fn start_ws_upstream_tls(ca: &Ca) -> WsUpstream {
    let (cert, key, _) = ca.leaf();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(sessiongate::http::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    // A WebSocket upgrade is an HTTP/1.1 thing; this upstream speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    start(Some(TlsAcceptor::from(Arc::new(config)))).await
}

async fn start(tls: Option<TlsAcceptor>) -> WsUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared {
        state: watch::Sender::new(State::default()),
        events: Semaphore::new(0),
        body: Semaphore::new(0),
        commands: broadcast::channel(64).0,
    });
    let accepting = shared.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepting.state.send_modify(|s| s.connections += 1);
            let (shared, tls) = (accepting.clone(), tls.clone());
            // The TLS handshake runs in the connection's own task, so a slow or silent
            // client does not hold up the accept loop.
            tokio::spawn(async move {
                match tls {
                    None => serve(tcp, shared).await,
                    Some(acceptor) => {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(DEADLINE, acceptor.accept(tcp)).await
                        {
                            serve(stream, shared).await
                        }
                    }
                }
            });
        }
    });
    WsUpstream { addr, shared, task }
}

async fn serve<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| handle(req, shared.clone()));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
}

impl WsUpstream {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state.borrow().connections
    }

    /// Requests received so far, handshakes included (to prove one never arrived).
    pub fn requests(&self) -> usize {
        self.shared.state.borrow().requests.len()
    }

    /// Every request received so far, in order.
    pub fn request_log(&self) -> Vec<Recorded> {
        self.shared.state.borrow().requests.clone()
    }

    /// The request headers of every handshake answered with 101, in order.
    pub fn handshakes(&self) -> Vec<Vec<(String, String)>> {
        self.shared.state.borrow().handshakes.clone()
    }

    /// Sockets upgraded and not yet ended. Counted before the 101 is sent, so it already
    /// includes a socket whose client has just seen its handshake succeed.
    pub fn open_sockets(&self) -> usize {
        self.shared.state.borrow().open
    }

    /// How each socket that ended so far ended, in order.
    pub fn ends(&self) -> Vec<SocketEnd> {
        self.shared.state.borrow().ends.clone()
    }

    /// Text and binary messages echoed so far.
    pub fn messages(&self) -> usize {
        self.shared.state.borrow().messages
    }

    /// Events `/events` has produced so far (all requests together).
    pub fn events_sent(&self) -> usize {
        self.shared.state.borrow().events_sent
    }

    /// Chunks `/slow-body` has produced so far (all requests together).
    pub fn chunks_sent(&self) -> usize {
        self.shared.state.borrow().chunks_sent
    }

    /// Lets `/events` produce its next event.
    pub fn release_event(&self) {
        self.shared.events.add_permits(1);
    }

    /// Lets `/slow-body` produce its next chunk.
    pub fn release_body(&self) {
        self.shared.body.add_permits(1);
    }

    /// Sends `text` to every open socket, unprompted.
    pub fn push_text(&self, text: &str) {
        let _ = self.shared.commands.send(Command::Text(text.to_string()));
    }

    /// Starts a close handshake with `code` and `reason` on every open socket.
    pub fn close_all(&self, code: u16, reason: &str) {
        let _ = self
            .shared
            .commands
            .send(Command::Close(code, reason.to_string()));
    }

    /// Drops every open socket's connection without a close frame.
    pub fn drop_all(&self) {
        let _ = self.shared.commands.send(Command::Drop);
    }

    /// Waits until exactly `n` sockets are open; panics after `within`.
    pub async fn wait_open(&self, n: usize, within: Duration) {
        let mut rx = self.shared.state.subscribe();
        let waited = tokio::time::timeout(within, rx.wait_for(|s| s.open == n)).await;
        assert!(
            waited.is_ok(),
            "{} sockets open after {within:?}, expected {n}",
            self.open_sockets()
        );
    }

    /// Waits until at least `n` sockets have ended and returns how each ended; panics after
    /// `within`.
    pub async fn wait_closed(&self, n: usize, within: Duration) -> Vec<SocketEnd> {
        let mut rx = self.shared.state.subscribe();
        let waited = tokio::time::timeout(within, rx.wait_for(|s| s.ends.len() >= n)).await;
        assert!(
            waited.is_ok(),
            "{} sockets ended after {within:?}, expected {n}: {:?}",
            self.ends().len(),
            self.ends()
        );
        self.ends()
    }
}

/// The values of header `name` (compared case-insensitively) in a recorded header list.
pub fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Whether a comma-separated header holds `token` (case-insensitively), in any of its lines.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn text(status: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body))
        .unwrap()
}

fn full(body: &'static str) -> Body {
    Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|e| match e {})
        .boxed()
}

async fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let headers = header_list(req.headers());
    let path = req.uri().path().to_string();
    shared.state.send_modify(|s| {
        s.requests.push(Recorded {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: headers.clone(),
        })
    });
    if path == "/ws" || path.starts_with("/ws/") {
        return Ok(accept_websocket(&mut req, headers, &shared));
    }
    let res = match path.as_str() {
        "/refuse" => {
            let mut res = text(403, "refused by the app\n");
            res.headers_mut()
                .insert("x-app", HeaderValue::from_static("refused"));
            res
        }
        "/events" => {
            let mut res = Response::new(gated_body(shared, Gate::Events));
            let h = res.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            res
        }
        "/slow-body" => {
            let mut res = Response::new(gated_body(shared, Gate::Body));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            res
        }
        "/page" => {
            let mut res = Response::new(full(PAGE));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            res
        }
        _ => return super::echo(req).await,
    };
    Ok(res)
}

/// Answers a handshake to `/ws` as a WebSocket server would, and starts the socket's task.
fn accept_websocket(
    req: &mut Request<Incoming>,
    headers: Vec<(String, String)>,
    shared: &Arc<Shared>,
) -> Response<Body> {
    let h = req.headers();
    let upgrade = req.method() == Method::GET
        && has_token(h, CONNECTION, "upgrade")
        && has_token(h, UPGRADE, "websocket");
    if !upgrade {
        let mut res = text(426, "this path speaks WebSocket only\n");
        res.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return res;
    }
    // The key must be 16 random bytes in base64 (24 characters) and the version 13.
    let key = h.get(SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    let version_ok = h.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) == Some(b"13");
    let Some(key) = key.filter(|k| k.len() == 24 && version_ok) else {
        return text(400, "bad WebSocket handshake\n");
    };
    let protocol = h
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string());
    // Subscribed, recorded and counted before the 101 goes out: once the client sees its
    // handshake succeed, the test sees the socket and its commands reach it.
    let commands = shared.commands.subscribe();
    shared.state.send_modify(|s| {
        s.handshakes.push(headers);
        s.open += 1;
    });
    tokio::spawn(run_socket(
        hyper::upgrade::on(req),
        commands,
        shared.clone(),
    ));
    let mut res = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(&key))
        .header("x-upstream", "ws-upstream");
    if let Some(p) = protocol {
        res = res.header(SEC_WEBSOCKET_PROTOCOL, p);
    }
    res.body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap()
}

async fn run_socket(
    on_upgrade: OnUpgrade,
    mut commands: broadcast::Receiver<Command>,
    shared: Arc<Shared>,
) {
    let end = match on_upgrade.await {
        Err(e) => SocketEnd::Dropped(format!("upgrade failed: {e}")),
        Ok(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(ws_config()),
            )
            .await;
            echo_socket(ws, &mut commands, &shared).await
        }
    };
    shared.state.send_modify(|s| {
        s.open -= 1;
        s.ends.push(end);
    });
}

async fn echo_socket(
    mut ws: WebSocketStream<TokioIo<Upgraded>>,
    commands: &mut broadcast::Receiver<Command>,
    shared: &Shared,
) -> SocketEnd {
    // Set once a close frame went out or came in; the loop then reads on until the close
    // handshake is done (tungstenite sends the reply to a client's close frame by itself).
    let mut end: Option<SocketEnd> = None;
    // After its own close frame the upstream waits this long for the reply, then drops the
    // connection (RFC 6455, 7.1.1), so a peer that never answers does not keep it open.
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)),
                if give_up.is_some() => return end.expect("set with give_up"),
            msg = ws.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if end.is_some() {
                        continue;
                    }
                    shared.state.send_modify(|s| s.messages += 1);
                    if let Err(e) = ws.send(msg).await {
                        return SocketEnd::Dropped(e.to_string());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(NO_STATUS, |f| u16::from(f.code));
                    end.get_or_insert(SocketEnd::ClientClosed(code));
                }
                // Pings are answered by tungstenite on the next read or write.
                Some(Ok(_)) => {}
                None => return end.unwrap_or_else(|| SocketEnd::Dropped("ended".into())),
                Some(Err(e)) => return end.unwrap_or_else(|| SocketEnd::Dropped(e.to_string())),
            },
            command = commands.recv() => match command {
                Ok(Command::Text(t)) => {
                    if let Err(e) = ws.send(Message::text(t)).await {
                        return SocketEnd::Dropped(e.to_string());
                    }
                }
                Ok(Command::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.close(Some(frame)).await;
                    end.get_or_insert(SocketEnd::UpstreamClosed(code));
                    give_up.get_or_insert(tokio::time::Instant::now() + DEADLINE);
                }
                Ok(Command::Drop) => return SocketEnd::UpstreamDropped,
                // Lagged (or, never while `shared` lives, closed): nothing to do.
                Err(_) => {}
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Gate {
    Events,
    Body,
}

/// A streamed body whose chunks come only as the test releases them (the first event of
/// `/events` at once), so a test can tell a relayed chunk from a buffered one.
fn gated_body(shared: Arc<Shared>, gate: Gate) -> Body {
    let chunks: &'static [&'static str] = match gate {
        Gate::Events => &EVENTS,
        Gate::Body => &BODY_CHUNKS,
    };
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let shared = shared.clone();
        async move {
            let chunk = *chunks.get(i)?;
            let semaphore = match gate {
                Gate::Events => &shared.events,
                Gate::Body => &shared.body,
            };
            if i > 0 || matches!(gate, Gate::Body) {
                semaphore.acquire().await.ok()?.forget();
            }
            shared.state.send_modify(|s| match gate {
                Gate::Events => s.events_sent += 1,
                Gate::Body => s.chunks_sent += 1,
            });
            let frame = Frame::data(Bytes::from_static(chunk.as_bytes()));
            Some((Ok(frame), i + 1))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// The app's own page (no CSP of sessiongate's applies): a WebSocket to `/ws` on the page's
/// origin that says hello on open, with its state, close code and every message in the DOM.
/// `window.ws` is the socket, for a WebDriver script to send more.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>WebSocket page</title></head>
<body>
<p>state: <span id="state">connecting</span>, close code: <span id="code"></span></p>
<ul id="messages"></ul>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.binaryType = "arraybuffer";
window.ws = ws;
ws.onopen = () => {
  document.getElementById("state").textContent = "open";
  ws.send("hello from the page");
};
ws.onmessage = (event) => {
  const li = document.createElement("li");
  li.textContent = typeof event.data === "string" ? event.data : "binary:" + event.data.byteLength;
  document.getElementById("messages").appendChild(li);
};
ws.onclose = (event) => {
  document.getElementById("state").textContent = "closed";
  document.getElementById("code").textContent = String(event.code);
};
</script>
</body>
</html>
"#;

/// Reads `body` frame by frame until what came so far contains `needle`, and returns all of
/// it. Panics if the body ends first or nothing new arrives within [`DEADLINE`]. For a
/// streamed response from [`super::send_streaming`]: each event can be awaited as it comes.
pub async fn read_until(body: &mut Incoming, needle: &str) -> String {
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(needle) {
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within {DEADLINE:?}, got {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => panic!("body failed before {needle:?}: {e}"),
            None => panic!(
                "body ended before {needle:?}, got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Client

/// A WebSocket over plain TCP or TLS, both behind hyper's upgraded connection.
pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// A client socket after a 101: the headers of the 101, and the socket itself (`ws`, for
/// anything the methods do not cover).
pub struct WsClient {
    pub headers: HeaderMap,
    pub ws: WsStream,
}

impl fmt::Debug for WsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsClient")
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Why a handshake did not give a socket.
pub enum WsError {
    /// The server answered without switching protocols: the whole answer.
    Refused(Resp),
    /// No answer to judge (connect, TLS or I/O failed, timed out), or a 101 that is not a
    /// valid WebSocket accept.
    Failed(String),
}

impl WsError {
    /// The status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            WsError::Refused(res) => Some(res.status),
            WsError::Failed(_) => None,
        }
    }

    /// The refusal; panics if the handshake failed some other way.
    pub fn refused(self) -> Resp {
        match self {
            WsError::Refused(res) => res,
            WsError::Failed(e) => panic!("expected a refusal, the handshake failed: {e}"),
        }
    }
}

impl fmt::Debug for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Refused(res) => write!(
                f,
                "Refused({} {:?} {:?})",
                res.status,
                res.headers,
                res.text()
            ),
            WsError::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// How the other side ended a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame: its code ([`NO_STATUS`] when it had none) and reason.
    Frame { code: u16, reason: String },
    /// The connection ended without a close frame.
    Eof,
    /// The connection was reset (or aborted) without a close frame.
    Reset,
    /// Something else went wrong (a protocol error, say): what tungstenite said.
    Error(String),
}

/// A WebSocket handshake for `path` over plain TCP to `addr`. Host is `addr`; `headers`
/// (Cookie, Origin, ...) are added, and one named like a handshake header (Host, Upgrade,
/// Sec-WebSocket-Version, ...) replaces it. A handshake missing a header needs
/// [`super::raw`].
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, WsError> {
    let tcp = tcp_connect(addr).await?;
    ws_handshake(tcp, &addr.to_string(), path, headers).await
}

/// [`ws_connect`] over TLS: the server's certificate must be for `host` and signed by the CA
/// in `ca_pem`; ALPN offers only `http/1.1` (the only version with upgrades). Host is
/// `host:port`.
pub async fn wss_connect(
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, WsError> {
    let tcp = tcp_connect(addr).await?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| failed("server name", e))?;
    let tls = tokio::time::timeout(
        DEADLINE,
        connector(ca_pem, &[b"http/1.1"]).connect(name, tcp),
    )
    .await
    .map_err(|e| failed("TLS handshake", e))?
    .map_err(|e| failed("TLS handshake", e))?;
    ws_handshake(tls, &format!("{host}:{}", addr.port()), path, headers).await
}

fn failed(what: &str, e: impl fmt::Display) -> WsError {
    WsError::Failed(format!("{what}: {e}"))
}

async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, WsError> {
    tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .map_err(|e| failed("connect", e))?
        .map_err(|e| failed("connect", e))
}

/// The handshake of [`ws_connect`] over a connection the caller made (TLS with other
/// settings, a wrapped stream, ...), with `host` as the Host header.
pub async fn ws_handshake<IO>(
    io: IO,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, WsError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed("HTTP handshake", e))?;
    tokio::spawn(conn.with_upgrades());

    let mut req = Request::get(path).body(Empty::<Bytes>::new()).unwrap();
    let h = req.headers_mut();
    let defaults = [
        (HOST, host.to_string()),
        (CONNECTION, "Upgrade".to_string()),
        (UPGRADE, "websocket".to_string()),
        (SEC_WEBSOCKET_VERSION, "13".to_string()),
        (SEC_WEBSOCKET_KEY, generate_key()),
    ];
    for (name, value) in defaults {
        h.insert(name, value.parse().unwrap());
    }
    for (name, _) in headers {
        h.remove(*name);
    }
    for (name, value) in headers {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let expected_accept = h
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));

    let mut res = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .map_err(|e| failed("handshake answer", e))?
        .map_err(|e| failed("handshake answer", e))?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .map_err(|e| failed("refusal body", e))?
            .map_err(|e| failed("refusal body", e))?
            .to_bytes();
        return Err(WsError::Refused(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }));
    }
    let accept = res
        .headers()
        .get(SEC_WEBSOCKET_ACCEPT)
        .map(|v| v.as_bytes());
    if accept.is_none() || accept != expected_accept.as_ref().map(|a| a.as_bytes()) {
        return Err(WsError::Failed(format!(
            "101 with Sec-WebSocket-Accept {accept:?}, expected {expected_accept:?}"
        )));
    }
    if !has_token(res.headers(), UPGRADE, "websocket") {
        return Err(WsError::Failed(format!(
            "101 without Upgrade: websocket: {:?}",
            res.headers()
        )));
    }
    let headers = res.headers().clone();
    let upgraded = tokio::time::timeout(DEADLINE, hyper::upgrade::on(&mut res))
        .await
        .map_err(|e| failed("upgrade", e))?
        .map_err(|e| failed("upgrade", e))?;
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(ws_config()))
            .await;
    Ok(WsClient { headers, ws })
}

impl WsClient {
    /// Sends one message (flushed); panics on an error or after [`DEADLINE`].
    pub async fn send(&mut self, msg: Message) {
        tokio::time::timeout(DEADLINE, self.ws.send(msg))
            .await
            .expect("message sent within the deadline")
            .expect("message sent");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await
    }

    pub async fn send_binary(&mut self, data: impl Into<Bytes>) {
        self.send(Message::binary(data)).await
    }

    /// The next text, binary or close message (pings and pongs skipped; tungstenite answers
    /// pings itself). Panics if the socket ends or nothing comes within [`DEADLINE`].
    pub async fn recv(&mut self) -> Message {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {DEADLINE:?}"));
            match msg {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(msg)) => return msg,
                Some(Err(e)) => panic!("socket failed while waiting for a message: {e}"),
                None => panic!("socket ended while waiting for a message"),
            }
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Message::Text(t) => t.as_str().to_string(),
            other => panic!("expected a text message, got {}", describe(&other)),
        }
    }

    /// The next message, which must be binary.
    pub async fn recv_binary(&mut self) -> Bytes {
        match self.recv().await {
            Message::Binary(b) => b,
            other => panic!("expected a binary message, got {}", describe(&other)),
        }
    }

    /// Sends a ping and returns the pong's payload. Panics if a data message comes first.
    pub async fn ping(&mut self, payload: &[u8]) -> Bytes {
        self.send(Message::Ping(Bytes::copy_from_slice(payload)))
            .await;
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no pong within {DEADLINE:?}"));
            match msg {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(other)) => panic!("expected a pong, got {}", describe(&other)),
                Some(Err(e)) => panic!("socket failed while waiting for a pong: {e}"),
                None => panic!("socket ended while waiting for a pong"),
            }
        }
    }

    /// Starts a close handshake and returns how the other side answered (normally a close
    /// frame echoing `code`).
    pub async fn close(&mut self, code: u16, reason: &str) -> Closed {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if let Err(e) = tokio::time::timeout(DEADLINE, self.ws.close(Some(frame)))
            .await
            .expect("close frame sent within the deadline")
        {
            return closed_by(e);
        }
        self.wait_closed(DEADLINE).await
    }

    /// Reads until the other side ends the socket and says how; data messages meanwhile are
    /// skipped. After a close frame it reads on until the connection ends, so the reply to it
    /// goes out and the close handshake completes. Panics after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("the socket did not end within {within:?}"));
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((NO_STATUS, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_string())
                    });
                    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.ws.next()).await
                    {
                    }
                    return Closed::Frame { code, reason };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return closed_by(e),
                // The stream only ends without an error after a close handshake, which this
                // loop would have seen; count it as an ended connection.
                None => return Closed::Eof,
            }
        }
    }
}

fn closed_by(e: tungstenite::Error) -> Closed {
    use std::io::ErrorKind;
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Closed::Eof,
        tungstenite::Error::Io(e) => match e.kind() {
            ErrorKind::UnexpectedEof => Closed::Eof,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Closed::Reset
            }
            _ => Closed::Error(e.to_string()),
        },
        e => Closed::Error(e.to_string()),
    }
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(t) => format!("text {:?}", truncate(t.as_str())),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(200).map_or(s, |(i, _)| &s[..i])
}
