//! Password guessing: failed logins are limited per canonical username (whatever the case
//! or surrounding spaces) and per client address, answered 429 with Retry-After before any
//! password is checked, for known and unknown usernames alike. Clients come from distinct
//! loopback addresses (127.0.0.x), as they would from distinct machines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::*;
use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// The failure window of the test that waits for it to pass: long enough that its five
/// attempts fit in it on a busy machine.
const SHORT_WINDOW_SECS: u64 = 5;
/// The window of the tests that never wait for it: no machine is that slow.
const WINDOW_SECS: u64 = 600;

async fn limited_proxy(window_secs: u64) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_auth(
        &config_toml(upstream.addr, "", ""),
        &format!("max_failures = 3\nfailure_window = \"{window_secs}s\""),
    ))
    .await;
    (upstream, proxy)
}

/// POSTs a login from the loopback address 127.0.0.`host`, with `extra` headers.
async fn login_from_with(
    proxy: &Proxy,
    host: u8,
    user: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
            0,
        ))
        .unwrap();
    let stream = socket.connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("username", user), ("password", password)])
        .finish();
    let origin = format!("http://{}", proxy.addr);
    let host_header = proxy.addr.to_string();
    let mut headers = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", origin.as_str()),
        ("host", host_header.as_str()),
    ];
    headers.extend_from_slice(extra);
    let req = req_with_body(Method::POST, "/.sessiongate/login", &headers, body);
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes(),
    }
}

async fn login_from(proxy: &Proxy, host: u8, user: &str, password: &str) -> Resp {
    login_from_with(proxy, host, user, password, &[]).await
}

/// Asserts a 429 that says to come back within the `window_secs` failure window.
fn assert_limited(res: &Resp, what: &str, window_secs: u64) {
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{what}");
    let wait: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=window_secs).contains(&wait),
        "{what}: Retry-After {wait}"
    );
    assert!(sets_no_session(res), "{what}: {:?}", res.set_cookies());
    assert!(res.text().contains("Too many failed attempts"), "{what}");
}

#[tokio::test]
async fn guessing_one_users_password_from_many_addresses_is_limited_by_username() {
    let (_upstream, proxy) = limited_proxy(SHORT_WINDOW_SECS).await;
    for (host, spelling) in [(11, "alice"), (12, "Alice"), (13, " ALICE ")] {
        let res = login_from(&proxy, host, spelling, "guess").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{spelling:?}");
    }
    // Now even the right password, from a fresh address, is not checked.
    for (host, spelling) in [(14, "alice"), (15, "aLiCe")] {
        let res = login_from(&proxy, host, spelling, PASSWORD).await;
        assert_limited(&res, spelling, SHORT_WINDOW_SECS);
    }
    assert_eq!(proxy.app.gate.sessions().len(), 0);

    tokio::time::sleep(Duration::from_secs(SHORT_WINDOW_SECS) + Duration::from_millis(200)).await;
    let res = login_from(&proxy, 16, USER, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "the window passed");
}

#[tokio::test]
async fn spraying_many_usernames_from_one_address_is_limited_by_address() {
    let (_upstream, proxy) = limited_proxy(WINDOW_SECS).await;
    // Unknown usernames count like known ones.
    for user in ["root", "admin", "alice"] {
        let res = login_from(&proxy, 21, user, "Winter2026!").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{user}");
    }
    for user in ["bob", USER] {
        let res = login_from(&proxy, 21, user, PASSWORD).await;
        assert_limited(&res, user, WINDOW_SECS);
    }
    // alice failed only once, so from another address she logs in.
    let res = login_from(&proxy, 22, USER, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_good_login_resets_the_username_count_but_not_the_address_count() {
    let (_upstream, proxy) = limited_proxy(WINDOW_SECS).await;
    for _ in 0..2 {
        let res = login_from(&proxy, 31, USER, "wrong").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&proxy, 32, USER, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    // Two more failures for alice from a third address: her count started again.
    for _ in 0..2 {
        let res = login_from(&proxy, 33, USER, "wrong").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&proxy, 34, USER, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    // But address .31 keeps its two failures: one more and it is out.
    let res = login_from(&proxy, 31, "mallory", "x").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_limited(
        &login_from(&proxy, 31, USER, PASSWORD).await,
        ".31",
        WINDOW_SECS,
    );
}

/// Behind a trusted proxy, the client address is the proxy's X-Forwarded-For entry, so one
/// client can't lock everyone out and many clients are told apart. From an untrusted peer
/// the header is ignored, so it can't be used to escape the per-address limit.
#[tokio::test]
async fn the_address_is_taken_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let upstream = start_upstream().await;
    let toml = with_server(
        &with_auth(
            &config_toml(upstream.addr, "", ""),
            "max_failures = 2\nfailure_window = \"60s\"",
        ),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    // From 127.0.0.1, the trusted proxy, on behalf of the client in `xff`.
    let attempt = async |xff: &str, user: &str, pw: &str| {
        login_from_with(&proxy, 1, user, pw, &[("x-forwarded-for", xff)]).await
    };
    // 127.0.0.1 is the trusted proxy; the client is 198.51.100.7.
    for user in ["u1", "u2"] {
        assert_eq!(
            attempt("198.51.100.7", user, "x").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt("198.51.100.7", USER, PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("198.51.100.8", USER, PASSWORD).await.status,
        StatusCode::SEE_OTHER,
        "another client behind the same proxy is not locked out"
    );
    // A client claiming to be another one, in front of the trusted proxy, is still itself.
    assert_eq!(
        attempt("203.0.113.1, 198.51.100.7", USER, PASSWORD)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // An untrusted peer (127.0.0.2) can't pick its address with the header.
    for user in ["u3", "u4"] {
        let res = login_from_with(&proxy, 2, user, "x", &[("x-forwarded-for", "192.0.2.1")]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = login_from_with(&proxy, 2, "u5", "x", &[("x-forwarded-for", "192.0.2.99")]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A proxy that trusts 127.0.0.1 (the test client) for X-Forwarded-For, so each attempt can
/// come from its own client address, with `max_failures` and a window no test waits for.
async fn behind_a_trusted_proxy(max_failures: u32) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let toml = with_server(
        &with_auth(
            &config_toml(upstream.addr, "", ""),
            &format!("max_failures = {max_failures}\nfailure_window = \"{WINDOW_SECS}s\""),
        ),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    (upstream, start_proxy_with(&toml).await)
}

/// Failed logins, `count` of them, for the names `name(i)` from the client addresses
/// `address(i)` (through X-Forwarded-For), a few at a time; the status of each.
async fn failed_logins(
    proxy: &Proxy,
    count: usize,
    name: fn(usize) -> String,
    address: fn(usize) -> String,
) -> Vec<StatusCode> {
    const AT_ONCE: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..AT_ONCE {
        let addr = proxy.addr;
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for i in (lane..count).step_by(AT_ONCE) {
                let (user, xff) = (name(i), address(i));
                let fields = [("username", user.as_str()), ("password", "Winter2026!")];
                let res = post_login_to(addr, &fields, &[("x-forwarded-for", &xff)]).await;
                statuses.push(res.status);
            }
            statuses
        });
    }
    tasks.join_all().await.concat()
}

/// The measurement, over the wire: with one failure allowed, 600 first attempts from
/// fresh addresses with fresh names are all checked (401), none refused with 429 because
/// another key's failure landed in a shared counter.
#[tokio::test]
async fn first_attempts_are_never_refused_for_other_keys_failures() {
    let (upstream, proxy) = behind_a_trusted_proxy(1).await;
    let statuses = failed_logins(
        &proxy,
        600,
        |i| format!("fresh-user-{i}"),
        |i| format!("10.20.{}.{}", i / 250, i % 250 + 1),
    )
    .await;
    assert_eq!(statuses.len(), 600);
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 0, "first attempts refused for others' failures");
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    // Each of those keys did count: a second attempt by one of them is refused.
    let again = post_login(
        &proxy,
        &[("username", "fresh-user-7"), ("password", "x")],
        &[("x-forwarded-for", "10.99.0.1")],
    )
    .await;
    assert_limited(&again, "the name's own failure", WINDOW_SECS);
    assert_eq!(upstream.requests(), 0);
}

/// 1,200 bogus usernames from 1,200 addresses, one failure each: the real user still signs
/// in from a fresh address, and a name already at its limit before the flood stays limited
/// (the flood pushed out nothing that holds a guesser back).
#[tokio::test]
async fn a_flood_of_bogus_usernames_from_many_addresses_does_not_lock_out_a_real_user() {
    let (upstream, proxy) = behind_a_trusted_proxy(2).await;
    for xff in ["192.0.2.1", "192.0.2.2"] {
        let res = post_login(
            &proxy,
            &[("username", "bob"), ("password", "guess")],
            &[("x-forwarded-for", xff)],
        )
        .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let statuses = failed_logins(
        &proxy,
        1200,
        |i| format!("bogus-{i}"),
        |i| format!("10.30.{}.{}", i / 250, i % 250 + 1),
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "a bogus attempt was refused for others' failures"
    );

    let res = post_login(
        &proxy,
        &[("username", USER), ("password", PASSWORD)],
        &[("x-forwarded-for", "198.51.100.20")],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let limited = post_login(
        &proxy,
        &[("username", "bob"), ("password", "guess")],
        &[("x-forwarded-for", "198.51.100.21")],
    )
    .await;
    assert_limited(&limited, "bob, at his limit before the flood", WINDOW_SECS);
    assert_eq!(upstream.requests(), 0);
}
