//! The gate's decisions from plain header maps, over a memory store: no socket, no handler.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::HeaderValue;
use http::header::{COOKIE, HOST, ORIGIN};

use super::*;
use crate::config::Config;
use crate::session::{MemoryStore, SessionKeys};

const HASH: &str = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw";
const KEY: &[u8] = b"gate tests";

/// alice (group admins), bob (no groups); `/static` public; `/admin` for admins, `/reports`
/// for bob, `/internal` for nobody, grafana.example.com for bob; anything else for anyone
/// signed in.
fn config() -> Config {
    Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:3000"
[auth]
public_paths = ["/static"]
websocket_origins = ["https://dash.example.com"]
[[users]]
name = "alice"
password_hash = "{HASH}"
groups = ["admins"]
[[users]]
name = "bob"
password_hash = "{HASH}"
[[rules]]
path = "/admin"
allow = ["group:admins"]
[[rules]]
path = "/reports"
allow = ["bob"]
[[rules]]
path = "/internal"
deny = true
[[rules]]
path = "/"
host = "grafana.example.com"
allow = ["bob"]
"#
    ))
    .expect("the test config is valid")
}

/// A gate over a memory store whose sessions idle out after `idle`.
fn gate(idle: Duration) -> Gate {
    let config = config();
    let prefix = "/.sessiongate";
    let site = Site {
        prefix: prefix.into(),
        forward_auth: [
            format!("{prefix}/auth/nginx"),
            format!("{prefix}/auth/forward"),
        ],
        signed_in: vec![
            format!("{prefix}/sessions"),
            format!("{prefix}/sessions/end"),
        ],
        websocket_origins: config.auth.websocket_origins.clone(),
        cookie_name: config.session.cookie_name.clone(),
    };
    let sessions = Sessions::Memory {
        store: Arc::new(MemoryStore::new(idle, Duration::from_secs(3600))),
        keys: SessionKeys::new(KEY),
    };
    Gate::new(
        config.policy(),
        Arc::new(UserNames::default()),
        sessions,
        Arc::new(Tunnels::default()),
        CookieSigner::new(KEY, &config.session.cookie_name),
        Arc::new(Metrics::new(true)),
        site,
    )
}

/// Headers carrying a fresh session of `name`'s, and its id.
async fn signed_in(gate: &Gate, name: &str) -> (HeaderMap, SessionId) {
    let user = gate.policy().user(name).expect("a test user").clone();
    let meta = SessionMeta {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        browser: Default::default(),
    };
    let id = gate.start_session(&user, &meta).await.expect("memory");
    let signer = CookieSigner::new(KEY, &config().session.cookie_name);
    let cookie = format!("{}={}", config().session.cookie_name, signer.sign(&id));
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
    (headers, id)
}

/// An ordinary request on a connection from an untrusted peer.
const DIRECT: Via = Via::Connection {
    trusted: false,
    proto: "https",
    upgrade: false,
};

async fn ask(gate: &Gate, path: &str, headers: &HeaderMap, via: Via) -> Decided {
    ask_on(gate, None, path, headers, via).await
}

async fn ask_on(
    gate: &Gate,
    host: Option<&str>,
    path: &str,
    headers: &HeaderMap,
    via: Via,
) -> Decided {
    let head = Head {
        method: &Method::GET,
        host: HostOf::Known(host),
        path,
        headers,
        via,
    };
    gate.decide(head).await
}

/// A decision's outcome and the name of the user it names.
fn seen(decided: Decided) -> (Outcome, Option<String>) {
    let outcome = decided.decision.outcome();
    (
        outcome,
        decided.decision.into_user().map(|u| u.name.clone()),
    )
}

fn who(outcome: Outcome, name: Option<&str>) -> (Outcome, Option<String>) {
    (outcome, name.map(str::to_string))
}

#[tokio::test]
async fn public_paths_need_no_session_and_still_name_a_signed_in_user() {
    let gate = gate(Duration::from_secs(60));
    let nobody = HeaderMap::new();
    let (alice, id) = signed_in(&gate, "alice").await;
    let decided = ask(&gate, "/static/app.js", &nobody, DIRECT).await;
    assert!(decided.session.is_none());
    assert_eq!(seen(decided), who(Outcome::Public, None));
    let decided = ask(&gate, "/static/app.js", &alice, DIRECT).await;
    assert!(decided.session == Some(id));
    assert_eq!(seen(decided), who(Outcome::Public, Some("alice")));
    // Segment-aligned, as every rule path.
    let decided = ask(&gate, "/staticky", &nobody, DIRECT).await;
    assert_eq!(seen(decided), who(Outcome::LoginRequired, None));
}

#[tokio::test]
async fn rules_allow_and_refuse_by_user_group_and_host() {
    let gate = gate(Duration::from_secs(60));
    let (alice, _) = signed_in(&gate, "alice").await;
    let (bob, _) = signed_in(&gate, "bob").await;
    for (host, path, headers, want) in [
        (
            None,
            "/admin/users",
            &alice,
            who(Outcome::Allow, Some("alice")),
        ),
        (None, "/admin", &bob, who(Outcome::Forbidden, Some("bob"))),
        (None, "/reports", &bob, who(Outcome::Allow, Some("bob"))),
        (
            None,
            "/reports",
            &alice,
            who(Outcome::Forbidden, Some("alice")),
        ),
        (
            None,
            "/internal",
            &alice,
            who(Outcome::Forbidden, Some("alice")),
        ),
        (None, "/anything", &bob, who(Outcome::Allow, Some("bob"))),
        (
            Some("grafana.example.com"),
            "/d/1",
            &bob,
            who(Outcome::Allow, Some("bob")),
        ),
        (
            Some("grafana.example.com"),
            "/d/1",
            &alice,
            who(Outcome::Forbidden, Some("alice")),
        ),
        // Both readings of an ambiguous path are judged; the stricter stands.
        (
            None,
            "/x/..;/admin",
            &bob,
            who(Outcome::Forbidden, Some("bob")),
        ),
    ] {
        let decided = ask_on(&gate, host, path, headers, DIRECT).await;
        assert!(decided.session.is_some(), "{path}");
        assert_eq!(seen(decided), want, "{host:?} {path}");
    }
}

#[tokio::test]
async fn no_session_or_a_forged_one_needs_a_login() {
    let gate = gate(Duration::from_secs(3600));
    let (alice, _) = signed_in(&gate, "alice").await;
    assert_eq!(
        seen(ask(&gate, "/admin", &alice, DIRECT).await),
        who(Outcome::Allow, Some("alice"))
    );
    let mut forged = HeaderMap::new();
    let cookie = format!("{}=AAAA.BBBB", config().session.cookie_name);
    forged.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
    for headers in [&HeaderMap::new(), &forged] {
        let decided = ask(&gate, "/admin", headers, DIRECT).await;
        assert!(decided.session.is_none());
        assert_eq!(seen(decided), who(Outcome::LoginRequired, None));
    }
}

/// Only the expiry is asked after the wait: a busy machine makes the wait longer, never
/// shorter, so the session is idled out whatever the machine's speed.
#[tokio::test]
async fn an_idled_out_session_needs_a_login() {
    let gate = gate(Duration::from_millis(50));
    let (alice, _) = signed_in(&gate, "alice").await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let decided = ask(&gate, "/admin", &alice, DIRECT).await;
    assert!(
        decided.session.is_none(),
        "an idled-out session names nobody"
    );
    assert_eq!(seen(decided), who(Outcome::LoginRequired, None));
}

#[tokio::test]
async fn own_endpoints_are_sessiongates_whatever_the_rules_say() {
    let gate = gate(Duration::from_secs(60));
    let nobody = HeaderMap::new();
    for path in ["/.sessiongate", "/.sessiongate/login", "/.sessiongate/nope"] {
        let decided = ask(&gate, path, &nobody, DIRECT).await;
        assert!(
            matches!(decided.decision, Decision::Own(Own::Open)),
            "{path}"
        );
        assert_eq!(decided.decision.outcome(), Outcome::OwnEndpoint);
    }
    // Only the prefix and paths under it.
    let decided = ask(&gate, "/.sessiongatex", &nobody, DIRECT).await;
    assert_eq!(seen(decided), who(Outcome::LoginRequired, None));
}

#[tokio::test]
async fn the_sessions_page_is_for_the_signed_in_user_only() {
    let gate = gate(Duration::from_secs(60));
    let (bob, id) = signed_in(&gate, "bob").await;
    for path in ["/.sessiongate/sessions", "/.sessiongate/sessions/end"] {
        let decided = ask(&gate, path, &HeaderMap::new(), DIRECT).await;
        assert!(
            matches!(decided.decision, Decision::Own(Own::Mine(Ok(None)))),
            "{path}"
        );
        let decided = ask(&gate, path, &bob, DIRECT).await;
        let Decision::Own(Own::Mine(Ok(Some(session)))) = decided.decision else {
            panic!("{path}: bob's session not found");
        };
        assert!(session.id == id && session.user.name == "bob");
    }
}

#[tokio::test]
async fn forward_auth_answers_trusted_proxies_only_and_their_questions_see_own_paths_open() {
    let gate = gate(Duration::from_secs(60));
    let nobody = HeaderMap::new();
    for path in ["/.sessiongate/auth/nginx", "/.sessiongate/auth/forward"] {
        let trusted = Via::Connection {
            trusted: true,
            proto: "http",
            upgrade: false,
        };
        let asks = ask(&gate, path, &nobody, trusted).await;
        assert!(
            matches!(asks.decision, Decision::Own(Own::EdgeAsks)),
            "{path}"
        );
        let asks = ask(&gate, path, &nobody, DIRECT).await;
        assert!(
            matches!(asks.decision, Decision::Own(Own::UntrustedEdge)),
            "{path}"
        );
    }
    // What an edge proxy asks about: own paths open to all, the rest judged as if proxied.
    for path in [
        "/.sessiongate/login",
        "/.sessiongate/auth/nginx",
        "/.sessiongate/sessions",
    ] {
        let decided = ask(&gate, path, &nobody, Via::Edge).await;
        assert!(
            matches!(decided.decision, Decision::Own(Own::Open)),
            "{path}"
        );
    }
    let (alice, _) = signed_in(&gate, "alice").await;
    assert_eq!(
        seen(ask(&gate, "/admin", &alice, Via::Edge).await),
        who(Outcome::Allow, Some("alice"))
    );
    assert_eq!(
        seen(ask(&gate, "/admin", &nobody, Via::Edge).await),
        who(Outcome::LoginRequired, None)
    );
}

#[tokio::test]
async fn an_upgrade_must_come_from_this_site_a_listed_origin_or_no_browser() {
    let gate = gate(Duration::from_secs(60));
    let (alice, _) = signed_in(&gate, "alice").await;
    let upgrade = |proto| Via::Connection {
        trusted: false,
        proto,
        upgrade: true,
    };
    let with = |origin: Option<&'static str>| {
        let mut h = alice.clone();
        h.insert(HOST, HeaderValue::from_static("app.example.com"));
        if let Some(origin) = origin {
            h.insert(ORIGIN, HeaderValue::from_static(origin));
        }
        h
    };
    for (origin, proto, allowed) in [
        (None, "https", true),
        (Some("https://app.example.com"), "https", true),
        (Some("https://APP.example.com:443"), "https", true),
        (Some("https://dash.example.com"), "https", true),
        (Some("https://evil.example.com"), "https", false),
        (Some("http://app.example.com"), "https", false),
        (Some("null"), "https", false),
    ] {
        for path in ["/admin", "/static/live"] {
            let decided = ask(&gate, path, &with(origin), upgrade(proto)).await;
            if allowed {
                assert_ne!(decided.decision.outcome(), Outcome::Forbidden, "{origin:?}");
            } else {
                // Refused before the session is even looked up.
                assert!(decided.session.is_none(), "{origin:?}");
                assert!(
                    matches!(decided.decision, Decision::CrossSiteUpgrade),
                    "{origin:?} {path}"
                );
                assert_eq!(decided.decision.outcome(), Outcome::Forbidden);
            }
        }
    }
    // The Origin of a request that is no upgrade is not the gate's business.
    let decided = ask(
        &gate,
        "/admin",
        &with(Some("https://evil.example.com")),
        DIRECT,
    )
    .await;
    assert_eq!(seen(decided), who(Outcome::Allow, Some("alice")));
}

#[tokio::test]
async fn a_tunnel_asks_the_gate_whether_its_session_lives_on() {
    let gate = gate(Duration::from_secs(60));
    let (_, id) = signed_in(&gate, "bob").await;
    let found = gate.tunnel_session(&id).await.unwrap();
    assert!(found.is_some_and(|(owner, _)| gate.policy().current(owner).is_some()));
    assert!(gate.tunnel_live(&id, true).await.unwrap());
    assert!(gate.tunnel_live(&id, false).await.unwrap());
    gate.end_session(&id, EndReason::Logout).await.unwrap();
    assert!(gate.tunnel_session(&id).await.unwrap().is_none());
    assert!(!gate.tunnel_live(&id, false).await.unwrap());
}
