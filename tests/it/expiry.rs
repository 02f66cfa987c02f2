//! Session lifetime through the proxy: the idle timeout slides with use, the absolute timeout
//! does not, and the sweeper removes expired sessions nobody asks for again.

use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;

#[tokio::test]
async fn idle_timeout_slides_with_activity_then_expires() {
    let (_upstream, proxy) = start_with("idle_timeout = \"1s\"\nabsolute_timeout = \"1h\"").await;
    // Used every 250 ms for twice the idle timeout: every request slides it.
    let cookie = use_past_idle_timeout(
        &proxy,
        InUse {
            idle: Duration::from_secs(1),
            slack: Duration::ZERO,
            every: Duration::from_millis(250),
            span: Duration::from_secs(2),
        },
    )
    .await;
    // Then left alone for longer than the timeout (a lower bound: a slow machine only waits
    // longer).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = get(
        proxy.addr,
        "/",
        &[("cookie", &cookie), ("accept", "text/html")],
    )
    .await;
    assert_eq!(res.status, StatusCode::FOUND, "idle session refused");
    assert_eq!(proxy.app.gate.sessions().len(), 0, "and removed on read");
}

#[tokio::test]
async fn absolute_timeout_ends_an_active_session() {
    let (_upstream, proxy) = start_with("idle_timeout = \"1h\"\nabsolute_timeout = \"3s\"").await;
    // The session starts between these two instants, so it is served until at least
    // `asked + 3 s` and refused from `answered + 3 s` on, however slow the login was.
    let asked = Instant::now();
    let cookie = login(&proxy, USER, PASSWORD).await;
    let answered = Instant::now();
    while asked.elapsed() < Duration::from_millis(1500) {
        let status = get(proxy.addr, "/", &[("cookie", &cookie)]).await.status;
        // An answer that came after the timeout (the test was held up) proves nothing.
        if asked.elapsed() < Duration::from_millis(2990) {
            assert_eq!(
                status,
                StatusCode::OK,
                "refused {:?} after the login, before the absolute timeout",
                asked.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(
        (answered + Duration::from_millis(3200)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A new login works and starts a new absolute window.
    let again = login(&proxy, USER, PASSWORD).await;
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &again)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn sweeper_removes_expired_sessions_without_requests() {
    let (_upstream, proxy) = start_with("idle_timeout = \"1s\"\nsweep_interval = \"100ms\"").await;
    for _ in 0..5 {
        login(&proxy, USER, PASSWORD).await;
        // Each login's own session is there right after it: only a second without a request
        // could have ended it, and the sweeper removes nothing live. (How many of the earlier
        // ones are left depends on how fast the machine logged in, so that is not counted.)
        assert!(!proxy.app.gate.sessions().is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.app.gate.sessions().is_empty() {
        assert!(
            Instant::now() < deadline,
            "sweeper never removed the expired sessions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn anonymous_requests_create_no_sessions() {
    let (_upstream, proxy) = start().await;
    for path in ["/", "/a", "/.sessiongate/login", "/.sessiongate/healthz"] {
        get(proxy.addr, path, &[("accept", "text/html")]).await;
    }
    post_login(&proxy, &[("username", USER), ("password", "wrong")], &[]).await;
    assert_eq!(proxy.app.gate.sessions().len(), 0);
}
