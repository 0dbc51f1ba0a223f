//! Folding: which accepted bodies join the snapshot, which are sent again, which wait.

use std::collections::{HashMap, HashSet};

use pipeline_sink::{JobStatus, SinkReject};

use crate::{Entry, JournalBatch, Snapshot, list_key, unix_now};

/// Folds accepted bodies whose jobs were imported into the snapshot (minus the contacts the
/// job's errors name); drops those whose jobs failed (they are sent again); returns the
/// ones still running or never followed.
pub fn fold(
    snapshot: &mut Snapshot,
    batches: Vec<JournalBatch>,
    statuses: &HashMap<String, JobStatus>,
    rejects: &[SinkReject],
) -> Vec<JournalBatch> {
    let errored: HashSet<(&str, &str)> = rejects
        .iter()
        .filter_map(|r| Some((r.job_id.as_deref()?, r.email.as_str())))
        .collect();
    let now = unix_now();
    let mut unfinished = Vec::new();
    for batch in batches {
        match statuses.get(&batch.job_id).copied() {
            Some(status) if status.imported() => {
                let lists = list_key(&batch.list_ids);
                snapshot.entries.reserve(batch.contacts.len());
                for (email, hash) in batch.contacts {
                    if !errored.is_empty()
                        && errored.contains(&(batch.job_id.as_str(), email.as_str()))
                    {
                        continue;
                    }
                    snapshot.entries.insert(
                        email,
                        Entry {
                            hash: hash.0,
                            lists: lists.clone(),
                            synced_at: now,
                        },
                    );
                }
            }
            Some(JobStatus::Failed) => {}
            _ => unfinished.push(batch),
        }
    }
    unfinished
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Diff, FieldHash, Known};

    fn batch(job: &str, emails: &[&str]) -> JournalBatch {
        JournalBatch {
            job_id: job.into(),
            list_ids: vec!["l2".into(), "l1".into()],
            contacts: emails
                .iter()
                .map(|e| ((*e).to_owned(), FieldHash(7)))
                .collect(),
        }
    }

    fn statuses(pairs: &[(&str, JobStatus)]) -> HashMap<String, JobStatus> {
        pairs.iter().map(|(j, s)| ((*j).to_owned(), *s)).collect()
    }

    #[test]
    fn imported_jobs_fold_failed_ones_are_dropped_and_open_ones_stay() {
        let mut snapshot = Snapshot::default();
        let batches = vec![
            batch("done", &["a@x.io"]),
            batch("partly", &["b@x.io", "c@x.io"]),
            batch("failed", &["d@x.io"]),
            batch("pending", &["e@x.io"]),
            batch("accepted", &["f@x.io"]),
            batch("unknown", &["g@x.io"]),
        ];
        let statuses = statuses(&[
            ("done", JobStatus::Completed),
            ("partly", JobStatus::Errored),
            ("failed", JobStatus::Failed),
            ("pending", JobStatus::Pending),
            ("accepted", JobStatus::Accepted),
        ]);
        let rejects = [SinkReject {
            email: "c@x.io".into(),
            reason: "import_errored",
            message: "bad".into(),
            job_id: Some("partly".into()),
        }];
        let left = fold(&mut snapshot, batches, &statuses, &rejects);

        let mut folded: Vec<&str> = snapshot.entries.keys().map(String::as_str).collect();
        folded.sort_unstable();
        // c@x.io is named by its job's errors: it is not synced and is sent again.
        assert_eq!(folded, ["a@x.io", "b@x.io"]);
        assert_eq!(snapshot.entries["a@x.io"].hash, 7);
        assert_eq!(&*snapshot.entries["a@x.io"].lists, "l1,l2");
        let open: Vec<&str> = left.iter().map(|b| b.job_id.as_str()).collect();
        assert_eq!(open, ["pending", "accepted", "unknown"]);
    }

    #[test]
    fn an_errors_file_entry_of_another_job_does_not_unsync_a_contact() {
        let mut snapshot = Snapshot::default();
        let rejects = [SinkReject {
            email: "a@x.io".into(),
            reason: "import_errored",
            message: "bad".into(),
            job_id: Some("other".into()),
        }];
        fold(
            &mut snapshot,
            vec![batch("done", &["a@x.io"])],
            &statuses(&[("done", JobStatus::Completed)]),
            &rejects,
        );
        assert!(snapshot.entries.contains_key("a@x.io"));
    }

    #[test]
    fn contacts_in_flight_are_not_resent_unless_changed() {
        let mut snapshot = Snapshot::default();
        fold(
            &mut snapshot,
            vec![batch("done", &["a@x.io"])],
            &statuses(&[("done", JobStatus::Completed)]),
            &[],
        );
        // b@x.io was accepted by an interrupted run whose job is still open.
        let in_flight = [batch("open", &["b@x.io"])];
        let mut diff = Diff::new(
            Known::new(&snapshot, &in_flight),
            &["l1".into(), "l2".into()],
            false,
        );
        assert!(!diff.admit("a@x.io", 7), "synced and unchanged");
        assert!(!diff.admit("b@x.io", 7), "in flight and unchanged");
        assert!(diff.admit("b@x.io", 8), "in flight, then changed");
        assert!(diff.admit("c@x.io", 7), "new");
    }
}
