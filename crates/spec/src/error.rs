//! Problems found in a pipeline file, each with where it is and what would be valid.

use std::fmt;
use std::path::PathBuf;

/// A line and column in the pipeline file, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the file, when the parser knows it.
    pub location: Option<Location>,
    /// The field path, such as `exports[0].list_ids[1]`; empty for the whole file.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn from_yaml(error: &serde_yaml::Error) -> Self {
        let location = error.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        // serde_yaml appends " at line L column C"; the location is printed separately.
        let mut message = error.to_string();
        if let Some(l) = &location {
            let suffix = format!(" at line {} column {}", l.line, l.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        // serde_yaml puts the field path in front ("exports[0].mapping: unknown field ...").
        let (path, message) = match message.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => (p.to_owned(), m.to_owned()),
            _ => (String::new(), message),
        };
        Self {
            location,
            path,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.location {
            write!(f, "line {}, column {}: ", l.line, l.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a pipeline file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_invalid(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl crate::Classified for SpecError {
    /// Both are the user's to fix: a file that cannot be read or says something invalid.
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Config
    }
}

fn render_invalid(path: &std::path::Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = format!(
        "{} has {} problem{}:",
        path.display(),
        diagnostics.len(),
        if diagnostics.len() == 1 { "" } else { "s" }
    );
    for d in diagnostics {
        out.push_str("\n  ");
        out.push_str(&path.display().to_string());
        if let Some(l) = d.location {
            out.push_str(&format!(":{}:{}", l.line, l.column));
        }
        out.push_str(": ");
        if !d.path.is_empty() {
            out.push_str(&d.path);
            out.push_str(": ");
        }
        out.push_str(&d.message);
    }
    out
}
