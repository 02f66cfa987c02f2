//! Malformed chunked request bodies (a bad size line, a missing CRLF, an oversized chunk size,
//! junk in a chunk extension, broken trailers): a body is streamed to the upstream as it
//! arrives, so such a body is found only once the request is on its way. The client gets 400
//! saying what was wrong, the upstream never receives the body whole (its connection is torn
//! down), the connection closes, and nothing is logged or counted as the upstream failing,
//! which any client could otherwise cause at will.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common;
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An upstream that counts the requests it started to receive and those whose body arrived
/// whole, and keeps every trailer it was sent.
struct BodyUpstream {
    addr: SocketAddr,
    started: Arc<AtomicUsize>,
    whole: Arc<AtomicUsize>,
    trailers: Arc<Mutex<Vec<String>>>,
}

async fn start_body_upstream() -> BodyUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = BodyUpstream {
        addr,
        started: Arc::default(),
        whole: Arc::default(),
        trailers: Arc::default(),
    };
    let (started, whole, trailers) = (
        upstream.started.clone(),
        upstream.whole.clone(),
        upstream.trailers.clone(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (started, whole, trailers) = (started.clone(), whole.clone(), trailers.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                started.fetch_add(1, Ordering::SeqCst);
                let (whole, trailers) = (whole.clone(), trailers.clone());
                async move {
                    let mut body = req.into_body();
                    let mut len = 0;
                    loop {
                        match body.frame().await {
                            None => {
                                whole.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Some(Err(_)) => break,
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(data) => len += data.len(),
                                Err(frame) => {
                                    for (k, v) in frame.into_trailers().unwrap().iter() {
                                        trailers.lock().unwrap().push(format!("{k}: {v:?}"));
                                    }
                                }
                            },
                        }
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        format!("{{\"body_len\":{len}}}"),
                    ))))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    upstream
}

/// The tricks, each a chunked body after the request head, and what the 400 must name.
const TRICKS: &[(&str, &str, &str)] = &[
    (
        "bad size line",
        "zz\r\nhello\r\n0\r\n\r\n",
        "chunk size line",
    ),
    (
        "missing CRLF after the data",
        "5\r\nhelloXX0\r\n\r\n",
        "chunk body CR",
    ),
    (
        "chunk size of 20 hex digits",
        "FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        "overflow",
    ),
    (
        "bare LF inside a chunk extension",
        "5;ext\nsmuggled\r\nhello\r\n0\r\n\r\n",
        "extension",
    ),
    (
        "junk after the size",
        "5 junk\r\nhello\r\n0\r\n\r\n",
        "chunk size",
    ),
    ("bare LF line ends", "5\nhello\n0\n\n", "chunk size"),
    (
        "trailer without a colon",
        "5\r\nhello\r\n0\r\nnot a header line\r\n\r\n",
        "header",
    ),
    (
        "trailer line cut by a bare CR",
        "5\r\nhello\r\n0\r\nX-A: b\rX\r\n\r\n",
        "trailer",
    ),
];

fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Sends every trick to `path` (with `cookie`, if any) and checks each answer: 400 naming
/// the fault, the connection closed by the server (no `Connection: close` is sent).
async fn send_tricks(proxy: &Proxy, path: &str, cookie: &str) {
    for (trick, body, named) in TRICKS {
        let cookie_line = if cookie.is_empty() {
            String::new()
        } else {
            format!("Cookie: {cookie}\r\n")
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: app\r\n{cookie_line}Transfer-Encoding: chunked\r\n\r\n{body}"
        );
        let res = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status(&res), 400, "{trick}: {res}");
        let text = res.split_once("\r\n\r\n").unwrap().1;
        assert!(
            text.starts_with("malformed request body: ") && text.contains(named),
            "{trick}: the answer says what was wrong: {text}"
        );
        assert!(!text.contains("upstream"), "{trick}: {text}");
    }
}

#[tokio::test]
async fn chunked_smuggling_malformed_bodies_get_400_and_never_reach_the_upstream_whole() {
    let captured = Captured::default();
    let _guard = captured.install();
    let upstream = start_body_upstream().await;
    let toml = with_auth(
        &config_toml(upstream.addr, "", ""),
        "public_paths = [\"/pub\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;

    send_tricks(&proxy, "/pub/upload", "").await;
    send_tricks(&proxy, "/upload", &cookie).await;
    assert_eq!(
        upstream.whole.load(Ordering::SeqCst),
        0,
        "no malformed body reached the upstream whole"
    );
    assert!(upstream.trailers.lock().unwrap().is_empty());

    let logs = captured.text();
    assert!(
        !logs.contains("upstream request failed") && !logs.contains("WARN"),
        "a client's malformed body is not logged as the upstream failing:\n{logs}"
    );
    assert_eq!(
        logs.matches("answered 400: the client's malformed request body")
            .count(),
        2 * TRICKS.len(),
        "each is logged, at debug, as the client's doing:\n{logs}"
    );

    // A well-formed chunked body still goes through whole.
    let res = raw(
        proxy.addr,
        b"POST /pub/upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    assert_eq!(raw_json(&res)["body_len"], 5);
    assert_eq!(upstream.whole.load(Ordering::SeqCst), 1);
}

/// Trailers are never forwarded (sessiongate drops the `Trailer` header, and hyper sends only
/// trailers it names), so a header smuggled in a trailer, such as the identity header, never
/// reaches the app, whatever the app would do with trailers.
#[tokio::test]
async fn chunked_smuggling_an_identity_header_in_a_trailer_never_reaches_the_upstream() {
    let upstream = start_body_upstream().await;
    let toml = with_auth(
        &config_toml(upstream.addr, "", ""),
        "public_paths = [\"/pub\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    let res = raw(
        proxy.addr,
        b"POST /pub/upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTrailer: X-Forwarded-User, Host\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Forwarded-User: root\r\nHost: admin.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    assert_eq!(raw_json(&res)["body_len"], 5);
    assert_eq!(
        upstream.whole.load(Ordering::SeqCst),
        1,
        "the body arrived whole"
    );
    assert!(
        upstream.trailers.lock().unwrap().is_empty(),
        "trailers reached the upstream: {:?}",
        upstream.trailers.lock().unwrap()
    );
}

/// The same with an https upstream, over HTTP/2 and over HTTP/1.1 (hyper-util's client).
#[tokio::test]
async fn chunked_smuggling_malformed_bodies_get_400_with_an_https_upstream_too() {
    let captured = Captured::default();
    let _guard = captured.install();
    let ca = common::tls::Ca::new("chunked upstream CA");
    let dir = common::tls::temp_dir("chunked");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    for alpn in [&[b"h2".as_slice()][..], &[b"http/1.1".as_slice()][..]] {
        let up = common::tls::start_tls_upstream(&ca, alpn).await;
        let toml = with_auth(
            &config_toml(
                up,
                &format!("ca = \"{}\"", dir.path().join("ca.pem").display()),
                "",
            ),
            "public_paths = [\"/pub\"]",
        )
        .replace(
            &format!("http://{up}"),
            &format!("https://localhost:{}", up.port()),
        );
        let proxy = start_proxy_with(&toml).await;
        send_tricks(&proxy, "/pub/upload", "").await;
        // The upstream is reached and answers a good body.
        let res = raw(
            proxy.addr,
            b"POST /pub/upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(status(&res), 200, "{res}");
        assert_eq!(raw_json(&res)["body_len"], 5);
    }
    let logs = captured.text();
    assert!(
        !logs.contains("upstream request failed") && !logs.contains("WARN"),
        "a client's malformed body is not logged as the upstream failing:\n{logs}"
    );
}
