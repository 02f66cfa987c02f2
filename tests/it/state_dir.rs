//! `session.state_dir` with the real binary: sessions survive a clean restart and a `kill -9`,
//! an ended session never comes back, idle time keeps counting while sessiongate is down, a
//! damaged file keeps what is before the damage and says what was dropped, a second process
//! on the same directory is refused, the directory and files are private, and nothing in them
//! is a credential.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use http::{Method, StatusCode};

use crate::common::*;

/// A config with `state_dir` and no secret (the directory keeps one), `session_extra` added.
fn config(upstream: std::net::SocketAddr, state: &Path, session_extra: &str) -> String {
    let toml = config_toml(
        upstream,
        "",
        &format!("state_dir = \"{}\"\n{session_extra}", state.display()),
    );
    let without_secret: Vec<&str> = toml
        .lines()
        .filter(|l| !l.starts_with("secret = "))
        .collect();
    without_secret.join("\n")
        + "\n[[users]]\nname = \"bob\"\npassword_hash = \""
        + &cheap_hash(BOB_PASSWORD)
        + "\"\n"
}

struct Dirs {
    _tmp: tempfile::TempDir,
    config: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    Dirs {
        config: tmp.path().join("sessiongate.toml"),
        state,
        _tmp: tmp,
    }
}

async fn sign_in(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    let res = post_login_to(addr, &[("username", user), ("password", password)], &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    cookie_pair(&res)
}

async fn status(addr: std::net::SocketAddr, cookie: &str) -> StatusCode {
    get(addr, "/private", &[("cookie", cookie)]).await.status
}

async fn logout(addr: std::net::SocketAddr, cookie: &str) {
    let origin = format!("http://{addr}");
    let res = send(
        addr,
        req(
            Method::POST,
            "/.sessiongate/logout",
            &[("cookie", cookie), ("origin", &origin)],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
}

/// SIGKILL (what `Child::kill` sends): no shutdown code runs.
fn kill9(mut running: Running) {
    running.child.kill().unwrap();
    running.child.wait().unwrap();
}

/// The bytes of every file in the state directory but the lock and the secret.
fn state_bytes(state: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !["lock", "secret"].contains(&e.file_name().to_str().unwrap()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Runs the binary expecting it to refuse to start; what it printed.
fn refused_start(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[tokio::test]
async fn sessions_survive_a_restart_and_ended_ones_stay_ended() {
    let d = dirs();
    let upstream = start_upstream().await;
    std::fs::write(&d.config, config(upstream.addr, &d.state, "")).unwrap();

    let running = spawn_sessiongate(&d.config, &[]);
    let addr = running.addr;
    let kept = sign_in(addr, USER, PASSWORD).await;
    let ended = sign_in(addr, USER, PASSWORD).await;
    let bobs = sign_in(addr, "bob", BOB_PASSWORD).await;
    for c in [&kept, &ended, &bobs] {
        assert_eq!(status(addr, c).await, StatusCode::OK);
    }
    logout(addr, &ended).await;
    assert!(running.stop().success());

    let running = spawn_sessiongate(&d.config, &[]);
    let addr = running.addr;
    let log = running.log();
    assert!(log.contains("2 sessions read back"), "{log}");
    let before = upstream.requests();
    assert_eq!(status(addr, &kept).await, StatusCode::OK);
    assert_eq!(status(addr, &bobs).await, StatusCode::OK);
    assert_ne!(status(addr, &ended).await, StatusCode::OK);
    assert_eq!(
        upstream.requests(),
        before + 2,
        "the ended session was forwarded"
    );
    let res = get(addr, "/private", &[("cookie", &kept)]).await;
    assert_eq!(res.upstream_header("x-forwarded-user"), [USER]);

    // A second restart: sessions used since the first are kept under their ids now.
    logout(addr, &bobs).await;
    assert!(running.stop().success());
    let running = spawn_sessiongate(&d.config, &[]);
    assert_eq!(status(running.addr, &kept).await, StatusCode::OK);
    assert_ne!(status(running.addr, &bobs).await, StatusCode::OK);
    assert_ne!(status(running.addr, &ended).await, StatusCode::OK);
    running.stop();
}

#[tokio::test]
async fn kill_9_keeps_the_sessions_already_written_and_never_an_ended_one() {
    let d = dirs();
    let upstream = start_upstream().await;
    std::fs::write(&d.config, config(upstream.addr, &d.state, "")).unwrap();
    let running = spawn_sessiongate(&d.config, &[]);
    let addr = running.addr;
    let size = || -> usize { state_bytes(&d.state).iter().map(|(_, b)| b.len()).sum() };
    let empty = size();
    let kept = sign_in(addr, USER, PASSWORD).await;
    let ended = sign_in(addr, "bob", BOB_PASSWORD).await;
    // The records are written as they come (the documented bound is 1 s): wait until they
    // are in the files, as the kernel would have them after a crash of the process.
    let deadline = Instant::now() + Duration::from_secs(30);
    while size() < empty + 2 * 60 {
        assert!(Instant::now() < deadline, "the sessions were never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An ended session is on disk before the logout's response.
    logout(addr, &ended).await;
    kill9(running);

    let running = spawn_sessiongate(&d.config, &[]);
    assert_eq!(status(running.addr, &kept).await, StatusCode::OK);
    assert_ne!(status(running.addr, &ended).await, StatusCode::OK);
    running.stop();
}

#[tokio::test]
async fn idle_time_keeps_counting_while_sessiongate_is_down_and_expired_sessions_leave_the_disk() {
    let d = dirs();
    let upstream = start_upstream().await;
    let idle = "idle_timeout = \"5s\"\ntouch_interval = \"1s\"\n";
    std::fs::write(&d.config, config(upstream.addr, &d.state, idle)).unwrap();
    let running = spawn_sessiongate(&d.config, &[]);
    let cookie = sign_in(running.addr, USER, PASSWORD).await;
    assert_eq!(status(running.addr, &cookie).await, StatusCode::OK);
    assert!(running.stop().success());
    // Down for longer than the idle timeout.
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let running = spawn_sessiongate(&d.config, &[]);
    assert!(
        running.log().contains("0 sessions read back"),
        "{}",
        running.log()
    );
    assert_ne!(status(running.addr, &cookie).await, StatusCode::OK);
    // The start wrote a snapshot without it, and the logs it replaced are gone.
    let files = state_bytes(&d.state);
    let snapshot = files
        .iter()
        .find(|(n, _)| n == "snapshot")
        .expect("a snapshot");
    assert_eq!(snapshot.1, b"SGSTATE1", "{files:?}");
    running.stop();
}

#[tokio::test]
async fn a_damaged_log_keeps_what_is_before_the_damage_and_says_what_was_dropped() {
    let d = dirs();
    let upstream = start_upstream().await;
    std::fs::write(&d.config, config(upstream.addr, &d.state, "")).unwrap();
    let running = spawn_sessiongate(&d.config, &[]);
    let first = sign_in(running.addr, USER, PASSWORD).await;
    let second = sign_in(running.addr, "bob", BOB_PASSWORD).await;
    assert!(running.stop().success());

    // Flip a byte in the last record: bob's session.
    let (name, mut bytes) = state_bytes(&d.state)
        .into_iter()
        .find(|(n, _)| n.starts_with("log."))
        .expect("a log");
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(d.state.join(&name), &bytes).unwrap();

    let running = spawn_sessiongate(&d.config, &[]);
    let log = running.log();
    assert!(log.contains(&name) && log.contains("dropped"), "{log}");
    assert!(log.contains("1 sessions read back"), "{log}");
    assert_eq!(status(running.addr, &first).await, StatusCode::OK);
    assert_ne!(status(running.addr, &second).await, StatusCode::OK);
    // The damage is gone from the directory: the next start reads everything cleanly.
    assert!(running.stop().success());
    let running = spawn_sessiongate(&d.config, &[]);
    assert!(!running.log().contains("dropped"), "{}", running.log());
    assert_eq!(status(running.addr, &first).await, StatusCode::OK);
    running.stop();

    // A snapshot that is not a state file at all stops the start, naming it.
    std::fs::write(d.state.join("snapshot"), b"not sessions").unwrap();
    let said = refused_start(&d.config);
    assert!(
        said.contains("snapshot") && said.contains("not a sessiongate state file"),
        "{said}"
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_state_dir_is_refused_naming_the_first() {
    let d = dirs();
    let upstream = start_upstream().await;
    std::fs::write(&d.config, config(upstream.addr, &d.state, "")).unwrap();
    let running = spawn_sessiongate(&d.config, &[]);
    let said = refused_start(&d.config);
    let pid = running.child.id().to_string();
    assert!(
        said.contains("another sessiongate") && said.contains(&pid),
        "{said}"
    );
    // The first one is unharmed.
    let cookie = sign_in(running.addr, USER, PASSWORD).await;
    assert_eq!(status(running.addr, &cookie).await, StatusCode::OK);
    running.stop();
}

#[tokio::test]
async fn the_directory_and_files_are_private_and_hold_no_credential() {
    let d = dirs();
    let upstream = start_upstream().await;
    std::fs::write(&d.config, config(upstream.addr, &d.state, "")).unwrap();
    let running = spawn_sessiongate(&d.config, &[]);
    let cookie = sign_in(running.addr, USER, PASSWORD).await;
    assert_eq!(status(running.addr, &cookie).await, StatusCode::OK);
    assert!(running.stop().success());

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.state), 0o700);
    for entry in std::fs::read_dir(&d.state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // The cookie's value, its id and its signature appear nowhere.
    let value = cookie.split_once('=').unwrap().1;
    let (id, tag) = value.split_once('.').unwrap();
    let raw_id = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap();
    let raw_tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .unwrap();
    let files = state_bytes(&d.state);
    assert!(!files.is_empty());
    for (name, bytes) in &files {
        for needle in [value.as_bytes(), id.as_bytes(), &raw_id, &raw_tag] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} holds part of the cookie"
            );
        }
    }

    // A directory anyone may write to is refused, at start and by `check`.
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let said = refused_start(&d.config);
    assert!(
        said.contains("writable by every user") && said.contains(&*d.state.to_string_lossy()),
        "{said}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && out.contains("writable by every user"),
        "{out}"
    );
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("kept in session.state_dir"), "{out}");
}

#[tokio::test]
async fn a_sign_in_begun_before_a_restart_finishes_after_it_and_its_code_stays_used() {
    let d = dirs();
    let upstream = start_upstream().await;
    // alice (the first user) gets a TOTP secret: RFC 6238's "12345678901234567890".
    let toml = config(upstream.addr, &d.state, "").replacen(
        "\n[[users]]\nname = \"bob\"",
        "\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n\n[[users]]\nname = \"bob\"",
        1,
    );
    std::fs::write(&d.config, toml).unwrap();
    let app = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(b"12345678901234567890".to_vec())
        .build()
        .unwrap();
    let post_code = |addr: std::net::SocketAddr, cookie: String, code: String| async move {
        let origin = format!("http://{addr}");
        send(
            addr,
            req_with_body(
                Method::POST,
                "/.sessiongate/login/code",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("origin", &origin),
                    ("cookie", &cookie),
                ],
                format!("code={code}"),
            ),
        )
        .await
    };

    let running = spawn_sessiongate(&d.config, &[]);
    let res = post_login_to(
        running.addr,
        &[("username", USER), ("password", PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login/code"),
        "{}",
        res.text()
    );
    let pending = cookie_pair(&res);
    assert!(running.stop().success());

    let running = spawn_sessiongate(&d.config, &[]);
    let code = app.generate_current().to_string();
    let res = post_code(running.addr, pending.clone(), code.clone()).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let session = cookie_pair(&res);
    assert_eq!(status(running.addr, &session).await, StatusCode::OK);
    assert!(running.stop().success());

    // After another restart the pending sign-in is over and the code is still used.
    let running = spawn_sessiongate(&d.config, &[]);
    let again = post_code(running.addr, pending, code.clone()).await;
    assert_ne!(again.status, StatusCode::SEE_OTHER, "{}", again.text());
    let res = post_login_to(
        running.addr,
        &[("username", USER), ("password", PASSWORD)],
        &[],
    )
    .await;
    let replay = post_code(running.addr, cookie_pair(&res), code).await;
    assert_ne!(
        replay.status,
        StatusCode::SEE_OTHER,
        "a used code was taken again"
    );
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(
        replay.text().contains("That code is not right"),
        "{}",
        replay.text()
    );
    assert_eq!(status(running.addr, &session).await, StatusCode::OK);
    running.stop();
}
