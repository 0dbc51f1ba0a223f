//! Following SendGrid's import jobs: polled with a growing wait until each ends or the
//! timeout passes; a job that ended with errors has its errors file read into rejects.

use std::time::Duration;

use pipeline_sink::{JobReport, JobStatus, SinkError, SinkReject};
use sendgrid_client::{Client, ClientError};
use tokio::time::Instant;

use crate::errors_file::parse_errors_file;
use crate::sink_error;

/// Polls every job until it ends or the timeout passes; reads errored jobs' errors files
/// and returns the contacts they name, by identifier `key`. A job SendGrid does not know (404) is `failed`. A
/// job whose errors file cannot be read keeps its status and says why in
/// [`JobReport::errors_unread`]; none of its contacts then count as synced.
pub async fn follow_jobs(
    client: &Client,
    jobs: &mut [JobReport],
    timeout: Duration,
    key: &str,
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
            let results = &status.results;
            // Counts are filled while a job is pending too; they are final once it ends.
            job.requested = results.requested_count as u64;
            job.created = results.created_count as u64;
            job.updated = results.updated_count as u64;
            job.errored = results.errored_count as u64;
            job.status = match status.status.as_str() {
                "completed" => JobStatus::Completed,
                "errored" => JobStatus::Errored,
                // A job in which every contact errored ends `failed` with an errors file:
                // its contacts were refused, the job did not fail.
                "failed" if job.errored > 0 && results.errors_url.is_some() => JobStatus::Errored,
                "failed" => JobStatus::Failed,
                _ => JobStatus::Pending,
            };
            if job.status.open() {
                pending += 1;
                continue;
            }
            if job.errored == 0 {
                continue;
            }
            match read_errors(client, results.errors_url.as_deref(), job.errored, key).await {
                Ok(named) => rejects.extend(named.into_iter().map(|mut r| {
                    r.job_id = Some(job.job_id.clone());
                    r
                })),
                Err(why) => {
                    tracing::warn!(job = %job.job_id, reason = %why, "Cannot read the import job's errors file; its contacts are sent again next run");
                    job.errors_unread = Some(why);
                }
            }
        }
        tracing::trace!(
            target: "pipeline::progress",
            phase = "waiting",
            finished = (jobs.len() - pending) as u64,
            started = jobs.len() as u64
        );
        if pending == 0 || Instant::now() >= deadline {
            tracing::debug!(pending, "Stopped following the import jobs");
            return Ok(rejects);
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// The contacts an errors file names, when it can be read and names at least `errored`.
async fn read_errors(
    client: &Client,
    url: Option<&str>,
    errored: u64,
    key: &str,
) -> Result<Vec<SinkReject>, String> {
    let url = url.ok_or("SendGrid gave no errors file for it")?;
    let text = client
        .fetch_errors(url)
        .await
        .map_err(|e| format!("its errors file could not be downloaded: {e}"))?;
    let named = parse_errors_file(&text, key)
        .map_err(|e| format!("its errors file could not be read: {e}"))?;
    if (named.len() as u64) < errored {
        return Err(format!(
            "its errors file names {} contact(s), but {errored} errored",
            named.len()
        ));
    }
    Ok(named)
}
