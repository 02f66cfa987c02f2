//! Host spellings and host framing over real sockets. One canonical host (lower case, no port,
//! one trailing dot removed) is judged wherever a host is compared: access rules on the proxy
//! path and at both forward-auth endpoints, `auth.redirect_hosts`, the WebSocket Origin check,
//! `session.cookie_domain`, the http->https redirect. A request whose host is missing, repeated,
//! not a host, or named two ways (HTTP/2 `:authority` and `Host`, a trusted proxy's
//! `X-Forwarded-Host` and `Host`) is refused with 400 and never reaches the app.

use std::net::SocketAddr;

use crate::common::tls::*;
use crate::common::ws::*;
use crate::common::*;
use http::{Method, StatusCode};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything on admin.example.com is denied to everyone; ops.example.com is for admins
/// (alice) only. The first host is written in another spelling than requests use.
const HOST_RULES: &str = "\n[[rules]]\npath = \"/\"\nhost = \"Admin.Example.com.\"\ndeny = true\n\
     \n[[rules]]\npath = \"/\"\nhost = \"ops.example.com\"\nallow = [\"group:admins\"]\n";

/// Spellings of admin.example.com a client might send, each the same host to DNS.
const ADMIN_SPELLINGS: [&str; 6] = [
    "admin.example.com",
    "admin.example.com.",
    "ADMIN.Example.COM.",
    "admin.example.com.:8080",
    "admin.example.com:443",
    "Admin.example.com.:80",
];

/// Host headers that are no host at all: each is a 400 (403 at nginx's endpoint).
const NOT_HOSTS: [&str; 8] = [
    "admin.example.com..",
    ".admin.example.com",
    "admin..example.com",
    "admin example.com",
    "evil.example@admin.example.com",
    "admin%2eexample.com",
    "127.1",
    "[fe80::1%25eth0]",
];

async fn team_with(upstream: SocketAddr, auth: &str, server: &str) -> Proxy {
    start_proxy_with(&with_server(
        &team_config(upstream, auth, HOST_RULES),
        server,
    ))
    .await
}

/// GET `path` with `host` (and `extra` headers) as `cookie`: the answer.
async fn as_user(proxy: &Proxy, cookie: &str, host: &str, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("cookie", cookie), ("host", host)];
    headers.extend_from_slice(extra);
    get(proxy.addr, "/x", &headers).await
}

#[tokio::test]
async fn a_trailing_dot_or_any_spelling_of_a_denied_host_is_denied_on_the_proxy_path() {
    let upstream = start_upstream().await;
    let proxy = team_with(upstream.addr, "", "").await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;

    for host in ADMIN_SPELLINGS {
        let res = as_user(&proxy, &alice, host, &[]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{host}: {}", res.text());
    }
    for host in [
        "ops.example.com.",
        "OPS.example.com",
        "ops.example.com.:8443",
    ] {
        let res = as_user(&proxy, &bob, host, &[]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "bob on {host}");
    }
    assert_eq!(upstream.requests(), 0, "no refused request reached the app");

    // The admin may enter ops in any spelling; the app gets the host as sent, and the same
    // in X-Forwarded-Host: the host that was judged.
    let res = as_user(&proxy, &alice, "Ops.Example.com.", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("host"), vec!["Ops.Example.com."]);
    assert_eq!(
        res.upstream_header("x-forwarded-host"),
        vec!["Ops.Example.com."]
    );
    // Another host is untouched by both rules.
    let res = as_user(&proxy, &bob, "app.example.com.", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(upstream.requests(), 2);
}

const NGINX: &str = "/.sessiongate/auth/nginx";
const FORWARD: &str = "/.sessiongate/auth/forward";

#[derive(Clone, Copy)]
enum Edge {
    Forward,
    Nginx,
}

/// The endpoint's question about `GET /x` on `host`, as its proxy asks it.
async fn ask(edge: Edge, proxy: &Proxy, cookie: &str, host: &str) -> Resp {
    match edge {
        Edge::Forward => ask_forward(proxy, cookie, host).await,
        Edge::Nginx => ask_nginx(proxy, cookie, host).await,
    }
}

/// The forward endpoint's question about `GET /x` on `host` (X-Forwarded-Host).
async fn ask_forward(proxy: &Proxy, cookie: &str, host: &str) -> Resp {
    let headers = [
        ("cookie", cookie),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", host),
        ("x-forwarded-uri", "/x"),
    ];
    get(proxy.addr, FORWARD, &headers).await
}

/// nginx's endpoint's question about `GET /x` on `host` (the Host header).
async fn ask_nginx(proxy: &Proxy, cookie: &str, host: &str) -> Resp {
    let headers = [
        ("cookie", cookie),
        ("host", host),
        ("x-original-method", "GET"),
        ("x-original-uri", "/x"),
    ];
    get(proxy.addr, NGINX, &headers).await
}

/// A forward-auth endpoint behind a trusted proxy, with alice and bob signed in; checks that
/// every spelling of the denied admin host is denied, and that `ops_spelling` (an admins-only
/// host written another way) refuses bob and lets alice through with her name.
async fn hosts_judged_canonically_at(edge: Edge, ops_spelling: &str) -> (Proxy, String) {
    let proxy = team_with(
        "127.0.0.1:9".parse().unwrap(),
        "",
        "trusted_proxies = [\"127.0.0.1\"]",
    )
    .await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    for host in ADMIN_SPELLINGS {
        let res = ask(edge, &proxy, &alice, host).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{host}: {}", res.text());
        assert_eq!(res.header("x-forwarded-user"), None);
    }
    let res = ask(edge, &proxy, &bob, ops_spelling).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = ask(edge, &proxy, &alice, ops_spelling).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-forwarded-user"), Some(USER));
    (proxy, alice)
}

#[tokio::test]
async fn a_trailing_dot_host_is_denied_at_the_forward_endpoint_via_x_forwarded_host() {
    let (proxy, alice) = hosts_judged_canonically_at(Edge::Forward, "ops.example.com.").await;
    for host in NOT_HOSTS {
        let res = ask(Edge::Forward, &proxy, &alice, host).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{host}");
        assert!(
            res.text().contains("X-Forwarded-Host is not one host"),
            "{host}: {}",
            res.text()
        );
    }
}

#[tokio::test]
async fn a_trailing_dot_host_is_denied_at_the_nginx_endpoint_and_no_host_is_never_a_400() {
    let (proxy, alice) = hosts_judged_canonically_at(Edge::Nginx, "OPS.example.com.").await;

    // nginx passes on any Host its own check lets through (it allows `@`, `%`, `..` after the
    // first label...) and turns anything but 401 and 403 from auth_request into a 500: a host
    // that is no host is a 403 here, and says why.
    for host in NOT_HOSTS {
        let res = ask(Edge::Nginx, &proxy, &alice, host).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{host}: {}", res.text());
        assert_eq!(res.header("x-forwarded-user"), None);
    }
    let two_hosts = format!(
        "GET {NGINX} HTTP/1.1\r\nHost: app.example.com\r\nHost: admin.example.com\r\n\
         X-Original-Method: GET\r\nX-Original-URI: /x\r\nCookie: {alice}\r\nConnection: close\r\n\r\n"
    );
    let res = raw(proxy.addr, two_hosts.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 403"), "{res}");
    assert!(res.contains("more than one Host header"), "{res}");
}

#[tokio::test]
async fn redirect_hosts_and_the_central_sign_in_host_compare_canonical_hosts() {
    let proxy = start_proxy_with(&with_server(
        &team_config(
            "127.0.0.1:9".parse().unwrap(),
            "redirect_hosts = [\"App.Example.com.\", \".example.org\"]",
            "",
        ),
        "trusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let sign_in = |rd: &'static str| {
        let proxy = &proxy;
        async move {
            let res = post_login(
                proxy,
                &[("username", USER), ("password", PASSWORD), ("rd", rd)],
                &[],
            )
            .await;
            assert_eq!(res.status, StatusCode::SEE_OTHER, "{rd}: {}", res.text());
            res.header("location").unwrap().to_string()
        }
    };
    for kept in [
        "https://app.example.com./x",
        "https://APP.example.com:8443/y?z=1",
        "https://a.b.Example.ORG./",
    ] {
        assert_eq!(sign_in(kept).await, kept);
    }
    for dropped in [
        "https://app.example.com../x",
        "https://app%2eexample.com/",
        "https://app.example.com.evil./",
        "https://evil.example@app.example.com/",
        "https://app.example.com:99999/",
    ] {
        assert_eq!(sign_in(dropped).await, "/", "{dropped}");
    }

    // Forward-auth: asked by the original host itself, in another spelling, the sign-in page
    // is on that host (a relative address); asked by a central sign-in host, it is there.
    let ask = |host: &'static str, original: &'static str| {
        let proxy = &proxy;
        async move {
            let headers = [
                ("host", host),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", original),
                ("x-forwarded-uri", "/x"),
            ];
            let res = get(proxy.addr, FORWARD, &headers).await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
            res.header("location").unwrap().to_string()
        }
    };
    assert_eq!(
        ask("APP.example.com.", "app.example.com").await,
        "/.sessiongate/login?rd=%2Fx"
    );
    assert_eq!(
        ask("login.example.com", "App.Example.com.").await,
        "https://login.example.com/.sessiongate/login?rd=https%3A%2F%2FApp.Example.com.%2Fx"
    );
}

#[tokio::test]
async fn the_websocket_origin_check_compares_canonical_hosts_and_ports() {
    let upstream = start_ws_upstream().await;
    let toml = with_auth(
        &config_toml(upstream.addr, "", ""),
        "websocket_origins = [\"https://Partner.Example.com.:443\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let upgrade = |host: &'static str, origin: &'static str| {
        let (proxy, cookie) = (&proxy, &cookie);
        async move {
            ws_connect(
                proxy.addr,
                "/ws",
                &[("cookie", cookie), ("host", host), ("origin", origin)],
            )
            .await
        }
    };
    for (host, origin) in [
        ("App.Example.com.", "http://app.example.com"),
        ("app.example.com", "http://APP.example.com.:80"),
        ("[0::1]:8080", "http://[::1]:8080"),
        ("app.example.com", "https://partner.example.com"),
    ] {
        let ws = upgrade(host, origin).await;
        assert!(ws.is_ok(), "{origin} on {host}: {ws:?}");
    }
    let allowed = upstream.requests();
    assert_eq!(allowed, 4);
    for (host, origin) in [
        ("app.example.com", "http://app.example.com.evil"),
        ("app.example.com", "http://app.example.com:8080"),
        ("app.example.com", "https://app.example.com"),
        ("app.example.com", "http://app.example.com.."),
        ("app.example.com", "http://evil.example@app.example.com"),
        ("app.example.com", "https://partner.example.com:444"),
        ("app.example.com", "null"),
    ] {
        let res = upgrade(host, origin).await.unwrap_err().refused();
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{origin} on {host}");
    }
    assert_eq!(
        upstream.requests(),
        allowed,
        "no refused upgrade reached the app"
    );
}

#[tokio::test]
async fn cookie_domain_is_canonical_so_the_cookie_covers_the_hosts_it_names() {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&config_toml(
        upstream.addr,
        "",
        "cookie_domain = \"Example.COM.\"",
    ))
    .await;
    let res = post_login(
        &proxy,
        &[("username", USER), ("password", PASSWORD)],
        // A browser on the page of this host: its Origin is the host's.
        &[
            ("host", "app.example.com."),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let set = res.set_cookies().join("\n");
    assert!(set.contains("Domain=example.com"), "{set}");
    assert!(
        !set.to_ascii_lowercase().contains("domain=example.com."),
        "{set}"
    );

    // A domain that is not one (or an address, which has no subdomains) is refused at load,
    // with the key named.
    for bad in [
        "exa mple.com",
        "example..com",
        "ex%61mple.com",
        "bücher.example",
        "10.0.0.1",
        "[::1]",
        "example.com:443",
    ] {
        let toml = config_toml(upstream.addr, "", &format!("cookie_domain = {bad:?}"));
        let err = sessiongate::Config::from_toml(&toml)
            .err()
            .unwrap_or_else(|| panic!("cookie_domain {bad:?} accepted"));
        assert!(err.to_string().contains("session.cookie_domain"), "{err}");
    }
}

/// A team proxy with a public path `/pub`, whose requests reach the app without a session:
/// what refuses a request below can only be its host.
async fn public_proxy(upstream: SocketAddr) -> Proxy {
    start_proxy_with(&team_config(
        upstream,
        "public_paths = [\"/pub\"]",
        HOST_RULES,
    ))
    .await
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn http1_requests_without_exactly_one_valid_host_are_refused_before_the_app() {
    let upstream = start_upstream().await;
    let proxy = public_proxy(upstream.addr).await;
    let ok = raw(
        proxy.addr,
        b"GET /pub/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // HTTP/1.0 may leave Host out (RFC 9112 needs it from HTTP/1.1 on).
    let old = raw(proxy.addr, b"GET /pub/x HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    assert_eq!(upstream.requests(), 2);

    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET /pub/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            "no Host header",
        ),
        (
            b"GET /pub/x HTTP/1.1\r\nHost: app.example.com\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_vec(),
            "more than one Host header",
        ),
        (
            b"GET /pub/x HTTP/1.1\r\nHost: app.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n".to_vec(),
            "more than one Host header",
        ),
        (
            b"GET /pub/x HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n".to_vec(),
            "the host is empty",
        ),
        (
            b"GET /pub/x HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\nConnection: close\r\n\r\n".to_vec(),
            "punycode",
        ),
        (
            b"GET http://admin.example.com/pub/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_vec(),
            "name different hosts",
        ),
        (
            b"GET http://admin.example.com/pub/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            "no Host header",
        ),
    ];
    for host in NOT_HOSTS {
        let request = format!("GET /pub/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        cases.push((request.into_bytes(), "the Host is not a host"));
    }
    for (request, says) in cases {
        let res = raw(proxy.addr, &request).await;
        let shown = String::from_utf8_lossy(&request);
        assert_eq!(
            status_line(&res),
            "HTTP/1.1 400 Bad Request",
            "{shown}\n{res}"
        );
        assert!(res.contains(says), "{shown}: wanted {says:?}\n{res}");
    }
    assert_eq!(upstream.requests(), 2, "no refused request reached the app");
}

/// One HTTP/2 request over TLS, written frame by frame: hyper's client always sends the
/// URI's authority as `:authority`, so a request without one needs hand-made frames. The
/// HEADERS frame holds exactly `fields`, as HPACK literals without indexing or Huffman coding.
/// Returns the status when the server sent it from HPACK's static table (200, 400 and 404
/// are one byte each there) and the body.
async fn h2_raw(addr: SocketAddr, ca_pem: &str, fields: &[(&str, &str)]) -> (Option<u16>, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(ca_pem, &[b"h2"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(
            name.len() < 127 && value.len() < 127,
            "one-byte lengths only"
        );
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&frame(0x4, 0, 0, &[]));
    // END_STREAM | END_HEADERS on stream 1.
    out.extend_from_slice(&frame(0x1, 0x5, 1, &block));
    tls.write_all(&out).await.unwrap();
    tokio::time::timeout(ANSWER_WITHIN, read_answer(&mut tls))
        .await
        .expect("an answer within ANSWER_WITHIN")
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames until stream 1 ends, acknowledging the server's SETTINGS on the way.
async fn read_answer<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S) -> (Option<u16>, String) {
    let (mut status, mut body) = (None, Vec::new());
    loop {
        let mut head = [0u8; 9];
        tls.read_exact(&mut head).await.expect("a frame");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload)
            .await
            .expect("a frame's payload");
        match (kind, stream) {
            (0x4, 0) if flags & 0x1 == 0 => tls.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(),
            (0x1, 1) => {
                assert_eq!(flags & 0x28, 0, "no padding or priority expected");
                status = match payload.first() {
                    Some(&b) if b & 0x80 != 0 => match b & 0x7f {
                        8 => Some(200),
                        12 => Some(400),
                        13 => Some(404),
                        _ => None,
                    },
                    _ => None,
                };
            }
            (0x0, 1) => body.extend_from_slice(&payload),
            (0x3, 1) => panic!("stream reset: {payload:?}"),
            (0x7, _) => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
        if stream == 1 && matches!(kind, 0x0 | 0x1) && flags & 0x1 != 0 {
            return (status, String::from_utf8_lossy(&body).into_owned());
        }
    }
}

#[tokio::test]
async fn http2_requests_without_a_host_or_naming_two_hosts_are_refused_before_the_app() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("hosts");
    write_pair(tmp.path(), &cert, &key);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_auth(
        &tls_config(upstream.addr, tmp.path(), ""),
        "public_paths = [\"/pub\"]",
    ))
    .await;
    let addr = proxy.addr;
    let authority = format!("localhost:{}", addr.port());

    // hyper's h2 client: `:authority` from the URI, and a Host header if we add one.
    let mut conn = tls_connect(addr, &ca.pem, &[b"h2"]).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let res = conn.send(addr, req(Method::GET, "/pub/a", &[])).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let same = format!("LOCALHOST.:{}", addr.port());
    let res = conn
        .send(addr, req(Method::GET, "/pub/b", &[("host", &same)]))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(upstream.requests(), 2);
    for other in [
        "admin.example.com".to_string(),
        format!("localhost:{}", addr.port() + 1),
        "localhost..".to_string(),
    ] {
        let res = conn
            .send(addr, req(Method::GET, "/pub/c", &[("host", &other)]))
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "Host {other}");
        assert!(res.text().contains("invalid request"), "{}", res.text());
    }
    assert_eq!(upstream.requests(), 2);

    // Frame by frame: Host alone names the host; neither `:authority` nor Host is a 400.
    let base = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/pub/d"),
    ];
    let mut host_only = base.to_vec();
    host_only.push(("host", &authority));
    let (status, body) = h2_raw(addr, &ca.pem, &host_only).await;
    assert_eq!(status, Some(200), "{body}");
    assert_eq!(upstream.requests(), 3);
    let (status, body) = h2_raw(addr, &ca.pem, &base).await;
    assert_eq!(status, Some(400), "{body}");
    assert!(body.contains("no Host header"), "{body}");
    let mut both = base.to_vec();
    both.push((":authority", &authority));
    both.push(("host", "admin.example.com"));
    let (status, body) = h2_raw(addr, &ca.pem, &both).await;
    assert_eq!(status, Some(400), "{body}");
    assert!(body.contains("name different hosts"), "{body}");
    assert_eq!(upstream.requests(), 3, "no refused request reached the app");
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_host_must_name_the_host_that_is_judged() {
    let upstream = start_upstream().await;
    let proxy = team_with(upstream.addr, "", "trusted_proxies = [\"127.0.0.0/8\"]").await;
    let alice = login(&proxy, USER, PASSWORD).await;

    // The rules judge Host; a proxy that says another host in X-Forwarded-Host (or passes a
    // client's on) would have the app believe a host that was not judged.
    for (host, forwarded) in [
        ("app.example.com", "admin.example.com"),
        ("admin.example.com.", "app.example.com"),
        ("app.example.com", "app.example.com, admin.example.com"),
    ] {
        let res = as_user(&proxy, &alice, host, &[("x-forwarded-host", forwarded)]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{host} / {forwarded}");
        assert!(res.text().contains("X-Forwarded-Host"), "{}", res.text());
    }
    let res = as_user(
        &proxy,
        &alice,
        "admin.example.com",
        &[("x-forwarded-host", "Admin.Example.com.")],
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), 0);

    // Agreeing: the app receives the proxy's X-Forwarded-Host as it wrote it, naming the host
    // that was judged, and Host as sent.
    let res = as_user(
        &proxy,
        &alice,
        "app.example.com",
        &[("x-forwarded-host", "App.Example.com.:443")],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.upstream_header("host"), vec!["app.example.com"]);
    assert_eq!(
        res.upstream_header("x-forwarded-host"),
        vec!["App.Example.com.:443"]
    );
    let res = as_user(&proxy, &alice, "app.example.com", &[]).await;
    assert_eq!(
        res.upstream_header("x-forwarded-host"),
        vec!["app.example.com"]
    );
}

#[tokio::test]
async fn a_clients_forwarded_host_is_never_judged_and_never_reaches_the_app() {
    let upstream = start_upstream().await;
    let proxy = team_with(upstream.addr, "", "").await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let res = as_user(
        &proxy,
        &alice,
        "app.example.com",
        &[("x-forwarded-host", "admin.example.com")],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.upstream_header("x-forwarded-host"),
        vec!["app.example.com"]
    );
    let res = as_user(
        &proxy,
        &alice,
        "admin.example.com.",
        &[("x-forwarded-host", "app.example.com")],
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn the_http_to_https_redirect_goes_to_the_canonical_host_or_nowhere() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sessiongate::serve_redirect(listener, 8443, async move {
        let _ = rx.await;
    }));
    let res = get(addr, "/x?y=1", &[("host", "App.Example.com.:8080")]).await;
    assert_eq!(res.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        res.header("location"),
        Some("https://app.example.com:8443/x?y=1")
    );
    for host in NOT_HOSTS {
        let res = get(addr, "/x", &[("host", host)]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{host}");
        assert!(
            res.text().contains("the Host is not a host"),
            "{}",
            res.text()
        );
        assert_eq!(res.header("location"), None);
    }
}
