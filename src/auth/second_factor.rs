//! The second step of signing in for users with a TOTP secret: after the right password,
//! `POST {prefix}/login` starts a pending sign-in (see `pending`) bound to the browser by a
//! signed cookie and sends it to `{prefix}/login/code`, whose form takes the code from the
//! authenticator app. Only the right code, once, makes the session.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::csrf::Binding;
use super::limiter::Verdict;
use super::pending::{AfterWrong, PendingLogin};
use super::sign_in::{self, SignInCookie, Step, login_unavailable};
use super::totp;
use crate::app::App;
use crate::gate::policy::User;
use crate::http::error::Refusal;
use crate::http::headers::single_cookie;
use crate::http::response::{self, no_store};
use crate::ops::metrics::LoginResult;
use crate::proxy::Body;
use crate::server::conn::ConnInfo;
use crate::session::SessionId;

const TOO_LONG: Refusal = Refusal::SignInExpired;
const TOO_MANY_WRONG: Refusal = Refusal::TooManyWrongCodes;

/// The pending cookie's name: the session cookie's with `-pending`.
pub fn cookie_name(session_cookie: &str) -> String {
    sign_in::cookie_name(session_cookie, "pending")
}

/// The code form of the pending sign-in `id`, with an optional message; its token is bound
/// to that pending sign-in.
pub fn code_page(
    app: &App,
    id: &SessionId,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Body> {
    let csrf = app.tokens.issue(Binding::Pending(id.as_bytes()));
    sign_in::code_page(app, status, error, &[("csrf", &csrf)])
}

/// The code form of the pending sign-in `id` again, for a post `refusal` turned down.
fn code_refused(app: &App, id: &SessionId, refusal: &Refusal<'_>) -> Response<Body> {
    refusal.in_form(|status, error| code_page(app, id, status, Some(error)))
}

/// After the right password for `user`, who has a TOTP secret: a pending sign-in, its cookie,
/// and a 303 to the code form. No session yet, and the failure count stays: only the code
/// clears it, or knowing the password would buy unlimited guesses at the code.
pub(crate) async fn begin(
    app: &App,
    browser: &SignInCookie,
    user: &User,
    rd: &str,
) -> (Response<Body>, LoginResult) {
    let login = PendingLogin {
        user: user.name.clone(),
        credentials: user.credentials,
        rd: rd.to_string(),
    };
    let id = match app.pending.create(login).await {
        Ok(id) => id,
        Err(e) => {
            return (
                login_unavailable(app, browser, rd, &e),
                LoginResult::Unavailable,
            );
        }
    };
    tracing::info!(
        user = user.name.as_str(),
        "password accepted; code required"
    );
    let location =
        HeaderValue::from_str(&app.routes.login_code).expect("the prefix is header-safe");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    res.headers_mut()
        .insert(header::SET_COOKIE, pending_cookie(app, Some(&id)));
    no_store(&mut res);
    (res, LoginResult::CodeRequired)
}

/// `Set-Cookie` for a pending sign-in, or (`None`) the one that makes the browser forget it.
fn pending_cookie(app: &App, id: Option<&SessionId>) -> HeaderValue {
    let value = id.map(|id| app.pending_signer.sign(id));
    let lifetime = app.config.auth.pending_lifetime;
    sign_in::prefix_cookie(
        app,
        &app.pending_cookie,
        value.as_deref().map(|v| (v, lifetime)),
    )
}

/// The pending sign-in id in the request's cookie, if exactly one cookie of ours (on any
/// Cookie line) carries a value we signed.
pub(crate) fn pending_id(app: &App, headers: &HeaderMap) -> Option<SessionId> {
    let value = single_cookie(headers, &app.pending_cookie)?;
    app.pending_signer.verify(std::str::from_utf8(value).ok()?)
}

/// The sign-in page again (401), the pending cookie forgotten: the person starts over.
fn start_over(app: &App, browser: &SignInCookie, rd: &str, why: Refusal<'_>) -> Response<Body> {
    let mut res = sign_in::refused(app, browser, &why, rd, "");
    res.headers_mut()
        .append(header::SET_COOKIE, pending_cookie(app, None));
    res
}

/// `GET {prefix}/login/code`
pub async fn show(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let Some(id) = pending_id(app, req.headers()) else {
        let location = HeaderValue::from_str(&app.routes.login).expect("the prefix is header-safe");
        let mut res = response::redirect(StatusCode::SEE_OTHER, location);
        no_store(&mut res);
        return res;
    };
    let browser = SignInCookie::of(app, req.headers());
    match app.pending.get(&id).await {
        Ok(Some(_)) => code_page(app, &id, StatusCode::OK, None),
        Ok(None) => start_over(app, &browser, "/", TOO_LONG),
        Err(e) => login_unavailable(app, &browser, "/", &e),
    }
}

/// `POST {prefix}/login/code`
pub async fn submit(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let (res, result) = attempt(app, conn, req).await;
    app.metrics.login(result);
    res
}

async fn attempt(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    use LoginResult::*;
    let id = pending_id(app, req.headers());
    let browser = SignInCookie::of(app, req.headers());
    let posted = sign_in::read_post(app, conn, &browser, Step::Code(id.as_ref()), req).await;
    let (previous, meta, form) = match posted {
        Ok(posted) => (posted.previous, posted.meta, posted.form),
        Err(refused) => return refused,
    };
    let client = meta.client.to_string();
    // Without a cookie (it lasts as long as the pending sign-in) there is nothing to go on.
    let Some(id) = id else {
        return (start_over(app, &browser, "/", TOO_LONG), Invalid);
    };
    let pending = match app.pending.get(&id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return (start_over(app, &browser, "/", TOO_LONG), Invalid);
        }
        Err(e) => return (login_unavailable(app, &browser, "/", &e), Unavailable),
    };
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() {
        let res = code_refused(app, &id, &Refusal::NoCode);
        return (res, Invalid);
    }

    let verdict = match app.limiter.check(&pending.user, &client).await {
        Ok(v) => v,
        Err(e) => {
            return (
                login_unavailable(app, &browser, &pending.rd, &e),
                Unavailable,
            );
        }
    };
    if let Verdict::Limited(wait) = verdict {
        tracing::warn!(client, "code refused: too many failed attempts");
        let res = code_refused(app, &id, &Refusal::TooManyAttempts { wait });
        return (res, RateLimited);
    }

    // The user as the policy knows them now: removed, a new password or no TOTP any more since
    // the password step all mean starting over.
    let policy = app.gate.policy();
    let user = policy
        .user(&pending.user)
        .filter(|u| u.credentials == pending.credentials);
    let Some((user, secret)) = user.and_then(|u| u.totp.as_ref().map(|s| (u, s))) else {
        let _ = app.pending.take(&id).await;
        return (start_over(app, &browser, &pending.rd, TOO_LONG), Invalid);
    };

    let step =
        if code.len() == usize::from(totp::DIGITS) && code.bytes().all(|b| b.is_ascii_digit()) {
            secret.check(&code, totp::unix_now())
        } else {
            None
        };
    // A replayed code is a wrong code: same answer, same count.
    let fresh = match step {
        Some(step) => match app.pending.use_step(&user.name, step).await {
            Ok(fresh) => fresh,
            Err(e) => {
                return (
                    login_unavailable(app, &browser, &pending.rd, &e),
                    Unavailable,
                );
            }
        },
        None => false,
    };
    if !fresh {
        if let Err(e) = app.limiter.record_failure(&user.name, &client).await {
            return (
                login_unavailable(app, &browser, &pending.rd, &e),
                Unavailable,
            );
        }
        if step.is_some() {
            tracing::warn!(user = user.name.as_str(), "login failed: code already used");
        } else {
            tracing::warn!(user = user.name.as_str(), "login failed: wrong code");
        }
        let res = match app.pending.wrong_code(&id).await {
            Ok(AfterWrong::Alive(_)) => code_refused(app, &id, &Refusal::WrongCode),
            Ok(AfterWrong::Ended) => start_over(app, &browser, &pending.rd, TOO_MANY_WRONG),
            Err(e) => {
                return (
                    login_unavailable(app, &browser, &pending.rd, &e),
                    Unavailable,
                );
            }
        };
        return (res, WrongCredentials);
    }

    // The right code: the pending sign-in is consumed (by this request only), then the session
    // is made exactly as a password-only sign-in makes it.
    let pending = match app.pending.take(&id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return (start_over(app, &browser, &pending.rd, TOO_LONG), Invalid);
        }
        Err(e) => {
            return (
                login_unavailable(app, &browser, &pending.rd, &e),
                Unavailable,
            );
        }
    };
    match sign_in::complete(app, &browser, &policy, user, previous, &meta, &pending.rd).await {
        Ok(mut res) => {
            res.headers_mut()
                .append(header::SET_COOKIE, pending_cookie(app, None));
            (res, Success)
        }
        Err(res) => (res, Unavailable),
    }
}
