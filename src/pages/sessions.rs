//! "Your sessions": the page that lists the signed-in user's own sessions (when and where each
//! started, when it was last used, from which browser) with a button to end each, and one to
//! sign out everywhere. Sessions are named on the page by their one-way handle (see
//! `session::keys`), never by their id. The endpoints that serve it are the handler's.

use std::time::SystemTime;

use http::{Response, StatusCode};

use crate::http::response::Body;
use crate::pages::{self, Pages, escape_html};
use crate::session::SessionInfo;

/// Where the page's links and forms point.
pub struct Links<'a> {
    pub sessions: &'a str,
    pub sessions_end: &'a str,
    pub logout: &'a str,
}

/// The page listing `user`'s sessions; `csrf` is its forms' token.
pub fn page<S>(
    pages: &Pages,
    links: &Links<'_>,
    user: &str,
    csrf: &str,
    list: &[SessionInfo],
) -> Response<Body<S>> {
    let rows: String = list.iter().map(|s| row(links, csrf, s)).collect();
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
        user = escape_html(user),
        logout = escape_html(links.logout),
    );
    pages::respond(StatusCode::OK, pages.shell("Your sessions", &body))
}

/// One session's row: its current browser's signs out, any other's ends that session.
fn row(links: &Links<'_>, csrf: &str, s: &SessionInfo) -> String {
    let address = s
        .client
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let action = if s.current {
        format!(
            r#"<form method="post" action="{logout}"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>"#,
            logout = escape_html(links.logout),
        )
    } else {
        format!(
            r#"<form method="post" action="{end}"><input type="hidden" name="session" value="{handle}"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" aria-label="Sign out the session started {started}">Sign out</button></form>"#,
            end = escape_html(links.sessions_end),
            handle = s.handle.to_hex(),
            started = when(s.started),
        )
    };
    format!(
        "<tr{class}><td>{started}{marker}</td><td>{seen}</td><td>{address}</td><td>{browser}</td><td>{action}</td></tr>\n",
        class = if s.current { " class=\"current\"" } else { "" },
        started = when(s.started),
        marker = if s.current {
            " <strong>(this browser)</strong>"
        } else {
            ""
        },
        seen = when(s.last_seen),
        address = escape_html(&address),
        browser = escape_html(&s.browser),
    )
}

/// "2026-12-01 11:42:47 UTC"
pub(crate) fn when(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}
