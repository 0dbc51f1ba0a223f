//! The rejects file: rejected rows as JSON lines in an owner-only file, in the export's
//! order (the rows come out of a DataFusion sort), then the rejects the sink reported.
//! It is written beside its final name and moved there at the end, so a failed run leaves
//! no half file.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pipeline_sink::private_fs::create_private_dir;
use serde::Serialize;
use tempfile::NamedTempFile;

use crate::error::EngineError;

/// One rejected row or contact.
pub(crate) struct Reject<'a> {
    pub segment: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The export's identifier as written, under the identifier's name (`email`, ...).
    pub identifier: Option<&'a str>,
    pub reason: &'static str,
    pub detail: Option<&'a str>,
}

/// A reject as one JSON object, its identifier named as the export names it.
struct Line<'a> {
    identifier: &'static str,
    reject: &'a Reject<'a>,
}

impl Serialize for Line<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.reject;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("segment", &r.segment)?;
        map.serialize_entry("key", &r.key)?;
        map.serialize_entry(self.identifier, &r.identifier)?;
        map.serialize_entry("reason", r.reason)?;
        map.serialize_entry("detail", &r.detail)?;
        map.end()
    }
}

pub(crate) struct RejectsWriter {
    /// The export's identifier: `email`, `external_id`, ...
    identifier: &'static str,
    path: PathBuf,
    out: BufWriter<NamedTempFile>,
    count: u64,
}

impl RejectsWriter {
    pub(crate) fn create(
        dir: &Path,
        export: &str,
        identifier: &'static str,
    ) -> Result<Self, EngineError> {
        create_private_dir(dir).map_err(|source| EngineError::Io {
            context: format!("cannot create the rejects folder {}", dir.display()),
            source,
        })?;
        let path = dir.join(format!("{export}.rejects.jsonl"));
        // tempfile creates the file owner-only.
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{export}.rejects."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|source| EngineError::Io {
                context: format!("cannot create a file in {}", dir.display()),
                source,
            })?;
        Ok(Self {
            identifier,
            path,
            out: BufWriter::new(partial),
            count: 0,
        })
    }

    /// Appends one reject.
    pub(crate) fn write(&mut self, reject: &Reject<'_>) -> Result<(), EngineError> {
        let line = Line {
            identifier: self.identifier,
            reject,
        };
        serde_json::to_writer(&mut self.out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| EngineError::Io {
                context: format!("cannot write the rejects file {}", self.path.display()),
                source,
            })?;
        self.count += 1;
        Ok(())
    }

    /// Keeps the file if it holds any reject; an old file from an earlier run is removed.
    pub(crate) fn finish(self) -> Result<Option<PathBuf>, EngineError> {
        let io = |context: String| move |source| EngineError::Io { context, source };
        let partial = self
            .out
            .into_inner()
            .map_err(|e| io(format!("cannot write {}", self.path.display()))(e.into_error()))?;
        if self.count == 0 {
            let _ = std::fs::remove_file(&self.path);
            return Ok(None);
        }
        partial.persist(&self.path).map_err(|e| {
            io(format!(
                "cannot move the rejects file to {}",
                self.path.display()
            ))(e.error)
        })?;
        Ok(Some(self.path))
    }

    /// Drops everything written (nothing may be written when the cap fails the export).
    pub(crate) fn discard(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(email: &str) -> Reject<'_> {
        Reject {
            segment: Some("s"),
            key: None,
            identifier: Some(email),
            reason: "invalid_email",
            detail: None,
        }
    }

    #[test]
    fn a_file_with_rejects_is_kept_owner_only_and_an_empty_one_removes_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::create(dir.path(), "x", "email").unwrap();
        w.write(&reject("a")).unwrap();
        w.write(&reject("b")).unwrap();
        let path = w.finish().unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.starts_with(r#"{"segment":"s","key":null,"email":"a""#),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            RejectsWriter::create(dir.path(), "x", "email")
                .unwrap()
                .finish()
                .unwrap(),
            None
        );
        assert!(!path.exists());
        // Nothing else is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_discarded_file_leaves_nothing_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::create(dir.path(), "x", "email").unwrap();
        w.write(&reject("a")).unwrap();
        let path = w.finish().unwrap().unwrap();
        let mut w = RejectsWriter::create(dir.path(), "x", "email").unwrap();
        w.write(&reject("b")).unwrap();
        w.discard();
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"a\""));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
