//! The contacts endpoints: upsert (validated as SendGrid validates it), import jobs and
//! their errors files (served by the storage host). Lookups are in [`super::search`].

use super::*;

pub(super) async fn upsert(
    call: Call,
    Extension(drop_connection): Extension<DropConnection>,
    body: Bytes,
) -> Response {
    let mut call = admit!(call, "/v3/marketing/contacts", Access::Write);
    let fault = call.lock().faults.upserts.pop_front();
    match fault {
        Some(Fault::Status { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let reset = call.lock().reset_header(Duration::from_secs(1));
                call.rate = Rate(Some(RateHeaders {
                    limit: call.rate.0.map_or(200, |r| r.limit),
                    remaining: 0,
                    reset,
                }));
            }
            return call.answer(status, errors(None, "scripted fault"));
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Drop) => {
            // Logged with no status: the connection closes without an answer.
            let entry = call.entry(0);
            call.lock().log.push(entry);
            drop_connection.0.notify_one();
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    if body.len() >= MAX_BODY_BYTES {
        return call.answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            errors(None, "request body too large"),
        );
    }
    // Checked outside the lock, so a large body does not hold up the imports.
    let (fields, poisoned, poisoned_without_index, first_only) = {
        let account = call.lock();
        let faults = &account.faults;
        (
            account.fields.clone(),
            faults.poisoned.clone(),
            faults.poisoned_without_index,
            faults.first_problem_only,
        )
    };
    let request = match parse_upsert(
        &body,
        &fields,
        &poisoned,
        poisoned_without_index,
        first_only,
    ) {
        Ok(request) => request,
        Err(problems) => {
            return call.answer(StatusCode::BAD_REQUEST, problems);
        }
    };
    let list_ids: Arc<[String]> = request.list_ids.into();
    // Each contact with its email as SendGrid keys and keeps it: lower-cased.
    let contacts: Vec<ContactFields> = request
        .contacts
        .into_iter()
        .map(|mut c| {
            if let Some(email) = c.email().map(str::to_lowercase)
                && c.email() != Some(email.as_str())
            {
                c.text[0] = Some(email.into());
            }
            c
        })
        .collect();
    let upserted = contacts
        .iter()
        .map(|c| Upserted {
            email: c.email().unwrap_or_default().to_owned(),
            external_id: c.text[11].as_deref().map(str::to_owned),
            list_ids: list_ids.clone(),
        })
        .collect();
    let mut account = call.lock();
    if let Some(missing) = list_ids.iter().find(|id| !account.lists.contains_key(*id)) {
        let message = format!("list {missing} does not exist");
        drop(account);
        return call.answer(StatusCode::NOT_FOUND, errors(Some("list_ids"), &message));
    }
    let end = account.next_job_end();
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
            ended: None,
        },
    );
    drop(account);
    // The import runs in the background once its delay has passed, as SendGrid's does;
    // a status request in the meantime settles due jobs too.
    let importer = call.app.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        importer.lock().settle();
    });
    let mut entry = call.entry(StatusCode::ACCEPTED.as_u16());
    entry.upserted = upserted;
    entry.job_id = Some(job_id.clone());
    respond(&call.app, entry, call.rate, json!({"job_id": job_id}))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
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
pub(super) fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// Why SendGrid would refuse reserved text field `field` holding `text`, if it would.
fn text_problem(field: &str, text: &str) -> Option<String> {
    max_chars(field)
        .filter(|max| longer_than(text, *max))
        .map(|max| format!("length must be less than or equal to {max}"))
}

/// Whether the alternate emails are at most five addresses of at most 254 characters.
pub(super) fn alternates_ok<'a>(
    mut emails: impl ExactSizeIterator<Item = Option<&'a str>>,
) -> bool {
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
        Some(def) if def.field_type == "Date" && !value.as_str().is_some_and(iso_date) => {
            Some("must be an ISO 8601 date".into())
        }
        Some(_) => None,
    }
}

/// An ISO 8601 date or date and time (`2022-01-09`, `2022-01-09T00:00:00Z`, with an
/// offset or fractional seconds). Recorded traffic shows the live API taking these; that
/// it refuses `MM/DD/YYYY` in JSON is the emulator's guess.
fn iso_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let date = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10);
    date && (b.len() == 10
        || (b.get(10) == Some(&b'T')
            && digits(11..13)
            && b.get(13) == Some(&b':')
            && digits(14..16)))
}

pub(super) fn email_ok(email: &str) -> bool {
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
            !c.identifiers().is_empty()
                && c.email()
                    .is_none_or(|e| email_ok(e) && !is_poisoned(poisoned, e))
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
    first_only: bool,
) -> Result<UpsertRequest, Value> {
    match serde_json::from_slice::<UpsertRequest>(body) {
        Ok(request) if well_formed(fields, poisoned, &request) => return Ok(request),
        _ => {}
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(errors(None, "invalid JSON body"));
    };
    let mut problems = validate_upsert(fields, poisoned, poisoned_without_index, &request);
    if first_only {
        problems.truncate(1);
    }
    if !problems.is_empty() {
        let named: Vec<Value> = problems
            .iter()
            .map(|(f, m)| error(f.as_deref(), m))
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
        let identified = ["email", "phone_number_id", "external_id", "anonymous_id"]
            .iter()
            .any(|name| contact.get(*name).is_some_and(|v| !v.is_null()));
        match contact.get("email").and_then(Value::as_str) {
            None if !identified => out.push((
                at("email"),
                "at least one identifier (email, phone_number_id, external_id or anonymous_id) is required".into(),
            )),
            None => {}
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

pub(super) async fn import_status(call: Call, Path(id): Path<String>) -> Response {
    let call = admit!(
        call,
        format!("/v3/marketing/contacts/imports/{id}"),
        Access::Read
    );
    let body = {
        let mut account = call.lock();
        account.settle();
        account.jobs.get(&id).map(|job| {
            // Counts are filled while the job is still pending, as the live API's are.
            let (status, created, updated, errored) = job.result.unwrap_or(("pending", 0, 0, 0));
            let mut body = json!({"id": id, "job_type": "upsert_contacts", "status": status,
                "results": {
                    "requested_count": job.requested,
                    "created_count": created,
                    "updated_count": updated,
                    "deleted_count": 0,
                    "errored_count": errored,
                },
                "started_at": "2026-01-01T00:00:00Z"});
            if job.result.is_some() {
                body["finished_at"] = json!("2026-01-01T00:00:20Z");
            }
            if !job.errors.is_empty() {
                body["results"]["errors_url"] = json!(format!(
                    "{}/errors/{id}.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=900&X-Amz-Signature={}",
                    call.app.files_url,
                    &id.replace('-', "")
                ));
            }
            body
        })
    };
    match body {
        Some(body) => call.answer(StatusCode::OK, body),
        None => call.answer(StatusCode::NOT_FOUND, errors(None, "job not found")),
    }
}

/// `GET /v3/marketing/contacts/count`. Every contact counts towards the bill here.
pub(super) async fn contact_count(call: Call) -> Response {
    let call = admit!(call, "/v3/marketing/contacts/count", Access::Read);
    let count = {
        let mut account = call.lock();
        account.settle();
        account.contacts.len()
    };
    let body = json!({"contact_count": count, "billable_count": count});
    call.answer(StatusCode::OK, body)
}

/// An S3-style XML error, as a storage host answers a bad pre-signed link.
fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>0000000000000000</RequestId></Error>"
    );
    (status, [("content-type", "application/xml")], xml).into_response()
}

/// The errors file of a job, from the storage host: CSV whose columns are not documented.
/// The emulator names each contact by every identifier its errors carry, the email last,
/// and quotes every value; a request that carries an
/// API key is refused (a pre-signed link takes no other credentials), and after
/// `errors_file_ttl_ms` the link has expired.
pub(super) async fn errors_file(
    State(app): State<App>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Response {
    let job_id = file.trim_end_matches(".csv");
    let path = format!("/errors/{job_id}.csv");
    let (status, response) = {
        let account = app.lock();
        let ttl = account.config.errors_file_ttl_ms.map(Duration::from_millis);
        match account.jobs.get(job_id) {
            _ if headers.contains_key("authorization") => (
                StatusCode::BAD_REQUEST,
                storage_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Only one auth mechanism allowed",
                ),
            ),
            Some(job)
                if job
                    .ended
                    .zip(ttl)
                    .is_some_and(|(at, ttl)| at.elapsed() > ttl) =>
            {
                (
                    StatusCode::FORBIDDEN,
                    storage_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired"),
                )
            }
            Some(job) if !job.errors.is_empty() => {
                let mut out = csv::WriterBuilder::new()
                    .quote_style(csv::QuoteStyle::Always)
                    .from_writer(Vec::new());
                // Other identifiers first, in SendGrid's order, then the email.
                let mut names: Vec<&str> = ["phone_number_id", "external_id", "anonymous_id"]
                    .into_iter()
                    .filter(|n| {
                        job.errors
                            .iter()
                            .any(|(ids, _)| ids.iter().any(|(i, _)| i == n))
                    })
                    .collect();
                names.push("email");
                let header = ["line", "error"].into_iter().chain(names.iter().copied());
                let written = out.write_record(header).and_then(|()| {
                    job.errors
                        .iter()
                        .enumerate()
                        .try_for_each(|(i, (ids, error))| {
                            let line = (i + 2).to_string();
                            let values = names.iter().map(|n| {
                                ids.iter()
                                    .find(|(i, _)| i == n)
                                    .map_or("", |(_, v)| v.as_str())
                            });
                            let row = [line.as_str(), error.as_str()].into_iter().chain(values);
                            out.write_record(row)
                        })
                });
                let body = written
                    .map_err(|e| e.to_string())
                    .and_then(|()| out.into_inner().map_err(|e| e.to_string()));
                match body {
                    Ok(body) => (
                        StatusCode::OK,
                        ([("content-type", "text/csv")], body).into_response(),
                    ),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        storage_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e),
                    ),
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                storage_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                ),
            ),
        }
    };
    app.lock().log.push(LoggedRequest {
        method: "GET".into(),
        path,
        status: status.as_u16(),
        upserted: Vec::new(),
        job_id: Some(job_id.to_owned()),
    });
    response
}
