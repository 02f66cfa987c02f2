//! The Redis session store on its own: what it writes (no credential, a TTL on every key, all
//! under the prefix), expiry in Redis, password-protected and TLS servers, and the config it
//! refuses.

use std::time::{Duration, Instant};

use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_config, redis_store};
use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use sessiongate::Config;

/// Every string a dump holds, and the keys: what an attacker with a copy of Redis has.
async fn everything_in(redis: &RedisServer) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for (key, values) in redis.dump().await {
        all.push(key.clone().into_bytes());
        // The part after the last ':' too, in case a key's suffix is what would be tried.
        if let Some((_, tail)) = key.rsplit_once(':') {
            all.push(tail.as_bytes().to_vec());
        }
        all.extend(values);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_dump_of_redis_holds_no_credential() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    let cookies = [
        login(&proxy, USER, PASSWORD).await,
        login(&proxy, USER, PASSWORD).await,
    ];
    // A failed login too, so the failure counters are in the dump.
    let res = post_login(&proxy, &[("username", USER), ("password", "nope")], &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    for cookie in &cookies {
        assert_eq!(status_with(&proxy, cookie).await, StatusCode::OK);
    }

    let dump = everything_in(&redis).await;
    assert!(dump.len() > 8, "sessions, index and counters are there");
    let name = proxy.cookie_name().to_string();
    for cookie in &cookies {
        let value = cookie.split_once('=').unwrap().1;
        let id_b64 = value.split('.').next().unwrap();
        let id = URL_SAFE_NO_PAD.decode(id_b64).unwrap();
        let forms: [Vec<u8>; 4] = [
            value.as_bytes().to_vec(),
            id_b64.as_bytes().to_vec(),
            hex(&id).into_bytes(),
            id.clone(),
        ];
        for item in &dump {
            for form in &forms {
                assert!(
                    !contains(item, form),
                    "the dump holds a session id or cookie"
                );
            }
        }
    }
    // Nothing in it works as a cookie, as it is or in the cookie's own encoding.
    for item in &dump {
        let mut tries = Vec::new();
        if let Ok(text) = std::str::from_utf8(item) {
            tries.push(text.to_string());
        }
        tries.push(URL_SAFE_NO_PAD.encode(item));
        for t in tries {
            let Ok(header) = http::HeaderValue::from_str(&format!("{name}={t}")) else {
                continue;
            };
            let res = get(proxy.addr, "/", &[("cookie", header.to_str().unwrap())]).await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{t:?} was accepted");
        }
    }
}

#[tokio::test]
async fn every_key_is_under_the_prefix_and_expires() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &redis_store(
            &redis.url(),
            "absolute_timeout = \"2h\"",
            "key_prefix = \"team-a/\"",
        ),
    );
    let proxy = start_proxy_with(&toml).await;
    login(&proxy, USER, PASSWORD).await;
    post_login(&proxy, &[("username", "mallory"), ("password", "x")], &[]).await;
    let keys = redis.keys().await;
    assert_eq!(
        keys.len(),
        4,
        "a session, its user's index, two counters: {keys:?}"
    );
    for key in keys {
        assert!(key.starts_with("team-a/"), "{key}");
        let ttl = redis.ttl_ms(&key).await;
        assert!(ttl > 0, "{key} has no TTL");
        assert!(ttl <= 2 * 3600 * 1000, "{key}: {ttl} ms");
    }
}

#[tokio::test]
async fn an_idle_session_ends_in_redis_and_leaves_nothing_behind() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = redis_config(
        upstream.addr,
        &redis.url(),
        "idle_timeout = \"1500ms\"\nabsolute_timeout = \"1h\"\ntouch_interval = \"100ms\"",
    );
    let proxy = start_proxy_with(&toml).await;
    // Used every 300 ms for twice the idle timeout: each use is written back (at most 100 ms
    // late, the touch interval) and slides it.
    let cookie = use_past_idle_timeout(
        &proxy,
        InUse {
            idle: Duration::from_millis(1500),
            slack: Duration::from_millis(100),
            every: Duration::from_millis(300),
            span: Duration::from_secs(3),
        },
    )
    .await;
    // Then left alone: Redis lets the session and its index go by themselves.
    eventually("the idle session left Redis", || async {
        redis.keys().await.is_empty()
    })
    .await;
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_absolute_timeout_ends_a_busy_session_in_redis() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = redis_config(
        upstream.addr,
        &redis.url(),
        "idle_timeout = \"1h\"\nabsolute_timeout = \"1500ms\"",
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_with(&proxy, &cookie).await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the absolute timeout never ended it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::UNAUTHORIZED);
    eventually("the session left Redis", || async {
        redis.keys().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_password_protected_redis_works_with_the_password_in_the_url_or_a_file() {
    let password = "s3cret pass/word";
    let redis = RedisServer::start(RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    })
    .await;
    let upstream = start_upstream().await;
    let in_url =
        start_proxy_with(&redis_config(upstream.addr, &redis.url_with_password(), "")).await;
    let cookie = login(&in_url, USER, PASSWORD).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let toml = config_toml(
        upstream.addr,
        "",
        &redis_store(
            &redis.url(),
            "",
            &format!("password_file = {:?}", file.display().to_string()),
        ),
    );
    let from_file = start_proxy_with(&toml).await;
    assert_eq!(status_with(&from_file, &cookie).await, StatusCode::OK);

    // Without the password Redis refuses every command: that is "unavailable", never
    // "anonymous", and readyz says so.
    let without = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    let res = get(without.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        res.text()
    );
    let ready = get(without.addr, "/.sessiongate/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("redis"), "{}", ready.text());
}

#[tokio::test]
async fn a_tls_redis_is_verified_against_the_configured_ca() {
    let redis = RedisServer::start(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    })
    .await;
    assert!(redis.url().starts_with("rediss://"));
    let ca = redis.ca_pem_path().unwrap().display().to_string();
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &redis_store(&redis.url(), "", &format!("ca = {ca:?}")),
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::OK);
    assert_eq!(
        get(proxy.addr, "/.sessiongate/readyz", &[]).await.status,
        StatusCode::OK
    );

    // The system roots do not know the test CA: the server is not trusted, nothing works.
    let untrusted = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    assert_eq!(
        status_with(&untrusted, &cookie).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let res = post_login(
        &untrusted,
        &[("username", USER), ("password", PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        res.text().contains("Try again in a moment"),
        "{}",
        res.text()
    );
}

fn refused(toml: &str) -> String {
    Config::from_toml(toml).unwrap_err().to_string()
}

#[tokio::test]
async fn redis_config_mistakes_are_refused_with_the_key_named() {
    let upstream = start_upstream().await;
    let url = "redis://127.0.0.1:6379/0";
    let no_secret =
        redis_config(upstream.addr, url, "").replace(&format!("secret = \"{SECRET}\""), "");
    let e = refused(&no_secret);
    assert!(e.contains("session.secret") && e.contains("replica"), "{e}");

    let e = refused(&config_toml(upstream.addr, "", "store = \"redis\""));
    assert!(e.contains("redis.url"), "{e}");
    let e = refused(&config_toml(
        upstream.addr,
        "",
        "\n[redis]\nurl = \"redis://x\"\n",
    ));
    assert!(e.contains("session.store = \"redis\""), "{e}");
    let e = refused(&config_toml(upstream.addr, "", "store = \"disk\""));
    assert!(e.contains("session.store"), "{e}");
    for (bad, says) in [
        ("http://127.0.0.1:6379", "scheme"),
        ("rediss://127.0.0.1:6379/0#insecure", "verified"),
        ("not a url", "not a URL"),
    ] {
        let e = refused(&redis_config(upstream.addr, bad, ""));
        assert!(e.contains("redis.url") && e.contains(says), "{bad}: {e}");
    }
    let e = refused(&config_toml(
        upstream.addr,
        "",
        &redis_store(url, "", "ca = \"/etc/hostname\""),
    ));
    assert!(e.contains("redis.ca"), "{e}");
    let e = refused(&config_toml(
        upstream.addr,
        "",
        &redis_store(
            "redis://:pw@127.0.0.1:6379/0",
            "",
            "password_file = \"/etc/hostname\"",
        ),
    ));
    assert!(e.contains("redis.password_file"), "{e}");
    let e = refused(&redis_config(
        upstream.addr,
        url,
        "idle_timeout = \"10s\"\ntouch_interval = \"10s\"",
    ));
    assert!(e.contains("session.touch_interval"), "{e}");
    // The password never appears in an error.
    let e = refused(&config_toml(
        upstream.addr,
        "",
        &redis_store(
            "redis://:hunter2@127.0.0.1:6379/0",
            "",
            "password_file = \"/nonexistent\"",
        ),
    ));
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_reload_ends_in_redis_the_sessions_of_removed_users_and_changed_passwords() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let base = redis_config(upstream.addr, &redis.url(), "");
    let with_team = format!("{base}\n{}", team_users());
    std::fs::write(&file, &with_team).unwrap();
    let a = start_proxy_from(Config::load(&file).unwrap()).await;
    let b = start_proxy_from(Config::load(&file).unwrap()).await;
    let alice = login(&a, USER, PASSWORD).await;
    let bob = login(&a, "bob", BOB_PASSWORD).await;
    let carol = login(&b, "carol", CAROL_PASSWORD).await;

    // bob is removed and carol's password changes.
    let new_carol = carol_table().replace(
        carol_table().split('"').nth(3).unwrap(),
        &cheap_hash("a-new-password"),
    );
    let changed = format!("{base}\n{}", bob_table() + &new_carol).replace(&bob_table(), "");
    std::fs::write(&file, &changed).unwrap();
    let done = a.app.reload().await.unwrap();
    assert_eq!(done.ended_sessions, 2, "{done:?}");
    // Gone from Redis, so every replica refuses them, reloaded or not yet.
    for cookie in [&bob, &carol] {
        assert_eq!(status_with(&a, cookie).await, StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for cookie in [&bob, &carol] {
        assert_eq!(status_with(&b, cookie).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(status_with(&b, &alice).await, StatusCode::OK);
    let keys = redis.keys().await;
    assert!(
        keys.iter()
            .all(|k| !k.contains("user:bob") && !k.contains("user:carol")),
        "{keys:?}"
    );
}

#[test]
fn check_and_start_refuse_the_redis_store_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let toml = redis_config(
        "127.0.0.1:9".parse().unwrap(),
        "redis://127.0.0.1:6379/0",
        "",
    )
    .replace(&format!("secret = \"{SECRET}\""), "");
    std::fs::write(&file, toml).unwrap();
    for args in [vec!["check", "--config"], vec!["--config"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(&args)
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted it");
        // check prints its problem on stdout; the start logs it on stderr.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("session.secret") && said.contains("every replica"),
            "{args:?}: {said}"
        );
    }
}

#[tokio::test]
async fn a_session_changed_in_redis_without_the_secret_is_refused() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = format!(
        "{}\n{}",
        redis_config(upstream.addr, &redis.url(), ""),
        bob_table()
    );
    let proxy = start_proxy_with(&toml).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    let bobs_key = redis
        .keys()
        .await
        .into_iter()
        .find(|k| k.contains(":session:"))
        .unwrap();
    let mut conn = redis.client().await;
    let bobs_cred: String = redis::cmd("HGET")
        .arg(&bobs_key)
        .arg("cred")
        .query_async(&mut conn)
        .await
        .unwrap();
    let alice = login(&proxy, USER, PASSWORD).await;
    assert_eq!(status_with(&proxy, &bob).await, StatusCode::OK);
    let alices_key = redis
        .keys()
        .await
        .into_iter()
        .find(|k| k.contains(":session:") && *k != bobs_key)
        .unwrap();
    // Someone with write access to Redis (but not the secret) makes bob's session alice's...
    let _: () = redis::cmd("HSET")
        .arg(&bobs_key)
        .arg("user")
        .arg(USER)
        .query_async(&mut conn)
        .await
        .unwrap();
    // ... and alice's session bob's, with his credentials fingerprint, and younger.
    let _: () = redis::cmd("HSET")
        .arg(&alices_key)
        .arg("user")
        .arg("bob")
        .arg("cred")
        .arg(&bobs_cred)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // past the replica cache
    let res = get(proxy.addr, "/", &[("cookie", &bob)]).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        res.upstream_header("x-forwarded-user")
    );
    assert_eq!(status_with(&proxy, &alice).await, StatusCode::UNAUTHORIZED);
    // A fresh start time does not stretch the absolute timeout either.
    let fresh = login(&proxy, USER, PASSWORD).await;
    let fresh_key = redis
        .keys()
        .await
        .into_iter()
        .find(|k| k.contains(":session:") && *k != bobs_key && *k != alices_key)
        .unwrap();
    let _: () = redis::cmd("HINCRBY")
        .arg(&fresh_key)
        .arg("created")
        .arg(3_600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status_with(&proxy, &fresh).await, StatusCode::UNAUTHORIZED);
}
