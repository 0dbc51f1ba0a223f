//! Cluster mode: a scheduler and two executors started as separate `pipeline cluster`
//! processes on loopback. The same pipeline run locally and on the cluster writes the same
//! request bodies, byte for byte; a lost executor never lets a partial selection through;
//! a scheduler that is not there, another service at its address and a scheduler without
//! executors are clear errors from `validate`, `check` and the run.

#![cfg(feature = "cluster")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::{account, pipeline, sample_dir, write};

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the cluster, its log in a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(args: &[String], env: &[(&str, String)], log: PathBuf) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline"));
        command
            .arg("cluster")
            .args(args)
            .env_remove("SENDGRID_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        Self {
            child: command.spawn().expect("the binary runs"),
            log,
        }
    }

    /// Waits until the process accepts connections on `port`.
    fn wait_for(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the cluster process exited ({status}) before listening on {port}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {port} after 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler and `executors` executors, stopped when dropped.
struct Cluster {
    port: u16,
    scheduler: Process,
    executors: Vec<(Process, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(executors: usize, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut scheduler = Process::start(
            &[
                "scheduler".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
            ],
            env,
            dir.path().join("scheduler.log"),
        );
        scheduler.wait_for(port);
        let mut cluster = Self {
            port,
            scheduler,
            executors: Vec::new(),
            dir,
        };
        for _ in 0..executors {
            cluster.add_executor(env);
        }
        cluster
    }

    /// Starts one more executor, serving the scheduler; its task port (gRPC).
    fn add_executor(&mut self, env: &[(&str, String)]) -> u16 {
        let (flight, grpc) = (free_port(), free_port());
        let i = self.executors.len();
        let work = self.dir.path().join(format!("executor-{i}"));
        let mut executor = Process::start(
            &[
                "executor".into(),
                "--scheduler".into(),
                format!("127.0.0.1:{}", self.port),
                "--port".into(),
                flight.to_string(),
                "--grpc-port".into(),
                grpc.to_string(),
                "--concurrent-tasks".into(),
                "2".into(),
                "--work-dir".into(),
                work.display().to_string(),
            ],
            env,
            self.dir.path().join(format!("executor-{i}.log")),
        );
        executor.wait_for(flight);
        executor.wait_for(grpc);
        self.executors.push((executor, work));
        grpc
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// How many executors have run a task (each task writes its output under its
    /// executor's work folder).
    fn executors_used(&self) -> usize {
        self.executors
            .iter()
            .filter(|(_, work)| std::fs::read_dir(work).is_ok_and(|mut d| d.next().is_some()))
            .count()
    }

    /// Every process's log, for a failed assertion.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                out.push_str(&format!("--- {}\n", path.display()));
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (executor, _) in &mut self.executors {
            executor.kill();
        }
        self.scheduler.kill();
    }
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// `text` with the selection sent to `cluster`.
fn on_cluster(text: &str, cluster: &str) -> String {
    format!("{text}\nengine:\n  cluster: {cluster}\n")
}

/// The arguments of a dry run of `file` into `out`, with its rejects under `out/rejects`.
fn dry_run_args(file: &str, out: &str) -> Vec<String> {
    ["run", file, "--dry-run", out, "--rejects-dir"]
        .map(String::from)
        .into_iter()
        .chain([format!("{out}/rejects"), "--output".into(), "json".into()])
        .collect()
}

/// Runs `file` (in `dir`) as a dry run into `out` ([`dry_run_args`]).
fn dry_run(dir: &Path, file: &str, out: &str) -> common::Run {
    let args = dry_run_args(file, out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pipeline(dir, &args, &[("SENDGRID_API_KEY", account::KEY)])
}

/// The summary of a run without what differs between any two runs (times, paths).
fn counts(run: &common::Run) -> serde_json::Value {
    let mut json = run.json();
    for export in json["exports"].as_array_mut().unwrap() {
        let export = export.as_object_mut().unwrap();
        export.retain(|k, _| {
            ["contacts", "segments", "rejected", "cap", "export"].contains(&k.as_str())
        });
    }
    json["exports"].clone()
}

fn assert_same_run(
    dir: &Path,
    local: &str,
    cluster: &str,
    local_run: &common::Run,
    run: &common::Run,
) {
    let (local_files, cluster_files) = (files(&dir.join(local)), files(&dir.join(cluster)));
    assert!(
        local_files.keys().any(|k| k.ends_with(".json")),
        "the local run wrote no bodies: {local_files:?}"
    );
    assert_eq!(
        local_files.keys().collect::<Vec<_>>(),
        cluster_files.keys().collect::<Vec<_>>(),
        "the cluster run wrote other files"
    );
    for (name, bytes) in &local_files {
        assert!(
            cluster_files[name] == *bytes,
            "{name} differs between the local and the cluster run"
        );
    }
    assert_eq!(counts(local_run), counts(run));
}

/// The record batches of the Parquet file at `path`.
fn read_batches(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Runs pipeline `text` dry on a new cluster of two executors into `cluster` in `dir`:
/// it succeeds, an executor ran a task, and it writes what `local` (its dry run into
/// `local`) wrote. The cluster stays up for the caller.
fn assert_cluster_run_is_local(dir: &Path, text: &str, local: &common::Run) -> Cluster {
    let cluster = Cluster::start(2, &[]);
    let file = write(dir, &on_cluster(text, &cluster.url()));
    let run = dry_run(dir, file, "cluster");
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, cluster.logs());
    assert!(cluster.executors_used() >= 1, "no executor ran a task");
    assert_same_run(dir, "local", "cluster", local, &run);
    cluster
}

/// The quickstart's text.
fn quickstart() -> String {
    std::fs::read_to_string(common::repo().join("pipelines/quickstart.yaml")).unwrap()
}

/// The quickstart's text, and its dry run into `local` in `dir` (a [`sample_dir`]).
fn quickstart_locally(dir: &Path) -> (String, common::Run) {
    let quickstart = quickstart();
    std::fs::write(dir.join("local.yaml"), &quickstart).unwrap();
    let local = dry_run(dir, "local.yaml", "local");
    assert_eq!(local.code, 0, "{}", local.stderr);
    (quickstart, local)
}

/// The quickstart, locally and on the cluster: the same bodies and rejects, byte for byte.
#[test]
fn the_quickstart_sends_the_same_bodies_from_a_cluster() {
    let dir = sample_dir();
    let (quickstart, local) = quickstart_locally(dir.path());
    let cluster = assert_cluster_run_is_local(dir.path(), &quickstart, &local);
    // The executors' task outputs hold the selected rows: their folders are owner-only.
    for (_, work) in &cluster.executors {
        assert_eq!(common::mode(work), 0o700, "{}", work.display());
    }

    // A subquery that selects nothing once planned, inside a query that reads tables: the
    // cluster cannot be sent it, and the run says so.
    let high_value = "SELECT * FROM profiles WHERE lifetime_value > 5000 AND is_subscribed";
    assert!(quickstart.contains(high_value));
    let or_nothing = quickstart.replace(
        high_value,
        "SELECT * FROM profiles WHERE (lifetime_value > 5000 AND is_subscribed) OR customer_id IN (SELECT customer_id FROM memberships WHERE false)",
    );
    let file = write(dir.path(), &on_cluster(&or_nothing, &cluster.url()));
    let run = dry_run(dir.path(), file, "nothing-cluster");
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "part of this query selects no rows once planned (a condition that is always false"
        ) && run
            .stderr
            .contains("run this pipeline without `engine.cluster`"),
        "{}",
        run.stderr
    );
}

/// The quickstart with its profiles' text columns stored as bytes (as Impala writes them)
/// and `binary_as_string: true`: on the cluster, its bodies are those of the text table run
/// locally.
#[test]
fn byte_columns_read_as_text_on_a_cluster() {
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    let dir = sample_dir();
    let (quickstart, local) = quickstart_locally(dir.path());

    let path = dir.path().join("data/profiles.parquet");
    let batches = read_batches(&path);
    let text = batches[0].schema();
    let bytes = std::sync::Arc::new(Schema::new(
        text.fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Field::new(f.name(), DataType::Binary, f.is_nullable()),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), bytes.clone(), None).unwrap();
    for batch in &batches {
        let columns = batch
            .columns()
            .iter()
            .zip(bytes.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
            .collect();
        writer
            .write(&arrow::record_batch::RecordBatch::try_new(bytes.clone(), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();

    let as_text = quickstart.replace(
        "path: data/profiles.parquet }",
        "path: data/profiles.parquet, binary_as_string: true }",
    );
    assert_ne!(as_text, quickstart);
    assert_cluster_run_is_local(dir.path(), &as_text, &local);
}

/// The quickstart with its memberships written as Spark's `partitionBy("segment_name")`
/// writes them (the name in the folders, not in the files): on the cluster, its bodies are
/// those of the single file run locally.
#[test]
fn partition_folders_read_their_keys_on_a_cluster() {
    use arrow::array::{AsArray, BooleanArray};
    use arrow::compute::filter_record_batch;
    use parquet::arrow::ArrowWriter;

    let dir = sample_dir();
    let (quickstart, local) = quickstart_locally(dir.path());

    let path = dir.path().join("data/segment_memberships.parquet");
    let batches = read_batches(&path);
    for batch in &batches {
        let names = batch.column(1).as_string::<i32>();
        let distinct: std::collections::BTreeSet<&str> = names.iter().flatten().collect();
        for name in distinct {
            let keep: BooleanArray = names.iter().map(|n| Some(n == Some(name))).collect();
            let rows = filter_record_batch(batch, &keep)
                .unwrap()
                .project(&[0])
                .unwrap();
            let folder = dir
                .path()
                .join(format!("data/memberships/segment_name={name}"));
            std::fs::create_dir_all(&folder).unwrap();
            let file =
                std::fs::File::create(folder.join(format!("part-{}.parquet", rows.num_rows())))
                    .unwrap();
            let mut writer = ArrowWriter::try_new(file, rows.schema(), None).unwrap();
            writer.write(&rows).unwrap();
            writer.close().unwrap();
        }
    }

    let partitioned = quickstart.replace(
        "path: data/segment_memberships.parquet",
        "path: data/memberships",
    );
    assert_ne!(partitioned, quickstart);
    assert_cluster_run_is_local(dir.path(), &partitioned, &local);
}

/// A generated table of a million rows in eight files, with a membership join and a filter
/// segment: the cluster's executors share the scan, and the bodies are the local run's.
/// Then an executor is killed while the next query runs: the run either finishes on the
/// other executor with the same bodies, or fails saying so, having sent nothing.
#[test]
fn a_million_row_export_matches_and_survives_a_lost_executor() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_datagen::write_profiles(&pipeline_datagen::Profiles {
        rows: 1_000_000,
        out: dir.path().join("data"),
        files: 8,
        member_share: 0.02,
        seed: 7,
    })
    .unwrap();
    let text = common::pipeline_yaml(common::SEGMENTS, common::EXPORT)
        .replace("data/profiles.parquet", "data/profiles/")
        .replace(
            "allowed_rejects: 100",
            "allowed_rejects: 100000\n    on_cap_exceeded: truncate",
        );
    std::fs::write(dir.path().join("local.yaml"), &text).unwrap();
    let local = dry_run(dir.path(), "local.yaml", "local");
    assert_eq!(local.code, 0, "{}", local.stderr);
    assert!(local.json()["exports"][0]["contacts"].as_u64().unwrap() > 10_000);

    let mut cluster = Cluster::start(2, &[]);
    let file = write(dir.path(), &on_cluster(&text, &cluster.url()));
    let run = dry_run(dir.path(), file, "cluster");
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, cluster.logs());
    assert_eq!(cluster.executors_used(), 2, "the scan was not shared");
    assert_same_run(dir.path(), "local", "cluster", &local, &run);

    // The next run's query: kill the first executor as soon as it has taken a task.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(dry_run_args(file, "lost"))
        .current_dir(dir.path())
        .env("SENDGRID_API_KEY", account::KEY)
        .env("PIPELINE_CONNECTIONS", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (executor, work) = &mut cluster.executors[0];
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&*work).map_or(0, |d| d.count()) <= 1 {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    executor.kill();
    let lost: common::Run = child.wait_with_output().unwrap().into();
    eprintln!(
        "with an executor lost, the run {}",
        if lost.code == 0 {
            "finished on the other"
        } else {
            "failed"
        }
    );
    if lost.code == 0 {
        assert_same_run(dir.path(), "local", "lost", &local, &lost);
    } else {
        assert!(
            lost.stderr.contains("the selection on the cluster")
                && lost.stderr.contains("no contact was sent"),
            "{}",
            lost.stderr
        );
        let written = files(&dir.path().join("lost"));
        assert!(
            !written.keys().any(|k| k.ends_with(".json")),
            "a failed run wrote bodies: {:?}",
            written.keys()
        );
    }
}

/// A scheduler that is not there: `validate` and `check` say so, with the address, and
/// the run does not start.
#[test]
fn a_scheduler_that_is_not_there_is_named_by_validate_and_check() {
    let dir = sample_dir();
    let port = free_port();
    let quickstart = quickstart();
    let file = write(
        dir.path(),
        &on_cluster(&quickstart, &format!("df://127.0.0.1:{port}")),
    );
    for command in ["validate", "check"] {
        let run = pipeline(
            dir.path(),
            &[command, file],
            &[("SENDGRID_API_KEY", account::KEY)],
        );
        // The outside world's failure: exit 4, as for SendGrid unreachable.
        assert_eq!(run.code, 4, "{command}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "engine.cluster (`df://127.0.0.1:{port}`): no scheduler answers at 127.0.0.1:{port}"
            )),
            "{command}: {}",
            run.stderr
        );
    }
    let run = pipeline(
        dir.path(),
        &[
            "validate",
            write(
                dir.path(),
                &on_cluster(&quickstart, "http://localhost:50050"),
            ),
        ],
        &[("SENDGRID_API_KEY", account::KEY)],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("engine.cluster: `http://localhost:50050` has scheme `http`; write the scheduler as `df://HOST:PORT`"),
        "{}",
        run.stderr
    );
    // Another service at the address, and a scheduler of another Ballista major version.
    let cases = [
        (
            "HTTP/1.1 404 Not Found\r\nserver: nginx\r\ncontent-length: 0\r\n\r\n",
            " is not a Ballista scheduler (it answered HTTP 404, server `nginx`); point \
             `engine.cluster` at the scheduler's `--bind` address, not at an executor's port or \
             another service",
        ),
        (
            "HTTP/1.1 200 OK\r\nserver: ballista/54.0.0\r\ncontent-length: 0\r\n\r\n",
            ": Ballista client 55.0.0 cannot be used with scheduler 54.0.0. The client and the \
             scheduler must have the same major version. Run the scheduler and executors from \
             this pipeline's binary",
        ),
    ];
    for (response, says) in cases {
        let port = answering(response);
        let file = write(
            dir.path(),
            &on_cluster(&quickstart, &format!("df://127.0.0.1:{port}")),
        );
        let run = pipeline(
            dir.path(),
            &["validate", file],
            &[("SENDGRID_API_KEY", account::KEY)],
        );
        assert_eq!(run.code, 4, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("at 127.0.0.1:{port}{says}")),
            "{}",
            run.stderr
        );
    }
}

/// A server on a new port that answers every request with `response` (an HTTP/1.1
/// message), until the tests end.
fn answering(response: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// A scheduler without executors: Ballista would hold the query until one registers,
/// for ever. The run and `check` wait for one, then stop (exit 4) and say so; an
/// executor's port is not taken for the scheduler's; once an executor has registered, the
/// pipeline validates.
#[test]
fn a_scheduler_without_executors_stops_the_run_and_says_so() {
    let mut cluster = Cluster::start(0, &[]);
    let dir = sample_dir();
    let quickstart = quickstart();
    let file = write(dir.path(), &on_cluster(&quickstart, &cluster.url()));
    let address = format!("127.0.0.1:{}", cluster.port);
    let (run, check) = std::thread::scope(|s| {
        let run = s.spawn(|| dry_run(dir.path(), file, "out"));
        let check = s.spawn(|| {
            pipeline(
                dir.path(),
                &["check", file],
                &[("SENDGRID_API_KEY", account::KEY)],
            )
        });
        (run.join().unwrap(), check.join().unwrap())
    });
    for (command, run) in [("run", &run), ("check", &check)] {
        assert_eq!(run.code, 4, "{command}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "engine.cluster (`df://{address}`): the scheduler at {address} has no executor \
                 (not ready: 0/1 executors registered) after 30 s; start one with `pipeline \
                 cluster executor --scheduler {address}`"
            )),
            "{command}: {}",
            run.stderr
        );
    }
    assert!(!dir.path().join("out").exists(), "the run wrote bodies");

    let grpc = cluster.add_executor(&[]);
    std::fs::write(
        dir.path().join("executor.yaml"),
        on_cluster(&quickstart, &format!("df://127.0.0.1:{grpc}")),
    )
    .unwrap();
    let run = pipeline(
        dir.path(),
        &["validate", "executor.yaml"],
        &[("SENDGRID_API_KEY", account::KEY)],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "something at 127.0.0.1:{grpc} accepts connections but does not answer as a \
             scheduler does"
        )),
        "{}",
        run.stderr
    );
    let run = pipeline(
        dir.path(),
        &["validate", file],
        &[("SENDGRID_API_KEY", account::KEY)],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, cluster.logs());
}

/// Sources in S3: the executors and the scheduler open the bucket from the pipeline's
/// `storage:` settings, with credentials from their own environment.
#[test]
fn executors_read_s3_sources_with_the_pipelines_settings() {
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    let sample = sample_dir();
    server.put_dir("lake", "crm", &sample.path().join("data"));
    let quickstart = quickstart();
    let storage = server.storage();
    let text = quickstart
        .replace(
            "path: data/profiles.parquet }",
            &format!("path: s3://lake/crm/profiles.parquet, storage: {storage} }}"),
        )
        .replace(
            "path: data/segment_memberships.parquet }",
            &format!("path: s3://lake/crm/segment_memberships.parquet, storage: {storage} }}"),
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.yaml"), &text).unwrap();
    let env: Vec<(&str, String)> = server.env();
    let with_env = |file: &str, out: &str| {
        let args = dry_run_args(file, out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.run(dir.path(), &args, &[])
    };
    let local = with_env("local.yaml", "local");
    assert_eq!(local.code, 0, "{}", local.stderr);

    let cluster = Cluster::start(2, &env);
    let file = write(dir.path(), &on_cluster(&text, &cluster.url()));
    let run = with_env(file, "cluster");
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, cluster.logs());
    assert!(cluster.executors_used() >= 1, "no executor ran a task");
    assert_same_run(dir.path(), "local", "cluster", &local, &run);
}

/// A Delta table on the cluster: `pipeline run` reads its log and sends the cluster the
/// files of the version read. At the latest version (after a delete that rewrote files),
/// at a pinned one, from S3, and partitioned (the partition values come from the log),
/// the bodies are those of the local run, byte for byte.
#[test]
fn a_delta_table_sends_the_same_bodies_from_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    if account::write_delta_table(dir.path(), None).is_none() {
        return;
    }
    account::write_delta_table(&dir.path().join("by-city"), Some("city")).unwrap();
    let Some(server) = S3Server::start(&["lake"], &[]) else {
        return;
    };
    server.put_dir("lake", "tables/profiles", &dir.path().join("table"));
    let in_s3 = format!(
        "{{ format: delta, path: \"s3://lake/tables/profiles\", storage: {} }}",
        server.storage()
    );
    let cluster = Cluster::start(2, &server.env());
    // Dry runs of `text` here and on the cluster, into `{case}-local` and `{case}-cluster`.
    let both_ways = |case: &str, text: &str| {
        std::fs::write(dir.path().join("local.yaml"), text).unwrap();
        let file = write(dir.path(), &on_cluster(text, &cluster.url()));
        [("local.yaml", "local"), (file, "cluster")].map(|(file, out)| {
            let args = dry_run_args(file, &format!("{case}-{out}"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = server.run(dir.path(), &args, &[]);
            assert_eq!(
                run.code,
                0,
                "{case} {out}: {}\n{}",
                run.stderr,
                cluster.logs()
            );
            run
        })
    };
    for (case, source) in [
        ("latest", "{ format: delta, path: table }"),
        ("pinned", "{ format: delta, path: table, version: 0 }"),
        ("s3", in_s3.as_str()),
        ("partitioned", "{ format: delta, path: by-city/table }"),
    ] {
        let mut text = account::delta_yaml(source);
        if case == "partitioned" {
            // The partition column mapped, and filtered on.
            text = text
                .replace(
                    "WHERE is_subscribed",
                    "WHERE is_subscribed AND city <> 'City3'",
                )
                .replace(
                    "first_name: first_name",
                    "first_name: first_name\n      city: city",
                );
        }
        let [local, run] = both_ways(case, &text);
        let (local_out, cluster_out) = (format!("{case}-local"), format!("{case}-cluster"));
        assert_same_run(dir.path(), &local_out, &cluster_out, &local, &run);
    }
    assert!(cluster.executors_used() >= 1, "no executor ran a task");

    // Queries that select nothing once planned: a filter on the partition column that no
    // partition has, then every row deleted (the latest version holds no file). Both run
    // on the cluster as here, with no contact.
    let partitioned = account::delta_yaml("{ format: delta, path: by-city/table }");
    let nowhere = partitioned.replace(
        "WHERE is_subscribed",
        "WHERE is_subscribed AND city = 'Nowhere'",
    );
    let selects_nothing = |case: &str, text: &str| {
        let summaries = both_ways(case, text).map(|run| counts(&run));
        assert_eq!(summaries[0], summaries[1], "{case}");
        assert_eq!(summaries[0][0]["contacts"], 0, "{case}: {}", summaries[0]);
    };
    selects_nothing("nowhere", &nowhere);
    let deleted = Command::new(common::python("`deltalake` installed").unwrap())
        .args([
            "-c",
            "import sys; from deltalake import DeltaTable; DeltaTable(sys.argv[1]).delete()",
        ])
        .arg(dir.path().join("by-city/table"))
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
    selects_nothing("emptied", &partitioned);
}
