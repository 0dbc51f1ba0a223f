//! An import job's errors file: CSV with a header row. Its columns are not documented; the
//! contact is named by the column of the export's identifier (its header is the
//! identifier's name; for emails, any header that says email), the message by the column
//! whose header says error or message (else the other columns joined). A file without the
//! identifier's column, or with a row that is not CSV, is unreadable: nothing in it is
//! guessed.

use pipeline_sink::SinkReject;

/// The contacts an errors file names by identifier `key` (`email`, `external_id`, ...), as
/// rejects (without their job id), or why the file cannot be read.
pub fn parse_errors_file(text: &str, key: &str) -> Result<Vec<SinkReject>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("not CSV: {e}"))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let email_at = headers
        .iter()
        .position(|h| h == key)
        .or_else(|| {
            (key == "email")
                .then(|| headers.iter().position(|h| h.contains("email")))
                .flatten()
        })
        .ok_or_else(|| {
            format!(
                "no {key} column among its {} column(s) ({})",
                headers.len(),
                headers.join(", ").chars().take(120).collect::<String>()
            )
        })?;
    let message_at = headers
        .iter()
        .position(|h| h.contains("error") || h.contains("message") || h.contains("reason"));
    let mut rejects = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("not CSV: {e}"))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let email = record.get(email_at).unwrap_or_default().to_owned();
        if email.is_empty() {
            let line = record.position().map_or(0, |p| p.line());
            return Err(format!("line {line} names no {key}"));
        }
        let message = match message_at.and_then(|i| record.get(i)) {
            Some(m) => m.to_owned(),
            None => record
                .iter()
                .enumerate()
                .filter(|(i, v)| *i != email_at && !v.is_empty())
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
                .join("; "),
        };
        rejects.push(SinkReject {
            email,
            reason: "import_errored",
            message: if message.is_empty() {
                "import error".into()
            } else {
                message
            },
            job_id: None,
            hash: None,
        });
    }
    Ok(rejects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_file_lines_become_rejects() {
        let rejects = parse_errors_file(
            "email,error\na@x.io,undeliverable\n\n\"b@y.io\",\"blocked\"\n",
            "email",
        )
        .unwrap();
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[1].email, "b@y.io");
        assert_eq!(rejects[1].message, "blocked");
        assert_eq!(rejects[0].reason, "import_errored");
    }

    #[test]
    fn quoted_commas_stay_in_their_field_and_columns_are_found_by_header() {
        let rejects = parse_errors_file(
            "\u{feff}Line,Error,Email\n2,\"invalid, too long\",c@z.io\n3,\"say \"\"no\"\"\",d@z.io\n",
            "email",
        )
        .unwrap();
        let got: Vec<(&str, &str)> = rejects
            .iter()
            .map(|r| (r.email.as_str(), r.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [("c@z.io", "invalid, too long"), ("d@z.io", "say \"no\"")]
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_not_an_empty_list() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>";
        let err = parse_errors_file(xml, "email").unwrap_err();
        assert!(err.starts_with("no email column"), "{err}");
        let err = parse_errors_file("error,email\nbounced,\n", "email").unwrap_err();
        assert_eq!(err, "line 2 names no email");
        assert_eq!(parse_errors_file("email,error\n", "email").unwrap(), []);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::default())]

            #[test]
            fn any_text_is_read_or_refused_without_panicking(text in "\\PC{0,300}") {
                let _ = parse_errors_file(&text, "email");
            }

            /// Real CSV in any column order, with any message: every row comes back.
            #[test]
            fn written_csv_reads_back_whatever_the_column_order(
                rows in proptest::collection::vec(("[a-z0-9.]{1,20}@[a-z]{1,10}\\.io", "[\\p{L}\\p{N},;\"'. ]{0,40}"), 0..20),
                email_first in any::<bool>(),
            ) {
                let mut writer = csv::Writer::from_writer(Vec::new());
                let header = if email_first { ["email", "error"] } else { ["error", "email"] };
                writer.write_record(header).unwrap();
                for (email, message) in &rows {
                    if email_first {
                        writer.write_record([email, message]).unwrap();
                    } else {
                        writer.write_record([message, email]).unwrap();
                    }
                }
                let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
                let back: Vec<(String, String)> = parse_errors_file(&text, "email")
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.email, r.message))
                    .collect();
                let expected: Vec<(String, String)> = rows
                    .iter()
                    .map(|(e, m)| {
                        let m = m.trim();
                        (e.clone(), if m.is_empty() { "import error".to_owned() } else { m.to_owned() })
                    })
                    .collect();
                prop_assert_eq!(back, expected);
            }
        }
    }
}
