//! One run of an export at a time: an exclusive OS lock on `run.lock`.
//!
//! The operating system drops the lock when the holding process ends, however it ends, so
//! a lock left by a killed run is recovered by the next one without any guesswork about
//! process ids. The file also says who holds it, for the message a second run prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::{StateError, io, unix_now};

/// The export's lock, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    /// Who held the lock before and died holding it, if anyone.
    pub recovered_from: Option<String>,
}

impl RunLock {
    /// Takes the lock at `path` for export `export`, or says who holds it.
    pub fn acquire(path: &Path, export: &str) -> Result<Self, StateError> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(io(format!("cannot open the lock {}", path.display())))?;
        let holder = |file: &mut File| {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let text = text.trim().replace('\n', ", ");
            (!text.is_empty()).then_some(text)
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Busy {
                    export: export.to_owned(),
                    holder: holder(&mut file).unwrap_or_else(|| "a process just starting".into()),
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(io(format!("cannot lock {}", path.display()))(e));
            }
        }
        // A holder's note left in the file means that run ended without releasing it.
        let recovered_from = holder(&mut file);
        let note = format!("pid {}\nsince {}\n", std::process::id(), unix_now());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(note.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(io(format!("cannot write the lock {}", path.display())))?;
        Ok(Self {
            file,
            recovered_from,
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file tells the next run this one ended cleanly; the lock goes with the
        // file handle.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let first = RunLock::acquire(&path, "newsletter").unwrap();
        assert_eq!(first.recovered_from, None);
        let err = RunLock::acquire(&path, "newsletter")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("export `newsletter` is already running (pid "),
            "{err}"
        );
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        let again = RunLock::acquire(&path, "newsletter").unwrap();
        assert_eq!(again.recovered_from, None, "a clean release leaves no note");
    }

    #[test]
    fn a_lock_left_by_a_dead_run_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        // What a killed run leaves: its note, and no OS lock (that died with it).
        std::fs::write(&path, "pid 999999\nsince 1700000000\n").unwrap();
        let lock = RunLock::acquire(&path, "newsletter").unwrap();
        assert_eq!(
            lock.recovered_from.as_deref(),
            Some("pid 999999, since 1700000000")
        );
    }
}
