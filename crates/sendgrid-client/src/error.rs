//! Why a request failed, read from SendGrid's answers in every shape its spec gives.

use reqwest::StatusCode;

use crate::types::ApiError;

/// Why a request failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `key` says whose key and where it came from.
    #[error("SendGrid refused {key} (401): check that the key is right and not revoked")]
    Unauthorized { key: String },
    #[error(
        "{key} lacks Marketing permissions (403): give it Marketing Campaigns access (read and write) in SendGrid's API key settings"
    )]
    Forbidden { key: String },
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
    #[error(
        "{what}: rate limited for {waited_secs} s, and SendGrid's next reset is {reset_secs} s away: over the {budget_secs} s allowed (raise the connection's `rate_limit_wait_secs`, or run when the account is less busy)"
    )]
    RateLimited {
        what: String,
        waited_secs: u64,
        reset_secs: u64,
        budget_secs: u64,
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

/// The code and message of an S3-style XML error body, as a storage host answers an
/// expired or refused pre-signed link: `AccessDenied: Request has expired`.
pub(crate) fn storage_message(body: &str) -> Option<String> {
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(
            body[start..end]
                .trim()
                .chars()
                .take(200)
                .collect::<String>(),
        )
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

/// reqwest's error text trimmed to the point, with the host it was talking to (its
/// origin only: a path or query could hold ids).
pub(crate) fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let kind = match e.url().map(|u| u.origin()) {
        Some(origin @ url::Origin::Tuple(..)) => {
            let to = if e.is_timeout() { "waiting for" } else { "to" };
            format!("{kind} {to} {}", origin.ascii_serialization())
        }
        _ => kind.to_owned(),
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind
    } else {
        format!("{kind} ({detail})")
    }
}

/// The TLS failure under a transport error, if that is what it is: a handshake that
/// failed the same way would fail again, so it is not retried.
pub(crate) fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        // An `io::Error` hides the error it wraps from `source()` (the connector wraps
        // rustls' error in two); `get_ref` shows it.
        let mut inner: &(dyn std::error::Error + 'static) = s;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            inner = wrapped;
        }
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// What a failed TLS handshake with `base` means, and what to do.
pub(crate) fn tls_message(base: &str, e: &rustls::Error) -> String {
    let advice = match e {
        rustls::Error::InvalidMessage(_) => {
            "it does not answer in TLS; an address that serves plain HTTP (a local emulator \
             or proxy on a loopback address) is written `http://`"
        }
        rustls::Error::InvalidCertificate(_) => {
            "its certificate is not one this machine trusts: check the endpoint's host name, \
             or add the authority that signed the certificate (a company proxy's, say) to \
             the system's trust store"
        }
        _ => "check the connection's `endpoint`",
    };
    format!("the TLS handshake with {base} failed ({e}): {advice}")
}

/// The errors in an error body, in any of the shapes SendGrid's spec gives: `{"errors":
/// [...]}`, a bare array of errors, or one error object.
fn error_list(body: &[u8]) -> Vec<ApiError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let list = match value {
        serde_json::Value::Object(mut o) if o.contains_key("errors") => o.remove("errors"),
        array @ serde_json::Value::Array(_) => Some(array),
        one @ serde_json::Value::Object(_) => Some(serde_json::Value::Array(vec![one])),
        _ => None,
    };
    list.and_then(|l| serde_json::from_value::<Vec<ApiError>>(l).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.message.is_empty() || e.field.is_some())
        .collect()
}

/// The error of a final answer; `key` names the key for a 401 or 403.
pub(crate) fn fatal(what: &str, key: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let errors = error_list(body);
    let message = describe(&errors);
    match status.as_u16() {
        401 => ClientError::Unauthorized {
            key: key.to_owned(),
        },
        403 => ClientError::Forbidden {
            key: key.to_owned(),
        },
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
    fn error_bodies_are_read_in_every_shape_the_spec_gives() {
        let messages = |body: &str| -> Vec<String> {
            error_list(body.as_bytes())
                .into_iter()
                .map(|e| e.message)
                .collect()
        };
        assert_eq!(
            messages(r#"{"errors":[{"field":null,"message":"a"}]}"#),
            ["a"]
        );
        assert_eq!(messages(r#"[{"field":"id","message":"b"}]"#), ["b"]);
        assert_eq!(messages(r#"{"field":"contact_ids","message":"c"}"#), ["c"]);
        assert!(messages("<html>").is_empty());
        assert!(messages(r#"{"unrelated":1}"#).is_empty());
    }
}
