//! Passkeys in a real browser: headless chromium with a virtual authenticator (WebDriver's
//! WebAuthn extension) standing in for the device's screen lock, against sessiongate with
//! passkeys on and the echo upstream.
//!
//! It proves what the raw-HTTP tests in `passkeys` cannot: that `passkey.js` and the pages
//! work together in a browser that enforces WebAuthn's rules itself. A passkey added on the
//! account page is a discoverable credential, it signs in from the sign-in page's button
//! with no username typed, and once removed it is refused. The pages pass axe-core.
//!
//! The browser is on `http://localhost:PORT`: chromium refuses WebAuthn on a bare IP address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::browser_harness::*;
use crate::common::*;
use fantoccini::{Client, Locator};
use serde_json::json;

const LOGIN_PATH: &str = "/.sessiongate/login";
const LOGOUT_PATH: &str = "/.sessiongate/logout";
const ACCOUNT_PATH: &str = "/.sessiongate/account";
/// A page of the app behind the gate.
const APP_PATH: &str = "/reports";
const SIGN_IN_FORM: &str = "form[data-passkey='sign-in']";
const ADD_FORM: &str = "form[data-passkey='add']";

/// Passkeys on, kept in `state`; `extra` is appended (more tables).
fn passkey_toml(upstream: SocketAddr, state: &Path, extra: &str) -> String {
    let toml = config_toml(upstream, "", &format!("state_dir = '{}'", state.display()));
    format!("{}\n{extra}", with_auth(&toml, "passkeys = true"))
}

/// `path` on the proxy as the browser reaches it: by name, not by address.
fn local(proxy: &Proxy, path: &str) -> String {
    format!("http://localhost:{}{path}", proxy.addr.port())
}

/// Waits until the element `css` is shown: the passkey forms stay hidden until the deferred
/// script has run.
async fn wait_shown(client: &Client, css: &str) -> fantoccini::elements::Element {
    wait_until(&format!("{css} shown"), || async {
        let element = client.find(Locator::Css(css)).await.ok()?;
        element.is_displayed().await.ok()?.then_some(element)
    })
    .await
}

/// The texts of the page's shown error messages (the server's and the script's).
async fn shown_errors(client: &Client) -> Option<Vec<String>> {
    let errors = client
        .execute(
            "return Array.from(document.querySelectorAll('p.error'))
                 .filter(p => !p.hidden).map(p => p.textContent);",
            vec![],
        )
        .await
        .ok()?;
    serde_json::from_value(errors).ok()
}

/// Opens the app's page, signs alice in with her password as a person types it, and opens
/// the account page.
async fn password_sign_in_to_account(client: &Client, proxy: &Proxy) {
    client.goto(&local(proxy, ACCOUNT_PATH)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    for (name, value) in [("username", USER), ("password", PASSWORD)] {
        let input = client
            .find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap();
        input.send_keys(value).await.unwrap();
    }
    client
        .find(Locator::Css("form:not([data-passkey]) button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(client, ACCOUNT_PATH).await;
}

/// The rows of the passkey table as their cells' text, `None` while the page is replaced.
async fn passkey_rows(client: &Client) -> Option<Vec<Vec<String>>> {
    if client.current_url().await.ok()?.path() != ACCOUNT_PATH {
        return None;
    }
    let mut rows = Vec::new();
    for row in client.find_all(Locator::Css("tbody tr")).await.ok()? {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.ok()? {
            cells.push(cell.text().await.ok()?);
        }
        rows.push(cells);
    }
    Some(rows)
}

/// On the account page: types `name`, clicks "Add a passkey" and waits for the page to list
/// it; fails at once with the page's error if one shows. The rows then.
async fn add_passkey(client: &Client, name: &str) -> Vec<Vec<String>> {
    wait_shown(client, ADD_FORM).await;
    let input = client.find(Locator::Css("#passkey-name")).await.unwrap();
    input.send_keys(name).await.unwrap();
    let button = client
        .find(Locator::Css(&format!("{ADD_FORM} button[type=submit]")))
        .await
        .unwrap();
    assert_eq!(button.text().await.unwrap(), "Add a passkey");
    button.click().await.unwrap();
    wait_until(&format!("the account page listing {name}"), || async {
        if let Some(errors) = shown_errors(client).await.filter(|e| !e.is_empty()) {
            panic!("adding the passkey failed: {errors:?}");
        }
        let rows = passkey_rows(client).await?;
        rows.iter().any(|r| r[0] == name).then_some(rows)
    })
    .await
}

/// Signs out with a same-origin form post, as a page's sign-out button does.
async fn sign_out(client: &Client) {
    client
        .execute(
            "const f = document.createElement('form');
             f.method = 'post';
             f.action = arguments[0];
             document.body.appendChild(f);
             f.submit();",
            vec![json!(LOGOUT_PATH)],
        )
        .await
        .unwrap();
    wait_for_path(client, LOGIN_PATH).await;
}

/// Signs out with a script's same-origin POST, staying on the page: a sign-in page loaded
/// now would sign in again by itself (see [`NO_AUTOFILL`]).
async fn sign_out_in_place(client: &Client, proxy: &Proxy) {
    let status = client
        .execute(
            "return fetch(arguments[0], { method: 'POST', redirect: 'manual' }).then(r => r.type)",
            vec![json!(LOGOUT_PATH)],
        )
        .await
        .unwrap();
    assert_eq!(status, "opaqueredirect", "the sign-out's redirect");
    assert_eq!(proxy.app.gate.sessions().len(), 0, "signed out");
}

/// Makes the pages see a browser that offers no passkeys in a field's autofill. The virtual
/// authenticator answers such an offer at once, unlike a person, who picks the passkey first:
/// with it, every sign-in page would sign in on its own before its button could be clicked.
const NO_AUTOFILL: &str =
    "PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);";

/// The browser shows the app's page as alice, holding the session cookie the app never sees.
async fn assert_signed_in_as_alice(client: &Client, proxy: &Proxy) {
    let echo = page_json(client).await;
    assert_eq!(upstream_header(&echo, "x-forwarded-user"), vec![USER]);
    assert_session_cookie_kept(client, &echo, proxy.cookie_name()).await;
    assert_eq!(proxy.app.gate.sessions().len(), 1);
}

/// Opens the app's page signed out, which shows the sign-in page, and clicks "Sign in with a
/// passkey" without typing anything.
async fn click_passkey_sign_in(client: &Client, proxy: &Proxy) {
    client.goto(&local(proxy, APP_PATH)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    wait_shown(client, SIGN_IN_FORM).await;
    let button = client
        .find(Locator::Css(&format!("{SIGN_IN_FORM} button[type=submit]")))
        .await
        .unwrap();
    assert_eq!(button.text().await.unwrap(), "Sign in with a passkey");
    button.click().await.unwrap();
}

#[tokio::test]
async fn a_passkey_enrolled_on_the_account_page_signs_in_alone_and_is_removed_in_headless_chromium()
{
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_with(&passkey_toml(upstream.addr, &state.path().join("s"), "")).await;
    in_chromium(|client| async move { enrol_sign_in_remove(&client, &proxy).await }).await;
}

async fn enrol_sign_in_remove(client: &Client, proxy: &Proxy) {
    let authenticator = add_virtual_authenticator(client).await;
    password_sign_in_to_account(client, proxy).await;
    assert_eq!(text_of(client, "h1").await.as_deref(), Some("Your account"));
    let rows = add_passkey(client, "Work laptop").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][2], "never", "not used yet: {rows:?}");

    // The browser made a discoverable credential for this site: what lets it sign in with
    // no username.
    let credentials = credentials_of(client, &authenticator).await;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(
        credentials[0]["isResidentCredential"], true,
        "{credentials:?}"
    );
    assert_eq!(credentials[0]["rpId"], "localhost", "{credentials:?}");

    // The virtual authenticator answers the username field's autofill (conditional
    // mediation) at once, as a person picking the passkey there would: the sign-in page signs
    // in by itself, with nothing typed or clicked.
    sign_out_in_place(client, proxy).await;
    client.goto(&local(proxy, APP_PATH)).await.unwrap();
    wait_for_path(client, APP_PATH).await;
    assert_signed_in_as_alice(client, proxy).await;

    // The button, in a browser without that autofill: the sign-in page waits for the click.
    before_every_page(client, NO_AUTOFILL).await;
    sign_out(client).await;
    assert_eq!(proxy.app.gate.sessions().len(), 0, "signed out");
    let autofill = client
        .execute(
            "return PublicKeyCredential.isConditionalMediationAvailable()",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(autofill, false, "the autofill is off on this sign-in page");
    let username = client.find(Locator::Css("input[name=username]")).await;
    let autocomplete = username.unwrap().attr("autocomplete").await.unwrap();
    assert_eq!(autocomplete.as_deref(), Some("username webauthn"));
    click_passkey_sign_in(client, proxy).await;
    wait_for_path(client, APP_PATH).await;
    assert_signed_in_as_alice(client, proxy).await;

    client.goto(&local(proxy, ACCOUNT_PATH)).await.unwrap();
    wait_for_path(client, ACCOUNT_PATH).await;
    let rows = passkey_rows(client).await.unwrap();
    assert_ne!(rows[0][2], "never", "its use recorded: {rows:?}");
    client
        .find(Locator::Css(
            "button[aria-label='Remove the passkey Work laptop']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the account page without the passkey", || async {
        let rows = passkey_rows(client).await?;
        let empty = text_of(client, "main").await?;
        (rows.is_empty() && empty.contains("You have no passkeys yet.")).then_some(())
    })
    .await;

    // The authenticator still offers it; the server no longer knows it.
    sign_out(client).await;
    click_passkey_sign_in(client, proxy).await;
    let errors = wait_until("the sign-in page's error", || async {
        shown_errors(client).await.filter(|e| !e.is_empty())
    })
    .await;
    assert!(
        errors.iter().any(|e| e.contains("not registered here")),
        "{errors:?}"
    );
    assert_eq!(proxy.app.gate.sessions().len(), 0, "no session");
}

#[tokio::test]
async fn the_account_page_and_the_passkey_sign_in_page_pass_axe_core_in_light_and_dark() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_with(&passkey_toml(upstream.addr, &state.path().join("s"), "")).await;
    let axe = axe_source();
    in_chromium(|client| async move {
        add_virtual_authenticator(&client).await;
        client.goto(&local(&proxy, LOGIN_PATH)).await.unwrap();
        wait_for_path(&client, LOGIN_PATH).await;
        wait_shown(&client, SIGN_IN_FORM).await;
        in_both_schemes(&client, &axe, "sign-in page with passkeys").await;

        password_sign_in_to_account(&client, &proxy).await;
        wait_shown(&client, ADD_FORM).await;
        in_both_schemes(&client, &axe, "account page, no passkeys").await;
        add_passkey(&client, "Work laptop").await;
        wait_shown(&client, ADD_FORM).await;
        in_both_schemes(&client, &axe, "account page with a passkey").await;
    })
    .await;
}

/// The page shown passes axe-core in light and in dark; left light.
async fn in_both_schemes(client: &Client, axe: &str, what: &str) {
    for scheme in ["dark", "light"] {
        color_scheme(client, scheme).await;
        assert_accessible(client, axe, &format!("{what}, {scheme}")).await;
    }
}

/// Writes docs/account-{light,dark}{,-360}.png: the account page with one passkey, at 1280 x
/// 800 and 360 px wide. Run with
/// `SESSIONGATE_SCREENSHOTS=1 cargo test --test it browser_passkeys:: -- --ignored`.
#[tokio::test]
#[ignore = "writes the README's screenshots; run with SESSIONGATE_SCREENSHOTS=1"]
async fn screenshots_of_the_account_page() {
    if std::env::var_os("SESSIONGATE_SCREENSHOTS").is_none() {
        return;
    }
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let brand = "[login_page]\napp_name = \"Grafana\"\naccent_color = \"#f46800\"\n";
    let proxy =
        start_proxy_with(&passkey_toml(upstream.addr, &state.path().join("s"), brand)).await;
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    in_chromium(|client| async move {
        add_virtual_authenticator(&client).await;
        password_sign_in_to_account(&client, &proxy).await;
        add_passkey(&client, "Work laptop").await;
        for (scheme, width, height, suffix) in [
            ("light", 1280, 800, ""),
            ("dark", 1280, 800, ""),
            ("light", 360, 740, "-360"),
            ("dark", 360, 740, "-360"),
        ] {
            color_scheme(&client, scheme).await;
            viewport(&client, width, height).await;
            client.goto(&local(&proxy, ACCOUNT_PATH)).await.unwrap();
            wait_for_path(&client, ACCOUNT_PATH).await;
            wait_shown(&client, ADD_FORM).await;
            let png = client.screenshot().await.unwrap();
            std::fs::write(docs.join(format!("account-{scheme}{suffix}.png")), png).unwrap();
        }
    })
    .await;
}
