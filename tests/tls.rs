//! HTTPS: sessiongate terminating TLS (HTTP/1.1 and h2 by ALPN), the http->https redirect
//! listener, the handshake timeout, certificate reload, and https upstreams. Certificates
//! are made at run time with rcgen.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
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

/// An upstream speaking TLS (h2 and http/1.1 by ALPN) with a certificate from `ca`.
async fn start_tls_upstream(ca: &Ca) -> SocketAddr {
    let (cert, key, _) = ca.leaf();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(sessiongate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(echo))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_speaks_h2() {
    let ca = Ca::new("private upstream CA");
    let up = start_tls_upstream(&ca).await;
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

/// A writer that keeps what tracing writes, to check the log lines a test caused.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502_with_a_clear_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = Ca::new("a CA nobody trusts");
    let up = start_tls_upstream(&ca).await;
    let toml = config_toml(up, "", "").replace(
        &format!("http://{up}"),
        &format!("https://localhost:{}", up.port()),
    );
    let proxy = start_proxy_with(&toml).await;
    let cookie = login(&proxy, USER, PASSWORD).await;
    let res = get(proxy.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
