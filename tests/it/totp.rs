//! The TOTP second factor over real sockets: password then code, nothing reaching the app
//! before both; wrong, replayed and late codes; limits shared with passwords; the Redis store
//! shared by two replicas; and `sessiongate totp-setup`.

use std::time::Duration;

use crate::common::redis::{RedisOptions, RedisServer, redis_config};
use crate::common::*;
use http::{Method, StatusCode};
use sessiongate::Config;
use totp_rs::{Algorithm, Builder, Totp};

/// alice's TOTP secret in the test configs ("12345678901234567890" in base32, RFC 6238's).
const TOTP_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const CODE_PATH: &str = "/.sessiongate/login/code";

/// An authenticator app for alice, built from totp-rs directly (not sessiongate's wrapper).
pub(crate) fn app_for_alice() -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(b"12345678901234567890".to_vec())
        .build()
        .unwrap()
}

/// The code alice's app shows now. Made right before it is posted: the verifier accepts the
/// step before and after, so a step boundary passing in between does not matter.
pub(crate) fn code_now() -> String {
    app_for_alice().generate_current().to_string()
}

/// A code that is none of alice's codes from two steps ago to two steps ahead: wrong however
/// slowly the test runs (within a step of skew).
fn wrong_code() -> String {
    let totp = app_for_alice();
    let now = sessiongate::credentials::totp::unix_now();
    let near: Vec<String> = (0..5)
        .map(|i| totp.generate(now + i * 30 - 60).to_string())
        .collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

/// The test config with alice on TOTP and bob on a password only; `auth` lines in [auth].
fn totp_toml(upstream: std::net::SocketAddr, auth: &str) -> String {
    with_auth(&with_totp(&config_toml(upstream, "", "")), auth)
}

/// Gives alice (the last table of `toml`) the TOTP secret, and adds bob after her.
pub(crate) fn with_totp(toml: &str) -> String {
    format!("{toml}totp_secret = \"{TOTP_B32}\"\n\n{}", bob_table())
}

/// The password step for alice, which must lead to the code form; the pending cookie.
pub(crate) async fn password_step(proxy: &Proxy, rd: &str) -> String {
    let res = post_login(
        proxy,
        &[("username", USER), ("password", PASSWORD), ("rd", rd)],
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some(CODE_PATH));
    let set = res.set_cookies();
    assert_eq!(set.len(), 1, "only the pending cookie: {set:?}");
    assert!(!set[0].starts_with(&format!("{}=", proxy.cookie_name())));
    for attr in ["HttpOnly", "Secure", "Path=/.sessiongate", "Max-Age=120"] {
        assert!(set[0].contains(attr), "{attr} in {}", set[0]);
    }
    cookie_pair(&res)
}

pub(crate) async fn post_code(proxy: &Proxy, cookie: &str, code: &str) -> Resp {
    post_form(proxy, CODE_PATH, cookie, &[("code", code)]).await
}

/// A successful code answer: 303 to `rd` with the session cookie first, the pending cookie
/// cleared; the session cookie pair.
pub(crate) fn signed_in(res: &Resp, proxy: &Proxy, rd: &str) -> String {
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some(rd));
    let set = res.set_cookies();
    assert!(
        set[0].starts_with(&format!("{}=", proxy.cookie_name())),
        "{set:?}"
    );
    assert!(
        set.iter().any(|c| c.contains("-pending=;")),
        "pending cookie cleared: {set:?}"
    );
    cookie_pair(res)
}

#[tokio::test]
async fn password_then_code_reaches_the_app_and_nothing_does_before() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "")).await;
    let pending = password_step(&proxy, "/dashboard?tab=1").await;

    // The code form, only with the pending cookie.
    let page = get(proxy.addr, CODE_PATH, &[("cookie", &pending)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    for part in [
        "Code from your authenticator app",
        r#"autocomplete="one-time-code""#,
        r#"inputmode="numeric""#,
        r#"pattern="[0-9]{6}""#,
        r#"name="csrf""#,
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    let without = get(proxy.addr, CODE_PATH, &[]).await;
    assert_eq!(without.status, StatusCode::SEE_OTHER);
    assert_eq!(without.header("location"), Some("/.sessiongate/login"));

    // The pending cookie is no session: the app is still closed.
    assert_eq!(
        status_with(&proxy, &pending).await,
        StatusCode::UNAUTHORIZED
    );
    let browser = get(proxy.addr, "/", &[("cookie", &pending), BROWSER]).await;
    assert_eq!(browser.status, StatusCode::FOUND);
    assert_eq!(
        upstream.requests(),
        0,
        "nothing reached the app before the code"
    );

    let res = post_code(&proxy, &pending, &code_now()).await;
    let session = signed_in(&res, &proxy, "/dashboard?tab=1");
    let res = get(proxy.addr, "/whoami", &[("cookie", &session)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert_eq!(upstream.requests(), 1);

    // The pending sign-in was consumed: its cookie cannot be used again.
    let again = get(proxy.addr, CODE_PATH, &[("cookie", &pending)]).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.text().contains("took too long"), "{}", again.text());
}

#[tokio::test]
async fn a_password_only_user_beside_totp_users_signs_in_with_the_password_alone() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "")).await;
    let cookie = login(&proxy, "bob", BOB_PASSWORD).await;
    assert!(cookie.starts_with(&format!("{}=", proxy.cookie_name())));
    assert_eq!(status_with(&proxy, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn before_the_password_is_right_a_totp_user_looks_like_any_other() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let mut pages = Vec::new();
    for (user, password) in [(USER, "wrong"), ("bob", "wrong"), ("nobody", "wrong")] {
        let res = post_login(&proxy, &[("username", user), ("password", password)], &[]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert!(sets_no_session(&res), "{:?}", res.set_cookies());
        // The form token differs per page; the rest must be the same.
        let text = res.text();
        let token_at = text.find(r#"name="csrf" value=""#).unwrap();
        pages.push(text[..token_at].to_string());
    }
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "{pages:?}");
}

#[tokio::test]
async fn a_wrong_code_gets_the_form_again_and_a_used_code_is_refused_like_a_wrong_one() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let pending = password_step(&proxy, "/").await;
    let res = post_code(&proxy, &pending, &wrong_code()).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let wrong_page = res.text();
    assert!(wrong_page.contains("Code from your authenticator app"));
    assert!(wrong_page.contains(r#"role="alert""#));
    assert!(res.set_cookies().is_empty(), "no session, pending kept");

    // Right code: signed in. Then the same code in a fresh sign-in is a replay.
    let code = code_now();
    signed_in(&post_code(&proxy, &pending, &code).await, &proxy, "/");
    let pending = password_step(&proxy, "/").await;
    let res = post_code(&proxy, &pending, &code).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "a code is accepted once"
    );
    assert!(res.set_cookies().is_empty());
    let message = |page: &str| {
        let start = page.find(r#"role="alert">"#).unwrap();
        page[start..start + page[start..].find("</p>").unwrap()].to_string()
    };
    assert_eq!(message(&res.text()), message(&wrong_page), "same message");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn five_wrong_codes_end_the_pending_sign_in() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let pending = password_step(&proxy, "/").await;
    for _ in 0..4 {
        let res = post_code(&proxy, &pending, &wrong_code()).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert!(res.text().contains("Code from your authenticator app"));
    }
    let res = post_code(&proxy, &pending, &wrong_code()).await;
    assert_back_at_sign_in(&proxy, &res, "Too many wrong codes");
    assert!(res.set_cookies().iter().any(|c| c.contains("-pending=;")));
    // Even the right code is too late now.
    let res = post_code(&proxy, &pending, &code_now()).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(
        res.set_cookies()
            .iter()
            .all(|c| !c.starts_with(proxy.cookie_name()))
    );
    assert_eq!(upstream.requests(), 0);
}

/// A code post sent back to the sign-in page with `message`: 401, the password form again,
/// and no session cookie.
fn assert_back_at_sign_in(proxy: &Proxy, res: &Resp, message: &str) {
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let text = res.text();
    assert!(text.contains(message), "{text}");
    assert!(
        text.contains(r#"name="password""#),
        "the sign-in page: {text}"
    );
    assert!(
        res.set_cookies()
            .iter()
            .all(|c| !c.starts_with(proxy.cookie_name())),
        "no session cookie"
    );
}

#[tokio::test]
async fn wrong_codes_and_wrong_passwords_share_the_failure_limit() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 3")).await;
    let res = post_login(&proxy, &[("username", USER), ("password", "nope")], &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // The right password does not clear the count for a TOTP user: only the code does.
    let pending = password_step(&proxy, "/").await;
    for _ in 0..2 {
        let res = post_code(&proxy, &pending, &wrong_code()).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = post_code(&proxy, &pending, &code_now()).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text());
    assert!(res.header("retry-after").is_some());
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_late_code_sends_the_person_back_to_sign_in() {
    let upstream = start_upstream().await;
    let mut config = Config::from_toml(&totp_toml(upstream.addr, "")).unwrap();
    // Not a file key: only a test can shorten the two minutes.
    config.auth.pending_lifetime = Duration::from_millis(1500);
    let proxy = start_proxy_from(config).await;
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let pending = cookie_pair(&res);
    // Waiting longer than the lifetime: a slow machine only makes it later.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let res = post_code(&proxy, &pending, &code_now()).await;
    assert_back_at_sign_in(&proxy, &res, "That sign-in took too long; sign in again.");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn the_code_form_checks_its_origin_or_token() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let pending = password_step(&proxy, "/").await;
    let body = format!("code={}", code_now());
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let mut h: Vec<(&str, &str)> = vec![
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &pending),
        ];
        h.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        send(proxy.addr, req_with_body(Method::POST, CODE_PATH, &h, body))
    };
    let cross = post(
        vec![("origin", "https://evil.example".into())],
        body.clone(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let no_token = post(vec![], body.clone()).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);

    // A client without a browser signal passes with the form's token.
    let page = get(proxy.addr, CODE_PATH, &[("cookie", &pending)])
        .await
        .text();
    let start = page.find(r#"name="csrf" value=""#).unwrap() + r#"name="csrf" value=""#.len();
    let token = &page[start..start + page[start..].find('"').unwrap()];
    let body = format!("code={}&csrf={token}", code_now());
    let res = post(vec![], body).await;
    signed_in(&res, &proxy, "/");
}

/// The code form's token is bound to its pending sign-in: taken from one browser's code form
/// and posted with another pending sign-in's cookie, or with none, it is refused (403), and
/// the other sign-in goes on untouched.
#[tokio::test]
async fn a_code_token_replayed_from_another_browser_is_refused() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let pending_a = password_step(&proxy, "/").await;
    let pending_b = password_step(&proxy, "/").await;
    let page = get(proxy.addr, CODE_PATH, &[("cookie", &pending_a)])
        .await
        .text();
    let start = page.find(r#"name="csrf" value=""#).unwrap() + r#"name="csrf" value=""#.len();
    let token_a = page[start..start + page[start..].find('"').unwrap()].to_string();
    let post = async |cookie: Option<&str>| {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend(cookie.map(|c| ("cookie", c)));
        let body = format!("code={}&csrf={token_a}", code_now());
        send(proxy.addr, req_with_body(Method::POST, CODE_PATH, &h, body)).await
    };
    let foreign = post(Some(&pending_b)).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(
        foreign.text().contains("another browser"),
        "{}",
        foreign.text()
    );
    let without = post(None).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert!(
        without.text().contains("without the cookie"),
        "{}",
        without.text()
    );
    for res in [&foreign, &without] {
        assert!(res.set_cookies().is_empty(), "{:?}", res.set_cookies());
    }
    // b's sign-in was not touched (no wrong code counted, not ended); a's token signs a in.
    let page_b = get(proxy.addr, CODE_PATH, &[("cookie", &pending_b)]).await;
    assert_eq!(page_b.status, StatusCode::OK);
    let res = post(Some(&pending_a)).await;
    signed_in(&res, &proxy, "/");
    assert_eq!(proxy.app.gate.sessions().len(), 1);
    assert_eq!(upstream.requests(), 0);
}

/// Two pending cookies mean no pending sign-in, whichever Cookie line each is on, also a line
/// whose bytes are not UTF-8.
#[tokio::test]
async fn a_second_pending_cookie_on_a_line_that_is_not_text_means_no_pending_sign_in() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&totp_toml(upstream.addr, "max_failures = 100")).await;
    let a = password_step(&proxy, "/").await;
    let b = password_step(&proxy, "/").await;
    let get_code = async |lines: &[&[u8]]| {
        let mut r = format!("GET {CODE_PATH} HTTP/1.1\r\nHost: a\r\n").into_bytes();
        for line in lines {
            r.extend_from_slice(b"Cookie: ");
            r.extend_from_slice(line);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"Connection: close\r\n\r\n");
        raw(proxy.addr, &r).await
    };
    let binary = [b"theme=\xff\xfe; ".as_slice(), b.as_bytes()].concat();
    let two = get_code(&[a.as_bytes(), &binary]).await;
    assert!(two.starts_with("HTTP/1.1 303"), "{two}");
    assert!(
        two.to_ascii_lowercase()
            .contains("location: /.sessiongate/login\r\n"),
        "{two}"
    );
    // Each alone, even on the line that is not text, is its pending sign-in.
    for line in [a.as_bytes(), &binary] {
        let one = get_code(&[line]).await;
        assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    }
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn require_totp_refuses_a_user_without_a_secret_and_secrets_are_checked() {
    let upstream = start_upstream().await;
    let err = Config::from_toml(&totp_toml(upstream.addr, "require_totp = true")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("users[1].totp_secret"), "{text}");
    assert!(text.contains("require_second_factor"), "{text}");

    let plain = config_toml(upstream.addr, "", "");
    let with = |line: &str| Config::from_toml(&format!("{plain}{line}\n"));
    let short = with("totp_secret = \"GEZDGNBVGY3TQOJQ\"")
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("users[0].totp_secret") && short.contains("128 bits"),
        "{short}"
    );
    let bad = with("totp_secret = \"not base32!\"")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("users[0].totp_secret"), "{bad}");
    assert!(
        !bad.contains("not base32!"),
        "the secret is never quoted: {bad}"
    );
    let both = with(&format!(
        "totp_secret = \"{TOTP_B32}\"\ntotp_secret_file = \"/nonexistent\""
    ))
    .unwrap_err()
    .to_string();
    assert!(both.contains("not both"), "{both}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alice.totp");
    std::fs::write(&file, format!("{TOTP_B32}\n")).unwrap();
    let config = with(&format!(
        "totp_secret_file = {:?}",
        file.display().to_string()
    ))
    .unwrap();
    assert!(config.users[0].totp.is_some());
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(TOTP_B32) && !debug.contains("1234567890"),
        "{debug}"
    );
    // A config where every user has a secret is fine with require_totp.
    let all = with_auth(
        &format!("{plain}totp_secret = \"{TOTP_B32}\"\n"),
        "require_totp = true",
    );
    assert!(Config::from_toml(&all).is_ok());
}

#[tokio::test]
async fn with_redis_the_code_can_be_given_on_another_replica_and_is_used_once_for_all() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = with_auth(
        &with_totp(&redis_config(upstream.addr, &redis.url(), "")),
        "max_failures = 100",
    );
    let a = start_proxy_with(&toml).await;
    let b = start_proxy_with(&toml).await;

    let pending = password_step(&a, "/from-a").await;
    assert!(
        redis
            .keys()
            .await
            .iter()
            .any(|k| k.starts_with("sessiongate:pending:")),
        "{:?}",
        redis.keys().await
    );
    let page = get(b.addr, CODE_PATH, &[("cookie", &pending)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let code = code_now();
    let session = signed_in(&post_code(&b, &pending, &code).await, &b, "/from-a");
    let res = get(a.addr, "/whoami", &[("cookie", &session)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);

    // The code used through B is refused on A, and a code used on A is refused on B.
    let pending = password_step(&a, "/").await;
    let res = post_code(&a, &pending, &code).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "replayed across replicas"
    );
    let pending_a = password_step(&a, "/").await;
    let pending_b = password_step(&b, "/").await;
    // A code not used yet: the next step's, which the verifier accepts a step early.
    let fresh = app_for_alice()
        .generate(sessiongate::credentials::totp::unix_now() + 30)
        .to_string();
    signed_in(&post_code(&a, &pending_a, &fresh).await, &a, "/");
    let res = post_code(&b, &pending_b, &fresh).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "used on A, refused on B"
    );

    // Wrong codes on either replica end the same pending sign-in.
    let pending = password_step(&a, "/").await;
    let pending_keys = || async {
        redis
            .keys()
            .await
            .iter()
            .filter(|k| k.starts_with("sessiongate:pending:"))
            .count()
    };
    let before = pending_keys().await;
    let mut last = String::new();
    for i in 0..5 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let res = post_code(replica, &pending, &wrong_code()).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        last = res.text();
    }
    assert!(last.contains("Too many wrong codes"), "{last}");
    assert_eq!(
        pending_keys().await,
        before - 1,
        "ended after 5 wrong codes"
    );
    for key in redis.keys().await {
        assert!(redis.ttl_ms(&key).await > 0, "{key} has a TTL");
    }
}

#[test]
fn totp_setup_prints_a_secret_its_uri_a_qr_code_and_the_config_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["totp-setup", "--user", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {text}"))
            .to_string()
    };
    let secret = after("TOTP secret for alice: ");
    let uri = after("otpauth URI: ");
    assert_eq!(secret.len(), 32, "20 bytes in base32");
    assert!(
        text.contains(&format!("totp_secret = \"{secret}\"")),
        "{text}"
    );
    assert!(text.contains("totp_secret_file = "), "{text}");

    let url = url::Url::parse(&uri).unwrap();
    assert_eq!(url.scheme(), "otpauth");
    assert_eq!(url.host_str(), Some("totp"));
    assert_eq!(url.path(), "/sessiongate:alice");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["secret"], secret);
    assert_eq!(query["issuer"], "sessiongate");
    assert_eq!(query["algorithm"], "SHA1");
    assert_eq!(query["digits"], "6");
    assert_eq!(query["period"], "30");

    // What an app makes of the URI verifies with the printed secret as the config holds it.
    let app = Totp::from_url(&uri).unwrap();
    let config_secret = sessiongate::credentials::totp::TotpSecret::from_base32(&secret).unwrap();
    let now = sessiongate::credentials::totp::unix_now();
    assert!(
        config_secret
            .check(&app.generate(now).to_string(), now)
            .is_some()
    );

    let qr_rows = text.lines().filter(|l| l.contains('█')).count();
    assert!(qr_rows >= 15, "a QR code of half blocks: {text}");
}
