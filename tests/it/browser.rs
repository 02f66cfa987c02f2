//! The login page in a real browser: Debian's headless chromium, driven through chromedriver
//! (WebDriver), against sessiongate and the echo upstream on loopback ports.
//!
//! It proves what the raw-HTTP tests cannot: that a real browser follows the redirect to the
//! form, submits it (CSRF checks pass with the Origin / Sec-Fetch-Site headers chromium sends
//! on its own), shows the error on a wrong password, stores the `__Host-` session cookie with
//! the default config (Secure) over http on 127.0.0.1, keeps it away from JavaScript
//! (HttpOnly), sends it back so the upstream sees the user but never the cookie, and that
//! logging out with a browser-posted form ends the session.
//!
//! Needs `chromium` and `chromedriver` on PATH: `tests/install-deps.sh` installs them. Without
//! them the test fails rather than skips, so a machine that cannot run it never looks green.
//! The browser itself and the helpers shared with the other browser tests are in
//! `browser_harness`.

use std::path::PathBuf;
use std::time::Instant;

use crate::browser_harness::*;
use crate::common;
use crate::common::*;
use fantoccini::{Client, Locator};
use serde_json::json;

const PROTECTED: &str = "/reports/q3?x=1";
const LOGIN_PATH: &str = "/.sessiongate/login";
const LOGOUT_PATH: &str = "/.sessiongate/logout";

/// Asserts the browser shows the login form, whose hidden `rd` returns to `rd`.
async fn assert_on_login_form(client: &Client, rd: &str) {
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), LOGIN_PATH, "not on the login form: {url}");
    for field in ["username", "password", "rd", "csrf"] {
        client
            .find(Locator::Css(&format!("form input[name={field}]")))
            .await
            .unwrap_or_else(|e| panic!("no {field} field on the login form ({e})"));
    }
    let hidden = client
        .find(Locator::Css("input[name=rd]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap();
    assert_eq!(hidden.as_deref(), Some(rd), "the form's return address");
}

/// Types into the login form and clicks its button, as a person would.
async fn submit_login(client: &Client, user: &str, password: &str) {
    submit_form(client, &[("username", user), ("password", password)]).await;
}

/// Types each value into the page's input of that name, as a person would, and presses the
/// form's submit button.
async fn submit_form(client: &Client, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let input = client
            .find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    client
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn login_and_logout_in_headless_chromium() {
    let started = Instant::now();
    // The default config: secure = true, so the cookie is `__Host-sessiongate; Secure`. That
    // is what users run, and chromium accepts Secure cookies from http://127.0.0.1 because it
    // counts loopback as a potentially trustworthy origin.
    let (upstream, proxy) = start().await;
    assert!(proxy.app.config.session.secure);
    in_chromium(|client| async move { scenario(&client, &upstream, &proxy).await }).await;
    eprintln!("browser test took {:?}", started.elapsed());
}

async fn scenario(client: &Client, upstream: &Upstream, proxy: &Proxy) {
    let cookie_name = proxy.cookie_name().to_string();
    assert!(cookie_name.starts_with("__Host-"), "{cookie_name}");

    // 1. A protected page without a session: the browser is sent to the form.
    client.goto(&proxy.url(PROTECTED)).await.unwrap();
    let url = wait_for_path(client, LOGIN_PATH).await;
    let rd: Vec<_> = url
        .query_pairs()
        .filter(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(
        rd,
        vec![PROTECTED],
        "the login URL carries the return address: {url}"
    );
    assert_on_login_form(client, PROTECTED).await;
    assert_eq!(client.title().await.unwrap(), "Sign in");
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream without a session"
    );

    // 2. A wrong password: the form again, with the message, and no cookie but the sign-in
    // cookie the sign-in page set (its form token is bound to it), scoped to the prefix.
    submit_login(client, USER, "not-the-password").await;
    let error = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("p.error[role=alert]"))
        .await
        .expect("an error message after a wrong password");
    assert_eq!(error.text().await.unwrap(), "Invalid username or password.");
    assert_on_login_form(client, PROTECTED).await;
    let cookies = client.get_all_cookies().await.unwrap();
    match &cookies[..] {
        [signin] => {
            assert!(signin.name().ends_with("-signin"), "{signin}");
            assert_eq!(signin.path(), Some("/.sessiongate"), "{signin}");
            assert_eq!(signin.http_only(), Some(true), "{signin}");
        }
        _ => panic!("only the sign-in cookie after a failed login: {cookies:?}"),
    }
    assert_eq!(proxy.app.gate.sessions().len(), 0);

    // 3. The right password: back to the page first asked for, as alice.
    submit_login(client, USER, PASSWORD).await;
    let landed = wait_for_path(client, "/reports/q3").await;
    assert_eq!(landed.as_str(), proxy.url(PROTECTED));
    let echo = page_json(client).await;
    assert_eq!(echo["uri"], PROTECTED);
    assert_eq!(upstream_header(&echo, "x-forwarded-user"), vec![USER]);
    assert_eq!(proxy.app.gate.sessions().len(), 1);

    // 4. The browser holds the session cookie with the attributes sessiongate set, and
    // JavaScript cannot read it.
    let session = assert_session_cookie_kept(client, &echo, &cookie_name).await;
    assert_eq!(session.path(), Some("/"), "{session}");
    assert_eq!(
        session.same_site(),
        Some(cookie::SameSite::Lax),
        "{session}"
    );
    // A script-visible cookie of the app's own, so that `document.cookie` has something to
    // show and the upstream has a cookie header to strip the session from.
    let visible = client
        .execute(
            "document.cookie = 'theme=dark; path=/'; return document.cookie",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        visible, "theme=dark",
        "document.cookie shows only the app's cookie"
    );
    client.refresh().await.unwrap();
    wait_for_path(client, "/reports/q3").await;
    let echo = page_json(client).await;
    assert_eq!(upstream_header(&echo, "x-forwarded-user"), vec![USER]);
    assert_eq!(
        upstream_header(&echo, "cookie"),
        vec!["theme=dark"],
        "the browser sent both cookies; the upstream got the app's only"
    );

    // 5. Logout the way a page's logout button does it: a form POST, so chromium adds its own
    // Origin and Sec-Fetch-Site headers. The form carries no CSRF token, so sessiongate lets it
    // through only if it reads those headers as same-origin; otherwise it answers 403 and the
    // browser never reaches the login page below.
    client
        .execute(
            "const f = document.createElement('form');
             f.method = 'post';
             f.action = arguments[0];
             document.body.appendChild(f);
             f.submit();",
            vec![json!(LOGOUT_PATH)],
        )
        .await
        .unwrap();
    let after_logout = wait_for_path(client, LOGIN_PATH).await;
    assert_eq!(after_logout.query(), Some("signed_out=1"), "{after_logout}");
    assert_eq!(
        text_of(client, "p.notice[role=status]").await.as_deref(),
        Some("You are signed out.")
    );
    assert_eq!(
        proxy.app.gate.sessions().len(),
        0,
        "the session is gone server-side"
    );
    let cookies = client.get_all_cookies().await.unwrap();
    assert!(
        cookies.iter().all(|c| c.name() != cookie_name),
        "the browser dropped the session cookie: {cookies:?}"
    );

    // 6. The protected page wants a login again.
    client.goto(&proxy.url(PROTECTED)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    assert_on_login_form(client, PROTECTED).await;
    assert!(client.find(Locator::Css("p.error")).await.is_err());
}

/// A signed-in user whom a rule refuses: the access-denied page (no loop back to the sign-in
/// form), and its sign-out button ends the session as a person would click it.
#[tokio::test]
async fn a_refused_user_sees_the_access_denied_page_and_signs_out_in_headless_chromium() {
    let upstream = start_upstream().await;
    let rules = ADMINS_RULE;
    let proxy = start_proxy_with(&team_config(upstream.addr, "", rules)).await;
    in_chromium(|client| async move { refused(&client, &upstream, &proxy).await }).await;
}

async fn refused(client: &Client, upstream: &Upstream, proxy: &Proxy) {
    client.goto(&proxy.url("/admin/settings")).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    assert_on_login_form(client, "/admin/settings").await;
    submit_login(client, "bob", BOB_PASSWORD).await;

    // Back on the page asked for (not redirected to the sign-in page), which says who is
    // signed in and that it is off limits. The sign-in page has a `main h1` too, so the path
    // is waited for first: the click returns before its navigation has finished.
    wait_for_path(client, "/admin/settings").await;
    let heading = client
        .find(Locator::Css("main h1"))
        .await
        .expect("the access-denied page");
    assert_eq!(heading.text().await.unwrap(), "Access denied");
    assert_eq!(client.title().await.unwrap(), "Access denied");
    let text = client
        .find(Locator::Css("main p"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        "Signed in as bob; you do not have access to this page."
    );
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");
    assert_eq!(proxy.app.gate.sessions().len(), 1);

    // Sign out, to sign in as someone else.
    client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    assert_eq!(proxy.app.gate.sessions().len(), 0, "signed out server-side");
}

/// "Your sessions" with the Redis store, as a person uses it: the page lists this browser and
/// a session opened elsewhere (a script), the other one's button ends it, and "Sign out
/// everywhere" ends them all and lands on the sign-in page.
#[tokio::test]
async fn the_sessions_page_in_headless_chromium_with_the_redis_store() {
    let redis = common::redis::RedisServer::start(Default::default()).await;
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&common::redis::redis_config(
        upstream.addr,
        &redis.url(),
        "",
    ))
    .await;
    in_chromium(|client| async move { sessions(&client, &proxy).await }).await;
}

/// The rows of the sessions table, as their cells' text, or `None` while the page is being
/// replaced: a button's POST redirects back to the same path, so the old page's rows can go
/// stale between finding them and reading them. Callers poll it with [`wait_until`].
async fn session_rows(client: &Client) -> Option<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for row in client.find_all(Locator::Css("tbody tr")).await.ok()? {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.ok()? {
            cells.push(cell.text().await.ok()?);
        }
        rows.push(cells);
    }
    Some(rows)
}

async fn sessions(client: &Client, proxy: &Proxy) {
    let script = {
        let res = post_login(
            proxy,
            &[("username", USER), ("password", PASSWORD)],
            &[("user-agent", "curl/8.5.0")],
        )
        .await;
        cookie_pair(&res)
    };
    client
        .goto(&proxy.url("/.sessiongate/sessions"))
        .await
        .unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    submit_login(client, USER, PASSWORD).await;
    wait_for_path(client, "/.sessiongate/sessions").await;
    assert_eq!(client.title().await.unwrap(), "Your sessions");
    assert_styled(client, "the sessions page").await;
    let rows = wait_until("the page shows both sessions", || async {
        session_rows(client).await.filter(|rows| rows.len() == 2)
    })
    .await;
    let this = rows
        .iter()
        .find(|r| r[0].contains("(this browser)"))
        .expect("this browser's row");
    assert_eq!(this[3], "Chrome on Linux", "{rows:?}");
    assert!(rows.iter().any(|r| r[3] == "curl"), "{rows:?}");

    // The other session's button.
    client
        .find(Locator::Css(
            "form[action='/.sessiongate/sessions/end'] button",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the page shows one session", || async {
        (client.current_url().await.ok()?.path() == "/.sessiongate/sessions"
            && session_rows(client).await?.len() == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        status_with(proxy, &script).await,
        http::StatusCode::UNAUTHORIZED,
        "the script's session ended"
    );

    // Sign out everywhere.
    let another = login(proxy, USER, PASSWORD).await;
    client.refresh().await.unwrap();
    wait_until("the page shows two sessions", || async {
        (session_rows(client).await?.len() == 2).then_some(())
    })
    .await;
    client
        .find(Locator::XPath("//button[text()='Sign out everywhere']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    assert_eq!(
        status_with(proxy, &another).await,
        http::StatusCode::UNAUTHORIZED
    );
    client
        .goto(&proxy.url("/.sessiongate/sessions"))
        .await
        .unwrap();
    wait_for_path(client, LOGIN_PATH).await;
}

/// A page of the app opens a WebSocket through sessiongate, sees its message echoed, and sees
/// the socket closed when the user signs out (from that page, as a logout button would).
#[tokio::test]
async fn a_websocket_from_the_apps_page_echoes_and_closes_at_sign_out_in_headless_chromium() {
    let upstream = common::ws::start_ws_upstream().await;
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", "")).await;
    in_chromium(|client| async move { websocket(&client, &proxy).await }).await;
}

async fn websocket(client: &Client, proxy: &Proxy) {
    client.goto(&proxy.url("/page")).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    submit_login(client, USER, PASSWORD).await;
    wait_for_path(client, "/page").await;
    wait_until("the socket opens and the echo arrives", || async {
        let state = text_of(client, "#state").await?;
        let messages = text_of(client, "#messages").await?;
        (state == "open" && messages.contains("hello from the page")).then_some(())
    })
    .await;
    assert_eq!(proxy.app.gate.tunnels().len(), 1);
    // Sign out from the page with a same-origin POST; the page stays to watch its socket.
    client
        .execute(
            "return fetch(arguments[0], { method: 'POST' }).then(r => r.status)",
            vec![json!(LOGOUT_PATH)],
        )
        .await
        .unwrap();
    wait_until("the socket is closed", || async {
        (text_of(client, "#state").await? == "closed").then_some(())
    })
    .await;
    assert_eq!(proxy.app.gate.sessions().len(), 0, "signed out");
}

/// An SVG logo for the branded pages (a circle and a bar).
const LOGO_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48" viewBox="0 0 48 48"><circle cx="24" cy="24" r="22" fill="#f46800"/><rect x="14" y="21" width="20" height="6" rx="3" fill="#fff"/></svg>"##;

/// A branded sign-in page (logo, app name, message, accent), limited to one failure so the
/// second wrong password is 429; `upstream` is where signed-in requests go, `rules` more
/// tables.
fn branded_config(upstream: std::net::SocketAddr, logo: &std::path::Path, rules: &str) -> String {
    let base = with_auth(
        &config_toml(upstream, "timeout = \"2s\"", ""),
        "max_failures = 1\nfailure_window = \"60s\"",
    );
    format!(
        "{base}\n[login_page]\ntitle = \"Sign in to Grafana\"\napp_name = \"Grafana\"\nmessage = \"Ask the ops team for an account.\"\naccent_color = \"#f46800\"\nlogo = \"{}\"\n{rules}",
        logo.display()
    )
}

/// Signs in on the form the browser is on, and waits for `path`.
async fn sign_in_to(client: &Client, proxy: &Proxy, path: &str) {
    client.goto(&proxy.url(path)).await.unwrap();
    let url = wait_for_path_or_login(client, path).await;
    if url.path() == LOGIN_PATH {
        submit_login(client, USER, PASSWORD).await;
        wait_for_path(client, path).await;
    }
}

async fn wait_for_path_or_login(client: &Client, path: &str) -> url::Url {
    wait_until(
        &format!("the browser reaching {path} or the sign-in page"),
        || async {
            let url = client.current_url().await.ok()?;
            let ready = client
                .execute("return document.readyState", vec![])
                .await
                .ok()?;
            ((url.path() == path || url.path() == LOGIN_PATH) && ready == "complete").then_some(url)
        },
    )
    .await
}

/// Every page a person can meet passes axe-core's WCAG 2.1 A and AA rules, in light and dark:
/// the sign-in page (plain, signed out, with an error), 429, 502 and 403.
#[tokio::test]
async fn the_pages_pass_axe_core_in_light_and_dark_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(&logo, LOGO_SVG).unwrap();
    let upstream = start_upstream().await;
    let login_proxy = start_proxy_with(&branded_config(upstream.addr, &logo, "")).await;
    // No app behind this one: /x is 502; a rule makes /admin 403.
    let down = closed_port().await;
    let error_proxy = start_proxy_with(&branded_config(
        down,
        &logo,
        &format!(
            "\n{}[[rules]]\npath = \"/admin\"\nallow = [\"bob\"]\n",
            bob_table()
        ),
    ))
    .await;
    let axe = axe_source();
    in_chromium(|client| async move {
        for scheme in ["light", "dark"] {
            color_scheme(&client, scheme).await;
            let dark = client
                .execute(
                    "return matchMedia('(prefers-color-scheme: dark)').matches",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(dark, scheme == "dark", "the emulated colour scheme");

            client.goto(&login_proxy.url(LOGIN_PATH)).await.unwrap();
            wait_for_path(&client, LOGIN_PATH).await;
            assert_accessible(&client, &axe, &format!("sign-in page, {scheme}")).await;

            client
                .goto(&login_proxy.url("/.sessiongate/login?signed_out=1"))
                .await
                .unwrap();
            wait_for_path(&client, LOGIN_PATH).await;
            assert_accessible(&client, &axe, &format!("signed-out page, {scheme}")).await;

            // A wrong password from another name each time, so the second one is 429 by
            // address whichever scheme runs first.
            submit_login(&client, &format!("nobody-{scheme}"), "wrong").await;
            client
                .wait()
                .at_most(STEP)
                .for_element(Locator::Css("p.error[role=alert]"))
                .await
                .unwrap();
            assert_accessible(&client, &axe, &format!("sign-in error, {scheme}")).await;
            submit_login(&client, &format!("nobody-{scheme}"), "wrong").await;
            wait_until("the 429 page", || async {
                let text = text_of(&client, "p.error").await?;
                text.starts_with("Too many failed attempts").then_some(())
            })
            .await;
            assert_accessible(&client, &axe, &format!("429 page, {scheme}")).await;

            sign_in_to(&client, &error_proxy, "/x").await;
            assert_eq!(
                text_of(&client, "main h1").await.as_deref(),
                Some("Bad gateway")
            );
            assert_accessible(&client, &axe, &format!("502 page, {scheme}")).await;

            client.goto(&error_proxy.url("/admin")).await.unwrap();
            wait_for_path(&client, "/admin").await;
            assert_eq!(
                text_of(&client, "main h1").await.as_deref(),
                Some("Access denied")
            );
            assert!(
                client.find(Locator::Css("main form button")).await.is_ok(),
                "sign out"
            );
            assert_accessible(&client, &axe, &format!("403 page, {scheme}")).await;
        }
    })
    .await;
}

/// A person with a second factor signs in: password, then the code page (which passes axe-core
/// in light and dark, with and without an error), a wrong code, then the code of the moment,
/// typed as a person would; only then does the app see a request, with her name.
#[tokio::test]
async fn password_then_totp_code_in_headless_chromium_and_the_code_page_passes_axe_core() {
    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(&logo, LOGO_SVG).unwrap();
    let upstream = start_upstream().await;
    let toml = format!(
        "{}totp_secret = \"{SECRET}\"\n\n[login_page]\ntitle = \"Sign in to Grafana\"\naccent_color = \"#f46800\"\nlogo = \"{}\"\n",
        config_toml(upstream.addr, "", ""),
        logo.display()
    );
    let proxy = start_proxy_with(&toml).await;
    let axe = axe_source();
    let totp = sessiongate::credentials::totp::TotpSecret::from_base32(SECRET).unwrap();
    const CODE_PATH: &str = "/.sessiongate/login/code";
    in_chromium(|client| async move {
        client.goto(&proxy.url("/app")).await.unwrap();
        wait_for_path(&client, LOGIN_PATH).await;
        submit_login(&client, USER, PASSWORD).await;
        wait_for_path(&client, CODE_PATH).await;
        assert_eq!(
            upstream.requests(),
            0,
            "nothing reaches the app after the password"
        );
        let input = client.find(Locator::Css("input[name=code]")).await.unwrap();
        assert_eq!(
            input.attr("autocomplete").await.unwrap().as_deref(),
            Some("one-time-code")
        );
        for scheme in ["light", "dark"] {
            color_scheme(&client, scheme).await;
            assert_accessible(&client, &axe, &format!("code page, {scheme}")).await;
        }
        color_scheme(&client, "light").await;

        // A code far from the current ones: wrong whatever the clock says.
        let now = sessiongate::credentials::totp::unix_now();
        let near: Vec<String> = (0..5).map(|i| totp.code_at(now + i * 30 - 60)).collect();
        let wrong = (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| !near.contains(c))
            .unwrap();
        submit_form(&client, &[("code", &wrong)]).await;
        client
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css("p.error[role=alert]"))
            .await
            .unwrap();
        for scheme in ["light", "dark"] {
            color_scheme(&client, scheme).await;
            assert_accessible(&client, &axe, &format!("code page with an error, {scheme}")).await;
        }
        assert_eq!(upstream.requests(), 0);

        // Computed just before typing it; one step of skew covers a step boundary meanwhile.
        let code = totp.code_at(sessiongate::credentials::totp::unix_now());
        submit_form(&client, &[("code", &code)]).await;
        wait_for_path(&client, "/app").await;
        let echo = page_json(&client).await;
        assert_eq!(upstream_header(&echo, "x-forwarded-user"), vec![USER]);
    })
    .await;
}

/// A user's sign-in template with its own `<style>`: chromium applies it, and the part of it
/// that only an error shows too (hashed at each render), but not a `style` attribute, which no
/// hash allows: a style slipped into a page does not apply.
#[tokio::test]
async fn a_user_templates_own_style_applies_and_style_attributes_do_not_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("login.html");
    std::fs::write(
        &template,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
h1 { color: rgb(1, 2, 3) }
</style>
{% if error %}<style>.error { color: rgb(4, 5, 6) }</style>{% endif %}
</head><body><main>
<h1>{{ title }}</h1>
<p id="attribute" style="color: rgb(7, 8, 9)">Styled by an attribute.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">{{ hidden_fields }}
<label>Username <input name="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button>
</form></main></body></html>
"#,
    )
    .unwrap();
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&format!(
        "{}\n[login_page]\ntemplate = \"{}\"\n",
        config_toml(upstream.addr, "", ""),
        template.display()
    ))
    .await;
    in_chromium(|client| async move {
        let color = |css: &'static str| {
            let client = client.clone();
            async move {
                client
                    .execute(
                        &format!("return getComputedStyle(document.querySelector('{css}')).color"),
                        vec![],
                    )
                    .await
                    .unwrap()
            }
        };
        client.goto(&proxy.url(LOGIN_PATH)).await.unwrap();
        wait_for_path(&client, LOGIN_PATH).await;
        assert_eq!(color("h1").await, "rgb(1, 2, 3)", "the template's <style>");
        assert_ne!(
            color("#attribute").await,
            "rgb(7, 8, 9)",
            "a style attribute"
        );

        submit_login(&client, USER, "wrong").await;
        client
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css("p.error[role=alert]"))
            .await
            .unwrap();
        assert_eq!(
            color("p.error").await,
            "rgb(4, 5, 6)",
            "the error's <style>"
        );
        assert_eq!(color("h1").await, "rgb(1, 2, 3)");
        assert_ne!(color("#attribute").await, "rgb(7, 8, 9)");
    })
    .await;
    assert_eq!(upstream.requests(), 0);
}

/// Writes docs/sign-in-{light,dark}{,-360}.png: the branded sign-in page at 1280 x 800 and
/// 360 px wide. Run with `SESSIONGATE_SCREENSHOTS=1 cargo test --test it browser:: -- --ignored`.
#[tokio::test]
#[ignore = "writes the README's screenshots; run with SESSIONGATE_SCREENSHOTS=1"]
async fn screenshots_of_the_sign_in_page() {
    if std::env::var_os("SESSIONGATE_SCREENSHOTS").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(&logo, LOGO_SVG).unwrap();
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&branded_config(upstream.addr, &logo, "")).await;
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    in_chromium(|client| async move {
        for (scheme, width, height, suffix) in [
            ("light", 1280, 800, ""),
            ("dark", 1280, 800, ""),
            ("light", 360, 740, "-360"),
            ("dark", 360, 740, "-360"),
        ] {
            color_scheme(&client, scheme).await;
            viewport(&client, width, height).await;
            client.goto(&proxy.url(LOGIN_PATH)).await.unwrap();
            wait_for_path(&client, LOGIN_PATH).await;
            let png = client.screenshot().await.unwrap();
            std::fs::write(docs.join(format!("sign-in-{scheme}{suffix}.png")), png).unwrap();
        }
    })
    .await;
}
