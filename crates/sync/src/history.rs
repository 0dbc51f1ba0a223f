//! `history.jsonl`: one line per run of the export (plans and dry runs aside), appended
//! when the run ends, owner-readable only: what each run selected, sent and SendGrid made
//! of it, so an export's behaviour over weeks can be looked at (`pipeline history`, or
//! any JSON Lines reader).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{StateError, io};

/// One run of one export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: i64,
    /// The run's status word (`success`, `run_failed`, ...) and exit code.
    pub outcome: String,
    pub exit_code: u8,
    /// Why the run did not succeed: its failure, or what its summary says went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Distinct valid contacts selected (before the cap).
    pub selected: u64,
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub sent: u64,
    pub created: u64,
    pub updated: u64,
    pub errored: u64,
    pub rejected: u64,
    #[serde(default)]
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Leavers taken off the lists (mirror mode).
    pub removed: u64,
    /// Contacts the export's state holds after the run: those it keeps on its lists (and
    /// those SendGrid refused for good).
    #[serde(default)]
    pub state_contacts: u64,
    /// Seconds spent waiting for SendGrid's import jobs to end.
    #[serde(default)]
    pub import_wait_secs: f64,
    #[serde(default)]
    pub job_ids: Vec<String>,
    /// The version of pipeline that ran.
    pub version: String,
}

/// Appends `record` to the history at `path` (created owner-only).
pub fn append_history(path: &Path, record: &RunRecord) -> Result<(), StateError> {
    let line = history_line(record).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
        then: "the history starts afresh",
    })?;
    let context = || format!("cannot append to {}", path.display());
    let mut file = pipeline_sink::private_fs::append_private_file(path).map_err(io(context()))?;
    file.write_all(&line).map_err(io(context()))
}

/// One record as a line of the history.
pub(crate) fn history_line(record: &RunRecord) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    Ok(line)
}

/// The records of the history at `path`, oldest first; no file is no runs. A line that
/// cannot be read (a run killed while writing it) is skipped.
pub fn read_history(path: &Path) -> Result<Vec<RunRecord>, StateError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("cannot open {}", path.display()))(e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(format!("cannot read {}", path.display())))?;
        if let Ok(record) = serde_json::from_str::<RunRecord>(&line) {
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order_and_a_cut_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        assert!(read_history(&path).unwrap().is_empty());
        for sent in [3, 5] {
            let record = RunRecord {
                sent,
                outcome: "success".into(),
                ..Default::default()
            };
            append_history(&path, &record).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"started_at\":1")
            .unwrap();
        let back: Vec<u64> = read_history(&path)
            .unwrap()
            .iter()
            .map(|r| r.sent)
            .collect();
        assert_eq!(back, [3, 5]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
