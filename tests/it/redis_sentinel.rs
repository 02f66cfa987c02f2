//! Sessions in Redis behind Sentinel: real redis-server master and replica and three real
//! redis-sentinel processes on loopback ports. Sessiongate finds the master through the
//! sentinels; through a forced failover and through a killed master, requests with a session
//! get 503 (or succeed), never a logout and never a forward without a checked session, and
//! afterwards the sessions made before are good again on two replicas without a restart. A
//! stale sentinel (one that missed the failover) first in the list never has sessions
//! written to the old master, not even when that one is a master again (a split brain).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::redis::{
    MASTER_NAME, RedisOptions, RedisServer, Sentinels, eventually_within, sentinel_store,
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
        ready(proxy).await;
    }
    (upstream, a, b)
}

/// Waits until `proxy` is ready: the sentinels have named a master it reaches.
async fn ready(proxy: &Proxy) {
    eventually_within("the sentinels have named the master", WITHIN, || async {
        get(proxy.addr, "/.sessiongate/readyz", &[]).await.status == StatusCode::OK
    })
    .await;
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

/// The sentinel made stale by [`failover_with_a_stale_sentinel`].
const STALE: usize = 2;

/// Makes sentinel `i` stale, as one cut off from the others while they elected a new master:
/// it forgets the master and watches `old_master` again, so its configuration epoch starts
/// over at 0, and it neither hears the others nor is heard, so it never learns of the
/// failover. Sentinels share the newest configuration through hello messages, published on
/// the data nodes' `__sentinel__:hello` channel and straight to each other: this one's
/// SUBSCRIBE and PUBLISH to the data nodes go out under names no node knows, and a PUBLISH to
/// it is refused. One pipeline, so no hello arrives before it is deaf: a sentinel
/// MONITORing the old master again hears one and takes on the new master within a second.
async fn make_stale(sentinels: &Sentinels, i: usize, old_master: u16) {
    let () = redis::pipe()
        .cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-publish")
        .ignore()
        .cmd("SENTINEL")
        .arg("REMOVE")
        .arg(MASTER_NAME)
        .ignore()
        .cmd("SENTINEL")
        .arg("MONITOR")
        .arg(MASTER_NAME)
        .arg("127.0.0.1")
        .arg(old_master)
        .arg(2)
        .ignore()
        .cmd("SENTINEL")
        .arg("SET")
        .arg(MASTER_NAME)
        .arg("rename-command")
        .arg("SUBSCRIBE")
        .arg("STALE-SUBSCRIBE")
        .arg("rename-command")
        .arg("PUBLISH")
        .arg("STALE-PUBLISH")
        .ignore()
        .query_async(&mut sentinels.client(i).await)
        .await
        .unwrap();
}

/// Waits until sentinel `i` has accepted `more` more connections than now. Sessiongate
/// connects to every sentinel afresh for each discovery, and makes its discoveries one
/// after another (every 5 s at least): its second connection from now means one whole
/// discovery made after now. Nothing else connects meanwhile: the other sentinels and
/// sessiongate's +switch-master listener stay connected, and the count is read on one
/// connection held open.
async fn wait_for_discoveries(sentinels: &Sentinels, i: usize, more: u64) {
    let mut conn = sentinels.client(i).await;
    let since = accepted(&mut conn).await;
    let deadline = Instant::now() + WITHIN;
    while accepted(&mut conn).await < since + more {
        assert!(
            Instant::now() < deadline,
            "sessiongate did not ask sentinel {i} {more} times within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many connections the server on `conn` has accepted since it started.
async fn accepted(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO stats without total_connections_received:\n{stats}"))
}

/// INFO `section` of `node`.
async fn info(node: &RedisServer, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut node.client().await)
        .await
        .unwrap()
}

/// The session keys on `node`.
async fn sessions_on(node: &RedisServer) -> BTreeSet<String> {
    node.keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("sessiongate:session:"))
        .collect()
}

/// How many clients of `node` listen for ended sessions: one per sessiongate using it.
async fn listeners(node: &RedisServer) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("sessiongate:ended")
        .query_async(&mut node.client().await)
        .await
        .unwrap();
    n
}

/// The commands `node` ran since its stats were reset that only sessiongate sends (its
/// session scripts and reads): the replication stream, the sentinels and these helpers send
/// none of them.
async fn used_by_sessiongate(node: &RedisServer) -> Vec<String> {
    node.commandstats()
        .await
        .into_keys()
        .filter(|c| c.starts_with("eval") || c.starts_with("script") || c == "hmget")
        .collect()
}

/// A cluster after a forced failover (the old master now a replica of the new one), with
/// sentinel [`STALE`] then made stale and first in sessiongate's list; sessiongate `a`
/// started before the failover, with a session made on it then.
struct Stale {
    cluster: Cluster,
    _upstream: Upstream,
    toml: String,
    a: Proxy,
    cookie: String,
}

async fn failover_with_a_stale_sentinel() -> Stale {
    let cluster = cluster(None, None).await;
    let addrs = cluster.sentinels.addrs();
    // The stale one first: asked first, and the one whose +switch-master sessiongate hears.
    let list = [addrs[STALE].clone(), addrs[0].clone(), addrs[1].clone()];
    let upstream = start_upstream().await;
    let toml = config_toml(upstream.addr, "", &sentinel_store(&list, "", ""));
    let a = start_proxy_with(&toml).await;
    ready(&a).await;
    let cookie = login(&a, USER, PASSWORD).await;

    let (old, new) = (&cluster.master, &cluster.replica);
    cluster.sentinels.force_failover().await;
    cluster.sentinels.wait_for_master(new.port()).await;
    eventually_within("the old master follows the new one", WITHIN, || async {
        old.role().await == ("slave".to_string(), true)
    })
    .await;
    assert_eq!(
        cluster.sentinels.master_config(STALE).await,
        (1, new.port()),
        "the failover is the first, at epoch 1"
    );
    make_stale(&cluster.sentinels, STALE, old.port()).await;
    // Its epoch starts over; the others still name the new master at the failover's epoch.
    assert_eq!(
        cluster.sentinels.master_config(STALE).await,
        (0, old.port())
    );
    for i in [0, 1] {
        assert_eq!(cluster.sentinels.master_config(i).await, (1, new.port()));
    }
    // `a` has since made a whole discovery with the stale answer in it.
    wait_for_discoveries(&cluster.sentinels, STALE, 2).await;
    // Still stale: it heard nothing in the meantime.
    assert_eq!(
        cluster.sentinels.master_config(STALE).await,
        (0, old.port()),
        "{}",
        cluster.sentinels.logs()
    );
    // Requests got 503 while the failover was under way (the failover tests check those);
    // now `a` is back, and every request from here on must succeed.
    eventually_within("the session works on a again", WITHIN, || async {
        status_with(&a, &cookie).await == StatusCode::OK
    })
    .await;
    Stale {
        cluster,
        _upstream: upstream,
        toml,
        a,
        cookie,
    }
}

/// Every request with each of `cookies` to each of `proxies` succeeds as the session's user.
async fn all_succeed(proxies: &[&Proxy], cookies: &[&String]) {
    for proxy in proxies {
        for cookie in cookies {
            let seen = probe(proxy.addr, cookie).await;
            assert_eq!(seen.status, StatusCode::OK);
            assert_eq!(seen.forwarded_user, vec![USER]);
        }
    }
}

/// A logout on `on` is refused at once there and within a second on `other`.
async fn logout_is_refused_on_the_other(on: &Proxy, other: &Proxy, cookie: &str) {
    let res = post_form(on, "/.sessiongate/logout", cookie, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let ended = Instant::now();
    assert_eq!(status_with(on, cookie).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep_until((ended + Duration::from_secs(1)).into()).await;
    assert_eq!(status_with(other, cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_stale_sentinel_first_in_the_list_never_gets_sessions_written_to_the_old_master() {
    let Stale {
        cluster,
        toml,
        a,
        cookie,
        ..
    } = failover_with_a_stale_sentinel().await;
    let (old, new) = (&cluster.master, &cluster.replica);
    for node in [old, new] {
        node.reset_stats().await;
    }
    // `b` starts with the stale sentinel already first in its list.
    let b = start_proxy_with(&toml).await;
    ready(&b).await;
    let on_a = login(&a, USER, PASSWORD).await;
    let on_b = login(&b, USER, PASSWORD).await;
    all_succeed(&[&a, &b], &[&cookie, &on_a, &on_b]).await;

    // Written to the new master, a master, and from it replicated to the old one.
    assert_eq!(new.role().await.0, "master");
    let written = sessions_on(new).await;
    assert!(written.len() >= 3, "{written:?}");
    eventually_within("the sessions reach the old master", WITHIN, || async {
        sessions_on(old).await.is_superset(&written)
    })
    .await;
    // Both sessiongates use the new master and never the old one: a write there would have
    // been refused (READONLY).
    eventually_within("both listen on the new master", WITHIN, || async {
        listeners(new).await == 2
    })
    .await;
    assert_eq!(listeners(old).await, 0);
    assert!(!used_by_sessiongate(new).await.is_empty());
    assert_eq!(used_by_sessiongate(old).await, Vec::<String>::new());
    let errors = info(old, "errorstats").await;
    assert!(!errors.contains("READONLY"), "{errors}");

    logout_is_refused_on_the_other(&b, &a, &on_a).await;
    logout_is_refused_on_the_other(&a, &b, &cookie).await;
    assert_eq!(status_with(&a, &on_b).await, StatusCode::OK);
    // The stale sentinel stayed stale throughout.
    assert_eq!(
        cluster.sentinels.master_config(STALE).await,
        (0, old.port())
    );
}

#[tokio::test]
async fn in_a_split_brain_a_stale_sentinel_never_sends_sessiongate_to_the_old_master() {
    let Stale {
        cluster,
        toml,
        a,
        cookie,
        ..
    } = failover_with_a_stale_sentinel().await;
    let (old, new) = (&cluster.master, &cluster.replica);
    // A split brain: the old master is a master again, with every session it had, and stays
    // one because the sentinels that know better cannot reach it to make it a replica (their
    // REPLICAOF goes out under a name it does not know). The stale sentinel names it, a
    // master at an older epoch; the others name the new master.
    for i in [0, 1] {
        let () = redis::cmd("SENTINEL")
            .arg("SET")
            .arg(MASTER_NAME)
            .arg("rename-command")
            .arg("SLAVEOF")
            .arg("CUT-OFF-SLAVEOF")
            .query_async(&mut cluster.sentinels.client(i).await)
            .await
            .unwrap();
    }
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut old.client().await)
        .await
        .unwrap();
    assert_eq!(old.role().await.0, "master");
    let b = start_proxy_with(&toml).await;
    ready(&b).await;
    eventually_within("both listen on the new master", WITHIN, || async {
        listeners(new).await == 2
    })
    .await;
    all_succeed(&[&a, &b], &[&cookie]).await;

    // Now the new master refuses every new connection (its clients all reconnecting at once
    // after a failover fill maxclients): the connections sessiongate has keep working, but
    // it cannot check that the node the newest epoch names is a master. The old master
    // answers that it is one.
    let on_old = sessions_on(old).await;
    let on_new = sessions_on(new).await;
    old.reset_stats().await;
    let mut admin = new.client().await;
    let maxclients = |n: u64| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(n)
            .clone()
    };
    let () = maxclients(1).query_async(&mut admin).await.unwrap();
    // Both sessiongates ask: four connections are two of one of them at least, so one whole
    // discovery made with the new master refusing.
    wait_for_discoveries(&cluster.sentinels, STALE, 4).await;
    let on_a = login(&a, USER, PASSWORD).await;
    let on_b = login(&b, USER, PASSWORD).await;
    all_succeed(&[&a, &b], &[&cookie, &on_a, &on_b]).await;
    let () = maxclients(10000).query_async(&mut admin).await.unwrap();

    // Both sessions went to the new master; the old one got nothing from sessiongate.
    assert_eq!(old.role().await.0, "master", "the split brain lasted");
    assert_eq!(
        sessions_on(old).await,
        on_old,
        "sessions were written to the old master, which only the stale sentinel names, at an older epoch"
    );
    assert_eq!(used_by_sessiongate(old).await, Vec::<String>::new());
    let written = sessions_on(new).await;
    assert_eq!(written.difference(&on_new).count(), 2, "{written:?}");
    assert_eq!(listeners(old).await, 0);

    logout_is_refused_on_the_other(&a, &b, &on_b).await;
    assert_eq!(status_with(&b, &on_a).await, StatusCode::OK);
    assert_eq!(
        cluster.sentinels.master_config(STALE).await,
        (0, old.port())
    );
}
