//! A typed client for the SendGrid Marketing API endpoints the exporter uses, following
//! SendGrid's OpenAPI files: contacts upsert and import status, lists, custom field
//! definitions, scopes, search by emails, and list membership removal.
//!
//! Every request goes through one retry loop ([`retry`]): 429 waits for the reset and is
//! never a failure, transient failures back off, and 400/401/403/404 return at once.

pub mod retry;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use retry::RetryPolicy;
use retry::Verdict;
pub use types::*;

/// The global API.
pub const GLOBAL: &str = "https://api.sendgrid.com";
/// The EU API.
pub const EU: &str = "https://api.eu.sendgrid.com";

/// Why a request failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("SendGrid refused the API key (401): check that the key is right and not revoked")]
    Unauthorized,
    #[error(
        "the API key lacks Marketing permissions (403): give it Marketing Campaigns access (read and write) in SendGrid's API key settings"
    )]
    Forbidden,
    #[error("{what} not found (404): {message}")]
    NotFound { what: String, message: String },
    /// SendGrid refused the request's content (400, 413): the errors say which contacts.
    #[error("SendGrid refused the request ({status}): {}", describe(errors))]
    Rejected { status: u16, errors: Vec<ApiError> },
    #[error("{0}")]
    Config(String),
    #[error("{what} failed after {attempts} attempts: {last}")]
    Exhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("unexpected answer from SendGrid to {what}: {message}")]
    Unexpected { what: String, message: String },
}

fn describe(errors: &[ApiError]) -> String {
    errors
        .iter()
        .take(5)
        .map(|e| match &e.field {
            Some(f) if !f.is_empty() => format!("{f}: {}", e.message),
            _ => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Counts of what the retry loop did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub retries: u64,
    pub rate_limited: u64,
}

/// The HTTP client, built on a thread of its own: loading the system's CA certificates
/// takes milliseconds that the export's query can use meanwhile.
#[derive(Clone)]
struct Http(Shared<BoxFuture<'static, Result<reqwest::Client, Arc<str>>>>);

impl Http {
    fn build(builder: reqwest::ClientBuilder) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(builder.build().map_err(|e| Arc::from(e.to_string())));
        });
        let built = async move {
            rx.await
                .unwrap_or_else(|_| Err(Arc::from("its builder thread stopped")))
        };
        Self(built.boxed().shared())
    }

    async fn get(&self) -> Result<reqwest::Client, ClientError> {
        self.0
            .clone()
            .await
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))
    }
}

/// A client for one account.
#[derive(Clone)]
pub struct Client {
    http: Http,
    base: String,
    key: SecretString,
    policy: RetryPolicy,
    /// No request starts before this instant (set when the rate budget is spent).
    not_before: Arc<Mutex<Option<Instant>>>,
    stats: Arc<std::sync::Mutex<Stats>>,
}

/// The base URL an endpoint setting names: `global`, `eu`, or a URL without its final `/`.
pub fn base_url_for(endpoint: &str) -> String {
    match endpoint {
        "global" | "" => GLOBAL.to_owned(),
        "eu" => EU.to_owned(),
        url => url.trim_end_matches('/').to_owned(),
    }
}

/// The base URL for `endpoint`, checked as the HTTP client will read it: https, or plain
/// http to a loopback address, with no user name, password, query or fragment. The key
/// goes only there.
fn checked_base(endpoint: &str) -> Result<String, ClientError> {
    let base = base_url_for(endpoint);
    let refuse = |why: String| Err(ClientError::Config(why));
    let Ok(url) = url::Url::parse(&base) else {
        return refuse(format!("endpoint {base} is not a URL"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Said without the URL: what it carries may be a secret.
        return refuse("the endpoint must not carry a user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse(format!(
            "endpoint {base}: a base URL has no query or fragment"
        ));
    }
    let loopback = url.host().is_some_and(|host| match host {
        url::Host::Domain(name) => name == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    });
    match url.scheme() {
        "https" => Ok(base),
        "http" if loopback => Ok(base),
        _ => refuse(format!(
            "endpoint {base}: plain http is allowed only to a loopback address"
        )),
    }
}

impl Client {
    /// A client for `endpoint` (`global`, `eu`, or a base URL; plain http only to loopback).
    pub fn new(
        endpoint: &str,
        key: SecretString,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let base = checked_base(endpoint)?;
        // The TLS crypto provider is chosen once per process; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Http::build(
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(Self {
            http,
            base,
            key,
            policy,
            not_before: Arc::new(Mutex::new(None)),
            stats: Arc::new(std::sync::Mutex::new(Stats::default())),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn stats(&self) -> Stats {
        *self.stats.lock().expect("stats")
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().expect("stats"));
    }

    /// Sends one request with retries; returns the final status and body.
    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let http = self.http.get().await?;
        let (mut attempts, mut rate_limited) = (0u32, 0u32);
        loop {
            if let Some(at) = *self.not_before.lock().await {
                tokio::time::sleep_until(at).await;
            }
            attempts += 1;
            let mut request = http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose_secret())
                .header("accept", "application/json");
            if let Some(b) = &body {
                request = request
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let (verdict, last) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let verdict = retry::classify_status(status, &headers, &self.policy);
                    if verdict == Verdict::Done && retry::budget_spent(&headers) {
                        // Slow down: the next request waits for the window to reset.
                        if let Some(wait) = retry::rate_limit_wait(&headers, &self.policy) {
                            *self.not_before.lock().await = Some(Instant::now() + wait);
                        }
                    }
                    match verdict {
                        Verdict::Done | Verdict::Fatal => {
                            let bytes = response.bytes().await.unwrap_or_default();
                            if verdict == Verdict::Done {
                                return Ok((status, bytes));
                            }
                            return Err(fatal(what, status, &bytes));
                        }
                        _ => (verdict, format!("HTTP {status}")),
                    }
                }
                Err(e) => (retry::classify_error(&e), transport_message(&e)),
            };
            match verdict {
                Verdict::RateLimited(wait) => {
                    attempts -= 1;
                    rate_limited += 1;
                    self.count(|s| s.rate_limited += 1);
                    if rate_limited > self.policy.max_rate_limited {
                        return Err(ClientError::Exhausted {
                            what: what.into(),
                            attempts: rate_limited,
                            last: "HTTP 429 (rate limited)".into(),
                        });
                    }
                    tracing::debug!(
                        what,
                        wait_ms = wait.as_millis() as u64,
                        "Rate limited; waiting for the reset"
                    );
                    *self.not_before.lock().await = Some(Instant::now() + wait);
                }
                Verdict::Retry if attempts < self.policy.max_attempts => {
                    self.count(|s| s.retries += 1);
                    let wait = retry::backoff(&self.policy, attempts);
                    tracing::warn!(what, attempt = attempts, error = %last, wait_ms = wait.as_millis() as u64, "Retrying");
                    tokio::time::sleep(wait).await;
                }
                Verdict::Retry => {
                    return Err(ClientError::Exhausted {
                        what: what.into(),
                        attempts,
                        last,
                    });
                }
                _ => {
                    return Err(ClientError::Unexpected {
                        what: what.into(),
                        message: last,
                    });
                }
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.send(what, method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            what: what.into(),
            message: format!("cannot read the answer: {e}"),
        })
    }

    /// `PUT /v3/marketing/contacts` with a ready JSON body; returns the import job id.
    pub async fn upsert_contacts(&self, body: Bytes) -> Result<String, ClientError> {
        let r: JobAccepted = self
            .json(
                "uploading contacts",
                Method::PUT,
                "/v3/marketing/contacts",
                Some(body),
            )
            .await?;
        Ok(r.job_id)
    }

    /// `GET /v3/marketing/contacts/imports/{id}`.
    pub async fn import_status(&self, job_id: &str) -> Result<ImportJob, ClientError> {
        self.json(
            "reading the import job",
            Method::GET,
            &format!("/v3/marketing/contacts/imports/{job_id}"),
            None,
        )
        .await
    }

    /// `GET /v3/marketing/lists/{id}`; `None` when the list does not exist.
    pub async fn get_list(&self, id: &str) -> Result<Option<List>, ClientError> {
        match self
            .json(
                "reading the list",
                Method::GET,
                &format!("/v3/marketing/lists/{id}"),
                None,
            )
            .await
        {
            Ok(list) => Ok(Some(list)),
            Err(ClientError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v3/marketing/lists`.
    pub async fn create_list(&self, name: &str) -> Result<List, ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({ "name": name })).expect("serialises");
        self.json(
            "creating a list",
            Method::POST,
            "/v3/marketing/lists",
            Some(body.into()),
        )
        .await
    }

    /// `GET /v3/marketing/field_definitions`.
    pub async fn field_definitions(&self) -> Result<FieldDefinitions, ClientError> {
        self.json(
            "reading custom fields",
            Method::GET,
            "/v3/marketing/field_definitions",
            None,
        )
        .await
    }

    /// `POST /v3/marketing/field_definitions`.
    pub async fn create_field(
        &self,
        name: &str,
        field_type: FieldType,
    ) -> Result<FieldDefinition, ClientError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "name": name, "field_type": field_type }))
                .expect("serialises");
        self.json(
            "creating a custom field",
            Method::POST,
            "/v3/marketing/field_definitions",
            Some(body.into()),
        )
        .await
    }

    /// `GET /v3/scopes`.
    pub async fn scopes(&self) -> Result<Vec<String>, ClientError> {
        let s: Scopes = self
            .json("reading the key's scopes", Method::GET, "/v3/scopes", None)
            .await?;
        Ok(s.scopes)
    }

    /// `POST /v3/marketing/contacts/search/emails` (at most 100 emails): contact ids by email.
    pub async fn search_emails(
        &self,
        emails: &[String],
    ) -> Result<Vec<(String, Option<String>)>, ClientError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "emails": emails })).expect("serialises");
        let found: SearchResult = match self
            .json(
                "looking up contacts",
                Method::POST,
                "/v3/marketing/contacts/search/emails",
                Some(body.into()),
            )
            .await
        {
            Ok(r) => r,
            // SendGrid answers 404 when none of the emails is a contact.
            Err(ClientError::NotFound { .. }) => SearchResult::default(),
            Err(e) => return Err(e),
        };
        Ok(emails
            .iter()
            .map(|e| {
                let id = found
                    .result
                    .get(e)
                    .and_then(|r| r.contact.as_ref())
                    .map(|c| c.id.clone());
                (e.clone(), id)
            })
            .collect())
    }

    /// `DELETE /v3/marketing/lists/{id}/contacts?contact_ids=…`: membership only.
    pub async fn remove_list_contacts(
        &self,
        list_id: &str,
        contact_ids: &[String],
    ) -> Result<String, ClientError> {
        let path = format!(
            "/v3/marketing/lists/{list_id}/contacts?contact_ids={}",
            contact_ids.join(",")
        );
        let r: JobAccepted = self
            .json("removing list members", Method::DELETE, &path, None)
            .await?;
        Ok(r.job_id)
    }

    /// Downloads an import job's errors file. The key is sent only to the API's own host.
    pub async fn fetch_errors(&self, url: &str) -> Result<String, ClientError> {
        let mut request = self.http.get().await?.get(url);
        if url.starts_with(&format!("{}/", self.base)) {
            request = request.bearer_auth(self.key.expose_secret());
        }
        let response = request.send().await.map_err(|e| ClientError::Unexpected {
            what: "downloading the import errors".into(),
            message: transport_message(&e),
        })?;
        response.text().await.map_err(|e| ClientError::Unexpected {
            what: "downloading the import errors".into(),
            message: transport_message(&e),
        })
    }
}

/// reqwest's error text without the URL's query (which could hold ids) trimmed to the point.
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}

fn fatal(what: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let errors = serde_json::from_slice::<ErrorResponse>(body)
        .map(|r| r.errors)
        .unwrap_or_default();
    let message = describe(&errors);
    match status.as_u16() {
        401 => ClientError::Unauthorized,
        403 => ClientError::Forbidden,
        404 => ClientError::NotFound {
            what: what.trim_start_matches("reading ").to_owned(),
            message: if message.is_empty() {
                "SendGrid has no such resource".into()
            } else {
                message
            },
        },
        400 | 413 => ClientError::Rejected {
            status: status.as_u16(),
            errors: if errors.is_empty() && status.as_u16() == 413 {
                vec![ApiError {
                    field: None,
                    message: "request body too large".into(),
                }]
            } else {
                errors
            },
        },
        other => ClientError::Unexpected {
            what: what.into(),
            message: format!("HTTP {other}: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let key = SecretString::from("k");
        let p = RetryPolicy::default();
        let t = Duration::from_secs(1);
        assert_eq!(
            Client::new("global", key.clone(), t, p).unwrap().base_url(),
            GLOBAL
        );
        assert_eq!(Client::new("eu", key.clone(), t, p).unwrap().base_url(), EU);
        assert_eq!(
            Client::new("http://127.0.0.1:9/", key.clone(), t, p)
                .unwrap()
                .base_url(),
            "http://127.0.0.1:9"
        );
        assert!(Client::new("http://[::1]:9", key.clone(), t, p).is_ok());
        let err = Client::new("http://example.com", key.clone(), t, p)
            .err()
            .unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
        let (p, t) = (RetryPolicy::default(), Duration::from_secs(1));
        for endpoint in [
            "http://127.0.0.1@evil.example/",
            "https://user:s3cret@api.sendgrid.com",
        ] {
            let err = Client::new(endpoint, SecretString::from("k"), t, p)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("user name or password"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("evil"), "{err}");
        }
        let err = Client::new("https://api.sendgrid.com/#x", SecretString::from("k"), t, p)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no query or fragment"), "{err}");
    }
}
