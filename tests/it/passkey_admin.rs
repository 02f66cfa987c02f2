//! An administrator's hold on passkeys: a user removed from the config loses theirs (at a
//! reload, at the next start, and with Redis once it answers), and adding the user back does
//! not bring them back; `sessiongate passkeys list` and `remove` against a state directory
//! (listing while sessiongate runs, removing refused until it stops) and against Redis.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use sessiongate::Config;

use crate::common::passkey_token::{PasskeyToken, b64url};
use crate::common::redis::{RedisOptions, RedisServer, eventually, redis_store};
use crate::common::*;
use crate::passkeys::{
    Site, add_passkey, passkey_sign_in, password_session, password_session_as, refused,
};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

/// alice, bob and carol with passkeys on, their sessions and passkeys kept as `session`
/// says (a `state_dir` line, or the Redis store); `with_bob`: bob's `[[users]]` table or not.
fn team(upstream: std::net::SocketAddr, session: &str, with_bob: bool) -> String {
    let toml = team_config(upstream, "passkeys = true", "");
    let toml = toml.replacen(&format!("secret = \"{SECRET}\""), session, 1);
    if with_bob {
        toml
    } else {
        toml.replace(&bob_table(), "")
    }
}

fn state_line(dir: &Path) -> String {
    format!("secret = \"{SECRET}\"\nstate_dir = '{}'", dir.display())
}

/// The config file, written.
fn write(file: &Path, text: &str) -> Config {
    std::fs::write(file, text).unwrap();
    Config::load(file).unwrap()
}

/// Adds a passkey named `name` for `user` (signed in with `password`): the token holding it.
async fn passkey_for(site: &Site, user: &str, password: &str, name: &str) -> PasskeyToken {
    let session = password_session_as(site, user, password).await;
    let mut token = PasskeyToken::new();
    let added = add_passkey(site, &session, &mut token, name).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    token
}

async fn signs_in(site: &Site, token: &mut PasskeyToken) {
    let res = passkey_sign_in(site, token).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
}

async fn kept(proxy: &Proxy, user: &str) -> bool {
    proxy.app.user_data.get(user).await.unwrap().is_some()
}

#[tokio::test]
async fn a_user_removed_at_a_reload_loses_their_passkeys_for_good() {
    // What is deleted is read from the store, not from the log: a log line hit first by
    // another test's thread can be missed by this thread's scoped subscriber (tracing caches
    // each call site's interest process-wide). The binary's log is checked in the Redis test.
    let dir = tempfile::tempdir().unwrap();
    let (file, state) = (dir.path().join("sessiongate.toml"), dir.path().join("s"));
    let upstream = start_upstream().await;
    let config = write(&file, &team(upstream.addr, &state_line(&state), true));
    let proxy = start_proxy_from(config).await;
    let site = Site::of(&proxy);
    let mut bobs = passkey_for(&site, "bob", BOB_PASSWORD, "Bob's phone").await;
    let mut alices = passkey_for(&site, USER, PASSWORD, "Alice's key").await;
    signs_in(&site, &mut bobs).await;

    write(&file, &team(upstream.addr, &state_line(&state), false));
    proxy.app.reload().await.unwrap();
    assert!(!kept(&proxy, "bob").await, "bob's passkeys deleted");
    assert!(kept(&proxy, USER).await, "alice keeps hers");
    refused(
        &passkey_sign_in(&site, &mut bobs).await,
        "not registered here",
    );

    // bob is back, without the passkey he had.
    write(&file, &team(upstream.addr, &state_line(&state), true));
    proxy.app.reload().await.unwrap();
    assert!(!kept(&proxy, "bob").await);
    refused(
        &passkey_sign_in(&site, &mut bobs).await,
        "not registered here",
    );
    signs_in(&site, &mut alices).await;
}

#[tokio::test]
async fn a_user_removed_while_stopped_loses_their_passkeys_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (file, state) = (dir.path().join("sessiongate.toml"), dir.path().join("s"));
    let upstream = start_upstream().await;
    let with_bob = write(&file, &team(upstream.addr, &state_line(&state), true));
    let proxy = start_proxy_from(with_bob.clone()).await;
    let site = Site::of(&proxy);
    let mut bobs = passkey_for(&site, "bob", BOB_PASSWORD, "Bob's phone").await;
    let mut alices = passkey_for(&site, USER, PASSWORD, "Alice's key").await;

    let without_bob = write(&file, &team(upstream.addr, &state_line(&state), false));
    let proxy = restart(proxy, without_bob).await;
    assert!(!kept(&proxy, "bob").await, "deleted at the start");
    assert!(kept(&proxy, USER).await);

    let proxy = restart(proxy, with_bob).await;
    let site = Site::of(&proxy);
    assert!(
        !kept(&proxy, "bob").await,
        "and not read back from the disk"
    );
    refused(
        &passkey_sign_in(&site, &mut bobs).await,
        "not registered here",
    );
    signs_in(&site, &mut alices).await;
}

/// The binary with Redis down at its start: it starts, says the passkeys of removed users
/// wait, and deletes them at the first reload once Redis answers.
#[tokio::test]
async fn with_redis_down_at_the_start_the_next_reload_deletes_a_removed_users_passkeys() {
    let mut redis = RedisServer::start(RedisOptions {
        persist: true,
        ..RedisOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    let session = format!(
        "secret = \"{SECRET}\"\n{}",
        redis_store(&redis.url(), "", "")
    );
    let proxy = start_proxy_from(write(&file, &team(upstream.addr, &session, true))).await;
    passkey_for(&Site::of(&proxy), "bob", BOB_PASSWORD, "Bob's phone").await;
    drop(proxy);
    let bobs_key = "sessiongate:userdata:bob".to_string();
    assert!(
        redis.keys().await.contains(&bobs_key),
        "{:?}",
        redis.keys().await
    );

    redis.stop().await;
    write(&file, &team(upstream.addr, &session, false));
    let running = spawn_sessiongate(&file, &[("NO_COLOR", "1")]);
    wait_for_log(&running, "the next reload tries again");
    redis.start_again().await;
    assert!(
        redis.keys().await.contains(&bobs_key),
        "kept while Redis was down"
    );

    // The proxy's connection comes back at its own pace (a command may fail first): each
    // reload tries again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running
        .log()
        .contains("passkeys of removed user bob deleted")
    {
        assert!(
            Instant::now() < deadline,
            "never deleted:\n{}",
            running.log()
        );
        sighup(&running);
        std::thread::sleep(Duration::from_millis(500));
    }
    eventually("bob's passkeys gone from Redis", || async {
        !redis.keys().await.contains(&bobs_key)
    })
    .await;
    assert!(running.stop().success());
}

fn sighup(running: &Running) {
    let sent = Command::new("kill")
        .args(["-HUP", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn wait_for_log(running: &Running, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sessiongate passkeys ARGS --config FILE`: the exit code, stdout and stderr.
fn passkeys(file: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("passkeys")
        .args(args)
        .arg("--config")
        .arg(file)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The id `list` prints for the token's passkey.
fn id_of(token: &PasskeyToken) -> String {
    b64url(&token.credentials()[0].id)
}

struct Binary {
    _dir: tempfile::TempDir,
    file: PathBuf,
    _upstream: Upstream,
}

/// A config file for the binary: the team, passkeys kept in a state directory.
async fn binary_config() -> Binary {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    let state = dir.path().join("s");
    write(&file, &team(upstream.addr, &state_line(&state), true));
    Binary {
        _dir: dir,
        file,
        _upstream: upstream,
    }
}

#[tokio::test]
async fn passkeys_are_listed_while_sessiongate_runs_and_removed_once_it_stopped() {
    let bin = binary_config().await;
    let file = &bin.file;
    let running = spawn_sessiongate(file, &[("NO_COLOR", "1")]);
    let site = Site::at(running.addr);
    // Both in one session: with a passkey, the password alone no longer signs in.
    let session = password_session_as(&site, USER, PASSWORD).await;
    let mut laptop = PasskeyToken::new();
    let mut phone = PasskeyToken::new();
    for (token, name) in [(&mut laptop, "Work laptop"), (&mut phone, "Phone \"old\"")] {
        let added = add_passkey(&site, &session, token, name).await;
        assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    }
    signs_in(&site, &mut phone).await;

    let (code, out, err) = passkeys(file, &["list", "--user", USER]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let laptop_line = format!("{}  \"Work laptop\"  added ", id_of(&laptop));
    assert!(lines[0].starts_with(&laptop_line), "{out}");
    assert!(
        lines[0].ends_with("  last used never  backed up no"),
        "{out}"
    );
    assert!(lines[1].contains("\"Phone \\\"old\\\"\""), "escaped: {out}");
    assert!(!lines[1].contains("never"), "used: {out}");
    for line in &lines {
        assert!(line.contains(" UTC  last used "), "{line}");
    }
    assert!(
        !out.contains("cred") && !out.contains('{'),
        "no key material: {out}"
    );

    let (code, _, err) = passkeys(file, &["list", "--user", "bob"]);
    assert_eq!((code, err.trim()), (2, "sessiongate: bob has no passkeys"));
    let (code, _, err) = passkeys(file, &["list", "--user", "mallory"]);
    assert_eq!(code, 2);
    assert!(err.contains("mallory is not a [[users]] name"), "{err}");

    let (code, out, err) = passkeys(file, &["remove", "--user", USER, "--all"]);
    assert_eq!((code, out.as_str()), (1, ""), "refused while it runs");
    let pid = running.child.id().to_string();
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("stop that sessiongate first"), "{err}");
    assert!(err.contains("reload"), "{err}");
    assert!(running.stop().success());

    let id = id_of(&laptop);
    let (code, out, err) = passkeys(file, &["remove", "--user", USER, &format!("--id={id}")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("removed passkey {id} \"Work laptop\" of alice\n")
    );
    let (code, _, err) = passkeys(file, &["remove", "--user", USER, &format!("--id={id}")]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("no passkey with id \"{id}\"")),
        "{err}"
    );
    let (_, out, _) = passkeys(file, &["list", "--user", USER]);
    assert_eq!(out.lines().count(), 1, "{out}");

    let running = spawn_sessiongate(file, &[("NO_COLOR", "1")]);
    let site = Site::at(running.addr);
    refused(
        &passkey_sign_in(&site, &mut laptop).await,
        "not registered here",
    );
    signs_in(&site, &mut phone).await;
    assert!(running.stop().success());

    let (code, out, err) = passkeys(file, &["remove", "--user", USER, "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed passkey") && out.contains("Phone"),
        "{out}"
    );
    let (code, _, err) = passkeys(file, &["list", "--user", USER]);
    assert_eq!(
        (code, err.trim()),
        (2, "sessiongate: alice has no passkeys")
    );
}

#[tokio::test]
async fn passkeys_commands_say_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    write(&file, &config_toml("127.0.0.1:9".parse().unwrap(), "", ""));
    let (code, _, err) = passkeys(&file, &["list", "--user", USER]);
    assert_eq!(code, 1);
    assert!(
        err.contains("session.state_dir or a Redis session store"),
        "{err}"
    );

    let missing = dir.path().join("nowhere");
    let toml = config_toml("127.0.0.1:9".parse().unwrap(), "", &state_line(&missing));
    write(
        &file,
        &toml.replacen(&format!("secret = \"{SECRET}\"\n"), "", 1),
    );
    for args in [
        &["list", "--user", USER][..],
        &["remove", "--user", USER, "--all"],
    ] {
        let (code, _, err) = passkeys(&file, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(&*missing.to_string_lossy()) && err.contains("does not exist"),
            "{err}"
        );
    }
    assert!(!missing.exists(), "not made by the command");

    let (code, _, err) = passkeys(&dir.path().join("none.toml"), &["list", "--user", USER]);
    assert_eq!(code, 1);
    assert!(err.contains("none.toml"), "{err}");
    let (code, _, err) = passkeys(&file, &["remove", "--user", USER]);
    assert_ne!(code, 0);
    assert!(err.contains("--id") && err.contains("--all"), "{err}");
}

#[tokio::test]
async fn passkeys_in_redis_are_listed_and_removed_while_sessiongate_runs() {
    let mut redis = RedisServer::start(RedisOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    let upstream = start_upstream().await;
    let session = format!(
        "secret = \"{SECRET}\"\n{}",
        redis_store(&redis.url(), "", "")
    );
    let proxy = start_proxy_from(write(&file, &team(upstream.addr, &session, true))).await;
    let site = Site::of(&proxy);
    let session_cookie = password_session(&site).await;
    let mut tokens = [PasskeyToken::new(), PasskeyToken::new()];
    for (token, name) in tokens.iter_mut().zip(["Key", "Spare"]) {
        let added = add_passkey(&site, &session_cookie, token, name).await;
        assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    }
    let [mut key, mut spare] = tokens;
    let id = id_of(&key);

    let (code, out, err) = passkeys(&file, &["list", "--user", USER]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with(&format!("{id}  \"Key\"  added ")), "{out}");

    let (code, out, err) = passkeys(&file, &["remove", "--user", USER, &format!("--id={id}")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("removed passkey {id} \"Key\" of alice\n"));
    refused(
        &passkey_sign_in(&site, &mut key).await,
        "not registered here",
    );
    signs_in(&site, &mut spare).await;
    let (code, _, err) = passkeys(&file, &["remove", "--user", "bob", "--all"]);
    assert_eq!((code, err.trim()), (2, "sessiongate: bob has no passkeys"));

    redis.stop().await;
    let (code, _, err) = passkeys(&file, &["list", "--user", USER]);
    assert_eq!(code, 1);
    let named = format!("127.0.0.1:{}", redis.port());
    assert!(err.contains(&named) && err.contains("PING failed"), "{err}");
}
