//! The request path as named phases, each a plain function:
//! - **screen**: requests that must never reach the gate are refused (the head's size, the
//!   target, the host, the framing, the upgrade asked for);
//! - **route**: which of sessiongate's own endpoints the request is for, or the app;
//! - **decide**: the gate's one decision (own endpoints included);
//! - **answer**: that decision answered in one place: an own endpoint served, the request
//!   forwarded or tunnelled to the upstream, or refused;
//! - **log**: the access line and the metrics, from the decision's outcome.
//!
//! Nothing is forwarded unless the gate let it through. Screen, route and decide read only the
//! request's head, so they take any body (their unit tests use `Request<()>`); the answer
//! reads the body, and takes the connection's.

pub mod account;
pub mod forward_auth;
pub mod refusal;
pub mod sessions;
mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;

use crate::app::{App, Routes};
use crate::auth::{login, passkey, provider, second_factor};
use crate::gate::policy::User;
use crate::gate::{Decided, Decision, Gate, Head, HostOf, Own, Via};
use crate::http::conn::ConnInfo;
use crate::http::error::Refusal;
use crate::http::headers;
use crate::http::host;
use crate::http::limits::MAX_HEAD_BYTES;
use crate::http::paths::{self, BadTarget};
use crate::http::response;
use crate::http::upgrade::{self, Upgrade};
use crate::ops::logging::{self, RequestLine};
use crate::ops::outcome::Outcome;
use crate::proxy::{Body, Upstream};
use crate::session::SessionId;
use forward_auth::EdgeProxy;

/// Who a request was for and what was made of it, as the access log and the metrics name it.
struct Logged {
    user: Option<Arc<User>>,
    session: Option<SessionId>,
    outcome: Outcome,
    /// How long the upstream took to answer, for forwarded requests it answered.
    upstream: Option<Duration>,
}

impl Logged {
    /// A request answered without a user or a session.
    fn anonymous(outcome: Outcome) -> Logged {
        Logged {
            user: None,
            session: None,
            outcome,
            upstream: None,
        }
    }

    /// A request answered as the gate decided: its outcome, and whom it named.
    fn of(decided: Decided) -> Logged {
        Logged {
            outcome: decided.decision.outcome(),
            user: decided.decision.into_user(),
            session: decided.session,
            upstream: None,
        }
    }
}

/// What the access line says of a request, noted before the request is handed on.
struct Noted {
    start: Instant,
    method: Method,
    uri: Uri,
    client: IpAddr,
}

pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let _busy = conn.activity.begin();
    let start = Instant::now();
    let method = req.method().clone();
    let screened = screen(
        &mut req,
        conn.trusted,
        &app.routes,
        &app.config.upstream.upgrades,
    );
    let close_unless_switched = screened.upgrade.asked() && req.version() <= Version::HTTP_11;
    let noted = Noted {
        start,
        method,
        uri: req.uri().clone(),
        client: conn.client_addr(req.headers(), &app.config.server.trusted_proxies),
    };
    let (mut res, logged) = match screened.refused {
        Some(e) => (e.response(), Logged::anonymous(Outcome::Invalid)),
        // A panic anywhere below ends this request with a 500, never a forwarded request, and
        // leaves the connection's other requests and the process running.
        None => AssertUnwindSafe(serve(&app, &conn, req, screened.upgrade))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                (
                    Refusal::Internal("request handler panicked; answered 500").response(),
                    Logged::anonymous(Outcome::Invalid),
                )
            }),
    };
    finish(&app, &conn, &mut res, close_unless_switched);
    log(&app, &noted, &res, &logged);
    Ok(res)
}

/// Route, decide, answer: a request the screen let through.
async fn serve(
    app: &Arc<App>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    upgrade: Upgrade<'_>,
) -> (Response<Body>, Logged) {
    // Only a relayed upgrade tunnels; an ignored one is an ordinary request (`Upgrade` is
    // hop-by-hop, so the app never sees it) and refusals never got here.
    let relay = match upgrade {
        Upgrade::Relay(protocol) => Some(protocol),
        _ => None,
    };
    let Some(route) = route(app, req.uri().path()) else {
        let res = Refusal::NoUpstream.response();
        return (res, Logged::anonymous(Outcome::Invalid));
    };
    let via = Via::Connection {
        trusted: conn.trusted,
        proto: conn.proto,
        upgrade: relay.is_some(),
    };
    let decided = decide(&app.gate, &req, via).await;
    // The app's requests go straight to their answer: one future fewer on the proxy path.
    match route {
        Route::App(target) => {
            let (res, took) = upstream::answer(app, target, conn, req, &decided, relay).await;
            let mut logged = Logged::of(decided);
            logged.upstream = took;
            (res, logged)
        }
        // Boxed: the sign-in and page futures are large, and unboxed they would make every
        // request's future (kept per connection, and moved as it starts) that large too.
        Route::Own(endpoint) => Box::pin(answer_own(app, conn, req, endpoint, decided)).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Screen

/// What the screen made of a request.
struct Screened<'a> {
    /// The upgrade it asks for, judged even when the request is refused: unless switched, a
    /// request that carried `Upgrade` closes its connection.
    upgrade: Upgrade<'a>,
    /// Why it must never reach the gate; `None` for every other request, whose path is now
    /// normalized.
    refused: Option<Refusal<'static>>,
}

/// Screens a request before anything else reads it: a head over the size limit, a target that
/// is not a clean path, no host or not one host, framing two parsers could read differently,
/// or an upgrade that may not be relayed (`upgrades`: `upstream.upgrades`). `trusted`: the
/// peer is a trusted proxy (see [`forwarded_host`]).
fn screen<'a, B>(
    req: &mut Request<B>,
    trusted: bool,
    routes: &Routes,
    upgrades: &'a [HeaderValue],
) -> Screened<'a> {
    let refused = screen_head(req, trusted, routes);
    let upgrade = upgrade::decide(req, upgrades);
    let refused = refused.or_else(|| match &upgrade {
        Upgrade::Refused(why) => Some(Refusal::Upgrade(why.clone())),
        _ => None,
    });
    Screened { upgrade, refused }
}

fn screen_head<B>(
    req: &mut Request<B>,
    trusted: bool,
    routes: &Routes,
) -> Option<Refusal<'static>> {
    if head_bytes(req) > MAX_HEAD_BYTES {
        return Some(Refusal::HeadTooLarge);
    }
    if let Err(bad) = normalize_target(req) {
        return Some(Refusal::BadTarget(bad));
    }
    let uri = req.uri();
    if let Err(problem) = host::screen(
        req.version(),
        req.headers(),
        uri.authority(),
        uri.scheme_str(),
        forwarded_host(trusted, uri.path(), routes),
    ) {
        // nginx passes the client's `Host` to `auth_request` and turns anything but 401 and
        // 403 into a 500: at its endpoint a client's bad host is refused with 403.
        return Some(if uri.path() == routes.auth_nginx {
            Refusal::NginxBadHost(problem)
        } else {
            Refusal::BadHost(problem)
        });
    }
    headers::check_framing(req.headers())
        .err()
        .map(Refusal::Framing)
}

/// What the peer's `X-Forwarded-Host` is on a request for `path`: a client's is replaced; a
/// trusted proxy's must name the request's own host, except at the forward-auth endpoint,
/// where it is the original request's host, and nginx's, which reads only `Host` (nginx hands
/// the client's headers to `auth_request` as they are).
fn forwarded_host(trusted: bool, path: &str, routes: &Routes) -> host::ForwardedHost {
    if !trusted || path == routes.auth_nginx {
        host::ForwardedHost::Ignored
    } else if path == routes.auth_forward {
        host::ForwardedHost::Original
    } else {
        host::ForwardedHost::SameHost
    }
}

/// The size of the request head as sent. hyper's read buffer bounds the memory a head can
/// take, but a single read can overshoot it, so the documented limit is checked exactly here.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    req.headers()
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Replaces the request's path with its normalized form, so routing, the gate and the
/// upstream all see the same path: the one that was authorised.
fn normalize_target<B>(req: &mut Request<B>) -> Result<(), BadTarget> {
    let uri = req.uri();
    let normalized = match paths::normalize(uri.path(), uri.query())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(path) => path,
    };
    let mut target = normalized;
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| BadTarget::BadEscape)?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| BadTarget::BadEscape)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Route

/// Where a request goes.
enum Route<'a> {
    /// The app, behind the upstream.
    App(&'a Upstream),
    /// One of sessiongate's own endpoints.
    Own(Endpoint),
}

/// sessiongate's own endpoints.
enum Endpoint {
    /// A forward-auth endpoint: an edge proxy asking about another request.
    ForwardAuth(EdgeProxy),
    /// One of sessiongate's own pages (or an unknown own path).
    Page(Page),
}

/// sessiongate's own pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Login,
    LoginCode,
    Logout,
    Healthz,
    Readyz,
    Sessions,
    SessionsEnd,
    Logo,
    /// The passkey script, and signing in with a passkey.
    PasskeyScript,
    PasskeyOptions,
    PasskeySignIn,
    /// A passkey as the second factor.
    SecondPasskeyOptions,
    SecondPasskey,
    /// The account page and its passkey forms.
    Account,
    AccountPasskeyOptions,
    AccountPasskeyAdd,
    AccountPasskeyRemove,
    AccountTotpStart,
    AccountTotpConfirm,
    AccountTotpRemove,
    /// `{prefix}/oidc/{id}/start` and `/callback`: signing in with a provider.
    ProviderStart,
    ProviderCallback,
    /// Under the prefix, but none of the above: 404.
    Unknown,
}

/// The route for the normalized `path`; `None`: not an own path, and there is no upstream.
/// Own endpoints match exactly (a query is ignored); whether a path is sessiongate's own at all
/// is the gate's test, so the two never disagree.
fn route<'a>(app: &'a App, path: &str) -> Option<Route<'a>> {
    if !app.gate.is_own(path) {
        return app.upstream.as_ref().map(Route::App);
    }
    let r = &app.routes;
    if path == r.auth_nginx {
        return Some(Route::Own(Endpoint::ForwardAuth(EdgeProxy::Nginx)));
    }
    if path == r.auth_forward {
        return Some(Route::Own(Endpoint::ForwardAuth(EdgeProxy::Forward)));
    }
    let pages = [
        (&r.login, Page::Login),
        (&r.login_code, Page::LoginCode),
        (&r.logout, Page::Logout),
        (&r.healthz, Page::Healthz),
        (&r.readyz, Page::Readyz),
        (&r.sessions, Page::Sessions),
        (&r.sessions_end, Page::SessionsEnd),
        (&r.logo, Page::Logo),
        (&r.passkey_script, Page::PasskeyScript),
        (&r.passkey_options, Page::PasskeyOptions),
        (&r.passkey_sign_in, Page::PasskeySignIn),
        (&r.second_passkey_options, Page::SecondPasskeyOptions),
        (&r.second_passkey, Page::SecondPasskey),
        (&r.account, Page::Account),
        (&r.account_passkey_options, Page::AccountPasskeyOptions),
        (&r.account_passkey_add, Page::AccountPasskeyAdd),
        (&r.account_passkey_remove, Page::AccountPasskeyRemove),
        (&r.account_totp_start, Page::AccountTotpStart),
        (&r.account_totp_confirm, Page::AccountTotpConfirm),
        (&r.account_totp_remove, Page::AccountTotpRemove),
    ];
    let page = pages.iter().find(|(p, _)| *p == path);
    let page = page.map_or_else(|| provider_page(&r.oidc, path), |(_, page)| *page);
    Some(Route::Own(Endpoint::Page(page)))
}

/// A provider's endpoint under `oidc` (`{oidc}/{id}/start`, `{oidc}/{id}/callback`), if `path`
/// is one; which provider is read again by the endpoint (see [`provider_id`]).
fn provider_page(oidc: &str, path: &str) -> Page {
    match provider_id(oidc, path) {
        Some((_, "start")) => Page::ProviderStart,
        Some((_, "callback")) => Page::ProviderCallback,
        _ => Page::Unknown,
    }
}

/// The provider id and the step in a provider endpoint's `path`.
fn provider_id<'p>(oidc: &str, path: &'p str) -> Option<(&'p str, &'p str)> {
    let rest = path.strip_prefix(oidc)?.strip_prefix('/')?;
    let (id, step) = rest.split_once('/')?;
    (!id.is_empty() && !step.contains('/')).then_some((id, step))
}

// ---------------------------------------------------------------------------------------------
// Decide

/// The gate's decision for `req`, which came `via` a connection. Not an `async fn` of its own:
/// each level of futures between the connection and the upstream leg is one more state moved
/// and dispatched on every poll of a proxied request.
fn decide<'r, B>(
    gate: &'r Gate,
    req: &'r Request<B>,
    via: Via,
) -> impl Future<Output = Decided> + 'r {
    gate.decide(Head {
        method: req.method(),
        host: HostOf::Request(req.headers(), req.uri().authority()),
        path: req.uri().path(),
        headers: req.headers(),
        via,
    })
}

// ---------------------------------------------------------------------------------------------
// Answer

/// The answer for one of sessiongate's own endpoints (the app's requests are answered by
/// `upstream::answer`).
async fn answer_own(
    app: &Arc<App>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    decided: Decided,
) -> (Response<Body>, Logged) {
    match endpoint {
        Endpoint::ForwardAuth(edge) => {
            // Labelled by what the gate decided for the edge proxy's request, so the metrics
            // say the same whichever way sessiongate is deployed.
            let (res, judged) = forward_auth::answer(app, conn, &req, edge, &own(decided)).await;
            let logged = judged.map_or(Logged::anonymous(Outcome::OwnEndpoint), Logged::of);
            (res, logged)
        }
        Endpoint::Page(page) => (
            own_page(app, conn, req, page, own(decided)).await,
            Logged::anonymous(Outcome::OwnEndpoint),
        ),
    }
}

/// Who may use an own endpoint, as the gate decided. The route and the gate read one test for
/// own paths, so the gate decided `Own`; were they ever to part, the answer is one that grants
/// nothing: no trusted edge proxy asking, nobody signed in.
fn own(decided: Decided) -> Own {
    match decided.decision {
        Decision::Own(own) => own,
        _ => Own::Mine(Ok(None)),
    }
}

/// The session the gate found for a page for the signed-in user only. Any other decision
/// (which the gate never makes for such a page) counts as nobody signed in.
fn mine(own: Own) -> sessions::Signed {
    match own {
        Own::Mine(signed) => signed,
        _ => Ok(None),
    }
}

/// sessiongate's own pages: sign-in, sign-out, health, the sessions page, the logo.
async fn own_page(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
    page: Page,
    own: Own,
) -> Response<Body> {
    let method = req.method();
    let client = |req: &Request<Incoming>| {
        conn.client_addr(req.headers(), &app.config.server.trusted_proxies)
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    let post = *method == Method::POST;
    match page {
        Page::Login if read => login::show(&app.sign_in(), &req),
        Page::Login if post => login::submit(&app.sign_in(), client(&req), req).await,
        Page::LoginCode if read => second_factor::show(&app.sign_in(), &req).await,
        Page::LoginCode if post => second_factor::submit(&app.sign_in(), client(&req), req).await,
        Page::Login | Page::LoginCode => Refusal::not_allowed("GET, POST", method).response(),
        // Never on GET: a link or an <img> on another site must not sign anyone out.
        Page::Logout if post => login::logout(&app.sign_in(), conn.proto, req).await,
        Page::SessionsEnd if post => sessions::end(app, req, mine(own)).await,
        Page::PasskeyOptions if post => passkey::options(&app.sign_in(), conn.proto, req).await,
        Page::PasskeySignIn if post => passkey::sign_in(&app.sign_in(), client(&req), req).await,
        Page::AccountPasskeyOptions if post => {
            let client = client(&req).to_string();
            account::options(app, conn.proto, &client, req, mine(own)).await
        }
        Page::SecondPasskeyOptions if post => {
            second_factor::passkey_options(&app.sign_in(), conn.proto, req).await
        }
        Page::SecondPasskey if post => {
            second_factor::passkey_submit(&app.sign_in(), client(&req), req).await
        }
        Page::AccountPasskeyAdd if post => account::add(app, req, mine(own)).await,
        Page::AccountPasskeyRemove if post => {
            let client = client(&req).to_string();
            account::remove(app, &client, req, mine(own)).await
        }
        Page::AccountTotpStart if post => {
            let client = client(&req).to_string();
            account::totp_start(app, &client, req, mine(own)).await
        }
        Page::AccountTotpConfirm if post => account::totp_confirm(app, req, mine(own)).await,
        Page::AccountTotpRemove if post => {
            let client = client(&req).to_string();
            account::totp_remove(app, &client, req, mine(own)).await
        }
        Page::Logout
        | Page::SessionsEnd
        | Page::AccountTotpStart
        | Page::AccountTotpConfirm
        | Page::AccountTotpRemove
        | Page::PasskeyOptions
        | Page::PasskeySignIn
        | Page::SecondPasskeyOptions
        | Page::SecondPasskey
        | Page::AccountPasskeyOptions
        | Page::AccountPasskeyAdd
        | Page::AccountPasskeyRemove => Refusal::not_allowed("POST", method).response(),
        Page::Healthz if read => response::text(StatusCode::OK, "ok"),
        Page::Readyz if read => ready(app).await,
        Page::Sessions if read => sessions::show(app, req, mine(own)).await,
        Page::Logo if read => crate::pages::logo_response(&app.pages()),
        Page::PasskeyScript if read => crate::pages::passkey_script(),
        Page::Account if read => account::show(app, req, mine(own)).await,
        Page::ProviderStart | Page::ProviderCallback if read => {
            let path = req.uri().path().to_string();
            let Some((id, _)) = provider_id(&app.routes.oidc, &path) else {
                return Refusal::NoSuchEndpoint.response();
            };
            if page == Page::ProviderStart {
                provider::start(&app.sign_in(), id, conn.proto, &req).await
            } else {
                provider::callback(&app.sign_in(), id, client(&req), req).await
            }
        }
        Page::Healthz
        | Page::Readyz
        | Page::Sessions
        | Page::Logo
        | Page::PasskeyScript
        | Page::Account
        | Page::ProviderStart
        | Page::ProviderCallback => Refusal::not_allowed("GET", method).response(),
        Page::Unknown => Refusal::NoSuchEndpoint.response(),
    }
}

/// `{prefix}/readyz`: whether this replica can serve signed-in requests now, for load
/// balancers and readiness probes: the session store answers and the upstream, if there is
/// one, accepted a connection in its last probe (see `readiness`). Both are asked at once.
async fn ready(app: &App) -> Response<Body> {
    let sessions = app.gate.sessions();
    // The upstream's address when it did not accept the last probe's connection.
    let upstream_down = async {
        match &app.upstream_probe {
            Some(probe) if !probe.accepts().await => Some(&probe.authority),
            _ => None,
        }
    };
    let (store, upstream_down) = tokio::join!(sessions.ready(), upstream_down);
    if store.is_ok() && upstream_down.is_none() {
        // Still ready: sessions work from memory. Taking the only replica out of a load
        // balancer for a full disk would turn a risk into an outage.
        return match sessions.degraded() {
            Some(why) => response::text(
                StatusCode::OK,
                &format!(
                    "ready, degraded: session.state_dir cannot be written ({why}); sessions are served from memory and not kept across a restart until it can"
                ),
            ),
            None => response::text(StatusCode::OK, "ready"),
        };
    }
    Refusal::NotReady {
        store: store.is_err().then(|| sessions.kind()),
        upstream: upstream_down.map(|authority| authority.as_str()),
    }
    .response()
}

/// What every answer gets on its way out.
fn finish(app: &App, conn: &ConnInfo, res: &mut Response<Body>, close_unless_switched: bool) {
    // After any answer but 101 to a request that carried Upgrade, hyper would read the bytes
    // behind it as the next request: a client that sent its new protocol's first bytes early,
    // or a request hidden there, would be served as if it had been sent on its own.
    if close_unless_switched && res.status() != StatusCode::SWITCHING_PROTOCOLS {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if conn.proto == "https"
        && let Some(hsts) = &app.config.server.hsts
    {
        res.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Log

/// The metrics and the access line for one answered request.
fn log(app: &App, noted: &Noted, res: &Response<Body>, logged: &Logged) {
    let elapsed = noted.start.elapsed();
    let status = res.status().as_u16();
    let metrics = &app.metrics;
    metrics.request(logged.outcome, status);
    metrics.request_duration.observe(elapsed);
    if let Some(upstream) = logged.upstream {
        metrics.upstream_duration.observe(upstream);
    }
    // The path only: query strings can carry tokens. Never a cookie or a header value; the
    // session appears as a short hash of its id, enough to follow one session through a log.
    let tag = logged.session.map(|id| id.log_tag());
    logging::request(&RequestLine {
        method: &noted.method,
        path: noted.uri.path(),
        status,
        decision: logged.outcome,
        user: logged.user.as_ref().map(|u| u.name.as_str()),
        session: tag.as_ref().map(|t| t.as_str()),
        client: noted.client,
        micros: elapsed.as_micros() as u64,
        upstream_micros: logged.upstream.map(|d| d.as_micros() as u64),
        bytes: hyper::body::Body::size_hint(res.body()).exact(),
    });
}

#[cfg(test)]
mod tests;
