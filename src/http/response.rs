//! The response body type and builders for sessiongate's own answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

/// A response body: an answer sessiongate wrote itself (`Left`), or a body `S` streamed
/// through (`Right`). The streamed type is the upstream's, which the proxy names
/// (`proxy::Body`): http sits below the proxy and never needs to know it.
pub type Body<S> = Either<Full<Bytes>, S>;

/// An answer sessiongate wrote, of `content_type` and nothing else: `nosniff` keeps a browser
/// from reading a text or JSON answer that echoes part of a request as HTML or script.
pub fn full<S>(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body<S>> {
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

/// A short plain-text answer. Refusals are answered by `http::error`; this is for the answers
/// that are not one (`ok`, `ready`).
pub fn text<S>(status: StatusCode, message: &str) -> Response<Body<S>> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// A short JSON answer, already encoded.
pub fn json<S>(status: StatusCode, body: Bytes) -> Response<Body<S>> {
    full(status, "application/json", body)
}

pub fn redirect<S>(status: StatusCode, location: HeaderValue) -> Response<Body<S>> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::LOCATION, location);
    res
}

/// Marks a response that must never be cached (login, logout, anything carrying a session).
pub fn no_store<B>(res: &mut Response<B>) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
