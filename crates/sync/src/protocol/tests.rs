use super::*;
use crate::{Entry, list_key};
use pipeline_spec::IdentifierSet;

const L1: &str = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11";
/// A list the account does not have: removing from it fails.
const GONE: &str = "ffffffff-0a0f-4c35-9a3e-0f6f1d8f3a11";

#[tokio::test]
async fn a_failed_removal_leaves_the_leavers_in_the_state_for_the_next_run() {
    use sendgrid_emulator::{Config, Emulator, KeyConfig, marketing_scopes};

    let emulator = Emulator::start(Config {
        keys: vec![KeyConfig {
            key: "k".into(),
            scopes: marketing_scopes(),
        }],
        lists: vec![(L1.into(), "one".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let policy = sendgrid_client::RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    };
    let client = Client::new(
        &emulator.url(),
        "k".to_owned().into(),
        Duration::from_secs(5),
        policy,
    )
    .unwrap();
    let body = format!(r#"{{"list_ids":["{L1}"],"contacts":[{{"email":"a@x.io"}}]}}"#);
    client.upsert_contacts(body.into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nconnections:\n  m: {{ type: sendgrid, api_key: \"${{K}}\", data_privacy_consent: true }}\n\
         sources:\n  t: {{ format: parquet, path: t.parquet }}\nsegments:\n  s: SELECT * FROM t\n\
         exports:\n  - {{ name: x, connection: m, list_ids: [{L1}, {GONE}], segments: [s], \
         mapping: {{ email: email }}, mode: mirror }}\n"
    );
    let pipeline =
        pipeline_spec::parse(&yaml, &dir.path().join("p.yaml"), &|_| Some("k".into())).unwrap();
    let query = ExportQuery {
        export: "x".into(),
        sql: String::new(),
        segment_sql: Vec::new(),
        fields: Vec::new(),
        key: pipeline_spec::Identifier::Email,
        segments: vec!["s".into()],
        custom_field_types: Default::default(),
        order_descending: Vec::new(),
        probes: Vec::new(),
    };
    let options = SyncOptions {
        state_root: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let sync = ExportSync::new(&pipeline, &query, &options).unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.entries.insert(
        "a@x.io".into(),
        Entry {
            hash: 1,
            lists: list_key(&[L1.into(), GONE.into()]),
            synced_at: 0,
            refused: None,
            identifiers: IdentifierSet::default(),
        },
    );
    let removals = Removals {
        by_list: [L1, GONE]
            .into_iter()
            .map(|l| (l.to_owned(), vec!["a@x.io".to_owned()]))
            .collect(),
        leavers: vec!["a@x.io".into()],
        share: 1.0,
    };
    let report = || SyncReport {
        max_removal_share: 1.0,
        ..Default::default()
    };

    // Uploads that did not all finish: nothing is removed, the leaver stays known.
    let mut skipped = report();
    sync.mirror(&client, &removals, false, &mut snapshot, &mut skipped)
        .await
        .unwrap();
    assert_eq!(skipped.removal, RemovalOutcome::Skipped);
    assert!(emulator.requests().iter().all(|r| r.method != "DELETE"));

    // The first list's removal succeeds, the second fails: the run stops with what to
    // do, and the snapshot still holds the leaver, so the next run removes it again.
    let mut failed = report();
    let err = sync
        .mirror(&client, &removals, true, &mut snapshot, &mut failed)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("taking leavers off list {GONE}"))
            && message.ends_with("Rerun to finish; nothing is deleted"),
        "{message}"
    );
    assert_eq!(
        err.kind(),
        ErrorKind::Config,
        "a missing list is the user's to fix"
    );
    assert_ne!(failed.removal, RemovalOutcome::Done);
    assert!(snapshot.entries.contains_key("a@x.io"));
    assert!(
        emulator.list_emails(L1).is_empty(),
        "removed from the first list"
    );
}
