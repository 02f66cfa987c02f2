//! Passkeys in a real browser: headless chromium with a virtual authenticator (WebDriver's
//! WebAuthn extension) standing in for the device's screen lock, against sessiongate with
//! passkeys on and the echo upstream.
//!
//! It proves what the raw-HTTP tests in `passkeys` cannot: that `passkey.js` and the pages
//! work together in a browser that enforces WebAuthn's rules itself. A passkey added on the
//! account page is a discoverable credential, it signs in from the sign-in page's button
//! with no username typed, it serves as the second step after the password, and once removed
//! it is refused. An authenticator app set up on the account page (its QR code shown, one
//! code confirming it) is asked for after the password. The pages pass axe-core.
//!
//! The browser is on `http://localhost:PORT`: chromium refuses WebAuthn on a bare IP address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::browser_harness::*;
use crate::common::*;
use fantoccini::{Client, Locator};
use serde_json::json;
use sessiongate::credentials::totp::{TotpSecret, unix_now};

const LOGIN_PATH: &str = "/.sessiongate/login";
const LOGOUT_PATH: &str = "/.sessiongate/logout";
const ACCOUNT_PATH: &str = "/.sessiongate/account";
/// A page of the app behind the gate.
const APP_PATH: &str = "/reports";
/// The second step of a sign-in, after the password.
const CODE_PATH: &str = "/.sessiongate/login/code";
/// Where "Set up an authenticator app" posts; the set-up is shown at this address.
const TOTP_START_PATH: &str = "/.sessiongate/account/totp/start";
const SIGN_IN_FORM: &str = "form[data-passkey='sign-in']";
const ADD_FORM: &str = "form[data-passkey='add']";
/// The code page's passkey form.
const SECOND_FORM: &str = "form[data-passkey='second']";

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

/// Opens `path` signed out, which shows the sign-in page, types alice's username and
/// password as a person does and clicks "Sign in"; where that leads is the caller's to wait
/// for.
async fn type_password(client: &Client, proxy: &Proxy, path: &str) {
    client.goto(&local(proxy, path)).await.unwrap();
    wait_for_path(client, LOGIN_PATH).await;
    for (name, value) in [("username", USER), ("password", PASSWORD)] {
        let input = client
            .find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap();
        input.send_keys(value).await.unwrap();
    }
    click(
        client,
        "form:not([data-passkey]) button[type=submit]",
        "Sign in",
    )
    .await;
}

/// Opens the account page, signs alice in with her password as a person types it, and waits
/// for the account page.
async fn password_sign_in_to_account(client: &Client, proxy: &Proxy) {
    type_password(client, proxy, ACCOUNT_PATH).await;
    wait_for_path(client, ACCOUNT_PATH).await;
}

/// Clicks the button `css`, which must say `label`.
async fn click(client: &Client, css: &str, label: &str) {
    let button = client.find(Locator::Css(css)).await.unwrap();
    assert_eq!(button.text().await.unwrap(), label, "the button {css}");
    button.click().await.unwrap();
}

/// Like [`wait_for_path`], but fails at once with the page's error if one shows: a refused
/// code or passkey answers with its page again, not with the awaited one.
async fn reach(client: &Client, path: &str) {
    wait_until(&format!("the browser reaching {path}"), || async {
        if let Some(errors) = shown_errors(client).await.filter(|e| !e.is_empty()) {
            panic!("an error instead of {path}: {errors:?}");
        }
        let url = client.current_url().await.ok()?;
        let ready = client
            .execute("return document.readyState", vec![])
            .await
            .ok()?;
        (url.path() == path && ready == "complete").then_some(())
    })
    .await;
}

/// Whether the page has an element `css` (present, shown or not).
async fn has(client: &Client, css: &str) -> bool {
    !client.find_all(Locator::Css(css)).await.unwrap().is_empty()
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
    let button = format!("{ADD_FORM} button[type=submit]");
    click(client, &button, "Add a passkey").await;
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

/// Clicks the account page's "Sign out" button.
async fn click_sign_out(client: &Client) {
    let button = format!("form[action='{LOGOUT_PATH}'] button[type=submit]");
    click(client, &button, "Sign out").await;
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
    let button = format!("{SIGN_IN_FORM} button[type=submit]");
    click(client, &button, "Sign in with a passkey").await;
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
async fn password_then_a_passkey_as_the_second_factor_in_headless_chromium() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_with(&passkey_toml(upstream.addr, &state.path().join("s"), "")).await;
    let axe = axe_source();
    in_chromium(|client| async move {
        add_virtual_authenticator(&client).await;
        // Once she has a passkey, the sign-in page would sign in with it by itself before
        // the password is typed.
        before_every_page(&client, NO_AUTOFILL).await;
        password_sign_in_to_account(&client, &proxy).await;
        add_passkey(&client, "Work laptop").await;
        click_sign_out(&client).await;

        type_password(&client, &proxy, APP_PATH).await;
        wait_for_path(&client, CODE_PATH).await;
        assert_eq!(
            upstream.requests(),
            0,
            "nothing reaches the app after the password"
        );
        let title = text_of(&client, "h1").await;
        assert_eq!(title.as_deref(), Some("Confirm it is you"));
        assert!(
            !has(&client, "#code").await,
            "a code field with no authenticator app"
        );
        wait_shown(&client, SECOND_FORM).await;
        in_both_schemes(&client, &axe, "code page offering a passkey").await;
        let button = format!("{SECOND_FORM} button[type=submit]");
        click(&client, &button, "Use a passkey").await;
        reach(&client, APP_PATH).await;
        assert_signed_in_as_alice(&client, &proxy).await;

        client.goto(&local(&proxy, ACCOUNT_PATH)).await.unwrap();
        wait_for_path(&client, ACCOUNT_PATH).await;
        let rows = passkey_rows(&client).await.unwrap();
        assert_ne!(rows[0][2], "never", "its use recorded: {rows:?}");
    })
    .await;
}

#[tokio::test]
async fn an_authenticator_app_set_up_from_the_account_page_in_headless_chromium() {
    let upstream = start_upstream().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy_with(&passkey_toml(upstream.addr, &state.path().join("s"), "")).await;
    let axe = axe_source();
    in_chromium(|client| async move {
        password_sign_in_to_account(&client, &proxy).await;
        let secret = start_totp_setup(&client).await;
        in_both_schemes(
            &client,
            &axe,
            "account page setting up an authenticator app",
        )
        .await;
        confirm_totp_setup(&client, &secret).await;
        click_sign_out(&client).await;

        type_password(&client, &proxy, APP_PATH).await;
        wait_for_path(&client, CODE_PATH).await;
        assert_eq!(
            upstream.requests(),
            0,
            "nothing reaches the app after the password"
        );
        let title = text_of(&client, "h1").await;
        assert_eq!(title.as_deref(), Some("Enter your code"));
        assert!(
            !has(&client, SECOND_FORM).await,
            "a passkey offered with none"
        );
        // The confirming code's step is used up: the next step's code, which the one step of
        // skew accepts.
        let code = secret.code_at(unix_now() + 30);
        let input = client.find(Locator::Css("#code")).await.unwrap();
        input.send_keys(&code).await.unwrap();
        click(&client, "form button[type=submit]", "Continue").await;
        reach(&client, APP_PATH).await;
        assert_signed_in_as_alice(&client, &proxy).await;
    })
    .await;
}

/// On the account page: clicks "Set up an authenticator app" and waits for the set-up, its
/// QR code drawn. The key it shows.
async fn start_totp_setup(client: &Client) -> TotpSecret {
    let button = "form[action$='/account/totp/start'] button[type=submit]";
    click(client, button, "Set up an authenticator app").await;
    reach(client, TOTP_START_PATH).await;
    let key = text_of(client, "code.secret").await.expect("the key shown");
    let secret = TotpSecret::from_base32(&key).unwrap_or_else(|e| panic!("the key shown: {e}"));
    let qr = client.find(Locator::Css("img.qr")).await.unwrap();
    assert!(qr.is_displayed().await.unwrap(), "the QR code is shown");
    wait_until("the QR code drawn", || async {
        let width = client
            .execute(
                "const img = document.querySelector('img.qr');
                 return img.complete ? img.naturalWidth : 0;",
                vec![],
            )
            .await
            .ok()?;
        (width.as_u64()? > 0).then_some(())
    })
    .await;
    secret
}

/// On the set-up: types the code of the moment, clicks "Confirm and turn on" and waits for
/// the account page to say the app is set up.
async fn confirm_totp_setup(client: &Client, secret: &TotpSecret) {
    // Computed just before typing it; one step of skew covers a step boundary meanwhile.
    let code = secret.code_at(unix_now());
    let input = client.find(Locator::Css("#totp-code")).await.unwrap();
    input.send_keys(&code).await.unwrap();
    let button = "form[action$='/account/totp/confirm'] button[type=submit]";
    click(client, button, "Confirm and turn on").await;
    reach(client, ACCOUNT_PATH).await;
    let main = text_of(client, "main").await.unwrap();
    assert!(
        main.contains("Set up ") && main.contains("its code is asked after your password"),
        "{main}"
    );
    let remove = "form[action$='/account/totp/remove'] button[type=submit]";
    let label = text_of(client, remove).await;
    assert_eq!(label.as_deref(), Some("Remove the authenticator app"));
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

/// Writes docs/account-{light,dark}{,-360}.png: the account page with one passkey and an
/// authenticator app set up, 1280 and 360 px wide, as tall as the page (at least 800 and 740
/// px). Run with
/// `SESSIONGATE_SCREENSHOTS=1 cargo test --test it browser_passkeys::screenshots -- --ignored`.
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
        let secret = start_totp_setup(&client).await;
        confirm_totp_setup(&client, &secret).await;
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
            // The whole page: the authenticator app's section is below a phone's first screen.
            fit_height(&client, width).await;
            let png = client.screenshot().await.unwrap();
            std::fs::write(docs.join(format!("account-{scheme}{suffix}.png")), png).unwrap();
        }
    })
    .await;
}

/// Makes the viewport `width` wide and as tall as the page, so it has no scroll bar. Again
/// until it fits: the page's top padding is a share of the viewport's height, so it grows
/// with it.
async fn fit_height(client: &Client, width: u32) {
    for _ in 0..10 {
        let sizes = client
            .execute(
                "return [document.documentElement.scrollHeight, window.innerHeight]",
                vec![],
            )
            .await
            .unwrap();
        let [page, shown] = [0, 1].map(|i| u32::try_from(sizes[i].as_u64().unwrap()).unwrap());
        if page <= shown {
            return;
        }
        viewport(client, width, page).await;
    }
    panic!("the page grows with the viewport and never fits");
}
