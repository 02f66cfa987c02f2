//! A software passkey authenticator for the passkey tests, together with the browser's "client"
//! part of the ceremonies: it takes the options JSON a server sends to
//! `navigator.credentials.create()` / `.get()` and gives back the JSON a page would post (binary
//! fields base64url without padding). Everything is built by hand, following the WebAuthn
//! Level 3 specification, so that each byte can be bent for the negative tests:
//!
//! - §6.1 authenticator data: rpIdHash | flags | signCount, and the attested credential data;
//! - §6.5.1 attested credential data: AAGUID | credentialIdLength | credentialId | COSE_Key;
//! - §8.7 none attestation: `{fmt: "none", attStmt: {}, authData}` in CBOR;
//! - §6.3.3 authenticatorGetAssertion: an ES256 signature over authData || SHA-256(clientData).
//!
//! The client part does not check the origin against the rp id (a browser would refuse): the
//! tests play a lying or compromised client through it. Malformed options are a bug in the
//! test and panic; what a browser would reject as a DOMException is a [`TokenError`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate;
use serde::Serialize;
use serde_cbor_2::Value as Cbor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// COSE algorithm ES256 (ECDSA with P-256 and SHA-256), the only one this token makes.
const ES256: i64 = -7;

/// Authenticator data flags (§6.1).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;

/// What a browser would reject the call with (the DOMException's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// create(): the token already holds a credential in `excludeCredentials`.
    InvalidState,
    /// get(): the token holds no credential the options allow.
    NotAllowed,
    /// create(): ES256 is not among `pubKeyCredParams`.
    NotSupported,
}

/// One credential the token holds. The private key never leaves the token.
#[derive(Clone)]
pub struct TokenCredential {
    pub id: Vec<u8>,
    pub rp_id: String,
    pub user_handle: Vec<u8>,
    /// Discoverable (resident): offered when the options list no credentials, with the user
    /// handle in the response.
    pub resident: bool,
    /// The signature counter: the next assertion reports it plus `counter_step`.
    pub counter: u32,
    key: SigningKey,
}

/// The token. Its public fields are the knobs; they apply to the ceremonies that follow.
/// Clone it to get a cloned authenticator (same keys, counters going their own ways).
#[derive(Clone)]
pub struct PasskeyToken {
    /// The User Present flag.
    pub up: bool,
    /// The User Verified flag (PIN or biometrics done); passkey ceremonies require it.
    pub uv: bool,
    /// The Backup Eligible flag (a synced passkey).
    pub backup_eligible: bool,
    /// The Backup State flag (the passkey is synced now).
    pub backed_up: bool,
    /// Hash this rp id into the authenticator data instead of the one the options name. The
    /// credential is still stored and looked up under the options' rp id.
    pub rp_id_override: Option<String>,
    /// The signature counter new credentials start at.
    pub initial_counter: u32,
    /// How much each assertion adds to the counter: 0 is a token without a counter (as synced
    /// passkeys are), which always reports the counter it was set to.
    pub counter_step: u32,
    credentials: Vec<TokenCredential>,
}

impl Default for PasskeyToken {
    fn default() -> Self {
        PasskeyToken::new()
    }
}

impl PasskeyToken {
    /// An empty device-bound platform authenticator: UP and UV set, not backup eligible, a
    /// counter that starts at 0 and goes up by 1.
    pub fn new() -> Self {
        PasskeyToken {
            up: true,
            uv: true,
            backup_eligible: false,
            backed_up: false,
            rp_id_override: None,
            initial_counter: 0,
            counter_step: 1,
            credentials: Vec::new(),
        }
    }

    /// `navigator.credentials.create()`: `options` is the `publicKey` member of the server's
    /// creation options (or the whole `{"publicKey": ...}`). Returns the credential as the page
    /// posts it, deserialisable as webauthn-rs' `RegisterPublicKeyCredential`.
    pub fn register(&mut self, options: &Value, origin: &str) -> Result<Value, TokenError> {
        let options = options.get("publicKey").unwrap_or(options);
        if !offers_es256(options) {
            return Err(TokenError::NotSupported);
        }
        if self.holds_any(&allowed_ids(options, "excludeCredentials")) {
            return Err(TokenError::InvalidState);
        }
        let credential = self.new_credential(options);
        let client_data = client_data("webauthn.create", options, origin);
        let auth_data = self.registration_auth_data(&credential);
        let response = registration_response(&credential, &auth_data, &client_data);
        self.store(credential);
        Ok(response)
    }

    /// `navigator.credentials.get()`: `options` is the `publicKey` member of the server's
    /// request options (or the whole `{"publicKey": ...}`). Uses the first credential for the
    /// options' rp id that `allowCredentials` names or, when it names none, the first
    /// discoverable one (a browser would let the user choose: [`PasskeyToken::assert_as`]).
    /// Returns the assertion deserialisable as webauthn-rs' `PublicKeyCredential`.
    pub fn assert(&mut self, options: &Value, origin: &str) -> Result<Value, TokenError> {
        let options = options.get("publicKey").unwrap_or(options);
        let index = self.pick(options).ok_or(TokenError::NotAllowed)?;
        Ok(self.sign_assertion(index, options, origin))
    }

    /// [`PasskeyToken::assert`] with credential `cred_id`, whatever the options allow (a client
    /// choosing for the user, or lying about what was asked).
    pub fn assert_as(
        &mut self,
        options: &Value,
        origin: &str,
        cred_id: &[u8],
    ) -> Result<Value, TokenError> {
        let options = options.get("publicKey").unwrap_or(options);
        let index = self.index_of(cred_id).ok_or(TokenError::NotAllowed)?;
        Ok(self.sign_assertion(index, options, origin))
    }

    /// The ids of the credentials held, oldest first.
    pub fn credential_ids(&self) -> Vec<Vec<u8>> {
        self.credentials.iter().map(|c| c.id.clone()).collect()
    }

    /// The credentials held, oldest first.
    pub fn credentials(&self) -> &[TokenCredential] {
        &self.credentials
    }

    /// The credential with id `cred_id`, if held.
    pub fn credential(&self, cred_id: &[u8]) -> Option<&TokenCredential> {
        self.index_of(cred_id).map(|i| &self.credentials[i])
    }

    /// Sets (or rewinds) a credential's counter: the next assertion reports `counter` plus
    /// `counter_step`. Panics when the credential is not held.
    pub fn set_counter(&mut self, cred_id: &[u8], counter: u32) {
        let index = self
            .index_of(cred_id)
            .expect("the token holds this credential");
        self.credentials[index].counter = counter;
    }

    /// Deletes a credential, as the user can in the device's settings. False if not held.
    pub fn forget(&mut self, cred_id: &[u8]) -> bool {
        let before = self.credentials.len();
        self.credentials.retain(|c| c.id != cred_id);
        self.credentials.len() < before
    }

    fn index_of(&self, cred_id: &[u8]) -> Option<usize> {
        self.credentials.iter().position(|c| c.id == cred_id)
    }

    fn holds_any(&self, ids: &[Vec<u8>]) -> bool {
        ids.iter().any(|id| self.index_of(id).is_some())
    }

    fn new_credential(&self, options: &Value) -> TokenCredential {
        TokenCredential {
            id: random_bytes::<32>().to_vec(),
            rp_id: str_at(options, "/rp/id").to_owned(),
            user_handle: b64_at(options, "/user/id"),
            resident: wants_resident_key(options),
            counter: self.initial_counter,
            key: SigningKey::try_generate_from_rng(&mut rand::rngs::SysRng)
                .expect("the OS gives randomness"),
        }
    }

    /// Keeps a new credential. A discoverable one replaces any other discoverable one for the
    /// same rp id and user handle, as the specification's authenticatorMakeCredential does.
    fn store(&mut self, credential: TokenCredential) {
        if credential.resident {
            self.credentials.retain(|c| {
                !(c.resident
                    && c.rp_id == credential.rp_id
                    && c.user_handle == credential.user_handle)
            });
        }
        self.credentials.push(credential);
    }

    /// The first credential for the options' rp id that the allow list names, or the first
    /// discoverable one when the list is empty.
    fn pick(&self, options: &Value) -> Option<usize> {
        let rp_id = str_at(options, "/rpId");
        let allowed = allowed_ids(options, "allowCredentials");
        let offered = |c: &TokenCredential| {
            if allowed.is_empty() {
                c.resident
            } else {
                allowed.contains(&c.id)
            }
        };
        self.credentials
            .iter()
            .position(|c| c.rp_id == rp_id && offered(c))
    }

    /// §6.3.3: counts the use, then signs authData || SHA-256(clientDataJSON) with its key.
    fn sign_assertion(&mut self, index: usize, options: &Value, origin: &str) -> Value {
        let counter = self.count_use(index);
        let rp_id = self.signed_rp_id(str_at(options, "/rpId"));
        let auth_data = authenticator_data(&rp_id, self.flags(), counter);
        let client_data = client_data("webauthn.get", options, origin);
        assertion_response(&self.credentials[index], &auth_data, &client_data)
    }

    fn count_use(&mut self, index: usize) -> u32 {
        let credential = &mut self.credentials[index];
        credential.counter = credential.counter.wrapping_add(self.counter_step);
        credential.counter
    }

    fn registration_auth_data(&self, credential: &TokenCredential) -> Vec<u8> {
        let rp_id = self.signed_rp_id(&credential.rp_id);
        let flags = self.flags() | FLAG_AT;
        let mut data = authenticator_data(&rp_id, flags, credential.counter);
        data.extend(attested_credential_data(credential));
        data
    }

    fn signed_rp_id(&self, asked: &str) -> String {
        self.rp_id_override.as_deref().unwrap_or(asked).to_owned()
    }

    fn flags(&self) -> u8 {
        [
            (self.up, FLAG_UP),
            (self.uv, FLAG_UV),
            (self.backup_eligible, FLAG_BE),
            (self.backed_up, FLAG_BS),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, bit)| flags | bit)
    }
}

/// Base64url without padding, as the JSON of the ceremonies carries binary.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The inverse of [`b64url`]; panics on anything else.
pub fn b64url_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("{text:?} is not base64url: {e}"))
}

/// §6.1: rpIdHash (32) | flags (1) | signCount (4, big-endian).
fn authenticator_data(rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
    let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
    data.push(flags);
    data.extend(counter.to_be_bytes());
    data
}

/// §6.5.1: AAGUID (16 zero bytes: no attestation) | credentialIdLength (2, big-endian) |
/// credentialId | the public key as a COSE_Key.
fn attested_credential_data(credential: &TokenCredential) -> Vec<u8> {
    let id_len = u16::try_from(credential.id.len()).expect("credential ids are short");
    let mut data = vec![0u8; 16];
    data.extend(id_len.to_be_bytes());
    data.extend(&credential.id);
    data.extend(cose_key(&credential.key));
    data
}

/// The COSE_Key of an EC2 P-256 ES256 public key: {1: 2, 3: -7, -1: 1, -2: x, -3: y}, its map
/// in CTAP2 canonical order (serde_cbor_2 sorts the map so).
fn cose_key(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(32);
    let map = [
        (1, Cbor::Integer(2)),
        (3, Cbor::Integer(ES256.into())),
        (-1, Cbor::Integer(1)),
        (-2, Cbor::Bytes(x.to_vec())),
        (-3, Cbor::Bytes(y.to_vec())),
    ];
    let map = map.into_iter().map(|(k, v)| (Cbor::Integer(k), v));
    serde_cbor_2::to_vec(&Cbor::Map(map.collect())).expect("a COSE key encodes")
}

/// §8.7: the attestation object of the none attestation format.
fn none_attestation_object(auth_data: &[u8]) -> Vec<u8> {
    let map = [
        ("fmt", Cbor::Text("none".into())),
        ("attStmt", Cbor::Map(Default::default())),
        ("authData", Cbor::Bytes(auth_data.to_vec())),
    ];
    let map = map.into_iter().map(|(k, v)| (Cbor::Text(k.into()), v));
    serde_cbor_2::to_vec(&Cbor::Map(map.collect())).expect("an attestation object encodes")
}

/// The collected client data, its members in the order browsers write them.
#[derive(Serialize)]
struct ClientData<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    challenge: &'a str,
    origin: &'a str,
    #[serde(rename = "crossOrigin")]
    cross_origin: bool,
}

/// clientDataJSON's bytes, with the challenge copied as the options give it.
fn client_data(type_: &str, options: &Value, origin: &str) -> Vec<u8> {
    let challenge = str_at(options, "/challenge");
    let data = ClientData {
        type_,
        challenge,
        origin,
        cross_origin: false,
    };
    serde_json::to_vec(&data).expect("client data encodes")
}

fn registration_response(credential: &TokenCredential, auth_data: &[u8], client: &[u8]) -> Value {
    json!({
        "id": b64url(&credential.id),
        "rawId": b64url(&credential.id),
        "type": "public-key",
        "authenticatorAttachment": "platform",
        "response": {
            "attestationObject": b64url(&none_attestation_object(auth_data)),
            "clientDataJSON": b64url(client),
            "transports": ["internal"],
        },
        "clientExtensionResults": {"credProps": {"rk": credential.resident}},
    })
}

/// The assertion as the page posts it; the signature is ES256, ASN.1 DER encoded.
fn assertion_response(credential: &TokenCredential, auth_data: &[u8], client: &[u8]) -> Value {
    let mut signed = auth_data.to_vec();
    signed.extend(Sha256::digest(client));
    let signature: Signature = credential.key.sign(&signed);
    let user_handle = credential.resident.then(|| b64url(&credential.user_handle));
    json!({
        "id": b64url(&credential.id),
        "rawId": b64url(&credential.id),
        "type": "public-key",
        "authenticatorAttachment": "platform",
        "response": {
            "authenticatorData": b64url(auth_data),
            "clientDataJSON": b64url(client),
            "signature": b64url(signature.to_der().as_bytes()),
            "userHandle": user_handle,
        },
        "clientExtensionResults": {},
    })
}

/// Whether ES256 is among the algorithms the options accept.
fn offers_es256(options: &Value) -> bool {
    let params = options["pubKeyCredParams"].as_array();
    params.is_some_and(|ps| ps.iter().any(|p| p["alg"].as_i64() == Some(ES256)))
}

/// A platform authenticator makes a discoverable credential unless the server discourages it.
fn wants_resident_key(options: &Value) -> bool {
    let selection = &options["authenticatorSelection"];
    match selection["residentKey"].as_str() {
        Some(wish) => wish != "discouraged",
        None => selection["requireResidentKey"].as_bool() == Some(true),
    }
}

/// The credential ids listed under `member` (`allowCredentials`, `excludeCredentials`).
fn allowed_ids(options: &Value, member: &str) -> Vec<Vec<u8>> {
    let list = options[member]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    list.iter().map(|c| b64_at(c, "/id")).collect()
}

fn str_at<'a>(options: &'a Value, pointer: &str) -> &'a str {
    options
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the options have no string at {pointer}: {options}"))
}

fn b64_at(options: &Value, pointer: &str) -> Vec<u8> {
    b64url_decode(str_at(options, pointer))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut bytes)
        .expect("the OS gives randomness");
    bytes
}
