//! The account page's endpoints: `GET {prefix}/account` (rendered by `pages::account`), and
//! its passkey forms: `POST .../passkey/options` (a registration challenge, for the page's
//! script), `.../passkey/add` (the browser's answer) and `.../passkey/remove`. Who is signed
//! in is the gate's decision (`Own::Mine`), as for the sessions page.
//!
//! A change (adding or removing a passkey) in a session that signed in more than
//! `auth.confirm_after` (5 minutes) ago needs the password again, checked like a sign-in's (the same failure
//! limits): a borrowed, unlocked laptop cannot add the borrower's passkey.

use std::time::SystemTime;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::auth::csrf::Binding;
use crate::auth::form::{Form, read_checked_form};
use crate::auth::passkey::{self as ceremonies, party_of};
use crate::auth::provider_attempts::tag_of;
use crate::auth::provider_attempts::{Ceremony, TotpSetup};
use crate::auth::sign_in::store_unavailable;
use crate::credentials::passkey::{
    self, KeptPasskey, Keys, MAX_NAME, MAX_PASSKEYS, OwnTotp, Party,
};
use crate::credentials::totp::{self, TotpSecret};
use crate::gate::Authenticated;
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::pages::account::{self, Account, Links, Totp};
use crate::proxy::Body;
use crate::session::StoreError;
use crate::session::user_data::UserEntry;

use super::sessions::{Signed, not_signed_in};

fn links(app: &App) -> Links<'_> {
    let r = &app.routes;
    Links {
        sessions: &r.sessions,
        logout: &r.logout,
        totp_start: &r.account_totp_start,
        totp_confirm: &r.account_totp_confirm,
        totp_remove: &r.account_totp_remove,
        script: &r.passkey_script,
        options: &r.account_passkey_options,
        add: &r.account_passkey_add,
        remove: &r.account_passkey_remove,
    }
}

/// What the session is bound to for forms and ceremonies: its id, hashed.
fn bound(session: &Authenticated) -> String {
    tag_of(session.id.as_bytes())
}

/// Whether `session` signed in more than `auth.confirm_after` ago.
async fn needs_confirm(app: &App, session: &Authenticated) -> Result<bool, StoreError> {
    let list = app.gate.sessions().list(&session.user, &session.id).await?;
    let started = list.iter().find(|s| s.current).map(|s| s.started);
    let age = started.and_then(|t| SystemTime::now().duration_since(t).ok());
    Ok(age.is_none_or(|a| a >= app.config.auth.confirm_after))
}

/// The user's own data, or why the page cannot offer any.
async fn kept(
    app: &App,
    user: &crate::gate::policy::User,
) -> Result<Result<Keys, &'static str>, StoreError> {
    if user.profile.is_some() {
        return Ok(Err(
            "Your sign-in methods are your provider's: you signed in with a provider.",
        ));
    }
    if !app.user_data.kept() {
        return Ok(Err(
            "Passkeys and an authenticator app you set up yourself need session.state_dir or the Redis store, where they are kept.",
        ));
    }
    let entry = app.user_data.get(&user.name).await?;
    Ok(Ok(entry
        .and_then(|e| Keys::parse(&e.json))
        .unwrap_or_default()))
}

/// The TOTP section for `user` with their `keys`.
fn totp_of<'k>(user: &crate::gate::policy::User, keys: &'k Result<Keys, &'static str>) -> Totp<'k> {
    match keys {
        _ if user.profile.is_none() && user.totp.is_some() => Totp::ByAdministrator,
        Err(why) => Totp::Unkept(why),
        Ok(Keys {
            totp: Some(own), ..
        }) => Totp::Own(own.added_ms),
        Ok(_) => Totp::Off,
    }
}

/// The page for `session`, with `status` and an optional error.
async fn draw(
    app: &App,
    session: &Authenticated,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Body> {
    draw_with(app, session, status, error, None).await
}

/// [`draw`], with a TOTP set-up under way in place of the TOTP section.
async fn draw_with(
    app: &App,
    session: &Authenticated,
    status: StatusCode,
    error: Option<&str>,
    setting: Option<Totp<'_>>,
) -> Response<Body> {
    let (keys, confirm) = match (
        kept(app, &session.user).await,
        needs_confirm(app, session).await,
    ) {
        (Ok(keys), Ok(confirm)) => (keys, confirm),
        (Err(e), _) | (_, Err(e)) => return store_unavailable(&e),
    };
    let passkeys = match &keys {
        _ if !app.config.auth.passkeys => Err("Passkeys are not turned on for this site."),
        Ok(k) => Ok(k.passkeys.as_slice()),
        Err(why) => Err(*why),
    };
    let csrf = app.tokens.issue(Binding::Session(session.id.as_bytes()));
    let page = Account {
        user: &session.user.name,
        csrf: &csrf,
        passkeys,
        totp: setting.unwrap_or_else(|| totp_of(&session.user, &keys)),
        confirm,
        error,
    };
    account::page(&app.pages(), &links(app), &page, status)
}

/// `GET {prefix}/account`
pub async fn show(app: &App, req: Request<Incoming>, signed: Signed) -> Response<Body> {
    match signed {
        Ok(Some(session)) => draw(app, &session, StatusCode::OK, None).await,
        other => not_signed_in(app, &req, other.err()),
    }
}

/// A checked post of the account page, or the answer that refuses it.
async fn posted(
    app: &App,
    req: Request<Incoming>,
    signed: Signed,
) -> Result<(Authenticated, Form), Response<Body>> {
    let session = match signed {
        Ok(Some(session)) => session,
        other => return Err(not_signed_in(app, &req, other.err())),
    };
    if !app.user_data.kept() || session.user.profile.is_some() {
        return Err(Refusal::PasskeysOff.response());
    }
    let binding = Binding::Session(session.id.as_bytes());
    match read_checked_form(&app.tokens, req, false, Some(binding)).await {
        Ok(form) => Ok((session, form)),
        Err(refusal) => Err(refusal.response()),
    }
}

/// [`posted`], and [`confirmed`]: a change's post, refused with the page when the password
/// asked for is missing or wrong.
async fn posted_confirmed(
    app: &App,
    client: &str,
    req: Request<Incoming>,
    signed: Signed,
) -> Result<(Authenticated, Form), Response<Body>> {
    let (session, form) = posted(app, req, signed).await?;
    match confirmed(app, &session, &form, client).await {
        Ok(()) => Ok((session, form)),
        Err(refusal) => Err(refused(app, &session, &refusal).await),
    }
}

/// The password again, when the session is older than `auth.confirm_after`; `Err` is the
/// refusal (wrong or missing password, too many failures, store down).
async fn confirmed(
    app: &App,
    session: &Authenticated,
    form: &Form,
    client: &str,
) -> Result<(), Refusal<'static>> {
    let unavailable = |_e: StoreError| Refusal::StoreUnavailable { cause: None };
    if !needs_confirm(app, session).await.map_err(unavailable)? {
        return Ok(());
    }
    if form.password.is_empty() {
        return Err(Refusal::ConfirmPassword);
    }
    let user = &session.user.name;
    let sign_in = app.sign_in();
    let held = crate::auth::sign_in::held_back(&sign_in, user, client, "account change");
    if let Some(refusal) = held.await.map_err(unavailable)? {
        return Err(refusal);
    }
    match app
        .verifier
        .verify(&session.user.password_hash, &form.password)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            app.limiter
                .record_failure(user, client)
                .await
                .map_err(unavailable)?;
            tracing::warn!(
                user = user.as_str(),
                "account change refused: wrong password"
            );
            Err(Refusal::WrongCredentials)
        }
        Err(_) => Err(Refusal::LoginsBusy),
    }
}

/// `POST {prefix}/account/passkey/options` with `name` (and `password`): the challenge for a
/// new passkey, as JSON for the page's script; a refusal as text it shows.
pub async fn options(
    app: &App,
    proto: &str,
    client: &str,
    req: Request<Incoming>,
    signed: Signed,
) -> Response<Body> {
    if !app.config.auth.passkeys {
        return Refusal::PasskeysOff.response();
    }
    let party = party_of(&app.sign_in(), proto, &req);
    let (session, form) = match posted(app, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        let reason = format!("give it a name of 1 to {MAX_NAME} characters");
        return Refusal::PasskeyNotAdded { reason: &reason }.response();
    }
    if let Err(refusal) = confirmed(app, &session, &form, client).await {
        return refusal.response();
    }
    let Some((origin, rp_id)) = party else {
        return Refusal::NoSuchEndpoint.response();
    };
    let user = &session.user.name;
    let entry = match app.user_data.get(user).await {
        Ok(entry) => entry,
        Err(e) => return store_unavailable(&e),
    };
    let keys = entry
        .as_ref()
        .and_then(|e| Keys::parse(&e.json))
        .unwrap_or_default();
    if keys.passkeys.len() >= MAX_PASSKEYS {
        let reason = format!("you have {MAX_PASSKEYS} already; remove one first");
        return Refusal::PasskeyNotAdded { reason: &reason }.response();
    }
    let handle = entry.map_or_else(passkey::new_handle, |e| e.handle);
    let started =
        Party::new(&rp_id, &origin).and_then(|p| p.start_registration(user, handle, &keys));
    ceremonies::offer(&app.sign_in(), started, |state| Ceremony {
        state,
        bound: bound(&session),
        rp_id,
        origin,
        user: Some(user.clone()),
        name: Some(name.to_string()),
        handle: Some(handle),
    })
    .await
}

/// `POST {prefix}/account/passkey/add` with `ceremony` and `credential`: the new passkey,
/// kept, and back to the page.
pub async fn add(app: &App, req: Request<Incoming>, signed: Signed) -> Response<Body> {
    let (session, form) = match posted(app, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let sign_in = app.sign_in();
    let taken = ceremonies::take_ceremony(&sign_in, &form.ceremony, &bound(&session)).await;
    let mine = |c: &Ceremony| c.user.as_deref() == Some(session.user.name.as_str());
    let (ceremony, handle, name) = match taken {
        Ok(Some(c)) if mine(&c) => match (c.handle, c.name.clone()) {
            (Some(handle), Some(name)) => (c, handle, name),
            _ => return refused(app, &session, &Refusal::PasskeyRestart).await,
        },
        Ok(_) => return refused(app, &session, &Refusal::PasskeyRestart).await,
        Err(e) => return store_unavailable(&e),
    };
    let made = Party::new(&ceremony.rp_id, &ceremony.origin)
        .and_then(|p| p.finish_registration(&ceremony.state, &form.credential));
    let passkey = match made {
        Ok(passkey) => passkey,
        Err(e) => {
            let reason = e.to_string();
            return refused(app, &session, &Refusal::PasskeyNotAdded { reason: &reason }).await;
        }
    };
    let new = KeptPasskey {
        name,
        added_ms: passkey::now_ms(),
        last_used_ms: None,
        backed_up: false,
        passkey,
    };
    let user = &session.user.name;
    let kept = app
        .user_data
        .change(user, |entry| {
            let mut keys = entry.and_then(|e| Keys::parse(&e.json)).unwrap_or_default();
            keys.passkeys
                .retain(|k| k.passkey.cred_id() != new.passkey.cred_id());
            keys.passkeys.push(new.clone());
            let handle = entry.map_or(handle, |e| e.handle);
            let json = keys.to_json();
            (Some(UserEntry { handle, json }), ())
        })
        .await;
    match kept {
        Ok(()) => {
            tracing::info!(user = user.as_str(), "passkey added");
            back(app)
        }
        Err(e) => store_unavailable(&e),
    }
}

/// `POST {prefix}/account/passkey/remove` with `passkey` (its id) and, when asked, `password`.
pub async fn remove(
    app: &App,
    client: &str,
    req: Request<Incoming>,
    signed: Signed,
) -> Response<Body> {
    let (session, form) = match posted_confirmed(app, client, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let user = &session.user.name;
    let removed = app
        .user_data
        .change(user, |entry| {
            let Some(entry) = entry else {
                return (None, false);
            };
            let mut keys = Keys::parse(&entry.json).unwrap_or_default();
            let before = keys.passkeys.len();
            keys.passkeys.retain(|k| k.id() != form.passkey);
            let gone = keys.passkeys.len() < before;
            let json = keys.to_json();
            (
                Some(UserEntry {
                    handle: entry.handle,
                    json,
                }),
                gone,
            )
        })
        .await;
    match removed {
        Ok(true) => {
            tracing::info!(user = user.as_str(), "passkey removed");
            back(app)
        }
        Ok(false) => refused(app, &session, &Refusal::NoSuchPasskey).await,
        Err(e) => store_unavailable(&e),
    }
}

/// The page again with `refusal`'s status and words.
async fn refused(app: &App, session: &Authenticated, refusal: &Refusal<'_>) -> Response<Body> {
    let error = refusal.to_string();
    draw(app, session, refusal.status(), Some(&error)).await
}

/// A 303 back to the page after a change.
fn back(app: &App) -> Response<Body> {
    let location = HeaderValue::from_str(&app.routes.account).expect("the prefix is header-safe");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    no_store(&mut res);
    res
}

/// `POST {prefix}/account/totp/start` (with `password` when asked): a new secret, shown as a
/// QR code with the form for its first code.
pub async fn totp_start(
    app: &App,
    client: &str,
    req: Request<Incoming>,
    signed: Signed,
) -> Response<Body> {
    let (session, form) = match posted(app, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    if session.user.totp.is_some() {
        return refused(app, &session, &Refusal::TotpByAdministrator).await;
    }
    if let Err(refusal) = confirmed(app, &session, &form, client).await {
        return refused(app, &session, &refusal).await;
    }
    let user = &session.user.name;
    let made = totp::new_key(user, app.pages().issuer())
        .and_then(|(secret, uri)| Ok((secret, totp::qr_svg(&uri)?)));
    let Ok((secret, qr_svg)) = made else {
        return Refusal::Internal("cannot make a TOTP key").response();
    };
    let setup = TotpSetup {
        sealed: app.sealer.seal(secret.as_bytes(), user),
        bound: bound(&session),
    };
    let name = ceremonies::ceremony_name();
    match app.totp_setups.put(&name, setup).await {
        Ok(true) => {}
        Ok(false) => return Refusal::LoginsBusy.response(),
        Err(e) => return store_unavailable(&e),
    }
    let setting = Totp::Setting {
        qr_svg: &qr_svg,
        secret: &secret,
        setup: &name,
    };
    let mut res = draw_with(app, &session, StatusCode::OK, None, Some(setting)).await;
    no_store(&mut res);
    res
}

/// `POST {prefix}/account/totp/confirm` with `setup` and `code`: the app is set up when the
/// code is right; a wrong one keeps the set-up for another try.
pub async fn totp_confirm(app: &App, req: Request<Incoming>, signed: Signed) -> Response<Body> {
    let (session, form) = match posted(app, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let user = &session.user.name;
    let setup = match app.totp_setups.take(&form.setup).await {
        Ok(Some(s)) if constant_time_eq(&s.bound, &bound(&session)) => s,
        Ok(_) => return refused(app, &session, &Refusal::TotpSetupExpired).await,
        Err(e) => return store_unavailable(&e),
    };
    let secret = app
        .sealer
        .open(&setup.sealed, user)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| TotpSecret::from_base32(&s).ok());
    let Some(secret) = secret else {
        return refused(app, &session, &Refusal::TotpSetupExpired).await;
    };
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let step = secret.check(&code, totp::unix_now());
    let fresh = match step {
        Some(step) => app.pending.use_step(user, step).await,
        None => Ok(false),
    };
    match fresh {
        Ok(true) => {}
        Ok(false) => return wrong_setup_code(app, &session, &form.setup, setup, &secret).await,
        Err(e) => return store_unavailable(&e),
    }
    let own = OwnTotp {
        sealed: app.sealer.seal(secret.secret_bytes(), user),
        added_ms: passkey::now_ms(),
    };
    set_own_totp(app, &session, Some(own)).await
}

/// A wrong first code: the set-up again (kept under its name), saying so.
async fn wrong_setup_code(
    app: &App,
    session: &Authenticated,
    name: &str,
    setup: TotpSetup,
    secret: &TotpSecret,
) -> Response<Body> {
    if let Err(e) = app.totp_setups.put(name, setup).await {
        return store_unavailable(&e);
    }
    let shown = secret
        .key_uri(&session.user.name, app.pages().issuer())
        .and_then(|(base32, uri)| Ok((base32, totp::qr_svg(&uri)?)));
    let Ok((base32, qr_svg)) = shown else {
        return Refusal::Internal("cannot draw the QR code").response();
    };
    let setting = Totp::Setting {
        qr_svg: &qr_svg,
        secret: &base32,
        setup: name,
    };
    let error = Refusal::WrongCode.to_string();
    draw_with(
        app,
        session,
        StatusCode::UNAUTHORIZED,
        Some(&error),
        Some(setting),
    )
    .await
}

/// `POST {prefix}/account/totp/remove` (with `password` when asked).
pub async fn totp_remove(
    app: &App,
    client: &str,
    req: Request<Incoming>,
    signed: Signed,
) -> Response<Body> {
    let (session, _) = match posted_confirmed(app, client, req, signed).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    set_own_totp(app, &session, None).await
}

/// Keeps `own` as the user's TOTP (`None`: removes it), and back to the page.
async fn set_own_totp(app: &App, session: &Authenticated, own: Option<OwnTotp>) -> Response<Body> {
    let user = &session.user.name;
    let on = own.is_some();
    let changed = app
        .user_data
        .change(user, |entry| {
            let mut keys = entry.and_then(|e| Keys::parse(&e.json)).unwrap_or_default();
            keys.totp = own.clone();
            let handle = entry.map_or_else(passkey::new_handle, |e| e.handle);
            let json = keys.to_json();
            (Some(UserEntry { handle, json }), ())
        })
        .await;
    match changed {
        Ok(()) => {
            tracing::info!(
                user = user.as_str(),
                on,
                "authenticator app changed on the account page"
            );
            back(app)
        }
        Err(e) => store_unavailable(&e),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
