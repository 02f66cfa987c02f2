//! Signing in with OpenID Connect providers, against the real `oidc-provider` (npm) the
//! harness runs: the whole code flow, the identity the app and the rules see, the state and
//! ID-token checks with tokens broken on purpose, provider errors and outages.

use serde_json::{Value, json};

use crate::common::oidc::*;
use crate::common::*;

pub(crate) const CLIENT_SECRET: &str = "client-secret-for-tests";

pub(crate) fn accounts() -> Value {
    json!({
        "ann": {"sub": "sub-ann", "email": "ann@example.com", "email_verified": true, "preferred_username": "ann", "groups": ["staff"]},
        "bob": {"sub": "sub-bob", "email": "bob@example.com", "email_verified": true, "preferred_username": "bob"},
        "eve": {"sub": "sub-eve", "email": "eve@example.com", "email_verified": false, "preferred_username": "alice"},
    })
}

/// A `[[providers]]` table for `idp` as provider `id`, with `extra` lines.
pub(crate) fn provider_table(id: &str, idp: &OidcProvider, extra: &str) -> String {
    format!(
        "\n[[providers]]\nid = \"{id}\"\nname = \"{id} SSO\"\nissuer = \"{issuer}\"\nclient_id = \"sessiongate-{id}\"\nclient_secret = \"{CLIENT_SECRET}\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\ngroups_claim = \"groups\"\n{extra}\n",
        issuer = idp.issuer
    )
}

/// The callback of provider `id` on `proxy`, registered at `idp` as its client.
pub(crate) async fn register(idp: &OidcProvider, proxy: &Proxy, id: &str) {
    let callback = proxy.url(&format!("/.sessiongate/oidc/{id}/callback"));
    idp.register_client(&format!("sessiongate-{id}"), CLIENT_SECRET, &[callback])
        .await;
}

/// One provider `corp` on `idp`, with local users too, and `rules` (TOML) after it.
pub(crate) async fn start_corp(idp: &OidcProvider, extra: &str, rules: &str) -> (Upstream, Proxy) {
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &format!("{}{rules}", provider_table("corp", idp, extra)),
    );
    let proxy = start_proxy_with(&toml).await;
    register(idp, &proxy, "corp").await;
    discovered(&proxy).await;
    (upstream, proxy)
}

/// Waits until every provider of `proxy` is discovered (in the background, after start).
pub(crate) async fn discovered(proxy: &Proxy) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.app.providers.all().iter().all(|p| p.ready()) {
        let errors: Vec<_> = proxy
            .app
            .providers
            .all()
            .iter()
            .filter_map(|p| p.last_error())
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "providers never discovered: {errors:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) fn location(res: &Resp) -> String {
    res.header("location")
        .unwrap_or_else(|| panic!("no Location in {:?}: {}", res.status, res.text()))
        .to_string()
}

/// Starts a sign-in with provider `id` in `jar`, returning the provider's authorization URL.
pub(crate) async fn start_attempt(jar: &mut Jar, proxy: &Proxy, id: &str, rd: &str) -> String {
    let rd: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let res = jar
        .get_url(&proxy.url(&format!("/.sessiongate/oidc/{id}/start?rd={rd}")))
        .await;
    assert_eq!(res.status, 303, "{}", res.text());
    location(&res)
}

/// Signs `login` in with provider `id`: the callback's answer.
pub(crate) async fn sign_in(jar: &mut Jar, proxy: &Proxy, id: &str, login: &str, rd: &str) -> Resp {
    let authorize = start_attempt(jar, proxy, id, rd).await;
    let callback = provider_login(jar, &authorize, login).await;
    jar.get_url(&callback).await
}

pub(crate) fn has_session(res: &Resp, proxy: &Proxy) -> bool {
    res.set_cookies()
        .iter()
        .any(|c| c.starts_with(&format!("{}=", proxy.cookie_name())) && !c.contains("Max-Age=0"))
}

#[tokio::test]
async fn a_provider_user_signs_in_and_the_app_sees_who_and_which_groups() {
    let idp = start_oidc_provider(accounts()).await;
    let rules = "\n[[rules]]\npath = \"/staff\"\nallow = [\"group:staff\"]\n[[rules]]\npath = \"/ann\"\nallow = [\"corp:ann@example.com\"]\n";
    let (_upstream, proxy) = start_corp(&idp, "", rules).await;

    let mut jar = Jar::new();
    let res = sign_in(&mut jar, &proxy, "corp", "ann", "/staff/page?x=1").await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(location(&res), "/staff/page?x=1");
    assert!(has_session(&res, &proxy));

    let app = jar.get_url(&proxy.url("/staff/page?x=1")).await;
    assert_eq!(app.status, 200, "{}", app.text());
    assert_eq!(
        app.upstream_header("x-forwarded-user"),
        ["corp:ann@example.com"]
    );
    assert_eq!(app.upstream_header("x-forwarded-groups"), ["staff"]);
    // Nothing of the provider's tokens reaches the app.
    assert!(app.upstream_header("authorization").is_empty());
    assert!(
        !app.text().contains("eyJ"),
        "a JWT reached the app: {}",
        app.text()
    );
    assert_eq!(jar.get_url(&proxy.url("/ann")).await.status, 200);

    // bob is not in staff, and not ann.
    let mut bob = Jar::new();
    let res = sign_in(&mut bob, &proxy, "corp", "bob", "/").await;
    assert_eq!(res.status, 303, "{}", res.text());
    let page = bob.get_url(&proxy.url("/")).await;
    assert_eq!(
        page.upstream_header("x-forwarded-user"),
        ["corp:bob@example.com"]
    );
    assert_eq!(bob.get_url(&proxy.url("/staff/x")).await.status, 403);
    assert_eq!(bob.get_url(&proxy.url("/ann")).await.status, 403);
}

#[tokio::test]
async fn the_sign_in_page_offers_both_and_auto_redirect_needs_one_way_in() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;
    let page = get(proxy.addr, "/.sessiongate/login?rd=/x", &[BROWSER]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("name=\"password\""), "{html}");
    assert!(html.contains("Sign in with corp SSO"), "{html}");
    assert!(
        html.contains("/.sessiongate/oidc/corp/start?rd=%2Fx"),
        "{html}"
    );

    // No [[users]] and one provider: straight to it.
    let upstream = start_upstream().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[session]\nsecret = \"{}\"\n{}",
        upstream.addr,
        "s".repeat(64),
        provider_table("corp", &idp, "")
    );
    let only = start_proxy_with(&toml).await;
    discovered(&only).await;
    let res = get(only.addr, "/.sessiongate/login?rd=/x", &[BROWSER]).await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(location(&res), "/.sessiongate/oidc/corp/start?rd=%2Fx");
    // Not after signing out: that would sign them in again at once.
    let res = get(only.addr, "/.sessiongate/login?signed_out=1", &[BROWSER]).await;
    assert_eq!(res.status, 200);
    assert!(!res.text().contains("name=\"password\""));
}

#[tokio::test]
async fn a_state_is_used_once_by_the_browser_that_started_it() {
    let idp = start_oidc_provider(accounts()).await;
    let (upstream, proxy) = start_corp(&idp, "", "").await;

    // Another browser brings ann's callback: refused, and the attempt is gone.
    let mut ann = Jar::new();
    let authorize = start_attempt(&mut ann, &proxy, "corp", "/").await;
    let callback = provider_login(&mut ann, &authorize, "ann").await;
    let mut other = Jar::new();
    other.get_url(&proxy.url("/.sessiongate/login")).await;
    let res = other.get_url(&callback).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("sign in again"), "{}", res.text());
    assert!(!has_session(&res, &proxy));

    // The right browser, once: then the same callback again is refused.
    let authorize = start_attempt(&mut ann, &proxy, "corp", "/").await;
    let callback = provider_login(&mut ann, &authorize, "ann").await;
    assert!(has_session(&ann.get_url(&callback).await, &proxy));
    let again = ann.get_url(&callback).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(!has_session(&again, &proxy));

    // No state, a made-up one, and another provider's callback path.
    for path in [
        "/.sessiongate/oidc/corp/callback?code=x",
        "/.sessiongate/oidc/corp/callback?code=x&state=made-up",
    ] {
        let res = ann.get_url(&proxy.url(path)).await;
        assert_eq!(res.status, 400, "{path}: {}", res.text());
    }
    let res = ann
        .get_url(&proxy.url("/.sessiongate/oidc/nope/callback?code=x&state=y"))
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_response_meant_for_another_issuer_is_refused() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;
    let mut jar = Jar::new();
    let authorize = start_attempt(&mut jar, &proxy, "corp", "/").await;
    let callback = provider_login(&mut jar, &authorize, "ann").await;
    let mut url = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://evil.example.com".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let res = jar.get_url(url.as_str()).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.text().contains("another issuer"), "{}", res.text());
    assert!(!has_session(&res, &proxy));
}

#[tokio::test]
async fn every_broken_id_token_is_refused() {
    let idp = start_oidc_provider(accounts()).await;
    let (upstream, proxy) = start_corp(&idp, "", "").await;
    // A key the provider starts publishing (a rotation) is fetched and accepted. First: the
    // key set is fetched again at most every 30 s, and unknown-kid below asks for that too.
    idp.tamper("rotated-key").await;
    let mut jar = Jar::new();
    let res = sign_in(&mut jar, &proxy, "corp", "ann", "/").await;
    assert_eq!(res.status, 303, "rotated-key: {}", res.text());
    assert!(has_session(&res, &proxy));
    for mode in [
        "bad-signature",
        "alg-none",
        "hs256-public-key",
        "hs256-client-secret",
        "unknown-kid",
        "wrong-iss",
        "wrong-aud",
        "extra-aud-no-azp",
        "wrong-azp",
        "expired",
        "iat-future",
        "wrong-nonce",
        "no-nonce",
        "no-sub",
    ] {
        idp.tamper(mode).await;
        let mut jar = Jar::new();
        let res = sign_in(&mut jar, &proxy, "corp", "ann", "/").await;
        assert_eq!(res.status, 403, "{mode}: {}", res.text());
        assert!(!has_session(&res, &proxy), "{mode}");
        assert!(res.text().contains("failed"), "{mode}: {}", res.text());
    }
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn emails_and_the_allowed_lists_decide_who_gets_in() {
    let idp = start_oidc_provider(accounts()).await;
    let extra = "allowed_domains = [\"example.com\"]\n";
    let (_upstream, proxy) = start_corp(&idp, extra, "").await;
    // An unverified email is refused whenever it names the user.
    let mut jar = Jar::new();
    let res = sign_in(&mut jar, &proxy, "corp", "eve", "/").await;
    assert_eq!(res.status, 403);
    assert!(res.text().contains("not verified"), "{}", res.text());
    for email in [
        "a@evil.com@example.com",
        "a@example.com.evil.com",
        "\"a\"@example.com",
        "a b@example.com",
    ] {
        idp.tamper_claims(json!({"email": email, "email_verified": true}))
            .await;
        let mut jar = Jar::new();
        let res = sign_in(&mut jar, &proxy, "corp", "ann", "/").await;
        assert_eq!(res.status, 403, "{email}: {}", res.text());
        assert!(!has_session(&res, &proxy), "{email}");
    }
    idp.tamper("off").await;
    let mut jar = Jar::new();
    assert!(has_session(
        &sign_in(&mut jar, &proxy, "corp", "ann", "/").await,
        &proxy
    ));
}

#[tokio::test]
async fn a_provider_error_is_shown_as_text() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;
    let mut jar = Jar::new();
    let authorize = start_attempt(&mut jar, &proxy, "corp", "/").await;
    let callback = provider_deny(&mut jar, &authorize).await;
    let res = jar.get_url(&callback).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.text().contains("access_denied"), "{}", res.text());
    assert!(
        res.text().contains("<html"),
        "a styled page: {}",
        res.text()
    );
}

#[tokio::test]
async fn concurrent_sign_ins_never_swap_identities() {
    let idp = start_oidc_provider(accounts()).await;
    let (_upstream, proxy) = start_corp(&idp, "", "").await;
    let mut ann = Jar::new();
    let mut bob = Jar::new();
    // Both at the provider at once; the callbacks come back in the other order.
    let a = start_attempt(&mut ann, &proxy, "corp", "/").await;
    let b = start_attempt(&mut bob, &proxy, "corp", "/").await;
    let (ca, cb) = tokio::join!(
        provider_login(&mut ann, &a, "ann"),
        provider_login(&mut bob, &b, "bob")
    );
    let (rb, ra) = tokio::join!(bob.get_url(&cb), ann.get_url(&ca));
    assert!(has_session(&ra, &proxy) && has_session(&rb, &proxy));
    let who = |r: Resp| r.upstream_header("x-forwarded-user");
    assert_eq!(
        who(ann.get_url(&proxy.url("/")).await),
        ["corp:ann@example.com"]
    );
    assert_eq!(
        who(bob.get_url(&proxy.url("/")).await),
        ["corp:bob@example.com"]
    );
}

#[tokio::test]
async fn a_provider_down_at_start_answers_503_until_it_is_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let upstream = start_upstream().await;
    let table = format!(
        "\n[[providers]]\nid = \"corp\"\nname = \"Corp\"\nissuer = \"{issuer}\"\nclient_id = \"sessiongate-corp\"\nclient_secret = \"{CLIENT_SECRET}\"\n"
    );
    let proxy = start_proxy_with(&config_toml(upstream.addr, "", &table)).await;
    let res = get(proxy.addr, "/.sessiongate/oidc/corp/start", &[BROWSER]).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.text().contains("Corp sign-in is unavailable right now"),
        "{}",
        res.text()
    );
    assert!(res.header("retry-after").is_some());

    let idp = start_oidc_provider_on(port, accounts()).await;
    register(&idp, &proxy, "corp").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let res = get(proxy.addr, "/.sessiongate/oidc/corp/start", &[BROWSER]).await;
        if res.status == 303 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never discovered: {}",
            res.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut jar = Jar::new();
    assert!(has_session(
        &sign_in(&mut jar, &proxy, "corp", "ann", "/").await,
        &proxy
    ));
}

#[tokio::test]
async fn a_provider_name_cannot_become_a_local_user() {
    // eve's preferred_username at the provider is "alice", the local user's name.
    let idp = start_oidc_provider(accounts()).await;
    let extra = "username_claim = \"preferred_username\"\n";
    let rules = format!("\n[[rules]]\npath = \"/alice\"\nallow = [\"{USER}\"]\n");
    let (_upstream, proxy) = start_corp(&idp, extra, &rules).await;
    let mut jar = Jar::new();
    assert!(has_session(
        &sign_in(&mut jar, &proxy, "corp", "eve", "/").await,
        &proxy
    ));
    let page = jar.get_url(&proxy.url("/")).await;
    assert_eq!(page.upstream_header("x-forwarded-user"), ["corp:alice"]);
    assert_eq!(jar.get_url(&proxy.url("/alice")).await.status, 403);

    // And a local name that looks like a provider's user is refused at load.
    let upstream = start_upstream().await;
    let toml = config_toml(upstream.addr, "", &provider_table("corp", &idp, ""))
        .replace(&format!("name = \"{USER}\""), "name = \"corp:alice\"");
    let err = sessiongate::Config::from_toml(&toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("users[0].name") && err.contains("corp"),
        "{err}"
    );
}
