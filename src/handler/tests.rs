//! The handler's phases on plain `http::Request` values: no socket, no upstream.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};

use super::*;
use crate::config::Config;
use crate::http::host::HostProblem;
use crate::http::upgrade::Refused;

const HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw";

fn app(upstream: &str) -> Arc<App> {
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
{upstream}
[[users]]
name = "alice"
password_hash = "{HASH}"
"#
    ))
    .expect("the test config is valid");
    App::new(config).expect("a memory store")
}

fn request(target: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// What the screen refuses `req` for (`None`: let through), from an untrusted peer unless
/// `trusted`.
fn screened(mut req: Request<()>, trusted: bool) -> (Option<Refusal<'static>>, bool) {
    let routes = Routes::new("/.sessiongate");
    let upgrades = [HeaderValue::from_static("websocket")];
    let screened = screen(&mut req, trusted, &routes, &upgrades);
    (screened.refused, screened.upgrade.asked())
}

/// What a refusal must be.
type Expect = fn(&Refusal<'_>) -> bool;

#[test]
fn the_screen_refuses_what_must_never_reach_the_gate() {
    let host = (HOST.as_str(), "app.example.com");
    let huge = "x".repeat(MAX_HEAD_BYTES);
    let cases: Vec<(Request<()>, Expect)> = vec![
        (request("/", &[host, ("x-big", &huge)]), |e| {
            matches!(e, Refusal::HeadTooLarge)
        }),
        (request("/a%zz", &[host]), |e| {
            matches!(e, Refusal::BadTarget(BadTarget::BadEscape))
        }),
        (request("/", &[]), |e| matches!(e, Refusal::BadHost(_))),
        (request("/", &[host, ("host", "other.example.com")]), |e| {
            matches!(e, Refusal::BadHost(_))
        }),
        (
            request(
                "/",
                &[
                    host,
                    (TRANSFER_ENCODING.as_str(), "chunked"),
                    (CONTENT_LENGTH.as_str(), "3"),
                ],
            ),
            |e| matches!(e, Refusal::Framing(_)),
        ),
        (
            request(
                "/",
                &[
                    host,
                    (CONNECTION.as_str(), "upgrade"),
                    (UPGRADE.as_str(), "h2c"),
                ],
            ),
            |e| matches!(e, Refusal::Upgrade(Refused::H2c)),
        ),
        (
            request(
                "/",
                &[
                    host,
                    (CONNECTION.as_str(), "upgrade"),
                    (UPGRADE.as_str(), "tls"),
                ],
            ),
            |e| matches!(e, Refusal::Upgrade(Refused::NotListed(_))),
        ),
    ];
    for (req, is) in cases {
        let target = req.uri().to_string();
        let (refused, _) = screened(req, false);
        let refused = refused.unwrap_or_else(|| panic!("{target} let through"));
        assert!(is(&refused), "{target}: {refused:?}");
    }
}

#[test]
fn a_trusted_proxy_must_forward_the_host_it_asks_for() {
    let headers = [
        (HOST.as_str(), "app.example.com"),
        ("x-forwarded-host", "admin.example.com"),
    ];
    let (refused, _) = screened(request("/", &headers), true);
    assert!(
        matches!(
            refused,
            Some(Refusal::BadHost(HostProblem::ForwardedMismatch))
        ),
        "{refused:?}"
    );
    // A client's is replaced on the way upstream, never believed.
    assert!(screened(request("/", &headers), false).0.is_none());
    // At the forward-auth endpoint it is the original request's host.
    let (refused, _) = screened(request("/.sessiongate/auth/forward", &headers), true);
    assert!(refused.is_none(), "{refused:?}");
}

/// nginx turns a 400 from `auth_request` into a 500: its endpoint's bad host is the 403 kind.
#[test]
fn a_bad_host_at_the_nginx_endpoint_is_refused_the_way_nginx_understands() {
    let doubled = [
        (HOST.as_str(), "a.example.com"),
        (HOST.as_str(), "b.example.com"),
    ];
    let refused = |path| screened(request(path, &doubled), false).0;
    assert!(
        matches!(
            refused("/.sessiongate/auth/nginx"),
            Some(Refusal::NginxBadHost(_))
        ),
        "{:?}",
        refused("/.sessiongate/auth/nginx")
    );
    assert!(matches!(refused("/app"), Some(Refusal::BadHost(_))));
    assert!(matches!(
        refused("/.sessiongate/auth/forward"),
        Some(Refusal::BadHost(_))
    ));
}

#[test]
fn the_screen_normalizes_what_it_lets_through_and_notes_any_upgrade() {
    let mut req = request("/a/./b/../c?q=1", &[(HOST.as_str(), "app.example.com")]);
    let routes = Routes::new("/.sessiongate");
    let plain = screen(&mut req, false, &routes, &[]);
    assert!(plain.refused.is_none());
    assert!(!plain.upgrade.asked());
    assert_eq!(req.uri(), "/a/c?q=1");
    let ws = request(
        "/",
        &[
            (HOST.as_str(), "app.example.com"),
            (CONNECTION.as_str(), "upgrade"),
            (UPGRADE.as_str(), "websocket"),
        ],
    );
    assert_eq!(screened_upgrade(ws), (true, true));
    // A refused request that asked for an upgrade still closes its connection.
    let bad = request("/a%zz", &[(UPGRADE.as_str(), "websocket")]);
    let (refused, asked) = screened(bad, false);
    assert!(refused.is_some() && asked);
}

/// Whether the screen let `req` through, and whether it asked for an upgrade.
fn screened_upgrade(req: Request<()>) -> (bool, bool) {
    let (refused, asked) = screened(req, false);
    (refused.is_none(), asked)
}

fn page(route: Option<Route<'_>>) -> Option<Page> {
    match route {
        Some(Route::Own(Endpoint::Page(page))) => Some(page),
        _ => None,
    }
}

#[tokio::test]
async fn own_endpoints_are_routed_by_their_exact_path() {
    let app = app("[upstream]\nurl = \"http://127.0.0.1:3000\"");
    for (path, want) in [
        ("/.sessiongate/login", Page::Login),
        ("/.sessiongate/login/code", Page::LoginCode),
        ("/.sessiongate/logout", Page::Logout),
        ("/.sessiongate/healthz", Page::Healthz),
        ("/.sessiongate/readyz", Page::Readyz),
        ("/.sessiongate/sessions", Page::Sessions),
        ("/.sessiongate/sessions/end", Page::SessionsEnd),
        ("/.sessiongate/logo", Page::Logo),
        ("/.sessiongate", Page::Unknown),
        ("/.sessiongate/", Page::Unknown),
        ("/.sessiongate/login/", Page::Unknown),
        ("/.sessiongate/LOGIN", Page::Unknown),
    ] {
        assert_eq!(page(route(&app, path)), Some(want), "{path}");
    }
    for (path, edge) in [
        ("/.sessiongate/auth/nginx", EdgeProxy::Nginx),
        ("/.sessiongate/auth/forward", EdgeProxy::Forward),
    ] {
        assert!(
            matches!(route(&app, path), Some(Route::Own(Endpoint::ForwardAuth(e))) if e == edge),
            "{path}"
        );
    }
    for path in ["/", "/.sessiongatex", "/login", "/x/.sessiongate/login"] {
        assert!(matches!(route(&app, path), Some(Route::App(_))), "{path}");
    }
}

#[tokio::test]
async fn without_an_upstream_only_own_endpoints_are_routed() {
    let app = app("");
    assert!(route(&app, "/app").is_none());
    assert_eq!(
        page(route(&app, "/.sessiongate/healthz")),
        Some(Page::Healthz)
    );
}

#[tokio::test]
async fn the_decide_phase_asks_the_gate_for_own_endpoints_too() {
    let app = app("[upstream]\nurl = \"http://127.0.0.1:3000\"");
    let via = |trusted| Via::Connection {
        trusted,
        proto: "http",
        upgrade: false,
    };
    let req = request("/.sessiongate/auth/nginx", &[]);
    let decided = decide(&app.gate, &req, via(false)).await;
    assert!(matches!(
        decided.decision,
        Decision::Own(Own::UntrustedEdge)
    ));
    let decided = decide(&app.gate, &req, via(true)).await;
    assert!(matches!(decided.decision, Decision::Own(Own::EdgeAsks)));
    let decided = decide(&app.gate, &request("/app", &[]), via(true)).await;
    assert_eq!(decided.decision.outcome(), Outcome::LoginRequired);
    // An own endpoint the gate did not decide as one grants nothing.
    assert!(matches!(own(decided), Own::Mine(Ok(None))));
}
