//! Fail closed: when the session store cannot answer or a handler panics, the request is
//! refused and never forwarded, and the process keeps serving.
//!
//! The failures are injected through the fail points in the store (`session-touch`,
//! `session-create`, `session-remove`), compiled in for tests only. Fail points are global
//! to the process, so every test here holds a `FailScenario` (which serialises them) and no
//! other test shares this binary.

use crate::common::*;
use fail::FailScenario;
use http::{Method, StatusCode};

const BROWSER: (&str, &str) = ("accept", "text/html");

fn logout_req(proxy: &Proxy, cookie: &str) -> http::Request<ReqBody> {
    let origin = format!("http://{}", proxy.addr);
    req(
        Method::POST,
        "/.sessiongate/logout",
        &[("cookie", cookie), ("origin", &origin)],
    )
}

#[tokio::test]
async fn a_store_that_cannot_answer_refuses_the_request_and_forwards_nothing() {
    let scenario = FailScenario::setup();
    let (upstream, proxy) = start_with_public(&["/public"]).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK
    );
    let seen = upstream.requests();

    fail::cfg("session-touch", "return").unwrap();
    for path in ["/", "/api/x", "/public/x"] {
        for headers in [
            vec![("cookie", cookie.as_str())],
            vec![("cookie", &cookie), BROWSER],
        ] {
            let res = get(proxy.addr, path, &headers).await;
            assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(res.header("retry-after"), Some("1"));
            assert!(
                res.text().contains("sessions cannot be checked"),
                "{}",
                res.text()
            );
            // A browser gets the page in the sign-in page's style, a script the short text.
            let content_type = res.header("content-type").unwrap();
            if headers.contains(&BROWSER) {
                assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
                assert!(res.text().contains("<h1>Service unavailable</h1>"));
            } else {
                assert_eq!(content_type, "text/plain; charset=utf-8", "{path}");
            }
        }
    }
    // Not "anonymous" either: a login over a session the store can't check is refused too.
    let relogin = post_login(
        &proxy,
        &[("username", USER), ("password", PASSWORD)],
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(relogin.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(sets_no_session(&relogin), "{:?}", relogin.set_cookies());
    assert_eq!(upstream.requests(), seen, "nothing reached the upstream");

    fail::remove("session-touch");
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK,
        "serving again once the store answers"
    );
    scenario.teardown();
}

#[tokio::test]
async fn a_login_whose_session_cannot_be_stored_gets_no_cookie() {
    let scenario = FailScenario::setup();
    let (_upstream, proxy) = start().await;
    fail::cfg("session-create", "return").unwrap();
    let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(sets_no_session(&res), "{:?}", res.set_cookies());
    assert_eq!(res.header("cache-control"), Some("no-store"));
    fail::remove("session-create");
    login(&proxy, USER, PASSWORD).await;
    scenario.teardown();
}

#[tokio::test]
async fn a_logout_the_store_cannot_record_says_so() {
    let scenario = FailScenario::setup();
    let (_upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    fail::cfg("session-remove", "return").unwrap();
    let res = send(proxy.addr, logout_req(&proxy, &cookie)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    // The browser still drops the cookie.
    let clear = &res.set_cookies()[0];
    assert!(clear.to_ascii_lowercase().contains("max-age=0"), "{clear}");
    fail::remove("session-remove");

    let res = send(proxy.addr, logout_req(&proxy, &cookie)).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(proxy.app.gate.sessions().len(), 0);
    scenario.teardown();
}

#[tokio::test]
async fn a_panic_in_the_auth_path_is_a_500_and_the_proxy_keeps_serving() {
    let scenario = FailScenario::setup();
    let (upstream, proxy) = start().await;
    let cookie = login(&proxy, USER, PASSWORD).await;

    // A keep-alive connection opened before the panic, to show it is not taken down.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut other, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let host = proxy.addr.to_string();
    let on_other = |path: &str| {
        let mut r = req(Method::GET, path, &[("cookie", &cookie), ("host", &host)]);
        r.headers_mut().insert("host", host.parse().unwrap());
        r
    };
    let first = other.send_request(on_other("/before")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    http_body_util::BodyExt::collect(first.into_body())
        .await
        .unwrap();
    let seen = upstream.requests();

    fail::cfg("session-touch", "panic").unwrap();
    let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        res.text(),
        "internal error\n",
        "no detail leaks to the client"
    );
    assert_eq!(
        upstream.requests(),
        seen,
        "the panicking request was not forwarded"
    );
    fail::remove("session-touch");

    let after = other.send_request(on_other("/after")).await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::OK,
        "the other connection still works"
    );
    assert_eq!(
        get(proxy.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::OK,
        "new connections are served"
    );
    assert!(
        !proxy.task.as_ref().unwrap().is_finished(),
        "the server is still running"
    );
    scenario.teardown();
}

/// A password check that panics on the hashing thread is a failed login, never a granted one,
/// and the thread survives it: with a single hashing thread, logins after several panics are
/// still checked.
#[tokio::test]
async fn a_panicking_password_check_refuses_the_login_and_the_pool_goes_on() {
    let scenario = FailScenario::setup();
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_auth(
        &config_toml(upstream.addr, "", ""),
        "login_workers = 1\nlogin_queue = 4",
    ))
    .await;
    fail::cfg("password-check", "panic").unwrap();
    for _ in 0..3 {
        let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
        assert!(sets_no_session(&res), "{:?}", res.set_cookies());
    }
    fail::remove("password-check");
    for _ in 0..3 {
        login(&proxy, USER, PASSWORD).await;
    }
    let wrong = post_login(&proxy, &[("username", USER), ("password", "nope")], &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    scenario.teardown();
}

/// Forward-auth fails closed too: a store that cannot answer is 503 from both endpoints, never
/// a 200 that would let the edge proxy through.
#[tokio::test]
async fn forward_auth_answers_503_when_the_store_cannot_answer() {
    let scenario = FailScenario::setup();
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&with_server(
        &config_toml(upstream.addr, "", ""),
        "trusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    fail::cfg("session-touch", "return").unwrap();
    for (endpoint, headers) in [
        (
            "/.sessiongate/auth/nginx",
            vec![("x-original-method", "GET"), ("x-original-uri", "/")],
        ),
        (
            "/.sessiongate/auth/forward",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-proto", "https"),
            ],
        ),
    ] {
        let mut all = headers.clone();
        all.push(("cookie", cookie.as_str()));
        let res = get(proxy.addr, endpoint, &all).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{endpoint}");
        assert!(res.header("x-forwarded-user").is_none(), "{endpoint}");
    }
    fail::remove("session-touch");
    scenario.teardown();
}
