//! `journal.jsonl`: one line per body SendGrid accepted, written and synced before the run
//! goes on, so a killed run leaves a record of everything SendGrid took.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use pipeline_sink::UploadJournal;
use pipeline_sink::encoder::BodyKeys;
use pipeline_spec::IdentifierSet;
use serde::{Deserialize, Serialize};

use crate::remote::RemoteState;
use crate::{FieldHash, StateError, io};

/// One accepted body: its import job, its lists, and its contacts with their field hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalBatch {
    pub job_id: String,
    pub list_ids: Vec<String>,
    /// `[key, hash]` pairs (the key is the value of the export's identifier, its email
    /// by default); the hash written as 16 hex digits.
    pub contacts: Vec<(String, FieldHash)>,
    /// The identifiers each contact was sent with, in `contacts` order, as
    /// [`IdentifierSet::bits`]. Journals written before it was kept have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<u8>,
    /// The process whose run SendGrid accepted the body from ([`run_token`]). Journals
    /// written before it was kept have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run: String,
}

/// This process's mark on the journal lines it writes: its id and the time it first
/// wrote one. One process runs an export at most once, so the mark tells its bodies from
/// those an earlier, interrupted run left.
pub fn run_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    })
}

/// What this process's run got SendGrid to accept for the export whose journal is at
/// `path`: the contacts in its bodies and their import jobs. Read for a run that stopped
/// before its summary (interrupted, or failed while sending).
pub fn accepted_by_this_run(path: &Path) -> (u64, Vec<String>) {
    let batches = read_journal(path).unwrap_or_default();
    let mine = batches.iter().filter(|b| b.run == run_token());
    let contacts = mine.clone().map(|b| b.contacts.len() as u64).sum();
    let mut jobs: Vec<String> = mine.map(|b| b.job_id.clone()).collect();
    jobs.dedup();
    (contacts, jobs)
}

impl JournalBatch {
    /// The contacts with their hashes and identifier sets (empty when not recorded).
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, IdentifierSet)> + '_ {
        let identifiers = self
            .identifiers
            .iter()
            .map(|bits| IdentifierSet::from_bits(*bits))
            .chain(std::iter::repeat(IdentifierSet::default()));
        self.contacts
            .iter()
            .zip(identifiers)
            .map(|((e, h), i)| (e.as_str(), h.0, i))
    }
}

/// Reads the journal; no file is an empty journal. A last line cut short by a kill is
/// ignored (that body's job id never reached the disk, so it counts as not accepted).
pub fn read_journal(path: &Path) -> Result<Vec<JournalBatch>, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("cannot open {}", path.display()))(e)),
    };
    let mut lines = BufReader::new(file).split(b'\n').peekable();
    let mut out = Vec::new();
    let mut number = 0;
    while let Some(line) = lines.next() {
        number += 1;
        let line = line.map_err(io(format!("cannot read {}", path.display())))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<JournalBatch>(&line) {
            Ok(batch) => out.push(batch),
            Err(_) if lines.peek().is_none() => {
                tracing::warn!(
                    journal = %path.display(),
                    "Ignoring the journal's last line, cut short by an interrupted run"
                );
            }
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: path.to_owned(),
                    message: format!("line {number}: {e}"),
                    then: "the next run sends again the bodies it records, as upserts of the same contacts",
                });
            }
        }
    }
    Ok(out)
}

/// Replaces the journal with `batches`, or removes it when there are none.
pub fn rewrite_journal(path: &Path, batches: &[JournalBatch]) -> Result<(), StateError> {
    if batches.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("cannot remove {}", path.display()))(e))
            }
            _ => Ok(()),
        };
    }
    pipeline_sink::private_fs::replace_private_file(path, |file| {
        let mut out = std::io::BufWriter::new(file);
        for b in batches {
            serde_json::to_writer(&mut out, b)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })
    .map_err(io(format!("cannot write {}", path.display())))
}

/// The journals opened so far in this process, numbered in turn.
static OPENED: AtomicU64 = AtomicU64::new(0);

/// Journals numbered below this take no more records: those open when a run of an export
/// stopped early. A journal opened after (the next export's) takes them.
static CLOSED_BELOW: RwLock<u64> = RwLock::new(0);

/// Closes the journals open in this process, once every record being written is whole:
/// an upload still finishing after its export stopped (a task is cancelled only at its
/// next wait) is not recorded, so what the stopped export's history counts from the
/// journal is what the journal holds. Such a body is sent again by the next run, as if it
/// had never been accepted (an upsert of the same contacts).
pub fn close_journals() {
    *CLOSED_BELOW.write().unwrap_or_else(|e| e.into_inner()) = OPENED.load(Ordering::SeqCst);
}

/// Appends accepted bodies to the journal, each synced to disk before the upload goes on.
pub struct JournalWriter {
    /// Its number among the journals this process opened.
    number: u64,
    file: Mutex<File>,
    /// The state in a store each record is also uploaded to.
    remote: Option<Arc<RemoteState>>,
}

impl JournalWriter {
    pub fn open(path: &Path, remote: Option<Arc<RemoteState>>) -> Result<Self, StateError> {
        let file = pipeline_sink::private_fs::append_private_file(path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        Ok(Self {
            number: OPENED.fetch_add(1, Ordering::SeqCst),
            file: Mutex::new(file),
            remote,
        })
    }
}

#[derive(Serialize)]
struct Line<'a> {
    job_id: &'a str,
    list_ids: &'a [String],
    contacts: Vec<(&'a str, FieldHash)>,
    identifiers: Vec<u8>,
    run: &'a str,
}

impl JournalWriter {
    /// Appends one line and syncs it; one write per line, so a line is either whole or
    /// the cut-short last one.
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        // Held until the line is synced: closing waits for it.
        let closed_below = CLOSED_BELOW.read().unwrap_or_else(|e| e.into_inner());
        if self.number < *closed_below {
            return Err(std::io::Error::other(
                "the run has stopped: its journal takes no more records",
            ));
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(bytes)?;
        file.sync_data()
    }
}

impl UploadJournal for JournalWriter {
    fn accepted<'a>(
        &'a self,
        job_id: &'a str,
        list_ids: &'a [String],
        contacts: &'a BodyKeys,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let line = Line {
                job_id,
                list_ids,
                contacts: contacts.iter().map(|(e, h, _)| (e, FieldHash(h))).collect(),
                identifiers: contacts.identifiers().iter().map(|i| i.bits()).collect(),
                run: run_token(),
            };
            let mut bytes = serde_json::to_vec(&line)?;
            bytes.push(b'\n');
            self.append(&bytes)?;
            // No lock is held here: each record is an object of its own, numbered apart.
            if let Some(remote) = &self.remote {
                remote
                    .push_record(&bytes)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn keys(emails: &[&str]) -> BodyKeys {
        let mut k = BodyKeys::default();
        for (i, e) in emails.iter().enumerate() {
            k.push(e, i as u64 + 1, IdentifierSet::from_bits(1));
        }
        k
    }

    #[test]
    fn accepted_bodies_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        assert!(read_journal(&path).unwrap().is_empty());
        let w = JournalWriter::open(&path, None).unwrap();
        let lists = vec!["l1".to_string()];
        w.accepted("job-1", &lists, &keys(&["a@x.io", "b@x.io"]))
            .now_or_never()
            .unwrap()
            .unwrap();
        w.accepted("job-2", &lists, &keys(&["c@x.io"]))
            .now_or_never()
            .unwrap()
            .unwrap();
        let read = read_journal(&path).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].job_id, "job-1");
        assert_eq!(
            read[0].entries().collect::<Vec<_>>(),
            [
                ("a@x.io", 1, IdentifierSet::from_bits(1)),
                ("b@x.io", 2, IdentifierSet::from_bits(1))
            ]
        );
        assert_eq!(read[1].list_ids, lists);
    }

    #[test]
    fn a_line_cut_short_by_a_kill_is_ignored_but_damage_elsewhere_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let whole =
            r#"{"job_id":"j1","list_ids":["l"],"contacts":[["a@x.io","0000000000000001"]]}"#;
        std::fs::write(&path, format!("{whole}\n{{\"job_id\":\"j2\",\"li")).unwrap();
        let read = read_journal(&path).unwrap();
        assert_eq!(read.len(), 1);
        std::fs::write(&path, format!("garbage\n{whole}\n")).unwrap();
        let err = read_journal(&path).unwrap_err().to_string();
        assert!(err.contains("is damaged (line 1: "), "{err}");
        assert!(
            err.ends_with("move it away to start over (the next run sends again the bodies it records, as upserts of the same contacts)"),
            "{err}"
        );
    }

    #[test]
    fn rewriting_with_nothing_removes_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let batch = JournalBatch {
            job_id: "j".into(),
            list_ids: vec![],
            contacts: vec![("a@x.io".into(), FieldHash(7))],
            identifiers: vec![0b101],
            run: "1-2".into(),
        };
        rewrite_journal(&path, std::slice::from_ref(&batch)).unwrap();
        assert_eq!(read_journal(&path).unwrap(), [batch]);
        rewrite_journal(&path, &[]).unwrap();
        assert!(!path.exists());
        rewrite_journal(&path, &[]).unwrap();
    }
}
