//! `/metrics` on its own listener: every scrape is parsed by the official Prometheus Python
//! client's OpenMetrics parser (a strict one: a malformed line, a missing `# EOF` or anything
//! after it fails the test), and each counter is shown to move when its event happens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_config};
use crate::common::ws::{start_ws_upstream, ws_connect};
use crate::common::*;
use http::{Method, StatusCode};
use sessiongate::App;
use tokio::net::TcpListener;

/// Serves `app`'s metrics on a fresh loopback port until the test ends.
async fn metrics_listener(app: &Arc<App>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sessiongate::serve_metrics(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    addr
}

/// One scrape: every sample by `name{label="value",...}` (labels sorted), as parsed.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, sample: &str) -> f64 {
        *self
            .0
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in the scrape: {:#?}", self.0.keys()))
    }

    fn has(&self, sample: &str) -> bool {
        self.0.contains_key(sample)
    }
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
print(json.dumps(out))
"#;

async fn scrape(addr: SocketAddr) -> Scrape {
    let res = get(addr, "/metrics", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        res.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let parsed = common::python::run(PARSE, &res.body);
    Scrape(serde_json::from_str(&parsed).expect("the parser printed JSON"))
}

fn requests(decision: &str, class: &str) -> String {
    format!("sessiongate_requests_total{{decision=\"{decision}\",status_class=\"{class}\"}}")
}

fn logins(result: &str) -> String {
    format!("sessiongate_logins_total{{result=\"{result}\"}}")
}

fn ended(reason: &str) -> String {
    format!("sessiongate_sessions_ended_total{{reason=\"{reason}\"}}")
}

fn upstream_errors(kind: &str) -> String {
    format!("sessiongate_upstream_errors_total{{kind=\"{kind}\"}}")
}

/// Scrapes before and after `event` and checks that exactly the `expected` samples moved by
/// the given amounts (and that the listed `unchanged` ones did not).
async fn moves(
    metrics: SocketAddr,
    what: &str,
    expected: &[(&str, f64)],
    unchanged: &[&str],
    event: impl std::future::Future<Output = ()>,
) {
    let before = scrape(metrics).await;
    event.await;
    let after = scrape(metrics).await;
    for (sample, by) in expected {
        assert_eq!(
            after.get(sample) - before.get(sample),
            *by,
            "{what}: {sample} moved by {} instead of {by}",
            after.get(sample) - before.get(sample)
        );
    }
    for sample in unchanged {
        assert_eq!(
            after.get(sample),
            before.get(sample),
            "{what}: {sample} moved"
        );
    }
}

#[tokio::test]
async fn each_counter_moves_when_its_event_happens() {
    let upstream = start_upstream().await;
    let toml = with_auth(
        &config_toml(upstream.addr, "", ""),
        "max_failures = 2\nfailure_window = \"1h\"",
    ) + "\n[[rules]]\npath = \"/internal\"\ndeny = true\n";
    let proxy = start_proxy_with(&toml).await;
    let metrics = metrics_listener(&proxy.app).await;

    let first = scrape(metrics).await;
    assert_eq!(first.get("sessiongate_sessions"), 0.0);
    assert_eq!(
        first.get(&logins("success")),
        0.0,
        "series exist from the start"
    );

    moves(
        metrics,
        "a wrong password",
        &[
            (&logins("wrong_credentials"), 1.0),
            (&requests("own_endpoint", "4xx"), 1.0),
        ],
        &[&logins("success")],
        async {
            let res = post_login(&proxy, &[("username", USER), ("password", "nope")], &[]).await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        },
    )
    .await;

    moves(
        metrics,
        "a login post from another site",
        &[(&logins("csrf"), 1.0)],
        &[&logins("wrong_credentials")],
        async {
            let res = send(
                proxy.addr,
                req_with_body(
                    Method::POST,
                    "/.sessiongate/login",
                    &[
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("origin", "https://evil.example"),
                    ],
                    "username=alice&password=wonderland",
                ),
            )
            .await;
            assert_eq!(res.status, StatusCode::FORBIDDEN);
        },
    )
    .await;

    // Logging in with the right password succeeds before the limit is reached.
    let cookie = {
        let before = scrape(metrics).await;
        let cookie = login(&proxy, USER, PASSWORD).await;
        let after = scrape(metrics).await;
        assert_eq!(
            after.get(&logins("success")) - before.get(&logins("success")),
            1.0
        );
        assert_eq!(after.get("sessiongate_sessions"), 1.0);
        cookie
    };

    let allowed_before = scrape(metrics).await;
    let res = get(proxy.addr, "/app", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let allowed_after = scrape(metrics).await;
    assert_eq!(
        allowed_after.get(&requests("allow", "2xx"))
            - allowed_before.get(&requests("allow", "2xx")),
        1.0
    );
    for histogram in [
        "sessiongate_upstream_duration_seconds_count",
        "sessiongate_request_duration_seconds_count",
    ] {
        assert!(
            allowed_after.get(histogram) > allowed_before.get(histogram),
            "{histogram} counted the forwarded request"
        );
    }
    assert!(
        allowed_after.get("sessiongate_upstream_duration_seconds_sum") > 0.0,
        "the upstream's time is summed"
    );
    assert!(
        allowed_after.get("sessiongate_connections") >= 1.0,
        "the scrape's own connection is not on the main listener, but ours may still be open"
    );

    moves(
        metrics,
        "a forbidden path",
        &[(&requests("forbidden", "4xx"), 1.0)],
        &[&requests("allow", "2xx")],
        async {
            let res = get(proxy.addr, "/internal/x", &[("cookie", &cookie)]).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN);
        },
    )
    .await;

    moves(
        metrics,
        "a request without a session",
        &[(&requests("login_required", "4xx"), 1.0)],
        &[],
        async {
            let res = get(proxy.addr, "/app", &[]).await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        },
    )
    .await;

    moves(
        metrics,
        "a logout",
        &[
            (&ended("logout"), 1.0),
            (&requests("own_endpoint", "3xx"), 1.0),
        ],
        &[&ended("revoked"), &ended("idle")],
        async {
            let res = post_form(&proxy, "/.sessiongate/logout", &cookie, &[]).await;
            assert_eq!(res.status, StatusCode::SEE_OTHER);
        },
    )
    .await;
    assert_eq!(scrape(metrics).await.get("sessiongate_sessions"), 0.0);

    // One more failure reaches max_failures = 2; the next attempt is refused unchecked.
    let res = post_login(&proxy, &[("username", USER), ("password", "nope")], &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    moves(
        metrics,
        "a login past max_failures",
        &[(&logins("rate_limited"), 1.0)],
        &[&logins("wrong_credentials")],
        async {
            let res = post_login(&proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
            assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
        },
    )
    .await;
}

#[tokio::test]
async fn a_session_ended_by_another_login_in_its_browser_counts_as_revoked() {
    let (_upstream, proxy) = start().await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    moves(
        metrics,
        "a login over a live session",
        &[(&ended("revoked"), 1.0), (&logins("success"), 1.0)],
        &[&ended("logout")],
        async {
            let res = post_login(
                &proxy,
                &[("username", USER), ("password", PASSWORD)],
                &[("cookie", &cookie)],
            )
            .await;
            assert_eq!(res.status, StatusCode::SEE_OTHER);
        },
    )
    .await;
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    // No answer within upstream.timeout.
    let silent = start_silent_upstream().await;
    let proxy = start_proxy_with(&config_toml(silent, "timeout = \"300ms\"", "")).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    moves(
        metrics,
        "an upstream that does not answer",
        &[
            (&upstream_errors("timeout"), 1.0),
            (&requests("allow", "5xx"), 1.0),
        ],
        &[&upstream_errors("connect"), &upstream_errors("reset")],
        async {
            let res = get(proxy.addr, "/slow", &[("cookie", &cookie)]).await;
            assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
        },
    )
    .await;
    let after = scrape(metrics).await;
    assert_eq!(
        after.get("sessiongate_upstream_duration_seconds_count"),
        0.0,
        "only answers are timed"
    );

    // Nothing listens.
    let closed = closed_port().await;
    let proxy = start_proxy_with(&config_toml(closed, "", "")).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    moves(
        metrics,
        "an upstream that refuses connections",
        &[(&upstream_errors("connect"), 1.0)],
        &[&upstream_errors("timeout"), &upstream_errors("reset")],
        async {
            let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
            assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        },
    )
    .await;

    // An https upstream whose certificate no trusted CA signed.
    let unknown_ca = common::tls::Ca::new("metrics test CA nobody trusts");
    let tls_upstream = common::ws::start_ws_upstream_tls(&unknown_ca).await;
    let toml = config_toml(tls_upstream.addr, "", "").replace(
        &format!("url = \"http://{}\"", tls_upstream.addr),
        &format!("url = \"https://localhost:{}\"", tls_upstream.addr.port()),
    );
    let proxy = start_proxy_with(&toml).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    moves(
        metrics,
        "an https upstream with an untrusted certificate",
        &[(&upstream_errors("tls"), 1.0)],
        &[&upstream_errors("connect"), &upstream_errors("reset")],
        async {
            let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
            assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        },
    )
    .await;

    // Accepts, reads the request, and hangs up without answering.
    let hangs_up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangs_up_addr = hangs_up.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut stream, _)) = hangs_up.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
        }
    });
    let proxy = start_proxy_with(&config_toml(hangs_up_addr, "", "")).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    moves(
        metrics,
        "an upstream that closes the connection",
        &[(&upstream_errors("reset"), 1.0)],
        &[&upstream_errors("timeout"), &upstream_errors("connect")],
        async {
            let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
            assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        },
    )
    .await;
}

/// A client whose chunked body is malformed breaks the upstream leg itself: that is a 400 for
/// the client, never an upstream error in the metrics (which any client could inflate).
#[tokio::test]
async fn malformed_chunked_body_is_a_client_400_not_an_upstream_error() {
    let (_upstream, proxy) = start_with_public(&["/pub"]).await;
    let metrics = metrics_listener(&proxy.app).await;
    let kinds = ["connect", "timeout", "reset", "tls"].map(upstream_errors);
    moves(
        metrics,
        "a chunked body with a bad size line",
        &[(&requests("public", "4xx"), 1.0)],
        &[
            &kinds[0],
            &kinds[1],
            &kinds[2],
            &kinds[3],
            &requests("public", "5xx"),
        ],
        async {
            let res = raw(
                proxy.addr,
                b"POST /pub/x HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            )
            .await;
            assert!(res.starts_with("HTTP/1.1 400"), "{res}");
        },
    )
    .await;
}

#[tokio::test]
async fn idle_sessions_are_counted_when_they_expire() {
    let (_upstream, proxy) = start_with("idle_timeout = \"1s\"\nsweep_interval = \"100ms\"").await;
    let metrics = metrics_listener(&proxy.app).await;
    login(&proxy, USER, PASSWORD).await;
    assert_eq!(scrape(metrics).await.get("sessiongate_sessions"), 1.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = scrape(metrics).await;
        if now.get(&ended("idle")) == 1.0 {
            assert_eq!(now.get("sessiongate_sessions"), 0.0);
            assert_eq!(now.get(&ended("absolute")), 0.0);
            assert_eq!(now.get(&ended("logout")), 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session was never counted: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn open_tunnels_are_gauged() {
    let upstream = start_ws_upstream().await;
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", "")).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    assert_eq!(scrape(metrics).await.get("sessiongate_tunnels"), 0.0);
    let mut ws = ws_connect(proxy.addr, "/ws", &[("cookie", &cookie)])
        .await
        .expect("the tunnel opens");
    ws.send_text("hello").await;
    assert_eq!(ws.recv_text().await, "hello");
    let open = scrape(metrics).await;
    assert_eq!(open.get("sessiongate_tunnels"), 1.0);
    assert!(open.get("sessiongate_connections") >= 1.0, "{open:#?}");
    assert_eq!(open.get(&requests("allow", "1xx")), 1.0, "the 101");
    ws.close(1000, "bye").await;
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scrape(metrics).await.get("sessiongate_tunnels") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tunnel stayed counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_commands_are_timed_and_their_failures_counted() {
    let mut redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&redis_config(upstream.addr, &redis.url(), "")).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let up = scrape(metrics).await;
    assert!(
        up.get("sessiongate_redis_command_duration_seconds_count") >= 1.0,
        "the login's commands are timed"
    );
    assert!(
        !up.has("sessiongate_sessions"),
        "the live session count is only this process's with the memory store"
    );
    assert_eq!(up.get("sessiongate_store_errors_total"), 0.0);

    redis.stop().await;
    let down_before = scrape(metrics).await;
    // The replica cache may answer for up to half a second; then Redis is asked, and fails.
    eventually(
        "a request with a session is refused while Redis is away",
        || async {
            get(proxy.addr, "/", &[("cookie", &cookie)]).await.status
                == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    let down = scrape(metrics).await;
    assert!(
        down.get("sessiongate_store_errors_total")
            > down_before.get("sessiongate_store_errors_total"),
        "{down:#?}"
    );
    assert!(down.get(&requests("unavailable", "5xx")) >= 1.0);
}

#[tokio::test]
async fn forward_auth_checks_are_counted_by_their_decision() {
    let upstream = start_upstream().await;
    let toml = with_server(
        &config_toml(upstream.addr, "", ""),
        "trusted_proxies = [\"127.0.0.1\"]",
    ) + "\n[[rules]]\npath = \"/internal\"\ndeny = true\n";
    let proxy = start_proxy_with(&toml).await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let check = |uri: &'static str, cookie: &str| {
        let cookie = cookie.to_string();
        let addr = proxy.addr;
        async move {
            let mut headers = vec![("x-original-method", "GET"), ("x-original-uri", uri)];
            if !cookie.is_empty() {
                headers.push(("cookie", cookie.as_str()));
            }
            get(addr, "/.sessiongate/auth/nginx", &headers).await.status
        }
    };
    moves(
        metrics,
        "nginx auth_request checks",
        &[
            (&requests("allow", "2xx"), 1.0),
            (&requests("login_required", "4xx"), 1.0),
            (&requests("forbidden", "4xx"), 1.0),
        ],
        &[
            &requests("own_endpoint", "2xx"),
            &requests("own_endpoint", "4xx"),
        ],
        async {
            assert_eq!(check("/app", &cookie).await, StatusCode::OK);
            assert_eq!(check("/app", "").await, StatusCode::UNAUTHORIZED);
            assert_eq!(check("/internal", &cookie).await, StatusCode::FORBIDDEN);
        },
    )
    .await;
}

#[tokio::test]
async fn metrics_are_only_on_their_own_listener() {
    let (upstream, proxy) = start().await;
    let metrics = metrics_listener(&proxy.app).await;
    let cookie = login(&proxy, USER, PASSWORD).await;

    // Through the main listener, /metrics is one of the app's paths like any other.
    let res = get(proxy.addr, "/metrics", &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    let res = get(proxy.addr, "/metrics", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/metrics", "answered by the app");
    assert!(!res.text().contains("sessiongate_requests_total"));
    assert!(upstream.requests() >= 1);

    let res = get(metrics, "/", &[]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(res.text().contains("only /metrics"), "{}", res.text());
    let res = send(metrics, req(Method::POST, "/metrics", &[])).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    let scraped = scrape(metrics).await;
    assert_eq!(
        scraped.get(&requests("allow", "2xx")),
        1.0,
        "scrapes are not requests through the gate"
    );
}

/// The real binary: `[metrics] listen` opens the listener and the start-up lines say where;
/// a port in use stops the start with its key.
#[tokio::test]
async fn the_binary_serves_metrics_where_its_start_up_line_says() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessiongate.toml");
    let toml = config_toml(upstream.addr, "", "") + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&config, &toml).unwrap();
    let running = spawn_sessiongate(&config, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        let log = running.log();
        if let Some(addr) = log
            .split("metrics served on http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .and_then(|a| a.parse().ok())
        {
            break addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics line:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = running.log();
    for line in [
        "sessiongate listening on http://",
        &format!("upstream http://{}", upstream.addr),
        "sessions in memory",
        "1 users, 0 providers and 0 rules loaded",
    ] {
        assert!(
            log.contains(line),
            "{line:?} missing from the start-up:\n{log}"
        );
    }
    let res = get(running.addr, "/", &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let scraped = scrape(addr).await;
    assert_eq!(scraped.get(&requests("login_required", "4xx")), 1.0);
    assert!(running.stop().success());

    // The same port for the metrics as for another listener: the start fails and says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = config_toml(upstream.addr, "", "")
        + &format!(
            "\n[metrics]\nlisten = \"{}\"\n",
            taken.local_addr().unwrap()
        );
    std::fs::write(&config, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", taken.local_addr().unwrap())),
        "{stderr}"
    );
}
