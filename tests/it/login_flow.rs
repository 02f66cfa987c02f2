//! The login flow over real HTTP: redirect or 401, the form, good and bad logins, the return
//! address, the cookie, re-login and logout.

use crate::common::*;
use http::{Method, StatusCode};

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

#[tokio::test]
async fn browser_navigation_without_session_is_redirected_to_the_login_form() {
    let (upstream, proxy) = start().await;
    let res = get(proxy.addr, "/reports/q3?year=2026&x=a%20b", &[BROWSER]).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login?rd=%2Freports%2Fq3%3Fyear%3D2026%26x%3Da%2520b")
    );
    assert_eq!(res.header("cache-control"), Some("no-store"));

    let head = send(proxy.addr, req(Method::HEAD, "/x", &[BROWSER])).await;
    assert_eq!(head.status, StatusCode::FOUND);
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing anonymous reached the upstream"
    );
}

#[tokio::test]
async fn api_requests_without_session_get_401_json() {
    let (upstream, proxy) = start().await;
    for (method, accept) in [
        (Method::GET, "application/json"),
        (Method::GET, "*/*"),
        (Method::POST, "text/html"),
        (Method::DELETE, "text/html"),
    ] {
        let res = send(
            proxy.addr,
            req(method.clone(), "/api/items", &[("accept", accept)]),
        )
        .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{method} {accept}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        let body = res.json();
        assert_eq!(body["error"], "login required");
        assert_eq!(body["login"], "/.sessiongate/login");
    }
    let no_accept = get(proxy.addr, "/", &[]).await;
    assert_eq!(no_accept.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn login_form_has_username_password_and_the_return_address() {
    let (_upstream, proxy) = start().await;
    let res = get(
        proxy.addr,
        "/.sessiongate/login?rd=%2Fdash%3Fa%3D1%26b%3D%22x%22",
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    let html = res.text();
    assert!(
        html.contains(r#"<form method="post" action="/.sessiongate/login">"#),
        "{html}"
    );
    assert!(html.contains(r#"name="username""#));
    assert!(html.contains(r#"name="password" type="password""#));
    // The return address is HTML-escaped in the hidden field.
    assert!(
        html.contains(r#"name="rd" value="/dash?a=1&amp;b=&quot;x&quot;""#),
        "{html}"
    );

    // An off-site rd is not even put in the form.
    let evil = get(proxy.addr, "/.sessiongate/login?rd=%2F%2Fevil.example", &[]).await;
    assert!(evil.text().contains(r#"name="rd" value="/""#));
    assert!(!evil.text().contains("evil.example"));
}

#[tokio::test]
async fn good_login_redirects_to_rd_with_a_session_cookie() {
    let (_upstream, proxy) = start().await;
    let res = post_login(
        &proxy,
        &[
            ("username", USER),
            ("password", PASSWORD),
            ("rd", "/dash?tab=2"),
        ],
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.header("location"), Some("/dash?tab=2"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(proxy.app.gate.sessions().len(), 1);

    let cookie = cookie_pair(&res);
    let page = get(proxy.addr, "/dash?tab=2", &[("cookie", &cookie), BROWSER]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json()["uri"], "/dash?tab=2");
    assert_eq!(page.upstream_header("x-forwarded-user"), vec![USER]);
}

#[tokio::test]
async fn off_site_return_addresses_fall_back_to_root() {
    let (_upstream, proxy) = start().await;
    for rd in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "https:evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/x\r\nSet-Cookie: pwned=1",
        "",
    ] {
        let res = post_login(
            &proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", rd)],
            &[],
        )
        .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{rd:?}");
        assert_eq!(res.header("location"), Some("/"), "{rd:?}");
        assert_eq!(res.set_cookies().len(), 1, "{rd:?}: no injected Set-Cookie");
    }
}

#[tokio::test]
async fn session_cookie_attributes() {
    let (_upstream, proxy) = start().await;
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    let set = res.set_cookies();
    assert_eq!(set.len(), 1);
    let c = &set[0];
    assert!(c.starts_with("__Host-sessiongate="), "{c}");
    let attrs: Vec<String> = c
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for want in ["httponly", "secure", "samesite=lax", "path=/"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing in {c}");
    }
    assert!(
        !attrs.iter().any(|a| a.starts_with("domain")),
        "no Domain: {c}"
    );
    assert!(
        !attrs
            .iter()
            .any(|a| a.starts_with("max-age") || a.starts_with("expires")),
        "session cookie: {c}"
    );
    // 256-bit id + 256-bit tag, base64url.
    let value = c.split(';').next().unwrap().split_once('=').unwrap().1;
    assert_eq!(value.len(), 87);
}

#[tokio::test]
async fn cookie_settings_are_honoured() {
    let (_upstream, proxy) = start_with(
        "cookie_name = \"gate\"\nsecure = false\nsame_site = \"strict\"\ncookie_max_age = \"1h\"",
    )
    .await;
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    let c = &res.set_cookies()[0];
    assert!(c.starts_with("gate="), "{c}");
    let lower = c.to_ascii_lowercase();
    assert!(!lower.contains("secure"), "{c}");
    assert!(lower.contains("samesite=strict"), "{c}");
    assert!(lower.contains("max-age=3600"), "{c}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let (_upstream, proxy) = start().await;
    let wrong = post_login(
        &proxy,
        &[("username", USER), ("password", "nope"), ("rd", "/a")],
        &[],
    )
    .await;
    let unknown = post_login(
        &proxy,
        &[("username", "mallory"), ("password", "nope"), ("rd", "/a")],
        &[],
    )
    .await;
    for res in [&wrong, &unknown] {
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert!(sets_no_session(res), "{:?}", res.set_cookies());
        assert!(res.text().contains("Invalid username or password."));
        assert!(
            res.text().contains(r#"name="rd" value="/a""#),
            "the form keeps rd"
        );
    }
    // The form gives back the name typed, and nothing else tells the two apart.
    assert!(wrong.text().contains(r#"name="username" value="alice""#));
    assert!(
        unknown
            .text()
            .contains(r#"name="username" value="mallory""#)
    );
    // The CSRF tokens differ only if the two answers straddled a second (they carry their
    // time), so they are left out of the comparison.
    assert_eq!(
        without_csrf_token(&wrong.text()),
        without_csrf_token(
            &unknown
                .text()
                .replace(r#"value="mallory""#, r#"value="alice""#)
        )
    );
    assert_eq!(proxy.app.gate.sessions().len(), 0);
}

/// A page with its form's CSRF token taken out.
fn without_csrf_token(page: &str) -> String {
    const FIELD: &str = r#"name="csrf" value=""#;
    let start = page.find(FIELD).expect("a CSRF field") + FIELD.len();
    let end = start + page[start..].find('"').expect("the token's end");
    format!("{}{}", &page[..start], &page[end..])
}

#[tokio::test]
async fn malformed_login_posts_get_a_clear_4xx() {
    let (_upstream, proxy) = start().await;
    let missing = post_login(&proxy, &[("username", USER)], &[]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.text().contains("Enter a username and a password."));

    let json = send(
        proxy.addr,
        req_with_body(
            Method::POST,
            "/.sessiongate/login",
            &[
                ("content-type", "application/json"),
                ("sec-fetch-site", "same-origin"),
            ],
            "{}",
        ),
    )
    .await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json.text().contains("application/x-www-form-urlencoded"));

    let big = format!("username=alice&password={}", "a".repeat(17_000));
    let too_big = send(
        proxy.addr,
        req_with_body(
            Method::POST,
            "/.sessiongate/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            big,
        ),
    )
    .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);

    let long_user = "u".repeat(2000);
    let too_long = post_login(&proxy, &[("username", &long_user), ("password", "x")], &[]).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(proxy.app.gate.sessions().len(), 0);
}

#[tokio::test]
async fn relogin_replaces_the_session_and_ends_the_old_id() {
    let (_upstream, proxy) = start().await;
    let first = login(&proxy, USER, PASSWORD).await;
    let res = post_login(
        &proxy,
        &[("username", USER), ("password", PASSWORD)],
        &[("cookie", &first)],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let second = cookie_pair(&res);
    assert_ne!(first, second, "a fresh id on every login");
    assert_eq!(
        proxy.app.gate.sessions().len(),
        1,
        "the old session is gone from the store"
    );

    let old = get(proxy.addr, "/", &[("cookie", &first)]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = get(proxy.addr, "/", &[("cookie", &second)]).await;
    assert_eq!(new.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_destroys_the_session_and_clears_the_cookie() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );

    // GET never logs out.
    let get_logout = get(proxy.addr, "/.sessiongate/logout", &[("cookie", &cookie)]).await;
    assert_eq!(get_logout.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_logout.header("allow"), Some("POST"));
    assert_eq!(proxy.app.gate.sessions().len(), 1);

    let origin = format!("http://{}", proxy.addr);
    let res = send(
        proxy.addr,
        req(
            Method::POST,
            "/.sessiongate/logout",
            &[("cookie", &cookie), ("origin", &origin)],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login?signed_out=1")
    );
    let clear = &res.set_cookies()[0];
    assert!(clear.starts_with("__Host-sessiongate=;"), "{clear}");
    assert!(clear.to_ascii_lowercase().contains("max-age=0"), "{clear}");
    assert_eq!(proxy.app.gate.sessions().len(), 0);

    // Replaying the old cookie gets nothing.
    let replay = get(proxy.addr, "/", &[("cookie", &cookie), BROWSER]).await;
    assert_eq!(replay.status, StatusCode::FOUND);
}

#[tokio::test]
async fn tampered_forged_and_duplicated_cookies_mean_no_session() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let (name, value) = cookie.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_id = {
        // A well-formed value whose signature was made with another secret.
        let signer =
            sessiongate::session::CookieSigner::new(b"another-secret-0123456789abcdef0123", name);
        signer.sign(&sessiongate::session::SessionId::generate())
    };
    let never_issued = proxy
        .app
        .signer
        .sign(&sessiongate::session::SessionId::generate());
    for bad in [
        format!("{name}={flipped}"),
        format!("{name}={}", &value[..40]),
        format!("{name}={value}x"),
        format!("{name}={other_id}"),
        format!("{name}={never_issued}"),
        format!("{name}="),
        format!("{name}={}", "A".repeat(5000)),
        format!("{cookie}; {cookie}"),
        format!("sessiongate={value}"),
    ] {
        let res = get(proxy.addr, "/", &[("cookie", &bad)]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{bad:.60}");
    }
    assert_eq!(
        proxy.app.gate.sessions().len(),
        1,
        "no bad cookie created a session"
    );
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn own_endpoints_match_exactly() {
    let (upstream, proxy) = start().await;
    let health = get(proxy.addr, "/.sessiongate/healthz", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok\n");
    for path in [
        "/.sessiongate",
        "/.sessiongate/",
        "/.sessiongate/login/",
        "/.sessiongate/admin",
    ] {
        assert_eq!(
            get(proxy.addr, path, &[]).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let put = send(proxy.addr, req(Method::PUT, "/.sessiongate/login", &[])).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.header("allow"), Some("GET, POST"));
    // A path that merely starts with the prefix's text belongs to the app (and needs a login).
    assert_eq!(
        get(proxy.addr, "/.sessiongateway", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn public_paths_are_served_without_login_but_never_with_an_identity() {
    let (_upstream, proxy) = start_with_public(&["/public", "/assets/"]).await;
    let res = get(
        proxy.addr,
        "/public/logo.png",
        &[("x-forwarded-user", "admin")],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.upstream_header("x-forwarded-user").is_empty(),
        "spoof stripped, none set"
    );
    assert_eq!(
        get(proxy.addr, "/assets/app.js", &[]).await.status,
        StatusCode::OK
    );
    for private in [
        "/publicity",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/admin?x=/public",
    ] {
        assert_eq!(
            get(proxy.addr, private, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{private}"
        );
    }
    // A logged-in user on a public path is still named.
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/public/x", &[("cookie", &cookie)]).await;
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
}

#[tokio::test]
async fn bcrypt_users_can_log_in() {
    let upstream = start_upstream().await;
    let hash = bcrypt::hash("htpasswd-pw", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let toml = format!(
        "{}\n[[users]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n",
        config_toml(upstream.addr, "", "")
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, "bob", "htpasswd-pw").await;
    let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(res.upstream_header("x-forwarded-user"), vec!["bob"]);
}

/// Password checks run on a bounded pool: past `login_workers + login_queue` logins in flight
/// the excess is refused at once with 503, and proxied traffic is served meanwhile.
#[tokio::test]
async fn login_hashing_is_bounded_and_does_not_block_proxying() {
    let upstream = start_upstream().await;
    // A deliberately slow hash (64 MiB, 2 passes) so logins overlap. Not slower: the hashing
    // threads run at nice 19, so on a machine busy with other work every extra pass costs
    // many times its CPU time in waiting.
    let toml = slow_login_config(upstream.addr, 1, 1, 64 * 1024, 2);
    let proxy = std::sync::Arc::new(start_proxy_with(&toml).await);
    let cookie = login(&proxy, USER, PASSWORD).await;

    let mut logins = Vec::new();
    for _ in 0..6 {
        let p = proxy.clone();
        logins.push(tokio::spawn(async move {
            post_login(&p, &[("username", "slow"), ("password", "slow-pw")], &[]).await
        }));
    }
    // While those hash, proxied requests are answered.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let during = get(proxy.addr, "/during", &[("cookie", &cookie)]).await;
    assert_eq!(during.status, StatusCode::OK);
    let still_hashing = logins.iter().filter(|l| !l.is_finished()).count();
    assert!(
        still_hashing > 0,
        "the proxied request was served before the logins finished"
    );

    let mut statuses = Vec::new();
    for l in logins {
        let res = l.await.unwrap();
        if res.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(res.header("retry-after"), Some("1"));
        }
        statuses.push(res.status);
    }
    let ok = statuses
        .iter()
        .filter(|s| **s == StatusCode::SEE_OTHER)
        .count();
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(ok + busy, 6, "{statuses:?}");
    assert!(
        ok >= 2 && busy >= 1,
        "at most worker + queue admitted at once: {statuses:?}"
    );
}
