//! The rejects file: rejected rows as JSON lines in an owner-only file, in the export's
//! order whatever order the query returned them in, then the rejects the sink reported.
//!
//! Rows are held with their order key and sorted at the end; past [`FIRST_SPILL_BYTES`] the
//! held rows are sorted into a run file beside the rejects file and merged at the end, so
//! a table of bad rows never has to fit in memory. Each run may be twice the one before, up
//! to [`MAX_SPILL_BYTES`], so a few rejects cost little memory and many make few files.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use pipeline_sink::private_fs::{create_private_dir, create_private_file};
use serde::Serialize;

use crate::error::EngineError;

/// Held rejects past this size are sorted into the first run file.
const FIRST_SPILL_BYTES: usize = 256 << 10;
/// The largest run.
const MAX_SPILL_BYTES: usize = 32 << 20;

#[derive(Serialize)]
pub(crate) struct Reject<'a> {
    pub segment: Option<&'a str>,
    pub key: Option<&'a str>,
    pub email: Option<&'a str>,
    pub reason: &'static str,
    pub detail: Option<&'a str>,
}

/// One held reject: its order key followed by its JSON line.
struct Held {
    bytes: Box<[u8]>,
    key_len: u32,
}

impl Held {
    fn line(&self) -> &[u8] {
        &self.bytes[self.key_len as usize..]
    }
}

/// The rejects file, written beside its final name and renamed at the end so a failed run
/// leaves no half file.
pub(crate) struct RejectsWriter {
    dir: PathBuf,
    export: String,
    partial: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
    held: Vec<Held>,
    held_bytes: usize,
    runs: Vec<PathBuf>,
    /// Held bytes past which they are sorted into a run file.
    spill_at: usize,
    /// The held rows are in the file; later rejects are appended as they come.
    sorted_out: bool,
}

impl RejectsWriter {
    pub(crate) fn create(dir: &Path, export: &str) -> Result<Self, EngineError> {
        create_private_dir(dir).map_err(|source| EngineError::Io {
            context: format!("cannot create the rejects folder {}", dir.display()),
            source,
        })?;
        let path = dir.join(format!("{export}.rejects.jsonl"));
        let partial = dir.join(format!(".{export}.rejects.jsonl.partial"));
        let file = create_private_file(&partial).map_err(|source| EngineError::Io {
            context: format!("cannot create {}", partial.display()),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            export: export.to_owned(),
            partial,
            path,
            out: BufWriter::new(file),
            count: 0,
            held: Vec::new(),
            held_bytes: 0,
            runs: Vec::new(),
            spill_at: FIRST_SPILL_BYTES,
            sorted_out: false,
        })
    }

    /// Holds a rejected row of the query, to be written in the order of `key`.
    pub(crate) fn hold(&mut self, key: &[u8], reject: &Reject<'_>) -> Result<(), EngineError> {
        debug_assert!(!self.sorted_out, "query rejects come before the sink's");
        let mut bytes = key.to_vec();
        serde_json::to_writer(&mut bytes, reject).map_err(|e| self.io_error(e.into()))?;
        bytes.push(b'\n');
        self.held_bytes += bytes.len();
        self.held.push(Held {
            bytes: bytes.into(),
            key_len: key.len() as u32,
        });
        self.count += 1;
        if self.held_bytes > self.spill_at {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes a reject the sink reported, after every held row.
    pub(crate) fn write(&mut self, reject: &Reject<'_>) -> Result<(), EngineError> {
        self.write_sorted()?;
        serde_json::to_writer(&mut self.out, reject)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.io_error(e))?;
        self.count += 1;
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> EngineError {
        EngineError::Io {
            context: format!("cannot write {}", self.partial.display()),
            source,
        }
    }

    /// Sorts the held rows into a new run file.
    fn spill(&mut self) -> Result<(), EngineError> {
        let path = self.dir.join(format!(
            ".{}.rejects.run{}.partial",
            self.export,
            self.runs.len()
        ));
        let file = create_private_file(&path).map_err(|source| EngineError::Io {
            context: format!("cannot create {}", path.display()),
            source,
        })?;
        self.runs.push(path.clone());
        self.held.sort_unstable_by(|a, b| a.bytes.cmp(&b.bytes));
        let mut out = BufWriter::new(file);
        let written: std::io::Result<()> = self.held.drain(..).try_for_each(|h| {
            out.write_all(&(h.bytes.len() as u32).to_le_bytes())?;
            out.write_all(&h.key_len.to_le_bytes())?;
            out.write_all(&h.bytes)
        });
        written
            .and_then(|()| out.flush())
            .map_err(|source| EngineError::Io {
                context: format!("cannot write {}", path.display()),
                source,
            })?;
        self.held_bytes = 0;
        self.spill_at = (2 * self.spill_at).min(MAX_SPILL_BYTES);
        Ok(())
    }

    /// Writes the held rows and the run files, merged in order, once.
    fn write_sorted(&mut self) -> Result<(), EngineError> {
        if std::mem::replace(&mut self.sorted_out, true) {
            return Ok(());
        }
        self.held.sort_unstable_by(|a, b| a.bytes.cmp(&b.bytes));
        if self.runs.is_empty() {
            for h in std::mem::take(&mut self.held) {
                self.out.write_all(h.line()).map_err(|e| self.io_error(e))?;
            }
            return Ok(());
        }
        let mut readers = self
            .runs
            .iter()
            .map(|p| {
                File::open(p)
                    .map(BufReader::new)
                    .map_err(|source| EngineError::Io {
                        context: format!("cannot read {}", p.display()),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let read_err = |source| EngineError::Io {
            context: "cannot read a rejects run file".into(),
            source,
        };
        // The held rows are one more source, after the run files.
        let mut memory = std::mem::take(&mut self.held).into_iter();
        let mut next = |source: usize| -> Result<Option<Held>, EngineError> {
            match readers.get_mut(source) {
                Some(r) => read_held(r).map_err(read_err),
                None => Ok(memory.next()),
            }
        };
        let mut heap = BinaryHeap::new();
        for source in 0..=self.runs.len() {
            if let Some(h) = next(source)? {
                heap.push(Reverse((h.bytes, h.key_len, source)));
            }
        }
        while let Some(Reverse((bytes, key_len, source))) = heap.pop() {
            self.out
                .write_all(&bytes[key_len as usize..])
                .map_err(|e| self.io_error(e))?;
            if let Some(h) = next(source)? {
                heap.push(Reverse((h.bytes, h.key_len, source)));
            }
        }
        self.remove_runs();
        Ok(())
    }

    fn remove_runs(&mut self) {
        for run in self.runs.drain(..) {
            let _ = std::fs::remove_file(run);
        }
    }

    /// Keeps the file if it holds any reject; an old file from an earlier run is removed.
    pub(crate) fn finish(mut self) -> Result<Option<PathBuf>, EngineError> {
        self.write_sorted()?;
        let io = |context: String| move |source| EngineError::Io { context, source };
        self.out
            .flush()
            .map_err(io(format!("cannot write {}", self.partial.display())))?;
        if self.count == 0 {
            let _ = std::fs::remove_file(&self.partial);
            let _ = std::fs::remove_file(&self.path);
            return Ok(None);
        }
        std::fs::rename(&self.partial, &self.path).map_err(io(format!(
            "cannot move the rejects file to {}",
            self.path.display()
        )))?;
        Ok(Some(self.path.clone()))
    }

    /// Drops everything written (nothing may be written when the cap fails the export).
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl Drop for RejectsWriter {
    fn drop(&mut self) {
        self.remove_runs();
    }
}

/// Reads one record of a run file; `None` at its end.
fn read_held(r: &mut impl Read) -> std::io::Result<Option<Held>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key_len = [0u8; 4];
    r.read_exact(&mut key_len)?;
    let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut bytes)?;
    Ok(Some(Held {
        bytes: bytes.into(),
        key_len: u32::from_le_bytes(key_len),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(email: &str) -> Reject<'_> {
        Reject {
            segment: Some("s"),
            key: None,
            email: Some(email),
            reason: "invalid_email",
            detail: None,
        }
    }

    fn emails_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["email"].as_str().unwrap_or("-").to_owned()
            })
            .collect()
    }

    #[test]
    fn held_rows_come_out_in_key_order_then_the_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::create(dir.path(), "e").unwrap();
        for (key, email) in [(b"c", "third"), (b"a", "first"), (b"b", "second")] {
            w.hold(key, &reject(email)).unwrap();
        }
        w.write(&reject("from the sink")).unwrap();
        let path = w.finish().unwrap().expect("a file");
        assert_eq!(
            emails_in(&path),
            ["first", "second", "third", "from the sink"]
        );
    }

    #[test]
    fn spilled_runs_merge_into_one_order_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::create(dir.path(), "e").unwrap();
        w.spill_at = 64 << 10;
        let detail = "x".repeat(1024);
        // Runs of 64, 128 and 256 KiB, and the rest in memory.
        let n: usize = 7 * (64 << 10) / 1024 + 17;
        for i in 0..n {
            let key = ((i * 7919) % n).to_be_bytes();
            let email = format!("{:08}", (i * 7919) % n);
            w.hold(
                &key,
                &Reject {
                    detail: Some(&detail),
                    ..reject(&email)
                },
            )
            .unwrap();
        }
        assert!(w.runs.len() >= 3, "{} runs", w.runs.len());
        let path = w.finish().unwrap().expect("a file");
        let emails = emails_in(&path);
        assert_eq!(emails.len(), n);
        assert!(emails.windows(2).all(|p| p[0] < p[1]), "in key order");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["e.rejects.jsonl"]);
    }
}
