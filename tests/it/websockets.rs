//! WebSockets (and HTTP/1.1 upgrades in general) through sessiongate, with a real WebSocket
//! client and server library (tokio-tungstenite): judged and rewritten like any request, then
//! relayed byte for byte; bound to their session, so its end closes them; bounded by the
//! connection limit, their own idle timeout and shutdown. Streams (server-sent events, slow
//! bodies) pass through as they arrive.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::ws::*;
use crate::common::*;
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

/// A proxy in front of a WebSocket upstream; `session` and `upstream` lines go into those
/// tables, `auth` into [auth].
async fn ws_proxy(session: &str, upstream_lines: &str, auth: &str) -> (WsUpstream, Proxy) {
    let upstream = start_ws_upstream().await;
    let mut toml = config_toml(upstream.addr, upstream_lines, session);
    if !auth.is_empty() {
        toml = with_auth(&toml, auth);
    }
    (upstream, start_proxy_with(&toml).await)
}

fn own_origin(proxy: &Proxy) -> String {
    format!("http://{}", proxy.addr)
}

#[tokio::test]
async fn a_logged_in_websocket_echoes_both_ways_with_the_identity_set() {
    let (upstream, proxy) = ws_proxy("", "", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let origin = own_origin(&proxy);
    let mut ws = ws_connect(
        proxy.addr,
        "/ws",
        &[
            ("cookie", &format!("{cookie}; theme=dark")),
            ("origin", &origin),
            ("x-forwarded-user", "admin"),
            ("X-Forwarded-Groups", "admins"),
        ],
    )
    .await
    .expect("the upgrade goes through");
    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    ws.send_binary(vec![0u8, 1, 2, 255]).await;
    assert_eq!(&ws.recv_binary().await[..], &[0u8, 1, 2, 255]);
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send_binary(big.clone()).await;
    assert_eq!(
        &ws.recv_binary().await[..],
        &big[..],
        "a 1 MiB message whole"
    );
    let text = "é".repeat(300_000);
    ws.send_text(&text).await;
    assert_eq!(ws.recv_text().await, text);

    let handshake = &upstream.handshakes()[0];
    assert_eq!(header_values(handshake, "x-forwarded-user"), vec![USER]);
    assert_eq!(header_values(handshake, "x-forwarded-groups"), vec![""]);
    assert_eq!(
        header_values(handshake, "cookie"),
        vec!["theme=dark"],
        "our cookie is gone"
    );
    assert_eq!(header_values(handshake, "upgrade"), vec!["websocket"]);
    assert!(
        header_values(handshake, "connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("upgrade"))
    );
    assert_eq!(
        ws.close(1000, "bye").await,
        Closed::Frame {
            code: 1000,
            reason: "bye".into()
        }
    );
}

#[tokio::test]
async fn an_upgrade_without_a_session_is_401_and_never_reaches_the_upstream() {
    let (upstream, proxy) = ws_proxy("", "", "").await;
    for headers in [
        vec![],
        vec![("accept", "text/html")],
        vec![("cookie", "__Host-sessiongate=forged")],
    ] {
        let res = ws_connect(proxy.addr, "/ws", &headers)
            .await
            .unwrap_err()
            .refused();
        assert_eq!(
            res.status,
            StatusCode::UNAUTHORIZED,
            "never a redirect: {headers:?}"
        );
    }
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_cross_site_upgrade_is_refused_unless_its_origin_is_listed() {
    let (upstream, proxy) =
        ws_proxy("", "", "websocket_origins = [\"https://app.example.com\"]").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = ws_connect(
        proxy.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await
    .unwrap_err()
    .refused();
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.text().contains("cross-site"), "{}", res.text());
    // The same host over the other scheme is another origin.
    let other_scheme = format!("https://{}", proxy.addr);
    let res = ws_connect(
        proxy.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", &other_scheme)],
    )
    .await
    .unwrap_err()
    .refused();
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), 0);

    for origin in [
        "https://app.example.com",
        "HTTPS://APP.example.com",
        &own_origin(&proxy),
    ] {
        let mut ws = ws_connect(
            proxy.addr,
            "/ws",
            &[("cookie", &cookie), ("origin", origin)],
        )
        .await
        .unwrap_or_else(|e| panic!("{origin}: {e:?}"));
        ws.send_text("ok").await;
        assert_eq!(ws.recv_text().await, "ok");
    }
    // No Origin: not a browser, judged by its session.
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send_text("cli").await;
    assert_eq!(ws.recv_text().await, "cli");
}

#[tokio::test]
async fn an_upgrade_the_upstream_refuses_is_passed_back_as_it_is() {
    let (upstream, proxy) = ws_proxy("", "", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = ws_connect(proxy.addr, "/refuse", &[("cookie", &cookie)])
        .await
        .unwrap_err()
        .refused();
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), 1);
    // The client connection goes on as plain HTTP.
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn logout_closes_the_sessions_open_socket_within_a_second() {
    let (upstream, proxy) = ws_proxy("", "", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let other = login(&proxy, USER, PASSWORD).await;
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    let mut unrelated = ws_connect(proxy.addr, "/ws", &[("cookie", &other)])
        .await
        .unwrap();
    ws.send_text("before").await;
    assert_eq!(ws.recv_text().await, "before");
    upstream.wait_open(2, DEADLINE).await;

    let res = post_form(&proxy, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let ended = Instant::now();
    let how = ws.wait_closed(DEADLINE).await;
    assert!(
        ended.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        ended.elapsed()
    );
    assert_ne!(
        how,
        Closed::Frame {
            code: 1000,
            reason: String::new()
        },
        "{how:?}"
    );
    upstream.wait_closed(1, DEADLINE).await;
    // Only that session's socket.
    unrelated.send_text("still here").await;
    assert_eq!(unrelated.recv_text().await, "still here");
}

#[tokio::test]
async fn sign_out_everywhere_closes_every_socket_of_the_user() {
    let upstream = start_ws_upstream().await;
    let proxy = start_proxy_with(&team_config(upstream.addr, "", "")).await;
    let a = login(&proxy, USER, PASSWORD).await;
    let b = login(&proxy, USER, PASSWORD).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    let mut sockets = Vec::new();
    for cookie in [&a, &b] {
        sockets.push(
            ws_connect(proxy.addr, "/ws", &[("cookie", cookie)])
                .await
                .unwrap(),
        );
    }
    let mut bobs = ws_connect(proxy.addr, "/ws", &[("cookie", &bob)])
        .await
        .unwrap();
    let res = post_form(&proxy, "/.sessiongate/logout", &a, &[("everywhere", "1")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    for ws in &mut sockets {
        ws.wait_closed(Duration::from_secs(5)).await;
    }
    bobs.send_text("bob stays").await;
    assert_eq!(bobs.recv_text().await, "bob stays");
}

#[tokio::test]
async fn the_absolute_timeout_closes_an_open_socket() {
    let (_upstream, proxy) =
        ws_proxy("idle_timeout = \"1h\"\nabsolute_timeout = \"3s\"", "", "").await;
    // The session starts after this instant, so its socket may not close before `asked + 3 s`.
    let asked = Instant::now();
    let cookie = login(&proxy, USER, PASSWORD).await;
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send_text("x").await;
    assert_eq!(ws.recv_text().await, "x");
    ws.wait_closed(DEADLINE).await;
    let after = asked.elapsed();
    assert!(
        after >= Duration::from_millis(2990),
        "closed early: {after:?}"
    );
    // At the timeout (the close is a timer, not the next request), with room for a busy
    // machine.
    assert!(after < Duration::from_secs(8), "closed at {after:?}");
}

#[tokio::test]
async fn traffic_on_an_open_socket_keeps_the_session_alive_past_the_idle_timeout() {
    let (_upstream, proxy) = ws_proxy(
        "idle_timeout = \"2500ms\"\nabsolute_timeout = \"1h\"\ntouch_interval = \"200ms\"",
        "",
        "",
    )
    .await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    // Messages every 250 ms for twice the idle timeout, and no HTTP request meanwhile.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        ws.send_text("tick").await;
        assert_eq!(ws.recv_text().await, "tick");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status_with(&proxy, &cookie).await,
        StatusCode::OK,
        "the socket's use counted"
    );
}

#[tokio::test]
async fn a_socket_with_no_bytes_for_the_tunnel_idle_timeout_is_closed() {
    let (_upstream, proxy) = ws_proxy("", "tunnel_idle_timeout = \"1s\"", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send_text("x").await;
    assert_eq!(ws.recv_text().await, "x");
    let quiet = Instant::now();
    ws.wait_closed(DEADLINE).await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "{:?}",
        quiet.elapsed()
    );
    assert_eq!(
        status_with(&proxy, &cookie).await,
        StatusCode::OK,
        "the session stays"
    );
}

#[tokio::test]
async fn shutdown_closes_open_sockets_after_the_shutdown_timeout() {
    let upstream = start_ws_upstream().await;
    let toml = config_toml(upstream.addr, "", "")
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\"");
    let mut proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send_text("x").await;
    assert_eq!(ws.recv_text().await, "x");
    let asked = Instant::now();
    tokio::time::timeout(DEADLINE, proxy.shutdown())
        .await
        .expect("shutdown finished");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "the socket got its timeout"
    );
    ws.wait_closed(DEADLINE).await;
    upstream.wait_closed(1, DEADLINE).await;
}

#[tokio::test]
async fn five_hundred_sockets_on_one_session() {
    let (upstream, proxy) = ws_proxy("", "", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let mut sockets = Vec::new();
    for _ in 0..500 {
        sockets.push(
            ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
                .await
                .unwrap(),
        );
    }
    upstream.wait_open(500, DEADLINE).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send_text(&format!("m{i}")).await;
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(ws.recv_text().await, format!("m{i}"));
    }
    assert_eq!(proxy.app.gate.tunnels().len(), 500);
    let res = post_form(&proxy, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    upstream.wait_closed(500, DEADLINE).await;
}

#[tokio::test]
async fn open_tunnels_count_against_max_connections() {
    let upstream = start_ws_upstream().await;
    let toml = with_server(&config_toml(upstream.addr, "", ""), "max_connections = 4");
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    // Each tunnel keeps its connection's place under the limit: four fit.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(
            ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
                .await
                .unwrap(),
        );
    }
    assert_eq!(proxy.app.gate.tunnels().len(), 4);
    // A fifth client is not accepted while they are open: it waits in the kernel's queue, as
    // any connection past the limit does.
    let headers = [("cookie", cookie.as_str())];
    let fifth = ws_connect(proxy.addr, "/ws", &headers);
    tokio::pin!(fifth);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), fifth.as_mut())
            .await
            .is_err(),
        "a fifth connection was served with max_connections = 4"
    );
    // One closes: the waiting client is served.
    drop(open.pop());
    let mut fifth = tokio::time::timeout(DEADLINE, fifth)
        .await
        .expect("the waiting client was served")
        .unwrap();
    fifth.send_text("fits").await;
    assert_eq!(fifth.recv_text().await, "fits");
}

#[tokio::test]
async fn a_public_path_socket_works_without_a_session() {
    let (upstream, proxy) = ws_proxy("", "", "public_paths = [\"/ws/public\"]").await;
    let mut ws = ws_connect(proxy.addr, "/ws/public", &[("x-forwarded-user", "admin")])
        .await
        .unwrap();
    ws.send(Message::Text("hi".into())).await;
    assert_eq!(ws.recv_text().await, "hi");
    assert!(header_values(&upstream.handshakes()[0], "x-forwarded-user").is_empty());
}

/// Reads `path` through the proxy (upstream.timeout 1 s) while the upstream makes each of
/// `parts` (but the first, with `first_at_once`) only after the test releases it, 1.2 s
/// apart: each part must arrive while the upstream has sent exactly that many (nothing held
/// back), and the body outlives the timeout.
async fn streams_one_by_one(
    path: &str,
    parts: &[&str],
    first_at_once: bool,
    release: fn(&WsUpstream),
    sent: fn(&WsUpstream) -> usize,
) {
    let (upstream, proxy) = ws_proxy("", "timeout = \"1s\"", "").await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = send_streaming(
        proxy.addr,
        req(http::Method::GET, path, &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 || !first_at_once {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            release(&upstream);
        }
        read_until(&mut body, part.trim()).await;
        assert_eq!(
            sent(&upstream),
            i + 1,
            "{path}: a part arrived only with a later one"
        );
    }
}

#[tokio::test]
async fn server_sent_events_pass_through_one_by_one() {
    streams_one_by_one(
        "/events",
        &EVENTS,
        true,
        WsUpstream::release_event,
        WsUpstream::events_sent,
    )
    .await;
}

#[tokio::test]
async fn a_slow_body_is_not_cut_by_the_upstream_timeout() {
    streams_one_by_one(
        "/slow-body",
        &BODY_CHUNKS,
        false,
        WsUpstream::release_body,
        WsUpstream::chunks_sent,
    )
    .await;
}

#[tokio::test]
async fn websockets_work_through_the_tls_listener() {
    let ca = common::tls::Ca::new("sessiongate ws test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = common::tls::temp_dir("ws");
    common::tls::write_pair(tmp.path(), &cert, &key);
    let upstream = start_ws_upstream().await;
    let proxy = start_proxy_with(&common::tls::tls_config(upstream.addr, tmp.path(), "")).await;
    let mut conn = common::tls::tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    let res = conn
        .send(proxy.addr, common::tls::login_request(proxy.addr))
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);
    let origin = format!("https://localhost:{}", proxy.addr.port());
    let mut ws = wss_connect(
        proxy.addr,
        "localhost",
        &ca.pem,
        "/ws",
        &[("cookie", &cookie), ("origin", &origin)],
    )
    .await
    .expect("wss through the TLS listener");
    ws.send_text("over tls").await;
    assert_eq!(ws.recv_text().await, "over tls");
    assert_eq!(
        header_values(&upstream.handshakes()[0], "x-forwarded-proto"),
        vec!["https"]
    );
}

#[tokio::test]
async fn a_session_ended_on_another_replica_closes_its_socket_here() {
    use crate::common::redis::{RedisOptions, RedisServer, redis_config};
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_ws_upstream().await;
    let toml = redis_config(upstream.addr, &redis.url(), "");
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    let cookie = login(&a, USER, PASSWORD).await;
    let mut ws = ws_connect(a.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send_text("on A").await;
    assert_eq!(ws.recv_text().await, "on A");
    let res = post_form(&b, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let ended = Instant::now();
    ws.wait_closed(DEADLINE).await;
    assert!(
        ended.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        ended.elapsed()
    );
}

#[tokio::test]
async fn a_reload_that_removes_the_user_closes_their_socket() {
    let upstream = start_ws_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let with_bob = team_config(upstream.addr, "", "");
    std::fs::write(&file, &with_bob).unwrap();
    let proxy = start_proxy_from(sessiongate::Config::load(&file).unwrap()).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let mut bobs = ws_connect(proxy.addr, "/ws", &[("cookie", &bob)])
        .await
        .unwrap();
    let mut alices = ws_connect(proxy.addr, "/ws", &[("cookie", &alice)])
        .await
        .unwrap();
    std::fs::write(&file, with_bob.replace(&bob_table(), "")).unwrap();
    proxy.app.reload().await.unwrap();
    bobs.wait_closed(Duration::from_secs(5)).await;
    alices.send_text("alice stays").await;
    assert_eq!(alices.recv_text().await, "alice stays");
}
