//! The sessions page's endpoints: `GET {prefix}/sessions` shows the signed-in user's own
//! sessions (rendered by `pages::sessions`), `POST {prefix}/sessions/end` ends one. Who is
//! signed in is the gate's decision (`Own::Mine`); this module only answers it.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::auth::csrf::Binding;
use crate::auth::form::read_checked_form;
use crate::auth::sign_in::store_unavailable;
use crate::gate::{Authenticated, Decision};
use crate::http::error::Refusal;
use crate::http::response::{self, no_store};
use crate::pages::sessions::{self, Links};
use crate::proxy::Body;
use crate::session::{SessionKey, StoreError};

use super::refusal;

/// What the gate said of the request's session: its signed-in user, none, or the store could
/// not answer.
pub type Signed = Result<Option<Authenticated>, StoreError>;

/// The answer for a request without a signed-in user: the sign-in redirect or 401, or 503 when
/// the store could not answer (`failed`).
pub(crate) fn not_signed_in<B>(
    app: &App,
    req: &Request<B>,
    failed: Option<StoreError>,
) -> Response<Body> {
    match failed {
        None => refusal::answer(app, req, &Decision::LoginRequired),
        Some(e) => store_unavailable(&e),
    }
}

fn links(app: &App) -> Links<'_> {
    Links {
        sessions: &app.routes.sessions,
        sessions_end: &app.routes.sessions_end,
        logout: &app.routes.logout,
    }
}

/// `GET {prefix}/sessions`
pub async fn show(app: &App, req: Request<Incoming>, signed: Signed) -> Response<Body> {
    let session = match signed {
        Ok(Some(session)) => session,
        other => return not_signed_in(app, &req, other.err()),
    };
    match app.gate.sessions().list(&session.user, &session.id).await {
        Ok(list) => {
            let csrf = app.tokens.issue(Binding::Session(session.id.as_bytes()));
            sessions::page(&app.pages(), &links(app), &session.user.name, &csrf, &list)
        }
        Err(e) => store_unavailable(&e),
    }
}

/// `POST {prefix}/sessions/end` with `session=HANDLE` (CSRF-checked like logout).
pub async fn end(app: &App, req: Request<Incoming>, signed: Signed) -> Response<Body> {
    let session = match signed {
        Ok(Some(session)) => session,
        other => return not_signed_in(app, &req, other.err()),
    };
    let binding = Binding::Session(session.id.as_bytes());
    let form = match read_checked_form(&app.tokens, req, false, Some(binding)).await {
        Ok(form) => form,
        Err(refusal) => return refusal.response(),
    };
    let Some(handle) = SessionKey::from_hex(&form.session) else {
        return Refusal::NoSuchSessionField.response();
    };
    let current = match app.gate.sessions().list(&session.user, &session.id).await {
        Ok(list) => list.iter().any(|s| s.current && s.handle == handle),
        Err(e) => return store_unavailable(&e),
    };
    match app.gate.end_listed(&session.user, &handle).await {
        Err(e) => store_unavailable(&e),
        // The answer to a form's post: the page, whoever sent it.
        Ok(false) => app.pages().refuse(
            &Refusal::SessionNotFound {
                sessions: &app.routes.sessions,
            },
            true,
        ),
        Ok(true) => ended(app, &session, current),
    }
}

/// The answer once a session was ended: back to the list, or to the sign-in page when it was
/// this browser's own (whose cookie is cleared).
fn ended(app: &App, session: &Authenticated, current: bool) -> Response<Body> {
    tracing::info!(
        user = session.user.name.as_str(),
        current,
        "session ended from the sessions page"
    );
    let to = if current {
        &app.routes.login
    } else {
        &app.routes.sessions
    };
    let location = HeaderValue::from_str(to).expect("the prefix is header-safe");
    let mut res = response::redirect(StatusCode::SEE_OTHER, location);
    if current {
        res.headers_mut()
            .insert(header::SET_COOKIE, app.clearing_cookie());
    }
    no_store(&mut res);
    res
}
