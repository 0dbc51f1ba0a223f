//! Arrow contact batches straight to SendGrid `PUT /v3/marketing/contacts` JSON bodies.
//!
//! Columns are written byte by byte into one reused buffer: no `serde_json::Value` and
//! no allocation per row. Null fields are omitted. Bodies are cut at
//! [`MAX_CONTACTS_PER_REQUEST`] contacts or before reaching [`MAX_BODY_BYTES`] bytes.
//!
//! With a [`ContactFilter`] the encoder also hashes each contact's mapped fields (by field
//! name, so the hash does not depend on an account's custom field ids), asks the filter
//! whether to send it, and records the email and hash of every contact it puts in a body.

use std::io::Write;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, LargeStringArray, ListArray, StringArray,
    StringViewArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::{ContactField, FieldKind, SinkError};

/// SendGrid accepts at most this many contacts in one upsert.
pub const MAX_CONTACTS_PER_REQUEST: usize = 30_000;
/// SendGrid refuses bodies of 6 MB; every body stays strictly below this many bytes.
pub const MAX_BODY_BYTES: usize = 6_000_000;

/// A finished request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub contacts: usize,
    /// The body's contacts by email and field hash, when the encoder has a filter.
    pub keys: Option<BodyKeys>,
}

/// The emails and field hashes of a body's contacts, in body order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyKeys {
    /// Emails, each followed by `\n` (a valid email holds no line break).
    emails: String,
    hashes: Vec<u64>,
}

impl BodyKeys {
    pub fn push(&mut self, email: &str, hash: u64) {
        self.emails.push_str(email);
        self.emails.push('\n');
        self.hashes.push(hash);
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// `(email, hash)` of each contact.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.emails
            .split_terminator('\n')
            .zip(self.hashes.iter().copied())
    }
}

/// Decides, contact by contact, what a run sends.
pub trait ContactFilter: Send + Sync {
    /// Sees every contact of the export with the hash of its mapped fields; returns
    /// whether to send it.
    fn admit(&mut self, email: &str, hash: u64) -> bool;
}

/// What the encoder needs to hash and filter contacts.
struct Filtering {
    filter: Box<dyn ContactFilter>,
    /// The field names hashed before each value: reserved names, `custom_fields.<name>`.
    names: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    keys: BodyKeys,
}

/// Accumulates contacts into request bodies.
pub struct BodyEncoder {
    fields: Vec<ContactField>,
    /// `"name":` for each field, encoded once.
    keys: Vec<Vec<u8>>,
    first_custom: usize,
    prefix: Vec<u8>,
    body: Vec<u8>,
    contact: Vec<u8>,
    contacts: usize,
    max_contacts: usize,
    max_bytes: usize,
    filtering: Option<Filtering>,
}

const SUFFIX: &[u8] = b"]}";

impl BodyEncoder {
    /// An encoder with SendGrid's limits.
    pub fn new(list_ids: &[String], fields: Vec<ContactField>) -> Self {
        Self::with_limits(list_ids, fields, MAX_CONTACTS_PER_REQUEST, MAX_BODY_BYTES)
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
        Self {
            fields,
            keys,
            first_custom,
            body: prefix.clone(),
            prefix,
            contact: Vec::with_capacity(512),
            contacts: 0,
            max_contacts: max_contacts.clamp(1, MAX_CONTACTS_PER_REQUEST),
            max_bytes: max_bytes.min(MAX_BODY_BYTES),
            filtering: None,
        }
    }

    /// Sends only the contacts `filter` admits (all of them without one). `named` are the
    /// export's fields by name (the encoder's own fields may hold custom field ids);
    /// hashes are taken over them.
    pub fn with_filter(
        mut self,
        filter: Option<Box<dyn ContactFilter>>,
        named: &[ContactField],
    ) -> Self {
        self.filtering = filter.map(|filter| Filtering {
            filter,
            names: named
                .iter()
                .map(|f| f.qualified_name().into_bytes())
                .collect(),
            scratch: Vec::with_capacity(512),
            keys: BodyKeys::default(),
        });
        self
    }

    /// Encodes every row of `batch`; each body that fills up is handed to `emit`.
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        mut emit: impl FnMut(Body) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        if batch.num_columns() != self.fields.len() {
            return Err(SinkError::Internal(format!(
                "contact batch has {} columns, the export maps {} fields",
                batch.num_columns(),
                self.fields.len()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(self.fields.iter().zip(&self.keys))
            .map(|(array, (field, key))| Column::new(array.as_ref(), field, key))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let mut admitted = None;
            if let Some(f) = self.filtering.as_mut() {
                let email = columns[0].text(row).unwrap_or_default();
                let hash = hash_contact(&mut f.scratch, &f.names, &columns, row);
                if !f.filter.admit(email, hash) {
                    continue;
                }
                admitted = Some((email, hash));
            }
            self.contact.clear();
            encode_contact(&mut self.contact, &columns, self.first_custom, row);
            // `,` before the contact plus the closing `]}` must keep us under the limit.
            let needed = self.contact.len() + 1 + SUFFIX.len();
            if self.prefix.len() + needed >= self.max_bytes {
                return Err(SinkError::Data(format!(
                    "one contact encodes to {} bytes, more than a SendGrid request may hold",
                    self.contact.len()
                )));
            }
            if self.contacts == self.max_contacts || self.body.len() + needed >= self.max_bytes {
                emit(take_body(
                    &mut self.body,
                    &self.prefix,
                    &mut self.contacts,
                    &mut self.filtering,
                ))?;
            }
            if self.contacts > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(&self.contact);
            self.contacts += 1;
            if let (Some(f), Some((email, hash))) = (self.filtering.as_mut(), admitted) {
                f.keys.push(email, hash);
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
                &mut self.filtering,
            )
        })
    }
}

fn take_body(
    body: &mut Vec<u8>,
    prefix: &[u8],
    contacts: &mut usize,
    filtering: &mut Option<Filtering>,
) -> Body {
    let mut bytes = std::mem::replace(body, prefix.to_vec());
    bytes.extend_from_slice(SUFFIX);
    Body {
        bytes,
        contacts: std::mem::take(contacts),
        keys: filtering.as_mut().map(|f| std::mem::take(&mut f.keys)),
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

/// A column downcast once per batch, with its `"name":` key pre-encoded.
struct Column<'a> {
    key: &'a [u8],
    values: Values<'a>,
}

enum Values<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8List(&'a ListArray, &'a StringArray),
}

impl<'a> Column<'a> {
    fn new(array: &'a dyn Array, field: &ContactField, key: &'a [u8]) -> Result<Self, SinkError> {
        let values = match array.data_type() {
            DataType::Utf8 => Values::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Values::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Values::Utf8View(array.as_string_view()),
            DataType::Int64 => Values::Int64(array.as_primitive()),
            DataType::Float64 => Values::Float64(array.as_primitive()),
            DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                let list = array.as_list::<i32>();
                Values::Utf8List(list, list.values().as_string::<i32>())
            }
            other => {
                return Err(SinkError::Internal(format!(
                    "field {} arrived as {other}, which the encoder does not write",
                    field.name
                )));
            }
        };
        Ok(Self { key, values })
    }

    /// The value of a text column.
    fn text(&self, row: usize) -> Option<&'a str> {
        match self.values {
            Values::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Values::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            Values::Utf8View(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    fn is_null(&self, row: usize) -> bool {
        match self.values {
            Values::Utf8(a) => a.is_null(row),
            Values::LargeUtf8(a) => a.is_null(row),
            Values::Utf8View(a) => a.is_null(row),
            Values::Int64(a) => a.is_null(row),
            Values::Float64(a) => a.is_null(row) || !a.value(row).is_finite(),
            Values::Utf8List(a, _) => a.is_null(row),
        }
    }

    fn write_value(&self, out: &mut Vec<u8>, row: usize) {
        match self.values {
            Values::Utf8(a) => write_json_string(out, a.value(row)),
            Values::LargeUtf8(a) => write_json_string(out, a.value(row)),
            Values::Utf8View(a) => write_json_string(out, a.value(row)),
            Values::Int64(a) => {
                let _ = write!(out, "{}", a.value(row));
            }
            Values::Float64(a) => {
                let _ = write!(out, "{}", a.value(row));
            }
            Values::Utf8List(list, strings) => {
                out.push(b'[');
                let offsets = list.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let mut first = true;
                for i in start..end {
                    if strings.is_null(i) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_json_string(out, strings.value(i));
                }
                out.push(b']');
            }
        }
    }
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters escaped,
/// everything else (including non-ASCII) as UTF-8.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, ListBuilder, StringBuilder};
    use serde_json::{Value, json};

    use super::*;

    fn fields() -> Vec<ContactField> {
        [
            ("email", FieldKind::Reserved),
            ("first_name", FieldKind::Reserved),
            ("alternate_emails", FieldKind::Reserved),
            ("ltv", FieldKind::Custom),
            ("visits", FieldKind::Custom),
        ]
        .into_iter()
        .map(|(name, kind)| ContactField {
            name: name.into(),
            kind,
        })
        .collect()
    }

    fn batch(n: usize) -> RecordBatch {
        let emails: StringArray = (0..n).map(|i| Some(format!("c{i}@example.com"))).collect();
        let names: StringArray = (0..n)
            .map(|i| (i % 2 == 0).then(|| format!("Zoë \"{i}\"\n")))
            .collect();
        let mut alternates = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            if i % 3 == 0 {
                alternates
                    .values()
                    .append_value(format!("alt{i}@example.com"));
                alternates.append(true);
            } else {
                alternates.append(false);
            }
        }
        let ltv: Float64Array = (0..n)
            .map(|i| match i % 3 {
                0 => Some(i as f64 + 0.5),
                1 => Some(f64::NAN),
                _ => None,
            })
            .collect();
        let visits: Int64Array = (0..n).map(|i| (i % 4 != 1).then_some(i as i64)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(emails),
            Arc::new(names),
            Arc::new(alternates.finish()),
            Arc::new(ltv),
            Arc::new(visits),
        ];
        RecordBatch::try_from_iter(
            ["email", "first_name", "alternate_emails", "ltv", "visits"]
                .into_iter()
                .zip(columns),
        )
        .unwrap()
    }

    fn encode(encoder: &mut BodyEncoder, batch: &RecordBatch) -> Vec<Body> {
        let mut bodies = Vec::new();
        encoder
            .push_batch(batch, |b| {
                bodies.push(b);
                Ok(())
            })
            .unwrap();
        bodies
    }

    #[test]
    fn encodes_fields_omits_nulls_and_nests_custom_fields() {
        let lists = vec!["l1".to_string()];
        let mut encoder = BodyEncoder::new(&lists, fields());
        assert!(encode(&mut encoder, &batch(4)).is_empty());
        let body = encoder.finish().unwrap();
        assert_eq!(body.contacts, 4);
        let parsed: Value = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(
            parsed,
            json!({
                "list_ids": ["l1"],
                "contacts": [
                    {"email": "c0@example.com", "first_name": "Zoë \"0\"\n",
                     "alternate_emails": ["alt0@example.com"],
                     "custom_fields": {"ltv": 0.5, "visits": 0}},
                    {"email": "c1@example.com"},
                    {"email": "c2@example.com", "first_name": "Zoë \"2\"\n",
                     "custom_fields": {"visits": 2}},
                    {"email": "c3@example.com", "alternate_emails": ["alt3@example.com"],
                     "custom_fields": {"ltv": 3.5, "visits": 3}},
                ]
            })
        );
    }

    #[test]
    fn cuts_bodies_at_the_contact_limit() {
        let mut encoder = BodyEncoder::with_limits(&[], fields(), 3, MAX_BODY_BYTES);
        let mut bodies = encode(&mut encoder, &batch(7));
        bodies.extend(encoder.finish());
        let counts: Vec<usize> = bodies.iter().map(|b| b.contacts).collect();
        assert_eq!(counts, [3, 3, 1]);
        for b in &bodies {
            let v: Value = serde_json::from_slice(&b.bytes).unwrap();
            assert_eq!(v["contacts"].as_array().unwrap().len(), b.contacts);
        }
    }

    #[test]
    fn cuts_bodies_strictly_under_the_byte_limit() {
        let limit = 400;
        let mut encoder = BodyEncoder::with_limits(&[], fields(), 30_000, limit);
        let mut bodies = encode(&mut encoder, &batch(50));
        bodies.extend(encoder.finish());
        assert!(bodies.len() > 2);
        let total: usize = bodies.iter().map(|b| b.contacts).sum();
        assert_eq!(total, 50);
        for b in &bodies {
            assert!(b.bytes.len() < limit, "{} bytes", b.bytes.len());
            serde_json::from_slice::<Value>(&b.bytes).unwrap();
        }
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        for s in [
            "plain",
            "quote\" back\\slash",
            "ctl\u{1}\u{1f}\t\r\n",
            "日本語 Ωμέγα",
            "",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn wrong_column_count_is_an_internal_error() {
        let mut encoder = BodyEncoder::new(&[], fields()[..2].to_vec());
        let err = encoder.push_batch(&batch(1), |_| Ok(())).unwrap_err();
        assert!(
            err.to_string().contains("5 columns, the export maps 2"),
            "{err}"
        );
    }
}
