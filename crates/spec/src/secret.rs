//! The API key: read from the environment or a secret file, never printed.

use std::fmt;
use std::path::Path;

use crate::interpolate::sole_reference;
use crate::model::Connection;

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
        std::fs::write(dir.path().join("key"), "SG.from-file\n").unwrap();
        let key =
            resolve_api_key("m", &connection(None, Some("key")), dir.path(), &|_| None).unwrap();
        assert_eq!(key.expose(), "SG.from-file");
    }
}
