//! The real-Redis helper in tests/it/common/redis.rs does what the session store tests rely on:
//! a server that answers, a password it enforces, TLS with the test CA, data kept across a
//! restart only when persisting, a pause that stalls clients, and a process gone on drop.

use std::time::{Duration, Instant};

use crate::common::redis::{RedisOptions, RedisServer};
use redis::AsyncCommands;

/// A connection from `client`, not the helper's own, so a test sees what any client
/// would. Fails instead of hanging if nothing answers.
async fn connect(client: redis::Client) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(30)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

#[tokio::test]
async fn plain_server_stores_and_shows_every_kind_of_value() {
    let server = RedisServer::start(RedisOptions::default()).await;
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/0", server.port())
    );
    assert_eq!(server.url_with_password(), server.url());
    assert!(server.ca_pem_path().is_none());

    // Another client, by the URL a store would be given.
    let mut conn = connect(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap();
    let () = conn.set("session:a", "alice").await.unwrap();
    let got: String = conn.get("session:a").await.unwrap();
    assert_eq!(got, "alice");
    let () = conn.pset_ex("session:b", "bob", 60_000).await.unwrap();
    let () = conn
        .hset_multiple("user:alice", &[("name", "Alice"), ("groups", "admins")])
        .await
        .unwrap();
    let _: usize = conn.sadd("sessions:alice", &["b", "a"]).await.unwrap();
    let _: usize = conn.zadd("expiry", "a", 2).await.unwrap();
    let _: usize = conn.zadd("expiry", "b", 1).await.unwrap();
    let _: usize = conn.rpush("log", &["one", "two"]).await.unwrap();

    // The calls so far: ours, and the helper's PING while it waited for redis to start (more
    // than one if a slow start made a try time out).
    let stats = server.commandstats().await;
    assert!(stats["ping"] >= 1, "{stats:?}");
    assert_eq!(stats.get("set"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("get"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("zadd"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("scan"), None, "{stats:?}");
    server.reset_stats().await;
    assert_eq!(server.commandstats().await.get("set"), None);

    assert_eq!(
        server.keys().await,
        [
            "expiry",
            "log",
            "session:a",
            "session:b",
            "sessions:alice",
            "user:alice"
        ]
    );
    let b = |s: &str| s.as_bytes().to_vec();
    assert_eq!(
        server.dump().await,
        vec![
            ("expiry".to_string(), vec![b("b"), b("1"), b("a"), b("2")]),
            ("log".to_string(), vec![b("one"), b("two")]),
            ("session:a".to_string(), vec![b("alice")]),
            ("session:b".to_string(), vec![b("bob")]),
            ("sessions:alice".to_string(), vec![b("a"), b("b")]),
            (
                "user:alice".to_string(),
                vec![b("groups"), b("admins"), b("name"), b("Alice")]
            ),
        ]
    );

    let ttl = server.ttl_ms("session:b").await;
    assert!(0 < ttl && ttl <= 60_000, "PTTL {ttl}");
    assert_eq!(server.ttl_ms("session:a").await, -1);
    assert_eq!(server.ttl_ms("absent").await, -2);
    // keys and dump read by SCAN, never by KEYS.
    let stats = server.commandstats().await;
    assert!(stats["scan"] >= 2, "{stats:?}");
    assert_eq!(stats.get("keys"), None, "{stats:?}");

    server.flush().await;
    assert!(server.keys().await.is_empty());

    // Dropping the server kills redis and removes its directory.
    let pid = server.pid().unwrap() as libc::pid_t;
    let dir = server.dir().to_path_buf();
    drop(server);
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "redis-server {pid} still runs after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[tokio::test]
async fn password_is_required() {
    let server = RedisServer::start(RedisOptions {
        password: Some("s3cret pass/word".to_string()),
        ..RedisOptions::default()
    })
    .await;
    assert_eq!(
        server.url_with_password(),
        format!(
            "redis://:s3cret%20pass%2Fword@127.0.0.1:{}/0",
            server.port()
        )
    );

    // Without the password the connection opens but every command is refused.
    let mut anonymous = connect(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap();
    let refused: redis::RedisResult<Option<String>> = anonymous.get("k").await;
    assert_eq!(
        refused.unwrap_err().code(),
        Some("NOAUTH"),
        "a command without AUTH"
    );

    // A wrong password is refused at AUTH, while connecting.
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
    let refused = connect(redis::Client::open(wrong).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "{refused}"
    );

    let mut conn = connect(redis::Client::open(server.url_with_password()).unwrap())
        .await
        .unwrap();
    let () = conn.set("k", "v").await.unwrap();
    assert_eq!(server.keys().await, ["k"]);
}

#[tokio::test]
async fn tls_with_the_test_ca() {
    let server = RedisServer::start(RedisOptions {
        tls: true,
        password: Some("pw".to_string()),
        ..RedisOptions::default()
    })
    .await;
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}/0", server.port())
    );
    let ca = std::fs::read(server.ca_pem_path().unwrap()).unwrap();
    let tls = |root_cert| redis::TlsCertificates {
        client_tls: None,
        root_cert,
    };

    let client = redis::Client::build_with_tls(server.url_with_password(), tls(Some(ca))).unwrap();
    let mut conn = connect(client).await.unwrap();
    let () = conn.set("over", "tls").await.unwrap();
    assert_eq!(
        server.dump().await,
        [("over".to_string(), vec![b"tls".to_vec()])]
    );

    // The system's roots do not trust the test CA.
    let client = redis::Client::build_with_tls(server.url_with_password(), tls(None)).unwrap();
    let untrusted = connect(client).await;
    assert!(
        untrusted.is_err(),
        "a certificate from the test CA was trusted without it"
    );

    // There is no plain-text port: redis:// to it gets no answer.
    let plain = format!("redis://:pw@127.0.0.1:{}/0", server.port());
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let answered = async {
        let mut conn = redis::Client::open(plain)
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    assert!(
        answered.await.is_err(),
        "plain text was answered on the TLS port"
    );
}

#[tokio::test]
async fn persisted_keys_survive_a_restart_on_the_same_port() {
    let mut server = RedisServer::start(RedisOptions {
        persist: true,
        ..RedisOptions::default()
    })
    .await;
    let port = server.port();
    let mut conn = server.client().await;
    let () = conn.pset_ex("session:x", "kept", 600_000).await.unwrap();
    let () = conn.hset("user:x", "name", "X").await.unwrap();
    let before = server.dump().await;

    server.stop().await;
    assert!(server.pid().is_none());
    assert!(
        server.dir().join("dump.rdb").exists(),
        "no RDB written on SIGTERM"
    );

    // Another process holding the port is waited out: the restart fails to bind, and starts
    // once the port is let go.
    let log = server.dir().join("redis.log");
    let squatter =
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port redis just left is free");
    let release = async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap()
            .contains("Address already in use")
        {
            assert!(
                Instant::now() < deadline,
                "redis never tried the taken port"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(squatter);
    };
    tokio::join!(server.start_again(), release);

    assert_eq!(server.port(), port);
    assert_eq!(server.dump().await, before);
    let ttl = server.ttl_ms("session:x").await;
    assert!(0 < ttl && ttl <= 600_000, "PTTL {ttl} after the restart");

    // Without persist the same restart comes back empty.
    let mut volatile = RedisServer::start(RedisOptions::default()).await;
    let () = volatile.client().await.set("k", "v").await.unwrap();
    volatile.start_again().await;
    assert!(volatile.keys().await.is_empty());
    assert!(!volatile.dir().join("dump.rdb").exists());
}

#[tokio::test]
async fn pause_stalls_commands_until_it_ends() {
    let server = RedisServer::start(RedisOptions::default()).await;
    let mut conn = server.client().await;
    let () = conn.set("k", "v").await.unwrap();

    let pause = Duration::from_secs(3);
    let paused_at = Instant::now();
    server.pause(pause).await;
    let stalled: Result<redis::RedisResult<String>, _> =
        tokio::time::timeout(Duration::from_millis(300), conn.get("k")).await;
    assert!(
        stalled.is_err(),
        "GET answered during the pause: {stalled:?}"
    );

    // The next command waits out the pause, then gets its answer. (Redis times the pause by
    // its millisecond wall clock, hence a little slack against our monotonic one.)
    let got: String = conn.get("k").await.unwrap();
    assert_eq!(got, "v");
    assert!(
        paused_at.elapsed() >= pause - Duration::from_millis(100),
        "answered after {:?}, within the {pause:?} pause",
        paused_at.elapsed()
    );
}
