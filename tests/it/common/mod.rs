//! Test helpers: a real echo upstream and a real sessiongate, both on loopback ports, and a
//! plain HTTP/1.1 client with no cookie jar and no redirect following.
#![allow(dead_code)] // each test file uses a different part of this module

pub mod dockerfile;
pub mod edge;
pub mod hypercorn;
pub mod oidc;
pub mod passkey_token;
pub mod python;
pub mod redis;
pub mod tls;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sessiongate::{App, Config};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// argon2id with small parameters: the real algorithm, fast enough for many logins per test.
pub fn cheap_hash(password: &str) -> String {
    argon2_hash(password, 1024, 1)
}

/// An argon2id PHC string for `password` with `kib` KiB of memory and `passes` passes.
pub fn argon2_hash(password: &str, kib: u32, passes: u32) -> String {
    use argon2::{Argon2, Params, PasswordHasher};
    let params = Params::new(kib, passes, 1, None).unwrap();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

/// A config whose `[auth]` has `login_workers` and `login_queue`, with an extra user "slow"
/// (password "slow-pw") whose argon2id hash (`kib` of memory, `passes` over it) takes tens of
/// milliseconds or more, so logins overlap.
pub fn slow_login_config(
    upstream: SocketAddr,
    workers: usize,
    queue: usize,
    kib: u32,
    passes: u32,
) -> String {
    let slow = argon2_hash("slow-pw", kib, passes);
    config_toml(upstream, "", "").replace(
        "[[users]]",
        &format!(
            "[auth]\nlogin_workers = {workers}\nlogin_queue = {queue}\n\n[[users]]\nname = \"slow\"\npassword_hash = \"{slow}\"\n\n[[users]]"
        ),
    )
}
fn alice_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| cheap_hash(PASSWORD))
}

// ---------------------------------------------------------------------------------------------
// Upstream

/// An upstream that answers every request with JSON describing what it received:
/// `{"method", "uri", "headers": [[name, value], ...], "body_len", "body_sha256"}`.
/// Special paths: `/echo-stream` streams the request body straight back;
/// `/set-cookie` answers 201 with two Set-Cookie headers and a custom header; a path ending
/// in `/respond-with` answers as its query asks (see [`respond_with`]).
pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far (to see keep-alive reuse).
    pub connections: Arc<AtomicUsize>,
    /// Requests received so far (to prove a refused request never arrived).
    pub requests: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conn_count, req_count) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conn_count.fetch_add(1, Ordering::SeqCst);
            let req_count = req_count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    req_count.fetch_add(1, Ordering::SeqCst);
                    echo(req)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        connections,
        requests,
    }
}

pub async fn echo(
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, Infallible> {
    if req.uri().path() == "/echo-stream" {
        return Ok(Response::new(req.into_body().boxed()));
    }
    if req.uri().path() == "/set-cookie" {
        let res = Response::builder()
            .status(201)
            .header("set-cookie", "app=1; Path=/")
            .header("set-cookie", "other=2; HttpOnly")
            .header("x-app", "kept")
            .body(
                Full::new(Bytes::from_static(b"created"))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .unwrap();
        return Ok(res);
    }
    if req.uri().path().ends_with("/respond-with") {
        return Ok(respond_with(req.uri().query().unwrap_or_default()));
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // Read the body frame by frame: counting and hashing, never holding all of it.
    let mut body = req.into_body();
    let mut len = 0usize;
    let mut sha = Sha256::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            sha.update(&data);
        }
    }
    let out = json!({
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body_len": len,
        "body_sha256": hex(&sha.finalize()),
    });
    let mut res = Response::new(
        Full::new(Bytes::from(out.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(res)
}

/// The answer `/respond-with?status=N&cache-control=V&cache-control=W` asks for: status N
/// (200 without one; a 3xx with `Location: /elsewhere`), one `Cache-Control` line per value in
/// the order given (none without one), and the body `answer` (none for a 304).
fn respond_with(query: &str) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut res = Response::builder().header("content-type", "text/plain");
    let mut status = StatusCode::OK;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "status" => status = value.parse().expect("status=NUMBER"),
            "cache-control" => res = res.header("cache-control", &*value),
            other => panic!("/respond-with does not know {other:?}"),
        }
    }
    if status.is_redirection() {
        res = res.header("location", "/elsewhere");
    }
    let body = if status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        Bytes::from_static(b"answer")
    };
    res.status(status)
        .body(Full::new(body).map_err(|e| match e {}).boxed())
        .unwrap()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream that accepts connections and reads requests but never answers.
pub async fn start_silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A loopback address nothing listens on, and nothing will: the port stays bound (without
/// listening, so connecting is refused) for the rest of the process. A port merely closed again
/// could be handed to another test process's listener while every test binary runs at once.
pub async fn closed_port() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Kept bound until the process ends: one descriptor per test that asks.
    std::mem::forget(socket);
    addr
}

// ---------------------------------------------------------------------------------------------
// Proxy

pub struct Proxy {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn cookie_name(&self) -> &str {
        &self.app.config.session.cookie_name
    }

    /// Stops accepting and waits for in-flight requests to finish.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The config every test starts from: one user (alice / wonderland), the given upstream, and
/// `extra` TOML lines appended to the [session] table (and any tables after it).
pub fn config_toml(upstream: SocketAddr, upstream_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[upstream]
url = "http://{upstream}"
{upstream_extra}

[session]
secret = "{SECRET}"
{extra}

[[users]]
name = "{USER}"
password_hash = "{hash}"
"#,
        hash = alice_hash()
    )
}

/// The Accept header of a browser loading a page.
pub const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

/// `/admin` for group admins only (alice in [`team_config`]).
pub const ADMINS_RULE: &str = "\n[[rules]]\npath = \"/admin\"\nallow = [\"group:admins\"]\n";

/// Everything on host grafana.example.com for carol only.
pub const GRAFANA_RULE: &str =
    "\n[[rules]]\npath = \"/\"\nhost = \"grafana.example.com\"\nallow = [\"carol\"]\n";

pub const BOB_PASSWORD: &str = "the-builder";
pub const CAROL_PASSWORD: &str = "carol-password";

/// bob's `[[users]]` table in [`team_config`] (no groups). The hash is made once, so every
/// config a test writes gives bob the same one.
pub fn bob_table() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| cheap_hash(BOB_PASSWORD));
    format!("[[users]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n\n")
}

/// carol's `[[users]]` table in [`team_config`] (group ops).
pub fn carol_table() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| cheap_hash(CAROL_PASSWORD));
    format!("[[users]]\nname = \"carol\"\npassword_hash = \"{hash}\"\ngroups = [\"ops\"]\n\n")
}

pub fn team_users() -> String {
    bob_table() + &carol_table()
}

/// [`config_toml`] with three users: alice (groups admins and ops), bob (no groups) and carol
/// (group ops), followed by `rest` (rules, usually).
pub fn team_config(upstream: SocketAddr, auth: &str, rest: &str) -> String {
    let base = with_auth(&config_toml(upstream, "", ""), auth);
    format!(
        "{base}groups = [\"admins\", \"ops\"]\n\n{users}\n{rest}\n",
        users = team_users()
    )
}

/// Adds `lines` to the [server] table of a config made by [`config_toml`].
pub fn with_server(toml: &str, lines: &str) -> String {
    toml.replacen(
        "shutdown_timeout = \"5s\"",
        &format!("shutdown_timeout = \"5s\"\n{lines}"),
        1,
    )
}

/// Adds `lines` to the [session] table of a config made by [`config_toml`].
pub fn with_session(toml: &str, lines: &str) -> String {
    toml.replacen(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{SECRET}\"\n{lines}"),
        1,
    )
}

/// Adds an [auth] table holding `lines` to a config made by [`config_toml`].
pub fn with_auth(toml: &str, lines: &str) -> String {
    toml.replacen("[[users]]", &format!("[auth]\n{lines}\n\n[[users]]"), 1)
}

pub async fn start_proxy_with(toml: &str) -> Proxy {
    start_proxy_from(Config::from_toml(toml).expect("test config is valid")).await
}

/// A proxy serving `config` in-process (`Config::load` it to let it reload its file).
pub async fn start_proxy_from(config: Config) -> Proxy {
    serve_app(App::new(config).expect("the session store can be set up")).await
}

/// Stops `proxy` as the binary stops on SIGTERM (in-flight requests finished, then the
/// `session.state_dir` writer synced and stopped), drops it, and starts a proxy from `config`
/// on the same `state_dir`. The directory stays locked until the old store's last thread lets
/// go of it, which takes a moment after the drop, so opening it is retried.
pub async fn restart(mut proxy: Proxy, config: Config) -> Proxy {
    use sessiongate::app::StoreSetupError;
    use sessiongate::session::state::StateError;
    proxy.shutdown().await;
    proxy.app.gate.sessions().close();
    drop(proxy);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match App::new(config.clone()) {
            Ok(app) => return serve_app(app).await,
            Err(StoreSetupError::State(StateError::Locked { .. }))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the proxy does not start again: {e}"),
        }
    }
}

/// Serves `app` in-process on a fresh loopback port.
pub async fn serve_app(app: Arc<App>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sessiongate::serve(listener, app.clone(), async move {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        app,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// An echo upstream and a proxy in front of it with the default test config.
pub async fn start() -> (Upstream, Proxy) {
    start_with("").await
}

/// An echo upstream and a proxy with `public_paths` set to `public`.
pub async fn start_with_public(public: &[&str]) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let list: Vec<String> = public.iter().map(|p| format!("{p:?}")).collect();
    let toml = with_auth(
        &config_toml(upstream.addr, "", ""),
        &format!("public_paths = [{}]", list.join(", ")),
    );
    let proxy = start_proxy_with(&toml).await;
    (upstream, proxy)
}

pub async fn start_with(session_extra: &str) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", session_extra)).await;
    (upstream, proxy)
}

// ---------------------------------------------------------------------------------------------
// Client

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// Values of a header as the echo upstream received it (names compared case-insensitively).
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    }
}

pub type ReqBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long the test client waits for an answer before it calls the server hung: a hang is
/// caught either way, and a machine busy with every test binary (and password hashing at nice
/// 19 behind them) is given room.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(120);

pub fn body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Sends one request on a new connection and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<ReqBody>) -> Resp {
    let res = send_streaming(addr, req).await;
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(ANSWER_WITHIN, body.collect())
        .await
        .expect("response body within ANSWER_WITHIN")
        .expect("response body")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends one request on a new connection and returns as soon as the response head arrives.
pub async fn send_streaming(addr: SocketAddr, mut req: Request<ReqBody>) -> Response<Incoming> {
    if !req.headers().contains_key("host") {
        req.headers_mut()
            .insert("host", addr.to_string().parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tokio::time::timeout(ANSWER_WITHIN, sender.send_request(req))
        .await
        .expect("response head within ANSWER_WITHIN")
        .expect("response")
}

/// A request builder with the given headers and an empty body.
pub fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<ReqBody> {
    req_with_body(method, path, headers, Bytes::new())
}

pub fn req_with_body(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    bytes: impl Into<Bytes>,
) -> Request<ReqBody> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body(bytes)).unwrap()
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(addr, req(Method::GET, path, headers)).await
}

/// POSTs a urlencoded form to the login endpoint.
pub async fn post_login(proxy: &Proxy, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
    post_login_to(proxy.addr, fields, headers).await
}

/// [`post_login`] to any sessiongate (or an edge proxy in front of one) at `addr`.
pub async fn post_login_to(
    addr: SocketAddr,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Resp {
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    // A browser posting the form from the proxy's own page sends this Origin.
    let origin = format!("http://{addr}");
    let mut all = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", origin.as_str()),
    ];
    all.extend_from_slice(headers);
    send(
        addr,
        req_with_body(Method::POST, "/.sessiongate/login", &all, form),
    )
    .await
}

/// Logs in and returns the `name=value` pair to send back as a Cookie header.
pub async fn login(proxy: &Proxy, user: &str, password: &str) -> String {
    let res = post_login(proxy, &[("username", user), ("password", password)], &[]).await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "login failed: {}",
        res.text()
    );
    cookie_pair(&res)
}

/// Whether a response sets (or clears) no cookie but the sign-in cookie, which a sign-in page
/// sets for a browser without one: no session cookie, no pending sign-in cookie.
pub fn sets_no_session(res: &Resp) -> bool {
    res.set_cookies().iter().all(|c| {
        c.split('=')
            .next()
            .is_some_and(|name| name.ends_with("-signin"))
    })
}

/// The `name=value` part of the session Set-Cookie in a response.
pub fn cookie_pair(res: &Resp) -> String {
    let set = res
        .set_cookies()
        .into_iter()
        .next()
        .expect("a Set-Cookie header");
    set.split(';').next().unwrap().to_string()
}

/// Writes `request` as raw bytes on a new connection and reads until the server closes it
/// (send `Connection: close`). For requests a well-behaved client library would not send.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, stream.read_to_end(&mut out))
        .await
        .expect("server closed the connection within ANSWER_WITHIN")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response read by [`raw`].
pub fn raw_json(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").expect("a response head").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

// ---------------------------------------------------------------------------------------------
// Programs

/// The path of `cmd` on PATH (or in /usr/sbin, where Debian puts nginx); a panic that says
/// `why` it is needed and how to get it otherwise.
pub fn program(cmd: &str, why: &str) -> std::path::PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|dir| std::path::Path::new(dir).join(cmd))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("`{cmd}` is not installed: {why}. Run tests/install-deps.sh and retry.")
        })
}

// ---------------------------------------------------------------------------------------------
// The binary

/// The `sessiongate` binary running with a config file. Its address comes from its own
/// "listening on" log line, so the config can say `127.0.0.1:0` and no port is guessed (and
/// raced for) beforehand. Everything it prints is collected in `log`.
pub struct Running {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<String>>,
}

impl Running {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        self.child.wait().unwrap()
    }
}

/// A test that fails half-way leaves no sessiongate behind (after `stop`, nothing to do).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn spawn_sessiongate(config: &std::path::Path, env: &[(&str, &str)]) -> Running {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let collect = |reader: Box<dyn std::io::Read + Send>,
                   tx: std::sync::mpsc::Sender<SocketAddr>| {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(addr) = rest
                        .split("://")
                        .nth(1)
                        .and_then(|a| a.split_whitespace().next())
                        .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    };
    collect(Box::new(stdout), tx.clone());
    collect(Box::new(stderr), tx);
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "sessiongate did not start listening:\n{}",
                log.lock().unwrap()
            );
        }
    };
    Running { child, addr, log }
}

/// POSTs a urlencoded form to `path` as a browser on the proxy's own page would (same-origin
/// `Origin`), with the session `cookie` if not empty.
pub async fn post_form(proxy: &Proxy, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Resp {
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let origin = format!("http://{}", proxy.addr);
    let mut headers = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", origin.as_str()),
    ];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    send(
        proxy.addr,
        req_with_body(Method::POST, path, &headers, form),
    )
    .await
}

/// The status of `GET /` with `cookie`, as an API client (401 without a session).
pub async fn status_with(proxy: &Proxy, cookie: &str) -> StatusCode {
    get(proxy.addr, "/", &[("cookie", cookie)]).await.status
}

/// How a test keeps a session in use past its idle timeout: a request every `every`, for an
/// unbroken run of `span` (longer than `idle`, so only sliding explains the session outliving
/// it).
pub struct InUse {
    pub idle: Duration,
    /// How much earlier than a use the store may have recorded it (the write-back interval).
    pub slack: Duration,
    pub every: Duration,
    pub span: Duration,
}

/// Signs in and uses the session as `plan` says; returns its cookie, just used.
///
/// A use must be served whenever the time from the previous use's start to this use's answer
/// is under `idle - slack`: the session's last use was recorded within that time, so nothing
/// but a failure to slide can end it. A use that came later (the test thread was held up on a
/// busy machine) proves nothing either way; if it was refused, the run starts again with a new
/// session, up to a generous deadline. So the test fails on a session that idled out while in
/// use, never on a slow machine.
pub async fn use_past_idle_timeout(proxy: &Proxy, plan: InUse) -> String {
    assert!(
        plan.span > plan.idle,
        "the run must outlast the idle timeout"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    'run: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no unbroken run of {:?} in two minutes: the machine kept the test waiting",
            plan.span
        );
        let mut previous = std::time::Instant::now();
        let cookie = login(proxy, USER, PASSWORD).await;
        let run = std::time::Instant::now();
        while run.elapsed() < plan.span {
            tokio::time::sleep(plan.every).await;
            let sent = std::time::Instant::now();
            let status = status_with(proxy, &cookie).await;
            let bound = previous.elapsed();
            if bound < plan.idle - plan.slack {
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "a session in use idled out ({bound:?} between uses)"
                );
            } else if status != StatusCode::OK {
                eprintln!("held up for {bound:?} between uses: starting the run again");
                continue 'run;
            }
            previous = sent;
        }
        return cookie;
    }
}

/// A writer that keeps what tracing writes, to check the log lines a test caused.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's logs at debug level until the guard drops (the tests run on one
    /// thread, the proxy's tasks included).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
