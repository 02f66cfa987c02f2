//! The HTML pages sessiongate shows people (sign-in, access refused): one shell with the same
//! style and the same security headers (the templates are in `pages`).

use http::{Response, StatusCode};

use crate::app::App;
use crate::http::response::Body;
use crate::pages;

/// A page titled `title` with `body` (already escaped HTML), never cached or framed, in the
/// built-in style with the configured branding (accent colour).
pub fn branded(app: &App, status: StatusCode, title: &str, body: &str) -> Response<Body> {
    pages::respond(status, app.pages().shell(title, body))
}

/// A page titled `title` saying `lines`, then `body` (already escaped HTML), branded.
pub fn message(
    app: &App,
    status: StatusCode,
    title: &str,
    lines: &[&str],
    body: &str,
) -> Response<Body> {
    pages::respond(status, app.pages().message(title, lines, body))
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
