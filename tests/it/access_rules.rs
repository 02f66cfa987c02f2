//! Access rules over real sockets: who may open what by user, group, method and host, first
//! match wins, the default, the 403 page and JSON (never a login loop), path tricks against
//! rule prefixes, and the groups header.

use crate::common::*;
use http::{Method, StatusCode};

/// The /reports rules (by method, first match wins) and the public POST hook.
const REPORTS_AND_HOOKS: &str = r#"
[[rules]]
path = "/reports"
methods = ["GET", "HEAD"]
allow = ["group:ops", "bob"]

[[rules]]
path = "/reports"
allow = ["group:admins"]

[[rules]]
path = "/hooks/"
methods = ["POST"]
public = true
"#;

const INTERNAL_DENIED: &str = "\n[[rules]]\npath = \"/internal\"\ndeny = true\n";

/// The rules of most tests here, in this order: /admin for admins, /reports by method, a public
/// POST hook, the grafana host for carol, /internal for nobody.
fn rules() -> String {
    format!("{ADMINS_RULE}{REPORTS_AND_HOOKS}{GRAFANA_RULE}{INTERNAL_DENIED}")
}

async fn start_team(auth: &str, rules: &str) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&team_config(upstream.addr, auth, rules)).await;
    (upstream, proxy)
}

struct Sessions {
    alice: String,
    bob: String,
    carol: String,
}

async fn log_everyone_in(proxy: &Proxy) -> Sessions {
    Sessions {
        alice: login(proxy, USER, PASSWORD).await,
        bob: login(proxy, "bob", BOB_PASSWORD).await,
        carol: login(proxy, "carol", CAROL_PASSWORD).await,
    }
}

/// Sends `method path` as `cookie` (None: no session) with `host`, and checks the status and
/// whether the upstream received it.
async fn expect(
    proxy: &Proxy,
    upstream: &Upstream,
    (method, path, host): (Method, &str, Option<&str>),
    cookie: Option<&str>,
    want: StatusCode,
) -> Resp {
    let before = upstream.requests();
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    if let Some(h) = host {
        headers.push(("host", h));
    }
    let res = send(proxy.addr, req(method.clone(), path, &headers)).await;
    let who = if cookie.is_some() {
        "a session"
    } else {
        "nobody"
    };
    assert_eq!(
        res.status,
        want,
        "{method} {path} (host {host:?}) as {who}: {}",
        res.text()
    );
    let forwarded = upstream.requests() > before;
    assert_eq!(
        forwarded,
        want == StatusCode::OK,
        "{method} {path}: forwarded = {forwarded} with status {want}"
    );
    res
}

#[tokio::test]
async fn rules_decide_by_user_group_method_and_host_first_match_wins() {
    let (upstream, proxy) = start_team("", &rules()).await;
    let s = log_everyone_in(&proxy).await;
    let (alice, bob, carol) = (
        Some(s.alice.as_str()),
        Some(s.bob.as_str()),
        Some(s.carol.as_str()),
    );
    use StatusCode as S;
    let get = |path| (Method::GET, path, None);
    let post = |path| (Method::POST, path, None);
    for (request, who, want) in [
        // allow by group
        (get("/admin"), alice, S::OK),
        (get("/admin/users/7"), alice, S::OK),
        (get("/admin"), bob, S::FORBIDDEN),
        (get("/admin/users"), carol, S::FORBIDDEN),
        (get("/admin"), None, S::UNAUTHORIZED),
        // segment-aligned: /administrator is not under /admin, so the default (login) applies
        (get("/administrator"), bob, S::OK),
        (get("/administrator"), None, S::UNAUTHORIZED),
        // methods, and the first match wins: GET /reports for ops and bob, the rest for admins
        (get("/reports"), bob, S::OK),
        (get("/reports/q3"), carol, S::OK),
        ((Method::HEAD, "/reports", None), bob, S::OK),
        (post("/reports"), bob, S::FORBIDDEN),
        (post("/reports"), carol, S::FORBIDDEN),
        (post("/reports"), alice, S::OK),
        // public by method
        (post("/hooks/github"), None, S::OK),
        (get("/hooks/github"), None, S::UNAUTHORIZED),
        // host, in any case and with a port
        (
            (Method::GET, "/", Some("grafana.example.com")),
            carol,
            S::OK,
        ),
        (
            (Method::GET, "/x", Some("Grafana.Example.com:8443")),
            carol,
            S::OK,
        ),
        (
            (Method::GET, "/", Some("grafana.example.com")),
            alice,
            S::FORBIDDEN,
        ),
        (
            (Method::GET, "/", Some("grafana.example.com.evil")),
            alice,
            S::OK,
        ),
        ((Method::GET, "/", Some("other.example.com")), bob, S::OK),
        // deny is for everyone, logged in or not (403, not a login prompt)
        (get("/internal"), alice, S::FORBIDDEN),
        (get("/internal/x"), None, S::FORBIDDEN),
        // no rule: any logged-in user
        (get("/anything"), carol, S::OK),
    ] {
        expect(&proxy, &upstream, request, who, want).await;
    }
}

#[tokio::test]
async fn a_refused_user_gets_a_403_page_or_json_and_never_the_login_page() {
    let (upstream, proxy) = start_team("", &rules()).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;

    let page = get(proxy.addr, "/admin/settings", &[("cookie", &bob), BROWSER]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        page.header("location"),
        None,
        "no redirect: that would loop"
    );
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = page.text();
    assert!(
        html.contains("Signed in as <strong>bob</strong>; you do not have access to this page."),
        "{html}"
    );
    assert!(
        html.contains(r#"<form method="post" action="/.sessiongate/logout">"#),
        "{html}"
    );
    for detail in ["rules[", "group:", "admins", "/admin\""] {
        assert!(
            !html.contains(detail),
            "the page reveals {detail:?}: {html}"
        );
    }

    let api = get(proxy.addr, "/admin/settings", &[("cookie", &bob)]).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.json(), serde_json::json!({"error": "forbidden"}));
    assert_eq!(upstream.requests(), 0);

    // The page's sign-out button works as it is: its form token is accepted without Origin.
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field");
    let form = format!("csrf={token}");
    let out = send(
        proxy.addr,
        req_with_body(
            Method::POST,
            "/.sessiongate/logout",
            &[
                ("cookie", &bob),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form,
        ),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text());
    assert_eq!(proxy.app.gate.sessions().len(), 0);

    // Logging in again with rd pointing at the refused page lands on the 403, not on a loop.
    let again = post_login(
        &proxy,
        &[
            ("username", "bob"),
            ("password", BOB_PASSWORD),
            ("rd", "/admin"),
        ],
        &[],
    )
    .await;
    assert_eq!(again.header("location"), Some("/admin"));
    let bob = cookie_pair(&again);
    let res = get(proxy.addr, "/admin", &[("cookie", &bob), BROWSER]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn anonymous_browsers_are_sent_to_sign_in_for_allow_rules_but_refused_by_deny() {
    let (upstream, proxy) = start_team("", &rules()).await;
    let res = get(proxy.addr, "/admin?tab=2", &[BROWSER]).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login?rd=%2Fadmin%3Ftab%3D2")
    );
    let res = get(proxy.addr, "/internal", &[BROWSER]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.text().contains("Nobody has access to this page."));
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn default_deny_refuses_whatever_no_rule_allows() {
    let rules = "[[rules]]\npath = \"/app\"\nallow = [\"alice\"]\n";
    let (upstream, proxy) =
        start_team("public_paths = [\"/healthz\"]\ndefault = \"deny\"", rules).await;
    let s = log_everyone_in(&proxy).await;
    let get = |path| (Method::GET, path, None);
    for (request, who, want) in [
        (get("/app/x"), Some(s.alice.as_str()), StatusCode::OK),
        (get("/app/x"), Some(s.bob.as_str()), StatusCode::FORBIDDEN),
        (get("/other"), Some(s.alice.as_str()), StatusCode::FORBIDDEN),
        (get("/"), Some(s.alice.as_str()), StatusCode::FORBIDDEN),
        (get("/other"), None, StatusCode::FORBIDDEN),
        (get("/app"), None, StatusCode::UNAUTHORIZED),
        (get("/healthz"), None, StatusCode::OK),
    ] {
        expect(&proxy, &upstream, request, who, want).await;
    }
}

/// Spellings of /admin that some backend routes to /admin: bob, allowed under /x only, must
/// not reach /admin with any of them, and an anonymous client must not get past a public
/// prefix with them.
#[tokio::test]
async fn path_tricks_do_not_get_past_rule_prefixes() {
    let rules = r#"
[[rules]]
path = "/static"
public = true

[[rules]]
path = "/x"
allow = ["bob"]

[[rules]]
path = "/admin"
allow = ["group:admins"]
"#;
    let (upstream, proxy) = start_team("", rules).await;
    let bob = login(&proxy, "bob", BOB_PASSWORD).await;
    for trick in [
        "/x/..;/admin",
        "/x/..;/admin/users",
        "/x;a=b/../admin",
        "/x/..%2fadmin",
        "/x/..%2Fadmin",
        "/x/..%5cadmin",
        "/x/%2e%2e/admin",
        "/x/.%2e/admin",
        "/x/../admin",
        "//admin",
        "/admin;jsessionid=1",
        "/%61dmin",
    ] {
        let before = upstream.requests();
        let res = get(proxy.addr, trick, &[("cookie", &bob)]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{trick}: {}", res.text());
        assert_eq!(upstream.requests(), before, "{trick} was forwarded");
    }
    for trick in [
        "/static/..;/admin",
        "/static/..%2Fadmin",
        "/static/%2e%2e/admin",
        "/static;x/../admin",
        "//static/../admin",
    ] {
        let res = get(proxy.addr, trick, &[]).await;
        assert!(
            res.status == StatusCode::UNAUTHORIZED || res.status == StatusCode::FORBIDDEN,
            "{trick}: {} {}",
            res.status,
            res.text()
        );
    }
    assert_eq!(upstream.requests(), 0, "no trick was forwarded");
    // Dot segments are resolved before the rules, on the path as sent: "/x//..//admin" is
    // "/x//admin", which a slash-merging backend serves as /x/admin, and bob may open that.
    let res = get(proxy.addr, "/x//..//admin", &[("cookie", &bob)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/x//admin");
    // The real paths still work.
    let res = get(proxy.addr, "/x/report", &[("cookie", &bob)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/x/report");
    let res = get(proxy.addr, "/static/app.css", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn the_groups_header_names_the_users_groups_and_client_copies_are_removed() {
    let (_upstream, proxy) = start_team("public_paths = [\"/public\"]", &rules()).await;
    let s = log_everyone_in(&proxy).await;
    let spoofs = [
        ("x-forwarded-groups", "admins"),
        ("X_Forwarded_Groups", "admins"),
        ("x-forwarded_groups", "admins"),
    ];
    for (cookie, user, groups) in [
        (&s.alice, "alice", "admins,ops"),
        (&s.bob, "bob", ""),
        (&s.carol, "carol", "ops"),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(spoofs);
        for path in ["/anything", "/public/x"] {
            let res = get(proxy.addr, path, &headers).await;
            assert_eq!(res.status, StatusCode::OK);
            assert_eq!(res.upstream_header("x-forwarded-user"), vec![user]);
            assert_eq!(
                res.upstream_header("x-forwarded-groups"),
                vec![groups],
                "{user} on {path}"
            );
            assert!(res.upstream_header("x_forwarded_groups").is_empty());
            assert!(res.upstream_header("x-forwarded_groups").is_empty());
        }
    }
    // A public path without a session: neither header, whatever the client sent.
    let res = get(proxy.addr, "/public/x", &spoofs).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.upstream_header("x-forwarded-groups").is_empty());
    assert!(res.upstream_header("x_forwarded_groups").is_empty());
    assert!(res.upstream_header("x-forwarded-user").is_empty());
}

#[tokio::test]
async fn the_groups_header_name_is_configurable() {
    let upstream = start_upstream().await;
    let toml = team_config(upstream.addr, "", "").replace(
        "[upstream]",
        "[upstream]\ngroups_header = \"X-Auth-Groups\"",
    );
    let proxy = start_proxy_with(&toml).await;
    let alice = login(&proxy, USER, PASSWORD).await;
    let res = get(
        proxy.addr,
        "/",
        &[
            ("cookie", &alice),
            ("x-auth-groups", "root"),
            ("x-forwarded-groups", "kept"),
        ],
    )
    .await;
    assert_eq!(res.upstream_header("x-auth-groups"), vec!["admins,ops"]);
    assert_eq!(
        res.upstream_header("x-forwarded-groups"),
        vec!["kept"],
        "no longer sessiongate's header"
    );
}
