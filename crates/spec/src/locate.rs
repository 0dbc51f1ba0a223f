//! Finds the line and column of a field path (`exports[0].list_ids[1]`) in YAML text.
//!
//! serde_yaml gives locations only for the first structural error; problems found by
//! validation are located here, best effort, for block-style YAML and simple flow values.
//! When a part of the path cannot be found, the deepest part found is reported.

use crate::error::Location;

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Step::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

/// The indent of a line's content, counting a leading `- ` as indent, and the content.
fn content(line: &str) -> (usize, &str) {
    let trimmed = line.trim_start();
    let mut indent = line.len() - trimmed.len();
    let mut text = trimmed;
    while let Some(rest) = text.strip_prefix("- ") {
        let after = rest.trim_start();
        indent += text.len() - after.len();
        text = after;
    }
    (indent, text)
}

fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The location of `path` in `text`, if any part of it can be found.
pub(crate) fn locate(text: &str, path: &str) -> Option<Location> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<(usize, usize)> = None;
    // Block search: lines from `start` whose content is indented more than `parent`.
    let (mut start, mut parent): (usize, isize) = (0, -1);
    // Set when the current value is a flow collection (`{...}` or `[...]`) on one line.
    let mut flow: Option<usize> = None;
    for step in steps(path) {
        let is_index = matches!(step, Step::Index(_));
        let hit = match (step, flow) {
            (Step::Key(key), Some(l)) => {
                let from = found.map_or(0, |(_, c)| c);
                lines[l][from..]
                    .find(&format!("{key}:"))
                    .map(|c| (l, from + c))
            }
            (Step::Index(n), Some(l)) => {
                let line = lines[l];
                let open = line[found.map_or(0, |(_, c)| c)..]
                    .find('[')
                    .map(|o| o + found.map_or(0, |(_, c)| c));
                open.and_then(|open| {
                    let mut col = open + 1;
                    for (k, item) in line[open + 1..].split(',').enumerate() {
                        if k == n {
                            return Some((l, col + item.len() - item.trim_start().len()));
                        }
                        col += item.len() + 1;
                    }
                    None
                })
            }
            (Step::Key(key), None) => {
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().skip(start) {
                    if is_blank(line) {
                        continue;
                    }
                    let (indent, body) = content(line);
                    if indent as isize <= parent {
                        break;
                    }
                    if body.strip_prefix(key).is_some_and(|r| r.starts_with(':')) {
                        hit = Some((i, indent));
                        break;
                    }
                }
                hit
            }
            (Step::Index(n), None) => {
                let (mut seen, mut item_indent, mut hit) = (0, None, None);
                for (i, line) in lines.iter().enumerate().skip(start) {
                    if is_blank(line) {
                        continue;
                    }
                    let indent = line.len() - line.trim_start().len();
                    let is_item = line.trim_start().starts_with("- ");
                    // Items may sit at their key's own indent.
                    if (indent as isize) < parent || (indent as isize == parent && !is_item) {
                        break;
                    }
                    if is_item && item_indent.is_none_or(|x| x == indent) {
                        item_indent = Some(indent);
                        if seen == n {
                            hit = Some((i, content(line).0));
                            break;
                        }
                        seen += 1;
                    }
                }
                hit
            }
        };
        let Some((line, column)) = hit else { break };
        found = Some((line, column));
        if flow.is_none() {
            let rest = &lines[line][column..];
            let value = rest.split_once(':').map_or("", |(_, v)| v.trim_start());
            if is_index {
                // A sequence item: its first key is on the same line.
                start = line;
                parent = column as isize - 1;
            } else if value.starts_with('{') || value.starts_with('[') {
                flow = Some(line);
            } else {
                start = line + 1;
                parent = column as isize;
            }
        }
    }
    found.map(|(line, column)| Location {
        line: line + 1,
        column: column + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "version: 1
connections:
  marketing:
    type: sendgrid
    api_key: SG.x
sources:
  profiles: { format: parquet, path: data/ }
exports:
  - name: a
    list_ids: [x, y]
  - name: b
    list_ids:
      - one
      - two
    mapping:
      email: email
";

    fn at(path: &str) -> (usize, usize) {
        let l = locate(TEXT, path).unwrap();
        (l.line, l.column)
    }

    #[test]
    fn block_keys_and_items() {
        assert_eq!(at("version"), (1, 1));
        assert_eq!(at("connections.marketing.api_key"), (5, 5));
        assert_eq!(at("exports[1].name"), (11, 5));
        assert_eq!(at("exports[1].list_ids[1]"), (14, 9));
        assert_eq!(at("exports[1].mapping.email"), (16, 7));
    }

    #[test]
    fn flow_values() {
        assert_eq!(at("exports[0].list_ids[1]"), (10, 19));
        assert_eq!(at("sources.profiles.path"), (7, 32));
    }
}
