//! TLS helpers: a throwaway CA made with rcgen, configs with [server.tls], and a client
//! connection that speaks HTTP/1.1 or h2 as ALPN decides.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Method, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;

/// A throwaway CA that signs leaf certificates for localhost / 127.0.0.1.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM, certificate DER) for localhost and 127.0.0.1.
    pub fn leaf(&self) -> (String, String, Vec<u8>) {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// A fresh directory for a test's certificates and config, removed when the guard drops.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sessiongate-tls-{tag}-"))
        .tempdir()
        .unwrap()
}

pub fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

pub fn tls_section(dir: &Path, extra: &str) -> String {
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// A test config with TLS on the listener; `server_extra` goes into [server].
pub fn tls_config(upstream: SocketAddr, dir: &Path, server_extra: &str) -> String {
    tls_config_with(upstream, dir, server_extra, "")
}

/// [`tls_config`] with `tls_extra` in [server.tls].
pub fn tls_config_with(
    upstream: SocketAddr,
    dir: &Path,
    server_extra: &str,
    tls_extra: &str,
) -> String {
    let base = config_toml(upstream, "", "");
    let base = base.replace(
        "shutdown_timeout = \"5s\"",
        &format!("shutdown_timeout = \"5s\"\n{server_extra}"),
    );
    base.replace(
        "[upstream]",
        &format!("{}\n[upstream]", tls_section(dir, tls_extra)),
    )
}

/// An echo upstream speaking TLS with a certificate from `ca`, offering `alpn` (HTTP/2 when
/// `h2` is agreed, HTTP/1.1 otherwise).
pub async fn start_tls_upstream(ca: &Ca, alpn: &[&[u8]]) -> SocketAddr {
    let (cert, key, _) = ca.leaf();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(sessiongate::http::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
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

pub fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(sessiongate::http::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// One TLS connection to `addr`: the negotiated ALPN protocol, the server's certificate, and
/// a sender for requests on it (HTTP/2 when negotiated, else HTTP/1.1).
pub struct TlsConn {
    pub alpn: Option<Vec<u8>>,
    pub peer_cert: Vec<u8>,
    pub sender: Sender,
}

pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

pub async fn tls_connect(addr: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> TlsConn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector(ca_pem, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(|p| p.to_vec());
    let peer_cert = session.peer_certificates().unwrap()[0].to_vec();
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Sender::H1(s)
    };
    TlsConn {
        alpn,
        peer_cert,
        sender,
    }
}

impl TlsConn {
    pub async fn send(&mut self, addr: SocketAddr, mut req: Request<ReqBody>) -> Resp {
        use http_body_util::BodyExt;
        let res = match &mut self.sender {
            Sender::H1(s) => {
                req.headers_mut().insert(
                    "host",
                    format!("localhost:{}", addr.port()).parse().unwrap(),
                );
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
            Sender::H2(s) => {
                *req.uri_mut() = format!("https://localhost:{}{}", addr.port(), req.uri())
                    .parse()
                    .unwrap();
                *req.version_mut() = Version::HTTP_2;
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
        };
        let (parts, body) = res.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

pub fn login_request(addr: SocketAddr) -> Request<ReqBody> {
    req_with_body(
        Method::POST,
        "/.sessiongate/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &format!("https://localhost:{}", addr.port())),
        ],
        format!("username={USER}&password={PASSWORD}&rd=%2Fhome"),
    )
}
