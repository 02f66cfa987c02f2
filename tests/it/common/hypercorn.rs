//! A real h2c-capable app server for the upgrade tests: hypercorn (from PyPI, in the tests'
//! virtual environment) serving a small ASGI app that records every request it gets (path,
//! HTTP version, headers) before answering it with JSON naming the path and the
//! `x-forwarded-user` it received; WebSockets are accepted and echoed. hypercorn switches to
//! HTTP/2 on `Upgrade: h2c` (with or without `HTTP2-Settings`), as Go's h2c handler, Jetty and
//! Envoy do.
//!
//! And a real HTTP/2 client for the attempted tunnel: the `h2` Python package (the protocol
//! library hypercorn itself uses) driving one socket: the HTTP/1.1 upgrade request, then, if
//! the answer is 101, an HTTP/2 request over the same connection.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The ASGI app and its launcher. The socket is bound here (port 0) and handed to hypercorn
/// as a file descriptor, so the port is known before hypercorn runs and never guessed.
const SERVER: &str = r#"
import asyncio, json, socket, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config

log_path = sys.argv[1]

def record(scope):
    entry = {
        "type": scope["type"],
        "path": scope["path"],
        "http_version": scope.get("http_version", ""),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    with open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")

def header(scope, name):
    for k, v in scope["headers"]:
        if k.decode("latin-1").lower() == name:
            return v.decode("latin-1")
    return None

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    record(scope)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
    while (await receive()).get("more_body"):
        pass
    body = json.dumps({
        "path": scope["path"],
        "http_version": scope["http_version"],
        "user": header(scope, "x-forwarded-user"),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
sock.set_inheritable(True)
config = Config()
config.bind = [f"fd://{sock.fileno()}"]
config.accesslog = None
print(sock.getsockname()[1], flush=True)
asyncio.run(serve(app, config))
"#;

/// A running hypercorn; stopped (its process killed) when dropped.
pub struct Hypercorn {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One request as the app received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// "http" or "websocket".
    pub kind: String,
    pub path: String,
    /// "1.1" or "2".
    pub http_version: String,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Hypercorn {
    /// Every request the app has received so far, in order. The app writes each one down
    /// before it answers, so a request whose answer the client has is always here.
    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("a JSON line");
                Received {
                    kind: v["type"].as_str().unwrap().to_string(),
                    path: v["path"].as_str().unwrap().to_string(),
                    http_version: v["http_version"].as_str().unwrap().to_string(),
                    headers: v["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| {
                            (
                                h[0].as_str().unwrap().to_string(),
                                h[1].as_str().unwrap().to_string(),
                            )
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The paths the app has received so far.
    pub fn paths(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.path).collect()
    }
}

impl Drop for Hypercorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts hypercorn on a loopback port. A machine busy with every test binary may take a while
/// to start Python, so the wait for its port is generous.
pub fn start() -> Hypercorn {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let server_log = std::fs::File::create(dir.path().join("hypercorn.log")).unwrap();
    let mut child = Command::new(super::python::interpreter())
        .arg("-c")
        .arg(SERVER)
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(server_log)
        .spawn()
        .expect("start hypercorn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let port: u16 = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) if !line.trim().is_empty() => line.trim().parse().expect("a port number"),
        _ => {
            let _ = child.kill();
            let why = std::fs::read_to_string(dir.path().join("hypercorn.log")).unwrap_or_default();
            panic!("hypercorn did not start (run tests/install-deps.sh):\n{why}");
        }
    };
    Hypercorn {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        log,
        _dir: dir,
    }
}

/// The client: sends `GET {outer}` as HTTP/1.1 with `Upgrade: {upgrade}` and `Connection:
/// {connection}` (and `HTTP2-Settings` when `settings`); if the answer is 101, speaks HTTP/2
/// on the same socket and requests `{inner}` with `x-forwarded-user: root`. Prints what
/// happened as JSON: the upgrade's status and head, and the inner request's status and body
/// when there was one. An answer that ends the connection ends the script.
const H2C_CLIENT: &str = r#"
import base64, json, socket, sys
import h2.config, h2.connection, h2.events

host, port, outer, inner, upgrade, connection, send_settings, cookie = sys.argv[1:9]
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
settings = conn.initiate_upgrade_connection()
sock = socket.create_connection((host, int(port)), timeout=120)
head = (f"GET {outer} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Upgrade: {upgrade}\r\nConnection: {connection}\r\n"
        "x-forwarded-user: root\r\n")
if send_settings == "yes":
    head += f"HTTP2-Settings: {settings.decode() if isinstance(settings, bytes) else settings}\r\n"
if cookie:
    head += f"Cookie: {cookie}\r\n"
sock.sendall((head + "\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = sock.recv(65536)
    if not chunk:
        break
    buf += chunk
answer, _, rest = buf.partition(b"\r\n\r\n")
lines = answer.decode("latin-1").split("\r\n")
status = int(lines[0].split(" ")[1]) if lines[0] else 0
out = {"upgrade_status": status, "upgrade_head": lines, "inner_status": None, "inner_body": None}
if status == 101:
    sock.sendall(conn.data_to_send())
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "GET"), (":path", inner), (":scheme", "http"),
                               (":authority", f"{host}:{port}"), ("x-forwarded-user", "root")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    body = b""
    done = False
    pending = rest
    while not done:
        data = pending or sock.recv(65536)
        pending = b""
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                out["inner_status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id == stream:
                    body += event.data
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                done = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                done = True
        sock.sendall(conn.data_to_send())
    out["inner_body"] = body.decode("latin-1")
else:
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    out["upgrade_body"] = rest.decode("latin-1")
print(json.dumps(out))
"#;

/// What the h2c client saw.
#[derive(Debug)]
pub struct Attempt {
    /// The status of the HTTP/1.1 upgrade request.
    pub upgrade_status: u16,
    /// The upgrade answer's head, one line each.
    pub upgrade_head: Vec<String>,
    /// The body of a refused upgrade (read until the server closed the connection).
    pub upgrade_body: String,
    /// The HTTP/2 request inside the tunnel: its status and body, if it got that far.
    pub inner: Option<(u16, String)>,
}

/// How the client asks for h2c.
pub struct H2cAsk<'a> {
    pub upgrade: &'a str,
    pub connection: &'a str,
    pub settings: bool,
}

impl H2cAsk<'_> {
    /// As curl does it: `Upgrade: h2c`, `Connection: Upgrade, HTTP2-Settings`, the settings.
    pub const CURL: H2cAsk<'static> = H2cAsk {
        upgrade: "h2c",
        connection: "Upgrade, HTTP2-Settings",
        settings: true,
    };
}

/// Runs the h2c client against `addr`: `outer` is the upgraded request's path, sent with the
/// session `cookie` (`name=value`, or ""); `inner` the one requested inside the tunnel (as
/// `root`). Blocking: call it from `spawn_blocking`.
pub fn h2c_attempt(
    addr: SocketAddr,
    outer: &str,
    inner: &str,
    ask: &H2cAsk,
    cookie: &str,
) -> Attempt {
    let out = Command::new(super::python::interpreter())
        .arg("-c")
        .arg(H2C_CLIENT)
        .args([
            addr.ip().to_string().as_str(),
            addr.port().to_string().as_str(),
            outer,
            inner,
            ask.upgrade,
            ask.connection,
            if ask.settings { "yes" } else { "no" },
            cookie,
        ])
        .output()
        .expect("run the h2c client");
    assert!(
        out.status.success(),
        "the h2c client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the client prints JSON");
    Attempt {
        upgrade_status: v["upgrade_status"].as_u64().unwrap() as u16,
        upgrade_head: v["upgrade_head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect(),
        upgrade_body: v["upgrade_body"].as_str().unwrap_or_default().to_string(),
        inner: v["inner_status"].as_u64().map(|status| {
            (
                status as u16,
                v["inner_body"].as_str().unwrap_or_default().to_string(),
            )
        }),
    }
}
