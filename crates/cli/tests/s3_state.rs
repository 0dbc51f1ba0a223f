//! Export state in an object store (a real S3 server, moto, on loopback): incremental
//! reruns from another working folder, the lease that keeps two runs apart across
//! machines, and a killed run finished by a run elsewhere.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::account::*;
use common::s3::S3Server;
use common::*;
use sendgrid_emulator::{Fault, Faults};

/// The pipeline: profiles and state on S3, one export `daily` of subscribed profiles.
fn yaml(s: &Setup, server: &S3Server, lease: u64) -> String {
    let storage = server.storage();
    s.pipeline_text(
        &format!(
            "state_dir: s3://lake/state/\nstate_storage: {storage}\nstate_lease_secs: {lease}\n"
        ),
        &format!("{{ format: parquet, path: \"s3://lake/profiles/\", storage: {storage} }}"),
        &format!("    list_ids: [{LIST}]\n    mapping:\n      email: email\n      first_name: first_name\n"),
    )
}

fn upload_profiles(server: &S3Server, rows: &[Row]) {
    server.put("lake", "profiles/part-0.parquet", profiles_parquet(rows));
}

fn spawn_in(dir: &Path, server: &S3Server, args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    cmd.args(args)
        .current_dir(dir)
        .env("SENDGRID_API_KEY", KEY)
        .env("PIPELINE_CONNECTIONS", "")
        .env_remove("PIPELINE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// A run of `data` with slow uploads and a lease of `lease` seconds, started on a machine
/// of its own and under way: `accepted` bodies are on record in the store. The pipeline
/// text, the machine and the running process.
fn slow_run_under_way(
    s: &Setup,
    server: &S3Server,
    data: &[Row],
    lease: u64,
    accepted: usize,
) -> (String, tempfile::TempDir, std::process::Child) {
    upload_profiles(server, data);
    let text = yaml(s, server, lease);
    s.emulator.script(Faults {
        upserts: (0..20).map(|_| Fault::Delay { ms: 150 }).collect(),
        ..Faults::default()
    });
    let first = machine(&text);
    let mut child = spawn_in(first.path(), server, &["run", "p.yaml"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.keys("lake", "state/daily/journal/").len() < accepted {
        assert!(Instant::now() < deadline, "the run never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (text, first, child)
}

/// The lock object's holder note, while a run holds it.
fn held(server: &S3Server) -> bool {
    server
        .get("lake", "state/daily/run.lock")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["released"] == false)
}

#[test]
fn state_on_s3_makes_a_rerun_on_another_machine_incremental() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let s = Setup::new(10);
    let mut data = rows(400);
    upload_profiles(&server, &data);
    let text = yaml(&s, &server, 60);

    let first = machine(&text);
    let run = server.run(first.path(), &["run", "p.yaml", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["exports"][0]["sync"]["new"], 400);
    assert_eq!(
        doc["exports"][0]["sync"]["state_dir"],
        "s3://lake/state/daily"
    );
    assert_eq!(
        server.keys("lake", "state/"),
        [
            "state/daily/history.jsonl",
            "state/daily/run.lock",
            "state/daily/snapshot.parquet"
        ],
        "the journal is folded and gone; the lock is released"
    );
    assert!(!held(&server));
    assert!(
        !first.path().join(".state").exists(),
        "nothing is kept locally"
    );

    // 1% changes; the next run starts in another folder with nothing but the file.
    let changed = rename_every_hundredth(&mut data);
    upload_profiles(&server, &data);
    let second = machine(&text);
    let before = s.log_len();
    let run = server.run(second.path(), &["run", "p.yaml", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent: BTreeSet<String> = s.upserted_since(before).into_iter().collect();
    assert_eq!(sent, changed);
    assert_eq!(run.json()["exports"][0]["sync"]["unchanged"], 396);

    // A third machine reads the history both runs left.
    let third = machine(&text);
    let history = server.run(
        third.path(),
        &["history", "p.yaml", "--output", "json"],
        &[],
    );
    assert_eq!(history.code, 0, "{}", history.stderr);
    let runs = history.json()["exports"][0]["runs"]
        .as_array()
        .unwrap()
        .clone();
    let sent: Vec<u64> = runs.iter().map(|r| r["sent"].as_u64().unwrap()).collect();
    assert_eq!(sent, [400, 4]);
}

#[test]
fn a_second_run_waits_for_the_lease_and_racing_runs_never_both_win() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let s = Setup::new(10);
    upload_profiles(&server, &rows(300));
    let text = yaml(&s, &server, 60);
    // Slow uploads keep the first run holding the lock.
    s.emulator.script(Faults {
        upserts: (0..6).map(|_| Fault::Delay { ms: 400 }).collect(),
        ..Faults::default()
    });
    let first = machine(&text);
    let mut child = spawn_in(first.path(), &server, &["run", "p.yaml"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held(&server) {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = machine(&text);
    let refused = server.run(second.path(), &["run", "p.yaml"], &[]);
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("export `daily` is already running (pid ")
            && refused.stderr.contains("s3://lake/state/daily/run.lock"),
        "{}",
        refused.stderr
    );
    assert!(child.wait().unwrap().success());
    let after = server.run(second.path(), &["run", "p.yaml"], &[]);
    assert_eq!(after.code, 0, "{}", after.stderr);

    // Eight workers race for a free lock: exactly one gets it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let won = rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let url = url::Url::parse("s3://lake/state/daily").unwrap();
                let store = pipeline_engine::store::Store {
                    cloud: pipeline_spec::Cloud::S3,
                    root: pipeline_engine::store::root_of(&url),
                    inner: server.bucket("lake"),
                };
                let remote = pipeline_sync::RemoteState::new(store, url).unwrap();
                let state = pipeline_sync::StateDir::in_store(remote, Duration::from_secs(60));
                tokio::spawn(async move { state.lock("daily").await.map(|l| (l, state)) })
            })
            .collect();
        let mut won = Vec::new();
        for task in tasks {
            if let Ok(held) = task.await.unwrap() {
                won.push(held);
            }
        }
        won.len()
    });
    assert_eq!(won, 1);
}

/// A run killed mid-upload on one machine is finished by a run on another: after the
/// dead run's lease, without sending again what its journal recorded as accepted.
#[test]
fn a_killed_run_is_resumed_from_another_machine_after_its_lease() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let s = Setup::new(100);
    let data = rows(1000);
    // Killed once four accepted bodies are on record in the store.
    let (text, _first, mut child) = slow_run_under_way(&s, &server, &data, 5, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(held(&server), "a killed run leaves its lease behind");

    // What the journal in the store holds as accepted when the process died.
    let journaled = journaled_contacts(&server);
    assert!(journaled.len() >= 4 * 50, "{} journaled", journaled.len());

    let second = machine(&text);
    let early = server.run(second.path(), &["run", "p.yaml"], &[]);
    assert_eq!(early.code, 6, "the lease still holds: {}", early.stderr);
    let before = s.log_len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (run, doc) = loop {
        let run = server.run(second.path(), &["run", "p.yaml", "--output", "json"], &[]);
        if run.code != 6 {
            let doc = run.json();
            break (run, doc);
        }
        assert!(
            Instant::now() < deadline,
            "the dead run's lease never ran out"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(run.code, 0, "{}", run.stderr);
    let notes = doc["exports"][0]["sync"]["notes"].to_string();
    assert!(
        notes.contains("recovered the lock of an interrupted run (pid "),
        "{notes}"
    );
    let resent: BTreeSet<String> = s.upserted_since(before).into_iter().collect();
    assert!(
        resent.is_disjoint(&journaled),
        "a journaled body was sent again"
    );
    let all: BTreeSet<String> = data.iter().map(|r| r.email.clone()).collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, all);
    assert!(server.keys("lake", "state/daily/journal/").is_empty());
}

#[test]
fn a_run_stopped_by_sigterm_frees_its_lease_for_the_next_worker_at_once() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let s = Setup::new(100);
    let data = rows(1000);
    // A lease far longer than the test: only a release lets the next run in.
    let (text, _first, mut child) = slow_run_under_way(&s, &server, &data, 600, 2);
    // SAFETY: kill sends a signal to the child, which has not been waited for yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(!held(&server), "the stopped run released its lease");
    let journaled = journaled_contacts(&server);
    assert!(journaled.len() >= 2 * 50, "{} journaled", journaled.len());

    let second = machine(&text);
    let run = server.run(second.path(), &["run", "p.yaml", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all: BTreeSet<String> = data.iter().map(|r| r.email.clone()).collect();
    let listed: BTreeSet<String> = s.list_names(LIST).into_keys().collect();
    assert_eq!(listed, all);
    let history = server.run(
        second.path(),
        &["history", "p.yaml", "--output", "json"],
        &[],
    );
    let runs = history.json()["exports"][0]["runs"].clone();
    let outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["interrupted", "success"]);
    // The stopped run's line counts what SendGrid accepted from it, as its journal had it.
    assert_eq!(runs[0]["sent"], journaled.len(), "{runs}");
    assert!(!runs[0]["job_ids"].as_array().unwrap().is_empty(), "{runs}");
}

/// The contacts of the accepted bodies the journal in the store holds.
fn journaled_contacts(server: &S3Server) -> BTreeSet<String> {
    let mut journaled = BTreeSet::new();
    for key in server.keys("lake", "state/daily/journal/") {
        let bytes = server.get("lake", &key).unwrap();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            for pair in v["contacts"].as_array().unwrap() {
                journaled.insert(pair[0].as_str().unwrap().to_owned());
            }
        }
    }
    journaled
}
