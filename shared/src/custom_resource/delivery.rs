//! PUTs the response to the pre-signed `ResponseURL`, retrying what a retry can fix.

use crate::error_chain;
use crate::system_roots::SystemRoots;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// Shortest time an attempt gets, even with the deadline (nearly) reached.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why CloudFormation could not be told the result.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A 4xx other than 429: the URL expired or was altered; retrying cannot help.
    #[error("the response URL refused the response with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// Connection errors or 5xx until the attempts or the time ran out.
    #[error("no response delivered after {attempts} attempt(s); last error: {last_error}")]
    GaveUp { attempts: u32, last_error: String },
    /// The TLS backend could not be set up (no attempt was made).
    #[error("could not build the HTTP client for CloudFormation responses: {0}")]
    NoHttpClient(String),
}

/// How responses are sent: one HTTP client per cold start, bounded retries.
///
/// The client trusts the process's one copy of the system roots ([`SystemRoots`], shared with
/// the SDK), not a copy of its own. It is built on the first response, so invocations that
/// never answer CloudFormation (deploy-gate from CI or CodeDeploy) do not pay for it.
#[derive(Debug, Clone)]
pub(crate) struct ResponseDelivery {
    client: OnceLock<reqwest::Client>,
    pub roots: &'static SystemRoots,
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub attempt_timeout: Duration,
}

impl ResponseDelivery {
    pub(crate) fn new() -> Self {
        Self {
            client: OnceLock::new(),
            roots: SystemRoots::get(),
            max_attempts: 5,
            first_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let built = client_trusting(self.roots)
            .build()
            .map_err(|e| DeliveryError::NoHttpClient(error_chain(&e)))?;
        Ok(self.client.get_or_init(|| built))
    }

    /// Sends `body`; returns the number of attempts it took. Gives up at `give_up_at`.
    pub(crate) async fn put(
        &self,
        url: &str,
        body: String,
        give_up_at: Instant,
    ) -> Result<u32, DeliveryError> {
        let client = self.client()?;
        let mut last_error = String::new();
        let mut backoff = self.first_backoff;
        for attempt in 1..=self.max_attempts {
            let left = give_up_at.saturating_duration_since(Instant::now());
            // The first attempt is always made: an answer that might arrive beats none.
            if attempt > 1 && left < Duration::from_millis(50) {
                return Err(DeliveryError::GaveUp {
                    attempts: attempt - 1,
                    last_error,
                });
            }
            let sent = client
                .put(url)
                // The URL is pre-signed for an empty content type: anything else fails the signature.
                .header(reqwest::header::CONTENT_TYPE, "")
                .timeout(self.attempt_timeout.min(left).max(MIN_ATTEMPT_TIMEOUT))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return Ok(attempt),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    // Cut the signature out before truncating, so no prefix of it survives.
                    let text = without_signature(text, url);
                    let text: String = text.chars().take(300).collect();
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Err(DeliveryError::Refused {
                            status: status.as_u16(),
                            body: text,
                        });
                    }
                    last_error = format!("HTTP {}: {text}", status.as_u16());
                }
                Err(e) => last_error = transport_error(e, url),
            }
            if attempt == self.max_attempts {
                break;
            }
            tracing::warn!(attempt, error = %last_error, "CloudFormation response not delivered, retrying");
            let pause = backoff.min(give_up_at.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        Err(DeliveryError::GaveUp {
            attempts: self.max_attempts,
            last_error,
        })
    }
}

/// The URL without its query string, which holds the pre-signed signature: safe to log.
pub(crate) fn loggable_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// A failed attempt as text safe to log and return: reqwest's message names the whole URL,
/// signature included, so it is dropped; the causes (refused, timed out, reset) are kept.
fn transport_error(error: reqwest::Error, url: &str) -> String {
    without_signature(error_chain(&error.without_url()), url)
}

/// `text` with the URL's `X-Amz-Signature` value replaced: S3 echoes it in a
/// `SignatureDoesNotMatch` body, and a nested error could name the URL again.
fn without_signature(text: String, url: &str) -> String {
    let signature = url
        .split_once('?')
        .into_iter()
        .flat_map(|(_, query)| query.split('&'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("X-Amz-Signature"))
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty());
    match signature {
        Some(signature) if text.contains(signature) => text.replace(signature, "<signature>"),
        _ => text,
    }
}

/// A client builder trusting `roots` only; without roots, reqwest's own (platform) loader.
fn client_trusting(roots: &SystemRoots) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    if roots.is_empty() {
        return builder;
    }
    builder.tls_certs_only(
        roots
            .certificates()
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_client_is_built_on_the_first_response_not_at_cold_start() {
        let delivery = ResponseDelivery::new();
        assert!(delivery.client.get().is_none());
        let first: *const reqwest::Client = delivery.client().unwrap();
        let again: *const reqwest::Client = delivery.client().unwrap();
        assert_eq!(first, again, "one client per cold start");
    }

    #[test]
    fn a_body_echoing_the_signature_is_returned_without_it() {
        let url =
            "https://cfn.s3.amazonaws.com/r?X-Amz-Date=20250101T000000Z&X-Amz-Signature=9a8b7c";
        let body =
            "<Code>SignatureDoesNotMatch</Code><SignatureProvided>9a8b7c</SignatureProvided>";
        assert_eq!(
            without_signature(body.to_owned(), url),
            "<Code>SignatureDoesNotMatch</Code><SignatureProvided><signature></SignatureProvided>"
        );
        assert_eq!(without_signature("plain".to_owned(), "http://h/p"), "plain");
        assert_eq!(
            without_signature("a=".to_owned(), "http://h/p?X-Amz-Signature="),
            "a="
        );
    }

    #[tokio::test]
    async fn a_transport_error_keeps_its_cause_but_not_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/r?X-Amz-Signature=5e5e5e5e5e5e");
        let error = reqwest::Client::new().put(&url).send().await.unwrap_err();
        let text = transport_error(error, &url);
        assert!(
            !text.contains("5e5e5e5e5e5e") && !text.contains(&url),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }
}
