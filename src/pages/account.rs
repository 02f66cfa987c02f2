//! "Your account": the signed-in user's page. It links their sessions, lists their passkeys
//! (when each was added and last used) with a form to add one and a button to remove each,
//! and their authenticator app (TOTP): set up by scanning a QR code and confirming one code,
//! or removed. Adding or removing a factor asks for the password again when the session
//! signed in more than 5 minutes ago. The endpoints that serve it are the handler's.

use http::{Response, StatusCode};

use super::sessions::when;
use crate::credentials::passkey::{KeptPasskey, MAX_NAME};
use crate::http::response::Body;
use crate::pages::{self, Pages, escape_html};

/// Where the page's links and forms point.
pub struct Links<'a> {
    pub sessions: &'a str,
    pub logout: &'a str,
    pub totp_start: &'a str,
    pub totp_confirm: &'a str,
    pub totp_remove: &'a str,
    pub script: &'a str,
    pub options: &'a str,
    pub add: &'a str,
    pub remove: &'a str,
}

/// What the page shows.
pub struct Account<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
    /// `None`: passkeys are off, or there is nowhere to keep them (the text says which).
    pub passkeys: Result<&'a [KeptPasskey], &'a str>,
    /// The authenticator app, as far as the page can change it.
    pub totp: Totp<'a>,
    /// The password is asked with each change (signed in more than 5 minutes ago).
    pub confirm: bool,
    pub error: Option<&'a str>,
}

/// The authenticator app (TOTP) section.
pub enum Totp<'a> {
    /// Nowhere to keep one the user sets up (the text says so).
    Unkept(&'a str),
    /// The config has the user's secret: only an administrator changes it.
    ByAdministrator,
    /// The user set one up at this time (Unix ms).
    Own(u64),
    Off,
    /// A set-up under way: the QR code (SVG), the secret to type in instead, and the set-up's
    /// name for the confirming form.
    Setting {
        qr_svg: &'a str,
        secret: &'a str,
        setup: &'a str,
    },
}

/// The account page, with `status` (a refused change shows its error here).
pub fn page<S>(
    pages: &Pages,
    links: &Links<'_>,
    account: &Account<'_>,
    status: StatusCode,
) -> Response<Body<S>> {
    let error = account.error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape_html(e))
    });
    let passkeys = match account.passkeys {
        Ok(list) => passkey_section(links, account, list),
        Err(why) => format!("<h2>Passkeys</h2>\n<p>{}</p>\n", escape_html(why)),
    };
    let totp = totp_section(links, account);
    let body = format!(
        r#"<main class="wide">
<h1>Your account</h1>
<p>Signed in as <strong>{user}</strong>. <a href="{sessions}">Your sessions</a></p>
<form method="post" action="{logout}">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" class="secondary">Sign out</button>
</form>
{error}{passkeys}{totp}</main>"#,
        user = escape_html(account.user),
        sessions = escape_html(links.sessions),
        logout = escape_html(links.logout),
        csrf = escape_html(account.csrf),
    );
    pages::respond(status, pages.shell("Your account", &body))
}

fn passkey_section(links: &Links<'_>, account: &Account<'_>, list: &[KeptPasskey]) -> String {
    let rows: String = list.iter().map(|k| row(links, account, k)).collect();
    let table = if list.is_empty() {
        "<p>You have no passkeys yet.</p>\n".to_string()
    } else {
        format!(
            "<table class=\"stack\">\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Added</th><th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"visually-hidden\">Action</span></th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
        )
    };
    format!(
        r#"<h2>Passkeys</h2>
<p>A passkey signs you in with your device's screen lock or security key instead of a password.</p>
{table}<form method="post" action="{add}" data-passkey="add" data-options="{options}" hidden>
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="ceremony" value="">
<input type="hidden" name="credential" value="">
<label for="passkey-name">Name of the new passkey</label>
<input id="passkey-name" name="name" maxlength="{MAX_NAME}" required placeholder="e.g. Work laptop">
{confirm}<p class="error passkey-error" role="alert" hidden></p>
<button type="submit">Add a passkey</button>
</form>
<noscript><p>Adding a passkey needs JavaScript.</p></noscript>
<script src="{script}" defer></script>
"#,
        add = escape_html(links.add),
        options = escape_html(links.options),
        csrf = escape_html(account.csrf),
        confirm = confirm_field(account.confirm, "passkey-password"),
        script = escape_html(links.script),
    )
}

/// The password field a change needs when the session signed in over 5 minutes ago.
fn confirm_field(confirm: bool, id: &str) -> String {
    if !confirm {
        return String::new();
    }
    format!(
        "<label for=\"{id}\">Your password (you signed in more than 5 minutes ago)</label>\n<input id=\"{id}\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n"
    )
}

fn row(links: &Links<'_>, account: &Account<'_>, k: &KeptPasskey) -> String {
    let id = k.id();
    let name = escape_html(&k.name);
    let confirm = confirm_field(account.confirm, &format!("remove-{id}"));
    format!(
        r#"<tr><td>{name}</td><td data-label="Added">{added}</td><td data-label="Last used">{used}</td><td><form method="post" action="{remove}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="passkey" value="{id}">{confirm}<button type="submit" aria-label="Remove the passkey {name}">Remove</button></form></td></tr>
"#,
        added = when(pages_time(k.added_ms)),
        used = k
            .last_used_ms
            .map_or("never".to_string(), |ms| when(pages_time(ms))),
        remove = escape_html(links.remove),
        csrf = escape_html(account.csrf),
    )
}

fn pages_time(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

fn totp_section(links: &Links<'_>, account: &Account<'_>) -> String {
    let text = |t: &str| format!("<h2>Authenticator app</h2>\n<p>{t}</p>\n");
    match &account.totp {
        Totp::Unkept(why) => text(&escape_html(why)),
        Totp::ByAdministrator => text(
            "Your administrator set up an authenticator app for you; its code is asked after your password.",
        ),
        Totp::Own(since) => format!(
            "{}{}",
            text(&format!(
                "Set up {}: its code is asked after your password.",
                when(pages_time(*since))
            )),
            post_form(
                links.totp_remove,
                account,
                "totp-remove-password",
                "Remove the authenticator app",
                "secondary"
            ),
        ),
        Totp::Off => format!(
            "{}{}",
            text("Add a code from an authenticator app as a second step after your password."),
            post_form(
                links.totp_start,
                account,
                "totp-start-password",
                "Set up an authenticator app",
                ""
            ),
        ),
        Totp::Setting {
            qr_svg,
            secret,
            setup,
        } => setting(links, account, qr_svg, secret, setup),
    }
}

/// A form of one button to `action`, with the password field when a change needs it.
fn post_form(action: &str, account: &Account<'_>, id: &str, label: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n{confirm}<button type=\"submit\"{class}>{label}</button>\n</form>\n",
        action = escape_html(action),
        csrf = escape_html(account.csrf),
        confirm = confirm_field(account.confirm, id),
        class = if class.is_empty() {
            String::new()
        } else {
            format!(" class=\"{class}\"")
        },
    )
}

/// The set-up under way: the QR code, the secret, and the form for the first code.
fn setting(
    links: &Links<'_>,
    account: &Account<'_>,
    qr_svg: &str,
    secret: &str,
    setup: &str,
) -> String {
    use base64::Engine;
    let qr = base64::engine::general_purpose::STANDARD.encode(qr_svg);
    format!(
        r#"<h2>Authenticator app</h2>
<p>Scan this code with your authenticator app, or type in the key below it.</p>
<img class="qr" src="data:image/svg+xml;base64,{qr}" alt="QR code of your new authenticator app key">
<p>Key: <code class="secret">{secret}</code></p>
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="setup" value="{setup}">
<label for="totp-code">The code your app shows now</label>
<input id="totp-code" name="code" autocomplete="one-time-code" inputmode="numeric" pattern="[0-9]{{6}}" maxlength="6" required autofocus>
<button type="submit">Confirm and turn on</button>
</form>
"#,
        secret = escape_html(secret),
        action = escape_html(links.totp_confirm),
        csrf = escape_html(account.csrf),
        setup = escape_html(setup),
    )
}
