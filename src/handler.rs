//! The request path as a straight chain: sessiongate's own endpoints, then the session gate,
//! then the proxy. Every request ends here with a response; nothing is forwarded unless the
//! gate let it through.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::app::{App, Authenticated};
use crate::auth::login;
use crate::headers;
use crate::logging::{self, RequestLine};
use crate::paths::{self, BadTarget};
use crate::proxy::Forwarding;
use crate::response::{self, Body, no_store};
use crate::server::MAX_HEAD_BYTES;
use crate::session::StoreError;
use crate::watchdog::Activity;

/// What sessiongate knows about the connection a request came on, computed once per connection.
pub struct ConnInfo {
    pub peer: IpAddr,
    /// The peer's IP address, ready to be sent as X-Forwarded-For.
    pub peer_header: HeaderValue,
    /// The peer is a configured trusted proxy: its X-Forwarded-* headers are believed.
    pub trusted: bool,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
    /// For the slow and idle connection deadline.
    pub activity: Activity,
}

impl ConnInfo {
    /// The address a request comes from: the peer, or behind trusted proxies the nearest
    /// X-Forwarded-For entry that is not one of them (entries further left are the client's
    /// own claims and cannot be believed).
    pub fn client_addr(&self, headers: &http::HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
        if !self.trusted {
            return self.peer;
        }
        let mut chain: Vec<IpAddr> = headers
            .get_all(crate::headers::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        while let Some(addr) = chain.pop() {
            if !trusted.iter().any(|net| net.contains(&addr)) {
                return addr;
            }
        }
        self.peer
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
    let refused = refusal(&mut req);
    let uri = req.uri().clone();
    let (mut res, session) = match refused {
        // A panic anywhere below ends this request with a 500, never a forwarded request, and
        // leaves the connection's other requests and the process running.
        None => AssertUnwindSafe(route(&app, &conn, req))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("request handler panicked; answered 500");
                (
                    response::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
                    None,
                )
            }),
        Some(res) => (res, None),
    };
    if conn.proto == "https"
        && let Some(hsts) = &app.config.server.hsts
    {
        res.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    // The path only: query strings can carry tokens. Never a cookie or a header value; the
    // session appears as a short hash of its id, enough to follow one session through a log.
    let (user, sid) = match &session {
        Some(s) => (s.user.to_str().unwrap_or("-"), s.id.log_tag()),
        None => ("-", Default::default()),
    };
    logging::request(&RequestLine {
        method: &method,
        path: uri.path(),
        status: res.status().as_u16(),
        user,
        session: sid.as_str(),
        micros: start.elapsed().as_micros() as u64,
    });
    Ok(res)
}

/// The answer to a request that must never reach the gate: a head over the size limit, a
/// target that is not a clean path, or framing two parsers could read differently. `None`
/// for every other request, whose path is now normalized.
fn refusal<B>(req: &mut Request<B>) -> Option<Response<Body>> {
    if head_bytes(req) > MAX_HEAD_BYTES {
        return Some(response::text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head (target and headers) is larger than 64 KiB",
        ));
    }
    let problem = match normalize_target(req) {
        Err(bad) => bad.message(),
        Ok(()) => headers::check_framing(req.headers()).err()?,
    };
    Some(response::text(
        StatusCode::BAD_REQUEST,
        &format!("invalid request: {problem}"),
    ))
}

/// The size of the request head as sent. hyper's read buffer bounds the memory a head can
/// take, but a single read can overshoot it, so the documented limit is checked exactly here.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    req.headers()
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Replaces the request's path with its normalized form, so routing, the session gate and
/// the upstream all see the same path: the one that was authorised.
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
    app: &App,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> (Response<Body>, Option<Authenticated>) {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix(app.config.auth.prefix.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return (own_endpoint(app, conn, req).await, None);
    }
    match app.authenticate(req.headers()) {
        Ok(Some(session)) => {
            let res = proxy(app, conn, req, Some(session.user.clone())).await;
            (res, Some(session))
        }
        Ok(None) if paths::is_public(path, &app.config.auth.public_paths) => {
            (proxy(app, conn, req, None).await, None)
        }
        Ok(None) => (login_required(app, &req), None),
        // Fail closed: not knowing whether there is a session is not "anonymous".
        Err(e) => (store_unavailable(&e), None),
    }
}

/// 503 for a request that needed the session store when it could not answer.
pub fn store_unavailable(e: &StoreError) -> Response<Body> {
    tracing::error!("request refused: {e}");
    let mut res = response::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "sessions cannot be checked right now; try again in a moment",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    no_store(&mut res);
    res
}

/// sessiongate's own endpoints, matched exactly.
async fn own_endpoint(app: &App, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    if path == app.routes.login {
        match *method {
            Method::GET | Method::HEAD => login::show(app, &req),
            Method::POST => login::submit(app, conn, req).await,
            _ => login::method_not_allowed("GET, POST", method),
        }
    } else if path == app.routes.logout {
        match *method {
            // Never on GET: a link or an <img> on another site must not log anyone out.
            Method::POST => login::logout(app, req).await,
            _ => login::method_not_allowed("POST", method),
        }
    } else if path == app.routes.healthz {
        match *method {
            Method::GET | Method::HEAD => response::text(StatusCode::OK, "ok"),
            _ => login::method_not_allowed("GET", method),
        }
    } else {
        response::text(StatusCode::NOT_FOUND, "no such sessiongate endpoint")
    }
}

/// No session: browsers are sent to the login form, everything else gets a 401.
fn login_required(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let navigation = matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")));
    let mut res = if navigation {
        let here = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let mut location = app.routes.login.clone();
        location.push_str("?rd=");
        location.extend(form_urlencoded::byte_serialize(here.as_bytes()));
        match HeaderValue::from_str(&location) {
            Ok(loc) => response::redirect(StatusCode::FOUND, loc),
            Err(_) => response::redirect(
                StatusCode::FOUND,
                HeaderValue::from_str(&app.routes.login).expect("the prefix is header-safe"),
            ),
        }
    } else {
        response::json(
            StatusCode::UNAUTHORIZED,
            app.routes.unauthorized_json.clone(),
        )
    };
    no_store(&mut res);
    res
}

async fn proxy(
    app: &App,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    user: Option<HeaderValue>,
) -> Response<Body> {
    app.upstream.prepare(
        &mut req,
        Forwarding {
            identity_header: &app.config.upstream.identity_header,
            user,
            peer: &conn.peer_header,
            trusted_peer: conn.trusted,
            proto: conn.proto,
            own_cookie: &app.config.session.cookie_name,
        },
    );
    match app.upstream.send(req).await {
        Ok(res) => res.map(Either::Right),
        Err(e) => {
            tracing::warn!("upstream request failed: {e}");
            let message = match e.status() {
                StatusCode::GATEWAY_TIMEOUT => "the upstream did not answer in time",
                _ => "the upstream could not be reached",
            };
            response::text(e.status(), message)
        }
    }
}
