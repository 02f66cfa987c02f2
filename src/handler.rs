//! The request path as a straight chain: sessiongate's own endpoints, then the session gate,
//! then the proxy. Every request ends here with a response; nothing is forwarded unless the
//! gate let it through.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::app::{App, Authenticated};
use crate::auth::login;
use crate::proxy::Forwarding;
use crate::response::{self, Body, no_store};

/// What sessiongate knows about the connection a request came on, computed once per connection.
pub struct ConnInfo {
    pub peer: IpAddr,
    /// The peer's IP address, ready to be sent as X-Forwarded-For.
    pub peer_header: HeaderValue,
    /// The peer is a configured trusted proxy: its X-Forwarded-* headers are believed.
    pub trusted: bool,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
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
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let (mut res, session) = match check_target(&uri) {
        Ok(()) => route(&app, &conn, req).await,
        Err(problem) => (
            response::text(
                StatusCode::BAD_REQUEST,
                &format!("invalid request target: {problem}"),
            ),
            None,
        ),
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
    tracing::info!(
        method = %method,
        path = uri.path(),
        status = res.status().as_u16(),
        user,
        session = sid.as_str(),
        micros = start.elapsed().as_micros() as u64,
    );
    Ok(res)
}

/// Refuses targets a backend could read differently from us: bad percent-escapes, and
/// escaped NUL or control characters (raw ones never get past hyper's parser).
fn check_target(uri: &http::Uri) -> Result<(), &'static str> {
    let target = uri.path_and_query().map_or("", |pq| pq.as_str()).as_bytes();
    let mut i = 0;
    while i < target.len() {
        match target[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(target.get(i + 1)), hex(target.get(i + 2))) else {
                    return Err("bad percent-encoding");
                };
                let byte = hi * 16 + lo;
                if byte < 0x20 || byte == 0x7f {
                    return Err("encoded NUL or control character");
                }
                i += 3;
            }
            b if b < 0x20 || b == 0x7f => return Err("control character"),
            _ => i += 1,
        }
    }
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
        Some(session) => {
            let res = proxy(app, conn, req, Some(session.user.clone())).await;
            (res, Some(session))
        }
        None if is_public(path, &app.config.auth.public_paths) => {
            (proxy(app, conn, req, None).await, None)
        }
        None => (login_required(app, &req), None),
    }
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

/// True when `path` lies under one of the public prefixes. Only plain paths qualify: anything a
/// backend might normalise into another path (dot segments, encoded dots or slashes,
/// backslashes, `;` parameters) needs a login, so a public prefix can't be walked out of.
fn is_public(path: &str, public: &[String]) -> bool {
    if public.is_empty() || !is_plain_path(path) {
        return false;
    }
    public.iter().any(|p| {
        path.strip_prefix(p.as_str())
            .is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    })
}

fn is_plain_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !path.contains(['\\', ';'])
        && !lower.contains("%2e")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    use super::{check_target, is_public};

    #[test]
    fn targets_with_bad_escapes_or_control_characters_are_refused() {
        for ok in ["/", "/a%20b?q=%2F&x=%7e", "/%41", "/caf%C3%A9"] {
            assert_eq!(check_target(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "/%zz",
            "/a%2",
            "/a%",
            "/x?y=%G0",
            "/a%00b",
            "/a%0d%0aX:1",
            "/%7F",
            "/?a=%1b",
        ] {
            assert!(check_target(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_prefixes_match_whole_segments_of_plain_paths_only() {
        let public = vec!["/public".to_string(), "/static/".to_string()];
        for yes in ["/public", "/public/", "/public/a.css", "/static/x.js"] {
            assert!(is_public(yes, &public), "{yes}");
        }
        for no in [
            "/publicity",
            "/",
            "/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/..%2fadmin",
            "/public/.%2e/admin",
            "/public\\..\\admin",
            "/public;x/../admin",
            "/PUBLIC/a",
            "/static",
        ] {
            assert!(!is_public(no, &public), "{no}");
        }
    }
}
