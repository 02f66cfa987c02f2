//! Live policy reload: users added and removed, passwords changed, rules changed for live
//! sessions, a broken file refused, restart-only keys named; in-process through `App::reload`
//! and through the binary with a real SIGHUP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use sessiongate::Config;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The team config (alice, bob, carol) with bob listed first, so that removing him moves
/// everyone after him up the list.
fn bob_first(upstream: std::net::SocketAddr) -> String {
    let team = team_config(upstream, "", "").replace(&bob_table(), "");
    team.replacen("[[users]]", &format!("{}[[users]]", bob_table()), 1)
}

struct Fixture {
    _dir: tempfile::TempDir,
    file: PathBuf,
    upstream: Upstream,
    proxy: Proxy,
}

async fn fixture(text: impl Fn(std::net::SocketAddr) -> String) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    write(&file, &text(upstream.addr));
    let proxy = start_proxy_from(Config::load(&file).unwrap()).await;
    Fixture {
        _dir: dir,
        file,
        upstream,
        proxy,
    }
}

/// The user the upstream is told about for `cookie`, or the status when not forwarded.
async fn whoami(proxy: &Proxy, cookie: &str, path: &str) -> Result<String, StatusCode> {
    let res = get(proxy.addr, path, &[("cookie", cookie)]).await;
    if res.status != StatusCode::OK {
        return Err(res.status);
    }
    Ok(res.upstream_header("x-forwarded-user").join(","))
}

#[tokio::test]
async fn a_removed_user_is_logged_out_and_everyone_else_keeps_their_own_name() {
    let fx = fixture(bob_first).await;
    let proxy = &fx.proxy;
    let bob = login(proxy, "bob", BOB_PASSWORD).await;
    let alice = login(proxy, USER, PASSWORD).await;
    let carol = login(proxy, "carol", CAROL_PASSWORD).await;
    assert_eq!(whoami(proxy, &bob, "/").await, Ok("bob".into()));

    // bob's [[users]] table goes; alice and carol move up the list.
    write(
        &fx.file,
        &bob_first(fx.upstream.addr).replace(&bob_table(), ""),
    );
    let done = proxy.app.reload().await.expect("the new file is valid");
    assert_eq!(done.users, 2);
    assert_eq!(done.ended_sessions, 1, "bob's session");
    assert!(done.restart_only.is_empty(), "{:?}", done.restart_only);

    assert_eq!(
        whoami(proxy, &bob, "/").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(whoami(proxy, &alice, "/").await, Ok("alice".into()));
    assert_eq!(whoami(proxy, &carol, "/").await, Ok("carol".into()));
    let res = post_login(
        proxy,
        &[("username", "bob"), ("password", BOB_PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "bob can no longer log in"
    );
    assert_eq!(proxy.app.gate.sessions().len(), 2);
}

#[tokio::test]
async fn an_added_user_can_log_in_after_the_reload() {
    let fx = fixture(|up| config_toml(up, "", "")).await;
    let proxy = &fx.proxy;
    let alice = login(proxy, USER, PASSWORD).await;
    let res = post_login(
        proxy,
        &[("username", "bob"), ("password", BOB_PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    write(&fx.file, &team_config(fx.upstream.addr, "", ""));
    let done = proxy.app.reload().await.unwrap();
    assert_eq!((done.users, done.ended_sessions), (3, 0));
    let bob = login(proxy, "bob", BOB_PASSWORD).await;
    assert_eq!(whoami(proxy, &bob, "/").await, Ok("bob".into()));
    assert_eq!(whoami(proxy, &alice, "/").await, Ok("alice".into()));
    // alice's groups came with the reload too.
    let res = get(proxy.addr, "/", &[("cookie", &alice)]).await;
    assert_eq!(
        res.upstream_header("x-forwarded-groups"),
        vec!["admins,ops"]
    );
}

#[tokio::test]
async fn a_changed_password_ends_that_users_sessions_only() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let alice_1 = login(proxy, USER, PASSWORD).await;
    let alice_2 = login(proxy, USER, PASSWORD).await;
    let bob = login(proxy, "bob", BOB_PASSWORD).await;

    let old_hash = team_config(fx.upstream.addr, "", "")
        .split("password_hash = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let changed =
        team_config(fx.upstream.addr, "", "").replacen(&old_hash, &cheap_hash("new-password"), 1);
    write(&fx.file, &changed);
    let done = proxy.app.reload().await.unwrap();
    assert_eq!(done.ended_sessions, 2, "both of alice's sessions");

    assert_eq!(
        whoami(proxy, &alice_1, "/").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        whoami(proxy, &alice_2, "/").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(whoami(proxy, &bob, "/").await, Ok("bob".into()));
    let res = post_login(proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    let alice = login(proxy, USER, "new-password").await;
    assert_eq!(whoami(proxy, &alice, "/").await, Ok("alice".into()));
}

#[tokio::test]
async fn a_second_factor_added_by_a_reload_ends_that_users_password_only_sessions() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let alice = login(proxy, USER, PASSWORD).await;
    let bob = login(proxy, "bob", BOB_PASSWORD).await;

    // alice's table is the first; her password_hash line gets a TOTP secret after it.
    let text = team_config(fx.upstream.addr, "", "");
    let at = text.find("password_hash = \"").unwrap();
    let end = at + text[at..].find('\n').unwrap();
    let with_totp = format!(
        "{}\ntotp_secret = \"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"{}",
        &text[..end],
        &text[end..]
    );
    write(&fx.file, &with_totp);
    let done = proxy.app.reload().await.unwrap();
    assert_eq!(done.ended_sessions, 1, "alice's session");
    assert_eq!(
        whoami(proxy, &alice, "/").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(whoami(proxy, &bob, "/").await, Ok("bob".into()));
    let res = post_login(proxy, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login/code"),
        "her password now leads to the code"
    );
}

#[tokio::test]
async fn new_rules_apply_to_live_sessions_and_a_broken_file_keeps_the_running_policy() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let bob = login(proxy, "bob", BOB_PASSWORD).await;
    let alice = login(proxy, USER, PASSWORD).await;
    assert_eq!(whoami(proxy, &bob, "/admin").await, Ok("bob".into()));

    let rules = ADMINS_RULE;
    write(&fx.file, &team_config(fx.upstream.addr, "", rules));
    let done = proxy.app.reload().await.unwrap();
    assert_eq!((done.rules, done.ended_sessions), (1, 0));
    assert_eq!(
        whoami(proxy, &bob, "/admin").await,
        Err(StatusCode::FORBIDDEN)
    );
    assert_eq!(whoami(proxy, &alice, "/admin").await, Ok("alice".into()));

    // A typo in a group: refused whole, naming the rule; the running rules and users stay.
    let broken = "[[rules]]\npath = \"/admin\"\nallow = [\"group:admns\"]\n";
    write(
        &fx.file,
        &team_config(fx.upstream.addr, "", broken).replace("name = \"bob\"", "name = \"robert\""),
    );
    let err = proxy.app.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("rules[0].allow[0]") && err.contains("admns"),
        "{err}"
    );
    assert_eq!(
        whoami(proxy, &bob, "/admin").await,
        Err(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        whoami(proxy, &bob, "/").await,
        Ok("bob".into()),
        "bob was not removed"
    );
    assert_eq!(whoami(proxy, &alice, "/admin").await, Ok("alice".into()));

    // Not TOML at all: the same.
    write(&fx.file, "[server\nlisten = ");
    assert!(proxy.app.reload().await.is_err());
    assert_eq!(whoami(proxy, &alice, "/admin").await, Ok("alice".into()));
}

#[tokio::test]
async fn settings_that_need_a_restart_are_named_and_left_as_they_were() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let alice = login(proxy, USER, PASSWORD).await;
    let changed = team_config(
        fx.upstream.addr,
        "max_failures = 9\npublic_paths = [\"/pub\"]",
        "",
    )
    .replace(
        "[upstream]",
        "[upstream]\ntimeout = \"5s\"\nidentity_header = \"X-User\"",
    )
    .replace("[session]", "[session]\nidle_timeout = \"1m\"");
    write(&fx.file, &changed);
    let done = proxy.app.reload().await.unwrap();
    assert_eq!(
        done.restart_only,
        vec![
            "auth.max_failures",
            "session.idle_timeout",
            "upstream.identity_header",
            "upstream.timeout"
        ]
    );
    // The reloadable part took effect (public_paths), the rest did not (the identity header).
    let res = get(proxy.addr, "/pub/x", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    let res = get(proxy.addr, "/", &[("cookie", &alice)]).await;
    assert_eq!(res.upstream_header("x-forwarded-user"), vec!["alice"]);
    assert!(res.upstream_header("x-user").is_empty());
}

/// A host rule added by a reload applies at once: the request's host is looked up whenever the
/// policy has host rules, and only then.
#[tokio::test]
async fn a_host_rule_added_by_a_reload_applies_to_the_next_request() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let bob = login(proxy, "bob", BOB_PASSWORD).await;
    let on = |host: &'static str| {
        let bob = bob.clone();
        async move {
            get(proxy.addr, "/", &[("cookie", &bob), ("host", host)])
                .await
                .status
        }
    };
    assert_eq!(on("grafana.example.com").await, StatusCode::OK);
    let rule = "[[rules]]\npath = \"/\"\nhost = \"grafana.example.com\"\nallow = [\"carol\"]\n";
    write(&fx.file, &team_config(fx.upstream.addr, "", rule));
    proxy.app.reload().await.unwrap();
    assert_eq!(on("grafana.example.com").await, StatusCode::FORBIDDEN);
    assert_eq!(on("Grafana.example.com:8443").await, StatusCode::FORBIDDEN);
    assert_eq!(on("app.example.com").await, StatusCode::OK);
}

#[tokio::test]
async fn a_proxy_not_started_from_a_file_refuses_to_reload() {
    let (_upstream, proxy) = start().await;
    let err = proxy.app.reload().await.unwrap_err().to_string();
    assert_eq!(err, "sessiongate was not started from a config file");
}

#[tokio::test]
async fn redirect_hosts_reload_with_the_policy() {
    let fx = fixture(|up| team_config(up, "", "")).await;
    let proxy = &fx.proxy;
    let rd = "https://app.example.com/x";
    let follow = || async {
        let res = post_login(
            proxy,
            &[("username", USER), ("password", PASSWORD), ("rd", rd)],
            &[],
        )
        .await;
        res.header("location").unwrap().to_string()
    };
    assert_eq!(follow().await, "/");
    write(
        &fx.file,
        &team_config(fx.upstream.addr, "redirect_hosts = [\".example.com\"]", ""),
    );
    let done = proxy.app.reload().await.unwrap();
    assert!(done.restart_only.is_empty(), "{:?}", done.restart_only);
    assert_eq!(follow().await, rd);
}

/// The binary, a real SIGHUP, and what it logs.
#[tokio::test]
async fn sighup_reloads_the_running_binary_and_logs_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    let plain = |rest: &str| {
        team_config(upstream.addr, "", rest).replace("[session]", "[session]\nsecure = false")
    };
    write(&file, &plain(""));
    let running = spawn_sessiongate(&file, &[("NO_COLOR", "1")]);
    let addr = running.addr;

    let login_res = {
        let form = format!("username=bob&password={BOB_PASSWORD}");
        let origin = format!("http://{addr}");
        send(
            addr,
            req_with_body(
                http::Method::POST,
                "/.sessiongate/login",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("origin", &origin),
                ],
                form,
            ),
        )
        .await
    };
    assert_eq!(login_res.status, StatusCode::SEE_OTHER);
    let bob = cookie_pair(&login_res);
    assert_eq!(
        get(addr, "/admin", &[("cookie", &bob)]).await.status,
        StatusCode::OK
    );

    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &running.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let wait_for_log = |needle: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    write(&file, &plain("[[rules]]\npath = \"/admin\"\ndeny = true\n"));
    hup();
    wait_for_log("SIGHUP: config reloaded: 3 users, 1 rules", 1);
    assert_eq!(
        get(addr, "/admin", &[("cookie", &bob)]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(addr, "/", &[("cookie", &bob)]).await.status,
        StatusCode::OK
    );

    write(
        &file,
        &plain("[[rules]]\npath = \"/admin\"\npublic = true\ndeny = true\n"),
    );
    hup();
    wait_for_log("SIGHUP: config not reloaded, keeping the running policy", 1);
    let log = running.log();
    assert!(
        log.contains("rules[0]") && log.contains("\"/admin\""),
        "{log}"
    );
    assert_eq!(
        get(addr, "/admin", &[("cookie", &bob)]).await.status,
        StatusCode::FORBIDDEN
    );

    write(
        &file,
        &plain("").replace("[upstream]", "[upstream]\ntimeout = \"7s\""),
    );
    hup();
    wait_for_log("SIGHUP: config reloaded", 2);
    wait_for_log("SIGHUP: upstream.timeout changed but needs a restart", 1);
    assert_eq!(
        get(addr, "/admin", &[("cookie", &bob)]).await.status,
        StatusCode::OK
    );

    let status = running.stop();
    assert!(status.success(), "{status:?}");
}
