//! The `sessiongate` binary: config validation with errors that name the key, password
//! hashing, and the demo end to end including shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sessiongate::Config;

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn good_config() -> String {
    config_toml("127.0.0.1:3000".parse().unwrap(), "", "")
}

/// Each broken config, and the text its error must contain (the key, and what is wrong).
fn broken_configs() -> Vec<(String, &'static str)> {
    let good = good_config();
    vec![
        (good.replace("listen =", "lisen ="), "lisen"),
        (
            good.replace("[session]", "[session]\ncolor = \"blue\""),
            "color",
        ),
        (good.replace("127.0.0.1:0", "localhost"), "server.listen"),
        (
            good.replace("http://127.0.0.1:3000", "ftp://x"),
            "upstream.url",
        ),
        (
            good.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/app"),
            "upstream.url",
        ),
        (good.replace(SECRET, "short"), "session.secret"),
        (
            good.replace("[session]", "[session]\nidle_timeout = \"soon\""),
            "session.idle_timeout",
        ),
        (
            good.replace("[session]", "[session]\nabsolute_timeout = \"0s\""),
            "session.absolute_timeout",
        ),
        (
            good.replace("[session]", "[session]\nsame_site = \"none\""),
            "session.same_site",
        ),
        (
            good.replace("[session]", "[session]\ncookie_name = \"a b\""),
            "session.cookie_name",
        ),
        (
            good.replace("[upstream]", "[upstream]\nidentity_header = \"Host\""),
            "upstream.identity_header",
        ),
        (
            good.replace("[[users]]", "[auth]\nprefix = \"login\"\n[[users]]"),
            "auth.prefix",
        ),
        (
            good.replace("[[users]]", "[auth]\npublic_paths = [\"/\"]\n[[users]]"),
            "auth.public_paths[0]",
        ),
        (
            good.replace("$argon2id$", "$argon9$"),
            "users[0].password_hash",
        ),
        (
            format!(
                "{good}\n[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
                cheap_hash("x")
            ),
            "users[1].name",
        ),
        (
            good.replace("name = \"alice\"", "name = \"jos\u{e9}\""),
            "users[0].name",
        ),
        (
            good.replace(
                "[[users]]",
                "[auth]\nredirect_hosts = [\"https://app.example.com\"]\n[[users]]",
            ),
            "auth.redirect_hosts[0]",
        ),
        (
            good.replace(
                "[[users]]",
                "[auth]\nredirect_hosts = [\"*.example.com\"]\n[[users]]",
            ),
            "auth.redirect_hosts[0]",
        ),
        (
            good.replace(
                "[session]",
                "[session]\ncookie_domain = \"example.com:443\"",
            ),
            "session.cookie_domain",
        ),
        (
            good.replace(
                "[session]",
                "[session]\ncookie_domain = \"example.com\"\ncookie_name = \"__Host-x\"",
            ),
            "session.cookie_name",
        ),
        (
            good.replace("url = \"http://127.0.0.1:3000\"", "timeout = \"5s\""),
            "upstream.timeout",
        ),
        (good[..good.find("[[users]]").unwrap()].to_string(), "users"),
        ("[server\nlisten=".to_string(), "line"),
    ]
}

#[test]
fn broken_configs_are_rejected_with_the_key_named() {
    assert!(Config::from_toml(&good_config()).is_ok());
    for (toml, key) in broken_configs() {
        let err = Config::from_toml(&toml).expect_err(key).to_string();
        assert!(err.contains(key), "error for {key} does not name it: {err}");
    }
}

#[test]
fn check_command_exits_0_for_good_and_1_for_bad_configs() {
    let dir = std::env::temp_dir().join(format!("sessiongate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, good_config()).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, good_config().replace("listen =", "lisen =")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));

    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_hash() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    let parsed = sessiongate::auth::password::PasswordHash::parse(hash).unwrap();
    assert!(parsed.verify(b"s3cret pass"));
    assert!(!parsed.verify(b"s3cret pass\n"));

    let empty = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password"));
}

/// `sessiongate demo` shows the whole flow, and SIGTERM stops it with exit code 0.
#[tokio::test]
async fn demo_runs_the_whole_flow_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("stop with"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .join()
    .unwrap();
    assert!(printed.contains("http://127.0.0.1:8080/"), "{printed}");
    let creds = printed.lines().find(|l| l.contains("log in as")).unwrap();
    let mut words = creds.split_whitespace().rev();
    let password = words.next().unwrap().to_string();
    let user = words.nth(1).unwrap().to_string();

    let addr = "127.0.0.1:8080".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if child.try_wait().unwrap().is_some() {
            panic!(
                "demo exited early (is port 8080 taken?): {}",
                log.join().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "demo never listened on 8080");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = get(addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(first.status, http::StatusCode::FOUND);

    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("username", &user), ("password", &password)])
        .finish();
    let res = send(
        addr,
        req_with_body(
            http::Method::POST,
            "/.sessiongate/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            form,
        ),
    )
    .await;
    assert_eq!(res.status, http::StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);
    let page = get(addr, "/", &[("cookie", &cookie)]).await;
    assert!(
        page.text().contains(&format!("Hello, {user}!")),
        "{}",
        page.text()
    );

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "clean exit after SIGTERM");
}
