//! Reading the files the config names: CA bundles, secret files, the logo and the template
//! (certificates and keys are read by `http::tls`, which also reads them again on a reload).

use std::io::Read;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use crate::config::error::{ConfigError, invalid};

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
