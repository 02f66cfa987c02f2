//! "Your sessions": `GET {prefix}/sessions` lists the signed-in user's own sessions (when and
//! where each started, when it was last used, from which browser) with a button to end each,
//! and one to sign out everywhere; `POST {prefix}/sessions/end` ends one. Sessions are named
//! on the page by their one-way handle (see `session::keys`), never by their id.

use std::time::SystemTime;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::auth::csrf::Binding;
use crate::auth::form::read_checked_form;
use crate::auth::sign_in::store_unavailable;
use crate::gate::Authenticated;
use crate::http::error::{Refusal, is_navigation};
use crate::http::response::{self, no_store};
use crate::pages::{self, escape_html};
use crate::proxy::Body;
use crate::session::{SessionInfo, SessionKey};

/// The signed-in user, or the answer for a request without one (sign-in redirect or 401,
/// 503 when the store cannot answer).
async fn signed_in(app: &App, req: &Request<Incoming>) -> Result<Authenticated, Response<Body>> {
    match app.gate.authenticate(req.headers()).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => {
            let here = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let refusal =
                Refusal::login_required(&app.routes.login, here, &app.routes.unauthorized_json);
            let navigation = is_navigation(req.method(), req.headers());
            Err(app.pages().refuse(&refusal, navigation))
        }
        Err(e) => Err(store_unavailable(&e)),
    }
}

/// `GET {prefix}/sessions`
pub async fn show(app: &App, req: Request<Incoming>) -> Response<Body> {
    let session = match signed_in(app, &req).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    match app.gate.sessions().list(&session.user, &session.id).await {
        Ok(list) => page(app, &session, &list),
        Err(e) => store_unavailable(&e),
    }
}

/// `POST {prefix}/sessions/end` with `session=HANDLE` (CSRF-checked like logout).
pub async fn end(app: &App, req: Request<Incoming>) -> Response<Body> {
    let session = match signed_in(app, &req).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let binding = Binding::Session(session.id.as_bytes());
    let form = match read_checked_form(app, req, false, Some(binding)).await {
        Ok(form) => form,
        Err(refusal) => return refusal.response(),
    };
    let Some(handle) = SessionKey::from_hex(&form.session) else {
        return Refusal::NoSuchSessionField.response();
    };
    let sessions = app.gate.sessions();
    let current = match sessions.list(&session.user, &session.id).await {
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
        Ok(true) => {
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
    }
}

/// "2026-12-01 11:42:47 UTC"
fn when(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

/// The page for `session`'s user; its forms' token is bound to `session`.
fn page(app: &App, session: &Authenticated, list: &[SessionInfo]) -> Response<Body> {
    let csrf = app.tokens.issue(Binding::Session(session.id.as_bytes()));
    let mut rows = String::new();
    for s in list {
        let address = s
            .client
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let action = if s.current {
            format!(
                r#"<form method="post" action="{logout}"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>"#,
                logout = escape_html(&app.routes.logout),
            )
        } else {
            format!(
                r#"<form method="post" action="{end}"><input type="hidden" name="session" value="{handle}"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" aria-label="Sign out the session started {started}">Sign out</button></form>"#,
                end = escape_html(&app.routes.sessions_end),
                handle = s.handle.to_hex(),
                started = when(s.started),
            )
        };
        rows.push_str(&format!(
            "<tr{class}><td>{started}{marker}</td><td>{seen}</td><td>{address}</td><td>{browser}</td><td>{action}</td></tr>\n",
            class = if s.current { " class=\"current\"" } else { "" },
            started = when(s.started),
            marker = if s.current { " <strong>(this browser)</strong>" } else { "" },
            seen = when(s.last_seen),
            address = escape_html(&address),
            browser = escape_html(&s.browser),
        ));
    }
    let body = format!(
        r#"<main class="wide">
<h1>Your sessions</h1>
<p>Signed in as <strong>{user}</strong>. These are the browsers and programs signed in to your account.</p>
<table>
<thead><tr><th scope="col">Started</th><th scope="col">Last active</th><th scope="col">Address</th><th scope="col">Browser</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
<tbody>
{rows}</tbody>
</table>
<form method="post" action="{logout}">
<input type="hidden" name="everywhere" value="1">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Sign out everywhere</button>
</form>
</main>"#,
        user = escape_html(&session.user.name),
        logout = escape_html(&app.routes.logout),
    );
    pages::respond(StatusCode::OK, app.pages().shell("Your sessions", &body))
}
