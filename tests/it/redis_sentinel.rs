//! Sessions in Redis behind Sentinel: real redis-server master and replica and three real
//! redis-sentinel processes on loopback ports. Sessiongate finds the master through the
//! sentinels; through a forced failover and through a killed master, requests with a session
//! get 503 (or succeed), never a logout and never a forward without a checked session, and
//! afterwards the sessions made before are good again on two replicas without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::redis::{
    RedisOptions, RedisServer, Sentinels, eventually_within, sentinel_store,
};
use crate::common::*;
use http::StatusCode;

/// Generous: a failover takes a few seconds, a loaded machine may make it many more.
const WITHIN: Duration = Duration::from_secs(60);

/// A master, its replica (in sync) and three sentinels watching them.
struct Cluster {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Sentinels,
}

async fn cluster(password: Option<&str>, sentinel_password: Option<&str>) -> Cluster {
    let options = RedisOptions {
        password: password.map(str::to_string),
        ..RedisOptions::default()
    };
    let master = RedisServer::start(options.clone()).await;
    let replica = RedisServer::start(RedisOptions {
        replica_of: Some(master.port()),
        ..options
    })
    .await;
    eventually_within("the replica is in sync", WITHIN, || async {
        replica.role().await == ("slave".to_string(), true)
    })
    .await;
    let sentinels = Sentinels::start(master.port(), password, sentinel_password).await;
    Cluster {
        master,
        replica,
        sentinels,
    }
}

/// Two sessiongate replicas on the sentinels, `redis` lines added to `[redis]`.
async fn replicas(cluster: &Cluster, redis: &str) -> (Upstream, Proxy, Proxy) {
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &sentinel_store(&cluster.sentinels.addrs(), "", redis),
    );
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;
    for proxy in [&a, &b] {
        eventually_within("the sentinels have named the master", WITHIN, || async {
            get(proxy.addr, "/.sessiongate/readyz", &[]).await.status == StatusCode::OK
        })
        .await;
    }
    (upstream, a, b)
}

/// What one request with a session got: its status, Retry-After, and the user the upstream
/// was told (empty when not forwarded).
struct Seen {
    status: StatusCode,
    retry_after: Option<String>,
    forwarded_user: Vec<String>,
}

async fn probe(addr: std::net::SocketAddr, cookie: &str) -> Seen {
    let res = get(addr, "/whoami", &[("cookie", cookie)]).await;
    Seen {
        status: res.status,
        retry_after: res.header("retry-after").map(str::to_string),
        forwarded_user: if res.status == StatusCode::OK {
            res.upstream_header("x-forwarded-user")
        } else {
            Vec::new()
        },
    }
}

/// Requests with `cookie` to `addr` one after another until `stop`.
fn keep_asking(
    addr: std::net::SocketAddr,
    cookie: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            seen.push(probe(addr, &cookie).await);
        }
        seen
    })
}

/// Every request either succeeded as the session's user or was refused with 503 and
/// Retry-After: never 401/302 (a logout), never another status.
fn assert_only_ok_or_unavailable(seen: &[Seen]) {
    for s in seen {
        match s.status {
            StatusCode::OK => assert_eq!(s.forwarded_user, vec![USER]),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(s.retry_after.as_deref(), Some("1"))
            }
            other => panic!("a request with a valid session got {other} during the failover"),
        }
    }
}

#[derive(Clone, Copy)]
enum Failover {
    /// SENTINEL FAILOVER: the master stays up and becomes a replica.
    Forced,
    /// SIGKILL to the master: the sentinels notice it is down and promote the replica.
    Killed,
}

/// The failover test for both ways: sessions made and replicated before, requests under way
/// throughout, both replicas agreeing before and after, and a logout after it refused on the
/// other replica within a second.
async fn sessions_survive(how: Failover, cluster: &mut Cluster, redis: &str) {
    let (upstream, a, b) = replicas(cluster, redis).await;
    let cookie = login(&a, USER, PASSWORD).await;
    let to_end = login(&b, USER, PASSWORD).await;
    for proxy in [&a, &b] {
        for c in [&cookie, &to_end] {
            assert_eq!(status_with(proxy, c).await, StatusCode::OK);
        }
    }
    // Both sessions are on the replica before the failover (a write the replica never got
    // is lost in any failover; this one is not).
    let on_master = cluster.master.keys().await;
    assert!(on_master.len() >= 2, "{on_master:?}");
    eventually_within("the sessions reach the replica", WITHIN, || async {
        let on_replica = cluster.replica.keys().await;
        on_master.iter().all(|k| on_replica.contains(k))
    })
    .await;

    let forwarded_before = upstream.requests();
    let stop = Arc::new(AtomicBool::new(false));
    let load = [
        keep_asking(a.addr, cookie.clone(), stop.clone()),
        keep_asking(b.addr, cookie.clone(), stop.clone()),
    ];
    match how {
        Failover::Forced => cluster.sentinels.force_failover().await,
        Failover::Killed => cluster.master.kill(),
    }
    cluster
        .sentinels
        .wait_for_master(cluster.replica.port())
        .await;
    // Working again on both, without a restart.
    let mut seen = Vec::new();
    let deadline = Instant::now() + WITHIN;
    loop {
        let (on_a, on_b) = (probe(a.addr, &cookie).await, probe(b.addr, &cookie).await);
        let back = on_a.status == StatusCode::OK && on_b.status == StatusCode::OK;
        seen.extend([on_a, on_b]);
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions did not work again within 60 s of the failover:\n{}",
            cluster.sentinels.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        seen.extend(task.await.unwrap());
    }
    assert_only_ok_or_unavailable(&seen);
    let succeeded = seen.iter().filter(|s| s.status == StatusCode::OK).count();
    assert_eq!(
        upstream.requests() - forwarded_before,
        succeeded,
        "only the requests that succeeded reached the upstream"
    );

    // Both replicas agree on both sessions after it, as before.
    for proxy in [&a, &b] {
        for c in [&cookie, &to_end] {
            assert_eq!(status_with(proxy, c).await, StatusCode::OK);
        }
    }
    // New sessions are written to the new master.
    let before = cluster.replica.keys().await.len();
    let fresh = login(&b, USER, PASSWORD).await;
    assert!(cluster.replica.keys().await.len() > before);
    assert_eq!(status_with(&a, &fresh).await, StatusCode::OK);

    // A logout on one is refused at once there and within a second on the other.
    let res = post_form(&a, "/.sessiongate/logout", &to_end, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let ended = Instant::now();
    assert_eq!(status_with(&a, &to_end).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep_until((ended + Duration::from_secs(1)).into()).await;
    assert_eq!(status_with(&b, &to_end).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&b, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn sessions_work_through_the_sentinels_and_both_replicas_agree() {
    let cluster = cluster(None, None).await;
    let (upstream, a, b) = replicas(&cluster, "").await;
    let cookie = login(&a, USER, PASSWORD).await;
    let res = get(b.addr, "/whoami", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert_eq!(upstream.requests(), 1);
    // Written to the master the sentinels name.
    assert!(
        cluster
            .master
            .keys()
            .await
            .iter()
            .any(|k| k.starts_with("sessiongate:session:")),
        "{:?}",
        cluster.master.keys().await
    );

    let res = post_form(&b, "/.sessiongate/logout", &cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let ended = Instant::now();
    assert_eq!(status_with(&b, &cookie).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep_until((ended + Duration::from_secs(1)).into()).await;
    assert_eq!(status_with(&a, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_forced_failover_keeps_every_session_and_never_logs_anyone_out() {
    let mut cluster = cluster(None, None).await;
    sessions_survive(Failover::Forced, &mut cluster, "").await;
    // The old master now follows the new one.
    eventually_within("the old master becomes a replica", WITHIN, || async {
        cluster.master.role().await.0 == "slave"
    })
    .await;
}

#[tokio::test]
async fn a_killed_master_is_replaced_and_sessions_come_back_with_passwords_on_both_sides() {
    let mut cluster = cluster(Some("data-pass word"), Some("sentinel-secret")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("redis-password");
    let sentinel = dir.path().join("sentinel-password");
    std::fs::write(&data, "data-pass word\n").unwrap();
    std::fs::write(&sentinel, "sentinel-secret\n").unwrap();
    let redis = format!(
        "password_file = {:?}\nsentinel_password_file = {:?}\n",
        data.display().to_string(),
        sentinel.display().to_string()
    );
    sessions_survive(Failover::Killed, &mut cluster, &redis).await;
}

#[tokio::test]
async fn before_any_master_is_known_requests_get_503_not_a_logout() {
    // A session made through the sentinels, then a sessiongate asking them for a master
    // name they do not monitor: they answer, and name no master.
    let cluster = cluster(None, None).await;
    let (upstream, a, _b) = replicas(&cluster, "").await;
    let cookie = login(&a, USER, PASSWORD).await;
    let toml = config_toml(
        upstream.addr,
        "",
        &sentinel_store(&cluster.sentinels.addrs(), "", "").replace("mymaster", "othermaster"),
    );
    let proxy = start_proxy_with(&toml).await;
    let res = get(proxy.addr, "/whoami", &[("cookie", &cookie)]).await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        res.text()
    );
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(upstream.requests(), 0);
    // The sentinels' answer was the reason, not the session.
    assert_eq!(status_with(&a, &cookie).await, StatusCode::OK);
}
