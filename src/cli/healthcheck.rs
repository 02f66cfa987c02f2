//! `sessiongate healthcheck`: asks the sessiongate running from a config file for
//! `{prefix}/healthz` on its own listener, so a container's `HEALTHCHECK` needs no curl in the
//! image. It succeeds on 200 only, and says in one line what happened.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Config;
use crate::app::Routes;
use crate::config::error::ConfigError;

/// The config the image runs with (the Dockerfile's `CMD`), used without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/sessiongate/sessiongate.toml";

/// The whole check, connect to answer. Shorter than the Dockerfile's `--timeout=5s`, so a
/// hung listener is reported by this line rather than by Docker killing the check.
pub const DEADLINE: Duration = Duration::from_secs(4);

/// A listener that answered 200.
#[derive(Debug)]
pub struct Healthy {
    pub url: String,
}

impl std::fmt::Display for Healthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered {}", self.url, StatusCode::OK)
    }
}

/// Why the check failed.
#[derive(Debug, Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    #[error("server.listen {0} has port 0: there is no port to check")]
    NoPort(SocketAddr),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("{url} did not answer: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} did not answer within {}", humantime::format_duration(*deadline))]
    Timeout { url: String, deadline: Duration },
}

/// Loads the config at `path` and checks the sessiongate serving it.
pub fn run(path: &Path) -> Result<Healthy, Failure> {
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    runtime.block_on(check(&config, DEADLINE))
}

/// `GET {prefix}/healthz` on `server.listen`, over HTTPS when `[server.tls]` is set.
pub async fn check(config: &Config, deadline: Duration) -> Result<Healthy, Failure> {
    let addr = target(config.server.listen);
    let tls = config.server.tls.is_some();
    let path = Routes::new(&config.auth.prefix).healthz;
    let url = format!("{}://{addr}{path}", if tls { "https" } else { "http" });
    if addr.port() == 0 {
        return Err(Failure::NoPort(config.server.listen));
    }
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "sessiongate-healthcheck")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .expect("auth.prefix is validated to path characters only");
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| Failure::Connect { addr, source })?;
        let status = if tls {
            let stream = tokio_rustls::TlsConnector::from(client_config())
                .connect(ServerName::from(addr.ip()), tcp)
                .await
                .map_err(|source| Failure::Tls { addr, source })?;
            status(stream, request, &url).await?
        } else {
            status(tcp, request, &url).await?
        };
        if status == StatusCode::OK {
            Ok(Healthy { url: url.clone() })
        } else {
            Err(Failure::Status {
                url: url.clone(),
                status,
            })
        }
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout { url, deadline }),
    }
}

/// Where to reach a listener from the same host: an unspecified address (all interfaces)
/// becomes loopback of the same family.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Sends `request` over HTTP/1.1 on `io` and returns the response's status (the body is not
/// read: the status is the answer).
async fn status<T>(io: T, request: Request<Empty<Bytes>>, url: &str) -> Result<StatusCode, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| Failure::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(http)?;
    Ok(response.status())
}

/// TLS for the local listener only: its certificate is for the names browsers use, not for
/// 127.0.0.1, and may be self-signed, so it is not verified. The handshake signatures still
/// are, with the same ring provider as the rest of sessiongate.
fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = crate::http::tls::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Accepts whatever certificate the local listener presents.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_interfaces_are_checked_on_loopback_of_the_same_family() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("[::1]:8443", "[::1]:8443"),
        ];
        for (listen, expected) in cases {
            assert_eq!(
                target(listen.parse().unwrap()),
                expected.parse::<SocketAddr>().unwrap(),
                "{listen}"
            );
        }
    }
}
