//! Helpers for running the real `pipeline` binary on real Parquet files.

#![allow(dead_code)]

pub mod account;
pub mod azure;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const LIST: &str = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11";

/// The Python of `PIPELINE_PYTHON` (an environment with the wheel, moto and deltalake;
/// `.ci/run` makes one), or `None` with a note when none is configured and
/// `PIPELINE_REQUIRE_PYTHON` is unset, when the caller skips.
pub fn python(needs: &str) -> Option<std::ffi::OsString> {
    match std::env::var_os("PIPELINE_PYTHON") {
        Some(python) => Some(python),
        None if std::env::var_os("PIPELINE_REQUIRE_PYTHON").is_some() => {
            panic!("PIPELINE_REQUIRE_PYTHON is set but PIPELINE_PYTHON names no interpreter")
        }
        None => {
            eprintln!(
                "SKIPPED: set PIPELINE_PYTHON to the Python of an environment with {needs}; .ci/run does"
            );
            None
        }
    }
}

/// A fresh folder holding only the pipeline file `text` (as `p.yaml`): another "machine".
pub fn machine(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), text);
    dir
}

/// Runs `pipeline` in `dir` with an object store's environment `store_env` (its
/// credentials), the test account's key and `extra`.
pub fn run_against_store(
    store_env: &[(&'static str, String)],
    dir: &Path,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Run {
    let mut all: Vec<(&str, &str)> = store_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("SENDGRID_API_KEY", account::KEY));
    all.extend_from_slice(extra);
    pipeline(dir, args, &all)
}

/// Runs `run` with an environment whose proxy (`HTTP_PROXY`, `http_proxy`, `ALL_PROXY`)
/// takes connections and answers none, and checks that nothing connected to it.
pub fn behind_a_silent_proxy(run: impl FnOnce(&[(&str, &str)]) -> Run) -> Run {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    let done = run(&[
        ("HTTP_PROXY", &url),
        ("http_proxy", &url),
        ("ALL_PROXY", &url),
    ]);
    proxy.set_nonblocking(true).unwrap();
    assert!(
        proxy.accept().is_err(),
        "a request went to the proxy: {}",
        done.stderr
    );
    done
}

/// Writes `bytes` as the object `name` in `store`.
pub fn put_object(
    rt: &tokio::runtime::Runtime,
    store: &dyn object_store::ObjectStore,
    name: &str,
    bytes: Vec<u8>,
) {
    use object_store::ObjectStoreExt;
    rt.block_on(store.put(
        &object_store::path::Path::from(name),
        object_store::PutPayload::from(bytes),
    ))
    .unwrap();
}

/// The object names in `store` under `prefix`, sorted.
pub fn names_under(
    rt: &tokio::runtime::Runtime,
    store: &dyn object_store::ObjectStore,
    prefix: &str,
) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(prefix);
    let mut names: Vec<String> = rt
        .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().expect("exited"),
            stdout: String::from_utf8(o.stdout).unwrap(),
            stderr: String::from_utf8(o.stderr).unwrap(),
        }
    }
}

/// Runs `pipeline ARGS` in `dir` with a clean environment plus `env`.
pub fn pipeline(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("SENDGRID_API_KEY")
        .env_remove("PIPELINE_LOG")
        // No connections file unless a test gives one.
        .env("PIPELINE_CONNECTIONS", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs").into()
}

/// An emulator on loopback, served by its own runtime (keep both for the test's length).
pub fn start_emulator(
    config: sendgrid_emulator::Config,
) -> (tokio::runtime::Runtime, sendgrid_emulator::Emulator) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = rt
        .block_on(sendgrid_emulator::Emulator::start(config))
        .unwrap();
    (rt, emulator)
}

/// A folder holding the quickstart sample data under `data/`.
pub fn sample_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pipeline_datagen::write_sample(&dir.path().join("data")).unwrap();
    dir
}

/// The `connections:` block of a test pipeline: `marketing`, its key from
/// `SENDGRID_API_KEY`, and with `endpoint` (an emulator) two attempts per request.
pub fn connections_yaml(endpoint: Option<&str>) -> String {
    let endpoint = endpoint
        .map(|url| format!("    endpoint: {url}\n    max_attempts: 2\n"))
        .unwrap_or_default();
    format!(
        "connections:\n  marketing:\n    type: sendgrid\n    api_key: ${{SENDGRID_API_KEY}}\n    data_privacy_consent: true\n{endpoint}"
    )
}

/// A pipeline file around one export body (YAML lines of the export, indented 4).
pub fn pipeline_yaml(segments: &str, export: &str) -> String {
    let connections = connections_yaml(None);
    format!(
        "version: 1
{connections}sources:
  profiles: {{ format: parquet, path: data/profiles.parquet }}
  memberships: {{ format: parquet, path: data/segment_memberships.parquet }}
segments:
{segments}
exports:
  - name: newsletter
    connection: marketing
    list_ids: [{LIST}]
{export}"
    )
}

pub const SEGMENTS: &str = "  vip: SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id WHERE m.segment_name = 'vip'
  high_value: SELECT * FROM profiles WHERE lifetime_value > 5000 AND is_subscribed";

pub const EXPORT: &str = "    segments: [vip, high_value]
    mapping:
      email: email
      first_name: first_name
    order_by: customer_id
    allowed_rejects: 100";

/// Writes `text` as `p.yaml` in `dir` and returns its name.
pub fn write(dir: &Path, text: &str) -> &'static str {
    std::fs::write(dir.join("p.yaml"), text).unwrap();
    "p.yaml"
}

/// Every contact in the request bodies under `dir`, in order.
pub fn contacts(dir: &Path) -> Vec<Value> {
    bodies(dir)
        .into_iter()
        .flat_map(|b| b["contacts"].as_array().unwrap().clone())
        .collect()
}

/// The request bodies under `dir`, parsed, in file order.
pub fn bodies(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// The emails of `contacts`.
pub fn emails(contacts: &[Value]) -> Vec<String> {
    contacts
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_owned())
        .collect()
}

/// Compares `actual` with the golden file, or rewrites it when UPDATE_GOLDEN is set.
pub fn assert_golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
