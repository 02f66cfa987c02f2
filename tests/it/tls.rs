//! HTTPS: sessiongate terminating TLS (HTTP/1.1 and h2 by ALPN), the http->https redirect
//! listener, the handshake timeout, certificate reload, and https upstreams. Certificates
//! are made at run time with rcgen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::tls::*;
use crate::common::*;
use http::{Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn login_and_proxying_over_https_with_http1_and_h2() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("flow");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&tls_config(upstream.addr, dir, "hsts = \"365d\"")).await;

    for (alpn, want) in [
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            b"h2".as_slice(),
        ),
    ] {
        let mut conn = tls_connect(proxy.addr, &ca.pem, alpn).await;
        assert_eq!(conn.alpn.as_deref(), Some(want));

        let anon = conn
            .send(
                proxy.addr,
                req(Method::GET, "/x", &[("accept", "text/html")]),
            )
            .await;
        assert_eq!(anon.status, StatusCode::FOUND);
        assert_eq!(
            anon.header("strict-transport-security"),
            Some("max-age=31536000")
        );

        let login = conn.send(proxy.addr, login_request(proxy.addr)).await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text());
        assert_eq!(login.header("location"), Some("/home"));
        let set = &login.set_cookies()[0];
        assert!(set.starts_with("__Host-sessiongate="), "{set}");
        assert!(set.contains("Secure"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();

        let res = conn
            .send(
                proxy.addr,
                req(Method::GET, "/home?a=1", &[("cookie", &cookie)]),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
        assert_eq!(res.upstream_header("x-forwarded-proto"), vec!["https"]);
        assert_eq!(
            res.upstream_header("host"),
            vec![format!("localhost:{}", proxy.addr.port())]
        );
        assert_eq!(res.json()["uri"], "/home?a=1");
        assert!(res.upstream_header("cookie").is_empty());
        assert_eq!(
            res.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn plain_http_redirect_listener_answers_308_to_https() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sessiongate::serve_redirect(listener, 8443, async move {
        let _ = rx.await;
    }));
    let res = get(addr, "/dash/x?y=1", &[("host", "app.example:8080")]).await;
    assert_eq!(res.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        res.header("location"),
        Some("https://app.example:8443/dash/x?y=1")
    );
    let post = send(
        addr,
        req(
            Method::POST,
            "/.sessiongate/login",
            &[("host", "app.example")],
        ),
    )
    .await;
    assert_eq!(post.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        post.header("location"),
        Some("https://app.example:8443/.sessiongate/login")
    );
    // Without a usable Host there is nowhere to redirect to.
    let bad = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        bad.starts_with("HTTP/1.0 400") || bad.starts_with("HTTP/1.1 400"),
        "{bad}"
    );
}

#[tokio::test]
async fn stalled_handshake_is_closed_after_the_timeout_while_others_are_served() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("stall");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&tls_config(
        upstream.addr,
        dir,
        "handshake_timeout = \"3s\"",
    ))
    .await;

    // Two clients that connect and never finish a handshake: one silent, one sending half a record.
    let started = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut partial = TcpStream::connect(proxy.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    // Meanwhile a real client is served.
    let mut conn = tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    let health = conn
        .send(proxy.addr, req(Method::GET, "/.sessiongate/healthz", &[]))
        .await;
    assert_eq!(health.status, StatusCode::OK);
    // Within the stalled ones' timeout (3 s is room for a busy machine's TLS handshake).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served while others stall"
    );

    for stalled in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
            .await
            .expect("the server closes a stalled handshake")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(2950),
        "not before the timeout"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let ca = Ca::new("sessiongate test CA");
    let (cert_a, key_a, der_a) = ca.leaf();
    let (cert_b, key_b, der_b) = ca.leaf();
    let tmp = temp_dir("reload");
    let dir = tmp.path();
    write_pair(dir, &cert_a, &key_a);
    let upstream = start_upstream().await;
    let proxy = start_proxy_with(&tls_config(upstream.addr, dir, "")).await;

    let mut before = tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(before.peer_cert, der_a);

    // A broken pair (B's certificate with A's key) is refused and A stays.
    write_pair(dir, &cert_b, &key_a);
    let err = proxy.app.reload_tls().expect_err("mismatched key refused");
    assert!(err.contains("do not make a usable certificate"), "{err}");
    assert_eq!(
        tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"])
            .await
            .peer_cert,
        der_a
    );
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    assert!(proxy.app.reload_tls().is_err());
    assert_eq!(
        tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"])
            .await
            .peer_cert,
        der_a
    );

    write_pair(dir, &cert_b, &key_b);
    proxy.app.reload_tls().unwrap();
    let after = tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(
        after.peer_cert, der_b,
        "new handshakes use the new certificate"
    );

    // The connection opened before the reload keeps working.
    let res = before
        .send(proxy.addr, req(Method::GET, "/.sessiongate/healthz", &[]))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let _ = std::fs::remove_dir_all(dir);
}

/// The real binary reloads on SIGHUP.
#[tokio::test]
async fn sighup_reloads_the_certificate_in_the_running_binary() {
    let ca = Ca::new("sessiongate test CA");
    let (cert_a, key_a, der_a) = ca.leaf();
    let (cert_b, key_b, der_b) = ca.leaf();
    let tmp = temp_dir("sighup");
    let dir = tmp.path();
    write_pair(dir, &cert_a, &key_a);
    let config = tls_config("127.0.0.1:9".parse().unwrap(), dir, "");
    std::fs::write(dir.join("sessiongate.toml"), config).unwrap();
    let mut running = spawn_sessiongate(&dir.join("sessiongate.toml"), &[]);
    let addr = running.addr;
    assert_eq!(
        tls_connect(addr, &ca.pem, &[b"http/1.1"]).await.peer_cert,
        der_a
    );

    write_pair(dir, &cert_b, &key_b);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tls_connect(addr, &ca.pem, &[b"http/1.1"]).await.peer_cert == der_b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop sessiongate"
    );
    assert!(running.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_speaks_h2() {
    let ca = Ca::new("private upstream CA");
    let up = start_tls_upstream(&ca, &[b"h2", b"http/1.1"]).await;
    let tmp = temp_dir("upca");
    let dir = tmp.path();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let toml = config_toml(
        up,
        &format!("ca = \"{}\"", dir.join("ca.pem").display()),
        "",
    )
    .replace(
        &format!("http://{up}"),
        &format!("https://localhost:{}", up.port()),
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/over-tls", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        res.json()["version"],
        "HTTP/2.0",
        "h2 when the upstream offers it"
    );
    assert_eq!(res.upstream_header("x-forwarded-user"), vec![USER]);
    assert!(res.json()["uri"].as_str().unwrap().ends_with("/over-tls"));

    // tls_server_name overrides the name checked: the certificate has no "internal.example".
    let wrong_name = toml.replace(
        "[upstream]",
        "[upstream]\ntls_server_name = \"internal.example\"",
    );
    let proxy2 = start_proxy_with(&wrong_name).await;
    let cookie2 = login(&proxy2, USER, PASSWORD).await;
    assert_eq!(
        get(proxy2.addr, "/", &[("cookie", &cookie2)]).await.status,
        StatusCode::BAD_GATEWAY
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502_with_a_clear_log_line() {
    let captured = Captured::default();
    let _guard = captured.install();

    let ca = Ca::new("a CA nobody trusts");
    let up = start_tls_upstream(&ca, &[b"h2", b"http/1.1"]).await;
    let toml = config_toml(up, "", "").replace(
        &format!("http://{up}"),
        &format!("https://localhost:{}", up.port()),
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);

    let logs = captured.text();
    let line = logs
        .lines()
        .find(|l| l.contains("upstream request failed"))
        .unwrap_or_else(|| panic!("no upstream failure logged: {logs}"));
    assert!(
        line.contains("invalid peer certificate") && line.contains("UnknownIssuer"),
        "{line}"
    );
    assert!(
        !logs.contains(cookie.split_once('=').unwrap().1),
        "the cookie value never reaches the log"
    );
}

#[test]
fn bad_tls_settings_are_rejected_with_the_key_named() {
    let tmp = temp_dir("badcfg");
    let dir = tmp.path();
    let ca = Ca::new("x");
    let (cert, key, _) = ca.leaf();
    let base = config_toml("127.0.0.1:3000".parse().unwrap(), "", "");
    // Missing files.
    let err = sessiongate::Config::from_toml(&base.replace(
        "[upstream]",
        &format!("{}\n[upstream]", tls_section(dir, "")),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.tls") && err.contains("cert.pem"),
        "{err}"
    );
    // Key that does not match.
    write_pair(dir, &cert, &KeyPair::generate().unwrap().serialize_pem());
    let err = sessiongate::Config::from_toml(&base.replace(
        "[upstream]",
        &format!("{}\n[upstream]", tls_section(dir, "")),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.tls"), "{err}");
    write_pair(dir, &cert, &key);
    assert!(
        sessiongate::Config::from_toml(&base.replace(
            "[upstream]",
            &format!("{}\n[upstream]", tls_section(dir, ""))
        ))
        .is_ok()
    );
    // redirect_http and hsts need TLS.
    for (line, key) in [
        ("redirect_http = \"127.0.0.1:0\"", "server.redirect_http"),
        ("hsts = \"1d\"", "server.hsts"),
    ] {
        let err = sessiongate::Config::from_toml(&base.replace(
            "shutdown_timeout = \"5s\"",
            &format!("shutdown_timeout = \"5s\"\n{line}"),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(key), "{err}");
    }
    // CA options only for https upstreams; a CA file must hold certificates.
    let err =
        sessiongate::Config::from_toml(&base.replace("[upstream]", "[upstream]\nca = \"/x\""))
            .unwrap_err()
            .to_string();
    assert!(err.contains("upstream.ca"), "{err}");
    let https = base.replace("http://127.0.0.1:3000", "https://127.0.0.1:3000");
    let err = sessiongate::Config::from_toml(
        &https.replace("[upstream]", "[upstream]\nca = \"/nonexistent/ca.pem\""),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("upstream.ca"), "{err}");
    assert!(
        sessiongate::Config::from_toml(&https).is_ok(),
        "public roots by default"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// ALPN: the protocol the handshake agreed on is the only one spoken on the connection.

/// A TLS connection to `addr` offering `alpn`, as raw bytes (no HTTP client on top).
async fn raw_tls(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(ca_pem, alpn)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// Writes `bytes` and reads everything the server sends until it closes the connection.
async fn exchange(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, bytes: &[u8]) -> Vec<u8> {
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.expect("the server closes the connection within ANSWER_WITHIN");
    out
}

/// The types of the HTTP/2 frames in `bytes` (each a 9-byte header and its payload), or
/// `None` if the bytes are not a sequence of frames.
fn h2_frame_types(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut types = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = bytes.get(9 + len..)?;
    }
    Some(types)
}

const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

/// Whether `answer` is an HTTP/1.1 server's refusal of the HTTP/2 preface: hyper closes the
/// connection without a word (it recognises the preface); a 4xx or 505 would do as well.
fn refused_as_http1(answer: &[u8]) -> bool {
    answer.is_empty() || answer.starts_with(b"HTTP/1.1 4") || answer.starts_with(b"HTTP/1.1 505")
}

/// A proxy over TLS with `/pub` public, and its echo upstream.
async fn public_tls_proxy(dir: &std::path::Path, ca: &Ca) -> (Upstream, Proxy) {
    let (cert, key, _) = ca.leaf();
    write_pair(dir, &cert, &key);
    let upstream = start_upstream().await;
    let toml = with_auth(
        &tls_config(upstream.addr, dir, ""),
        "public_paths = [\"/pub\"]",
    );
    let proxy = start_proxy_with(&toml).await;
    (upstream, proxy)
}

#[tokio::test]
async fn alpn_confusion_http1_bytes_on_an_h2_connection_are_a_connection_error_and_reach_nothing() {
    let ca = Ca::new("sessiongate test CA");
    let tmp = temp_dir("alpn-h2");
    let (upstream, proxy) = public_tls_proxy(tmp.path(), &ca).await;

    let mut tls = raw_tls(proxy.addr, &ca.pem, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = exchange(
        &mut tls,
        b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "served as HTTP/1.1 on an h2 connection: {}",
        String::from_utf8_lossy(&answer)
    );
    // An invalid preface is a connection error; the GOAWAY may be left out (RFC 9113 §3.4),
    // and the h2 crate does: its SETTINGS, then the connection is closed.
    let frames = h2_frame_types(&answer).unwrap_or_else(|| panic!("not HTTP/2 frames: {answer:?}"));
    assert!(
        frames.iter().all(|t| [SETTINGS, GOAWAY].contains(t)),
        "no answer to the request, only connection frames: {frames:?}"
    );
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");

    // The same connection setup with a real HTTP/2 client is served.
    let mut h2 = tls_connect(proxy.addr, &ca.pem, &[b"h2"]).await;
    let res = h2.send(proxy.addr, req(Method::GET, "/pub/x", &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["uri"], "/pub/x");
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn alpn_confusion_h2_preface_on_an_http1_connection_is_refused_and_reaches_nothing() {
    let ca = Ca::new("sessiongate test CA");
    let tmp = temp_dir("alpn-h1");
    let (upstream, proxy) = public_tls_proxy(tmp.path(), &ca).await;

    // The preface, an empty SETTINGS frame and a HEADERS frame would be a request for /pub/x
    // to an HTTP/2 server: on an http/1.1 connection it must not be one.
    let mut tls = raw_tls(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = exchange(
        &mut tls,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(
        refused_as_http1(&answer),
        "an HTTP/1.1 refusal, not HTTP/2 frames: {answer:?}"
    );

    // A real HTTP/2 client on a connection that agreed on http/1.1 gets no answer.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let tls = connector(&ca.pem, &[b"http/1.1"])
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let h2_over_h1 = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://localhost:{}/pub/x", proxy.addr.port()))
            .body(body(""))
            .unwrap();
        sender.send_request(req).await
    };
    let result = tokio::time::timeout(ANSWER_WITHIN, h2_over_h1)
        .await
        .expect("the HTTP/2 client is answered or cut off within ANSWER_WITHIN");
    assert!(
        result.is_err(),
        "HTTP/2 served after ALPN http/1.1: {result:?}"
    );
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");

    // HTTP/1.1 on such a connection is served.
    let mut h1 = tls_connect(proxy.addr, &ca.pem, &[b"http/1.1"]).await;
    let res = h1.send(proxy.addr, req(Method::GET, "/pub/x", &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["version"], "HTTP/1.1");
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn alpn_confusion_without_alpn_only_http1_is_spoken() {
    let ca = Ca::new("sessiongate test CA");
    let tmp = temp_dir("alpn-none");
    let (upstream, proxy) = public_tls_proxy(tmp.path(), &ca).await;

    let mut tls = raw_tls(proxy.addr, &ca.pem, &[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let answer = exchange(
        &mut tls,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(
        refused_as_http1(&answer),
        "HTTP/2 is not guessed from the preface without ALPN: {answer:?}"
    );
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");

    let mut tls = raw_tls(proxy.addr, &ca.pem, &[]).await;
    let answer = exchange(
        &mut tls,
        b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"uri\":\"/pub/x\""), "{text}");
    assert_eq!(upstream.requests(), 1);
}

// ---------------------------------------------------------------------------------------------
// HSTS directives and OCSP stapling.

#[tokio::test]
async fn hsts_include_subdomains_and_preload_are_sent_on_every_https_response() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("hsts");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let upstream = start_upstream().await;
    for (max_age, tls_extra, want) in [
        (
            "365d",
            "hsts_include_subdomains = true\nhsts_preload = true",
            "max-age=31536000; includeSubDomains; preload",
        ),
        (
            "1d",
            "hsts_include_subdomains = true",
            "max-age=86400; includeSubDomains",
        ),
        ("1d", "hsts_include_subdomains = false", "max-age=86400"),
    ] {
        let toml = tls_config_with(
            upstream.addr,
            dir,
            &format!("hsts = \"{max_age}\""),
            tls_extra,
        );
        let proxy = start_proxy_with(&toml).await;
        for alpn in [b"http/1.1".as_slice(), b"h2".as_slice()] {
            let mut conn = tls_connect(proxy.addr, &ca.pem, &[alpn]).await;
            // A page of sessiongate's own, a refusal, and a proxied answer all carry it.
            let health = conn
                .send(proxy.addr, req(Method::GET, "/.sessiongate/healthz", &[]))
                .await;
            let anon = conn.send(proxy.addr, req(Method::GET, "/x", &[])).await;
            let login = conn.send(proxy.addr, login_request(proxy.addr)).await;
            let cookie = login.set_cookies()[0]
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let proxied = conn
                .send(proxy.addr, req(Method::GET, "/x", &[("cookie", &cookie)]))
                .await;
            assert_eq!(proxied.status, StatusCode::OK);
            for res in [&health, &anon, &login, &proxied] {
                assert_eq!(
                    res.header("strict-transport-security"),
                    Some(want),
                    "{tls_extra} over {}",
                    String::from_utf8_lossy(alpn)
                );
            }
        }
    }
}

#[test]
fn hsts_preload_needs_include_subdomains_and_a_year_and_the_key_is_named() {
    let ca = Ca::new("x");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("hsts-cfg");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let upstream: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    for (hsts, tls_extra, key, says) in [
        (
            "hsts = \"365d\"",
            "hsts_preload = true",
            "server.tls.hsts_preload",
            "hsts_include_subdomains = true",
        ),
        (
            "hsts = \"364d\"",
            "hsts_include_subdomains = true\nhsts_preload = true",
            "server.tls.hsts_preload",
            "at least 365d",
        ),
        (
            "",
            "hsts_include_subdomains = true",
            "server.tls.hsts_include_subdomains",
            "needs server.hsts",
        ),
        (
            "",
            "hsts_preload = true",
            "server.tls.hsts_preload",
            "needs server.hsts",
        ),
    ] {
        let err = sessiongate::Config::from_toml(&tls_config_with(upstream, dir, hsts, tls_extra))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains(says),
            "{hsts} {tls_extra}: {err}"
        );
    }
    // A year (or more) with includeSubDomains is what the preload list takes.
    let ok = sessiongate::Config::from_toml(&tls_config_with(
        upstream,
        dir,
        "hsts = \"400d\"",
        "hsts_include_subdomains = true\nhsts_preload = true",
    ))
    .unwrap();
    assert_eq!(
        ok.server.hsts.unwrap(),
        "max-age=34560000; includeSubDomains; preload"
    );
}

/// A server-certificate verifier that checks the chain with the test CA (rustls's own WebPKI
/// verifier) and keeps the OCSP response the server stapled.
#[derive(Debug)]
struct RecordsOcsp {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    stapled: Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for RecordsOcsp {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().unwrap() = Some(ocsp_response.to_vec());
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Completes a handshake with `addr` (TLS 1.3 or 1.2 as `version` says) and returns the OCSP
/// response the server stapled: empty when it stapled none.
async fn stapled_ocsp(
    addr: SocketAddr,
    ca_pem: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = sessiongate::http::tls::provider();
    let verifier = Arc::new(RecordsOcsp {
        webpki: rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap(),
        stapled: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake, the chain verified by the test CA");
    verifier
        .stapled
        .lock()
        .unwrap()
        .take()
        .expect("the verifier ran")
}

// The OCSP responses below are arbitrary bytes, not signed responses: rustls staples what it
// is given, and checking a response is the client's business, so these tests show which bytes
// are stapled and when they change, which is all sessiongate does with the file.
const OCSP_A: &[u8] = b"\x30\x03\x0a\x01\x00 first response";
const OCSP_B: &[u8] = b"\x30\x03\x0a\x01\x00 second, renewed response";

#[tokio::test]
async fn ocsp_stapling_sends_the_files_bytes_and_a_reload_swaps_them() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("ocsp");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let ocsp = dir.join("ocsp.der");
    std::fs::write(&ocsp, OCSP_A).unwrap();
    let upstream = start_upstream().await;
    let toml = tls_config_with(
        upstream.addr,
        dir,
        "",
        &format!("ocsp_file = \"{}\"", ocsp.display()),
    );
    let proxy = start_proxy_with(&toml).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert_eq!(stapled_ocsp(proxy.addr, &ca.pem, version).await, OCSP_A);
    }

    // An empty or missing file is refused on reload; the staple in use stays.
    std::fs::write(&ocsp, b"").unwrap();
    let err = proxy.app.reload_tls().expect_err("an empty OCSP file");
    assert!(
        err.contains("server.tls.ocsp_file") && err.contains("empty"),
        "{err}"
    );
    std::fs::remove_file(&ocsp).unwrap();
    let err = proxy.app.reload_tls().expect_err("a missing OCSP file");
    assert!(
        err.contains("server.tls.ocsp_file") && err.contains("ocsp.der"),
        "{err}"
    );
    assert_eq!(
        stapled_ocsp(proxy.addr, &ca.pem, &rustls::version::TLS13).await,
        OCSP_A
    );

    std::fs::write(&ocsp, OCSP_B).unwrap();
    proxy.app.reload_tls().unwrap();
    assert_eq!(
        stapled_ocsp(proxy.addr, &ca.pem, &rustls::version::TLS13).await,
        OCSP_B
    );

    // Without ocsp_file nothing is stapled.
    let plain = start_proxy_with(&tls_config(upstream.addr, dir, "")).await;
    assert_eq!(
        stapled_ocsp(plain.addr, &ca.pem, &rustls::version::TLS13).await,
        b""
    );
}

/// The real binary re-reads the OCSP file with the certificate on SIGHUP.
#[tokio::test]
async fn ocsp_stapling_follows_the_file_on_sighup_in_the_running_binary() {
    let ca = Ca::new("sessiongate test CA");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("ocsp-hup");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let ocsp = dir.join("ocsp.der");
    std::fs::write(&ocsp, OCSP_A).unwrap();
    let config = tls_config_with(
        "127.0.0.1:9".parse().unwrap(),
        dir,
        "",
        &format!("ocsp_file = \"{}\"", ocsp.display()),
    );
    std::fs::write(dir.join("sessiongate.toml"), config).unwrap();
    let running = spawn_sessiongate(&dir.join("sessiongate.toml"), &[]);
    let addr = running.addr;
    assert_eq!(
        stapled_ocsp(addr, &ca.pem, &rustls::version::TLS13).await,
        OCSP_A
    );

    std::fs::write(&ocsp, OCSP_B).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while stapled_ocsp(addr, &ca.pem, &rustls::version::TLS13).await != OCSP_B {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the OCSP response:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running.stop().success());
}

#[test]
fn ocsp_file_that_is_missing_or_empty_is_refused_with_the_key_named() {
    let ca = Ca::new("x");
    let (cert, key, _) = ca.leaf();
    let tmp = temp_dir("ocsp-cfg");
    let dir = tmp.path();
    write_pair(dir, &cert, &key);
    let ocsp = dir.join("ocsp.der");
    let toml = tls_config_with(
        "127.0.0.1:3000".parse().unwrap(),
        dir,
        "",
        &format!("ocsp_file = \"{}\"", ocsp.display()),
    );
    let err = sessiongate::Config::from_toml(&toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.tls.ocsp_file") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(&ocsp, b"").unwrap();
    let err = sessiongate::Config::from_toml(&toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.tls.ocsp_file") && err.contains("empty"),
        "{err}"
    );
    std::fs::write(&ocsp, OCSP_A).unwrap();
    let config = sessiongate::Config::from_toml(&toml).unwrap();
    assert_eq!(
        config.server.tls.unwrap().loaded.ocsp.as_deref(),
        Some(OCSP_A)
    );
}
