//! The sync protocol of one export ([`ExportSync`]: lock, resume, fold, diff, journal,
//! mirror) and the state it keeps, in a folder of its own per export:
//!
//! - `snapshot.parquet`: what SendGrid accepted, one row per contact (email, a hash of the
//!   mapped fields, the list ids, when): the base of incremental runs and of mirror mode.
//!   Written whole to a temporary file and renamed, so it is always the old or the new one.
//! - `journal.jsonl`: the bodies SendGrid accepted since the snapshot, one line each with
//!   the job id, appended and synced to disk as they are accepted. The next run follows
//!   those jobs and folds them into the snapshot, so nothing accepted is sent twice.
//! - `run.lock`: held (an OS file lock) by the run of the export; a dead process's lock
//!   goes with the process.
//!
//! Files holding emails are owner-only.

mod diff;
mod fold;
mod history;
mod journal;
mod lease;
mod lock;
pub mod mirror;
#[cfg(test)]
mod properties;
mod protocol;
pub mod remote;
mod report;
mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

pub use diff::{Diff, DiffCounts, Known};
pub use fold::{fold, remember_refusals};
pub use history::{RunRecord, append_history, read_history};
pub use journal::{JournalBatch, JournalWriter, close_journals, read_journal, rewrite_journal};
pub use lease::LeaseLock;
pub use lock::RunLock;
pub use protocol::{ExportSync, SyncError, SyncOptions};
pub use remote::RemoteState;
pub use report::{RemovalOutcome, SyncReport, SyncedExport};
pub use snapshot::{Entry, Snapshot, SnapshotMeta};

/// Why the state could not be read, written or locked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A state file is not what this tool writes; `then` says what moving it away costs.
    #[error(
        "{} is damaged ({message}); move it away to start over ({then})",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        message: String,
        then: &'static str,
    },
    /// Another run holds the export's lock.
    #[error(
        "export `{export}` is already running ({holder}); wait for it to end. The lock is {} and is released when that process ends",
        path.display()
    )]
    Busy {
        export: String,
        holder: String,
        path: PathBuf,
    },
    /// The object store holding the state failed or refused.
    #[error("{context}: {message}")]
    Store { context: String, message: String },
    /// Another pipeline file, beside this one, has an export of the same name whose runs
    /// keep their state in the same folder.
    #[error(
        "the state folder {} holds export `{export}` of {owner}, which is beside {this}: two pipeline files with an export of one name share its state folder, and each file's runs would take the other's contacts for their own (and mirror mode would take them off the lists). Give {this} a state_dir of its own (`state_dir: .state/{stem}`), or rename one of the exports",
        path.display()
    )]
    Shared {
        path: PathBuf,
        export: String,
        owner: String,
        this: String,
        stem: String,
    },
}

impl pipeline_spec::Classified for StateError {
    fn kind(&self) -> pipeline_spec::ErrorKind {
        use pipeline_spec::ErrorKind;
        match self {
            Self::Io { .. } => ErrorKind::Io,
            Self::Corrupt { .. } => ErrorKind::Config,
            Self::Busy { .. } => ErrorKind::Busy,
            Self::Store { .. } => ErrorKind::Remote,
            Self::Shared { .. } => ErrorKind::Config,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Io { context, source }
}

/// A field hash as the state files write it: 16 hex digits.
pub fn hash_hex(hash: u64) -> String {
    with_hash_hex(hash, str::to_owned)
}

/// Hands `f` the 16 lower-case hex digits of `hash`, built on the stack without
/// formatting machinery (the snapshot and journal write one per contact).
pub fn with_hash_hex<R>(hash: u64, f: impl FnOnce(&str) -> R) -> R {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    f(std::str::from_utf8(&out).expect("hex digits are ASCII"))
}

/// A field hash in the journal: written as [`hash_hex`] does; read leniently, so a
/// malformed one reads as 0, which never equals a real hash (the contact is sent again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldHash(pub u64);

impl serde::Serialize for FieldHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_hash_hex(self.0, |digits| serializer.serialize_str(digits))
    }
}

impl<'de> serde::Deserialize<'de> for FieldHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = FieldHash;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field hash as 16 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FieldHash, E> {
                Ok(FieldHash(parse_hash(text).unwrap_or(0)))
            }
        }
        deserializer.deserialize_str(Hex)
    }
}

/// Reads a field hash written by [`hash_hex`].
pub fn parse_hash(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// List ids as the state compares them: sorted, comma-separated.
pub fn list_key(list_ids: &[String]) -> Arc<str> {
    let mut ids: Vec<&str> = list_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.join(",").into()
}

/// One export's state: a local folder, or a folder in an object store worked on through
/// a private local copy ([`remote`]).
#[derive(Debug, Clone)]
pub struct StateDir {
    /// The local folder the state's files are read from and written to.
    pub dir: PathBuf,
    remote: Option<Arc<RemoteState>>,
    lease: std::time::Duration,
}

/// The lock of an export's run, held until dropped.
#[derive(Debug)]
pub enum StateLock {
    Local(RunLock),
    Lease(LeaseLock),
}

impl StateLock {
    /// Who held the lock before and ended without releasing it, if anyone.
    pub fn recovered_from(&self) -> Option<&str> {
        match self {
            Self::Local(l) => l.recovered_from.as_deref(),
            Self::Lease(l) => l.recovered_from.as_deref(),
        }
    }
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            remote: None,
            lease: std::time::Duration::from_secs(60),
        }
    }

    /// A state in an object store, locked by leases of `lease`.
    pub fn in_store(remote: RemoteState, lease: std::time::Duration) -> Self {
        Self {
            dir: remote.work_dir().to_owned(),
            remote: Some(Arc::new(remote)),
            lease,
        }
    }

    /// Whether the state lives in an object store.
    pub fn is_in_store(&self) -> bool {
        self.remote.is_some()
    }

    /// Where the state is, for people: the folder, or the store URL.
    pub fn location(&self) -> PathBuf {
        match &self.remote {
            Some(r) => PathBuf::from(r.url.as_str()),
            None => self.dir.clone(),
        }
    }

    pub fn snapshot(&self) -> PathBuf {
        self.dir.join("snapshot.parquet")
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("run.lock")
    }

    pub fn history(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    /// Creates the folder, owner-only.
    pub fn create(&self) -> Result<(), StateError> {
        pipeline_sink::private_fs::create_private_dir(&self.dir).map_err(io(format!(
            "cannot create the state folder {}",
            self.dir.display()
        )))
    }

    /// Takes the export's lock: an OS lock on a local folder, a lease in a store.
    pub async fn lock(&self, export: &str) -> Result<StateLock, StateError> {
        match &self.remote {
            Some(remote) => Ok(StateLock::Lease(
                LeaseLock::acquire(remote, export, self.lease).await?,
            )),
            None => Ok(StateLock::Local(RunLock::acquire(
                &self.lock_path(),
                export,
            )?)),
        }
    }

    /// Brings the local copy of a state in a store up to date (nothing for a local one).
    pub async fn pull(&self) -> Result<(), StateError> {
        match &self.remote {
            Some(remote) => remote.pull().await,
            None => Ok(()),
        }
    }

    /// Saves the snapshot, and uploads it to the store.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StateError> {
        snapshot.save(&self.snapshot())?;
        match &self.remote {
            Some(remote) => remote.push("snapshot.parquet").await,
            None => Ok(()),
        }
    }

    /// Rewrites the journal with `batches` (removed when empty), in the store too.
    pub async fn rewrite_journal(&self, batches: &[JournalBatch]) -> Result<(), StateError> {
        rewrite_journal(&self.journal(), batches)?;
        match &self.remote {
            Some(remote) => remote.replace_journal().await,
            None => Ok(()),
        }
    }

    /// The contacts and import jobs of the bodies SendGrid accepted from this process's
    /// run that the journal holds: for a run that stopped before its summary. A state in
    /// a store has its journal fetched first (this handle's copy may be another run's
    /// working folder); one that cannot be fetched counts nothing.
    pub async fn accepted_by_this_run(&self) -> Result<(u64, Vec<String>), StateError> {
        if let Some(remote) = &self.remote {
            remote.pull_journal().await?;
        }
        Ok(journal::accepted_by_this_run(&self.journal()))
    }

    /// A writer appending accepted bodies to the journal, each durable (on disk, and in
    /// the store) before the upload goes on.
    pub fn journal_writer(&self) -> Result<JournalWriter, StateError> {
        JournalWriter::open(&self.journal(), self.remote.clone())
    }

    /// Appends a run to the export's history.
    pub async fn append_history(&self, record: &RunRecord) -> Result<(), StateError> {
        match &self.remote {
            Some(remote) => {
                let line = history::history_line(record).map_err(|e| StateError::Store {
                    context: "cannot write the history".into(),
                    message: e.to_string(),
                })?;
                remote.append_history(&line).await
            }
            None => append_history(&self.history(), record),
        }
    }

    /// The export's run history, oldest first.
    pub async fn read_history(&self) -> Result<Vec<RunRecord>, StateError> {
        match &self.remote {
            Some(remote) => read_history(&remote.pull_history().await?),
            None => read_history(&self.history()),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A contact that carries its email alone, for the tests.
#[cfg(test)]
pub(crate) const EMAIL: pipeline_spec::IdentifierSet = pipeline_spec::IdentifierSet::from_bits(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_as_hex() {
        for h in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(parse_hash(&hash_hex(h)), Some(h));
        }
        assert_eq!(parse_hash("xyz"), None);
        assert_eq!(parse_hash("0123456789abcdeg"), None);
    }

    #[test]
    fn list_keys_ignore_order_and_repeats() {
        let a = list_key(&["b".into(), "a".into(), "b".into()]);
        assert_eq!(&*a, "a,b");
        assert_eq!(a, list_key(&["a".into(), "b".into()]));
    }

    #[test]
    fn field_hashes_are_sixteen_hex_digits_and_read_leniently() {
        assert_eq!(hash_hex(0x0123_4567_89ab_cdef), "0123456789abcdef");
        assert_eq!(hash_hex(7), "0000000000000007");
        assert_eq!(parse_hash(&hash_hex(u64::MAX)), Some(u64::MAX));
        let json = serde_json::to_string(&FieldHash(255)).unwrap();
        assert_eq!(json, "\"00000000000000ff\"");
        assert_eq!(
            serde_json::from_str::<FieldHash>(&json).unwrap(),
            FieldHash(255)
        );
        assert_eq!(
            serde_json::from_str::<FieldHash>("\"xyz\"").unwrap(),
            FieldHash(0)
        );
    }
}
