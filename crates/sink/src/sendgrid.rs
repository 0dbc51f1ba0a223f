//! The SendGrid sink: checks lists and custom fields, uploads request bodies with bounded
//! concurrency as the selection hands over batches, isolates the contacts a 400 names,
//! and follows the import jobs to the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use sendgrid_client::{ApiError, Client, ClientError, FieldType};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::encoder::{Body, BodyEncoder, BodyKeys, ContactFilter};
use crate::{
    ContactField, ContactStream, ExportTarget, FieldKind, JobReport, Sink, SinkError, SinkReject,
    SinkReport, UploadJournal,
};

/// How the sink uploads and waits.
#[derive(Debug, Clone)]
pub struct SendgridSettings {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Follow import jobs until they end.
    pub wait_for_import: bool,
    /// Longest wait for all import jobs.
    pub import_timeout: Duration,
    /// Create custom fields that do not exist instead of failing.
    pub create_missing_fields: bool,
    /// Contacts per request (at most SendGrid's 30,000).
    pub contacts_per_request: usize,
}

impl Default for SendgridSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            wait_for_import: true,
            import_timeout: Duration::from_secs(900),
            create_missing_fields: false,
            contacts_per_request: crate::encoder::MAX_CONTACTS_PER_REQUEST,
        }
    }
}

/// Uploads contacts to SendGrid.
pub struct SendgridSink {
    client: Client,
    settings: SendgridSettings,
    /// SendGrid types of custom fields, used when one is created.
    custom_types: BTreeMap<String, FieldType>,
    filter: Option<Box<dyn ContactFilter>>,
    journal: Option<Arc<dyn UploadJournal>>,
}

impl SendgridSink {
    pub fn new(client: Client, settings: SendgridSettings) -> Self {
        Self {
            client,
            settings,
            custom_types: BTreeMap::new(),
            filter: None,
            journal: None,
        }
    }

    /// Sends only the contacts `filter` admits (an incremental run).
    pub fn with_filter(mut self, filter: Box<dyn ContactFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Records every accepted body in `journal` before going on. Needs a filter, which
    /// supplies the emails and hashes the journal records.
    pub fn with_journal(mut self, journal: Arc<dyn UploadJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The type of each custom field, used when `create_missing_fields` creates one.
    pub fn with_custom_types(mut self, types: BTreeMap<String, FieldType>) -> Self {
        self.custom_types = types;
        self
    }

    /// Checks the lists and resolves custom field names to ids: nothing is sent before this.
    async fn preflight(&self, target: &ExportTarget) -> Result<Vec<ContactField>, SinkError> {
        for id in &target.list_ids {
            if self.client.get_list(id).await?.is_none() {
                return Err(SinkError::Config(format!(
                    "list {id} does not exist in this SendGrid account: create it, or fix list_ids of export `{}`",
                    target.export
                )));
            }
        }
        let custom: Vec<&ContactField> = target
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::Custom)
            .collect();
        if custom.is_empty() {
            return Ok(target.fields.clone());
        }
        let mut ids: BTreeMap<String, String> = self
            .client
            .field_definitions()
            .await?
            .custom_fields
            .into_iter()
            .map(|d| (d.name, d.id))
            .collect();
        let missing: Vec<&str> = custom
            .iter()
            .filter(|f| !ids.contains_key(&f.name))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() && !self.settings.create_missing_fields {
            return Err(SinkError::Config(format!(
                "custom field(s) {} do not exist in this SendGrid account: create them, or set create_missing_fields: true on export `{}`",
                missing.join(", "),
                target.export
            )));
        }
        for name in missing {
            let field_type = self
                .custom_types
                .get(name)
                .copied()
                .unwrap_or(FieldType::Text);
            let created = self.client.create_field(name, field_type).await?;
            tracing::info!(field = name, id = %created.id, "Created custom field");
            ids.insert(name.to_owned(), created.id);
        }
        Ok(target
            .fields
            .iter()
            .map(|f| match f.kind {
                FieldKind::Reserved => f.clone(),
                FieldKind::Custom => ContactField {
                    name: ids[&f.name].clone(),
                    kind: FieldKind::Custom,
                },
            })
            .collect())
    }
}

/// What one upload task did.
#[derive(Default)]
struct Uploaded {
    jobs: Vec<(String, u64)>,
    rejects: Vec<SinkReject>,
    requests: u64,
    contacts: u64,
    bytes: u64,
}

impl Sink for SendgridSink {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        mut contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let fields = self.preflight(target).await?;
            let mut encoder = BodyEncoder::with_limits(
                &target.list_ids,
                fields,
                self.settings.contacts_per_request,
                crate::encoder::MAX_BODY_BYTES,
            )
            .with_filter(self.filter.take(), &target.fields);
            let concurrency = self.settings.concurrency.max(1);
            let mut tasks: JoinSet<Result<Uploaded, SinkError>> = JoinSet::new();
            let mut done = Uploaded::default();
            let mut ready: Vec<Body> = Vec::new();
            loop {
                let batch = contacts.next().await;
                let last = batch.is_none();
                match batch {
                    Some(batch) => {
                        let batch = batch.map_err(SinkError::Upstream)?;
                        encoder.push_batch(&batch, |body| {
                            ready.push(body);
                            Ok(())
                        })?;
                    }
                    None => {
                        let encoder =
                            std::mem::replace(&mut encoder, BodyEncoder::new(&[], Vec::new()));
                        ready.extend(encoder.finish());
                    }
                }
                for body in ready.drain(..) {
                    // A body starts only while fewer than `concurrency` uploads are in
                    // flight and every finished one succeeded: after a failure nothing
                    // more is sent.
                    while tasks.len() >= concurrency {
                        let finished = tasks.join_next().await.expect("uploads in flight");
                        absorb(&mut done, finished)?;
                    }
                    while let Some(finished) = tasks.try_join_next() {
                        absorb(&mut done, finished)?;
                    }
                    let client = self.client.clone();
                    let journal = self.journal.clone();
                    let list_ids = target.list_ids.clone();
                    tasks.spawn(async move {
                        upload(&client, body, &list_ids, journal.as_deref()).await
                    });
                }
                if last {
                    break;
                }
            }
            while let Some(finished) = tasks.join_next().await {
                if let Err(e) = absorb(&mut done, finished) {
                    tasks.abort_all();
                    return Err(e);
                }
            }

            let stats = self.client.stats();
            let mut report = SinkReport {
                requests: done.requests,
                contacts: done.contacts,
                bytes: done.bytes,
                rejects: done.rejects,
                retries: stats.retries,
                rate_limited: stats.rate_limited,
                ..Default::default()
            };
            report.jobs = done
                .jobs
                .iter()
                .map(|(id, n)| JobReport {
                    job_id: id.clone(),
                    status: "accepted".into(),
                    requested: *n,
                    ..Default::default()
                })
                .collect();
            if self.settings.wait_for_import {
                tracing::debug!(jobs = report.jobs.len(), "Following the import jobs");
                let rejects =
                    follow_jobs(&self.client, &mut report.jobs, self.settings.import_timeout)
                        .await?;
                report.rejects.extend(rejects);
            }
            Ok(report)
        })
    }
}

fn absorb(
    done: &mut Uploaded,
    finished: Result<Result<Uploaded, SinkError>, tokio::task::JoinError>,
) -> Result<(), SinkError> {
    let part =
        finished.map_err(|e| SinkError::Internal(format!("an upload task stopped: {e}")))??;
    done.jobs.extend(part.jobs);
    done.rejects.extend(part.rejects);
    done.requests += part.requests;
    done.contacts += part.contacts;
    done.bytes += part.bytes;
    Ok(())
}

/// Uploads one body. A 400 (or 413) never sinks it: the contacts SendGrid names are
/// rejected and the rest resent; when it names none, the body is split in halves until
/// the bad contacts stand alone. Each accepted body is recorded in the journal before the
/// next request.
async fn upload(
    client: &Client,
    body: Body,
    list_ids: &[String],
    journal: Option<&dyn UploadJournal>,
) -> Result<Uploaded, SinkError> {
    let mut out = Uploaded::default();
    // Hashes by email, built only if a body has to be split.
    let mut hashes: Option<BTreeMap<String, u64>> = None;
    let all_keys = body.keys;
    let mut work = vec![(body.bytes, None::<BodyKeys>, body.contacts as u64)];
    while let Some((bytes, keys, n)) = work.pop() {
        out.requests += 1;
        let size = bytes.len() as u64;
        match client.upsert_contacts(Bytes::from(bytes.clone())).await {
            Ok(job_id) => {
                if let Some(journal) = journal {
                    let keys = keys.as_ref().or(all_keys.as_ref()).ok_or_else(|| {
                        SinkError::Internal("a journaled upload has no contact keys".into())
                    })?;
                    journal
                        .accepted(&job_id, list_ids, keys)
                        .map_err(|source| SinkError::Io {
                            context: "cannot record an accepted upload in the run journal".into(),
                            source,
                        })?;
                }
                tracing::debug!(job = %job_id, contacts = n, bytes = size, "Upload accepted");
                out.jobs.push((job_id, n));
                out.contacts += n;
                out.bytes += size;
            }
            Err(ClientError::Rejected { errors, .. }) => {
                let (list_ids, contacts) = split_body(&bytes)?;
                let hashes = hashes.get_or_insert_with(|| {
                    all_keys
                        .iter()
                        .flat_map(BodyKeys::iter)
                        .map(|(e, h)| (e.to_owned(), h))
                        .collect()
                });
                let keyed = |contacts: &[Value]| {
                    all_keys.as_ref().map(|_| {
                        let mut keys = BodyKeys::default();
                        for c in contacts {
                            let email = c["email"].as_str().unwrap_or_default();
                            keys.push(email, hashes.get(email).copied().unwrap_or_default());
                        }
                        keys
                    })
                };
                let named = by_index(&errors, contacts.len());
                if !named.is_empty() {
                    let mut keep = Vec::new();
                    for (i, c) in contacts.into_iter().enumerate() {
                        match named.get(&i) {
                            Some(message) => out.rejects.push(reject(&c, message)),
                            None => keep.push(c),
                        }
                    }
                    if !keep.is_empty() {
                        work.push((join_body(&list_ids, &keep), keyed(&keep), keep.len() as u64));
                    }
                } else if contacts.len() == 1 {
                    let message = errors
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.rejects.push(reject(&contacts[0], &message));
                } else {
                    let half = contacts.len() / 2;
                    for part in [&contacts[half..], &contacts[..half]] {
                        work.push((join_body(&list_ids, part), keyed(part), part.len() as u64));
                    }
                }
            }
            Err(e) => return Err(e.into()),
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

fn reject(contact: &Value, message: &str) -> SinkReject {
    SinkReject {
        email: contact["email"].as_str().unwrap_or_default().to_owned(),
        reason: "sendgrid_rejected",
        message: message.to_owned(),
        job_id: None,
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

/// Polls every job until it ends or the timeout passes; reads errored jobs' errors files
/// and returns the contacts they name. A job SendGrid does not know (404) is `failed`.
pub async fn follow_jobs(
    client: &Client,
    jobs: &mut [JobReport],
    timeout: Duration,
) -> Result<Vec<SinkReject>, SinkError> {
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(100);
    let mut rejects = Vec::new();
    loop {
        let mut pending = 0;
        for job in jobs
            .iter_mut()
            .filter(|j| matches!(j.status.as_str(), "accepted" | "pending"))
        {
            let status = match client.import_status(&job.job_id).await {
                Ok(status) => status,
                Err(ClientError::NotFound { .. }) => {
                    job.status = "failed".into();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            job.status = if status.finished() {
                status.status.clone()
            } else {
                "pending".into()
            };
            job.requested = status.results.requested_count as u64;
            job.created = status.results.created_count as u64;
            job.updated = status.results.updated_count as u64;
            job.errored = status.results.errored_count as u64;
            if !status.finished() {
                pending += 1;
                continue;
            }
            if let Some(url) = status
                .results
                .errors_url
                .as_deref()
                .filter(|_| job.errored > 0)
            {
                let text = client.fetch_errors(url).await?;
                rejects.extend(parse_errors_file(&text).into_iter().map(|mut r| {
                    r.job_id = Some(job.job_id.clone());
                    r
                }));
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            tracing::debug!(pending, "Stopped following the import jobs");
            return Ok(rejects);
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// What taking leavers off a list did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    pub list_id: String,
    /// Contacts whose membership was removed.
    pub removed: u64,
    /// Emails SendGrid does not know (nothing to remove).
    pub not_found: u64,
    pub requests: u64,
}

/// Contact ids are looked up this many emails at a time (SendGrid's limit).
pub const SEARCH_BATCH: usize = 100;
/// Memberships are removed this many contact ids per request.
pub const REMOVE_BATCH: usize = 100;

/// Takes `emails` off list `list_id`: membership only, the contacts stay in the account.
/// Emails are looked up by [`SEARCH_BATCH`], memberships removed by [`REMOVE_BATCH`].
pub async fn remove_from_list(
    client: &Client,
    list_id: &str,
    emails: &[String],
) -> Result<Removal, SinkError> {
    let mut out = Removal {
        list_id: list_id.to_owned(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for chunk in emails.chunks(SEARCH_BATCH) {
        out.requests += 1;
        for (_, id) in client.search_emails(chunk).await? {
            match id {
                Some(id) => ids.push(id),
                None => out.not_found += 1,
            }
        }
    }
    for chunk in ids.chunks(REMOVE_BATCH) {
        out.requests += 1;
        client.remove_list_contacts(list_id, chunk).await?;
        out.removed += chunk.len() as u64;
    }
    Ok(out)
}

/// An errors file: CSV with a header, the email first and the error after it.
fn parse_errors_file(text: &str) -> Vec<SinkReject> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (email, message) = line.split_once(',').unwrap_or((line, "import error"));
            SinkReject {
                email: email.trim().trim_matches('"').to_owned(),
                reason: "import_errored",
                message: message.trim().trim_matches('"').to_owned(),
                job_id: None,
            }
        })
        .collect()
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
    fn errors_file_lines_become_rejects() {
        let rejects =
            parse_errors_file("email,error\na@x.io,undeliverable\n\n\"b@y.io\",\"blocked\"\n");
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[1].email, "b@y.io");
        assert_eq!(rejects[1].message, "blocked");
        assert_eq!(rejects[0].reason, "import_errored");
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
