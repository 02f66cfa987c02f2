//! What both steps of a sign-in share: what they work with ([`SignIn`]), the sign-in and code
//! pages, the answers when the store cannot answer, and the last step, which makes the
//! session. The password step (`login`) and the code step (`second_factor`) both end in
//! [`complete`], so a session is made one way.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::cookies::{PrefixCookies, SignInCookie};
use super::csrf::{Binding, FormTokens};
use super::form::{Form, read_checked_form};
use super::limiter::Verdict;
use super::pending::Pending;
use super::provider_attempts::Attempts;
use super::provider_attempts::Ceremony;
use super::shared_limiter::FailureLimits;
use crate::credentials::password::Verifier;
use crate::credentials::sealed::Sealer;
use crate::gate::Gate;
use crate::gate::policy::{Policy, User};
use crate::http::error::Refusal;
use crate::http::redirect::safe_return;
use crate::http::response::{self, no_store};
use crate::oidc::Providers;
use crate::ops::metrics::{EndReason, LoginResult, Metrics};
use crate::pages::{self, Pages};
use crate::proxy::Body;
use crate::session::browser::Browser;
use crate::session::cookie::SessionCookie;
use crate::session::user_data::UserData;
use crate::session::{SessionId, SessionMeta, StoreError};

/// What the sign-in endpoints work with, lent by whoever wired the process (the `App`) for
/// one request: nothing in `auth` reaches for the whole app.
pub struct SignIn<'a> {
    /// Sessions (the one a browser brings, the one a sign-in makes) and the policy.
    pub gate: &'a Gate,
    pub limiter: &'a FailureLimits,
    pub verifier: &'a Verifier,
    pub tokens: &'a FormTokens,
    /// Sign-ins waiting for their TOTP code, and the codes already used.
    pub pending: &'a Pending,
    pub session_cookie: &'a SessionCookie,
    pub cookies: &'a PrefixCookies,
    /// The pages in force (a reload replaces them).
    pub pages: Arc<Pages>,
    /// `{prefix}/login` and `{prefix}/login/code`.
    pub login: &'a str,
    pub login_code: &'a str,
    pub metrics: &'a Metrics,
    /// The OpenID Connect providers, and their sign-in attempts under way.
    pub providers: &'a Providers,
    pub attempts: &'a Attempts,
    /// `{prefix}/oidc`: each provider's endpoints are under `/{id}`.
    pub oidc: &'a str,
    /// `server.public_url`, if set: the origin providers send browsers back to.
    pub public_url: Option<&'a str>,
    /// `auth.auto_redirect` in force.
    pub auto_redirect: bool,
    /// `auth.passkeys`, `auth.passkey_rp_id`, where passkeys are kept, and the passkey
    /// ceremonies under way.
    pub passkeys: bool,
    pub passkey_rp_id: Option<&'a str>,
    pub user_data: &'a UserData,
    pub ceremonies: &'a Attempts<Ceremony>,
    /// Opens the TOTP secrets users set up themselves.
    pub sealer: &'a Sealer,
    /// `{prefix}/passkey.js`, `{prefix}/passkey/options` and `{prefix}/passkey/sign-in`.
    pub passkey_script: &'a str,
    pub passkey_options: &'a str,
    pub passkey_sign_in: &'a str,
    /// `{prefix}/login/passkey/options` and `{prefix}/login/passkey`: a passkey as the
    /// second factor.
    pub second_passkey_options: &'a str,
    pub second_passkey: &'a str,
}

/// The sign-in page again for a post `refusal` turned down: its status, error and headers
/// (see [`sign_in`] for `rd` and `username`).
pub(crate) fn refused(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    refusal: &Refusal<'_>,
    rd: &str,
    username: &str,
) -> Response<Body> {
    refusal.in_form(|status, error| sign_in(auth, browser, status, rd, username, Some(error), None))
}

/// The sign-in page, `rd` and a form token bound to `browser` carried in hidden fields,
/// `username` typed back in, with an optional error (or `notice`, e.g. after signing out).
pub(crate) fn sign_in(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    status: StatusCode,
    rd: &str,
    username: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response<Body> {
    let (binding, set_cookie) = browser.value(auth.cookies);
    let csrf = auth.tokens.issue(Binding::SignIn(binding.as_bytes()));
    let policy = auth.gate.policy();
    let rd = safe_return(rd, policy.redirect_hosts()).to_string();
    let buttons = buttons(auth, &rd);
    let password = policy.users().next().is_some() || buttons.is_empty();
    let providers: Vec<(&str, String)> = buttons
        .iter()
        .map(|(n, h)| (n.as_str(), h.clone()))
        .collect();
    let html = auth.pages.sign_in(&pages::SignIn {
        action: auth.login,
        hidden_fields: &[("rd", &rd), ("csrf", &csrf)],
        username,
        error,
        notice,
        password,
        providers: &providers,
        passkey: auth.passkeys.then_some(pages::PasskeyLinks {
            script: auth.passkey_script,
            options: auth.passkey_options,
            action: auth.passkey_sign_in,
        }),
    });
    let mut res = pages::respond(status, html);
    if let Some(set_cookie) = set_cookie {
        res.headers_mut().append(header::SET_COOKIE, set_cookie);
    }
    res
}

/// The sign-in page's buttons: each provider's name and start URL, carrying `rd`.
pub(crate) fn buttons(auth: &SignIn<'_>, rd: &str) -> Vec<(String, String)> {
    auth.providers
        .all()
        .iter()
        .map(|p| (p.config.name.clone(), start_url(auth, p.id(), rd)))
        .collect()
}

pub(crate) fn start_url(auth: &SignIn<'_>, id: &str, rd: &str) -> String {
    let rd: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{}/{id}/start?rd={rd}", auth.oidc)
}

/// What the second-factor page offers: the code field, a passkey, or both.
#[derive(Clone, Copy)]
pub(crate) struct Offer {
    pub code: bool,
    pub passkey: bool,
}

/// The second-factor page: the code field posted to `{prefix}/login/code` and the passkey
/// button (`{prefix}/login/passkey`), as `offer` says, with `hidden_fields` (the pending
/// login's), and an optional error.
pub(crate) fn code_page(
    auth: &SignIn<'_>,
    status: StatusCode,
    error: Option<&str>,
    hidden_fields: &[(&str, &str)],
    offer: Offer,
) -> Response<Body> {
    let passkey = offer.passkey.then_some(pages::PasskeyLinks {
        script: auth.passkey_script,
        options: auth.second_passkey_options,
        action: auth.second_passkey,
    });
    let page = pages::Code {
        action: auth.login_code,
        hidden_fields,
        error,
        code: offer.code,
        passkey,
    };
    pages::respond(status, auth.pages.code(&page))
}

/// A sign-in step's post, read: the session the browser already had (ended on success), where
/// the new one would start, and the checked form.
pub(crate) struct Posted {
    pub previous: Option<SessionId>,
    pub meta: SessionMeta,
    pub form: Form,
}

/// What a sign-in step's form token is bound to: the sign-in cookie for the password step,
/// the pending sign-in for the code step.
pub(crate) enum Step<'a> {
    Password,
    Code(Option<&'a SessionId>),
}

/// Reads the post of either sign-in step, or the answer and its metrics result when it cannot
/// go on: the store did not answer, the origin or token was refused, or the form was unusable.
pub(crate) async fn read_post(
    auth: &SignIn<'_>,
    client: IpAddr,
    browser: &SignInCookie,
    step: Step<'_>,
    req: Request<Incoming>,
) -> Result<Posted, (Response<Body>, LoginResult)> {
    let previous = match auth.gate.authenticate(req.headers()).await {
        Ok(session) => session.map(|a| a.id),
        Err(e) => {
            return Err((
                login_unavailable(auth, browser, "/", &e),
                LoginResult::Unavailable,
            ));
        }
    };
    let meta = SessionMeta {
        client,
        browser: Browser::of(req.headers()),
    };
    let binding = match step {
        Step::Password => browser.binding(),
        Step::Code(id) => id.map(|id| Binding::Pending(id.as_bytes())),
    };
    match read_checked_form(auth.tokens, req, false, binding).await {
        Ok(form) => Ok(Posted {
            previous,
            meta,
            form,
        }),
        // A refused origin or token is CSRF; anything else is a form that cannot be read.
        Err(refusal @ (Refusal::CrossSitePost | Refusal::NoFormToken | Refusal::NoFormCookie)) => {
            Err((refusal.response(), LoginResult::Csrf))
        }
        Err(refusal) => Err((refusal.response(), LoginResult::Invalid)),
    }
}

/// The last step of a sign-in, for `user` whose every factor is right: the failure count
/// cleared, the session the browser brought ended (a fresh id on every sign-in: no fixation),
/// the new session made, and a 303 to `rd` (checked against `policy`) with its cookie. On a
/// store error, the sign-in page again with 503 (nothing was made).
pub(crate) async fn complete(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    policy: &Policy,
    user: &User,
    previous: Option<SessionId>,
    meta: &SessionMeta,
    rd: &str,
) -> Result<Response<Body>, Response<Body>> {
    let unavailable = |e| login_unavailable(auth, browser, rd, &e);
    auth.limiter
        .record_success(&user.name)
        .await
        .map_err(unavailable)?;
    if let Some(old) = previous {
        auth.gate
            .end_session(&old, EndReason::Revoked)
            .await
            .map_err(unavailable)?;
    }
    let id = auth
        .gate
        .start_session(user, meta)
        .await
        .map_err(unavailable)?;
    tracing::info!(user = user.name.as_str(), "login");
    let location = HeaderValue::from_str(safe_return(rd, policy.redirect_hosts()))
        .expect("safe return addresses are visible ASCII");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    res.headers_mut()
        .insert(header::SET_COOKIE, auth.session_cookie.set(&id));
    no_store(&mut res);
    Ok(res)
}

/// [`complete`] for a step whose post was read: the answer, and how it ended for the metrics.
pub(crate) async fn complete_posted(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    policy: &Policy,
    user: &User,
    posted: &Posted,
    rd: &str,
) -> (Response<Body>, LoginResult) {
    let made = complete(
        auth,
        browser,
        policy,
        user,
        posted.previous,
        &posted.meta,
        rd,
    );
    match made.await {
        Ok(res) => (res, LoginResult::Success),
        Err(res) => (res, LoginResult::Unavailable),
    }
}

/// The sign-in page again, 503, when the session store (or the shared failure counters) could
/// not answer: nothing was decided, and the person is told to try again.
pub(crate) fn login_unavailable(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    rd: &str,
    e: &StoreError,
) -> Response<Body> {
    refused(
        auth,
        browser,
        &Refusal::SignInUnavailable { cause: e },
        rd,
        "",
    )
}

/// Whether `user` from `client` may try a sign-in `step` ("login", "code", "passkey") now:
/// `None`, or the refusal to answer with (429, logged), under the failure limits.
pub(crate) async fn held_back(
    auth: &SignIn<'_>,
    user: &str,
    client: &str,
    step: &str,
) -> Result<Option<Refusal<'static>>, StoreError> {
    match auth.limiter.check(user, client).await? {
        Verdict::Allowed => Ok(None),
        Verdict::Limited(wait) => {
            tracing::warn!(client, "{step} refused: too many failed attempts");
            Ok(Some(Refusal::TooManyAttempts { wait }))
        }
    }
}

/// 503 for a request that needed the session store when it could not answer.
pub(crate) fn store_unavailable(e: &StoreError) -> Response<Body> {
    Refusal::StoreUnavailable { cause: Some(e) }.response()
}
