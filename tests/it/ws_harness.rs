//! The WebSocket helper in tests/it/common/ws.rs does what the proxy tests rely on, talking to
//! its upstream directly (no sessiongate): echo of text, binary and large messages, recorded
//! handshake headers, a refusal whole, events and slow bodies one release at a time, open and
//! ended sockets counted with how they ended, and wss with the test CA.

use crate::common::tls::Ca;
use crate::common::ws::*;
use crate::common::*;
use bytes::Bytes;
use http::{Method, StatusCode};

#[tokio::test]
async fn echoes_text_binary_and_large_messages_and_answers_pings() {
    let upstream = start_ws_upstream().await;
    let mut ws = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();

    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.send_binary(vec![0u8, 1, 2, 255]).await;
    assert_eq!(ws.recv_binary().await, Bytes::from_static(&[0, 1, 2, 255]));

    // Patterned, not zeros, so a reordered or shifted chunk would not compare equal.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send_binary(big.clone()).await;
    assert_eq!(ws.recv_binary().await, big);
    let largest: Vec<u8> = (0..MAX_MESSAGE).map(|i| (i % 253) as u8).collect();
    ws.send_binary(largest.clone()).await;
    assert_eq!(ws.recv_binary().await, largest);
    let big_text = "é".repeat(300_000);
    ws.send_text(&big_text).await;
    assert_eq!(ws.recv_text().await, big_text);

    assert_eq!(ws.ping(b"are you there").await, "are you there");
    assert_eq!(upstream.messages(), 5);

    // A path under /ws/ is a socket too.
    let mut other = ws_connect(upstream.addr, "/ws/room/1?x=y", &[])
        .await
        .unwrap();
    other.send_text("second").await;
    assert_eq!(other.recv_text().await, "second");
}

#[tokio::test]
async fn records_every_handshake_and_request_header() {
    let upstream = start_ws_upstream().await;
    let ws = ws_connect(
        upstream.addr,
        "/ws",
        &[
            ("cookie", "app=1"),
            ("origin", "http://example.test"),
            ("x-forwarded-user", "alice"),
            ("sec-websocket-protocol", "chat, superchat"),
        ],
    )
    .await
    .unwrap();
    // What the upstream answered, as the client saw it.
    assert_eq!(ws.headers["x-upstream"], "ws-upstream");
    assert_eq!(ws.headers["sec-websocket-protocol"], "chat");

    let handshakes = upstream.handshakes();
    assert_eq!(handshakes.len(), 1);
    let h = &handshakes[0];
    assert_eq!(header_values(h, "cookie"), ["app=1"]);
    assert_eq!(header_values(h, "origin"), ["http://example.test"]);
    assert_eq!(header_values(h, "x-forwarded-user"), ["alice"]);
    assert_eq!(header_values(h, "connection"), ["Upgrade"]);
    assert_eq!(header_values(h, "upgrade"), ["websocket"]);
    assert_eq!(header_values(h, "sec-websocket-version"), ["13"]);
    assert_eq!(header_values(h, "sec-websocket-key")[0].len(), 24);
    assert_eq!(header_values(h, "host"), [upstream.addr.to_string()]);

    // A header named like a handshake header replaces the default one.
    ws_connect(upstream.addr, "/ws", &[("host", "app.example.test")])
        .await
        .unwrap();
    assert_eq!(
        header_values(&upstream.handshakes()[1], "host"),
        ["app.example.test"]
    );

    // Plain requests are counted and recorded too, and get the JSON echo.
    assert_eq!(upstream.requests(), 2);
    let res = get(upstream.addr, "/api/thing?q=1", &[("x-test", "yes")]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/api/thing?q=1");
    assert_eq!(res.upstream_header("x-test"), ["yes"]);
    assert_eq!(upstream.requests(), 3);
    let last = upstream.request_log().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.uri.as_str()),
        ("GET", "/api/thing?q=1")
    );
    assert_eq!(header_values(&last.headers, "x-test"), ["yes"]);
    // Only the upgrades are handshakes.
    assert_eq!(upstream.handshakes().len(), 2);
}

#[tokio::test]
async fn refusals_come_back_whole() {
    let upstream = start_ws_upstream().await;
    let refused = ws_connect(upstream.addr, "/refuse", &[]).await.unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::FORBIDDEN));
    let res = refused.refused();
    assert_eq!(res.text(), "refused by the app\n");
    assert_eq!(res.header("x-app"), Some("refused"));
    assert!(res.header("upgrade").is_none());
    assert_eq!(upstream.open_sockets(), 0);
    assert!(upstream.handshakes().is_empty());
    assert_eq!(upstream.requests(), 1);

    // /ws without an upgrade, and with a version this server does not speak.
    let res = get(upstream.addr, "/ws", &[]).await;
    assert_eq!(res.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(res.header("upgrade"), Some("websocket"));
    let res = ws_connect(upstream.addr, "/ws", &[("sec-websocket-version", "8")])
        .await
        .unwrap_err()
        .refused();
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    // Nothing listening: a failure, not a refusal.
    let err = ws_connect(closed_port().await, "/ws", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, WsError::Failed(_)), "{err:?}");
}

#[tokio::test]
async fn events_come_one_release_at_a_time() {
    let upstream = start_ws_upstream().await;
    let res = send_streaming(upstream.addr, req(Method::GET, "/events", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();

    assert_eq!(read_until(&mut body, "data: 1\n\n").await, "data: 1\n\n");
    // Read while the upstream had produced only this one: the next waits for the release.
    assert_eq!(upstream.events_sent(), 1);
    upstream.release_event();
    assert_eq!(read_until(&mut body, "data: 2\n\n").await, "data: 2\n\n");
    assert_eq!(upstream.events_sent(), 2);
    upstream.release_event();
    assert_eq!(read_until(&mut body, "data: 3\n\n").await, "data: 3\n\n");
    assert!(
        tokio::time::timeout(DEADLINE, http_body_util::BodyExt::frame(&mut body))
            .await
            .unwrap()
            .is_none(),
        "the body ends after three events"
    );
}

#[tokio::test]
async fn slow_body_head_first_then_chunks_on_release() {
    let upstream = start_ws_upstream().await;
    // A release given before the body waits for it is kept, not lost.
    upstream.release_body();
    let res = send_streaming(upstream.addr, req(Method::GET, "/slow-body", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    assert_eq!(read_until(&mut body, "chunk 1\n").await, "chunk 1\n");
    assert_eq!(upstream.chunks_sent(), 1);
    // Two releases at once are two chunks.
    upstream.release_body();
    upstream.release_body();
    assert_eq!(
        read_until(&mut body, "chunk 3\n").await,
        "chunk 2\nchunk 3\n"
    );
    assert_eq!(upstream.chunks_sent(), 3);

    // The head comes with no release at all.
    let res = send_streaming(upstream.addr, req(Method::GET, "/slow-body", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(upstream.chunks_sent(), 3);
}

#[tokio::test]
async fn open_sockets_are_counted_and_each_end_recorded() {
    let upstream = start_ws_upstream().await;
    let mut first = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();
    let second = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();
    // Counted by the time the client has its 101.
    assert_eq!(upstream.open_sockets(), 2);

    // A clean close by the client: its code, echoed back in the upstream's close frame.
    assert_eq!(
        first.close(4001, "done").await,
        Closed::Frame {
            code: 4001,
            reason: "done".into()
        }
    );
    let ends = upstream.wait_closed(1, DEADLINE).await;
    assert_eq!(ends, [SocketEnd::ClientClosed(4001)]);
    assert!(ends[0].is_clean());
    assert_eq!(upstream.open_sockets(), 1);

    // A client that just goes away.
    drop(second);
    let ends = upstream.wait_closed(2, DEADLINE).await;
    assert!(matches!(ends[1], SocketEnd::Dropped(_)), "{ends:?}");
    assert!(!ends[1].is_clean());
    upstream.wait_open(0, DEADLINE).await;
}

#[tokio::test]
async fn upstream_pushes_closes_and_drops() {
    let upstream = start_ws_upstream().await;
    let mut a = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();
    let mut b = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();
    upstream.push_text("news");
    assert_eq!(a.recv_text().await, "news");
    assert_eq!(b.recv_text().await, "news");

    upstream.close_all(4000, "bye");
    for ws in [&mut a, &mut b] {
        assert_eq!(
            ws.wait_closed(DEADLINE).await,
            Closed::Frame {
                code: 4000,
                reason: "bye".into()
            }
        );
    }
    let ends = upstream.wait_closed(2, DEADLINE).await;
    assert_eq!(
        ends,
        [
            SocketEnd::UpstreamClosed(4000),
            SocketEnd::UpstreamClosed(4000)
        ]
    );

    let mut c = ws_connect(upstream.addr, "/ws", &[]).await.unwrap();
    upstream.drop_all();
    assert_eq!(c.wait_closed(DEADLINE).await, Closed::Eof);
    let ends = upstream.wait_closed(3, DEADLINE).await;
    assert_eq!(ends[2], SocketEnd::UpstreamDropped);
    assert_eq!(upstream.open_sockets(), 0);
}

#[tokio::test]
async fn the_page_opens_a_socket_to_its_own_origin() {
    let upstream = start_ws_upstream().await;
    let res = get(upstream.addr, "/page", &[BROWSER]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(res.header("content-security-policy").is_none());
    let page = res.text();
    for part in [
        r#"new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws")"#,
        r#"ws.send("hello from the page")"#,
        r#"id="state""#,
        r#"id="code""#,
        r#"id="messages""#,
    ] {
        assert!(page.contains(part), "{part} not in the page:\n{page}");
    }
}

#[tokio::test]
async fn wss_with_the_test_ca() {
    let ca = Ca::new("ws harness CA");
    let upstream = start_ws_upstream_tls(&ca).await;
    let mut ws = wss_connect(
        upstream.addr,
        "localhost",
        &ca.pem,
        "/ws",
        &[("cookie", "a=b")],
    )
    .await
    .unwrap();
    ws.send_text("over tls").await;
    assert_eq!(ws.recv_text().await, "over tls");
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 249) as u8).collect();
    ws.send_binary(big.clone()).await;
    assert_eq!(ws.recv_binary().await, big);
    let h = &upstream.handshakes()[0];
    assert_eq!(
        header_values(h, "host"),
        [format!("localhost:{}", upstream.addr.port())]
    );
    assert_eq!(header_values(h, "cookie"), ["a=b"]);
    assert_eq!(
        ws.close(1000, "").await,
        Closed::Frame {
            code: 1000,
            reason: String::new()
        }
    );
    assert_eq!(
        upstream.wait_closed(1, DEADLINE).await,
        [SocketEnd::ClientClosed(1000)]
    );

    // A refusal over TLS comes back whole too.
    let res = wss_connect(upstream.addr, "localhost", &ca.pem, "/refuse", &[])
        .await
        .unwrap_err()
        .refused();
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.text(), "refused by the app\n");

    // Another CA's certificate is not trusted: the handshake fails before any HTTP.
    let other = Ca::new("some other CA");
    let requests = upstream.requests();
    let err = wss_connect(upstream.addr, "localhost", &other.pem, "/ws", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, WsError::Failed(ref e) if e.contains("TLS")),
        "{err:?}"
    );
    assert_eq!(upstream.requests(), requests);
}

/// A hand-written server for what the upstream never does: the client must read a refusal
/// whose body comes in a later write (tungstenite's own client keeps only what came with the
/// head), and must not take a 101 with the wrong Sec-WebSocket-Accept for a socket.
#[tokio::test]
async fn client_reads_split_refusals_and_checks_the_accept_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{oneshot, watch};

    async fn read_head(stream: &mut TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "request head");
            head.push(byte[0]);
        }
    }

    const HEAD: &[u8] = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 13\r\n\r\n";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (head_read_tx, head_read) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // First connection: the head of a 401, and its body only once the client has read
        // all of the head, so the two cannot come in one read.
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream.write_all(HEAD).await.unwrap();
        head_read.await.unwrap();
        stream.write_all(b"log in first\n").await.unwrap();
        // Second connection: a 101 whose accept key belongs to some other handshake.
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
                  sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
            .await
            .unwrap();
        stream
    });

    let (read_tx, mut read_rx) = watch::channel(0usize);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = CountingReads {
        inner: tcp,
        read: read_tx,
    };
    let connect = tokio::spawn(async move { ws_handshake(io, "test", "/ws", &[]).await });
    tokio::time::timeout(DEADLINE, read_rx.wait_for(|n| *n >= HEAD.len()))
        .await
        .expect("the client read the response head")
        .unwrap();
    head_read_tx.send(()).unwrap();
    let res = connect.await.unwrap().unwrap_err().refused();
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.text(), "log in first\n");

    let err = ws_connect(addr, "/ws", &[]).await.unwrap_err();
    assert!(
        matches!(err, WsError::Failed(ref e) if e.contains("Sec-WebSocket-Accept")),
        "{err:?}"
    );
    drop(server.await.unwrap());
}

/// A TCP stream that counts the bytes read from it, so a test knows what the client has
/// consumed instead of guessing with a sleep.
struct CountingReads {
    inner: tokio::net::TcpStream,
    read: tokio::sync::watch::Sender<usize>,
}

impl tokio::io::AsyncRead for CountingReads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.send_modify(|total| *total += n);
        polled
    }
}

impl tokio::io::AsyncWrite for CountingReads {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
