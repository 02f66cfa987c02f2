//! Fuzzes `Config::from_toml`: any text gives a config or an error, never a panic, and an
//! accepted config holds the invariants the rest of the program relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use sessiongate::Config;

fuzz_target!(|text: &str| {
    let Ok(c) = Config::from_toml(text) else {
        return;
    };
    // Invariants of a validated config (see src/config/).
    assert!(c.server.workers >= 1);
    assert!(c.server.max_connections >= 1);
    assert!(!c.users.is_empty());
    for (i, u) in c.users.iter().enumerate() {
        assert!(!u.name.is_empty() && u.name.len() <= 256);
        assert!(http::HeaderValue::from_str(&u.name).is_ok());
        assert!(
            c.users[..i].iter().all(|o| o.name != u.name),
            "duplicate user"
        );
    }
    let s = &c.session;
    assert!(
        s.secret
            .as_ref()
            .is_none_or(|k| k.expose_secret().len() >= 32)
    );
    assert!(!s.cookie_name.is_empty());
    assert!(
        s.cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
        "{:?}",
        s.cookie_name
    );
    if s.cookie_name.starts_with("__Host-") || s.cookie_name.starts_with("__Secure-") {
        assert!(s.secure);
    }
    for d in [
        s.idle_timeout,
        s.absolute_timeout,
        s.sweep_interval,
        c.server.shutdown_timeout,
        c.server.header_read_timeout,
        c.server.handshake_timeout,
        c.auth.failure_window,
    ] {
        assert!(!d.is_zero());
    }
    let a = &c.auth;
    assert!(a.prefix.starts_with('/') && a.prefix.len() >= 2 && !a.prefix.ends_with('/'));
    for (i, rule) in c.rules.rules.iter().enumerate() {
        let p = &rule.path;
        assert!(p.starts_with('/') && !p.contains(['?', '#', '%', '\\']), "{p:?}");
        if let sessiongate::gate::rules::Origin::PublicPath(_) = rule.origin {
            assert!(p != "/" && !p.contains("/."), "{p:?}");
        } else {
            assert!(sessiongate::gate::rules::check_path(p).is_ok(), "{p:?}");
            // No [[rules]] entry is dead: none is shadowed by one before it.
            for earlier in &c.rules.rules[..i] {
                assert!(!rule.is_shadowed_by(earlier), "{p:?} after {:?}", earlier.path);
            }
        }
    }
    assert!(a.login_workers >= 1 && a.login_queue >= 1 && a.max_failures >= 1);
    if let Some(t) = &c.upstream.target {
        assert!(t.authority.port_u16().is_some());
        assert!(!t.timeout.is_zero());
    }
    assert!(!sessiongate::http::headers::is_reserved(
        &c.upstream.identity_header
    ));
    assert!(!sessiongate::http::headers::is_reserved(&c.upstream.groups_header));
    assert!(!sessiongate::http::headers::same_name(
        &c.upstream.identity_header,
        &c.upstream.groups_header
    ));
    if c.server.redirect_http.is_some() || c.server.hsts.is_some() {
        assert!(c.server.tls.is_some());
    }
});
