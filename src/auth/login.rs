//! The login form (`GET {prefix}/login`), the login itself (`POST {prefix}/login`) and logout
//! (`POST {prefix}/logout`).

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::csrf;
use super::limiter::Verdict;
use super::password::VerifyError;
use super::redirect::safe_return;
use super::second_factor;
use crate::app::App;
use crate::conn::ConnInfo;
use crate::metrics::{EndReason, LoginResult};
use crate::pages::{self, SignIn};
use crate::request_error::RequestError;
use crate::response::{self, Body, no_store};
use crate::session::SessionMeta;
use crate::session::browser::Browser;

/// Largest login form body read; a username and password fit many times over.
const MAX_FORM_BYTES: usize = 8 * 1024;
const MAX_USERNAME: usize = 1024;
const MAX_PASSWORD: usize = 4096;

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

fn sign_in(
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
    sign_in(
        app,
        StatusCode::OK,
        rd.as_deref().unwrap_or("/"),
        "",
        None,
        notice,
    )
}

#[derive(Default)]
pub(crate) struct Form {
    username: String,
    password: String,
    rd: String,
    csrf: String,
    /// Logout: end every session of the user, not only this one.
    everywhere: bool,
    /// The sessions page: the handle of the session to end.
    pub session: String,
    /// The code form: the code from the authenticator app.
    pub code: String,
}

/// Reads an urlencoded form (login or logout), or answers why it can't.
async fn read_form(req: Request<Incoming>) -> Result<Form, Response<Body>> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(response::text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the form must be sent as application/x-www-form-urlencoded",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(response::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the login form is larger than {MAX_FORM_BYTES} bytes"),
            ));
        }
        Err(_) => {
            return Err(response::text(
                StatusCode::BAD_REQUEST,
                "the login form could not be read",
            ));
        }
    };
    let mut form = Form {
        rd: "/".to_string(),
        ..Form::default()
    };
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "username" => form.username = v.into_owned(),
            "password" => form.password = v.into_owned(),
            "rd" => form.rd = v.into_owned(),
            "csrf" => form.csrf = v.into_owned(),
            "everywhere" => form.everywhere = v == "1",
            "session" => form.session = v.into_owned(),
            "code" => form.code = v.into_owned(),
            _ => {}
        }
    }
    Ok(form)
}

fn forbidden(message: &str) -> Response<Body> {
    let mut res = response::text(StatusCode::FORBIDDEN, message);
    no_store(&mut res);
    res
}

/// The CSRF rule for our POST endpoints: a browser that says "another site" is refused; a
/// client that says nothing must carry a valid form token. With `bodiless_ok`, a same-origin
/// browser post may come without a form at all (a logout button that is a bare POST).
pub(crate) async fn read_checked_form(
    app: &App,
    req: Request<Incoming>,
    bodiless_ok: bool,
) -> Result<Form, Response<Body>> {
    let origin = csrf::origin_of(&req);
    if origin == csrf::Origin::CrossSite {
        return Err(forbidden(
            "cross-site request refused: this form only accepts posts from its own site",
        ));
    }
    const NO_TOKEN: &str = "missing or expired form token: load the login page again and resubmit";
    let form = match read_form(req).await {
        Ok(form) => form,
        // No browser signal and no form at all: what is missing is the token.
        Err(res)
            if origin == csrf::Origin::Unknown
                && res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
        {
            return Err(forbidden(NO_TOKEN));
        }
        Err(res)
            if bodiless_ok
                && origin == csrf::Origin::SameOrigin
                && res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
        {
            Form::default()
        }
        Err(res) => return Err(res),
    };
    if origin == csrf::Origin::Unknown && !app.tokens.verify(&form.csrf) {
        return Err(forbidden(NO_TOKEN));
    }
    Ok(form)
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
    let previous = match app.gate.authenticate(req.headers()).await {
        Ok(session) => session.map(|a| a.id),
        Err(e) => return (login_unavailable(app, "/", &e), Unavailable),
    };
    let client_ip = conn.client_addr(req.headers(), &app.config.server.trusted_proxies);
    let client = client_ip.to_string();
    let headers = req.headers().clone();
    let form = match read_checked_form(app, req, false).await {
        Ok(f) => f,
        // A refused origin or token is 403; anything else is a form that cannot be read.
        Err(res) if res.status() == StatusCode::FORBIDDEN => return (res, Csrf),
        Err(res) => return (res, Invalid),
    };
    let username = form.username.trim();
    if username.is_empty() || form.password.is_empty() {
        let res = page(
            app,
            StatusCode::BAD_REQUEST,
            &form.rd,
            username,
            Some("Enter a username and a password."),
        );
        return (res, Invalid);
    }
    if username.len() > MAX_USERNAME || form.password.len() > MAX_PASSWORD {
        let res = page(
            app,
            StatusCode::BAD_REQUEST,
            &form.rd,
            "",
            Some("The username or password is too long."),
        );
        return (res, Invalid);
    }

    // Checked before hashing, the same way for known and unknown names.
    let verdict = match app.limiter.check(username, &client).await {
        Ok(v) => v,
        Err(e) => return (login_unavailable(app, &form.rd, &e), Unavailable),
    };
    if let Verdict::Limited(wait) = verdict {
        tracing::warn!(client, "login refused: too many failed attempts");
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let mut res = page(
            app,
            StatusCode::TOO_MANY_REQUESTS,
            &form.rd,
            username,
            Some(&format!(
                "Too many failed attempts. Try again in {secs} seconds."
            )),
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
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
            tracing::warn!("login refused: too many logins in progress");
            let mut res = page(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                &form.rd,
                username,
                Some("Too many sign-ins are in progress. Try again in a moment."),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (res, Busy)
        }
        Ok(false) => {
            // Counted before answering: a failure the shared counters missed would be a free
            // guess, so a store that cannot count it refuses the attempt as unavailable.
            if let Err(e) = app.limiter.record_failure(username, &client).await {
                return (login_unavailable(app, &form.rd, &e), Unavailable);
            }
            // The username is logged only when it is a real user: an unknown "username" is
            // sometimes a password typed into the wrong field.
            if user.is_some() {
                tracing::warn!(user = username, "login failed: wrong password");
            } else {
                tracing::warn!("login failed: unknown user");
            }
            let res = page(
                app,
                StatusCode::UNAUTHORIZED,
                &form.rd,
                username,
                Some("Invalid username or password."),
            );
            (res, WrongCredentials)
        }
        Ok(true) => {
            let Some(user) = user else {
                return (RequestError::Panic.response(), Invalid);
            };
            if user.totp.is_some() {
                let rd = safe_return(&form.rd, policy.redirect_hosts());
                return second_factor::begin(app, user, rd).await;
            }
            if let Err(e) = app.limiter.record_success(username).await {
                return (login_unavailable(app, &form.rd, &e), Unavailable);
            }
            // A fresh id on every login, and the one the browser brought is gone: no fixation.
            if let Some(old) = previous
                && let Err(e) = app.gate.end_session(&old, EndReason::Revoked).await
            {
                return (login_unavailable(app, &form.rd, &e), Unavailable);
            }
            let meta = SessionMeta {
                client: client_ip,
                browser: Browser::of(&headers),
            };
            let id = match app.gate.start_session(user, &meta).await {
                Ok(id) => id,
                Err(e) => return (login_unavailable(app, &form.rd, &e), Unavailable),
            };
            tracing::info!(user = username, "login");
            let location = HeaderValue::from_str(safe_return(&form.rd, policy.redirect_hosts()))
                .expect("safe return addresses are visible ASCII");
            let mut res = response::redirect(StatusCode::SEE_OTHER, location);
            res.headers_mut()
                .insert(header::SET_COOKIE, app.session_cookie(&id));
            no_store(&mut res);
            (res, Success)
        }
    }
}

/// `POST {prefix}/logout`: ends the session server-side and clears the cookie; with
/// `everywhere=1`, ends every session of the user, on every replica.
pub async fn logout(app: &App, req: Request<Incoming>) -> Response<Body> {
    let session = app.gate.authenticate(req.headers()).await;
    // A same-origin browser post needs no token (nor a body); anything else must carry it.
    let form = match read_checked_form(app, req, true).await {
        Ok(form) => form,
        Err(res) => return res,
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
