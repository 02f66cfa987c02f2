//! The real browser the browser tests drive: Debian's headless chromium through chromedriver
//! (WebDriver, via fantoccini), one fresh profile per test, killed with its whole process
//! group when the test ends or fails; and what those tests share: waiting for pages and
//! elements, reading what the echo upstream saw, emulating colour schemes and viewports
//! (Chrome DevTools Protocol), running axe-core's WCAG 2.1 A/AA rules in the page, and
//! virtual passkey authenticators (WebDriver's WebAuthn extension).
//!
//! Needs `chromium` and `chromedriver` on PATH and axe-core under target/test-node:
//! `tests/install-deps.sh` installs them. Without them a test fails rather than skips, so a
//! machine that cannot run it never looks green.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::program;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Longest wait for any one page, element or process; generous for a loaded 2-core machine,
/// and each wait returns as soon as its condition holds.
pub(crate) const STEP: Duration = Duration::from_secs(20);
/// The whole browser session, so a wedged browser fails the test instead of hanging CI.
const WHOLE_TEST: Duration = Duration::from_secs(60);

fn required(cmd: &str) -> PathBuf {
    program(
        cmd,
        "this test drives a real browser (tests/install-deps.sh installs chromium and chromium-driver)",
    )
}

/// A running chromedriver with its own process group and scratch directory. Dropping it,
/// also while a failed assertion unwinds, kills the whole group: chromedriver and every
/// chromium process it started, which would otherwise outlive the test.
struct Chromedriver {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Everything chromedriver printed, shown when something goes wrong.
    log: Arc<Mutex<String>>,
    /// Killed and reaped: its pid may belong to another process now.
    stopped: bool,
}

impl Chromedriver {
    /// Starts chromedriver, again if it exits before it listens: with every test binary
    /// running, it has been seen to exit silently right after its first lines. Three exits in
    /// a row, or no port within [`STEP`], fail the test with what it printed.
    fn start() -> Chromedriver {
        let mut exits = String::new();
        for _ in 0..3 {
            match Chromedriver::try_start() {
                Ok(driver) => return driver,
                Err(exit) => exits.push_str(&exit),
            }
        }
        panic!("chromedriver exited three times before it listened:\n{exits}");
    }

    /// `Err` with what it printed and its exit status when chromedriver exits before it
    /// says which port it listens on.
    fn try_start() -> Result<Chromedriver, String> {
        let chromedriver = required("chromedriver");
        // Checked here too so a missing browser names the install script, not a WebDriver error.
        required("chromium");
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-browser-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Port 0: chromedriver picks a free port itself and prints it, so there is no window
        // between choosing a port and binding it for a parallel test to steal.
        let mut child = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        // Both pipes are drained for the driver's whole life, or a full pipe would block it.
        drain(child.stdout.take().unwrap(), log.clone(), Some(port_tx));
        drain(child.stderr.take().unwrap(), log.clone(), None);
        let mut driver = Chromedriver {
            child,
            port: 0,
            dir,
            log,
            stopped: false,
        };
        driver.port = match port_rx.recv_timeout(STEP) {
            Ok(Ok(port)) => port,
            // Its output ended: it has exited (or is exiting) without listening.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = driver.stop();
                return Err(format!("{}(exit: {status:?})\n", driver.log()));
            }
            other => panic!(
                "chromedriver did not say which port it listens on ({other:?}); its output:\n{}",
                driver.log()
            ),
        };
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A WebDriver session with a headless chromium on a fresh, empty profile.
    async fn session(&self) -> Client {
        let profile = self.dir.join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": required("chromium"),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    // Without these chromium keeps dialling Google's services, which this
                    // network refuses; the test needs nothing but loopback.
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = self.url();
        match tokio::time::timeout(STEP, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver could not start chromium: {e}; chromedriver's output:\n{}",
                self.log()
            ),
            Err(_) => panic!(
                "no browser session within {:?}; chromedriver's output:\n{}",
                STEP,
                self.log()
            ),
        }
    }
}

/// Copies a pipe of chromedriver's into `log`, line by line, and sends the port it announces.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    port: Option<mpsc::Sender<Result<u16, std::num::ParseIntError>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let (Some(tx), Some(rest)) =
                (&port, line.split("started successfully on port ").nth(1))
            {
                let _ = tx.send(rest.trim_end_matches('.').parse());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Chromedriver {
    /// Kills the whole group and reaps chromedriver; its exit status. (A second call only
    /// gives the status again: `Child::wait` keeps it once reaped.)
    fn stop(&mut self) -> std::io::Result<std::process::ExitStatus> {
        if !self.stopped {
            // The group id is chromedriver's pid (process_group(0)); chromium's processes are
            // in it too. SIGKILL: a browser left behind by a failed test is worse than an
            // untidy exit. The child is not reaped before this kill (an exited one stays a
            // zombie until then), so its pid (the group id) cannot belong to another process.
            let pgid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            self.stopped = true;
        }
        self.child.wait()
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` until it gives `Some`, or fails with `what` after [`STEP`].
pub(crate) async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {STEP:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the browser has loaded a page with this path: clicks and scripted form posts
/// return before the navigation they start has finished.
pub(crate) async fn wait_for_path(client: &Client, path: &str) -> url::Url {
    wait_until(&format!("the browser reaching {path}"), || async {
        let url = client.current_url().await.ok()?;
        let ready = client
            .execute("return document.readyState", vec![])
            .await
            .ok()?;
        (url.path() == path && ready == "complete").then_some(url)
    })
    .await
}

/// The echo upstream's JSON, as the browser shows it.
pub(crate) async fn page_json(client: &Client) -> Value {
    let text = client
        .execute("return document.body.innerText", vec![])
        .await
        .unwrap();
    let text = text.as_str().expect("page text");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the page is not JSON ({e}): {text}"))
}

/// Values of a header as the echo upstream received it.
pub(crate) fn upstream_header(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers in the echo")
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

/// Runs `scenario` in a fresh headless chromium session with the step timeouts set, within
/// `WHOLE_TEST`, and closes the session.
pub(crate) async fn in_chromium<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let driver = Chromedriver::start();
    let client = driver.session().await;
    client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(STEP),
            Some(STEP),
            Some(Duration::ZERO),
        ))
        .await
        .unwrap();
    // The driver outlives the session: on panic the guard still kills both.
    let outcome = tokio::time::timeout(WHOLE_TEST, scenario(client.clone())).await;
    let _ = tokio::time::timeout(STEP, client.close()).await;
    if outcome.is_err() {
        panic!(
            "the browser test took longer than {WHOLE_TEST:?}; chromedriver's output:\n{}",
            driver.log()
        );
    }
}

pub(crate) async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// A Chrome DevTools Protocol command, sent through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

async fn cdp(client: &Client, cmd: &'static str, params: Value) {
    client
        .issue_cmd(Cdp { cmd, params })
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

/// Makes the page see `prefers-color-scheme: scheme` ("light" or "dark").
pub(crate) async fn color_scheme(client: &Client, scheme: &str) {
    cdp(
        client,
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
    )
    .await;
}

/// A viewport of `width` x `height` CSS pixels.
pub(crate) async fn viewport(client: &Client, width: u32, height: u32) {
    cdp(
        client,
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
}

/// axe-core, installed by tests/install-deps.sh.
pub(crate) fn axe_source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run tests/install-deps.sh first (it installs axe-core)",
            path.display()
        )
    })
}

/// Fails unless the page's own stylesheet applied: the card's rounded corners come only from
/// it. A page whose `<style>` the CSP blocked (a hash that does not match) would be black on
/// white and still pass axe-core, so this is checked wherever axe-core runs.
pub(crate) async fn assert_styled(client: &Client, what: &str) {
    let radius = client
        .execute(
            "const main = document.querySelector('main');
             return main ? getComputedStyle(main).borderTopLeftRadius : 'no <main>';",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        radius, "8px",
        "{what}: the page's <style> did not apply (is its hash in the Content-Security-Policy?)"
    );
}

/// Runs axe-core's WCAG 2.1 A and AA rules on the page shown, which must be styled; a
/// violation fails the test with what axe says about it.
pub(crate) async fn assert_accessible(client: &Client, axe: &str, what: &str) {
    assert_styled(client, what).await;
    let loaded = client
        .execute(&format!("{axe}\n;return typeof window.axe;"), vec![])
        .await
        .unwrap();
    assert_eq!(loaded, "object", "axe-core did not load");
    let violations = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                .then(r => done(r.violations.map(v => ({ id: v.id, help: v.help, nodes: v.nodes.map(n => n.html + ' ' + n.failureSummary) }))))
                .catch(e => done([{ id: 'axe-error', help: String(e), nodes: [] }]));",
            vec![],
        )
        .await
        .unwrap();
    let violations = violations.as_array().expect("a list of violations");
    assert!(
        violations.is_empty(),
        "{what}: axe-core found {} WCAG 2.1 A/AA violations:\n{}",
        violations.len(),
        serde_json::to_string_pretty(violations).unwrap()
    );
}

/// What every signed-in browser test checks of the app's view and the browser's jar: the
/// upstream (`echo`) never saw a cookie named `cookie_name`, and the browser holds that cookie
/// HttpOnly and Secure. The cookie, for further checks.
pub(crate) async fn assert_session_cookie_kept(
    client: &Client,
    echo: &Value,
    cookie_name: &str,
) -> fantoccini::cookies::Cookie<'static> {
    for cookie in upstream_header(echo, "cookie") {
        assert!(
            !cookie.contains(cookie_name),
            "the upstream saw the session cookie: {cookie}"
        );
    }
    let cookies = client.get_all_cookies().await.unwrap();
    let session = cookies
        .into_iter()
        .find(|c| c.name() == cookie_name)
        .unwrap_or_else(|| panic!("the browser has no {cookie_name} cookie"));
    assert_eq!(session.http_only(), Some(true), "{session}");
    assert_eq!(session.secure(), Some(true), "{session}");
    session
}

/// A command of WebDriver's WebAuthn extension, for the browser's virtual authenticators:
/// `path` under `session/{id}/webauthn/`.
#[derive(Debug)]
struct WebAuthn {
    method: http::Method,
    path: String,
    body: Option<Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthn {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

/// Gives the browser a platform authenticator (CTAP2, internal) that keeps discoverable
/// credentials, verifies its user and consents to every request without a prompt, as a
/// person who always touches the sensor would. Its id.
pub(crate) async fn add_virtual_authenticator(client: &Client) -> String {
    let options = json!({
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": true,
        "hasUserVerification": true,
        "isUserConsenting": true,
        "isUserVerified": true,
    });
    let id = client
        .issue_cmd(WebAuthn {
            method: http::Method::POST,
            path: "authenticator".into(),
            body: Some(options),
        })
        .await
        .unwrap_or_else(|e| panic!("adding a virtual authenticator: {e}"));
    id.as_str()
        .unwrap_or_else(|| panic!("an authenticator id, not {id}"))
        .to_string()
}

/// The credentials the virtual authenticator `id` holds, as WebDriver describes them
/// (`credentialId`, `isResidentCredential`, `rpId`, `userHandle`, `signCount`...).
pub(crate) async fn credentials_of(client: &Client, id: &str) -> Vec<Value> {
    let list = client
        .issue_cmd(WebAuthn {
            method: http::Method::GET,
            path: format!("authenticator/{id}/credentials"),
            body: None,
        })
        .await
        .unwrap_or_else(|e| panic!("the virtual authenticator's credentials: {e}"));
    list.as_array()
        .unwrap_or_else(|| panic!("a list of credentials, not {list}"))
        .clone()
}

/// Runs `source` in every page this tab loads from now on, before the page's own scripts.
pub(crate) async fn before_every_page(client: &Client, source: &str) {
    cdp(
        client,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": source }),
    )
    .await;
}
