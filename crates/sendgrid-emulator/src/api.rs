//! The HTTP endpoints, answering as SendGrid's OpenAPI files describe.

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
    Contact, Fault, Faults, FieldDef, Job, JobEnd, KeyConfig, List, LoggedRequest,
    State as Account, Upserted, unix_now,
};

/// SendGrid refuses request bodies of this many bytes or more.
const MAX_BODY_BYTES: usize = 6_000_000;
const MAX_CONTACTS: usize = 30_000;

#[derive(Clone)]
struct App {
    account: Arc<Mutex<Account>>,
    base_url: String,
}

impl App {
    fn lock(&self) -> MutexGuard<'_, Account> {
        self.account.lock().expect("emulator state")
    }
}

pub(crate) fn router(account: Arc<Mutex<Account>>, addr: SocketAddr) -> Router {
    Router::new()
        .route("/v3/marketing/contacts", put(upsert))
        .route("/v3/marketing/contacts/imports/{id}", get(import_status))
        .route("/v3/marketing/contacts/search/emails", post(search_emails))
        .route("/v3/marketing/lists", post(create_list))
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
        .route("/_emulator/state", get(inspect))
        .route("/_emulator/faults", post(add_faults))
        .route("/_emulator/errors/{job_id}", get(errors_file))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(App {
            account,
            base_url: format!("http://{addr}"),
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any valid key (a key may read its own scopes).
    Any,
    Read,
    Write,
}

/// Rate-limit headers for one answer.
#[derive(Clone, Copy)]
struct Rate(Option<(u32, u32, u64)>);

fn errors(field: Option<&str>, message: &str) -> Value {
    json!({"errors": [{"field": field, "message": message}]})
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
    answer_logged(app, method, path, rate, status, body, Vec::new(), None)
}

#[allow(clippy::too_many_arguments)]
fn answer_logged(
    app: &App,
    method: &Method,
    path: &str,
    rate: Rate,
    status: StatusCode,
    body: Value,
    upserted: Vec<Upserted>,
    job_id: Option<String>,
) -> Response {
    app.lock().log.push(LoggedRequest {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        upserted,
        job_id,
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some((limit, remaining, reset)) = rate.0 {
        let h = response.headers_mut();
        h.insert("X-RateLimit-Limit", HeaderValue::from(limit));
        h.insert("X-RateLimit-Remaining", HeaderValue::from(remaining));
        h.insert("X-RateLimit-Reset", HeaderValue::from(reset));
    }
    response
}

/// Rate limit, then auth: a 429, 401 or 403 answer, or the headers to send and the key.
#[allow(clippy::result_large_err)]
fn gate(
    app: &App,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    access: Access,
) -> Result<(Rate, KeyConfig), Response> {
    let (rate, allowed, key) = {
        let mut account = app.lock();
        let rate = account.rate();
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|k| account.config.keys.iter().find(|c| c.key == k).cloned());
        (rate, rate.is_none_or(|r| r.3), key)
    };
    let headers = Rate(rate.map(|(l, r, reset, _)| (l, r, reset)));
    if !allowed {
        return Err(answer(
            app,
            method,
            path,
            headers,
            StatusCode::TOO_MANY_REQUESTS,
            errors(None, "too many requests"),
        ));
    }
    let Some(key) = key else {
        return Err(answer(
            app,
            method,
            path,
            headers,
            StatusCode::UNAUTHORIZED,
            errors(None, "authorization required"),
        ));
    };
    let permitted = access == Access::Any
        || key.scopes.iter().any(|s| match access {
            Access::Any => true,
            Access::Read => s == "marketing.read" || s.starts_with("marketing_campaigns."),
            Access::Write => matches!(
                s.as_str(),
                "marketing_campaigns.create"
                    | "marketing_campaigns.update"
                    | "marketing_campaigns.delete"
            ),
        });
    if !permitted {
        return Err(answer(
            app,
            method,
            path,
            headers,
            StatusCode::FORBIDDEN,
            errors(None, "access forbidden"),
        ));
    }
    Ok((headers, key))
}

/// The rate-limit headers of an admitted request; returns the refusal otherwise.
macro_rules! gate {
    ($app:expr, $headers:expr, $method:expr, $path:expr, $access:expr) => {
        match gate(&$app, &$headers, &$method, &$path, $access) {
            Ok(admitted) => admitted,
            Err(response) => return response,
        }
    };
}

async fn upsert(
    State(app): State<App>,
    Extension(drop_connection): Extension<DropConnection>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v3/marketing/contacts";
    let (rate, _) = gate!(app, headers, method, path, Access::Write);
    let fault = app.lock().faults.upserts.pop_front();
    match fault {
        Some(Fault::Status { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let rate = if status == StatusCode::TOO_MANY_REQUESTS {
                Rate(Some((rate.0.map_or(600, |r| r.0), 0, unix_now() + 1)))
            } else {
                rate
            };
            return answer(
                &app,
                &method,
                path,
                rate,
                status,
                errors(None, "scripted fault"),
            );
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Drop) => {
            app.lock().log.push(LoggedRequest {
                method: method.to_string(),
                path: path.into(),
                status: 0,
                upserted: Vec::new(),
                job_id: None,
            });
            drop_connection.0.notify_one();
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    if body.len() >= MAX_BODY_BYTES {
        return answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::PAYLOAD_TOO_LARGE,
            errors(None, "request body too large"),
        );
    }
    // Checked outside the lock, so a large body does not hold up the imports.
    let (fields, poisoned, poisoned_without_index) = {
        let account = app.lock();
        let faults = &account.faults;
        (
            account.fields.clone(),
            faults.poisoned.clone(),
            faults.poisoned_without_index,
        )
    };
    let request = match parse_upsert(&body, &fields, &poisoned, poisoned_without_index) {
        Ok(request) => request,
        Err(problems) => {
            return answer(&app, &method, path, rate, StatusCode::BAD_REQUEST, problems);
        }
    };
    let list_ids: Arc<[String]> = request.list_ids.into();
    // Each contact with its email as SendGrid keys and keeps it: lower-cased.
    let contacts: Vec<(String, ContactFields)> = request
        .contacts
        .into_iter()
        .map(|mut c| {
            let email = c.email().unwrap_or_default().to_lowercase();
            if c.email() != Some(email.as_str()) {
                c.text[0] = Some(email.as_str().into());
            }
            (email, c)
        })
        .collect();
    let upserted = contacts
        .iter()
        .map(|(email, _)| Upserted {
            email: email.clone(),
            list_ids: list_ids.clone(),
        })
        .collect();
    let mut account = app.lock();
    if let Some(missing) = list_ids.iter().find(|id| !account.lists.contains_key(*id)) {
        let message = format!("list {missing} does not exist");
        drop(account);
        return answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::NOT_FOUND,
            errors(Some("list_ids"), &message),
        );
    }
    let end = match account.faults.jobs.pop_front() {
        Some(Fault::FailJob) => JobEnd::Fail,
        Some(Fault::ErrorJob { emails }) => {
            JobEnd::Error(emails.into_iter().map(|e| e.to_lowercase()).collect())
        }
        _ => JobEnd::Complete,
    };
    let job_id = account.uuid();
    let delay = Duration::from_millis(account.config.import_delay_ms);
    account.jobs.insert(
        job_id.clone(),
        Job {
            created: Instant::now(),
            list_ids,
            requested: contacts.len(),
            contacts,
            end,
            result: None,
            errors: Vec::new(),
        },
    );
    drop(account);
    // The import runs in the background once its delay has passed, as SendGrid's does;
    // a status request in the meantime settles due jobs too.
    let importer = app.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        importer.lock().settle();
    });
    answer_logged(
        &app,
        &method,
        path,
        rate,
        StatusCode::ACCEPTED,
        json!({"job_id": job_id}),
        upserted,
        Some(job_id.clone()),
    )
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn max_chars(field: &str) -> Option<usize> {
    match field {
        "first_name" | "last_name" | "state_province_region" | "country" => Some(50),
        "city" => Some(60),
        "address_line_1" | "address_line_2" => Some(100),
        "email" | "external_id" | "anonymous_id" => Some(254),
        "postal_code" | "phone_number_id" => None,
        _ => None,
    }
}

/// Whether `text` has more than `max` characters; no count when its bytes already fit.
fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// Why SendGrid would refuse reserved text field `field` holding `text`, if it would.
fn text_problem(field: &str, text: &str) -> Option<String> {
    max_chars(field)
        .filter(|max| longer_than(text, *max))
        .map(|max| format!("length must be less than or equal to {max}"))
}

/// Whether the alternate emails are at most five addresses of at most 254 characters.
fn alternates_ok<'a>(mut emails: impl ExactSizeIterator<Item = Option<&'a str>>) -> bool {
    emails.len() <= 5 && emails.all(|e| e.is_some_and(|e| !longer_than(e, 254)))
}

/// Why SendGrid would refuse custom field `id` holding `value`, if it would.
fn custom_problem(fields: &[FieldDef], id: &str, value: &Value) -> Option<String> {
    match fields.iter().find(|f| f.id == id) {
        None => Some(format!("custom field ID {id} does not exist")),
        Some(def) if def.field_type == "Number" && !value.is_number() => {
            Some("must be a number".into())
        }
        Some(def) if def.field_type != "Number" && !value.is_string() => {
            Some("must be a string".into())
        }
        Some(_) => None,
    }
}

fn email_ok(email: &str) -> bool {
    email.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !d.contains('@') && !email.contains(' ')
    })
}

fn is_poisoned(poisoned: &BTreeSet<String>, email: &str) -> bool {
    !poisoned.is_empty() && poisoned.contains(&email.to_lowercase())
}

/// Whether a parsed request breaks none of the rules [`validate_upsert`] reports.
fn well_formed(fields: &[FieldDef], poisoned: &BTreeSet<String>, request: &UpsertRequest) -> bool {
    request.list_ids.iter().all(|id| is_uuid(id))
        && (1..=MAX_CONTACTS).contains(&request.contacts.len())
        && request.contacts.iter().all(|c| {
            c.email()
                .is_some_and(|e| email_ok(e) && !is_poisoned(poisoned, e))
                && c.texts()
                    .all(|(field, text)| text_problem(field, text).is_none())
                && c.alternate_emails
                    .as_ref()
                    .is_none_or(|a| alternates_ok(a.iter().map(|e| Some(e.as_str()))))
                && c.custom
                    .iter()
                    .all(|(id, value)| custom_problem(fields, id, value).is_none())
        })
}

/// The upsert request in `body`, or the answer naming what is wrong with it. A well-formed
/// body is parsed once, into the contacts' fields; any other goes through `Value`, which
/// names every problem.
fn parse_upsert(
    body: &[u8],
    fields: &[FieldDef],
    poisoned: &BTreeSet<String>,
    poisoned_without_index: bool,
) -> Result<UpsertRequest, Value> {
    match serde_json::from_slice::<UpsertRequest>(body) {
        Ok(request) if well_formed(fields, poisoned, &request) => return Ok(request),
        _ => {}
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(errors(None, "invalid JSON body"));
    };
    let problems = validate_upsert(fields, poisoned, poisoned_without_index, &request);
    if !problems.is_empty() {
        let named: Vec<Value> = problems
            .iter()
            .map(|(f, m)| json!({"field": f, "message": m}))
            .collect();
        return Err(json!({ "errors": named }));
    }
    // Valid, yet not parsed above (a repeated top-level name, say).
    UpsertRequest::deserialize(Value::Object(request)).map_err(|e| errors(None, &e.to_string()))
}

/// Every problem with an upsert request, as (field, message).
fn validate_upsert(
    fields: &[FieldDef],
    poisoned: &BTreeSet<String>,
    poisoned_without_index: bool,
    request: &Map<String, Value>,
) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for key in request.keys() {
        if key != "list_ids" && key != "contacts" {
            out.push((Some(key.clone()), "unknown property".into()));
        }
    }
    if let Some(ids) = request.get("list_ids") {
        match ids.as_array() {
            Some(ids) => {
                for (i, id) in ids.iter().enumerate() {
                    if !id.as_str().is_some_and(is_uuid) {
                        out.push((
                            Some(format!("list_ids[{i}]")),
                            "must be a valid UUID".into(),
                        ));
                    }
                }
            }
            None => out.push((Some("list_ids".into()), "must be an array".into())),
        }
    }
    let Some(contacts) = request.get("contacts").and_then(Value::as_array) else {
        out.push((
            Some("contacts".into()),
            "is required and must be an array".into(),
        ));
        return out;
    };
    if contacts.is_empty() || contacts.len() > MAX_CONTACTS {
        out.push((
            Some("contacts".into()),
            format!("must hold 1 to {MAX_CONTACTS} contacts"),
        ));
        return out;
    }
    let mut poisoned_unnamed = false;
    for (i, contact) in contacts.iter().enumerate() {
        let at = |f: &str| Some(format!("contacts[{i}].{f}"));
        let Some(contact) = contact.as_object() else {
            out.push((Some(format!("contacts[{i}]")), "must be an object".into()));
            continue;
        };
        for (key, value) in contact {
            if !RESERVED.contains(&key.as_str()) {
                out.push((at(key), "unknown field".into()));
                continue;
            }
            match key.as_str() {
                "alternate_emails" => match value.as_array() {
                    Some(a) if alternates_ok(a.iter().map(Value::as_str)) => {}
                    _ => out.push((at(key), "must be at most 5 email addresses".into())),
                },
                "custom_fields" => match value.as_object() {
                    Some(custom) => {
                        for (id, v) in custom {
                            if let Some(message) = custom_problem(fields, id, v) {
                                out.push((at(&format!("custom_fields.{id}")), message));
                            }
                        }
                    }
                    None => out.push((at(key), "must be an object".into())),
                },
                field => match value.as_str() {
                    Some(text) => {
                        if let Some(message) = text_problem(field, text) {
                            out.push((at(field), message));
                        }
                    }
                    None => out.push((at(field), "must be a string".into())),
                },
            }
        }
        match contact.get("email").and_then(Value::as_str) {
            None => out.push((at("email"), "is required".into())),
            Some(email) if !email_ok(email) => {
                out.push((at("email"), "must be a valid email address".into()));
            }
            Some(email) if is_poisoned(poisoned, email) => {
                if poisoned_without_index {
                    poisoned_unnamed = true;
                } else {
                    out.push((at("email"), "email address is not accepted".into()));
                }
            }
            Some(_) => {}
        }
    }
    if poisoned_unnamed {
        out.push((None, "one or more contacts are invalid".into()));
    }
    out
}

async fn import_status(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v3/marketing/contacts/imports/{id}");
    let (rate, _) = gate!(app, headers, method, path, Access::Read);
    let body = {
        let mut account = app.lock();
        account.settle();
        account.jobs.get(&id).map(|job| {
            let mut body = json!({"id": id, "job_type": "upsert", "status": "pending",
                "results": {"requested_count": job.requested}});
            if let Some((status, created, updated, errored)) = job.result {
                body["status"] = json!(status);
                body["results"] = json!({
                    "requested_count": job.requested,
                    "created_count": created,
                    "updated_count": updated,
                    "errored_count": errored,
                });
                if !job.errors.is_empty() {
                    body["results"]["errors_url"] =
                        json!(format!("{}/_emulator/errors/{id}", app.base_url));
                }
            }
            body
        })
    };
    match body {
        Some(body) => answer(&app, &method, &path, rate, StatusCode::OK, body),
        None => answer(
            &app,
            &method,
            &path,
            rate,
            StatusCode::NOT_FOUND,
            errors(None, "job not found"),
        ),
    }
}

/// The errors file of an errored job: CSV with the email and the error.
async fn errors_file(State(app): State<App>, Path(job_id): Path<String>) -> Response {
    let account = app.lock();
    match account.jobs.get(&job_id) {
        Some(job) => {
            let mut csv = String::from("email,error\n");
            for (email, error) in &job.errors {
                csv.push_str(&format!("{email},{error}\n"));
            }
            ([("content-type", "text/csv")], csv).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn search_emails(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v3/marketing/contacts/search/emails";
    let (rate, _) = gate!(app, headers, method, path, Access::Read);
    let emails: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("emails").and_then(Value::as_array).cloned())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if emails.is_empty() || emails.len() > 100 {
        return answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::BAD_REQUEST,
            errors(Some("emails"), "give 1 to 100 emails"),
        );
    }
    let result: Map<String, Value> = {
        let mut account = app.lock();
        account.settle();
        emails
            .iter()
            .map(|e| {
                let v = match account.contacts.get(e) {
                    Some(c) => json!({"contact": contact_json(c)}),
                    None => json!({"error": "contact not found"}),
                };
                (e.clone(), v)
            })
            .collect()
    };
    answer(
        &app,
        &method,
        path,
        rate,
        StatusCode::OK,
        json!({"result": result}),
    )
}

fn contact_json(c: &crate::state::Contact) -> Value {
    let mut v = Value::Object(c.fields.reserved_json());
    v["id"] = json!(c.id);
    v["list_ids"] = json!(c.list_ids);
    v["segment_ids"] = json!([]);
    v["custom_fields"] = Value::Object(c.fields.custom.clone());
    v["created_at"] = json!("2026-01-01T00:00:00Z");
    v["updated_at"] = json!("2026-01-01T00:00:00Z");
    v
}

async fn create_list(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v3/marketing/lists";
    let (rate, _) = gate!(app, headers, method, path, Access::Write);
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !n.is_empty() && n.chars().count() <= 100);
    let Some(name) = name else {
        return answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::BAD_REQUEST,
            errors(Some("name"), "is required (1 to 100 characters)"),
        );
    };
    let id = {
        let mut account = app.lock();
        let id = account.uuid();
        account
            .lists
            .insert(id.clone(), List { name: name.clone() });
        id
    };
    let body = json!({"id": id, "name": name, "contact_count": 0,
        "_metadata": {"self": format!("{}/v3/marketing/lists/{id}", app.base_url)}});
    answer(&app, &method, path, rate, StatusCode::CREATED, body)
}

async fn get_list(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v3/marketing/lists/{id}");
    let (rate, _) = gate!(app, headers, method, path, Access::Read);
    let body = {
        let mut account = app.lock();
        account.settle();
        account
            .lists
            .get(&id)
            .map(|l| json!({"id": id, "name": l.name, "contact_count": account.contact_count(&id)}))
    };
    match body {
        Some(body) => answer(&app, &method, &path, rate, StatusCode::OK, body),
        None => answer(
            &app,
            &method,
            &path,
            rate,
            StatusCode::NOT_FOUND,
            errors(None, "list not found"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct ContactIds {
    contact_ids: Option<String>,
}

async fn remove_from_list(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ContactIds>,
) -> Response {
    let path = format!("/v3/marketing/lists/{id}/contacts");
    let (rate, _) = gate!(app, headers, method, path, Access::Write);
    let ids: Vec<String> = query
        .contact_ids
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return answer(
            &app,
            &method,
            &path,
            rate,
            StatusCode::BAD_REQUEST,
            errors(Some("contact_ids"), "is required"),
        );
    }
    let job_id = {
        let mut account = app.lock();
        if !account.lists.contains_key(&id) {
            None
        } else {
            for contact in account.contacts.values_mut() {
                if ids.contains(&contact.id) {
                    contact.list_ids.remove(&id);
                }
            }
            Some(account.uuid())
        }
    };
    match job_id {
        Some(job_id) => answer(
            &app,
            &method,
            &path,
            rate,
            StatusCode::ACCEPTED,
            json!({"job_id": job_id}),
        ),
        None => answer(
            &app,
            &method,
            &path,
            rate,
            StatusCode::NOT_FOUND,
            errors(None, "list not found"),
        ),
    }
}

async fn field_definitions(State(app): State<App>, method: Method, headers: HeaderMap) -> Response {
    let path = "/v3/marketing/field_definitions";
    let (rate, _) = gate!(app, headers, method, path, Access::Read);
    let custom: Vec<Value> = app
        .lock()
        .fields
        .iter()
        .map(|f| json!({"id": f.id, "name": f.name, "field_type": f.field_type}))
        .collect();
    let reserved: Vec<Value> = RESERVED[..13]
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": format!("_rf{i}_T"), "name": n, "field_type": "Text"}))
        .collect();
    answer(
        &app,
        &method,
        path,
        rate,
        StatusCode::OK,
        json!({"custom_fields": custom, "reserved_fields": reserved}),
    )
}

async fn create_field(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/v3/marketing/field_definitions";
    let (rate, _) = gate!(app, headers, method, path, Access::Write);
    let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let name = request
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let field_type = request
        .get("field_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() || !matches!(field_type.as_str(), "Text" | "Number" | "Date") {
        return answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::BAD_REQUEST,
            errors(
                Some("field_type"),
                "give a name and a field_type of Text, Number or Date",
            ),
        );
    }
    let def = {
        let mut account = app.lock();
        if account.fields.iter().any(|f| f.name == name) {
            None
        } else {
            Some(account.add_field(name, field_type))
        }
    };
    match def {
        Some(d) => answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::OK,
            json!({"id": d.id, "name": d.name, "field_type": d.field_type}),
        ),
        None => answer(
            &app,
            &method,
            path,
            rate,
            StatusCode::BAD_REQUEST,
            errors(Some("name"), "a field with this name exists"),
        ),
    }
}

async fn scopes(State(app): State<App>, method: Method, headers: HeaderMap) -> Response {
    let path = "/v3/scopes";
    let (rate, key) = gate!(app, headers, method, path, Access::Any);
    answer(
        &app,
        &method,
        path,
        rate,
        StatusCode::OK,
        json!({"scopes": key.scopes}),
    )
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
    let mut by_email: Vec<(&String, &Contact)> = account.contacts.iter().collect();
    by_email.sort_unstable_by_key(|(email, _)| *email);
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
