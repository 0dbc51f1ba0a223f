//! Choosing an export's contacts with DataFusion's own operators.
//!
//! The export's order is total: `order_by`, then the segment's position, then the mapped
//! values (then the email as written, the alternate emails and the truncated flag, so that
//! rows it cannot tell apart are identical in everything sent). An email's contact is its
//! first row in that order, and the contacts kept are the first `max_profiles` emails.
//!
//! Rows arrive in any order. A [`Sorter`] feeds them, as they stream, into a DataFusion
//! sort over a streaming table: the sort runs under the session's memory pool and spills
//! to disk past its share, so no selection needs memory in proportion to its rows.
//! [`ContactCount`] counts the contacts the same way, with a sort of their email hashes
//! (and, for several segments, of what decides each email's first row), so the cap's
//! verdict and each segment's count are known before the sorted rows come back. Each
//! email's first sorted row is its contact; an [`EmailSet`] remembers the emails of the
//! contacts sent (at most `max_profiles`), and reading stops at the cap.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, BooleanArray, FixedSizeBinaryArray, StringArray, UInt32Array,
};
use arrow::compute::{SortOptions, cast, concat_batches, filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::SortExpr;
use datafusion::physical_plan::spill::get_record_batch_memory_size;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::plan::ExportQuery;

type Batch = Result<RecordBatch, DataFusionError>;

/// The export's order over the query's columns in `schema`: the contacts' order, and for
/// `rejects` the start of it, then the email as written and the reject's own columns, so
/// that rejected rows come out in one order whatever order the query returned them in.
pub(crate) fn export_order(query: &ExportQuery, schema: &Schema, rejects: bool) -> Vec<SortExpr> {
    let ascending = |name: &str| ident(name).sort(true, false);
    let mut order: Vec<SortExpr> = contact_order(&query.order_descending)
        .into_iter()
        .map(|(name, descending)| ident(name).sort(!descending, false))
        .collect();
    if rejects {
        // A line of the rejects file holds these columns only: rows that differ
        // elsewhere write the same line.
        order.extend(["__raw_email", "__key", "__reason", "__detail"].map(ascending));
        return order;
    }
    let is_list = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_)))
    };
    let fields: Vec<String> = (0..query.fields.len()).map(|i| format!("__f{i}")).collect();
    order.extend(fields.iter().filter(|f| !is_list(f)).map(|f| ascending(f)));
    order.extend(fields.iter().filter(|f| is_list(f)).map(|f| ascending(f)));
    order.push(ascending("__truncated"));
    order
}

/// The columns of the query's rows that the rejects file needs, by position in `schema`:
/// the meta columns up to the reject's detail (their positions kept, see [`meta`]) and the
/// `order_by` values. The mapped fields stay behind, so that an export of a hundred fields
/// whose every row is rejected sorts narrow rows.
///
/// [`meta`]: crate::plan::meta
pub(crate) fn rejects_columns(schema: &Schema) -> Vec<usize> {
    let order_by = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().starts_with("__o"))
        .map(|(i, _)| i);
    (0..=crate::plan::meta::DETAIL).chain(order_by).collect()
}

/// The start of the export's order, which alone decides which segment an email's first
/// row is in: the `order_by` columns, then the segment's position. Each column's name, and
/// whether it sorts descending (nulls last).
fn contact_order(order_descending: &[bool]) -> Vec<(String, bool)> {
    let mut order: Vec<(String, bool)> = order_descending
        .iter()
        .enumerate()
        .map(|(j, descending)| (format!("__o{j}"), *descending))
        .collect();
    order.push((SEGMENT.to_owned(), false));
    order
}

/// The contacts' sort, or the rejected rows', started on its first batch so that what it
/// holds fits its share. A sort reserves each batch's buffers plus its rows' size, and
/// spills and merges in batches of its session's size: an export of fifty mapped fields
/// sent batches of 8,192 rows that each asked for 17-24 MB of the contacts' 32 MiB share
/// (the default memory limit's eighth), and the sort failed. Rows of the first batch's
/// width go in, and come back out, in portions that reserve at most a quarter of the
/// share; an export of a dozen fields keeps whole batches.
pub(crate) struct SortInput {
    /// What is sorted, for the log.
    what: &'static str,
    ctx: SessionContext,
    schema: SchemaRef,
    order: Vec<SortExpr>,
    share: usize,
    /// The sort and its rows per portion, once the first batch came.
    started: Option<(Sorter, usize)>,
}

impl SortInput {
    pub(crate) fn new(
        what: &'static str,
        ctx: &SessionContext,
        schema: SchemaRef,
        order: Vec<SortExpr>,
        share: usize,
    ) -> Self {
        Self {
            what,
            ctx: ctx.clone(),
            schema,
            order,
            share,
            started: None,
        }
    }

    /// Sends `batch` to the sort; false once the sort stopped (its error comes out of
    /// [`Self::finish`]'s rows).
    pub(crate) async fn send(&mut self, batch: RecordBatch) -> Result<bool, DataFusionError> {
        if self.started.is_none() {
            let batch_size = self.ctx.copied_config().batch_size();
            let rows = portion_rows(&batch, self.share, batch_size)?;
            let ctx = if rows < batch_size {
                tracing::debug!(
                    rows,
                    "The {} are wide: they are sorted in portions of {rows} rows",
                    self.what
                );
                let config = self.ctx.copied_config().with_batch_size(rows);
                let state = SessionStateBuilder::new_from_existing(self.ctx.state())
                    .with_config(config)
                    .build();
                SessionContext::new_with_state(state)
            } else {
                self.ctx.clone()
            };
            let sorter = Sorter::start(&ctx, self.schema.clone(), self.order.clone()).await?;
            self.started = Some((sorter, rows));
        }
        let (sorter, rows) = self.started.as_ref().expect("started above");
        if batch.num_rows() <= *rows {
            return Ok(sorter.input.send(Ok(batch)).await.is_ok());
        }
        for start in (0..batch.num_rows()).step_by(*rows) {
            let portion = tight(&batch.slice(start, (*rows).min(batch.num_rows() - start)))?;
            if sorter.input.send(Ok(portion)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends the input; the rows come out in the sort's order.
    pub(crate) async fn finish(self) -> Result<mpsc::Receiver<Batch>, DataFusionError> {
        let sorter = match self.started {
            Some((sorter, _)) => sorter,
            None => Sorter::start(&self.ctx, self.schema, self.order).await?,
        };
        let Sorter { input, output, .. } = sorter;
        drop(input);
        Ok(output)
    }
}

/// Rows per portion for batches like `batch`: as many as reserve at most a quarter of
/// `share` once copied to buffers of their own size (a sort reserves the buffers and the
/// rows' size again), and at most `batch_size`.
fn portion_rows(batch: &RecordBatch, share: usize, batch_size: usize) -> Result<usize, ArrowError> {
    let rows = batch.num_rows().max(1);
    let size = get_record_batch_memory_size(&tight(batch)?);
    let per_row = (2 * size).div_ceil(rows).max(1);
    Ok((share / 4 / per_row).clamp(64, batch_size.max(64)))
}

/// `batch` copied into buffers of its own rows' size: a slice or a filter's output may
/// hold buffers of many more rows. A view array's copy still points into the buffers its
/// values sit in (whole pages of the scan) until those are compacted too.
fn tight(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let indices = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let copy = take(column.as_ref(), &indices, None)?;
            Ok(match copy.data_type() {
                DataType::Utf8View => Arc::new(copy.as_string_view().gc()) as ArrayRef,
                DataType::BinaryView => Arc::new(copy.as_binary_view().gc()) as ArrayRef,
                _ => copy,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// A DataFusion sort fed batch by batch: rows go into `input` while they stream; once
/// `input` is dropped, the sorted rows come out of `output`.
pub(crate) struct Sorter {
    pub(crate) input: mpsc::Sender<Batch>,
    pub(crate) output: mpsc::Receiver<Batch>,
    schema: SchemaRef,
}

impl Sorter {
    /// Starts sorting rows of `schema` by `order`.
    pub(crate) async fn start(
        ctx: &SessionContext,
        schema: SchemaRef,
        order: Vec<SortExpr>,
    ) -> Result<Self, DataFusionError> {
        let (input, rx) = mpsc::channel(2);
        let fed = Fed {
            schema: schema.clone(),
            rows: Mutex::new(Some(rx)),
        };
        let table = StreamingTable::try_new(schema.clone(), vec![Arc::new(fed)])?;
        let mut sorted = ctx
            .read_table(Arc::new(table))?
            .sort(order)?
            .execute_stream()
            .await?;
        // The sort takes its input only while its output is polled: a task polls it from
        // the start, and hands the sorted batches over once the input has ended.
        let (tx, output) = mpsc::channel(2);
        tokio::spawn(async move {
            while let Some(batch) = sorted.next().await {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            input,
            output,
            schema,
        })
    }
}

/// One partition whose batches arrive over a channel.
#[derive(Debug)]
struct Fed {
    schema: SchemaRef,
    rows: Mutex<Option<mpsc::Receiver<Batch>>>,
}

impl PartitionStream for Fed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner()).take();
        let stream = futures::stream::unfold(rows, |rows| async move {
            let mut rows = rows?;
            let batch = match rows.recv().await {
                Some(batch) => batch,
                None => return None,
            };
            Some((batch, Some(rows)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Emails seen, by a 128-bit hash of the normalised email.
#[derive(Default)]
pub(crate) struct EmailSet(HashSet<u128, BuildHasherDefault<Prehashed>>);

impl EmailSet {
    pub(crate) fn key(email: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(email.as_bytes())
    }

    /// The key of each row's email (none for a null), computed once per batch for the
    /// distinct count and the cap's cut.
    pub(crate) fn keys(emails: &StringArray) -> Vec<Option<u128>> {
        emails.iter().map(|e| e.map(Self::key)).collect()
    }

    /// True the first time a key is seen: its email's first row in the export's order.
    pub(crate) fn first(&mut self, key: u128) -> bool {
        self.0.insert(key)
    }
}

/// The export's contacts, counted while the members stream: each valid row's email hash
/// goes into a DataFusion sort (which spills past its share), in batches. With several
/// segments the hash leads a key that goes on with the row's `order_by` values and
/// segment, encoded to sort as in the export's order, so that each email's rows come out
/// together and its first row, whose segment counts the contact, comes first. The cap's
/// verdict and every segment's count are known before the contacts' sorted rows come back,
/// whatever the cap's cut left out of that sort.
pub(crate) struct ContactCount {
    sorter: Sorter,
    /// For several segments: the valid rows' `order_by` columns and segment (last), and
    /// their encoding.
    first_rows: Option<(Vec<usize>, RowConverter)>,
    segments: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

/// Hashes per batch sent to the count's sort of one segment's contacts: a scan's valid rows
/// come in small batches, and a sort of one column fed many small batches spends its time
/// on them (the 100M-row membership export took three times as long in batches of 8,192).
const HASH_BATCH: usize = 65_536;

/// Keys per batch sent to the count's sort of several segments' contacts. This sort spills
/// its runs in the batches it was fed, and its merge holds a batch of each run: in batches
/// of 65,536, an export of two broad segments over 10M rows peaked 60-90 MiB higher and
/// took twice as long as in batches of 8,192.
const ROW_BATCH: usize = 8_192;

/// The query's column of each row's segment, by index.
const SEGMENT: &str = "__seg";

impl ContactCount {
    /// Counts the contacts of an export of `segments` segments, ordered by columns sorted
    /// as `order_descending` says, from its valid rows (of `schema`) with `ctx`'s pool.
    pub(crate) async fn start(
        ctx: &SessionContext,
        segments: usize,
        order_descending: &[bool],
        schema: &Schema,
    ) -> Result<Self, DataFusionError> {
        let (fields, first_rows) = if segments > 1 {
            let mut columns = Vec::new();
            let mut sort_fields = Vec::new();
            for (name, descending) in contact_order(order_descending) {
                let at = schema.index_of(&name)?;
                let options = SortOptions {
                    descending,
                    nulls_first: false,
                };
                let data_type = schema.field(at).data_type().clone();
                sort_fields.push(SortField::new_with_options(data_type, options));
                columns.push(at);
            }
            // One binary key, so that the sort's merge compares it as it is and needs no
            // room for converted rows (a 16 MiB share ran out merging three columns).
            let fields = vec![
                Field::new("k", DataType::Binary, false),
                Field::new("s", DataType::UInt32, false),
            ];
            (fields, Some((columns, RowConverter::new(sort_fields)?)))
        } else {
            (
                vec![Field::new("k", DataType::FixedSizeBinary(16), false)],
                None,
            )
        };
        let schema = Arc::new(Schema::new(fields));
        let order = vec![ident("k").sort(true, false)];
        let ctx = if first_rows.is_some() {
            sorting_in_place(ctx)
        } else {
            ctx.clone()
        };
        Ok(Self {
            sorter: Sorter::start(&ctx, schema, order).await?,
            first_rows,
            segments,
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    /// Adds a batch of valid rows and their email keys ([`EmailSet::keys`]; rows with none
    /// have no contact). False once the sort has stopped: its error comes out of
    /// [`ContactCount::finish`].
    pub(crate) async fn add(
        &mut self,
        keys: &[Option<u128>],
        valid: &RecordBatch,
    ) -> Result<bool, DataFusionError> {
        // A batch of the segment SQL's `batch_size` goes to the sort in parts of the sort's
        // own batches: whole, 65,536 rows of two segments' keys (6 MB) did not fit the
        // count's 8 MiB share beside the room it keeps for merging, at any memory limit
        // up to 128 MiB.
        let part = self.batch_rows();
        if keys.len() <= part {
            return self.add_part(keys, valid).await;
        }
        for start in (0..keys.len()).step_by(part) {
            let rows = part.min(keys.len() - start);
            if !self
                .add_part(&keys[start..start + rows], &valid.slice(start, rows))
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Rows per batch sent to the sort.
    fn batch_rows(&self) -> usize {
        match self.first_rows {
            Some(_) => ROW_BATCH,
            None => HASH_BATCH,
        }
    }

    /// [`ContactCount::add`] for at most [`ContactCount::batch_rows`] rows: the keys' and
    /// segments' columns built here hold only these rows.
    async fn add_part(
        &mut self,
        keys: &[Option<u128>],
        valid: &RecordBatch,
    ) -> Result<bool, DataFusionError> {
        let hashes = keys.iter().flatten().map(|k| k.to_be_bytes());
        let columns: Vec<ArrayRef> = match &self.first_rows {
            None => match FixedSizeBinaryArray::try_from_iter(hashes) {
                Ok(hashes) => vec![Arc::new(hashes)],
                // No row has an email.
                Err(_) => return Ok(true),
            },
            Some((columns, converter)) => {
                let with_email = BooleanArray::from_iter(keys.iter().map(|k| Some(k.is_some())));
                let rows = filter_record_batch(&valid.project(columns)?, &with_email)?;
                let encoded = converter.convert_columns(rows.columns())?;
                let mut keys = BinaryBuilder::with_capacity(rows.num_rows(), encoded.size());
                let mut key = Vec::new();
                for (hash, row) in hashes.zip(encoded.iter()) {
                    key.clear();
                    key.extend_from_slice(&hash);
                    key.extend_from_slice(row.as_ref());
                    keys.append_value(&key);
                }
                let segments = cast(rows.column(columns.len() - 1), &DataType::UInt32)?;
                vec![Arc::new(keys.finish()), segments]
            }
        };
        let batch = RecordBatch::try_new(self.sorter.schema.clone(), columns)?;
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows < self.batch_rows() {
            return Ok(true);
        }
        self.send().await
    }

    async fn send(&mut self) -> Result<bool, DataFusionError> {
        let batch = concat_batches(&self.sorter.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        Ok(self.sorter.input.send(Ok(batch)).await.is_ok())
    }

    /// Ends the input and counts the distinct emails, and for each segment the emails
    /// whose first row is in it.
    pub(crate) async fn finish(mut self) -> Result<Contacts, DataFusionError> {
        if self.pending_rows > 0 {
            self.send().await?;
        }
        let Sorter {
            input, mut output, ..
        } = self.sorter;
        drop(input);
        let mut counted = Contacts {
            total: 0,
            by_segment: vec![0; self.segments],
        };
        let mut last = [0u8; 16];
        while let Some(batch) = output.recv().await {
            let batch = batch?;
            let segments = batch
                .column_by_name("s")
                .map(|c| c.as_primitive::<UInt32Type>());
            let keys = batch.column(0);
            let hashes: Vec<&[u8]> = match keys.data_type() {
                DataType::Binary => keys.as_binary::<i32>().iter().flatten().collect(),
                _ => keys.as_fixed_size_binary().iter().flatten().collect(),
            };
            for (row, key) in hashes.into_iter().enumerate() {
                let hash = key.get(..16).ok_or_else(|| {
                    DataFusionError::Internal("a contact key without its email hash".into())
                })?;
                if counted.total > 0 && hash == last {
                    continue;
                }
                counted.total += 1;
                last.copy_from_slice(hash);
                let segment = segments.map_or(0, |s| s.value(row) as usize);
                *counted.by_segment.get_mut(segment).ok_or_else(|| {
                    DataFusionError::Internal(format!("no segment at index {segment}"))
                })? += 1;
            }
        }
        Ok(counted)
    }
}

/// `ctx`, with its pool, but sorting what a sort holds as one batch before it spills it.
///
/// By default DataFusion sorts each batch alone and merges them once a sort holds more
/// than 1 MiB, and that merge of tens of batches of keys needs more than the room the sort
/// keeps back for it: the membership export of three segments over 100M rows failed with
/// "Resources exhausted" in the count's 16 MiB share. One column of hashes alone needs no
/// change (DataFusion joins its batches into larger runs itself), and sorting it in place
/// would cost the 100M-row membership export 12-15 MiB more.
fn sorting_in_place(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state
        .config_mut()
        .options_mut()
        .execution
        .sort_in_place_threshold_bytes = usize::MAX;
    SessionContext::new_with_state(state)
}

/// An export's contacts: distinct emails among its valid rows, and how many of them have
/// their first row in each segment.
#[derive(Debug, PartialEq)]
pub(crate) struct Contacts {
    pub(crate) total: u64,
    pub(crate) by_segment: Vec<u64>,
}

/// The keys are hashes already: their low bits serve as the table's hash.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::Int64Array;

    use super::*;

    /// Valid rows as the scan hands them over: the email, one `order_by` column and the
    /// segment.
    fn rows(
        emails: Vec<Option<String>>,
        order: Vec<Option<i64>>,
        segments: Vec<i64>,
    ) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("__seg", DataType::Int64, false),
            Field::new("__f0", DataType::Utf8, true),
            Field::new("__o0", DataType::Int64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(segments)),
            Arc::new(StringArray::from(emails)),
            Arc::new(Int64Array::from(order)),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    async fn add(count: &mut ContactCount, batch: &RecordBatch) {
        let keys = EmailSet::keys(batch.column(1).as_string::<i32>());
        assert!(count.add(&keys, batch).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_segment_counts_the_distinct_emails_past_its_memory_share() {
        // 1.2M hashes (19 MiB) in an 8 MiB pool: the count's sort spills.
        let ctx = crate::session(8 << 20, 8192, 1).unwrap();
        let batch = rows(vec![], vec![], vec![]);
        let mut count = ContactCount::start(&ctx, 1, &[false], &batch.schema())
            .await
            .unwrap();
        for chunk in 0..120 {
            let emails = (0..10_000)
                .map(|i| (i % 7 != 0).then(|| format!("c{}@x.org", (chunk * 10_000 + i) % 700_000)))
                .collect();
            add(
                &mut count,
                &rows(emails, vec![Some(1); 10_000], vec![0; 10_000]),
            )
            .await;
        }
        // Every email is in the batches once or twice, less those left null.
        let expected = (0..1_200_000u64)
            .filter(|n| (n % 10_000) % 7 != 0)
            .map(|n| n % 700_000)
            .collect::<HashSet<_>>()
            .len() as u64;
        let counted = count.finish().await.unwrap();
        assert_eq!(
            counted,
            Contacts {
                total: expected,
                by_segment: vec![expected]
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_email_counts_for_the_segment_of_its_first_row_past_the_memory_share() {
        // 900k rows in an 8 MiB pool: the sort spills. 400k emails recur in up to three
        // segments, with `order_by` values descending, null last, and ties broken by the
        // segment's position.
        let ctx = crate::session(8 << 20, 8192, 1).unwrap();
        let schema = rows(vec![], vec![], vec![]).schema();
        let mut count = ContactCount::start(&ctx, 3, &[true], &schema)
            .await
            .unwrap();
        // Each email's first row: (order_by descending with null last, segment).
        let mut first: HashMap<u64, (Option<i64>, u32)> = HashMap::new();
        let before = |a: (Option<i64>, u32), b: (Option<i64>, u32)| match (a.0, b.0) {
            (Some(x), Some(y)) if x != y => x > y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => a.1 < b.1,
        };
        for chunk in 0..90u64 {
            let (mut emails, mut order, mut segments) = (vec![], vec![], vec![]);
            for i in 0..10_000u64 {
                let n = chunk * 10_000 + i;
                let email = (n * 7_919) % 400_000;
                let row = (
                    (n % 11 != 0).then_some(((n * 31) % 50) as i64),
                    ((n / 3 + email) % 3) as u32,
                );
                let kept = first.entry(email).or_insert(row);
                if before(row, *kept) {
                    *kept = row;
                }
                emails.push(Some(format!("c{email}@x.org")));
                order.push(row.0);
                segments.push(i64::from(row.1));
            }
            // A row without an email has no contact.
            emails.push(None);
            order.push(Some(99));
            segments.push(2);
            add(&mut count, &rows(emails, order, segments)).await;
        }
        let mut by_segment = vec![0u64; 3];
        for (_, segment) in first.values() {
            by_segment[*segment as usize] += 1;
        }
        assert!(by_segment.iter().all(|n| *n > 0), "{by_segment:?}");
        let counted = count.finish().await.unwrap();
        assert_eq!(
            counted,
            Contacts {
                total: 400_000,
                by_segment
            }
        );
    }

    /// Counts `chunks` batches of `per_chunk` generated rows of three segments, over
    /// `distinct` emails, ordered as `descending` says, with a pool of `pool` bytes. The
    /// distinct emails and, by brute force, each segment's emails whose first row is in
    /// it; and what the count says.
    async fn generated_count(
        pool: usize,
        descending: bool,
        chunks: u64,
        per_chunk: u64,
        distinct: u64,
    ) -> (Contacts, Contacts) {
        let ctx = crate::session(pool, 8192, 1).unwrap();
        let schema = rows(vec![], vec![], vec![]).schema();
        let mut count = ContactCount::start(&ctx, 3, &[descending], &schema)
            .await
            .unwrap();
        // The export's order of a row: its `order_by` value, then its segment.
        let rank = |(value, segment): (i64, u32)| match descending {
            true => (-value, segment),
            false => (value, segment),
        };
        let mut first: HashMap<u64, (i64, u32)> = HashMap::new();
        for chunk in 0..chunks {
            let (mut emails, mut order, mut segments) = (vec![], vec![], vec![]);
            for i in 0..per_chunk {
                let n = chunk * per_chunk + i;
                let email = (n * 7_919) % distinct;
                let row = (((n * 104_729) % 1_000_000_007) as i64, (n % 3) as u32);
                let kept = first.entry(email).or_insert(row);
                if rank(row) < rank(*kept) {
                    *kept = row;
                }
                emails.push(Some(format!("customer-{email}@example.org")));
                order.push(Some(row.0));
                segments.push(i64::from(row.1));
            }
            add(&mut count, &rows(emails, order, segments)).await;
        }
        let mut by_segment = vec![0u64; 3];
        for (_, segment) in first.values() {
            by_segment[*segment as usize] += 1;
        }
        let expected = Contacts {
            total: first.len() as u64,
            by_segment,
        };
        (expected, count.finish().await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_segments_count_batches_larger_than_their_share_holds() {
        // Batches of 131,072 rows, as a segment SQL with that `batch_size` hands them over:
        // one batch's keys alone would not fit the count's 8 MiB share beside the room it
        // keeps for merging, so they go in parts.
        let (expected, counted) = generated_count(8 << 20, true, 4, 131_072, 300_000).await;
        assert_eq!(expected.total, 300_000);
        assert_eq!(counted, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_segments_count_in_the_default_share_when_the_sort_spills_many_runs() {
        // The count's share at the default memory limit (16 MiB) and about 2M rows of
        // three segments, as in a membership export over 100M profiles: the sort spills
        // tens of runs, and its merge must fit in the same share.
        let (expected, counted) = generated_count(16 << 20, false, 210, 10_000, 1_800_000).await;
        assert_eq!(counted, expected);
    }

    #[tokio::test]
    async fn no_rows_count_no_contacts() {
        let ctx = crate::session(8 << 20, 8192, 1).unwrap();
        let schema = rows(vec![], vec![], vec![]).schema();
        let count = ContactCount::start(&ctx, 2, &[false], &schema)
            .await
            .unwrap();
        let counted = count.finish().await.unwrap();
        assert_eq!(
            counted,
            Contacts {
                total: 0,
                by_segment: vec![0, 0]
            }
        );
    }
}
