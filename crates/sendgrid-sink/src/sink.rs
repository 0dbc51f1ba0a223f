//! The sink's run: preflight, then bodies uploaded as the selection hands over batches,
//! then the import jobs followed.

use futures::future::BoxFuture;
use pipeline_sink::encoder::{BodyEncoder, bodies, next_body};
use pipeline_sink::{
    ContactStream, ExportTarget, JobReport, JobStatus, Sink, SinkError, SinkReport,
};
use tokio::task::JoinSet;

use crate::SendgridSink;
use crate::jobs::follow_jobs;
use crate::upload::{Uploaded, upload};

impl Sink for SendgridSink {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let fields = self.preflight(target).await?;
            let encoder = BodyEncoder::for_target_sent_as(target, fields);
            let mut bodies = bodies(contacts, encoder);
            let concurrency = self.settings.concurrency.max(1);
            let mut tasks: JoinSet<Result<Uploaded, SinkError>> = JoinSet::new();
            let mut done = Uploaded::default();
            while let Some(body) = next_body(&mut bodies, &mut done.rejects).await {
                let body = body?;
                // A body starts only while fewer than `concurrency` uploads are in flight
                // and every finished one succeeded: after a failure nothing more is sent.
                while tasks.len() >= concurrency {
                    let finished = tasks.join_next().await.expect("uploads in flight");
                    done.absorb(finished)?;
                }
                while let Some(finished) = tasks.try_join_next() {
                    done.absorb(finished)?;
                }
                let client = self.client.clone();
                let journal = self.journal.clone();
                let list_ids = target.list_ids.clone();
                let key = target.key().to_owned();
                tasks.spawn(async move {
                    upload(&client, body, &list_ids, &key, journal.as_deref()).await
                });
            }
            while let Some(finished) = tasks.join_next().await {
                if let Err(e) = done.absorb(finished) {
                    tasks.abort_all();
                    return Err(e);
                }
            }

            let stats = self.client.stats();
            let mut report = SinkReport {
                requests: done.requests,
                contacts: done.contacts,
                bytes: done.bytes,
                rejects: std::mem::take(&mut self.earlier_rejects)
                    .into_iter()
                    .chain(done.rejects)
                    .collect(),
                retries: stats.retries,
                rate_limited: stats.rate_limited,
                ..Default::default()
            };
            report.jobs = done
                .jobs
                .into_iter()
                .map(|(job_id, requested)| JobReport {
                    job_id,
                    status: JobStatus::Accepted,
                    requested,
                    ..Default::default()
                })
                .collect();
            if self.settings.wait_for_import {
                tracing::debug!(jobs = report.jobs.len(), "Following the import jobs");
                let following = std::time::Instant::now();
                let rejects = follow_jobs(
                    &self.client,
                    &mut report.jobs,
                    self.settings.import_timeout,
                    target.key(),
                )
                .await?;
                report.import_wait_ms = following.elapsed().as_millis() as u64;
                report.rejects.extend(rejects);
            }
            Ok(report)
        })
    }
}
