//! "Your account": the signed-in user's page. It links their sessions and lists their
//! passkeys (when each was added and last used) with a form to add one and a button to remove
//! each. Adding or removing asks for the password again when the session signed in more than
//! 5 minutes ago. The endpoints that serve it are the handler's.

use http::{Response, StatusCode};

use super::sessions::when;
use crate::credentials::passkey::{KeptPasskey, MAX_NAME};
use crate::http::response::Body;
use crate::pages::{self, Pages, escape_html};

/// Where the page's links and forms point.
pub struct Links<'a> {
    pub sessions: &'a str,
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
    /// The password is asked with each change (signed in more than 5 minutes ago).
    pub confirm: bool,
    pub error: Option<&'a str>,
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
    let body = format!(
        r#"<main class="wide">
<h1>Your account</h1>
<p>Signed in as <strong>{user}</strong>. <a href="{sessions}">Your sessions</a></p>
{error}{passkeys}</main>"#,
        user = escape_html(account.user),
        sessions = escape_html(links.sessions),
    );
    pages::respond(status, pages.shell("Your account", &body))
}

fn passkey_section(links: &Links<'_>, account: &Account<'_>, list: &[KeptPasskey]) -> String {
    let rows: String = list.iter().map(|k| row(links, account, k)).collect();
    let table = if list.is_empty() {
        "<p>You have no passkeys yet.</p>\n".to_string()
    } else {
        format!(
            "<table>\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Added</th><th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"visually-hidden\">Action</span></th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
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
        r#"<tr><td>{name}</td><td>{added}</td><td>{used}</td><td><form method="post" action="{remove}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="passkey" value="{id}">{confirm}<button type="submit" aria-label="Remove the passkey {name}">Remove</button></form></td></tr>
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
