//! Passkeys over real sockets, with the software authenticator of `common::passkey_token`
//! playing the browser's passkey: registered on the account page, then signing in with no
//! username typed; every bent ceremony refused (a replayed answer or challenge, another
//! origin or passkey domain, no user verification, a removed passkey, a counter that went
//! backwards, another browser's challenge), failures counted like wrong passwords, the
//! password asked again for changes in an older session, and passkeys kept across a restart.
//!
//! The browser is on `http://localhost:PORT` (the passkey domain `localhost`): browsers
//! refuse WebAuthn on a bare IP address.

use std::net::SocketAddr;

use http::{Method, StatusCode};
use serde_json::Value;
use sessiongate::Config;

use crate::common::passkey_token::PasskeyToken;
use crate::common::*;

/// A sessiongate reached as a browser on `localhost` reaches it.
pub(crate) struct Site {
    addr: SocketAddr,
    host: String,
    pub(crate) origin: String,
}

impl Site {
    pub(crate) fn of(proxy: &Proxy) -> Site {
        Site::at(proxy.addr)
    }

    /// The sessiongate listening on `addr` (the binary, say).
    pub(crate) fn at(addr: SocketAddr) -> Site {
        Site::named(addr, "localhost")
    }

    /// The sessiongate at `addr` as a browser reaches it at `name` (a host that resolves to
    /// it).
    fn named(addr: SocketAddr, name: &str) -> Site {
        let host = format!("{name}:{}", addr.port());
        Site {
            addr,
            origin: format!("http://{host}"),
            host,
        }
    }

    pub(crate) async fn get(&self, path: &str, cookie: &str) -> Resp {
        let mut headers = vec![("host", self.host.as_str()), BROWSER];
        if !cookie.is_empty() {
            headers.push(("cookie", cookie));
        }
        send(self.addr, req(Method::GET, path, &headers)).await
    }

    /// A same-origin form post, as the page's own form or script sends it.
    pub(crate) async fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Resp {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut headers = vec![
            ("host", self.host.as_str()),
            ("origin", self.origin.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if !cookie.is_empty() {
            headers.push(("cookie", cookie));
        }
        send(self.addr, req_with_body(Method::POST, path, &headers, form)).await
    }
}

/// The value of the hidden field `name` in `html`.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let rest = html.split(&marker).nth(1).expect(name);
    rest.split('"').next().unwrap().to_string()
}

/// The `name=value` of the Set-Cookie whose name ends with `suffix`.
fn cookie_ending(res: &Resp, suffix: &str) -> String {
    res.set_cookies()
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .find(|c| c.split('=').next().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} cookie in {:?}", res.set_cookies()))
}

/// A config with passkeys on, kept in a fresh state directory.
pub(crate) fn passkey_config(upstream: SocketAddr, state: &std::path::Path) -> Config {
    let toml = config_toml(upstream, "", &format!("state_dir = '{}'", state.display()));
    Config::from_toml(&with_auth(&toml, "passkeys = true")).unwrap()
}

/// Signs alice in with her password, as a browser on `site`: her session cookie.
pub(crate) async fn password_session(site: &Site) -> String {
    password_session_as(site, USER, PASSWORD).await
}

/// Signs `user` in with `password`, as a browser on `site`: their session cookie.
pub(crate) async fn password_session_as(site: &Site, user: &str, password: &str) -> String {
    let page = site.get("/.sessiongate/login", "").await;
    let signin = cookie_ending(&page, "-signin");
    let csrf = hidden(&page.text(), "csrf");
    let fields = [("username", user), ("password", password), ("csrf", &csrf)];
    let res = site.post("/.sessiongate/login", &signin, &fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    cookie_pair(&res)
}

/// Registers a passkey named `name` with `token` on the account page of the user whose
/// `session` it is.
pub(crate) async fn add_passkey(
    site: &Site,
    session: &str,
    token: &mut PasskeyToken,
    name: &str,
) -> Resp {
    let page = site.get("/.sessiongate/account", session).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let csrf = hidden(&page.text(), "csrf");
    let options = site
        .post(
            "/.sessiongate/account/passkey/options",
            session,
            &[("csrf", &csrf), ("name", name)],
        )
        .await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text());
    let options = options.json();
    let credential = token.register(&options, &site.origin).unwrap().to_string();
    let ceremony = options["ceremony"].as_str().unwrap().to_string();
    let fields = [
        ("csrf", csrf.as_str()),
        ("ceremony", &ceremony),
        ("credential", &credential),
    ];
    site.post("/.sessiongate/account/passkey/add", session, &fields)
        .await
}

/// A fresh browser's sign-in page: its sign-in cookie and form token.
async fn sign_in_page(site: &Site) -> (String, String, String) {
    let page = site.get("/.sessiongate/login", "").await;
    let html = page.text();
    (cookie_ending(&page, "-signin"), hidden(&html, "csrf"), html)
}

/// A passkey challenge for the browser holding `signin`.
async fn challenge(site: &Site, signin: &str, csrf: &str) -> Value {
    let res = site
        .post("/.sessiongate/passkey/options", signin, &[("csrf", csrf)])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()
}

async fn answer(site: &Site, signin: &str, csrf: &str, ceremony: &str, credential: &Value) -> Resp {
    let credential = credential.to_string();
    let fields = [
        ("csrf", csrf),
        ("ceremony", ceremony),
        ("credential", &credential),
        ("rd", "/"),
    ];
    site.post("/.sessiongate/passkey/sign-in", signin, &fields)
        .await
}

/// A whole passkey sign-in with `token` in a fresh browser.
pub(crate) async fn passkey_sign_in(site: &Site, token: &mut PasskeyToken) -> Resp {
    let (signin, csrf, _) = sign_in_page(site).await;
    let options = challenge(site, &signin, &csrf).await;
    let credential = token.assert(&options, &site.origin).unwrap();
    answer(
        site,
        &signin,
        &csrf,
        options["ceremony"].as_str().unwrap(),
        &credential,
    )
    .await
}

#[tokio::test]
async fn a_passkey_added_on_the_account_page_signs_in_without_a_username() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_from(passkey_config(upstream.addr, &state.path().join("s"))).await;
    let site = Site::of(&proxy);

    let (_, _, login_html) = sign_in_page(&site).await;
    assert!(
        login_html.contains("Sign in with a passkey"),
        "{login_html}"
    );
    assert!(login_html.contains("autocomplete=\"username webauthn\""));
    assert!(login_html.contains("<script src=\"/.sessiongate/passkey.js\""));
    let login_page = site.get("/.sessiongate/login", "").await;
    let csp = login_page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let script = site.get("/.sessiongate/passkey.js", "").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.text().contains("navigator.credentials"));

    let session = password_session(&site).await;
    let account = site.get("/.sessiongate/account", &session).await.text();
    assert!(account.contains("You have no passkeys yet."), "{account}");
    let mut token = PasskeyToken::new();
    let added = add_passkey(&site, &session, &mut token, "Work laptop").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    assert_eq!(added.header("location"), Some("/.sessiongate/account"));
    let account = site.get("/.sessiongate/account", &session).await.text();
    assert!(account.contains("<td>Work laptop</td>"), "{account}");
    assert!(account.contains(">never</td>"), "not used yet: {account}");
    assert!(
        token.credentials()[0].resident,
        "registered as a discoverable credential"
    );

    let res = passkey_sign_in(&site, &mut token).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);
    let app = site.get("/", &cookie).await;
    assert_eq!(app.status, StatusCode::OK);
    assert_eq!(
        app.upstream_header("x-forwarded-user"),
        vec![USER.to_string()]
    );
    let account = site.get("/.sessiongate/account", &cookie).await.text();
    assert!(
        !account.contains(">never</td>"),
        "last use recorded: {account}"
    );
}

#[tokio::test]
async fn bent_passkey_ceremonies_are_refused() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_from(passkey_config(upstream.addr, &state.path().join("s"))).await;
    let site = Site::of(&proxy);
    let session = password_session(&site).await;
    let mut token = PasskeyToken::new();
    let added = add_passkey(&site, &session, &mut token, "Key").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());

    // A challenge is answered once: the same answer again names a ceremony that is gone.
    let (signin, csrf, _) = sign_in_page(&site).await;
    let options = challenge(&site, &signin, &csrf).await;
    let ceremony = options["ceremony"].as_str().unwrap().to_string();
    let good = token.assert(&options, &site.origin).unwrap();
    let res = answer(&site, &signin, &csrf, &ceremony, &good).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let again = answer(&site, &signin, &csrf, &ceremony, &good).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.text().contains("already used"), "{}", again.text());
    assert!(sets_no_session(&again));

    // The old answer against a fresh challenge.
    let fresh = challenge(&site, &signin, &csrf).await;
    let replay = answer(
        &site,
        &signin,
        &csrf,
        fresh["ceremony"].as_str().unwrap(),
        &good,
    )
    .await;
    refused(&replay, "another challenge");

    // Another browser's challenge.
    let (other_signin, other_csrf, _) = sign_in_page(&site).await;
    let theirs = challenge(&site, &other_signin, &other_csrf).await;
    let stolen = token.assert(&theirs, &site.origin).unwrap();
    let res = answer(
        &site,
        &signin,
        &csrf,
        theirs["ceremony"].as_str().unwrap(),
        &stolen,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());

    // Another origin, another passkey domain, no user verification.
    let browser = (signin.as_str(), csrf.as_str());
    let res = bent_sign_in(
        &site,
        browser,
        &mut token.clone(),
        "http://evil.localhost:1",
    )
    .await;
    refused(&res, "another site");
    let mut wrong_rp = token.clone();
    wrong_rp.rp_id_override = Some("example.com".into());
    let res = bent_sign_in(&site, browser, &mut wrong_rp, &site.origin).await;
    refused(&res, "another passkey domain");
    let mut no_uv = token.clone();
    no_uv.uv = false;
    let res = bent_sign_in(&site, browser, &mut no_uv, &site.origin).await;
    refused(&res, "did not verify the user");
}

/// A sign-in in the browser `(sign-in cookie, form token)` with `token` signing for `origin`.
async fn bent_sign_in(
    site: &Site,
    (signin, csrf): (&str, &str),
    token: &mut PasskeyToken,
    origin: &str,
) -> Resp {
    let options = challenge(site, signin, csrf).await;
    let credential = token.assert(&options, origin).unwrap();
    let ceremony = options["ceremony"].as_str().unwrap();
    answer(site, signin, csrf, ceremony, &credential).await
}

/// A passkey answer refused with 401, the sign-in page saying `why`, and no session.
pub(crate) fn refused(res: &Resp, why: &str) {
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    assert!(
        res.text().contains("Signing in with a passkey failed"),
        "{}",
        res.text()
    );
    assert!(res.text().contains(why), "{}", res.text());
    assert!(sets_no_session(res));
}

#[tokio::test]
async fn a_copied_authenticator_and_a_removed_passkey_are_refused_and_failures_count() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_from(passkey_config(upstream.addr, &state.path().join("s"))).await;
    let site = Site::of(&proxy);
    let session = password_session(&site).await;
    let mut token = PasskeyToken::new();
    add_passkey(&site, &session, &mut token, "Key").await;

    // A copy of the authenticator made now signs with a counter the server has seen pass.
    let mut copy = token.clone();
    let res = passkey_sign_in(&site, &mut token).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let res = passkey_sign_in(&site, &mut copy).await;
    refused(&res, "counter went backwards");

    // Removed on the account page: refused from then on.
    let page = site.get("/.sessiongate/account", &session).await.text();
    let id = hidden(&page, "passkey");
    let csrf = hidden(&page, "csrf");
    let removed = site
        .post(
            "/.sessiongate/account/passkey/remove",
            &session,
            &[("csrf", &csrf), ("passkey", &id)],
        )
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.text());
    let page = site.get("/.sessiongate/account", &session).await.text();
    assert!(page.contains("You have no passkeys yet."), "{page}");
    let res = passkey_sign_in(&site, &mut token).await;
    refused(&res, "not registered here");

    // Five failures in all from this address (auth.max_failures): the next attempt is held
    // off, like a password.
    for _ in 0..3 {
        refused(
            &passkey_sign_in(&site, &mut token).await,
            "not registered here",
        );
    }
    let limited = passkey_sign_in(&site, &mut token).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    let password = site
        .post(
            "/.sessiongate/login",
            "",
            &[("username", USER), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        password.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the limits passwords have"
    );
}

#[tokio::test]
async fn an_older_session_confirms_with_the_password_and_passkeys_survive_a_restart() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("s");
    let mut config = passkey_config(upstream.addr, &dir);
    config.auth.confirm_after = std::time::Duration::ZERO;
    let proxy = start_proxy_from(config).await;
    let site = Site::of(&proxy);
    let session = password_session(&site).await;
    let page = site.get("/.sessiongate/account", &session).await.text();
    assert!(
        page.contains("you signed in more than 5 minutes ago"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let path = "/.sessiongate/account/passkey/options";
    let none = site
        .post(path, &session, &[("csrf", &csrf), ("name", "K")])
        .await;
    assert_eq!(none.status, StatusCode::FORBIDDEN, "{}", none.text());
    assert!(
        none.text().contains("enter your password"),
        "{}",
        none.text()
    );
    let wrong = [("csrf", csrf.as_str()), ("name", "K"), ("password", "nope")];
    assert_eq!(
        site.post(path, &session, &wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    let right = [
        ("csrf", csrf.as_str()),
        ("name", "K"),
        ("password", PASSWORD),
    ];
    let options = site.post(path, &session, &right).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text());
    let options = options.json();
    let mut token = PasskeyToken::new();
    let credential = token.register(&options, &site.origin).unwrap().to_string();
    let ceremony = options["ceremony"].as_str().unwrap().to_string();
    let fields = [
        ("csrf", csrf.as_str()),
        ("ceremony", &ceremony),
        ("credential", &credential),
    ];
    let added = site
        .post("/.sessiongate/account/passkey/add", &session, &fields)
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());

    let proxy = restart(proxy, passkey_config(upstream.addr, &dir)).await;
    let site = Site::of(&proxy);
    let res = passkey_sign_in(&site, &mut token).await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "kept across a restart: {}",
        res.text()
    );
}

#[test]
fn passkeys_need_a_store_that_keeps_them() {
    let toml = config_toml("127.0.0.1:9".parse().unwrap(), "", "");
    let err = Config::from_toml(&with_auth(&toml, "passkeys = true"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.passkeys") && err.contains("session.state_dir"),
        "{err}"
    );
    let both = with_auth(&toml, "require_totp = true\nrequire_second_factor = false");
    let err = Config::from_toml(&both).unwrap_err().to_string();
    assert!(err.contains("require_second_factor"), "{err}");
    let ip = with_auth(
        &with_session(&toml, "state_dir = '/tmp/x'"),
        "passkeys = true\npasskey_rp_id = \"10.0.0.1\"",
    );
    let err = Config::from_toml(&ip).unwrap_err().to_string();
    assert!(err.contains("auth.passkey_rp_id"), "{err}");
    // The passkey domain must cover the hosts the session cookie goes to.
    let shared = with_session(
        &toml,
        "state_dir = '/tmp/x'\ncookie_domain = \"example.com\"",
    );
    let narrower = with_auth(
        &shared,
        "passkeys = true\npasskey_rp_id = \"app.example.com\"",
    );
    let err = Config::from_toml(&narrower).unwrap_err().to_string();
    assert!(
        err.contains("does not cover session.cookie_domain"),
        "{err}"
    );
    let parent = with_auth(&shared, "passkeys = true\npasskey_rp_id = \"example.com\"");
    Config::from_toml(&parent).unwrap();
}

#[tokio::test]
async fn with_redis_a_passkey_added_on_one_replica_signs_in_on_another() {
    use crate::common::redis::{RedisOptions, RedisServer, redis_config};
    let redis = RedisServer::start(RedisOptions::default()).await;
    let upstream = start_upstream().await;
    let toml = with_auth(
        &redis_config(upstream.addr, &redis.url(), ""),
        "passkeys = true",
    );
    let one = start_proxy_with(&toml).await;
    let two = start_proxy_with(&toml).await;
    let (first, second) = (Site::of(&one), Site::of(&two));

    let session = password_session(&first).await;
    let mut token = PasskeyToken::new();
    let added = add_passkey(&first, &session, &mut token, "Phone").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    // A second passkey, added while the first one signs in elsewhere: neither change is lost.
    let mut other = PasskeyToken::new();
    let (signed, added) = tokio::join!(
        passkey_sign_in(&second, &mut token),
        add_passkey(&second, &session, &mut other, "Key")
    );
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text());
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    let page = first.get("/.sessiongate/account", &session).await.text();
    assert!(
        page.contains("<td>Phone</td>") && page.contains("<td>Key</td>"),
        "{page}"
    );
    assert_eq!(
        page.matches(">never</td>").count(),
        1,
        "Phone's use kept: {page}"
    );
    let res = passkey_sign_in(&first, &mut other).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
}

/// A challenge for the pending sign-in's passkeys.
async fn second_options(site: &Site, cookies: &str, csrf: &str) -> Value {
    let path = "/.sessiongate/login/passkey/options";
    let res = site.post(path, cookies, &[("csrf", csrf)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.json()
}

#[tokio::test]
async fn after_the_password_a_passkey_is_the_second_factor() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_from(passkey_config(upstream.addr, &state.path().join("s"))).await;
    let site = Site::of(&proxy);
    let session = password_session(&site).await;
    let mut token = PasskeyToken::new();
    add_passkey(&site, &session, &mut token, "Key").await;

    // The password alone no longer signs in: the second step asks for the passkey.
    let (signin, csrf, _) = sign_in_page(&site).await;
    let fields = [("username", USER), ("password", PASSWORD), ("csrf", &csrf)];
    let res = site.post("/.sessiongate/login", &signin, &fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some("/.sessiongate/login/code"));
    let pending = cookie_ending(&res, "-pending");
    let cookies = format!("{signin}; {pending}");
    let page = site.get("/.sessiongate/login/code", &cookies).await;
    let html = page.text();
    assert!(
        html.contains("Use a passkey") && !html.contains("name=\"code\""),
        "{html}"
    );
    assert!(html.contains("data-passkey=\"second\""), "{html}");
    let csrf = hidden(&html, "csrf");

    // Another authenticator's passkey is refused, and the step stays open.
    let answer_with = |token: &mut PasskeyToken, options: &Value, cred: Option<&[u8]>| {
        let answer = match cred {
            Some(id) => token.assert_as(options, &site.origin, id),
            None => token.assert(options, &site.origin),
        };
        let credential = answer.unwrap().to_string();
        let ceremony = options["ceremony"].as_str().unwrap().to_string();
        (ceremony, credential)
    };
    let first = second_options(&site, &cookies, &csrf).await;
    let allowed = &first["publicKey"]["allowCredentials"];
    assert_eq!(allowed.as_array().map(Vec::len), Some(1), "{first}");
    let mut stranger = PasskeyToken::new();
    let registration = serde_json::json!({"publicKey": {
        "rp": {"id": "localhost", "name": "x"}, "user": {"id": "AAAA", "name": "x", "displayName": "x"},
        "challenge": "AAAA", "pubKeyCredParams": [{"type": "public-key", "alg": -7}]}});
    stranger.register(&registration, &site.origin).unwrap();
    let other_id = stranger.credential_ids()[0].clone();
    let (ceremony, credential) = answer_with(&mut stranger, &first, Some(&other_id));
    let fields = [
        ("csrf", csrf.as_str()),
        ("ceremony", &ceremony),
        ("credential", &credential),
    ];
    let res = site
        .post("/.sessiongate/login/passkey", &cookies, &fields)
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    assert!(res.text().contains("not registered here"), "{}", res.text());
    assert!(sets_no_session(&res));

    let second = second_options(&site, &cookies, &csrf).await;
    let (ceremony, credential) = answer_with(&mut token, &second, None);
    let fields = [
        ("csrf", csrf.as_str()),
        ("ceremony", &ceremony),
        ("credential", &credential),
    ];
    let res = site
        .post("/.sessiongate/login/passkey", &cookies, &fields)
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let cookie = cookie_pair(&res);
    assert_eq!(site.get("/", &cookie).await.status, StatusCode::OK);
}

/// The value of `<code class="secret">` on a page: the key of a TOTP set-up.
fn shown_secret(html: &str) -> String {
    let rest = html
        .split("<code class=\"secret\">")
        .nth(1)
        .expect("a key on the page");
    rest.split('<').next().unwrap().to_string()
}

/// A code for `secret` `steps` time steps from now.
fn code_for(secret: &str, steps: i64) -> String {
    let secret = sessiongate::credentials::totp::TotpSecret::from_base32(secret).unwrap();
    let now = sessiongate::credentials::totp::unix_now() as i64;
    secret.code_at((now + steps * 30) as u64)
}

#[tokio::test]
async fn an_authenticator_app_set_up_on_the_account_page_is_asked_after_the_password() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_toml(
        upstream.addr,
        "",
        &format!("state_dir = '{}'", state.path().join("s").display()),
    );
    let proxy = start_proxy_with(&toml).await;
    let site = Site::of(&proxy);
    let session = password_session(&site).await;
    let page = site.get("/.sessiongate/account", &session).await.text();
    assert!(page.contains("Passkeys are not turned on"), "{page}");
    let csrf = hidden(&page, "csrf");
    for path in [
        "/.sessiongate/passkey/options",
        "/.sessiongate/account/passkey/options",
    ] {
        let off = site
            .post(path, &session, &[("csrf", &csrf), ("name", "K")])
            .await;
        assert_eq!(off.status, StatusCode::NOT_FOUND, "{path}: {}", off.text());
        assert!(off.text().contains("auth.passkeys"), "{}", off.text());
    }
    let start = site
        .post(
            "/.sessiongate/account/totp/start",
            &session,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text());
    let html = start.text();
    assert!(
        html.contains("src=\"data:image/svg+xml;base64,"),
        "a QR code: {html}"
    );
    let secret = shown_secret(&html);
    let setup = hidden(&html, "setup");

    // A wrong code keeps the set-up; the right one turns the app on.
    let wrong = format!(
        "{:06}",
        (code_for(&secret, 0).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let path = "/.sessiongate/account/totp/confirm";
    let fields = [("csrf", csrf.as_str()), ("setup", &setup), ("code", &wrong)];
    let res = site.post(path, &session, &fields).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    assert_eq!(shown_secret(&res.text()), secret, "the same key again");
    let right = code_for(&secret, 0);
    let fields = [("csrf", csrf.as_str()), ("setup", &setup), ("code", &right)];
    let res = site.post(path, &session, &fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let again = site.post(path, &session, &fields).await;
    assert!(
        again.text().contains("That set-up has expired"),
        "single use: {}",
        again.text()
    );
    let page = site.get("/.sessiongate/account", &session).await.text();
    assert!(page.contains("Remove the authenticator app"), "{page}");
    let on_disk = std::fs::read_dir(state.path().join("s")).unwrap();
    for file in on_disk {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&secret), "the secret is sealed on disk");
    }

    // Signing in now takes a code after the password (the next step's: this one is used).
    let (signin, csrf2, _) = sign_in_page(&site).await;
    let fields = [("username", USER), ("password", PASSWORD), ("csrf", &csrf2)];
    let res = site.post("/.sessiongate/login", &signin, &fields).await;
    assert_eq!(
        res.header("location"),
        Some("/.sessiongate/login/code"),
        "{}",
        res.text()
    );
    let cookies = format!("{signin}; {}", cookie_ending(&res, "-pending"));
    let code_page = site.get("/.sessiongate/login/code", &cookies).await.text();
    let fields = [
        ("csrf", hidden(&code_page, "csrf")),
        ("code", code_for(&secret, 1)),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = site
        .post("/.sessiongate/login/code", &cookies, &fields)
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());

    // Removed: the password alone signs in again.
    let remove = "/.sessiongate/account/totp/remove";
    let res = site.post(remove, &session, &[("csrf", &csrf)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    password_session(&site).await;
}

#[tokio::test]
async fn a_totp_secret_in_the_config_wins_over_one_set_up_on_the_page() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let line = format!("state_dir = '{}'", state.path().join("s").display());
    let toml = crate::totp::with_totp(&config_toml(upstream.addr, "", &line));
    let proxy = start_proxy_with(&toml).await;
    let site = Site::of(&proxy);
    let cookie = {
        let pending = crate::totp::password_step(&proxy, "/").await;
        let res = crate::totp::post_code(&proxy, &pending, &crate::totp::code_now()).await;
        crate::totp::signed_in(&res, &proxy, "/")
    };
    let page = site.get("/.sessiongate/account", &cookie).await.text();
    assert!(
        page.contains("Your administrator set up an authenticator app"),
        "{page}"
    );
    assert!(!page.contains("Set up an authenticator app"), "{page}");
    let csrf = hidden(&page, "csrf");
    let res = site
        .post(
            "/.sessiongate/account/totp/start",
            &cookie,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text());
}

#[tokio::test]
async fn auth_passkey_rp_id_shares_passkeys_across_subdomains_and_no_further() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let line = format!("state_dir = '{}'", state.path().join("s").display());
    let toml = config_toml(upstream.addr, "", &line);
    let toml = with_auth(&toml, "passkeys = true\npasskey_rp_id = \"localhost\"");
    let proxy = start_proxy_with(&toml).await;
    let app = Site::named(proxy.addr, "app.localhost");
    let session = password_session(&app).await;
    let mut token = PasskeyToken::new();
    let added = add_passkey(&app, &session, &mut token, "Key").await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text());
    assert_eq!(token.credentials()[0].rp_id, "localhost");

    // Made on app.localhost, it signs in on admin.localhost (origin checked exactly, per host).
    let admin = Site::named(proxy.addr, "admin.localhost");
    let res = passkey_sign_in(&admin, &mut token).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());

    // A host outside the passkey domain gets no challenge, and is told why.
    let outside = Site::named(proxy.addr, "example.test");
    let (signin, csrf, _) = sign_in_page(&outside).await;
    let res = outside
        .post("/.sessiongate/passkey/options", &signin, &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    assert!(
        res.text().contains("not within the passkey domain"),
        "{}",
        res.text()
    );
}
