//! Connections kept apart from pipelines. An administrator keeps SendGrid connections (with
//! their keys) in a connections file that pipeline authors reference by name and cannot
//! edit, and may say which pipelines and exports may use each one.

use std::path::{Path, PathBuf};

use crate::error::Diagnostic;
use crate::model::{ConnectionsFile, PipelineFile};

/// The environment variable naming the connections file; empty means none.
pub const ENV: &str = "PIPELINE_CONNECTIONS";

/// Where the connections file is: `flag` (`--connections`), else `PIPELINE_CONNECTIONS`
/// (empty: none), else `~/.config/pipeline/connections.yaml` (or under
/// `$XDG_CONFIG_HOME`) when that file exists.
pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_owned());
    }
    match std::env::var_os(ENV) {
        Some(value) if value.is_empty() => return None,
        Some(value) => return Some(PathBuf::from(value)),
        None => {}
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    let default = config.join("pipeline/connections.yaml");
    default.is_file().then_some(default)
}

/// Why a connections file may not be trusted: one that the group or others may write
/// could hand any pipeline another account or endpoint.
#[cfg(unix)]
pub(crate) fn check_not_shared(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "connections file {} can be written by others (mode {mode:03o}): run `chmod go-w {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_not_shared(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Adds the connections of `shared` (read from `from`) to `file`'s. A name both define is
/// a problem: the pipeline may not redefine a connection it is given.
pub(crate) fn merge(
    file: &mut PipelineFile,
    shared: ConnectionsFile,
    from: &Path,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if shared.version != 1 {
        out.push(Diagnostic::new(
            "",
            format!(
                "connections file {}: version {} is not supported; write `version: 1`",
                from.display(),
                shared.version
            ),
        ));
    }
    for (name, mut connection) in shared.connections {
        if file.connections.contains_key(&name) {
            out.push(Diagnostic::new(
                format!("connections.{name}"),
                format!(
                    "connection `{name}` is defined by the connections file {}: the pipeline may use it, not redefine it",
                    from.display()
                ),
            ));
            continue;
        }
        connection.defined_in = Some(from.to_owned());
        file.connections.insert(name, connection);
    }
    out
}

/// Uses of connections that their `allowed_pipelines` or `allowed_exports` forbid, and
/// those lists where only a connections file may hold them.
pub(crate) fn check_allowed(file: &PipelineFile, pipeline: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, c) in &file.connections {
        if c.defined_in.is_none() && (c.allowed_pipelines.is_some() || c.allowed_exports.is_some())
        {
            out.push(Diagnostic::new(
                format!("connections.{name}"),
                "allowed_pipelines and allowed_exports belong in a connections file, where pipeline authors cannot change them".to_owned(),
            ));
        }
    }
    let pipeline = std::path::absolute(pipeline).unwrap_or_else(|_| pipeline.to_owned());
    for (i, export) in file.exports.iter().enumerate() {
        let Some(c) = file.connections.get(&export.connection) else {
            continue;
        };
        let Some(from) = &c.defined_in else {
            continue;
        };
        let dir = from.parent().unwrap_or(Path::new("."));
        let pipeline_ok = c.allowed_pipelines.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| {
                let pattern = dir.join(p);
                glob::Pattern::new(&pattern.to_string_lossy())
                    .is_ok_and(|glob| glob.matches_path(&pipeline))
            })
        });
        let export_ok = c
            .allowed_exports
            .as_ref()
            .is_none_or(|names| names.contains(&export.name));
        if !pipeline_ok {
            out.push(Diagnostic::new(
                format!("exports[{i}].connection"),
                format!(
                    "connection `{}` (from {}) may not be used by the pipeline {}: it allows {}",
                    export.connection,
                    from.display(),
                    pipeline.display(),
                    c.allowed_pipelines
                        .as_deref()
                        .unwrap_or_default()
                        .join(", ")
                ),
            ));
        } else if !export_ok {
            out.push(Diagnostic::new(
                format!("exports[{i}].connection"),
                format!(
                    "connection `{}` (from {}) may not be used by export `{}`: it allows {}",
                    export.connection,
                    from.display(),
                    export.name,
                    c.allowed_exports.as_deref().unwrap_or_default().join(", ")
                ),
            ));
        }
    }
    out
}
