//! The second step of signing in for users with a TOTP secret: after the right password,
//! `POST {prefix}/login` starts a pending sign-in (see `pending`) bound to the browser by a
//! signed cookie and sends it to `{prefix}/login/code`, whose form takes the code from the
//! authenticator app. Only the right code, once, makes the session.

use std::net::IpAddr;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::cookies::SignInCookie;
use super::csrf::Binding;
use super::limiter::Verdict;
use super::pending::{AfterWrong, PendingLogin};
use super::sign_in::{self, Posted, SignIn, Step, login_unavailable};
use crate::credentials::totp::{self, TotpSecret};
use crate::gate::policy::{Policy, User};
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::ops::metrics::LoginResult;
use crate::proxy::Body;
use crate::session::{SessionId, StoreError};

const TOO_LONG: Refusal = Refusal::SignInExpired;
const TOO_MANY_WRONG: Refusal = Refusal::TooManyWrongCodes;

/// The code form of the pending sign-in `id`, with an optional message; its token is bound
/// to that pending sign-in.
fn code_page(
    auth: &SignIn<'_>,
    id: &SessionId,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Body> {
    let csrf = auth.tokens.issue(Binding::Pending(id.as_bytes()));
    sign_in::code_page(auth, status, error, &[("csrf", &csrf)])
}

/// After the right password for `user`, who has a TOTP secret: a pending sign-in, its cookie,
/// and a 303 to the code form. No session yet, and the failure count stays: only the code
/// clears it, or knowing the password would buy unlimited guesses at the code.
pub(crate) async fn begin(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    user: &User,
    rd: &str,
) -> (Response<Body>, LoginResult) {
    let login = PendingLogin {
        user: user.name.clone(),
        credentials: user.credentials,
        rd: rd.to_string(),
    };
    let id = match auth.pending.create(login).await {
        Ok(id) => id,
        Err(e) => {
            return (
                login_unavailable(auth, browser, rd, &e),
                LoginResult::Unavailable,
            );
        }
    };
    tracing::info!(
        user = user.name.as_str(),
        "password accepted; code required"
    );
    let location = HeaderValue::from_str(auth.login_code).expect("the prefix is header-safe");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    res.headers_mut()
        .insert(header::SET_COOKIE, auth.cookies.pending(Some(&id)));
    no_store(&mut res);
    (res, LoginResult::CodeRequired)
}

/// The sign-in page again (401), the pending cookie forgotten: the person starts over.
fn start_over(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    rd: &str,
    why: Refusal<'_>,
) -> Response<Body> {
    let mut res = sign_in::refused(auth, browser, &why, rd, "");
    res.headers_mut()
        .append(header::SET_COOKIE, auth.cookies.pending(None));
    res
}

/// `GET {prefix}/login/code`
pub async fn show(auth: &SignIn<'_>, req: &Request<Incoming>) -> Response<Body> {
    let Some(id) = auth.cookies.pending_id(req.headers()) else {
        let location = HeaderValue::from_str(auth.login).expect("the prefix is header-safe");
        let mut res = response::redirect(StatusCode::SEE_OTHER, location);
        no_store(&mut res);
        return res;
    };
    let browser = SignInCookie::of(auth.cookies, req.headers());
    match auth.pending.get(&id).await {
        Ok(Some(_)) => code_page(auth, &id, StatusCode::OK, None),
        Ok(None) => start_over(auth, &browser, "/", TOO_LONG),
        Err(e) => login_unavailable(auth, &browser, "/", &e),
    }
}

/// `POST {prefix}/login/code` from `client`
pub async fn submit(auth: &SignIn<'_>, client: IpAddr, req: Request<Incoming>) -> Response<Body> {
    let (res, result) = attempt(auth, client, req).await;
    auth.metrics.login(result);
    res
}

async fn attempt(
    auth: &SignIn<'_>,
    client: IpAddr,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    let id = auth.cookies.pending_id(req.headers());
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let posted = sign_in::read_post(auth, client, &browser, Step::Code(id.as_ref()), req).await;
    let posted = match posted {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let (id, pending) = match waiting(auth, &browser, id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let at = CodeAttempt {
        auth,
        browser,
        client: posted.meta.client.to_string(),
        posted,
        id,
        pending,
    };
    let code: String = at
        .posted
        .form
        .code
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if code.is_empty() {
        let res = at.code_refused(&Refusal::NoCode);
        return (res, LoginResult::Invalid);
    }
    if let Err(refused) = at.within_limits().await {
        return refused;
    }
    // The user as the policy knows them now: removed, a new password or no TOTP any more since
    // the password step all mean starting over.
    let policy = auth.gate.policy();
    let user = policy
        .user(&at.pending.user)
        .filter(|u| u.credentials == at.pending.credentials);
    let Some((user, secret)) = user.and_then(|u| u.totp.as_ref().map(|s| (u, s))) else {
        let _ = auth.pending.take(&at.id).await;
        return (at.start_over(TOO_LONG), LoginResult::Invalid);
    };
    match check_code(auth, user, secret, &code).await {
        Ok(Code::Fresh) => at.right(&policy, user).await,
        Ok(wrong) => at.wrong(user, wrong).await,
        Err(e) => at.unavailable(&e),
    }
}

/// The pending sign-in the post's cookie names, or the answer when there is none (any more).
async fn waiting(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    id: Option<SessionId>,
) -> Result<(SessionId, PendingLogin), (Response<Body>, LoginResult)> {
    // Without a cookie (it lasts as long as the pending sign-in) there is nothing to go on.
    let Some(id) = id else {
        return Err((
            start_over(auth, browser, "/", TOO_LONG),
            LoginResult::Invalid,
        ));
    };
    match auth.pending.get(&id).await {
        Ok(Some(pending)) => Ok((id, pending)),
        Ok(None) => Err((
            start_over(auth, browser, "/", TOO_LONG),
            LoginResult::Invalid,
        )),
        Err(e) => Err((
            login_unavailable(auth, browser, "/", &e),
            LoginResult::Unavailable,
        )),
    }
}

/// What a posted code turned out to be.
enum Code {
    /// Right, and not used before.
    Fresh,
    /// Right, but already used once.
    Replayed,
    Wrong,
}

/// Checks `code` against `user`'s `secret`; a right code is used up here.
async fn check_code(
    auth: &SignIn<'_>,
    user: &User,
    secret: &TotpSecret,
    code: &str,
) -> Result<Code, StoreError> {
    let well_formed =
        code.len() == usize::from(totp::DIGITS) && code.bytes().all(|b| b.is_ascii_digit());
    let step = if well_formed {
        secret.check(code, totp::unix_now())
    } else {
        None
    };
    Ok(match step {
        None => Code::Wrong,
        Some(step) if auth.pending.use_step(&user.name, step).await? => Code::Fresh,
        Some(_) => Code::Replayed,
    })
}

/// A code post, read, for a pending sign-in that is still waiting.
struct CodeAttempt<'a> {
    auth: &'a SignIn<'a>,
    browser: SignInCookie,
    /// Where it comes from, as the failure limits and the log name it.
    client: String,
    posted: Posted,
    id: SessionId,
    pending: PendingLogin,
}

impl CodeAttempt<'_> {
    /// The code form again, for a post `refusal` turned down.
    fn code_refused(&self, refusal: &Refusal<'_>) -> Response<Body> {
        refusal.in_form(|status, error| code_page(self.auth, &self.id, status, Some(error)))
    }

    fn start_over(&self, why: Refusal<'_>) -> Response<Body> {
        start_over(self.auth, &self.browser, &self.pending.rd, why)
    }

    fn unavailable(&self, e: &StoreError) -> (Response<Body>, LoginResult) {
        let res = login_unavailable(self.auth, &self.browser, &self.pending.rd, e);
        (res, LoginResult::Unavailable)
    }

    /// The same failure limits as the password step, counted for the pending user.
    async fn within_limits(&self) -> Result<(), (Response<Body>, LoginResult)> {
        match self
            .auth
            .limiter
            .check(&self.pending.user, &self.client)
            .await
        {
            Ok(Verdict::Allowed) => Ok(()),
            Ok(Verdict::Limited(wait)) => {
                tracing::warn!(
                    client = self.client.as_str(),
                    "code refused: too many failed attempts"
                );
                let res = self.code_refused(&Refusal::TooManyAttempts { wait });
                Err((res, LoginResult::RateLimited))
            }
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// A wrong or replayed code: the same answer and the same count; too many end the pending
    /// sign-in.
    async fn wrong(&self, user: &User, code: Code) -> (Response<Body>, LoginResult) {
        let auth = self.auth;
        if let Err(e) = auth.limiter.record_failure(&user.name, &self.client).await {
            return self.unavailable(&e);
        }
        if let Code::Replayed = code {
            tracing::warn!(user = user.name.as_str(), "login failed: code already used");
        } else {
            tracing::warn!(user = user.name.as_str(), "login failed: wrong code");
        }
        let res = match auth.pending.wrong_code(&self.id).await {
            Ok(AfterWrong::Alive(_)) => self.code_refused(&Refusal::WrongCode),
            Ok(AfterWrong::Ended) => self.start_over(TOO_MANY_WRONG),
            Err(e) => return self.unavailable(&e),
        };
        (res, LoginResult::WrongCredentials)
    }

    /// The right code: the pending sign-in is consumed (by this request only), then the
    /// session is made exactly as a password-only sign-in makes it.
    async fn right(&self, policy: &Policy, user: &User) -> (Response<Body>, LoginResult) {
        let auth = self.auth;
        let pending = match auth.pending.take(&self.id).await {
            Ok(Some(p)) => p,
            Ok(None) => return (self.start_over(TOO_LONG), LoginResult::Invalid),
            Err(e) => return self.unavailable(&e),
        };
        let Posted { previous, meta, .. } = &self.posted;
        let browser = &self.browser;
        match sign_in::complete(auth, browser, policy, user, *previous, meta, &pending.rd).await {
            Ok(mut res) => {
                res.headers_mut()
                    .append(header::SET_COOKIE, auth.cookies.pending(None));
                (res, LoginResult::Success)
            }
            Err(res) => (res, LoginResult::Unavailable),
        }
    }
}
