//! Sources in an object store: exports whose profiles and segment tables are Parquet
//! folders and globs on a real S3 server (moto) on loopback, and every error a user can
//! meet there, as `pipeline validate` reports it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use common::account::*;
use common::s3::S3Server;
use common::*;

/// A Parquet file of rows, as bytes.
fn parquet_bytes(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn members_bytes(ids: &[i64]) -> Vec<u8> {
    parquet_bytes(vec![
        (
            "customer_id",
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
        ),
        (
            "segment_name",
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "vip"))),
        ),
    ])
}

/// An S3 server with the bucket `lake` holding `profiles/part-0.parquet` of `n` profile
/// rows, and the account those profiles go to; `None` when no server can run here.
fn lake_with_profiles(n: i64) -> Option<(S3Server, Setup)> {
    let server = S3Server::start(&["lake"], &[])?;
    let s = Setup::new(10);
    server.put(
        "lake",
        "profiles/part-0.parquet",
        profiles_parquet(&rows(n)),
    );
    Some((server, s))
}

/// [`yaml`] with the profiles at `s3://lake/profiles/` and the memberships at `members`.
fn lake_yaml(s: &Setup, server: &S3Server, members: &str) -> String {
    let storage = server.storage();
    yaml(
        s,
        &format!(
            "  profiles: {{ format: parquet, path: \"s3://lake/profiles/\", storage: {storage} }}
  members: {{ format: parquet, path: \"{members}\", storage: {storage} }}"
        ),
    )
}

fn yaml(s: &Setup, sources: &str) -> String {
    let connections = connections_yaml(Some(&s.emulator.url()));
    format!(
        "version: 1
{connections}sources:
{sources}
segments:
  vip: SELECT p.* FROM profiles p JOIN members m ON m.customer_id = p.customer_id WHERE m.segment_name = 'vip'
exports:
  - name: daily
    connection: marketing
    segments: [vip]
    order_by: customer_id
    list_ids: [{LIST}]
    mapping:
      email: email
      first_name: first_name
"
    )
}

#[test]
fn an_export_reads_a_parquet_folder_and_a_glob_on_s3() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let s = Setup::new(10);
    let data = rows(600);
    // The profiles: a folder of two parts with the markers Spark leaves beside them.
    server.put(
        "lake",
        "profiles/part-00000.parquet",
        profiles_parquet(&data[..300]),
    );
    server.put(
        "lake",
        "profiles/part-00001.parquet",
        profiles_parquet(&data[300..]),
    );
    server.put("lake", "profiles/_SUCCESS", Vec::new());
    server.put("lake", "profiles/.part-00000.parquet.crc", b"crc".to_vec());
    // The segment table: daily folders, read through a glob that leaves out December
    // (not Parquet at all: reading it would fail the run) and the notes.
    let vip_jan: Vec<i64> = (1..=600).filter(|id| id % 10 == 0).collect();
    let vip_feb: Vec<i64> = (1..=600).filter(|id| id % 25 == 1).collect();
    server.put(
        "lake",
        "members/2026-01/part-0.parquet",
        members_bytes(&vip_jan),
    );
    server.put(
        "lake",
        "members/2026-02/part-0.parquet",
        members_bytes(&vip_feb),
    );
    server.put(
        "lake",
        "members/2025-12/part-0.parquet",
        b"not parquet".to_vec(),
    );
    server.put("lake", "members/2026-02/notes.txt", b"not parquet".to_vec());

    let file = write(
        s.dir.path(),
        &lake_yaml(&s, &server, "s3://lake/members/2026-*/part-*.parquet"),
    );
    let checked = server.run(s.dir.path(), &["validate", file], &[]);
    assert_eq!(checked.code, 0, "{}", checked.stderr);

    let first = server.run(s.dir.path(), &["run", file, "--output", "json"], &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let expected: BTreeSet<String> = vip_jan
        .iter()
        .chain(&vip_feb)
        .map(|id| email(*id))
        .collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, expected);
    assert_eq!(first.json()["exports"][0]["sent"], expected.len());

    // The same objects read again: nothing changed, nothing is sent.
    let before = s.log_len();
    let second = server.run(s.dir.path(), &["run", file, "--output", "json"], &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(s.upserted_since(before).is_empty());
    assert_eq!(
        second.json()["exports"][0]["sync"]["unchanged"],
        expected.len()
    );
}

/// A proxy in the environment never sees the requests to a store on this machine: they
/// would carry the profiles through it, or fail there.
#[test]
fn requests_to_a_store_on_this_machine_never_go_through_the_environments_proxy() {
    let Some((server, s)) = lake_with_profiles(50) else {
        return;
    };
    server.put(
        "lake",
        "members/part-0.parquet",
        members_bytes(&[10, 20, 30]),
    );
    let file = write(s.dir.path(), &lake_yaml(&s, &server, "s3://lake/members/"));
    let run = behind_a_silent_proxy(|proxy| server.run(s.dir.path(), &["run", file], proxy));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, [10, 20, 30].map(email).into_iter().collect());
}

#[test]
fn a_folder_of_hive_partitions_on_s3_reads_its_keys_as_columns() {
    let Some((server, s)) = lake_with_profiles(200) else {
        return;
    };
    // The segment table as Spark's `partitionBy("segment_name", "wave")` writes it: the
    // name and the wave are in the folders, not in the files. The waves are whole
    // numbers, so the wave is a number.
    let ids = |keep: fn(&i64) -> bool| -> Vec<u8> {
        let ids: Vec<i64> = (1..=200).filter(keep).collect();
        parquet_bytes(vec![(
            "customer_id",
            Arc::new(Int64Array::from(ids)) as ArrayRef,
        )])
    };
    server.put(
        "lake",
        "members/segment_name=vip/wave=9/part-0.parquet",
        ids(|id| id % 10 == 0 && *id <= 100),
    );
    server.put(
        "lake",
        "members/segment_name=vip/wave=10/part-0.parquet",
        ids(|id| id % 10 == 0 && *id > 100),
    );
    server.put(
        "lake",
        "members/segment_name=lapsed/wave=10/part-0.parquet",
        ids(|id| id % 10 == 1),
    );
    server.put("lake", "members/_SUCCESS", Vec::new());

    let yaml = lake_yaml(&s, &server, "s3://lake/members").replace(
        "WHERE m.segment_name = 'vip'",
        "WHERE m.segment_name = 'vip' AND m.wave > 9 AND arrow_typeof(m.wave) = 'Int64'",
    );
    let file = write(s.dir.path(), &yaml);
    let run = server.run(s.dir.path(), &["run", file, "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected: BTreeSet<String> = (101..=200).filter(|id| id % 10 == 0).map(email).collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, expected);

    // A file outside the partition folders is named, not read without its key.
    server.put("lake", "members/part-9.parquet", ids(|id| id % 10 == 2));
    let checked = server.run(s.dir.path(), &["validate", file], &[]);
    assert_eq!(checked.code, 2, "{}", checked.stderr);
    assert!(
        checked.stderr.contains(
            "source `members` (s3://lake/members): `part-9.parquet` and `segment_name=lapsed/wave=10/part-0.parquet` are not in the same `key=value` folders"
        ),
        "{}",
        checked.stderr
    );
}

#[test]
fn every_object_store_problem_is_named_by_validate() {
    let Some((server, s)) = lake_with_profiles(10) else {
        return;
    };
    server.put("lake", "members/part-0.parquet", members_bytes(&[1, 2]));
    server.put("lake", "empty/_SUCCESS", Vec::new());
    let storage = server.storage();
    let check = |profiles: &str, storage: &str, env: &[(&str, &str)]| {
        let file = write(
            s.dir.path(),
            &yaml(
                &s,
                &format!(
                    "  profiles: {{ format: parquet, path: \"{profiles}\", storage: {storage} }}
  members: {{ format: parquet, path: \"s3://lake/members/\", storage: {} }}",
                    server.storage()
                ),
            ),
        );
        let run = server.run(s.dir.path(), &["validate", file], env);
        assert_eq!(run.code, 2, "{profiles}: {}{}", run.stdout, run.stderr);
        run.stderr
    };

    let missing = check("s3://no-such-bucket/profiles/", &storage, &[]);
    assert!(
        missing.contains("source `profiles` (s3://no-such-bucket/profiles/): the bucket of s3://no-such-bucket/profiles/ does not exist"),
        "{missing}"
    );
    let nothing = check("s3://lake/profiles/2027-*/part-*.parquet", &storage, &[]);
    assert!(
        nothing.contains("the glob s3://lake/profiles/2027-*/part-*.parquet matches no object"),
        "{nothing}"
    );
    let markers = check("s3://lake/empty/", &storage, &[]);
    assert!(
        markers.contains("no .parquet object is at s3://lake/empty/; 1 name(s) starting with `_` or `.` (such as `_SUCCESS`) were skipped"),
        "{markers}"
    );
    let no_object = check("s3://lake/profiles/part-9.parquet", &storage, &[]);
    assert!(
        no_object.contains("no .parquet object is at s3://lake/profiles/part-9.parquet"),
        "{no_object}"
    );
    let anonymous = check(
        "s3://lake/profiles/",
        &storage,
        &[("AWS_ACCESS_KEY_ID", "")],
    );
    assert!(
        anonymous.contains(
            "no AWS credentials: the environment has none, and the instance metadata service is off"
        ),
        "{anonymous}"
    );
    let secret = check(
        "s3://lake/profiles/",
        &format!(
            "{{ endpoint: \"{}\", secret_access_key: abc }}",
            server.endpoint()
        ),
        &[],
    );
    assert!(
        secret.contains("sources.profiles.storage.secret_access_key")
            && secret.contains("is a credential"),
        "{secret}"
    );
    assert!(
        !secret.contains("abc"),
        "the secret is not echoed: {secret}"
    );
    let http = check(
        "s3://lake/profiles/",
        "{ endpoint: \"http://10.1.2.3:9000\", allow_http: true }",
        &[],
    );
    assert!(
        http.contains("sources.profiles.storage.allow_http"),
        "{http}"
    );
    let unreachable = check(
        "s3://elsewhere/profiles/",
        "{ endpoint: \"http://127.0.0.1:9\", allow_http: true }",
        &[],
    );
    assert!(
        unreachable.contains("cannot reach the S3 endpoint for s3://elsewhere/profiles/"),
        "{unreachable}"
    );
    // The server speaks plain HTTP: written `https://`, the handshake fails and says why;
    // written `http://` without `allow_http`, the file is refused before any request.
    let https = server.endpoint().replacen("http://", "https://", 1);
    let tls = check(
        "s3://elsewhere/profiles/",
        &format!("{{ endpoint: \"{https}\" }}"),
        &[],
    );
    assert!(
        tls.contains("source `profiles` (s3://elsewhere/profiles/): the S3 endpoint for s3://elsewhere/profiles/ does not answer in TLS: a server that serves plain HTTP is written `http://` in `storage: { endpoint }`"),
        "{tls}"
    );
    let plain = check(
        "s3://elsewhere/profiles/",
        &format!("{{ endpoint: \"{}\" }}", server.endpoint()),
        &[],
    );
    assert!(
        plain.contains(&format!(
            "sources.profiles.storage.endpoint: `{}` is plain http: add `allow_http: true` beside it",
            server.endpoint()
        )),
        "{plain}"
    );

    // An http endpoint from the environment (AWS_ENDPOINT) is not used unless the file
    // allows it, whatever AWS_ALLOW_HTTP says.
    let from_env = check(
        "s3://elsewhere/profiles/",
        "{ region: us-east-1 }",
        &[
            ("AWS_ENDPOINT", &server.endpoint()),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    assert!(
        from_env.contains("the S3 endpoint for s3://elsewhere/profiles/ is plain http: write it in the source's `storage: { endpoint: \"http://...\", allow_http: true }`"),
        "{from_env}"
    );

    // A server that checks credentials refuses the test's made-up keys.
    let strict = S3Server::start(&["guarded"], &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]).unwrap();
    let denied = check("s3://guarded/profiles/", &strict.storage(), &[]);
    assert!(
        denied.contains("access to s3://guarded/profiles/ was denied: the credentials in the environment (AWS_ACCESS_KEY_ID"),
        "{denied}"
    );
}
