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

    /// A parse error of `text`.
    pub(crate) fn from_yaml(error: &serde_yaml::Error, text: &str) -> Self {
        let location = error.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        // serde_yaml writes " at line L column C" (at the end, or before the scanner's
        // context); the location is printed separately.
        let mut message = error.to_string();
        if let Some(l) = &location {
            message = message.replacen(&format!(" at line {} column {}", l.line, l.column), "", 1);
        }
        // serde_yaml puts the field path in front ("exports[0].mapping: unknown field ...").
        let (path, message) = match message.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => (p.to_owned(), m.to_owned()),
            _ => (String::new(), message),
        };
        let mut message = in_words(&message);
        // A tab where YAML expects indentation: the parser only says a token cannot start.
        let at = location.as_ref().and_then(|l| {
            let line = text.lines().nth(l.line.checked_sub(1)?)?;
            line.chars().nth(l.column.checked_sub(1)?)
        });
        if at == Some('\t') {
            message.push_str(": it is a tab, and YAML indents with spaces only");
        }
        // `[${LIST}]`: inside `[...]` or `{...}`, YAML reads the `{` as a mapping's start.
        let line = location
            .as_ref()
            .and_then(|l| text.lines().nth(l.line.checked_sub(1)?));
        if message.contains("flow") && line.is_some_and(unquoted_reference) {
            message.push_str(
                ": a `${VAR}` inside `[...]` or `{...}` goes in quotes (`[\"${VAR}\"]`), or YAML \
                 reads its `{` as the start of a mapping",
            );
        }
        let mut d = Self {
            location,
            path,
            message,
        };
        d.place_key_given_twice(text);
        d.say_what_the_file_holds(text);
        d
    }

    /// A file of several YAML documents, or of none, said in words and placed.
    fn say_what_the_file_holds(&mut self, text: &str) {
        let content = |line: &str| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        };
        // The line of the `---` that starts a second document.
        let second = || {
            let mut seen_content = false;
            for (n, line) in text.lines().enumerate() {
                if line == "---" || line.starts_with("--- ") {
                    if seen_content {
                        return Some(n + 1);
                    }
                    seen_content = true;
                } else if content(line) {
                    seen_content = true;
                }
            }
            None
        };
        const ONE_ONLY: &str = "may hold only one: put each pipeline in a file of its own";
        if self
            .message
            .starts_with("deserializing from YAML containing more than one document")
        {
            self.message = format!(
                "the file holds more than one YAML document (`---` starts each) and {ONE_ONLY}"
            );
            if let Some(line) = second() {
                self.location = Some(Location { line, column: 1 });
            }
        } else if self.path.is_empty()
            && self.message.starts_with("missing field")
            && let Some(line) = second()
        {
            // Only the first document is read, and it is not the whole pipeline.
            self.message = format!(
                "{} in the first YAML document: the file holds more than one (the `---` at line \
                 {line} starts the second) and {ONE_ONLY}",
                self.message
            );
        } else if self.message == "missing field `version`" && !text.lines().any(content) {
            self.message = "the file is empty: it starts with `version: 1` (`pipeline schema` prints every setting)".into();
            self.location = None;
        }
    }

    /// A key given twice (`duplicate field `k`` from a typed read, `duplicate entry with
    /// key "k"` from a [`serde_yaml::Value`]), which serde_yaml places at the start of its
    /// mapping: said in words and placed at the second `k:` written in that mapping.
    fn place_key_given_twice(&mut self, text: &str) {
        let key = (self.message.strip_prefix("duplicate field `"))
            .and_then(|m| m.strip_suffix('`'))
            .or_else(|| {
                (self.message.strip_prefix("duplicate entry with key \""))
                    .and_then(|m| m.strip_suffix('"'))
            })
            .map(str::to_owned);
        let Some(key) = key else {
            return;
        };
        self.message = if key == "<<" {
            "a merge key `<<` is given twice: merge several mappings with one, `<<: [*first, *second]` (the first wins)".to_owned()
        } else {
            format!(
                "`{key}` is given twice: give it once (the second would silently replace the first)"
            )
        };
        let Some(at) = self.location.as_mut() else {
            return;
        };
        if let Some((line, column)) = second_flow_key(text, at, &key) {
            (at.line, at.column) = (line, column);
            return;
        }
        let indent = at.column.saturating_sub(1);
        let mut seen = 0;
        let first = at.line.saturating_sub(1);
        for (n, line) in text.lines().enumerate().skip(first) {
            let (written, depth) = if n == first {
                // The mapping's first key, after any `- ` of the sequence item it starts.
                let start = line
                    .char_indices()
                    .nth(indent)
                    .map_or(line.len(), |(i, _)| i);
                (&line[start..], indent)
            } else {
                let written = line.trim_start_matches(' ');
                (written, line.len() - written.len())
            };
            if written.is_empty() || written.starts_with('#') || depth > indent {
                continue;
            }
            if depth < indent {
                return;
            }
            let rest = written.strip_prefix(key.as_str()).unwrap_or_default();
            if rest.trim_start().starts_with(':') {
                seen += 1;
                if seen == 2 {
                    at.line = n + 1;
                    return;
                }
            }
        }
    }
}

/// Whether `line` holds a `${` that no quote opens just before.
fn unquoted_reference(line: &str) -> bool {
    line.match_indices("${")
        .any(|(at, _)| !line[..at].ends_with(['"', '\'']))
}

/// Where the second `key:` of the flow mapping (`{ a: 1, a: 2 }`, over one line or more)
/// that starts at `at` is written, as a line and column (from 1); none when no flow
/// mapping starts there.
fn second_flow_key(text: &str, at: &Location, key: &str) -> Option<(usize, usize)> {
    let first = at.line.checked_sub(1)?;
    let mut chars = text.lines().enumerate().skip(first).flat_map(|(n, line)| {
        let skip = if n == first {
            at.column.saturating_sub(1)
        } else {
            0
        };
        (line.chars().chain(['\n']).enumerate().skip(skip)).map(move |(c, ch)| (n + 1, c + 1, ch))
    });
    if chars.next().map(|(_, _, ch)| ch) != Some('{') {
        return None;
    }
    let (mut depth, mut quote, mut seen) = (1usize, None, 0);
    // In a `# comment` (a `#` after a blank, outside quotes), which runs to the line's end;
    // and the character before this one.
    let (mut comment, mut prev) = (false, '{');
    // At the start of a scalar, where a quote opens a quoted one (`O'Brien` is plain).
    let mut fresh = true;
    // The key being read at depth 1 (after `{` or `,`, before `:`), and where it starts.
    let mut reading: Option<(String, Option<(usize, usize)>)> = Some((String::new(), None));
    for (line, column, ch) in chars {
        let after = std::mem::replace(&mut prev, ch);
        if comment || (quote.is_none() && ch == '#' && after.is_whitespace()) {
            comment = ch != '\n';
            continue;
        }
        if let Some(open) = quote {
            if ch == open {
                quote = None;
            }
            if let Some((written, _)) = reading.as_mut().filter(|_| depth == 1) {
                written.push(ch);
            }
            continue;
        }
        let starts = fresh && !ch.is_whitespace();
        fresh &= ch.is_whitespace();
        match ch {
            '{' | '[' => {
                depth += 1;
                fresh = true;
            }
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return None;
                }
            }
            ',' => {
                if depth == 1 {
                    reading = Some((String::new(), None));
                }
                fresh = true;
            }
            ':' if depth == 1 => {
                fresh = true;
                if let Some((written, Some(start))) = reading.take() {
                    let written = written.trim().trim_matches(|c| c == '"' || c == '\'');
                    if written == key {
                        seen += 1;
                        if seen == 2 {
                            return Some(start);
                        }
                    }
                }
            }
            _ => {
                if starts && (ch == '"' || ch == '\'') {
                    quote = Some(ch);
                }
                if let Some((written, start)) = reading.as_mut().filter(|_| depth == 1) {
                    if !ch.is_whitespace() && start.is_none() {
                        *start = Some((line, column));
                    }
                    if start.is_some() {
                        written.push(ch);
                    }
                }
            }
        }
    }
    None
}

/// serde's `expected u64` or `expected struct Source` in the words of the file: a whole
/// number, a list, `key: value` settings; and a number in quotes is said to be one.
fn in_words(message: &str) -> String {
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    // "unknown field `odrer_by`, expected one of `name`, ...": the one probably meant first.
    if let Some(unknown) = found
        .strip_prefix("unknown field `")
        .and_then(|f| f.strip_suffix('`'))
    {
        let fields = expected
            .strip_prefix("one of ")
            .unwrap_or(expected)
            .split(", ")
            .map(|f| f.trim_matches('`'));
        if let Some(meant) = crate::closest(unknown, fields) {
            return format!("unknown field `{unknown}`: did you mean `{meant}`?");
        }
    }
    let number = matches!(
        expected,
        "u8" | "u16"
            | "u32"
            | "u64"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "isize"
            | "f32"
            | "f64"
    );
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list (`[a, b]`, or one `- item` per line)",
        "a map" => "`key: value` lines",
        other if other.starts_with("struct ") => "its settings as `key: value` lines",
        other => other,
    };
    let text = found
        .strip_prefix("invalid type: string ")
        .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
        .map(str::trim);
    let quoted = text.is_some_and(|v| {
        v.parse::<f64>().is_ok() || (expected == "a boolean" && matches!(v, "true" | "false"))
    });
    // `100,000` or `100_000`: a number with its thousands marked, which YAML reads as text.
    let digits = text
        .filter(|v| v.contains([',', '_', ' ']))
        .map(|v| v.replace([',', '_', ' '], ""))
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    if quoted && (number || expected == "a boolean") {
        format!("{found}, expected {words}: write it without quotes")
    } else if let Some(digits) = digits.filter(|_| number) {
        format!("{found}, expected {words}: write it without separators ({digits})")
    } else {
        format!("{found}, expected {words}")
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
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `pipeline file` or `connections file`.
        what: &'static str,
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

#[cfg(test)]
mod tests {
    use super::in_words;

    #[test]
    fn rust_type_names_become_words() {
        for (serde, ours) in [
            (
                "invalid type: integer `-5`, expected u64",
                "invalid type: integer `-5`, expected a whole number, 0 or more",
            ),
            (
                "invalid type: string \"100000\", expected u64",
                "invalid type: string \"100000\", expected a whole number, 0 or more: write it without quotes",
            ),
            (
                "invalid type: string \"100,000\", expected u64",
                "invalid type: string \"100,000\", expected a whole number, 0 or more: write it without separators (100000)",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "invalid type: string \"yes\", expected true or false",
            ),
            (
                "invalid type: string \"true\", expected a boolean",
                "invalid type: string \"true\", expected true or false: write it without quotes",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "invalid type: string \"x\", expected a list (`[a, b]`, or one `- item` per line)",
            ),
            (
                "invalid type: string \"data/p.parquet\", expected struct Source",
                "invalid type: string \"data/p.parquet\", expected its settings as `key: value` lines",
            ),
            (
                "unknown variant `fial`, expected `fail` or `truncate`",
                "unknown variant `fial`, expected `fail` or `truncate`",
            ),
            ("missing field `version`", "missing field `version`"),
        ] {
            assert_eq!(in_words(serde), ours);
        }
    }
}
