//! What the upstream sees of identity: exactly one identity header, ours; no spoofed copies;
//! forwarding headers set by sessiongate; its own cookie removed and the app's cookies kept.

mod common;

use common::*;
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
