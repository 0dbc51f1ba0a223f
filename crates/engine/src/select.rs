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
//! [`DistinctCount`] counts the distinct emails the same way, with a sort of their hashes,
//! so the cap's verdict is known before the sorted rows come back. Each email's first
//! sorted row is its contact; an [`EmailSet`] remembers the emails of the contacts sent
//! (at most `max_profiles`), and [`LaterContacts`] counts the contacts after them for
//! their segments with one more sort.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayBuilder, ArrayRef, AsArray, FixedSizeBinaryBuilder, StringArray, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::UInt32Type;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::SortExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::plan::ExportQuery;

type Batch = Result<RecordBatch, DataFusionError>;

/// The export's order over the query's columns in `schema`: the contacts' order, and for
/// `rejects` the email as written and the reject's own columns too, so that rejected rows
/// come out in one order whatever order the query returned them in.
pub(crate) fn export_order(query: &ExportQuery, schema: &Schema, rejects: bool) -> Vec<SortExpr> {
    let ascending = |name: &str| ident(name).sort(true, false);
    let mut order: Vec<SortExpr> = query
        .order_descending
        .iter()
        .enumerate()
        .map(|(j, descending)| ident(format!("__o{j}")).sort(!descending, false))
        .collect();
    order.push(ascending("__seg"));
    let is_list = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_)))
    };
    let fields: Vec<String> = (0..query.fields.len()).map(|i| format!("__f{i}")).collect();
    order.extend(fields.iter().filter(|f| !is_list(f)).map(|f| ascending(f)));
    if rejects {
        order.push(ascending("__raw_email"));
    }
    order.extend(fields.iter().filter(|f| is_list(f)).map(|f| ascending(f)));
    order.push(ascending("__truncated"));
    if rejects {
        order.extend(["__key", "__reason", "__detail"].map(ascending));
    }
    order
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

    pub(crate) fn contains(&self, key: u128) -> bool {
        self.0.contains(&key)
    }
}

/// The contacts of an export with several segments that come after those it sends, counted
/// for their segments: an email's contact is its first row in the export's order, and the
/// segment of that row gets the count. Rows go in as read in that order, each with its
/// position; their email hashes and positions go into a DataFusion sort (which spills past
/// its share), so that these emails, as many as the export's rows, need no set in memory.
pub(crate) struct LaterContacts {
    ctx: SessionContext,
    sorter: Option<Sorter>,
    hashes: FixedSizeBinaryBuilder,
    positions: UInt64Builder,
    segments: UInt32Builder,
}

impl LaterContacts {
    /// Counts with `ctx`'s pool; the sort starts with the first batch.
    pub(crate) fn new(ctx: &SessionContext) -> Self {
        Self {
            ctx: ctx.clone(),
            sorter: None,
            hashes: FixedSizeBinaryBuilder::with_capacity(HASH_BATCH, 16),
            positions: UInt64Builder::with_capacity(HASH_BATCH),
            segments: UInt32Builder::with_capacity(HASH_BATCH),
        }
    }

    /// Adds the row at `position` of the export's order, whose email has key `key`, of the
    /// segment at index `segment`.
    pub(crate) fn add(&mut self, key: u128, position: u64, segment: u32) -> Result<(), ArrowError> {
        self.hashes.append_value(key.to_le_bytes())?;
        self.positions.append_value(position);
        self.segments.append_value(segment);
        Ok(())
    }

    /// Hands the rows added so far to the sort once they fill a batch. False once the sort
    /// has stopped: its error comes out of [`LaterContacts::finish`].
    pub(crate) async fn flush(&mut self) -> Result<bool, DataFusionError> {
        if self.hashes.len() < HASH_BATCH {
            return Ok(true);
        }
        self.send().await
    }

    async fn send(&mut self) -> Result<bool, DataFusionError> {
        let sorter = match &mut self.sorter {
            Some(sorter) => sorter,
            None => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new("h", DataType::FixedSizeBinary(16), false),
                    Field::new("p", DataType::UInt64, false),
                    Field::new("s", DataType::UInt32, false),
                ]));
                let order = vec![ident("h").sort(true, false), ident("p").sort(true, false)];
                self.sorter
                    .insert(Sorter::start(&self.ctx, schema, order).await?)
            }
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.hashes.finish()),
            Arc::new(self.positions.finish()),
            Arc::new(self.segments.finish()),
        ];
        let batch = RecordBatch::try_new(sorter.schema.clone(), columns)?;
        Ok(sorter.input.send(Ok(batch)).await.is_ok())
    }

    /// Ends the input and counts, for each of `segments` segments, the emails whose first
    /// row is in it.
    pub(crate) async fn finish(mut self, segments: usize) -> Result<Vec<u64>, DataFusionError> {
        let mut contacts = vec![0u64; segments];
        if !self.hashes.is_empty() {
            self.send().await?;
        }
        let Some(Sorter {
            input, mut output, ..
        }) = self.sorter
        else {
            return Ok(contacts);
        };
        drop(input);
        let (mut first, mut last) = (true, [0u8; 16]);
        while let Some(batch) = output.recv().await {
            let batch = batch?;
            let hashes = batch.column(0).as_fixed_size_binary();
            let of = batch.column(2).as_primitive::<UInt32Type>();
            for (row, hash) in hashes.iter().enumerate() {
                let Some(hash) = hash.filter(|h| first || *h != last) else {
                    continue;
                };
                let segment = of.value(row) as usize;
                *contacts.get_mut(segment).ok_or_else(|| {
                    DataFusionError::Internal(format!("no segment at index {segment}"))
                })? += 1;
                first = false;
                last.copy_from_slice(hash);
            }
        }
        Ok(contacts)
    }
}

/// The number of distinct emails among the valid rows: their 128-bit hashes go into a
/// DataFusion sort (which spills past its share) in batches of [`HASH_BATCH`], and the
/// sorted hashes are counted.
pub(crate) struct DistinctCount {
    sorter: Sorter,
    hashes: FixedSizeBinaryBuilder,
}

/// Hashes per batch sent to the count's sort: a scan's valid rows come in small batches,
/// and a sort fed many small batches spends its time on them.
const HASH_BATCH: usize = 65_536;

impl DistinctCount {
    pub(crate) async fn start(ctx: &SessionContext) -> Result<Self, DataFusionError> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "h",
            DataType::FixedSizeBinary(16),
            false,
        )]));
        let order = vec![ident("h").sort(true, false)];
        Ok(Self {
            sorter: Sorter::start(ctx, schema, order).await?,
            hashes: FixedSizeBinaryBuilder::with_capacity(HASH_BATCH, 16),
        })
    }

    /// Adds a batch's email keys ([`EmailSet::keys`]; nulls are none). False once the sort
    /// has stopped: its error comes out of [`DistinctCount::finish`].
    pub(crate) async fn add(&mut self, keys: &[Option<u128>]) -> Result<bool, DataFusionError> {
        for key in keys.iter().flatten() {
            self.hashes.append_value(key.to_le_bytes())?;
        }
        if self.hashes.len() < HASH_BATCH {
            return Ok(true);
        }
        self.send().await
    }

    async fn send(&mut self) -> Result<bool, DataFusionError> {
        let hashes = Arc::new(self.hashes.finish());
        let batch = RecordBatch::try_new(self.sorter.schema.clone(), vec![hashes])?;
        Ok(self.sorter.input.send(Ok(batch)).await.is_ok())
    }

    /// Ends the input and counts.
    pub(crate) async fn finish(mut self) -> Result<u64, DataFusionError> {
        if !self.hashes.is_empty() {
            self.send().await?;
        }
        let Sorter {
            input, mut output, ..
        } = self.sorter;
        drop(input);
        let mut count = 0u64;
        let mut last = [0u8; 16];
        while let Some(batch) = output.recv().await {
            let batch = batch?;
            for hash in batch.column(0).as_fixed_size_binary().iter().flatten() {
                if count == 0 || hash != last {
                    count += 1;
                    last.copy_from_slice(hash);
                }
            }
        }
        Ok(count)
    }
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
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_distinct_count_is_exact_past_its_memory_share() {
        // 1.2M hashes (19 MiB) in an 8 MiB pool: the count's sort spills.
        let ctx = crate::session(8 << 20, 8192).unwrap();
        let mut count = DistinctCount::start(&ctx).await.unwrap();
        for chunk in 0..120 {
            let emails = StringArray::from_iter((0..10_000).map(|i| {
                (i % 7 != 0).then(|| format!("c{}@x.org", (chunk * 10_000 + i) % 700_000))
            }));
            assert!(count.add(&EmailSet::keys(&emails)).await.unwrap());
        }
        // Every email is in the batches once or twice, less those left null.
        let expected = (0..1_200_000u64)
            .filter(|n| (n % 10_000) % 7 != 0)
            .map(|n| n % 700_000)
            .collect::<HashSet<_>>()
            .len() as u64;
        assert_eq!(count.finish().await.unwrap(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn later_contacts_count_each_email_for_its_first_row_past_their_memory_share() {
        // 900k rows (25 MiB of keys, positions and segments) in an 8 MiB pool: the sort
        // spills. Each of 400k emails recurs in up to three segments, in a shuffled order.
        let ctx = crate::session(8 << 20, 8192).unwrap();
        let mut later = LaterContacts::new(&ctx);
        let mut first_segment = std::collections::HashMap::new();
        for position in 0..900_000u64 {
            let email = (position * 7_919) % 400_000;
            let segment = ((position / 3 + email) % 3) as u32;
            first_segment.entry(email).or_insert(segment);
            let key = EmailSet::key(&format!("c{email}@x.org"));
            later.add(key, position, segment).unwrap();
            if position % 10_000 == 0 {
                assert!(later.flush().await.unwrap());
            }
        }
        let mut expected = vec![0u64; 3];
        for segment in first_segment.values() {
            expected[*segment as usize] += 1;
        }
        assert!(expected.iter().all(|n| *n > 0), "{expected:?}");
        assert_eq!(later.finish(3).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn later_contacts_with_no_rows_count_none() {
        let ctx = crate::session(8 << 20, 8192).unwrap();
        assert_eq!(LaterContacts::new(&ctx).finish(2).await.unwrap(), [0, 0]);
    }
}
