//! Signing in with an OpenID Connect provider: `GET {prefix}/oidc/{id}/start` files a fresh
//! attempt (state, nonce, PKCE verifier; bound to this browser's sign-in cookie) and sends the
//! browser to the provider; `GET {prefix}/oidc/{id}/callback` takes that attempt (once),
//! redeems the code, checks the ID token and the provider's rules, and ends like a password
//! sign-in, in `sign_in::complete`. Provider tokens end here: nothing of them is kept.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::cookies::SignInCookie;
use super::provider_attempts::{Attempt, browser_tag};
use super::sign_in::{self, SignIn, login_unavailable, start_url};
use crate::gate::policy::User;
use crate::http::error::Refusal;
use crate::http::redirect::safe_return;
use crate::http::response::{self, no_store};
use crate::oidc::Provider;
use crate::oidc::claims::Identity;
use crate::oidc::provider::Failure;
use crate::proxy::Body;
use crate::session::SessionMeta;
use crate::session::browser::Browser;
use crate::session::identity::{Profile, provider_key};

/// Where a browser that must sign in goes straight away, with `auth.auto_redirect`: the only
/// provider's start, when there is no other way in (no `[[users]]`).
pub(crate) fn only_way_in(auth: &SignIn<'_>, rd: &str) -> Option<String> {
    if !auth.auto_redirect || auth.gate.policy().users().next().is_some() {
        return None;
    }
    let all = auth.providers.all();
    match all.as_slice() {
        [only] => Some(start_url(auth, only.id(), rd)),
        _ => None,
    }
}

/// The origin browsers reach us at: `server.public_url`, else the request's scheme and host.
pub(crate) fn origin(auth: &SignIn<'_>, proto: &str, req: &Request<Incoming>) -> Option<String> {
    if let Some(url) = auth.public_url {
        return Some(url.to_string());
    }
    // The screen has checked the host already (one, well-formed, agreeing with the target).
    let host = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    Some(format!("{proto}://{host}"))
}

/// Where to send `user` after they signed out here, when their provider is configured with
/// `logout_at_provider` and has an `end_session_endpoint`: there, coming back to `back`.
pub(crate) fn end_session_url(auth: &SignIn<'_>, user: &User, back: &str) -> Option<String> {
    let profile = user.profile.as_ref()?;
    let provider = auth.providers.get(&profile.provider)?;
    if !provider.config.logout_at_provider {
        return None;
    }
    provider.end_session_url(back)
}

/// `GET {prefix}/oidc/{id}/start?rd=...`.
pub async fn start(
    auth: &SignIn<'_>,
    id: &str,
    proto: &str,
    req: &Request<Incoming>,
) -> Response<Body> {
    let Some(provider) = auth.providers.get(id) else {
        return Refusal::NoSuchProvider.response();
    };
    let rd = query_value(req, "rd").unwrap_or_else(|| "/".into());
    let rd = safe_return(&rd, auth.gate.policy().redirect_hosts()).to_string();
    let Some(origin) = origin(auth, proto, req) else {
        return Refusal::BadHost(crate::http::host::HostProblem::Missing).response();
    };
    let callback = format!("{origin}{}/{id}/callback", auth.oidc);
    let Some((url, state, secrets)) = provider.authorize(&callback) else {
        provider.retry_soon();
        auth.metrics.provider_login(id, "unavailable");
        return unavailable(auth, &provider, &back_to_sign_in(auth, &rd));
    };
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let (cookie, set_cookie) = browser.value(auth.cookies);
    let attempt = Attempt {
        provider: id.to_string(),
        secrets,
        rd,
        browser: browser_tag(&cookie),
    };
    match auth.attempts.put(&state, attempt).await {
        Ok(true) => {}
        Ok(false) => return Refusal::LoginsBusy.response(),
        Err(e) => return login_unavailable(auth, &browser, "/", &e),
    }
    let Ok(location) = HeaderValue::from_str(&url) else {
        return Refusal::Internal("the provider's authorization URL is not a header value")
            .response();
    };
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    if let Some(set_cookie) = set_cookie {
        res.headers_mut().append(header::SET_COOKIE, set_cookie);
    }
    no_store(&mut res);
    res
}

/// The styled 503 of a provider that is not discovered (yet); its link goes `back`.
fn unavailable(auth: &SignIn<'_>, provider: &Provider, back: &str) -> Response<Body> {
    auth.pages.refuse(
        &Refusal::ProviderUnavailable {
            name: &provider.config.name,
            login: back,
        },
        true,
    )
}

/// The sign-in page, carrying `rd`: where a failed provider sign-in's page links back to.
fn back_to_sign_in(auth: &SignIn<'_>, rd: &str) -> String {
    let rd: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{}?rd={rd}", auth.login)
}

/// What a callback's query says.
#[derive(Default)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn callback_query(req: &Request<Incoming>) -> Callback {
    let mut c = Callback::default();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        let slot = match &*k {
            "code" => &mut c.code,
            "state" => &mut c.state,
            "iss" => &mut c.iss,
            "error" => &mut c.error,
            "error_description" => &mut c.error_description,
            _ => continue,
        };
        // A parameter given twice is not one the provider sent: the first is kept, and the
        // checks below decide.
        slot.get_or_insert_with(|| v.into_owned());
    }
    c
}

fn query_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET {prefix}/oidc/{id}/callback?code=...&state=...` from `client`.
pub async fn callback(
    auth: &SignIn<'_>,
    id: &str,
    client: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(provider) = auth.providers.get(id) else {
        return Refusal::NoSuchProvider.response();
    };
    let browser = SignInCookie::of(auth.cookies, req.headers());
    let query = callback_query(&req);
    let attempt = match query.state.as_deref() {
        Some(state) => match auth.attempts.take(state).await {
            Ok(a) => a,
            Err(e) => return login_unavailable(auth, &browser, "/", &e),
        },
        None => None,
    };
    // The attempt must be this provider's and this browser's; compared as hashes of the
    // cookie, so the comparison says nothing of the cookie itself.
    let ours = attempt.filter(|a| {
        a.provider == id
            && browser
                .binding_value()
                .is_some_and(|cookie| constant_time_eq(&browser_tag(cookie), &a.browser))
    });
    let Some(attempt) = ours else {
        tracing::info!(
            provider = id,
            "provider sign-in restarted: the callback's state names no attempt of this browser (unknown, used, expired or another browser's)"
        );
        auth.metrics.provider_login(id, "restarted");
        return sign_in::refused(auth, &browser, &Refusal::SignInRestart, "/", "");
    };
    let back = back_to_sign_in(auth, &attempt.rd);
    if let Some(error) = &query.error {
        let description = query.error_description.as_deref();
        return provider_said(auth, &provider, error, description, &back);
    }
    let Some(code) = &query.code else {
        let failure = Failure::Refused("the response holds no code".into());
        return refused(auth, &provider, &failure, &back);
    };
    if let Err(f) = provider.check_callback_issuer(query.iss.as_deref()) {
        return refused(auth, &provider, &f, &back);
    }
    let identity = match provider.redeem(code, &attempt.secrets).await {
        Ok(identity) => identity,
        Err(f) => return refused(auth, &provider, &f, &back),
    };
    let meta = SessionMeta {
        client,
        browser: Browser::of(req.headers()),
    };
    signed_in(
        auth,
        &browser,
        &provider,
        identity,
        &meta,
        &attempt.rd,
        req.headers(),
    )
    .await
}

/// The provider sent the browser back with an error: shown as text, never a 500.
fn provider_said(
    auth: &SignIn<'_>,
    provider: &Provider,
    error: &str,
    description: Option<&str>,
    back: &str,
) -> Response<Body> {
    let printable =
        |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(300).collect() };
    let said = match description {
        Some(d) => format!("{} ({})", printable(error), printable(d)),
        None => printable(error),
    };
    tracing::info!(
        provider = provider.id(),
        error = said.as_str(),
        "the provider answered a sign-in with an error"
    );
    auth.metrics.provider_login(provider.id(), "denied");
    auth.pages.refuse(
        &Refusal::ProviderSaid {
            name: &provider.config.name,
            said: &said,
            denied: error == "access_denied",
            login: back,
        },
        true,
    )
}

/// A failed redemption: 503 when the provider could not be reached, 403 with the reason
/// otherwise; logged with the provider and the reason.
fn refused(
    auth: &SignIn<'_>,
    provider: &Provider,
    failure: &Failure,
    back: &str,
) -> Response<Body> {
    let reason = failure.to_string();
    let result = match failure {
        Failure::Unavailable(_) => "unavailable",
        Failure::Refused(_) => "refused",
        Failure::NotAllowed(_) => "not_allowed",
    };
    tracing::warn!(
        provider = provider.id(),
        reason = reason.as_str(),
        "provider sign-in refused"
    );
    auth.metrics.provider_login(provider.id(), result);
    if let Failure::Unavailable(_) = failure {
        return unavailable(auth, provider, back);
    }
    auth.pages.refuse(
        &Refusal::ProviderRefused {
            name: &provider.config.name,
            reason: &reason,
            login: back,
        },
        true,
    )
}

/// The last step: the provider's user, with their latest profile, gets a session like anyone.
async fn signed_in(
    auth: &SignIn<'_>,
    browser: &SignInCookie,
    provider: &Provider,
    identity: Identity,
    meta: &SessionMeta,
    rd: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    let policy = auth.gate.policy();
    let Some(user) = provider_user(auth, provider, &identity) else {
        // The provider was removed or changed by a reload during the sign-in.
        return sign_in::refused(auth, browser, &Refusal::SignInRestart, rd, "");
    };
    let previous = auth.gate.session_id(headers);
    match sign_in::complete(auth, browser, &policy, &user, previous, meta, rd).await {
        Ok(res) => {
            tracing::info!(
                provider = provider.id(),
                user = user.name.as_str(),
                "provider sign-in"
            );
            auth.metrics.provider_login(provider.id(), "success");
            res
        }
        Err(res) => {
            auth.metrics.provider_login(provider.id(), "unavailable");
            res
        }
    }
}

/// The user `identity` is under the policy of the moment: filed under the provider's key for
/// their subject, named `{provider id}:{username}`, with the claim's groups.
fn provider_user(
    auth: &SignIn<'_>,
    provider: &Provider,
    identity: &Identity,
) -> Option<std::sync::Arc<User>> {
    let key = provider_key(provider.id(), &identity.sub);
    let profile = Profile {
        provider: provider.id().to_string(),
        name: format!("{}:{}", provider.id(), identity.username),
        groups: identity.groups.clone(),
        signed_in_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    auth.gate
        .provider_user(&key, profile, provider.fingerprint())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}
