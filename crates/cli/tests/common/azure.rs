//! A real Azure Blob Storage server on loopback: Azurite, the emulator Microsoft ships
//! (`.ci/run` installs it with npm and names its `azurite-blob` in `PIPELINE_AZURITE`). It
//! keeps its blobs in memory, listens on a port the system picks and stops when the test
//! drops it. Containers are created with the Python of `PIPELINE_PYTHON`
//! (`azure-storage-blob`), blobs written with object_store.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::azure::MicrosoftAzureBuilder;

/// The account every Azurite serves, and its published key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    rt: tokio::runtime::Runtime,
}

fn azurite() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_AZURITE") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("PIPELINE_REQUIRE_AZURITE").is_some() => {
            panic!(
                "PIPELINE_REQUIRE_AZURITE is set but PIPELINE_AZURITE does not name azurite-blob"
            )
        }
        None => {
            eprintln!(
                "SKIPPED: set PIPELINE_AZURITE to Azurite's azurite-blob (npm install azurite) to read from Azure Blob Storage; .ci/run does"
            );
            None
        }
    }
}

impl Azurite {
    /// Starts a server holding the empty `containers`; `None` when Azurite or the Python
    /// that creates containers is not configured and not required (the test is skipped).
    pub fn start(containers: &[&str]) -> Option<Self> {
        let azurite = azurite()?;
        let python = super::python("`azure-storage-blob` installed")?;
        let mut child = Command::new(azurite)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Azurite starts");
        // "Azurite Blob service successfully listens on http://127.0.0.1:PORT"
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut port = None;
        let mut line = String::new();
        while port.is_none() && out.read_line(&mut line).unwrap() > 0 {
            port = line
                .trim()
                .strip_prefix("Azurite Blob service successfully listens on http://127.0.0.1:")
                .and_then(|p| p.parse().ok());
            line.clear();
        }
        let port = port.expect("Azurite said where it listens");
        // Its later lines are read and dropped, so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let server = Self {
            child,
            port,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={}",
            server.endpoint()
        );
        for container in containers {
            let created = Command::new(&python)
                .args([
                    "-c",
                    "import sys; from azure.storage.blob import BlobServiceClient as B; \
                     B.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
                    &connection,
                    container,
                ])
                .output()
                .expect("Python runs");
            assert!(
                created.status.success(),
                "cannot create container {container} (is azure-storage-blob installed in PIPELINE_PYTHON?): {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        Some(server)
    }

    /// The account's endpoint, path-style as Azurite serves it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// A source's `storage:` map for this server (flow YAML); the key comes from the
    /// environment, as [`Azurite::env`] gives it.
    pub fn storage(&self) -> String {
        format!(
            "{{ account: {ACCOUNT}, endpoint: \"{}\", allow_http: true }}",
            self.endpoint()
        )
    }

    /// The environment a `pipeline` run against this server needs: the account's key.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.into())]
    }

    /// Runs `pipeline` in `dir` with this server's key, the test account's SendGrid key
    /// and `extra`.
    pub fn run(&self, dir: &std::path::Path, args: &[&str], extra: &[(&str, &str)]) -> super::Run {
        super::run_against_store(&self.env(), dir, args, extra)
    }

    fn container(&self, container: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_container_name(container)
                .build()
                .unwrap(),
        )
    }

    pub fn put(&self, container: &str, name: &str, bytes: Vec<u8>) {
        super::put_object(&self.rt, self.container(container).as_ref(), name, bytes);
    }

    /// The blob names in `container` under `prefix`, sorted.
    pub fn names(&self, container: &str, prefix: &str) -> Vec<String> {
        super::names_under(&self.rt, self.container(container).as_ref(), prefix)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
