//! The login form (`GET {prefix}/login`), the login itself (`POST {prefix}/login`) and logout
//! (`POST {prefix}/logout`).

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::csrf::Binding;
use super::form::read_checked_form;
use super::limiter::Verdict;
use super::password::VerifyError;
use super::redirect::safe_return;
use super::second_factor;
use super::sign_in::{self, SignInCookie, Step, login_unavailable, refused, store_unavailable};
use crate::app::App;
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::ops::metrics::{EndReason, LoginResult};
use crate::proxy::Body;
use crate::server::conn::ConnInfo;

const MAX_USERNAME: usize = 1024;
const MAX_PASSWORD: usize = 4096;

/// `GET {prefix}/login?rd=PATH` (`&signed_out=1` after a logout)
pub fn show(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let mut rd = None;
    let mut signed_out = false;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match &*k {
            "rd" if rd.is_none() => rd = Some(v.into_owned()),
            "signed_out" => signed_out = v == "1",
            _ => {}
        }
    }
    let notice = signed_out.then_some("You are signed out.");
    sign_in::sign_in(
        app,
        &SignInCookie::of(app, req.headers()),
        StatusCode::OK,
        rd.as_deref().unwrap_or("/"),
        "",
        None,
        notice,
    )
}

/// `POST {prefix}/login`
pub async fn submit(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let (res, result) = attempt(app, conn, req).await;
    app.metrics.login(result);
    res
}

/// A sign-in attempt's answer, and how it ended for the metrics.
async fn attempt(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    use LoginResult::*;
    let browser = SignInCookie::of(app, req.headers());
    let (previous, meta, form) =
        match sign_in::read_post(app, conn, &browser, Step::Password, req).await {
            Ok(posted) => (posted.previous, posted.meta, posted.form),
            Err(refused) => return refused,
        };
    let client = meta.client.to_string();
    let username = form.username.trim();
    if username.is_empty() || form.password.is_empty() {
        let res = refused(app, &browser, &Refusal::NoCredentials, &form.rd, username);
        return (res, Invalid);
    }
    if username.len() > MAX_USERNAME || form.password.len() > MAX_PASSWORD {
        let res = refused(app, &browser, &Refusal::CredentialsTooLong, &form.rd, "");
        return (res, Invalid);
    }

    // Checked before hashing, the same way for known and unknown names.
    let verdict = match app.limiter.check(username, &client).await {
        Ok(v) => v,
        Err(e) => return (login_unavailable(app, &browser, &form.rd, &e), Unavailable),
    };
    if let Verdict::Limited(wait) = verdict {
        tracing::warn!(client, "login refused: too many failed attempts");
        let refusal = Refusal::TooManyAttempts { wait };
        let res = refused(app, &browser, &refusal, &form.rd, username);
        return (res, RateLimited);
    }

    // One policy for the whole login: the user checked is the user the session is made for.
    let policy = app.gate.policy();
    let user = policy.user(username);
    let hash = user.map_or(policy.dummy_hash(), |u| &u.password_hash);
    let verified = app
        .verifier
        .verify(hash, &form.password)
        .await
        .map(|ok| ok && user.is_some());
    match verified {
        Err(VerifyError::Busy) => {
            let res = refused(app, &browser, &Refusal::LoginsBusy, &form.rd, username);
            (res, Busy)
        }
        Ok(false) => {
            // Counted before answering: a failure the shared counters missed would be a free
            // guess, so a store that cannot count it refuses the attempt as unavailable.
            if let Err(e) = app.limiter.record_failure(username, &client).await {
                return (login_unavailable(app, &browser, &form.rd, &e), Unavailable);
            }
            // The username is logged only when it is a real user: an unknown "username" is
            // sometimes a password typed into the wrong field.
            if user.is_some() {
                tracing::warn!(user = username, "login failed: wrong password");
            } else {
                tracing::warn!("login failed: unknown user");
            }
            let res = refused(
                app,
                &browser,
                &Refusal::WrongCredentials,
                &form.rd,
                username,
            );
            (res, WrongCredentials)
        }
        Ok(true) => {
            let Some(user) = user else {
                let refusal = Refusal::Internal("a verified password's user is gone");
                return (refusal.response(), Invalid);
            };
            if user.totp.is_some() {
                let rd = safe_return(&form.rd, policy.redirect_hosts());
                return second_factor::begin(app, &browser, user, rd).await;
            }
            match sign_in::complete(app, &browser, &policy, user, previous, &meta, &form.rd).await {
                Ok(res) => (res, Success),
                Err(res) => (res, Unavailable),
            }
        }
    }
}

/// `POST {prefix}/logout`: ends the session server-side and clears the cookie; with
/// `everywhere=1`, ends every session of the user, on every replica.
pub async fn logout(app: &App, req: Request<Incoming>) -> Response<Body> {
    let session = app.gate.authenticate(req.headers()).await;
    // A same-origin browser post needs no token (nor a body); anything else must carry one
    // bound to the session cookie it brings.
    let id = app.gate.session_id(req.headers());
    let binding = id.as_ref().map(|id| Binding::Session(id.as_bytes()));
    let form = match read_checked_form(app, req, true, binding).await {
        Ok(form) => form,
        Err(refusal) => return refusal.response(),
    };
    let ended = match session {
        Ok(Some(s)) if form.everywhere => app
            .gate
            .end_sessions_of(&s.user)
            .await
            .map(|n| Some((s, n))),
        Ok(Some(s)) => app
            .gate
            .end_session(&s.id, EndReason::Logout)
            .await
            .map(|_| Some((s, 1))),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let mut res = match ended {
        Ok(session) => {
            if let Some((s, n)) = session {
                if form.everywhere {
                    tracing::info!(
                        user = s.user.name.as_str(),
                        sessions = n,
                        "logout everywhere"
                    );
                } else {
                    tracing::info!(user = s.user.name.as_str(), "logout");
                }
            }
            let location = HeaderValue::from_str(&format!("{}?signed_out=1", app.routes.login))
                .expect("the prefix is header-safe");
            response::redirect(StatusCode::SEE_OTHER, location)
        }
        // The browser still forgets the cookie, but the user is told the session may live on.
        Err(e) => store_unavailable(&e),
    };
    res.headers_mut()
        .insert(header::SET_COOKIE, app.clearing_cookie());
    no_store(&mut res);
    res
}
