//! Text for the terminal: sample contacts as cells, masked emails, aligned tables.

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Header and cell text of the sample contacts; emails masked when asked.
pub(crate) fn sample_rows(batches: &[RecordBatch], mask: bool) -> Vec<(Vec<String>, Vec<String>)> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for batch in batches {
        let headers: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if formatters.len() != headers.len() {
            continue;
        }
        for row in 0..batch.num_rows() {
            let cells = formatters
                .iter()
                .zip(&headers)
                .map(|(f, h)| shown(f.value(row).to_string(), h, mask))
                .collect();
            rows.push((headers.clone(), cells));
        }
    }
    rows
}

/// The sample contacts as JSON objects, as a request body would carry their fields:
/// numbers as numbers, a field without a value left out; emails masked when asked.
pub(crate) fn sample_json(batches: &[RecordBatch], mask: bool) -> Vec<serde_json::Value> {
    use serde_json::{Map, Value};
    let mut out = Vec::new();
    for batch in batches {
        let Ok(rows) = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut contact = Map::new();
            for ((field, column), formatter) in
                schema.fields().iter().zip(batch.columns()).zip(&rows)
            {
                if column.is_null(row) {
                    continue;
                }
                let name = field.name();
                if let Some(list) = column.as_list_opt::<i32>() {
                    let items = list.value(row);
                    let Ok(item) =
                        ArrayFormatter::try_new(items.as_ref(), &FormatOptions::default())
                    else {
                        continue;
                    };
                    let items = (0..items.len())
                        .filter(|&i| items.is_valid(i))
                        .map(|i| Value::String(shown(item.value(i).to_string(), name, mask)))
                        .collect();
                    contact.insert(name.clone(), Value::Array(items));
                    continue;
                }
                let text = formatter.value(row).to_string();
                let value = if field.data_type().is_numeric() {
                    text.parse::<serde_json::Number>()
                        .map_or(Value::String(text), Value::Number)
                } else {
                    Value::String(shown(text, name, mask))
                };
                contact.insert(name.clone(), value);
            }
            out.push(Value::Object(contact));
        }
    }
    out
}

/// The text of a sample contact's `field`, its addresses masked when `mask` asks.
fn shown(text: String, field: &str, mask: bool) -> String {
    if mask && (field == "email" || field == "alternate_emails") {
        mask_emails(&text)
    } else {
        text
    }
}

/// `ada@example.com` → `a***@example.com`, for every address in the text.
pub fn mask_emails(text: &str) -> String {
    text.split_inclusive([',', ' ', '[', ']'])
        .map(|part| match part.split_once('@') {
            Some((local, domain)) => {
                let (prefix, local) =
                    local.split_at(local.len() - local.trim_start_matches(['[', ' ']).len());
                let first: String = local.chars().take(1).collect();
                format!("{prefix}{first}***@{domain}")
            }
            None => part.to_owned(),
        })
        .collect()
}

/// Most terminal columns one sample value takes in a table; a longer one ends in `…`.
const CELL_WIDTH: usize = 40;

/// A value as one table cell: control characters shown as escapes (a line break would
/// split the row), and cut to [`CELL_WIDTH`] columns (a custom field may hold pages).
pub(crate) fn cell(text: &str) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let escaped: String = text
        .chars()
        .flat_map(|c| {
            let escape = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            escape.into_iter().flatten().chain(plain)
        })
        .collect();
    if escaped.width() <= CELL_WIDTH {
        return escaped;
    }
    let mut out = String::new();
    let mut width = 0;
    for c in escaped.chars() {
        width += c.width().unwrap_or(0);
        if width > CELL_WIDTH - 1 {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

pub(crate) fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// A plain text table: columns padded to the width a terminal shows (a CJK character takes two cells, a
/// combining mark none), two spaces apart; `right` columns aligned right.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    use unicode_width::UnicodeWidthStr;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.width());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.width();
            if i > 0 {
                s.push_str("  ");
            }
            if right.contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_one_line_of_at_most_forty_columns() {
        assert_eq!(cell("Zoë \"0\"\n\tx"), "Zoë \"0\"\\n\\tx");
        let long = cell(&"x".repeat(6_000_000));
        assert_eq!(long, format!("{}…", "x".repeat(39)));
        // Wide characters count two columns each.
        assert_eq!(cell(&"日".repeat(30)), format!("{}…", "日".repeat(19)));
        assert_eq!(cell(&"日".repeat(20)), "日".repeat(20));
    }

    #[test]
    fn masks_every_address() {
        assert_eq!(mask_emails("ada@example.com"), "a***@example.com");
        assert_eq!(mask_emails("[x@a.io, yz@b.io]"), "[x***@a.io, y***@b.io]");
        assert_eq!(mask_emails("no email here"), "no email here");
    }

    #[test]
    fn aligns_columns() {
        let t = table(
            &["name", "n"],
            &[
                vec!["vip".into(), "12".into()],
                vec!["all".into(), "3".into()],
            ],
            &[1],
        );
        assert_eq!(t, "name   n\nvip   12\nall    3\n");

        // By the width a terminal shows: a CJK character takes two cells, a combining mark none.
        let t = table(
            &["name", "city"],
            &[
                vec!["山田太郎".into(), "東京".into()],
                vec!["Zoe\u{308}".into(), "Paris".into()],
            ],
            &[],
        );
        assert_eq!(
            t,
            "name      city\n山田太郎  東京\nZoe\u{308}       Paris\n"
        );
    }
}
