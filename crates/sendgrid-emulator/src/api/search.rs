//! Looking contacts up: search by emails and by identifier, as SendGrid's spec limits
//! them (100 addresses, at most 100 characters each by emails), with its 400 and 404;
//! and the suppression lists, paged by limit and offset.

use super::contacts::{email_ok, longer_than};
use super::*;

/// `POST /v3/marketing/contacts/search/emails`: at most 100 addresses of at most 100
/// characters (the spec's limits); 400 when one is invalid, 404 when none is a contact.
pub(super) async fn search_emails(call: Call, body: Bytes) -> Response {
    let path = "/v3/marketing/contacts/search/emails";
    search(call, path, "emails", "email", Some(100), body)
}

/// `POST /v3/marketing/contacts/search/identifiers/{type}`: as search by emails, for
/// addresses of any length, or by another identifier (matched exactly).
pub(super) async fn search_identifiers(
    call: Call,
    Path(identifier_type): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/v3/marketing/contacts/search/identifiers/{identifier_type}");
    if !["email", "phone_number_id", "external_id", "anonymous_id"]
        .contains(&identifier_type.as_str())
    {
        let Call { app, method, .. } = call;
        let message = "must be one of email, phone_number_id, external_id, anonymous_id";
        return answer(
            &app,
            &method,
            &path,
            Rate(None),
            StatusCode::BAD_REQUEST,
            errors(Some("identifier_type"), message),
        );
    }
    let identifier = match identifier_type.as_str() {
        "email" => "email",
        "phone_number_id" => "phone_number_id",
        "external_id" => "external_id",
        _ => "anonymous_id",
    };
    search(call, &path, "identifiers", identifier, None, body)
}

fn search(
    call: Call,
    path: &str,
    key: &str,
    identifier: &str,
    max_chars: Option<usize>,
    body: Bytes,
) -> Response {
    let call = admit!(call, path, Access::Read);
    let given: Vec<Value> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let refuse = |field: String, message: &str| {
        call.answer(StatusCode::BAD_REQUEST, errors(Some(&field), message))
    };
    if given.is_empty() || given.len() > 100 {
        return refuse(key.into(), "give 1 to 100 addresses");
    }
    let mut emails = Vec::with_capacity(given.len());
    for (i, email) in given.iter().enumerate() {
        match email.as_str() {
            Some(e) if max_chars.is_some_and(|max| longer_than(e, max)) => {
                return refuse(
                    format!("{key}[{i}]"),
                    "length must be less than or equal to 100",
                );
            }
            Some(e) if identifier != "email" && !e.is_empty() => emails.push(e.to_owned()),
            Some(e) if email_ok(e) => emails.push(e.to_lowercase()),
            _ if identifier != "email" => {
                return refuse(format!("{key}[{i}]"), "must be a non-empty string");
            }
            _ => return refuse(format!("{key}[{i}]"), "must be a valid email address"),
        }
    }
    let result: Map<String, Value> = {
        let mut account = call.lock();
        account.settle();
        emails
            .iter()
            .map(|e| {
                let v = match account.find(identifier, e) {
                    Some(c) => json!({"contact": contact_json(c)}),
                    None => json!({"error": "contact not found"}),
                };
                (e.clone(), v)
            })
            .collect()
    };
    if result.values().all(|v| v.get("contact").is_none()) {
        return call.answer(StatusCode::NOT_FOUND, errors(None, "No contacts found"));
    }
    call.answer(StatusCode::OK, json!({"result": result}))
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

#[derive(serde::Deserialize)]
pub(super) struct Paging {
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /v3/suppression/{unsubscribes,bounces,blocks,spam_reports,invalid_emails}`: at most
/// 500 a page, each entry with the fields its list's spec gives.
pub(super) async fn suppressions(
    call: Call,
    Path(list): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    let call = admit!(
        call,
        format!("/v3/suppression/{list}"),
        Access::Suppressions
    );
    let kind = match list.as_str() {
        "unsubscribes" => "unsubscribed",
        "bounces" => "bounced",
        "blocks" => "blocked",
        "spam_reports" => "spam_report",
        "invalid_emails" => "invalid",
        _ => {
            let body = errors(None, "no such suppression list");
            return call.answer(StatusCode::NOT_FOUND, body);
        }
    };
    let number =
        |v: &Option<String>, default: usize| v.as_deref().map_or(Ok(default), str::parse::<usize>);
    let (Ok(limit), Ok(offset)) = (number(&paging.limit, 500), number(&paging.offset, 0)) else {
        let body = errors(Some("limit"), "limit and offset are whole numbers");
        return call.answer(StatusCode::BAD_REQUEST, body);
    };
    if !(1..=500).contains(&limit) {
        let body = errors(Some("limit"), "must be between 1 and 500");
        return call.answer(StatusCode::BAD_REQUEST, body);
    }
    let entries: Vec<Value> = call
        .lock()
        .config
        .suppressions
        .iter()
        .filter(|(k, _)| k == kind)
        .skip(offset)
        .take(limit)
        .map(|(_, email)| match kind {
            "bounced" | "blocked" => json!({"created": 1_700_000_000, "email": email,
                "reason": "550 5.1.1 mailbox unavailable", "status": "5.1.1"}),
            "spam_report" => json!({"created": 1_700_000_000, "email": email, "ip": "10.0.0.1"}),
            "invalid" => json!({"created": 1_700_000_000, "email": email,
                "reason": "Mail domain mentioned in email address is unknown"}),
            _ => json!({"created": 1_700_000_000, "email": email}),
        })
        .collect();
    call.answer(StatusCode::OK, Value::Array(entries))
}
