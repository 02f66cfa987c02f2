//! Proxying over real sockets: streamed bodies both ways, responses passed back unchanged,
//! pooled keep-alive upstream connections, 502/504, and graceful shutdown.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn eight_mib_upload_arrives_whole() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let want = hex(&Sha256::digest(&data));

    // Sent in 64 KiB chunks without a Content-Length, so it is chunked on the wire.
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    let chunks: Vec<Bytes> = data.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(Ok(Frame::data(c))).await.is_err() {
                return;
            }
        }
    });
    let stream = StreamBody::new(tokio_stream_from(rx));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header("cookie", &cookie)
        .body(stream.boxed())
        .unwrap();
    let res = send(proxy.addr, req).await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert_eq!(v["body_len"], 8 * 1024 * 1024);
    assert_eq!(v["body_sha256"], want);
}

/// A buffering proxy would deadlock here: the client sends the next chunk only after the
/// previous one came back through the proxy from the upstream.
#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(1);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/echo-stream")
        .header("cookie", &cookie)
        .body(StreamBody::new(tokio_stream_from(rx)).boxed())
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ping-0"))))
        .await
        .unwrap();
    let res = send_streaming(proxy.addr, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    for i in 0..5 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("chunk echoed while the request is still open")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from(format!("ping-{i}")));
        if i < 4 {
            tx.send(Ok(Frame::data(Bytes::from(format!("ping-{}", i + 1)))))
                .await
                .unwrap();
        }
    }
    drop(tx);
}

#[tokio::test]
async fn upstream_responses_pass_back_unchanged() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/set-cookie", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(
        res.set_cookies(),
        vec!["app=1; Path=/", "other=2; HttpOnly"]
    );
    assert_eq!(res.header("x-app"), Some("kept"));
    assert_eq!(res.text(), "created");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for i in 0..20 {
        let res = get(proxy.addr, &format!("/n/{i}"), &[("cookie", &cookie)]).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.json()["uri"], format!("/n/{i}"));
    }
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection served all"
    );
}

/// An upstream that closes each keep-alive connection shortly after answering on it, as
/// servers do when their keep-alive timeout runs out. The proxy finds the closed connection
/// when it takes it from its pool: the request must go out on a fresh one, not wait on the
/// dead one until the upstream timeout (a 504 after 30 s, seen under load in benches/load.sh).
#[tokio::test]
async fn an_upstream_closing_an_idle_connection_does_not_hold_up_the_next_request() {
    let upstream = start_closing_upstream(Duration::from_millis(50)).await;
    let proxy = start_proxy_with(&config_toml(upstream, "timeout = \"5s\"", "")).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for i in 0..5 {
        let started = Instant::now();
        let res = get(proxy.addr, &format!("/n/{i}"), &[("cookie", &cookie)]).await;
        assert_eq!(res.status, StatusCode::OK, "request {i}: {}", res.text());
        assert_eq!(res.text(), "ok");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} waited {:?} on a closed connection",
            started.elapsed()
        );
        // Long enough for the upstream to close the connection the proxy just pooled.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A minimal HTTP/1.1 upstream: answers one request per connection with "ok" (keep-alive, as
/// far as the response says), then closes the connection `linger` later.
async fn start_closing_upstream(linger: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(linger).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_the_proxy_keeps_serving() {
    let down = closed_port().await;
    let proxy = start_proxy_with(&config_toml(down, "", "")).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for _ in 0..3 {
        let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        assert!(res.text().contains("could not be reached"));
    }
    assert_eq!(
        get(proxy.addr, "/.sessiongate/healthz", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn silent_upstream_is_504_after_the_timeout() {
    let silent = start_silent_upstream().await;
    let proxy = start_proxy_with(&config_toml(silent, "timeout = \"300ms\"", "")).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let started = Instant::now();
    let res = get(proxy.addr, "/slow", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(res.text().contains("did not answer in time"));
    // Still serving, and a second timeout behaves the same.
    assert_eq!(
        get(proxy.addr, "/.sessiongate/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(proxy.addr, "/slow", &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let (_upstream, mut proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    // An upload that is still being sent when shutdown starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(1);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/in-flight")
        .header("cookie", &cookie)
        .body(StreamBody::new(tokio_stream_from(rx)).boxed())
        .unwrap();
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { send(addr, req).await });
    tx.send(Ok(Frame::data(Bytes::from_static(b"first half "))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shutdown = tokio::spawn(async move {
        proxy.shutdown().await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown began"
    );
    tx.send(Ok(Frame::data(Bytes::from_static(b"second half"))))
        .await
        .unwrap();
    drop(tx);
    let res = in_flight.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["body_len"], 22);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("serve returns once in-flight requests are done")
        .unwrap();
}

/// Adapts an mpsc receiver to the `Stream` that `StreamBody` wants.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
