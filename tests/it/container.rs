//! sessiongate as its container image runs it, checked without a container (no image can be
//! built or run where sessiongate is developed): `sessiongate healthcheck` against a live, a
//! stopped, a failing and a silent listener; the Dockerfile read by a real parser; and the
//! binary run as uid 10001 with a config directory only that user can read, and with
//! `session.state_dir` on the image's volume and on a volume as Kubernetes mounts one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::dockerfile::{self, exec_form, values};
use crate::common::tls::*;
use crate::common::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sessiongate::cli::healthcheck::{DEADLINE, DEFAULT_CONFIG};
use tokio::net::TcpListener;

/// The binary the tests build (a debug build). The image has a release build; the release
/// build is kept out of CI for its compile time, and both come from the same source.
const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");
const README: &str = include_str!("../../README.md");

/// The image's user and group.
const IMAGE_UID: u32 = 10001;

/// How long anything here may take on a loaded machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// sessiongate healthcheck

/// What one run of `sessiongate healthcheck` did.
struct Checked {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// The one line it printed, on stdout when healthy and on stderr otherwise.
    fn line(&self) -> &str {
        let (said, silent) = if self.success {
            (&self.stdout, &self.stderr)
        } else {
            (&self.stderr, &self.stdout)
        };
        assert!(silent.is_empty(), "unexpected output: {silent:?}");
        assert_eq!(said.lines().count(), 1, "not one line: {said:?}");
        assert!(said.ends_with('\n'), "{said:?}");
        said.trim_end()
    }
}

/// Runs `argv` (a `sessiongate healthcheck` command line) and waits (within [`PATIENCE`]).
async fn run_healthcheck(argv: &[&str]) -> Checked {
    let mut command = tokio::process::Command::new(argv[0]);
    command.args(&argv[1..]).kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("healthcheck finished")
        .expect("healthcheck started");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "exit status {}",
        out.status
    );
    Checked {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn healthcheck(config: &Path) -> Checked {
    run_healthcheck(&[BIN, "healthcheck", "--config", config.to_str().unwrap()]).await
}

/// Writes `toml` (a config from [`config_toml`]) to `dir` with `server.listen` set to `listen`:
/// the address a proxy serving the same config really listens on.
fn write_config(dir: &Path, toml: &str, listen: SocketAddr) -> PathBuf {
    let path = dir.join("sessiongate.toml");
    let toml = toml.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
        1,
    );
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test]
async fn healthcheck_passes_against_a_running_sessiongate() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let toml = config_toml(upstream.addr, "", "");
    let proxy = start_proxy_with(&toml).await;
    let config = write_config(dir.path(), &toml, proxy.addr);

    let checked = healthcheck(&config).await;
    assert!(checked.success, "{}", checked.stderr);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: http://{}/.sessiongate/healthz answered 200 OK",
            proxy.addr
        )
    );
    assert_eq!(upstream.requests(), 0, "the app is not asked");
}

#[tokio::test]
async fn healthcheck_asks_under_the_configured_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let toml = with_auth(
        &config_toml(closed_port().await, "", ""),
        "prefix = \"/_gate\"",
    );
    let proxy = start_proxy_with(&toml).await;
    let config = write_config(dir.path(), &toml, proxy.addr);

    let checked = healthcheck(&config).await;
    assert!(checked.success, "{}", checked.stderr);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: http://{}/_gate/healthz answered 200 OK",
            proxy.addr
        )
    );
}

/// The listener's certificate is self-signed and names another host: the check talks to its
/// own loopback listener and does not verify it.
#[tokio::test]
async fn healthcheck_passes_over_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    write_pair(dir.path(), &cert.pem(), &key.serialize_pem());
    let toml = tls_config(closed_port().await, dir.path(), "");
    let proxy = start_proxy_with(&toml).await;
    let config = write_config(dir.path(), &toml, proxy.addr);

    let checked = healthcheck(&config).await;
    assert!(checked.success, "{}", checked.stderr);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: https://{}/.sessiongate/healthz answered 200 OK",
            proxy.addr
        )
    );
}

#[tokio::test]
async fn healthcheck_fails_when_sessiongate_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(closed_port().await, "", "");
    let mut proxy = start_proxy_with(&toml).await;
    let config = write_config(dir.path(), &toml, proxy.addr);
    assert!(healthcheck(&config).await.success);

    proxy.shutdown().await;
    let checked = healthcheck(&config).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: cannot connect to {}: Connection refused (os error 111)",
            proxy.addr
        )
    );
}

/// A listener that answers every request with `status`, recording the paths it was asked for.
async fn start_answering(status: StatusCode) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                seen.lock().unwrap().push(req.uri().to_string());
                async move {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"starting")));
                    *res.status_mut() = status;
                    Ok::<_, Infallible>(res)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, paths)
}

#[tokio::test]
async fn healthcheck_fails_on_any_answer_but_200() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(closed_port().await, "", "");
    for (status, said) in [
        (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable"),
        (StatusCode::NO_CONTENT, "204 No Content"),
        (StatusCode::FOUND, "302 Found"),
    ] {
        let (addr, paths) = start_answering(status).await;
        let config = write_config(dir.path(), &toml, addr);
        let checked = healthcheck(&config).await;
        assert!(!checked.success, "{status}");
        assert_eq!(
            checked.line(),
            format!("healthcheck: http://{addr}/.sessiongate/healthz answered {said}")
        );
        assert_eq!(*paths.lock().unwrap(), ["/.sessiongate/healthz"]);
    }
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_listener_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(closed_port().await, "", "");
    let addr = start_silent_upstream().await;
    let config = write_config(dir.path(), &toml, addr);
    let started = Instant::now();
    let checked = healthcheck(&config).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        format!("healthcheck: http://{addr}/.sessiongate/healthz did not answer within 4s")
    );
    assert!(started.elapsed() >= DEADLINE);
}

/// `[server.tls]` in the config, but plain HTTP on the port: the handshake fails, and the
/// line says so.
#[tokio::test]
async fn healthcheck_fails_when_the_listener_does_not_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("healthcheck test CA");
    let (cert, key, _) = ca.leaf();
    write_pair(dir.path(), &cert, &key);
    let (addr, _) = start_answering(StatusCode::OK).await;
    let toml = tls_config(closed_port().await, dir.path(), "");
    let config = write_config(dir.path(), &toml, addr);
    let checked = healthcheck(&config).await;
    assert!(!checked.success);
    let line = checked.line();
    assert!(
        line.starts_with(&format!("healthcheck: TLS handshake with {addr} failed: ")),
        "{line}"
    );
}

#[tokio::test]
async fn healthcheck_fails_without_a_usable_config() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let checked = healthcheck(&missing).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: cannot read config file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // Port 0 would be any port: there is nothing to ask.
    let toml = config_toml(closed_port().await, "", "");
    let config = dir.path().join("sessiongate.toml");
    std::fs::write(&config, &toml).unwrap();
    let checked = healthcheck(&config).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        "healthcheck: server.listen 127.0.0.1:0 has port 0: there is no port to check"
    );
}

/// Without `--config` it reads the file the image runs with, as the Dockerfile's
/// `HEALTHCHECK` relies on.
#[tokio::test]
async fn healthcheck_reads_the_image_config_path_by_default() {
    assert_eq!(DEFAULT_CONFIG, "/etc/sessiongate/sessiongate.toml");
    if Path::new(DEFAULT_CONFIG).exists() {
        // A machine with sessiongate installed: its own config would be checked.
        eprintln!("{DEFAULT_CONFIG} exists here; not running the default-path check");
        return;
    }
    let checked = run_healthcheck(&[BIN, "healthcheck"]).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: cannot read config file {DEFAULT_CONFIG}: No such file or directory (os error 2)"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile

/// The README's "### Container" section.
fn readme_container_section() -> &'static str {
    let start = README
        .find("\n### Container\n")
        .expect("README: ### Container")
        + 1;
    let rest = &README[start..];
    let end = ["\n### ", "\n## "]
        .iter()
        .filter_map(|h| rest.find(h))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_dockerfile_builds_in_two_stages_with_locked_dependencies() {
    let instructions = dockerfile::instructions();
    let froms: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.instruction == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = *froms.last().unwrap();
    let (build, run) = instructions.split_at(last);

    // The build stage is named, and the runtime stage copies the binary out of it.
    let from = values(build, "FROM")[0];
    let (_, name) = from
        .split_once(" AS ")
        .unwrap_or_else(|| panic!("build stage has no name: {from}"));
    let copies = values(run, "COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with(&format!("--from={name} "))
                && c.ends_with(" /usr/local/bin/sessiongate")),
        "{copies:?}"
    );
    // Nothing in the runtime image is compiled.
    assert!(values(run, "RUN").iter().all(|r| !r.contains("cargo")));

    let builds: Vec<&str> = values(build, "RUN")
        .into_iter()
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let words: Vec<&str> = builds[0].split_whitespace().collect();
    let cargo = words.iter().position(|w| *w == "cargo").unwrap();
    let args = &words[cargo..];
    let args = &args[..args.iter().position(|w| *w == "&&").unwrap_or(args.len())];
    for flag in ["--locked", "--release"] {
        assert!(args.contains(&flag), "{flag} missing: {args:?}");
    }
}

#[test]
fn the_dockerfile_runs_as_uid_10001_with_the_healthcheck_and_the_readme_config() {
    let instructions = dockerfile::instructions();
    let last = instructions
        .iter()
        .rposition(|i| i.instruction == "FROM")
        .unwrap();
    let run = &instructions[last..];

    // Numeric and not root: Kubernetes' runAsNonRoot can check it without /etc/passwd.
    let users = values(run, "USER");
    let user = users.last().expect("the runtime stage sets USER");
    let ids: Vec<u32> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {user} is not numeric"))
        })
        .collect();
    assert_eq!(ids, [IMAGE_UID, IMAGE_UID], "USER {user}");

    // HEALTHCHECK [options] CMD ["sessiongate", "healthcheck"], which reads DEFAULT_CONFIG.
    let checks = values(run, "HEALTHCHECK");
    assert_eq!(checks.len(), 1, "{checks:?}");
    let (options, command) = checks[0].split_once("CMD ").expect("HEALTHCHECK CMD");
    assert_eq!(exec_form(command), ["sessiongate", "healthcheck"]);
    let timeout = options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("--timeout="))
        .expect("HEALTHCHECK --timeout");
    let timeout = humantime::parse_duration(timeout).unwrap();
    assert!(
        DEADLINE < timeout,
        "the check's own deadline {DEADLINE:?} reports before Docker's {timeout:?} kills it"
    );

    assert_eq!(
        values(run, "ENTRYPOINT")
            .iter()
            .map(|e| exec_form(e))
            .collect::<Vec<_>>(),
        [["sessiongate"]]
    );
    let cmd = exec_form(values(run, "CMD").last().expect("CMD"));
    assert_eq!(cmd, ["--config", DEFAULT_CONFIG]);
    let exposed = values(run, "EXPOSE");
    assert_eq!(exposed, ["8080"]);

    // The README tells users the same path and port.
    let readme = readme_container_section();
    let port = exposed[0];
    for said in [
        DEFAULT_CONFIG.to_string(),
        format!("listen = \"0.0.0.0:{port}\""),
        format!("-p {port}:{port}"),
        "sessiongate healthcheck".to_string(),
    ] {
        assert!(
            readme.contains(&said),
            "README ### Container lacks {said:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Running as the image does

/// Panics unless uid [`IMAGE_UID`] (an "other" user everywhere on the way) can enter every
/// directory above `path`.
fn assert_traversable(path: &Path) {
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "uid {IMAGE_UID} cannot reach {}: {} is mode {mode:o}",
            path.display(),
            dir.display()
        );
    }
}

/// Writes `contents` to `path`, owned by the image's user and readable by it alone.
fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::os::unix::fs::chown(path, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `setpriv` arguments that run a program as `uid` (group the same) with no other groups.
fn as_user(setpriv: &Path, uid: u32) -> Vec<String> {
    vec![
        setpriv.to_str().unwrap().to_string(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_string(),
    ]
}

/// `sessiongate healthcheck --config CONFIG` run as `uid` with `bin`.
async fn healthcheck_as(setpriv: &Path, uid: u32, bin: &Path, config: &Path) -> Checked {
    let mut argv = as_user(setpriv, uid);
    argv.push(bin.display().to_string());
    argv.extend(["healthcheck".into(), "--config".into()]);
    argv.push(config.display().to_string());
    run_healthcheck(&argv.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// The sessiongate process, killed if the test ends before stopping it.
struct Server {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// The threads copying its stdout and stderr into `log`, done when it has exited.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its exit status once it has exited, with all it printed in `log` by then.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut().unwrap().try_wait().unwrap()?;
        self.child = None;
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Some(status)
    }

    /// SIGTERM, as `docker stop` sends, and the exit status.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) on our own child, which has not been waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sessiongate did not stop on SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` and waits until it says it is listening. `None` if it exited because the
/// port was taken meanwhile (the port was free when picked, so another program took it).
async fn start_server(mut command: Command) -> Option<Server> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let pipes: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    let readers = pipes
        .into_iter()
        .map(|pipe| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        })
        .collect();
    let mut server = Server {
        child: Some(child),
        log,
        readers,
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        if server.log().contains("listening on") {
            return Some(server);
        }
        if let Some(status) = server.exited() {
            let log = server.log();
            if log.contains("cannot listen on") && log.contains("in use") {
                return None;
            }
            panic!("sessiongate exited ({status}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "sessiongate did not start listening:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port free on all interfaces a moment ago.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a process's /proc status.
fn credentials(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The checks that this test process can run sessiongate as the image does: it is root
/// (setpriv switches users), and `setpriv` itself.
fn setpriv() -> PathBuf {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test switches to uid {IMAGE_UID} with setpriv, which needs root"
    );
    program("setpriv", "runs sessiongate as the image's uid 10001")
}

/// The binary the tests built, installed as the Dockerfile installs it (`install -m 755`,
/// root's), in a directory uid 10001 can reach wherever the build directory is. `install`
/// writes it in a process of its own, so no process this test forks meanwhile holds it open
/// for writing (which would make running it fail with "Text file busy"). The directory goes
/// when the returned guard is dropped.
fn install_binary() -> (tempfile::TempDir, PathBuf) {
    let install = tempfile::Builder::new()
        .prefix("sessiongate-bin-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(install.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = install.path().join("sessiongate");
    let installed = Command::new("install")
        .args(["-m", "755", BIN])
        .arg(&bin)
        .status()
        .unwrap();
    assert!(installed.success());
    assert_traversable(&bin);
    (install, bin)
}

/// A directory in /tmp that uid 10001 can reach (root's, 0755), removed when dropped.
fn reachable_dir(prefix: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    assert_traversable(tmp.path());
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// The config directory: the image's user owns it, nobody else can read it.
fn private_config_dir() -> tempfile::TempDir {
    let tmp = reachable_dir("sessiongate-config-");
    std::os::unix::fs::chown(tmp.path(), Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    tmp
}

/// `bin` as uid/gid 10001 with no other groups, its config `base` (listening on
/// 127.0.0.1:0) written to `config` with a free port of all interfaces instead; started, and
/// that port.
async fn start_as_image(setpriv: &Path, bin: &Path, config: &Path, base: &str) -> (Server, u16) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let port = free_port().await;
        let toml = base.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"0.0.0.0:{port}\""),
            1,
        );
        write_private(config, &toml);
        match start_server(as_image(setpriv, bin, config)).await {
            Some(server) => return (server, port),
            None => assert!(attempts < 5, "port {port} taken again, {attempts} times"),
        }
    }
}

/// The command that runs `bin --config CONFIG` as uid/gid 10001 with no other groups.
fn as_image(setpriv: &Path, bin: &Path, config: &Path) -> Command {
    let user = as_user(setpriv, IMAGE_UID);
    let mut command = Command::new(&user[0]);
    command
        .args(&user[1..])
        .arg(bin)
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    command
}

/// As the image does: uid/gid 10001 and no other groups, the config and its secret in a
/// directory only that user can read, listening on 0.0.0.0. A browser on loopback signs in
/// through it; its own healthcheck passes; SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_as_uid_10001_with_a_private_config_and_signs_users_in() {
    let setpriv = setpriv();
    let (_install, bin) = install_binary();

    let tmp = private_config_dir();
    let dir = tmp.path();
    let secret = dir.join("sessiongate-secret");
    write_private(&secret, &format!("{SECRET}\n"));

    let upstream = start_upstream().await;
    let base = config_toml(upstream.addr, "", "").replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret_file = \"{}\"", secret.display()),
    );
    let config = dir.join("sessiongate.toml");
    let (mut server, port) = start_as_image(&setpriv, &bin, &config, &base).await;
    assert!(
        server
            .log()
            .contains(&format!("listening on http://0.0.0.0:{port}")),
        "{}",
        server.log()
    );

    // setpriv execs sessiongate in place: this pid is sessiongate, running as 10001:10001.
    let id = IMAGE_UID.to_string();
    assert_eq!(
        credentials(server.pid()),
        [
            format!("Uid: {id} {id} {id} {id}"),
            format!("Gid: {id} {id} {id} {id}"),
            "Groups:".to_string(),
        ]
    );
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.pid())).unwrap();
    assert_eq!(exe, bin);

    // Sign in through 127.0.0.1, as a browser on the host would through the published port.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let res = post_login_to(addr, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);
    let res = get(addr, "/dashboard", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("x-forwarded-user"), [USER]);
    assert_eq!(upstream.requests(), 1);

    // The image's HEALTHCHECK, as the same user: 0.0.0.0 is checked on 127.0.0.1.
    let checked = healthcheck_as(&setpriv, IMAGE_UID, &bin, &config).await;
    assert!(checked.success, "{}", checked.stderr);
    assert_eq!(
        checked.line(),
        format!("healthcheck: http://127.0.0.1:{port}/.sessiongate/healthz answered 200 OK")
    );

    // Any other user is kept out of the config directory.
    let checked = healthcheck_as(&setpriv, IMAGE_UID + 1, &bin, &config).await;
    assert!(!checked.success);
    assert_eq!(
        checked.line(),
        format!(
            "healthcheck: cannot read config file {}: Permission denied (os error 13)",
            config.display()
        )
    );

    let status = server.stop().await;
    assert!(status.success(), "{status}\n{}", server.log());
}

// ---------------------------------------------------------------------------------------------
// session.state_dir where the deploy examples put it

/// `config_toml` without a session secret (so the key is made and kept in `state_dir`) and
/// with `state_dir`.
fn state_config(upstream: SocketAddr, state_dir: &Path) -> String {
    let base = config_toml(
        upstream,
        "",
        &format!("state_dir = \"{}\"", state_dir.display()),
    );
    let secret = format!("secret = \"{SECRET}\"\n");
    assert!(base.contains(&secret));
    base.replace(&secret, "")
}

/// Runs `command`, a sessiongate that must refuse to start, and returns what it printed.
async fn refusal(command: Command) -> String {
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("sessiongate exited")
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started:\n{printed}");
    printed.into_owned()
}

/// Owner and permission bits of `path`.
fn owner_and_mode(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.mode() & 0o777)
}

/// The image's volume directory, made by the Dockerfile's own command for it (run here as
/// root, with `dir` for the image's path). Docker fills a new volume mounted there from this
/// directory, owner and mode included, as compose-single's named volume is.
fn make_as_the_dockerfile_does(dir: &Path) {
    let volumes = dockerfile::image().volumes;
    let [volume] = &volumes[..] else {
        panic!("one VOLUME: {volumes:?}");
    };
    let instructions = dockerfile::instructions();
    let last = instructions
        .iter()
        .rposition(|i| i.instruction == "FROM")
        .unwrap();
    let command = values(&instructions[last..], "RUN")
        .into_iter()
        .flat_map(|r| r.split("&&"))
        .map(str::trim)
        .find(|c| c.ends_with(&format!(" {volume}")))
        .unwrap_or_else(|| panic!("no RUN makes {volume}"));
    let command = format!(
        "{} {}",
        command.strip_suffix(volume.as_str()).unwrap().trim_end(),
        dir.display()
    );
    let status = Command::new("sh").arg("-c").arg(&command).status().unwrap();
    assert!(status.success(), "{command}");
}

/// `state_dir` on the image's volume directory (made by the Dockerfile's command), as
/// uid 10001 with the key made there: files only that user can read, a second sessiongate
/// on the directory refused by the first one's pid, and a session signed in before a SIGTERM
/// still signed in after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_state_volume_keeps_sessions_across_a_restart_as_uid_10001() {
    let setpriv = setpriv();
    let (_install, bin) = install_binary();
    let config_dir = private_config_dir();
    let config = config_dir.path().join("sessiongate.toml");
    let root = reachable_dir("sessiongate-state-");
    let state = root.path().join("volume");
    make_as_the_dockerfile_does(&state);
    assert_eq!(owner_and_mode(&state), (IMAGE_UID, 0o700));

    let upstream = start_upstream().await;
    let base = state_config(upstream.addr, &state);
    let (mut server, port) = start_as_image(&setpriv, &bin, &config, &base).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let res = post_login_to(addr, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);

    // A second sessiongate on the same volume (on a port of its own) refuses to start.
    let second = config_dir.path().join("second.toml");
    let other = free_port().await;
    write_private(
        &second,
        &base.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"0.0.0.0:{other}\""),
            1,
        ),
    );
    let printed = refusal(as_image(&setpriv, &bin, &second)).await;
    assert!(
        printed.contains(&format!(
            "another sessiongate (pid {}) is using it",
            server.pid()
        )),
        "{printed}"
    );

    let status = server.stop().await;
    assert!(status.success(), "{status}\n{}", server.log());
    assert_eq!(owner_and_mode(&state), (IMAGE_UID, 0o700));
    let mut files: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for name in ["lock", "secret"] {
        assert!(files.iter().any(|f| f == name), "{files:?}");
    }
    for name in &files {
        assert_eq!(
            owner_and_mode(&state.join(name)),
            (IMAGE_UID, 0o600),
            "{name}"
        );
    }

    let (mut server, port) = start_as_image(&setpriv, &bin, &config, &base).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let res = get(addr, "/dashboard", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.upstream_header("x-forwarded-user"), [USER]);
    let status = server.stop().await;
    assert!(status.success(), "{status}\n{}", server.log());
}

/// A volume as Kubernetes mounts one for a pod with `fsGroup: 10001`: its top directory
/// root's, group 10001 with write and setgid. sessiongate as uid/gid 10001 refuses it as
/// `state_dir` (by name, saying why), and makes a directory of its own inside it, 0700, as
/// deploy/kubernetes/sidecar.yaml has it do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_volume_top_directory_is_refused_and_state_dir_is_made_inside_it() {
    let setpriv = setpriv();
    let (_install, bin) = install_binary();
    let config_dir = private_config_dir();
    let config = config_dir.path().join("sessiongate.toml");
    let root = reachable_dir("sessiongate-pvc-");
    let volume = root.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::os::unix::fs::chown(&volume, Some(0), Some(IMAGE_UID)).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2775)).unwrap();

    let upstream = start_upstream().await;
    write_private(&config, &state_config(upstream.addr, &volume));
    let printed = refusal(as_image(&setpriv, &bin, &config)).await;
    assert!(
        printed.contains(&format!(
            "session.state_dir {}: is owned by uid 0 and writable by its group",
            volume.display()
        )),
        "{printed}"
    );

    let state = volume.join("sessions");
    let base = state_config(upstream.addr, &state);
    let (mut server, _) = start_as_image(&setpriv, &bin, &config, &base).await;
    assert_eq!(owner_and_mode(&state), (IMAGE_UID, 0o700));
    assert!(state.join("lock").exists());
    let status = server.stop().await;
    assert!(status.success(), "{status}\n{}", server.log());
}
