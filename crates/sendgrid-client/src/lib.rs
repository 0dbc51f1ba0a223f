//! A typed client for the SendGrid Marketing API endpoints the exporter uses, following
//! SendGrid's OpenAPI files: contacts upsert and import status, lists, custom field
//! definitions, scopes, search by emails, and list membership removal.
//!
//! Every request goes through one retry loop ([`retry`]): 429 waits for the reset and is
//! never a failure, transient failures back off, and 400/401/403/404 return at once.

mod error;
pub mod retry;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

pub use error::ClientError;
use error::{fatal, storage_message, tls_failure, tls_message, transport_message};
pub use retry::{Family, RetryPolicy};
use retry::{Verdict, rate_limit_exhausted};
pub use types::*;

/// The longest address `POST /v3/marketing/contacts/search/emails` takes (its spec's
/// `maxLength`); a contact's email may have up to 254.
pub const MAX_SEARCH_EMAIL_CHARS: usize = 100;

/// The global API.
pub const GLOBAL: &str = "https://api.sendgrid.com";
/// The EU API.
pub const EU: &str = "https://api.eu.sendgrid.com";

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
    /// Whose key this is and where it came from, for a 401 or 403 (never the key).
    key_source: String,
    /// Per endpoint family: no request starts before this instant (set when the family's
    /// rate budget is spent or a 429 names its reset).
    not_before: Arc<std::sync::Mutex<HashMap<Family, Instant>>>,
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
    match url.scheme() {
        "https" => Ok(base),
        "http" if is_loopback(&url) => Ok(base),
        _ => refuse(format!(
            "endpoint {base}: plain http is allowed only to a loopback address"
        )),
    }
}

/// Whether `url` names this machine.
fn is_loopback(url: &url::Url) -> bool {
    url.host().is_some_and(|host| match host {
        url::Host::Domain(name) => name == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    })
}

impl Client {
    /// A client for `endpoint` (`global`, `eu`, or a base URL; plain http only to loopback).
    /// Requests go through the proxy the environment names (`HTTPS_PROXY`, `NO_PROXY`),
    /// except to this machine: a request there (plain http, with the key) never leaves it.
    pub fn new(
        endpoint: &str,
        key: SecretString,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let base = checked_base(endpoint)?;
        // The TLS crypto provider is chosen once per process; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pipeline/", env!("CARGO_PKG_VERSION")));
        if url::Url::parse(&base).is_ok_and(|url| is_loopback(&url)) {
            builder = builder.no_proxy();
        }
        let http = Http::build(builder);
        Ok(Self {
            http,
            base,
            key,
            policy,
            key_source: "the API key".into(),
            not_before: Arc::default(),
            stats: Arc::new(std::sync::Mutex::new(Stats::default())),
        })
    }

    /// Names the key in a 401 or 403: whose it is and where it came from (never the key).
    pub fn with_key_source(mut self, source: impl Into<String>) -> Self {
        self.key_source = source.into();
        self
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

    /// When the next request to `family` may start.
    fn ready_at(&self, family: Family) -> Option<Instant> {
        self.not_before
            .lock()
            .expect("rate windows")
            .get(&family)
            .copied()
    }

    /// No request to `family` starts before `at`.
    fn hold(&self, family: Family, at: Instant) {
        let mut windows = self.not_before.lock().expect("rate windows");
        let until = windows.entry(family).or_insert(at);
        *until = (*until).max(at);
    }

    /// Sends one request with retries; returns the final status and body. Waiting for a
    /// rate limit is bounded by [`RetryPolicy::rate_limit_budget`] per request.
    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = url::Url::parse(&format!("{}{path}", self.base)).map_err(|_| {
            ClientError::Config(format!("{path} does not make a URL with the endpoint"))
        })?;
        let family = Family::of(path);
        let http = self.http.get().await?;
        let started = Instant::now();
        let mut attempts = 0u32;
        // Time spent waiting for this family's window, this request.
        let mut rate_waited = Duration::ZERO;
        loop {
            if let Some(at) = self.ready_at(family) {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    if rate_waited + wait > self.policy.rate_limit_budget {
                        return Err(rate_limit_exhausted(what, started, wait, &self.policy));
                    }
                    rate_waited += wait;
                    tracing::trace!(target: "pipeline::progress", phase = "rate_limited", wait_ms = wait.as_millis() as u64);
                    tokio::time::sleep(wait).await;
                }
            }
            attempts += 1;
            let mut request = self
                .authorized(http.request(method.clone(), url.clone()), &url)
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
                    let verdict = retry::classify_status(status, &headers);
                    if verdict == Verdict::Done && retry::budget_spent(&headers) {
                        // Slow down: the family's next request waits for its window.
                        if let Some(wait) = retry::rate_limit_wait(&headers) {
                            self.hold(family, Instant::now() + wait);
                        }
                    }
                    match verdict {
                        Verdict::Done | Verdict::Fatal => {
                            let bytes = response.bytes().await.unwrap_or_default();
                            if verdict == Verdict::Done {
                                return Ok((status, bytes));
                            }
                            return Err(fatal(what, &self.key_source, status, &bytes));
                        }
                        _ => (verdict, format!("HTTP {status}")),
                    }
                }
                Err(e) => {
                    if let Some(tls) = tls_failure(&e) {
                        return Err(ClientError::Config(format!(
                            "{what}: {}",
                            tls_message(&self.base, tls)
                        )));
                    }
                    (retry::classify_error(&e), transport_message(&e))
                }
            };
            match verdict {
                Verdict::RateLimited(wait) => {
                    attempts -= 1;
                    self.count(|s| s.rate_limited += 1);
                    tracing::debug!(
                        what,
                        wait_ms = wait.as_millis() as u64,
                        "Rate limited; waiting for the reset"
                    );
                    self.hold(family, Instant::now() + wait);
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

    /// Every address on suppression list `kind`, 500 a page (the spec's most).
    pub async fn suppressed(&self, kind: Suppression) -> Result<Vec<String>, ClientError> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        // Bounded, in case an answer kept filling pages: 10 million addresses.
        for page in 0..20_000 {
            let path = format!("{}?limit={PAGE}&offset={}", kind.path(), page * PAGE);
            let entries: Vec<Suppressed> = self
                .json("reading a suppression list", Method::GET, &path, None)
                .await?;
            let last = entries.len() < PAGE;
            out.extend(entries.into_iter().map(|e| e.email));
            if last {
                break;
            }
        }
        Ok(out)
    }

    /// `GET /v3/marketing/contacts/count`: the account's contacts, and how many count
    /// towards this month's bill.
    pub async fn contact_count(&self) -> Result<ContactCount, ClientError> {
        self.json(
            "counting the account's contacts",
            Method::GET,
            "/v3/marketing/contacts/count",
            None,
        )
        .await
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

    /// Every list of the account: `GET /v3/marketing/lists`, 1,000 a page. The next page
    /// is asked for by its `page_token` on the configured endpoint, never by following the
    /// URL SendGrid gives.
    pub async fn all_lists(&self) -> Result<Vec<List>, ClientError> {
        let mut lists = Vec::new();
        let mut token: Option<String> = None;
        // A bound, in case an answer kept pointing at itself.
        for _ in 0..10_000 {
            let mut path = "/v3/marketing/lists?page_size=1000".to_owned();
            if let Some(token) = &token {
                path.push_str("&page_token=");
                path.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
            }
            let page: ListPage = self
                .json("reading the lists", Method::GET, &path, None)
                .await?;
            lists.extend(page.result);
            token = page
                .metadata
                .next
                .and_then(|next| url::Url::parse(&next).ok())
                .and_then(|next| {
                    next.query_pairs()
                        .find(|(k, _)| k == "page_token")
                        .map(|(_, v)| v.into_owned())
                })
                .filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(lists)
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

    /// `POST /v3/marketing/contacts/search/emails` (at most 100 emails of at most
    /// [`MAX_SEARCH_EMAIL_CHARS`] characters each): contact ids by email. SendGrid answers
    /// 404 when none is a contact (an empty result here) and 400 when one is invalid.
    pub async fn search_emails(
        &self,
        emails: &[String],
    ) -> Result<Vec<(String, Option<String>)>, ClientError> {
        let body = serde_json::json!({ "emails": emails });
        self.search("/v3/marketing/contacts/search/emails", body, emails, true)
            .await
    }

    /// `POST /v3/marketing/contacts/search/identifiers/{identifier_type}` (at most 100
    /// values of one type: `email`, `phone_number_id`, `external_id` or `anonymous_id`):
    /// contact ids by identifier. Emails match whatever their case; other identifiers
    /// exactly.
    pub async fn search_identifiers(
        &self,
        identifier_type: &str,
        values: &[String],
    ) -> Result<Vec<(String, Option<String>)>, ClientError> {
        let body = serde_json::json!({ "identifiers": values });
        let path = format!("/v3/marketing/contacts/search/identifiers/{identifier_type}");
        self.search(&path, body, values, identifier_type == "email")
            .await
    }

    async fn search(
        &self,
        path: &str,
        body: serde_json::Value,
        emails: &[String],
        any_case: bool,
    ) -> Result<Vec<(String, Option<String>)>, ClientError> {
        let fold = |text: &str| {
            if any_case {
                text.to_lowercase()
            } else {
                text.to_owned()
            }
        };
        let body = serde_json::to_vec(&body).expect("serialises");
        let found: SearchResult = match self
            .json("looking up contacts", Method::POST, path, Some(body.into()))
            .await
        {
            Ok(r) => r,
            Err(ClientError::NotFound { .. }) => SearchResult::default(),
            Err(e) => return Err(e),
        };
        // SendGrid keys the result by the value as it keeps it: addresses in lower case.
        let by_email: HashMap<String, &str> = found
            .result
            .iter()
            .filter_map(|(email, entry)| Some((fold(email), entry.contact.as_ref()?.id.as_str())))
            .collect();
        Ok(emails
            .iter()
            .map(|e| {
                let id = by_email.get(&fold(e)).map(|id| (*id).to_owned());
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

    /// `request` to `url`, with the key when `url` is on the configured endpoint's origin
    /// (scheme, host and port): the one rule for where the key goes, for every request.
    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        url: &url::Url,
    ) -> reqwest::RequestBuilder {
        let own = url::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin());
        if own {
            request.bearer_auth(self.key.expose_secret())
        } else {
            request
        }
    }

    /// Downloads an import job's errors file. SendGrid hands out a pre-signed link on a
    /// storage host: the key goes only to the API's own origin, the link itself (which
    /// carries a signature) is never put in a message, and an answer that is not 2xx is an
    /// error that says what the host said (an expired link answers 403 `Request has expired`).
    pub async fn fetch_errors(&self, link: &str) -> Result<String, ClientError> {
        let what = "downloading the import errors";
        let unexpected = |message: String| ClientError::Unexpected {
            what: what.into(),
            message,
        };
        let url = url::Url::parse(link)
            .map_err(|_| unexpected("SendGrid's errors_url is not a URL".into()))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(unexpected(format!(
                "SendGrid's errors_url has scheme {}",
                url.scheme()
            )));
        }
        let request = self.authorized(self.http.get().await?.get(url.clone()), &url);
        let response = request
            .send()
            .await
            .map_err(|e| unexpected(transport_message(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unexpected(transport_message(&e)))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(unexpected(format!(
                "HTTP {}{}",
                status.as_u16(),
                storage_message(&text)
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )))
        }
    }
}

#[cfg(test)]
mod tests;
