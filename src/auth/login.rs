//! The login form (`GET {prefix}/login`), the login itself (`POST {prefix}/login`) and logout
//! (`POST {prefix}/logout`).

use std::net::IpAddr;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::cookies::SignInCookie;
use super::csrf::Binding;
use super::form::read_checked_form;
use super::second_factor;
use super::sign_in::{self, Posted, SignIn, Step, login_unavailable, store_unavailable};
use crate::credentials::password::VerifyError;
use crate::gate::policy::{Policy, User};
use crate::http::error::Refusal;
use crate::http::redirect::safe_return;
use crate::http::response::{self, no_store};
use crate::ops::metrics::{EndReason, LoginResult};
use crate::proxy::Body;
use crate::session::StoreError;

const MAX_USERNAME: usize = 1024;
const MAX_PASSWORD: usize = 4096;

/// `GET {prefix}/login?rd=PATH` (`&signed_out=1` after a logout)
pub fn show(auth: &SignIn<'_>, req: &Request<Incoming>) -> Response<Body> {
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
    // The only way in is one provider: straight there (not after signing out, which would
    // sign the person in again at once if the provider still has them).
    if !signed_out
        && let Some(start) = super::provider::only_way_in(auth, rd.as_deref().unwrap_or("/"))
        && let Ok(location) = http::HeaderValue::from_str(&start)
    {
        let mut res = crate::http::response::redirect(StatusCode::SEE_OTHER, location);
        crate::http::response::no_store(&mut res);
        return res;
    }
    sign_in::sign_in(
        auth,
        &SignInCookie::of(auth.cookies, req.headers()),
        StatusCode::OK,
        rd.as_deref().unwrap_or("/"),
        "",
        None,
        notice,
    )
}

/// `POST {prefix}/login` from `client`
pub async fn submit(auth: &SignIn<'_>, client: IpAddr, req: Request<Incoming>) -> Response<Body> {
    let (res, result) = attempt(auth, client, req).await;
    auth.metrics.login(result);
    res
}

/// A sign-in attempt's answer, and how it ended for the metrics.
async fn attempt(
    auth: &SignIn<'_>,
    client: IpAddr,
    req: Request<Incoming>,
) -> (Response<Body>, LoginResult) {
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let posted = match sign_in::read_post(auth, client, &browser, Step::Password, req).await {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let at = Attempt {
        auth,
        browser,
        client: posted.meta.client.to_string(),
        posted,
    };
    let username = at.posted.form.username.trim();
    if let Some((typed_back, refusal)) = unusable(username, &at.posted.form.password) {
        let res = at.refused(&refusal, typed_back);
        return (res, LoginResult::Invalid);
    }
    if let Err(refused) = at.within_limits(username).await {
        return refused;
    }
    // One policy for the whole login: the user checked is the user the session is made for.
    let policy = auth.gate.policy();
    let user = policy.user(username);
    let hash = user.map_or(policy.dummy_hash(), |u| &u.password_hash);
    match (
        auth.verifier.verify(hash, &at.posted.form.password).await,
        user,
    ) {
        (Err(VerifyError::Busy), _) => (at.busy(username), LoginResult::Busy),
        (Ok(true), Some(user)) => at.accepted(&policy, user).await,
        // A right password for no user is the dummy hash's: as wrong as any other.
        (Ok(_), user) => at.wrong(username, user.is_some()).await,
    }
}

/// Why a posted username and password cannot be checked at all, and the name to type back
/// in with the refusal (not a name too long to be one).
fn unusable<'a>(username: &'a str, password: &str) -> Option<(&'a str, Refusal<'static>)> {
    if username.is_empty() || password.is_empty() {
        Some((username, Refusal::NoCredentials))
    } else if username.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
        Some(("", Refusal::CredentialsTooLong))
    } else {
        None
    }
}

/// A sign-in post, read, on its way to an answer.
struct Attempt<'a> {
    auth: &'a SignIn<'a>,
    browser: SignInCookie,
    /// Where it comes from, as the failure limits and the log name it.
    client: String,
    posted: Posted,
}

impl Attempt<'_> {
    /// The sign-in page again, saying why `refusal` turned the post down, `username` typed
    /// back in.
    fn refused(&self, refusal: &Refusal<'_>, username: &str) -> Response<Body> {
        let rd = &self.posted.form.rd;
        sign_in::refused(self.auth, &self.browser, refusal, rd, username)
    }

    fn unavailable(&self, e: &StoreError) -> (Response<Body>, LoginResult) {
        let res = login_unavailable(self.auth, &self.browser, &self.posted.form.rd, e);
        (res, LoginResult::Unavailable)
    }

    /// Checked before hashing, the same way for known and unknown names.
    async fn within_limits(&self, username: &str) -> Result<(), (Response<Body>, LoginResult)> {
        match sign_in::held_back(self.auth, username, &self.client, "login").await {
            Ok(None) => Ok(()),
            Ok(Some(refusal)) => Err((self.refused(&refusal, username), LoginResult::RateLimited)),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// No hashing slot free: 503, to be tried again in a moment.
    fn busy(&self, username: &str) -> Response<Body> {
        self.refused(&Refusal::LoginsBusy, username)
    }

    /// A wrong password, or a name that is no user (`known` false).
    async fn wrong(&self, username: &str, known: bool) -> (Response<Body>, LoginResult) {
        // Counted before answering: a failure the shared counters missed would be a free
        // guess, so a store that cannot count it refuses the attempt as unavailable.
        if let Err(e) = self
            .auth
            .limiter
            .record_failure(username, &self.client)
            .await
        {
            return self.unavailable(&e);
        }
        // The username is logged only when it is a real user: an unknown "username" is
        // sometimes a password typed into the wrong field.
        if known {
            tracing::warn!(user = username, "login failed: wrong password");
        } else {
            tracing::warn!("login failed: unknown user");
        }
        let res = self.refused(&Refusal::WrongCredentials, username);
        (res, LoginResult::WrongCredentials)
    }

    /// The right password for `user`: the second step for a user with a second factor (TOTP,
    /// passkeys), else the session.
    async fn accepted(&self, policy: &Policy, user: &User) -> (Response<Body>, LoginResult) {
        let posted = &self.posted;
        let factors = match second_factor::factors(self.auth, user).await {
            Ok(factors) => factors,
            Err(e) => return self.unavailable(&e),
        };
        if factors.any() {
            let rd = safe_return(&posted.form.rd, policy.redirect_hosts());
            return second_factor::begin(self.auth, &self.browser, user, rd).await;
        }
        let rd = &posted.form.rd;
        sign_in::complete_posted(self.auth, &self.browser, policy, user, posted, rd).await
    }
}

/// `POST {prefix}/logout`: ends the session server-side and clears the cookie; with
/// `everywhere=1`, ends every session of the user, on every replica.
pub async fn logout(auth: &SignIn<'_>, proto: &str, req: Request<Incoming>) -> Response<Body> {
    let session = auth.gate.authenticate(req.headers()).await;
    let signed_out = format!("{}?signed_out=1", auth.login);
    // With `logout_at_provider`, a provider's user is signed out there too, and comes back.
    let at_provider =
        super::provider::origin(auth, proto, &req).map(|origin| format!("{origin}{signed_out}"));
    // A same-origin browser post needs no token (nor a body); anything else must carry one
    // bound to the session cookie it brings.
    let id = auth.gate.session_id(req.headers());
    let binding = id.as_ref().map(|id| Binding::Session(id.as_bytes()));
    let form = match read_checked_form(auth.tokens, req, true, binding).await {
        Ok(form) => form,
        Err(refusal) => return refusal.response(),
    };
    let ended = match session {
        Ok(Some(s)) if form.everywhere => auth
            .gate
            .end_sessions_of(&s.user)
            .await
            .map(|n| Some((s, n))),
        Ok(Some(s)) => auth
            .gate
            .end_session(&s.id, EndReason::Logout)
            .await
            .map(|_| Some((s, 1))),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let mut res = match ended {
        Ok(session) => {
            let mut location = signed_out;
            if let Some((s, n)) = session {
                if let Some(url) = at_provider
                    .and_then(|back| super::provider::end_session_url(auth, &s.user, &back))
                {
                    location = url;
                }
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
            match HeaderValue::from_str(&location) {
                Ok(location) => response::redirect(StatusCode::SEE_OTHER, location),
                Err(_) => Refusal::Internal("a logout URL is not a header value").response(),
            }
        }
        // The browser still forgets the cookie, but the user is told the session may live on.
        Err(e) => store_unavailable(&e),
    };
    res.headers_mut()
        .insert(header::SET_COOKIE, auth.session_cookie.clear());
    no_store(&mut res);
    res
}
