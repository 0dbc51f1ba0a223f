//! SQL `--` comments that YAML turned into comments of everything after them.
//!
//! A folded block (`>`) or a plain value spread over several lines is joined into one
//! line by YAML, so `SELECT * FROM profiles -- the VIPs` followed by `WHERE tier = 'vip'`
//! on the next line reaches DataFusion as one line whose comment holds the `WHERE`: the
//! segment silently selects every profile. Such a comment is found by comparing it with
//! the lines of the file as written: a comment YAML did not lengthen is on one of them.

use std::ops::Range;

use crate::error::Diagnostic;
use crate::model::PipelineFile;

/// Where each comment in `sql` is, skipping quoted text: a `--` comment up to the end
/// of its line (`true`), a `/* */` one up to its close (`false`).
fn comments(sql: &str) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(c) = sql[at..].chars().next() {
        let rest = &sql[at..];
        let skip = match c {
            '\'' | '"' | '`' => rest[1..].find(c).map_or(rest.len(), |end| end + 2),
            '/' if rest.starts_with("/*") => {
                let end = rest[2..].find("*/").map_or(rest.len(), |end| end + 4);
                out.push((at..at + end, false));
                end
            }
            '-' if rest.starts_with("--") => {
                let end = rest.find('\n').unwrap_or(rest.len());
                out.push((at..at + end, true));
                end
            }
            _ => c.len_utf8(),
        };
        at += skip.max(1);
    }
    out
}

/// The text of each `--` comment in `sql` (after the dashes, up to the end of its line),
/// skipping quoted text and `/* */` comments.
fn line_comments(sql: &str) -> Vec<&str> {
    (comments(sql).into_iter())
        .filter(|(_, line)| *line)
        .map(|(span, _)| &sql[span.start + 2..span.end])
        .collect()
}

/// `sql` with each of its comments (`--` and `/* */`, outside quotes) replaced by a
/// space, the line breaks kept.
pub fn without_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut from = 0;
    for (span, _) in comments(sql) {
        out.push_str(&sql[from..span.start]);
        out.push(' ');
        from = span.end;
    }
    out.push_str(&sql[from..]);
    out
}

/// Quotes and backslashes left out, so that a comment inside a quoted YAML value
/// (`''` for `'`, `\"` for `"`) still matches its line.
fn unquoted(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\'' | '"' | '\\'))
        .collect()
}

/// One problem for each SQL value (a segment, a mapped expression, an `order_by` item)
/// holding a `--` comment that no line of `text` holds: YAML joined the lines after it.
pub(crate) fn joined_comments(file: &PipelineFile, text: &str) -> Vec<Diagnostic> {
    let lines: Vec<String> = text.lines().map(unquoted).collect();
    let mut sql: Vec<(String, &str)> = file
        .segments
        .iter()
        .map(|(name, sql)| (format!("segments.{name}"), sql.as_str()))
        .collect();
    for (i, export) in file.exports.iter().enumerate() {
        for (field, x) in export.mapping.expressions() {
            sql.push((format!("exports[{i}].mapping.{field}"), x));
        }
        for x in &export.order_by {
            sql.push((format!("exports[{i}].order_by"), x.as_str()));
        }
    }
    let mut out = Vec::new();
    for (path, sql) in sql {
        let joined = line_comments(sql).into_iter().find(|comment| {
            let written = unquoted(&format!("--{}", comment.trim_end()));
            !lines.iter().any(|line| line.contains(&written))
        });
        if let Some(comment) = joined {
            let comment = comment.trim();
            let mut shown: String = comment.chars().take(40).collect();
            if shown.len() < comment.len() {
                shown.push_str("...");
            }
            out.push(Diagnostic::new(
                path,
                format!(
                    "the comment `-- {shown}` runs to the end of the SQL: YAML joins the lines of a `>` \
                     block or of a plain value into one, so everything after `--` is commented out. Write \
                     the SQL as a `|` block, which keeps its lines, or use `/* ... */` comments"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_outside_quotes_and_block_comments() {
        assert_eq!(
            line_comments("a -- one\nb '--not' \"--no\" /* -- no */ c --two"),
            vec![" one", "two"]
        );
        assert_eq!(line_comments("x = '-- open"), Vec::<&str>::new());
        assert_eq!(line_comments("--"), vec![""]);
    }

    #[test]
    fn comments_are_left_out_and_quotes_kept() {
        assert_eq!(
            without_comments("seen_at DESC -- newest\n/* a */ 'x -- y' /* open"),
            "seen_at DESC  \n  'x -- y'  "
        );
        assert_eq!(without_comments("a-b"), "a-b");
    }
}
