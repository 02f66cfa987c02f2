//! What both steps of a sign-in share: the sign-in and code pages, the answers when the store
//! cannot answer, and the last step, which makes the session. The password step (`login`) and
//! the code step (`second_factor`) both end in [`complete`], so a session is made one way.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::Cookie;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use rand::TryRng;

use super::csrf::{Binding, TOKEN_LIFETIME};
use super::form::{Form, read_checked_form};
use super::redirect::safe_return;
use crate::app::App;
use crate::config::SameSite;
use crate::gate::policy::{Policy, User};
use crate::http::error::Refusal;
use crate::http::headers::single_cookie;
use crate::http::response::{self, no_store};
use crate::ops::metrics::{EndReason, LoginResult};
use crate::pages::{self, SignIn};
use crate::proxy::Body;
use crate::server::conn::ConnInfo;
use crate::session::browser::Browser;
use crate::session::{SessionId, SessionMeta};

/// The name of a cookie of ours scoped to the prefix: the session cookie's with `-{role}`. A
/// `__Host-` cookie must have `Path=/`, so such a name becomes `__Secure-` (which still makes
/// browsers refuse it over plain http).
pub fn cookie_name(session_cookie: &str, role: &str) -> String {
    match session_cookie.strip_prefix("__Host-") {
        Some(base) => format!("__Secure-{base}-{role}"),
        None => format!("{session_cookie}-{role}"),
    }
}

/// `Set-Cookie` for a cookie of ours scoped to the prefix (the pending sign-in's, the sign-in
/// cookie): `value` for `max_age`, or (`None`) the one that makes the browser forget it.
pub(crate) fn prefix_cookie(app: &App, name: &str, value: Option<(&str, Duration)>) -> HeaderValue {
    let s = &app.config.session;
    let mut c = Cookie::build((name.to_string(), value.map_or("", |(v, _)| v).to_string()))
        .path(app.config.auth.prefix.clone())
        .http_only(true)
        .secure(s.secure)
        .same_site(match s.same_site {
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::Strict => cookie::SameSite::Strict,
        })
        .build();
    match value {
        Some((_, max_age)) => c.set_max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        )),
        None => c.make_removal(),
    }
    HeaderValue::try_from(c.to_string()).expect("cookie names and values are header-safe")
}

/// The sign-in cookie, which the sign-in form's token is bound to, so that a token works only
/// from the browser that loaded the form: 32 random bytes, base64url, set with the first
/// sign-in page a browser gets and kept as long as a token lasts.
pub(crate) struct SignInCookie {
    /// The one the request brought, if it brought exactly one well-formed.
    brought: Option<String>,
}

/// base64url of 32 bytes, without padding.
const SIGN_IN_COOKIE_LEN: usize = 43;

impl SignInCookie {
    pub(crate) fn of(app: &App, headers: &HeaderMap) -> SignInCookie {
        let brought = single_cookie(headers, &app.signin_cookie)
            .filter(|v| {
                v.len() == SIGN_IN_COOKIE_LEN
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            })
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string);
        SignInCookie { brought }
    }

    /// What a posted sign-in form's token must be bound to: only a cookie the request brought.
    pub(crate) fn binding(&self) -> Option<Binding<'_>> {
        self.brought
            .as_deref()
            .map(|v| Binding::SignIn(v.as_bytes()))
    }

    /// The value to bind a new form to, and whether the response must set it.
    fn value(&self) -> (Cow<'_, str>, bool) {
        match &self.brought {
            Some(v) => (Cow::Borrowed(v), false),
            None => {
                let mut raw = [0u8; 32];
                // No fallback: a guessable value would let a token move between browsers.
                rand::rngs::SysRng
                    .try_fill_bytes(&mut raw)
                    .expect("the OS random number generator failed");
                (Cow::Owned(URL_SAFE_NO_PAD.encode(raw)), true)
            }
        }
    }
}

/// The sign-in page again for a post `refusal` turned down: its status, error and headers
/// (see [`sign_in`] for `rd` and `username`).
pub(crate) fn refused(
    app: &App,
    browser: &SignInCookie,
    refusal: &Refusal<'_>,
    rd: &str,
    username: &str,
) -> Response<Body> {
    refusal.in_form(|status, error| sign_in(app, browser, status, rd, username, Some(error), None))
}

/// The sign-in page, `rd` and a form token bound to `browser` carried in hidden fields,
/// `username` typed back in, with an optional error (or `notice`, e.g. after signing out).
pub(crate) fn sign_in(
    app: &App,
    browser: &SignInCookie,
    status: StatusCode,
    rd: &str,
    username: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response<Body> {
    let (binding, fresh) = browser.value();
    let csrf = app.tokens.issue(Binding::SignIn(binding.as_bytes()));
    let rd = safe_return(rd, app.gate.policy().redirect_hosts()).to_string();
    let html = app.pages().sign_in(&SignIn {
        action: &app.routes.login,
        hidden_fields: &[("rd", &rd), ("csrf", &csrf)],
        username,
        error,
        notice,
    });
    let mut res = pages::respond(status, html);
    if fresh {
        res.headers_mut().append(
            header::SET_COOKIE,
            prefix_cookie(app, &app.signin_cookie, Some((&binding, TOKEN_LIFETIME))),
        );
    }
    res
}

/// The second-factor page: one code field posted to `{prefix}/login/code` with
/// `hidden_fields` (the pending login's), and an optional error.
pub fn code_page(
    app: &App,
    status: StatusCode,
    error: Option<&str>,
    hidden_fields: &[(&str, &str)],
) -> Response<Body> {
    let action = format!("{}/code", app.routes.login);
    pages::respond(status, app.pages().code(&action, hidden_fields, error))
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
    app: &App,
    conn: &ConnInfo,
    browser: &SignInCookie,
    step: Step<'_>,
    req: Request<Incoming>,
) -> Result<Posted, (Response<Body>, LoginResult)> {
    let previous = match app.gate.authenticate(req.headers()).await {
        Ok(session) => session.map(|a| a.id),
        Err(e) => {
            return Err((
                login_unavailable(app, browser, "/", &e),
                LoginResult::Unavailable,
            ));
        }
    };
    let meta = SessionMeta {
        client: conn.client_addr(req.headers(), &app.config.server.trusted_proxies),
        browser: Browser::of(req.headers()),
    };
    let binding = match step {
        Step::Password => browser.binding(),
        Step::Code(id) => id.map(|id| Binding::Pending(id.as_bytes())),
    };
    match read_checked_form(app, req, false, binding).await {
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
    app: &App,
    browser: &SignInCookie,
    policy: &Policy,
    user: &User,
    previous: Option<SessionId>,
    meta: &SessionMeta,
    rd: &str,
) -> Result<Response<Body>, Response<Body>> {
    let unavailable = |e| login_unavailable(app, browser, rd, &e);
    app.limiter
        .record_success(&user.name)
        .await
        .map_err(unavailable)?;
    if let Some(old) = previous {
        app.gate
            .end_session(&old, EndReason::Revoked)
            .await
            .map_err(unavailable)?;
    }
    let id = app
        .gate
        .start_session(user, meta)
        .await
        .map_err(unavailable)?;
    tracing::info!(user = user.name.as_str(), "login");
    let location = HeaderValue::from_str(safe_return(rd, policy.redirect_hosts()))
        .expect("safe return addresses are visible ASCII");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    res.headers_mut()
        .insert(header::SET_COOKIE, app.session_cookie(&id));
    no_store(&mut res);
    Ok(res)
}

/// The sign-in page again, 503, when the session store (or the shared failure counters) could
/// not answer: nothing was decided, and the person is told to try again.
pub(crate) fn login_unavailable(
    app: &App,
    browser: &SignInCookie,
    rd: &str,
    e: &crate::session::StoreError,
) -> Response<Body> {
    refused(
        app,
        browser,
        &Refusal::SignInUnavailable { cause: e },
        rd,
        "",
    )
}

/// 503 for a request that needed the session store when it could not answer.
pub(crate) fn store_unavailable(e: &crate::session::StoreError) -> Response<Body> {
    Refusal::StoreUnavailable { cause: Some(e) }.response()
}
