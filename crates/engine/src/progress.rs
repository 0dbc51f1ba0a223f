//! Progress for a display on a terminal: while an export's query runs, the rows its
//! Parquet scans have gone through, against the rows the files' footers hold.
//!
//! Progress travels as `tracing` events on target `pipeline::progress` at `TRACE`, which
//! a log filter never shows by default; a display subscribes to them (the CLI's on a
//! terminal). When nothing subscribes, nothing is measured.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use tokio::task::JoinHandle;

/// Whether anything listens to progress events.
pub fn wanted() -> bool {
    tracing::enabled!(target: "pipeline::progress", tracing::Level::TRACE)
}

/// Rows in each Parquet file, by its path as the query's scans name it (no leading `/`).
pub(crate) type FooterRows = HashMap<String, u64>;

/// The key of `path` in [`FooterRows`].
pub(crate) fn footer_key(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// Reports, every 200 ms until aborted, the rows `plans`' scans have read for `export`.
/// The plans run in turn and each is dropped after its turn (with the tables its joins
/// built): the watch holds them weakly and keeps the last count of each one gone.
pub(crate) fn watch(
    plans: &[Arc<dyn ExecutionPlan>],
    footers: &FooterRows,
    export: &str,
) -> Option<JoinHandle<()>> {
    if !wanted() {
        return None;
    }
    let total = plans
        .iter()
        .map(|plan| total_rows(plan, footers))
        .sum::<Option<u64>>()
        .unwrap_or(0);
    let plans: Vec<Weak<dyn ExecutionPlan>> = plans.iter().map(Arc::downgrade).collect();
    let mut last = vec![0; plans.len()];
    let export = export.to_owned();
    Some(tokio::spawn(async move {
        loop {
            for (plan, last) in plans.iter().zip(&mut last) {
                if let Some(plan) = plan.upgrade() {
                    *last = rows_read(&plan);
                }
            }
            let read: u64 = last.iter().sum();
            tracing::trace!(target: "pipeline::progress", export = %export, phase = "reading", read, total);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
}

/// The plan's Parquet scans, depth first.
fn scans(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
    if plan.is::<DataSourceExec>() {
        out.push(plan.clone());
    }
    for child in plan.children() {
        scans(child, out);
    }
}

/// Rows the scans have passed through their filters so far (kept or dropped).
fn rows_read(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut found = Vec::new();
    scans(plan, &mut found);
    found
        .iter()
        .filter_map(|scan| scan.metrics())
        .map(|m| {
            let pruned = m
                .sum_by_name("pushdown_rows_pruned")
                .map_or(0, |v| v.as_usize());
            (m.output_rows().unwrap_or(0) + pruned) as u64
        })
        .sum()
}

/// Rows in the files the scans read, from their footers; `None` when a file is unknown.
fn total_rows(plan: &Arc<dyn ExecutionPlan>, footers: &FooterRows) -> Option<u64> {
    let mut found = Vec::new();
    scans(plan, &mut found);
    let mut total = 0;
    for scan in &found {
        let exec = scan.downcast_ref::<DataSourceExec>()?;
        let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
        for file in config.file_groups.iter().flat_map(|g| g.files()) {
            total += footers.get(&footer_key(file.object_meta.location.as_ref()))?;
        }
    }
    Some(total)
}
