//! "Your sessions" (`GET /.sessiongate/sessions`) and ending one (`POST
//! /.sessiongate/sessions/end`), with the in-memory store and with Redis: a user sees their own
//! sessions only, with where and when each started, the current one marked; each can be ended
//! (CSRF-checked like logout), never someone else's.

use crate::common::redis::{RedisOptions, RedisServer, redis_config};
use crate::common::*;
use http::{Method, StatusCode};

pub(crate) const CURL: (&str, &str) = ("user-agent", "curl/8.5.0");
pub(crate) const FIREFOX: (&str, &str) = (
    "user-agent",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
);

/// Logs `user` in with a User-Agent.
pub(crate) async fn login_as(
    proxy: &Proxy,
    user: &str,
    password: &str,
    ua: (&str, &str),
) -> String {
    let res = post_login(proxy, &[("username", user), ("password", password)], &[ua]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    cookie_pair(&res)
}

pub(crate) async fn sessions_page(proxy: &Proxy, cookie: &str) -> Resp {
    get(
        proxy.addr,
        "/.sessiongate/sessions",
        &[("cookie", cookie), BROWSER],
    )
    .await
}

/// The session handles in the page's "end this session" forms.
pub(crate) fn handles(html: &str) -> Vec<String> {
    html.split("name=\"session\" value=\"")
        .skip(1)
        .map(|rest| rest[..64].to_string())
        .collect()
}

async fn the_sessions_page_lists_and_ends_a_users_own_sessions(proxy: &Proxy) {
    let here = login_as(proxy, USER, PASSWORD, FIREFOX).await;
    let other = login_as(proxy, USER, PASSWORD, CURL).await;
    let bobs = login_as(proxy, "bob", BOB_PASSWORD, CURL).await;

    let res = sessions_page(proxy, &here).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let html = res.text();
    assert!(html.contains("<title>Your sessions</title>"));
    assert!(html.contains("Signed in as <strong>alice</strong>"));
    assert_eq!(
        html.matches("<tr").count(),
        3,
        "a header and two sessions: {html}"
    );
    assert_eq!(html.matches("(this browser)").count(), 1);
    assert!(
        html.contains("Firefox on Linux") && html.contains("<td>curl</td>"),
        "{html}"
    );
    assert!(html.contains("<td>127.0.0.1</td>"), "{html}");
    assert!(html.contains(" UTC"), "times are shown: {html}");
    assert!(html.contains("name=\"everywhere\" value=\"1\""));
    for cookie in [&here, &other] {
        let value = cookie.split_once('=').unwrap().1;
        assert!(
            !html.contains(value.split('.').next().unwrap()),
            "no session id on the page"
        );
    }
    // One "end" form: the other session (the current one signs out through logout).
    let listed = handles(&html);
    assert_eq!(listed.len(), 1, "{html}");

    // bob's page is about bob, and his handle does not end alice's sessions or vice versa.
    let bob_page = sessions_page(proxy, &bobs).await.text();
    assert!(bob_page.contains("Signed in as <strong>bob</strong>"));
    assert_eq!(bob_page.matches("(this browser)").count(), 1);
    assert!(handles(&bob_page).is_empty());
    let res = post_form(
        proxy,
        "/.sessiongate/sessions/end",
        &bobs,
        &[("session", &listed[0])],
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
    assert_eq!(
        status_with(proxy, &other).await,
        StatusCode::OK,
        "not bob's to end"
    );

    // Cross-site, or a script without the form token: refused, nothing ends.
    let cross = req_with_body(
        Method::POST,
        "/.sessiongate/sessions/end",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "https://evil.example"),
            ("cookie", &here),
        ],
        format!("session={}", listed[0]),
    );
    assert_eq!(send(proxy.addr, cross).await.status, StatusCode::FORBIDDEN);
    let tokenless = req_with_body(
        Method::POST,
        "/.sessiongate/sessions/end",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &here),
        ],
        format!("session={}", listed[0]),
    );
    assert_eq!(
        send(proxy.addr, tokenless).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status_with(proxy, &other).await, StatusCode::OK);
    let res = post_form(
        proxy,
        "/.sessiongate/sessions/end",
        &here,
        &[("session", "zz")],
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    // The button: the other session ends, this one stays, back to the page.
    let res = post_form(
        proxy,
        "/.sessiongate/sessions/end",
        &here,
        &[("session", &listed[0])],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some("/.sessiongate/sessions"));
    assert_eq!(status_with(proxy, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(proxy, &here).await, StatusCode::OK);
    assert_eq!(status_with(proxy, &bobs).await, StatusCode::OK);
    let html = sessions_page(proxy, &here).await.text();
    assert_eq!(html.matches("<tr").count(), 2, "{html}");
    // Ending it again: already gone.
    let res = post_form(
        proxy,
        "/.sessiongate/sessions/end",
        &here,
        &[("session", &listed[0])],
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

async fn without_a_session_the_page_asks_for_a_login(proxy: &Proxy) {
    let res = get(proxy.addr, "/.sessiongate/sessions", &[BROWSER]).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login?rd=%2F.sessiongate%2Fsessions")
    );
    let res = get(proxy.addr, "/.sessiongate/sessions", &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = post_form(
        proxy,
        "/.sessiongate/sessions/end",
        "",
        &[("session", &"0".repeat(64))],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
}

async fn sign_out_everywhere_from_the_page_ends_all_of_a_users_sessions(proxy: &Proxy) {
    let here = login_as(proxy, USER, PASSWORD, FIREFOX).await;
    let other = login_as(proxy, USER, PASSWORD, CURL).await;
    let bobs = login_as(proxy, "bob", BOB_PASSWORD, CURL).await;
    let res = post_form(proxy, "/.sessiongate/logout", &here, &[("everywhere", "1")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(status_with(proxy, &here).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(proxy, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(proxy, &bobs).await,
        StatusCode::OK,
        "only alice's"
    );
}

async fn memory_proxy() -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&team_config(upstream.addr, "", "")).await;
    (upstream, proxy)
}

async fn redis_proxy(redis: &RedisServer) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let toml = redis_config(upstream.addr, &redis.url(), "");
    let team = format!("{toml}groups = [\"admins\"]\n\n{}", team_users());
    (upstream, start_proxy_with(&team).await)
}

#[tokio::test]
async fn memory_store_sessions_page() {
    let (_upstream, proxy) = memory_proxy().await;
    the_sessions_page_lists_and_ends_a_users_own_sessions(&proxy).await;
    without_a_session_the_page_asks_for_a_login(&proxy).await;
    sign_out_everywhere_from_the_page_ends_all_of_a_users_sessions(&proxy).await;
}

#[tokio::test]
async fn redis_store_sessions_page() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    let (_upstream, proxy) = redis_proxy(&redis).await;
    the_sessions_page_lists_and_ends_a_users_own_sessions(&proxy).await;
    without_a_session_the_page_asks_for_a_login(&proxy).await;
    sign_out_everywhere_from_the_page_ends_all_of_a_users_sessions(&proxy).await;
}

#[tokio::test]
async fn ending_the_current_session_from_the_page_signs_this_browser_out() {
    let (_upstream, proxy) = memory_proxy().await;
    let here = login_as(&proxy, USER, PASSWORD, FIREFOX).await;
    let html = sessions_page(&proxy, &here).await.text();
    assert!(
        handles(&html).is_empty(),
        "the current session signs out through logout"
    );
    // Its handle is not on the page, but a hand-made form naming it still works as a logout.
    let handle = {
        let listed = proxy
            .app
            .gate
            .sessions()
            .list(
                proxy.app.gate.policy().user(USER).unwrap(),
                &sessiongate::session::SessionId::generate(),
            )
            .await
            .unwrap();
        listed[0].handle.to_hex()
    };
    let res = post_form(
        &proxy,
        "/.sessiongate/sessions/end",
        &here,
        &[("session", &handle)],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.header("location"), Some("/.sessiongate/login"));
    assert!(res.set_cookies()[0].contains("Max-Age=0"));
    assert_eq!(status_with(&proxy, &here).await, StatusCode::UNAUTHORIZED);
}
