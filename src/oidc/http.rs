//! The HTTP client the provider calls go through: hyper with rustls on ring, the same stack
//! the upstream leg uses, behind `openidconnect`'s async client trait. It never follows a
//! redirect (a token endpoint that redirects is refused, as the crate advises), gives up after
//! a timeout, and reads at most [`MAX_BODY`] of an answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// A provider's discovery document, key set or token answer is a few KiB; anything past this
/// is not one.
pub const MAX_BODY: usize = 1024 * 1024;

/// What a call to a provider can fail with; the message names the step, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect or send: {0}")]
    Send(String),
    #[error("the answer could not be read (over {MAX_BODY} bytes, or cut off): {0}")]
    Body(String),
}

/// Shared by every provider's calls (cheap to clone: the pool is behind an `Arc`).
#[derive(Clone)]
pub struct ProviderHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl ProviderHttp {
    /// A client trusting `tls`'s roots, giving up on a call after `timeout`.
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> ProviderHttp {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        // Plain http is for a provider on this machine (tests, the try-out script); the config
        // refuses an http issuer anywhere else.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        ProviderHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, CallError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError::Send(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Body(e.to_string()))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }
}

/// hyper's errors say "client error (Connect)"; the cause says what happened.
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

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, CallError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
