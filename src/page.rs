//! The HTML pages sessiongate shows people (sign-in, access refused): one shell with the same
//! style and the same security headers.

use http::{HeaderValue, Response, StatusCode, header};

use crate::response::{self, Body, no_store};

/// Only scripts we never serve could use these pages' content; framing is refused too.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = r#"body { font-family: system-ui, sans-serif; background: #f4f5f7; display: flex; justify-content: center; padding-top: 12vh; margin: 0; }
main, body > form { background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); width: 18rem; }
h1 { font-size: 1.25rem; margin: 0 0 1rem; }
label { display: block; margin: .75rem 0 .25rem; font-size: .9rem; }
input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
button { margin-top: 1.25rem; width: 100%; padding: .6rem; font-size: 1rem; }
.error { color: #b00020; margin: 0 0 .5rem; }
main.wide { width: auto; max-width: 52rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #ddd; vertical-align: middle; }
td button { margin: 0; width: auto; padding: .3rem .6rem; font-size: .85rem; }
tr.current { background: #eef4ff; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }"#;

/// A page titled `title` with `body` (already escaped HTML), never cached or framed.
pub fn html(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{STYLE}
</style>
</head>
<body>
{body}
</body>
</html>
"#,
        title = escape_html(title),
    );
    let mut res = response::full(status, "text/html; charset=utf-8", html);
    no_store(&mut res);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
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
