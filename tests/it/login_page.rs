//! `[login_page]` over real sockets: the branding appears on the page, the logo is served with
//! a type and a policy that keep an SVG's scripts from running, hostile values and templates
//! cannot inject markup, read files or hang, and every page a person can meet is HTML for a
//! browser and JSON or text for a script.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use sessiongate::Config;

const LOGIN: &str = "/.sessiongate/login";

/// `[login_page]` holding `lines`, after the test config.
fn branded(upstream: std::net::SocketAddr, lines: &str) -> String {
    format!("{}\n[login_page]\n{lines}\n", config_toml(upstream, "", ""))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// The config error for `[login_page]` holding `lines`, within a deadline.
fn refused(lines: &str) -> String {
    let toml = branded("127.0.0.1:9".parse().unwrap(), lines);
    let started = Instant::now();
    let e = Config::from_toml(&toml).expect_err("the config is refused");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusing took {:?}",
        started.elapsed()
    );
    e.to_string()
}

const SVG: &[u8] = br##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><script>alert(1)</script><circle cx="20" cy="20" r="18" fill="#f46800"/></svg>"##;

#[tokio::test]
async fn the_branding_keys_appear_on_the_sign_in_page_and_the_logo_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let logo = write(dir.path(), "logo.svg", SVG);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded(
        upstream.addr,
        &format!(
            "title = \"Sign in to Grafana\"\napp_name = \"Grafana\"\nmessage = \"Ask the ops team for an account.\"\naccent_color = \"#F46800\"\nlogo = \"{logo}\""
        ),
    ))
    .await;
    let page = get(proxy.addr, LOGIN, &[BROWSER]).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("<title>Sign in to Grafana · Grafana</title>"),
        "{html}"
    );
    assert!(html.contains("<h1>Sign in to Grafana</h1>"));
    assert!(html.contains("<p class=\"app-name\">Grafana</p>"));
    assert!(html.contains("<p class=\"message\">Ask the ops team for an account.</p>"));
    // Orange is light: the button text is black.
    assert!(
        html.contains("--accent: #f46800; --accent-text: #000000;"),
        "{html}"
    );
    let src = html
        .split("<img src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the logo is an <img>");
    assert!(src.starts_with("/.sessiongate/logo?v="), "{src}");
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("img-src 'self'")
    );

    let logo = get(proxy.addr, src, &[]).await;
    assert_eq!(logo.status, StatusCode::OK);
    assert_eq!(logo.body.as_ref(), SVG);
    assert_eq!(logo.header("content-type"), Some("image/svg+xml"));
    assert_eq!(
        logo.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
    );
    assert_eq!(logo.header("x-content-type-options"), Some("nosniff"));
    assert!(
        logo.header("cache-control")
            .unwrap()
            .contains("max-age=31536000")
    );
    assert_eq!(upstream.requests(), 0, "the logo is sessiongate's own");
}

#[tokio::test]
async fn a_png_logo_is_served_as_png_and_other_files_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let path = write(dir.path(), "logo.png", &png);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded(upstream.addr, &format!("logo = \"{path}\""))).await;
    let logo = get(proxy.addr, "/.sessiongate/logo", &[]).await;
    assert_eq!(logo.header("content-type"), Some("image/png"));
    assert_eq!(logo.body.as_ref(), &png[..]);

    let gif = write(dir.path(), "logo.gif", b"GIF89a");
    let e = refused(&format!("logo = \"{gif}\""));
    assert!(
        e.contains("login_page.logo") && e.contains(".svg or a .png"),
        "{e}"
    );
    let fake = write(dir.path(), "fake.png", b"<svg/>");
    assert!(refused(&format!("logo = \"{fake}\"")).contains("not a PNG"));
    let big = write(dir.path(), "big.svg", &vec![b' '; 300 * 1024]);
    assert!(refused(&format!("logo = \"{big}\"")).contains("larger than 256 KiB"));
    let e = refused("logo = \"/nonexistent/logo.svg\"");
    assert!(e.contains("login_page.logo: cannot read"), "{e}");

    // Without a logo the endpoint is 404 and no <img> is shown.
    let plain = start_proxy_with(&config_toml(upstream.addr, "", "")).await;
    assert_eq!(
        get(plain.addr, "/.sessiongate/logo", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!get(plain.addr, LOGIN, &[]).await.text().contains("<img"));
}

#[tokio::test]
async fn hostile_config_values_come_out_escaped_or_are_refused() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded(
        upstream.addr,
        "message = \"<script>alert(1)</script>\"\napp_name = \"\\\"><img src=x onerror=alert(1)>\"",
    ))
    .await;
    let html = get(proxy.addr, LOGIN, &[BROWSER]).await.text();
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<img src=x"), "{html}");

    let e = refused("accent_color = \"red; background: url(//evil)\"");
    assert!(e.starts_with("config: login_page.accent_color:"), "{e}");
    assert!(refused("title = \"two\\nlines\"").contains("login_page.title: must be one line"));
    assert!(refused("colour = \"#fff\"").contains("colour"));
}

#[tokio::test]
async fn a_user_template_replaces_the_page_and_keeps_the_hidden_fields() {
    let dir = tempfile::tempdir().unwrap();
    let template = write(
        dir.path(),
        "login.html",
        br#"<!doctype html><html lang="en"><title>{{ title }}</title>
<h1 class="mine">{{ title }}</h1>{% if error %}<p role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">{{ hidden_fields }}
<input name="username" value="{{ username }}"><input name="password" type="password"><button>Go</button></form>"#,
    );
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded(
        upstream.addr,
        &format!("title = \"Acme <admin>\"\ntemplate = \"{template}\""),
    ))
    .await;
    let res = get(proxy.addr, "/.sessiongate/login?rd=/reports", &[BROWSER]).await;
    let html = res.text();
    assert!(
        html.contains("<h1 class=\"mine\">Acme &lt;admin&gt;</h1>"),
        "{html}"
    );
    assert!(html.contains(r#"<input type="hidden" name="rd" value="/reports">"#));
    assert!(html.contains(r#"<input type="hidden" name="csrf" value=""#));
    assert!(html.contains(r#"action="/.sessiongate/login""#));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));

    // The form works: a wrong password refills the name, a right one signs in.
    let wrong = post_login(&proxy, &[("username", "<b>"), ("password", "x")], &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.text().contains("value=\"&lt;b&gt;\""),
        "{}",
        wrong.text()
    );
    assert!(
        wrong
            .text()
            .contains("<p role=\"alert\">Invalid username or password.</p>")
    );
    login(&proxy, USER, PASSWORD).await;
}

#[test]
fn a_template_that_reads_files_loops_recurses_or_drops_the_hidden_fields_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "{{ hidden_fields }}\n{% include \"/etc/passwd\" %}",
            "line 2: template not found",
        ),
        (
            "{{ hidden_fields }}\n{% import \"/etc/hosts\" as h %}",
            "line 2: template not found",
        ),
        (
            "{{ hidden_fields }}\n{% extends \"../../etc/passwd\" %}",
            "template not found",
        ),
        (
            "{{ hidden_fields }}{% for i in range(999999999) %}x{% endfor %}",
            "login.html, line 1:",
        ),
        (
            "{{ hidden_fields }}{% for i in range(9999) %}{% for j in range(9999) %}{{ i }}{% endfor %}{% endfor %}",
            "out of fuel",
        ),
        (
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ hidden_fields }}{{ f(0) }}",
            "login.html, line 1:",
        ),
        (
            "<form>{{ title }}</form>",
            "must output {{ hidden_fields }}",
        ),
        (
            "{{ hidden_fields }}\n\n{% if %}",
            "login.html, line 3: syntax error",
        ),
        ("{{ hidden_fields }}{{ no_such_variable }}", "undefined"),
    ];
    for (source, expected) in cases {
        let path = write(dir.path(), "login.html", source.as_bytes());
        let e = refused(&format!("template = \"{path}\""));
        assert!(
            e.starts_with("config: login_page.template: ") && e.contains(&path),
            "{source}: {e}"
        );
        assert!(e.contains(expected), "{source}: {e}");
    }
    assert!(
        refused("template = \"/nonexistent.html\"").contains("login_page.template: cannot read")
    );
}

#[tokio::test]
async fn a_template_that_fails_only_at_request_time_falls_back_to_the_built_in_page() {
    let dir = tempfile::tempdir().unwrap();
    // Loops only with an error shown: more than the fuel allows, past what the load tried.
    let template = write(
        dir.path(),
        "login.html",
        b"{{ hidden_fields }}{% if username == 'loop' %}{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}{% endif %}",
    );
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded(
        upstream.addr,
        &format!("template = \"{template}\""),
    ))
    .await;
    let started = Instant::now();
    let res = post_login(&proxy, &[("username", "loop"), ("password", "x")], &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(
        res.text().contains("<h1>Sign in</h1>"),
        "the built-in page: {}",
        res.text()
    );
    assert!(res.text().contains("name=\"csrf\""));
}

#[tokio::test]
async fn after_signing_out_the_sign_in_page_says_so() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", "")).await;
    let res = get(proxy.addr, "/.sessiongate/login?signed_out=1", &[BROWSER]).await;
    assert!(
        res.text()
            .contains("<p class=\"notice\" role=\"status\">You are signed out.</p>")
    );
    assert!(
        !get(proxy.addr, LOGIN, &[BROWSER])
            .await
            .text()
            .contains("signed out")
    );
}

#[tokio::test]
async fn refusals_are_pages_for_browsers_and_json_or_text_for_scripts() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_auth(
        &branded(upstream.addr, "app_name = \"Acme\""),
        "max_failures = 1\nfailure_window = \"60s\"",
    ))
    .await;
    // 403 from a rule.
    let deny = start_proxy_with(&format!(
        "{}\n[login_page]\napp_name = \"Acme\"\n[[rules]]\npath = \"/admin\"\ndeny = true\n",
        config_toml(upstream.addr, "", "")
    ))
    .await;
    let cookie = login(&deny, USER, PASSWORD).await;
    let page = get(deny.addr, "/admin", &[("cookie", &cookie), BROWSER]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("<h1>Access denied</h1>"));
    assert!(page.text().contains("<p class=\"app-name\">Acme</p>"));
    assert!(page.header("content-security-policy").is_some());
    let api = get(deny.addr, "/admin", &[("cookie", &cookie)]).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.header("content-type"), Some("application/json"));

    // 429 on the sign-in page, with the wait.
    post_login(&proxy, &[("username", USER), ("password", "x")], &[]).await;
    let limited = post_login(&proxy, &[("username", USER), ("password", "x")], &[]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
    let html = limited.text();
    assert!(
        html.contains("role=\"alert\">Too many failed attempts. Try again in "),
        "{html}"
    );
    assert!(html.contains("<p class=\"app-name\">Acme</p>"));

    // 502 and 504: a page for a browser, nothing about the upstream's address or the error.
    let down = closed_port().await;
    let silent = start_silent_upstream().await;
    for (upstream, status, heading, text) in [
        (
            down,
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "could not be reached",
        ),
        (
            silent,
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway timeout",
            "did not answer in time",
        ),
    ] {
        let proxy = start_proxy_with(&config_toml(upstream, "timeout = \"300ms\"", "")).await;
        let cookie = login(&proxy, USER, PASSWORD).await;
        let page = get(proxy.addr, "/x", &[("cookie", &cookie), BROWSER]).await;
        assert_eq!(page.status, status);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let html = page.text();
        assert!(html.contains(&format!("<h1>{heading}</h1>")), "{html}");
        assert!(html.contains(text), "{html}");
        assert!(!html.contains(&upstream.port().to_string()), "{html}");
        assert_eq!(page.header("cache-control"), Some("no-store"));
        let api = get(proxy.addr, "/x", &[("cookie", &cookie)]).await;
        assert_eq!(api.status, status);
        assert_eq!(
            api.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(api.text().contains(text));
    }
}

#[tokio::test]
async fn a_reload_puts_new_branding_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let file = dir.path().join("sessiongate.toml");
    std::fs::write(&file, branded(upstream.addr, "title = \"Old\"")).unwrap();
    let proxy = start_proxy_from(Config::load(&file).unwrap()).await;
    assert!(
        get(proxy.addr, LOGIN, &[])
            .await
            .text()
            .contains("<h1>Old</h1>")
    );

    std::fs::write(&file, branded(upstream.addr, "title = \"New\"")).unwrap();
    let reloaded = proxy.app.reload().await.unwrap();
    assert!(
        reloaded.restart_only.is_empty(),
        "{:?}",
        reloaded.restart_only
    );
    assert!(
        get(proxy.addr, LOGIN, &[])
            .await
            .text()
            .contains("<h1>New</h1>")
    );

    // A template that does not load is refused whole; the pages in use stay.
    let bad = write(dir.path(), "bad.html", b"{% if %}");
    std::fs::write(
        &file,
        branded(
            upstream.addr,
            &format!("title = \"Bad\"\ntemplate = \"{bad}\""),
        ),
    )
    .unwrap();
    let e = proxy.app.reload().await.unwrap_err().to_string();
    assert!(
        e.contains("login_page.template") && e.contains("bad.html, line 1"),
        "{e}"
    );
    assert!(
        get(proxy.addr, LOGIN, &[])
            .await
            .text()
            .contains("<h1>New</h1>")
    );
}
