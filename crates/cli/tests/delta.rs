//! Delta tables as sources: written by the `deltalake` Python package in three versions
//! (an append, then a delete that rewrites files), read locally and from a real S3 server
//! (moto) on loopback. A Delta export sends what the equivalent Parquet folder sends.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::account::*;
use common::s3::S3Server;
use common::*;

/// The emails a dry run of `source` would send, in order.
fn dry_run(dir: &Path, source: &str, env: &[(&str, &str)]) -> Vec<String> {
    let file = write(dir, &delta_yaml(source));
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let run = pipeline(dir, &["run", file, "--dry-run", "out"], env);
    assert_eq!(run.code, 0, "{source}: {}{}", run.stdout, run.stderr);
    emails(&contacts(&dir.join("out/daily")))
}

fn expected(ids: impl Iterator<Item = i64>) -> Vec<String> {
    ids.map(email).collect()
}

#[test]
fn a_delta_table_exports_its_current_rows_or_a_pinned_version() {
    let dir = tempfile::tempdir().unwrap();
    if write_delta_table(dir.path(), None).is_none() {
        return;
    }
    let latest = dry_run(dir.path(), "{ format: delta, path: table }", &[]);
    assert_eq!(latest, expected((1..=600).filter(|id| id % 7 != 0)));
    // The Parquet files of the same rows send the same contacts: the files the delete
    // replaced are not read.
    write_profiles(
        &dir.path().join("flat"),
        &rows(600)
            .into_iter()
            .filter(|r| r.id % 7 != 0)
            .collect::<Vec<_>>(),
    );
    let flat = dry_run(
        dir.path(),
        "{ format: parquet, path: flat/data/profiles.parquet }",
        &[],
    );
    assert_eq!(latest, flat);
    assert!(
        std::fs::read_dir(dir.path().join("table"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet"))
            .count()
            > 2,
        "the delete left replaced files beside the table's current ones"
    );

    let first = dry_run(
        dir.path(),
        "{ format: delta, path: table, version: 0 }",
        &[],
    );
    assert_eq!(first, expected(1..=300));
    let second = dry_run(
        dir.path(),
        "{ format: delta, path: table, version: 1 }",
        &[],
    );
    assert_eq!(second, expected(1..=600));

    // A version the table never had, a folder that is not a table, and a pinned version
    // on Parquet files are each named.
    let file = write(
        dir.path(),
        &delta_yaml("{ format: delta, path: table, version: 9 }"),
    );
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("source `profiles` (table):"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("version 9"), "{}", run.stderr);
    let file = write(dir.path(), &delta_yaml("{ format: delta, path: flat }"));
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert!(
        run.stderr.contains("is not a Delta table: it has no `_delta_log/` folder (for Parquet files, write `format: parquet`)"),
        "{}",
        run.stderr
    );
    let file = write(
        dir.path(),
        &delta_yaml("{ format: parquet, path: flat, version: 1 }"),
    );
    let run = pipeline(dir.path(), &["validate", file], &[]);
    assert!(
        run.stderr.contains("sources.profiles.version")
            && run.stderr.contains("applies to Delta tables only"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_delta_table_on_s3_exports_the_same_contacts_as_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    if write_delta_table(dir.path(), None).is_none() {
        return;
    }
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    server.put_dir("lake", "tables/profiles", &dir.path().join("table"));
    let env = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let source = format!(
        "{{ format: delta, path: \"s3://lake/tables/profiles\", storage: {} }}",
        server.storage()
    );
    let remote = dry_run(dir.path(), &source, &env);
    let local = dry_run(dir.path(), "{ format: delta, path: table }", &[]);
    assert_eq!(remote, local);
    let sent: BTreeSet<&String> = remote.iter().collect();
    assert_eq!(sent.len(), 600 - 600 / 7);

    let pinned = format!(
        "{{ format: delta, path: \"s3://lake/tables/profiles/\", version: 0, storage: {} }}",
        server.storage()
    );
    assert_eq!(dry_run(dir.path(), &pinned, &env), expected(1..=300));
    let missing = format!(
        "{{ format: delta, path: \"s3://lake/tables/nothing/\", storage: {} }}",
        server.storage()
    );
    let file = write(dir.path(), &delta_yaml(&missing));
    let run = pipeline(dir.path(), &["validate", file], &env);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("s3://lake/tables/nothing/ is not a Delta table"),
        "{}",
        run.stderr
    );
}
