//! What the criterion benches share: an `App` built from a minimal config, the request a
//! browser sends to an app behind sessiongate, and the per-request auth work they measure.

use std::sync::Arc;

use futures_util::FutureExt;
use http::{HeaderValue, Request};
use sessiongate::proxy::Forwarding;
use sessiongate::{App, Config};

/// An app with one configured user, `user`. The password hash is cheap but real: no login
/// happens in the benches, the config just needs a user.
pub fn app(user: &str) -> Arc<App> {
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:3000"
[session]
secret = "bench-secret-0123456789abcdef0123456789abcdef"
[[users]]
name = "{user}"
password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$bFhbuNFJvSTFDCOCLdXpUQSnTdWIVYOt4Z8mIz9SVuw"
"#
    ))
    .expect("bench config is valid");
    App::new(config).expect("the session store can be set up")
}

/// A request as a browser sends it to an app behind sessiongate, carrying `cookie` (our
/// `name=value`) between two cookies of the app's own.
pub fn browser_request(cookie: &str) -> Request<()> {
    Request::builder()
        .uri("/dashboard/reports?page=2")
        .header("host", "app.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-language", "en-US,en;q=0.9")
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", format!("_ga=GA1.1.123; {cookie}; theme=dark"))
        .header("connection", "keep-alive")
        .body(())
        .expect("valid request")
}

/// The auth work on one logged-in request, as the handler does it before forwarding: cookie
/// parse + HMAC verify + session lookup (`App::authenticate`), then the header rewrite for the
/// upstream (`Upstream::prepare`) from a client at `peer`.
pub fn auth_work(app: &App, req: &mut Request<()>, peer: &HeaderValue) {
    let session = app
        .gate
        .authenticate(req.headers())
        .now_or_never()
        .expect("the in-memory store answers at once")
        .ok()
        .flatten()
        .expect("live session");
    app.upstream
        .as_ref()
        .expect("the bench config has an upstream")
        .prepare(
            req,
            Forwarding {
                identity_header: &app.config.upstream.identity_header,
                groups_header: &app.config.upstream.groups_header,
                user: Some(&session.user),
                peer,
                trusted_peer: false,
                proto: "http",
                own_cookie: &app.config.session.cookie_name,
            },
        );
}
