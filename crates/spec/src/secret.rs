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
        return checked_key(
            &key,
            &format!("connections.{name}.api_key: environment variable {var}"),
        );
    }
    if let Some(file) = &connection.api_key_file {
        let path = base_dir.join(file);
        check_private(&path).map_err(|why| format!("connections.{name}.api_key_file: {why}"))?;
        let key = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "connections.{name}.api_key_file: {} does not exist{}",
                path.display(),
                crate::missing(&path)
            ),
            _ => format!(
                "connections.{name}.api_key_file: cannot read {}: {e}",
                path.display()
            ),
        })?;
        return checked_key(
            &key,
            &format!("connections.{name}.api_key_file: {}", path.display()),
        );
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

/// The key `source` (a variable or a file) holds, without the blanks around it (and an
/// editor's byte-order mark). What no key has (quotes, a `Bearer `, a `NAME=`, a space or
/// a line break inside, a character that is not printable ASCII) is refused, said without
/// the key: sent as it is, SendGrid would only answer 401, or the header could not be
/// sent at all.
fn checked_key(raw: &str, source: &str) -> Result<ApiKey, String> {
    let key = raw.trim_start_matches('\u{feff}').trim();
    let quoted = |q: char| key.len() >= 2 && key.starts_with(q) && key.ends_with(q);
    let named = key.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    let problem = if key.is_empty() {
        return Err(format!("{source} is empty"));
    } else if quoted('"') || quoted('\'') {
        "the key in quotes: remove them (where it was set, the quotes became part of the value, as docker's --env-file keeps them)"
    } else if key
        .get(..7)
        .is_some_and(|b| b.eq_ignore_ascii_case("bearer "))
    {
        "`Bearer ` before the key: give the key alone (the request's `Bearer` is added for it)"
    } else if named {
        "`NAME=` before the key: give the key alone"
    } else if key.contains(char::is_whitespace) {
        "more than the key (a space or a line break inside it): give the key alone, on one line"
    } else if !key.chars().all(|c| c.is_ascii_graphic()) {
        "a character that is not printable ASCII, which no API key has (pasted from a document?): give the key alone"
    } else {
        return Ok(ApiKey::new(key));
    };
    Err(format!("{source} holds {problem}"))
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
            err.contains("connections.m.api_key: environment variable SG_KEY is not set"),
            "{err}"
        );
    }

    #[test]
    fn a_key_with_what_no_key_has_is_refused_without_showing_it() {
        let read = |value: &str| {
            let value = value.to_owned();
            resolve_api_key(
                "m",
                &connection(Some("${SG_KEY}"), None),
                Path::new("."),
                &move |_| Some(value.clone()),
            )
        };
        let refused = |value: &str| {
            let err = read(value).unwrap_err();
            assert!(!err.contains("SG.abc"), "the key is shown: {err}");
            err
        };
        assert_eq!(
            refused("\"SG.abc.def\"\n"),
            "connections.m.api_key: environment variable SG_KEY holds the key in quotes: remove them (where it was set, the quotes became part of the value, as docker's --env-file keeps them)"
        );
        assert_eq!(refused("'SG.abc.def'"), refused("\"SG.abc.def\""));
        assert_eq!(
            refused("Bearer SG.abc.def"),
            "connections.m.api_key: environment variable SG_KEY holds `Bearer ` before the key: give the key alone (the request's `Bearer` is added for it)"
        );
        assert_eq!(
            refused("SENDGRID_API_KEY=SG.abc.def"),
            "connections.m.api_key: environment variable SG_KEY holds `NAME=` before the key: give the key alone"
        );
        assert_eq!(
            refused("SG.abc.def\nSG.abc.other\n"),
            "connections.m.api_key: environment variable SG_KEY holds more than the key (a space or a line break inside it): give the key alone, on one line"
        );
        assert_eq!(
            refused("SG.abc\u{200b}.def"),
            "connections.m.api_key: environment variable SG_KEY holds a character that is not printable ASCII, which no API key has (pasted from a document?): give the key alone"
        );
        assert_eq!(
            refused(" \n"),
            "connections.m.api_key: environment variable SG_KEY is empty"
        );
        // Blanks around the key and an editor's byte-order mark are not part of it; nor is
        // a `=` after other text (base64 padding, say).
        assert_eq!(
            read("\u{feff}SG.abc.def\r\n").unwrap().expose(),
            "SG.abc.def"
        );
        assert_eq!(read("c2VjcmV0=").unwrap().expose(), "c2VjcmV0=");
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
