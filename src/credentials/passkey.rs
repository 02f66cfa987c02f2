//! Passkeys (WebAuthn): a user's registered passkeys as their data document keeps them, and
//! the two ceremonies, registering one and signing in with one, done by `webauthn-rs`.
//!
//! Signing in without a username needs discoverable credentials, and `webauthn-rs`'s passkey
//! registration asks browsers for `residentKey: "discouraged"`: the creation options sent to
//! the browser are changed to `required` here ([`require_discoverable`]). Everything else is
//! the crate's: origins checked exactly against the one the ceremony was started for, user
//! verification required, the signature counter checked (a counter that goes backwards is a
//! cloned authenticator and is refused).
//!
//! A ceremony's state (its challenge) is returned to the caller, who keeps it once per
//! attempt and hands it back exactly once.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use url::Url;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

/// The longest name a passkey may be given.
pub const MAX_NAME: usize = 64;
/// Passkeys one user may register: each is tried at sign-in, so they are bounded.
pub const MAX_PASSKEYS: usize = 20;

/// One registered passkey and what the account page shows of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeptPasskey {
    pub name: String,
    pub added_ms: u64,
    pub last_used_ms: Option<u64>,
    /// The authenticator says the key is backed up (synced to other devices).
    pub backed_up: bool,
    pub passkey: Passkey,
}

impl KeptPasskey {
    /// The credential id, base64url, as forms and the CLI name a passkey.
    pub fn id(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.passkey.cred_id())
    }
}

/// A user's own data: their passkeys, and the TOTP secret they set up themselves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Keys {
    pub passkeys: Vec<KeptPasskey>,
    #[serde(default)]
    pub totp: Option<OwnTotp>,
}

/// A TOTP secret set up on the account page, sealed (see `credentials::sealed`) for its user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnTotp {
    pub sealed: String,
    pub added_ms: u64,
}

impl Keys {
    /// The document as stored; a damaged one reads as no passkeys (and is logged by caller).
    pub fn parse(json: &str) -> Option<Keys> {
        serde_json::from_str(json).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("passkeys serialise")
    }

    /// These keys with `used` (a passkey after a sign-in) in place of its old self.
    pub fn with_used(mut self, used: KeptPasskey) -> Keys {
        for k in &mut self.passkeys {
            if k.passkey.cred_id() == used.passkey.cred_id() {
                *k = used.clone();
            }
        }
        self
    }

    pub fn find(&self, cred_id: &[u8]) -> Option<&KeptPasskey> {
        self.passkeys
            .iter()
            .find(|k| k.passkey.cred_id().as_slice() == cred_id)
    }
}

/// Why a ceremony failed, in words a person can act on (never the crate's internals).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasskeyError {
    #[error("the passkey answer could not be read")]
    Unreadable,
    #[error(
        "this site's address {origin:?} is not within the passkey domain {rp_id:?} (auth.passkey_rp_id)"
    )]
    WrongSite { origin: String, rp_id: String },
    #[error("the passkey was not accepted: {0}")]
    Refused(String),
}

/// The relying party for one ceremony: the passkey domain and the exact origin the browser
/// is on.
pub struct Party {
    webauthn: Webauthn,
}

impl Party {
    /// `rp_id` (the passkey domain) for a browser at `origin` (`https://host[:port]`).
    pub fn new(rp_id: &str, origin: &str) -> Result<Party, PasskeyError> {
        let wrong = || PasskeyError::WrongSite {
            origin: origin.to_string(),
            rp_id: rp_id.to_string(),
        };
        let url = Url::parse(origin).map_err(|_| wrong())?;
        let webauthn = WebauthnBuilder::new(rp_id, &url)
            .and_then(|b| b.rp_name("sessiongate").build())
            .map_err(|_| wrong())?;
        Ok(Party { webauthn })
    }

    /// Starts registering a passkey for `user` (whose passkeys carry `handle`), excluding the
    /// ones already registered. The options for the browser, and the ceremony's state.
    pub fn start_registration(
        &self,
        user: &str,
        handle: [u8; 16],
        existing: &Keys,
    ) -> Result<(serde_json::Value, String), PasskeyError> {
        let exclude = existing
            .passkeys
            .iter()
            .map(|k| k.passkey.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(Uuid::from_bytes(handle), user, user, Some(exclude))
            .map_err(refused)?;
        let mut options = serde_json::to_value(options).expect("options serialise");
        require_discoverable(&mut options);
        Ok((options, to_state(&state)))
    }

    /// Finishes a registration with the browser's `response`; the new passkey.
    pub fn finish_registration(
        &self,
        state: &str,
        response: &str,
    ) -> Result<Passkey, PasskeyError> {
        let state: PasskeyRegistration = from_state(state)?;
        let response: RegisterPublicKeyCredential =
            serde_json::from_str(response).map_err(|_| PasskeyError::Unreadable)?;
        self.webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(refused)
    }

    /// Starts a sign-in with any passkey the browser holds for this domain.
    pub fn start_sign_in(&self) -> Result<(serde_json::Value, String), PasskeyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(refused)?;
        let options = serde_json::to_value(options).expect("options serialise");
        Ok((options, to_state(&state)))
    }

    /// Finishes a sign-in with the browser's `response` against `kept`, the passkey it names
    /// (see [`identify`]); the passkey with its new counter and last use.
    pub fn finish_sign_in(
        &self,
        state: &str,
        response: &PublicKeyCredential,
        kept: &KeptPasskey,
    ) -> Result<KeptPasskey, PasskeyError> {
        let state: DiscoverableAuthentication = from_state(state)?;
        let key = DiscoverableKey::from(&kept.passkey);
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(response, state, &key)
            .map_err(refused)?;
        if !result.user_verified() {
            return Err(PasskeyError::Refused(
                "the authenticator did not verify the user".into(),
            ));
        }
        let mut used = kept.clone();
        used.passkey.update_credential(&result);
        used.last_used_ms = Some(now_ms());
        used.backed_up = result.backup_state();
        Ok(used)
    }
}

impl Party {
    /// Starts a second factor after the password: any of `keys`' passkeys (named to the
    /// browser), user verification required.
    pub fn start_second_factor(
        &self,
        keys: &Keys,
    ) -> Result<(serde_json::Value, String), PasskeyError> {
        let passkeys: Vec<Passkey> = keys.passkeys.iter().map(|k| k.passkey.clone()).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(refused)?;
        let options = serde_json::to_value(options).expect("options serialise");
        Ok((options, to_state(&state)))
    }

    /// Finishes a second factor with the browser's `response`: the passkey of `keys` it used,
    /// with its new counter and last use.
    pub fn finish_second_factor(
        &self,
        state: &str,
        response: &str,
        keys: &Keys,
    ) -> Result<KeptPasskey, PasskeyError> {
        let state: PasskeyAuthentication = from_state(state)?;
        let response: PublicKeyCredential =
            serde_json::from_str(response).map_err(|_| PasskeyError::Unreadable)?;
        let kept = keys
            .find(response.get_credential_id())
            .ok_or_else(|| PasskeyError::Refused("it is not registered here (removed?)".into()))?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(refused)?;
        Ok(used(kept, &result))
    }
}

/// `kept` after the sign-in `result`: its counter, backup state and last use.
fn used(kept: &KeptPasskey, result: &webauthn_rs::prelude::AuthenticationResult) -> KeptPasskey {
    let mut used = kept.clone();
    used.passkey.update_credential(result);
    used.last_used_ms = Some(now_ms());
    used.backed_up = result.backup_state();
    used
}

/// Reads a sign-in's `response`: the handle of the user it is for and the credential id.
pub fn identify(response: &str) -> Result<(PublicKeyCredential, [u8; 16], Vec<u8>), PasskeyError> {
    let response: PublicKeyCredential =
        serde_json::from_str(response).map_err(|_| PasskeyError::Unreadable)?;
    let handle = response
        .get_user_unique_id()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| {
            PasskeyError::Refused(
                "it names no account of this site (not a discoverable passkey)".into(),
            )
        })?;
    let cred_id = response.get_credential_id().to_vec();
    Ok((response, handle, cred_id))
}

/// Asks browsers for a discoverable (resident) credential, without which a passkey cannot
/// sign in with no username typed.
fn require_discoverable(options: &mut serde_json::Value) {
    if let Some(sel) = options.pointer_mut("/publicKey/authenticatorSelection") {
        sel["residentKey"] = "required".into();
        sel["requireResidentKey"] = true.into();
    }
}

/// A failure of the crate, worded for a person: the few a person can act on by name.
fn refused(e: WebauthnError) -> PasskeyError {
    let why = match e {
        WebauthnError::InvalidRPOrigin => "it was made for another site or address".to_string(),
        WebauthnError::InvalidRPIDHash => "it was made for another passkey domain".to_string(),
        WebauthnError::UserNotVerified => "the authenticator did not verify the user".to_string(),
        WebauthnError::InvalidUserUniqueId => "it belongs to another account".to_string(),
        WebauthnError::CredentialPossibleCompromise => {
            "its signature counter went backwards (a copied authenticator?)".to_string()
        }
        WebauthnError::MismatchedChallenge => "it answers another challenge".to_string(),
        WebauthnError::CredentialAlteredAlgFromRequest | WebauthnError::CredentialAlreadyExists => {
            "it is already registered".to_string()
        }
        other => format!("{other}"),
    };
    PasskeyError::Refused(why)
}

fn to_state<T: Serialize>(state: &T) -> String {
    serde_json::to_string(state).expect("ceremony state serialises")
}

fn from_state<T: for<'de> Deserialize<'de>>(state: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(state).map_err(|_| PasskeyError::Unreadable)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh random user handle.
pub fn new_handle() -> [u8; 16] {
    let mut handle = [0u8; 16];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut handle)
        .expect("the OS random number generator failed");
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_asks_for_a_discoverable_credential_with_user_verification() {
        let party = Party::new("localhost", "http://localhost:8080").unwrap();
        let (options, state) = party
            .start_registration("alice", [1; 16], &Keys::default())
            .unwrap();
        let sel = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(sel["residentKey"], "required");
        assert_eq!(sel["requireResidentKey"], true);
        assert_eq!(sel["userVerification"], "required");
        assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
        assert!(!state.is_empty());
    }

    #[test]
    fn an_origin_outside_the_passkey_domain_is_named() {
        let err = Party::new("example.com", "https://evil.test")
            .err()
            .unwrap();
        assert!(err.to_string().contains("evil.test"), "{err}");
        assert!(Party::new("example.com", "https://app.example.com").is_ok());
    }

    #[test]
    fn a_sign_in_answer_without_a_user_handle_is_refused_by_name() {
        assert_eq!(identify("{").err(), Some(PasskeyError::Unreadable));
    }
}
