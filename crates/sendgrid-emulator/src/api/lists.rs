//! The lists, custom field definitions and scopes endpoints.

use super::*;

pub(super) async fn create_list(call: Call, body: Bytes) -> Response {
    let call = admit!(call, "/v3/marketing/lists", Access::Write);
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !n.is_empty() && n.chars().count() <= 100);
    let Some(name) = name else {
        return call.answer(
            StatusCode::BAD_REQUEST,
            errors(Some("name"), "is required (1 to 100 characters)"),
        );
    };
    let id = {
        let mut account = call.lock();
        let id = account.uuid();
        account
            .lists
            .insert(id.clone(), List { name: name.clone() });
        id
    };
    let body = json!({"id": id, "name": name, "contact_count": 0,
        "_metadata": {"self": format!("{}/v3/marketing/lists/{id}", call.app.base_url)}});
    call.answer(StatusCode::CREATED, body)
}

#[derive(serde::Deserialize)]
pub(super) struct Page {
    page_size: Option<String>,
    page_token: Option<String>,
}

/// `GET /v3/marketing/lists`: pages of 1 to 1,000 lists (100 by default); the token is
/// the emulator's own (an offset), as SendGrid's is opaque.
pub(super) async fn all_lists(call: Call, Query(page): Query<Page>) -> Response {
    let call = admit!(call, "/v3/marketing/lists", Access::Read);
    let size = match page.page_size.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            let message = "must be a number from 1 to 1000";
            let body = errors(Some("page_size"), message);
            return call.answer(StatusCode::BAD_REQUEST, body);
        }
    };
    let start = match page.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match token.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                let body = errors(Some("page_token"), "is not a valid page token");
                return call.answer(StatusCode::BAD_REQUEST, body);
            }
        },
    };
    let (result, total) = {
        let mut account = call.lock();
        account.settle();
        let total = account.lists.len();
        let result: Vec<Value> = account
            .lists
            .iter()
            .skip(start)
            .take(size)
            .map(|(id, l)| {
                json!({"id": id, "name": l.name, "contact_count": account.contact_count(id),
                    "_metadata": {"self": format!("{}/v3/marketing/lists/{id}", call.app.base_url)}})
            })
            .collect();
        (result, total)
    };
    let page_url = |token: usize| {
        format!(
            "{}/v3/marketing/lists?page_size={size}&page_token={token}",
            call.app.base_url
        )
    };
    let mut metadata = json!({"self": page_url(start), "count": total});
    if start + size < total {
        metadata["next"] = json!(page_url(start + size));
    }
    if start > 0 {
        metadata["prev"] = json!(page_url(start.saturating_sub(size)));
    }
    let body = json!({"result": result, "_metadata": metadata});
    call.answer(StatusCode::OK, body)
}

pub(super) async fn get_list(call: Call, Path(id): Path<String>) -> Response {
    let call = admit!(call, format!("/v3/marketing/lists/{id}"), Access::Read);
    let body = {
        let mut account = call.lock();
        account.settle();
        account
            .lists
            .get(&id)
            .map(|l| json!({"id": id, "name": l.name, "contact_count": account.contact_count(&id)}))
    };
    match body {
        Some(body) => call.answer(StatusCode::OK, body),
        // The spec's 404 for a list is a bare array of errors.
        None => call.answer(
            StatusCode::NOT_FOUND,
            json!([error(Some("id"), "list not found")]),
        ),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ContactIds {
    contact_ids: Option<String>,
}

pub(super) async fn remove_from_list(
    call: Call,
    Path(id): Path<String>,
    Query(query): Query<ContactIds>,
) -> Response {
    let call = admit!(
        call,
        format!("/v3/marketing/lists/{id}/contacts"),
        Access::Write
    );
    let ids: BTreeSet<String> = query
        .contact_ids
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        // The spec's 400 here is a single error object.
        return call.answer(
            StatusCode::BAD_REQUEST,
            error(Some("contact_ids"), "is required"),
        );
    }
    // 404 when the list or any of the contacts does not exist; nothing is removed then.
    let job_id = {
        let mut account = call.lock();
        account.settle();
        for email in std::mem::take(&mut account.faults.vanish_before_removal) {
            account.delete("email", &email);
        }
        let known = account
            .contacts
            .values()
            .filter(|c| ids.contains(&c.id))
            .count();
        if !account.lists.contains_key(&id) || known < ids.len() {
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
        Some(job_id) => call.answer(StatusCode::ACCEPTED, json!({"job_id": job_id})),
        None => call.answer(
            StatusCode::NOT_FOUND,
            errors(None, "the list or one or more contact IDs do not exist"),
        ),
    }
}

pub(super) async fn field_definitions(call: Call) -> Response {
    let call = admit!(call, "/v3/marketing/field_definitions", Access::Read);
    let custom: Vec<Value> = call
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
    call.answer(
        StatusCode::OK,
        json!({"custom_fields": custom, "reserved_fields": reserved}),
    )
}

pub(super) async fn create_field(call: Call, body: Bytes) -> Response {
    let call = admit!(call, "/v3/marketing/field_definitions", Access::Write);
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
        return call.answer(
            StatusCode::BAD_REQUEST,
            errors(
                Some("field_type"),
                "give a name and a field_type of Text, Number or Date",
            ),
        );
    }
    if let Err(message) = field_name_ok(&name) {
        return call.answer(StatusCode::BAD_REQUEST, errors(Some("name"), message));
    }
    // Names are unique whatever their case.
    let def = {
        let mut account = call.lock();
        if account
            .fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(&name))
        {
            None
        } else {
            Some(account.add_field(name, field_type))
        }
    };
    match def {
        Some(d) => call.answer(
            StatusCode::OK,
            json!({"id": d.id, "name": d.name, "field_type": d.field_type}),
        ),
        None => call.answer(
            StatusCode::BAD_REQUEST,
            errors(Some("name"), "a field with this name exists"),
        ),
    }
}

/// SendGrid's naming rules for custom fields: letters, digits and `_`, starting with a
/// letter or `_`, at most 100 characters, and not a reserved field's name (any case).
fn field_name_ok(name: &str) -> Result<(), &'static str> {
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    let chars_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !chars_ok || name.len() > 100 {
        return Err(
            "must start with a letter or underscore and hold only letters, digits and underscores (at most 100)",
        );
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("is a reserved field name");
    }
    Ok(())
}

pub(super) async fn scopes(call: Call) -> Response {
    let call = admit!(call, "/v3/scopes", Access::Any);
    call.answer(StatusCode::OK, json!({"scopes": call.key.scopes}))
}
