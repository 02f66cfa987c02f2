//! The second step of signing in for users with a second factor (a TOTP secret, or passkeys):
//! after the right password, `POST {prefix}/login` starts a pending sign-in (see `pending`)
//! bound to the browser by a signed cookie and sends it to `{prefix}/login/code`, whose page
//! takes the code from the authenticator app, or a passkey (`POST {prefix}/login/passkey`,
//! driven by the page's script). Only a right code, once, or a verified passkey makes the
//! session.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::cookies::SignInCookie;
use super::csrf::Binding;
use super::form::read_checked_form;
use super::passkey;
use super::pending::{AfterWrong, PendingLogin};
use super::provider_attempts::{Ceremony, tag_of};
use super::sign_in::{self, Posted, SignIn, Step, login_unavailable};
use crate::credentials::passkey::{Keys, Party, PasskeyError};
use crate::credentials::totp::{self, TotpSecret};
use crate::gate::policy::{Policy, User};
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::ops::metrics::LoginResult;
use crate::proxy::Body;
use crate::session::user_data::UserEntry;
use crate::session::{SessionId, StoreError};

const TOO_LONG: Refusal = Refusal::SignInExpired;
const TOO_MANY_WRONG: Refusal = Refusal::TooManyWrongCodes;

/// What a user can give after the password: a TOTP secret, and passkeys (with
/// `auth.passkeys`).
pub(crate) struct Factors {
    pub totp: Option<TotpSecret>,
    pub keys: Keys,
}

impl Factors {
    pub(crate) fn any(&self) -> bool {
        self.totp.is_some() || !self.keys.passkeys.is_empty()
    }
}

/// `user`'s second factors: the config's TOTP secret, else the one they set up themselves;
/// and their passkeys (with `auth.passkeys`).
pub(crate) async fn factors(auth: &SignIn<'_>, user: &User) -> Result<Factors, StoreError> {
    let mut keys = if auth.user_data.kept() && user.profile.is_none() {
        let entry = auth.user_data.get(&user.name).await?;
        entry.and_then(|e| Keys::parse(&e.json)).unwrap_or_default()
    } else {
        Keys::default()
    };
    let own = keys
        .totp
        .as_ref()
        .map(|own| own_totp(auth, user, &own.sealed));
    if !auth.passkeys {
        keys.passkeys.clear();
    }
    Ok(Factors {
        // The config's secret wins: the administrator's word over the user's.
        totp: user.totp.clone().or(own.flatten()),
        keys,
    })
}

/// A TOTP secret `user` set up themselves, opened. One that cannot be opened (the session
/// secret changed) is logged and counts as none.
fn own_totp(auth: &SignIn<'_>, user: &User, sealed: &str) -> Option<TotpSecret> {
    let opened = auth
        .sealer
        .open(sealed, &user.name)
        .and_then(|bytes| TotpSecret::from_bytes(bytes).ok());
    if opened.is_none() {
        tracing::error!(
            user = user.name.as_str(),
            "the TOTP secret this user set up cannot be opened (was session.secret changed?); it is ignored"
        );
    }
    opened
}

/// The code page of the pending sign-in `id`, offering what `factors` has, with an optional
/// message; its tokens are bound to that pending sign-in.
fn code_page(
    auth: &SignIn<'_>,
    id: &SessionId,
    factors: &Factors,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Body> {
    let csrf = auth.tokens.issue(Binding::Pending(id.as_bytes()));
    let offer = sign_in::Offer {
        code: factors.totp.is_some(),
        passkey: !factors.keys.passkeys.is_empty(),
    };
    sign_in::code_page(auth, status, error, &[("csrf", &csrf)], offer)
}

/// After the right password for `user`, who has a second factor: a pending sign-in, its cookie,
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
    let pending = match auth.pending.get(&id).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return start_over(auth, &browser, "/", TOO_LONG),
        Err(e) => return login_unavailable(auth, &browser, "/", &e),
    };
    let policy = auth.gate.policy();
    let Some(user) = policy.user(&pending.user) else {
        return start_over(auth, &browser, "/", TOO_LONG);
    };
    match factors(auth, user).await {
        Ok(factors) => code_page(auth, &id, &factors, StatusCode::OK, None),
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
    match read_step(auth, client, req).await {
        Ok((at, policy)) => at.check_code(&policy).await,
        Err(refused) => refused,
    }
}

/// A post to the second step, read: the pending sign-in it is for, still waiting, whose user
/// the policy (returned) still knows with the same credentials, and what they can give.
async fn read_step<'a>(
    auth: &'a SignIn<'a>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<(CodeAttempt<'a>, Arc<Policy>), (Response<Body>, LoginResult)> {
    let id = auth.cookies.pending_id(req.headers());
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let posted = sign_in::read_post(auth, client, &browser, Step::Code(id.as_ref()), req).await?;
    let (id, pending) = waiting(auth, &browser, id).await?;
    let policy = auth.gate.policy();
    let Some(user) = current_user(&policy, &pending) else {
        let _ = auth.pending.take(&id).await;
        let res = start_over(auth, &browser, &pending.rd, TOO_LONG);
        return Err((res, LoginResult::Invalid));
    };
    let factors = factors(auth, user).await.map_err(|e| {
        let res = login_unavailable(auth, &browser, &pending.rd, &e);
        (res, LoginResult::Unavailable)
    })?;
    let at = CodeAttempt {
        auth,
        browser,
        client: posted.meta.client.to_string(),
        posted,
        id,
        pending,
        factors,
    };
    Ok((at, policy))
}

/// The user of a pending sign-in as the policy knows them now: removed, or a new password or
/// TOTP secret since the password step, all mean starting over.
fn current_user<'p>(policy: &'p Policy, pending: &PendingLogin) -> Option<&'p User> {
    policy
        .user(&pending.user)
        .filter(|u| u.credentials == pending.credentials)
        .map(|u| &**u)
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
    factors: Factors,
}

impl CodeAttempt<'_> {
    /// The code page again, for a post `refusal` turned down.
    fn code_refused(&self, refusal: &Refusal<'_>) -> Response<Body> {
        refusal.in_form(|status, error| {
            code_page(self.auth, &self.id, &self.factors, status, Some(error))
        })
    }

    /// The code posted: the session if it is right and fresh.
    /// The user signing in (checked against `policy` when the post was read).
    fn user<'p>(&self, policy: &'p Policy) -> Option<&'p User> {
        current_user(policy, &self.pending)
    }

    async fn check_code(&self, policy: &Policy) -> (Response<Body>, LoginResult) {
        let Some(user) = self.user(policy) else {
            return (self.start_over(TOO_LONG), LoginResult::Invalid);
        };
        let code: String = self
            .posted
            .form
            .code
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if code.is_empty() {
            return (self.code_refused(&Refusal::NoCode), LoginResult::Invalid);
        }
        if let Err(refused) = self.within_limits().await {
            return refused;
        }
        let Some(secret) = &self.factors.totp else {
            return (self.code_refused(&Refusal::NoCode), LoginResult::Invalid);
        };
        match check_code(self.auth, user, secret, &code).await {
            Ok(Code::Fresh) => self.right(policy, user).await,
            Ok(wrong) => self.wrong(user, wrong).await,
            Err(e) => self.unavailable(&e),
        }
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
        let user = &self.pending.user;
        match sign_in::held_back(self.auth, user, &self.client, "code").await {
            Ok(None) => Ok(()),
            Ok(Some(refusal)) => Err((self.code_refused(&refusal), LoginResult::RateLimited)),
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
        let (posted, browser) = (&self.posted, &self.browser);
        let (mut res, result) =
            sign_in::complete_posted(auth, browser, policy, user, posted, &pending.rd).await;
        if result == LoginResult::Success {
            res.headers_mut()
                .append(header::SET_COOKIE, auth.cookies.pending(None));
        }
        (res, result)
    }
}

/// `POST {prefix}/login/passkey/options`: a challenge for the pending sign-in's passkeys.
pub async fn passkey_options(
    auth: &SignIn<'_>,
    proto: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let id = auth.cookies.pending_id(req.headers());
    let party = passkey::party_of(auth, proto, &req);
    let binding = id.as_ref().map(|id| Binding::Pending(id.as_bytes()));
    if let Err(refusal) = read_checked_form(auth.tokens, req, false, binding).await {
        return refusal.response();
    }
    let (Some(id), Some((origin, rp_id))) = (id, party) else {
        return Refusal::SignInExpired.response();
    };
    let pending = match auth.pending.get(&id).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return Refusal::SignInExpired.response(),
        Err(e) => return sign_in::store_unavailable(&e),
    };
    let policy = auth.gate.policy();
    let Some(user) = current_user(&policy, &pending) else {
        return Refusal::SignInExpired.response();
    };
    let keys = match factors(auth, user).await {
        Ok(f) => f.keys,
        Err(e) => return sign_in::store_unavailable(&e),
    };
    let started = Party::new(&rp_id, &origin).and_then(|p| p.start_second_factor(&keys));
    passkey::offer(auth, started, |state| Ceremony {
        state,
        bound: tag_of(id.as_bytes()),
        rp_id,
        origin,
        user: Some(user.name.clone()),
        name: None,
        handle: None,
    })
    .await
}

/// `POST {prefix}/login/passkey` from `client`: the passkey answer for a pending sign-in.
pub async fn passkey_submit(
    auth: &SignIn<'_>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let (res, result) = passkey_attempt(auth, client, req).await;
    auth.metrics.login(result);
    res
}

async fn passkey_attempt(
    auth: &SignIn<'_>,
    client: IpAddr,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    match read_step(auth, client, req).await {
        Ok((at, policy)) => at.check_passkey(&policy).await,
        Err(refused) => refused,
    }
}

impl CodeAttempt<'_> {
    /// The passkey answer posted: the session if it is one of the user's, verified.
    async fn check_passkey(&self, policy: &Policy) -> (Response<Body>, LoginResult) {
        let Some(user) = self.user(policy) else {
            return (self.start_over(TOO_LONG), LoginResult::Invalid);
        };
        if let Err(refused) = self.within_limits().await {
            return refused;
        }
        let form = &self.posted.form;
        let bound = tag_of(self.id.as_bytes());
        let ceremony = match passkey::take_ceremony(self.auth, &form.ceremony, &bound).await {
            Ok(Some(c)) if c.user.as_deref() == Some(user.name.as_str()) => c,
            Ok(_) => {
                return (
                    self.code_refused(&Refusal::PasskeyRestart),
                    LoginResult::Invalid,
                );
            }
            Err(e) => return self.unavailable(&e),
        };
        let party = Party::new(&ceremony.rp_id, &ceremony.origin);
        let checked =
            self.auth
                .user_data
                .change(&user.name, |entry| {
                    let Some(entry) = entry else {
                        return (None, Err(PasskeyError::Unreadable));
                    };
                    let keys = Keys::parse(&entry.json).unwrap_or_default();
                    let used = party.as_ref().map_err(Clone::clone).and_then(|p| {
                        p.finish_second_factor(&ceremony.state, &form.credential, &keys)
                    });
                    match used {
                        Ok(used) => {
                            let json = keys.with_used(used).to_json();
                            (
                                Some(UserEntry {
                                    handle: entry.handle,
                                    json,
                                }),
                                Ok(()),
                            )
                        }
                        Err(e) => (Some(entry.clone()), Err(e)),
                    }
                })
                .await;
        match checked {
            Ok(Ok(())) => self.right(policy, user).await,
            Ok(Err(e)) => self.wrong_passkey(user, &e).await,
            Err(e) => self.unavailable(&e),
        }
    }

    /// A refused passkey: counted like a wrong code, and the page saying why.
    async fn wrong_passkey(&self, user: &User, e: &PasskeyError) -> (Response<Body>, LoginResult) {
        let auth = self.auth;
        if let Err(e) = auth.limiter.record_failure(&user.name, &self.client).await {
            return self.unavailable(&e);
        }
        tracing::warn!(user = user.name.as_str(), reason = %e, "login failed: passkey refused");
        let reason = match e {
            PasskeyError::Refused(why) => why.clone(),
            other => other.to_string(),
        };
        let res = match auth.pending.wrong_code(&self.id).await {
            Ok(AfterWrong::Alive(_)) => {
                self.code_refused(&Refusal::PasskeyFailed { reason: &reason })
            }
            Ok(AfterWrong::Ended) => self.start_over(TOO_MANY_WRONG),
            Err(e) => return self.unavailable(&e),
        };
        (res, LoginResult::WrongCredentials)
    }
}
