//! Parsing and validating pipeline files: what is accepted and the exact problems reported.

use std::path::Path;

use pipeline_spec::{Diagnostic, OnCapExceeded, SpecError, parse};

const GOOD: &str = r#"
version: 1
connections:
  marketing:
    type: sendgrid
    display_name: Marketing SendGrid
    api_key: ${SENDGRID_API_KEY}
    data_privacy_consent: true
sources:
  profiles: { format: parquet, path: data/profiles/ }
segments:
  vip: SELECT * FROM profiles WHERE tier = '${TIER}'
exports:
  - name: newsletter
    connection: marketing
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [vip]
    mapping:
      email: email
      first_name: first_name
      custom_fields: { lifetime_value: lifetime_value }
    order_by: customer_id
    on_cap_exceeded: truncate
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "TIER" => Some("gold".into()),
        "LIST" => Some("0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11".into()),
        _ => None,
    }
}

fn problems(text: &str) -> Vec<Diagnostic> {
    match parse(text, Path::new("p.yaml"), &env) {
        Err(SpecError::Invalid { diagnostics, .. }) => diagnostics,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The problems of `text`, each as `path: message`.
fn problem_lines(text: &str) -> Vec<String> {
    problems(text)
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect()
}

#[test]
fn good_file_parses_with_defaults_and_interpolation() {
    let p = parse(GOOD, Path::new("dir/p.yaml"), &env).unwrap();
    let e = p.export("newsletter").unwrap();
    assert_eq!(e.max_profiles, 100_000);
    assert_eq!(e.on_cap_exceeded, OnCapExceeded::Truncate);
    assert_eq!(e.order_by, vec!["customer_id".to_string()]);
    assert_eq!(
        p.file.segments["vip"],
        "SELECT * FROM profiles WHERE tier = 'gold'"
    );
    assert_eq!(p.resolve_path("data"), Path::new("dir/data"));
    // The key stays a reference until it is resolved explicitly.
    assert_eq!(
        p.file.connections["marketing"].api_key.as_deref(),
        Some("${SENDGRID_API_KEY}")
    );
}

#[test]
fn one_segment_and_list_names_may_be_written_alone() {
    let text = GOOD.replace("segments: [vip]", "segments: vip").replace(
        "list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]",
        "lists: [Newsletter, { name: VIP customers }, \"2024.10\"]",
    );
    let p = parse(&text, Path::new("p.yaml"), &env).unwrap();
    let e = p.export("newsletter").unwrap();
    assert_eq!(e.segments, ["vip"]);
    let names: Vec<&str> = e.lists.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["Newsletter", "VIP customers", "2024.10"]);

    // A bare name that YAML reads as a number is not respelled: it is refused.
    let numeric = text.replace("\"2024.10\"", "2024.10");
    assert_eq!(
        problem_lines(&numeric),
        [
            "exports[0].lists[2]: invalid type: floating point `2024.1`, expected a list's name, or `{ name: ... }` (quote a name that reads as a number or true/false: `\"2024.10\"`)"
        ]
    );
}

#[test]
fn a_file_not_in_utf8_says_its_encoding_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        match pipeline_spec::load(&path) {
            Err(e @ SpecError::Read { .. }) => e.to_string(),
            other => panic!("expected a read error, got {other:?}"),
        }
    };
    // "version: 1\nsegments:\n  a: café" as Latin-1: the é is one byte, 0xE9.
    let latin1 = read("latin1.yaml", b"version: 1\nsegments:\n  a: caf\xe9\n");
    assert_eq!(
        latin1,
        format!(
            "cannot read pipeline file {}: line 3, column 9 holds a byte that is not UTF-8 (the file is in another encoding, such as Latin-1 or Windows-1252): save it as UTF-8",
            dir.path().join("latin1.yaml").display()
        )
    );
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("version: 1\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert!(read("utf16.yaml", &utf16).ends_with(
        "utf16.yaml: it is UTF-16 text (as Windows PowerShell's `>` writes it): save it as UTF-8"
    ));
}

#[test]
fn a_path_that_is_not_a_pipeline_file_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let said = |path: &Path| match pipeline_spec::load(path) {
        Err(e @ SpecError::Read { .. }) => e.to_string(),
        other => panic!("expected a read error, got {other:?}"),
    };
    std::fs::write(dir.path().join("daily.yaml"), "version: 1\n").unwrap();
    std::fs::write(dir.path().join("profiles.parquet"), b"PAR1\x15\x04").unwrap();
    std::fs::write(dir.path().join("tool"), b"\x7fELF\x02\x01\x00\x00").unwrap();
    let at = |name: &str| dir.path().join(name);
    let shown = |name: &str| at(name).display().to_string();
    assert_eq!(
        said(&at("daily.yml")),
        format!(
            "cannot read pipeline file {}: it does not exist; did you mean {}?",
            shown("daily.yml"),
            shown("daily.yaml")
        )
    );
    assert_eq!(
        said(dir.path()),
        format!(
            "cannot read pipeline file {}: it is a folder: give the pipeline file in it (daily.yaml)",
            dir.path().display()
        )
    );
    assert!(said(&at("profiles.parquet")).ends_with(
        "it is a Parquet file: give the pipeline file (YAML) that names it as a source"
    ));
    assert!(said(&at("tool")).ends_with("it is not a text file: give the pipeline file (YAML)"));
    match pipeline_spec::load_with(&at("daily.yaml"), Some(&at("connections.yaml"))) {
        Err(e @ SpecError::Read { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "cannot read connections file {}: it does not exist",
                shown("connections.yaml")
            )
        ),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn unknown_key_is_reported_with_line_column_and_path() {
    let text = GOOD.replace(
        "      first_name: first_name",
        "      frist_name: first_name",
    );
    let d = problems(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "exports[0].mapping");
    assert_eq!(
        d[0].message,
        "unknown field `frist_name`: did you mean `first_name`?"
    );
    // With no field close to it, every field is listed.
    let d = problems(&GOOD.replace("      first_name: first_name", "      nickname: x"));
    assert!(
        d[0].message
            .starts_with("unknown field `nickname`, expected one of `email`, "),
        "{}",
        d[0].message
    );
    let loc = d[0].location.expect("location");
    assert_eq!(loc.line, 20);
}

#[test]
fn a_tab_in_the_indentation_is_named() {
    let text = GOOD.replace("\n  vip: SELECT", "\n\tvip: SELECT");
    let d = problems(&text);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message
            .ends_with(": it is a tab, and YAML indents with spaces only"),
        "{}",
        d[0].message
    );
    let loc = d[0].location.expect("location");
    assert_eq!((loc.line, loc.column), (12, 1));
}

#[test]
fn literal_api_key_is_refused_without_echoing_it() {
    let text = GOOD.replace("${SENDGRID_API_KEY}", "SG.abcdef123456");
    let d = problems(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "connections.marketing.api_key");
    assert!(d[0].message.contains("literal API key"), "{}", d[0].message);
    let rendered = SpecError::Invalid {
        path: "p.yaml".into(),
        diagnostics: d,
    }
    .to_string();
    assert!(!rendered.contains("SG.abcdef123456"), "{rendered}");
}

#[test]
fn missing_consent_is_refused_with_the_reason() {
    let text = GOOD.replace("    data_privacy_consent: true\n", "");
    let d = problems(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "connections.marketing.data_privacy_consent");
    assert!(d[0].message.contains("personal data"), "{}", d[0].message);
}

#[test]
fn missing_variable_is_named() {
    let text = GOOD.replace("${TIER}", "${NO_SUCH_VAR}");
    let d = problems(&text);
    assert_eq!(d[0].path, "segments.vip");
    assert!(
        d[0].message.contains("NO_SUCH_VAR is not set"),
        "{}",
        d[0].message
    );
    // Unless the reference gives a default, as a shell reads it.
    let text = GOOD.replace("${TIER}", "${NO_SUCH_VAR:-silver}");
    let p = parse(&text, Path::new("p.yaml"), &env).unwrap();
    assert_eq!(
        p.file.segments["vip"],
        "SELECT * FROM profiles WHERE tier = 'silver'"
    );
    let text = GOOD.replace("${TIER}", "${TIER:-silver}");
    let p = parse(&text, Path::new("p.yaml"), &env).unwrap();
    assert_eq!(
        p.file.segments["vip"],
        "SELECT * FROM profiles WHERE tier = 'gold'"
    );
}

#[test]
fn every_reference_problem_is_reported_at_once() {
    let text = GOOD
        .replace("connection: marketing", "connection: sales")
        .replace("segments: [vip]", "segments: [vip, churned]")
        .replace(
            "[0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]",
            "[not-a-uuid, '${LIST}']",
        );
    let d = problems(&text);
    let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "exports[0].connection",
            "exports[0].list_ids[0]",
            "exports[0].segments[1]"
        ]
    );
    assert!(
        d[0].message
            .contains("no connection named `sales`; declared: marketing")
    );
    assert!(d[1].message.contains("expected a UUID"));
    assert!(d[2].message.contains("no segment named `churned`"));
}

#[test]
fn an_api_key_variable_without_braces_is_said_to_want_them() {
    let d = problems(&GOOD.replace("${SENDGRID_API_KEY}", "$SENDGRID_API_KEY"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "connections.marketing.api_key");
    assert_eq!(
        d[0].message,
        "`$SENDGRID_API_KEY` is not replaced: the file replaces `${NAME}` only; write `api_key: ${SENDGRID_API_KEY}`"
    );
}

#[test]
fn segment_names_written_without_brackets_are_said_to_be_one_name() {
    let text = GOOD
        .replace(
            "  vip: SELECT",
            "  lapsed: SELECT * FROM profiles\n  vip: SELECT",
        )
        .replace("segments: [vip]", "segments: vip, lapsed");
    let d = problems(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "exports[0].segments[0]");
    assert_eq!(
        d[0].message,
        "`vip, lapsed` is one name to YAML: a list of names goes in brackets, `segments: [vip, lapsed]`"
    );
}

#[test]
fn wrong_version_and_missing_email_mapping() {
    let d = problems(&GOOD.replace("version: 1", "version: 2"));
    assert_eq!(d[0].path, "version");
    let d = problems(&GOOD.replace("      email: email\n", ""));
    assert_eq!(d[0].path, "exports[0].mapping");
    assert_eq!(
        d[0].message,
        "has no `email`: map the `email` column; every contact needs an identifier (email, external_id, phone_number_id or anonymous_id)"
    );
}

#[test]
fn an_export_is_keyed_by_a_mapped_identifier() {
    // Keyed by external_id, without an email: valid.
    let keyed = GOOD.replace("      email: email\n", "      external_id: customer_id\n");
    let keyed = keyed.replace("on_cap_exceeded: truncate", "identifier: external_id");
    let parsed = pipeline_spec::parse(&keyed, std::path::Path::new("p.yaml"), &env).unwrap();
    let export = &parsed.file.exports[0];
    assert_eq!(export.identifier, pipeline_spec::Identifier::ExternalId);
    assert_eq!(
        export.mapping.reserved_keyed(export.identifier)[0].0,
        "external_id"
    );

    // Keyed by an identifier that is not mapped.
    let d = problems(&GOOD.replace("on_cap_exceeded: truncate", "identifier: anonymous_id"));
    assert_eq!(d[0].path, "exports[0].identifier");
    assert_eq!(
        d[0].message,
        "names an identifier that is not mapped: map it, or key the export by a mapped identifier with `identifier: email`"
    );

    // Not an identifier at all.
    let d = problems(&GOOD.replace("on_cap_exceeded: truncate", "identifier: first_name"));
    assert_eq!(d[0].path, "exports[0].identifier");
    assert!(
        d[0].message.contains("unknown variant `first_name`"),
        "{}",
        d[0].message
    );
}

#[test]
fn mirror_settings_out_of_range_are_refused() {
    let text = GOOD.replace(
        "on_cap_exceeded: truncate",
        "mode: mirror\n    max_removal_share: 1.5\n    contacts_per_request: 30001",
    );
    assert_eq!(
        problem_lines(&text),
        [
            "exports[0].max_removal_share: must be between 0 and 1 (a share of the list, 0.2 is 20%)",
            "exports[0].contacts_per_request: must be between 1 and 30000 (SendGrid's limit per request)",
        ]
    );
    let text = GOOD.replace("on_cap_exceeded: truncate", "mode: sync");
    let d = problems(&text);
    assert!(
        d[0].message
            .contains("unknown variant `sync`, expected `upsert` or `mirror`"),
        "{}",
        d[0].message
    );
}

#[test]
fn a_variable_unquoted_in_brackets_says_to_quote_it() {
    let list = "list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]";
    let d = problems(&GOOD.replace(list, "list_ids: [${LIST}]"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message.ends_with(
            ": a `${VAR}` inside `[...]` or `{...}` goes in quotes (`[\"${VAR}\"]`), or YAML reads its `{` as the start of a mapping"
        ),
        "{}",
        d[0].message
    );
    // The shell's `$LIST`, which the file does not read.
    assert_eq!(
        problem_lines(&GOOD.replace(list, "list_ids: [$LIST]")),
        [
            "exports[0].list_ids[0]: `$LIST` is not a SendGrid list id: an environment variable is written `${LIST}` (in quotes inside `[...]`)"
        ]
    );
    let quoted = GOOD.replace(list, "list_ids: [\"${LIST}\"]");
    let p = parse(&quoted, Path::new("p.yaml"), &env).unwrap();
    assert_eq!(
        p.export("newsletter").unwrap().list_ids,
        ["0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11"]
    );
}

#[test]
fn a_mirrored_list_another_export_fills_is_refused() {
    // `weekly` fills the same list by its id (in capitals) and `vip` by its name; another
    // connection's list of that name is another list.
    let second = "  - name: weekly\n    connection: marketing\n    list_ids: [0B7C2A53-0A0F-4C35-9A3E-0F6F1D8F3A11]\n    lists: [VIP]\n    segments: [vip]\n    mapping: { email: email }\n  - name: vip\n    connection: marketing\n    lists: [VIP]\n    segments: [vip]\n    mapping: { email: email }\n    mode: mirror\n  - name: elsewhere\n    connection: other\n    lists: [VIP]\n    segments: [vip]\n    mapping: { email: email }\n";
    let text = format!(
        "{}{second}",
        GOOD.replace("on_cap_exceeded: truncate", "mode: mirror")
            .replace(
                "sources:",
                "  other:\n    type: sendgrid\n    api_key: ${SENDGRID_API_KEY}\n    data_privacy_consent: true\nsources:"
            )
    );
    assert_eq!(
        problem_lines(&text),
        [
            "exports[0].mode: export `newsletter` mirrors list 0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11, which export `weekly` also fills: `newsletter` would take off the list contacts that left its segments but are in `weekly`'s, and `weekly` does not send a contact again while it is unchanged; give a mirrored list to one export (one export may take several segments)",
            "exports[2].mode: export `vip` mirrors list `VIP`, which export `weekly` also fills: `vip` would take off the list contacts that left its segments but are in `weekly`'s, and `weekly` does not send a contact again while it is unchanged; give a mirrored list to one export (one export may take several segments)",
        ]
    );
    // Each mirrored list filled by its export alone is fine.
    let text = text
        .replace(
            "lists: [VIP]\n    segments: [vip]\n    mapping: { email: email }\n  - name: vip",
            "segments: [vip]\n    mapping: { email: email }\n  - name: vip",
        )
        .replace(
            "list_ids: [0B7C2A53-0A0F-4C35-9A3E-0F6F1D8F3A11]",
            "list_ids: [1b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]",
        );
    assert!(parse(&text, Path::new("p.yaml"), &env).is_ok());
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let text = GOOD.replace(
        "    data_privacy_consent: true",
        "    data_privacy_consent: true\n    endpoint: http://example.com",
    );
    let d = problems(&text);
    assert_eq!(d[0].path, "connections.marketing.endpoint");
}

#[test]
fn schema_describes_the_file() {
    let schema = pipeline_spec::json_schema();
    let text = schema.to_string();
    assert!(text.contains("data_privacy_consent"));
    assert!(text.contains("on_cap_exceeded"));
    assert_eq!(schema["title"], "PipelineFile");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["patternProperties"]["^x-"].is_object());
}

#[test]
fn custom_field_names_follow_sendgrids_rules() {
    let text = GOOD.replace(
        "custom_fields: { lifetime_value: lifetime_value }",
        "custom_fields: { 1st_order: a, tier-name: b, Email: c, LTV: d, ltv: e, _ok: f }",
    );
    let found: Vec<(String, String)> = problems(&text)
        .into_iter()
        .map(|d| (d.path, d.message))
        .collect();
    let at = |f: &str| format!("exports[0].mapping.custom_fields.{f}");
    assert_eq!(
        found,
        [
            (
                at("1st_order"),
                "custom field name `1st_order` starts with a digit: SendGrid's start with a letter or `_`".into()
            ),
            (
                at("Email"),
                "`Email` is SendGrid's reserved field `email`, not a custom field: map reserved fields by their own key under `mapping`, or pick another name".into()
            ),
            (
                at("ltv"),
                "SendGrid's field names are unique whatever their case: `LTV` and `ltv` are one field".into()
            ),
            (
                at("tier-name"),
                "custom field name `tier-name` has '-': SendGrid takes only letters, digits and `_`".into()
            ),
        ]
    );
}

#[test]
fn a_name_given_twice_is_refused_where_it_repeats() {
    let text = GOOD.replace(
        "segments:\n  vip: SELECT * FROM profiles WHERE tier = '${TIER}'",
        "segments:\n  vip: SELECT * FROM profiles WHERE tier = '${TIER}'\n  vip: SELECT 1",
    );
    let d = problems(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message.contains(
            "`vip` is given twice: each name must be unique, or the second would silently replace the first"
        ),
        "{}",
        d[0].message
    );
    // The map that holds the repeated name.
    assert_eq!(d[0].location.expect("located").line, 12);
}

#[test]
fn a_delta_source_is_accepted_on_a_cluster() {
    let delta = GOOD.replace(
        "{ format: parquet, path: data/profiles/ }",
        "{ format: delta, path: lake/profiles }",
    );
    let on_cluster = format!("engine: {{ cluster: \"df://localhost:50050\" }}\n{delta}");
    assert!(parse(&on_cluster, Path::new("p.yaml"), &env).is_ok());
}

#[test]
fn binary_as_string_is_for_parquet_sources_only() {
    let parquet = GOOD.replace(
        "{ format: parquet, path: data/profiles/ }",
        "{ format: parquet, path: data/profiles/, binary_as_string: true }",
    );
    let source = parse(&parquet, Path::new("p.yaml"), &env).expect("a Parquet source takes it");
    assert!(source.file.sources["profiles"].binary_as_string);
    let on_cluster = format!("engine: {{ cluster: \"df://localhost:50050\" }}\n{parquet}");
    assert!(parse(&on_cluster, Path::new("p.yaml"), &env).is_ok());
    let delta = GOOD.replace(
        "{ format: parquet, path: data/profiles/ }",
        "{ format: delta, path: lake/profiles, binary_as_string: true }",
    );
    assert_eq!(
        problem_lines(&delta),
        [
            "sources.profiles.binary_as_string: applies to Parquet files only; a Delta table's schema already says which columns are strings"
        ]
    );
}

#[test]
fn a_comment_that_yaml_joined_with_the_lines_after_it_is_refused() {
    let segment = "  vip: SELECT * FROM profiles WHERE tier = '${TIER}'\n";
    let with = |block: &str| GOOD.replace(segment, block);
    // A `>` block joins its lines: the `WHERE` would be part of the comment.
    let folded =
        with("  vip: >\n    SELECT * FROM profiles -- the VIPs\n    WHERE tier = '${TIER}'\n");
    let d = problems(&folded);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "segments.vip");
    assert_eq!(d[0].location.map(|l| l.line), Some(12));
    assert_eq!(
        d[0].message,
        "the comment `-- the VIPs WHERE tier = '${TIER}'` runs to the end of the SQL: YAML joins the lines of a \
         `>` block or of a plain value into one, so everything after `--` is commented out. Write the SQL as a \
         `|` block, which keeps its lines, or use `/* ... */` comments"
    );
    // So does a plain value over several lines, and a bare `--` takes the next line.
    let plain = with("  vip: SELECT * FROM profiles --\n    WHERE tier = 'x'\n");
    assert_eq!(problems(&plain)[0].path, "segments.vip");
    // A mapped expression is SQL too.
    let mapped = GOOD.replace(
        "      first_name: first_name\n",
        "      first_name: >\n        initcap(first_name) -- as shown\n        || ''\n",
    );
    assert_eq!(problems(&mapped)[0].path, "exports[0].mapping.first_name");

    // Comments that end where they were written are fine: a `|` block keeps its lines,
    // a comment on a folded block's last line ends with it, and a quoted value's
    // comment may hold quotes.
    for fine in [
        "  vip: |\n    SELECT * FROM profiles -- the VIPs\n    WHERE tier = '${TIER}'\n",
        "  vip: >\n    SELECT * FROM profiles\n    WHERE tier = '${TIER}' -- the VIPs\n",
        "  vip: \"SELECT * FROM profiles -- the \\\"VIPs\\\"\\nWHERE tier = 'x'\"\n",
        "  vip: 'SELECT * FROM profiles -- it''s them'\n",
        "  vip: SELECT '--' AS tag, * FROM profiles /* -- */\n",
    ] {
        let text = with(fine);
        assert!(parse(&text, Path::new("p.yaml"), &env).is_ok(), "{fine}");
    }
}

#[test]
fn a_setting_given_twice_is_placed_where_it_is_given_again() {
    let said = |text: &str| {
        let d = problems(text);
        assert_eq!(d.len(), 1, "{d:?}");
        let line = d[0].location.as_ref().expect("placed").line;
        (
            format!("{}: {}", d[0].path, d[0].message),
            text.lines().nth(line - 1).unwrap_or_default().to_owned(),
        )
    };
    let field = GOOD.replace(
        "      first_name: first_name\n",
        "      first_name: first_name\n      # the shown name\n      first_name: initcap(first_name)\n",
    );
    assert_eq!(
        said(&field),
        (
            "exports[0].mapping: `first_name` is given twice: give it once (the second would silently replace the first)".to_owned(),
            "      first_name: initcap(first_name)".to_owned()
        )
    );
    // A key of a mapping that starts a sequence item (`  - name: ...`), as every export is.
    let export = GOOD.replace(
        "    order_by: customer_id\n",
        "    order_by: customer_id\n    order_by: signup_date DESC\n",
    );
    assert_eq!(
        said(&export),
        (
            "exports[0]: `order_by` is given twice: give it once (the second would silently replace the first)".to_owned(),
            "    order_by: signup_date DESC".to_owned()
        )
    );
    // In a flow mapping, over lines and past a comment: the second key, where it is written.
    let flow = GOOD.replace(
        "    mapping:\n      email: email\n      first_name: first_name\n",
        "    mapping: { email: email, # was: a, first_name: b\n      first_name: 'a, first_name: b', 'first_name': x,\n      first_name: y,\n",
    )
    .replace(
        "      custom_fields: { lifetime_value: lifetime_value }\n",
        "      custom_fields: { lifetime_value: lifetime_value } }\n",
    );
    let d = problems(&flow);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].message,
        "`first_name` is given twice: give it once (the second would silently replace the first)"
    );
    let at = d[0].location.as_ref().expect("placed");
    let line = flow.lines().nth(at.line - 1).unwrap_or_default();
    assert_eq!(&line[at.column - 1..], "'first_name': x,");
    let top = format!("{GOOD}segments:\n  lapsed: SELECT * FROM profiles\n");
    assert_eq!(
        said(&top),
        (
            ": `segments` is given twice: give it once (the second would silently replace the first)".to_owned(),
            "segments:".to_owned()
        )
    );
    let line = problems(&top)[0].location.as_ref().map(|l| l.line);
    assert_eq!(
        line,
        top.lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| *l == "segments:")
            .map(|n| n + 1)
    );
}

#[test]
fn a_file_of_several_documents_or_of_none_says_so() {
    let two = format!("# first\n{GOOD}---\n{GOOD}");
    let d = problems(&two);
    assert_eq!(
        d[0].message,
        "the file holds more than one YAML document (`---` starts each) and may hold only one: put each pipeline in a file of its own"
    );
    let line = d[0].location.as_ref().expect("placed").line;
    assert_eq!(two.lines().nth(line - 1), Some("---"));
    assert_eq!(line, GOOD.lines().count() + 2);
    // A `---` before the first document starts it.
    let marked = format!("---\n{GOOD}---\n{GOOD}");
    let line = problems(&marked)[0].location.as_ref().map(|l| l.line);
    assert_eq!(line, Some(GOOD.lines().count() + 2));
    // A first document that is not a whole pipeline: the `---` is the likely cause.
    let split = "version: 1\n---\nconnections: {}\nsources: {}\nexports: []\n";
    assert_eq!(
        problems(split)[0].message,
        "missing field `sources` in the first YAML document: the file holds more than one (the `---` at line 2 starts the second) and may hold only one: put each pipeline in a file of its own"
    );
    for empty in ["", "\n  \n", "# nothing yet\n"] {
        assert_eq!(
            problem_lines(empty),
            [
                ": the file is empty: it starts with `version: 1` (`pipeline schema` prints every setting)"
            ]
        );
    }
}

#[test]
fn merge_keys_share_settings_between_exports() {
    let text = GOOD.replace(
        "version: 1\n",
        "version: 1\nx-shared: &gold { tier_column: tier }\n",
    ) + "  - <<: *newsletter
    name: winback
    mapping:
      <<: *mapping
      last_name: last_name
";
    let text = text
        .replace(
            "  - name: newsletter",
            "  - &newsletter\n    name: newsletter",
        )
        .replace(
            "    mapping:\n      email",
            "    mapping: &mapping\n      email",
        );
    let p = parse(&text, Path::new("p.yaml"), &env).unwrap();
    let first = p.export("newsletter").unwrap();
    let second = p.export("winback").unwrap();
    assert_eq!(second.segments, first.segments);
    assert_eq!(second.order_by, ["customer_id"]);
    assert_eq!(second.on_cap_exceeded, OnCapExceeded::Truncate);
    assert_eq!(second.mapping.first_name.as_deref(), Some("first_name"));
    assert_eq!(second.mapping.last_name.as_deref(), Some("last_name"));
    assert_eq!(first.mapping.last_name, None);
    assert_eq!(second.mapping.custom_fields.len(), 1);

    // Scalars are read as written: a list named `2024.10` is not the number 2024.1.
    let named = text.replace(
        "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]\n",
        "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]\n    lists: [{ name: 2024.10 }, { name: 0x1F }]\n",
    );
    let p = parse(&named, Path::new("p.yaml"), &env).unwrap();
    let names = |e: &str| -> Vec<String> {
        let export = p.export(e).unwrap();
        export.lists.iter().map(|l| l.name.clone()).collect()
    };
    assert_eq!(names("newsletter"), ["2024.10", "0x1F"]);
    assert_eq!(names("winback"), ["2024.10", "0x1F"]);

    // A mistake under a merged mapping is placed where it is written.
    let typo = text.replace("      last_name: last_name\n", "      frist_name: x\n");
    let d = problems(&typo);
    assert_eq!(d[0].path, "exports[1].mapping");
    assert!(
        d[0].message.starts_with("unknown field `frist_name`"),
        "{}",
        d[0].message
    );
    let line = d[0].location.as_ref().expect("placed").line;
    assert_eq!(typo.lines().nth(line - 1).map(str::trim), Some("mapping:"));
    assert!(
        line > typo
            .find("name: winback")
            .map_or(0, |at| typo[..at].lines().count())
    );

    // A key given twice in such a file is said, not the `x-` key before it.
    let twice = text.replace(
        "      last_name: last_name\n",
        "      last_name: last_name\n      last_name: surname\n",
    );
    let d = problems(&twice);
    assert_eq!(d.len(), 1);
    assert!(d[0].message.contains("last_name"), "{}", d[0].message);
    let line = d[0].location.as_ref().expect("placed").line;
    assert_eq!(
        twice.lines().nth(line - 1).map(str::trim),
        Some("last_name: surname")
    );

    // Two merge keys in one mapping: one merges a list.
    let two = text.replace(
        "      <<: *mapping\n",
        "      <<: *mapping\n      <<: *gold\n",
    );
    let d = problems(&two);
    assert_eq!(
        d[0].message,
        "a merge key `<<` is given twice: merge several mappings with one, `<<: [*first, *second]` (the first wins)"
    );
    let line = d[0].location.as_ref().expect("placed").line;
    assert_eq!(two.lines().nth(line - 1).map(str::trim), Some("<<: *gold"));

    let bad = text.replace("<<: *newsletter", "<<: 5");
    assert_eq!(
        problem_lines(&bad),
        [
            ": a merge key `<<` expected a mapping or list of mappings for merging, but found scalar: write `<<: *name` after the anchor `&name` of a mapping, or a list of such aliases"
        ]
    );
}
