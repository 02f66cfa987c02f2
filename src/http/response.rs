//! The response body type and builders for sessiongate's own answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::proxy::UpstreamBody;

/// Either a body sessiongate wrote itself or an upstream body streamed through.
pub type Body = Either<Full<Bytes>, UpstreamBody>;

/// An answer sessiongate wrote, of `content_type` and nothing else: `nosniff` keeps a browser
/// from reading a text or JSON answer that echoes part of a request as HTML or script.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Either::Left(Full::new(body.into())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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

/// 405 with the methods an endpoint takes.
pub fn method_not_allowed(allow: &'static str, method: &http::Method) -> Response<Body> {
    let mut res = text(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not allowed here; use {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
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
