//! Following SendGrid's import jobs: polled with a growing wait until each ends or the
//! timeout passes; a job that ended with errors has its errors file read into rejects.

use std::time::Duration;

use pipeline_sink::{JobReport, JobStatus, SinkError, SinkReject};
use sendgrid_client::{Client, ClientError};
use tokio::time::Instant;

use crate::errors_file::parse_errors_file;
use crate::sink_error;

/// Polls every job until it ends or the timeout passes; reads errored jobs' errors files
/// and returns the contacts they name. A job SendGrid does not know (404) is `failed`.
pub async fn follow_jobs(
    client: &Client,
    jobs: &mut [JobReport],
    timeout: Duration,
) -> Result<Vec<SinkReject>, SinkError> {
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(100);
    let mut rejects = Vec::new();
    loop {
        let mut pending = 0;
        for job in jobs.iter_mut().filter(|j| j.status.open()) {
            let status = match client.import_status(&job.job_id).await {
                Ok(status) => status,
                Err(ClientError::NotFound { .. }) => {
                    job.status = JobStatus::Failed;
                    continue;
                }
                Err(e) => return Err(sink_error(e)),
            };
            job.status = match status.status.as_str() {
                "completed" => JobStatus::Completed,
                "errored" => JobStatus::Errored,
                "failed" => JobStatus::Failed,
                _ => JobStatus::Pending,
            };
            job.requested = status.results.requested_count as u64;
            job.created = status.results.created_count as u64;
            job.updated = status.results.updated_count as u64;
            job.errored = status.results.errored_count as u64;
            if job.status.open() {
                pending += 1;
                continue;
            }
            if let Some(url) = status
                .results
                .errors_url
                .as_deref()
                .filter(|_| job.errored > 0)
            {
                let text = client.fetch_errors(url).await.map_err(sink_error)?;
                rejects.extend(parse_errors_file(&text).into_iter().map(|mut r| {
                    r.job_id = Some(job.job_id.clone());
                    r
                }));
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            tracing::debug!(pending, "Stopped following the import jobs");
            return Ok(rejects);
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
