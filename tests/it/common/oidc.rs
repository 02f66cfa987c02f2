//! A real OpenID Connect provider for the sign-in tests: panva's oidc-provider (from npm, put
//! under target/test-node by tests/install-deps.sh) run by node as tests/oidc/provider.mjs,
//! one issuer per [`OidcProvider`] on a loopback port, killed on drop. Also a small cookie jar
//! ([`Jar`]) and the provider's login page driven over plain HTTP ([`provider_login`],
//! [`provider_deny`]), standing in for the person at the browser.
//!
//! Accounts are `{"login": {claims}}`: `sub` defaults to the login name, and the claims a
//! scope names (email: email, email_verified; profile: name, preferred_username; groups:
//! groups) are all in the ID token when present. What tests/oidc/provider.mjs says at its top
//! is the rest of the contract (tamper modes, test endpoints).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

use super::{Resp, program, req_with_body, send};

/// How long node may take to start the provider, or to exit when stopped: generous for a
/// loaded machine, and each wait ends as soon as its event comes.
const DEADLINE: Duration = Duration::from_secs(60);

/// The longest chain of pages and redirects one sign-in at the provider may take.
const MAX_STEPS: usize = 20;

/// One issuer, `http://127.0.0.1:PORT`. What the test registers or adds through it (clients,
/// accounts) is remembered, so [`OidcProvider::start_again`] brings back the same provider:
/// same port, keys, clients and accounts (not its sessions or codes).
pub struct OidcProvider {
    pub issuer: String,
    pub addr: SocketAddr,
    /// `None` between [`OidcProvider::stop`] and [`OidcProvider::start_again`].
    child: Option<Child>,
    /// Everything node printed on stderr in this run, for failure messages.
    stderr: Arc<Mutex<String>>,
    accounts: Mutex<serde_json::Map<String, Value>>,
    /// Client metadata by client_id, as registered.
    clients: Mutex<serde_json::Map<String, Value>>,
    /// The private signing keys, kept from the run before a stop.
    keys: Option<Value>,
    dir: tempfile::TempDir,
}

/// Why a launch did not give a listening provider.
enum Failed {
    /// Another process holds the port: worth waiting for when the port is needed again.
    PortTaken(String),
}

/// A provider on a free loopback port with `accounts` (`{"login": {claims}, ...}`).
pub async fn start_oidc_provider(accounts: Value) -> OidcProvider {
    start_oidc_provider_on(0, accounts).await
}

/// A provider on `port` (0: any free one). With a port chosen beforehand, a sessiongate can
/// be started against an issuer that is not up yet.
pub async fn start_oidc_provider_on(port: u16, accounts: Value) -> OidcProvider {
    let accounts = match accounts {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => panic!("accounts must be a JSON object of login -> claims, not {other}"),
    };
    let dir = tempfile::Builder::new()
        .prefix("sessiongate-oidc-")
        .tempdir()
        .unwrap();
    let mut provider = OidcProvider {
        issuer: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child: None,
        stderr: Arc::new(Mutex::new(String::new())),
        accounts: Mutex::new(accounts),
        clients: Mutex::new(serde_json::Map::new()),
        keys: None,
        dir,
    };
    if let Err(Failed::PortTaken(log)) = provider.launch().await {
        panic!("the test OpenID provider cannot listen on port {port}, it is taken:\n{log}");
    }
    provider
}

/// The directory node loads oidc-provider from.
fn node_modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-node/node_modules")
}

impl OidcProvider {
    /// Runs node with a config of the remembered state and waits for its `listening` line.
    async fn launch(&mut self) -> Result<(), Failed> {
        let node = program(
            "node",
            "the OpenID Connect tests run a real provider, oidc-provider, under node",
        );
        let modules = node_modules();
        assert!(
            modules.join("oidc-provider/package.json").exists(),
            "oidc-provider is not installed in {}: run tests/install-deps.sh first (it installs it from npm)",
            modules.display()
        );
        let mut config = json!({
            "port": self.addr.port(),
            "accounts": *self.accounts.lock().unwrap(),
            "clients": self.clients.lock().unwrap().values().cloned().collect::<Vec<_>>(),
        });
        if let Some(keys) = &self.keys {
            config["signing_keys"] = keys.clone();
        }
        let config_path = self.dir.path().join("provider.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let mut child = Command::new(&node)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs"))
            .arg(&config_path)
            .env("OIDC_PROVIDER_MODULES", &modules)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", node.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let drained = {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err_pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line()).await;
        let issuer = match first {
            Ok(Ok(Some(line))) if line.starts_with("listening http://127.0.0.1:") => {
                line["listening ".len()..].to_string()
            }
            Ok(Ok(None)) => {
                // Its stdout closed: it has exited. Its whole stderr says why.
                let status = tokio::time::timeout(DEADLINE, child.wait()).await;
                let _ = tokio::time::timeout(DEADLINE, drained).await;
                let log = stderr.lock().unwrap().clone();
                if log.contains("EADDRINUSE") {
                    return Err(Failed::PortTaken(log));
                }
                panic!(
                    "the test OpenID provider (node tests/oidc/provider.mjs) exited before it listened ({status:?}):\n{log}"
                );
            }
            other => {
                let _ = child.start_kill();
                panic!(
                    "the test OpenID provider did not say it listens within {DEADLINE:?} ({other:?}); its stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        // Nothing else comes on stdout, but the pipe is read to its end all the same, so a
        // stray line can never block node.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.addr = issuer
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the provider's issuer {issuer} is not http://IP:PORT"));
        self.issuer = issuer;
        self.child = Some(child);
        self.stderr = stderr;
        Ok(())
    }

    /// What node printed on stderr in this run (oidc-provider's warnings, errors it caught).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `{issuer}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Registers (or replaces) a confidential client that authenticates with
    /// client_secret_basic at the token endpoint.
    pub async fn register_client(&self, client_id: &str, secret: &str, redirect_uris: &[String]) {
        self.register_client_metadata(json!({
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uris": redirect_uris,
        }))
        .await;
    }

    /// Registers (or replaces) a client with any metadata oidc-provider accepts
    /// (`post_logout_redirect_uris`, `token_endpoint_auth_method: "client_secret_post"`,
    /// `id_token_signed_response_alg: "ES256"`, ...).
    pub async fn register_client_metadata(&self, metadata: Value) {
        let id = metadata["client_id"]
            .as_str()
            .expect("client metadata has a client_id")
            .to_string();
        self.post_test("/_test/clients", &metadata).await;
        self.clients.lock().unwrap().insert(id, metadata);
    }

    /// Adds or replaces accounts: `{"login": {claims}, ...}`.
    pub async fn add_accounts(&self, accounts: Value) {
        self.post_test("/_test/accounts", &accounts).await;
        let Value::Object(added) = accounts else {
            unreachable!("the provider accepted only an object")
        };
        self.accounts.lock().unwrap().extend(added);
    }

    /// Every token response from now on carries an ID token broken in one way (the modes at
    /// the top of tests/oidc/provider.mjs); "off" for the real token again.
    pub async fn tamper(&self, mode: &str) {
        let mode = if mode == "off" {
            Value::Null
        } else {
            json!(mode)
        };
        self.post_test("/_test/tamper", &json!({ "mode": mode }))
            .await;
    }

    /// Every token response from now on carries the real ID token with `claims` merged in,
    /// signed again with the provider's key.
    pub async fn tamper_claims(&self, claims: Value) {
        self.post_test(
            "/_test/tamper",
            &json!({ "mode": "claims", "claims": claims }),
        )
        .await;
    }

    /// `{"jwks_fetches": n, "token_requests": n, "discovery_fetches": n}`: requests received
    /// in this run, also those answered 503 while down.
    pub async fn stats(&self) -> Value {
        let res = self.get_test("/_test/stats").await;
        res.json()
    }

    /// From now on every request but the test endpoints is answered 503, on the same port.
    pub async fn down(&self) {
        self.post_test("/_test/down", &Value::Null).await;
    }

    /// Ends [`OidcProvider::down`].
    pub async fn up(&self) {
        self.post_test("/_test/up", &Value::Null).await;
    }

    /// Kills node: nothing listens on the port until [`OidcProvider::start_again`].
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The keys are asked for first, so the provider comes back signing with them.
        self.keys = Some(self.get_test("/_test/keys").await.json()["keys"].clone());
        child.start_kill().unwrap();
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("node exits when killed")
            .unwrap();
    }

    /// Starts the provider again (stopping it first if it runs) on the same port, with the
    /// same keys, clients and accounts. A process holding the port meanwhile is waited out.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(Failed::PortTaken(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Failed::PortTaken(log)) => panic!(
                    "port {} stayed taken for {DEADLINE:?}; the provider cannot start again:\n{log}",
                    self.addr.port()
                ),
            }
        }
    }

    /// [`OidcProvider::start_again`], by its other name.
    pub async fn restart_same_port(&mut self) {
        self.start_again().await;
    }

    async fn get_test(&self, path: &str) -> Resp {
        let res = send(
            self.addr,
            req_with_body(Method::GET, path, &[], Bytes::new()),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "GET {path}: {}", res.text());
        res
    }

    async fn post_test(&self, path: &str, body: &Value) -> Resp {
        let res = send(
            self.addr,
            req_with_body(
                Method::POST,
                path,
                &[("content-type", "application/json")],
                body.to_string(),
            ),
        )
        .await;
        assert_eq!(
            res.status,
            StatusCode::NO_CONTENT,
            "POST {path} to the test provider: {}",
            res.text()
        );
        res
    }
}

/// The header and payload of a JWT (not checked in any way).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("a JWT has a {what}: {token}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("JWT {what} is not base64url ({e})"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT {what} is not JSON ({e})"))
    };
    (decode("header"), decode("payload"))
}

// ---------------------------------------------------------------------------------------------
// A browser's cookies, and the person at the provider's login page

/// Cookies by `host:port`, each with its path: what a browser would send back, roughly (no
/// Domain, Secure or SameSite rules; the tests speak plain HTTP to 127.0.0.1). A Set-Cookie
/// with `Max-Age=0` or a past `Expires` deletes.
#[derive(Debug, Default)]
pub struct Jar {
    cookies: Vec<JarCookie>,
}

#[derive(Debug)]
struct JarCookie {
    authority: String,
    path: String,
    name: String,
    value: String,
}

fn authority(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().expect("a URL with a host"),
        url.port_or_known_default().expect("a URL with a port")
    )
}

fn path_matches(cookie_path: &str, path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
}

impl Jar {
    pub fn new() -> Jar {
        Jar::default()
    }

    /// The Cookie header a browser sends to `url`, if any.
    pub fn cookie_header(&self, url: &Url) -> Option<String> {
        let here = authority(url);
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|c| c.authority == here && path_matches(&c.path, url.path()))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// The value of the cookie `name` kept for `url`'s host and port (any path).
    pub fn get(&self, url: &Url, name: &str) -> Option<&str> {
        let here = authority(url);
        self.cookies
            .iter()
            .find(|c| c.authority == here && c.name == name)
            .map(|c| c.value.as_str())
    }

    /// Keeps (or deletes) what the response to a request for `url` set.
    pub fn store(&mut self, url: &Url, res: &Resp) {
        let here = authority(url);
        for line in res.set_cookies() {
            let Ok(cookie) = cookie::Cookie::parse(line.as_str()) else {
                continue;
            };
            // RFC 6265 5.1.4: without a Path, the request path up to its last '/'.
            let path = match cookie.path() {
                Some(p) if p.starts_with('/') => p.to_string(),
                _ => match url.path().rfind('/') {
                    Some(0) | None => "/".to_string(),
                    Some(i) => url.path()[..i].to_string(),
                },
            };
            self.cookies
                .retain(|c| !(c.authority == here && c.path == path && c.name == cookie.name()));
            let deleted = cookie.max_age().is_some_and(|age| age.whole_seconds() <= 0)
                || cookie
                    .expires_datetime()
                    .is_some_and(|at| at <= cookie::time::OffsetDateTime::now_utc());
            if !deleted {
                self.cookies.push(JarCookie {
                    authority: here.clone(),
                    path,
                    name: cookie.name().to_string(),
                    value: cookie.value().to_string(),
                });
            }
        }
    }

    /// One request to an absolute `http://IP:PORT/...` URL with the jar's cookies, keeping
    /// what the response sets. Redirects are not followed.
    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let url = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let addr: SocketAddr = authority(&url)
            .parse()
            .unwrap_or_else(|e| panic!("{url}: the jar speaks to IP addresses only ({e})"));
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let cookie = self.cookie_header(&url);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(cookie) = &cookie {
            all.push(("cookie", cookie));
        }
        let res = send(addr, req_with_body(method, &target, &all, body)).await;
        self.store(&url, &res);
        res
    }

    /// GET `url` with the jar's cookies.
    pub async fn get_url(&mut self, url: &str) -> Resp {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// POSTs a urlencoded form to `url` with the jar's cookies.
    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Resp {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            Method::POST,
            url,
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await
    }
}

/// Signs in at the provider as `login`: GETs `authorize_url` (on the provider), follows the
/// provider's redirects with the jar's cookies, submits the login form, and follows redirects
/// until one leads off the provider's origin. Returns that URL: the client's redirect URI with
/// `code`, `state` and `iss` (or `error`). A jar already signed in at the provider may get
/// there without a form, as whoever it is signed in as. Panics when the provider refuses
/// the login or shows anything else.
pub async fn provider_login(jar: &mut Jar, authorize_url: &str, login: &str) -> String {
    match at_provider(jar, authorize_url, Press::SignIn(login)).await {
        Ok(url) => url,
        Err(why) => panic!("the provider refused to sign in {login:?}: {why}"),
    }
}

/// Like [`provider_login`] for a login the provider must refuse: the error its form shows
/// again (`No account named "..."`). Panics if it signs in.
pub async fn provider_login_refused(jar: &mut Jar, authorize_url: &str, login: &str) -> String {
    match at_provider(jar, authorize_url, Press::SignIn(login)).await {
        Ok(url) => panic!("the provider signed in {login:?} and went back to {url}"),
        Err(why) => why,
    }
}

/// Like [`provider_login`], but presses "Deny": the URL returned carries
/// `error=access_denied`.
pub async fn provider_deny(jar: &mut Jar, authorize_url: &str) -> String {
    match at_provider(jar, authorize_url, Press::Deny).await {
        Ok(url) => url,
        Err(why) => panic!("the provider showed a page again after Deny: {why}"),
    }
}

/// Signs out at the provider: GETs `end_session_url` (its end_session_endpoint with
/// `id_token_hint`, `post_logout_redirect_uri`, ...) with the jar's cookies and says "Yes,
/// sign me out" (a jar not signed in there is sent on without a question). `Some` URL off the
/// provider (the post-logout redirect URI), or `None` when the provider shows its own
/// "Signed out" page because no redirect URI was asked for.
pub async fn provider_logout(jar: &mut Jar, end_session_url: &str) -> Option<String> {
    match at_provider(jar, end_session_url, Press::Logout).await {
        Ok(url) => Some(url),
        Err(page) if page.contains("You are signed out") => None,
        Err(page) => panic!("the provider did not sign out: {page}"),
    }
}

#[derive(Clone, Copy)]
enum Press<'a> {
    SignIn(&'a str),
    Deny,
    Logout,
}

/// `Ok` with the first URL off the provider, or `Err` with the error shown (or the whole
/// page) when the provider answers the button with a page.
async fn at_provider(jar: &mut Jar, start: &str, press: Press<'_>) -> Result<String, String> {
    let mut url = Url::parse(start).unwrap_or_else(|e| panic!("{start}: {e}"));
    let origin = url.origin();
    let mut form: Option<Vec<(String, String)>> = None;
    let mut pressed = false;
    for _ in 0..MAX_STEPS {
        let res = match form.take() {
            Some(fields) => {
                let fields: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                jar.post_form(url.as_str(), &fields).await
            }
            None => jar.get_url(url.as_str()).await,
        };
        if res.status.is_redirection() {
            let location = res
                .header("location")
                .unwrap_or_else(|| panic!("a {} from {url} without Location", res.status));
            let next = url.join(location).unwrap();
            if next.origin() != origin {
                return Ok(next.to_string());
            }
            url = next;
            continue;
        }
        let html = res.text();
        assert_eq!(res.status, StatusCode::OK, "the provider at {url}: {html}");
        if pressed {
            return Err(alert_text(&html).unwrap_or(html));
        }
        let found = match press {
            Press::SignIn(_) => form_with(&html, "id=\"signin\""),
            Press::Deny => form_with(&html, "id=\"deny\""),
            // Without a session at the provider, oidc-provider's own page posts the
            // confirmation by script; its form is sent here as the script would.
            Press::Logout => form_with(&html, "id=\"logout-yes\"")
                .or_else(|| form_with(&html, "/session/end/confirm\"")),
        };
        let (action, mut fields) =
            found.unwrap_or_else(|| panic!("no form to press at {url}:\n{html}"));
        if let Press::SignIn(login) = press {
            fields.push(("login".into(), login.into()));
        }
        url = url.join(&action).unwrap();
        form = Some(fields);
        pressed = true;
    }
    panic!("the visit at the provider took more than {MAX_STEPS} steps (last: {url})");
}

/// The first `<form>` whose text holds `marker`: its `action` and what a browser submits
/// with the marked button: the hidden inputs and, if it has a name, the button itself.
fn form_with(html: &str, marker: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = html
        .split("<form")
        .skip(1)
        .filter_map(|f| f.split("</form>").next())
        .find(|f| f.contains(marker))?;
    let tag = form.split('>').next()?;
    let action = attr(tag, "action")?;
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = input.split('>').next().unwrap_or_default();
        if attr(tag, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value"))
        {
            fields.push((name, value));
        }
    }
    if let Some(button) = form
        .split("<button")
        .skip(1)
        .map(|b| b.split('>').next().unwrap_or_default())
        .find(|tag| tag.contains(marker))
        && let (Some(name), Some(value)) = (attr(button, "name"), attr(button, "value"))
    {
        fields.push((name, value));
    }
    Some((action, fields))
}

/// The value of `name="..."` in a tag's text, HTML entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let value = tag
        .split(&format!(" {name}=\""))
        .nth(1)?
        .split('"')
        .next()?;
    Some(unescape(value))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text of the page's `role="alert"` element: why the provider refused.
fn alert_text(html: &str) -> Option<String> {
    let text = html.split("role=\"alert\">").nth(1)?.split('<').next()?;
    Some(unescape(text))
}
