//! The answer to a request for the app: forwarded to the upstream, tunnelled (an upgrade the
//! gate let through), or refused as the gate decided.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, header};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::app::App;
use crate::gate::policy::User;
use crate::gate::{Decided, Decision};
use crate::http::conn::ConnInfo;
use crate::http::error::{Refusal, is_navigation};
use crate::http::headers;
use crate::proxy::tunnel::{self, Tunnel};
use crate::proxy::{Body, Forwarding, ProxyError, UpgradeAnswer, Upstream};
use crate::session::SessionId;

use super::refusal;

/// A request for the app, answered as the gate decided: forwarded, tunnelled, or refused; and
/// how long the upstream took to answer, if it did.
pub(super) async fn answer(
    app: &Arc<App>,
    upstream: &Upstream,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    decided: &Decided,
    relay: Option<&HeaderValue>,
) -> (Response<Body>, Option<Duration>) {
    let user = match &decided.decision {
        Decision::Allow { user } => Some(Some(&**user)),
        Decision::Public { user } => Some(user.as_deref()),
        _ => None,
    };
    let (mut res, upstream_time) = match (user, relay) {
        (Some(user), None) => proxy(app, upstream, conn, req, user).await,
        (Some(user), Some(protocol)) => {
            tunnel(app, upstream, conn, req, user, decided.session, protocol).await
        }
        (None, _) => (refusal::answer(app, &req, &decided.decision), None),
    };
    // Only a signed-in answer: what a public path serves is the app's to cache (even to a
    // browser with a session), and a 101 starts a tunnel, not a response anyone stores.
    if let Decision::Allow { .. } = decided.decision
        && let Some(value) = &app.config.upstream.default_cache_control
        && !res.status().is_informational()
    {
        headers::default_cache_control(res.headers_mut(), value);
    }
    (res, upstream_time)
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

/// How long a tunnel may live, from the config.
fn tunnel_limits(app: &App) -> tunnel::Limits {
    tunnel::Limits {
        idle: app
            .config
            .upstream
            .target
            .as_ref()
            .map_or(Duration::from_secs(3600), |t| t.tunnel_idle_timeout),
        check_every: app.config.session.touch_interval,
        absolute: app.config.session.absolute_timeout,
    }
}

/// An upgrade `upgrade::decide` relays and the gate let through: forwarded like any request
/// (with `Connection: upgrade` and the listed `protocol` set again after the hop-by-hop
/// scrub); on the upstream's 101 the tunnel starts, bound to the session, which the gate
/// checks again (the tunnel outlives this request); any other answer is passed back as it is
/// (and the connection closed after it: the handler's `finish`).
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
        Some(id) => match app.gate.tunnel_session(&id).await {
            Ok(Some((owner, started))) => Some((owner, tunnel::Binding { id, started })),
            Ok(None) => return (refusal::answer(app, &req, &Decision::LoginRequired), None),
            Err(_) => return (Refusal::StoreUnavailable { cause: None }.response(), None),
        },
    };
    let client = hyper::upgrade::on(&mut req);
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
        Ok(UpgradeAnswer::Switched { head, upstream }) => {
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
            let tunnel = Tunnel {
                conn: conn.clone(),
                client,
                upstream,
                registered,
                binding: binding.map(|(_, b)| b),
                permit,
            };
            tunnel::spawn(tunnel, app.gate.clone(), tunnel_limits(app));
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
