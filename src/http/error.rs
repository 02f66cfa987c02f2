//! Every refusal sessiongate answers, and the one map from a refusal to its answer: the status,
//! the headers (`Retry-After`, `Allow`, `Cache-Control: no-store`), the level it is logged at,
//! the text or JSON a script reads, and which page a browser gets. The page is only described
//! here; `pages` draws it (or the sign-in step whose form it is). Bad input says what was
//! wrong; internal failures say little and log the detail.

use std::error::Error;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use tracing::Level;

use crate::http::host::HostProblem;
use crate::http::paths::BadTarget;
use crate::http::response::{self, Body, no_store};
use crate::http::upgrade;

/// The detail behind a refusal, for the log; `Send + Sync`, so that a request's future that
/// holds a refusal can still move between threads.
pub type Cause<'a> = dyn Error + Send + Sync + 'a;

const FORBIDDEN_JSON: &str = "{\"error\":\"forbidden\"}\n";

/// Why a request is refused. Its `Display` is the text a client reads (the plain body, or the
/// error a sign-in form shows); a `cause` is the detail that is logged, and shown only when
/// it is the client's own doing (`MalformedBody`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal<'a> {
    // The screen: requests that never reach the gate.
    #[error("the request head (target and headers) is larger than 64 KiB")]
    HeadTooLarge,
    #[error("invalid request: {}", .0.message())]
    BadTarget(BadTarget),
    /// Framing two parsers could read differently (see `headers::check_framing`).
    #[error("invalid request: {0}")]
    Framing(&'static str),
    /// An upgrade sessiongate does not relay (see `upgrade::decide`).
    #[error("{0}")]
    Upgrade(upgrade::Refused),
    /// No host, several, or one that is not a host (see `host::screen`).
    #[error("invalid request: {0}")]
    BadHost(HostProblem),
    /// The http listener cannot send this target on to https.
    #[error("invalid request target")]
    RedirectTarget,
    /// A client's bad target or host in a request nginx asks about: nginx turns any answer to
    /// `auth_request` but 401 and 403 into a 500, and a client's bad request is not one.
    #[error("refused: {}", .0.message())]
    NginxBadTarget(BadTarget),
    #[error("refused: {0}")]
    NginxBadHost(HostProblem),

    // Nothing here to answer.
    #[error("not found: this sessiongate has no upstream.url; it serves only its own endpoints")]
    NoUpstream,
    #[error("no such sessiongate endpoint")]
    NoSuchEndpoint,
    #[error("not found: this listener serves only /metrics")]
    NotMetrics,
    #[error("no logo is configured")]
    NoLogo,
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        allow: &'static str,
        method: &'a Method,
    },

    // The gate, the session store, the upgrade's origin.
    /// No session, and the path needs one: a browser is sent to `location` (the sign-in
    /// page), anything else gets 401 and `json`, and `location` too with `tell_location` (an
    /// edge proxy hands it on to its error page).
    #[error("login required")]
    LoginRequired {
        location: HeaderValue,
        json: Bytes,
        tell_location: bool,
    },
    /// The rules refuse the request. A browser's page says who is signed in (`signed_in`,
    /// `None` for nobody) and nothing about the rule that refused.
    #[error("forbidden")]
    Forbidden { signed_in: Option<SignedIn<'a>> },
    /// The session store could not answer. `cause` is its error when this refusal is the
    /// first to hear of it; the gate logs its own (once, not per request).
    #[error("sessions cannot be checked right now; try again in a moment")]
    StoreUnavailable { cause: Option<&'a Cause<'a>> },
    #[error(
        "cross-site upgrade refused: this page's Origin may not open connections here (see auth.websocket_origins)"
    )]
    CrossSiteUpgrade,

    // Forward-auth's callers.
    #[error("forward-auth answers only the proxies in server.trusted_proxies")]
    UntrustedPeer { peer: IpAddr },
    /// The edge proxy built the request it asks about wrongly: a configuration mistake.
    #[error("{name} {problem}")]
    EdgeHeader {
        name: HeaderName,
        problem: &'static str,
    },

    // The forms of sessiongate's own POST endpoints.
    #[error("the form must be sent as application/x-www-form-urlencoded")]
    NotAForm,
    #[error("the login form is larger than {limit} bytes")]
    FormTooLarge { limit: usize },
    #[error("the login form could not be read")]
    FormUnreadable,
    #[error("cross-site request refused: this form only accepts posts from its own site")]
    CrossSitePost,
    #[error(
        "missing, expired or another browser's form token: load the form again in this browser and resubmit"
    )]
    NoFormToken,
    #[error(
        "form token refused: the post came without the cookie that the form's page set; load the form in this browser and post it with that cookie (a script must keep cookies between the GET and the POST)"
    )]
    NoFormCookie,
    #[error("the form's session field does not name a session; reload the sessions page")]
    NoSuchSessionField,
    /// The sessions page was asked to end a session that is not the user's (any more); the
    /// page links back to `sessions`.
    #[error("That session is not one of yours, or it has already ended.")]
    SessionNotFound { sessions: &'a str },

    // The sign-in steps: the form again, saying this.
    #[error("Enter a username and a password.")]
    NoCredentials,
    #[error("The username or password is too long.")]
    CredentialsTooLong,
    #[error("Invalid username or password.")]
    WrongCredentials,
    #[error("Enter the code from your authenticator app.")]
    NoCode,
    #[error("That code is not right. Enter the current code from your authenticator app.")]
    WrongCode,
    #[error("That sign-in took too long; sign in again.")]
    SignInExpired,
    #[error("Too many wrong codes; sign in again.")]
    TooManyWrongCodes,
    /// Refused by the failure limits for `wait` (rounded up to whole seconds, at least 1).
    #[error("Too many failed attempts. Try again in {} seconds.", whole_seconds(*.wait))]
    TooManyAttempts { wait: Duration },
    /// Every password check slot is taken (`auth.max_concurrent_logins`).
    #[error("Too many sign-ins are in progress. Try again in a moment.")]
    LoginsBusy,
    /// A provider sign-in's callback names no attempt this browser started: unknown, used,
    /// expired or another browser's `state`. The sign-in page again, saying so.
    #[error(
        "That sign-in link has expired, was already used or belongs to another browser; sign in again."
    )]
    SignInRestart,
    /// A passkey sign-in's answer was refused: `reason` says why.
    #[error("Signing in with a passkey failed: {reason}")]
    PasskeyFailed { reason: &'a str },
    /// A passkey step names no ceremony this browser started: unknown, used, expired (2
    /// minutes) or another browser's.
    #[error(
        "That passkey request has expired, was already used or belongs to another browser; try again."
    )]
    PasskeyRestart,
    /// `auth.passkeys` is off.
    #[error("passkeys are not turned on here (auth.passkeys)")]
    PasskeysOff,
    /// Adding or removing a factor in a session that signed in more than 5 minutes ago.
    #[error("You signed in more than 5 minutes ago: enter your password to confirm it is you.")]
    ConfirmPassword,
    /// The account page could not add the passkey: `reason` says why.
    #[error("The passkey was not added: {reason}")]
    PasskeyNotAdded { reason: &'a str },
    /// The account page was asked to remove a passkey the user does not have (any more).
    #[error("That passkey is not one of yours, or it was already removed.")]
    NoSuchPasskey,
    /// The config holds the user's TOTP secret: the account page cannot set up another.
    #[error("Your authenticator app was set up by your administrator; ask them to change it.")]
    TotpByAdministrator,
    /// A TOTP set-up's first code came after it ended (10 minutes), or for another session's.
    #[error("That set-up has expired; start again.")]
    TotpSetupExpired,
    /// No `[[providers]]` entry has this id.
    #[error("no such sign-in provider")]
    NoSuchProvider,
    /// The provider is not discovered (down at start, say); `name` is its button's.
    #[error("{name} sign-in is unavailable right now. Try again in a moment.")]
    ProviderUnavailable { name: &'a str, login: &'a str },
    /// The provider sent the browser back with an error (`error=access_denied`, ...).
    #[error("{name} did not sign you in: {said}")]
    ProviderSaid {
        name: &'a str,
        said: &'a str,
        denied: bool,
        login: &'a str,
    },
    /// The provider's answer or its user was refused here: `reason` says why (never a token).
    #[error("Signing in with {name} failed: {reason}")]
    ProviderRefused {
        name: &'a str,
        reason: &'a str,
        login: &'a str,
    },
    /// The session store (or the shared failure counters) could not answer a sign-in step.
    #[error(
        "Signing in is not possible right now: sessions cannot be checked. Try again in a moment."
    )]
    SignInUnavailable { cause: &'a Cause<'a> },

    // The upstream leg, readiness, bugs.
    /// The client's request body broke while it streamed upstream (malformed chunked framing,
    /// cut short): the client's doing, so a 400 and not an upstream failure. `cause` says
    /// what was wrong, to the client too.
    #[error("{cause}")]
    MalformedBody { cause: &'a Cause<'a> },
    /// The upstream failed, or did not answer in time (`timed_out`).
    #[error(
        "{}",
        if *.timed_out { "the upstream did not answer in time" } else { "the upstream could not be reached" }
    )]
    Upstream {
        timed_out: bool,
        cause: &'a Cause<'a>,
    },
    /// `{prefix}/readyz` when this replica cannot serve signed-in requests: the session store
    /// (of this kind) does not answer, or the upstream (at this address) accepts no connection.
    #[error("not ready: {}", Reasons { store: *.store, upstream: *.upstream })]
    NotReady {
        store: Option<&'static str>,
        upstream: Option<&'a str>,
    },
    /// A bug, not the request's doing: `why` is logged, the client told nothing more.
    #[error("internal error")]
    Internal(&'static str),
}

/// Who is refused, for the 403 page: their name, and the sign-out form's action and token
/// (bound to the session the request brought).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn<'a> {
    pub user: &'a str,
    pub logout: &'a str,
    pub csrf: String,
}

/// What a client gets besides the status and the headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Shown<'a> {
    /// The text or JSON body ([`Refusal::plain`]).
    Plain,
    /// A redirect to the sign-in page.
    SignIn(&'a HeaderValue),
    /// A page, described.
    Page(Page<'a>),
}

/// A refusal's page, described: `pages` draws it in the sign-in page's style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page<'a> {
    /// `title`, then `lines` of text.
    Message {
        title: &'static str,
        lines: &'static [&'static str],
    },
    /// `title`, who is signed in, and a form to sign out (to sign in as someone else).
    SignedIn {
        title: &'static str,
        who: &'a SignedIn<'a>,
    },
    /// `title` and `lines` in the plain page shell (the sessions page's), then a link to
    /// `back` labelled `label`.
    Back {
        title: &'static str,
        lines: &'static [&'static str],
        back: &'a str,
        label: &'static str,
    },
    /// The form the request posted, again, saying `error`: drawn by the step whose form it is.
    Form { error: String },
    /// `title` and `text` (made at run time: a provider's name and what it said), then a link
    /// to `back` labelled `label`.
    Told {
        title: &'static str,
        text: String,
        back: &'a str,
        label: &'static str,
    },
}

/// The body a client that gets no page reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Plain {
    Text(String),
    Json(Bytes),
}

impl Refusal<'_> {
    /// No session: the sign-in page at `login` (a path) returning to `here` for a browser,
    /// `json` for anything else.
    pub fn login_required(login: &str, here: &str, json: &Bytes) -> Refusal<'static> {
        Refusal::LoginRequired {
            location: login_location(login, here),
            json: json.clone(),
            tell_location: false,
        }
    }

    /// `method` on an endpoint that takes only `allow`.
    pub fn not_allowed<'m>(allow: &'static str, method: &'m Method) -> Refusal<'m> {
        Refusal::MethodNotAllowed { allow, method }
    }

    pub fn status(&self) -> StatusCode {
        use Refusal::*;
        match self {
            HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BadTarget(_) | Framing(_) | Upgrade(_) | BadHost(_) | RedirectTarget => {
                StatusCode::BAD_REQUEST
            }
            NginxBadTarget(_) | NginxBadHost(_) => StatusCode::FORBIDDEN,
            NoUpstream | NoSuchEndpoint | NotMetrics | NoLogo => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            LoginRequired { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } | CrossSiteUpgrade => StatusCode::FORBIDDEN,
            StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UntrustedPeer { .. } => StatusCode::FORBIDDEN,
            EdgeHeader { .. } => StatusCode::BAD_REQUEST,
            NotAForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FormTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FormUnreadable | NoSuchSessionField => StatusCode::BAD_REQUEST,
            CrossSitePost | NoFormToken | NoFormCookie => StatusCode::FORBIDDEN,
            SessionNotFound { .. } => StatusCode::NOT_FOUND,
            NoCredentials | CredentialsTooLong | NoCode => StatusCode::BAD_REQUEST,
            WrongCredentials | WrongCode | SignInExpired | TooManyWrongCodes => {
                StatusCode::UNAUTHORIZED
            }
            TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            LoginsBusy | SignInUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SignInRestart | PasskeyRestart | PasskeyNotAdded { .. } => StatusCode::BAD_REQUEST,
            PasskeyFailed { .. } => StatusCode::UNAUTHORIZED,
            PasskeysOff | NoSuchPasskey => StatusCode::NOT_FOUND,
            TotpByAdministrator => StatusCode::CONFLICT,
            TotpSetupExpired => StatusCode::BAD_REQUEST,
            ConfirmPassword => StatusCode::FORBIDDEN,
            NoSuchProvider => StatusCode::NOT_FOUND,
            ProviderUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProviderSaid { denied: true, .. } | ProviderRefused { .. } => StatusCode::FORBIDDEN,
            ProviderSaid { denied: false, .. } => StatusCode::BAD_GATEWAY,
            MalformedBody { .. } => StatusCode::BAD_REQUEST,
            Upstream {
                timed_out: true, ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Upstream { .. } => StatusCode::BAD_GATEWAY,
            NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The level the refusal is logged at, `None` when the access log's line (status and
    /// decision) says all there is. A sign-in step logs its own outcomes (who, from where).
    pub fn level(&self) -> Option<Level> {
        use Refusal::*;
        match self {
            StoreUnavailable { cause: Some(_) } | SignInUnavailable { .. } | Internal(_) => {
                Some(Level::ERROR)
            }
            Upstream { .. } | LoginsBusy | UntrustedPeer { .. } | EdgeHeader { .. } => {
                Some(Level::WARN)
            }
            // The sign-in step logs these with the provider and the reason.
            ProviderSaid { .. } | ProviderRefused { .. } => None,
            // Any client can do this at will: not a warning, and not the upstream's fault.
            MalformedBody { .. } => Some(Level::DEBUG),
            _ => None,
        }
    }

    /// What a client gets: a browser loading a page (`navigation`, see [`is_navigation`]) the
    /// sign-in redirect or a page where there is one; a form's post its form again, or the
    /// sessions page's own page, whoever sent it; anything else the text or JSON.
    pub fn shown(&self, navigation: bool) -> Shown<'_> {
        use Refusal::*;
        const UNAVAILABLE: &[&str] = &[
            "This page is not available right now: sessions cannot be checked. Try again in a moment.",
        ];
        const TIMEOUT: &[&str] =
            &["The app behind this page did not answer in time. Try again in a moment."];
        const UNREACHABLE: &[&str] =
            &["The app behind this page could not be reached. Try again in a moment."];
        let message = |title, lines| Shown::Page(Page::Message { title, lines });
        match self {
            LoginRequired { location, .. } if navigation => Shown::SignIn(location),
            Forbidden {
                signed_in: Some(who),
            } if navigation => Shown::Page(Page::SignedIn {
                title: "Access denied",
                who,
            }),
            Forbidden { signed_in: None } if navigation => {
                message("Access denied", &["Nobody has access to this page."])
            }
            StoreUnavailable { .. } if navigation => message("Service unavailable", UNAVAILABLE),
            Upstream {
                timed_out: true, ..
            } if navigation => message("Gateway timeout", TIMEOUT),
            Upstream { .. } if navigation => message("Bad gateway", UNREACHABLE),
            SessionNotFound { sessions } => Shown::Page(Page::Back {
                title: "Session not found",
                lines: &["That session is not one of yours, or it has already ended."],
                back: sessions,
                label: "Back to your sessions",
            }),
            ProviderUnavailable { login, .. }
            | ProviderSaid { login, .. }
            | ProviderRefused { login, .. } => Shown::Page(Page::Told {
                title: match self {
                    ProviderUnavailable { .. } => "Sign-in unavailable",
                    _ => "Sign-in failed",
                },
                text: self.to_string(),
                back: login,
                label: "Back to sign-in",
            }),
            SignInRestart
            | PasskeyFailed { .. }
            | PasskeyRestart
            | ConfirmPassword
            | PasskeyNotAdded { .. }
            | NoSuchPasskey
            | TotpByAdministrator
            | TotpSetupExpired
            | NoCredentials
            | CredentialsTooLong
            | WrongCredentials
            | NoCode
            | WrongCode
            | SignInExpired
            | TooManyWrongCodes
            | TooManyAttempts { .. }
            | LoginsBusy
            | SignInUnavailable { .. } => Shown::Page(Page::Form {
                error: self.to_string(),
            }),
            _ => Shown::Plain,
        }
    }

    /// The body for a client that gets no page: JSON for the gate's refusals (what a script
    /// acts on), else a line of text saying what was wrong.
    pub fn plain(&self) -> Plain {
        match self {
            Refusal::LoginRequired { json, .. } => Plain::Json(json.clone()),
            Refusal::Forbidden { .. } => Plain::Json(Bytes::from_static(FORBIDDEN_JSON.as_bytes())),
            other => Plain::Text(other.to_string()),
        }
    }

    /// The answer for a client that gets no page (a script, or a refusal no page is drawn
    /// for): [`Refusal::plain`] with the status and the headers.
    pub fn response<S>(&self) -> Response<Body<S>> {
        let res = match self.plain() {
            Plain::Json(json) => response::json(self.status(), json),
            Plain::Text(text) => response::text(self.status(), &text),
        };
        self.finish(res)
    }

    /// The answer, the page drawn by `draw` with the refusal's status (see [`Refusal::shown`]).
    pub fn answer<S>(
        &self,
        navigation: bool,
        draw: impl FnOnce(StatusCode, &Page<'_>) -> Response<Body<S>>,
    ) -> Response<Body<S>> {
        match self.shown(navigation) {
            Shown::Plain => self.response(),
            Shown::SignIn(location) => {
                self.finish(response::redirect(StatusCode::FOUND, location.clone()))
            }
            Shown::Page(page) => self.finish(draw(self.status(), &page)),
        }
    }

    /// A sign-in step's answer: its form again, drawn by `draw` with the refusal's status
    /// and the error to show; a refusal with no form to show gets [`Refusal::response`].
    pub fn in_form<S>(
        &self,
        draw: impl FnOnce(StatusCode, &str) -> Response<Body<S>>,
    ) -> Response<Body<S>> {
        match self.shown(false) {
            Shown::Page(Page::Form { error }) => self.finish(draw(self.status(), &error)),
            _ => self.response(),
        }
    }

    /// Logs the refusal at its level and adds its headers.
    fn finish<B>(&self, mut res: Response<B>) -> Response<B> {
        self.log();
        self.headers(res.headers_mut());
        if self.no_store() {
            no_store(&mut res);
        }
        res
    }

    fn headers(&self, h: &mut HeaderMap) {
        use Refusal::*;
        let (name, value) = match self {
            StoreUnavailable { .. } | LoginsBusy | SignInUnavailable { .. } | NotReady { .. } => {
                (header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            ProviderUnavailable { .. } => (header::RETRY_AFTER, HeaderValue::from_static("5")),
            TooManyAttempts { wait } => {
                (header::RETRY_AFTER, HeaderValue::from(whole_seconds(*wait)))
            }
            MethodNotAllowed { allow, .. } => (header::ALLOW, HeaderValue::from_static(allow)),
            LoginRequired {
                location,
                tell_location: true,
                ..
            } => (header::LOCATION, location.clone()),
            _ => return,
        };
        h.insert(name, value);
    }

    /// Answers that concern a session (or its absence) and one moment: a cache that kept one
    /// would serve it to someone else, or later.
    fn no_store(&self) -> bool {
        use Refusal::*;
        matches!(
            self,
            LoginRequired { .. }
                | Forbidden { .. }
                | StoreUnavailable { .. }
                | CrossSiteUpgrade
                | CrossSitePost
                | NoFormToken
                | NoFormCookie
                | NoSuchSessionField
        )
    }

    fn log(&self) {
        let line = LogLine(self);
        match self.level() {
            None => {}
            Some(Level::ERROR) => tracing::error!("{line}"),
            Some(Level::WARN) => tracing::warn!("{line}"),
            Some(Level::INFO) => tracing::info!("{line}"),
            Some(_) => tracing::debug!("{line}"),
        }
    }
}

/// A refusal as the log says it: with its cause, never shown to the client.
struct LogLine<'r>(&'r Refusal<'r>);

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Refusal::Upstream { cause, .. } => write!(f, "upstream request failed: {cause}"),
            Refusal::MalformedBody { cause } => write!(f, "answered 400: the client's {cause}"),
            Refusal::StoreUnavailable { cause: Some(cause) } => {
                write!(f, "request refused: {cause}")
            }
            Refusal::SignInUnavailable { cause } => write!(f, "login refused: {cause}"),
            Refusal::LoginsBusy => f.write_str("login refused: too many logins in progress"),
            Refusal::UntrustedPeer { peer } => write!(
                f,
                "forward-auth request from {peer} refused: the peer is not in server.trusted_proxies (add the edge proxy's address there)"
            ),
            Refusal::EdgeHeader { .. } => write!(f, "forward-auth request refused: {}", self.0),
            Refusal::Internal(why) => f.write_str(why),
            other => write!(f, "refused: {other}"),
        }
    }
}

/// The reasons `{prefix}/readyz` gives for not being ready.
struct Reasons<'a> {
    store: Option<&'static str>,
    upstream: Option<&'a str>,
}

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kind) = self.store {
            write!(f, "the session store ({kind}) does not answer")?;
        }
        if let Some(authority) = self.upstream {
            let then = if self.store.is_some() { "; " } else { "" };
            write!(
                f,
                "{then}the upstream ({authority}) does not accept connections"
            )?;
        }
        Ok(())
    }
}

/// A wait in whole seconds, rounded up, at least 1: what `Retry-After` and the page say.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The sign-in page at `login` (a path), with `rd` set to `here` (a path on this site).
pub fn login_location(login: &str, here: &str) -> HeaderValue {
    let mut location = login.to_string();
    location.push_str("?rd=");
    location.extend(form_urlencoded::byte_serialize(here.as_bytes()));
    HeaderValue::from_str(&location)
        .unwrap_or_else(|_| HeaderValue::from_str(login).expect("the prefix is header-safe"))
}

/// A browser loading a page (GET or HEAD asking for HTML), as opposed to a script. Never a
/// protocol upgrade: a WebSocket client cannot follow a redirect to the sign-in page.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && !headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause as the proxy or the store would give one.
    fn cause() -> std::io::Error {
        std::io::Error::other("connection reset by peer")
    }

    fn text(s: &str) -> Plain {
        Plain::Text(s.to_string())
    }

    fn message(title: &'static str, line: &'static str) -> Option<Page<'static>> {
        let lines: &'static [&'static str] = Vec::leak(vec![line]);
        Some(Page::Message { title, lines })
    }

    fn told(title: &'static str, text: &str) -> Option<Page<'static>> {
        Some(Page::Told {
            title,
            text: text.to_string(),
            back: "/auth/login",
            label: "Back to sign-in",
        })
    }

    fn form(error: &str) -> Option<Page<'static>> {
        Some(Page::Form {
            error: error.to_string(),
        })
    }

    /// A refusal, its status, log level and body for a script, and the page a browser loading a
    /// page gets (`None`: the same as the script, or the sign-in redirect).
    type Row<'a> = (Refusal<'a>, u16, Option<Level>, Plain, Option<Page<'a>>);

    /// Every refusal's row.
    #[test]
    fn every_refusal_has_its_status_level_body_and_page() {
        use Refusal::*;
        let e = cause();
        let get = Method::DELETE;
        let json = Bytes::from_static(b"{\"error\":\"login required\"}\n");
        let location = HeaderValue::from_static("/auth/login?rd=%2Fx");
        let login = || LoginRequired {
            location: location.clone(),
            json: json.clone(),
            tell_location: false,
        };
        let who = SignedIn {
            user: "alice",
            logout: "/auth/logout",
            csrf: "t0k3n".to_string(),
        };
        let bad_host = HostProblem::Repeated;
        #[rustfmt::skip]
        let table: Vec<Row<'_>> = vec![
            (HeadTooLarge, 431, None, text("the request head (target and headers) is larger than 64 KiB"), None),
            (BadTarget(crate::http::paths::BadTarget::Control), 400, None, text("invalid request: a control character in the target"), None),
            (Framing("two Content-Length headers"), 400, None, text("invalid request: two Content-Length headers"), None),
            (Upgrade(upgrade::Refused::H2c), 400, None, text(&upgrade::Refused::H2c.to_string()), None),
            (BadHost(bad_host), 400, None, text("invalid request: more than one Host header"), None),
            (RedirectTarget, 400, None, text("invalid request target"), None),
            (NginxBadTarget(crate::http::paths::BadTarget::Control), 403, None, text("refused: a control character in the target"), None),
            (NginxBadHost(bad_host), 403, None, text("refused: more than one Host header"), None),
            (NoUpstream, 404, None, text("not found: this sessiongate has no upstream.url; it serves only its own endpoints"), None),
            (NoSuchEndpoint, 404, None, text("no such sessiongate endpoint"), None),
            (NotMetrics, 404, None, text("not found: this listener serves only /metrics"), None),
            (NoLogo, 404, None, text("no logo is configured"), None),
            (MethodNotAllowed { allow: "GET, POST", method: &get }, 405, None, text("DELETE is not allowed here; use GET, POST"), None),
            (login(), 401, None, Plain::Json(json.clone()), None),
            (Forbidden { signed_in: Some(who.clone()) }, 403, None, Plain::Json(Bytes::from_static(FORBIDDEN_JSON.as_bytes())), Some(Page::SignedIn { title: "Access denied", who: &who })),
            (Forbidden { signed_in: None }, 403, None, Plain::Json(Bytes::from_static(FORBIDDEN_JSON.as_bytes())), message("Access denied", "Nobody has access to this page.")),
            (StoreUnavailable { cause: None }, 503, None, text("sessions cannot be checked right now; try again in a moment"), message("Service unavailable", "This page is not available right now: sessions cannot be checked. Try again in a moment.")),
            (StoreUnavailable { cause: Some(&e) }, 503, Some(Level::ERROR), text("sessions cannot be checked right now; try again in a moment"), message("Service unavailable", "This page is not available right now: sessions cannot be checked. Try again in a moment.")),
            (CrossSiteUpgrade, 403, None, text("cross-site upgrade refused: this page's Origin may not open connections here (see auth.websocket_origins)"), None),
            (UntrustedPeer { peer: [192, 0, 2, 1].into() }, 403, Some(Level::WARN), text("forward-auth answers only the proxies in server.trusted_proxies"), None),
            (EdgeHeader { name: HeaderName::from_static("x-original-uri"), problem: "is sent more than once" }, 400, Some(Level::WARN), text("x-original-uri is sent more than once"), None),
            (NotAForm, 415, None, text("the form must be sent as application/x-www-form-urlencoded"), None),
            (FormTooLarge { limit: 16384 }, 413, None, text("the login form is larger than 16384 bytes"), None),
            (FormUnreadable, 400, None, text("the login form could not be read"), None),
            (CrossSitePost, 403, None, text("cross-site request refused: this form only accepts posts from its own site"), None),
            (NoFormToken, 403, None, text("missing, expired or another browser's form token: load the form again in this browser and resubmit"), None),
            (NoFormCookie, 403, None, text("form token refused: the post came without the cookie that the form's page set; load the form in this browser and post it with that cookie (a script must keep cookies between the GET and the POST)"), None),
            (NoSuchSessionField, 400, None, text("the form's session field does not name a session; reload the sessions page"), None),
            (SessionNotFound { sessions: "/auth/sessions" }, 404, None, text("That session is not one of yours, or it has already ended."), Some(Page::Back { title: "Session not found", lines: &["That session is not one of yours, or it has already ended."], back: "/auth/sessions", label: "Back to your sessions" })),
            (NoCredentials, 400, None, text("Enter a username and a password."), form("Enter a username and a password.")),
            (CredentialsTooLong, 400, None, text("The username or password is too long."), form("The username or password is too long.")),
            (WrongCredentials, 401, None, text("Invalid username or password."), form("Invalid username or password.")),
            (NoCode, 400, None, text("Enter the code from your authenticator app."), form("Enter the code from your authenticator app.")),
            (WrongCode, 401, None, text("That code is not right. Enter the current code from your authenticator app."), form("That code is not right. Enter the current code from your authenticator app.")),
            (SignInExpired, 401, None, text("That sign-in took too long; sign in again."), form("That sign-in took too long; sign in again.")),
            (TooManyWrongCodes, 401, None, text("Too many wrong codes; sign in again."), form("Too many wrong codes; sign in again.")),
            (TooManyAttempts { wait: Duration::from_millis(2_001) }, 429, None, text("Too many failed attempts. Try again in 3 seconds."), form("Too many failed attempts. Try again in 3 seconds.")),
            (LoginsBusy, 503, Some(Level::WARN), text("Too many sign-ins are in progress. Try again in a moment."), form("Too many sign-ins are in progress. Try again in a moment.")),
            (SignInUnavailable { cause: &e }, 503, Some(Level::ERROR), text("Signing in is not possible right now: sessions cannot be checked. Try again in a moment."), form("Signing in is not possible right now: sessions cannot be checked. Try again in a moment.")),
            (SignInRestart, 400, None, text("That sign-in link has expired, was already used or belongs to another browser; sign in again."), form("That sign-in link has expired, was already used or belongs to another browser; sign in again.")),
            (PasskeyFailed { reason: "it was made for another site or address" }, 401, None, text("Signing in with a passkey failed: it was made for another site or address"), form("Signing in with a passkey failed: it was made for another site or address")),
            (PasskeyRestart, 400, None, text("That passkey request has expired, was already used or belongs to another browser; try again."), form("That passkey request has expired, was already used or belongs to another browser; try again.")),
            (PasskeysOff, 404, None, text("passkeys are not turned on here (auth.passkeys)"), None),
            (ConfirmPassword, 403, None, text("You signed in more than 5 minutes ago: enter your password to confirm it is you."), form("You signed in more than 5 minutes ago: enter your password to confirm it is you.")),
            (PasskeyNotAdded { reason: "give it a name" }, 400, None, text("The passkey was not added: give it a name"), form("The passkey was not added: give it a name")),
            (NoSuchPasskey, 404, None, text("That passkey is not one of yours, or it was already removed."), form("That passkey is not one of yours, or it was already removed.")),
            (TotpByAdministrator, 409, None, text("Your authenticator app was set up by your administrator; ask them to change it."), form("Your authenticator app was set up by your administrator; ask them to change it.")),
            (TotpSetupExpired, 400, None, text("That set-up has expired; start again."), form("That set-up has expired; start again.")),
            (NoSuchProvider, 404, None, text("no such sign-in provider"), None),
            (ProviderUnavailable { name: "Corp", login: "/auth/login" }, 503, None, text("Corp sign-in is unavailable right now. Try again in a moment."), told("Sign-in unavailable", "Corp sign-in is unavailable right now. Try again in a moment.")),
            (ProviderSaid { name: "Corp", said: "access_denied", denied: true, login: "/auth/login" }, 403, None, text("Corp did not sign you in: access_denied"), told("Sign-in failed", "Corp did not sign you in: access_denied")),
            (ProviderSaid { name: "Corp", said: "server_error", denied: false, login: "/auth/login" }, 502, None, text("Corp did not sign you in: server_error"), told("Sign-in failed", "Corp did not sign you in: server_error")),
            (ProviderRefused { name: "Corp", reason: "the ID token was refused", login: "/auth/login" }, 403, None, text("Signing in with Corp failed: the ID token was refused"), told("Sign-in failed", "Signing in with Corp failed: the ID token was refused")),
            (MalformedBody { cause: &e }, 400, Some(Level::DEBUG), text("connection reset by peer"), None),
            (Upstream { timed_out: false, cause: &e }, 502, Some(Level::WARN), text("the upstream could not be reached"), message("Bad gateway", "The app behind this page could not be reached. Try again in a moment.")),
            (Upstream { timed_out: true, cause: &e }, 504, Some(Level::WARN), text("the upstream did not answer in time"), message("Gateway timeout", "The app behind this page did not answer in time. Try again in a moment.")),
            (NotReady { store: Some("redis"), upstream: None }, 503, None, text("not ready: the session store (redis) does not answer"), None),
            (NotReady { store: Some("redis"), upstream: Some("app:80") }, 503, None, text("not ready: the session store (redis) does not answer; the upstream (app:80) does not accept connections"), None),
            (NotReady { store: None, upstream: Some("app:80") }, 503, None, text("not ready: the upstream (app:80) does not accept connections"), None),
            (Internal("a bug"), 500, Some(Level::ERROR), text("internal error"), None),
        ];
        let mut seen = [false; VARIANTS];
        for (refusal, status, level, plain, page) in &table {
            seen[variant(refusal)] = true;
            assert_eq!(refusal.status().as_u16(), *status, "{refusal:?}");
            assert_eq!(refusal.level(), *level, "{refusal:?}");
            assert_eq!(&refusal.plain(), plain, "{refusal:?}");
            let shown = match page {
                Some(page) => Shown::Page(page.clone()),
                None if matches!(refusal, LoginRequired { .. }) => Shown::SignIn(&location),
                None => Shown::Plain,
            };
            assert_eq!(refusal.shown(true), shown, "{refusal:?}");
            // A script gets a page only where everyone does: a form's post.
            let for_script = match page {
                Some(page @ (Page::Form { .. } | Page::Back { .. } | Page::Told { .. })) => {
                    Shown::Page(page.clone())
                }
                _ => Shown::Plain,
            };
            assert_eq!(refusal.shown(false), for_script, "{refusal:?}");
        }
        assert!(
            seen.iter().all(|&s| s),
            "a refusal is missing from the table"
        );
    }

    const VARIANTS: usize = 58;

    /// Each variant's place: a new one does not compile until it has one, and the table above
    /// fails until it has a row.
    fn variant(refusal: &Refusal<'_>) -> usize {
        use Refusal::*;
        match refusal {
            HeadTooLarge => 0,
            BadTarget(_) => 1,
            Framing(_) => 2,
            Upgrade(_) => 3,
            BadHost(_) => 4,
            RedirectTarget => 5,
            NginxBadTarget(_) => 6,
            NginxBadHost(_) => 7,
            NoUpstream => 8,
            NoSuchEndpoint => 9,
            NotMetrics => 10,
            NoLogo => 11,
            MethodNotAllowed { .. } => 12,
            LoginRequired { .. } => 13,
            Forbidden { signed_in: Some(_) } => 14,
            Forbidden { signed_in: None } => 15,
            StoreUnavailable { cause: None } => 16,
            StoreUnavailable { cause: Some(_) } => 17,
            CrossSiteUpgrade => 18,
            UntrustedPeer { .. } => 19,
            EdgeHeader { .. } => 20,
            NotAForm => 21,
            FormTooLarge { .. } => 22,
            FormUnreadable => 23,
            CrossSitePost => 24,
            NoFormToken => 25,
            NoFormCookie => 26,
            NoSuchSessionField => 27,
            SessionNotFound { .. } => 28,
            NoCredentials => 29,
            CredentialsTooLong => 30,
            WrongCredentials => 31,
            NoCode => 32,
            WrongCode => 33,
            SignInExpired => 34,
            TooManyWrongCodes => 35,
            TooManyAttempts { .. } => 36,
            LoginsBusy => 37,
            SignInUnavailable { .. } => 38,
            MalformedBody { .. } => 39,
            Upstream {
                timed_out: false, ..
            } => 40,
            Upstream {
                timed_out: true, ..
            } => 41,
            NotReady { .. } => 42,
            Internal(_) => 43,
            SignInRestart => 44,
            NoSuchProvider => 45,
            ProviderUnavailable { .. } => 46,
            ProviderSaid { denied: true, .. } => 47,
            ProviderSaid { denied: false, .. } => 48,
            ProviderRefused { .. } => 49,
            PasskeyFailed { .. } => 50,
            PasskeyRestart => 51,
            PasskeysOff => 52,
            ConfirmPassword => 53,
            PasskeyNotAdded { .. } => 54,
            NoSuchPasskey => 55,
            TotpByAdministrator => 56,
            TotpSetupExpired => 57,
        }
    }

    fn header(res: &Response<Body<()>>, name: header::HeaderName) -> Option<&str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn retry_after_allow_and_no_store_go_with_the_refusals_that_need_them() {
        let e = cause();
        let res = Refusal::StoreUnavailable { cause: Some(&e) }.response();
        assert_eq!(header(&res, header::RETRY_AFTER), Some("1"));
        assert_eq!(header(&res, header::CACHE_CONTROL), Some("no-store"));
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            header(&res, header::X_CONTENT_TYPE_OPTIONS),
            Some("nosniff")
        );

        let res = Refusal::NotReady {
            store: Some("memory"),
            upstream: None,
        }
        .response();
        assert_eq!(header(&res, header::RETRY_AFTER), Some("1"));
        assert_eq!(header(&res, header::CACHE_CONTROL), None);

        let method = Method::PUT;
        let res = Refusal::MethodNotAllowed {
            allow: "GET",
            method: &method,
        }
        .response();
        assert_eq!(header(&res, header::ALLOW), Some("GET"));

        for refusal in [
            Refusal::CrossSitePost,
            Refusal::NoFormToken,
            Refusal::NoFormCookie,
            Refusal::CrossSiteUpgrade,
            Refusal::NoSuchSessionField,
            Refusal::Forbidden { signed_in: None },
        ] {
            let res = refusal.response();
            assert_eq!(header(&res, header::CACHE_CONTROL), Some("no-store"));
            assert_eq!(header(&res, header::RETRY_AFTER), None);
        }
        for refusal in [
            Refusal::HeadTooLarge,
            Refusal::NoUpstream,
            Refusal::NotAForm,
        ] {
            let res = refusal.response();
            assert_eq!(header(&res, header::CACHE_CONTROL), None, "{refusal:?}");
        }
        let json = Refusal::Forbidden { signed_in: None }.response();
        assert_eq!(
            header(&json, header::CONTENT_TYPE),
            Some("application/json")
        );
    }

    #[test]
    fn a_form_refusal_draws_its_form_with_the_wait_in_retry_after() {
        let refusal = Refusal::TooManyAttempts {
            wait: Duration::from_millis(1),
        };
        let res: Response<Body<()>> = refusal.in_form(|status, error| {
            assert_eq!(error, "Too many failed attempts. Try again in 1 seconds.");
            response::text(status, "the form")
        });
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, header::RETRY_AFTER), Some("1"));
        // A refusal that is no form's error is answered plainly.
        let res: Response<Body<()>> =
            Refusal::NotAForm.in_form(|_, _| unreachable!("NotAForm has no form to draw"));
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn login_required_sends_a_browser_to_sign_in_and_tells_a_script_in_json() {
        let json = Bytes::from_static(b"{\"error\":\"login required\"}\n");
        let refusal = Refusal::login_required("/auth/login", "/a b?x=1&y", &json);
        let never = |_: StatusCode, _: &Page<'_>| -> Response<Body<()>> { unreachable!() };
        let browser = refusal.answer(true, never);
        assert_eq!(browser.status(), StatusCode::FOUND);
        assert_eq!(
            header(&browser, header::LOCATION),
            Some("/auth/login?rd=%2Fa+b%3Fx%3D1%26y")
        );
        assert_eq!(header(&browser, header::CACHE_CONTROL), Some("no-store"));
        let script = refusal.answer(false, never);
        assert_eq!(script.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&script, header::LOCATION), None);
        // An edge proxy's 401 says where to sign in.
        let edge = Refusal::LoginRequired {
            location: HeaderValue::from_static("/auth/login?rd=%2F"),
            json,
            tell_location: true,
        }
        .answer(false, never);
        assert_eq!(header(&edge, header::LOCATION), Some("/auth/login?rd=%2F"));
    }

    #[test]
    fn a_navigation_is_a_browser_asking_for_html_without_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(is_navigation(&Method::GET, &h));
        assert!(is_navigation(&Method::HEAD, &h));
        assert!(!is_navigation(&Method::POST, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::GET, &HeaderMap::new()));
    }
}
