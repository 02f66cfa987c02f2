//! TLS with rustls: loading PEM certificates and keys (and a stapled OCSP response), the
//! server config (TLS 1.2 and 1.3, ALPN h2 and http/1.1), certificate reload, and the client
//! config for https upstreams. The errors name the file; the config's callers put the key in
//! front.
//!
//! Crypto provider: *ring*. It builds with cargo and a C compiler alone, so a fresh machine
//! (or a slim Docker builder) needs nothing else; aws-lc-rs is faster at bulk crypto but its
//! build needs cmake (and for some targets clang/NASM), which our users would trip over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The TLS implementation every config (server, upstream client) is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key (PKCS#8, PKCS#1/RSA or SEC1/EC) from PEM
/// files and checks that they belong together. The error says which file and what is wrong.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        format!(
            "{} and {} do not make a usable certificate: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Reads a DER OCSP response to staple with the certificate. rustls sends the bytes as they
/// are (checking them is the client's business), so only an unreadable or empty file is
/// refused: stapling nothing would be a silent mistake.
pub fn load_ocsp(path: &Path) -> Result<Vec<u8>, String> {
    let der = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if der.is_empty() {
        return Err(format!(
            "{} is empty; it should hold a DER OCSP response",
            path.display()
        ));
    }
    Ok(der)
}

/// Where the serving certificate comes from: read at start and again on every reload.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `server.tls.ocsp_file`: a DER OCSP response stapled with the certificate.
    pub ocsp: Option<PathBuf>,
}

impl CertFiles {
    /// The certificate, its key and the OCSP response to staple, read together so a reload
    /// never serves a new certificate with an old response (or the reverse). The error names
    /// the key whose file is wrong.
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let mut loaded = load_certified_key(&self.cert, &self.key)?;
        if let Some(path) = &self.ocsp {
            loaded.ocsp = Some(load_ocsp(path).map_err(|e| format!("server.tls.ocsp_file: {e}"))?);
        }
        Ok(loaded)
    }
}

/// Client config for https upstreams: the bundled Mozilla roots (webpki-roots), or only the
/// CA certificates in `ca` when a private CA is configured.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

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
