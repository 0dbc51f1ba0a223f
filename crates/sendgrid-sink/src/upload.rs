//! Uploading one body: a 400 (or 413) never sinks it. The contacts SendGrid names are
//! rejected and the rest resent (halved when it named just one, since more may follow);
//! when it names none, the body is split in halves until the bad contacts stand alone. Each accepted body is journaled before the next request.

use std::collections::BTreeMap;

use bytes::Bytes;
use pipeline_sink::encoder::{Body, BodyKeys};
use pipeline_sink::{SinkError, SinkReject, UploadJournal};
use pipeline_spec::IdentifierSet;
use sendgrid_client::{ApiError, Client, ClientError};
use serde_json::Value;

use crate::sink_error;

/// What one upload task did.
#[derive(Default)]
pub(crate) struct Uploaded {
    pub jobs: Vec<(String, u64)>,
    pub rejects: Vec<SinkReject>,
    pub requests: u64,
    pub contacts: u64,
    pub bytes: u64,
}

impl Uploaded {
    /// Adds a finished task's work; its error (or its panic) is the sink's.
    pub fn absorb(
        &mut self,
        finished: Result<Result<Uploaded, SinkError>, tokio::task::JoinError>,
    ) -> Result<(), SinkError> {
        let part =
            finished.map_err(|e| SinkError::Internal(format!("an upload task stopped: {e}")))??;
        self.jobs.extend(part.jobs);
        self.rejects.extend(part.rejects);
        self.requests += part.requests;
        self.contacts += part.contacts;
        self.bytes += part.bytes;
        Ok(())
    }
}

/// Uploads one body. A 400 (or 413) never sinks it: the contacts SendGrid names are
/// rejected and the rest resent; when it names none, the body is split in halves until
/// the bad contacts stand alone. Each accepted body is recorded in the journal before the
/// next request.
pub(crate) async fn upload(
    client: &Client,
    body: Body,
    list_ids: &[String],
    key: &str,
    journal: Option<&dyn UploadJournal>,
) -> Result<Uploaded, SinkError> {
    let mut out = Uploaded::default();
    // Hashes and identifiers by key, built only if a body has to be split.
    let mut hashes: Option<Keyed> = None;
    let all_keys = body.keys;
    let mut work = vec![(body.bytes, None::<BodyKeys>, body.contacts as u64)];
    while let Some((bytes, keys, n)) = work.pop() {
        out.requests += 1;
        let size = bytes.len() as u64;
        out.bytes += size;
        match client.upsert_contacts(Bytes::from(bytes.clone())).await {
            Ok(job_id) => {
                if let Some(journal) = journal {
                    let keys = keys.as_ref().or(all_keys.as_ref()).ok_or_else(|| {
                        SinkError::Internal("a journaled upload has no contact keys".into())
                    })?;
                    journal
                        .accepted(&job_id, list_ids, keys)
                        .await
                        .map_err(|source| SinkError::Io {
                            context: "cannot record an accepted upload in the run journal".into(),
                            source,
                        })?;
                }
                tracing::debug!(job = %job_id, contacts = n, bytes = size, "Upload accepted");
                tracing::trace!(target: "pipeline::progress", phase = "uploading", contacts = n);
                out.jobs.push((job_id, n));
                out.contacts += n;
            }
            Err(ClientError::Rejected { errors, .. }) => {
                let (list_ids, contacts) = split_body(&bytes).map_err(sink_error)?;
                let hashes = &*hashes.get_or_insert_with(|| {
                    all_keys
                        .iter()
                        .flat_map(BodyKeys::iter)
                        .map(|(k, h, i)| (k.to_owned(), (h, i)))
                        .collect()
                });
                let keyed = |contacts: &[Value]| {
                    all_keys.as_ref().map(|_| {
                        let mut keys = BodyKeys::default();
                        for c in contacts {
                            let k = key_of(c, key);
                            let (hash, identifiers) = hashes.get(&k).copied().unwrap_or_default();
                            keys.push(&k, hash, identifiers);
                        }
                        keys
                    })
                };
                let named = by_index(&errors, contacts.len());
                if let Some(&first) = named.keys().next() {
                    // SendGrid checks in order: the contacts before the first it names are
                    // good. When it names one, more may follow it unnamed: the rest is
                    // halved, the good ones riding with the first half. A batch with many
                    // refused contacts then costs about two small requests per refusal
                    // and a few bodies' worth of bytes, not a full body per refusal.
                    let (mut before, mut after) = (Vec::new(), Vec::new());
                    for (i, c) in contacts.into_iter().enumerate() {
                        match named.get(&i) {
                            Some(message) => out.rejects.push(reject(&c, key, message, hashes)),
                            None if i < first => before.push(c),
                            None => after.push(c),
                        }
                    }
                    let parts = if named.len() == 1 && after.len() > 1 {
                        let second = after.split_off(after.len() / 2);
                        before.append(&mut after);
                        vec![second, before]
                    } else {
                        before.append(&mut after);
                        vec![before]
                    };
                    for part in parts.iter().filter(|p| !p.is_empty()) {
                        work.push((join_body(&list_ids, part), keyed(part), part.len() as u64));
                    }
                } else if contacts.len() == 1 {
                    let message = errors
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.rejects
                        .push(reject(&contacts[0], key, &message, hashes));
                } else {
                    let half = contacts.len() / 2;
                    for part in [&contacts[half..], &contacts[..half]] {
                        work.push((join_body(&list_ids, part), keyed(part), part.len() as u64));
                    }
                }
            }
            Err(e) => return Err(sink_error(e)),
        }
    }
    Ok(out)
}

fn by_index(errors: &[ApiError], len: usize) -> BTreeMap<usize, String> {
    let mut named: BTreeMap<usize, String> = BTreeMap::new();
    for e in errors {
        if let Some(i) = e.contact_index().filter(|i| *i < len) {
            let text = match &e.field {
                Some(f) => format!(
                    "{}: {}",
                    f.split_once('.').map_or(f.as_str(), |(_, rest)| rest),
                    e.message
                ),
                None => e.message.clone(),
            };
            named
                .entry(i)
                .and_modify(|m| {
                    m.push_str("; ");
                    m.push_str(&text);
                })
                .or_insert(text);
        }
    }
    named
}

/// A contact SendGrid refused at upload, with the hash of its fields when the run
/// journals (so the state remembers the refusal).
fn reject(contact: &Value, key: &str, message: &str, hashes: &Keyed) -> SinkReject {
    let k = key_of(contact, key);
    SinkReject {
        hash: hashes.get(&k).map(|(hash, _)| *hash),
        email: k,
        reason: "sendgrid_rejected",
        message: message.to_owned(),
        job_id: None,
    }
}

/// Field hash and identifier set of each contact of a body, by key.
type Keyed = BTreeMap<String, (u64, IdentifierSet)>;

/// The value of identifier `key` in a contact as the encoder wrote it.
fn key_of(contact: &Value, key: &str) -> String {
    match &contact[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn split_body(body: &[u8]) -> Result<(Value, Vec<Value>), ClientError> {
    let unexpected = || ClientError::Unexpected {
        what: "isolating rejected contacts".into(),
        message: "a request body is not the JSON the encoder writes".into(),
    };
    let mut v: Value = serde_json::from_slice(body).map_err(|_| unexpected())?;
    let contacts = match v.get_mut("contacts").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => return Err(unexpected()),
    };
    Ok((
        v.get("list_ids")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
        contacts,
    ))
}

fn join_body(list_ids: &Value, contacts: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "list_ids": list_ids, "contacts": contacts }))
        .expect("serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_contacts_by_index() {
        let errors = vec![
            ApiError {
                field: Some("contacts[2].email".into()),
                message: "bad".into(),
            },
            ApiError {
                field: Some("contacts[2].city".into()),
                message: "too long".into(),
            },
            ApiError {
                field: Some("contacts[9].email".into()),
                message: "out of range".into(),
            },
            ApiError {
                field: None,
                message: "general".into(),
            },
        ];
        let named = by_index(&errors, 5);
        assert_eq!(named.len(), 1);
        assert_eq!(named[&2], "email: bad; city: too long");
    }

    #[test]
    fn bodies_split_and_join() {
        let body = br#"{"list_ids":["l"],"contacts":[{"email":"a@x.io"},{"email":"b@x.io"}]}"#;
        let (lists, contacts) = split_body(body).unwrap();
        assert_eq!(contacts.len(), 2);
        let joined = join_body(&lists, &contacts[1..]);
        assert_eq!(
            joined,
            br#"{"contacts":[{"email":"b@x.io"}],"list_ids":["l"]}"#
        );
    }
}
