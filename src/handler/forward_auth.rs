//! Forward-auth: sessiongate as the login service behind an edge proxy that asks "may this
//! request through, and who is it?". `{prefix}/auth/nginx` answers nginx `auth_request`,
//! `{prefix}/auth/forward` answers Caddy `forward_auth` and Traefik ForwardAuth.
//!
//! Each endpoint reads the original request only from its own proxy's headers: an endpoint
//! that guesses the proxy from whichever headers are present believes a header the client sent
//! itself (a forward-auth bypass seen in other login proxies). The gate decides who may ask
//! (`Own::EdgeAsks`: a peer in `server.trusted_proxies`) and judges the original request
//! exactly as it would judge a proxied one; this module only reads the original request and
//! formats the decisions.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};

use crate::app::App;
use crate::gate::policy::{Policy, User};
use crate::gate::{Decided, Decision, Head, HostOf, Own, Via};
use crate::http::conn::ConnInfo;
use crate::http::error::{Refusal, is_navigation, login_location as sign_in_at};
use crate::http::headers;
use crate::http::host::{self, HostProblem};
use crate::http::paths::{self, BadTarget};
use crate::http::response::no_store;
use crate::proxy::Body;

use super::refusal;

/// Which edge proxy an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeProxy {
    /// nginx `auth_request`: `X-Original-Method` and `X-Original-URI`, the host in `Host`.
    /// Only 2xx, 401 and 403 are understood; anything else is an error to nginx.
    Nginx,
    /// Caddy `forward_auth`, Traefik ForwardAuth: `X-Forwarded-Method`, `-Proto`, `-Host`,
    /// `-Uri`. The answer to a refusal is passed on to the client as it is.
    Forward,
}

const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The request the edge proxy asks about.
struct Original {
    method: Method,
    /// Canonical (`host::canonical`).
    host: Option<String>,
    /// As sent (with its port), for an absolute return address.
    authority: Option<String>,
    /// Normalized, without the query.
    path: String,
    query: Option<String>,
}

impl Original {
    /// The path and query, as the return address after login.
    fn here(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// The answer to one forward-auth request whose caller the gate judged `asks`, and the
/// decision on the original request, when one was made (for the access log).
pub async fn answer<B>(
    app: &App,
    conn: &ConnInfo,
    req: &Request<B>,
    edge: EdgeProxy,
    asks: &Own,
) -> (Response<Body>, Option<Decided>) {
    if !matches!(asks, Own::EdgeAsks) {
        let res = Refusal::UntrustedPeer { peer: conn.peer }.response();
        return (res, None);
    }
    let original = match read_original(req.headers(), edge) {
        Ok(original) => original,
        Err(e) => return (e.response(edge), None),
    };
    // The decision and the return address come from one policy.
    let policy = app.gate.policy();
    let head = Head {
        method: &original.method,
        host: HostOf::Known(original.host.as_deref()),
        path: &original.path,
        headers: req.headers(),
        via: Via::Edge,
    };
    let (decided, _) = app.gate.decide_under(&policy, &head).await;
    let res = match &decided.decision {
        Decision::Allow { user } => allowed(app, Some(user)),
        Decision::Public { user } => allowed(app, user.as_ref()),
        // sessiongate's own pages (the sign-in form above all) are open to everyone, or a
        // proxy that asks about every path would send the sign-in page to the sign-in page.
        Decision::Own(_) => allowed(app, None),
        Decision::LoginRequired => login_required(app, &policy, req.headers(), &original, edge),
        refused => refusal::answer_for(
            app,
            &original.method,
            req.headers(),
            &original.here(),
            refused,
        ),
    };
    (for_edge(res, edge), Some(decided))
}

/// The decision's answer as the edge proxy needs it. nginx reads only the status and headers
/// of an `auth_request` answer, not its body, and so closes the connection after an answer
/// that has one: without a body the connection to sessiongate stays alive (before, every auth
/// request opened a new one; docs/BENCHMARKS.md). The forward proxies pass refusals on to the
/// client, body and all, and drop the body of a 2xx.
fn for_edge(mut res: Response<Body>, edge: EdgeProxy) -> Response<Body> {
    if edge == EdgeProxy::Nginx || res.status().is_success() {
        *res.body_mut() = Body::Left(http_body_util::Full::new(bytes::Bytes::new()));
        res.headers_mut().remove(header::CONTENT_TYPE);
    }
    res
}

/// 200 with the identity and groups headers, both always present: empty without a user.
/// (Caddy 2.6 copies a header named in `copy_headers` even when the answer lacks it, as the
/// literal text of its placeholder, which the app would read as a user name.)
fn allowed(app: &App, user: Option<&Arc<User>>) -> Response<Body> {
    let mut res = Response::new(Body::Left(http_body_util::Full::new(bytes::Bytes::new())));
    let empty = HeaderValue::from_static("");
    let h = res.headers_mut();
    h.insert(
        app.config.upstream.identity_header.clone(),
        user.map_or(empty.clone(), |u| u.identity.clone()),
    );
    h.insert(
        app.config.upstream.groups_header.clone(),
        user.map_or(empty, |u| u.groups_value.clone()),
    );
    no_store(&mut res);
    res
}

/// No session: 401 with the sign-in address in `Location` (nginx hands it to `error_page`
/// through `auth_request_set`); from the forward endpoint a browser navigation gets the
/// redirect itself.
fn login_required(
    app: &App,
    policy: &Policy,
    headers: &HeaderMap,
    original: &Original,
    edge: EdgeProxy,
) -> Response<Body> {
    let refusal = Refusal::LoginRequired {
        location: login_location(app, policy, headers, original, edge),
        json: app.routes.unauthorized_json.clone(),
        tell_location: true,
    };
    let navigation = edge == EdgeProxy::Forward && is_navigation(&original.method, headers);
    app.pages().refuse(&refusal, navigation)
}

/// Where to sign in: normally the sign-in page on the original request's own host, with the
/// return address as a path (the edge proxy routes `{prefix}/` there to sessiongate). With a
/// central sign-in host (the edge proxy asks sessiongate by another `Host` than the original
/// request's), the browser is sent there with the original URL as the return address, but
/// only for hosts in `auth.redirect_hosts`, the ones the login form follows.
fn login_location(
    app: &App,
    policy: &Policy,
    headers: &HeaderMap,
    original: &Original,
    edge: EdgeProxy,
) -> HeaderValue {
    let here = original.here();
    // The Host the edge proxy asked by, if it is a host (the screen has refused any other).
    let login_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| Some((h, host::canonical(h.as_bytes()).ok()?)));
    let central = match (edge, login_host, &original.host, &original.authority) {
        (EdgeProxy::Forward, Some((login, login_canonical)), Some(host), Some(authority))
            if login_canonical != host.as_str()
                && policy.redirect_hosts().iter().any(|p| p.matches(host)) =>
        {
            Some((login, authority))
        }
        _ => None,
    };
    let Some((login_host, authority)) = central else {
        return sign_in_at(&app.routes.login, &here);
    };
    let rd = format!("https://{authority}{here}");
    let mut location = format!("https://{login_host}{}?rd=", app.routes.login);
    location.extend(form_urlencoded::byte_serialize(rd.as_bytes()));
    HeaderValue::from_str(&location).unwrap_or_else(|_| sign_in_at(&app.routes.login, "/"))
}

/// Why the original request cannot be judged.
#[derive(Debug)]
enum Unreadable {
    /// The edge proxy built the request wrongly: a configuration mistake.
    Header {
        name: HeaderName,
        problem: &'static str,
    },
    /// The client's target is not a clean path.
    Target(BadTarget),
    /// The client's host is not a host.
    Host(HostProblem),
}

impl Unreadable {
    /// A proxy mistake is 400 and logged, for the operator. A refused target is 400 from the
    /// forward endpoint (passed on to the client), 403 from nginx's (nginx turns anything but
    /// 401 and 403 into a 500, and a client's bad target must not be a 500).
    fn response(&self, edge: EdgeProxy) -> Response<Body> {
        let refusal = match (self, edge) {
            (Unreadable::Header { name, problem }, _) => Refusal::EdgeHeader {
                name: name.clone(),
                problem,
            },
            (Unreadable::Target(bad), EdgeProxy::Nginx) => Refusal::NginxBadTarget(*bad),
            (Unreadable::Target(bad), EdgeProxy::Forward) => Refusal::BadTarget(*bad),
            (Unreadable::Host(problem), EdgeProxy::Nginx) => Refusal::NginxBadHost(*problem),
            (Unreadable::Host(problem), EdgeProxy::Forward) => Refusal::BadHost(*problem),
        };
        refusal.response()
    }
}

/// The original request from the proxy's headers.
fn read_original(h: &HeaderMap, edge: EdgeProxy) -> Result<Original, Unreadable> {
    let (method_header, uri_header) = match edge {
        EdgeProxy::Nginx => (X_ORIGINAL_METHOD, X_ORIGINAL_URI),
        EdgeProxy::Forward => (X_FORWARDED_METHOD, X_FORWARDED_URI),
    };
    let method =
        Method::from_bytes(one(h, &method_header)?.as_bytes()).map_err(|_| Unreadable::Header {
            name: method_header.clone(),
            problem: "is not an HTTP method",
        })?;
    let target: http::Uri = one(h, &uri_header)?
        .parse()
        .map_err(|_| Unreadable::Header {
            name: uri_header.clone(),
            problem: "is not a request target",
        })?;
    let path = paths::normalize(target.path(), target.query())
        .map_err(Unreadable::Target)?
        .into_owned();
    let authority = match edge {
        EdgeProxy::Nginx => h.get(header::HOST).and_then(|v| v.to_str().ok()),
        EdgeProxy::Forward => Some(one(h, &headers::X_FORWARDED_HOST)?),
    };
    // Judged in its canonical form, as a proxied request's host is: `admin.example.com.` is
    // `admin.example.com` to the rules, as it is to DNS.
    let host = match authority.map(|a| host::canonical(a.as_bytes())) {
        None => None,
        Some(Ok(host)) => Some(host.into_owned()),
        Some(Err(bad)) => {
            return Err(Unreadable::Host(match edge {
                EdgeProxy::Nginx => HostProblem::Invalid(bad),
                EdgeProxy::Forward => HostProblem::ForwardedInvalid(bad),
            }));
        }
    };
    let authority = authority.map(str::to_string);
    Ok(Original {
        method,
        host,
        authority,
        path,
        query: target.query().map(str::to_string),
    })
}

/// The one value of `name` as text; two values are as bad as none (which one would count?).
fn one<'h>(h: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, Unreadable> {
    let mut values = h.get_all(name).iter();
    let problem = match (values.next(), values.next()) {
        (Some(v), None) => match v.to_str() {
            Ok(text) => return Ok(text),
            Err(_) => "is not text",
        },
        (None, _) => {
            "is missing: the edge proxy must set it (see the README's forward-auth configs)"
        }
        (Some(_), Some(_)) => "is sent more than once",
    };
    Err(Unreadable::Header {
        name: name.clone(),
        problem,
    })
}
