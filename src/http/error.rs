//! Why a request is refused before or after the gate, and the status each reason gets: one
//! place maps every request error to its answer. Bad input says what was wrong; internal
//! failures say little and log the detail.

use http::{HeaderValue, Response, StatusCode, header};

use crate::app::App;
use crate::http::host::HostProblem;
use crate::http::paths::BadTarget;
use crate::http::response::{self, Body, no_store};
use crate::pages::branded;
use crate::proxy::{BodyError, ProxyError};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request head (target and headers) is larger than 64 KiB")]
    HeadTooLarge,
    #[error("invalid request: {}", .0.message())]
    BadTarget(BadTarget),
    /// Framing two parsers could read differently (see `headers::check_framing`).
    #[error("invalid request: {0}")]
    Framing(&'static str),
    /// An upgrade sessiongate does not relay (see `upgrade::decide`).
    #[error(transparent)]
    Upgrade(crate::http::upgrade::Refused),
    /// No host, several, or one that is not a host (see `host::screen`).
    #[error("invalid request: {0}")]
    BadHost(HostProblem),
    #[error("sessions cannot be checked right now; try again in a moment")]
    StoreUnavailable,
    #[error("too many logins in progress; try again in a moment")]
    LoginsBusy,
    /// The client's request body broke while it streamed upstream (malformed chunked framing,
    /// cut short): the client's doing, so a 400 and not an upstream failure.
    #[error(transparent)]
    MalformedBody(BodyError),
    #[error(transparent)]
    Upstream(ProxyError),
    #[error("internal error")]
    Panic,
}

/// A failed upstream leg: the upstream's failure, unless it was the client's own body.
impl From<ProxyError> for RequestError {
    fn from(e: ProxyError) -> RequestError {
        match e {
            ProxyError::ClientBody(body) => RequestError::MalformedBody(body),
            upstream => RequestError::Upstream(upstream),
        }
    }
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BadTarget(_)
            | RequestError::Framing(_)
            | RequestError::Upgrade(_)
            | RequestError::BadHost(_)
            | RequestError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            RequestError::StoreUnavailable | RequestError::LoginsBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Upstream(e) => e.status(),
            RequestError::Panic => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// [`RequestError::response`], or for a browser loading a page (`navigation`) the same
    /// answer as a page in the sign-in page's style: 502, 503 and 504 (the others are
    /// answers to malformed requests no browser navigation makes).
    pub fn answer(&self, app: &App, navigation: bool) -> Response<Body> {
        let (title, lines): (&str, &[&str]) = match self {
            _ if !navigation => return self.response(),
            RequestError::StoreUnavailable => (
                "Service unavailable",
                &[
                    "This page is not available right now: sessions cannot be checked. Try again in a moment.",
                ],
            ),
            RequestError::LoginsBusy => (
                "Service unavailable",
                &["Too many sign-ins are in progress. Try again in a moment."],
            ),
            RequestError::Upstream(e) if e.status() == StatusCode::GATEWAY_TIMEOUT => (
                "Gateway timeout",
                &["The app behind this page did not answer in time. Try again in a moment."],
            ),
            RequestError::Upstream(_) => (
                "Bad gateway",
                &["The app behind this page could not be reached. Try again in a moment."],
            ),
            _ => return self.response(),
        };
        if let RequestError::Upstream(e) = self {
            tracing::warn!("upstream request failed: {e}");
        }
        let mut res = branded::message(app, self.status(), title, lines, "");
        if matches!(
            self,
            RequestError::StoreUnavailable | RequestError::LoginsBusy
        ) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }

    /// The answer to the client: a short text that says what was wrong (for upstream failures
    /// without the cause, which is logged), `Retry-After` where waiting helps.
    pub fn response(&self) -> Response<Body> {
        let mut res = match self {
            RequestError::Upstream(e) => {
                tracing::warn!("upstream request failed: {e}");
                let message = match e.status() {
                    StatusCode::GATEWAY_TIMEOUT => "the upstream did not answer in time",
                    _ => "the upstream could not be reached",
                };
                response::text(self.status(), message)
            }
            RequestError::MalformedBody(e) => {
                // Any client can do this at will: not a warning, and not the upstream's fault.
                tracing::debug!("answered 400: the client's {e}");
                response::text(self.status(), &e.to_string())
            }
            other => response::text(self.status(), &other.to_string()),
        };
        if matches!(
            self,
            RequestError::StoreUnavailable | RequestError::LoginsBusy
        ) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            no_store(&mut res);
        }
        res
    }
}
