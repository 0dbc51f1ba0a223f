//! Choosing an export's contacts with DataFusion's own operators.
//!
//! The export's order is total: `order_by`, then the segment's position, then the mapped
//! values (then the email as written, the alternate emails and the truncated flag, so that
//! rows it cannot tell apart are identical in everything sent). An email's contact is its
//! first row in that order, and the contacts kept are the first `max_profiles` emails.
//!
//! Rows arrive in any order. A [`Sorter`] feeds them, as they stream, into a DataFusion
//! sort over a streaming table: the sort runs under the session's memory pool and spills
//! to disk past its share, so no selection needs memory in proportion to its rows. An
//! [`EmailSet`] counts the distinct emails while the rows stream, so the cap's verdict is
//! known before the sorted rows come back; each email's first sorted row is its contact.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Schema, SchemaRef};
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
        let table = StreamingTable::try_new(schema, vec![Arc::new(fed)])?;
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
        Ok(Self { input, output })
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

/// The distinct emails of the valid rows, by a 128-bit hash of the normalised email.
#[derive(Default)]
pub(crate) struct EmailSet(HashSet<u128, BuildHasherDefault<Prehashed>>);

impl EmailSet {
    pub(crate) fn key(email: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(email.as_bytes())
    }

    pub(crate) fn insert(&mut self, email: &str) {
        self.0.insert(Self::key(email));
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// True the first time an email is taken: its first row in the export's order.
    pub(crate) fn take(&mut self, email: &str) -> bool {
        self.0.remove(&Self::key(email))
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
