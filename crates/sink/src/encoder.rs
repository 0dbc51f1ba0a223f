//! Arrow contact batches straight to SendGrid `PUT /v3/marketing/contacts` JSON bodies.
//!
//! Columns are written byte by byte into one reused buffer: no `serde_json::Value` and
//! no allocation per row. Null fields are omitted. Bodies are cut at
//! [`MAX_CONTACTS_PER_REQUEST`] contacts or before reaching [`MAX_BODY_BYTES`] bytes.
//!
//! A batch may carry one more column after the mapped fields, [`HASH_COLUMN`], written by
//! the incremental diff stage with [`contact_hashes`]; the encoder then records the email
//! and field hash of every contact it puts in a body ([`Body::keys`]), which the run
//! journal keeps. [`bodies`] drives an encoder over a whole contact stream.
//!
//! A contact that no body can hold (a custom field of megabytes) is not sent: it is
//! handed back as a [`SinkReject`] with reason [`CONTACT_TOO_LARGE`], and the contacts
//! around it go out as usual.

use std::collections::VecDeque;

use arrow::array::{AsArray, UInt64Array};
use arrow::datatypes::{DataType, UInt64Type};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::json::Column;
pub use crate::json::write_json_string;
use crate::{ContactField, ContactStream, ExportTarget, FieldKind, SinkError, SinkReject};
use pipeline_spec::{Identifier, IdentifierSet};

/// The optional last column of a contact batch: each contact's [`contact_hashes`] value.
pub const HASH_COLUMN: &str = "__pipeline_field_hash";

/// SendGrid accepts at most this many contacts in one upsert.
pub const MAX_CONTACTS_PER_REQUEST: usize = 30_000;
/// SendGrid refuses bodies of 6 MB; every body stays strictly below this many bytes.
pub const MAX_BODY_BYTES: usize = 6_000_000;

/// The reject reason of a contact that encodes to more bytes than one request may hold.
pub const CONTACT_TOO_LARGE: &str = "contact_too_large";

/// What encoding a contact stream gives, in order.
#[derive(Debug)]
pub enum Encoded {
    /// A request body, ready to send.
    Body(Body),
    /// A contact no request can hold ([`CONTACT_TOO_LARGE`]): SendGrid would refuse the
    /// whole body that carried it.
    TooLarge(SinkReject),
}

/// A finished request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub contacts: usize,
    /// The body's contacts by email and field hash, when the batches carried hashes.
    pub keys: Option<BodyKeys>,
}

/// The keys (the export's identifier), field hashes and identifier sets of a body's
/// contacts, in body order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyKeys {
    /// Keys, each followed by `\n`.
    emails: String,
    hashes: Vec<u64>,
    identifiers: Vec<IdentifierSet>,
}

impl BodyKeys {
    pub fn push(&mut self, key: &str, hash: u64, identifiers: IdentifierSet) {
        // A key is one line: SendGrid's identifiers hold no line break that matters, and
        // one would split this record.
        self.emails.extend(key.chars().filter(|c| *c != '\n'));
        self.emails.push('\n');
        self.hashes.push(hash);
        self.identifiers.push(identifiers);
    }

    /// The identifier set of each contact, in body order.
    pub fn identifiers(&self) -> &[IdentifierSet] {
        &self.identifiers
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// `(key, hash, identifiers)` of each contact.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, IdentifierSet)> + '_ {
        self.emails
            .split_terminator('\n')
            .zip(self.hashes.iter().copied())
            .zip(self.identifiers.iter().copied())
            .map(|((key, hash), identifiers)| (key, hash, identifiers))
    }
}

/// Accumulates contacts into request bodies.
pub struct BodyEncoder {
    fields: Vec<ContactField>,
    /// Each field as the export names it, for messages (a custom field is sent under the
    /// account's id for it).
    names: Vec<String>,
    /// `"name":` for each field, encoded once.
    keys: Vec<Vec<u8>>,
    first_custom: usize,
    prefix: Vec<u8>,
    body: Vec<u8>,
    contact: Vec<u8>,
    contacts: usize,
    max_contacts: usize,
    max_bytes: usize,
    /// The emails and hashes of the body being filled, when batches carry hashes.
    keys_of_body: Option<BodyKeys>,
    /// The columns that hold identifiers.
    identifier_columns: Vec<(usize, Identifier)>,
    /// Contacts too large for any body, since [`BodyEncoder::take_too_large`].
    too_large: Vec<SinkReject>,
}

const SUFFIX: &[u8] = b"]}";

impl BodyEncoder {
    /// An encoder with SendGrid's limits.
    pub fn new(list_ids: &[String], fields: Vec<ContactField>) -> Self {
        Self::with_limits(list_ids, fields, MAX_CONTACTS_PER_REQUEST, MAX_BODY_BYTES)
    }

    /// The encoder of `target`'s bodies: every sink writes the bodies a run sends.
    pub fn for_target(target: &ExportTarget) -> Self {
        Self::with_limits(
            &target.list_ids,
            target.fields.clone(),
            target.contacts_per_request,
            MAX_BODY_BYTES,
        )
    }

    /// The encoder of `target`'s bodies with its fields sent as `sent` (custom fields
    /// under the account's ids for them); messages name them as the export does.
    pub fn for_target_sent_as(target: &ExportTarget, sent: Vec<ContactField>) -> Self {
        let mut encoder = Self::for_target(&ExportTarget {
            fields: sent,
            ..target.clone()
        });
        encoder.names = target
            .fields
            .iter()
            .map(ContactField::qualified_name)
            .collect();
        encoder
    }

    /// An encoder with smaller limits (tests).
    pub fn with_limits(
        list_ids: &[String],
        fields: Vec<ContactField>,
        max_contacts: usize,
        max_bytes: usize,
    ) -> Self {
        let mut prefix = Vec::with_capacity(64 + 40 * list_ids.len());
        prefix.extend_from_slice(b"{\"list_ids\":[");
        for (i, id) in list_ids.iter().enumerate() {
            if i > 0 {
                prefix.push(b',');
            }
            write_json_string(&mut prefix, id);
        }
        prefix.extend_from_slice(b"],\"contacts\":[");
        let keys = fields
            .iter()
            .map(|f| {
                let mut key = Vec::with_capacity(f.name.len() + 3);
                write_json_string(&mut key, &f.name);
                key.push(b':');
                key
            })
            .collect();
        // Reserved fields are written first, then the custom ones inside `custom_fields`.
        let first_custom = fields
            .iter()
            .position(|f| f.kind == FieldKind::Custom)
            .unwrap_or(fields.len());
        debug_assert!(
            fields[first_custom..]
                .iter()
                .all(|f| f.kind == FieldKind::Custom)
        );
        let identifier_columns = identifier_columns(&fields);
        Self {
            identifier_columns,
            names: fields.iter().map(ContactField::qualified_name).collect(),
            fields,
            keys,
            first_custom,
            body: prefix.clone(),
            prefix,
            contact: Vec::with_capacity(512),
            contacts: 0,
            max_contacts: max_contacts.clamp(1, MAX_CONTACTS_PER_REQUEST),
            max_bytes: max_bytes.min(MAX_BODY_BYTES),
            keys_of_body: None,
            too_large: Vec::new(),
        }
    }

    /// The contacts found too large for any body since the last call, as rejects.
    pub fn take_too_large(&mut self) -> Vec<SinkReject> {
        std::mem::take(&mut self.too_large)
    }

    /// Encodes every row of `batch`; each body that fills up is handed to `emit`, and
    /// each contact too large for any body is kept for [`Self::take_too_large`].
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        mut emit: impl FnMut(Body) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let hashes = hash_column(batch, self.fields.len())?;
        if hashes.is_some() && self.keys_of_body.is_none() {
            self.keys_of_body = Some(BodyKeys::default());
        }
        let columns = columns(batch, &self.fields, &self.keys, hashes.is_some())?;
        for row in 0..batch.num_rows() {
            self.contact.clear();
            encode_contact(&mut self.contact, &columns, self.first_custom, row);
            // `,` before the contact plus the closing `]}` must keep us under the limit.
            let needed = self.contact.len() + 1 + SUFFIX.len();
            if self.prefix.len() + needed >= self.max_bytes {
                // The most a contact may take: with its `,` the body stays strictly under
                // the limit.
                let limit = self
                    .max_bytes
                    .saturating_sub(self.prefix.len() + SUFFIX.len() + 2);
                self.too_large.push(too_large(
                    &self.names,
                    &columns,
                    row,
                    self.contact.len(),
                    limit,
                    hashes.map(|h| h.value(row)),
                ));
                continue;
            }
            if self.contacts == self.max_contacts || self.body.len() + needed >= self.max_bytes {
                emit(take_body(
                    &mut self.body,
                    &self.prefix,
                    &mut self.contacts,
                    &mut self.keys_of_body,
                ))?;
            }
            if self.contacts > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(&self.contact);
            self.contacts += 1;
            if let (Some(keys), Some(hashes)) = (self.keys_of_body.as_mut(), hashes) {
                let identifiers = self
                    .identifier_columns
                    .iter()
                    .filter(|(at, _)| !columns[*at].is_null(row))
                    .map(|(_, identifier)| *identifier)
                    .collect();
                keys.push(
                    columns[0].text(row).unwrap_or_default(),
                    hashes.value(row),
                    identifiers,
                );
            }
        }
        Ok(())
    }

    /// The last, partly filled body, if it holds any contact.
    pub fn finish(mut self) -> Option<Body> {
        (self.contacts > 0).then(|| {
            take_body(
                &mut self.body,
                &self.prefix,
                &mut self.contacts,
                &mut self.keys_of_body,
            )
        })
    }
}

/// The reject of the contact at `row`, which encodes to `bytes`, over `limit`: it names
/// the field that takes the most room, so the user knows what to shorten.
fn too_large(
    names: &[String],
    columns: &[Column<'_>],
    row: usize,
    bytes: usize,
    limit: usize,
    hash: Option<u64>,
) -> SinkReject {
    let mut scratch = Vec::new();
    let largest = names
        .iter()
        .zip(columns)
        .filter(|(_, column)| !column.is_null(row))
        .map(|(name, column)| {
            scratch.clear();
            column.write_value(&mut scratch, row);
            (scratch.len(), name)
        })
        .max_by_key(|(len, _)| *len);
    let largest = largest.map_or(String::new(), |(len, name)| {
        format!("; its largest field, `{name}`, takes {len}")
    });
    SinkReject {
        email: columns[0].text(row).unwrap_or_default().to_owned(),
        reason: CONTACT_TOO_LARGE,
        message: format!(
            "the contact encodes to {bytes} bytes, but a SendGrid request holds at most \
             {limit} bytes of contacts beside its list ids{largest}"
        ),
        job_id: None,
        hash,
    }
}

fn take_body(
    body: &mut Vec<u8>,
    prefix: &[u8],
    contacts: &mut usize,
    keys: &mut Option<BodyKeys>,
) -> Body {
    let mut bytes = std::mem::replace(body, prefix.to_vec());
    bytes.extend_from_slice(SUFFIX);
    Body {
        bytes,
        contacts: std::mem::take(contacts),
        keys: keys.as_mut().map(std::mem::take),
    }
}

/// The mapped columns of `batch`, downcast once, checked against the export's fields (and
/// the [`HASH_COLUMN`] after them when `hashed`).
fn columns<'a>(
    batch: &'a RecordBatch,
    fields: &[ContactField],
    keys: &'a [Vec<u8>],
    hashed: bool,
) -> Result<Vec<Column<'a>>, SinkError> {
    if batch.num_columns() != fields.len() + usize::from(hashed) {
        return Err(SinkError::Internal(format!(
            "contact batch has {} columns, the export maps {} fields",
            batch.num_columns(),
            fields.len()
        )));
    }
    batch
        .columns()
        .iter()
        .zip(fields.iter().zip(keys))
        .map(|(array, (field, key))| Column::new(array.as_ref(), field, key))
        .collect()
}

/// Where the identifiers are among `fields`.
pub fn identifier_columns(fields: &[ContactField]) -> Vec<(usize, Identifier)> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == FieldKind::Reserved)
        .filter_map(|(at, f)| Some((at, Identifier::named(&f.name)?)))
        .collect()
}

/// The identifier set of each contact of `batch`, whose columns fill `fields`.
pub fn contact_identifiers(batch: &RecordBatch, fields: &[ContactField]) -> Vec<IdentifierSet> {
    let columns: Vec<(&dyn arrow::array::Array, Identifier)> = identifier_columns(fields)
        .into_iter()
        .filter_map(|(at, identifier)| Some((batch.columns().get(at)?.as_ref(), identifier)))
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            columns
                .iter()
                .filter(|(column, _)| column.is_valid(row))
                .map(|(_, identifier)| *identifier)
                .collect()
        })
        .collect()
}

/// The batch's [`HASH_COLUMN`], when it has one after its `fields` mapped columns.
fn hash_column(batch: &RecordBatch, fields: usize) -> Result<Option<&UInt64Array>, SinkError> {
    match batch.schema().index_of(HASH_COLUMN) {
        Ok(i) if i == fields => batch
            .column(i)
            .as_primitive_opt::<UInt64Type>()
            .map(Some)
            .ok_or_else(|| SinkError::Internal(format!("{HASH_COLUMN} is not UInt64"))),
        Ok(i) => Err(SinkError::Internal(format!(
            "{HASH_COLUMN} is column {i}, not the one after the {fields} mapped fields"
        ))),
        Err(_) => Ok(None),
    }
}

/// The field hash of each contact of `batch`, whose columns fill `fields`: see
/// [`hash_contact`]. `fields` are named as the user names them, never by an account's
/// custom field ids, so the hash is the same for every account.
pub fn contact_hashes(
    batch: &RecordBatch,
    fields: &[ContactField],
) -> Result<UInt64Array, SinkError> {
    let names: Vec<Vec<u8>> = fields
        .iter()
        .map(|f| f.qualified_name().into_bytes())
        .collect();
    let columns = columns(batch, fields, &names, false)?;
    let mut scratch = Vec::with_capacity(512);
    Ok((0..batch.num_rows())
        .map(|row| hash_contact(&mut scratch, &names, &columns, row))
        .collect())
}

/// The keys of `batch`'s contacts: the export's identifier, column 0 (a null reads as
/// empty).
pub fn keys(batch: &RecordBatch) -> Result<Vec<&str>, SinkError> {
    texts(batch, 0)
}

/// Column `at` of `batch` as text (a null reads as empty).
pub fn texts(batch: &RecordBatch, at: usize) -> Result<Vec<&str>, SinkError> {
    let column = batch
        .columns()
        .get(at)
        .ok_or_else(|| SinkError::Internal(format!("a contact batch without column {at}")))?;
    fn text(v: Option<&str>) -> &str {
        v.unwrap_or_default()
    }
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().map(text).collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().map(text).collect(),
        DataType::Utf8View => column.as_string_view().iter().map(text).collect(),
        other => {
            return Err(SinkError::Internal(format!(
                "contact column {at} arrived as {other}, not text"
            )));
        }
    })
}

/// The request bodies of a contact stream, in order: what every sink sends or writes.
pub fn bodies(
    contacts: ContactStream,
    encoder: BodyEncoder,
) -> BoxStream<'static, Result<Encoded, SinkError>> {
    struct State {
        contacts: ContactStream,
        /// `None` once the stream ended or failed.
        encoder: Option<BodyEncoder>,
        ready: VecDeque<Encoded>,
    }
    let state = State {
        contacts,
        encoder: Some(encoder),
        ready: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(encoded) = state.ready.pop_front() {
                return Some((Ok(encoded), state));
            }
            let encoder = state.encoder.as_mut()?;
            let pushed = match state.contacts.next().await {
                Some(Ok(batch)) => {
                    let pushed = encoder.push_batch(&batch, |body| {
                        state.ready.push_back(Encoded::Body(body));
                        Ok(())
                    });
                    let too_large = encoder.take_too_large();
                    state
                        .ready
                        .extend(too_large.into_iter().map(Encoded::TooLarge));
                    pushed
                }
                Some(Err(e)) => Err(SinkError::Upstream(e)),
                None => {
                    let last = state.encoder.take().and_then(BodyEncoder::finish);
                    state.ready.extend(last.map(Encoded::Body));
                    continue;
                }
            };
            if let Err(e) = pushed {
                state.encoder = None;
                return Some((Err(e), state));
            }
        }
    })
    .boxed()
}

/// The next body of a [`bodies`] stream; the contacts found too large for any body on
/// the way go to `rejects`.
pub async fn next_body(
    bodies: &mut BoxStream<'static, Result<Encoded, SinkError>>,
    rejects: &mut Vec<SinkReject>,
) -> Option<Result<Body, SinkError>> {
    loop {
        match bodies.next().await? {
            Ok(Encoded::Body(body)) => return Some(Ok(body)),
            Ok(Encoded::TooLarge(reject)) => rejects.push(reject),
            Err(e) => return Some(Err(e)),
        }
    }
}

/// A stable 64-bit hash of a contact's non-null fields: each field's name and its value
/// as the body writes it. Stable across runs, versions and accounts.
fn hash_contact(
    scratch: &mut Vec<u8>,
    names: &[Vec<u8>],
    columns: &[Column<'_>],
    row: usize,
) -> u64 {
    scratch.clear();
    for (name, column) in names.iter().zip(columns) {
        if column.is_null(row) {
            continue;
        }
        scratch.extend_from_slice(name);
        scratch.push(0x1f);
        column.write_value(scratch, row);
        scratch.push(0x1e);
    }
    xxhash_rust::xxh3::xxh3_64(scratch)
}

fn encode_contact(out: &mut Vec<u8>, columns: &[Column<'_>], first_custom: usize, row: usize) {
    out.push(b'{');
    let mut first = true;
    for column in &columns[..first_custom] {
        if column.is_null(row) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(column.key);
        column.write_value(out, row);
    }
    let mut custom_open = false;
    for column in &columns[first_custom..] {
        if column.is_null(row) {
            continue;
        }
        if !custom_open {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"custom_fields\":{");
            custom_open = true;
        } else {
            out.push(b',');
        }
        out.extend_from_slice(column.key);
        column.write_value(out, row);
    }
    if custom_open {
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests;
