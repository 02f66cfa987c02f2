//! Header spoofing (the class of oauth2-proxy CVE-2025-54576 and Traefik CVE-2021-32813):
//! what the upstream sees of identity is exactly one identity header, ours, whatever
//! spellings, duplicates or `Connection` tricks the client sends; forwarding headers come
//! from sessiongate unless a trusted proxy sent them; headers that would let a backend route
//! by another path are removed; sessiongate's own cookie is removed and the app's are kept.

use crate::common::*;
use http::StatusCode;
use serde_json::Value;

fn upstream_headers(v: &Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn identity_header_is_set_and_every_client_copy_is_removed() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &cookie),
            ("x-forwarded-user", "admin"),
            ("x-forwarded-user", "root"),
            ("x_forwarded_user", "admin"),
            ("x-forwarded_user", "admin"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let names: Vec<String> = res.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .filter(|n| n.replace('_', "-").eq_ignore_ascii_case("x-forwarded-user"))
        .collect();
    assert_eq!(names, vec!["x-forwarded-user"], "exactly one, ours");
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
}

#[tokio::test]
async fn raw_spellings_and_connection_tricks_cannot_smuggle_an_identity() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let request = format!(
        "GET /whoami HTTP/1.1\r\nHost: app.example\r\nCookie: {cookie}\r\n\
         X-Forwarded-User: admin\r\nX-FORWARDED-USER: admin\r\nx_Forwarded_User: admin\r\n\
         Connection: close, X-Forwarded-User\r\n\r\n"
    );
    let response = raw(proxy.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let v = raw_json(&response);
    let spoofs: Vec<String> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h[0].as_str()
                .unwrap()
                .replace('_', "-")
                .eq_ignore_ascii_case("x-forwarded-user")
        })
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(spoofs, vec![USER]);
    assert!(
        upstream_headers(&v, "connection")
            .iter()
            .all(|c| !c.to_ascii_lowercase().contains("forwarded"))
    );
}

#[tokio::test]
async fn custom_identity_header_name() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&config_toml(
        upstream.addr,
        "identity_header = \"Remote-User\"",
        "",
    ))
    .await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &cookie),
            ("remote_user", "admin"),
            ("Remote-User", "admin"),
        ],
    )
    .await;
    assert_eq!(res.upstream_header("remote-user"), vec![USER]);
    assert!(res.upstream_header("remote_user").is_empty());
    assert!(res.upstream_header("x-forwarded-user").is_empty());
}

#[tokio::test]
async fn forwarding_headers_are_overwritten_not_trusted() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &cookie),
            ("host", "app.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(res.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(res.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(res.upstream_header("x-forwarded-host"), vec!["app.example"]);
    assert_eq!(
        res.upstream_header("host"),
        vec!["app.example"],
        "Host passes through"
    );
}

#[tokio::test]
async fn own_cookie_is_not_forwarded_but_the_apps_cookies_are() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let header = format!("theme=dark; {cookie}; csrftoken=abc");
    let res = get(proxy.addr, "/", &[("cookie", &header)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.upstream_header("cookie"),
        vec!["theme=dark; csrftoken=abc"]
    );

    let alone = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
    assert!(
        alone.upstream_header("cookie").is_empty(),
        "no empty Cookie header"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nConnection: close, X-Drop-Me\r\n\
         X-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
         Upgrade: websocket\r\nX-Kept: yes\r\n\r\n"
    );
    let v = raw_json(&raw(proxy.addr, request.as_bytes()).await);
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            upstream_headers(&v, gone).is_empty(),
            "{gone} was forwarded"
        );
    }
    assert_eq!(upstream_headers(&v, "x-kept"), vec!["yes"]);
}

#[tokio::test]
async fn forwarded_and_real_ip_from_an_untrusted_client_are_removed() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &cookie),
            ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert!(res.upstream_header("forwarded").is_empty());
    assert!(res.upstream_header("x-real-ip").is_empty());
}

/// `X-Original-URL` and friends make Symfony, Zend and IIS serve another path than the
/// request line's: a login-free public path could be turned into any page.
#[tokio::test]
async fn path_override_headers_never_reach_the_upstream() {
    let (_upstream, proxy) = start_with_public(&["/public"]).await;
    let res = get(
        proxy.addr,
        "/public/logo.png",
        &[
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-uri", "/admin"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/public/logo.png");
    for gone in ["x-original-url", "x-rewrite-url", "x-forwarded-uri"] {
        assert!(res.upstream_header(gone).is_empty(), "{gone} forwarded");
    }
}

#[tokio::test]
async fn a_trusted_proxy_in_front_keeps_its_forwarding_headers() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_server(
        &config_toml(upstream.addr, "", ""),
        "trusted_proxies = [\"127.0.0.0/8\"]",
    ))
    .await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &cookie),
            ("host", "app.example"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            // Kept as the proxy wrote it: it names the host judged (tests/it/security_hosts.rs).
            ("x-forwarded-host", "App.Example:443"),
            ("x-real-ip", "203.0.113.7"),
            // Even a trusted proxy can't name the user or override the path.
            ("x-forwarded-user", "admin"),
            ("x-original-url", "/admin"),
        ],
    )
    .await;
    assert_eq!(
        res.upstream_header("x-forwarded-for"),
        vec!["203.0.113.7, 10.1.1.1, 127.0.0.1"]
    );
    assert_eq!(res.upstream_header("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        res.upstream_header("x-forwarded-host"),
        vec!["App.Example:443"]
    );
    assert_eq!(res.upstream_header("x-real-ip"), vec!["203.0.113.7"]);
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert!(res.upstream_header("x-original-url").is_empty());
}

#[tokio::test]
async fn anonymous_requests_on_public_paths_carry_no_identity_in_any_spelling() {
    let (_upstream, proxy) = start_with_public(&["/public"]).await;
    let request = "GET /public/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-User: admin\r\n\
                   x_forwarded_user: admin\r\nX-FORWARDED-USER: root\r\n\
                   Connection: close, x-forwarded-user\r\n\r\n";
    let v = raw_json(&raw(proxy.addr, request.as_bytes()).await);
    let spoofs: Vec<_> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h[0].as_str()
                .unwrap()
                .replace('_', "-")
                .eq_ignore_ascii_case("x-forwarded-user")
        })
        .collect();
    assert!(spoofs.is_empty(), "{spoofs:?}");
}

/// Over TLS with HTTP/2 the same holds: h2 allows `_` in names and sends them lowercased.
#[tokio::test]
async fn spoofs_over_h2_are_removed_too() {
    use crate::common::tls::*;
    let ca = Ca::new("identity test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("identity");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&tls_config(upstream.addr, dir, "")).await;
    let mut conn = tls_connect(proxy.addr, &ca.pem, &[b"h2"]).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let login = conn.send(proxy.addr, login_request(proxy.addr)).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text());
    let cookie = cookie_pair(&login);
    let res = conn
        .send(
            proxy.addr,
            req(
                http::Method::GET,
                "/",
                &[
                    ("cookie", &cookie),
                    ("x-forwarded-user", "admin"),
                    ("x_forwarded_user", "admin"),
                    ("x-forwarded-for", "6.6.6.6"),
                ],
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert!(res.upstream_header("x_forwarded_user").is_empty());
    assert_eq!(res.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(res.upstream_header("x-forwarded-proto"), vec!["https"]);
}
