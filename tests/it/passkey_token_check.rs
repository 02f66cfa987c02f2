//! The software passkey authenticator (`common::passkey_token`) checked against webauthn-rs
//! itself, with no sessiongate in between: its registrations and assertions pass the library's
//! verification, and each knob that bends a ceremony makes the library refuse it. The
//! sessiongate passkey tests can then trust that a refusal comes from the server's checks and
//! not from a broken token.

use serde_json::Value;
use webauthn_rs::prelude::*;

use crate::common::passkey_token::{PasskeyToken, TokenError, b64url, b64url_decode};

const ORIGIN: &str = "http://localhost:8080";
const EVIL_ORIGIN: &str = "http://evil.example:8080";

fn webauthn() -> Webauthn {
    let origin = Url::parse(ORIGIN).unwrap();
    WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .build()
        .unwrap()
}

/// The creation options as the server will send them: webauthn-rs' passkey options with a
/// discoverable credential required, for sign-in without a username.
fn creation_options(ccr: &CreationChallengeResponse) -> Value {
    let mut options = serde_json::to_value(ccr).unwrap();
    let selection = &mut options["publicKey"]["authenticatorSelection"];
    selection["residentKey"] = "required".into();
    selection["requireResidentKey"] = true.into();
    options
}

fn request_options(rcr: &RequestChallengeResponse) -> Value {
    serde_json::to_value(rcr).unwrap()
}

fn registration(response: Value) -> RegisterPublicKeyCredential {
    serde_json::from_value(response).expect("a RegisterPublicKeyCredential")
}

fn assertion(response: Value) -> PublicKeyCredential {
    serde_json::from_value(response).expect("a PublicKeyCredential")
}

/// Registers a passkey for a new user on `token`, through `origin`.
fn try_register(
    webauthn: &Webauthn,
    token: &mut PasskeyToken,
    origin: &str,
) -> WebauthnResult<(Uuid, Passkey)> {
    let user = Uuid::new_v4();
    let (ccr, state) = webauthn.start_passkey_registration(user, "alice", "Alice", None)?;
    let response = token.register(&creation_options(&ccr), origin).unwrap();
    let passkey = webauthn.finish_passkey_registration(&registration(response), &state)?;
    Ok((user, passkey))
}

fn register(webauthn: &Webauthn, token: &mut PasskeyToken) -> (Uuid, Passkey) {
    try_register(webauthn, token, ORIGIN).expect("the registration verifies")
}

/// A sign-in naming `passkey` in the allow list, through `origin`.
fn sign_in(
    webauthn: &Webauthn,
    token: &mut PasskeyToken,
    passkey: &Passkey,
    origin: &str,
) -> WebauthnResult<AuthenticationResult> {
    let (rcr, state) = webauthn.start_passkey_authentication(std::slice::from_ref(passkey))?;
    let response = token.assert(&request_options(&rcr), origin).unwrap();
    webauthn.finish_passkey_authentication(&assertion(response), &state)
}

#[test]
fn registers_and_signs_in_with_an_allow_list() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (_, passkey) = register(&webauthn, &mut token);
    assert_eq!(token.credential_ids(), vec![passkey.cred_id().clone()]);

    let result = sign_in(&webauthn, &mut token, &passkey, ORIGIN).expect("the assertion verifies");
    assert_eq!(result.cred_id(), passkey.cred_id());
    assert_eq!(result.counter(), 1);
    assert!(result.user_verified());
}

#[test]
fn signs_in_without_a_username() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (user, passkey) = register(&webauthn, &mut token);

    let (rcr, state) = webauthn.start_discoverable_authentication().unwrap();
    let options = request_options(&rcr);
    assert_eq!(
        options["publicKey"]["allowCredentials"],
        serde_json::json!([])
    );
    let response = assertion(token.assert(&options, ORIGIN).unwrap());

    let (found_user, cred_id) = webauthn
        .identify_discoverable_authentication(&response)
        .unwrap();
    assert_eq!(found_user, user);
    assert_eq!(cred_id, passkey.cred_id().as_slice());
    let result = webauthn
        .finish_discoverable_authentication_v2(&response, state, &passkey)
        .expect("the discoverable assertion verifies");
    assert_eq!(result.counter(), 1);
    assert!(result.user_verified());
}

#[test]
fn a_wrong_origin_is_refused() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let refused = try_register(&webauthn, &mut token, EVIL_ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::InvalidRPOrigin)),
        "{refused:?}"
    );

    let (_, passkey) = register(&webauthn, &mut token);
    let refused = sign_in(&webauthn, &mut token, &passkey, EVIL_ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::InvalidRPOrigin)),
        "{refused:?}"
    );
}

#[test]
fn a_wrong_rp_id_is_refused() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    token.rp_id_override = Some("evil.example".into());
    let refused = try_register(&webauthn, &mut token, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::InvalidRPIDHash)),
        "{refused:?}"
    );

    token.rp_id_override = None;
    let (_, passkey) = register(&webauthn, &mut token);
    token.rp_id_override = Some("evil.example".into());
    let refused = sign_in(&webauthn, &mut token, &passkey, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::InvalidRPIDHash)),
        "{refused:?}"
    );
}

#[test]
fn no_user_verification_is_refused() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    token.uv = false;
    let refused = try_register(&webauthn, &mut token, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::UserNotVerified)),
        "{refused:?}"
    );

    token.uv = true;
    let (_, passkey) = register(&webauthn, &mut token);
    token.uv = false;
    let refused = sign_in(&webauthn, &mut token, &passkey, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::UserNotVerified)),
        "{refused:?}"
    );
}

#[test]
fn a_replayed_assertion_is_refused() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (_, passkey) = register(&webauthn, &mut token);
    let (rcr, _) = webauthn
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let response = token.assert(&request_options(&rcr), ORIGIN).unwrap();

    let (_, fresh) = webauthn.start_passkey_authentication(&[passkey]).unwrap();
    let refused = webauthn.finish_passkey_authentication(&assertion(response), &fresh);
    assert!(
        matches!(refused, Err(WebauthnError::MismatchedChallenge)),
        "{refused:?}"
    );
}

/// The response is plain JSON, so a test can edit it; the signature covers what matters.
#[test]
fn an_edited_assertion_is_refused() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (_, passkey) = register(&webauthn, &mut token);
    token.uv = false;
    let (rcr, state) = webauthn
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let mut response = token.assert(&request_options(&rcr), ORIGIN).unwrap();

    let field = &mut response["response"]["authenticatorData"];
    let mut auth_data = b64url_decode(field.as_str().unwrap());
    auth_data[32] |= 0x04; // claims user verification after the signing
    *field = b64url(&auth_data).into();
    let refused = webauthn.finish_passkey_authentication(&assertion(response), &state);
    assert!(
        matches!(refused, Err(WebauthnError::AuthenticationFailure)),
        "{refused:?}"
    );
}

/// webauthn-rs refuses a counter at or below the stored one itself, but only against the
/// counter it is given: the server must store each result's counter (`update_credential`).
#[test]
fn a_counter_going_backwards_is_refused_once_stored() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (_, mut passkey) = register(&webauthn, &mut token);
    let id = passkey.cred_id().clone();
    token.set_counter(&id, 5);
    let result = sign_in(&webauthn, &mut token, &passkey, ORIGIN).unwrap();
    assert_eq!(result.counter(), 6);
    assert!(result.needs_update());

    token.set_counter(&id, 2);
    let not_stored = sign_in(&webauthn, &mut token, &passkey, ORIGIN).unwrap();
    assert_eq!(
        not_stored.counter(),
        3,
        "passes: the passkey still holds counter 0"
    );

    assert_eq!(passkey.update_credential(&result), Some(true));
    token.set_counter(&id, 2);
    let refused = sign_in(&webauthn, &mut token, &passkey, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::CredentialPossibleCompromise)),
        "{refused:?}"
    );
    token.set_counter(&id, 5);
    let refused = sign_in(&webauthn, &mut token, &passkey, ORIGIN);
    assert!(
        matches!(refused, Err(WebauthnError::CredentialPossibleCompromise)),
        "{refused:?}"
    );
}

/// Synced passkeys report a counter of 0 every time, which webauthn-rs accepts while the stored
/// counter is 0 too.
#[test]
fn a_token_without_a_counter_signs_in_again_and_again() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    (token.counter_step, token.backup_eligible, token.backed_up) = (0, true, true);
    let (_, mut passkey) = register(&webauthn, &mut token);
    for _ in 0..2 {
        let result = sign_in(&webauthn, &mut token, &passkey, ORIGIN).unwrap();
        assert_eq!((result.counter(), result.backup_state()), (0, true));
        passkey.update_credential(&result);
    }
}

#[test]
fn the_token_refuses_as_a_browser_would() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (_, passkey) = register(&webauthn, &mut token);
    let id = passkey.cred_id().clone();
    let exclude = Some(vec![id.clone()]);
    let (ccr, _) = webauthn
        .start_passkey_registration(Uuid::new_v4(), "b", "B", exclude)
        .unwrap();
    let again = token.register(&creation_options(&ccr), ORIGIN);
    assert_eq!(again.unwrap_err(), TokenError::InvalidState);

    let (rcr, _) = webauthn
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    assert!(token.forget(&id));
    let gone = token.assert(&request_options(&rcr), ORIGIN);
    assert_eq!(gone.unwrap_err(), TokenError::NotAllowed);
}

/// Without a resident key asked for, the credential is not offered to a sign-in without a
/// username, and an assertion carries no user handle.
#[test]
fn a_non_resident_credential_is_not_discoverable() {
    let webauthn = webauthn();
    let mut token = PasskeyToken::new();
    let (ccr, state) = webauthn
        .start_passkey_registration(Uuid::new_v4(), "a", "A", None)
        .unwrap();
    let response = token
        .register(&serde_json::to_value(&ccr).unwrap(), ORIGIN)
        .unwrap();
    assert_eq!(response["clientExtensionResults"]["credProps"]["rk"], false);
    let passkey = webauthn
        .finish_passkey_registration(&registration(response), &state)
        .unwrap();

    let (rcr, _) = webauthn.start_discoverable_authentication().unwrap();
    let gone = token.assert(&request_options(&rcr), ORIGIN);
    assert_eq!(gone.unwrap_err(), TokenError::NotAllowed);
    let (rcr, _) = webauthn
        .start_passkey_authentication(std::slice::from_ref(&passkey))
        .unwrap();
    let response = token.assert(&request_options(&rcr), ORIGIN).unwrap();
    assert_eq!(response["response"]["userHandle"], Value::Null);
    assert_eq!(response["id"], b64url(passkey.cred_id()));
}
