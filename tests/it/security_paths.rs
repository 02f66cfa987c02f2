//! Path confusion (the class of Caddy GHSA-7r4p-vjf4-gxv4, Pomerium CVE-2023-33189 and the
//! Tomcat `..;/` bypasses): public paths match only the normalized path, the upstream gets
//! exactly the path that was authorised, bad targets get 400, and sessiongate's own endpoints
//! match exactly.

use crate::common::*;

/// Sends `target` verbatim (no client-side normalization) and returns the raw response.
async fn raw_get(proxy: &Proxy, target: &str, extra: &str) -> String {
    raw(
        proxy.addr,
        format!("GET {target} HTTP/1.1\r\nHost: app\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

fn status(response: &str) -> u16 {
    response[9..12].parse().unwrap()
}

#[tokio::test]
async fn walking_out_of_a_public_prefix_needs_a_login() {
    let (upstream, proxy) = start_with_public(&["/public", "/static/"]).await;
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/PUBLIC/../admin",
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/..;/admin",
        "/public;/../admin",
        "/public/x/../../admin",
        "/static/../admin",
        "/publicity",
        "/Public/x",
        "/admin?x=/public",
        "/admin?/public/",
        "/admin#/public",
        "/admin/./public",
        "/%70ublic/../admin",
    ] {
        let res = raw_get(&proxy, target, "").await;
        assert_eq!(status(&res), 401, "{target}: {res}");
    }
    assert_eq!(
        upstream.requests(),
        0,
        "nothing anonymous reached the upstream"
    );
}

#[tokio::test]
async fn public_paths_are_forwarded_as_the_path_that_was_authorised() {
    let (_upstream, proxy) = start_with_public(&["/public", "/static/"]).await;
    for (target, forwarded) in [
        ("/public/a.css", "/public/a.css"),
        ("/public", "/public"),
        ("/static/app.js?v=3", "/static/app.js?v=3"),
        ("/public/./a.css", "/public/a.css"),
        ("/public/x/../a.css", "/public/a.css"),
        ("/%70ublic/a%2Ecss", "/public/a.css"),
        ("/admin/../public/a.css", "/public/a.css"),
        ("/public/%7euser", "/public/~user"),
    ] {
        let res = raw_get(&proxy, target, "").await;
        assert_eq!(status(&res), 200, "{target}: {res}");
        assert_eq!(raw_json(&res)["uri"], forwarded, "{target}");
    }
}

#[tokio::test]
async fn logged_in_requests_are_forwarded_normalized_too() {
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    for (target, forwarded) in [
        ("/a/b/../c?q=../x", "/a/c?q=../x"),
        ("/a/%2e%2e/b", "/b"),
        ("/a%2fb", "/a%2Fb"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        // Raw UTF-8 (hyper accepts it) is kept byte for byte around what is normalized.
        ("/caf\u{e9}/./x%2e", "/caf\u{e9}/x."),
    ] {
        let res = raw_get(&proxy, target, &format!("Cookie: {cookie}\r\n")).await;
        assert_eq!(status(&res), 200, "{target}: {res}");
        assert_eq!(raw_json(&res)["uri"], forwarded, "{target}");
    }
}

#[tokio::test]
async fn bad_targets_get_400_and_are_never_forwarded() {
    let (upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let auth = format!("Cookie: {cookie}\r\n");
    for (target, says) in [
        ("/a%zz", "bad percent-encoding"),
        ("/a%2", "bad percent-encoding"),
        ("/a%", "bad percent-encoding"),
        ("/x?y=%G0", "bad percent-encoding"),
        ("/a%00.html", "encoded NUL"),
        ("/x?file=a%00.png", "encoded NUL"),
        ("/a%0d%0aSet-Cookie:%20x=1", "encoded NUL"),
        ("/a%09b", "encoded NUL"),
        ("/%7f", "encoded NUL"),
        ("*", "must be a path"),
    ] {
        let res = raw_get(&proxy, target, &auth).await;
        assert_eq!(status(&res), 400, "{target}: {res}");
        assert!(res.contains(says), "{target}: {res}");
    }
    // Raw control characters never get past the HTTP parser.
    for target in ["/a\x00b", "/a\x7fb", "/a\x1bb"] {
        let res = raw_get(&proxy, target, &auth).await;
        assert!(res.is_empty() || status(&res) == 400, "{target:?}: {res}");
    }
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn connect_and_absolute_targets_are_not_a_way_around_the_gate() {
    let (upstream, proxy) = start().await;
    let connect = raw(
        proxy.addr,
        b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&connect), 400, "{connect}");
    // An absolute-form target is routed by its path like any other...
    let absolute = raw_get(&proxy, "http://APP./admin", "").await;
    assert_eq!(status(&absolute), 401, "{absolute}");
    // ...and may not name another host than Host (tests/it/security_hosts.rs).
    let elsewhere = raw_get(&proxy, "http://internal.example/admin", "").await;
    assert_eq!(status(&elsewhere), 400, "{elsewhere}");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn own_endpoints_match_only_their_exact_normalized_path() {
    let (upstream, proxy) = start().await;
    for (target, want) in [
        ("/.sessiongate/healthz", 200),
        ("/x/../.sessiongate/healthz", 200),
        ("/%2Esessiongate/healthz", 200),
        ("/.sessiongate/healthz/", 404),
        ("/.sessiongate/healthz?x=1", 200),
        ("/.sessiongate/HEALTHZ", 404),
        ("/.sessiongate//healthz", 404),
        ("/.sessiongate/healthz;x", 404),
        ("/.sessiongate", 404),
        ("/.sessiongateway", 401),
    ] {
        let res = raw_get(&proxy, target, "").await;
        assert_eq!(status(&res), want, "{target}: {res}");
    }
    assert_eq!(upstream.requests(), 0);
}
