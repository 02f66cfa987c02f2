//! Signing in with an OpenID Connect provider in the real headless chromium: sessiongate's
//! sign-in page with the password form and a button per provider, the provider's own login
//! page (the real `oidc-provider` the harness in `common::oidc` runs), and back to the page
//! first asked for with the identity and groups the app sees; the page a provider's refusal
//! leads to. Both of sessiongate's pages pass axe-core like every other page a person meets.
//!
//! The browser reaches sessiongate at `http://localhost:PORT` and the provider at
//! `http://127.0.0.1:PORT`: two sites, as in production (two ports on one host would be one
//! site, since a site has no port), so the provider's redirect back to the callback is a
//! cross-site navigation and the test proves the sign-in cookie the attempt is bound to comes
//! back on it (the last test is the control: with `SameSite=Strict` it does not). Chromium
//! counts `localhost` as potentially trustworthy, as it does 127.0.0.1, and keeps the `Secure`
//! session cookie set over plain http.

use std::time::Instant;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::browser_harness::*;
use crate::common::oidc::*;
use crate::common::*;

const SECRET: &str = "client-secret-for-tests";
const PROTECTED: &str = "/reports/q3?x=1";
const LOGIN_PATH: &str = "/.sessiongate/login";

fn accounts() -> Value {
    json!({
        "ann": {"sub": "sub-ann", "email": "ann@example.com", "email_verified": true, "preferred_username": "ann", "groups": ["staff", "ops"]},
    })
}

/// sessiongate's local users (alice), two providers (`corp` first, then `partner`), each a
/// real provider of its own, and the app behind.
struct Setup {
    corp: OidcProvider,
    partner: OidcProvider,
    upstream: Upstream,
    proxy: Proxy,
}

/// `path` on sessiongate as the browser reaches it: by the name `localhost`, another site
/// than the providers' `127.0.0.1` (see the module's comment).
fn at(proxy: &Proxy, path: &str) -> String {
    format!("http://localhost:{}{path}", proxy.addr.port())
}

/// A `[[providers]]` table for `idp` as provider `id`, shown as `name`.
fn provider_table(id: &str, name: &str, idp: &OidcProvider) -> String {
    format!(
        "\n[[providers]]\nid = \"{id}\"\nname = \"{name}\"\nissuer = \"{issuer}\"\nclient_id = \"sessiongate-{id}\"\nclient_secret = \"{SECRET}\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\ngroups_claim = \"groups\"\n",
        issuer = idp.issuer
    )
}

/// The setup with `session` lines added to `[session]`.
/// `strict`: the session cookie's SameSite is set to Strict after the config is read, as the
/// config itself refuses that with providers (this control shows why).
async fn start(strict: bool) -> Setup {
    let (corp, partner) = tokio::join!(
        start_oidc_provider(accounts()),
        start_oidc_provider(accounts())
    );
    let upstream = start_upstream().await;
    let toml = config_toml(
        upstream.addr,
        "",
        &format!(
            "\n{}{}",
            provider_table("corp", "Corp SSO", &corp),
            provider_table("partner", "Partner ID", &partner)
        ),
    );
    let mut config = sessiongate::Config::from_toml(&toml).expect("test config is valid");
    if strict {
        config.session.same_site = sessiongate::config::SameSite::Strict;
    }
    let proxy = start_proxy_from(config).await;
    for (id, idp) in [("corp", &corp), ("partner", &partner)] {
        let callback = at(&proxy, &format!("/.sessiongate/oidc/{id}/callback"));
        idp.register_client(&format!("sessiongate-{id}"), SECRET, &[callback])
            .await;
    }
    discovered(&proxy).await;
    Setup {
        corp,
        partner,
        upstream,
        proxy,
    }
}

/// Waits until every provider of `proxy` is discovered (in the background, after start): a
/// button of one that is not would answer 503.
async fn discovered(proxy: &Proxy) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.app.providers.all().iter().all(|p| p.ready()) {
        let errors: Vec<_> = proxy
            .app
            .providers
            .all()
            .iter()
            .filter_map(|p| p.last_error())
            .collect();
        assert!(
            Instant::now() < deadline,
            "providers never discovered: {errors:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The provider buttons on the sign-in page shown: (text, href), in page order.
async fn provider_buttons(client: &Client) -> Vec<(String, String)> {
    let mut buttons = Vec::new();
    for link in client
        .find_all(Locator::Css("ul.providers a.provider"))
        .await
        .unwrap()
    {
        let text = link.text().await.unwrap();
        let href = link.attr("href").await.unwrap().unwrap_or_default();
        buttons.push((text, href));
    }
    buttons
}

/// Asserts the browser shows sessiongate's sign-in page with the password form and both
/// providers' buttons, which return to `rd` (the buttons' hrefs carry it, as the form does).
async fn assert_sign_in_page(client: &Client, rd: &str) {
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), LOGIN_PATH, "not on the sign-in page: {url}");
    for field in ["username", "password"] {
        client
            .find(Locator::Css(&format!("form input[name={field}]")))
            .await
            .unwrap_or_else(|e| panic!("no {field} field on the sign-in page ({e})"));
    }
    let rd: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    assert_eq!(
        provider_buttons(client).await,
        vec![
            (
                "Sign in with Corp SSO".to_string(),
                format!("/.sessiongate/oidc/corp/start?rd={rd}")
            ),
            (
                "Sign in with Partner ID".to_string(),
                format!("/.sessiongate/oidc/partner/start?rd={rd}")
            ),
        ]
    );
}

/// Clicks the button of provider `name` and waits for that provider's login page.
async fn to_provider(client: &Client, name: &str, idp: &OidcProvider) {
    client
        .find(Locator::LinkText(&format!("Sign in with {name}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &format!("{name}'s login page at {}", idp.issuer),
        || async {
            let url = client.current_url().await.ok()?;
            let ready = client
                .execute("return document.readyState", vec![])
                .await
                .ok()?;
            (url.port() == Some(idp.addr.port())
                && url.path().starts_with("/interaction/")
                && ready == "complete")
                .then_some(())
        },
    )
    .await;
    client
        .find(Locator::Id("login"))
        .await
        .expect("the provider's username field");
}

/// On the provider's login page: signs in as `login`, or (`None`) presses Deny.
async fn at_provider_press(client: &Client, login: Option<&str>) {
    let button = match login {
        Some(login) => {
            let field = client.find(Locator::Id("login")).await.unwrap();
            field.send_keys(login).await.unwrap();
            "signin"
        }
        None => "deny",
    };
    client
        .find(Locator::Id(button))
        .await
        .unwrap_or_else(|e| panic!("no #{button} on the provider's page ({e})"))
        .click()
        .await
        .unwrap();
}

/// Runs axe-core on the page shown in light and in dark, leaving it light.
async fn assert_accessible_both(client: &Client, axe: &str, what: &str) {
    for scheme in ["light", "dark"] {
        color_scheme(client, scheme).await;
        assert_accessible(client, axe, &format!("{what}, {scheme}")).await;
    }
    color_scheme(client, "light").await;
}

/// Local users and two providers: the sign-in page offers the form and both buttons (and
/// passes axe-core); the first button leads to that provider, where ann signs in, and back to
/// the page first asked for, which the app serves to `corp:ann@example.com` in her groups.
#[tokio::test]
async fn a_provider_button_signs_in_and_returns_to_the_page_in_headless_chromium() {
    let started = Instant::now();
    let setup = start(false).await;
    let axe = axe_source();
    in_chromium(|client| async move { sign_in(&client, &setup, &axe).await }).await;
    eprintln!("browser OIDC sign-in took {:?}", started.elapsed());
}

async fn sign_in(client: &Client, setup: &Setup, axe: &str) {
    let Setup {
        corp,
        partner,
        upstream,
        proxy,
    } = setup;
    client.goto(&at(proxy, PROTECTED)).await.unwrap();
    let url = wait_for_path(client, LOGIN_PATH).await;
    assert_eq!(url.host_str(), Some("localhost"), "{url}");
    assert_sign_in_page(client, PROTECTED).await;
    assert_accessible_both(client, axe, "sign-in page with providers").await;
    assert_eq!(upstream.requests(), 0, "nothing reached the app yet");

    to_provider(client, "Corp SSO", corp).await;
    let at_provider = text_of(client, "main").await.unwrap_or_default();
    assert!(
        at_provider.contains("Signing in to sessiongate-corp."),
        "corp's login page, for sessiongate's client there: {at_provider}"
    );
    at_provider_press(client, Some("ann")).await;

    // Back through the callback to the page first asked for, query and all.
    let landed = wait_for_path(client, "/reports/q3").await;
    assert_eq!(landed.as_str(), at(proxy, PROTECTED));
    let echo = page_json(client).await;
    assert_eq!(echo["uri"], PROTECTED);
    assert_eq!(
        upstream_header(&echo, "x-forwarded-user"),
        vec!["corp:ann@example.com"]
    );
    assert_eq!(
        upstream_header(&echo, "x-forwarded-groups"),
        vec!["staff,ops"]
    );
    // Nothing of the provider's tokens reaches the app, nor sessiongate's cookies.
    assert!(upstream_header(&echo, "authorization").is_empty());
    let seen = echo.to_string();
    assert!(!seen.contains("eyJ"), "a JWT reached the app: {seen}");
    assert_eq!(proxy.app.gate.sessions().len(), 1);
    // The browser keeps the session cookie as for a password sign-in.
    assert_session_cookie_kept(client, &echo, proxy.cookie_name()).await;

    // The button led to corp alone: it redeemed one code, partner none.
    assert_eq!(corp.stats().await["token_requests"], 1, "{}", corp.log());
    assert_eq!(partner.stats().await["token_requests"], 0);

    // The session holds: the page again, without going back to the provider.
    client.refresh().await.unwrap();
    wait_for_path(client, "/reports/q3").await;
    assert_eq!(
        upstream_header(&page_json(client).await, "x-forwarded-user"),
        vec!["corp:ann@example.com"]
    );
    assert_eq!(corp.stats().await["token_requests"], 1);
}

/// A person who presses Deny at the provider gets sessiongate's styled error page, saying
/// `access_denied` (and passing axe-core), whose "Back to sign-in" link leads to the sign-in
/// page again; no session, nothing reaches the app.
#[tokio::test]
async fn deny_at_the_provider_shows_the_error_page_and_its_link_back_in_headless_chromium() {
    let setup = start(false).await;
    let axe = axe_source();
    in_chromium(|client| async move { denied(&client, &setup, &axe).await }).await;
}

async fn denied(client: &Client, setup: &Setup, axe: &str) {
    let Setup {
        corp,
        upstream,
        proxy,
        ..
    } = setup;
    client.goto(&at(proxy, PROTECTED)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    to_provider(client, "Corp SSO", corp).await;
    at_provider_press(client, None).await;

    wait_for_path(client, "/.sessiongate/oidc/corp/callback").await;
    assert_eq!(
        text_of(client, "main h1").await.as_deref(),
        Some("Sign-in failed")
    );
    assert_eq!(client.title().await.unwrap(), "Sign-in failed");
    let text = text_of(client, "main").await.unwrap();
    assert!(
        text.contains("Corp SSO did not sign you in: access_denied"),
        "the error page names the provider and its error: {text}"
    );
    assert_accessible_both(client, axe, "provider error page").await;
    assert_eq!(proxy.app.gate.sessions().len(), 0, "no session");
    assert_eq!(upstream.requests(), 0, "nothing reached the app");
    assert_eq!(corp.stats().await["token_requests"], 0, "no code to redeem");

    client
        .find(Locator::LinkText("Back to sign-in"))
        .await
        .expect("the link back to sign-in")
        .click()
        .await
        .unwrap();
    // The link carries the page the sign-in was for, so trying again still ends there.
    wait_for_path(client, LOGIN_PATH).await;
    assert_sign_in_page(client, PROTECTED).await;
    assert!(
        client.find(Locator::Css("p.error")).await.is_err(),
        "a fresh sign-in page"
    );
}

/// The control for the module's claim that the way back from the provider is cross-site here:
/// with `session.same_site = "strict"`, which the config refuses with providers, chromium
/// leaves the sign-in cookie off the callback, so the attempt is not this browser's and the
/// person is told to sign in again. (On one site the sign-in would go through.)
#[tokio::test]
async fn with_same_site_strict_the_callback_lacks_the_sign_in_cookie_in_headless_chromium() {
    let setup = start(true).await;
    in_chromium(|client| async move { strict(&client, &setup).await }).await;
}

async fn strict(client: &Client, setup: &Setup) {
    let Setup {
        corp,
        upstream,
        proxy,
        ..
    } = setup;
    client.goto(&at(proxy, PROTECTED)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    to_provider(client, "Corp SSO", corp).await;
    at_provider_press(client, Some("ann")).await;
    wait_for_path(client, "/.sessiongate/oidc/corp/callback").await;
    let error = text_of(client, "p.error[role=alert]").await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("sign in again")),
        "told to sign in again: {error:?}"
    );
    assert_eq!(proxy.app.gate.sessions().len(), 0, "no session");
    assert_eq!(upstream.requests(), 0);
    assert_eq!(corp.stats().await["token_requests"], 0, "no code redeemed");
}
