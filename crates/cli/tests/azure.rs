//! Sources and state in Azure Blob Storage: Azurite, Microsoft's emulator, on loopback,
//! reached as an Azure account is (its name, its key in the environment, its endpoint),
//! not through object_store's emulator shortcut.
//!
//! `.ci/run` installs Azurite and sets `PIPELINE_AZURITE` to its `azurite-blob` and
//! `PIPELINE_REQUIRE_AZURITE=1`. Without `PIPELINE_AZURITE` the test says it was skipped,
//! unless `PIPELINE_REQUIRE_AZURITE` is set, when it fails.

mod common;

use std::collections::BTreeSet;

use common::account::*;
use common::azure::Azurite;
use common::*;

fn upload(server: &Azurite, data: &[Row]) {
    let (first, second) = data.split_at(data.len() / 2);
    server.put(
        "lake",
        "profiles/part-00000.parquet",
        profiles_parquet(first),
    );
    server.put(
        "lake",
        "profiles/part-00001.parquet",
        profiles_parquet(second),
    );
}

#[test]
fn an_export_reads_its_profiles_from_azure_and_keeps_its_state_there() {
    let Some(server) = Azurite::start(&["lake"]) else {
        return;
    };
    let s = Setup::new(10);
    let mut data = rows(300);
    upload(&server, &data);
    let storage = server.storage();
    let text = s.pipeline_text(
        &format!("state_dir: az://lake/state/\nstate_storage: {storage}\n"),
        &format!("{{ format: parquet, path: \"az://lake/profiles/\", storage: {storage} }}"),
        &format!("    list_ids: [{LIST}]\n    mapping:\n      email: email\n      first_name: first_name\n"),
    );

    let first = machine(&text);
    let run = server.run(first.path(), &["run", "p.yaml", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["exports"][0]["sync"]["new"], 300);
    assert_eq!(
        doc["exports"][0]["sync"]["state_dir"],
        "az://lake/state/daily"
    );
    let all: BTreeSet<String> = data.iter().map(|r| r.email.clone()).collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, all);
    assert_eq!(
        server.names("lake", "state/"),
        [
            "state/daily/history.jsonl",
            "state/daily/run.lock",
            "state/daily/snapshot.parquet"
        ],
        "the journal is folded and gone"
    );
    assert!(
        !first.path().join(".state").exists(),
        "nothing is kept locally"
    );

    // Three changes; the next run starts in another folder with nothing but the file, and
    // takes over the lock the first released.
    let changed = rename_every_hundredth(&mut data);
    upload(&server, &data);
    let second = machine(&text);
    let before = s.log_len();
    let run = server.run(second.path(), &["run", "p.yaml", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent: BTreeSet<String> = s.upserted_since(before).into_iter().collect();
    assert_eq!(sent, changed);
    assert_eq!(run.json()["exports"][0]["sync"]["unchanged"], 297);
}

/// `use_emulator: true` reaches Azurite where object_store looks for it
/// (`AZURITE_BLOB_STORAGE_URL`, here by the name `localhost`), and never through the
/// environment's proxy.
#[test]
fn the_emulator_shortcut_reaches_azurite_where_it_listens_past_the_environments_proxy() {
    let Some(server) = Azurite::start(&["lake"]) else {
        return;
    };
    let s = Setup::new(10);
    let data = rows(40);
    upload(&server, &data);
    let text = s.pipeline_text(
        "",
        "{ format: parquet, path: \"az://lake/profiles/\", storage: { use_emulator: true } }",
        &format!("    list_ids: [{LIST}]\n    mapping:\n      email: email\n"),
    );
    let dir = machine(&text);
    let emulator = format!("http://localhost:{}", server.port);
    let run = behind_a_silent_proxy(|proxy| {
        let mut env = vec![("AZURITE_BLOB_STORAGE_URL", emulator.as_str())];
        env.extend_from_slice(proxy);
        server.run(dir.path(), &["run", "p.yaml"], &env)
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all: BTreeSet<String> = data.iter().map(|r| r.email.clone()).collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, all);
}
