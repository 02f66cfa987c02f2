//! Two sessiongate replicas sharing one real Redis: a session made on one is good on the
//! other, an ending anywhere is refused everywhere, a restarted replica keeps every session,
//! and failed logins count the same on both.

use std::time::{Duration, Instant};

use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_config};
use crate::common::*;
use http::StatusCode;

async fn replicas(redis: &RedisServer) -> (Upstream, Proxy, Proxy) {
    let upstream = start_upstream().await;
    let toml = redis_config(upstream.addr, &redis.url(), "");
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    (upstream, a, b)
}

#[tokio::test]
async fn a_session_made_on_one_replica_works_on_the_other() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (upstream, a, b) = replicas(&redis).await;
    let cookie = login(&a, USER, PASSWORD).await;
    let res = get(b.addr, "/whoami", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert_eq!(upstream.requests(), 1);
    assert_eq!(status_with(&a, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn a_logout_on_one_replica_is_refused_at_once_there_and_within_a_second_on_the_other() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (_upstream, a, b) = replicas(&redis).await;
    // Both replicas have the session in their caches.
    let cookie = login(&a, USER, PASSWORD).await;
    assert_eq!(status_with(&a, &cookie).await, StatusCode::OK);
    assert_eq!(status_with(&b, &cookie).await, StatusCode::OK);

    let res = post_form(&b, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let ended = Instant::now();
    assert_eq!(
        status_with(&b, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "at once where it ended"
    );
    // The other replica hears of it on the invalidation channel (usually within milliseconds).
    // Whatever happens to that channel, its cache holds an entry at most half a second, so a
    // second after the logout the session is refused there: that is the guarantee.
    tokio::time::sleep_until((ended + Duration::from_secs(1)).into()).await;
    assert_eq!(status_with(&a, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_replica_subscribes_to_the_invalidation_channel_and_a_logout_is_announced() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (_upstream, a, b) = replicas(&redis).await;
    let channel = "sessiongate:ended";
    eventually("both replicas subscribed", || async {
        let mut conn = redis.client().await;
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        counts == vec![(channel.to_string(), 2)]
    })
    .await;

    // A listener of our own hears the logout, named by the session's key, never its id.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    let cookie = login(&a, USER, PASSWORD).await;
    let res = post_form(&b, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(20), pubsub.on_message().next())
        .await
        .expect("the logout was announced")
        .unwrap();
    let payload: String = msg.get_payload().unwrap();
    let key = payload.strip_prefix("s:").expect("a session key");
    assert_eq!(key.len(), 64);
    let value = cookie.split_once('=').unwrap().1;
    assert!(!value.contains(key) && !payload.contains(value.split('.').next().unwrap()));
}

#[tokio::test]
async fn sign_out_everywhere_ends_the_sessions_made_on_both_replicas() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (_upstream, a, b) = replicas(&redis).await;
    let on_a = login(&a, USER, PASSWORD).await;
    let on_b = login(&b, USER, PASSWORD).await;
    let also_b = login(&b, USER, PASSWORD).await;
    for cookie in [&on_a, &on_b, &also_b] {
        assert_eq!(status_with(&a, cookie).await, StatusCode::OK);
        assert_eq!(status_with(&b, cookie).await, StatusCode::OK);
    }
    let res = post_form(&a, "/.sessiongate/logout", &on_b, &[("everywhere", "1")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert!(
        res.set_cookies()[0].contains("Max-Age=0"),
        "this browser's cookie is cleared"
    );
    let ended = Instant::now();
    for cookie in [&on_a, &on_b, &also_b] {
        assert_eq!(status_with(&a, cookie).await, StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep_until((ended + Duration::from_secs(1)).into()).await;
    for cookie in [&on_a, &on_b, &also_b] {
        assert_eq!(status_with(&b, cookie).await, StatusCode::UNAUTHORIZED);
    }
    eventually("nothing left in Redis", || async {
        redis.keys().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn sign_out_everywhere_is_csrf_checked_like_logout() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (_upstream, a, _b) = replicas(&redis).await;
    let cookie = login(&a, USER, PASSWORD).await;
    let form = "everywhere=1";
    let cross_site = req_with_body(
        http::Method::POST,
        "/.sessiongate/logout",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "https://evil.example"),
            ("cookie", &cookie),
        ],
        form,
    );
    assert_eq!(send(a.addr, cross_site).await.status, StatusCode::FORBIDDEN);
    let no_token = req_with_body(
        http::Method::POST,
        "/.sessiongate/logout",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        form,
    );
    assert_eq!(send(a.addr, no_token).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        status_with(&a, &cookie).await,
        StatusCode::OK,
        "nothing was ended"
    );
}

#[tokio::test]
async fn a_restarted_replica_keeps_every_session() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = redis_config(upstream.addr, &redis.url(), "");
    let mut first = start_proxy_with(&toml).await;
    let cookies = [
        login(&first, USER, PASSWORD).await,
        login(&first, USER, PASSWORD).await,
    ];
    first.shutdown().await;
    drop(first);
    // A new process in all but name: nothing of the old one's memory is left.
    let second = start_proxy_with(&toml).await;
    for cookie in &cookies {
        assert_eq!(status_with(&second, cookie).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn failed_logins_count_the_same_on_every_replica() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = with_auth(
        &redis_config(upstream.addr, &redis.url(), ""),
        "max_failures = 3\nfailure_window = \"10m\"",
    );
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    // Guesses spread over the replicas: 2 on A, 1 on B.
    for proxy in [&a, &a, &b] {
        let res = post_login(proxy, &[("username", USER), ("password", "wrong")], &[]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    // The limit is reached on both, even for the right password.
    for proxy in [&a, &b] {
        let res = post_login(proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text());
        let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=600).contains(&wait), "{wait}");
    }
    // What Redis holds names neither the user nor the address, and expires by itself.
    let keys = redis.keys().await;
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with("sessiongate:fail:"), "{key}");
        assert!(!key.contains(USER) && !key.contains("127.0.0.1"), "{key}");
        let ttl = redis.ttl_ms(key).await;
        assert!(ttl > 0 && ttl <= 600_000, "{key}: {ttl}");
    }
}
