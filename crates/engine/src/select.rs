//! Choosing an export's contacts from its unordered members, in bounded memory.
//!
//! The export's order is total: `order_by`, then the segment's position, then the mapped
//! values (then the email as written, the alternate emails and the truncated flag, so that
//! rows it cannot tell apart are identical in everything sent). An email's contact is its
//! first row in that order, and the contacts kept are the first `max_profiles` emails.
//!
//! Rows arrive in any order. Each row's order is encoded with arrow's row format in two
//! parts: the *prefix* (`order_by` and segment) and the *rest*. Per email the selector keeps
//! the best prefix seen (it decides which segment supplied the contact); only the candidate
//! contacts, at most `max_profiles` of them, are kept whole. A row that cannot enter the
//! candidates is never encoded past its prefix.
//!
//! Memory per candidate is fixed (the first bytes of its key and where the rest is); the
//! whole keys stay in memory only up to [`KEYS_IN_MEMORY`], then go to a temporary file that
//! only the owner can read, that has no name in its folder, and that disappears with the
//! process. A run's memory then grows by about 40 bytes per distinct email and 36 per
//! contact kept, whatever the contacts' fields.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::EngineError;
use crate::plan::meta::{RAW_EMAIL, SEGMENT as SEG, TRUNCATED};
use crate::plan::{ExportQuery, META_COLUMNS};

/// Where the query's columns go in the two row encodings.
pub(crate) struct Encoders {
    prefix: RowConverter,
    prefix_columns: Vec<usize>,
    /// The type the segment index is encoded as.
    segment_type: DataType,
    rest: RowConverter,
    rest_columns: Vec<usize>,
    /// For each mapped field, its position among the rest columns.
    field_slots: Vec<usize>,
    truncated_slot: usize,
    /// The SendGrid names of the mapped fields.
    field_names: Vec<String>,
}

impl Encoders {
    /// The encodings for the query's `schema`, or why a column cannot be ordered.
    pub(crate) fn new(query: &ExportQuery, schema: &Schema) -> Result<Self, String> {
        let fields = query.fields.len();
        let ascending = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let sort_field = |column: usize, options: SortOptions| {
            SortField::new_with_options(schema.field(column).data_type().clone(), options)
        };
        let mut prefix_columns = Vec::new();
        let mut prefix_fields = Vec::new();
        for (j, descending) in query.order_descending.iter().enumerate() {
            let column = META_COLUMNS + fields + j;
            prefix_columns.push(column);
            prefix_fields.push(sort_field(
                column,
                SortOptions {
                    descending: *descending,
                    nulls_first: false,
                },
            ));
        }
        // The segment's index, as narrow as the export's segments allow.
        prefix_columns.push(SEG);
        let segment_type = if query.segments.len() <= usize::from(u16::MAX) {
            DataType::UInt16
        } else {
            DataType::UInt32
        };
        prefix_fields.push(SortField::new_with_options(segment_type.clone(), ascending));

        let is_list = |column: usize| {
            matches!(
                schema.field(column).data_type(),
                DataType::List(_) | DataType::LargeList(_)
            )
        };
        let field_columns = (0..fields).map(|i| META_COLUMNS + i);
        let mut rest_columns: Vec<usize> = field_columns.clone().filter(|c| !is_list(*c)).collect();
        rest_columns.push(RAW_EMAIL);
        rest_columns.extend(field_columns.clone().filter(|c| is_list(*c)));
        rest_columns.push(TRUNCATED);
        let rest_fields = rest_columns
            .iter()
            .map(|c| sort_field(*c, ascending))
            .collect();
        let slot = |column: usize| {
            rest_columns
                .iter()
                .position(|c| *c == column)
                .expect("every field is a rest column")
        };
        let field_slots = field_columns.map(slot).collect();
        let truncated_slot = slot(TRUNCATED);

        let converter = |fields: Vec<SortField>| {
            RowConverter::new(fields)
                .map_err(|e| format!("cannot order by the export's order_by and fields: {e}"))
        };
        Ok(Self {
            prefix: converter(prefix_fields)?,
            prefix_columns,
            segment_type,
            rest: converter(rest_fields)?,
            rest_columns,
            field_slots,
            truncated_slot,
            field_names: query.fields.iter().map(|f| f.qualified_name()).collect(),
        })
    }

    /// The bytes that end each prefix with the segment's index, big-endian: arrow's row
    /// format writes an unsigned integer that way after its validity byte.
    pub(crate) fn segment_bytes(&self) -> usize {
        self.segment_type
            .primitive_width()
            .expect("an integer type")
    }

    /// The prefix of every row of `batch`.
    pub(crate) fn prefixes(&self, batch: &RecordBatch) -> Result<Rows, ArrowError> {
        let columns = self
            .prefix_columns
            .iter()
            .map(|c| match *c {
                SEG => cast(batch.column(SEG), &self.segment_type),
                c => Ok(batch.column(c).clone()),
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        self.prefix.convert_columns(&columns)
    }

    /// The rest of rows `rows` of `batch`, in that order.
    pub(crate) fn rests(&self, batch: &RecordBatch, rows: &[u32]) -> Result<Rows, ArrowError> {
        let indices = (rows.len() < batch.num_rows()).then(|| UInt32Array::from(rows.to_vec()));
        let columns = self
            .rest_columns
            .iter()
            .map(|c| match &indices {
                Some(indices) => take(batch.column(*c).as_ref(), indices, None),
                None => Ok(batch.column(*c).clone()),
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        self.rest.convert_columns(&columns)
    }
}

/// Marks an email without a candidate.
const NO_CANDIDATE: u32 = u32::MAX;
/// Prefixes are addressed by a 40-bit arena offset and a 24-bit length packed in a u64.
const PREFIX_LEN_BITS: u32 = 24;

/// What the selector knows of one email, in 12 bytes (24 with its key in the map). The
/// segment that supplies the contact is the one its best prefix ends with.
struct Email {
    /// Where the best prefix seen is in the arena (offset and length, packed, in halves).
    prefix: [u32; 2],
    /// The email's candidate slot, if it is among the first `limit`.
    candidate: u32,
}

impl Email {
    fn prefix_range(&self) -> Range<usize> {
        let packed = u64::from(self.prefix[0]) << 32 | u64::from(self.prefix[1]);
        let at = (packed >> PREFIX_LEN_BITS) as usize;
        at..at + (packed & ((1 << PREFIX_LEN_BITS) - 1)) as usize
    }

    fn set_prefix(&mut self, packed: u64) {
        self.prefix = [(packed >> 32) as u32, packed as u32];
    }
}

/// An email's hash, 96 of its 128 bits: collisions stay negligible (about one in 10^16
/// runs for ten million distinct emails) and each email costs 4 bytes less.
#[derive(Clone, Copy, PartialEq, Eq)]
struct EmailKey([u32; 3]);

impl EmailKey {
    /// The low 96 bits; the map hashes the low 64, and the shard is picked by the top 4.
    fn of(hash: u128) -> Self {
        Self([(hash >> 64) as u32, (hash >> 32) as u32, hash as u32])
    }
}

impl std::hash::Hash for EmailKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[1]) << 32 | u64::from(self.0[2]));
    }
}

/// The emails are 128-bit hashes already; hashing them again would only cost time.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type EmailMap = HashMap<EmailKey, Email, BuildHasherDefault<Prehashed>>;

/// The email map in shards picked by hash bits the map itself does not use, so that
/// growing one shard never holds a second copy of the whole table.
struct Emails {
    shards: Vec<EmailMap>,
}

impl Emails {
    const SHARD_BITS: u32 = 4;

    fn new() -> Self {
        Self {
            shards: (0..1 << Self::SHARD_BITS)
                .map(|_| EmailMap::default())
                .collect(),
        }
    }

    fn shard(&mut self, email: EmailKey) -> &mut EmailMap {
        &mut self.shards[(email.0[0] >> (32 - Self::SHARD_BITS)) as usize]
    }

    fn get_mut(&mut self, email: u128) -> Option<&mut Email> {
        let key = EmailKey::of(email);
        self.shard(key).get_mut(&key)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Email> {
        self.shards.iter().flat_map(HashMap::values)
    }
}

/// Key bytes each candidate keeps in memory. Two keys almost always differ within them, so
/// whole keys are read back only on ties.
const HEAD: usize = 16;
/// Candidates' keys stay in memory up to this size; past it they go to a temporary file, so
/// a selection's memory does not grow with the keys of the contacts it keeps.
pub(crate) const KEYS_IN_MEMORY: usize = 256 << 10;
/// Candidates whose room is reserved up front.
const RESERVED_SLOTS: u64 = 1 << 20;
/// Once keys go to the file, they are written in chunks of this size.
const WRITE_CHUNK: usize = 64 << 10;
/// Keys read back for output: file reads closer than this are joined into one read...
const READ_GAP: u64 = 4 << 10;
/// ...of at most this size.
const READ_SPAN: u64 = 1 << 20;

/// A candidate contact: its place in the heap and its key (the first bytes here; the
/// whole key, with the email, in the [`KeyStore`]).
struct Slot {
    /// Where the key's record is in the store.
    at: u64,
    /// The key's length.
    len: u32,
    heap_at: u32,
    /// The key's first bytes, zero after its end.
    head: [u8; HEAD],
}

impl Slot {
    fn head(&self) -> &[u8] {
        &self.head[..(self.len as usize).min(HEAD)]
    }

    /// True when the head is the whole key.
    fn whole(&self) -> bool {
        self.len as usize <= HEAD
    }
}

/// Bytes before a record's key: the prefix's length (u32) and the email (u128).
const RECORD_HEADER: usize = 20;

/// The candidates' keys as records (the prefix's length, the email, then the key), appended and never
/// rewritten: a replaced key is left behind. They stay in memory until they pass a size,
/// then go to an unnamed temporary file that only its owner can read and that is gone when
/// closed, however the run ends.
struct KeyStore {
    /// The bytes from `flushed` on: all of them until the file exists, then unwritten ones.
    memory: Vec<u8>,
    file: Option<File>,
    /// Bytes in the file.
    flushed: u64,
    memory_limit: usize,
    /// Keys read back from the file for a comparison.
    scratch: RefCell<[Vec<u8>; 2]>,
}

impl KeyStore {
    fn new(memory_limit: usize) -> Self {
        Self {
            memory: Vec::new(),
            file: None,
            flushed: 0,
            memory_limit,
            scratch: RefCell::new([Vec::new(), Vec::new()]),
        }
    }

    /// Appends `email`'s `key`, whose first `prefix_len` bytes are its prefix; returns where.
    fn append(&mut self, email: u128, prefix_len: usize, key: &[u8]) -> io::Result<u64> {
        let at = self.flushed + self.memory.len() as u64;
        self.memory
            .extend_from_slice(&(prefix_len as u32).to_le_bytes());
        self.memory.extend_from_slice(&email.to_le_bytes());
        self.memory.extend_from_slice(key);
        let limit = match self.file {
            Some(_) => WRITE_CHUNK,
            None => self.memory_limit,
        };
        if self.memory.len() > limit {
            self.flush()?;
        }
        Ok(at)
    }

    fn flush(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile()?),
        };
        write_at(file, &self.memory, self.flushed)?;
        self.flushed += self.memory.len() as u64;
        if self.memory.capacity() > 2 * WRITE_CHUNK {
            self.memory = Vec::with_capacity(2 * WRITE_CHUNK);
        }
        self.memory.clear();
        Ok(())
    }

    /// The `n` bytes at `at` when they are not yet in the file.
    fn in_memory(&self, at: u64, n: usize) -> Option<&[u8]> {
        let start = usize::try_from(at.checked_sub(self.flushed)?).ok()?;
        Some(&self.memory[start..start + n])
    }

    /// The `n` bytes at `at`, read into `scratch` when they are in the file.
    fn bytes<'a>(&'a self, at: u64, n: usize, scratch: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        if let Some(bytes) = self.in_memory(at, n) {
            return Ok(bytes);
        }
        scratch.resize(n, 0);
        read_at(self.file()?, scratch, at)?;
        Ok(scratch)
    }

    /// The key of `slot`.
    fn key<'a>(&'a self, slot: &Slot, scratch: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        let record = self.bytes(slot.at, RECORD_HEADER + slot.len as usize, scratch)?;
        Ok(&record[RECORD_HEADER..])
    }

    /// The email of `slot`, read alone from its record's header.
    fn email(&self, slot: &Slot) -> io::Result<u128> {
        let mut scratch = self.scratch.borrow_mut();
        let header = self.bytes(slot.at, RECORD_HEADER, &mut scratch[0])?;
        Ok(u128::from_le_bytes(
            header[4..RECORD_HEADER].try_into().expect("16 bytes"),
        ))
    }

    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("a key before the file's end, but no file"))
    }

    /// Orders two candidates' keys.
    fn cmp(&self, a: &Slot, b: &Slot) -> io::Result<Ordering> {
        match a.head().cmp(b.head()) {
            Ordering::Equal if !a.whole() && !b.whole() => {
                let mut scratch = self.scratch.borrow_mut();
                let [first, second] = &mut *scratch;
                Ok(self.key(a, first)?.cmp(self.key(b, second)?))
            }
            // Equal heads, one of them a whole key: the shorter key is the smaller.
            Ordering::Equal => Ok(a.len.cmp(&b.len)),
            other => Ok(other),
        }
    }

    /// Orders `key` against a candidate's key.
    fn cmp_key(&self, key: &[u8], slot: &Slot) -> io::Result<Ordering> {
        match key[..key.len().min(HEAD)].cmp(slot.head()) {
            Ordering::Equal if key.len() > HEAD && !slot.whole() => {
                let mut scratch = self.scratch.borrow_mut();
                Ok(key.cmp(self.key(slot, &mut scratch[0])?))
            }
            Ordering::Equal => Ok(key.len().cmp(&(slot.len as usize))),
            other => Ok(other),
        }
    }

    /// True when `prefix` orders after the prefix of `slot`'s key. Prefixes end where their
    /// encoding says, so comparing over the shorter length is comparing the prefixes.
    fn prefix_after(&self, prefix: &[u8], slot: &Slot) -> io::Result<bool> {
        let n = prefix.len().min(slot.len as usize);
        if n <= HEAD {
            return Ok(prefix > &slot.head[..n]);
        }
        let mut scratch = self.scratch.borrow_mut();
        Ok(prefix > &self.key(slot, &mut scratch[0])?[..n])
    }

    /// The records at `wanted` (where, key length), end to end in that order, with each one's
    /// range. File reads go in file order, and neighbours are read together.
    fn read_many(&self, wanted: &[(u64, u32)]) -> io::Result<(Vec<u8>, Vec<Range<usize>>)> {
        let mut ranges = Vec::with_capacity(wanted.len());
        let mut total = 0;
        for (_, len) in wanted {
            let n = RECORD_HEADER + *len as usize;
            ranges.push(total..total + n);
            total += n;
        }
        let mut bytes = vec![0; total];
        let mut in_file = Vec::new();
        for (i, (at, _)) in wanted.iter().enumerate() {
            match self.in_memory(*at, ranges[i].len()) {
                Some(record) => bytes[ranges[i].clone()].copy_from_slice(record),
                None => in_file.push(i),
            }
        }
        in_file.sort_unstable_by_key(|i| wanted[*i].0);
        let end_of = |i: usize| wanted[i].0 + ranges[i].len() as u64;
        let mut span = Vec::new();
        let mut first = 0;
        while first < in_file.len() {
            let start = wanted[in_file[first]].0;
            let mut end = end_of(in_file[first]);
            let mut last = first + 1;
            while let Some(&i) = in_file.get(last) {
                if wanted[i].0 > end + READ_GAP || end_of(i) - start > READ_SPAN {
                    break;
                }
                end = end.max(end_of(i));
                last += 1;
            }
            span.resize((end - start) as usize, 0);
            read_at(self.file()?, &mut span, start)?;
            for &i in &in_file[first..last] {
                let from = (wanted[i].0 - start) as usize;
                bytes[ranges[i].clone()].copy_from_slice(&span[from..from + ranges[i].len()]);
            }
            first = last;
        }
        Ok((bytes, ranges))
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(at))?;
    file.write_all(buf)
}

/// Why a selection stopped.
#[derive(Debug)]
pub(crate) enum SelectError {
    /// The export's `order_by` values cannot be ranked.
    Order(String),
    /// The temporary file of candidates' keys could not be written or read.
    Spill(io::Error),
    /// The kept contacts could not be decoded.
    Arrow(ArrowError),
}

impl From<io::Error> for SelectError {
    fn from(e: io::Error) -> Self {
        Self::Spill(e)
    }
}

impl SelectError {
    pub(crate) fn into_engine(self, export: &str) -> EngineError {
        match self {
            Self::Order(message) => EngineError::Execution {
                export: export.to_owned(),
                message,
            },
            Self::Spill(source) => EngineError::Io {
                context: format!(
                    "export `{export}`: cannot use a temporary file for the chosen contacts in {} \
                     (set TMPDIR to a folder with free space)",
                    std::env::temp_dir().display()
                ),
                source,
            },
            Self::Arrow(e) => EngineError::Internal(format!(
                "decoding the chosen contacts of export `{export}`: {e}"
            )),
        }
    }
}

/// The first row of each email, and the first `limit` emails, by the export's order.
pub(crate) struct Selector {
    limit: usize,
    /// The bytes that end each prefix and hold its segment's index.
    segment_bytes: usize,
    emails: Emails,
    arena: Vec<u8>,
    slots: Vec<Slot>,
    keys: KeyStore,
    /// Slot numbers in a binary heap, worst candidate on top; each slot knows its place.
    heap: Vec<u32>,
    /// The offered row's key, joined.
    incoming: Vec<u8>,
}

impl Selector {
    /// A selector of at most `limit` contacts whose keys stay in memory up to
    /// `keys_in_memory` bytes. Prefixes end with the segment's index in `segment_bytes`
    /// big-endian bytes.
    pub(crate) fn new(limit: u64, keys_in_memory: usize, segment_bytes: usize) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            segment_bytes,
            emails: Emails::new(),
            arena: Vec::new(),
            // Reserved whole up to a point: pages are only used once written, and the
            // vectors never move while they grow.
            slots: Vec::with_capacity(limit.min(RESERVED_SLOTS) as usize),
            keys: KeyStore::new(keys_in_memory),
            heap: Vec::with_capacity(limit.min(RESERVED_SLOTS) as usize),
            incoming: Vec::new(),
        }
    }

    /// Records a valid row's email and prefix. True when the row may still become a
    /// contact, so its rest must be encoded and offered.
    pub(crate) fn note(&mut self, email: u128, prefix: &[u8]) -> Result<bool, SelectError> {
        let packed = |at: usize| -> Result<u64, SelectError> {
            let (at, len) = (at as u64, prefix.len() as u64);
            if len >> PREFIX_LEN_BITS != 0 || at >> (64 - PREFIX_LEN_BITS) != 0 {
                return Err(SelectError::Order(
                    "the order_by values are too long to rank (over 16 MiB in one row, \
                     or 1 TiB in all); order by shorter values"
                        .into(),
                ));
            }
            Ok(at << PREFIX_LEN_BITS | len)
        };
        let end = self.arena.len();
        match self.emails.get_mut(email) {
            Some(e) => {
                let range = e.prefix_range();
                let best = &mut self.arena[range.clone()];
                match (*prefix).cmp(best) {
                    Ordering::Less if range.len() == prefix.len() => {
                        best.copy_from_slice(prefix);
                    }
                    Ordering::Less => {
                        e.set_prefix(packed(end)?);
                        self.arena.extend_from_slice(prefix);
                    }
                    Ordering::Equal => {}
                    Ordering::Greater => return Ok(false),
                }
            }
            None => {
                let mut entry = Email {
                    prefix: [0; 2],
                    candidate: NO_CANDIDATE,
                };
                entry.set_prefix(packed(end)?);
                let key = EmailKey::of(email);
                self.emails.shard(key).insert(key, entry);
                self.arena.extend_from_slice(prefix);
            }
        }
        Ok(self.limit > 0 && !self.beyond_limit(prefix)?)
    }

    /// True when `prefix` orders after the worst of `limit` candidates, so no row with it
    /// can enter them.
    fn beyond_limit(&self, prefix: &[u8]) -> io::Result<bool> {
        if self.heap.len() < self.limit {
            return Ok(false);
        }
        self.keys
            .prefix_after(prefix, &self.slots[self.heap[0] as usize])
    }

    /// Offers a noted row, whole, as its email's contact.
    pub(crate) fn offer(
        &mut self,
        email: u128,
        prefix: &[u8],
        rest: &[u8],
    ) -> Result<(), SelectError> {
        let mut key = std::mem::take(&mut self.incoming);
        key.clear();
        key.extend_from_slice(prefix);
        key.extend_from_slice(rest);
        let offered = self.offer_key(email, prefix.len(), &key);
        self.incoming = key;
        offered
    }

    fn offer_key(&mut self, email: u128, prefix_len: usize, key: &[u8]) -> Result<(), SelectError> {
        let len = u32::try_from(key.len()).map_err(|_| {
            SelectError::Order("a contact's fields and order_by values are over 4 GiB".into())
        })?;
        let Some(entry) = self.emails.get_mut(email) else {
            return Ok(());
        };
        let slot = match entry.candidate {
            NO_CANDIDATE if self.heap.len() < self.limit => {
                let slot = self.slots.len() as u32;
                entry.candidate = slot;
                self.heap.push(slot);
                self.slots.push(Slot {
                    at: 0,
                    len: 0,
                    heap_at: self.heap.len() as u32 - 1,
                    head: [0; HEAD],
                });
                slot
            }
            NO_CANDIDATE => {
                // Full: it must beat the worst candidate, whose slot it then takes.
                let worst = self.heap[0];
                if self.keys.cmp_key(key, &self.slots[worst as usize])? != Ordering::Less {
                    return Ok(());
                }
                entry.candidate = worst;
                let evicted = self.keys.email(&self.slots[worst as usize])?;
                if let Some(e) = self.emails.get_mut(evicted) {
                    e.candidate = NO_CANDIDATE;
                }
                worst
            }
            current => {
                if self.keys.cmp_key(key, &self.slots[current as usize])? != Ordering::Less {
                    return Ok(());
                }
                current
            }
        };
        let at = self.keys.append(email, prefix_len, key)?;
        let s = &mut self.slots[slot as usize];
        s.at = at;
        s.len = len;
        let head = key.len().min(HEAD);
        s.head = [0; HEAD];
        s.head[..head].copy_from_slice(&key[..head]);
        // A new slot sits at the bottom; a taken or improved one can only move down.
        let at = s.heap_at as usize;
        self.sift_up(at)?;
        self.sift_down(at)?;
        Ok(())
    }

    /// Orders the candidates at heap places `a` and `b`.
    fn cmp_at(&self, a: usize, b: usize) -> io::Result<Ordering> {
        self.keys.cmp(
            &self.slots[self.heap[a] as usize],
            &self.slots[self.heap[b] as usize],
        )
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a] as usize].heap_at = a as u32;
        self.slots[self.heap[b] as usize].heap_at = b as u32;
    }

    /// Moves the entry at `at` towards the top while it is worse than its parent.
    fn sift_up(&mut self, mut at: usize) -> io::Result<()> {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.cmp_at(at, parent)? != Ordering::Greater {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
        Ok(())
    }

    /// Moves the entry at `at` away from the top while a child is worse.
    fn sift_down(&mut self, mut at: usize) -> io::Result<()> {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut worst = at;
            for child in [left, right] {
                if child < self.heap.len() && self.cmp_at(child, worst)? == Ordering::Greater {
                    worst = child;
                }
            }
            if worst == at {
                return Ok(());
            }
            self.swap(at, worst);
            at = worst;
        }
    }

    /// Distinct valid emails so far: the contacts before the cap.
    pub(crate) fn distinct(&self) -> u64 {
        self.emails.len() as u64
    }

    /// How many contacts each segment supplied, by segment index.
    pub(crate) fn contacts_by_segment(&self, segments: usize) -> Vec<u64> {
        let mut out = vec![0; segments];
        for e in self.emails.values() {
            let prefix = &self.arena[e.prefix_range()];
            let segment = prefix[prefix.len() - self.segment_bytes..]
                .iter()
                .fold(0usize, |n, b| n << 8 | usize::from(*b));
            out[segment] += 1;
        }
        out
    }

    /// The kept contacts, in order.
    pub(crate) fn finish(self) -> Result<Kept, SelectError> {
        let Self {
            mut slots,
            keys,
            emails,
            arena,
            heap,
            ..
        } = self;
        // Only the kept keys are needed from here on.
        drop((emails, arena, heap));
        // Worst first, so each batch is cut off the end.
        let mut failed = None;
        slots.sort_unstable_by(|a, b| {
            keys.cmp(b, a).unwrap_or_else(|e| {
                failed.get_or_insert(e);
                Ordering::Equal
            })
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(Kept {
            keys,
            reversed: slots,
            truncated: 0,
        })
    }
}

/// The kept contacts, decoded a batch at a time.
pub(crate) struct Kept {
    keys: KeyStore,
    /// The kept candidates, worst first.
    reversed: Vec<Slot>,
    /// Contacts decoded so far that had a field cut to SendGrid's length.
    pub(crate) truncated: u64,
}

impl Kept {
    /// The records (prefix length, email, key) of the next `n` contacts, end to end, with each
    /// one's range; `None` when all were taken.
    fn next_records(&mut self, n: usize) -> io::Result<Option<(Vec<u8>, Vec<Range<usize>>)>> {
        if self.reversed.is_empty() {
            return Ok(None);
        }
        let at = self.reversed.len().saturating_sub(n.max(1));
        let wanted: Vec<(u64, u32)> = self.reversed[at..]
            .iter()
            .rev()
            .map(|s| (s.at, s.len))
            .collect();
        let records = self.keys.read_many(&wanted)?;
        self.reversed.truncate(at);
        Ok(Some(records))
    }

    /// The next batch of at most `batch_size` contacts (columns named by SendGrid field).
    pub(crate) fn next_batch(
        &mut self,
        encoders: &Encoders,
        batch_size: usize,
    ) -> Option<Result<RecordBatch, SelectError>> {
        let (bytes, ranges) = match self.next_records(batch_size) {
            Ok(records) => records?,
            Err(e) => return Some(Err(e.into())),
        };
        let parser = encoders.rest.parser();
        let rows = ranges.iter().map(|r| {
            let record = &bytes[r.clone()];
            let prefix_len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
            parser.parse(&record[RECORD_HEADER + prefix_len as usize..])
        });
        let columns = match encoders.rest.convert_rows(rows) {
            Ok(columns) => columns,
            Err(e) => return Some(Err(SelectError::Arrow(e))),
        };
        self.truncated += columns[encoders.truncated_slot].as_boolean().true_count() as u64;
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = encoders
            .field_slots
            .iter()
            .zip(&encoders.field_names)
            .map(|(slot, name)| {
                let column = columns[*slot].clone();
                (Field::new(name, column.data_type().clone(), true), column)
            })
            .unzip();
        Some(
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                .map_err(SelectError::Arrow),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-byte prefix ending with its segment: `n`'s parity.
    fn prefix(n: u8) -> Vec<u8> {
        vec![n, n % 2]
    }

    /// Offers rows (email, prefix, rest) in the given order and returns the kept keys.
    fn kept(limit: u64, rows: &[(u128, u8, u8)]) -> (Vec<(u128, Vec<u8>)>, Vec<u64>) {
        let mut s = Selector::new(limit, KEYS_IN_MEMORY, 1);
        for (email, p, rest) in rows {
            if s.note(*email, &prefix(*p)).unwrap() {
                s.offer(*email, &prefix(*p), &[*rest]).unwrap();
            }
        }
        let by_segment = s.contacts_by_segment(2);
        (candidates(&s), by_segment)
    }

    /// The candidates' emails and keys, by key.
    fn candidates(s: &Selector) -> Vec<(u128, Vec<u8>)> {
        let mut scratch = Vec::new();
        let mut out: Vec<(u128, Vec<u8>)> = s
            .slots
            .iter()
            .map(|c| {
                let key = s.keys.key(c, &mut scratch).unwrap().to_vec();
                (s.keys.email(c).unwrap(), key)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    #[test]
    fn keeps_each_emails_first_row_and_the_first_emails_in_any_arrival_order() {
        // (email, prefix, rest): the best rows are email 1's (3, 1), email 2's (2, 5),
        // email 3's (7, 0) and email 4's (1, 4).
        let rows = [
            (1u128, 3u8, 2u8),
            (2, 2, 9),
            (3, 7, 0),
            (1, 3, 1),
            (4, 1, 4),
            (2, 2, 5),
            (1, 8, 0),
            (3, 9, 0),
        ];
        let expected = vec![
            (4u128, vec![1u8, 1, 4]),
            (2, vec![2, 0, 5]),
            (1, vec![3, 1, 1]),
        ];
        let mut orders = vec![rows.to_vec()];
        let mut reversed = rows.to_vec();
        reversed.reverse();
        orders.push(reversed);
        let mut rotated = rows.to_vec();
        rotated.rotate_left(3);
        orders.push(rotated);
        for order in orders {
            let (keep, by_segment) = kept(3, &order);
            assert_eq!(keep, expected, "arrival order {order:?}");
            // Segments follow the best prefix's parity: emails 1 (3), 3 (7), 4 (1) odd.
            assert_eq!(by_segment, vec![1, 3], "arrival order {order:?}");
        }
        let (all, _) = kept(10, &rows);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], (3, vec![7, 1, 0]));
        let (none, by_segment) = kept(0, &rows);
        assert!(none.is_empty());
        assert_eq!(by_segment, vec![1, 3], "the cap does not change the counts");
    }

    #[test]
    fn keys_of_any_length_are_chosen_and_read_back_in_order_from_memory_or_the_file() {
        // Random rows whose keys are shorter and longer than the head and often tie on it,
        // with the keys in memory and, past a few hundred bytes, in the file. The result
        // must match choosing by brute force, and the kept contacts must come back whole
        // and in order.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for (limit, memory) in [
            (1u64, KEYS_IN_MEMORY),
            (8, KEYS_IN_MEMORY),
            (3, 300),
            (40, 300),
            (40, 0),
        ] {
            let mut s = Selector::new(limit, memory, 1);
            let mut best: std::collections::BTreeMap<u128, Vec<u8>> = Default::default();
            for _ in 0..2_000 {
                let email = u128::from(next(50));
                // Prefixes end where they say, as arrow's row format does; many share
                // the head.
                let n = next(20) as usize;
                let mut prefix = vec![n as u8];
                prefix.resize(1 + n, next(2) as u8);
                // Ending with the email, as real keys hold it: two emails never tie.
                let mut rest: Vec<u8> = (0..next(30)).map(|_| next(2) as u8).collect();
                rest.push(email as u8);
                if s.note(email, &prefix).unwrap() {
                    s.offer(email, &prefix, &rest).unwrap();
                }
                let key: Vec<u8> = prefix.iter().chain(&rest).copied().collect();
                let e = best.entry(email).or_insert_with(|| key.clone());
                if key < *e {
                    *e = key;
                }
            }
            let mut expected: Vec<(u128, Vec<u8>)> = best.into_iter().collect();
            expected.sort_by(|a, b| a.1.cmp(&b.1));
            expected.truncate(limit as usize);
            assert_eq!(candidates(&s), expected, "limit {limit}, memory {memory}");
            assert_eq!(
                s.keys.file.is_some(),
                memory < KEYS_IN_MEMORY,
                "limit {limit}, memory {memory}"
            );

            let mut kept = s.finish().unwrap();
            let mut read = Vec::new();
            while let Some((bytes, ranges)) = kept.next_records(3).unwrap() {
                read.extend(
                    ranges
                        .into_iter()
                        .map(|r| bytes[r.start + RECORD_HEADER..r.end].to_vec()),
                );
            }
            let expected: Vec<Vec<u8>> = expected.into_iter().map(|(_, key)| key).collect();
            assert_eq!(read, expected, "limit {limit}, memory {memory}");
        }
    }

    #[test]
    fn a_replaced_candidate_neither_counts_nor_blocks_the_limit() {
        // Email 1 improves twice while the limit is full; email 2 must stay kept.
        let rows = [
            (1u128, 5u8, 5u8),
            (2, 6, 0),
            (1, 4, 0),
            (1, 2, 0),
            (3, 9, 0),
        ];
        let (keep, _) = kept(2, &rows);
        assert_eq!(keep, vec![(1, vec![2, 0, 0]), (2, vec![6, 0, 0])]);
    }

    #[test]
    fn the_segment_is_read_back_from_the_end_of_a_prefix_as_arrow_wrote_it() {
        for (data_type, segments) in [
            (DataType::UInt16, vec![0u32, 1, 300, 65_535]),
            (DataType::UInt32, vec![0, 70_000, 16_777_217]),
        ] {
            let converter = RowConverter::new(vec![
                SortField::new(DataType::Int64),
                SortField::new(data_type.clone()),
            ])
            .unwrap();
            let order: ArrayRef =
                Arc::new(arrow::array::Int64Array::from(vec![-5i64; segments.len()]));
            let segment = cast(
                &(Arc::new(UInt32Array::from(segments.clone())) as ArrayRef),
                &data_type,
            )
            .unwrap();
            let rows = converter.convert_columns(&[order, segment]).unwrap();
            let width = data_type.primitive_width().unwrap();
            let mut s = Selector::new(10, KEYS_IN_MEMORY, width);
            for (i, row) in rows.iter().enumerate() {
                s.note(i as u128, row.data()).unwrap();
            }
            let by_segment = s.contacts_by_segment(*segments.last().unwrap() as usize + 1);
            for n in &segments {
                assert_eq!(by_segment[*n as usize], 1, "{data_type} segment {n}");
            }
            assert_eq!(by_segment.iter().sum::<u64>(), segments.len() as u64);
        }
    }
}
