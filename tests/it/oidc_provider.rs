//! The test OpenID provider itself (tests/oidc/provider.mjs through common::oidc), with the
//! test acting as the relying party by hand: the sign-in tests build on what is proved here,
//! so a failure there is sessiongate's, not the harness's.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::common::oidc::*;
use crate::common::{closed_port, get, hex};

const CLIENT: &str = "rp";
const SECRET: &str = "rp-secret-for-the-harness-test";

fn accounts() -> Value {
    json!({
        "ann": {"sub": "sub-ann", "email": "ann@example.com", "email_verified": true,
                "preferred_username": "ann", "name": "Ann", "groups": ["staff"]},
        "bob": {"email": "bob@example.com", "email_verified": true},
    })
}

/// A provider with the two accounts and the client registered for a redirect URI on a
/// closed port (the flow never follows it there).
async fn provider_with_client() -> (OidcProvider, String) {
    let provider = start_oidc_provider(accounts()).await;
    let redirect_uri = format!("http://{}/callback", closed_port().await);
    provider
        .register_client(CLIENT, SECRET, std::slice::from_ref(&redirect_uri))
        .await;
    (provider, redirect_uri)
}

/// One sign-in attempt's secrets, fresh each time.
struct Attempt {
    state: String,
    nonce: String,
    verifier: String,
}

fn attempt() -> Attempt {
    let fresh = |what: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        hex(&Sha256::digest(format!("{what}-{now}").as_bytes()))
    };
    Attempt {
        state: fresh("state"),
        nonce: fresh("nonce"),
        verifier: fresh("verifier"),
    }
}

fn authorize_url(provider: &OidcProvider, redirect_uri: &str, a: &Attempt) -> String {
    authorize_url_for(provider, CLIENT, redirect_uri, a)
}

fn authorize_url_for(
    provider: &OidcProvider,
    client_id: &str,
    redirect_uri: &str,
    a: &Attempt,
) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(a.verifier.as_bytes()));
    let mut url = Url::parse(&provider.url("/auth")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", &a.state)
        .append_pair("nonce", &a.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Signs in as `login` with a fresh jar: the ID token's header and payload.
async fn sign_in(provider: &OidcProvider, redirect_uri: &str, login: &str) -> (Value, Value) {
    let client = (CLIENT, SECRET);
    let token = sign_in_with(&mut Jar::new(), provider, client, redirect_uri, login).await;
    jwt_parts(&token)
}

/// Signs in as `login` with `jar` to `client` (id, secret) and exchanges the code
/// (client_secret_basic, the PKCE verifier): the ID token, its nonce checked.
async fn sign_in_with(
    jar: &mut Jar,
    provider: &OidcProvider,
    (client_id, secret): (&str, &str),
    redirect_uri: &str,
    login: &str,
) -> String {
    let a = attempt();
    let url = authorize_url_for(provider, client_id, redirect_uri, &a);
    let callback = provider_login(jar, &url, login).await;
    assert!(callback.starts_with(redirect_uri), "{callback}");
    let params = query(&callback);
    assert_eq!(params["state"], a.state);
    let basic = STANDARD.encode(format!("{client_id}:{secret}"));
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", a.verifier.as_str()),
        ])
        .finish();
    let res = Jar::new()
        .request(
            Method::POST,
            &provider.url("/token"),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Basic {basic}")),
            ],
            form,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "token endpoint: {}", res.text());
    let token = res.json()["id_token"].as_str().unwrap().to_string();
    let (_, payload) = jwt_parts(&token);
    assert_eq!(payload["nonce"], a.nonce, "{payload}");
    token
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_only_rsa_and_ec_signatures() {
    let provider = start_oidc_provider(accounts()).await;
    let res = get(provider.addr, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    let doc = res.json();
    assert_eq!(doc["issuer"], provider.issuer);
    for (key, path) in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("end_session_endpoint", "/session/end"),
    ] {
        assert_eq!(doc[key], provider.url(path), "{key}");
    }
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(provider.stats().await["discovery_fetches"], 1);
}

#[tokio::test]
async fn code_flow_with_pkce_gives_an_id_token_with_the_accounts_claims() {
    let (provider, redirect_uri) = provider_with_client().await;
    let a = attempt();
    let callback = provider_login(
        &mut Jar::new(),
        &authorize_url(&provider, &redirect_uri, &a),
        "ann",
    )
    .await;
    // RFC 9207: the authorization response names its issuer.
    assert_eq!(query(&callback)["iss"], provider.issuer, "{callback}");

    let (header, ann) = sign_in(&provider, &redirect_uri, "ann").await;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(ann["iss"], provider.issuer);
    assert_eq!(ann["aud"], CLIENT);
    assert_eq!(ann["sub"], "sub-ann");
    assert_eq!(ann["email"], "ann@example.com");
    assert_eq!(ann["email_verified"], true);
    assert_eq!(ann["preferred_username"], "ann");
    assert_eq!(ann["groups"], json!(["staff"]));

    // The sub defaults to the login name; claims the account lacks are left out.
    let (_, bob) = sign_in(&provider, &redirect_uri, "bob").await;
    assert_eq!(bob["sub"], "bob");
    assert_eq!(bob["email"], "bob@example.com");
    assert!(bob.get("groups").is_none(), "{bob}");
    assert_eq!(provider.stats().await["token_requests"], 2);

    // Without a PKCE challenge the provider refuses to start the flow.
    let mut url = Url::parse(&authorize_url(&provider, &redirect_uri, &attempt())).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    let res = Jar::new().get_url(url.as_str()).await;
    let location = res.header("location").expect("a redirect to the client");
    assert_eq!(query(location)["error"], "invalid_request", "{location}");
}

#[tokio::test]
async fn tampering_changes_the_token_and_a_rotated_key_is_published() {
    let (provider, redirect_uri) = provider_with_client().await;
    let (real_header, real) = sign_in(&provider, &redirect_uri, "ann").await;

    provider.tamper("wrong-aud").await;
    let (header, payload) = sign_in(&provider, &redirect_uri, "ann").await;
    assert_eq!(payload["aud"], "other-client");
    assert_eq!(
        header["kid"], real_header["kid"],
        "signed with the real key"
    );
    assert_eq!(payload["sub"], real["sub"]);

    provider.tamper("rotated-key").await;
    let (header, _) = sign_in(&provider, &redirect_uri, "ann").await;
    assert_ne!(header["kid"], real_header["kid"]);
    let jwks = get(provider.addr, "/jwks", &[]).await.json();
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(kids.contains(&&header["kid"]), "{jwks}");
    assert!(kids.contains(&&real_header["kid"]), "{jwks}");
    assert_eq!(provider.stats().await["jwks_fetches"], 1);

    provider.tamper("off").await;
    let (header, payload) = sign_in(&provider, &redirect_uri, "ann").await;
    assert_eq!(payload["aud"], CLIENT);
    assert_eq!(header["kid"], real_header["kid"]);
}

#[tokio::test]
async fn deny_and_unknown_logins() {
    let (provider, redirect_uri) = provider_with_client().await;
    let a = attempt();
    let callback = provider_deny(
        &mut Jar::new(),
        &authorize_url(&provider, &redirect_uri, &a),
    )
    .await;
    let params = query(&callback);
    assert_eq!(params["error"], "access_denied", "{callback}");
    assert_eq!(params["state"], a.state);
    assert_eq!(params["iss"], provider.issuer);
    assert!(!params.contains_key("code"));

    // An account added while running can sign in; before, the form says no.
    let url = authorize_url(&provider, &redirect_uri, &attempt());
    let why = provider_login_refused(&mut Jar::new(), &url, "carol").await;
    assert_eq!(why, "No account named \"carol\".");
    provider
        .add_accounts(json!({"carol": {"email": "carol@example.com", "email_verified": true}}))
        .await;
    let (_, carol) = sign_in(&provider, &redirect_uri, "carol").await;
    assert_eq!(carol["sub"], "carol");
}

#[tokio::test]
async fn down_up_and_back_on_the_same_port_with_the_same_keys_and_clients() {
    let (mut provider, redirect_uri) = provider_with_client().await;
    let discovery = "/.well-known/openid-configuration";
    let (real_header, _) = sign_in(&provider, &redirect_uri, "ann").await;

    provider.down().await;
    assert_eq!(
        get(provider.addr, discovery, &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    provider.up().await;
    assert_eq!(
        get(provider.addr, discovery, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(provider.stats().await["discovery_fetches"], 2);

    let issuer = provider.issuer.clone();
    provider.stop().await;
    assert!(
        tokio::net::TcpStream::connect(provider.addr).await.is_err(),
        "nothing listens while stopped"
    );
    provider.start_again().await;
    assert_eq!(provider.issuer, issuer);
    let (header, payload) = sign_in(&provider, &redirect_uri, "ann").await;
    assert_eq!(header["kid"], real_header["kid"]);
    assert_eq!(payload["iss"], issuer);
}

#[tokio::test]
async fn a_signed_in_browser_goes_straight_back_until_it_signs_out() {
    let provider = start_oidc_provider(accounts()).await;
    let app = closed_port().await;
    let (redirect_uri, after_logout) = (format!("http://{app}/callback"), format!("http://{app}/"));
    let rp = (CLIENT, SECRET);
    let other = ("other-rp", "other-rp-secret");
    for (id, secret) in [rp, other] {
        provider
            .register_client_metadata(json!({
                "client_id": id,
                "client_secret": secret,
                "redirect_uris": [redirect_uri],
                "post_logout_redirect_uris": [after_logout],
            }))
            .await;
    }
    let mut jar = Jar::new();
    let token = sign_in_with(&mut jar, &provider, rp, &redirect_uri, "ann").await;

    // Signed in at the provider: no form, whatever login the test would have typed, for the
    // same client and for another one (granted without a question too).
    for client in [rp, other] {
        let again = sign_in_with(&mut jar, &provider, client, &redirect_uri, "bob").await;
        assert_eq!(jwt_parts(&again).1["sub"], "sub-ann");
        assert_eq!(jwt_parts(&again).1["aud"], client.0);
    }

    let mut end = Url::parse(&provider.url("/session/end")).unwrap();
    end.query_pairs_mut()
        .append_pair("id_token_hint", &token)
        .append_pair("post_logout_redirect_uri", &after_logout)
        .append_pair("state", "after-logout");
    let back = provider_logout(&mut jar, end.as_str())
        .await
        .expect("sent back to the client");
    assert!(back.starts_with(&after_logout), "{back}");
    assert_eq!(query(&back)["state"], "after-logout");

    // Signed out: the form again.
    let bob = sign_in_with(&mut jar, &provider, rp, &redirect_uri, "bob").await;
    assert_eq!(jwt_parts(&bob).1["sub"], "bob");
    // Not signed in any more, and no redirect URI asked for: the provider's own page.
    let mut jar = Jar::new();
    assert_eq!(
        provider_logout(&mut jar, &provider.url("/session/end")).await,
        None
    );
}
