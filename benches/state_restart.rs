//! `session.state_dir` at scale: how long a million sessions take to read back at start, how
//! much memory they take then against the memory store holding as many, and how big their
//! files are.
//!
//!     cargo bench --bench state_restart                       # 1,000,000 sessions
//!     cargo bench --bench state_restart -- --sessions 100000 --json out.json
//!
//! Each phase runs in a process of its own (this binary again, with `--phase`), so that every
//! resident-set figure is that of a process that did only that:
//! - `memory`: the memory store filled with N sessions (the baseline);
//! - `fill`: the durable store filled with N sessions through `Sessions::create` (each writes
//!   its record, as a login does), then a clean close;
//! - `load`: a start on that directory: `App::new` reads the files back and writes the fresh
//!   snapshot that replaces them, which is what a restart waits for.
//!
//! Sessions go straight into the store (a million argon2 logins would take hours).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use sessiongate::session::SessionMeta;
use sessiongate::session::browser::Browser;
use sessiongate::{App, Config};

type Res<T> = Result<T, Box<dyn Error>>;

#[path = "common/process.rs"]
mod process;
use process::rss_kib;

const NAME: &str = "state_restart";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// Cheap argon2 parameters: no login is measured here.
const HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw";
const USERS: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Memory,
    Fill,
    Load,
}

/// Lenient like criterion's own parser (flags meant for other benches reach this one too).
#[derive(Parser)]
#[command(ignore_errors = true)]
struct Args {
    /// Sessions to fill (1,000,000; 2,000 when run as a test, without `--bench`).
    #[arg(long)]
    sessions: Option<usize>,
    #[arg(long, value_enum)]
    phase: Option<Phase>,
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    bench: bool,
    #[arg(long)]
    list: bool,
    filter: Option<String>,
}

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
    let n = args
        .sessions
        .unwrap_or(if args.bench { 1_000_000 } else { 2_000 });
    match (args.phase, &args.dir) {
        (Some(phase), Some(dir)) => {
            let out = run_phase(phase, dir, n)?;
            println!("{out}");
            Ok(())
        }
        _ => drive(n, args.json.as_deref()),
    }
}

/// Runs the three phases in child processes and prints (and saves) what they measured.
fn drive(n: usize, json_out: Option<&Path>) -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    let phase = |p: &str| -> Res<Value> {
        let out = Command::new(std::env::current_exe()?)
            .args(["--phase", p, "--sessions", &n.to_string(), "--dir"])
            .arg(&dir)
            .output()?;
        if !out.status.success() {
            return Err(
                format!("phase {p} failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        let text = String::from_utf8(out.stdout)?;
        Ok(serde_json::from_str(
            text.lines().last().ok_or("no output")?,
        )?)
    };
    let memory = phase("memory")?;
    let fill = phase("fill")?;
    let load = phase("load")?;
    let rss = |v: &Value| v["rss_kib"].as_f64().unwrap_or(f64::NAN);
    let summary = json!({
        "sessions": n,
        "memory": memory,
        "fill": fill,
        "load": load,
        "rss_ratio": rss(&load) / rss(&memory),
    });
    println!("{NAME}: {n} sessions");
    println!(
        "  memory store:        RSS {:.0} MiB",
        rss(&memory) / 1024.0
    );
    println!(
        "  durable, filled:     {:.0} creates/s, files {:.1} MiB",
        fill["creates_per_s"].as_f64().unwrap_or(0.0),
        fill["file_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    println!(
        "  durable, restarted:  {} sessions read back and a fresh snapshot written in {} ms, RSS {:.0} MiB ({:.2}x memory), files {:.1} MiB",
        load["sessions"],
        load["start_ms"],
        rss(&load) / 1024.0,
        rss(&load) / rss(&memory),
        load["file_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if load["sessions"].as_u64() != Some(n as u64) {
        return Err(format!("{} sessions read back, {n} written", load["sessions"]).into());
    }
    Ok(())
}

fn config(state: Option<&Path>) -> Res<Config> {
    let state = state.map_or(String::new(), |d| {
        format!("state_dir = \"{}\"", d.display())
    });
    let users: String = user_names()
        .iter()
        .map(|name| format!("\n[[users]]\nname = \"{name}\"\npassword_hash = \"{HASH}\"\n"))
        .collect();
    Ok(Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[upstream]
url = "http://127.0.0.1:9"

[session]
secret = "{SECRET}"
secure = false
idle_timeout = "1h"
absolute_timeout = "24h"
{state}
{users}"#
    ))?)
}

fn user_names() -> Vec<String> {
    (0..USERS).map(|i| format!("user{i:03}")).collect()
}

const META: SessionMeta = SessionMeta {
    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    browser: Browser::UNKNOWN,
};

fn run_phase(phase: Phase, dir: &Path, n: usize) -> Res<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match phase {
        Phase::Memory => {
            let app = App::new(config(None)?).expect("a memory store");
            let took = rt.block_on(fill(&app, n))?;
            Ok(json!({ "rss_kib": rss_kib()?, "fill_s": took.as_secs_f64() }))
        }
        Phase::Fill => {
            let app = App::new(config(Some(dir))?)?;
            let took = rt.block_on(fill(&app, n))?;
            app.gate.sessions().close();
            Ok(json!({
                "creates_per_s": n as f64 / took.as_secs_f64(),
                "file_bytes": dir_bytes(dir)?,
                "rss_kib": rss_kib()?,
            }))
        }
        Phase::Load => {
            let config = config(Some(dir))?;
            let start = Instant::now();
            let app = App::new(config)?;
            let start_ms = start.elapsed().as_millis() as u64;
            let sessions = app.gate.sessions().len();
            let rss = rss_kib()?;
            app.gate.sessions().close();
            Ok(json!({
                "sessions": sessions,
                "start_ms": start_ms,
                "rss_kib": rss,
                "file_bytes": dir_bytes(dir)?,
            }))
        }
    }
}

async fn fill(app: &App, n: usize) -> Res<Duration> {
    let policy = app.gate.policy();
    let users: Vec<_> = user_names()
        .iter()
        .map(|name| policy.user(name).expect("a configured user"))
        .collect();
    let sessions = app.gate.sessions();
    let start = Instant::now();
    for i in 0..n {
        let user = &users[i % users.len()];
        sessions.create(&**user, &META).await?;
    }
    Ok(start.elapsed())
}

fn dir_bytes(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}
