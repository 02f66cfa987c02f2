//! The forward-auth endpoints called directly over real sockets, as an edge proxy calls them:
//! answers per decision, each endpoint reading only its own proxy's headers, normalization,
//! trusted callers only; and the settings that come with forward-auth (`auth.redirect_hosts`,
//! `session.cookie_domain`, running without an upstream).

use crate::common::*;
use http::StatusCode;

const NGINX: &str = "/.sessiongate/auth/nginx";
const FORWARD: &str = "/.sessiongate/auth/forward";

/// A sessiongate that trusts the test client as its edge proxy, with `auth` lines in [auth].
async fn start_auth(auth: &str, server: &str) -> Proxy {
    let toml = with_server(
        &team_config(
            "127.0.0.1:9".parse().unwrap(),
            auth,
            &format!("{ADMINS_RULE}{GRAFANA_RULE}"),
        ),
        server,
    );
    start_proxy_with(&toml).await
}

async fn trusted(auth: &str) -> Proxy {
    start_auth(auth, "trusted_proxies = [\"127.0.0.1\"]").await
}

fn nginx_headers<'a>(method: &'a str, uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("x-original-method", method), ("x-original-uri", uri)]
}

fn forward_headers<'a>(method: &'a str, host: &'a str, uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", host),
        ("x-forwarded-uri", uri),
    ]
}

async fn ask(
    proxy: &Proxy,
    endpoint: &str,
    headers: &[(&str, &str)],
    cookie: Option<&str>,
) -> Resp {
    let mut all = headers.to_vec();
    if let Some(c) = cookie {
        all.push(("cookie", c));
    }
    get(proxy.addr, endpoint, &all).await
}

#[tokio::test]
async fn nginx_endpoint_answers_200_with_identity_401_with_location_and_403_never_302() {
    let proxy = trusted("public_paths = [\"/public\"]").await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;

    let res = ask(
        &proxy,
        NGINX,
        &nginx_headers("GET", "/admin/x?y=1"),
        Some(&alice),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some("alice"));
    assert_eq!(res.header("x-forwarded-groups"), Some("admins,ops"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    // No body: nginx does not read one and would close the connection over it.
    assert!(res.body.is_empty(), "{}", res.text());
    assert_eq!(res.header("content-length"), Some("0"));

    // Without a session: 401 with where to sign in, for browsers too (nginx's error_page
    // does the redirect).
    for headers in [nginx_headers("GET", "/admin/x?y=1"), {
        let mut h = nginx_headers("GET", "/admin/x?y=1");
        h.push(BROWSER);
        h
    }] {
        let res = ask(&proxy, NGINX, &headers, None).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.header("location"),
            Some("/.sessiongate/login?rd=%2Fadmin%2Fx%3Fy%3D1")
        );
        assert!(res.body.is_empty());
    }

    let res = ask(&proxy, NGINX, &nginx_headers("GET", "/admin"), Some(&bob)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.is_empty());
    assert_eq!(res.header("x-forwarded-user"), None);

    // Public: 200, with both headers present and empty without a session.
    let res = ask(&proxy, NGINX, &nginx_headers("POST", "/public/hook"), None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some(""));
    assert_eq!(res.header("x-forwarded-groups"), Some(""));
    let res = ask(
        &proxy,
        NGINX,
        &nginx_headers("GET", "/public/x"),
        Some(&bob),
    )
    .await;
    assert_eq!(res.header("x-forwarded-user"), Some("bob"));
    assert_eq!(res.header("x-forwarded-groups"), Some(""));

    // The sign-in page itself is open, or a proxy asking about every path would loop.
    let res = ask(
        &proxy,
        NGINX,
        &nginx_headers("GET", "/.sessiongate/login?rd=%2F"),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some(""));
}

#[tokio::test]
async fn the_original_path_is_normalized_and_its_query_ignored_like_a_proxied_one() {
    let proxy = trusted("public_paths = [\"/public\"]").await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    use StatusCode as S;
    // (target, anonymous at nginx's endpoint, bob at nginx's, bob at the forward endpoint)
    for (uri, anonymous, as_bob, forward) in [
        (
            "/public/../admin",
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ),
        (
            "/public/%2e%2e/admin",
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ),
        (
            "/public/..;/admin",
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ),
        (
            "/admin?next=/public",
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::FORBIDDEN,
        ),
        ("/public?x=/admin", S::OK, S::OK, S::OK),
        // A target that is not a clean path: refused; nginx only understands 401 and 403.
        ("/a%zz", S::FORBIDDEN, S::FORBIDDEN, S::BAD_REQUEST),
        ("/a%00b", S::FORBIDDEN, S::FORBIDDEN, S::BAD_REQUEST),
    ] {
        let res = ask(&proxy, NGINX, &nginx_headers("GET", uri), None).await;
        assert_eq!(res.status, anonymous, "{uri} anonymous: {}", res.text());
        let res = ask(&proxy, NGINX, &nginx_headers("GET", uri), Some(&bob)).await;
        assert_eq!(res.status, as_bob, "{uri} as bob: {}", res.text());
        let headers = forward_headers("GET", "app.example.com", uri);
        let res = ask(&proxy, FORWARD, &headers, Some(&bob)).await;
        assert_eq!(res.status, forward, "{uri} as bob, forward: {}", res.text());
    }
    // Caddy appends the original query to the auth URL: ignored.
    let res = ask(
        &proxy,
        &format!("{NGINX}?next=%2Fpublic"),
        &nginx_headers("GET", "/admin"),
        Some(&bob),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn each_endpoint_reads_only_its_own_proxys_headers() {
    let proxy = trusted("public_paths = [\"/public\"]").await;
    // nginx's endpoint: a client-style X-Forwarded-Uri says /public, the real target is /admin.
    let mut headers = nginx_headers("GET", "/admin");
    headers.extend(forward_headers("GET", "app.example.com", "/public"));
    let res = ask(&proxy, NGINX, &headers, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // The forward endpoint: X-Original-URI says /public, X-Forwarded-Uri /admin.
    let mut headers = forward_headers("GET", "app.example.com", "/admin");
    headers.extend(nginx_headers("GET", "/public"));
    let res = ask(&proxy, FORWARD, &headers, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // And neither falls back on the other's headers when its own are missing.
    let res = ask(
        &proxy,
        NGINX,
        &forward_headers("GET", "app.example.com", "/public"),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(
        res.text().contains("x-original-method is missing"),
        "{}",
        res.text()
    );
    let res = ask(&proxy, FORWARD, &nginx_headers("GET", "/public"), None).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(
        res.text().contains("x-forwarded-method is missing"),
        "{}",
        res.text()
    );
    let mut twice = forward_headers("GET", "app.example.com", "/public");
    twice.push(("x-forwarded-uri", "/admin"));
    let res = ask(&proxy, FORWARD, &twice, None).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.text().contains("more than once"), "{}", res.text());
}

#[tokio::test]
async fn forward_endpoint_redirects_browsers_and_answers_scripts() {
    let proxy = trusted("").await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let carol = login(&proxy, "carol", CAROL_PASSWORD).await;
    let admin = forward_headers("GET", "app.example.com", "/admin/x?y=1");

    let res = ask(&proxy, FORWARD, &admin, Some(&alice)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some("alice"));
    assert_eq!(res.header("x-forwarded-groups"), Some("admins,ops"));

    let mut browser = admin.clone();
    browser.push(BROWSER);
    let res = ask(&proxy, FORWARD, &browser, None).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login?rd=%2Fadmin%2Fx%3Fy%3D1")
    );
    let res = ask(&proxy, FORWARD, &admin, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["error"], "login required");
    assert!(res.header("location").is_some());

    // Refused: the 403 page for a browser, JSON for a script; the original host decides host
    // rules.
    let res = ask(&proxy, FORWARD, &browser, Some(&carol)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(
        res.text().contains("Signed in as <strong>carol</strong>"),
        "{}",
        res.text()
    );
    let res = ask(&proxy, FORWARD, &admin, Some(&carol)).await;
    assert_eq!(res.json(), serde_json::json!({"error": "forbidden"}));
    let grafana = forward_headers("GET", "grafana.example.com:443", "/d/1");
    assert_eq!(
        ask(&proxy, FORWARD, &grafana, Some(&carol)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        ask(&proxy, FORWARD, &grafana, Some(&alice)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_central_sign_in_host_gets_an_absolute_return_address_only_for_listed_hosts() {
    let proxy = trusted("redirect_hosts = [\".example.com\"]").await;
    let central = |rd: &str| format!("https://login.example.com/.sessiongate/login?rd={rd}");
    let local = "/.sessiongate/login?rd=%2Fadmin%3Fx%3D1".to_string();
    for (original, location) in [
        (
            "app.example.com",
            central("https%3A%2F%2Fapp.example.com%2Fadmin%3Fx%3D1"),
        ),
        (
            "app.example.com:8443",
            central("https%3A%2F%2Fapp.example.com%3A8443%2Fadmin%3Fx%3D1"),
        ),
        // Not listed: signed in on the original host, which sessiongate cannot send a browser
        // back to from elsewhere.
        ("evil-example.com", local.clone()),
        ("example.com.evil", local.clone()),
        // The same host as the sign-in page: a path.
        ("login.example.com", local.clone()),
    ] {
        let mut h = forward_headers("GET", original, "/admin?x=1");
        h.push(BROWSER);
        h.push(("host", "login.example.com"));
        let res = ask(&proxy, FORWARD, &h, None).await;
        assert_eq!(res.status, StatusCode::FOUND);
        assert_eq!(res.header("location").unwrap(), location, "{original}");
    }
}

#[tokio::test]
async fn only_trusted_proxies_are_answered() {
    let proxy = start_auth("", "").await;
    let alice = login(&proxy, USER, PASSWORD).await;
    for (endpoint, headers) in [
        (NGINX, nginx_headers("GET", "/")),
        (FORWARD, forward_headers("GET", "app.example.com", "/")),
    ] {
        let res = ask(&proxy, endpoint, &headers, Some(&alice)).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{endpoint}");
        assert!(
            res.text().contains("server.trusted_proxies"),
            "{}",
            res.text()
        );
        assert_eq!(res.header("x-forwarded-user"), None);
    }
}

#[tokio::test]
async fn the_return_address_after_login_may_be_a_listed_https_host() {
    let proxy = trusted("redirect_hosts = [\"app.example.com\", \".example.org\"]").await;
    for (rd, location) in [
        (
            "https://app.example.com/x?y=1",
            "https://app.example.com/x?y=1",
        ),
        ("https://a.example.org/", "https://a.example.org/"),
        ("https://example.org", "https://example.org"),
        ("http://app.example.com/x", "/"),
        ("https://evil-example.com/", "/"),
        ("https://app.example.com.evil/", "/"),
        ("https://evil.com@app.example.com/", "/"),
        ("https://app.example.com@evil.com/", "/"),
        ("https://app.example.com\\@evil.com/", "/"),
        ("https:\\\\app.example.com", "/"),
        ("//app.example.com/x", "/"),
        ("/local", "/local"),
    ] {
        let res = post_login(
            &proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", rd)],
            &[],
        )
        .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        assert_eq!(res.header("location"), Some(location), "{rd}");
        // The form carries it too.
        let page = get(
            proxy.addr,
            &format!(
                "/.sessiongate/login?rd={}",
                form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
            ),
            &[],
        )
        .await;
        let hidden = format!("name=\"rd\" value=\"{}\"", location.replace('&', "&amp;"));
        assert!(page.text().contains(&hidden), "{rd}: {}", page.text());
    }
}

#[tokio::test]
async fn cookie_domain_shares_the_session_cookie_across_subdomains() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&config_toml(
        upstream.addr,
        "",
        "cookie_domain = \"example.com\"",
    ))
    .await;
    assert_eq!(proxy.cookie_name(), "__Secure-sessiongate");
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    let set = res.set_cookies().join("\n");
    assert!(set.starts_with("__Secure-sessiongate="), "{set}");
    assert!(set.contains("; Domain=example.com"), "{set}");
    assert!(
        set.contains("; Secure") && set.contains("; HttpOnly"),
        "{set}"
    );
    let cookie = cookie_pair(&res);
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );

    // Logging out clears the cookie on the same Domain, or the browser would keep it.
    let origin = format!("http://{}", proxy.addr);
    let out = send(
        proxy.addr,
        req(
            http::Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &cookie), ("origin", &origin)],
        ),
    )
    .await;
    let cleared = out.set_cookies().join("\n");
    assert!(
        cleared.contains("Domain=example.com") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn without_an_upstream_only_the_login_and_auth_endpoints_are_served() {
    let toml = team_config("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("[upstream]\nurl = \"http://127.0.0.1:9\"\n", "")
        .replace(
            "shutdown_timeout = \"5s\"",
            "shutdown_timeout = \"5s\"\ntrusted_proxies = [\"127.0.0.1\"]",
        );
    assert!(!toml.contains("[upstream]"), "{toml}");
    let proxy = start_proxy_with(&toml).await;
    assert!(proxy.app.upstream.is_none());
    let alice = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/", &[("cookie", &alice)]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(res.text().contains("no upstream.url"), "{}", res.text());
    let res = ask(&proxy, NGINX, &nginx_headers("GET", "/app"), Some(&alice)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some("alice"));
}
