//! The per-request auth work, without sockets: cookie parse + HMAC verify + session lookup
//! (`App::authenticate`) and the upstream header rewrite (`Upstream::prepare`), plus the
//! session store on its own at 10k and 1M live sessions.
//!
//!     cargo bench --bench auth_path

mod common;

use std::hint::black_box;

use common::{app, auth_work, browser_request};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderValue, Request};
use sessiongate::session::browser::Browser;
use sessiongate::session::identity::UserNames;
use sessiongate::session::{Account, MemoryStore, Owner, SessionMeta};

const META: SessionMeta = SessionMeta {
    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    browser: Browser::UNKNOWN,
};

fn auth_path(c: &mut Criterion) {
    let app = app("alice");
    let owner = app
        .gate
        .policy()
        .user("alice")
        .expect("a configured user")
        .owner();
    let id = app
        .gate
        .sessions()
        .memory()
        .expect("the bench runs the in-memory store")
        .create(owner, &META)
        .expect("the in-memory store creates sessions");
    let cookie = format!(
        "{}={}",
        app.config.session.cookie_name,
        app.signer.sign(&id)
    );
    let template = browser_request(&cookie);
    let client_ip = HeaderValue::from_static("127.0.0.1");

    c.bench_function("authenticate (cookie + HMAC + lookup)", |b| {
        b.iter(|| {
            black_box(matches!(
                app.gate
                    .authenticate(black_box(template.headers()))
                    .now_or_never()
                    .expect("the in-memory store answers at once"),
                Ok(Some(_))
            ))
        })
    });

    c.bench_function("auth path (authenticate + header rewrite)", |b| {
        b.iter_batched_ref(
            || {
                let mut r = Request::new(());
                *r.uri_mut() = template.uri().clone();
                *r.headers_mut() = template.headers().clone();
                r
            },
            |req| auth_work(&app, req, &client_ip),
            criterion::BatchSize::SmallInput,
        )
    });

    c.bench_function("sign cookie", |b| {
        b.iter(|| black_box(app.signer.sign(&id)))
    });
}

fn store(c: &mut Criterion) {
    for live in [10_000usize, 1_000_000] {
        let store = MemoryStore::new(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(3600),
        );
        let alice = Owner {
            user: UserNames::default().intern("alice"),
            credentials: 1,
        };
        let ids: Vec<_> = (0..live)
            .map(|_| store.create(alice, &META).unwrap())
            .collect();
        let mut i = 0usize;
        c.bench_function(&format!("store touch, {live} live sessions"), |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                black_box(matches!(store.touch(&ids[i]), Ok(Some(_))))
            })
        });
    }
}

criterion_group!(benches, auth_path, store);
criterion_main!(benches);
