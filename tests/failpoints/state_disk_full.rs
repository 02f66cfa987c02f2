//! A full disk under `session.state_dir`, made with the `state-write` fail point (every write
//! and sync of the state files fails with ENOSPC): sessions keep working from memory, readyz
//! and the metrics say the store is degraded, the warning is logged once, and when writes
//! succeed again the store writes everything out, so that a restart keeps what was done while
//! the disk was full, a logout included. The `state-snapshot` fail point holds the keeper
//! between its new log and its snapshot, to fill the disk again in that gap.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::redis::eventually_within;
use crate::common::*;
use fail::FailScenario;
use http::StatusCode;
use sessiongate::Config;

const READYZ: &str = "/.sessiongate/readyz";
const WARNING: &str = "session.state_dir: cannot write";
/// How long the keeper's retries (one every 5 s) are given to happen.
const RETRIES: Duration = Duration::from_secs(60);

/// What this process logs from the first call on. The warning comes from the store's writer
/// and keeper threads, which a subscriber scoped to the test's thread (`Captured::install`)
/// does not see; a process-wide one is fine in this binary, whose tests run one at a time.
fn process_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test in this binary sets a global subscriber");
        logs
    })
}

/// `/metrics` of a proxy on its own listener, stopped before a restart (it holds the app).
struct MetricsListener {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl MetricsListener {
    async fn start(proxy: &Proxy) -> MetricsListener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sessiongate::serve_metrics(
            listener,
            proxy.app.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        MetricsListener { addr, stop, task }
    }

    /// The value of the sample `name` (no labels) in a scrape.
    async fn get(&self, name: &str) -> f64 {
        let res = get(self.addr, "/metrics", &[]).await;
        assert_eq!(res.status, StatusCode::OK);
        let text = res.text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// readyz's answer, which must be a 200 whether or not the store is degraded.
async fn ready_text(proxy: &Proxy) -> String {
    let res = get(proxy.addr, READYZ, &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.text().trim_end().to_string()
}

/// The status of a request with `cookie`, and the user the upstream was told of if it got it.
async fn forwarded_as(proxy: &Proxy, cookie: &str) -> (StatusCode, Vec<String>) {
    let res = get(proxy.addr, "/", &[("cookie", cookie)]).await;
    let user = match res.status {
        StatusCode::OK => res.upstream_header("x-forwarded-user"),
        _ => Vec::new(),
    };
    (res.status, user)
}

fn ok_as(user: &str) -> (StatusCode, Vec<String>) {
    (StatusCode::OK, vec![user.to_string()])
}

#[tokio::test]
async fn a_full_disk_degrades_the_store_without_losing_sessions_and_it_catches_up() {
    let scenario = FailScenario::setup();
    let logs = process_logs();
    let state = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let config = Config::from_toml(&with_session(
        &team_config(upstream.addr, "", ""),
        &format!("state_dir = '{}'", state.path().display()),
    ))
    .unwrap();
    let proxy = start_proxy_from(config.clone()).await;
    let metrics = MetricsListener::start(&proxy).await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let alice_leaving = login(&proxy, USER, PASSWORD).await;
    assert_eq!(ready_text(&proxy).await, "ready");
    assert_eq!(metrics.get("sessiongate_state_degraded").await, 0.0);
    assert_eq!(
        metrics.get("sessiongate_state_write_errors_total").await,
        0.0
    );
    let logged_before = logs.text().len();

    fail::cfg("state-write", "return").unwrap();
    let full_since = Instant::now();
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    let seen = upstream.requests();
    assert_eq!(forwarded_as(&proxy, &bob).await, ok_as("bob"));
    assert_eq!(forwarded_as(&proxy, &alice).await, ok_as(USER));
    assert_eq!(forwarded_as(&proxy, &alice_leaving).await, ok_as(USER));
    assert_eq!(upstream.requests(), seen + 3);
    // A logout waits for its record to be synced: with the disk full it is answered anyway.
    let res = post_form(&proxy, "/.sessiongate/logout", &alice_leaving, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(
        status_with(&proxy, &alice_leaving).await,
        StatusCode::UNAUTHORIZED
    );

    // The logout's sync came back after the failed write, so the store already says so.
    let ready = ready_text(&proxy).await;
    assert!(
        ready.starts_with("ready, degraded: ") && ready.contains("No space left"),
        "{ready}"
    );
    assert_eq!(metrics.get("sessiongate_state_degraded").await, 1.0);
    // Many failed writes: sign-ins and logouts while full, and the keeper's retries (one
    // every 5 s), until at least three writes have failed.
    for _ in 0..10 {
        let extra = login(&proxy, "carol", CAROL_PASSWORD).await;
        let res = post_form(&proxy, "/.sessiongate/logout", &extra, &[]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
    }
    eventually_within("three failed writes", RETRIES, || async {
        metrics.get("sessiongate_state_write_errors_total").await >= 3.0
    })
    .await;
    // One warning a minute at most, however many writes fail.
    let warnings = logs.text()[logged_before..].matches(WARNING).count() as u64;
    let minutes = full_since.elapsed().as_secs() / 60;
    assert!(
        (1..=1 + minutes).contains(&warnings),
        "{warnings} warnings in {minutes} full minutes: {}",
        &logs.text()[logged_before..]
    );
    assert_eq!(forwarded_as(&proxy, &bob).await, ok_as("bob"));

    // Space again: the keeper's next retry writes everything out.
    fail::remove("state-write");
    eventually_within("readyz says plain ready", RETRIES, || async {
        ready_text(&proxy).await == "ready"
    })
    .await;
    assert_eq!(metrics.get("sessiongate_state_degraded").await, 0.0);
    assert!(
        logs.text()[logged_before..].contains("writes succeed again"),
        "{}",
        &logs.text()[logged_before..]
    );

    metrics.stop().await;
    let proxy = restart(proxy, config).await;
    assert_eq!(
        forwarded_as(&proxy, &bob).await,
        ok_as("bob"),
        "the session made while the disk was full is kept"
    );
    assert_eq!(forwarded_as(&proxy, &alice).await, ok_as(USER));
    assert_eq!(
        status_with(&proxy, &alice_leaving).await,
        StatusCode::UNAUTHORIZED,
        "the logout made while the disk was full stays"
    );
    assert_eq!(ready_text(&proxy).await, "ready");
    // The retries' logs, made but never written, went with the snapshot that replaced them.
    let logs_on_disk = std::fs::read_dir(state.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("log.")
        })
        .count();
    assert_eq!(logs_on_disk, 1);
    scenario.teardown();
}

/// Whether `dir` holds a log with nothing but its header: one the writer has just opened.
fn has_a_fresh_log(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().starts_with("log.") && e.metadata().unwrap().len() == 8
    })
}

/// The disk fills again after the keeper opened its new log and before its snapshot is done:
/// the failed write may be newer than the snapshot and the log is no longer written, so the
/// store stays degraded until a later snapshot, and nothing done after is lost.
#[tokio::test]
async fn a_write_that_fails_during_the_catch_up_snapshot_keeps_the_store_degraded() {
    let scenario = FailScenario::setup();
    let state = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let config = Config::from_toml(&with_session(
        &team_config(upstream.addr, "", ""),
        &format!("state_dir = '{}'", state.path().display()),
    ))
    .unwrap();
    let proxy = start_proxy_from(config.clone()).await;
    let alice = login(&proxy, USER, PASSWORD).await;
    // Written before the disk fills, so that the only log with nothing but its header is the
    // keeper's new one below.
    eventually_within("alice's session on disk", RETRIES, || async {
        !has_a_fresh_log(state.path())
    })
    .await;

    fail::cfg("state-write", "return").unwrap();
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    eventually_within("degraded", RETRIES, || async {
        ready_text(&proxy).await != "ready"
    })
    .await;
    // Space again, but the keeper is held once its new log is open, before the snapshot.
    fail::cfg("state-snapshot", "pause").unwrap();
    fail::remove("state-write");
    eventually_within("the keeper opens a new log", RETRIES, || async {
        has_a_fresh_log(state.path())
    })
    .await;
    // Full again for one logout, whose record the new log does not get.
    fail::cfg("state-write", "return").unwrap();
    let res = post_form(&proxy, "/.sessiongate/logout", &alice, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    fail::remove("state-write");
    fail::remove("state-snapshot");

    eventually_within("readyz says plain ready", RETRIES, || async {
        ready_text(&proxy).await == "ready"
    })
    .await;
    // Made after the store says it writes again: on disk, however the catch-up went.
    let carol = login(&proxy, "carol", CAROL_PASSWORD).await;
    let proxy = restart(proxy, config).await;
    assert_eq!(forwarded_as(&proxy, &carol).await, ok_as("carol"));
    assert_eq!(forwarded_as(&proxy, &bob).await, ok_as("bob"));
    assert_eq!(status_with(&proxy, &alice).await, StatusCode::UNAUTHORIZED);
    scenario.teardown();
}
