//! The API key: read from the environment or a secret file, never printed.

use std::fmt;
use std::path::Path;

use crate::error::Diagnostic;
use crate::interpolate::{Substitution, sole_reference};
use crate::model::{Connection, PipelineFile};

/// An API key, held in `secrecy`'s string (wiped from memory when dropped). Its `Debug`
/// and `Display` never show it; the HTTP client takes the inner secret.
#[derive(Clone)]
pub struct ApiKey(secrecy::SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(key.into()))
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl From<ApiKey> for secrecy::SecretString {
    fn from(key: ApiKey) -> Self {
        key.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The places where a `${VAR}` brought a connection's API key into another field: the key
/// may only be the connection's `api_key`, so that it never reaches a message, a file, a
/// request body or SendGrid's contacts. (A key in a secret file is checked when read.)
pub(crate) fn key_leaks(
    file: &PipelineFile,
    substitutions: &[Substitution],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, connection) in &file.connections {
        let Some(var) = connection.api_key.as_deref().and_then(sole_reference) else {
            continue;
        };
        let Some(key) = env(var)
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        for s in substitutions.iter().filter(|s| s.value.contains(&key)) {
            out.push(Diagnostic::new(
                s.path.clone(),
                format!(
                    "`${{{}}}` brings in the API key of connection {name} (from ${{{var}}}): the key may only be a connection's api_key, so that it never reaches a field, a file or SendGrid",
                    s.name
                ),
            ));
        }
    }
    out
}

/// Reads the API key of connection `name`. Errors name the variable or file, never the key.
pub fn resolve_api_key(
    name: &str,
    connection: &Connection,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiKey, String> {
    if let Some(reference) = &connection.api_key {
        let var = sole_reference(reference)
            .ok_or_else(|| format!("connections.{name}.api_key must be written `${{VARIABLE}}`"))?;
        let key = env(var).ok_or_else(|| {
            format!(
                "connections.{name}.api_key: environment variable {var} is not set; export it with the SendGrid API key"
            )
        })?;
        return non_empty(key.trim(), || {
            format!("environment variable {var} is empty")
        });
    }
    if let Some(file) = &connection.api_key_file {
        let path = base_dir.join(file);
        check_private(&path).map_err(|why| format!("connections.{name}.api_key_file: {why}"))?;
        let key = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "connections.{name}.api_key_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        return non_empty(key.trim(), || format!("{} is empty", path.display()));
    }
    Err(format!(
        "connections.{name} has no API key: set api_key: ${{SENDGRID_API_KEY}} or api_key_file"
    ))
}

/// Refuses a key file that others may read or write, as ssh refuses such a private key:
/// a key readable by the group or by everyone is a key already shared.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        // Reading it says what is wrong.
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read or written by others (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), String> {
    Ok(())
}

fn non_empty(key: &str, empty: impl FnOnce() -> String) -> Result<ApiKey, String> {
    if key.is_empty() {
        Err(empty())
    } else {
        Ok(ApiKey::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnectionType;

    fn connection(api_key: Option<&str>, api_key_file: Option<&str>) -> Connection {
        Connection {
            kind: ConnectionType::Sendgrid,
            display_name: None,
            api_key: api_key.map(str::to_owned),
            api_key_file: api_key_file.map(str::to_owned),
            endpoint: None,
            data_privacy_consent: true,
            concurrency: 2,
            request_timeout_secs: 60,
            max_attempts: 6,
            rate_limit_wait_secs: 600,
            allowed_pipelines: None,
            allowed_exports: None,
            defined_in: None,
        }
    }

    #[test]
    fn reads_key_from_environment_and_hides_it() {
        let env = |n: &str| (n == "SG_KEY").then(|| "SG.secret-value\n".to_owned());
        let key = resolve_api_key(
            "m",
            &connection(Some("${SG_KEY}"), None),
            Path::new("."),
            &env,
        )
        .unwrap();
        assert_eq!(key.expose(), "SG.secret-value");
        assert_eq!(format!("{key} {key:?}"), "*** ApiKey(***)");
    }

    #[test]
    fn missing_variable_names_it() {
        let err = resolve_api_key(
            "m",
            &connection(Some("${SG_KEY}"), None),
            Path::new("."),
            &|_| None,
        )
        .unwrap_err();
        assert!(
            err.contains("environment variable SG_KEY is not set"),
            "{err}"
        );
    }

    #[test]
    fn reads_key_from_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "SG.from-file\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = resolve_api_key("m", &connection(None, Some("key")), dir.path(), &|_| None)
                .unwrap_err();
            let shown = path.display();
            assert_eq!(
                err,
                format!(
                    "connections.m.api_key_file: {shown} can be read or written by others (mode 644): run `chmod 600 {shown}`"
                )
            );
            assert!(!err.contains("SG.from-file"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let key =
            resolve_api_key("m", &connection(None, Some("key")), dir.path(), &|_| None).unwrap();
        assert_eq!(key.expose(), "SG.from-file");
    }
}
