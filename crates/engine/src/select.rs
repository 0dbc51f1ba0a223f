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

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortOptions, take};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::plan::meta::{RAW_EMAIL, SEGMENT as SEG, TRUNCATED};
use crate::plan::{ExportQuery, META_COLUMNS};

/// Where the query's columns go in the two row encodings.
pub(crate) struct Encoders {
    prefix: RowConverter,
    prefix_columns: Vec<usize>,
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
        prefix_columns.push(SEG);
        prefix_fields.push(sort_field(SEG, ascending));

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
            rest: converter(rest_fields)?,
            rest_columns,
            field_slots,
            truncated_slot,
            field_names: query.fields.iter().map(|f| f.qualified_name()).collect(),
        })
    }

    /// The prefix of every row of `batch`.
    pub(crate) fn prefixes(&self, batch: &RecordBatch) -> Result<Rows, ArrowError> {
        let columns: Vec<ArrayRef> = self
            .prefix_columns
            .iter()
            .map(|c| batch.column(*c).clone())
            .collect();
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

/// Orders `prefix` followed by `rest` against `key`, without joining them.
fn cmp_joined(prefix: &[u8], rest: &[u8], key: &[u8]) -> Ordering {
    let n = prefix.len().min(key.len());
    match prefix[..n].cmp(&key[..n]) {
        // `key` ends inside `prefix`: it is a proper prefix of the joined bytes.
        Ordering::Equal if n < prefix.len() => Ordering::Greater,
        Ordering::Equal => rest.cmp(&key[n..]),
        other => other,
    }
}

/// Marks an email without a candidate.
const NO_CANDIDATE: u32 = u32::MAX;
/// Prefixes are addressed by a 40-bit arena offset and a 24-bit length packed in a u64.
const PREFIX_LEN_BITS: u32 = 24;

/// What the selector knows of one email, in 16 bytes (32 with its key in the map).
struct Email {
    /// Where the best prefix seen is in the arena (offset and length, packed).
    prefix: u64,
    /// The segment of that prefix: the one that supplies the contact.
    segment: u32,
    /// The email's candidate slot, if it is among the first `limit`.
    candidate: u32,
}

impl Email {
    fn prefix_range(&self) -> std::ops::Range<usize> {
        let at = (self.prefix >> PREFIX_LEN_BITS) as usize;
        at..at + (self.prefix & ((1 << PREFIX_LEN_BITS) - 1)) as usize
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
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type EmailMap = HashMap<u128, Email, BuildHasherDefault<Prehashed>>;

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

    fn shard(&mut self, email: u128) -> &mut EmailMap {
        &mut self.shards[(email >> (128 - Self::SHARD_BITS)) as usize]
    }

    fn get_mut(&mut self, email: u128) -> Option<&mut Email> {
        self.shard(email).get_mut(&email)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Email> {
        self.shards.iter().flat_map(HashMap::values)
    }
}

/// A candidate contact: where its whole order key (prefix then rest) is in the key arena,
/// the length of the prefix, its email and its place in the heap.
struct Slot {
    /// The key's space in the arena: it starts at `at` and holds `cap` bytes, of which
    /// the key fills the first `len`.
    at: usize,
    cap: u32,
    len: u32,
    prefix_len: u32,
    heap_at: u32,
    email: [u64; 2],
}

impl Slot {
    fn email(&self) -> u128 {
        (u128::from(self.email[0]) << 64) | u128::from(self.email[1])
    }

    fn key<'a>(&self, keys: &'a [u8]) -> &'a [u8] {
        &keys[self.at..self.at + self.len as usize]
    }
}

/// The candidates' keys end to end, in one allocation rather than one per candidate. A
/// slot's new key is written over its old one when it fits; otherwise it goes at the end,
/// and once the space left behind outgrows the keys in use, the keys are moved together.
#[derive(Default)]
struct KeyArena {
    bytes: Vec<u8>,
    /// Bytes no slot uses.
    unused: usize,
}

impl KeyArena {
    /// Writes `prefix` then `rest` as `slot`'s key, among `slots`.
    fn set(&mut self, slots: &mut [Slot], slot: usize, prefix: &[u8], rest: &[u8]) {
        let len = prefix.len() + rest.len();
        let old = slots[slot].len as usize;
        if len <= slots[slot].cap as usize {
            self.unused = self.unused + old - len;
        } else {
            // The old space is left behind; the new one, at the end, is all in use.
            self.unused += old;
            slots[slot].len = 0;
            if self.unused > self.bytes.len() / 2 {
                self.compact(slots);
            }
            let s = &mut slots[slot];
            s.at = self.bytes.len();
            s.cap = len as u32;
            self.bytes.resize(s.at + len, 0);
        }
        let s = &mut slots[slot];
        let (p, r) = self.bytes[s.at..s.at + len].split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        r.copy_from_slice(rest);
        s.len = len as u32;
        s.prefix_len = prefix.len() as u32;
    }

    /// Moves every key to the front, in place; each slot's space shrinks to its key.
    fn compact(&mut self, slots: &mut [Slot]) {
        let mut by_place: Vec<u32> = (0..slots.len() as u32).collect();
        by_place.sort_unstable_by_key(|i| slots[*i as usize].at);
        let mut end = 0;
        for i in by_place {
            let s = &mut slots[i as usize];
            let len = s.len as usize;
            self.bytes.copy_within(s.at..s.at + len, end);
            s.at = end;
            s.cap = s.len;
            end += len;
        }
        self.bytes.truncate(end);
        self.unused = 0;
    }
}

/// The first row of each email, and the first `limit` emails, by the export's order.
pub(crate) struct Selector {
    limit: usize,
    emails: Emails,
    arena: Vec<u8>,
    slots: Vec<Slot>,
    keys: KeyArena,
    /// Slot numbers in a binary heap, worst candidate on top; each slot knows its place.
    heap: Vec<u32>,
}

impl Selector {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            emails: Emails::new(),
            arena: Vec::new(),
            slots: Vec::new(),
            keys: KeyArena::default(),
            heap: Vec::new(),
        }
    }

    /// Records a valid row's email, prefix and segment. True when the row may still become
    /// a contact, so its rest must be encoded and offered.
    pub(crate) fn note(
        &mut self,
        email: u128,
        prefix: &[u8],
        segment: u32,
    ) -> Result<bool, String> {
        let packed = |at: usize| -> Result<u64, String> {
            let (at, len) = (at as u64, prefix.len() as u64);
            if len >> PREFIX_LEN_BITS != 0 || at >> (64 - PREFIX_LEN_BITS) != 0 {
                return Err(
                    "the order_by values are too long to rank (over 16 MiB in one row, \
                            or 1 TiB in all); order by shorter values"
                        .into(),
                );
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
                        e.segment = segment;
                    }
                    Ordering::Less => {
                        e.prefix = packed(end)?;
                        e.segment = segment;
                        self.arena.extend_from_slice(prefix);
                    }
                    Ordering::Equal => {}
                    Ordering::Greater => return Ok(false),
                }
            }
            None => {
                let entry = Email {
                    prefix: packed(end)?,
                    segment,
                    candidate: NO_CANDIDATE,
                };
                self.emails.shard(email).insert(email, entry);
                self.arena.extend_from_slice(prefix);
            }
        }
        Ok(self.limit > 0 && !self.beyond_limit(prefix))
    }

    /// True when `prefix` orders after the worst of `limit` candidates, so no row with it
    /// can enter them.
    fn beyond_limit(&self, prefix: &[u8]) -> bool {
        self.heap.len() >= self.limit && prefix > self.prefix_of(self.heap[0])
    }

    /// Offers a noted row, whole, as its email's contact.
    pub(crate) fn offer(&mut self, email: u128, prefix: &[u8], rest: &[u8]) {
        let Some(entry) = self.emails.get_mut(email) else {
            return;
        };
        let keys = &self.keys.bytes;
        let better = |slot: &Slot| cmp_joined(prefix, rest, slot.key(keys)) == Ordering::Less;
        let slot = match entry.candidate {
            NO_CANDIDATE if self.heap.len() < self.limit => {
                let slot = self.slots.len() as u32;
                entry.candidate = slot;
                self.heap.push(slot);
                self.slots.push(Slot {
                    at: 0,
                    cap: 0,
                    len: 0,
                    prefix_len: 0,
                    heap_at: self.heap.len() as u32 - 1,
                    email: [0; 2],
                });
                slot
            }
            NO_CANDIDATE => {
                // Full: it must beat the worst candidate, whose slot it then takes.
                let worst = self.heap[0];
                if !better(&self.slots[worst as usize]) {
                    return;
                }
                entry.candidate = worst;
                let evicted = self.slots[worst as usize].email();
                if let Some(e) = self.emails.get_mut(evicted) {
                    e.candidate = NO_CANDIDATE;
                }
                worst
            }
            current if better(&self.slots[current as usize]) => current,
            _ => return,
        };
        self.keys.set(&mut self.slots, slot as usize, prefix, rest);
        let s = &mut self.slots[slot as usize];
        s.email = [(email >> 64) as u64, email as u64];
        // A new slot sits at the bottom; a taken or improved one can only move down.
        let at = s.heap_at as usize;
        self.sift_up(at);
        self.sift_down(at);
    }

    fn key_at(&self, at: usize) -> &[u8] {
        self.slots[self.heap[at] as usize].key(&self.keys.bytes)
    }

    fn prefix_of(&self, slot: u32) -> &[u8] {
        let s = &self.slots[slot as usize];
        &s.key(&self.keys.bytes)[..s.prefix_len as usize]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a] as usize].heap_at = a as u32;
        self.slots[self.heap[b] as usize].heap_at = b as u32;
    }

    /// Moves the entry at `at` towards the top while it is worse than its parent.
    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.key_at(at) <= self.key_at(parent) {
                return;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    /// Moves the entry at `at` away from the top while a child is worse.
    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut worst = at;
            if left < self.heap.len() && self.key_at(left) > self.key_at(worst) {
                worst = left;
            }
            if right < self.heap.len() && self.key_at(right) > self.key_at(worst) {
                worst = right;
            }
            if worst == at {
                return;
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
            out[e.segment as usize] += 1;
        }
        out
    }

    /// The kept contacts, in order.
    pub(crate) fn finish(self) -> Kept {
        let Self {
            slots,
            keys,
            emails,
            arena,
            heap,
            ..
        } = self;
        // Only the kept keys are needed from here on.
        drop((emails, arena, heap));
        let keys = keys.bytes;
        let mut reversed: Vec<(usize, u32, u32)> = slots
            .into_iter()
            .map(|s| (s.at, s.len, s.prefix_len))
            .collect();
        // Worst first, so each batch is cut off the end.
        let key = |(at, len, _): &(usize, u32, u32)| &keys[*at..*at + *len as usize];
        reversed.sort_unstable_by(|a, b| key(b).cmp(key(a)));
        Kept {
            keys,
            reversed,
            truncated: 0,
        }
    }
}

/// The kept contacts, decoded a batch at a time.
pub(crate) struct Kept {
    keys: Vec<u8>,
    /// Each contact's key (where it starts, its length, its prefix's length), worst first.
    reversed: Vec<(usize, u32, u32)>,
    /// Contacts decoded so far that had a field cut to SendGrid's length.
    pub(crate) truncated: u64,
}

impl Kept {
    /// The next batch of at most `batch_size` contacts (columns named by SendGrid field).
    pub(crate) fn next_batch(
        &mut self,
        encoders: &Encoders,
        batch_size: usize,
    ) -> Option<Result<RecordBatch, ArrowError>> {
        if self.reversed.is_empty() {
            return None;
        }
        let at = self.reversed.len().saturating_sub(batch_size.max(1));
        let parser = encoders.rest.parser();
        let keys = &self.keys;
        let rows = self.reversed[at..]
            .iter()
            .rev()
            .map(|(start, len, prefix_len)| {
                parser.parse(&keys[start + *prefix_len as usize..start + *len as usize])
            });
        let columns = match encoders.rest.convert_rows(rows) {
            Ok(columns) => columns,
            Err(e) => return Some(Err(e)),
        };
        self.reversed.truncate(at);
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
        Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Vec<u8> {
        vec![n]
    }

    /// Offers rows (email, prefix, rest) in the given order and returns the kept keys.
    fn kept(limit: u64, rows: &[(u128, u8, u8)]) -> (Vec<(u128, Vec<u8>)>, Vec<u64>) {
        let mut s = Selector::new(limit);
        for (email, prefix, rest) in rows {
            if s.note(*email, &key(*prefix), u32::from(*prefix % 2))
                .unwrap()
            {
                s.offer(*email, &key(*prefix), &key(*rest));
            }
        }
        let by_segment = s.contacts_by_segment(2);
        (candidates(&s), by_segment)
    }

    /// The candidates' emails and keys, by key.
    fn candidates(s: &Selector) -> Vec<(u128, Vec<u8>)> {
        let mut out: Vec<(u128, Vec<u8>)> = s
            .slots
            .iter()
            .map(|c| (c.email(), c.key(&s.keys.bytes).to_vec()))
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
        let expected = vec![(4u128, vec![1u8, 4]), (2, vec![2, 5]), (1, vec![3, 1])];
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
        assert_eq!(all[3], (3, vec![7, 0]));
        let (none, by_segment) = kept(0, &rows);
        assert!(none.is_empty());
        assert_eq!(by_segment, vec![1, 3], "the cap does not change the counts");
    }

    #[test]
    fn keys_of_any_length_survive_being_rewritten_and_moved_together() {
        // Random rows whose rests change length, so keys are written over, moved to the
        // end and compacted; the result must match choosing by brute force.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for limit in [1u64, 3, 8, 40] {
            let mut s = Selector::new(limit);
            let mut best: std::collections::BTreeMap<u128, Vec<u8>> = Default::default();
            for _ in 0..2_000 {
                let email = u128::from(next(50));
                let prefix = vec![next(20) as u8];
                // Ending with the email, as real keys hold it: two emails never tie.
                let mut rest: Vec<u8> = (0..next(30)).map(|_| next(4) as u8).collect();
                rest.push(email as u8);
                if s.note(email, &prefix, 0).unwrap() {
                    s.offer(email, &prefix, &rest);
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
            assert_eq!(candidates(&s), expected, "limit {limit}");
            let live: usize = s.slots.iter().map(|c| c.len as usize).sum();
            assert_eq!(s.keys.bytes.len() - s.keys.unused, live, "limit {limit}");
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
        assert_eq!(keep, vec![(1, vec![2, 0]), (2, vec![6, 0])]);
    }
}
