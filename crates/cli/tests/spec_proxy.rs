//! The spec checks us: a full export, `check`, and a mirror run that meets vanished
//! contacts and a long address, all sent through Prism (a validating proxy, in front of
//! the emulator) loaded with SendGrid's OpenAPI files. Prism answers any request or
//! response the spec forbids with an error (`--errors`) and logs it; the test fails on
//! either.
//!
//! Prism is a Node program: `.ci/run` installs it and sets `PIPELINE_PRISM` to its
//! executable and `PIPELINE_REQUIRE_PRISM=1`. Without `PIPELINE_PRISM` the test says it
//! was skipped, unless `PIPELINE_REQUIRE_PRISM` is set, when it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::account::*;
use sendgrid_emulator::{Config, Faults};
use serde_json::{Map, Value};

const SPEC_FILES: [&str; 5] = [
    "tsg_mc_contacts_v3.json",
    "tsg_mc_lists_v3.json",
    "tsg_mc_custom_fields_v3.json",
    "tsg_scopes_v3.json",
    "tsg_suppressions_v3.json",
];

/// Replaces every `$ref` equal to `from` with `to`.
fn rename_refs(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref" && v.as_str() == Some(from) {
                    *v = Value::String(to.to_owned());
                } else {
                    rename_refs(v, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, from, to)),
        _ => {}
    }
}

/// SendGrid's OpenAPI files as one document: paths and components together; a component
/// that two files define differently is renamed (with its references) in the later file.
fn merged_spec() -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sendgrid-emulator/openapi");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let mut merged = read(SPEC_FILES[0]);
    for name in &SPEC_FILES[1..] {
        let mut doc = read(name);
        let prefix = name.trim_end_matches("_v3.json");
        let sections: Vec<(String, Vec<String>)> = doc["components"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(s, items)| {
                (
                    s.clone(),
                    items.as_object().unwrap().keys().cloned().collect(),
                )
            })
            .collect();
        for (section, keys) in sections {
            for key in keys {
                let ours = &doc["components"][&section][&key];
                let theirs = &merged["components"][&section][&key];
                if !theirs.is_null() && theirs != ours {
                    let renamed = format!("{prefix}_{key}");
                    rename_refs(
                        &mut doc,
                        &format!("#/components/{section}/{key}"),
                        &format!("#/components/{section}/{renamed}"),
                    );
                    let items = doc["components"][&section].as_object_mut().unwrap();
                    let value = items.remove(&key).unwrap();
                    items.insert(renamed, value);
                }
            }
        }
        for (section, items) in doc["components"].as_object().unwrap() {
            let into = merged["components"]
                .as_object_mut()
                .unwrap()
                .entry(section.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            for (k, v) in items.as_object().unwrap() {
                into[k] = v.clone();
            }
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            merged["paths"][path] = item.clone();
        }
    }
    merged
}

/// A running Prism proxy; killed on drop. Its output is collected line by line.
struct Prism {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Prism {
    fn start(prism: &Path, spec: &Path, upstream: &str) -> Self {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let mut child = Command::new(prism)
            .args(["proxy", spec.to_str().unwrap(), upstream, "--errors"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prism.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, ready) = (log.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("Prism is listening") {
                        let _ = ready.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let started = Instant::now();
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "Prism did not start within {:?}:\n{}",
                started.elapsed(),
                log.lock().unwrap().join("\n")
            );
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Log lines that report a request or response the spec forbids.
    fn violations(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains('✖') || l.contains('⚠') || l.contains("VIOLATIONS"))
            .cloned()
            .collect()
    }

    /// Requests Prism forwarded to the emulator.
    fn forwarded(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("Received forward response"))
            .count()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prism() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_PRISM") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("PIPELINE_REQUIRE_PRISM").is_some() => {
            panic!("PIPELINE_REQUIRE_PRISM is set but PIPELINE_PRISM does not name Prism")
        }
        None => {
            eprintln!(
                "SKIPPED: set PIPELINE_PRISM to a Prism executable (npm install @stoplight/prism-cli) to check traffic against SendGrid's OpenAPI files; .ci/run does"
            );
            None
        }
    }
}

#[test]
fn export_check_and_mirror_traffic_follow_sendgrids_openapi_files() {
    let Some(prism) = prism() else {
        return;
    };
    let s = Setup::with(Config {
        custom_fields: vec![("city_name".into(), "Text".into())],
        suppressions: vec![
            ("bounced".into(), email(9)),
            ("unsubscribed".into(), email(10)),
        ],
        ..Config::default()
    });
    let spec = s.dir.path().join("sendgrid-openapi.json");
    std::fs::write(&spec, serde_json::to_vec(&merged_spec()).unwrap()).unwrap();
    let proxy = Prism::start(&prism, &spec, &s.emulator.url());

    let mut data = rows(120);
    data[119].email = long_email(120);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(
        "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mode: mirror
    max_removal_share: 1.0
    allowed_rejects: 10
    mapping:
      email: email
      first_name: first_name
      custom_fields: { city_name: city }",
    );
    // Through the proxy instead of straight to the emulator.
    let text = std::fs::read_to_string(s.dir.path().join(file)).unwrap();
    std::fs::write(
        s.dir.path().join(file),
        text.replace(&s.emulator.url(), &proxy.url),
    )
    .unwrap();

    // One contact SendGrid refuses: its 400 goes through the proxy too.
    s.emulator.script(Faults {
        poisoned: [email(50)].into(),
        ..Faults::default()
    });
    let check = s.run(&["check", file]);
    assert_eq!(check.code, 0, "{}\n{:?}", check.stdout, proxy.violations());
    let plan = s.run(&["plan", file, "--suppressions"]);
    assert_eq!(plan.code, 0, "{}\n{:?}", plan.stderr, proxy.violations());
    assert!(
        plan.stdout.contains("suppressed: 2 selected contact(s)"),
        "{}",
        plan.stdout
    );
    let (run, first) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}\n{:?}", run.stderr, proxy.violations());
    assert_eq!(first["sent"], 119);
    assert_eq!(first["rejected_by_reason"]["sendgrid_rejected"], 1);

    // Leavers: one deleted in SendGrid, one vanishing between lookup and removal, the
    // long address, and two plain ones.
    for i in [0, 1, 2, 3, 119] {
        data[i].subscribed = false;
    }
    write_profiles(s.dir.path(), &data);
    assert!(s.emulator.delete_contact(&email(1)));
    s.emulator.script(Faults {
        vanish_before_removal: [email(2)].into(),
        ..Faults::default()
    });
    let (run, mirror) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}\n{:?}", run.stderr, proxy.violations());
    assert_eq!(mirror["sync"]["removal"], "done");
    assert_eq!(mirror["sync"]["leavers"], 5);

    // Keyed by external_id: the upserts carry it, and a leaver is looked up by it.
    let path = s.dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "    mapping:\n      email: email\n",
        "    identifier: external_id\n    mapping:\n      external_id: customer_id\n      email: email\n",
    );
    std::fs::write(&path, text).unwrap();
    let (run, keyed) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}\n{:?}", run.stderr, proxy.violations());
    assert_eq!(keyed["sent"], 114);
    data[4].subscribed = false;
    write_profiles(s.dir.path(), &data);
    let (run, keyed) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}\n{:?}", run.stderr, proxy.violations());
    assert_eq!(keyed["sync"]["leavers"], 1);
    assert_eq!(keyed["sync"]["removed"], 1);

    assert_eq!(proxy.violations(), Vec::<String>::new());
    let through = proxy.forwarded();
    assert!(through >= 10, "only {through} requests went through Prism");
}
