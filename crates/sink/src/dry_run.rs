//! The dry-run sink: writes each SendGrid request body to a file and sends nothing.
//!
//! Bodies go to `DIR/<export>/request-000001.json`, … exactly as the HTTP sink would
//! send them. They hold personal data, so files and folders are owner-only.

use std::io::Write;
use std::path::PathBuf;

use futures::future::BoxFuture;

use crate::encoder::{BodyEncoder, bodies, next_body};
use crate::private_fs::{create_private_dir, create_private_file};
use crate::{ContactStream, ExportTarget, Sink, SinkError, SinkReport};

/// Writes request bodies under a folder.
pub struct DryRunSink {
    dir: PathBuf,
}

impl DryRunSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl Sink for DryRunSink {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let dir = self.dir.join(&target.export);
            let io = |context: String| move |source| SinkError::Io { context, source };
            create_private_dir(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
            remove_old_bodies(&dir)?;
            let mut report = SinkReport::default();
            let encoder = BodyEncoder::for_target(target);
            let mut bodies = bodies(contacts, encoder);
            while let Some(body) = next_body(&mut bodies, &mut report.rejects).await {
                let body = body?;
                let path = dir.join(format!("request-{:06}.json", report.requests + 1));
                let mut file = create_private_file(&path)
                    .map_err(io(format!("cannot create {}", path.display())))?;
                file.write_all(&body.bytes)
                    .map_err(io(format!("cannot write {}", path.display())))?;
                report.requests += 1;
                report.contacts += body.contacts as u64;
                report.bytes += body.bytes.len() as u64;
                report.outputs.push(path);
            }
            Ok(report)
        })
    }
}

/// A rerun into the same folder must not leave bodies of an earlier, larger run behind.
fn remove_old_bodies(dir: &std::path::Path) -> Result<(), SinkError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SinkError::Io {
        context: format!("cannot list {}", dir.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("request-") && name.ends_with(".json") {
            std::fs::remove_file(entry.path()).map_err(|source| SinkError::Io {
                context: format!("cannot remove {}", entry.path().display()),
                source,
            })?;
        }
    }
    Ok(())
}
