//! One configured provider at run time: its discovery document and key set (fetched in the
//! background, retried while the provider is unreachable), the authorization request of a
//! sign-in attempt, and the redemption of its code: the token request with the attempt's PKCE
//! verifier, then every check of the ID token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndSessionUrl, IssuerUrl, JsonWebKeySet, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::claims::{Identity, NotAllowed, identify};
use super::config::ProviderConfig;
use super::http::ProviderHttp;

/// How far the provider's clock may be from ours for `exp` and `iat`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// An ID token issued longer ago than this is refused (it was meant for an earlier attempt).
const MAX_TOKEN_AGE: Duration = Duration::from_secs(10 * 60);
/// The key set is fetched again for an unknown `kid` at most this often, so that tokens
/// naming made-up keys cannot make us hammer the provider.
const JWKS_REFETCH_GAP: Duration = Duration::from_secs(30);
/// Discovery is retried after a failure, waiting longer each time up to this.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The parts of the discovery document `openidconnect`'s core types leave out.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RP-initiated logout (`logout_at_provider`).
    pub end_session_endpoint: Option<EndSessionUrl>,
    /// RFC 9207: the provider puts `iss` on every authorization response.
    pub authorization_response_iss_parameter_supported: Option<bool>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// What discovery found.
struct Discovered {
    metadata: Metadata,
    /// The signing algorithms the provider advertises for ID tokens, less `none` and the HMAC
    /// ones (a token "signed" with a key everyone can read is no proof).
    algs: Vec<CoreJwsSigningAlgorithm>,
    /// When the key set was last fetched again for an unknown key (`None`: not since
    /// discovery).
    refetched: Option<Instant>,
}

/// The secrets of one sign-in attempt, kept server-side until its callback (one use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSecrets {
    pub nonce: String,
    pub pkce_verifier: String,
    /// The callback URL the authorization request named; the token request repeats it.
    pub redirect_uri: String,
}

/// Why a callback's code did not sign anyone in.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The provider could not be reached, or discovery has not succeeded yet.
    #[error("{0}")]
    Unavailable(String),
    /// The provider or its token was refused: the reason, for the log and the page.
    #[error("{0}")]
    Refused(String),
    /// A good token of a user this provider's rules keep out.
    #[error("{0}")]
    NotAllowed(#[from] NotAllowed),
}

/// One provider, shared by the requests that use it and its discovery task.
pub struct Provider {
    pub config: ProviderConfig,
    fingerprint: u32,
    http: ProviderHttp,
    discovered: ArcSwapOption<Discovered>,
    /// Wakes the discovery task early (a button was pressed while it waits to retry).
    wake: Notify,
    /// Serialises key set fetches.
    jwks_lock: tokio::sync::Mutex<()>,
    /// The last discovery error, for `check` and the logs.
    last_error: Mutex<Option<String>>,
}

impl Provider {
    pub fn new(config: ProviderConfig, http: ProviderHttp) -> Arc<Provider> {
        Arc::new(Provider {
            fingerprint: config.fingerprint(),
            config,
            http,
            discovered: ArcSwapOption::empty(),
            wake: Notify::new(),
            jwks_lock: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// See [`ProviderConfig::fingerprint`].
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// Whether discovery has succeeded: the button works.
    pub fn ready(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// Why discovery last failed, if it has not succeeded since.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the discovery task to try again now (it keeps its minimum gap).
    pub fn retry_soon(&self) {
        self.wake.notify_one();
    }

    /// Fetches the discovery document and key set once.
    pub async fn discover(&self) -> Result<(), String> {
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| e.to_string())?;
        let result = Metadata::discover_async(issuer, &self.http).await;
        let metadata = match result {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("discovery failed: {}", error_chain(&e));
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                return Err(reason);
            }
        };
        let algs: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| !is_shared_secret_or_none(a))
            .cloned()
            .collect();
        if algs.is_empty() {
            let reason = "the provider advertises no public-key signing algorithm for ID tokens (none and HMAC are refused)".to_string();
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
            return Err(reason);
        }
        self.discovered.store(Some(Arc::new(Discovered {
            metadata,
            algs,
            refetched: None,
        })));
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Runs discovery until it succeeds, waiting longer after each failure (and less when a
    /// button press wakes it). Spawned once per provider; ends when the provider is dropped
    /// from the config (the weak reference no longer upgrades).
    pub async fn keep_discovering(weak: std::sync::Weak<Provider>) {
        let mut wait = Duration::from_secs(1);
        loop {
            let Some(provider) = weak.upgrade() else {
                return;
            };
            match provider.discover().await {
                Ok(()) => {
                    tracing::info!(provider = provider.id(), "provider discovered");
                    return;
                }
                Err(reason) => tracing::warn!(
                    provider = provider.id(),
                    "{} sign-in is unavailable: {reason}; trying again within {}s",
                    provider.config.name,
                    wait.as_secs()
                ),
            }
            let woken = async {
                // At least a second between tries, even when pressed buttons wake us.
                tokio::time::sleep(Duration::from_secs(1)).await;
                provider.wake.notified().await;
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = woken => {}
            }
            wait = (wait * 2).min(MAX_RETRY);
        }
    }

    /// The authorization request of a new attempt that comes back to `redirect_uri`: the URL
    /// to send the browser to, the `state` it carries, and the secrets the callback needs.
    /// `None` while the provider is undiscovered.
    pub fn authorize(&self, redirect_uri: &str) -> Option<(String, String, AttemptSecrets)> {
        let discovered = self.discovered.load_full()?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).ok()?;
        let client = CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let secrets = AttemptSecrets {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_string(),
        };
        Some((url.to_string(), state.secret().clone(), secrets))
    }

    /// Where to end the session at the provider too (`logout_at_provider`), coming back to
    /// `back` afterwards; `None` if the provider has no such endpoint or is undiscovered.
    pub fn end_session_url(&self, back: &str) -> Option<String> {
        let discovered = self.discovered.load_full()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("post_logout_redirect_uri", back);
        Some(url.to_string())
    }

    /// Checks the RFC 9207 `iss` of a callback: when present it must be this provider's issuer
    /// exactly, and a provider that promises it must send it (a response from another provider
    /// carried to this one's callback is a mix-up attack).
    pub fn check_callback_issuer(&self, iss: Option<&str>) -> Result<(), Failure> {
        let discovered = self
            .discovered
            .load_full()
            .ok_or_else(|| Failure::Unavailable("the provider is not discovered yet".into()))?;
        let issuer = discovered.metadata.issuer().as_str();
        match iss {
            Some(iss) if iss == issuer => Ok(()),
            Some(_) => Err(Failure::Refused(
                "the response names another issuer (iss): it was not meant for this provider"
                    .into(),
            )),
            None if discovered
                .metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported
                == Some(true) =>
            {
                Err(Failure::Refused(
                    "the response lacks the issuer (iss) this provider always sends".into(),
                ))
            }
            None => Ok(()),
        }
    }

    /// Redeems `code` with the attempt's secrets and checks the ID token completely; the user
    /// it names, if this provider's rules let them in. Tokens are dropped here: nothing of
    /// them outlives the sign-in.
    pub async fn redeem(&self, code: &str, secrets: &AttemptSecrets) -> Result<Identity, Failure> {
        let discovered = self
            .discovered
            .load_full()
            .ok_or_else(|| Failure::Unavailable("the provider is not discovered yet".into()))?;
        let token = self.request_token(&discovered, code, secrets).await?;
        let nonce = Nonce::new(secrets.nonce.clone());
        let verified = match self.verify(&discovered, &token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys: fetch them again, once in a while.
                let refreshed = self.refresh_jwks(&discovered).await?;
                self.verify(&refreshed, &token, &nonce)
            }
            other => other,
        };
        verified.map_err(|e| {
            Failure::Refused(format!("the ID token was refused: {}", error_chain(&e)))
        })?;
        let claims = payload(&token).ok_or_else(|| {
            Failure::Refused("the ID token's claims are not a JSON object".into())
        })?;
        check_authorized_party(&claims, &self.config.client_id)?;
        Ok(identify(&self.config, &claims)?)
    }

    /// The token request: the code, the attempt's PKCE verifier and redirect URI, the client's
    /// secret. The raw ID token of the answer.
    async fn request_token(
        &self,
        discovered: &Discovered,
        code: &str,
        secrets: &AttemptSecrets,
    ) -> Result<String, Failure> {
        let redirect = RedirectUrl::new(secrets.redirect_uri.clone())
            .map_err(|e| Failure::Refused(format!("bad callback URL: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type(&discovered.metadata));
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Failure::Refused(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(secrets.pkce_verifier.clone()));
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => {
                    Failure::Refused(format!("the provider refused the code: {}", answer.error()))
                }
                RequestTokenError::Request(e) => {
                    Failure::Unavailable(format!("the token request failed: {}", error_chain(&e)))
                }
                other => Failure::Refused(format!("the token answer was not usable: {other}")),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| Failure::Refused("the provider's answer holds no ID token".into()))?;
        Ok(id_token.to_string())
    }

    /// The library's checks: signature by a key of the provider's set under an advertised
    /// algorithm, `iss`, `aud` (no audience besides us), `exp` and `iat` within the skew, and
    /// the attempt's `nonce`.
    fn verify(
        &self,
        discovered: &Discovered,
        token: &str,
        nonce: &Nonce,
    ) -> Result<(), ClaimsVerificationError> {
        let id_token: openidconnect::core::CoreIdToken = token
            .parse()
            .map_err(|e: serde_json::Error| ClaimsVerificationError::Unsupported(e.to_string()))?;
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            discovered.metadata.issuer().clone(),
            discovered.metadata.jwks().clone(),
        )
        .set_allowed_algs(discovered.algs.iter().cloned())
        .set_time_fn(|| chrono_now() - chrono_skew())
        .set_issue_time_verifier_fn(|iat| {
            let now = chrono_now();
            if iat > now + chrono_skew() {
                return Err(format!("issued in the future ({iat})"));
            }
            if iat + chrono_duration(MAX_TOKEN_AGE) < now {
                return Err(format!("issued too long ago ({iat})"));
            }
            Ok(())
        });
        id_token.claims(&verifier, nonce).map(|_| ())
    }

    /// The provider's key set fetched again (at most once per [`JWKS_REFETCH_GAP`]).
    async fn refresh_jwks(&self, seen: &Arc<Discovered>) -> Result<Arc<Discovered>, Failure> {
        let _one = self.jwks_lock.lock().await;
        let current = self
            .discovered
            .load_full()
            .ok_or_else(|| Failure::Unavailable("the provider is not discovered yet".into()))?;
        let recently = current
            .refetched
            .is_some_and(|at| at.elapsed() < JWKS_REFETCH_GAP);
        if !Arc::ptr_eq(&current, seen) || recently {
            return Ok(current);
        }
        let jwks: CoreJsonWebKeySet =
            JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http)
                .await
                .map_err(|e| {
                    Failure::Unavailable(format!(
                        "fetching the key set failed: {}",
                        error_chain(&e)
                    ))
                })?;
        let mut metadata = current.metadata.clone();
        metadata = metadata.set_jwks(jwks);
        let next = Arc::new(Discovered {
            metadata,
            algs: current.algs.clone(),
            refetched: Some(Instant::now()),
        });
        self.discovered.store(Some(next.clone()));
        tracing::info!(
            provider = self.id(),
            "fetched the provider's key set again (unknown key id)"
        );
        Ok(next)
    }
}

/// Basic authentication when the provider takes it (the default), else the secret in the body.
fn auth_type(metadata: &Metadata) -> AuthType {
    match metadata.token_endpoint_auth_methods_supported() {
        Some(methods)
            if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
        {
            AuthType::RequestBody
        }
        _ => AuthType::BasicAuth,
    }
}

fn is_shared_secret_or_none(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::None
            | CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
    )
}

/// `azp`, which the library leaves to us: when present it must be our client id, and a token
/// for several audiences must have it.
fn check_authorized_party(
    claims: &serde_json::Map<String, serde_json::Value>,
    client_id: &str,
) -> Result<(), Failure> {
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::Array(a)) => a.len(),
        _ => 1,
    };
    match claims.get("azp").map(|v| v.as_str()) {
        Some(Some(azp)) if azp == client_id => Ok(()),
        Some(_) => Err(Failure::Refused(
            "the ID token was refused: its authorized party (azp) is another client".into(),
        )),
        None if audiences > 1 => Err(Failure::Refused(
            "the ID token was refused: several audiences and no authorized party (azp)".into(),
        )),
        None => Ok(()),
    }
}

/// The claims of a token whose signature was checked: its middle part, decoded.
fn payload(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let middle = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(middle).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn chrono_skew() -> chrono::Duration {
    chrono_duration(CLOCK_SKEW)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).expect("a few minutes fit")
}

/// An error and its causes, joined: the library's top-level messages name only the step.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_authorized_party_must_be_us() {
        let claims = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(check_authorized_party(&claims(json!({"aud": "me"})), "me").is_ok());
        assert!(check_authorized_party(&claims(json!({"aud": ["me"], "azp": "me"})), "me").is_ok());
        assert!(check_authorized_party(&claims(json!({"aud": "me", "azp": "you"})), "me").is_err());
        assert!(check_authorized_party(&claims(json!({"aud": ["me", "you"]})), "me").is_err());
        assert!(check_authorized_party(&claims(json!({"aud": "me", "azp": 3})), "me").is_err());
    }

    #[test]
    fn hmac_and_none_are_never_allowed() {
        assert!(is_shared_secret_or_none(&CoreJwsSigningAlgorithm::None));
        assert!(is_shared_secret_or_none(
            &CoreJwsSigningAlgorithm::HmacSha256
        ));
        assert!(!is_shared_secret_or_none(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert!(!is_shared_secret_or_none(
            &CoreJwsSigningAlgorithm::EcdsaP256Sha256
        ));
    }
}
