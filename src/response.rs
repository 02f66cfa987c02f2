//! The response body type and builders for sessiongate's own answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::proxy::UpstreamBody;

/// Either a body sessiongate wrote itself or an upstream body streamed through.
pub type Body = Either<Full<Bytes>, UpstreamBody>;

pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Either::Left(Full::new(body.into())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A short plain-text answer that says what was wrong.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// A short JSON error: `{"error": "..."}` plus optional fields already encoded.
pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    full(status, "application/json", body)
}

pub fn redirect(status: StatusCode, location: HeaderValue) -> Response<Body> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::LOCATION, location);
    res
}

/// Marks a response that must never be cached (login, logout, anything carrying a session).
pub fn no_store(res: &mut Response<Body>) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Minimal HTML escaping for text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
