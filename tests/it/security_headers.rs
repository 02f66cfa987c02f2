//! Headers that keep what sessiongate serves where it belongs, over real sockets:
//! - shared caches: an answer the app gives a signed-in request without `Cache-Control` gets
//!   `upstream.default_cache_control` (`private`), so a CDN in front cannot keep a protected
//!   page and serve it to anyone; the app's own `Cache-Control` and public paths are left as
//!   the app sent them;
//! - clickjacking, content sniffing and injected scripts or styles: every page sessiongate
//!   shows itself (sign-in, signed out, code, 403, 429, 502, 503, 504, sessions) refuses to be
//!   framed, is never sniffed as another type, runs no script and applies only its own styles.

use std::collections::BTreeMap;

use crate::common::redis::redis_store;
use crate::common::*;
use base64::Engine;
use http::StatusCode;
use sha2::{Digest, Sha256};

const LOGIN: &str = "/.sessiongate/login";
const CODE_PATH: &str = "/.sessiongate/login/code";
/// alice's TOTP secret when she has one.
const TOTP_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The echo upstream's answer as asked by `query` (see `respond_with` in tests/it/common).
fn respond_with(query: &str) -> String {
    format!("/respond-with?{query}")
}

/// Every `Cache-Control` line of an answer, in order, byte for byte.
fn cache_control(res: &Resp) -> Vec<&[u8]> {
    res.headers
        .get_all("cache-control")
        .iter()
        .map(|v| v.as_bytes())
        .collect()
}

/// The app's answer reached the client: its status and its body.
fn assert_from_the_app(res: &Resp, status: StatusCode) {
    assert_eq!(res.status, status, "{}", res.text());
    let body: &[u8] = if status == StatusCode::NOT_MODIFIED {
        b""
    } else {
        b"answer"
    };
    assert_eq!(res.body.as_ref(), body);
}

#[tokio::test]
async fn shared_cache_a_signed_in_answer_without_cache_control_is_private_whatever_its_status() {
    let (upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for status in ["200", "201", "301", "304", "308", "404", "410", "500"] {
        let before = upstream.requests();
        let res = get(
            proxy.addr,
            &respond_with(&format!("status={status}")),
            &[("cookie", &cookie)],
        )
        .await;
        assert_from_the_app(&res, status.parse().unwrap());
        assert_eq!(upstream.requests(), before + 1);
        assert_eq!(cache_control(&res), [b"private"], "{status}");
    }
    // An answer the app gave with no session never happens: the request is refused by
    // sessiongate itself (never stored either) and the app sees nothing.
    let before = upstream.requests();
    let res = get(proxy.addr, &respond_with("status=200"), &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(cache_control(&res), [b"no-store"]);
    assert_eq!(upstream.requests(), before, "nothing reached the upstream");
}

#[tokio::test]
async fn shared_cache_an_apps_own_cache_control_is_kept_byte_for_byte() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for (status, lines) in [
        ("200", &["public, max-age=60"][..]),
        ("200", &["no-cache", "max-age=0,  s-maxage=0"][..]),
        ("200", &["PRIVATE"][..]),
        ("301", &["max-age=3600"][..]),
        ("304", &["no-store"][..]),
    ] {
        let query: String = form_urlencoded::Serializer::new(format!("status={status}&"))
            .extend_pairs(lines.iter().map(|l| ("cache-control", l)))
            .finish();
        let res = get(proxy.addr, &respond_with(&query), &[("cookie", &cookie)]).await;
        assert_from_the_app(&res, status.parse().unwrap());
        let sent: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        assert_eq!(cache_control(&res), sent, "{query}");
    }
}

#[tokio::test]
async fn shared_cache_public_paths_are_left_as_the_app_sent_them_with_or_without_a_session() {
    let (upstream, proxy) = start_with_public(&["/pub"]).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for headers in [vec![], vec![("cookie", cookie.as_str())]] {
        let res = get(proxy.addr, "/pub/respond-with?status=200", &headers).await;
        assert_from_the_app(&res, StatusCode::OK);
        assert!(cache_control(&res).is_empty(), "{headers:?}");
        let res = get(
            proxy.addr,
            "/pub/respond-with?cache-control=public%2C+max-age%3D600",
            &headers,
        )
        .await;
        assert_eq!(cache_control(&res), [b"public, max-age=600"]);
    }
    // The same app path off the public prefix, signed in: private.
    let res = get(proxy.addr, "/app/respond-with", &[("cookie", &cookie)]).await;
    assert_from_the_app(&res, StatusCode::OK);
    assert_eq!(cache_control(&res), [b"private"]);
    assert_eq!(upstream.requests(), 5);
}

#[tokio::test]
async fn shared_cache_default_cache_control_can_be_another_value_or_turned_off() {
    let upstream = start_upstream().await;
    for (line, expected) in [
        (
            "default_cache_control = \"private, no-store\"",
            &[&b"private, no-store"[..]][..],
        ),
        (
            "default_cache_control = \"no-store\"",
            &[&b"no-store"[..]][..],
        ),
        ("default_cache_control = \"\"", &[][..]),
    ] {
        let proxy = start_proxy_with(&config_toml(upstream.addr, line, "")).await;
        let cookie = login(&proxy, USER, PASSWORD).await;
        let res = get(
            proxy.addr,
            &respond_with("status=200"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_from_the_app(&res, StatusCode::OK);
        assert_eq!(cache_control(&res), expected, "{line}");
        // The app's own still wins.
        let res = get(
            proxy.addr,
            &respond_with("cache-control=max-age%3D5"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(cache_control(&res), [b"max-age=5"], "{line}");
    }
    let e = sessiongate::Config::from_toml(&config_toml(
        upstream.addr,
        "default_cache_control = \"private\\r\\nx-injected: 1\"",
        "",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("upstream.default_cache_control") && e.contains("header value"),
        "{e}"
    );
}

/// The directives of a Content-Security-Policy: name to sources.
fn directives(csp: &str) -> BTreeMap<&str, Vec<&str>> {
    csp.split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut words = d.split_ascii_whitespace();
            (words.next().unwrap(), words.collect())
        })
        .collect()
}

/// `'sha256-...'` of each `<style>` element of a page, computed here from the body received.
fn style_hashes(html: &str) -> Vec<String> {
    html.split("<style>")
        .skip(1)
        .map(|rest| {
            let css = rest.split("</style>").next().unwrap();
            let digest = Sha256::digest(css.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect()
}

/// A page sessiongate showed: HTML, never sniffed, never framed (CSP and X-Frame-Options),
/// no script from anywhere, no `unsafe-inline` or `unsafe-eval`, and styles allowed only by
/// the hashes of the `<style>` elements the page has.
fn assert_guarded_page(what: &str, res: &Resp, status: StatusCode) {
    assert_eq!(res.status, status, "{what}: {}", res.text());
    assert_eq!(
        res.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(res.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(res.header("cache-control"), Some("no-store"), "{what}");
    let csp = res.header("content-security-policy").unwrap_or_default();
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    let d = directives(csp);
    assert_eq!(d["default-src"], ["'none'"], "{what}: {csp}");
    assert_eq!(d["frame-ancestors"], ["'none'"], "{what}: {csp}");
    assert!(
        d.get("script-src").is_none_or(|s| s == &["'none'"]),
        "{what}: {csp}"
    );
    let hashes = style_hashes(&res.text());
    assert!(!hashes.is_empty(), "{what}: the page is styled");
    assert_eq!(d["style-src"], hashes, "{what}: {csp}");
}

/// A JSON, text or image answer sessiongate wrote is never sniffed as another type either.
fn assert_not_sniffed(what: &str, res: &Resp, status: StatusCode, content_type: &str) {
    assert_eq!(res.status, status, "{what}: {}", res.text());
    assert_eq!(res.header("content-type"), Some(content_type), "{what}");
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[tokio::test]
async fn clickjacking_and_sniffing_the_sign_in_pages_are_unframeable_scriptless_and_never_sniffed()
{
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_auth(
        &config_toml(upstream.addr, "", ""),
        "max_failures = 1\nfailure_window = \"60s\"",
    ))
    .await;
    let page = get(proxy.addr, LOGIN, &[BROWSER]).await;
    assert_guarded_page("sign-in", &page, StatusCode::OK);
    let page = get(proxy.addr, &format!("{LOGIN}?signed_out=1"), &[BROWSER]).await;
    assert!(page.text().contains("You are signed out."));
    assert_guarded_page("signed out", &page, StatusCode::OK);

    let cookie = login(&proxy, USER, PASSWORD).await;
    let page = get(
        proxy.addr,
        "/.sessiongate/sessions",
        &[("cookie", &cookie), BROWSER],
    )
    .await;
    assert!(page.text().contains("<h1>Your sessions</h1>"));
    assert_guarded_page("sessions", &page, StatusCode::OK);
    let page = post_form(
        &proxy,
        "/.sessiongate/sessions/end",
        &cookie,
        &[("session", &"0".repeat(64))],
    )
    .await;
    assert!(page.text().contains("<h1>Session not found</h1>"));
    assert_guarded_page("session not found", &page, StatusCode::NOT_FOUND);

    let wrong = [("username", USER), ("password", "wrong")];
    let page = post_login(&proxy, &wrong, &[]).await;
    assert!(page.text().contains("Invalid username or password."));
    assert_guarded_page("wrong password", &page, StatusCode::UNAUTHORIZED);
    let page = post_login(&proxy, &wrong, &[]).await;
    assert!(page.text().contains("Too many failed attempts."));
    assert_guarded_page("429", &page, StatusCode::TOO_MANY_REQUESTS);

    // API answers: JSON, never sniffed as anything else.
    let api = get(proxy.addr, "/x", &[]).await;
    assert_not_sniffed("401", &api, StatusCode::UNAUTHORIZED, "application/json");
    let api = get(proxy.addr, "/.sessiongate/healthz", &[]).await;
    assert_not_sniffed("healthz", &api, StatusCode::OK, "text/plain; charset=utf-8");
}

#[tokio::test]
async fn clickjacking_and_sniffing_the_code_page_is_unframeable_scriptless_and_never_sniffed() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&format!(
        "{}totp_secret = \"{TOTP_B32}\"\n",
        config_toml(upstream.addr, "", "")
    ))
    .await;
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.header("location"), Some(CODE_PATH), "{}", res.text());
    let pending = cookie_pair(&res);
    let page = get(proxy.addr, CODE_PATH, &[("cookie", &pending), BROWSER]).await;
    assert!(page.text().contains("autocomplete=\"one-time-code\""));
    assert_guarded_page("code", &page, StatusCode::OK);
    let page = post_form(&proxy, CODE_PATH, &pending, &[("code", "x")]).await;
    assert_guarded_page("code, wrong", &page, StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn clickjacking_and_sniffing_the_refusal_and_error_pages_are_unframeable_scriptless_and_never_sniffed()
 {
    let upstream = start_upstream().await;
    // 403 from a rule: the page for a browser, JSON for a script.
    let deny = start_proxy_with(&format!(
        "{}\n[[rules]]\npath = \"/admin\"\ndeny = true\n",
        config_toml(upstream.addr, "", "")
    ))
    .await;
    let cookie = login(&deny, USER, PASSWORD).await;
    let page = get(deny.addr, "/admin", &[("cookie", &cookie), BROWSER]).await;
    assert!(page.text().contains("<h1>Access denied</h1>"));
    assert_guarded_page("403", &page, StatusCode::FORBIDDEN);
    let api = get(deny.addr, "/admin", &[("cookie", &cookie)]).await;
    assert_not_sniffed("403", &api, StatusCode::FORBIDDEN, "application/json");

    // 502 (nothing listens) and 504 (nothing answers).
    let silent = start_silent_upstream().await;
    for (app, status) in [
        (closed_port().await, StatusCode::BAD_GATEWAY),
        (silent, StatusCode::GATEWAY_TIMEOUT),
    ] {
        let proxy = start_proxy_with(&config_toml(app, "timeout = \"300ms\"", "")).await;
        let cookie = login(&proxy, USER, PASSWORD).await;
        let page = get(proxy.addr, "/x", &[("cookie", &cookie), BROWSER]).await;
        assert_guarded_page(status.as_str(), &page, status);
        let api = get(proxy.addr, "/x", &[("cookie", &cookie)]).await;
        assert_not_sniffed(status.as_str(), &api, status, "text/plain; charset=utf-8");
    }

    // 503: a session the store cannot check. The Redis store here has no Redis behind it, and
    // the session cookie is one signed with the same secret by the first sessiongate.
    let no_redis = closed_port().await;
    let unavailable = start_proxy_with(&config_toml(
        upstream.addr,
        "",
        &redis_store(&format!("redis://{no_redis}/0"), "", ""),
    ))
    .await;
    let page = get(unavailable.addr, "/x", &[("cookie", &cookie), BROWSER]).await;
    assert!(page.text().contains("<h1>Service unavailable</h1>"));
    assert_guarded_page("503", &page, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");
}

/// A user's template: its own `<style>`, allowed by its hash at each render, and a `style`
/// attribute, which no hash allows; the logo, an image that cannot be framed or sniffed.
#[tokio::test]
async fn clickjacking_and_sniffing_a_user_template_and_the_logo_are_guarded_too() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("login.html");
    std::fs::write(
        &template,
        "<!doctype html><html lang=\"en\"><head><title>{{ title }}</title><style>h1 { color: {{ accent_color }} }</style></head><body><h1 style=\"color: red\">{{ title }}</h1>{% if error %}<p>{{ error }}</p>{% endif %}<form method=\"post\" action=\"{{ action }}\">{{ hidden_fields }}<input name=\"username\"><input name=\"password\" type=\"password\"><button>Sign in</button></form></body></html>",
    )
    .unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(
        &logo,
        br#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>"#,
    )
    .unwrap();
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&format!(
        "{}\n[login_page]\naccent_color = \"#123456\"\ntemplate = \"{}\"\nlogo = \"{}\"\n",
        config_toml(upstream.addr, "", ""),
        template.display(),
        logo.display()
    ))
    .await;
    let page = get(proxy.addr, LOGIN, &[BROWSER]).await;
    assert!(page.text().contains("h1 { color: #123456 }"));
    assert_guarded_page("own template", &page, StatusCode::OK);
    let page = post_login(&proxy, &[("username", USER), ("password", "wrong")], &[]).await;
    assert_guarded_page(
        "own template, wrong password",
        &page,
        StatusCode::UNAUTHORIZED,
    );

    let logo = get(proxy.addr, "/.sessiongate/logo", &[]).await;
    assert_not_sniffed("logo", &logo, StatusCode::OK, "image/svg+xml");
    assert_eq!(logo.header("x-frame-options"), Some("DENY"));
    let csp = logo.header("content-security-policy").unwrap();
    let d = directives(csp);
    assert_eq!(d["default-src"], ["'none'"], "{csp}");
    assert_eq!(d["frame-ancestors"], ["'none'"], "{csp}");
    assert!(!d.contains_key("script-src"), "{csp}");
}
