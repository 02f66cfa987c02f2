//! Request smuggling: framing that two HTTP parsers could read differently (Content-Length
//! with Transfer-Encoding, duplicate or malformed lengths, obfuscated Transfer-Encoding) is
//! refused with 400 and never reaches the upstream; accepted requests reach it with one
//! unambiguous framing. hyper 1.x is not affected by RUSTSEC-2021-0020/-0078/-0079 (fixed in
//! 0.14.10); Cargo.toml pins hyper >= 1.12.
//!
//! The upstream here records the raw bytes it receives, so the framing on the wire is checked,
//! not hyper's reading of it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::common::*;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP stream that keeps a copy of every byte read from it.
struct Recording {
    inner: TcpStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        polled
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The echo upstream, recording the raw bytes of every request it receives.
async fn recording_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let io = Recording {
                inner: stream,
                seen: record.clone(),
            };
            tokio::spawn(
                http1::Builder::new().serve_connection(TokioIo::new(io), service_fn(echo)),
            );
        }
    });
    (addr, seen)
}

async fn proxy_with_recorder() -> (Proxy, Arc<Mutex<Vec<u8>>>, String) {
    let (addr, seen) = recording_upstream().await;
    let proxy = start_proxy_with(&config_toml(addr, "", "")).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    (proxy, seen, cookie)
}

fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let (proxy, seen, cookie) = proxy_with_recorder().await;
    let head = format!("POST /upload HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\n");
    for (attack, framing, body) in [
        (
            "differing CL",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
        ("CL list", "Content-Length: 5, 5\r\n", "hello"),
        ("CL sign", "Content-Length: +5\r\n", "hello"),
        ("CL hex", "Content-Length: 0x5\r\n", "hello"),
        ("CL negative", "Content-Length: -1\r\n", "hello"),
        ("CL spaces inside", "Content-Length: 5 5\r\n", "hello"),
        ("TE not chunked", "Transfer-Encoding: identity\r\n", "hello"),
        (
            "TE chunked not last",
            "Transfer-Encoding: chunked, identity\r\n",
            "0\r\n\r\n",
        ),
        (
            "TE obfuscated",
            "Transfer-Encoding: xchunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "TE quoted",
            "Transfer-Encoding: \"chunked\"\r\n",
            "0\r\n\r\n",
        ),
        (
            "TE two lines, identity last",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            "0\r\n\r\n",
        ),
        (
            "TE space before colon",
            "Transfer-Encoding : chunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "TE vertical tab",
            "Transfer-Encoding:\x0bchunked\r\n",
            "0\r\n\r\n",
        ),
        (
            "bad chunk size",
            "Transfer-Encoding: chunked\r\n",
            "zz\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let request = format!("{head}{framing}Connection: close\r\n\r\n{body}");
        let res = raw(proxy.addr, request.as_bytes()).await;
        // A bad chunk is only found while the body streams: by then the request may be on
        // its way, but its body fails and the upstream connection is torn down, never
        // reused; the client gets 400 (tests/it/security_chunked.rs has every such trick).
        if attack == "bad chunk size" {
            assert_eq!(status(&res), 400, "{attack}: {res}");
            continue;
        }
        assert_eq!(status(&res), 400, "{attack}: {res}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{attack}: the upstream received {:?}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
    }
    // HTTP/1.0 has no Transfer-Encoding.
    let res = raw(
        proxy.addr,
        format!("POST / HTTP/1.0\r\nHost: app\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&res), 400, "{res}");
    assert!(seen.lock().unwrap().is_empty());
}

/// The textbook CL.TE and TE.CL attacks: a front end that believed Content-Length would
/// forward the smuggled `GET /admin` as the body; a back end that believed chunked would run
/// it as a second request. hyper drops the length and reads chunked (the case it normalizes
/// instead of refusing), so the upstream sees one framing, chunked, whose body ends at
/// `0\r\n\r\n`; the smuggled bytes never travel inside a forwarded body.
#[tokio::test]
async fn a_smuggled_second_request_never_reaches_the_upstream() {
    let (proxy, seen, cookie) = proxy_with_recorder().await;
    let smuggled = "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n";
    for (attack, framing) in [
        (
            "CL.TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                smuggled.len()
            ),
        ),
        (
            "TE.CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                smuggled.len()
            ),
        ),
    ] {
        seen.lock().unwrap().clear();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\n{framing}\r\n\r\n{smuggled}"
        );
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let res = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(matches!(status(&res), 200 | 400), "{attack}: {res}");
        if status(&res) == 200 {
            assert_eq!(
                raw_json(&res)["body_len"],
                0,
                "{attack}: the body ended at 0 CRLF CRLF"
            );
        }
        let wire = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
        let first = wire.split("\r\n\r\n").next().unwrap();
        assert!(!first.contains("content-length"), "{attack}: {wire}");
        assert!(
            !wire.contains("/admin"),
            "{attack}: the smuggled request travelled in a body: {wire}"
        );
    }
}

/// What the upstream receives for accepted requests: one framing, the body intact.
#[tokio::test]
async fn accepted_requests_reach_the_upstream_with_one_unambiguous_framing() {
    let (proxy, seen, cookie) = proxy_with_recorder().await;
    let auth = format!("Cookie: {cookie}\r\n");
    for (what, framing, body, want) in [
        (
            "length",
            "Content-Length: 5\r\n",
            "hello",
            "content-length: 5",
        ),
        // hyper keeps one of two equal lengths; the upstream sees one.
        (
            "the same length twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "hello",
            "content-length: 5",
        ),
        (
            "chunked",
            "Transfer-Encoding: chunked\r\n",
            "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
            "transfer-encoding: chunked",
        ),
        (
            "chunked with a coding before it",
            "Transfer-Encoding: gzip, chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            "transfer-encoding: chunked",
        ),
    ] {
        seen.lock().unwrap().clear();
        let request = format!(
            "POST /u HTTP/1.1\r\nHost: app\r\n{auth}{framing}Connection: close\r\n\r\n{body}"
        );
        let res = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status(&res), 200, "{what}: {res}");
        assert_eq!(raw_json(&res)["body_len"], 5, "{what}");
        let wire = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
        let head = wire.split("\r\n\r\n").next().unwrap().to_string();
        let lengths = head.matches("content-length").count();
        let codings = head.matches("transfer-encoding").count();
        assert_eq!(
            lengths + codings,
            1,
            "{what}: exactly one framing header in {head}"
        );
        assert!(head.contains(want), "{what}: {head}");
    }
}
