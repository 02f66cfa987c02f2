//! The `sessiongate` binary: config validation with errors that name the key, `check` with
//! its ok / warning / problem lines (listeners, upstream, TLS files, Redis), password hashing,
//! and the demo end to end including shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::redis::{RedisOptions, RedisServer, Sentinels, redis_store, sentinel_store};
use crate::common::*;
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

/// `sessiongate check --config FILE` with `toml` in FILE: the exit code, what it printed on
/// stdout (the findings) and on stderr.
async fn check(toml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiongate.toml");
    std::fs::write(&file, toml).unwrap();
    check_file(&file).await
}

async fn check_file(file: &std::path::Path) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(file)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Asserts that `printed` has a line starting with `start`.
fn has_line(printed: &str, start: &str) {
    assert!(
        printed.lines().any(|l| l.starts_with(start)),
        "no line starting {start:?} in:\n{printed}"
    );
}

/// The test config with `listen` as server.listen, and few enough connections that no file
/// descriptor limit warns about them.
fn checked_config(upstream: SocketAddr, listen: &str) -> String {
    with_server(&config_toml(upstream, "", ""), "max_connections = 64").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
    )
}

#[tokio::test]
async fn check_says_ok_to_everything_for_a_good_config_with_a_live_upstream() {
    let upstream = start_upstream().await;
    let (code, printed, _) = check(&checked_config(upstream.addr, "127.0.0.1:0")).await;
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.lines().all(|l| l.starts_with("ok: ")), "{printed}");
    for want in [
        "ok: config ",
        "ok: server.listen 127.0.0.1:0: can listen",
        &format!("ok: upstream http://{}: accepts connections", upstream.addr),
        "ok: users: 1",
        "ok: rules: 0 (public paths included), auth.default = \"login\"",
        "ok: session.store: memory",
    ] {
        has_line(&printed, want);
    }
    assert_eq!(
        upstream.requests(),
        0,
        "check only connects to the upstream"
    );
}

#[tokio::test]
async fn check_warns_but_passes_when_the_upstream_does_not_listen() {
    let closed = closed_port().await;
    let (code, printed, _) = check(&checked_config(closed, "127.0.0.1:0")).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        &format!("warning: upstream http://{closed}: does not accept connections ("),
    );
    assert!(!printed.contains("problem:"), "{printed}");

    // Without an upstream (forward-auth only) there is nothing to reach.
    let toml =
        checked_config(closed, "127.0.0.1:0").replace(&format!("url = \"http://{closed}\""), "");
    let (code, printed, _) = check(&toml).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(&printed, "ok: upstream: none (no upstream.url)");
}

#[tokio::test]
async fn check_fails_when_a_listen_address_is_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let main = taken.local_addr().unwrap();
    let taken_too = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken_too.local_addr().unwrap();
    let toml = format!(
        "{}\n[metrics]\nlisten = \"{metrics}\"\n",
        checked_config(closed_port().await, &main.to_string())
    );
    let (code, printed, said) = check(&toml).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(
        &printed,
        &format!("problem: server.listen {main}: cannot listen: Address already in use"),
    );
    has_line(
        &printed,
        &format!("problem: metrics.listen {metrics}: cannot listen: Address already in use"),
    );
    assert!(said.contains("2 problems"), "{said}");

    // Once they are free, both are fine, and check lets them go again.
    drop((taken, taken_too));
    let (code, printed, _) = check(&toml).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(&printed, &format!("ok: server.listen {main}: can listen"));
    has_line(
        &printed,
        &format!("ok: metrics.listen {metrics}: can listen"),
    );
    std::net::TcpListener::bind(main).expect("check released server.listen");
    std::net::TcpListener::bind(metrics).expect("check released metrics.listen");
}

#[tokio::test]
async fn check_names_the_tls_files_and_the_upstream_ca() {
    let dir = tls::temp_dir("check");
    let ca = tls::Ca::new("check test CA");
    let (cert, key, _) = ca.leaf();
    tls::write_pair(dir.path(), &cert, &key);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let closed = closed_port().await;
    let toml = tls::tls_config(closed, dir.path(), "max_connections = 64").replace(
        &format!("url = \"http://{closed}\""),
        &format!("url = \"https://{closed}\"\nca = \"{}\"", ca_file.display()),
    );
    let (code, printed, _) = check(&toml).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        &format!(
            "ok: server.tls: certificate {} (1 in the chain) and key {} load and belong together",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    );
    has_line(
        &printed,
        &format!("ok: upstream.ca {}: loaded", ca_file.display()),
    );
    has_line(&printed, &format!("warning: upstream https://{closed}: "));
}

/// HSTS preload is only for hosts that send includeSubDomains and a year's max-age (the
/// preload list's rules): `check` says so as a problem naming the key; with both, it shows the
/// header sent. The OCSP file to staple is named with its size.
#[tokio::test]
async fn check_names_the_hsts_header_and_the_ocsp_file_and_refuses_a_bad_preload() {
    let dir = tls::temp_dir("check-hsts");
    let ca = tls::Ca::new("check test CA");
    let (cert, key, _) = ca.leaf();
    tls::write_pair(dir.path(), &cert, &key);
    let ocsp = dir.path().join("ocsp.der");
    std::fs::write(&ocsp, b"0123456789").unwrap();
    let upstream = closed_port().await;
    let config = |hsts: &str, tls_extra: &str| {
        tls::tls_config_with(
            upstream,
            dir.path(),
            &format!("max_connections = 64\nhsts = \"{hsts}\""),
            &format!("{tls_extra}\nocsp_file = \"{}\"", ocsp.display()),
        )
    };

    for (hsts, tls_extra, says) in [
        (
            "365d",
            "hsts_preload = true",
            "problem: config: server.tls.hsts_preload: preload needs server.tls.hsts_include_subdomains = true",
        ),
        (
            "30d",
            "hsts_include_subdomains = true\nhsts_preload = true",
            "problem: config: server.tls.hsts_preload: preload needs server.hsts of at least 365d",
        ),
    ] {
        let (code, printed, _) = check(&config(hsts, tls_extra)).await;
        assert_eq!(code, Some(1), "{printed}");
        has_line(&printed, says);
    }

    let (code, printed, _) = check(&config(
        "365d",
        "hsts_include_subdomains = true\nhsts_preload = true",
    ))
    .await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        "ok: server.hsts: HTTPS responses carry Strict-Transport-Security: max-age=31536000; includeSubDomains; preload",
    );
    has_line(
        &printed,
        &format!(
            "ok: server.tls.ocsp_file {}: 10 bytes, stapled",
            ocsp.display()
        ),
    );

    std::fs::write(&ocsp, b"").unwrap();
    let (code, printed, _) = check(&config("1d", "")).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(&printed, "problem: config: server.tls.ocsp_file: ");
}

#[tokio::test]
async fn check_pings_the_redis_store_and_fails_when_it_does_not_answer() {
    let mut redis = RedisServer::start(RedisOptions::default()).await;
    // A deadline no busy machine misses: only a Redis that is gone fails the check.
    let store = redis_store(&redis.url(), "", "timeout = \"30s\"");
    let toml = with_server(
        &config_toml(closed_port().await, "", &store),
        "max_connections = 64",
    );
    let (code, printed, _) = check(&toml).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        &format!("ok: session.store: redis {} answers PING", redis.url()),
    );

    redis.stop().await;
    let (code, printed, said) = check(&toml).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(
        &printed,
        &format!(
            "problem: session.store: redis {}: PING failed: ",
            redis.url()
        ),
    );
    assert!(said.contains("1 problem"), "{said}");
}

#[tokio::test]
async fn check_fails_when_redis_refuses_the_password_and_never_prints_it() {
    let password = "check-redis-password";
    let redis = RedisServer::start(RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    })
    .await;
    let closed = closed_port().await;
    let config = |url: &str| {
        with_server(
            &config_toml(closed, "", &redis_store(url, "", "timeout = \"30s\"")),
            "max_connections = 64",
        )
    };
    let (code, printed, _) = check(&config(&redis.url_with_password())).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        &format!("ok: session.store: redis {} answers PING", redis.url()),
    );
    assert!(!printed.contains(password), "{printed}");

    let wrong = redis.url().replace("redis://", "redis://:wrong-password@");
    let (code, printed, said) = check(&config(&wrong)).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(
        &printed,
        &format!(
            "problem: session.store: redis {}: PING failed: ",
            redis.url()
        ),
    );
    assert!(!printed.contains("wrong-password") && !said.contains("wrong-password"));

    let (code, printed, _) = check(&config(&redis.url())).await;
    assert_eq!(code, Some(1), "no password: {printed}");
    has_line(&printed, "problem: session.store: redis ");
}

#[tokio::test]
async fn check_with_redis_sentinels_pings_the_master_they_name() {
    let redis = RedisServer::start(RedisOptions::default()).await;
    // Sentinels::start waits until they know a replica.
    let _replica = RedisServer::start(RedisOptions {
        replica_of: Some(redis.port()),
        ..RedisOptions::default()
    })
    .await;
    let sentinels = Sentinels::start(redis.port(), None, None).await;
    let closed = closed_port().await;
    let config = |master_name: &str| {
        with_server(
            &config_toml(
                closed,
                "",
                &sentinel_store(&sentinels.addrs(), "", "")
                    .replace("\"mymaster\"", &format!("{master_name:?}")),
            ),
            "max_connections = 64",
        )
    };
    let (code, printed, _) = check(&config("mymaster")).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        "ok: session.store: redis \"mymaster\" via sentinels ",
    );
    assert!(printed.contains("answers PING"), "{printed}");

    let (code, printed, _) = check(&config("othermaster")).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(
        &printed,
        "problem: session.store: redis \"othermaster\" via sentinels ",
    );
    assert!(printed.contains("knows no master named"), "{printed}");
}

#[tokio::test]
async fn check_compiles_the_login_page_template_and_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("login.html");
    std::fs::write(&template, "<form>{{ hidden_fields }}</form>").unwrap();
    let with_template = format!(
        "{}\n[login_page]\ntemplate = \"{}\"\n",
        good_config(),
        template.display()
    );
    let (code, printed, _) = check(&with_template).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        &format!("ok: login_page.template {}: compiles", template.display()),
    );

    std::fs::write(&template, "<form>\n{{ hidden_fields }}\n{% endif %}</form>").unwrap();
    let (code, printed, _) = check(&with_template).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(
        &printed,
        &format!(
            "problem: config: login_page.template: {}, line 3: syntax error",
            template.display()
        ),
    );
}

#[tokio::test]
async fn check_prints_one_problem_line_for_a_config_that_does_not_load() {
    let (code, printed, said) = check(&good_config().replace("listen =", "lisen =")).await;
    assert_eq!(code, Some(1), "{printed}");
    assert!(printed.starts_with("problem: config: "), "{printed}");
    assert!(printed.contains("lisen"), "{printed}");
    // The TOML error quotes the file on indented lines: one finding.
    assert!(
        printed.lines().skip(1).all(|l| l.starts_with("  ")),
        "{printed}"
    );
    assert!(said.contains("1 problem"), "{said}");

    let (code, printed, _) = check(&good_config().replace(SECRET, "short")).await;
    assert_eq!(code, Some(1), "{printed}");
    assert_eq!(printed.lines().count(), 1, "{printed}");
    has_line(
        &printed,
        "problem: config: session.secret: must be at least 32 bytes",
    );

    let dir = tempfile::tempdir().unwrap();
    let (code, printed, _) = check_file(&dir.path().join("missing.toml")).await;
    assert_eq!(code, Some(1), "{printed}");
    has_line(&printed, "problem: cannot read config file ");
}

#[tokio::test]
async fn check_warns_as_the_start_does_without_a_session_secret() {
    let upstream = start_upstream().await;
    let toml =
        checked_config(upstream.addr, "127.0.0.1:0").replace(&format!("secret = \"{SECRET}\""), "");
    let (code, printed, _) = check(&toml).await;
    assert_eq!(code, Some(0), "{printed}");
    has_line(
        &printed,
        "warning: no session.secret or session.secret_file configured",
    );
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
    let parsed = sessiongate::credentials::password::PasswordHash::parse(hash).unwrap();
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
