//! Cross-site request forgery on sessiongate's own forms: a page on another site must not be
//! able to log a visitor in (login CSRF, which plants the attacker's session) or out. Posts
//! need a same-origin browser signal or the signed token from the login form; logout is
//! never a GET side effect.

mod common;

use common::*;
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

/// The signed token from the login form's hidden `csrf` field.
async fn form_token(proxy: &Proxy) -> String {
    let html = get(proxy.addr, "/.sessiongate/login", &[]).await.text();
    let field = r#"name="csrf" value=""#;
    let start = html.find(field).expect("a csrf field") + field.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn cross_site_login_posts_are_refused_even_with_a_valid_token() {
    let (_upstream, proxy) = start().await;
    let token = form_token(&proxy).await;
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
    let token = form_token(&proxy).await;
    let mut fields = creds.to_vec();
    fields.push(("csrf", &token));
    let res = post_login_raw(&proxy, &fields, &[]).await;
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
