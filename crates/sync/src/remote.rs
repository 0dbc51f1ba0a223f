//! An export's state in an object store, shared by every worker that runs the pipeline.
//!
//! The run works on a private local copy (the same files, read and written by the same
//! code as a local state) and mirrors each change to the store as it is made:
//!
//! - `snapshot.parquet` is uploaded whole after each local save; an object store's PUT
//!   replaces an object atomically, so readers see the old or the new snapshot.
//! - each journal record is uploaded as its own object (`journal/NNNNNNNNNN.jsonl`)
//!   before the upload goes on, since objects cannot be appended to; the next run reads
//!   them in order. Rewriting the journal deletes them and writes the rest as one.
//! - `history.jsonl` is uploaded whole after each run.
//! - `run.lock` is a lease ([`crate::lease`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use pipeline_engine::store::{self, Store, StorePath};

use crate::StateError;

/// The store, the prefix of one export's state in it, and the run's local copy.
#[derive(Debug)]
pub struct RemoteState {
    pub(crate) store: Store,
    pub(crate) prefix: StorePath,
    /// `s3://bucket/prefix/export`, for messages.
    pub(crate) url: url::Url,
    /// The run's private local copy of the state.
    work: tempfile::TempDir,
    /// The next journal object's number.
    next_record: AtomicU64,
    /// Set when the run's lease was lost: nothing more may be written.
    pub(crate) lost: Arc<AtomicBool>,
}

const SNAPSHOT: &str = "snapshot.parquet";
const HISTORY: &str = "history.jsonl";
const JOURNAL: &str = "journal";

impl RemoteState {
    /// The state at `url`, with a fresh private working copy.
    pub fn new(store: Store, url: url::Url) -> Result<Self, StateError> {
        let prefix = store::path_in_store(&url).map_err(|message| StateError::Store {
            context: format!("the state folder {url}"),
            message,
        })?;
        let work = tempfile::Builder::new()
            .prefix("pipeline-state-")
            .tempdir()
            .map_err(crate::io("cannot create a working folder for the state"))?;
        Ok(Self {
            store,
            prefix,
            url,
            work,
            next_record: AtomicU64::new(0),
            lost: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The local folder the run reads and writes.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    pub(crate) fn object(&self, name: &str) -> StorePath {
        self.prefix.clone().join(name)
    }

    fn error(&self, what: &str, e: &object_store::Error) -> StateError {
        StateError::Store {
            context: format!("{what} the state at {}", self.url),
            message: store::describe(self.store.cloud, &self.url, e),
        }
    }

    fn local(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Copies the state from the store into the working folder.
    pub async fn pull(&self) -> Result<(), StateError> {
        for name in [SNAPSHOT, HISTORY] {
            let bytes = self.get(&self.object(name)).await?;
            write_local(&self.local(name), bytes.as_deref())?;
        }
        self.pull_journal().await
    }

    /// Copies the journal from the store into the working folder.
    pub async fn pull_journal(&self) -> Result<(), StateError> {
        let records = self.journal_records().await?;
        let mut journal = Vec::new();
        for path in &records {
            if let Some(bytes) = self.get(path).await? {
                journal.extend_from_slice(&bytes);
            }
        }
        let next = records
            .last()
            .and_then(|p| p.filename()?.strip_suffix(".jsonl")?.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        self.next_record.store(next, Ordering::SeqCst);
        write_local(
            &self.local("journal.jsonl"),
            (!journal.is_empty()).then_some(&journal[..]),
        )
    }

    /// The journal's objects, oldest first.
    async fn journal_records(&self) -> Result<Vec<StorePath>, StateError> {
        let prefix = self.object(JOURNAL);
        let mut paths: Vec<StorePath> = self
            .store
            .inner
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| self.error("cannot list the journal of", &e))?;
        paths.sort();
        Ok(paths)
    }

    async fn get(&self, path: &StorePath) -> Result<Option<Vec<u8>>, StateError> {
        match self.store.inner.get(path).await {
            Ok(found) => Ok(Some(
                found
                    .bytes()
                    .await
                    .map_err(|e| self.error("cannot read", &e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("cannot read", &e)),
        }
    }

    fn check_lease(&self) -> Result<(), StateError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StateError::Store {
                context: format!("the state at {}", self.url),
                message: "this run lost its lock (it could not renew it in time) and another run may hold it now; \
                          it stops writing the state. Rerun once the other run ends"
                    .into(),
            });
        }
        Ok(())
    }

    async fn put(&self, path: &StorePath, bytes: Vec<u8>) -> Result<(), StateError> {
        self.check_lease()?;
        self.store
            .inner
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("cannot write", &e))?;
        Ok(())
    }

    /// Uploads the local file `name` (a snapshot or the history).
    pub async fn push(&self, name: &str) -> Result<(), StateError> {
        let bytes = std::fs::read(self.local(name))
            .map_err(crate::io(format!("cannot read the working copy of {name}")))?;
        self.put(&self.object(name), bytes).await
    }

    /// Uploads one journal record as an object of its own.
    pub async fn push_record(&self, line: &[u8]) -> Result<(), StateError> {
        let n = self.next_record.fetch_add(1, Ordering::SeqCst);
        let path = self.object(JOURNAL).join(format!("{n:010}.jsonl"));
        self.put(&path, line.to_vec()).await
    }

    /// Replaces the journal's objects with the local journal (or none when it is gone).
    pub async fn replace_journal(&self) -> Result<(), StateError> {
        self.check_lease()?;
        // Deleted first: a run that dies before the rest is written resends those
        // contacts, which is safe; one that found them twice would fold them twice.
        for path in self.journal_records().await? {
            match self.store.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("cannot rewrite the journal of", &e)),
            }
        }
        match std::fs::read(self.local("journal.jsonl")) {
            Ok(bytes) if !bytes.is_empty() => self.push_record(&bytes).await,
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::io("cannot read the working copy of the journal")(e)),
        }
    }
}

impl RemoteState {
    /// Appends `line` to the history object, by a write conditional on the version read,
    /// so that two runs ending together both keep their line.
    pub async fn append_history(&self, line: &[u8]) -> Result<(), StateError> {
        let path = self.object(HISTORY);
        for _ in 0..8 {
            let (mut bytes, mode) = match self.store.inner.get(&path).await {
                Ok(found) => {
                    let version = UpdateVersion {
                        e_tag: found.meta.e_tag.clone(),
                        version: found.meta.version.clone(),
                    };
                    let bytes = found
                        .bytes()
                        .await
                        .map_err(|e| self.error("cannot read", &e))?;
                    (bytes.to_vec(), PutMode::Update(version))
                }
                Err(object_store::Error::NotFound { .. }) => (Vec::new(), PutMode::Create),
                Err(e) => return Err(self.error("cannot read", &e)),
            };
            bytes.extend_from_slice(line);
            match self
                .store
                .inner
                .put_opts(
                    &path,
                    PutPayload::from(bytes.clone()),
                    PutOptions::from(mode),
                )
                .await
            {
                Ok(_) => return write_local(&self.local(HISTORY), Some(&bytes)),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => continue,
                Err(e) => return Err(self.error("cannot write", &e)),
            }
        }
        Err(StateError::Store {
            context: format!("cannot append to the history of the state at {}", self.url),
            message: "other runs kept changing it".into(),
        })
    }

    /// The history as the store holds it, in the working copy.
    pub async fn pull_history(&self) -> Result<PathBuf, StateError> {
        let bytes = self.get(&self.object(HISTORY)).await?;
        let local = self.local(HISTORY);
        write_local(&local, bytes.as_deref())?;
        Ok(local)
    }
}

/// Writes (or, for `None`, removes) a file of the working copy, owner-only.
fn write_local(path: &Path, bytes: Option<&[u8]>) -> Result<(), StateError> {
    use std::io::Write;
    match bytes {
        Some(bytes) => pipeline_sink::private_fs::create_private_file(path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(crate::io(format!("cannot write {}", path.display()))),
        None => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::io(format!("cannot remove {}", path.display()))(e)),
        },
    }
}
