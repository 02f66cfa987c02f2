//! What both steps of a sign-in share: the sign-in and code pages, the answers when the store
//! cannot answer, and the last step, which makes the session. The password step (`login`) and
//! the code step (`second_factor`) both end in [`complete`], so a session is made one way.

use http::{HeaderValue, Request, Response, StatusCode, header};

use hyper::body::Incoming;

use super::form::{Form, read_checked_form};
use super::redirect::safe_return;
use crate::app::App;
use crate::conn::ConnInfo;
use crate::metrics::{EndReason, LoginResult};
use crate::pages::{self, SignIn};
use crate::policy::{Policy, User};
use crate::request_error::RequestError;
use crate::response::{self, Body, no_store};
use crate::session::browser::Browser;
use crate::session::{SessionId, SessionMeta};

/// The sign-in page, `rd` and a form token carried in hidden fields, `username` typed back in,
/// with an optional error (or `notice`, e.g. after signing out).
pub fn page(
    app: &App,
    status: StatusCode,
    rd: &str,
    username: &str,
    error: Option<&str>,
) -> Response<Body> {
    sign_in(app, status, rd, username, error, None)
}

pub(crate) fn sign_in(
    app: &App,
    status: StatusCode,
    rd: &str,
    username: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response<Body> {
    let csrf = app.tokens.issue();
    let rd = safe_return(rd, app.gate.policy().redirect_hosts()).to_string();
    let html = app.pages().sign_in(&SignIn {
        action: &app.routes.login,
        hidden_fields: &[("rd", &rd), ("csrf", &csrf)],
        username,
        error,
        notice,
    });
    pages::respond(status, html)
}

/// A step refused by the failure limits: 429, with the wait rounded up to whole seconds (at
/// least 1) in `Retry-After` and in the message `page` shows.
pub(crate) fn too_many_attempts(
    wait: std::time::Duration,
    page: impl FnOnce(StatusCode, &str) -> Response<Body>,
) -> Response<Body> {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut res = page(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many failed attempts. Try again in {secs} seconds."),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
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

/// Reads the post of either sign-in step, or the answer and its metrics result when it cannot
/// go on: the store did not answer, the origin or token was refused, or the form was unusable.
pub(crate) async fn read_post(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Posted, (Response<Body>, LoginResult)> {
    let previous = match app.gate.authenticate(req.headers()).await {
        Ok(session) => session.map(|a| a.id),
        Err(e) => return Err((login_unavailable(app, "/", &e), LoginResult::Unavailable)),
    };
    let meta = SessionMeta {
        client: conn.client_addr(req.headers(), &app.config.server.trusted_proxies),
        browser: Browser::of(req.headers()),
    };
    match read_checked_form(app, req, false).await {
        Ok(form) => Ok(Posted {
            previous,
            meta,
            form,
        }),
        // A refused origin or token is 403; anything else is a form that cannot be read.
        Err(res) if res.status() == StatusCode::FORBIDDEN => Err((res, LoginResult::Csrf)),
        Err(res) => Err((res, LoginResult::Invalid)),
    }
}

/// The last step of a sign-in, for `user` whose every factor is right: the failure count
/// cleared, the session the browser brought ended (a fresh id on every sign-in: no fixation),
/// the new session made, and a 303 to `rd` (checked against `policy`) with its cookie. On a
/// store error, the sign-in page again with 503 (nothing was made).
pub(crate) async fn complete(
    app: &App,
    policy: &Policy,
    user: &User,
    previous: Option<SessionId>,
    meta: &SessionMeta,
    rd: &str,
) -> Result<Response<Body>, Response<Body>> {
    let unavailable = |e| login_unavailable(app, rd, &e);
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
    rd: &str,
    e: &crate::session::StoreError,
) -> Response<Body> {
    tracing::error!("login refused: {e}");
    let mut res = page(
        app,
        StatusCode::SERVICE_UNAVAILABLE,
        rd,
        "",
        Some(
            "Signing in is not possible right now: sessions cannot be checked. Try again in a moment.",
        ),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// 503 for a request that needed the session store when it could not answer.
pub(crate) fn store_unavailable(e: &crate::session::StoreError) -> Response<Body> {
    tracing::error!("request refused: {e}");
    RequestError::StoreUnavailable.response()
}
