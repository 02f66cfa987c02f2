//! Fuzzes everything that reads the session cookie: `CookieSigner::verify`,
//! `headers::cookie_pairs`, `headers::strip_cookie` and `Gate::authenticate`.
//!
//! The input is one or more Cookie header values separated by `\n` (a byte no header value
//! may hold), so requests with several Cookie headers are covered too. Every occurrence of
//! `@SID@` is replaced by the cookie of the one session the fixture issued, so the fuzzer can
//! explore the accepting path without forging an HMAC.
#![no_main]

use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use sessiongate::http::headers::{cookie_pairs, strip_cookie};
use sessiongate::session::browser::Browser;
use sessiongate::session::identity::Account;
use sessiongate::session::cookie::VALUE_LEN;
use sessiongate::session::{CookieSigner, SessionId, SessionMeta};
use sessiongate::{App, Config};

/// Also in fuzz/README.md: the seed cookies in corpus/cookie were signed with this secret.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9"

[session]
secret = "fuzz-secret-0123456789abcdef0123456789abcdef"
# Long enough that the issued session outlives any fuzzing run.
idle_timeout = "1000d"
absolute_timeout = "1000d"

[[users]]
name = "alice"
# Cheap argon2 parameters: App::new hashes a dummy password with the same cost once.
password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
"#;

/// The cookie name the config above yields (secure defaults to true, hence `__Host-`).
const NAME: &str = "__Host-sessiongate";
const PLACEHOLDER: &[u8] = b"@SID@";

struct Fixture {
    app: Arc<App>,
    /// The cookie value of the one live session in the store.
    issued: String,
    issued_id: SessionId,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::from_toml(CONFIG).expect("the fixed config is valid");
        let app = App::new(config).expect("the in-memory store needs no set-up");
        assert_eq!(app.config.session.cookie_name, NAME);
        let owner = app
            .gate
            .policy()
            .user("alice")
            .expect("the configured user")
            .owner();
        let issued_id = app
            .gate
            .sessions()
            .memory()
            .expect("the fixed config keeps sessions in memory")
            .create(
                owner,
                &SessionMeta {
                    client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    browser: Browser::UNKNOWN,
                },
            )
            .expect("the in-memory store creates sessions");
        let issued = app.signer.sign(&issued_id);
        Fixture {
            app,
            issued,
            issued_id,
        }
    })
}

/// `verify` never panics, refuses every length but the one we issue, and accepts a value only
/// in the exact spelling `sign` produces (no second spelling of a valid cookie).
fn check_value(signer: &CookieSigner, value: &str) {
    match signer.verify(value) {
        Some(id) => assert_eq!(
            signer.sign(&id),
            value,
            "verify accepted a value that sign would never produce"
        ),
        None => {}
    }
    if value.len() != VALUE_LEN {
        assert!(signer.verify(value).is_none());
    }
}

fn replace_placeholder(data: &[u8], issued: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(PLACEHOLDER) {
            out.extend_from_slice(issued.as_bytes());
            i += PLACEHOLDER.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

type Pair = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The (name, value, pair) triples of the Cookie headers, in order: of every one, or (with
/// `text_only`) of those that are visible ASCII text.
fn pairs_of(headers: &HeaderMap, text_only: bool) -> Vec<Pair> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|v| !text_only || v.to_str().is_ok())
        .flat_map(|v| {
            cookie_pairs(v.as_bytes()).map(|(n, v, p)| (n.to_vec(), v.to_vec(), p.to_vec()))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let signer = &fx.app.signer;

    // 1. The raw input as one cookie value, and as a header value split into pairs.
    if let Ok(text) = std::str::from_utf8(data) {
        check_value(signer, text);
    }
    for (name, value, pair) in cookie_pairs(data) {
        assert!(!pair.is_empty());
        assert_eq!(pair, pair.trim_ascii());
        assert!(!pair.contains(&b';'));
        assert!(data.windows(pair.len()).any(|w| w == pair));
        assert_eq!(name, name.trim_ascii());
        assert_eq!(value, value.trim_ascii());
        assert!(!name.contains(&b'='), "{name:?}");
        if let Ok(value) = std::str::from_utf8(value) {
            check_value(signer, value);
        }
    }

    // 2. A value we signed, with one byte replaced: accepted only when nothing changed.
    if data.len() >= 34 {
        let id = SessionId::from_bytes(data[..32].try_into().unwrap());
        let signed = signer.sign(&id);
        assert_eq!(signed.len(), VALUE_LEN);
        assert_eq!(signer.verify(&signed), Some(id));
        let mut mutated = signed.clone().into_bytes();
        mutated[data[32] as usize % VALUE_LEN] = data[33];
        if let Ok(mutated) = std::str::from_utf8(&mutated) {
            assert_eq!(
                signer.verify(mutated).is_some(),
                mutated == signed,
                "{mutated:?} verified but differs from {signed:?}"
            );
        }
    }

    // 3. Request headers: one Cookie header per '\n'-separated part.
    let data = replace_placeholder(data, &fx.issued);
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(header::COOKIE, v);
        }
    }
    let any_non_text = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.to_str().is_err());
    // Every line counts for authenticate, text or not; strip_cookie keeps only text lines.
    let every = pairs_of(&headers, false);
    let ours: Vec<&Pair> = every.iter().filter(|p| p.0 == NAME.as_bytes()).collect();
    let pairs = pairs_of(&headers, true);

    // authenticate: a session only for exactly one cookie of ours, spelled as we issued it.
    let auth = authenticate(&fx.app, &headers);
    let expect_session = ours.len() == 1 && ours[0].1 == fx.issued.as_bytes();
    assert_eq!(
        auth.is_some(),
        expect_session,
        "authenticate disagrees with the model for {:?}",
        String::from_utf8_lossy(&data)
    );
    if let Some(a) = auth {
        assert!(a.id == fx.issued_id);
        assert_eq!(a.user.name, "alice");
    }

    // strip_cookie: none of ours left, every other pair kept byte for byte and in order.
    let before = headers.clone();
    strip_cookie(&mut headers, NAME);
    let after = pairs_of(&headers, false);
    assert!(after.iter().all(|p| p.0 != NAME.as_bytes()), "{after:?}");
    if ours.is_empty() && !any_non_text {
        assert_eq!(
            headers, before,
            "strip_cookie changed headers without our cookie"
        );
    } else {
        assert!(headers.get_all(header::COOKIE).iter().count() <= 1);
        assert!(
            headers
                .get_all(header::COOKIE)
                .iter()
                .all(|v| v.to_str().is_ok())
        );
        let kept: Vec<&Pair> = pairs.iter().filter(|p| p.0 != NAME.as_bytes()).collect();
        let after_refs: Vec<&Pair> = after.iter().collect();
        assert_eq!(
            after_refs, kept,
            "strip_cookie lost or changed other cookies"
        );
    }
    // With our cookie gone, no request authenticates.
    assert!(authenticate(&fx.app, &headers).is_none());
});

/// `Gate::authenticate`, which the in-memory store answers without waiting.
fn authenticate(app: &App, headers: &HeaderMap) -> Option<sessiongate::gate::Authenticated> {
    app.gate
        .authenticate(headers)
        .now_or_never()
        .expect("the in-memory store answers at once")
        .expect("the in-memory store always answers")
}
