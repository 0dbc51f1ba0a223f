//! A real S3 server on loopback: moto's, run by the Python of `PIPELINE_PYTHON`
//! (`.ci/run` installs `moto[server]` there). It listens on a port the system picks and
//! stops when the test drops it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::repo;

pub struct S3Server {
    child: Child,
    pub port: u16,
    rt: tokio::runtime::Runtime,
}

impl S3Server {
    /// Starts a server with `buckets`, and `env` for the server process (moto reads its
    /// settings from there). `None` when no Python with moto is configured and none is
    /// required (the test then says it was skipped).
    pub fn start(buckets: &[&str], env: &[(&str, &str)]) -> Option<Self> {
        let python = super::python("`moto[server]` and `deltalake` installed")?;
        let mut command = Command::new(python);
        command
            .arg(repo().join("crates/cli/tests/support/s3_server.py"))
            .args(buckets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("Python starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the S3 server did not start (is moto[server] installed in PIPELINE_PYTHON?): {line:?}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Self { child, port, rt })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A source's `storage:` map pointing at this server (flow YAML).
    pub fn storage(&self) -> String {
        format!("{{ endpoint: \"{}\", allow_http: true }}", self.endpoint())
    }

    /// The environment a `pipeline` run against this server needs: credentials the
    /// server accepts, and no instance metadata lookups.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs `pipeline` in `dir` with this server's credentials, the test account's key
    /// and `extra`.
    pub fn run(&self, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> super::Run {
        super::run_against_store(&self.env(), dir, args, extra)
    }

    pub fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .unwrap(),
        )
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        super::put_object(&self.rt, self.bucket(bucket).as_ref(), key, bytes);
    }

    /// Uploads every file under `dir` to `bucket` under `prefix`.
    pub fn put_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let key = format!("{prefix}/{name}");
            if path.is_dir() {
                self.put_dir(bucket, &key, &path);
            } else {
                self.put(bucket, &key, std::fs::read(&path).unwrap());
            }
        }
    }

    /// The keys in `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        super::names_under(&self.rt, self.bucket(bucket).as_ref(), prefix)
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let store = self.bucket(bucket);
        self.rt.block_on(async {
            match store.get(&StorePath::from(key)).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("{e}"),
            }
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Closing its standard input stops the server; a kill makes sure.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
