//! An import job's errors file: CSV with a header row. Its columns are not documented; the
//! email is the column whose header names it (else the first), the message the column
//! whose header says error or message (else the other columns joined).

use pipeline_sink::SinkReject;

/// The contacts an errors file names, as rejects (without their job id).
pub fn parse_errors_file(text: &str) -> Vec<SinkReject> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(_) => return Vec::new(),
    };
    let email_at = headers
        .iter()
        .position(|h| h.contains("email"))
        .unwrap_or(0);
    let message_at = headers
        .iter()
        .position(|h| h.contains("error") || h.contains("message"));
    reader
        .records()
        .filter_map(Result::ok)
        .filter(|r| r.iter().any(|v| !v.is_empty()))
        .filter_map(|record| {
            let email = record.get(email_at)?.to_owned();
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
            Some(SinkReject {
                email,
                reason: "import_errored",
                message: if message.is_empty() {
                    "import error".into()
                } else {
                    message
                },
                job_id: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_file_lines_become_rejects() {
        let rejects =
            parse_errors_file("email,error\na@x.io,undeliverable\n\n\"b@y.io\",\"blocked\"\n");
        assert_eq!(rejects.len(), 2);
        assert_eq!(rejects[1].email, "b@y.io");
        assert_eq!(rejects[1].message, "blocked");
        assert_eq!(rejects[0].reason, "import_errored");
    }

    #[test]
    fn quoted_commas_stay_in_their_field_and_columns_are_found_by_header() {
        let rejects = parse_errors_file(
            "line,error,email\n2,\"invalid, too long\",c@z.io\n3,\"say \"\"no\"\"\",d@z.io\n",
        );
        let got: Vec<(&str, &str)> = rejects
            .iter()
            .map(|r| (r.email.as_str(), r.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [("c@z.io", "invalid, too long"), ("d@z.io", "say \"no\"")]
        );
    }
}
