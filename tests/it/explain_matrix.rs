//! `sessiongate explain` never disagrees with the proxy: the whole rules matrix (users and
//! groups, methods, hosts, public paths, allow and deny rules, ambiguous paths, own endpoints,
//! both defaults) is asked of the proxy over a real socket in front of a real upstream, and of
//! `explain`, and each request gets the same decision and forwards the same identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::*;
use http::{Method, StatusCode};
use sessiongate::App;
use sessiongate::config::Config;

const HOOKS_RULE: &str = "\n[[rules]]\npath = \"/hooks/\"\nmethods = [\"POST\"]\npublic = true\n";
const INTERNAL_RULE: &str = "\n[[rules]]\npath = \"/internal\"\ndeny = true\n";
const REPORTS_RULE: &str = "\n[[rules]]\npath = \"/reports\"\nallow = [\"bob\", \"group:ops\"]\n";

const PATHS: &[&str] = &[
    "/",
    "/admin",
    "/admin/users",
    "/administrator",
    "/hooks/github",
    "/healthz",
    "/static/app.js",
    "/internal/x",
    "/reports",
    "/x/..;/admin",
    "/x/../internal",
    "/.sessiongate",
    "/.sessiongate/login",
    "/.sessiongate/sessions",
    "/.sessiongatex",
];
const HOSTS: &[&str] = &[
    "app.example.com",
    "grafana.example.com",
    "GRAFANA.example.com.",
];
const METHODS: &[Method] = &[Method::GET, Method::POST];

/// The team config (alice: admins and ops; bob; carol: ops) with every kind of rule, and
/// `auth.default` as given.
fn matrix_config(upstream: std::net::SocketAddr, default: &str) -> String {
    let rules = format!("{ADMINS_RULE}{GRAFANA_RULE}{HOOKS_RULE}{INTERNAL_RULE}{REPORTS_RULE}");
    team_config(
        upstream,
        &format!("public_paths = [\"/healthz\", \"/static\"]\ndefault = \"{default}\""),
        &rules,
    )
}

/// `requests_total` by decision, summed over status classes.
fn decisions(app: &App) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for line in app.metrics.encode().lines() {
        let Some(rest) = line.strip_prefix("sessiongate_requests_total{decision=\"") else {
            continue;
        };
        let (decision, rest) = rest.split_once('"').expect("a quoted label");
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        *counts.entry(decision.to_string()).or_default() += value;
    }
    counts
}

/// The decision label of `explain`'s `decision:` line, and the user it forwards, if any.
fn explained(text: &str) -> (String, Option<String>) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("decision: "))
        .unwrap_or_else(|| panic!("no decision line in\n{text}"));
    let label = [
        ("allow", "allow"),
        ("public", "public"),
        ("login required", "login_required"),
        ("forbidden", "forbidden"),
        ("unavailable", "unavailable"),
        ("sessiongate's own endpoint", "own_endpoint"),
    ]
    .iter()
    .find(|(said, _)| line.starts_with(said))
    .unwrap_or_else(|| panic!("unknown decision {line:?}"))
    .1;
    let user = line
        .split_once("x-forwarded-user: ")
        .map(|(_, rest)| rest.split(' ').next().unwrap().to_string());
    (label.to_string(), user)
}

/// What the proxy made of one request: the label its metrics counted, and the user the
/// upstream was told (when the request reached it).
async fn proxied(
    proxy: &Proxy,
    upstream: &Upstream,
    method: &Method,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let before = decisions(&proxy.app);
    let forwarded_before = upstream.requests();
    let mut headers = vec![("host", host)];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    let res = send(proxy.addr, req(method.clone(), path, &headers)).await;
    let after = decisions(&proxy.app);
    let moved: Vec<&String> = after
        .iter()
        .filter(|(label, n)| before.get(*label) != Some(*n))
        .map(|(label, _)| label)
        .collect();
    assert_eq!(moved.len(), 1, "{method} {host}{path}: {moved:?}");
    let user = if upstream.requests() > forwarded_before && res.status == StatusCode::OK {
        res.upstream_header("x-forwarded-user")
            .into_iter()
            .next()
            .filter(|u| !u.is_empty())
    } else {
        None
    };
    (moved[0].clone(), user)
}

/// `explain`'s answer, as the command prints it (it runs the gate on a runtime of its own, so
/// off this one).
async fn explain(config: &Arc<Config>, user: Option<&str>, method: &Method, url: &str) -> String {
    let (config, user, method, url) = (
        config.clone(),
        user.map(str::to_string),
        method.to_string(),
        url.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        sessiongate::cli::explain::explain(&config, user.as_deref(), &[], &method, &url)
            .unwrap_or_else(|e| panic!("explain {method} {url}: {e}"))
    })
    .await
    .unwrap()
}

async fn explain_agrees_with_the_proxy_under(default: &str) {
    let upstream = start_upstream().await;
    let toml = matrix_config(upstream.addr, default);
    let config = Arc::new(Config::from_toml(&toml).expect("the matrix config is valid"));
    let proxy = start_proxy_with(&toml).await;
    let mut users: Vec<(Option<&str>, Option<String>)> = vec![(None, None)];
    for (name, password) in [
        (USER, PASSWORD),
        ("bob", BOB_PASSWORD),
        ("carol", CAROL_PASSWORD),
    ] {
        users.push((Some(name), Some(login(&proxy, name, password).await)));
    }
    let mut asked = 0;
    for (user, cookie) in &users {
        for method in METHODS {
            for host in HOSTS {
                for path in PATHS {
                    let url = format!("http://{host}{path}");
                    let text = explain(&config, *user, method, &url).await;
                    let want = explained(&text);
                    let got =
                        proxied(&proxy, &upstream, method, host, path, cookie.as_deref()).await;
                    assert_eq!(
                        got, want,
                        "default {default}, {user:?}: {method} {url}: the proxy made {got:?} of it, explain said\n{text}"
                    );
                    asked += 1;
                }
            }
        }
    }
    assert_eq!(
        asked,
        users.len() * METHODS.len() * HOSTS.len() * PATHS.len()
    );
}

#[tokio::test]
async fn explain_agrees_with_the_proxy_on_every_request_of_the_matrix() {
    explain_agrees_with_the_proxy_under("login").await;
}

#[tokio::test]
async fn explain_agrees_with_the_proxy_when_the_default_is_deny() {
    explain_agrees_with_the_proxy_under("deny").await;
}
