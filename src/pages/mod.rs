//! The pages a person can meet (sign-in, second-factor code, refusals and errors), rendered
//! from minijinja templates embedded in the binary, with `[login_page]` branding and an
//! optional user template for the sign-in page. Every template is escaped as HTML, bounded by
//! fuel and a recursion limit, and can reach no file: there is no loader.

pub mod account;
pub mod sessions;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::http::error::{self, Refusal};
use crate::http::response::{self, Body, no_store};

/// Instructions (and about 64 bytes each of output) one render may use: the built-in pages
/// take a few hundred; a template that loops or recurses without end stops here.
const FUEL: u64 = 100_000;
/// Nesting of blocks, includes and macro calls.
const RECURSION_LIMIT: usize = 32;
/// The name the user's template is registered under in place of the built-in one.
const CUSTOM: &str = "custom-sign-in.html";

/// The pages' Content-Security-Policy around its `style-src`, which lists the hash of each
/// `<style>` element the page has (see [`csp_for`]). No script runs (`default-src 'none'`, and
/// the pages have none); no other site may frame them (clickjacking a sign-in form); images
/// only from here (the logo) and `data:` (the empty icon that keeps the browser from asking
/// the app for /favicon.ico); forms post only here; no `<base>` can move where links point.
const CSP_HEAD: &str = "default-src 'none'; style-src";
const CSP_TAIL: &str =
    "; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// An SVG logo opened on its own can run no script, load nothing and not be framed. Its styles
/// stay `'unsafe-inline'`: the file is the operator's, SVG editors write `style="..."`
/// attributes (which no hash in `style-src` can allow), and with no script and nothing to load
/// a style in it can do nothing but draw.
const LOGO_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// The accent when `login_page.accent_color` is not set: white text on it passes WCAG AA.
pub const DEFAULT_ACCENT: &str = "#1f5fbf";

const BUILT_IN: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/layout.html")),
    ("brand.html", include_str!("../../templates/brand.html")),
    ("sign-in.html", include_str!("../../templates/sign-in.html")),
    ("code.html", include_str!("../../templates/code.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

/// Why a user template was refused at load.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}, line {line}: {what}")]
    Invalid {
        path: String,
        line: usize,
        what: String,
    },
    #[error(
        "{path}: the template must output {{{{ hidden_fields }}}} inside its form (the return address and the form token sessiongate checks)"
    )]
    NoHiddenFields { path: String },
}

/// A logo read at start, served at `{prefix}/logo`.
#[derive(Debug, Clone)]
pub struct Logo {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// What `[login_page]` says, validated.
#[derive(Debug, Clone)]
pub struct Branding {
    pub title: String,
    pub app_name: Option<String>,
    pub message: Option<String>,
    /// `#rrggbb`, lowercase.
    pub accent_color: String,
    pub logo: Option<Logo>,
}

impl Default for Branding {
    fn default() -> Branding {
        Branding {
            title: "Sign in".to_string(),
            app_name: None,
            message: None,
            accent_color: DEFAULT_ACCENT.to_string(),
            logo: None,
        }
    }
}

/// A user template: where it came from (for messages) and its text.
#[derive(Debug, Clone)]
pub struct UserTemplate {
    pub path: String,
    pub source: String,
}

/// The sign-in page's variable parts.
pub struct SignIn<'a> {
    pub action: &'a str,
    pub hidden_fields: &'a [(&'a str, &'a str)],
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
    /// Whether the password form is shown (there are `[[users]]`, or no provider).
    pub password: bool,
    /// One button per provider: its name and where it starts the sign-in.
    pub providers: &'a [(&'a str, String)],
    /// With `auth.passkeys`: "Sign in with a passkey" and the script behind it.
    pub passkey: Option<PasskeyLinks<'a>>,
}

/// The second-factor page's variable parts.
pub struct Code<'a> {
    pub action: &'a str,
    pub hidden_fields: &'a [(&'a str, &'a str)],
    pub error: Option<&'a str>,
    /// Whether the code field is shown (the user has a TOTP secret).
    pub code: bool,
    /// A passkey instead (the user has passkeys).
    pub passkey: Option<PasskeyLinks<'a>>,
}

fn passkey_context(links: Option<PasskeyLinks<'_>>) -> Value {
    links.map_or(Value::from(()), |p| {
        context(vec![
            ("script", attribute(p.script)),
            ("options", attribute(p.options)),
            ("action", attribute(p.action)),
        ])
    })
}

/// Where a passkey form's script, challenge and answer go.
#[derive(Clone, Copy)]
pub struct PasskeyLinks<'a> {
    pub script: &'a str,
    pub options: &'a str,
    pub action: &'a str,
}

/// A page rendered as HTML, with the Content-Security-Policy that lets its styles apply.
pub struct Page {
    pub html: String,
    csp: HeaderValue,
}

/// The compiled templates and the branding they are rendered with; built once per config.
pub struct Pages {
    env: Environment<'static>,
    custom: Option<String>,
    branding: Branding,
    /// `{prefix}/logo?v=HASH`, so the long cache lifetime never shows an old logo.
    logo_url: Option<String>,
    accent_text: &'static str,
    /// The built-in pages' CSP: their one `<style>` depends on the branding alone, so its
    /// hash is computed here, once per config.
    csp: HeaderValue,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("custom", &self.custom)
            .field("branding", &self.branding)
            .finish_non_exhaustive()
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Whatever a template is called, every value it prints is escaped as HTML.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    // Printing a name no page defines is an error (caught when a user template is loaded);
    // `{% if name %}` on one is allowed.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    for (name, source) in BUILT_IN {
        if let Err(e) = env.add_template(name, source) {
            // Covered by the unit tests: a built-in template always compiles.
            tracing::error!("built-in template {name}: {e}");
        }
    }
    env
}

fn context(pairs: Vec<(&'static str, Value)>) -> Value {
    Value::from(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<std::collections::BTreeMap<String, Value>>(),
    )
}

/// A URL sessiongate made, escaped here so minijinja's escaping of `/` (as `&#x2f;`) does not
/// make the page harder to read.
fn attribute(url: &str) -> Value {
    Value::from_safe_string(escape_html(url))
}

/// The hidden inputs, rendered by sessiongate so no template can drop or change them.
fn hidden_fields(fields: &[(&str, &str)]) -> Value {
    let mut html = String::new();
    for (name, value) in fields {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            escape_html(name),
            escape_html(value)
        ));
    }
    Value::from_safe_string(html)
}

impl Pages {
    /// Compiles `template` (if any) beside the built-in pages and renders it once with and
    /// without an error, refusing a template that does not compile, does not render within
    /// the limits, or leaves out the hidden fields. `prefix` is `auth.prefix`.
    pub fn new(
        branding: Branding,
        template: Option<&UserTemplate>,
        prefix: &str,
    ) -> Result<Pages, TemplateError> {
        let mut env = environment();
        let custom = match template {
            None => None,
            Some(t) => {
                env.add_template_owned(CUSTOM, t.source.clone())
                    .map_err(|e| template_error(&t.path, &e))?;
                Some(t.path.clone())
            }
        };
        let logo_url = branding.logo.as_ref().map(|logo| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&logo.bytes);
            let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("{prefix}/logo?v={tag}")
        });
        let pages = Pages {
            env,
            custom,
            accent_text: text_on(&branding.accent_color),
            branding,
            logo_url,
            csp: HeaderValue::from_static(""),
        }
        .with_csp();
        if let Some(t) = template {
            pages.try_user_template(t)?;
        }
        Ok(pages)
    }

    /// The built-in pages with the default branding, for the unit tests.
    #[cfg(test)]
    pub fn built_in() -> &'static Pages {
        static PAGES: std::sync::LazyLock<Pages> = std::sync::LazyLock::new(|| {
            Pages {
                env: environment(),
                custom: None,
                accent_text: text_on(DEFAULT_ACCENT),
                branding: Branding::default(),
                logo_url: None,
                csp: HeaderValue::from_static(""),
            }
            .with_csp()
        });
        &PAGES
    }

    /// Sets the built-in pages' CSP from the layout they all extend, rendered with this
    /// branding.
    fn with_csp(mut self) -> Pages {
        let mut ctx = self.common("");
        ctx.push(("body", Value::from("")));
        let layout = self.built_in_or_plain("layout.html", context(ctx), "");
        self.csp = csp_for(&layout);
        self
    }

    /// A built-in page's HTML with the built-in pages' CSP.
    fn built_in_page(&self, html: String) -> Page {
        Page {
            csp: allow_own_script(&self.csp, &html),
            html,
        }
    }

    /// The name authenticator apps show beside a TOTP entry: `login_page.app_name`, else
    /// "sessiongate".
    pub fn issuer(&self) -> &str {
        self.branding.app_name.as_deref().unwrap_or("sessiongate")
    }

    pub fn logo(&self) -> Option<&Logo> {
        self.branding.logo.as_ref()
    }

    fn try_user_template(&self, t: &UserTemplate) -> Result<(), TemplateError> {
        const MARKER: &str = "sessiongate-hidden-fields-marker";
        for error in [None, Some("Invalid username or password.")] {
            let page = SignIn {
                action: "/login",
                hidden_fields: &[(MARKER, MARKER)],
                password: true,
                providers: &[],
                username: if error.is_some() { "someone" } else { "" },
                error,
                notice: None,
                passkey: None,
            };
            let html = self
                .env
                .get_template(CUSTOM)
                .and_then(|tmpl| tmpl.render(self.sign_in_context(&page)))
                .map_err(|e| template_error(&t.path, &e))?;
            if !html.contains(&format!("name=\"{MARKER}\" value=\"{MARKER}\"")) {
                return Err(TemplateError::NoHiddenFields {
                    path: t.path.clone(),
                });
            }
        }
        Ok(())
    }

    fn common(&self, page_title: &str) -> Vec<(&'static str, Value)> {
        let b = &self.branding;
        vec![
            ("page_title", Value::from(page_title)),
            ("title", Value::from(b.title.as_str())),
            ("app_name", Value::from(b.app_name.clone())),
            ("message", Value::from(b.message.clone())),
            (
                "logo_url",
                self.logo_url.as_deref().map_or(Value::from(()), attribute),
            ),
            ("accent_color", Value::from(b.accent_color.as_str())),
            ("accent_text", Value::from(self.accent_text)),
        ]
    }

    fn sign_in_context(&self, page: &SignIn<'_>) -> Value {
        let mut ctx = self.common(&self.branding.title);
        ctx.extend([
            ("action", attribute(page.action)),
            ("hidden_fields", hidden_fields(page.hidden_fields)),
            ("username", Value::from(page.username)),
            ("error", Value::from(page.error)),
            ("notice", Value::from(page.notice)),
            ("password", Value::from(page.password)),
            ("passkey", passkey_context(page.passkey)),
            (
                "providers",
                Value::from_iter(page.providers.iter().map(|(name, href)| {
                    context(vec![
                        ("name", Value::from(*name)),
                        ("href", attribute(href)),
                    ])
                })),
            ),
        ]);
        context(ctx)
    }

    fn render(&self, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// The sign-in page: the user's template if there is one, the built-in one if there is
    /// none or if it fails at this render (logged).
    pub fn sign_in(&self, page: &SignIn<'_>) -> Page {
        let ctx = self.sign_in_context(page);
        if let Some(path) = &self.custom {
            match self.render(CUSTOM, ctx.clone()) {
                // Hashed at each render: the template's own `<style>` may depend on what this
                // render shows (`{% if error %}`), which no render at load can foresee.
                Ok(html) => {
                    return Page {
                        csp: allow_own_script(&csp_for(&html), &html),
                        html,
                    };
                }
                Err(e) => tracing::error!(
                    "login_page.template {path}: {}; showing the built-in sign-in page",
                    template_error(path, &e)
                ),
            }
        }
        self.built_in_page(self.built_in_or_plain("sign-in.html", ctx, &self.branding.title))
    }

    /// The second-factor page: one code field, posted to `action` with `hidden_fields`.
    pub fn code(&self, page: &Code<'_>) -> Page {
        let mut ctx = self.common("Enter your code");
        ctx.extend([
            ("action", attribute(page.action)),
            ("hidden_fields", hidden_fields(page.hidden_fields)),
            ("error", Value::from(page.error)),
            ("code", Value::from(page.code)),
            ("passkey", passkey_context(page.passkey)),
        ]);
        self.built_in_page(self.built_in_or_plain("code.html", context(ctx), "Enter your code"))
    }

    /// A page titled `title` saying `lines` (text), then `body` (HTML already escaped).
    pub fn message(&self, title: &str, lines: &[&str], body: &str) -> Page {
        let mut ctx = self.common(title);
        ctx.extend([
            ("lines", Value::from_iter(lines.iter().copied())),
            ("body", Value::from_safe_string(body.to_string())),
        ]);
        self.built_in_page(self.built_in_or_plain("error.html", context(ctx), title))
    }

    /// The answer to `refusal`, its page (if it has one for this client, see
    /// [`Refusal::shown`]) drawn here. `navigation`: a browser loading a page.
    pub fn refuse<S>(&self, refusal: &Refusal<'_>, navigation: bool) -> Response<Body<S>> {
        refusal.answer(navigation, |status, page| {
            respond(status, self.refusal_page(page))
        })
    }

    fn refusal_page(&self, page: &error::Page<'_>) -> Page {
        match page {
            error::Page::Message { title, lines } => self.message(title, lines, ""),
            error::Page::SignedIn { title, who } => {
                let body = format!(
                    r#"<p>Signed in as <strong>{name}</strong>; you do not have access to this page.</p>
<form method="post" action="{logout}">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Sign out</button>
</form>"#,
                    name = escape_html(who.user),
                    logout = escape_html(who.logout),
                    csrf = who.csrf,
                );
                self.message(title, &[], &body)
            }
            error::Page::Back {
                title,
                lines,
                back,
                label,
            } => {
                let mut body = format!("<main>\n<h1>{}</h1>\n", escape_html(title));
                for line in *lines {
                    body.push_str(&format!("<p>{}</p>\n", escape_html(line)));
                }
                body.push_str(&format!(
                    "<p><a href=\"{}\">{}</a></p>\n</main>",
                    escape_html(back),
                    escape_html(label)
                ));
                self.shell(title, &body)
            }
            error::Page::Told {
                title,
                text,
                back,
                label,
            } => {
                let body = format!(
                    "<p><a href=\"{}\">{}</a></p>",
                    escape_html(back),
                    escape_html(label)
                );
                self.message(title, &[text], &body)
            }
            // Only the step whose form it is can draw the form (its fields and token): a
            // refusal that names one is answered there, and this is the same words without it.
            error::Page::Form { error } => self.message(&self.branding.title, &[error], ""),
        }
    }

    /// The page shell around `body` (HTML already escaped), as the sessions page uses it.
    pub fn shell(&self, title: &str, body: &str) -> Page {
        let mut ctx = self.common(title);
        ctx.push(("body", Value::from_safe_string(body.to_string())));
        self.built_in_page(self.built_in_or_plain("layout.html", context(ctx), title))
    }

    fn built_in_or_plain(&self, name: &str, ctx: Value, title: &str) -> String {
        match self.render(name, ctx) {
            Ok(html) => html,
            Err(e) => {
                // Covered by the unit tests; never a 500 for a page that could not be styled.
                tracing::error!("built-in template {name}: {e}");
                format!(
                    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1></body></html>\n",
                    t = escape_html(title)
                )
            }
        }
    }
}

fn template_error(path: &str, e: &minijinja::Error) -> TemplateError {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    TemplateError::Invalid {
        path: path.to_string(),
        line: e.line().unwrap_or(1),
        what,
    }
}

/// Every HTML page sessiongate shows goes out here, with the pages' security headers: never
/// cached, never framed (the CSP's `frame-ancestors`, and `X-Frame-Options` for browsers
/// without it), no script, and (from [`response::full`]) never sniffed as another type.
pub fn respond<S>(status: StatusCode, page: Page) -> Response<Body<S>> {
    let mut res = response::full(status, "text/html; charset=utf-8", page.html);
    no_store(&mut res);
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp);
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

/// `GET {prefix}/logo`: the configured logo, cached for a year (its URL changes with it).
pub fn logo_response<S>(pages: &Pages) -> Response<Body<S>> {
    let Some(logo) = pages.logo() else {
        return Refusal::NoLogo.response();
    };
    let mut res = response::full(StatusCode::OK, logo.content_type, logo.bytes.clone());
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(LOGO_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// `{prefix}/passkey.js`: the passkey forms' script (assets/passkey.js), which runs only on
/// the pages that load it.
pub fn passkey_script<S>() -> Response<Body<S>> {
    const SCRIPT: &str = include_str!("../../assets/passkey.js");
    let mut res = response::full(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT);
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

/// The pages' CSP for `html`: `style-src` lists the hash of each `<style>` element in it and
/// nothing else, so no injected style (and no `style="..."` attribute) applies; with none,
/// `'none'`.
fn csp_for(html: &str) -> HeaderValue {
    let mut csp = String::from(CSP_HEAD);
    let mut any = false;
    for css in style_texts(html) {
        csp.push_str(" 'sha256-");
        csp.push_str(&BASE64.encode(style_digest(css)));
        csp.push('\'');
        any = true;
    }
    if !any {
        csp.push_str(" 'none'");
    }
    csp.push_str(CSP_TAIL);
    // Base64, quotes and the fixed parts only: always a header value.
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; frame-ancestors 'none'",
    ))
}

/// `csp`, letting a page that loads a script of this origin (`passkey.js`) run it and call
/// back here (`fetch`); every other page keeps running none.
fn allow_own_script(csp: &HeaderValue, html: &str) -> HeaderValue {
    if !html.contains("<script src=") {
        return csp.clone();
    }
    let mut text = csp.to_str().unwrap_or_default().to_string();
    text.push_str("; script-src 'self'; connect-src 'self'");
    HeaderValue::from_str(&text).unwrap_or_else(|_| csp.clone())
}

/// SHA-256 of a `<style>` element's text as a browser hashes it: after its parser has turned
/// each CRLF and lone CR into LF (a template saved with Windows line ends still matches).
fn style_digest(css: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    let mut rest = css.as_bytes();
    while let Some(cr) = rest.iter().position(|&b| b == b'\r') {
        sha.update(&rest[..cr]);
        sha.update(b"\n");
        rest = &rest[cr + 1..];
        if let Some(after) = rest.strip_prefix(b"\n") {
            rest = after;
        }
    }
    sha.update(rest);
    sha.finalize().into()
}

/// The text of each `<style>` element in `html`, found as an HTML parser finds it: from the
/// end of the start tag (quoted attribute values may hold `>`) to the next `</style`, or to
/// the end. A `<style>` inside a comment or another element's raw text is listed too; that
/// only allows a style its author wrote, since every value a template prints is escaped.
fn style_texts(html: &str) -> impl Iterator<Item = &str> {
    let mut rest = html;
    std::iter::from_fn(move || {
        let open = tag_at(rest, "<style")?;
        let attributes = &rest[open + "<style".len()..];
        let text = &attributes[start_tag_end(attributes)?..];
        let len = tag_at(text, "</style").unwrap_or(text.len());
        rest = &text[len..];
        Some(&text[..len])
    })
}

/// Where `tag` (`<name` or `</name`) first starts in `html`, in any case, as a whole name:
/// followed by `>`, `/`, white space or the end.
fn tag_at(html: &str, tag: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    html.match_indices('<').map(|(i, _)| i).find(|&i| {
        bytes[i..]
            .get(..tag.len())
            .is_some_and(|name| name.eq_ignore_ascii_case(tag.as_bytes()))
            && bytes
                .get(i + tag.len())
                .is_none_or(|&b| b == b'>' || b == b'/' || b.is_ascii_whitespace())
    })
}

/// The offset just past the `>` that ends a start tag whose attributes begin `attributes`: a
/// quote right after `=` starts a value that may hold `>`.
fn start_tag_end(attributes: &str) -> Option<usize> {
    let mut quote = None;
    let mut after_equals = false;
    for (i, b) in attributes.bytes().enumerate() {
        match quote {
            Some(q) if q == b => quote = None,
            Some(_) => {}
            None if b == b'>' => return Some(i + 1),
            None if after_equals && (b == b'"' || b == b'\'') => quote = Some(b),
            None if b.is_ascii_whitespace() => continue,
            None => {}
        }
        after_equals = b == b'=';
    }
    None
}

/// `#rgb` or `#rrggbb` as `#rrggbb` lowercase; nothing else, so it cannot carry CSS.
pub fn parse_color(text: &str) -> Option<String> {
    let hex = text.strip_prefix('#')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let full: String = match hex.len() {
        3 => hex.chars().flat_map(|c| [c, c]).collect(),
        6 => hex.to_string(),
        _ => return None,
    };
    Some(format!("#{}", full.to_ascii_lowercase()))
}

/// WCAG relative luminance of `#rrggbb` (0 for anything else).
fn luminance(color: &str) -> f64 {
    let hex = color.strip_prefix('#').unwrap_or_default();
    let channel = |i: usize| {
        let c = hex
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4)
}

/// WCAG contrast ratio between two `#rrggbb` colours.
pub fn contrast(a: &str, b: &str) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// Black or white, whichever contrasts more with `accent`: at least 4.58:1 for any colour,
/// so the button's text passes WCAG AA in both colour schemes.
pub fn text_on(accent: &str) -> &'static str {
    if contrast(accent, "#000000") >= contrast(accent, "#ffffff") {
        "#000000"
    } else {
        "#ffffff"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(source: &str) -> Result<Pages, TemplateError> {
        Pages::new(
            Branding::default(),
            Some(&UserTemplate {
                path: "login.html".to_string(),
                source: source.to_string(),
            }),
            "/.sessiongate",
        )
    }

    fn refused(refusal: &Refusal<'_>) -> (StatusCode, http::HeaderMap, String) {
        let res: Response<Body<()>> = Pages::built_in().refuse(refusal, true);
        let (parts, body) = res.into_parts();
        let http_body_util::Either::Left(body) = body else {
            unreachable!("a page is written here")
        };
        let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .expect("a full body is ready")
            .expect("infallible")
            .to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    /// A refusal's page, as a browser loading a page gets it: the refusal's status and
    /// headers, the pages' security headers, and its words.
    #[test]
    fn refusal_pages_are_drawn_with_their_words_and_the_pages_headers() {
        let who = crate::http::error::SignedIn {
            user: "a<b",
            logout: "/auth/logout",
            csrf: "t0k3n".to_string(),
        };
        let (status, h, html) = refused(&Refusal::Forbidden {
            signed_in: Some(who),
        });
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("<h1>Access denied</h1>"), "{html}");
        assert!(
            html.contains("<p>Signed in as <strong>a&lt;b</strong>; you do not have access to this page.</p>\n<form method=\"post\" action=\"/auth/logout\">\n<input type=\"hidden\" name=\"csrf\" value=\"t0k3n\">"),
            "{html}"
        );
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin");
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(h.contains_key(header::CONTENT_SECURITY_POLICY));

        let (status, h, html) = refused(&Refusal::StoreUnavailable { cause: None });
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h[header::RETRY_AFTER], "1");
        assert!(html.contains("<h1>Service unavailable</h1>"), "{html}");
        assert!(html.contains("<p>This page is not available right now: sessions cannot be checked. Try again in a moment.</p>"), "{html}");

        let (status, _, html) = refused(&Refusal::SessionNotFound {
            sessions: "/auth/sessions",
        });
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            html.contains("<main>\n<h1>Session not found</h1>\n<p>That session is not one of yours, or it has already ended.</p>\n<p><a href=\"/auth/sessions\">Back to your sessions</a></p>\n</main>"),
            "{html}"
        );

        let e = std::io::Error::other("refused");
        let (status, h, html) = refused(&Refusal::Upstream {
            timed_out: true,
            cause: &e,
        });
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(!h.contains_key(header::RETRY_AFTER));
        assert!(html.contains("<h1>Gateway timeout</h1>"), "{html}");
    }

    #[test]
    fn the_sign_in_page_has_a_button_per_provider() {
        let pages = Pages::built_in();
        let providers = [(
            "Corp & Co".to_string(),
            "/p/corp/start?rd=%2F&x=1".to_string(),
        )];
        let providers: Vec<(&str, String)> = providers
            .iter()
            .map(|(n, h)| (n.as_str(), h.clone()))
            .collect();
        let render = |password| {
            pages
                .sign_in(&SignIn {
                    action: "/.sessiongate/login",
                    hidden_fields: &[("rd", "/"), ("csrf", "tok")],
                    username: "",
                    error: None,
                    notice: None,
                    password,
                    providers: &providers,
                    passkey: None,
                })
                .html
        };
        let both = render(true);
        assert!(both.contains(r#"<a class="provider" href="/p/corp/start?rd=%2F&amp;x=1">Sign in with Corp &amp; Co</a>"#), "{both}");
        assert!(both.contains("name=\"password\""), "{both}");
        let only = render(false);
        assert!(
            only.contains("Sign in with Corp") && !only.contains("name=\"password\""),
            "{only}"
        );
    }

    #[test]
    fn every_built_in_template_renders() {
        let pages = Pages::built_in();
        for name in ["layout.html", "sign-in.html", "code.html", "error.html"] {
            assert!(pages.env.get_template(name).is_ok(), "{name}");
        }
        let html = pages
            .sign_in(&SignIn {
                action: "/.sessiongate/login",
                hidden_fields: &[("rd", "/x?a=1&b=\"2\""), ("csrf", "tok")],
                username: "<alice>",
                error: Some("Invalid username or password."),
                notice: None,
                password: true,
                providers: &[],
                passkey: None,
            })
            .html;
        assert!(html.contains("<html lang=\"en\">"), "{html}");
        assert!(
            html.contains(r#"<input type="hidden" name="rd" value="/x?a=1&amp;b=&quot;2&quot;">"#)
        );
        assert!(html.contains("value=\"&lt;alice&gt;\""));
        assert!(html.contains("role=\"alert\">Invalid username or password.</p>"));
        assert!(html.contains("autocomplete=\"current-password\""));
        let page = pages
            .message("Bad gateway", &["one <b>", "two"], "<p>raw</p>")
            .html;
        assert!(page.contains("<p>one &lt;b&gt;</p>") && page.contains("<p>raw</p>"));
    }

    #[test]
    fn the_code_page_has_one_numeric_one_time_code_field() {
        let html = Pages::built_in()
            .code(&Code {
                action: "/.sessiongate/login/code",
                hidden_fields: &[("csrf", "t")],
                error: Some("Wrong code."),
                code: true,
                passkey: None,
            })
            .html;
        assert!(html.contains(r#"<form method="post" action="/.sessiongate/login/code">"#));
        assert!(html.contains(r#"name="code" autocomplete="one-time-code" inputmode="numeric""#));
        assert!(html.contains(">Code from your authenticator app</label>"));
        assert!(html.contains(r#"<input type="hidden" name="csrf" value="t">"#));
        assert!(html.contains("role=\"alert\">Wrong code.</p>"));
        assert_eq!(html.matches("<input").count(), 2, "{html}");
    }

    #[test]
    fn a_user_template_is_escaped_and_must_output_the_hidden_fields() {
        let pages = user("<h1>{{ title }}</h1><p>{{ username }}</p><form action=\"{{ action }}\">{{ hidden_fields }}</form>").unwrap();
        let html = pages
            .sign_in(&SignIn {
                action: "/a",
                hidden_fields: &[("csrf", "x")],
                username: "<script>",
                error: None,
                notice: None,
                password: true,
                providers: &[],
                passkey: None,
            })
            .html;
        assert!(html.contains("<p>&lt;script&gt;</p>"), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"x\""));

        let e = user("<form>{{ title }}</form>").unwrap_err();
        assert!(
            e.to_string().contains("login.html") && e.to_string().contains("hidden_fields"),
            "{e}"
        );
        // `| safe` on a variable is the author's choice; hidden_fields stays required.
        let e = user("{{ hidden_fields | upper }}").unwrap_err();
        assert!(matches!(e, TemplateError::NoHiddenFields { .. }), "{e}");
    }

    #[test]
    fn a_broken_or_unbounded_template_is_refused_with_its_line() {
        let e = user("{{ hidden_fields }}\n{% if %}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("login.html, line 2: syntax error"), "{e}");
        let e = user("{{ hidden_fields }}\n{% include \"/etc/passwd\" %}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("not found"), "{e}");
        let e = user("{{ hidden_fields }}{{ tittle }}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("undefined"), "{e}");
        let started = std::time::Instant::now();
        let e = user("{{ hidden_fields }}{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}").unwrap_err().to_string();
        assert!(e.contains("fuel"), "{e}");
        let e = user("{% macro f() %}{{ f() }}{% endmacro %}{{ hidden_fields }}{{ f() }}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("recursion") || e.contains("fuel"), "{e}");
        // Stopped by the limits, not by running out of loop: a hang would never get here.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn colors_are_hex_only() {
        assert_eq!(parse_color("#ABC").as_deref(), Some("#aabbcc"));
        assert_eq!(parse_color("#1f5fbf").as_deref(), Some("#1f5fbf"));
        for bad in [
            "red",
            "#12",
            "#1234",
            "#12345g",
            "#fff; background: url(x)",
            "1f5fbf",
            "",
        ] {
            assert_eq!(parse_color(bad), None, "{bad}");
        }
    }

    #[test]
    fn button_text_contrasts_with_any_accent_at_wcag_aa() {
        assert_eq!(text_on("#ffffff"), "#000000");
        assert_eq!(text_on("#000000"), "#ffffff");
        assert_eq!(text_on("#ffd700"), "#000000");
        assert_eq!(text_on(DEFAULT_ACCENT), "#ffffff");
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        for r in (0..=255).step_by(17) {
            for g in (0..=255).step_by(17) {
                for b in (0..=255).step_by(17) {
                    let accent = format!("#{r:02x}{g:02x}{b:02x}");
                    let ratio = contrast(&accent, text_on(&accent));
                    assert!(ratio >= 4.5, "{accent}: {ratio}");
                }
            }
        }
    }

    /// The `'sha256-...'` sources a page's CSP lists for its styles.
    fn style_sources(page: &Page) -> Vec<String> {
        let csp = page.csp.to_str().unwrap();
        let style = csp
            .split(';')
            .find_map(|d| d.trim().strip_prefix("style-src "))
            .unwrap_or_else(|| panic!("no style-src in {csp}"));
        style.split(' ').map(str::to_string).collect()
    }

    fn sources_for(styles: &[&str]) -> Vec<String> {
        styles
            .iter()
            .map(|css| format!("'sha256-{}'", BASE64.encode(style_digest(css))))
            .collect()
    }

    #[test]
    fn every_built_in_page_allows_exactly_its_own_style_and_no_script_or_framing() {
        let branding = Branding {
            accent_color: "#f46800".to_string(),
            ..Branding::default()
        };
        let pages = Pages::new(branding, None, "/.sessiongate").unwrap();
        let rendered = [
            pages.sign_in(&SignIn {
                action: "/.sessiongate/login",
                hidden_fields: &[("csrf", "t")],
                username: "",
                error: Some("Invalid username or password."),
                notice: None,
                password: true,
                providers: &[],
                passkey: None,
            }),
            pages.code(&Code {
                action: "/.sessiongate/login/code",
                hidden_fields: &[("csrf", "t")],
                error: None,
                code: true,
                passkey: None,
            }),
            pages.message("Bad gateway", &["The app could not be reached."], ""),
            pages.shell("Your sessions", "<main>rows</main>"),
        ];
        for page in &rendered {
            let styles: Vec<&str> = style_texts(&page.html).collect();
            assert_eq!(styles.len(), 1, "{}", page.html);
            assert!(styles[0].contains("--accent: #f46800;"), "{}", styles[0]);
            assert_eq!(style_sources(page), sources_for(&styles));
            let csp = page.csp.to_str().unwrap();
            assert!(csp.starts_with("default-src 'none'; "), "{csp}");
            assert!(csp.contains("; frame-ancestors 'none'"), "{csp}");
            assert!(
                !csp.contains("unsafe") && !csp.contains("script-src"),
                "{csp}"
            );
        }
        // Another accent is another stylesheet, so another hash.
        let plain = Pages::built_in().message("Bad gateway", &[], "");
        assert_ne!(style_sources(&plain), style_sources(&rendered[2]));
    }

    #[test]
    fn a_user_templates_own_styles_are_hashed_as_rendered() {
        let pages = user(
            "<style>h1 { color: red }</style>{% if error %}<STYLE title=\"a>b\">.error { color: {{ accent_color }} }\r\n</STYLE >{% endif %}<h1>{{ title }}</h1><form>{{ hidden_fields }}</form>",
        )
        .unwrap();
        let sign_in = |error| {
            pages.sign_in(&SignIn {
                action: "/a",
                hidden_fields: &[],
                username: "",
                error,
                notice: None,
                password: true,
                providers: &[],
                passkey: None,
            })
        };
        let quiet = sign_in(None);
        assert_eq!(style_sources(&quiet), sources_for(&["h1 { color: red }"]));
        let failed = sign_in(Some("Wrong."));
        assert_eq!(
            style_sources(&failed),
            sources_for(&["h1 { color: red }", ".error { color: #1f5fbf }\n"])
        );
        // A template extending the layout keeps the built-in style.
        let extended = user(
            "{% extends \"layout.html\" %}{% block content %}{{ hidden_fields }}{% endblock %}",
        )
        .unwrap();
        let page = extended.sign_in(&SignIn {
            action: "/a",
            hidden_fields: &[],
            username: "",
            error: None,
            notice: None,
            password: true,
            providers: &[],
            passkey: None,
        });
        assert_eq!(
            style_sources(&page),
            style_sources(&Pages::built_in().shell("", ""))
        );
        // No <style> at all: no style applies.
        let bare = user("<form>{{ hidden_fields }}</form>").unwrap();
        let page = bare.sign_in(&SignIn {
            action: "/a",
            hidden_fields: &[],
            username: "",
            error: None,
            notice: None,
            password: true,
            providers: &[],
            passkey: None,
        });
        assert_eq!(style_sources(&page), ["'none'"]);
    }

    #[test]
    fn style_elements_are_found_as_a_parser_finds_them() {
        let texts = |html| style_texts(html).collect::<Vec<_>>();
        assert_eq!(texts("<p>no style</p>"), Vec::<&str>::new());
        assert_eq!(
            texts("<style>a{}</style><style\n>b{}</style\t>"),
            ["a{}", "b{}"]
        );
        // Not a style element: a longer name.
        assert_eq!(texts("<styles>x</styles><stylex>"), Vec::<&str>::new());
        // Quoted values may hold '>'; a quote not after '=' opens nothing.
        assert_eq!(texts("<style title = 'a>b'>c{}</style>"), ["c{}"]);
        assert_eq!(texts("<style x\"y>c{}</style>"), ["c{}"]);
        // Raw text: a '<style' inside one does not start another; an unclosed one runs to the
        // end; a start tag that never ends has no text.
        assert_eq!(
            texts("<style>/* <style> */a{}</style>"),
            ["/* <style> */a{}"]
        );
        assert_eq!(texts("<style>a{}"), ["a{}"]);
        assert_eq!(texts("<style media=\"x"), Vec::<&str>::new());
        // CRLF and lone CR are hashed as the LF a browser's parser makes of them.
        assert_eq!(
            style_digest("a{}\r\nb{}\rc{}"),
            style_digest("a{}\nb{}\nc{}")
        );
        assert_ne!(style_digest("a{}\n"), style_digest("a{}"));
    }
}
