//! The pipeline file: YAML types, parsing, `${VAR}` interpolation and pure validation.
//!
//! Nothing here touches a data file, the network or a credential: [`load`] reads the
//! pipeline file itself and the environment, and [`Pipeline::validate`] is pure. Reading
//! the API key is a separate, explicit step ([`resolve_api_key`]).

mod comments;
pub mod connections;
mod error;
mod identifier;
mod interpolate;
mod kind;
mod locate;
mod merge;
mod model;
mod paths;
#[cfg(test)]
mod properties;
mod redact;
mod secret;
mod storage;
mod validate;

use std::path::{Path, PathBuf};

pub use comments::without_comments;
pub use error::{Diagnostic, Location, SpecError};
pub use kind::{Classified, ErrorKind};
pub use model::*;
pub use paths::{closest, did_you_mean, missing, near_miss, unexpanded};
pub use redact::Redactions;
pub use secret::{ApiKey, resolve_api_key};
pub use storage::{Cloud, Place, Storage, StorageValue, check_storage, place_of};
pub use validate::{
    SENDGRID_RESERVED_FIELDS, check_custom_field_name, check_endpoint, cluster_address,
    is_loopback_http, is_uuid, mirror_conflicts,
};

/// A parsed, interpolated and validated pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file as written, after `${VAR}` interpolation.
    pub file: PipelineFile,
    /// Where the pipeline file is; relative paths in it are resolved against its folder.
    pub path: PathBuf,
    /// The values `${VAR}` references brought in: never shown as they are.
    pub redactions: Redactions,
}

impl Pipeline {
    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The folder holding the sync state of export `name`: `state_dir` (default `.state`
    /// beside the file), then the export's name.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        let root = self.file.state_dir.as_deref().unwrap_or(".state");
        match place_of(root) {
            // An object-store URL is a location of its own, not relative to the file.
            Ok(Place::Remote { .. }) => {
                PathBuf::from(format!("{}/{name}", root.trim_end_matches('/')))
            }
            _ => self.resolve_path(root).join(name),
        }
    }

    /// Resolves a path written in the file against the file's folder.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The folder connection `name`'s `api_key_file` is relative to: its connections file's,
    /// or the pipeline file's.
    pub fn key_base_dir(&self, name: &str) -> &Path {
        self.file
            .connections
            .get(name)
            .and_then(|c| c.defined_in.as_deref())
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| self.base_dir())
    }

    /// The export called `name`.
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.file.exports.iter().find(|e| e.name == name)
    }

    /// What to say of `--export NAME` when the file declares no export of that name: the
    /// name probably meant, and every name.
    pub fn no_such_export(&self, name: &str) -> Option<String> {
        if self.export(name).is_some() {
            return None;
        }
        let names: Vec<&str> = self.file.exports.iter().map(|e| e.name.as_str()).collect();
        let meant = did_you_mean(name, names.iter().copied());
        Some(format!(
            "no export named `{name}`{meant}; the file declares: {}",
            names.join(", ")
        ))
    }

    /// For the exports a command was given (`--export`, all when none): the first name
    /// the file does not declare, said as [`Pipeline::no_such_export`] says it.
    pub fn no_such_exports(&self, only: &[String]) -> Option<String> {
        only.iter().find_map(|name| self.no_such_export(name))
    }
}

/// Whether the export `name` is one of `only` (`--export`, repeatable; all when empty).
pub fn is_selected(only: &[String], name: &str) -> bool {
    only.is_empty() || only.iter().any(|o| o == name)
}

/// What to say of a folder given as the pipeline file: the YAML files in it.
fn in_folder(path: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    let more = if names.len() > 5 { ", ..." } else { "" };
    names.truncate(5);
    if names.is_empty() {
        "it is a folder, and holds no .yaml file: give the pipeline file".into()
    } else {
        format!(
            "it is a folder: give the pipeline file in it ({}{more})",
            names.join(", ")
        )
    }
}

/// A file's bytes as text. One that is not UTF-8 is said so, with where, since editors
/// on Windows may save in another encoding.
fn utf8_text(bytes: Vec<u8>) -> Result<String, String> {
    let utf16 = bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]);
    if bytes.starts_with(b"PAR1") {
        return Err(
            "it is a Parquet file: give the pipeline file (YAML) that names it as a source".into(),
        );
    }
    if !utf16 && bytes.iter().take(1024).any(|b| *b == 0) {
        return Err("it is not a text file: give the pipeline file (YAML)".into());
    }
    if utf16 {
        return Err(
            "it is UTF-16 text (as Windows PowerShell's `>` writes it): save it as UTF-8".into(),
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        format!(
            "line {line}, column {column} holds a byte that is not UTF-8 (the file is in another \
             encoding, such as Latin-1 or Windows-1252): save it as UTF-8"
        )
    })
}

/// Reads, parses, interpolates and validates a pipeline file, reporting every problem found.
pub fn load(path: &Path) -> Result<Pipeline, SpecError> {
    load_with(path, None)
}

/// [`load`], with the connections of the connections file at `connections` (see
/// [`connections::locate`]) beside the pipeline's own.
pub fn load_with(path: &Path, connections: Option<&Path>) -> Result<Pipeline, SpecError> {
    let read = |path: &Path, what: &'static str| {
        let failed = |source| SpecError::Read {
            what,
            path: path.to_path_buf(),
            source,
        };
        let said = |kind, why: String| failed(std::io::Error::new(kind, why));
        if path.is_dir() {
            return Err(said(std::io::ErrorKind::IsADirectory, in_folder(path)));
        }
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                said(e.kind(), format!("it does not exist{}", missing(path)))
            }
            _ => failed(e),
        })?;
        utf8_text(bytes).map_err(|why| said(std::io::ErrorKind::InvalidData, why))
    };
    let text = read(path, "pipeline file")?;
    let shared = match connections {
        Some(from) => {
            connections::check_not_shared(from).map_err(|message| SpecError::Invalid {
                path: from.to_owned(),
                diagnostics: vec![Diagnostic::new("", message)],
            })?;
            Some((from, read(from, "connections file")?))
        }
        None => None,
    };
    // A byte-order mark, as some Windows editors write, is not part of the YAML.
    let unmark = |t: &str| t.strip_prefix('\u{feff}').unwrap_or(t).to_owned();
    let shared = shared.map(|(from, t)| (from, unmark(&t)));
    parse_with(
        &unmark(&text),
        path,
        shared.as_ref().map(|(from, t)| (*from, t.as_str())),
        &|name| std::env::var(name).ok(),
    )
}

/// Parses pipeline text; `env` looks up `${VAR}` references.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, SpecError> {
    parse_with(text, path, None, env)
}

/// [`parse`], with a connections file's path and text.
pub fn parse_with(
    text: &str,
    path: &Path,
    shared: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, SpecError> {
    let invalid = |diagnostics| SpecError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let mut file: PipelineFile = read_yaml(text).map_err(|d| invalid(vec![d]))?;
    let mut merged = Vec::new();
    if let Some((from, shared_text)) = shared {
        let shared: ConnectionsFile = read_yaml(shared_text).map_err(|d| SpecError::Invalid {
            path: from.to_owned(),
            diagnostics: vec![d],
        })?;
        merged = connections::merge(&mut file, shared, from);
    }
    // Before `${VAR}`s are replaced, so that the values are as written.
    let joined = comments::joined_comments(&file, text);
    let (mut diagnostics, substitutions) = interpolate::interpolate(&mut file, env);
    diagnostics.extend(merged);
    diagnostics.extend(connections::check_allowed(&file, path));
    diagnostics.extend(validate::validate(&file));
    diagnostics.extend(joined);
    diagnostics.extend(secret::key_leaks(&file, &substitutions, env));
    let mut redactions = Redactions::default();
    for s in &substitutions {
        redactions.add(&s.value, format!("${{{}}}", s.name));
    }
    for d in &mut diagnostics {
        let shared_from = d
            .path
            .strip_prefix("connections.")
            .and_then(|rest| file.connections.get(rest.split('.').next().unwrap_or(rest)))
            .and_then(|c| c.defined_in.as_deref());
        match shared_from {
            // Its place is in the connections file, whose text is not at hand here.
            Some(from) => {
                d.message = format!("{} (in the connections file {})", d.message, from.display())
            }
            None if d.location.is_none() && !d.path.is_empty() => {
                d.location = locate::locate(text, &d.path);
            }
            None => {}
        }
        d.message = redactions.redact(&d.message).into_owned();
    }
    if diagnostics.is_empty() {
        Ok(Pipeline {
            file,
            path: path.to_path_buf(),
            redactions,
        })
    } else {
        Err(invalid(diagnostics))
    }
}

/// `text` read as a `T`. Merge keys (`<<: *defaults`) are applied and top-level keys
/// starting with `x-` (a place for anchors, as in Compose files) are left out; a file
/// with neither is read as written, so that its errors keep their line and column.
fn read_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Diagnostic> {
    let as_written = || serde_yaml::from_str(text).map_err(|e| Diagnostic::from_yaml(&e, text));
    let mut value = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(value) => value,
        // Broken YAML, or a key given twice. The typed read says where, unless it stops
        // first at an `x-` key or a `<<` it does not know: then the key given twice is
        // the problem to show.
        Err(e) => {
            return as_written().map_err(|d| {
                let extension = ["unknown field `x-", "unknown field `<<`"];
                if extension.iter().any(|m| d.message.starts_with(m)) {
                    Diagnostic::from_yaml(&e, text)
                } else {
                    d
                }
            });
        }
    };
    let mut extended = false;
    if let Some(top) = value.as_mapping_mut() {
        let keys = top.len();
        top.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
        extended = top.len() < keys;
    }
    if !extended && !has_merge_key(&value) {
        return as_written();
    }
    // Placed by their path in the file as written.
    let placed = |mut d: Diagnostic| {
        d.location = (!d.path.is_empty())
            .then(|| locate::locate(text, &d.path))
            .flatten();
        d
    };
    let bad_merge = |found: String| {
        Diagnostic::new(
            "",
            format!(
                "a merge key `<<` {found}: write `<<: *name` after the anchor `&name` of a mapping, or a list of such aliases"
            ),
        )
    };
    // Written back with each scalar as written (`2024.10` stays text, not the number
    // 2024.1), so that a plain scalar where the file expects text is read as it is in a
    // file without merge keys.
    let merged = match merge::apply(text) {
        Ok(merged) => merged,
        Err(merge::Unmerged::BadMerge(found)) => return Err(bad_merge(found)),
        // Not something the rewrite writes back: merged as values, scalars respelled.
        Err(merge::Unmerged::Unsupported) => {
            value.apply_merge().map_err(|e| bad_merge(e.to_string()))?;
            serde_yaml::to_string(&value).map_err(|e| placed(Diagnostic::from_yaml(&e, text)))?
        }
    };
    serde_yaml::from_str(&merged).map_err(|e| placed(Diagnostic::from_yaml(&e, &merged)))
}

/// Whether any mapping in `value` has a `<<` key.
fn has_merge_key(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        serde_yaml::Value::Sequence(items) => items.iter().any(has_merge_key),
        serde_yaml::Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// The JSON Schema of the pipeline file, for editors.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PipelineFile);
    let mut schema = serde_json::to_value(schema).expect("a JSON schema always serialises");
    // Top-level `x-` keys are left out when the file is read (a place for anchors).
    schema["patternProperties"] = serde_json::json!({ "^x-": {} });
    schema
}
