//! Memory per live session, and a filled proxy for the sweep-stall check, on the real proxy:
//! `sessiongate::serve` on a loopback listener (one worker, as on one pinned core), the real
//! session store, real HTTP requests through it.
//!
//!     cargo bench --bench sessions_rss                  # RSS at 0, 10k, 100k, 1M live sessions
//!     cargo bench --bench sessions_rss -- --json rss.json --upstream http://127.0.0.1:18190
//!     cargo bench --bench sessions_rss -- --mode serve --sessions 1000000 ...   (benches/load.sh)
//!
//! Sessions go straight into the store with `app.gate.sessions().create` (a million argon2 logins
//! would take hours); the cookie, the lookup and the proxying that check them are the real path.
//! Without `--upstream` a small hyper upstream runs in this process (it echoes the identity
//! header, so the check also proves the right user was forwarded).
//!
//! `--mode serve` fills the store, prints one JSON line `{"event":"ready",...}` with the port and
//! a logged-in cookie, then one line when the sweeper starts removing the expired sessions and
//! one when it is done (wall-clock times), and exits after `--exit-after-s`.
//! `benches/tools/stall.py` drives oha against it and cuts the latency record at those times.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use sessiongate::session::browser::Browser;
use sessiongate::session::{Account, Owner, SessionId, SessionMeta};
use sessiongate::{App, Config};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type Res<T> = Result<T, Box<dyn Error>>;

#[path = "common/process.rs"]
mod process;
use process::rss_kib;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// RSS as the store grows through `--counts`.
    Rss,
    /// Fill `--sessions`, serve, and report when the sweeper removes them.
    Serve,
}

/// Lenient like criterion's own parser: `cargo bench -- --quick` or `--noplot` reach every
/// bench binary, and flags meant for criterion must not make this one fail.
#[derive(Parser)]
#[command(ignore_errors = true)]
struct Args {
    #[arg(long, value_enum, default_value = "rss")]
    mode: Mode,
    /// Live session counts to measure at (cumulative: the store grows from one to the next).
    /// Default 0,10000,100000,1000000 (0,1000 when run as a test, without `--bench`).
    #[arg(long, value_delimiter = ',')]
    counts: Option<Vec<usize>>,
    /// Upstream URL (e.g. the nginx that benches/load.sh starts); in-process echo when absent.
    #[arg(long)]
    upstream: Option<String>,
    /// Write the results here as JSON (rss mode).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Serve mode: sessions to fill the store with.
    #[arg(long, default_value_t = 1_000_000)]
    sessions: usize,
    /// Serve mode: `session.idle_timeout` (the filled sessions are never touched again).
    #[arg(long, default_value_t = 8)]
    idle_timeout_s: u64,
    /// Serve mode: `session.sweep_interval`; the first sweep runs this long after startup.
    #[arg(long, default_value_t = 25)]
    sweep_interval_s: u64,
    /// Serve mode: exit this long after startup.
    #[arg(long, default_value_t = 40)]
    exit_after_s: u64,
    /// Passed by `cargo bench`; without it (`cargo test --benches`) only a quick check runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// `cargo bench -- --list`: print this bench's name.
    #[arg(long, hide = true)]
    list: bool,
    /// A `cargo bench` name filter: this bench runs only if the filter matches its name.
    filter: Option<String>,
}

const NAME: &str = "sessions_rss";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// A cheap but real argon2id hash: no login happens here, the config just needs a user.
const HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw";
/// Sessions belong to this many distinct configured users (`user000`...), as after many real
/// logins, besides `alice`.
const USERS: usize = 200;

fn main() -> Res<()> {
    let args = Args::parse();
    if let Some(f) = &args.filter
        && !NAME.contains(f.as_str())
    {
        return Ok(());
    }
    if args.list {
        println!("{NAME}: bench");
        return Ok(());
    }
    let (upstream, _upstream_thread) = match &args.upstream {
        Some(url) => (url.clone(), None),
        None => {
            let (addr, thread) = start_echo_upstream()?;
            (format!("http://{addr}"), Some(thread))
        }
    };
    let echo = args.upstream.is_none();
    match args.mode {
        Mode::Rss => rss(&args, &upstream, echo),
        Mode::Serve => serve_filled(&args, &upstream),
    }
}

fn config(upstream: &str, idle: Duration, sweep: Duration) -> Res<Config> {
    Ok(Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[upstream]
url = "{upstream}"

[session]
secret = "{SECRET}"
secure = false
idle_timeout = "{idle}s"
absolute_timeout = "24h"
sweep_interval = "{sweep}s"

[[users]]
name = "alice"
password_hash = "{HASH}"
{users}"#,
        idle = idle.as_secs(),
        sweep = sweep.as_secs(),
        users = user_names()
            .iter()
            .map(|name| format!("\n[[users]]\nname = \"{name}\"\npassword_hash = \"{HASH}\"\n"))
            .collect::<String>(),
    ))?)
}

/// The proxy on its own thread and current-thread runtime, as one worker of `sessiongate::run`.
struct Proxy {
    app: Arc<App>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    fn start(config: Config) -> Res<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = App::new(config).expect("the session store can be set up");
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let served = app.clone();
        let thread = std::thread::Builder::new()
            .name("sessiongate-worker-0".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    sessiongate::serve(listener, served, async move {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        Ok(Proxy {
            app,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The session owner for a configured user, looked up by name as a login does.
    fn user(&self, name: &str) -> Owner {
        self.app
            .gate
            .policy()
            .user(name)
            .expect("a configured user")
            .owner()
    }

    fn cookie(&self, id: &SessionId) -> String {
        format!(
            "{}={}",
            self.app.config.session.cookie_name,
            self.app.signer.sign(id)
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An upstream that answers 200 with the identity header it received.
fn start_echo_upstream() -> Res<(SocketAddr, JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(|req: Request<Incoming>| async move {
                                let user = req
                                    .headers()
                                    .get("x-forwarded-user")
                                    .map(|v| v.as_bytes().to_vec())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(user))))
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })?;
    Ok((addr, thread))
}

/// One GET through the proxy with `cookie`; the status and body.
async fn get(addr: SocketAddr, cookie: &str) -> Res<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", addr.to_string())
        .header("cookie", cookie)
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The session's request must reach the upstream (200), as `user` when the upstream echoes it.
fn verify(
    rt: &tokio::runtime::Runtime,
    proxy: &Proxy,
    id: &SessionId,
    user: &str,
    echo: bool,
) -> Res<()> {
    let (status, body) = rt.block_on(get(proxy.addr, &proxy.cookie(id)))?;
    if status != StatusCode::OK || (echo && body != user.as_bytes()) {
        return Err(format!(
            "session check through the proxy failed: {status}, body {:?}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

/// Where the bench's sessions say they started (the sessions page is not measured here).
const META: SessionMeta = SessionMeta {
    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    browser: Browser::UNKNOWN,
};

fn user_names() -> Vec<String> {
    (0..USERS).map(|i| format!("user{i:03}")).collect()
}

/// Adds sessions until the store holds `target` (plus any already there); the last one's id.
/// Each session's user is looked up by name, the way a login does.
fn fill(proxy: &Proxy, names: &[String], from: usize, to: usize) -> Option<(SessionId, usize)> {
    let mut last = None;
    for i in from..to {
        let name = &names[i % names.len()];
        let user = proxy.user(name);
        last = Some((
            proxy
                .app
                .gate
                .sessions()
                .memory()
                .expect("the bench runs the in-memory store")
                .create(user, &META)
                .expect("the in-memory store creates sessions"),
            i % names.len(),
        ));
    }
    last
}

fn rss(args: &Args, upstream: &str, echo: bool) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hour = Duration::from_secs(3600);
    let proxy = Proxy::start(config(upstream, hour, hour)?)?;
    let names = user_names();
    // One session and one request first, so connection buffers, the upstream pool and the
    // runtime exist before the baseline: the deltas are the sessions' own cost.
    let probe = proxy
        .app
        .gate
        .sessions()
        .memory()
        .expect("the bench runs the in-memory store")
        .create(proxy.user("user000"), &META)
        .expect("the in-memory store creates sessions");
    verify(&rt, &proxy, &probe, "user000", echo)?;
    let base = rss_kib()?;
    println!(
        "sessions_rss: RSS of a process running the proxy (1 worker) vs live sessions; entry = {} B key + {} B session",
        std::mem::size_of::<SessionId>(),
        std::mem::size_of::<sessiongate::session::memory::Session>()
    );
    println!(
        "{:>10} {:>10} {:>12} {:>14} {:>9}",
        "sessions", "rss_MiB", "delta_MiB", "bytes/session", "create_s"
    );
    let counts = match (&args.counts, args.bench) {
        (Some(c), _) => c.clone(),
        (None, true) => vec![0, 10_000, 100_000, 1_000_000],
        (None, false) => vec![0, 1_000],
    };
    let mut rows = Vec::new();
    let mut have = 0usize;
    for &target in &counts {
        let t = Instant::now();
        let last = fill(&proxy, &names, have, target.max(have));
        let create_s = t.elapsed().as_secs_f64();
        have = have.max(target);
        if let Some((id, user)) = last {
            verify(&rt, &proxy, &id, &names[user], echo)?;
        }
        let now = rss_kib()?;
        let delta = now.saturating_sub(base);
        let per = if have > 0 {
            delta as f64 * 1024.0 / have as f64
        } else {
            0.0
        };
        println!(
            "{:>10} {:>10.1} {:>12.1} {:>14.0} {:>9.2}",
            have,
            now as f64 / 1024.0,
            delta as f64 / 1024.0,
            per,
            create_s
        );
        rows.push(json!({
            "sessions": have,
            "rss_kib": now,
            "delta_kib": delta,
            "bytes_per_session": per,
            "create_s": create_s,
            "store_len": proxy.app.gate.sessions().len(),
            "verified_through_proxy": last.is_some(),
        }));
    }
    if let Some(path) = &args.json {
        let out = json!({
            "base_rss_kib": base,
            "upstream": if echo { "in-process echo" } else { upstream },
            "session_key_bytes": std::mem::size_of::<SessionId>(),
            "session_value_bytes": std::mem::size_of::<sessiongate::session::memory::Session>(),
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Prints one JSON event line and flushes, for the driver reading our stdout.
fn event(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn serve_filled(args: &Args, upstream: &str) -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let idle = Duration::from_secs(args.idle_timeout_s);
    let interval = Duration::from_secs(args.sweep_interval_s);
    let started = Instant::now();
    let started_epoch = epoch();
    let proxy = Proxy::start(config(upstream, idle, interval)?)?;
    let names = user_names();
    // The session the load generator uses: touched by every request, so it never expires.
    let live = proxy
        .app
        .gate
        .sessions()
        .memory()
        .expect("the bench runs the in-memory store")
        .create(proxy.user("alice"), &META)
        .expect("the in-memory store creates sessions");
    let rss_empty = rss_kib()?;
    fill(&proxy, &names, 0, args.sessions);
    let filled = started.elapsed();
    verify(&rt, &proxy, &live, "alice", args.upstream.is_none())?;
    // The first sweep runs `interval` after App::new; every filled session must be expired by
    // then, so that one pass removes them all.
    if filled + idle + Duration::from_secs(2) > interval {
        return Err(format!(
            "filling took {filled:?}: with idle_timeout {idle:?} the sessions would not all be expired at the first sweep ({interval:?}); raise --sweep-interval-s"
        )
        .into());
    }
    event(json!({
        "event": "ready",
        "port": proxy.addr.port(),
        "cookie": proxy.cookie(&live),
        "sessions": proxy.app.gate.sessions().len(),
        "fill_s": filled.as_secs_f64(),
        "rss_empty_kib": rss_empty,
        "rss_filled_kib": rss_kib()?,
        "started_epoch": started_epoch,
        "expected_sweep_epoch": started_epoch + interval.as_secs_f64(),
        "idle_timeout_s": args.idle_timeout_s,
        "sweep_interval_s": args.sweep_interval_s,
    }));

    // Watch the store's size: the sweeper's pass shows as the count falling to the one live
    // session. Polling len() takes each shard's read lock briefly; every 2 ms is negligible.
    let deadline = started + Duration::from_secs(args.exit_after_s);
    let full = proxy.app.gate.sessions().len();
    let mut sweep_start = None;
    while Instant::now() < deadline {
        let len = proxy.app.gate.sessions().len();
        let now = epoch();
        // A few sessions can go on their own (an expired one touched by a request is removed);
        // the sweeper's pass removes nearly all of them.
        if sweep_start.is_none() && len + 100 < full {
            sweep_start = Some(now);
            event(json!({"event": "sweep_start", "epoch": now, "len": len}));
        }
        if let Some(s) = sweep_start
            && len <= 1
        {
            event(json!({
                "event": "sweep_end",
                "epoch": now,
                "duration_s": now - s,
                "removed": full - len,
                "rss_after_kib": rss_kib()?,
            }));
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(rest);
    event(json!({"event": "exit", "epoch": epoch(), "rss_kib": rss_kib()?}));
    Ok(())
}
