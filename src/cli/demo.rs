//! `sessiongate demo`: the whole flow on one machine with one command. A tiny backend that
//! shows who is logged in, sessiongate in front of it on 127.0.0.1:8080, and a demo user.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::credentials::password::hash_password;
use crate::pages::escape_html;
use crate::server::error::StartError;

pub const LISTEN: &str = "127.0.0.1:8080";
pub const USER: &str = "demo";
pub const PASSWORD: &str = "sessiongate-demo";

pub fn run() -> Result<(), StartError> {
    let backend = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StartError::Listen {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            source,
        })?;
    let backend_addr = backend.local_addr().map_err(StartError::Runtime)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    std::thread::Builder::new()
        .name("demo-backend".into())
        .spawn(move || rt.block_on(serve_backend(backend)))
        .map_err(StartError::Runtime)?;

    let mut secret = [0u8; 48];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut secret)
        .expect("the OS random number generator failed");
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let hash = hash_password(PASSWORD.as_bytes()).map_err(|e| {
        StartError::Config(crate::config::error::ConfigError::Invalid {
            key: "users".into(),
            reason: e,
        })
    })?;
    // Plain http on loopback, so the cookie cannot be Secure here; see README for production.
    let config = Config::from_toml(&format!(
        r#"
[server]
listen = "{LISTEN}"

[upstream]
url = "http://{backend_addr}"

[session]
secret = "{secret}"
secure = false

[[users]]
name = "{USER}"
password_hash = "{hash}"
"#
    ))?;

    // Written without println!, which panics if stdout is already closed.
    let banner = format!(
        "\n  sessiongate demo\n  open        http://{LISTEN}/\n  log in as   {USER} / {PASSWORD}\n  backend     http://{backend_addr} (shows the identity header sessiongate sends)\n  stop with   Ctrl-C\n\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    crate::server::run(config)
}

async fn serve_backend(listener: std::net::TcpListener) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(backend_page))
                .await;
        });
    }
}

async fn backend_page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = req
        .headers()
        .get("x-forwarded-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(nobody: this request did not come through sessiongate)");
    let headers: String = req
        .headers()
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape_html(k.as_str()),
                escape_html(v.to_str().unwrap_or("(binary)"))
            )
        })
        .collect();
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>demo backend</title>
<style>body{{font-family:system-ui,sans-serif;margin:3rem}}td{{padding:.2rem .8rem;border-bottom:1px solid #ddd;font-family:monospace}}</style></head>
<body><h1>Hello, {user}!</h1>
<p>This page comes from the demo backend. sessiongate checked your session and sent your name in <code>X-Forwarded-User</code>.</p>
<form method="post" action="/.sessiongate/logout"><button type="submit">Log out</button></form>
<h2>Headers the backend received for {path}</h2><table>{headers}</table></body></html>
"#,
        user = escape_html(user),
        path = escape_html(req.uri().path()),
    );
    let mut res = Response::new(Full::new(Bytes::from(html)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(res)
}
