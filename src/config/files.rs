//! Reading the files the config names: certificates and keys, the stapled OCSP response, CA
//! bundles, secret files, the logo and the template. The TLS errors name the file; the config's
//! callers put the key in front.
//!
//! Crypto provider: *ring*. It builds with cargo and a C compiler alone, so a fresh machine
//! (or a slim Docker builder) needs nothing else; aws-lc-rs is faster at bulk crypto but its
//! build needs cmake (and for some targets clang/NASM), which our users would trip over.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use crate::config::error::{ConfigError, invalid};

/// The TLS implementation every config (server, upstream client) is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key (PKCS#8, PKCS#1/RSA or SEC1/EC) from PEM
/// files and checks that they belong together. The error says which file and what is wrong.
pub(super) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
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
pub(super) fn load_ocsp(path: &Path) -> Result<Vec<u8>, String> {
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
pub(super) fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
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

/// A secret file named by `key` (`session.secret_file`, `redis.password_file`, a user's
/// `totp_secret_file`), without the line break an editor or `echo` leaves at its end.
pub(super) fn read_secret(key: &str, path: &str) -> Result<SecretString, ConfigError> {
    // Wiped when dropped, as the secret made from it will be.
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?,
    );
    Ok(SecretString::from(text.trim_end_matches(['\r', '\n'])))
}

/// A CA bundle named by `key` (`redis.ca`), as PEM: it must hold a certificate.
pub(super) fn read_ca(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem =
        std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
    if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        return Err(invalid(key, format!("{path:?} holds no PEM certificate")));
    }
    Ok(pem)
}

/// Reads a file named by `key`, refusing one larger than `limit` bytes.
pub(super) fn read_limited(key: &str, path: &str, limit: usize) -> Result<Vec<u8>, ConfigError> {
    let file = std::fs::File::open(path)
        .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
    if bytes.len() > limit {
        return Err(invalid(
            key,
            format!("{path:?} is larger than {} KiB", limit / 1024),
        ));
    }
    Ok(bytes)
}
