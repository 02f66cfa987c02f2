//! TLS with rustls on the listeners: the server config (TLS 1.2 and 1.3, ALPN h2 and
//! http/1.1) and certificate reload. The files are read by `config::files`.

use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::files::CertFiles;
pub use crate::config::files::provider;

/// The serving certificate, swappable at run time. New handshakes pick up the current one;
/// connections already open keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    files: CertFiles,
}

impl CertStore {
    pub fn new(files: CertFiles, initial: Arc<CertifiedKey>) -> CertStore {
        CertStore {
            current: RwLock::new(initial),
            files,
        }
    }

    /// Reads the files again. On any problem the old certificate (and OCSP response) stays
    /// and the error is returned for the log.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

pub fn server_config(certs: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
