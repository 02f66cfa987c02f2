//! The session store on its own, at the sizes a busy instance holds: creating a session (the
//! login's share after the hash), looking up an unknown id, a sweeper pass over a million live
//! sessions, and the whole per-request auth path when the store is big (the lookup then misses
//! the CPU caches, unlike with one session in `auth_path`). Sweeping a million *expired*
//! sessions is timed in a real process by `sessions_rss --mode serve` (benches/load.sh).
//!
//!     cargo bench --bench session_store

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{app, auth_work, browser_request};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use sessiongate::session::browser::Browser;
use sessiongate::session::identity::UserNames;
use sessiongate::session::{Account, MemoryStore, Owner, SessionId, SessionMeta};

const META: SessionMeta = SessionMeta {
    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    browser: Browser::UNKNOWN,
};

const HOUR: Duration = Duration::from_secs(3600);

/// The user of every session, looked up by name per session as a login does.
const USER: &str = "user042";

fn user(_: &MemoryStore) -> Owner {
    static NAMES: std::sync::OnceLock<UserNames> = std::sync::OnceLock::new();
    Owner {
        user: NAMES.get_or_init(UserNames::default).intern(USER),
        credentials: 1,
    }
}

fn filled(n: usize, idle: Duration) -> (MemoryStore, Vec<SessionId>) {
    let store = MemoryStore::new(idle, HOUR);
    let ids = (0..n)
        .map(|_| store.create(user(&store), &META).unwrap())
        .collect();
    (store, ids)
}

fn create(c: &mut Criterion) {
    let (store, _) = filled(100_000, HOUR);
    c.bench_function("store create, 100k live sessions", |b| {
        // Time the inserts only; remove them afterwards so the store stays at its size.
        b.iter_custom(|iters| {
            let mut made = Vec::with_capacity(iters as usize);
            let t = Instant::now();
            for _ in 0..iters {
                made.push(store.create(user(&store), &META).unwrap());
            }
            let elapsed = t.elapsed();
            for id in &made {
                let _ = store.remove(id);
            }
            elapsed
        })
    });
}

fn lookups(c: &mut Criterion) {
    let (store, _ids) = filled(1_000_000, HOUR);
    let unknown: Vec<SessionId> = (0..1024).map(|_| SessionId::generate()).collect();
    let mut i = 0usize;
    c.bench_function("store touch unknown id, 1M live sessions", |b| {
        b.iter(|| {
            i = (i + 1) % unknown.len();
            black_box(matches!(store.touch(&unknown[i]), Ok(None)))
        })
    });

    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.bench_function("sweep pass, 1M live sessions, none expired", |b| {
        b.iter(|| black_box(store.sweep()))
    });
    g.finish();
}

/// The same request and measured work as `auth_path`'s "auth path (authenticate + header
/// rewrite)", with a million live sessions and a different session on each request.
fn auth_path_big_store(c: &mut Criterion) {
    let app = app(USER);
    let cookie_name = app.config.session.cookie_name.clone();
    let cookies: Vec<String> = (0..1_000_000)
        .map(|_| {
            let owner = app
                .gate
                .policy()
                .user(USER)
                .expect("a configured user")
                .owner();
            let id = app
                .gate
                .sessions()
                .memory()
                .expect("the bench runs the in-memory store")
                .create(owner, &META)
                .expect("the in-memory store creates sessions");
            format!("{cookie_name}={}", app.signer.sign(&id))
        })
        .collect();
    let client_ip = HeaderValue::from_static("127.0.0.1");
    let mut i = 0usize;
    c.bench_function(
        "auth path (authenticate + header rewrite), 1M live sessions",
        |b| {
            b.iter_batched_ref(
                || {
                    i = (i + 7919) % cookies.len();
                    browser_request(&cookies[i])
                },
                |req| auth_work(&app, req, &client_ip),
                BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, create, lookups, auth_path_big_store);
criterion_main!(benches);
