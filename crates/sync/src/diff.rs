//! The incremental diff, a stage of the contact stream between the engine and the sink: a
//! contact is sent when SendGrid does not hold it with the same fields on the same lists.
//! Everything it sees is marked, so the contacts it never saw are the ones that left the
//! segments. The contacts it lets through carry their field hash ([`HASH_COLUMN`]) for the
//! run journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use futures::StreamExt;
use pipeline_sink::encoder::{HASH_COLUMN, contact_hashes, contact_identifiers, keys};
use pipeline_sink::{ContactField, ContactStream, ExportTarget, SinkReject, Stage};
use pipeline_spec::IdentifierSet;
use serde::Serialize;

use crate::{JournalBatch, Snapshot, list_key};

/// The reject reason of a contact held back because it lacks an identifier it was sent
/// with.
pub const IDENTIFIER_DROPPED: &str = "identifier_dropped";

/// What SendGrid holds (the snapshot) or is importing (the journal), by key.
#[derive(Debug, Clone, Default)]
pub struct Known {
    entries: HashMap<String, KnownEntry>,
}

#[derive(Debug, Clone)]
struct KnownEntry {
    hash: u64,
    lists: Arc<str>,
    seen: bool,
    /// SendGrid refused it for good with these fields: it is on no list.
    refused: bool,
    /// The identifiers it was sent with (empty: not known).
    identifiers: IdentifierSet,
}

impl Known {
    /// The snapshot's contacts, then the journal's (newer) on top.
    pub fn new(snapshot: &Snapshot, in_flight: &[JournalBatch]) -> Self {
        let mut entries: HashMap<String, KnownEntry> = snapshot
            .entries
            .iter()
            .map(|(email, e)| {
                let entry = KnownEntry {
                    hash: e.hash,
                    lists: e.lists.clone(),
                    seen: false,
                    refused: e.refused.is_some(),
                    identifiers: e.identifiers,
                };
                (email.clone(), entry)
            })
            .collect();
        for batch in in_flight {
            let lists = list_key(&batch.list_ids);
            for (email, hash, identifiers) in batch.entries() {
                let entry = KnownEntry {
                    hash,
                    lists: lists.clone(),
                    seen: false,
                    refused: false,
                    identifiers,
                };
                entries.insert(email.to_owned(), entry);
            }
        }
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How the contacts of a run compare with what SendGrid holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffCounts {
    /// Not on the export's lists yet.
    pub new: u64,
    /// On the lists with other field values, or not on all of the export's lists.
    pub changed: u64,
    /// Held by SendGrid exactly as selected: not sent.
    pub unchanged: u64,
    /// Refused by SendGrid for good with exactly these fields and lists: not sent again
    /// until they change (or `--full-refresh`).
    pub still_refused: u64,
}

/// The filter of one run, shared with the sink that applies it.
#[derive(Clone)]
pub struct Diff {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    known: Known,
    lists: Arc<str>,
    full_refresh: bool,
    counts: DiffCounts,
    /// Contacts held back because they lack an identifier they were sent with.
    held: Vec<SinkReject>,
}

impl Diff {
    /// Compares contacts with `known` for an export sending to `list_ids`; with
    /// `full_refresh` every contact is sent (and still counted).
    pub fn new(known: Known, list_ids: &[String], full_refresh: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                known,
                lists: list_key(list_ids),
                full_refresh,
                counts: DiffCounts::default(),
                held: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> DiffCounts {
        self.lock().counts
    }

    /// Known contacts the run never saw, with the lists they were sent to, by email.
    pub fn leavers(&self) -> Vec<(String, Arc<str>)> {
        let inner = self.lock();
        let mut out: Vec<(String, Arc<str>)> = inner
            .known
            .entries
            .iter()
            .filter(|(_, e)| !e.seen && !e.refused)
            .map(|(email, e)| (email.clone(), e.lists.clone()))
            .collect();
        out.sort_unstable();
        out
    }

    /// How many known contacts are on list `list_id`.
    pub fn known_on_list(&self, list_id: &str) -> u64 {
        self.lock()
            .known
            .entries
            .values()
            .filter(|e| !e.refused && e.lists.split(',').any(|l| l == list_id))
            .count() as u64
    }

    /// Refused contacts the run never saw: they left the segments, and are forgotten.
    pub fn unseen_refused(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .known
            .entries
            .iter()
            .filter(|(_, e)| e.refused && !e.seen)
            .map(|(email, _)| email.clone())
            .collect()
    }
}

impl Diff {
    /// Sees one contact of the export with the hash of its mapped fields and the
    /// identifiers it carries; says whether to send it. A contact without an identifier
    /// it was sent with is never sent (SendGrid refuses an update that leaves one out,
    /// even with `--full-refresh`): it is held back as a reject.
    pub fn admit(&mut self, email: &str, hash: u64, identifiers: IdentifierSet) -> bool {
        let mut inner = self.lock();
        let Inner {
            known,
            lists,
            full_refresh,
            counts,
            held,
        } = &mut *inner;
        let same = match known.entries.get_mut(email) {
            Some(entry) => {
                entry.seen = true;
                let dropped = entry.identifiers.missing_from(identifiers);
                if !entry.refused && !dropped.is_empty() {
                    held.push(identifier_dropped(email, dropped));
                    return false;
                }
                let same = entry.hash == hash && entry.lists == *lists;
                if same && entry.refused {
                    counts.still_refused += 1;
                    return *full_refresh;
                }
                if !same {
                    counts.changed += 1;
                }
                same
            }
            None => {
                counts.new += 1;
                false
            }
        };
        if same {
            counts.unchanged += 1;
        }
        *full_refresh || !same
    }
}

/// The reject of a contact that lacks the identifiers `dropped` it was sent with.
fn identifier_dropped(key: &str, dropped: IdentifierSet) -> SinkReject {
    let names = dropped.to_names().replace(',', ", ");
    SinkReject {
        email: key.to_owned(),
        reason: IDENTIFIER_DROPPED,
        message: format!(
            "it was sent to SendGrid with {names}, which this row has no value for; SendGrid \
             refuses an update without all of a contact's identifiers: map a value for it \
             (or delete the contact in SendGrid and run with --full-refresh)"
        ),
        job_id: None,
        hash: None,
    }
}

impl Stage for Diff {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        let mut diff = self.clone();
        let fields = target.fields.clone();
        contacts
            .map(move |batch| diff.changed(&batch?, &fields))
            .boxed()
    }

    fn rejects(&mut self) -> Vec<SinkReject> {
        std::mem::take(&mut self.lock().held)
    }
}

impl Diff {
    /// The contacts of `batch` to send, with their field hashes as a last column.
    fn changed(
        &mut self,
        batch: &RecordBatch,
        fields: &[ContactField],
    ) -> Result<RecordBatch, ArrowError> {
        let stage = |e: pipeline_sink::SinkError| ArrowError::ComputeError(e.to_string());
        let hashes = contact_hashes(batch, fields).map_err(stage)?;
        let emails = keys(batch).map_err(stage)?;
        let identifiers = contact_identifiers(batch, fields);
        let send: BooleanArray = emails
            .iter()
            .zip(hashes.values())
            .zip(identifiers)
            .map(|((email, hash), identifiers)| Some(self.admit(email, *hash, identifiers)))
            .collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(hashes));
        let mut schema: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
        schema.push(Arc::new(Field::new(HASH_COLUMN, DataType::UInt64, false)));
        let hashed = RecordBatch::try_new(Arc::new(Schema::new(schema)), columns)?;
        filter_record_batch(&hashed, &send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EMAIL;
    use crate::Entry;
    use pipeline_spec::IdentifierSet;

    fn known() -> Known {
        let mut snapshot = Snapshot::default();
        for (email, hash) in [("a@x.io", 1), ("b@x.io", 2), ("c@x.io", 3), ("d@x.io", 4)] {
            snapshot.entries.insert(
                email.into(),
                Entry {
                    hash,
                    lists: "l1".into(),
                    synced_at: 0,
                    refused: None,
                    identifiers: IdentifierSet::default(),
                },
            );
        }
        // c was resent with new fields by a run that did not finish.
        let in_flight = [JournalBatch {
            job_id: "j".into(),
            list_ids: vec!["l1".into()],
            contacts: vec![("c@x.io".into(), crate::FieldHash(30))],
            identifiers: vec![],
            run: String::new(),
        }];
        Known::new(&snapshot, &in_flight)
    }

    #[test]
    fn sends_new_and_changed_contacts_and_finds_leavers() {
        let mut diff = Diff::new(known(), &["l1".into()], false);
        let sent: Vec<bool> = [("a@x.io", 1), ("b@x.io", 20), ("c@x.io", 30), ("e@x.io", 5)]
            .into_iter()
            .map(|(e, h)| diff.admit(e, h, EMAIL))
            .collect();
        assert_eq!(sent, [false, true, false, true]);
        assert_eq!(
            diff.counts(),
            DiffCounts {
                new: 1,
                changed: 1,
                unchanged: 2,
                still_refused: 0,
            }
        );
        assert_eq!(diff.leavers(), [("d@x.io".to_string(), "l1".into())]);
    }

    /// Known contacts `a` (accepted) and `r1`, `r2`, `r3` (refused), all with hash 1 on l1.
    fn with_refusals(full_refresh: bool) -> Diff {
        let mut snapshot = Snapshot::default();
        for (email, refused) in [
            ("a", None),
            ("r1", Some("bounced")),
            ("r2", Some("x")),
            ("r3", Some("y")),
        ] {
            snapshot.entries.insert(
                format!("{email}@x.io"),
                Entry {
                    hash: 1,
                    lists: "l1".into(),
                    synced_at: 0,
                    refused: refused.map(Arc::from),
                    identifiers: IdentifierSet::default(),
                },
            );
        }
        Diff::new(Known::new(&snapshot, &[]), &["l1".into()], full_refresh)
    }

    #[test]
    fn a_refused_contact_is_sent_again_only_when_it_changes() {
        let mut diff = with_refusals(false);
        assert!(!diff.admit("a@x.io", 1, EMAIL));
        assert!(
            !diff.admit("r1@x.io", 1, EMAIL),
            "refused with these very fields"
        );
        assert!(diff.admit("r2@x.io", 2, EMAIL), "its data changed since");
        assert_eq!(
            diff.counts(),
            DiffCounts {
                new: 0,
                changed: 1,
                unchanged: 1,
                still_refused: 1,
            }
        );
        // r3 left the segments: it is on no list, so it is not a leaver, only forgotten.
        assert!(diff.leavers().is_empty());
        assert_eq!(diff.unseen_refused(), ["r3@x.io"]);
        assert_eq!(diff.known_on_list("l1"), 1);

        let mut refresh = with_refusals(true);
        assert!(
            refresh.admit("r1@x.io", 1, EMAIL),
            "--full-refresh sends it"
        );
    }

    #[test]
    fn a_contact_without_an_identifier_it_was_sent_with_is_held_back() {
        use pipeline_spec::Identifier::{Email, ExternalId};
        let both: IdentifierSet = [Email, ExternalId].into_iter().collect();
        let mut snapshot = Snapshot::default();
        for (key, identifiers) in [("1", both), ("2", both), ("3", IdentifierSet::default())] {
            snapshot.entries.insert(
                key.into(),
                Entry {
                    hash: 1,
                    lists: "l1".into(),
                    synced_at: 0,
                    refused: None,
                    identifiers,
                },
            );
        }
        let only_id: IdentifierSet = [ExternalId].into_iter().collect();
        for full_refresh in [false, true] {
            let mut diff = Diff::new(Known::new(&snapshot, &[]), &["l1".into()], full_refresh);
            assert!(!diff.admit("1", 2, only_id), "lost its email: held back");
            assert!(diff.admit("2", 2, both), "changed, all identifiers");
            assert!(diff.admit("3", 2, only_id), "identifiers not known: sent");
            let held = diff.rejects();
            assert_eq!(held.len(), 1);
            assert_eq!(
                (held[0].email.as_str(), held[0].reason),
                ("1", IDENTIFIER_DROPPED)
            );
            assert!(
                held[0]
                    .message
                    .starts_with("it was sent to SendGrid with email,")
            );
            assert_eq!(held[0].hash, None, "not remembered as a refusal");
            // Held back is still a member: not a leaver.
            assert!(diff.leavers().is_empty());
        }
    }

    #[test]
    fn a_new_list_makes_every_contact_changed() {
        let mut diff = Diff::new(known(), &["l2".into(), "l1".into()], false);
        assert!(diff.admit("a@x.io", 1, EMAIL));
        assert_eq!(diff.counts().changed, 1);
    }

    #[test]
    fn full_refresh_sends_everything_but_still_counts() {
        let mut diff = Diff::new(known(), &["l1".into()], true);
        assert!(diff.admit("a@x.io", 1, EMAIL));
        assert_eq!(diff.counts().unchanged, 1);
        assert_eq!(diff.known_on_list("l1"), 4);
    }
}
