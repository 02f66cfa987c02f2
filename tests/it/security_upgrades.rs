//! Protocol upgrades as a way past the gate. Everything after a `101` is relayed unseen, so an
//! upgrade to h2c (HTTP/2 over cleartext) to an app server that accepts it would carry HTTP/2
//! requests straight to the app: any path, any `x-forwarded-user`. Here the attack is made
//! against a real h2c-capable app server (hypercorn, see tests/it/common/hypercorn.rs), first
//! directly (it works: the tests can fail) and then through sessiongate, which answers 400 and
//! lets nothing of it reach the app. Also: only protocols in `upstream.upgrades` are relayed
//! (WebSocket by default); an `Upgrade` that does not ask to switch reaches the app as an
//! ordinary request without the header; and bytes sent after an upgrade request before its
//! answer are never relayed nor read as another request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::hypercorn::{self, H2cAsk, Hypercorn};
use crate::common::ws::ws_connect;
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// sessiongate with `public_paths = ["/pub"]` in front of `app`, `upstream` lines in
/// [upstream], and the three team users with `/admin` for group admins only.
async fn gate_in_front(app: SocketAddr, upstream: &str) -> Proxy {
    let toml = team_config(app, "public_paths = [\"/pub\"]", ADMINS_RULE);
    let toml = toml.replacen(
        &format!("url = \"http://{app}\""),
        &format!("url = \"http://{app}\"\n{upstream}"),
        1,
    );
    start_proxy_with(&toml).await
}

/// The h2c client: `outer` upgraded with `ask` (and the session `cookie`, or ""), then
/// `/admin/secret` as root inside the tunnel.
async fn attempt(
    addr: SocketAddr,
    outer: &str,
    ask: H2cAsk<'static>,
    cookie: &str,
) -> hypercorn::Attempt {
    let (outer, cookie) = (outer.to_string(), cookie.to_string());
    tokio::task::spawn_blocking(move || {
        hypercorn::h2c_attempt(addr, &outer, "/admin/secret", &ask, &cookie)
    })
    .await
    .unwrap()
}

async fn start_hypercorn() -> Hypercorn {
    tokio::task::spawn_blocking(hypercorn::start).await.unwrap()
}

/// The ways of asking for h2c: as curl does, without `HTTP2-Settings`, in upper case, and
/// with only `upgrade` in `Connection`.
const ASKS: [H2cAsk<'static>; 4] = [
    H2cAsk::CURL,
    H2cAsk {
        upgrade: "h2c",
        connection: "Upgrade",
        settings: false,
    },
    H2cAsk {
        upgrade: "H2C",
        connection: "Upgrade, HTTP2-Settings",
        settings: true,
    },
    H2cAsk {
        upgrade: "h2c",
        connection: "upgrade",
        settings: true,
    },
];

/// The control: reached directly, hypercorn switches to HTTP/2 on each of these asks and
/// serves the request made inside the tunnel, as whoever it names. Through sessiongate the
/// same client must get nowhere.
#[tokio::test]
async fn h2c_straight_to_the_app_serves_any_path_as_any_user() {
    let app = start_hypercorn().await;
    for ask in ASKS {
        let (upgrade, connection) = (ask.upgrade, ask.connection);
        let got = attempt(app.addr, "/pub/x", ask, "").await;
        assert_eq!(
            got.upgrade_status, 101,
            "hypercorn switches on {upgrade} / {connection}: {got:?}"
        );
        let (status, body) = got.inner.expect("a request inside the tunnel");
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["path"], "/admin/secret");
        assert_eq!(body["user"], "root");
        assert_eq!(body["http_version"], "2");
    }
    let inside: Vec<_> = app
        .received()
        .into_iter()
        .filter(|r| r.path == "/admin/secret")
        .collect();
    assert_eq!(inside.len(), ASKS.len());
    assert!(inside.iter().all(|r| r.http_version == "2"));
}

/// Asserts an upgrade answer is sessiongate's 400 for h2c, which closes the connection.
fn assert_h2c_refused(got: &hypercorn::Attempt, what: &str) {
    assert_eq!(got.upgrade_status, 400, "{what}: {got:?}");
    assert!(got.inner.is_none(), "{what}: no tunnel");
    assert!(
        got.upgrade_body.contains("h2c") && got.upgrade_body.contains("upstream.upgrades"),
        "{what}: the message names the protocol and the key: {}",
        got.upgrade_body
    );
    assert!(
        got.upgrade_head
            .iter()
            .any(|l| l.eq_ignore_ascii_case("connection: close")),
        "{what}: {:?}",
        got.upgrade_head
    );
}

#[tokio::test]
async fn h2c_tunnel_from_a_public_path_is_400_and_nothing_reaches_the_app() {
    let app = start_hypercorn().await;
    let proxy = gate_in_front(app.addr, "").await;
    for ask in ASKS {
        let what = format!("{} / {}", ask.upgrade, ask.connection);
        let got = attempt(proxy.addr, "/pub/x", ask, "").await;
        assert_h2c_refused(&got, &what);
    }
    // Not the upgrade request, and above all nothing asked for inside the tunnel.
    assert_eq!(app.received().len(), 0, "{:?}", app.paths());
}

#[tokio::test]
async fn h2c_tunnel_of_a_signed_in_user_without_rights_is_400_and_nothing_reaches_the_app() {
    let app = start_hypercorn().await;
    let proxy = gate_in_front(app.addr, "").await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    for path in ["/", "/pub/x"] {
        let got = attempt(proxy.addr, path, H2cAsk::CURL, &bob).await;
        assert_h2c_refused(&got, path);
    }
    assert_eq!(app.received().len(), 0, "{:?}", app.paths());
    // bob is signed in and may open /, but never /admin.
    let res = get(proxy.addr, "/", &[("cookie", &bob)]).await;
    assert_eq!(res.status, http::StatusCode::OK);
    let res = get(proxy.addr, "/admin/secret", &[("cookie", &bob)]).await;
    assert_eq!(res.status, http::StatusCode::FORBIDDEN);
    assert_eq!(app.paths(), ["/"]);
}

/// The issue's reproduction word for word: curl's `--http2` on plain http asks for h2c on
/// the first URL and, once switched, sends the second one over HTTP/2 on the same connection.
/// Straight to hypercorn that serves `/admin/secret` as root; through sessiongate both
/// upgrades are refused and the app sees neither request.
#[tokio::test]
async fn h2c_with_curl_as_the_issue_shows_it() {
    let app = start_hypercorn().await;
    let proxy = gate_in_front(app.addr, "").await;
    let curl = |addr: SocketAddr| {
        let out = std::process::Command::new(program("curl", "the h2c test runs curl"))
            .args([
                "--http2",
                "-s",
                "--max-time",
                "120",
                "-H",
                "x-forwarded-user: root",
            ])
            .args(["-w", "\n%{http_code} %{http_version}\n"])
            .arg(format!("http://{addr}/pub/x"))
            .arg(format!("http://{addr}/admin/secret"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let direct = tokio::task::spawn_blocking({
        let addr = app.addr;
        move || curl(addr)
    })
    .await
    .unwrap();
    assert!(
        direct.contains("\"path\": \"/admin/secret\"")
            && direct.contains("\"user\": \"root\"")
            && direct.contains("200 2\n"),
        "curl reaches /admin/secret as root over h2c directly: {direct}"
    );
    let before = app.received().len();

    let through = tokio::task::spawn_blocking({
        let addr = proxy.addr;
        move || curl(addr)
    })
    .await
    .unwrap();
    let statuses: Vec<&str> = through
        .lines()
        .filter(|l| l.ends_with(" 1.1") || l.ends_with(" 2"))
        .collect();
    // curl asks again on the second URL's new connection, and is refused again.
    assert_eq!(statuses, ["400 1.1", "400 1.1"], "{through}");
    assert!(!through.contains("root"), "{through}");
    assert_eq!(app.received().len(), before, "{:?}", app.paths());
}

/// An `Upgrade` list that names h2c anywhere, in any case, is refused, whatever else it
/// lists; and so is one that names more than one protocol or an unlisted one.
#[tokio::test]
async fn an_upgrade_naming_h2c_or_several_or_unlisted_protocols_is_400() {
    let app = start_hypercorn().await;
    let proxy = gate_in_front(app.addr, "").await;
    for (upgrade, says) in [
        ("websocket, h2c", "h2c"),
        ("h2c, websocket", "h2c"),
        ("WebSocket, H2C", "h2c"),
        ("websocket, my-proto", "exactly one protocol"),
        ("websocket/13", "exactly one protocol"),
        ("my-proto", "upgrade to my-proto refused"),
    ] {
        let answer = raw(
            proxy.addr,
            format!(
                "GET /pub/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{upgrade}: {answer}");
        assert!(
            answer.contains(says) && answer.contains("upstream.upgrades"),
            "{upgrade}: {answer}"
        );
    }
    // Two Upgrade lines are a list too.
    let answer = raw(
        proxy.addr,
        b"GET /pub/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(app.received().len(), 0, "{:?}", app.paths());
}

/// WebSocket, the default, still reaches a real app server and echoes.
#[tokio::test]
async fn a_websocket_to_a_real_app_server_is_relayed() {
    let app = start_hypercorn().await;
    let proxy = gate_in_front(app.addr, "").await;
    let mut ws = ws_connect(proxy.addr, "/pub/ws", &[])
        .await
        .expect("the upgrade goes through");
    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].kind.as_str(), received[0].path.as_str()),
        ("websocket", "/pub/ws")
    );
}

// ---------------------------------------------------------------------------------------------
// A raw upstream that shows every byte it gets

/// An app that reads HTTP/1.1 request heads (no bodies) one after another on each
/// connection and records them; it switches protocols (101, `Upgrade` as asked) on any
/// request with an `Upgrade` header except for a path ending in `/refuse`, which it answers 403, and records
/// every byte it reads after a 101. Other requests get `200 ok`.
#[derive(Clone, Default)]
struct Switching {
    heads: Arc<Mutex<Vec<String>>>,
    tunnels: Arc<Mutex<Vec<Tunnel>>>,
}

/// One switched connection at the app: the bytes read after the 101, and whether it ended.
#[derive(Clone, Default)]
struct Tunnel {
    bytes: Vec<u8>,
    ended: bool,
}

impl Switching {
    async fn start() -> (SocketAddr, Switching) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Switching::default();
        let shared = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(shared.clone().serve(stream));
            }
        });
        (addr, app)
    }

    async fn serve(self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let head = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    break head;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            self.heads.lock().unwrap().push(head.clone());
            let upgrade = head
                .lines()
                .find_map(|l| l.strip_prefix("upgrade: ").or(l.strip_prefix("Upgrade: ")));
            let path = head.split(' ').nth(1).unwrap_or("");
            let answer = match upgrade {
                Some(_) if path.ends_with("/refuse") => {
                    "HTTP/1.1 403 Forbidden\r\ncontent-length: 7\r\n\r\nrefused".to_string()
                }
                Some(protocol) => {
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    return self.tunnel(stream, buf).await;
                }
                None => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
            };
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Echoes and records everything after the 101 until the other side closes.
    async fn tunnel(self, mut stream: TcpStream, early: Vec<u8>) {
        let index = {
            let mut tunnels = self.tunnels.lock().unwrap();
            tunnels.push(Tunnel {
                bytes: early,
                ended: false,
            });
            tunnels.len() - 1
        };
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.tunnels.lock().unwrap()[index]
                        .bytes
                        .extend_from_slice(&chunk[..n]);
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.tunnels.lock().unwrap()[index].ended = true;
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.split(' ').nth(1).unwrap_or("").to_string())
            .collect()
    }

    /// Waits (generously) until every tunnel opened so far has ended; their bytes.
    async fn ended_tunnels(&self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tunnels = self.tunnels.lock().unwrap().clone();
            if tunnels.iter().all(|t| t.ended) {
                return tunnels.into_iter().map(|t| t.bytes).collect();
            }
            assert!(Instant::now() < deadline, "a tunnel to the app stayed open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A connection to sessiongate that sends `bytes` in one write and reads until it is closed.
async fn one_write(addr: SocketAddr, bytes: &str) -> String {
    raw(addr, bytes.as_bytes()).await
}

fn answers(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn an_unlisted_protocol_is_400_and_a_listed_one_is_relayed() {
    let (app_addr, app) = Switching::start().await;
    let ask = "GET /pub/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: My-Proto\r\n\r\n";

    let proxy = gate_in_front(app_addr, "").await;
    let answer = one_write(proxy.addr, ask).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(
            "upgrade to My-Proto refused: the protocol is not listed in upstream.upgrades"
        ),
        "{answer}"
    );
    assert!(app.heads().is_empty(), "{:?}", app.heads());

    let proxy = gate_in_front(app_addr, "upgrades = [\"websocket\", \"my-proto\"]").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(ask.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed before the answer's head ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // Relayed both ways, byte for byte.
    stream.write_all(b"ping over my-proto").await.unwrap();
    let mut echoed = [0u8; 18];
    tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping over my-proto");
    drop(stream);
    // The app was asked for the protocol as listed.
    let heads = app.heads();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].contains("upgrade: my-proto"), "{}", heads[0]);
    assert_eq!(app.ended_tunnels().await, [b"ping over my-proto".to_vec()]);
}

/// Bytes sent in the same write as the upgrade request, before the 101 came back: a request
/// for `/admin` here. sessiongate passes the 101 on, then closes the connection without
/// relaying them; the app's side of the tunnel receives nothing.
#[tokio::test]
async fn bytes_sent_before_the_101_are_never_relayed() {
    let (app_addr, app) = Switching::start().await;
    let proxy = gate_in_front(app_addr, "").await;
    let answer = one_write(
        proxy.addr,
        "GET /pub/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
         GET /admin HTTP/1.1\r\nHost: a\r\nx-forwarded-user: root\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    assert_eq!(answers(&answer), 1, "{answer}");
    assert_eq!(app.ended_tunnels().await, [Vec::<u8>::new()]);
    assert_eq!(app.paths(), ["/pub/ws"]);

    // Bytes sent after the 101 are relayed as ever.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /pub/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 0];
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    stream.write_all(b"after").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"after");
}

/// After any answer but 101 to a request carrying `Upgrade`, the connection is closed: what
/// the client sent behind it (here a request for a public path, which sessiongate would
/// otherwise have forwarded) is never read as another request. Whoever refused: the app,
/// sessiongate's upgrade rules, or the gate; and an `Upgrade` that did not ask to switch.
#[tokio::test]
async fn bytes_behind_a_refused_upgrade_are_never_read_as_a_request() {
    let (app_addr, app) = Switching::start().await;
    let proxy = gate_in_front(app_addr, "").await;
    let smuggled = "GET /pub/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for (first, status) in [
        // The app answers 403.
        (
            "GET /pub/refuse HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "403",
        ),
        // sessiongate refuses the protocol.
        (
            "GET /pub/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: my-proto\r\n\r\n",
            "400",
        ),
        // The gate refuses: no session.
        (
            "GET /private HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "401",
        ),
        // Not an upgrade request: answered as an ordinary one.
        (
            "GET /pub/plain HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n",
            "200",
        ),
    ] {
        let answer = one_write(proxy.addr, &format!("{first}{smuggled}")).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{first}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{answer}"
        );
        assert_eq!(answers(&answer), 1, "{answer}");
    }
    assert_eq!(app.paths(), ["/pub/refuse", "/pub/plain"]);
    assert!(app.tunnels.lock().unwrap().is_empty());

    // Without an Upgrade header the connection stays open for the next request as usual.
    let answer = one_write(
        proxy.addr,
        "GET /pub/one HTTP/1.1\r\nHost: a\r\n\r\nGET /pub/two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answers(&answer), 2, "{answer}");
}

/// An `Upgrade` header on a request that does not ask to switch (no `upgrade` token in
/// `Connection`, or HTTP/1.0) is an ordinary request: the app never sees `Upgrade`, and never
/// `HTTP2-Settings`, so it cannot switch.
#[tokio::test]
async fn an_upgrade_that_does_not_ask_to_switch_reaches_the_app_without_it() {
    let (app_addr, app) = Switching::start().await;
    let proxy = gate_in_front(app_addr, "").await;
    for request in [
        "GET /pub/a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET /pub/b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, HTTP2-Settings\r\nUpgrade: my-proto\r\n\r\n",
        "GET /pub/c HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET /pub/d HTTP/1.1\r\nHost: a\r\nConnection: close\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    ] {
        let answer = one_write(proxy.addr, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 ") || answer.starts_with("HTTP/1.0 200 "),
            "{request}: {answer}"
        );
    }
    let heads = app.heads();
    assert_eq!(heads.len(), 4, "{heads:?}");
    for head in heads {
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("\r\nupgrade:") && !lower.contains("http2-settings"),
            "{head}"
        );
    }
}

/// Forward-auth takes the same decision: an edge proxy that passes the client's upgrade on
/// (Caddy's forward_auth does) is told no for h2c and for protocols not listed, so it does
/// not open the tunnel; a WebSocket is judged as usual.
#[tokio::test]
async fn forward_auth_refuses_h2c_and_unlisted_upgrades() {
    let toml = with_server(
        &team_config("127.0.0.1:9".parse().unwrap(), "", ADMINS_RULE),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let addr = proxy.addr;
    let ask = |upgrade: &'static str| {
        let cookie = cookie.clone();
        async move {
            get(
                addr,
                "/.sessiongate/auth/forward",
                &[
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/admin/x"),
                    ("connection", "Upgrade"),
                    ("upgrade", upgrade),
                    ("cookie", &cookie),
                ],
            )
            .await
        }
    };
    let res = ask("h2c").await;
    assert_eq!(res.status, http::StatusCode::BAD_REQUEST, "{}", res.text());
    assert!(res.text().contains("h2c"));
    let res = ask("my-proto").await;
    assert_eq!(res.status, http::StatusCode::BAD_REQUEST, "{}", res.text());
    let res = ask("websocket").await;
    assert_eq!(res.status, http::StatusCode::OK, "{}", res.text());
    assert_eq!(res.header("x-forwarded-user"), Some(USER));
}
