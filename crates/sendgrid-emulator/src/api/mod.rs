//! The HTTP endpoints, answering as SendGrid's OpenAPI files describe: the router, the
//! gate every request passes (key, scopes, rate limit, scripted faults), and the
//! emulator's own inspection endpoints. The handlers live in [`contacts`] and [`lists`].

/// The request past the gate (an [`Admitted`]); returns the gate's refusal otherwise.
macro_rules! admit {
    ($call:expr, $path:expr, $access:expr) => {
        match $call.admit($path, $access) {
            Ok(admitted) => admitted,
            Err(response) => return response,
        }
    };
}

mod contacts;
mod lists;
mod search;

use contacts::{contact_count, errors_file, import_status, upsert};
use lists::{
    all_lists, create_field, create_list, field_definitions, get_list, remove_from_list, scopes,
};
use search::{search_emails, search_identifiers, suppressions};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::DropConnection;
use crate::fields::{ContactFields, RESERVED, UpsertRequest};
use crate::state::{
    Contact, Fault, Faults, FieldDef, Job, KeyConfig, List, LoggedRequest, RateHeaders,
    State as Account, Upserted,
};

/// SendGrid refuses request bodies of this many bytes or more.
const MAX_BODY_BYTES: usize = 6_000_000;
const MAX_CONTACTS: usize = 30_000;

#[derive(Clone)]
struct App {
    account: Arc<Mutex<Account>>,
    base_url: String,
    /// Where errors files are served: another host, as far as a client can tell.
    files_url: String,
}

impl App {
    fn lock(&self) -> MutexGuard<'_, Account> {
        self.account.lock().expect("emulator state")
    }
}

/// What every SendGrid endpoint reads first: the emulator, the method and the headers
/// (the key, for the gate).
struct Call {
    app: App,
    method: Method,
    headers: HeaderMap,
}

impl axum::extract::FromRequestParts<App> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            app: app.clone(),
            method: parts.method.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// The storage host's routes: errors files by pre-signed link, no key.
pub(crate) fn files_router(account: Arc<Mutex<Account>>) -> Router {
    Router::new()
        .route("/errors/{file}", get(errors_file))
        .with_state(App {
            account,
            base_url: String::new(),
            files_url: String::new(),
        })
}

pub(crate) fn router(account: Arc<Mutex<Account>>, addr: SocketAddr, files: SocketAddr) -> Router {
    Router::new()
        .route("/v3/marketing/contacts", put(upsert))
        .route("/v3/marketing/contacts/imports/{id}", get(import_status))
        .route("/v3/marketing/contacts/count", get(contact_count))
        .route("/v3/marketing/contacts/search/emails", post(search_emails))
        .route(
            "/v3/marketing/contacts/search/identifiers/{identifier_type}",
            post(search_identifiers),
        )
        .route("/v3/marketing/lists", get(all_lists).post(create_list))
        .route("/v3/marketing/lists/{id}", get(get_list))
        .route(
            "/v3/marketing/lists/{id}/contacts",
            delete(remove_from_list),
        )
        .route(
            "/v3/marketing/field_definitions",
            get(field_definitions).post(create_field),
        )
        .route("/v3/scopes", get(scopes))
        .route("/v3/suppression/{list}", get(suppressions))
        .route("/_emulator/state", get(inspect))
        .route("/_emulator/faults", post(add_faults))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(App {
            account,
            base_url: format!("http://{addr}"),
            files_url: format!("http://{files}"),
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any valid key (a key may read its own scopes).
    Any,
    Read,
    Write,
    /// The suppression lists (`suppression.read`).
    Suppressions,
}

/// Rate-limit headers for one answer.
#[derive(Clone, Copy)]
struct Rate(Option<RateHeaders>);

/// SendGrid's error body. The spec types `field` as a string: it is left out, not null,
/// when no field is to blame.
fn errors(field: Option<&str>, message: &str) -> Value {
    json!({ "errors": [error(field, message)] })
}

/// The gate's error body (401, 403, 429) as SendGrid documents it, with `"field": null`
/// (its spec's `ErrorResponse` allows null there).
fn gate_error(message: &str) -> Value {
    json!({"errors": [{"field": null, "message": message}]})
}

/// One error object.
fn error(field: Option<&str>, message: &str) -> Value {
    match field {
        Some(field) => json!({"field": field, "message": message}),
        None => json!({ "message": message }),
    }
}

/// Answers, logs and adds the rate-limit headers.
fn answer(
    app: &App,
    method: &Method,
    path: &str,
    rate: Rate,
    status: StatusCode,
    body: Value,
) -> Response {
    respond(app, logged(method, path, status.as_u16()), rate, body)
}

/// What the request log records of a request to `path` answered with `status` (0 when the
/// connection was dropped without an answer).
fn logged(method: &Method, path: &str, status: u16) -> LoggedRequest {
    LoggedRequest {
        method: method.to_string(),
        path: path.to_owned(),
        status,
        upserted: Vec::new(),
        job_id: None,
    }
}

/// Logs `entry` and answers with its status, `body` and the rate-limit headers.
fn respond(app: &App, entry: LoggedRequest, rate: Rate, body: Value) -> Response {
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    app.lock().log.push(entry);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(rate) = rate.0 {
        // Lower case, as recorded from the live API.
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
    }
    response
}

impl Call {
    /// Rate limit, then auth, for a request to `path`: a 429, 401 or 403 answer, or the
    /// admitted request.
    #[allow(clippy::result_large_err)]
    fn admit(self, path: impl Into<String>, access: Access) -> Result<Admitted, Response> {
        let Call {
            app,
            method,
            headers,
        } = self;
        let path = path.into();
        let (rate, allowed, key) = {
            let mut account = app.lock();
            let rate = account.rate(&path);
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|k| account.config.keys.iter().find(|c| c.key == k).cloned());
            (rate, rate.is_none_or(|r| r.1), key)
        };
        let rate = Rate(rate.map(|(headers, _)| headers));
        let refuse = |status, message| {
            Err(answer(
                &app,
                &method,
                &path,
                rate,
                status,
                gate_error(message),
            ))
        };
        if !allowed {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        }
        let Some(key) = key else {
            return refuse(StatusCode::UNAUTHORIZED, "authorization required");
        };
        let permitted = access == Access::Any
            || key.scopes.iter().any(|s| match access {
                Access::Any => true,
                Access::Read => s == "marketing.read" || s.starts_with("marketing_campaigns."),
                Access::Suppressions => s == "suppression.read",
                Access::Write => matches!(
                    s.as_str(),
                    "marketing_campaigns.create"
                        | "marketing_campaigns.update"
                        | "marketing_campaigns.delete"
                ),
            });
        if !permitted {
            return refuse(StatusCode::FORBIDDEN, "access forbidden");
        }
        Ok(Admitted {
            app,
            method,
            path,
            rate,
            key,
        })
    }
}

/// A request the gate let through: what its answer is logged with, the rate-limit headers
/// to send and the key that made it.
struct Admitted {
    app: App,
    method: Method,
    path: String,
    rate: Rate,
    key: KeyConfig,
}

impl Admitted {
    fn lock(&self) -> MutexGuard<'_, Account> {
        self.app.lock()
    }

    /// Answers with `status` and `body`: logged, with the rate-limit headers.
    fn answer(&self, status: StatusCode, body: Value) -> Response {
        answer(&self.app, &self.method, &self.path, self.rate, status, body)
    }

    /// What the request log records of this request, answered with `status`.
    fn entry(&self, status: u16) -> LoggedRequest {
        logged(&self.method, &self.path, status)
    }
}

async fn inspect(State(app): State<App>) -> Response {
    axum::Json(inspection(&mut app.lock())).into_response()
}

async fn add_faults(State(app): State<App>, axum::Json(faults): axum::Json<Faults>) -> Response {
    app.lock().faults.extend(faults);
    StatusCode::NO_CONTENT.into_response()
}

/// The lists with their contacts, the custom fields, and the request log.
pub(crate) fn inspection(account: &mut Account) -> Value {
    account.settle();
    // By identifiers, email first: contacts with an email by it, then the others.
    let mut by_email: Vec<(Vec<(&str, String)>, &Contact)> = account
        .contacts
        .values()
        .map(|c| (c.fields.identifiers(), c))
        .collect();
    by_email.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let lists: Map<String, Value> = account
        .lists
        .iter()
        .map(|(id, l)| {
            let contacts: Vec<Value> = by_email
                .iter()
                .map(|(_, c)| c)
                .filter(|c| c.list_ids.contains(id))
                .map(|c| {
                    let mut v = Value::Object(c.fields.reserved_json());
                    if !c.fields.custom.is_empty() {
                        let by_name: Map<String, Value> = c
                            .fields
                            .custom
                            .iter()
                            .map(|(fid, value)| {
                                let name = account
                                    .fields
                                    .iter()
                                    .find(|f| &f.id == fid)
                                    .map_or(fid.clone(), |f| f.name.clone());
                                (name, value.clone())
                            })
                            .collect();
                        v["custom_fields"] = Value::Object(by_name);
                    }
                    v
                })
                .collect();
            (
                id.clone(),
                json!({"name": l.name, "contact_count": contacts.len(), "contacts": contacts}),
            )
        })
        .collect();
    json!({
        "lists": lists,
        "contacts": account.contacts.len(),
        "requests": account.log,
    })
}
