//! Folding: which accepted bodies join the snapshot, which are sent again, which wait.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline_sink::{JobStatus, SinkReject};
use pipeline_spec::IdentifierSet;

use crate::{Entry, JournalBatch, Snapshot, list_key, unix_now};

/// Folds accepted bodies whose jobs were imported into the snapshot; the contacts the job's
/// errors name join it as refused (with the fields SendGrid refused, so they are not sent
/// again until those change); drops the bodies whose jobs failed (they are sent again);
/// returns the ones still running or never followed.
pub fn fold(
    snapshot: &mut Snapshot,
    batches: Vec<JournalBatch>,
    statuses: &HashMap<String, JobStatus>,
    rejects: &[SinkReject],
) -> Vec<JournalBatch> {
    let errored: HashMap<(&str, &str), &str> = rejects
        .iter()
        .filter_map(|r| Some(((r.job_id.as_deref()?, r.email.as_str()), r.message.as_str())))
        .collect();
    let now = unix_now();
    let mut unfinished = Vec::new();
    for batch in batches {
        match statuses.get(&batch.job_id).copied() {
            Some(status) if status.imported() => {
                let lists = list_key(&batch.list_ids);
                snapshot.entries.reserve(batch.contacts.len());
                for (email, hash, identifiers) in batch.entries() {
                    let refused = if errored.is_empty() {
                        None
                    } else {
                        errored
                            .get(&(batch.job_id.as_str(), email))
                            .map(|message| Arc::from(*message))
                    };
                    // A refused contact's identifiers are not SendGrid's to keep.
                    let identifiers = if refused.is_some() {
                        IdentifierSet::default()
                    } else {
                        identifiers
                    };
                    snapshot.entries.insert(
                        email.to_owned(),
                        Entry {
                            hash,
                            lists: lists.clone(),
                            synced_at: now,
                            refused,
                            identifiers,
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

/// Remembers the contacts SendGrid refused at upload (a 400 naming them) with the fields
/// they were refused with, so an unchanged one is not sent again.
pub fn remember_refusals(snapshot: &mut Snapshot, rejects: &[SinkReject], list_ids: &[String]) {
    let lists = list_key(list_ids);
    let now = unix_now();
    for reject in rejects {
        if let Some(hash) = reject.hash.filter(|_| reject.job_id.is_none()) {
            snapshot.entries.insert(
                reject.email.clone(),
                Entry {
                    hash,
                    lists: lists.clone(),
                    synced_at: now,
                    refused: Some(Arc::from(reject.message.as_str())),
                    // SendGrid stored none of them.
                    identifiers: IdentifierSet::default(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EMAIL;
    use crate::{Diff, FieldHash, Known};

    fn batch(job: &str, emails: &[&str]) -> JournalBatch {
        JournalBatch {
            job_id: job.into(),
            list_ids: vec!["l2".into(), "l1".into()],
            contacts: emails
                .iter()
                .map(|e| ((*e).to_owned(), FieldHash(7)))
                .collect(),
            identifiers: vec![],
            run: String::new(),
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
            hash: None,
        }];
        let left = fold(&mut snapshot, batches, &statuses, &rejects);

        let mut folded: Vec<&str> = snapshot.entries.keys().map(String::as_str).collect();
        folded.sort_unstable();
        assert_eq!(folded, ["a@x.io", "b@x.io", "c@x.io"]);
        // c@x.io is named by its job's errors: it is remembered as refused, with the
        // fields it was refused with.
        assert_eq!(snapshot.entries["c@x.io"].refused.as_deref(), Some("bad"));
        assert_eq!(snapshot.entries["c@x.io"].hash, 7);
        assert_eq!(snapshot.entries["b@x.io"].refused, None);
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
            hash: None,
        }];
        fold(
            &mut snapshot,
            vec![batch("done", &["a@x.io"])],
            &statuses(&[("done", JobStatus::Completed)]),
            &rejects,
        );
        assert_eq!(snapshot.entries["a@x.io"].refused, None);
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
        assert!(!diff.admit("a@x.io", 7, EMAIL), "synced and unchanged");
        assert!(!diff.admit("b@x.io", 7, EMAIL), "in flight and unchanged");
        assert!(diff.admit("b@x.io", 8, EMAIL), "in flight, then changed");
        assert!(diff.admit("c@x.io", 7, EMAIL), "new");
    }
}
