//! The answers to requests the gate refuses, in one place: a browser navigation gets a page
//! (or the sign-in redirect), anything else JSON it can act on.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::app::App;
use crate::auth::csrf::Binding;
use crate::gate::Decision;
use crate::http::error::RequestError;
use crate::http::response::{self, Body, no_store};
use crate::pages::branded::{self, escape_html};

const FORBIDDEN_JSON: &str = "{\"error\":\"forbidden\"}\n";

/// The answer to a refused request: `decision` is `LoginRequired`, `Forbidden` or
/// `Unavailable`.
pub fn answer<B>(app: &App, req: &Request<B>, decision: &Decision) -> Response<Body> {
    let here = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    answer_for(app, req.method(), req.headers(), here, decision)
}

/// [`answer`] for a request given by its parts (forward-auth judges a request it only reads
/// about): its method and headers, and `here`, the return address for the sign-in page.
pub fn answer_for(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    here: &str,
    decision: &Decision,
) -> Response<Body> {
    let navigation = is_navigation(method, headers);
    let mut res = match decision {
        Decision::LoginRequired if navigation => {
            response::redirect(StatusCode::FOUND, login_location(app, here))
        }
        Decision::LoginRequired => response::json(
            StatusCode::UNAUTHORIZED,
            app.routes.unauthorized_json.clone(),
        ),
        // Never a redirect to the sign-in page: the user is signed in, and sending them there
        // would loop.
        Decision::Forbidden { user } if navigation => {
            forbidden_page(app, headers, user.as_ref().map(|u| u.name.as_str()))
        }
        Decision::Forbidden { .. } => response::json(
            StatusCode::FORBIDDEN,
            bytes::Bytes::from_static(FORBIDDEN_JSON.as_bytes()),
        ),
        Decision::Unavailable => RequestError::StoreUnavailable.answer(app, navigation),
        Decision::Allow { .. }
        | Decision::Public { .. }
        | Decision::CrossSiteUpgrade
        | Decision::Own(_) => {
            tracing::error!("a request the gate let through reached the refusal path; refused");
            RequestError::Panic.response()
        }
    };
    no_store(&mut res);
    res
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

/// The sign-in page, with `rd` set to `here` (a path on this site).
pub fn login_location(app: &App, here: &str) -> HeaderValue {
    let mut location = app.routes.login.clone();
    location.push_str("?rd=");
    location.extend(form_urlencoded::byte_serialize(here.as_bytes()));
    HeaderValue::from_str(&location).unwrap_or_else(|_| {
        HeaderValue::from_str(&app.routes.login).expect("the prefix is header-safe")
    })
}

/// 403 for a browser: who is signed in and a way to sign out (to sign in as someone else), and
/// nothing about the rule that refused. The sign-out form's token is bound to the session
/// cookie the request brought (the one the gate judged).
fn forbidden_page(app: &App, headers: &HeaderMap, user: Option<&str>) -> Response<Body> {
    const TITLE: &str = "Access denied";
    match user {
        Some(name) => {
            // Always there when a user is: the user was found by this cookie.
            let csrf = app
                .gate
                .session_id(headers)
                .map(|id| app.tokens.issue(Binding::Session(id.as_bytes())))
                .unwrap_or_default();
            let body = format!(
                r#"<p>Signed in as <strong>{name}</strong>; you do not have access to this page.</p>
<form method="post" action="{logout}">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Sign out</button>
</form>"#,
                name = escape_html(name),
                logout = escape_html(&app.routes.logout),
            );
            branded::message(app, StatusCode::FORBIDDEN, TITLE, &[], &body)
        }
        None => branded::message(
            app,
            StatusCode::FORBIDDEN,
            TITLE,
            &["Nobody has access to this page."],
            "",
        ),
    }
}
