//! TOTP (RFC 6238) as sessiongate uses it: SHA-1, 6 digits, 30-second steps, one step of skew
//! either way; and `sessiongate totp-setup`, which makes a secret and shows it as a QR code.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Seconds in a step.
pub const STEP: u64 = 30;
/// Steps before and after the current one whose codes are accepted (clock drift, typing).
pub const SKEW: u16 = 1;
/// Fewest secret bytes accepted (RFC 4226 asks for at least 128 bits).
pub const MIN_SECRET_BYTES: usize = 16;
/// Bytes in a secret `totp-setup` makes (160 bits, as RFC 4226 recommends).
pub const NEW_SECRET_BYTES: usize = 20;

/// A user's TOTP secret. Never printed: `Debug` says only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret {
    totp: Totp,
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(redacted)")
    }
}

impl TotpSecret {
    /// A secret as written in the config: base32 (RFC 4648), case and spaces and `=` padding
    /// ignored, at least [`MIN_SECRET_BYTES`] once decoded.
    pub fn from_base32(text: &str) -> Result<TotpSecret, String> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .trim_end_matches('=')
            .to_ascii_uppercase();
        let secret = Secret::try_from_base32(&cleaned)
            .map_err(|_| "is not base32 (letters A-Z and digits 2-7)".to_string())?;
        let len = secret.as_bytes().len();
        if len < MIN_SECRET_BYTES {
            return Err(format!(
                "is {len} bytes decoded; at least {MIN_SECRET_BYTES} (128 bits) are needed: make one with `sessiongate totp-setup`"
            ));
        }
        TotpSecret::from_bytes(secret.as_bytes().to_vec())
    }

    /// A secret from its raw bytes, with sessiongate's settings.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TotpSecret, String> {
        TotpSecret::with_digits(bytes, DIGITS)
    }

    fn with_digits(bytes: Vec<u8>, digits: u8) -> Result<TotpSecret, String> {
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_step_duration(STEP)
            .with_skew(SKEW)
            .with_secret(bytes)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(TotpSecret { totp })
    }

    /// The time step a code for `unix_secs` belongs to, if `code` is right for it or for a
    /// step within the skew. The caller must refuse a step already used.
    pub fn check(&self, code: &str, unix_secs: u64) -> Option<u64> {
        self.totp.check(code, unix_secs)
    }

    /// The secret's bytes, for the credentials fingerprint (see `policy`).
    pub fn secret_bytes(&self) -> &[u8] {
        self.totp.secret().as_ref()
    }

    /// This secret in base32 and its `otpauth://` URI for `user` at `issuer`, to show again.
    pub fn key_uri(&self, user: &str, issuer: &str) -> Result<(String, String), String> {
        key_uri(self.secret_bytes().to_vec(), user, issuer)
    }

    /// The code for `unix_secs`.
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.totp.generate(unix_secs).to_string()
    }
}

/// Seconds since the Unix epoch by this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new secret for `user` (base32) and its `otpauth://` URI naming `issuer`.
pub fn new_key(user: &str, issuer: &str) -> Result<(String, String), String> {
    let mut bytes = vec![0u8; NEW_SECRET_BYTES];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut bytes)
        .map_err(|e| format!("the OS random number generator failed: {e}"))?;
    key_uri(bytes, user, issuer)
}

/// The secret `bytes` for `user` in base32, and its `otpauth://` URI naming `issuer`.
fn key_uri(bytes: Vec<u8>, user: &str, issuer: &str) -> Result<(String, String), String> {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP)
        .with_skew(SKEW)
        .with_secret(bytes)
        .with_account_name(user)
        .with_issuer(Some(issuer))
        .build()
        .map_err(|e| format!("cannot make a TOTP key for {user:?} from {issuer:?}: {e}"))?;
    let secret = totp.secret().to_base32();
    let mut uri = totp
        .to_url()
        .map_err(|e| format!("cannot write the otpauth URI: {e}"))?;
    // totp-rs leaves out parameters at their defaults; some apps guess otherwise, so say them.
    for param in ["algorithm=SHA1", "digits=6", "period=30"] {
        let name = param.split('=').next().unwrap_or(param);
        if !uri.contains(&format!("&{name}=")) && !uri.contains(&format!("?{name}=")) {
            uri.push('&');
            uri.push_str(param);
        }
    }
    Ok((secret, uri))
}

/// `uri` as a QR code in SVG, for a page (an `<img>` of a `data:` URL).
pub fn qr_svg(uri: &str) -> Result<String, String> {
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| format!("cannot draw the QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// What `sessiongate totp-setup --user NAME` prints: a new secret, its `otpauth://` URI, the
/// URI as a QR code in Unicode half blocks (scannable from an SSH session), and the config lines.
pub fn setup_text(user: &str, issuer: &str) -> Result<String, String> {
    let (secret, uri) = new_key(user, issuer)?;
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| format!("cannot draw the QR code: {e}"))?
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    Ok(format!(
        "TOTP secret for {user}: {secret}\n\
         otpauth URI: {uri}\n\
         \n\
         Scan this with an authenticator app (or type the secret in):\n\
         \n\
         {qr}\n\
         \n\
         Add to the [[users]] entry with name = \"{user}\":\n\
         totp_secret = \"{secret}\"\n\
         or keep the secret in a file of its own (readable by sessiongate only):\n\
         totp_secret_file = \"/etc/sessiongate/totp/{user}\"\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1: the 20-byte ASCII secret "12345678901234567890", 8 digits.
    #[test]
    fn rfc_6238_sha1_test_vectors() {
        let secret = TotpSecret::with_digits(b"12345678901234567890".to_vec(), 8).unwrap();
        for (t, code) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(secret.code_at(t), code, "T = {t}");
            assert_eq!(secret.check(code, t), Some(t / STEP), "T = {t}");
        }
    }

    #[test]
    fn six_digits_with_one_step_of_skew() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
        // The RFC's 8-digit code at T = 59 ends in the 6-digit one.
        assert_eq!(secret.code_at(59), "287082");
        let t = 1_111_111_109;
        let code = secret.code_at(t);
        assert_eq!(secret.check(&code, t), Some(t / STEP));
        assert_eq!(
            secret.check(&code, t + STEP),
            Some(t / STEP),
            "one step late"
        );
        assert_eq!(
            secret.check(&code, t - STEP),
            Some(t / STEP),
            "one step early"
        );
        assert_eq!(secret.check(&code, t + 2 * STEP), None, "two steps late");
        assert_eq!(secret.check("12345", t), None);
        assert_eq!(secret.check("1234567", t), None);
    }

    #[test]
    fn config_secrets_are_base32_of_at_least_128_bits_and_never_printed() {
        // "12345678901234567890" in base32, written loosely.
        let s = TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(s.code_at(59), "287082");
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====").is_ok());
        assert!(TotpSecret::from_base32("not base32!").is_err());
        // 10 bytes: too short.
        let short = TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").unwrap_err();
        assert!(short.contains("10 bytes"), "{short}");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("GEZD") && !debug.contains("1234"),
            "{debug}"
        );
    }
}
