//! The request path as a straight chain: requests that must not reach the gate are refused,
//! sessiongate's own endpoints answered, then the gate decides and its decision is answered in
//! one place: forwarded to the upstream, or refused. Nothing is forwarded unless the gate let
//! it through.

pub mod forward_auth;
pub mod refusal;

use std::borrow::Cow;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::app::{App, Routes};
use crate::auth::{login, second_factor};
use crate::gate::policy::User;
use crate::gate::{Decision, Head, HostOf, Verdict};
use crate::http::error::{Refusal, is_navigation};
use crate::http::headers;
use crate::http::host;
use crate::http::limits::MAX_HEAD_BYTES;
use crate::http::paths::{self, BadTarget};
use crate::http::response;
use crate::http::upgrade::{self, Upgrade};
use crate::ops::logging::{self, RequestLine};
use crate::ops::metrics::DecisionLabel;
use crate::pages::sessions;
use crate::proxy::tunnel;
use crate::proxy::{Body, Forwarding, ProxyError, UpgradeAnswer, Upstream};
use crate::server::conn::ConnInfo;
use crate::session::SessionId;
use forward_auth::EdgeProxy;

/// Who a request was for and what was made of it, as the access log and the metrics name it.
struct Logged {
    user: Option<Arc<User>>,
    session: Option<SessionId>,
    decision: DecisionLabel,
    /// How long the upstream took to answer, for forwarded requests it answered.
    upstream: Option<Duration>,
}

impl Logged {
    /// A request answered without a user or a session.
    fn anonymous(decision: DecisionLabel) -> Logged {
        Logged {
            user: None,
            session: None,
            decision,
            upstream: None,
        }
    }
}

pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let _busy = conn.activity.begin();
    let start = Instant::now();
    let method = req.method().clone();
    let refused = refusal(&mut req, conn.trusted, &app.routes);
    let upgrade = upgrade::decide(&req, &app.config.upstream.upgrades);
    let close_unless_switched = upgrade.asked() && req.version() <= Version::HTTP_11;
    let uri = req.uri().clone();
    let client = conn.client_addr(req.headers(), &app.config.server.trusted_proxies);
    let (mut res, logged) = match (refused, upgrade) {
        (None, Upgrade::Refused(why)) => (
            Refusal::Upgrade(why).response(),
            Logged::anonymous(DecisionLabel::Invalid),
        ),
        // A panic anywhere below ends this request with a 500, never a forwarded request, and
        // leaves the connection's other requests and the process running.
        (None, upgrade) => AssertUnwindSafe(route(&app, &conn, req, upgrade))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                (
                    Refusal::Internal("request handler panicked; answered 500").response(),
                    Logged::anonymous(DecisionLabel::Invalid),
                )
            }),
        (Some(Refusal::BadHost(problem)), _) if uri.path() == app.routes.auth_nginx => (
            forward_auth::refused_host(problem),
            Logged::anonymous(DecisionLabel::Invalid),
        ),
        (Some(e), _) => (e.response(), Logged::anonymous(DecisionLabel::Invalid)),
    };
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
    let elapsed = start.elapsed();
    let status = res.status().as_u16();
    let metrics = &app.metrics;
    metrics.request(logged.decision, status);
    metrics.request_duration.observe(elapsed);
    if let Some(upstream) = logged.upstream {
        metrics.upstream_duration.observe(upstream);
    }
    // The path only: query strings can carry tokens. Never a cookie or a header value; the
    // session appears as a short hash of its id, enough to follow one session through a log.
    let tag = logged.session.map(|id| id.log_tag());
    logging::request(&RequestLine {
        method: &method,
        path: uri.path(),
        status,
        decision: logged.decision.as_str(),
        user: logged.user.as_ref().map(|u| u.name.as_str()),
        session: tag.as_ref().map(|t| t.as_str()),
        client,
        micros: elapsed.as_micros() as u64,
        upstream_micros: logged.upstream.map(|d| d.as_micros() as u64),
        bytes: hyper::body::Body::size_hint(res.body()).exact(),
    });
    Ok(res)
}

/// Why a request must never reach the gate: a head over the size limit, a target that is not
/// a clean path, no host or not one host, or framing two parsers could read differently.
/// `None` for every other request, whose path is now normalized. `trusted`: the peer is a
/// trusted proxy (see [`forwarded_host`]).
fn refusal<B>(req: &mut Request<B>, trusted: bool, routes: &Routes) -> Option<Refusal<'static>> {
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
        return Some(Refusal::BadHost(problem));
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

async fn route(
    app: &Arc<App>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    upgrade: Upgrade<'_>,
) -> (Response<Body>, Logged) {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix(app.config.auth.prefix.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return own_endpoint(app, conn, req).await;
    }
    let Some(upstream) = &app.upstream else {
        let res = Refusal::NoUpstream.response();
        return (res, Logged::anonymous(DecisionLabel::Invalid));
    };
    // Only a relayed upgrade tunnels; an ignored one is an ordinary request (`Upgrade` is
    // hop-by-hop, so the app never sees it) and refusals never got here.
    let upgrade = match upgrade {
        Upgrade::Relay(protocol) => Some(protocol),
        _ => None,
    };
    if upgrade.is_some()
        && !upgrade::origin_allowed(req.headers(), conn, &app.config.auth.websocket_origins)
    {
        let res = Refusal::CrossSiteUpgrade.response();
        return (res, Logged::anonymous(DecisionLabel::Forbidden));
    }
    let verdict = app
        .gate
        .decide(&Head {
            method: req.method(),
            host: HostOf::Request(req.headers(), req.uri().authority()),
            path,
            headers: req.headers(),
        })
        .await;
    let user = match &verdict.decision {
        Decision::Allow { user } => Some(Some(&**user)),
        Decision::Public { user } => Some(user.as_deref()),
        _ => None,
    };
    let (mut res, upstream_time) = match (user, upgrade) {
        (Some(user), None) => proxy(app, upstream, conn, req, user).await,
        (Some(user), Some(protocol)) => {
            tunnel(app, upstream, conn, req, user, verdict.session, protocol).await
        }
        (None, _) => (refusal::answer(app, &req, &verdict.decision), None),
    };
    // Only a signed-in answer: what a public path serves is the app's to cache (even to a
    // browser with a session), and a 101 starts a tunnel, not a response anyone stores.
    if let Decision::Allow { .. } = verdict.decision
        && let Some(value) = &app.config.upstream.default_cache_control
        && !res.status().is_informational()
    {
        headers::default_cache_control(res.headers_mut(), value);
    }
    let mut logged = logged(verdict);
    logged.upstream = upstream_time;
    (res, logged)
}

/// sessiongate's own endpoints, matched exactly (a query is ignored).
async fn own_endpoint(
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> (Response<Body>, Logged) {
    let path = req.uri().path();
    let edge = if path == app.routes.auth_nginx {
        Some(EdgeProxy::Nginx)
    } else if path == app.routes.auth_forward {
        Some(EdgeProxy::Forward)
    } else {
        None
    };
    if let Some(edge) = edge {
        // A forward-auth check is labelled by what the gate decided for the edge proxy's
        // request, so the metrics say the same whichever way sessiongate is deployed.
        let (res, verdict) = forward_auth::answer(app, conn, &req, edge).await;
        let logged = verdict.map_or(Logged::anonymous(DecisionLabel::OwnEndpoint), logged);
        return (res, logged);
    }
    (
        page_endpoint(app, conn, req).await,
        Logged::anonymous(DecisionLabel::OwnEndpoint),
    )
}

/// Who a decision names, and its label, for the access log and the metrics.
fn logged(verdict: Verdict) -> Logged {
    let (user, decision) = match verdict.decision {
        Decision::Allow { user } => (Some(user), DecisionLabel::Allow),
        Decision::Public { user } => (user, DecisionLabel::Public),
        Decision::Forbidden { user } => (user, DecisionLabel::Forbidden),
        Decision::LoginRequired => (None, DecisionLabel::LoginRequired),
        Decision::Unavailable => (None, DecisionLabel::Unavailable),
    };
    Logged {
        user,
        session: verdict.session,
        decision,
        upstream: None,
    }
}

/// The sign-in, sign-out and health endpoints.
async fn page_endpoint(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    if path == app.routes.login {
        match *method {
            Method::GET | Method::HEAD => login::show(app, &req),
            Method::POST => login::submit(app, conn, req).await,
            _ => Refusal::not_allowed("GET, POST", method).response(),
        }
    } else if path == app.routes.login_code {
        match *method {
            Method::GET | Method::HEAD => second_factor::show(app, &req).await,
            Method::POST => second_factor::submit(app, conn, req).await,
            _ => Refusal::not_allowed("GET, POST", method).response(),
        }
    } else if path == app.routes.logout {
        match *method {
            // Never on GET: a link or an <img> on another site must not log anyone out.
            Method::POST => login::logout(app, req).await,
            _ => Refusal::not_allowed("POST", method).response(),
        }
    } else if path == app.routes.healthz {
        match *method {
            Method::GET | Method::HEAD => response::text(StatusCode::OK, "ok"),
            _ => Refusal::not_allowed("GET", method).response(),
        }
    } else if path == app.routes.readyz {
        match *method {
            Method::GET | Method::HEAD => ready(app).await,
            _ => Refusal::not_allowed("GET", method).response(),
        }
    } else if path == app.routes.sessions {
        match *method {
            Method::GET | Method::HEAD => sessions::show(app, req).await,
            _ => Refusal::not_allowed("GET", method).response(),
        }
    } else if path == app.routes.logo {
        match *method {
            Method::GET | Method::HEAD => crate::pages::logo_response(&app.pages()),
            _ => Refusal::not_allowed("GET", method).response(),
        }
    } else if path == app.routes.sessions_end {
        match *method {
            Method::POST => sessions::end(app, req).await,
            _ => Refusal::not_allowed("POST", method).response(),
        }
    } else {
        Refusal::NoSuchEndpoint.response()
    }
}

/// `{prefix}/readyz`: whether this replica can serve logged-in requests now, for load
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
        return response::text(StatusCode::OK, "ready");
    }
    Refusal::NotReady {
        store: store.is_err().then(|| sessions.kind()),
        upstream: upstream_down.map(|authority| authority.as_str()),
    }
    .response()
}

/// What the proxy adds to every request it forwards for `user` on `conn`.
fn forwarding<'a>(app: &'a App, conn: &'a ConnInfo, user: Option<&'a User>) -> Forwarding<'a> {
    Forwarding {
        identity_header: &app.config.upstream.identity_header,
        groups_header: &app.config.upstream.groups_header,
        user,
        peer: &conn.peer_header,
        trusted_peer: conn.trusted,
        proto: conn.proto,
        own_cookie: &app.config.session.cookie_name,
    }
}

/// An upgrade `upgrade::decide` relays and the gate let through: forwarded like any request
/// (with `Connection: upgrade` and the listed `protocol` set again after the hop-by-hop
/// scrub); on the upstream's 101 the tunnel starts, bound to the session; any other answer is
/// passed back as it is (and the connection closed after it, see `handle`).
async fn tunnel(
    app: &Arc<App>,
    upstream: &Upstream,
    conn: &Arc<ConnInfo>,
    mut req: Request<Incoming>,
    user: Option<&User>,
    session: Option<SessionId>,
    protocol: &HeaderValue,
) -> (Response<Body>, Option<Duration>) {
    let binding = match session {
        None => None,
        Some(id) => match app.gate.sessions().peek(&id).await {
            Ok(Some((owner, started))) => Some((owner, tunnel::Binding { id, started })),
            Ok(None) => return (refusal::answer(app, &req, &Decision::LoginRequired), None),
            Err(_) => return (Refusal::StoreUnavailable { cause: None }.response(), None),
        },
    };
    let client_side = hyper::upgrade::on(&mut req);
    upstream.prepare(&mut req, forwarding(app, conn, user));
    let h = req.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    h.insert(header::UPGRADE, protocol.clone());
    let start = Instant::now();
    let answer = upstream.send_upgrade(req).await;
    let took = start.elapsed();
    let res = match answer {
        Err(e) => {
            count_failure(app, &e);
            return (Refusal::from(&e).response(), None);
        }
        Ok(UpgradeAnswer::Refused(res)) => res.map(Either::Right),
        Ok(UpgradeAnswer::Switched {
            head,
            upstream: upstream_side,
        }) => {
            // The connection becomes the tunnel and keeps its place under max_connections
            // (one upgrade per connection: after a 101 nothing more is read from it).
            let Some(permit) = conn.take_permit() else {
                let refusal = Refusal::Internal("an upgraded connection had no permit to keep");
                return (refusal.response(), Some(took));
            };
            let sessions = app.gate.sessions();
            let registered = app.gate.tunnels().register(
                binding
                    .as_ref()
                    .map(|(owner, b)| (sessions.key_of(&b.id), *owner)),
            );
            tunnel::spawn(
                app.clone(),
                conn.clone(),
                client_side,
                upstream_side,
                registered,
                binding.map(|(_, b)| b),
                permit,
            );
            Response::from_parts(head, Either::Left(http_body_util::Full::default()))
        }
    };
    (res, Some(took))
}

async fn proxy(
    app: &App,
    upstream: &Upstream,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    user: Option<&User>,
) -> (Response<Body>, Option<Duration>) {
    let navigation = is_navigation(req.method(), req.headers());
    upstream.prepare(&mut req, forwarding(app, conn, user));
    let start = Instant::now();
    match upstream.send(req).await {
        Ok(res) => (res.map(Either::Right), Some(start.elapsed())),
        Err(e) => {
            count_failure(app, &e);
            (app.pages().refuse(&Refusal::from(&e), navigation), None)
        }
    }
}

/// Counts a failed upstream leg in the metrics, unless the client's own body broke it.
fn count_failure(app: &App, e: &ProxyError) {
    if let Some(kind) = e.failure() {
        app.metrics.upstream_error(kind);
    }
}
