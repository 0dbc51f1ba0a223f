//! Every kind of bad input gets its exit code and a message that says where and what.

mod common;

use common::*;

fn run_file(text: &str) -> (tempfile::TempDir, Run) {
    let dir = sample_dir();
    let file = write(dir.path(), text);
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    (dir, run)
}

fn assert_config_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    for n in needles {
        assert!(run.stderr.contains(n), "expected `{n}` in:\n{}", run.stderr);
    }
}

#[test]
fn unknown_key_gives_file_line_column_and_valid_keys() {
    let text = pipeline_yaml(
        SEGMENTS,
        &EXPORT.replace("first_name: first_name", "frist_name: first_name"),
    );
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "p.yaml:20:7: exports[0].mapping: unknown field `frist_name`",
            "first_name",
        ],
    );
}

#[test]
fn yaml_syntax_error_gives_its_location() {
    let (_d, run) = run_file("version: 1\nconnections: [\n");
    assert_config_error(&run, &["p.yaml:"]);
}

#[test]
fn literal_api_key_is_refused_and_never_printed() {
    let text =
        pipeline_yaml(SEGMENTS, EXPORT).replace("${SENDGRID_API_KEY}", "SG.literal-secret-key");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &["connections.marketing.api_key: a literal API key in the pipeline file is refused"],
    );
    assert!(
        !run.stderr.contains("SG.literal-secret-key")
            && !run.stdout.contains("SG.literal-secret-key")
    );
}

#[test]
fn missing_consent_is_refused_with_the_reason() {
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace("    data_privacy_consent: true\n", "");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "connections.marketing.data_privacy_consent: must be `true`",
            "personal data",
        ],
    );
}

#[test]
fn missing_environment_variable_is_named() {
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace("'vip'", "'${SEGMENT_NAME}'");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &["segments.vip: environment variable SEGMENT_NAME is not set"],
    );
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace("connection: marketing", "connection: sales")
        .replace("segments: [vip, high_value]", "segments: [vip, lapsed]");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "has 2 problems",
            "p.yaml:15:5: exports[0].connection: no connection named `sales`; declared: marketing",
            "p.yaml:17:21: exports[0].segments[1]: no segment named `lapsed`; declared: high_value, vip",
        ],
    );
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace("connection: marketing", "connection: marketting")
        .replace("segments: [vip, high_value]", "segments: [vip, high_valeu]");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "no connection named `marketting` (did you mean `marketing`?); declared: marketing",
            "no segment named `high_valeu` (did you mean `high_value`?); declared: high_value, vip",
        ],
    );
}

#[test]
fn missing_source_file_names_source_and_path() {
    let text =
        pipeline_yaml(SEGMENTS, EXPORT).replace("data/profiles.parquet", "data/nope.parquet");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "source `profiles` (data/nope.parquet):",
            "nope.parquet does not exist",
        ],
    );
    let text =
        pipeline_yaml(SEGMENTS, EXPORT).replace("data/profiles.parquet", "~/data/profiles.parquet");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "does not exist; check the path (relative paths start at the pipeline file's folder); `~` is not your home folder here: write `${HOME}/...` or the full path",
        ],
    );
    // A shell's variable without braces stays as it is written.
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace("data/profiles.parquet", "$DATA_DIR/profiles.parquet");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "source `profiles` ($DATA_DIR/profiles.parquet): ./$DATA_DIR/profiles.parquet does not exist",
            "(relative paths start at the pipeline file's folder); `$DATA_DIR` is not replaced here: write `${DATA_DIR}`",
        ],
    );
    // One slash short of a store's URL.
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace("data/profiles.parquet", "s3:/bucket/profiles.parquet");
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "sources.profiles.path: `s3:/` is one slash short of a store's URL: write `s3://bucket/profiles.parquet`",
        ],
    );
}

#[test]
fn empty_folder_and_unmatched_glob_are_errors() {
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace("data/profiles.parquet", "empty/")
        .replace("data/segment_memberships.parquet", "data/*.csv");
    let dir = sample_dir();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let file = write(dir.path(), &text);
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(&run, &["holds no .parquet file", "matches no file"]);
}

#[test]
fn corrupt_parquet_file_names_source_and_file() {
    let dir = sample_dir();
    // Damaged: it starts as Parquet.
    std::fs::write(
        dir.path().join("data/profiles.parquet"),
        b"PAR1 and then not parquet at all",
    )
    .unwrap();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_config_error(
        &run,
        &[
            "source `profiles` (data/profiles.parquet):",
            "profiles.parquet: is not a readable Parquet file",
        ],
    );
    // Another format under a Parquet name: said, with how to convert it.
    std::fs::write(
        dir.path().join("data/profiles.parquet"),
        b"customer_id,email\n1,ada@example.com\n",
    )
    .unwrap();
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &[
            "profiles.parquet: is not a Parquet file: it holds CSV text. `pipeline` reads Parquet files and Delta tables: convert it first (DuckDB: `COPY (FROM '",
        ],
    );
    // A write that never finished.
    std::fs::write(dir.path().join("data/profiles.parquet"), b"").unwrap();
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &[
            "profiles.parquet: is empty (0 bytes), not a Parquet file: a write that never finished leaves such files; remove it",
        ],
    );
}

#[test]
fn statements_other_than_queries_are_refused() {
    for (sql, found) in [
        (
            "CREATE TABLE x AS SELECT * FROM profiles",
            "`CREATE TABLE X`",
        ),
        ("COPY profiles TO 'stolen.csv'", "`COPY PROFILES TO`"),
        ("SET datafusion.execution.batch_size = 1", "`SET`"),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'x'",
            "`CREATE EXTERNAL TABLE`",
        ),
        (
            "INSERT INTO profiles SELECT * FROM profiles",
            "`INSERT INTO PROFILES`",
        ),
    ] {
        let segments = format!("  vip: \"{sql}\"\n  high_value: SELECT * FROM profiles");
        let (_d, run) = run_file(&pipeline_yaml(&segments, EXPORT));
        assert_config_error(
            &run,
            &[
                "segment `vip`: only a SELECT query may define a segment",
                found,
            ],
        );
    }
}

#[test]
fn sql_errors_name_the_segment() {
    let segments = "  vip: SELECT * FROM profiles WHERE no_such_column > 1\n  high_value: SELECT * FROM profiles";
    let (_d, run) = run_file(&pipeline_yaml(segments, EXPORT));
    assert_config_error(&run, &["segment `vip`:", "no_such_column"]);
}

#[test]
fn a_mapping_or_order_that_changes_each_run_or_quotes_a_text_as_a_name_is_refused() {
    let export = EXPORT
        .replace(
            "first_name: first_name",
            "first_name: first_name\n      external_id: uuid()\n      custom_fields: { bucket: floor(random() * 10), region: 'CASE WHEN country = \"US\" THEN 1 END', known: CASE WHEN email = NULL THEN 0 ELSE 1 END }",
        )
        .replace("order_by: customer_id", "order_by: random()");
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) mapping.external_id: `uuid()` takes another value each time it runs (as `random()` and `uuid()` do): every run would find every contact changed and send it again",
            "mapping.custom_fields.bucket: `floor(random() * 10)` takes another value each time it runs",
            "exports[0] (`newsletter`) order_by[0]: `random()` takes another value each time it runs (as `random()` and `uuid()` do): every run would keep other contacts under the cap and send them; derive the order from the row instead (`md5(email)` is a random order that stays the same from run to run)",
            "mapping.custom_fields.region: `CASE WHEN country = \"US\" THEN 1 END` is not a valid expression over segment `vip`: No field named \"US\": double quotes name a column; a text goes in single quotes ('US').",
            "mapping.custom_fields.known: `CASE WHEN email = NULL THEN 0 ELSE 1 END` compares with NULL: `= NULL` is never true (a comparison with NULL gives NULL, whatever the value): write `IS NULL` (or `IS NOT NULL`)",
        ],
    );
    // What the advice says works, and the time of the run is not a value that changes
    // from row to row.
    let export = EXPORT
        .replace(
            "first_name: first_name",
            "first_name: first_name\n      custom_fields: { seen_year: \"date_part('year', now())\" }",
        )
        .replace("order_by: customer_id", "order_by: md5(email)");
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_segment_selecting_from_an_undeclared_table_lists_what_there_is() {
    let segments = "  vip: SELECT * FROM profile\n  high_value: SELECT * FROM 'data/profiles.parquet'\n  late: SELECT * FROM broken\n  broken: SELEC 1";
    let export = EXPORT.replace("[vip, high_value]", "[vip, high_value, late]");
    let (_d, run) = run_file(&pipeline_yaml(segments, &export));
    assert_config_error(
        &run,
        &[
            "segment `vip`: it selects from `profile` (did you mean `profiles`?), which is neither a source nor a segment (sources: `memberships`, `profiles`; segments: `broken`, `high_value`, `late`, `vip`)",
            "segment `high_value`: it selects from `data/profiles.parquet`, which is neither a source nor a segment (sources: `memberships`, `profiles`; segments: `broken`, `high_value`, `late`, `vip`); a segment reads only the sources declared under `sources:`",
            "segment `late`: it selects from segment `broken`, which has a problem of its own (see its message)",
            "segment `broken`: SQL syntax error",
        ],
    );
}

#[test]
fn segment_sql_mistakes_are_caught_by_validate_and_said_with_what_to_write() {
    let cases = [
        (
            "lifetime_value > 'lots'",
            "segment `vip`: Cast error: Cannot cast string 'lots' to value of Float64 type: a text in quotes meets numbers (a column compared with it, say), and is not one; compare with a value of their kind, or cast the column to text",
        ),
        // A text in double quotes, as MySQL allows: SQL reads a column's name.
        (
            "city = \"Berlin\"",
            "segment `vip`: No field named \"Berlin\": double quotes name a column; a text goes in single quotes ('Berlin').\nValid fields are profiles.customer_id,",
        ),
        // Never true: the segment would select nothing, and say nothing.
        (
            "city <> NULL",
            "segment `vip`: `!= NULL` is never true (a comparison with NULL gives NULL, whatever the value): write `IS NOT NULL`",
        ),
        // MySQL's and Spark's regular expression operator, said without the parser's tree.
        (
            "email RLIKE 'example'",
            "segment `vip`: DataFusion's SQL has no `RLIKE` or `REGEXP` operator: write `col ~ 'pattern'` for a regular expression match (`~*` ignores case; `!~` and `!~*` for NOT)",
        ),
        // SQL Server's brackets around a name make a list; BigQuery's type names.
        (
            "[city] = 'Berlin'",
            "segment `vip`: `[city]` is a list in DataFusion's SQL, not a column's name (SQL Server writes names in brackets): write `city`, or `\"city\"` in double quotes for a name with spaces or capitals",
        ),
        (
            "CAST(lifetime_value AS INT64) > 5000",
            "segment `vip`: DataFusion's SQL has no type `INT64`: write BIGINT",
        ),
        // The same NULL given a type.
        (
            "city = CAST(NULL AS VARCHAR)",
            "segment `vip`: `= NULL` is never true (a comparison with NULL gives NULL, whatever the value): write `IS NULL` (or `IS NOT NULL`)",
        ),
        // A text without quotes is a name to SQL; a misspelt column is not said to be text.
        (
            "country IN ('DE', US)",
            "segment `vip`: No field named us: `US` is read as a column's name; a text goes in single quotes ('US').\nValid fields are profiles.customer_id,",
        ),
        (
            "cuntry = 'US'",
            "segment `vip`: No field named cuntry. Did you mean 'profiles.country'?",
        ),
        // A flag compared with a number, as other dialects store flags.
        (
            "is_subscribed = 1",
            "segment `vip`: true/false values are compared (=) with Int64 values: a true/false column is a condition by itself (`WHERE is_subscribed`, `WHERE NOT is_subscribed`); compare it with `true` or `false`, not with a number or a text",
        ),
        // Another dialect's function: what DataFusion's SQL writes instead.
        (
            "DATEDIFF('day', signup_date, current_date) < 30",
            "segment `vip`: DataFusion's SQL has no function `datediff` (other dialects do): the days from one date to another are `later - earlier` (a number of days); between two times, `date_part('day', later - earlier)`",
        ),
        // DataFusion words this one as an internal error and asks for a bug report.
        (
            "md5(customer_id) < '8'",
            "segment `vip`: no form of `md5` takes (Int64): it takes md5(String) or md5(Binary); cast the values to a type it takes (`CAST(col AS VARCHAR)` makes text",
        ),
    ];
    let dir = sample_dir();
    for (filter, said) in cases {
        let segments = format!(
            "  vip: SELECT * FROM profiles WHERE {filter}\n  high_value: SELECT * FROM profiles"
        );
        let file = write(dir.path(), &pipeline_yaml(&segments, EXPORT));
        let run = pipeline(dir.path(), &["validate", file], &[]);
        assert_config_error(&run, &[said]);
        assert!(!run.stderr.contains("bug report"), "{}", run.stderr);
    }
}

#[test]
fn a_join_without_a_condition_is_refused_unless_written_cross_join_or_one_row() {
    let dir = sample_dir();
    let refused = |from: &str| {
        let segments = format!(
            "  vip: SELECT p.* FROM {from}\n  high_value: SELECT * FROM profiles\n  later: SELECT * FROM vip"
        );
        let file = write(dir.path(), &pipeline_yaml(&segments, EXPORT));
        pipeline(dir.path(), &["validate", file], &[])
    };
    // The join's condition forgotten: every profile meets every membership row.
    for from in [
        "profiles p, memberships m WHERE m.segment_name = 'vip'",
        "profiles p JOIN memberships m ON true",
        "profiles p LEFT JOIN memberships m ON 1 = 1",
    ] {
        let run = refused(from);
        assert_config_error(
            &run,
            &[
                "segment `vip`: it joins `profiles` and `memberships` with no condition tying their rows, so every row of one meets every row of the other; add the condition that matches them (`ON` or `WHERE`, such as `p.customer_id = m.customer_id`), or write `CROSS JOIN` if every pairing is meant",
            ],
        );
        // Said of the segment that joins, not of the one selecting from it.
        assert_eq!(
            run.stderr.matches("no condition tying").count(),
            1,
            "{}",
            run.stderr
        );
    }
    // Meant, or harmless: every pairing asked for, a one-row side, a condition that is
    // not an equality.
    for from in [
        "profiles p CROSS JOIN memberships m WHERE m.segment_name = 'vip'",
        "profiles p, (SELECT max(lifetime_value) AS top FROM profiles) t WHERE p.lifetime_value > t.top / 2",
        "profiles p, (SELECT * FROM memberships LIMIT 1) m",
        "profiles p, memberships m WHERE p.customer_id = m.customer_id",
        "profiles p JOIN memberships m ON p.customer_id < m.customer_id",
    ] {
        let run = refused(from);
        assert_eq!(run.code, 0, "{from}: {}", run.stderr);
    }
}

#[test]
fn a_filter_failing_on_the_data_names_the_segment_and_hides_the_value() {
    let segments = "  vip: SELECT * FROM profiles WHERE CAST(email AS INT) > 1\n  high_value: SELECT * FROM profiles WHERE is_subscribed";
    let (_d, run) = run_file(&pipeline_yaml(segments, EXPORT));
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "export `newsletter`: selecting contacts failed: segment `vip`, in its own SQL, before any mapped field: evaluating the filter failed: Cannot cast string '<a value of "
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('@'), "{}", run.stderr);
    // The value comes from the data, not from a text in the SQL: no advice about one.
    assert!(!run.stderr.contains("a text in quotes"), "{}", run.stderr);
}

#[test]
fn a_segment_with_two_columns_of_one_name_is_named_once() {
    // `p.*, m.*` repeats the join's key: every mapped column was reported missing
    // from a segment that lists it among its columns.
    let segments = SEGMENTS.replace("SELECT p.* FROM", "SELECT p.*, m.* FROM");
    let (_d, run) = run_file(&pipeline_yaml(&segments, EXPORT));
    assert_config_error(
        &run,
        &[
            "segment `vip`: two of its columns are named `customer_id` (`p.customer_id` and `m.customer_id`), but exports map a segment's columns by name: select each column once (`p.*` alone rather than `p.*, m.*` when the other table only filters), or rename one (`m.customer_id AS ...`)",
        ],
    );
    assert!(!run.stderr.contains("is not in segment"), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("customer_id` (").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn mapping_a_missing_column_lists_the_columns() {
    let export = EXPORT.replace("first_name: first_name", "first_name: given_name");
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) mapping.first_name: column `given_name` is not in segments `vip` and `high_value`; its columns are: customer_id, email",
        ],
    );
    let export = EXPORT.replace("email: email", "email: emial");
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "mapping.email: column `emial` is not in segments `vip` and `high_value` (did you mean `email`?); its columns are: customer_id, email, first_name,",
        ],
    );
}

#[test]
fn email_that_is_not_text_is_caught_by_validate() {
    let export = EXPORT.replace("email: email", "email: customer_id");
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) mapping.email: in segments `vip` and `high_value`, `customer_id` is Int64; the email must be text",
        ],
    );
}

#[test]
fn an_identifier_or_a_postal_code_from_a_float_is_refused_with_the_cast_to_map() {
    // pandas reads a column of whole numbers with gaps as floats: customer 12345 becomes
    // 12345.0, ZIP code 02134 becomes 2134.0.
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      external_id: CAST(customer_id AS DOUBLE)\n      postal_code: CAST(customer_id AS DOUBLE)",
    );
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) mapping.external_id: in segments `vip` and `high_value`, `CAST(customer_id AS DOUBLE)` is Float64; external_id names a contact by its text, and a float's text (`12345.0`) names another one than its whole number's (`12345`): map CAST(... AS BIGINT) if the values are whole numbers",
            "exports[0] (`newsletter`) mapping.postal_code: in segments `vip` and `high_value`, `CAST(customer_id AS DOUBLE)` is Float64; postal_code would be sent as a float's text (`2134.0`): map CAST(... AS BIGINT) if the values are whole numbers (pandas writes whole numbers with gaps as floats, and drops leading zeros: `lpad(CAST(CAST(... AS BIGINT) AS VARCHAR), 5, '0')` pads five-digit ZIP codes again)",
        ],
    );
    // The advice works: Ada (customer 1) gets `00001`.
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      postal_code: \"lpad(CAST(CAST(CAST(customer_id AS DOUBLE) AS BIGINT) AS VARCHAR), 5, '0')\"",
    );
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = contacts(&dir.path().join("out/newsletter"));
    assert_eq!(sent[0]["email"], "ada.lovelace@example.com");
    assert_eq!(sent[0]["postal_code"], "00001");
}

#[test]
fn a_list_a_struct_a_duration_or_a_time_in_a_custom_field_says_how_to_send_it() {
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { names: \"make_array(first_name, last_name)\", place: \"named_struct('city', city, 'zip', postal_code)\", tenure: \"arrow_cast(customer_id, 'Duration(Millisecond)')\", opens_at: \"arrow_cast(customer_id, 'Time64(Microsecond)')\" }",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "; a custom field takes text, a number or a date (to send a list as one text, join it: `array_to_string(make_array(first_name, last_name), ', ')`)",
            "; a custom field takes text, a number or a date (one of its fields is `named_struct('city', city, 'zip', postal_code)['city']`)",
            "; a custom field takes text, a number or a date (to send it as a number of milliseconds: `CAST(arrow_cast(customer_id, 'Duration(Millisecond)') AS BIGINT)`)",
            "; a custom field takes text, a number or a date (to send it as text such as `09:30:00`: `CAST(arrow_cast(customer_id, 'Time64(Microsecond)') AS VARCHAR)`)",
        ],
    );
}

#[test]
fn a_uuid_or_a_map_column_is_refused_with_the_expression_to_map() {
    // A UUID as Iceberg, Trino and pyarrow store it: 16 bytes.
    let segments = "  vip: SELECT *, arrow_cast(decode(lpad(to_hex(customer_id), 32, '0'), 'hex'), 'FixedSizeBinary(16)') AS account, map(['tier'], [country]) AS traits FROM profiles\n  high_value: SELECT * FROM vip";
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      external_id: account\n      custom_fields: { tier: traits }",
    );
    let (_d, run) = run_file(&pipeline_yaml(segments, &export));
    assert_config_error(
        &run,
        &[
            "mapping.external_id: in segments `vip` and `high_value`, `account` is FixedSizeBinary(16); external_id must be text or a number (a UUID reads as its usual text with `regexp_replace(encode(account, 'hex'), '(.{8})(.{4})(.{4})(.{4})(.{12})', '\\1-\\2-\\3-\\4-\\5')`; in double quotes YAML would read the backslashes as escapes)",
            "mapping.custom_fields.tier: in segments `vip` and `high_value`, `traits` is Map(",
            "a custom field takes text, a number or a date (a key's value is `traits['key']`)",
        ],
    );
    // The expressions it names, as written there.
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      external_id: regexp_replace(encode(account, 'hex'), '(.{8})(.{4})(.{4})(.{4})(.{12})', '\\1-\\2-\\3-\\4-\\5')\n      custom_fields: { tier: \"traits['tier']\" }",
    );
    let (dir, run) = run_file(&pipeline_yaml(segments, &export));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = contacts(&dir.path().join("out/newsletter"));
    assert_eq!(sent[0]["email"], "ada.lovelace@example.com");
    assert_eq!(
        sent[0]["external_id"],
        "00000000-0000-0000-0000-000000000001"
    );
    assert_eq!(sent[0]["custom_fields"]["tier"], "US");
}

#[test]
fn bad_order_by_names_the_export() {
    let export = EXPORT.replace(
        "order_by: customer_id",
        "order_by: [signup, customer_id DESC]",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) order_by[0]: column `signup` is not in segments `vip` and `high_value`",
        ],
    );
    // Two expressions in one item; a struct, whose values have no order as text; bytes,
    // which the run would fail to read as text at the first that are not UTF-8.
    let export = EXPORT.replace(
        "order_by: customer_id",
        "order_by: [\"signup_date DESC, customer_id\", \"named_struct('id', customer_id)\", \"arrow_cast(email, 'Binary')\"]",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "order_by[0]: `signup_date DESC, customer_id` is not valid SQL: Expected: end of expression, found: DESC",
            "; several expressions go in a list, one per item (`order_by: [signup_date DESC, customer_id]`)",
            "order_by[1]: in segments `vip` and `high_value`, `named_struct('id', customer_id)` is Struct(\"id\": Int64), which rows cannot be ordered by: order by text, numbers or dates (one of its fields is `named_struct('id', customer_id)['id']`)",
            "order_by[2]: in segments `vip` and `high_value`, `arrow_cast(email, 'Binary')` is Binary, which rows cannot be ordered by: order by text, numbers or dates (if the column is text that Impala or Hive stored as bytes, set `binary_as_string: true` on its source)",
        ],
    );
}

#[test]
fn order_by_takes_nulls_last_and_says_how_to_put_nulls_first() {
    let dir = sample_dir();
    let mut sent = Vec::new();
    for order in ["lifetime_value DESC", "lifetime_value desc nulls last"] {
        let export = EXPORT.replace("order_by: customer_id", &format!("order_by: {order}"));
        let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
        let out = format!("out-{}", sent.len());
        let run = pipeline(dir.path(), &["run", file, "--dry-run", &out], &[]);
        assert_eq!(run.code, 0, "{order}: {}", run.stderr);
        sent.push(emails(&contacts(&dir.path().join(out).join("newsletter"))));
    }
    assert!(!sent[0].is_empty());
    assert_eq!(sent[0], sent[1]);

    let export = EXPORT.replace(
        "order_by: customer_id",
        "order_by: [lifetime_value DESC NULLS FIRST]",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) order_by[0]: `lifetime_value DESC NULLS FIRST`: rows without a value always come last in `order_by`; to put them first, write `lifetime_value IS NOT NULL` before it (false sorts first)",
        ],
    );
    assert_eq!(
        run.stderr.matches("order_by[0]").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn a_mapping_is_one_expression_without_a_name_of_its_own() {
    let export = EXPORT.replace("first_name: first_name", "first_name: \"first_name ||\"");
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "exports[0] (`newsletter`) mapping.first_name: `first_name ||` is not valid SQL: Expected: an expression, found: EOF",
        ],
    );
    assert!(!run.stderr.contains("No field named as"), "{}", run.stderr);
    // Said once, not once per segment of the export: the SQL is wrong whatever it reads.
    assert_eq!(
        run.stderr.matches("is not valid SQL").count(),
        1,
        "{}",
        run.stderr
    );

    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: upper(first_name) AS given",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_config_error(
        &run,
        &[
            "mapping.first_name: `upper(first_name) AS given` names itself `given`, but a field is named by its key in the mapping: write the expression without `AS`",
        ],
    );
}

#[test]
fn unknown_export_is_a_usage_error() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--export", "weekly"],
        &[],
    );
    assert_config_error(
        &run,
        &["no export named `weekly`; the file declares: newsletter"],
    );
    // A slip of the keyboard is named, by every command that takes --export.
    for command in ["plan", "history"] {
        let run = pipeline(dir.path(), &[command, file, "--export", "newsleter"], &[]);
        assert_config_error(
            &run,
            &[
                "no export named `newsleter` (did you mean `newsletter`?); the file declares: newsletter",
            ],
        );
    }
}

#[test]
fn a_variable_inside_a_quoted_sql_string_is_that_strings_text() {
    let dir = sample_dir();
    let segments = "  vip: SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id WHERE m.segment_name = '${SEGMENT}'";
    let export = EXPORT.replace("[vip, high_value]", "[vip]");
    let file = write(dir.path(), &pipeline_yaml(segments, &export));
    let rows = |segment: &str| {
        let run = pipeline(
            dir.path(),
            &["plan", file, "--output", "json"],
            &[("SEGMENT", segment)],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        plan["exports"][0]["rows"].as_u64().unwrap()
    };
    let vip = rows("vip");
    assert!(vip > 0);
    // A quote in the value stays in the string: it neither breaks the query nor, as here,
    // widens the segment to every membership row.
    assert_eq!(rows("vip' OR 'a' = 'a"), 0);
    assert_eq!(rows("O'Neill"), 0);
}

#[test]
fn a_folder_argument_that_names_a_file_is_refused_before_the_run() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    std::fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
    for args in [
        vec!["run", file, "--dry-run", "notes.txt"],
        vec![
            "run",
            file,
            "--dry-run",
            "out",
            "--rejects-dir",
            "notes.txt",
        ],
        vec!["run", file, "--dry-run", "out", "--state-dir", "notes.txt"],
        vec!["plan", file, "--state-dir", "notes.txt"],
        vec!["history", file, "--state-dir", "notes.txt"],
    ] {
        let run = pipeline(dir.path(), &args, &[]);
        let flag = args[args.len() - 2];
        assert_config_error(
            &run,
            &[&format!(
                "error: {flag} notes.txt is a file, not a folder: give a folder"
            )],
        );
        // Refused before the selection: it said "cannot create the rejects folder
        // notes.txt: File exists" once the contacts were selected.
        assert!(!run.stderr.contains("Selecting"), "{}", run.stderr);
    }
    assert!(!dir.path().join("out").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn a_history_from_a_state_folder_that_is_not_there_is_refused() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    std::fs::create_dir(dir.path().join("state")).unwrap();
    // A slip in --state-dir read as "no runs yet" before: the page and the table empty.
    for command in ["history", "report"] {
        let run = pipeline(dir.path(), &[command, file, "--state-dir", "stat"], &[]);
        assert_config_error(
            &run,
            &[
                "the state folder stat does not exist; did you mean state? (--state-dir names the folder the runs kept their state in",
            ],
        );
    }
    assert!(!dir.path().join("report.html").exists());
    // The folder the runs used, with no runs in it yet, is no mistake.
    let run = pipeline(dir.path(), &["history", file, "--state-dir", "state"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("export newsletter: 0 run(s)"),
        "{}",
        run.stdout
    );
    // No runs asked for: a slip, not a request.
    for command in ["history", "report"] {
        let run = pipeline(dir.path(), &[command, file, "--last", "0"], &[]);
        assert_config_error(
            &run,
            &["error: invalid value '0' for '--last <LAST>': give 1 or more"],
        );
    }
}

#[test]
fn a_real_run_without_the_key_names_the_variable_and_sends_nothing() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["run", file], &[]);
    assert_config_error(
        &run,
        &["connections.marketing.api_key: environment variable SENDGRID_API_KEY is not set"],
    );
}

#[test]
fn missing_pipeline_file_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let run = pipeline(dir.path(), &["validate", "absent.yaml"], &[]);
    assert_config_error(&run, &["cannot read pipeline file absent.yaml"]);
    let run = pipeline(dir.path(), &["run"], &[]);
    assert_eq!(run.code, 2);
}

#[test]
fn data_that_cannot_be_cast_fails_the_run_with_its_code() {
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { n: \"CAST(first_name AS INT)\" }",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "export `newsletter`: selecting contacts failed: segment `vip`, mapping.custom_fields.n: Cast error: Cannot cast string '<a value of "
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn an_export_whose_data_fails_does_not_hide_the_next_exports_plan_or_dry_run() {
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { n: \"CAST(first_name AS INT)\" }",
    ) + &format!(
        "\n  - name: weekly\n    connection: marketing\n    list_ids: [{LIST}]\n{EXPORT}"
    );
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    for args in [
        vec!["plan", file, "--output", "json"],
        vec!["run", file, "--dry-run", "out", "--output", "json"],
    ] {
        let run = pipeline(dir.path(), &args, &[]);
        assert_eq!(run.code, 4, "{}", run.stderr);
        let doc = run.json();
        assert_eq!(doc["failed"][0]["export"], "newsletter", "{doc}");
        assert!(
            doc["error"].as_str().unwrap().starts_with(
                "export `newsletter`: selecting contacts failed: segment `vip`, mapping.custom_fields.n: Cast error"
            ),
            "{doc}"
        );
        assert_eq!(doc["exports"].as_array().unwrap().len(), 1, "{doc}");
        assert_eq!(doc["exports"][0]["export"], "weekly");
        assert!(doc["exports"][0]["contacts"].as_u64().unwrap() > 0, "{doc}");
        assert!(
            run.stderr
                .contains("error: export `newsletter`: selecting contacts failed"),
            "{}",
            run.stderr
        );
    }
    assert!(
        dir.path().join("out/weekly").is_dir(),
        "the dry run wrote weekly's bodies"
    );
}

#[test]
fn an_unsigned_number_too_large_to_send_whole_says_what_to_map() {
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { hash: \"arrow_cast(customer_id, 'UInt64') + 18446744073709551000\" }",
    );
    let (_d, run) = run_file(&pipeline_yaml(SEGMENTS, &export));
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "export `newsletter`: selecting contacts failed: segment `vip`, mapping.custom_fields.hash: Cast error: Can't cast value 18446744073709551"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(" to type Int64; a number this large cannot be sent as a whole number: map `CAST(... AS DOUBLE)` to send it as a number (exact up to 2^53), or `CAST(... AS VARCHAR)` into a Text field"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_output_reports_errors_for_orchestrators() {
    let dir = sample_dir();
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace("    data_privacy_consent: true\n", "");
    let file = write(dir.path(), &text);
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 2);
    let doc = run.json();
    assert_eq!(doc["status"], "config_error");
    assert_eq!(doc["exit_code"], 2);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("data_privacy_consent")
    );
}

#[test]
fn a_field_of_different_kinds_across_segments_is_refused() {
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { score: lifetime_value }",
    );
    let segments = "  vip: SELECT p.customer_id, p.email, p.first_name, 'high' AS lifetime_value FROM profiles p
  high_value: SELECT * FROM profiles WHERE lifetime_value > 5000";
    let (_d, run) = run_file(&pipeline_yaml(segments, &export));
    assert_config_error(
        &run,
        &[
            "mapping.custom_fields.score: `lifetime_value` is Float64 (a number) in segment `high_value` but Utf8 (text) in segment `vip`; map values of one type in every segment of the export (a CAST in one segment's SQL, say)",
        ],
    );
}

#[test]
fn a_null_or_a_whole_number_in_one_segment_fits_a_number_in_another() {
    // A segment without the column writes `NULL AS ...`, and counts are whole numbers
    // where another segment has decimals: both were refused as "of another kind".
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      custom_fields: { ltv: lifetime_value, score: score }",
    );
    let segments = "  vip: SELECT p.customer_id, p.email, p.first_name, NULL AS lifetime_value, CAST(p.customer_id AS INT) AS score FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id WHERE m.segment_name = 'vip'
  high_value: SELECT customer_id, email, first_name, lifetime_value, lifetime_value / 2 AS score FROM profiles WHERE lifetime_value > 5000 AND is_subscribed";
    let (dir, run) = run_file(&pipeline_yaml(segments, &export));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = contacts(&dir.path().join("out/newsletter"));
    let fields = |email: &str| {
        let contact = sent.iter().find(|c| c["email"] == email).expect(email);
        contact["custom_fields"].clone()
    };
    // Ada is a VIP, and her first row by customer_id is the VIP segment's.
    assert_eq!(
        fields("ada.lovelace@example.com"),
        serde_json::json!({ "score": 1 })
    );
    assert_eq!(
        fields("misaki@example.jp"),
        serde_json::json!({ "ltv": 22000, "score": 11000 })
    );
}

#[test]
fn numbers_out_of_range_are_refused_before_anything_runs() {
    let text = pipeline_yaml(
        SEGMENTS,
        &format!("{EXPORT}\n    import_timeout_secs: 18446744073709551615"),
    )
    .replace(
        "    data_privacy_consent: true\n",
        "    data_privacy_consent: true\n    request_timeout_secs: 99999999\n",
    )
    .replace(
        "version: 1\n",
        "version: 1\nengine: { memory_limit_mib: 18446744073709551615, partitions: 0 }\n",
    );
    let (_d, run) = run_file(&text);
    assert_config_error(
        &run,
        &[
            "engine.memory_limit_mib: must be between 16 and 1048576",
            "engine.partitions: must be between 1 and 1024 (leave it out for one per core)",
            "connections.marketing.request_timeout_secs: must be between 1 and 3600",
            "exports[0].import_timeout_secs: must be between 1 and 604800",
        ],
    );
}

#[test]
fn thousands_of_or_terms_are_refused_with_a_message_not_a_crash() {
    let terms: Vec<String> = (0..5000).map(|i| format!("customer_id = {i}")).collect();
    let segments = format!(
        "  vip: SELECT * FROM profiles WHERE {}\n  high_value: SELECT * FROM profiles",
        terms.join(" OR ")
    );
    let (_d, run) = run_file(&pipeline_yaml(&segments, EXPORT));
    assert_config_error(
        &run,
        &[
            "segment `vip`: chains 4999 AND/OR operators, more than the 1000 that can be planned safely: write a long list of alternatives as `column IN (...)`",
        ],
    );
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end before the binary writes: it meets a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn dictionary_encoded_text_columns_are_text() {
    use std::sync::Arc;

    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = sample_dir();
    let path = dir.path().join("data/profiles.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    // Email and first name as pandas and Polars write categoricals.
    let categorical = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = batches[0].schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "email" | "first_name" => Field::new(f.name(), categorical.clone(), true),
            _ => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    for batch in &batches {
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| cast(c, f.data_type()).unwrap())
            .collect();
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();

    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["exports"][0]["sent"], 13);
    let sent = contacts(&dir.path().join("out/newsletter"));
    assert_eq!(sent[0]["email"], "ada.lovelace@example.com");
    assert_eq!(sent[0]["first_name"], "Ada");
}

#[test]
fn segments_that_select_from_themselves_say_so() {
    let segments = "  vip: SELECT * FROM vip
  high_value: SELECT * FROM loop_b
  loop_b: SELECT * FROM loop_c
  loop_c: SELECT * FROM high_value";
    let (_d, run) = run_file(&pipeline_yaml(segments, EXPORT));
    assert_config_error(
        &run,
        &[
            "segment `vip` selects from itself",
            "segment `high_value` is in a cycle of segments that select from each other (high_value → loop_b → loop_c → high_value)",
        ],
    );
}

#[test]
fn an_aggregate_in_a_mapping_is_named_once_and_segments_may_rank_and_group() {
    let text = pipeline_yaml(
        SEGMENTS,
        &EXPORT.replace("first_name: first_name", "first_name: max(first_name)"),
    );
    let dir = sample_dir();
    let file = write(dir.path(), &text);
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &[
            "mapping.first_name: `max(first_name)` is an aggregate or window expression (sum, count, row_number() OVER, ...), but a mapping fills each contact from its own row: compute it in the segment's SQL and map the column",
        ],
    );
    // Both segments have the problem; it is said once.
    assert_eq!(
        run.stderr.matches("is an aggregate").count(),
        1,
        "{}",
        run.stderr
    );

    // A segment's own window and grouping are not the mapping's: the best profile of
    // each country, and the profiles of the countries with exactly two.
    let segments = "  vip: |
    SELECT * FROM (
      SELECT *, ROW_NUMBER() OVER (PARTITION BY country ORDER BY lifetime_value DESC) AS rn
      FROM profiles
    ) WHERE rn = 1
  high_value: |
    SELECT * FROM profiles
    WHERE country IN (SELECT country FROM profiles GROUP BY country HAVING count(*) = 2)";
    let file = write(dir.path(), &pipeline_yaml(segments, EXPORT));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut sent = emails(&contacts(&dir.path().join("out/newsletter")));
    sent.sort();
    assert_eq!(
        sent,
        [
            "ada.lovelace@example.com",
            "aoife@example.ie",
            "giorgos@example.gr",
            "joao.silva@example.br",
            "misaki@example.jp",
            "ren@example.jp",
            "zoe.muller@example.de",
        ]
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_file() {
    let dir = sample_dir();
    let text = format!("\u{feff}{}", pipeline_yaml(SEGMENTS, EXPORT));
    let file = write(dir.path(), &text);
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_folder_of_skipped_files_and_a_looping_link_say_what_they_are() {
    let dir = sample_dir();
    let data = dir.path().join("data");
    // Only markers: nothing to read, and the message says why they were skipped.
    std::fs::create_dir(dir.path().join("markers")).unwrap();
    std::fs::write(dir.path().join("markers/_SUCCESS"), "").unwrap();
    std::fs::write(dir.path().join("markers/.part.crc"), "").unwrap();
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace("data/profiles.parquet", "markers/");
    let file = write(dir.path(), &text);
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &["holds no .parquet file; 2 name(s) starting with `_` or `.` (such as `"],
    );

    // A link back to the folder itself: each file is read once.
    std::fs::create_dir(dir.path().join("table")).unwrap();
    std::fs::copy(
        data.join("profiles.parquet"),
        dir.path().join("table/part-0.parquet"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("table"), dir.path().join("table/again")).unwrap();
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace("data/profiles.parquet", "table/");
    let file = write(dir.path(), &text);
    let once = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(once.code, 0, "{}", once.stderr);
    assert_eq!(once.json()["exports"][0]["sent"], 13, "no row read twice");
}

#[test]
fn a_damaged_data_page_names_the_source_and_the_file() {
    let dir = sample_dir();
    let path = dir.path().join("data/profiles.parquet");
    let mut bytes = std::fs::read(&path).unwrap();
    // The footer stays whole (the schema reads); the pages after the header do not.
    for b in &mut bytes[200..1200] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "export `newsletter`: selecting contacts failed: source `profiles`, file {} cannot be read: ",
            std::path::absolute(&path).unwrap().display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn files_of_one_source_with_other_types_name_the_file() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;

    let dir = sample_dir();
    std::fs::create_dir(dir.path().join("parts")).unwrap();
    let write_part = |name: &str, column: ArrayRef| {
        let batch = RecordBatch::try_from_iter([("customer_id", column)]).unwrap();
        let file = std::fs::File::create(dir.path().join("parts").join(name)).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    };
    write_part("a.parquet", Arc::new(Int64Array::from(vec![1, 2])));
    write_part("b.parquet", Arc::new(StringArray::from(vec!["x"])));
    let text =
        pipeline_yaml(SEGMENTS, EXPORT).replace("data/segment_memberships.parquet", "parts/");
    let file = write(dir.path(), &text);
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_config_error(
        &run,
        &["b.parquet has a schema that does not fit the 1 file(s) before it"],
    );
}

#[test]
fn a_folder_of_partitions_with_odd_files_says_which() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;

    let write_parquet = |dir: &std::path::Path, relative: &str, columns: &[&str]| {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let columns: Vec<(&str, ArrayRef)> = columns
            .iter()
            .map(|c| {
                (
                    *c,
                    Arc::new(StringArray::from(vec!["a@example.com"])) as ArrayRef,
                )
            })
            .collect();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    };
    let yaml = |dir: &std::path::Path| {
        let text = pipeline_yaml(SEGMENTS, EXPORT).replace("data/profiles.parquet", "data/lake");
        write(dir, &text)
    };
    let validate = |dir: &std::path::Path| {
        let file = yaml(dir);
        pipeline(dir, &["validate", file], &[])
    };

    // Each file's path under the source's folder, with its columns.
    type Files<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: [(Files, &str); 3] = [
        // A file beside the partition folders.
        (
            &[
                ("country=DE/part-0.parquet", &["email"]),
                ("part-9.parquet", &["email"]),
            ],
            "`part-9.parquet` and `country=DE/part-0.parquet` are not in the same `key=value` folders",
        ),
        // A Parquet file named like a marker among the partitions' files.
        (
            &[
                ("country=DE/part-0.parquet", &["email"]),
                ("country=DE/_part-1.parquet", &["email"]),
            ],
            "country=DE/_part-1.parquet starts with `_` or `.`, so it is not data, but it sits among the partition folders' files and would be read with them",
        ),
        // The key in the files and in the folders, for some of the keys only.
        (
            &[(
                "country=DE/city=Berlin/part-0.parquet",
                &["email", "country"],
            )],
            "column `country` is in the files and in the names of their folders (`country=...`)",
        ),
    ];
    for (files, expected) in cases {
        let dir = sample_dir();
        for (path, columns) in files {
            write_parquet(dir.path(), &format!("data/lake/{path}"), columns);
        }
        assert_config_error(
            &validate(dir.path()),
            &[&format!("source `profiles` (data/lake): {expected}")],
        );
    }
}

#[test]
fn a_store_url_where_a_local_folder_goes_or_one_slash_short_is_refused() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    // The bodies went to a local folder named `s3:` and were said to be "in s3://...".
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "s3://bucket/out"],
        &[],
    );
    assert_config_error(
        &run,
        &[
            "--dry-run s3://bucket/out: its files are written on this machine only: give a local folder (a store's URL is for the state: --state-dir, or the file's state_dir)",
        ],
    );
    let run = pipeline(
        dir.path(),
        &[
            "run",
            file,
            "--dry-run",
            "out",
            "--rejects-dir",
            "az://c/rejects",
        ],
        &[],
    );
    assert_config_error(
        &run,
        &["--rejects-dir az://c/rejects: its files are written on this machine only"],
    );
    let run = pipeline(
        dir.path(),
        &["report", file, "--out", "gs://b/report.html"],
        &[],
    );
    assert_config_error(
        &run,
        &["--out gs://b/report.html: the page is written on this machine only: give a local file"],
    );
    // One slash short: the state would have been kept in a local folder named `s3:`.
    for command in ["plan", "history", "run"] {
        let run = pipeline(
            dir.path(),
            &[command, file, "--state-dir", "s3:/bucket/state"],
            &[],
        );
        assert_config_error(
            &run,
            &[
                "--state-dir s3:/bucket/state: `s3:/` is one slash short of a store's URL: write `s3://bucket/state`",
            ],
        );
    }
    let run = pipeline(dir.path(), &["plan", file, "--state-dir", "s3://"], &[]);
    assert_config_error(&run, &["--state-dir s3://: names no bucket or container"]);
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(':'))
        .collect();
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn a_home_folder_or_a_variable_a_shell_would_have_replaced_is_refused_as_a_folder() {
    // Given by a caller that is not a shell (a Python task, an orchestrator's YAML), `~`
    // and `$NAME` reach the tool as they are: the state, the bodies and the rejects went
    // to folders named `~` and `$STATE_ROOT` beside the file, lost with a worker's
    // checkout.
    let dir = sample_dir();
    let text = pipeline_yaml(SEGMENTS, EXPORT);
    for (state_dir, advice) in [
        (
            "~/pipeline-state",
            "`~` is not your home folder here: write `${HOME}/...` or the full path",
        ),
        (
            "$STATE_ROOT/newsletter",
            "`$STATE_ROOT` is not replaced here: write `${STATE_ROOT}`",
        ),
    ] {
        let file = write(
            dir.path(),
            &text.replacen(
                "version: 1",
                &format!("version: 1\nstate_dir: \"{state_dir}\""),
                1,
            ),
        );
        let run = pipeline(dir.path(), &["validate", file], &[]);
        assert_config_error(&run, &[&format!("state_dir: {advice}")]);
    }
    let file = write(dir.path(), &text);
    for (flag, command) in [
        ("--state-dir", "run"),
        ("--state-dir", "history"),
        ("--dry-run", "run"),
        ("--rejects-dir", "run"),
        ("--out", "report"),
    ] {
        let mut args = vec![command, file, flag, "~/out"];
        if flag == "--rejects-dir" {
            args.extend(["--dry-run", "out"]);
        }
        let run = pipeline(dir.path(), &args, &[]);
        assert_config_error(
            &run,
            &[&format!(
                "{flag} ~/out: `~` is not your home folder here: write `${{HOME}}/...` or the full path"
            )],
        );
        let run = pipeline(dir.path(), &[command, file, flag, "$OUT/x"], &[]);
        assert_config_error(
            &run,
            &[&format!(
                "{flag} $OUT/x: `$OUT` is not replaced here: write `${{OUT}}`"
            )],
        );
    }
    for made in ["~", "$STATE_ROOT", "$OUT"] {
        assert!(!dir.path().join(made).exists(), "{made} was made");
    }
    // Files read that are not there say the same.
    let run = pipeline(dir.path(), &["validate", "~/p.yaml"], &[]);
    assert_config_error(
        &run,
        &[
            "error: cannot read pipeline file ~/p.yaml: it does not exist; `~` is not your home folder here",
        ],
    );
    let run = pipeline(
        dir.path(),
        &[
            "validate",
            file,
            "--connections",
            "$CONFIG/connections.yaml",
        ],
        &[],
    );
    assert_config_error(
        &run,
        &[
            "error: cannot read connections file $CONFIG/connections.yaml: it does not exist; `$CONFIG` is not replaced here: write `${CONFIG}`",
        ],
    );
    let keyed = write(
        dir.path(),
        &text.replace(
            "api_key: ${SENDGRID_API_KEY}",
            "api_key_file: ~/secrets/sendgrid.key",
        ),
    );
    let run = pipeline(dir.path(), &["validate", keyed], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "note: connections.marketing.api_key_file: ./~/secrets/sendgrid.key does not exist; `~` is not your home folder here: write `${HOME}/...` or the full path"
        ),
        "{}",
        run.stdout
    );
}

/// A join's build side that does not fit the segment SQL's share of a small memory limit
/// cannot spill: the run says how large a limit holds it, and that limit works.
#[test]
fn a_join_side_too_large_for_the_memory_limit_says_the_limit_that_holds_it() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().unwrap();
    let write_table = |name: &str, columns: Vec<(&str, Vec<String>)>| {
        let columns = columns
            .into_iter()
            .map(|(name, values)| (name, Arc::new(StringArray::from(values)) as ArrayRef));
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = std::fs::File::create(dir.path().join(name)).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    };
    // 500,000 people; 400,000 memberships, the smaller side, which the join holds
    // (about 14 MB with its hash table): 100 of them are people's.
    let ids: Vec<String> = (0..500_000).map(|i| format!("c{i:07}")).collect();
    let emails = (0..500_000).map(|i| format!("p{i}@example.com")).collect();
    write_table(
        "people.parquet",
        vec![("customer_id", ids), ("email", emails)],
    );
    let members = (0..400_000)
        .map(|i| match i < 100 {
            true => format!("c{:07}", i * 1000),
            false => format!("x{i:07}"),
        })
        .collect();
    write_table("members.parquet", vec![("customer_id", members)]);
    let text = |limit: &str| {
        format!(
            "version: 1
engine: {{ memory_limit_mib: {limit} }}
{}sources:
  people: {{ format: parquet, path: people.parquet }}
  members: {{ format: parquet, path: members.parquet }}
segments:
  joined: SELECT p.* FROM people p JOIN members m ON m.customer_id = p.customer_id
exports:
  - name: newsletter
    connection: marketing
    list_ids: [{LIST}]
    segments: [joined]
    mapping: {{ email: email }}
",
            connections_yaml(None)
        )
    };

    let file = write(dir.path(), &text("16"));
    let run = pipeline(dir.path(), &["run", file, "--dry-run", "out"], &[]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let said = "error: export `newsletter`: selecting contacts failed: segment `joined`, in its own SQL, before any mapped field: a join in the segment's SQL holds one of its sides in memory, which it cannot spill to disk, and that side needs at least ";
    assert!(run.stderr.contains(said), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "more than the 8 MiB the segment SQL gets of engine.memory_limit_mib (16 MiB; the export's own sorts get the rest). Set `memory_limit_mib: "
        ),
        "{}",
        run.stderr
    );
    let (_, rest) = run.stderr.split_once("Set `memory_limit_mib: ").unwrap();
    let limit = rest.split('`').next().unwrap();
    assert!(limit.parse::<u64>().unwrap() > 16, "{limit}");

    let file = write(dir.path(), &text(limit));
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "at the limit said: {}", run.stderr);
    assert_eq!(run.json()["exports"][0]["sent"], 100);
}
