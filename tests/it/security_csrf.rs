//! Cross-site request forgery on sessiongate's own forms: a page on another site must not be
//! able to log a visitor in (login CSRF, which plants the attacker's session) or out. Posts
//! need a same-origin browser signal or the signed token of a form the same browser loaded
//! (bound to its sign-in cookie or its session); logout is never a GET side effect.

use crate::common::*;
use http::{Method, StatusCode};

fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// POSTs the login form with exactly `headers` (no Origin added).
async fn post_login_raw(proxy: &Proxy, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    send(
        proxy.addr,
        req_with_body(Method::POST, "/.sessiongate/login", &all, form(fields)),
    )
    .await
}

/// The signed token in a page's hidden `csrf` field.
fn token_in(html: &str) -> String {
    let field = r#"name="csrf" value=""#;
    let start = html.find(field).expect("a csrf field") + field.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// A browser loading the sign-in form: its token, and the `name=value` sign-in cookie the
/// page set, which the token is bound to.
async fn form_token(proxy: &Proxy) -> (String, String) {
    let page = get(proxy.addr, "/.sessiongate/login", &[]).await;
    let cookie = cookie_pair(&page);
    assert!(cookie.contains("-signin="), "{cookie}");
    (token_in(&page.text()), cookie)
}

#[tokio::test]
async fn cross_site_login_posts_are_refused_even_with_a_valid_token() {
    let (_upstream, proxy) = start().await;
    let (token, signin) = form_token(&proxy).await;
    let creds = [
        ("username", USER),
        ("password", PASSWORD),
        ("csrf", token.as_str()),
    ];
    let own = format!("http://{}", proxy.addr);
    let own_other_port = format!("http://127.0.0.1:{}", proxy.addr.port() + 1);
    let lookalike = format!("http://{}.evil.example", proxy.addr.ip());
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("origin", own_other_port.as_str())],
        vec![("origin", lookalike.as_str())],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        // The browser's own signal wins over a matching Origin.
        vec![("sec-fetch-site", "cross-site"), ("origin", own.as_str())],
    ] {
        let mut headers = headers;
        headers.push(("cookie", signin.as_str()));
        let res = post_login_raw(&proxy, &creds, &headers).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(res.set_cookies().is_empty(), "{headers:?}");
        assert!(res.text().contains("cross-site"), "{}", res.text());
    }
    assert_eq!(proxy.app.gate.sessions().len(), 0);
}

#[tokio::test]
async fn without_a_browser_signal_only_a_valid_form_token_logs_in() {
    let (_upstream, proxy) = start().await;
    let creds = [("username", USER), ("password", PASSWORD)];
    for token in [
        "",
        "garbage",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let mut fields = creds.to_vec();
        fields.push(("csrf", token));
        let res = post_login_raw(&proxy, &fields, &[]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(res.text().contains("form token"), "{}", res.text());
    }
    let (_, signin) = form_token(&proxy).await;
    for token in ["", "garbage"] {
        let mut fields = creds.to_vec();
        fields.push(("csrf", token));
        let res = post_login_raw(&proxy, &fields, &[("cookie", &signin)]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(res.text().contains("form token"), "{}", res.text());
    }
    let (token, signin) = form_token(&proxy).await;
    let mut fields = creds.to_vec();
    fields.push(("csrf", &token));
    let res = post_login_raw(&proxy, &fields, &[("cookie", &signin)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());

    // A browser that says same-origin needs no token.
    let res = post_login_raw(&proxy, &creds, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn logout_cannot_be_forced_from_another_site() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;

    // A link, an <img> or a prefetch: GET never logs out.
    for method in [Method::GET, Method::HEAD] {
        let res = send(
            proxy.addr,
            req(
                method.clone(),
                "/.sessiongate/logout",
                &[("cookie", &cookie)],
            ),
        )
        .await;
        assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    // A form on another site posting to logout.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![],
    ] {
        let mut all = vec![("cookie", cookie.as_str())];
        all.extend_from_slice(&headers);
        let res = send(
            proxy.addr,
            req_with_body(Method::POST, "/.sessiongate/logout", &all, ""),
        )
        .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(res.set_cookies().is_empty());
    }
    assert_eq!(proxy.app.gate.sessions().len(), 1, "the session survived");
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );

    // Same origin: logged out.
    let res = send(
        proxy.addr,
        req(
            Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(proxy.app.gate.sessions().len(), 0);
}

#[tokio::test]
async fn login_and_logout_answers_are_never_cached_or_framed() {
    let (_upstream, proxy) = start().await;
    let page = get(proxy.addr, "/.sessiongate/login", &[]).await;
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let ok = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    let bad = post_login(&proxy, &[("username", USER), ("password", "x")], &[]).await;
    let cookie = cookie_pair(&ok);
    let origin = format!("http://{}", proxy.addr);
    let out = send(
        proxy.addr,
        req(
            Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &cookie), ("origin", &origin)],
        ),
    )
    .await;
    for (what, res) in [("login", &ok), ("failed login", &bad), ("logout", &out)] {
        assert_eq!(res.header("cache-control"), Some("no-store"), "{what}");
    }
}

/// A sign-in form's token works only with the sign-in cookie its page set: taken from one
/// browser (or script) and posted from another, or without the cookie, it is refused with
/// 403 and a message that says to load the form in the same browser; nothing is signed in.
#[tokio::test]
async fn a_sign_in_token_replayed_from_another_browser_is_refused() {
    let (upstream, proxy) = start().await;
    let (token_a, cookie_a) = form_token(&proxy).await;
    let (token_b, cookie_b) = form_token(&proxy).await;
    assert_ne!(
        cookie_a, cookie_b,
        "each browser gets its own sign-in cookie"
    );
    let creds = |token: &str| {
        vec![
            ("username", USER.to_string()),
            ("password", PASSWORD.to_string()),
            ("csrf", token.to_string()),
        ]
    };
    let post = async |token: &str, cookie: Option<&str>| {
        let fields = creds(token);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        post_login_raw(&proxy, &fields, &headers).await
    };
    let foreign = post(&token_a, Some(&cookie_b)).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(
        foreign.text().contains("another browser"),
        "{}",
        foreign.text()
    );
    let without = post(&token_a, None).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert!(
        without.text().contains("without the cookie"),
        "{}",
        without.text()
    );
    let made_up = post(
        &token_a,
        Some(&format!("{}=AAAA", cookie_a.split('=').next().unwrap())),
    )
    .await;
    assert_eq!(made_up.status, StatusCode::FORBIDDEN);
    for res in [&foreign, &without, &made_up] {
        assert!(res.set_cookies().is_empty());
    }
    assert_eq!(proxy.app.gate.sessions().len(), 0);

    // The sign-in cookie: random, HttpOnly, scoped to the prefix, as long as a token lasts.
    let page = get(proxy.addr, "/.sessiongate/login", &[]).await;
    let set = &page.set_cookies()[0];
    for attribute in [
        "HttpOnly",
        "Path=/.sessiongate",
        "SameSite=Lax",
        "Secure",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    // A browser that has one keeps it: the page sets none, and binds its token to it.
    let again = get(proxy.addr, "/.sessiongate/login", &[("cookie", &cookie_b)]).await;
    assert!(again.set_cookies().is_empty(), "{:?}", again.set_cookies());
    let token_b2 = token_in(&again.text());
    assert_ne!(token_b2, token_a);

    // Each browser with its own token and cookie signs in.
    for (token, cookie) in [
        (&token_a, &cookie_a),
        (&token_b, &cookie_b),
        (&token_b2, &cookie_b),
    ] {
        let res = post(token, Some(cookie)).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    }
    assert_eq!(proxy.app.gate.sessions().len(), 3);
    assert_eq!(upstream.requests(), 0);
}

/// Sign-out, sign-out-everywhere and ending a session from the sessions page: a token from
/// one session's page is refused with another session's cookie (403, nothing ended), and
/// works with its own. The page holds no session id.
#[tokio::test]
async fn a_sessions_page_token_replayed_from_another_session_is_refused() {
    let (upstream, proxy) = start().await;
    let a = login(&proxy, USER, PASSWORD).await;
    let b = login(&proxy, USER, PASSWORD).await;
    let page_a = get(proxy.addr, "/.sessiongate/sessions", &[("cookie", &a)]).await;
    assert_eq!(page_a.status, StatusCode::OK);
    let html_a = page_a.text();
    assert!(
        !html_a.contains(a.split_once('=').unwrap().1),
        "the page holds the cookie"
    );
    let token_a = token_in(&html_a);
    // The handle of session b, as a's page lists it.
    let page_b = get(proxy.addr, "/.sessiongate/sessions", &[("cookie", &b)])
        .await
        .text();
    let handle = |html: &str| {
        let field = r#"name="session" value=""#;
        let start = html.find(field).expect("a session field") + field.len();
        html[start..start + html[start..].find('"').unwrap()].to_string()
    };
    let handle_of_a = handle(&page_b);
    let post = async |path: &str, cookie: &str, fields: &[(&str, &str)]| {
        send(
            proxy.addr,
            req_with_body(
                Method::POST,
                path,
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", cookie),
                ],
                form(fields),
            ),
        )
        .await
    };
    for (path, fields) in [
        ("/.sessiongate/logout", vec![("csrf", token_a.as_str())]),
        (
            "/.sessiongate/logout",
            vec![("everywhere", "1"), ("csrf", token_a.as_str())],
        ),
        (
            "/.sessiongate/sessions/end",
            vec![
                ("session", handle_of_a.as_str()),
                ("csrf", token_a.as_str()),
            ],
        ),
    ] {
        let res = post(path, &b, &fields).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{path} {fields:?}");
        assert!(res.text().contains("another browser"), "{}", res.text());
        assert!(res.set_cookies().is_empty());
    }
    assert_eq!(proxy.app.gate.sessions().len(), 2, "nothing was ended");
    for cookie in [&a, &b] {
        assert_eq!(status_with(&proxy, cookie).await, StatusCode::OK);
    }

    // From its own session, the same token ends a's session.
    let out = post("/.sessiongate/logout", &a, &[("csrf", &token_a)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text());
    assert_eq!(status_with(&proxy, &a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&proxy, &b).await, StatusCode::OK);
    // Only the three GETs that were served reached the app.
    assert_eq!(upstream.requests(), 3);
}
