//! `pipeline run --dry-run` on real Parquet files: the bodies, the rejects, the summary.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn quickstart_dry_run_writes_the_expected_contacts() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let run = pipeline(
        &repo(),
        &[
            "run",
            "pipelines/quickstart.yaml",
            "--dry-run",
            out_dir,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    let contacts = contacts(&out.path().join("newsletter"));
    // Members of vip or high_value, first row by customer_id per email, bad emails out.
    assert_eq!(
        emails(&contacts),
        [
            "ada.lovelace@example.com",
            "grace.hopper@example.com",
            "zoe.muller@example.de",
            "ivan.petrov@example.ru",
            "misaki@example.jp",
            "giorgos@example.gr",
            "mohammed@example.com",
            "aoife@example.ie",
            "nguyen.tran@example.vn",
            "soren@example.dk",
            "lucja@example.pl",
            "hubert@example.com",
            "ren@example.jp",
        ]
    );
    // Grace's first row (customer 2, padded and capitalised) wins over customer 3.
    assert_eq!(contacts[1]["first_name"], "Grace");
    // Aoife's customer 14 wins over customer 15's capitalised duplicate.
    assert_eq!(contacts[7]["last_name"], "O'Brien");
    // Over-long fields are cut to 50 characters on a character boundary.
    let hubert = &contacts[11];
    assert_eq!(hubert["first_name"].as_str().unwrap().chars().count(), 50);
    assert_eq!(
        hubert["last_name"].as_str().unwrap(),
        "Ñandú-".repeat(10).chars().take(50).collect::<String>()
    );
    assert_eq!(contacts[12]["city"].as_str().unwrap().chars().count(), 60);
    // Nulls are omitted; custom fields by name with SendGrid's value forms.
    assert!(contacts[10].get("last_name").is_none(), "{}", contacts[10]);
    assert_eq!(
        contacts[0]["custom_fields"],
        json!({"lifetime_value": 12500, "signup_date": "2022-01-09T00:00:00Z"})
    );

    let body = &bodies(&out.path().join("newsletter"))[0];
    assert_eq!(body["list_ids"], json!([LIST]));

    let summary = &run.json()["exports"][0];
    assert_eq!(summary["rows"], 27);
    assert_eq!(summary["rejected"], 7);
    assert_eq!(
        summary["rejected_by_reason"],
        json!({"invalid_email": 4, "missing_email": 3})
    );
    assert_eq!(summary["duplicates"], 7);
    assert_eq!(summary["contacts"], 13);
    assert_eq!(summary["sent"], 13);
    assert_eq!(summary["truncated_contacts"], 2);
    assert_eq!(summary["cap"]["status"], "within");
    let segments: Vec<(String, u64, u64, u64, u64)> = summary["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["segment"].as_str().unwrap().to_owned(),
                s["rows"].as_u64().unwrap(),
                s["rejected"].as_u64().unwrap(),
                s["duplicates"].as_u64().unwrap(),
                s["contacts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        segments,
        [
            ("vip".into(), 10, 2, 3, 5),
            ("high_value".into(), 17, 5, 4, 8)
        ]
    );

    // The exact bodies and rejects, byte for byte.
    let body_text =
        std::fs::read_to_string(out.path().join("newsletter/request-000001.json")).unwrap();
    assert_golden("quickstart/newsletter/request-000001.json", &body_text);
    let rejects = std::fs::read_to_string(out.path().join("newsletter.rejects.jsonl")).unwrap();
    assert_golden("quickstart/newsletter.rejects.jsonl", &rejects);
}

#[cfg(unix)]
#[test]
fn files_holding_contacts_are_owner_only() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(mode(&dir.path().join("out/newsletter")), 0o700);
    assert_eq!(
        mode(&dir.path().join("out/newsletter/request-000001.json")),
        0o600
    );
    assert_eq!(
        mode(&dir.path().join("out/newsletter.rejects.jsonl")),
        0o600
    );
}

#[test]
fn rejects_file_names_segment_key_and_reason() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(dir.path().join("out/newsletter.rejects.jsonl")).unwrap();
    let rejects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 7);
    assert!(rejects.contains(&json!({
        "segment": "high_value", "key": "17", "email": "two@@example.com",
        "reason": "invalid_email", "detail": "more than one `@`"
    })));
    assert!(rejects.contains(&json!({
        "segment": "vip", "key": "4", "email": null, "reason": "missing_email", "detail": null
    })));
}

#[test]
fn reject_policy_rejects_over_long_contacts_and_names_the_fields() {
    let dir = sample_dir();
    let export = format!("{EXPORT}\n    field_length_policy: reject\n").replace(
        "      first_name: first_name",
        "      first_name: first_name\n      last_name: last_name\n      city: city",
    );
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = &run.json()["exports"][0];
    assert_eq!(summary["rejected_by_reason"]["field_too_long"], 2);
    assert_eq!(summary["contacts"], 11);
    let text = std::fs::read_to_string(dir.path().join("out/newsletter.rejects.jsonl")).unwrap();
    let hubert: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["key"] == "21")
        .unwrap();
    assert_eq!(hubert["reason"], "field_too_long");
    assert_eq!(hubert["detail"], "first_name,last_name");
    let emails = emails(&contacts(&dir.path().join("out/newsletter")));
    assert!(!emails.contains(&"hubert@example.com".to_string()));
}

#[test]
fn cap_exceeded_fails_and_writes_nothing() {
    let dir = sample_dir();
    let export = format!("{EXPORT}\n    max_profiles: 10\n");
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("export `newsletter` has 13 contacts after dedupe and validation, 3 over its cap of 10; nothing was written or sent"),
        "{}",
        run.stderr
    );
    assert!(bodies(&dir.path().join("out/newsletter")).is_empty());
    assert!(!dir.path().join("out/newsletter.rejects.jsonl").exists());
}

#[test]
fn cap_truncate_keeps_the_first_by_order_and_says_how_many_dropped() {
    let dir = sample_dir();
    let export = format!("{EXPORT}\n    max_profiles: 4\n    on_cap_exceeded: truncate\n").replace(
        "order_by: customer_id",
        // Comments do not hide the direction.
        "order_by: customer_id /* ids */ DESC -- the newest first",
    );
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("dropped 9"), "{}", run.stdout);
    assert_eq!(
        emails(&contacts(&dir.path().join("out/newsletter"))),
        [
            "ren@example.jp",
            "hubert@example.com",
            "lucja@example.pl",
            "soren@example.dk"
        ]
    );
}

#[test]
fn too_many_rejects_finish_with_their_own_exit_code() {
    let dir = sample_dir();
    let export = EXPORT.replace("allowed_rejects: 100", "allowed_rejects: 6");
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("7 contact(s) rejected, 6 allowed"),
        "{}",
        run.stderr
    );
    assert_eq!(contacts(&dir.path().join("out/newsletter")).len(), 13);
}

#[test]
fn expressions_fill_fields_and_custom_fields_keep_their_types() {
    let dir = sample_dir();
    let export = "    segments: [high_value]
    mapping:
      email: email
      first_name: upper(first_name) -- a comment ends with its expression
      external_id: customer_id
      custom_fields:
        ltv_cents: CAST(lifetime_value * 100 AS BIGINT)
        tier: |-
          CASE WHEN lifetime_value > 10000 THEN 'gold' -- a literal block keeps its lines
          ELSE 'silver' END
    order_by: customer_id
    allowed_rejects: 100";
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, export));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let contacts = contacts(&dir.path().join("out/newsletter"));
    assert_eq!(
        contacts[0],
        json!({"email": "ada.lovelace@example.com", "first_name": "ADA", "external_id": "1",
               "custom_fields": {"ltv_cents": 1250000, "tier": "gold"}})
    );
}

#[test]
fn a_rerun_replaces_the_bodies_of_the_previous_run() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    std::fs::create_dir_all(dir.path().join("out/newsletter")).unwrap();
    std::fs::write(dir.path().join("out/newsletter/request-000007.json"), "{}").unwrap();
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !dir.path()
            .join("out/newsletter/request-000007.json")
            .exists()
    );
    assert_eq!(bodies(&dir.path().join("out/newsletter")).len(), 1);
}

#[test]
fn contacts_counts_and_rejects_do_not_depend_on_how_rows_arrive() {
    // Rows reach the selection in whatever order the query's partitions produce them;
    // one row per batch scrambles that order. The contacts (including which row of a
    // repeated email wins and which fall over the cap), the counts and the rejects file
    // must not change.
    let dir = sample_dir();
    let export = format!("{EXPORT}\n    max_profiles: 6\n    on_cap_exceeded: truncate\n").replace(
        "order_by: customer_id",
        "order_by: [lifetime_value DESC, customer_id]",
    );
    let run_with = |batch_size: usize| {
        let yaml = pipeline_yaml(SEGMENTS, &export).replace(
            "version: 1\n",
            &format!("version: 1\nengine: {{ batch_size: {batch_size} }}\n"),
        );
        let file = write(dir.path(), &yaml);
        let out = format!("out-{batch_size}");
        let run = pipeline(
            dir.path(),
            &["run", file, "--dry-run", &out, "--output", "json"],
            &[],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let out = dir.path().join(out);
        let mut summary = run.json()["exports"][0].clone();
        // The paths name each run's own folder.
        summary["rejects_file"] = Value::Null;
        summary["sink"]["outputs"] = Value::Null;
        (
            contacts(&out.join("newsletter")),
            std::fs::read_to_string(out.join("newsletter.rejects.jsonl")).unwrap(),
            summary,
        )
    };
    let (contacts, rejects, summary) = run_with(8192);
    assert_eq!(contacts.len(), 6);
    assert_eq!(summary["cap"]["over_by"], 7);
    assert_eq!(rejects.lines().count(), 7);
    for batch_size in [1, 2, 5] {
        let (c, r, s) = run_with(batch_size);
        assert_eq!(c, contacts, "contacts at batch_size {batch_size}");
        assert_eq!(r, rejects, "rejects at batch_size {batch_size}");
        assert_eq!(s, summary, "summary at batch_size {batch_size}");
    }
}

/// A table of `fields` text columns `f0`, `f1`, ... beside `email`, over `rows` rows, in
/// `data/wide.parquet`; and the pipeline that maps each `fN` to a custom field `field_N`
/// and `email_column` to the email.
fn wide_export(dir: &std::path::Path, fields: usize, rows: usize, email_column: &str) -> String {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;

    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "email".into(),
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("u{i}@example.com")),
        )),
    )];
    for f in 0..fields {
        let values = (0..rows).map(|i| format!("value {i} of field {f}"));
        columns.push((
            format!("f{f}"),
            Arc::new(StringArray::from_iter_values(values)),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir(dir.join("data")).unwrap();
    let file = std::fs::File::create(dir.join("data/wide.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let mapped: String = (0..fields)
        .map(|f| format!("        field_{f}: f{f}\n"))
        .collect();
    format!(
        "version: 1
{}sources:
  wide: {{ format: parquet, path: data/wide.parquet }}
segments:
  everyone: SELECT * FROM wide
exports:
  - name: wide
    connection: marketing
    list_ids: [{LIST}]
    segments: [everyone]
    mapping:
      email: {email_column}
      custom_fields:
{mapped}",
        connections_yaml(None)
    )
}

#[test]
fn an_export_of_many_fields_fits_the_default_memory_limit() {
    // 150 custom fields over 20,000 rows: a batch of the scan's 8,192 rows asked the
    // contacts' sort for more than its share of the default limit, and the run failed.
    const FIELDS: usize = 150;
    const ROWS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &wide_export(dir.path(), FIELDS, ROWS, "email"));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = contacts(&dir.path().join("out/wide"));
    assert_eq!(sent.len(), ROWS);
    let one = sent
        .iter()
        .find(|c| c["email"] == "u12345@example.com")
        .expect("u12345 is sent");
    let custom = one["custom_fields"].as_object().unwrap();
    assert_eq!(custom.len(), FIELDS);
    assert_eq!(custom["field_149"], "value 12345 of field 149");
}

#[test]
fn a_wide_export_whose_every_row_is_rejected_writes_its_rejects() {
    // The wrong column mapped to the email: every row rejected. The rejected rows went
    // into their sort with every mapped field, and the run failed on memory instead of
    // saying what was wrong.
    const ROWS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &wide_export(dir.path(), 100, ROWS, "f0"));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("export `wide`: 20000 contact(s) rejected, 0 allowed (allowed_rejects)"),
        "{}",
        run.stderr
    );
    let rejects = std::fs::read_to_string(dir.path().join("out/wide.rejects.jsonl")).unwrap();
    let lines: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ROWS);
    assert_eq!(
        lines[0],
        json!({"segment": "everyone", "key": "value 0 of field 0",
               "email": "value 0 of field 0", "reason": "invalid_email", "detail": "no `@`"})
    );
}

#[test]
fn dates_of_every_year_and_unit_are_sent_and_unusable_floats_left_out() {
    // `0001-01-01` and `9999-12-31` mean "never" in many tables; a zoned timestamp of
    // microseconds outside 1677-2262 failed the whole export (DataFusion's `to_char`
    // cast it to nanoseconds first). A year outside 0001-9999 (0000-12-31, 10000-01-01),
    // which ISO 8601 writes only with a sign, is not sent; the contact is.
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray};
    use arrow::array::{TimestampMicrosecondArray, TimestampMillisecondArray};

    let never = [
        -62_135_596_800_000_000,
        253_402_214_400_000_000,
        0,
        -62_135_683_200_000_000,
        253_402_300_800_000_000,
    ];
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "email",
            Arc::new(StringArray::from(vec![
                "first@example.com",
                "last@example.com",
                "epoch@example.com",
                "year0@example.com",
                "year10000@example.com",
            ])),
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![
                -719_162, 2_932_896, 0, -719_163, 2_932_897,
            ])),
        ),
        (
            "seen",
            Arc::new(TimestampMicrosecondArray::from(never.to_vec()).with_timezone("+05:30")),
        ),
        (
            "signed",
            Arc::new(TimestampMillisecondArray::from(
                never.iter().map(|us| us / 1000).collect::<Vec<_>>(),
            )),
        ),
        (
            "score",
            Arc::new(Float64Array::from(vec![
                f64::NAN,
                f64::INFINITY,
                -0.5,
                f64::NAN,
                f64::NAN,
            ])),
        ),
    ];
    let fields: Vec<Value> = dry_run_of_columns(
        columns,
        "email: email\n      custom_fields: { day: day, seen: seen, signed: signed, score: score }",
        "day",
    )
    .into_iter()
    .map(|c| c["custom_fields"].clone())
    .collect();
    assert_eq!(
        fields,
        [
            Value::Null,
            json!({"day": "0001-01-01T00:00:00Z", "seen": "0001-01-01T05:30:00+05:30",
                   "signed": "0001-01-01T00:00:00Z"}),
            json!({"day": "1970-01-01T00:00:00Z", "seen": "1970-01-01T05:30:00+05:30",
                   "signed": "1970-01-01T00:00:00Z", "score": -0.5}),
            json!({"day": "9999-12-31T00:00:00Z", "seen": "9999-12-31T05:30:00+05:30",
                   "signed": "9999-12-31T00:00:00Z"}),
            Value::Null,
        ]
    );
}

/// A 32-bit float is sent as the number the table shows (1.1), not as the double nearest
/// its binary value (1.100000023841858); its NaN and infinities are not sent.
#[test]
fn a_narrow_float_is_sent_as_the_table_shows_it() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float32Array, Float64Array, StringArray};

    let emails = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ];
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("email", Arc::new(StringArray::from(emails.to_vec()))),
        (
            "score",
            Arc::new(Float32Array::from(vec![1.1, -0.3, f32::NAN, f32::INFINITY])),
        ),
        (
            "ratio",
            Arc::new(Float64Array::from(vec![
                f64::NEG_INFINITY,
                0.25,
                2.0,
                f64::NAN,
            ])),
        ),
    ];
    let sent: Vec<Value> = dry_run_of_columns(
        columns,
        "email: email\n      first_name: score\n      last_name: ratio\n      custom_fields: { score: score, tenfold: score * 10 }",
        "email",
    )
    .into_iter()
    .map(|c| json!([c["first_name"], c["last_name"], c["custom_fields"]]))
    .collect();
    // NaN and infinities are no value, as text as well as numbers: never `NaN` or `inf`.
    assert_eq!(
        sent,
        [
            json!(["1.1", null, {"score": 1.1, "tenfold": 11}]),
            json!(["-0.3", "0.25", {"score": -0.3, "tenfold": -3}]),
            json!([null, "2.0", null]),
            json!([null, null, null]),
        ]
    );
}

/// The contacts of a dry run of one export of every row of a table of `columns`, its
/// `mapping` lines (indented under `mapping:`) and `order_by`.
fn dry_run_of_columns(
    columns: Vec<(&str, arrow::array::ArrayRef)>,
    mapping: &str,
    order_by: &str,
) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let batch = arrow::record_batch::RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let file = std::fs::File::create(dir.path().join("data/profiles.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let yaml = format!(
        "version: 1
{}sources:
  profiles: {{ format: parquet, path: data/profiles.parquet }}
segments:
  everyone: SELECT * FROM profiles
exports:
  - name: everyone
    connection: marketing
    list_ids: [{LIST}]
    segments: [everyone]
    mapping:
      {mapping}
    order_by: {order_by}
",
        connections_yaml(None)
    );
    let file = write(dir.path(), &yaml);
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    contacts(&dir.path().join("out/everyone"))
}

/// Writes one Parquet file of `emails` (and a `score` per row) at `dir/relative`.
fn write_emails(dir: &std::path::Path, relative: &str, emails: &[&str]) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;

    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let scores = Int64Array::from_iter_values((0..emails.len()).map(|i| i as i64));
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("email", Arc::new(StringArray::from(emails.to_vec()))),
        ("score", Arc::new(scores)),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A pipeline exporting `segment` over the source `profiles` at `data/profiles`, with
/// `country` mapped.
fn folder_export(segment: &str) -> String {
    format!(
        "version: 1
{}sources:
  profiles: {{ format: parquet, path: data/profiles }}
segments:
  chosen: {segment}
exports:
  - name: by_country
    connection: marketing
    list_ids: [{LIST}]
    segments: [chosen]
    mapping:
      email: email
      country: country
    order_by: email
",
        connections_yaml(None)
    )
}

#[test]
fn a_folder_of_hive_partitions_reads_its_keys_as_columns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data/profiles");
    write_emails(
        &root,
        "country=DE/part-0.parquet",
        &["de1@example.com", "de2@example.com"],
    );
    write_emails(&root, "country=FR/part-0.parquet", &["fr@example.com"]);
    // Percent-encoded as Spark and Hive write a `/`, and the folder of null values.
    write_emails(&root, "country=A%2FB/part-0.parquet", &["ab@example.com"]);
    write_emails(
        &root,
        "country=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
        &["none@example.com"],
    );
    std::fs::write(root.join("_SUCCESS"), "").unwrap();
    std::fs::write(root.join("country=DE/.part-0.parquet.crc"), "crc").unwrap();

    let file = write(
        dir.path(),
        &folder_export("SELECT * FROM profiles WHERE country <> 'FR' OR country IS NULL"),
    );
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        contacts(&dir.path().join("out/by_country")),
        [
            json!({"email": "ab@example.com", "country": "A/B"}),
            json!({"email": "de1@example.com", "country": "DE"}),
            json!({"email": "de2@example.com", "country": "DE"}),
            json!({"email": "none@example.com"}),
        ]
    );
}

/// Partition values read as the numbers and dates they are, and are sent as such, unless
/// that would change one (`month=01` stays text); a filter on them still reads only the
/// folders it keeps: the others' data is not even valid.
#[test]
fn hive_partition_values_read_as_numbers_and_dates_when_all_are() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data/profiles");
    let pruned = [
        "month=01/day=9/dt=2026-01-05",
        "month=02/day=10/dt=2025-12-31",
    ];
    for (folders, emails) in [
        (pruned[0], &["a@example.com", "a2@example.com"][..]),
        (pruned[1], &["b@example.com", "b2@example.com"]),
        ("month=02/day=10/dt=2026-02-01", &["c@example.com"]),
        (
            "month=02/day=__HIVE_DEFAULT_PARTITION__/dt=2026-03-01",
            &["d@example.com"],
        ),
    ] {
        write_emails(&root, &format!("{folders}/part-0.parquet"), emails);
    }
    // The filter leaves out a and b: their pages (two values each, so that no column is
    // answered from the footer's statistics) are zeroed, so reading them would fail the
    // run; the footer, read for the schema, is intact.
    for folders in pruned {
        let path = root.join(folders).join("part-0.parquet");
        let mut bytes = std::fs::read(&path).unwrap();
        let footer = u32::from_le_bytes(bytes[bytes.len() - 8..][..4].try_into().unwrap());
        let pages = bytes.len() - 8 - footer as usize;
        bytes[4..pages].fill(0);
        std::fs::write(&path, bytes).unwrap();
    }
    let yaml = folder_export(
        "SELECT * FROM profiles WHERE (day > 9 AND dt >= DATE '2026-01-01') OR day IS NULL",
    )
    .replace(
        "      country: country",
        "      custom_fields: { day: day, month: month, dt: dt }",
    );
    let file = write(dir.path(), &yaml);
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        contacts(&dir.path().join("out/by_country")),
        [
            json!({"email": "c@example.com",
                   "custom_fields": {"day": 10, "month": "02", "dt": "2026-02-01T00:00:00Z"}}),
            json!({"email": "d@example.com",
                   "custom_fields": {"month": "02", "dt": "2026-03-01T00:00:00Z"}}),
        ]
    );
}

#[test]
fn files_of_one_table_from_different_writers_are_read_as_one() {
    // pandas writes `string` and `int64`, Polars `large_string`, an older job `int32`:
    // one table appended to by each.
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, Int64Array, LargeStringArray, StringArray};
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data/profiles");
    std::fs::create_dir_all(&root).unwrap();
    let parts: [(&str, ArrayRef, ArrayRef); 2] = [
        (
            "pandas.parquet",
            Arc::new(StringArray::from(vec!["pd@example.com"])),
            Arc::new(Int64Array::from(vec![7])),
        ),
        (
            "polars.parquet",
            Arc::new(LargeStringArray::from(vec!["pl@example.com"])),
            Arc::new(Int32Array::from(vec![8])),
        ),
    ];
    for (name, email, visits) in parts {
        let batch = RecordBatch::try_from_iter([("email", email), ("visits", visits)]).unwrap();
        let file = std::fs::File::create(root.join(name)).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    let yaml = folder_export("SELECT *, 'x' AS country FROM profiles").replace(
        "      country: country",
        "      custom_fields: { visits: visits }",
    );
    let file = write(dir.path(), &yaml);
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        contacts(&dir.path().join("out/by_country")),
        [
            json!({"email": "pd@example.com", "custom_fields": {"visits": 7}}),
            json!({"email": "pl@example.com", "custom_fields": {"visits": 8}}),
        ]
    );
}

#[test]
fn every_export_s_problem_is_said_not_only_the_gravest() {
    let dir = sample_dir();
    // `newsletter` is over its cap (exit 3); `rejecting` rejects more than it allows (5).
    let capped = format!("{EXPORT}\n    max_profiles: 10\n");
    let rejecting = EXPORT.replace("allowed_rejects: 100", "allowed_rejects: 6");
    let second = format!(
        "  - name: rejecting\n    connection: marketing\n    list_ids: [{LIST}]\n{rejecting}\n"
    );
    let file = write(
        dir.path(),
        &pipeline_yaml(SEGMENTS, &format!("{capped}{second}")),
    );
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    for said in [
        "export `newsletter` has 13 contacts after dedupe and validation, 3 over its cap of 10",
        "export `rejecting`: 7 contact(s) rejected, 6 allowed (allowed_rejects)",
    ] {
        assert!(run.stderr.contains(said), "{said}\n{}", run.stderr);
    }
    assert_eq!(contacts(&dir.path().join("out/rejecting")).len(), 13);
}

/// A `batch_size` larger than the default is the segment SQL's: the export's own sorts,
/// which spill past their small shares here, keep batches of the default, and the run
/// sends what it sends at the default.
#[test]
fn a_large_batch_size_does_not_exhaust_the_sorts_that_spill() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_datagen::write_realistic(&pipeline_datagen::Realistic {
        rows: 500_000,
        out: dir.path().join("data"),
        member_share: 0.014,
        seed: 42,
    })
    .unwrap();
    let text = |batch_size: u32| {
        format!(
            "version: 1
engine: {{ memory_limit_mib: 16, batch_size: {batch_size} }}
{}sources:
  profiles: {{ format: parquet, path: data/profiles/ }}
segments:
  everyone: SELECT * FROM profiles
exports:
  - name: everyone
    connection: marketing
    list_ids: [{LIST}]
    segments: [everyone]
    mapping: {{ email: email, first_name: first_name, city: city }}
    order_by: customer_id
    on_cap_exceeded: truncate
    allowed_rejects: 500000
",
            connections_yaml(None)
        )
    };
    let mut sent = Vec::new();
    for (batch_size, out) in [(32768, "large"), (8192, "default")] {
        let file = write(dir.path(), &text(batch_size));
        let run = pipeline(
            dir.path(),
            &["run", file, "--dry-run", out, "--output", "json"],
            &[],
        );
        assert_eq!(run.code, 0, "batch_size {batch_size}: {}", run.stderr);
        assert_eq!(run.json()["exports"][0]["sent"], 100_000);
        sent.push(contacts(&dir.path().join(out).join("everyone")));
    }
    assert_eq!(sent[0].len(), 100_000);
    assert!(
        sent[0] == sent[1],
        "the contacts differ with the batch size"
    );
}

/// `engine.partitions` changes how the segment SQL is split, not what it selects.
#[test]
fn the_partitions_setting_sends_what_one_per_core_sends() {
    let dir = sample_dir();
    let mut sent = Vec::new();
    for (engine, out) in [
        ("", "cores"),
        ("engine: { partitions: 1 }\n", "one"),
        ("engine: { partitions: 7 }\n", "seven"),
    ] {
        let text = pipeline_yaml(SEGMENTS, EXPORT)
            .replace("version: 1\n", &format!("version: 1\n{engine}"));
        let file = write(dir.path(), &text);
        let run = pipeline(dir.path(), &["run", file, "--dry-run", out], &[]);
        assert_eq!(run.code, 0, "{engine}: {}", run.stderr);
        sent.push(contacts(&dir.path().join(out).join("newsletter")));
    }
    assert_eq!(sent[0].len(), 13);
    assert!(sent[1] == sent[0] && sent[2] == sent[0], "{sent:?}");
}
