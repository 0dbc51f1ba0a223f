//! The cap's cut: valid rows that cannot be among the first `max_profiles` contacts are
//! left out of the contacts' sort.
//!
//! Once the rows let through hold `max_profiles` distinct emails whose keys (the `order_by`
//! values) are at most some key T, a later row whose key comes after T is not the first row
//! of any contact the cap keeps: its email either has an earlier row, or `max_profiles`
//! other emails come before it. [`Cut`] keeps the key and email hash of every row it lets
//! through and, whenever they reach twice the cap (and from then on, whenever they grow by
//! a quarter), sorts them, finds the key at which the cap's count of distinct emails is
//! complete (the threshold), and forgets the rows after it. Rows equal to the threshold go
//! through, so the sort still breaks ties.
//!
//! With rows in random order, about `cap × (1 + ln(rows / cap))` rows would reach the sort
//! with a threshold kept up to date row by row, instead of all of them; with rows already
//! in key order, little more than the cap. Compacting at every quarter's growth comes near
//! that: on a 10% filter, 377k rows of 1M reached the sort (421k compacting at every
//! doubling) and 635k of 10M (750k), for no measured difference in time.
//!
//! The cut applies to an export with an `order_by` (the count of each segment's contacts
//! sees every row before the cut, see [`crate::select::ContactCount`]). It gives up,
//! letting every row through, when its keys would hold more than `budget` bytes.

use std::collections::HashSet;

use arrow::array::BooleanArray;
use arrow::buffer::BooleanBuffer;
use arrow::compute::{SortOptions, filter_record_batch};
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::plan::ExportQuery;

pub(crate) struct Cut {
    converter: RowConverter,
    /// The `order_by` columns of the valid rows.
    columns: Vec<usize>,
    cap: usize,
    budget: usize,
    /// The keys of the rows let through, end to end, and each row's key start and email
    /// (a row's key ends where the next row's starts). The email's bytes, not a `u128`,
    /// keep a row at 24 bytes, not 32 (a `u128` is aligned to 16).
    bytes: Vec<u8>,
    rows: Vec<(usize, [u8; 16])>,
    /// How many rows to hold before the next compaction.
    next: usize,
    threshold: Option<Vec<u8>>,
}

impl Cut {
    /// The cut for `query`'s valid rows of `schema`, or `None` where it does not apply.
    pub(crate) fn new(
        query: &ExportQuery,
        schema: &Schema,
        cap: u64,
        budget: usize,
    ) -> Result<Option<Self>, ArrowError> {
        if query.order_descending.is_empty() || cap == 0 {
            return Ok(None);
        }
        let columns = (0..query.order_descending.len())
            .map(|j| schema.index_of(&format!("__o{j}")))
            .collect::<Result<Vec<_>, _>>()?;
        let fields = columns
            .iter()
            .zip(&query.order_descending)
            .map(|(c, descending)| {
                SortField::new_with_options(
                    schema.field(*c).data_type().clone(),
                    SortOptions {
                        descending: *descending,
                        nulls_first: false,
                    },
                )
            })
            .collect();
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        Ok(Some(Self {
            converter: RowConverter::new(fields)?,
            columns,
            cap,
            budget,
            bytes: Vec::new(),
            rows: Vec::new(),
            next: cap.saturating_mul(2),
            threshold: None,
        }))
    }

    /// The rows of `batch` that may still be among the first `cap` contacts; `emails` are
    /// the keys of its identifier column ([`crate::select::EmailSet::keys`]).
    pub(crate) fn apply(
        &mut self,
        batch: &RecordBatch,
        emails: &[Option<u128>],
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|c| batch.column(*c).clone())
            .collect();
        let keys = self.converter.convert_columns(&columns)?;
        let keep: BooleanBuffer = (0..batch.num_rows())
            .map(|i| {
                let key = keys.row(i);
                let pass = self.threshold.as_deref().is_none_or(|t| key.as_ref() <= t);
                if let Some(email) = emails[i].filter(|_| pass) {
                    self.rows.push((self.bytes.len(), email.to_ne_bytes()));
                    self.bytes.extend_from_slice(key.as_ref());
                }
                pass
            })
            .collect();
        if self.rows.len() >= self.next {
            self.compact();
        }
        let held = self.bytes.len() + self.rows.len() * size_of::<(usize, [u8; 16])>();
        if held > self.budget {
            return Ok(None);
        }
        if keep.count_set_bits() == batch.num_rows() {
            return Ok(Some(batch.clone()));
        }
        filter_record_batch(batch, &BooleanArray::new(keep, None)).map(Some)
    }

    /// Sorts the rows let through and keeps those up to the key at which `cap` distinct
    /// emails are complete.
    fn compact(&mut self) {
        let key = |i: usize| {
            let end = self.rows.get(i + 1).map_or(self.bytes.len(), |r| r.0);
            &self.bytes[self.rows[i].0..end]
        };
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_unstable_by(|a, b| key(*a).cmp(key(*b)));
        let mut seen = HashSet::with_capacity(self.cap.min(self.rows.len()));
        let complete = order
            .iter()
            .position(|i| seen.insert(self.rows[*i].1) && seen.len() == self.cap);
        let Some(at) = complete else {
            // Fewer distinct emails than the cap: no threshold yet.
            self.next = self.rows.len().saturating_mul(2);
            return;
        };
        let threshold = key(order[at]).to_vec();
        let end = at
            + order[at..]
                .iter()
                .take_while(|i| key(**i) == threshold.as_slice())
                .count();
        let mut bytes = Vec::with_capacity(self.bytes.len() / 2);
        let rows = order[..end]
            .iter()
            .map(|i| {
                let start = bytes.len();
                bytes.extend_from_slice(key(*i));
                (start, self.rows[*i].1)
            })
            .collect::<Vec<_>>();
        self.bytes = bytes;
        self.rows = rows;
        let held = self.rows.len().max(self.cap);
        self.next = held.saturating_add(held.div_ceil(4));
        self.threshold = Some(threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::EmailSet;
    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn query(segments: usize, descending: bool) -> ExportQuery {
        ExportQuery {
            export: "e".into(),
            sql: String::new(),
            segment_sql: Vec::new(),
            fields: Vec::new(),
            key: pipeline_spec::Identifier::Email,
            segments: (0..segments).map(|s| format!("s{s}")).collect(),
            custom_field_types: Default::default(),
            order_descending: vec![descending],
            probes: Vec::new(),
        }
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("email", DataType::Utf8, true),
            Field::new("__o0", DataType::Int64, true),
        ])
    }

    /// Feeds (email, key) rows in batches; returns the rows let through.
    fn run(
        cut: &mut Cut,
        rows: &[(String, Option<i64>)],
        batch: usize,
    ) -> Vec<(String, Option<i64>)> {
        let mut out = Vec::new();
        for chunk in rows.chunks(batch) {
            let emails = StringArray::from_iter_values(chunk.iter().map(|r| r.0.as_str()));
            let keys = Int64Array::from_iter(chunk.iter().map(|r| r.1));
            let b = RecordBatch::try_new(
                Arc::new(schema()),
                vec![Arc::new(emails.clone()), Arc::new(keys)],
            )
            .unwrap();
            let kept = cut
                .apply(&b, &EmailSet::keys(&emails))
                .unwrap()
                .expect("within the budget");
            let e = kept.column(0).as_string::<i32>();
            let k = kept.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            out.extend(
                (0..kept.num_rows())
                    .map(|i| (e.value(i).to_owned(), k.is_valid(i).then(|| k.value(i)))),
            );
        }
        out
    }

    /// The first `cap` distinct emails by key (nulls last), as the sort and emit find them.
    fn first(rows: &[(String, Option<i64>)], cap: usize, descending: bool) -> Vec<String> {
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| match (a.1, b.1) {
            (Some(x), Some(y)) if descending => y.cmp(&x).then(a.0.cmp(&b.0)),
            (Some(x), Some(y)) => x.cmp(&y).then(a.0.cmp(&b.0)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.0.cmp(&b.0),
        });
        let mut seen = HashSet::new();
        sorted
            .into_iter()
            .filter(|r| seen.insert(r.0.clone()))
            .take(cap)
            .map(|r| r.0)
            .collect()
    }

    fn rows(n: u64, emails: u64) -> Vec<(String, Option<i64>)> {
        (0..n)
            .map(|i| {
                let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
                let key = (r % 7 != 0).then_some((r % 5000) as i64);
                (format!("e{}@x.org", r % emails), key)
            })
            .collect()
    }

    #[test]
    fn the_cut_keeps_every_row_the_cap_needs_and_drops_most_others() {
        for descending in [false, true] {
            let all = rows(40_000, 9_000);
            let mut cut = Cut::new(&query(1, descending), &schema(), 500, usize::MAX)
                .unwrap()
                .unwrap();
            let through = run(&mut cut, &all, 1024);
            assert_eq!(
                first(&through, 500, descending),
                first(&all, 500, descending)
            );
            // About cap × (1 + ln(rows / cap)), 2,700 here, and the rows that tie with the
            // threshold; compacting only when the rows held double let 3,800 through.
            assert!(
                through.len() < 7 * 500,
                "{} of {}",
                through.len(),
                all.len()
            );
        }
    }

    #[test]
    fn with_fewer_emails_than_the_cap_nothing_is_dropped() {
        let all = rows(5_000, 300);
        let mut cut = Cut::new(&query(1, false), &schema(), 500, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(run(&mut cut, &all, 700).len(), all.len());
    }

    #[test]
    fn the_cut_gives_up_past_its_budget_and_skips_exports_without_an_order() {
        let all = rows(5_000, 3_000);
        let mut cut = Cut::new(&query(1, false), &schema(), 4_000, 10_000)
            .unwrap()
            .unwrap();
        let emails = StringArray::from_iter_values(all.iter().map(|r| r.0.as_str()));
        let keys = Int64Array::from_iter(all.iter().map(|r| r.1));
        let b = RecordBatch::try_new(
            Arc::new(schema()),
            vec![Arc::new(emails.clone()), Arc::new(keys)],
        )
        .unwrap();
        assert!(cut.apply(&b, &EmailSet::keys(&emails)).unwrap().is_none());
        // Several segments are cut too: their counts come from every row, before the cut.
        assert!(
            Cut::new(&query(2, false), &schema(), 10, usize::MAX)
                .unwrap()
                .is_some()
        );
        let mut unordered = query(1, false);
        unordered.order_descending.clear();
        assert!(
            Cut::new(&unordered, &schema(), 10, usize::MAX)
                .unwrap()
                .is_none()
        );
    }
}
