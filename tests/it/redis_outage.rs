//! The Redis store when Redis is gone, slow or not there yet: requests that need a session get
//! 503 with Retry-After (never forwarded, never treated as anonymous, the cookie kept), login
//! says it cannot sign in now, readyz says 503 naming the store while healthz stays 200, and
//! everything resumes with its sessions when Redis is back, without a restart.

use std::time::{Duration, Instant};

use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_config, redis_store};
use crate::common::*;
use http::StatusCode;

/// What a request with a session gets while the store cannot answer.
async fn assert_refused_as_unavailable(proxy: &Proxy, cookie: &str) {
    for accept in ["application/json", "text/html"] {
        let res = get(
            proxy.addr,
            "/app",
            &[("cookie", cookie), ("accept", accept)],
        )
        .await;
        assert_eq!(
            res.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            res.text()
        );
        assert_eq!(res.header("retry-after"), Some("1"));
        assert!(res.set_cookies().is_empty(), "the cookie is not cleared");
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_gives_503_and_started_again_resumes_with_sessions_intact() {
    let mut redis = RedisServer::start(RedisOptions {
        persist: true,
        ..RedisOptions::default()
    })
    .await;
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::OK);

    redis.stop().await;
    // The replica cache may answer (and forward) for half a second more; then every request
    // asks Redis, and from then on nothing is forwarded.
    eventually("requests with a session are refused", || async {
        status_with(&proxy, &cookie).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let forwarded = upstream.requests();
    assert_refused_as_unavailable(&proxy, &cookie).await;
    let ready = get(proxy.addr, "/.sessiongate/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.text().contains("session store (redis)"),
        "{}",
        ready.text()
    );
    assert_eq!(
        get(proxy.addr, "/.sessiongate/healthz", &[]).await.status,
        StatusCode::OK,
        "the process is alive"
    );
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.text().contains("Signing in is not possible right now"),
        "{}",
        res.text()
    );
    assert!(sets_no_session(&res), "{:?}", res.set_cookies());
    // Logging out now cannot end the session in Redis: the browser forgets the cookie, and is
    // told the session may live on.
    let res = post_form(&proxy, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.requests(), forwarded, "nothing was forwarded");

    redis.start_again().await;
    eventually("the session works again", || async {
        status_with(&proxy, &cookie).await == StatusCode::OK
    })
    .await;
    assert_eq!(
        get(proxy.addr, "/.sessiongate/readyz", &[]).await.status,
        StatusCode::OK
    );
    // And new logins too.
    let again = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &again).await, StatusCode::OK);
}

#[tokio::test]
async fn a_paused_redis_gives_503_within_the_deadline_never_a_hang() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &redis_store(&redis.url(), "", "timeout = \"300ms\""),
    );
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    let cookie = login(&a, USER, PASSWORD).await;
    assert_eq!(status_with(&a, &cookie).await, StatusCode::OK);

    let pause = Duration::from_secs(30);
    redis.pause(pause).await;
    let paused = Instant::now();
    // B has never seen the session: it must ask Redis, which does not answer.
    let asked = Instant::now();
    assert_refused_as_unavailable(&b, &cookie).await;
    let waited = asked.elapsed();
    // Four requests each bounded by the 300 ms deadline, not by the 30 s pause.
    assert!(
        waited < pause / 2,
        "a request waited {waited:?} for a paused Redis"
    );
    // A, once its cached copy is too old to trust, too.
    eventually("A refuses too", || async {
        status_with(&a, &cookie).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(
        get(a.addr, "/.sessiongate/readyz", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        paused.elapsed() < pause,
        "the checks ran while Redis was paused"
    );
}

#[tokio::test]
async fn a_replica_started_before_redis_is_not_ready_until_redis_answers() {
    let mut redis = RedisServer::start(RedisOptions::default()).await;
    redis.stop().await;
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    let ready = get(proxy.addr, "/.sessiongate/readyz", &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text()
    );
    assert_eq!(
        get(proxy.addr, "/.sessiongate/healthz", &[]).await.status,
        StatusCode::OK
    );
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);

    redis.start_again().await;
    eventually("readyz says ready", || async {
        get(proxy.addr, "/.sessiongate/readyz", &[]).await.status == StatusCode::OK
    })
    .await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::OK);
}
