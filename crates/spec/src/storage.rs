//! Where data lives: a local path or an object-store URL (`s3://`, `gs://`, `az://`,
//! `abfss://`), and the non-secret settings a `storage:` map may give for a store.
//!
//! Credentials never come from the pipeline file: each cloud's own environment supplies
//! them (for AWS the `AWS_*` variables, web identity or container credentials). A
//! `storage:` key that names a credential is refused here, before anything is read.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::is_loopback_http;

/// An object store a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// Amazon S3, or an S3-compatible server (`endpoint:`).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage and Data Lake Storage Gen2.
    Azure,
}

impl Cloud {
    /// The cloud a URL's scheme names, if it names one.
    pub fn of_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "s3" | "s3a" => Some(Self::S3),
            "gs" => Some(Self::Gcs),
            "az" | "azure" | "abfs" | "abfss" => Some(Self::Azure),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::S3 => "S3",
            Self::Gcs => "Google Cloud Storage",
            Self::Azure => "Azure Blob Storage",
        }
    }

    /// The `storage:` keys this cloud takes.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::S3 => &[
                "region",
                "endpoint",
                "allow_http",
                "virtual_hosted_style",
                "skip_signature",
            ],
            Self::Gcs => &[
                "endpoint",
                "allow_http",
                "application_credentials",
                "skip_signature",
            ],
            Self::Azure => &[
                "account",
                "endpoint",
                "allow_http",
                "use_emulator",
                "skip_signature",
            ],
        }
    }

    /// Where this cloud's credentials come from, for messages.
    pub fn credentials_hint(self) -> &'static str {
        match self {
            Self::S3 => {
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), a web identity \
                 (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), container credentials, or the instance's role"
            }
            Self::Gcs => {
                "GOOGLE_APPLICATION_CREDENTIALS (a service account file) or the instance's service account"
            }
            Self::Azure => {
                "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, a service principal \
                 (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID), a federated token or a managed identity"
            }
        }
    }
}

/// A `storage:` value: a string or a switch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StorageValue {
    Switch(bool),
    Text(String),
}

impl StorageValue {
    /// The value as the object-store configuration takes it.
    pub fn as_text(&self) -> String {
        match self {
            Self::Switch(b) => b.to_string(),
            Self::Text(t) => t.clone(),
        }
    }

    fn is_on(&self) -> bool {
        match self {
            Self::Switch(b) => *b,
            Self::Text(t) => t.eq_ignore_ascii_case("true"),
        }
    }
}

/// Non-secret settings of an object store, by key.
pub type Storage = BTreeMap<String, StorageValue>;

/// Where a path written in the pipeline points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A local file, folder or glob.
    Local,
    /// An object in (or a prefix or glob of) an object store.
    Remote { cloud: Cloud, url: url::Url },
}

/// Reads `path`: a URL with a scheme is an object store, anything else a local path. A
/// scheme no store serves is an error that lists those that are.
pub fn place_of(path: &str) -> Result<Place, String> {
    let Some((scheme, _)) = path.split_once("://") else {
        // `s3:/bucket/key`: one slash short of a store's URL, which would be read as a
        // local folder named `s3:` (and a state kept there, on one machine only).
        if let Some((scheme, rest)) = path.split_once(":/")
            && Cloud::of_scheme(&scheme.to_ascii_lowercase()).is_some()
        {
            return Err(format!(
                "`{scheme}:/` is one slash short of a store's URL: write `{scheme}://{}`",
                rest.trim_start_matches('/')
            ));
        }
        return Ok(Place::Local);
    };
    let scheme = scheme.to_ascii_lowercase();
    let Some(cloud) = Cloud::of_scheme(&scheme) else {
        return Err(format!(
            "`{scheme}://` is not a store pipeline reads: use a local path, s3://, gs://, az:// or abfss://"
        ));
    };
    let url = url::Url::parse(path).map_err(|e| format!("is not a valid URL ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "names no bucket or container: write {scheme}://BUCKET/prefix/"
        ));
    }
    // abfss://container@account.dfs.core.windows.net/ names the container as a user.
    if url.password().is_some() || (!url.username().is_empty() && cloud != Cloud::Azure) {
        return Err(
            "the URL carries a user or password; credentials come from the environment, never the pipeline file"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "the URL has a query or fragment; SAS tokens and other credentials come from the environment".into(),
        );
    }
    Ok(Place::Remote { cloud, url })
}

/// Keys that would put a credential in the pipeline file.
const SECRET_KEYS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "access_key",
    "account_key",
    "sas_key",
    "sas_token",
    "client_secret",
    "service_account_key",
    "password",
];

/// Checks a `storage:` map for a path; returns (key, message) per problem.
pub fn check_storage(path: &str, storage: &Storage) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let cloud = match place_of(path) {
        Ok(Place::Remote { cloud, .. }) => cloud,
        Ok(Place::Local) => {
            if !storage.is_empty() {
                out.push((
                    None,
                    "applies to object-store URLs (s3://, gs://, az://) only; this path is local"
                        .into(),
                ));
            }
            return out;
        }
        // The path's own problem is reported on the path.
        Err(_) => return out,
    };
    for (key, value) in storage {
        let normalised = key.to_ascii_lowercase();
        let bare = normalised
            .trim_start_matches("aws_")
            .trim_start_matches("azure_storage_")
            .trim_start_matches("azure_")
            .trim_start_matches("google_");
        if SECRET_KEYS.contains(&bare) || bare.contains("secret") {
            out.push((
                Some(key.clone()),
                format!(
                    "is a credential, and credentials are never written in the pipeline file: set {} in the environment the run starts in",
                    cloud.credentials_hint()
                ),
            ));
        } else if !cloud.keys().contains(&key.as_str()) {
            out.push((
                Some(key.clone()),
                format!(
                    "is not a {} setting; the keys are: {}",
                    cloud.name(),
                    cloud.keys().join(", ")
                ),
            ));
        } else if matches!(
            key.as_str(),
            "allow_http" | "virtual_hosted_style" | "skip_signature" | "use_emulator"
        ) && !matches!(value, StorageValue::Switch(_))
        {
            out.push((Some(key.clone()), "must be true or false".into()));
        } else if key == "endpoint"
            && let StorageValue::Text(endpoint) = value
            && url::Url::parse(endpoint)
                .map(|u| !matches!(u.scheme(), "http" | "https") || u.host().is_none())
                .unwrap_or(true)
        {
            out.push((
                Some(key.clone()),
                format!(
                    "`{endpoint}` is not an http(s) URL such as https://s3.eu-west-1.amazonaws.com"
                ),
            ));
        }
    }
    // Plain http only to this machine: a store's requests are signed with the
    // credentials, and their bodies are the profiles.
    let endpoint = storage.get("endpoint").map(StorageValue::as_text);
    if storage.get("allow_http").is_some_and(StorageValue::is_on) {
        if !endpoint.as_deref().is_some_and(is_loopback_http) {
            out.push((
                Some("allow_http".into()),
                "is allowed only with an http `endpoint` on this machine (127.0.0.1, ::1 or localhost): profiles and signed requests must not cross a network unencrypted".into(),
            ));
        }
    } else if let Some(endpoint) = endpoint.filter(|e| e.starts_with("http://")) {
        let what = if is_loopback_http(&endpoint) {
            "is plain http: add `allow_http: true` beside it (allowed for an endpoint on this machine only)"
        } else {
            "is plain http to another machine, where profiles and signed requests would cross the network unencrypted: give the server's https address"
        };
        out.push((Some("endpoint".into()), format!("`{endpoint}` {what}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(pairs: &[(&str, StorageValue)]) -> Storage {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn schemes_name_their_cloud_and_local_paths_stay_local() {
        assert_eq!(place_of("data/profiles/").unwrap(), Place::Local);
        assert_eq!(place_of("/abs/x.parquet").unwrap(), Place::Local);
        for (path, cloud) in [
            ("s3://bucket/profiles/", Cloud::S3),
            ("s3a://bucket/p/part-*.parquet", Cloud::S3),
            ("gs://bucket/p/", Cloud::Gcs),
            ("az://container/p/", Cloud::Azure),
            (
                "abfss://container@account.dfs.core.windows.net/p/",
                Cloud::Azure,
            ),
        ] {
            match place_of(path).unwrap() {
                Place::Remote { cloud: c, .. } => assert_eq!(c, cloud, "{path}"),
                Place::Local => panic!("{path} read as local"),
            }
        }
        assert_eq!(
            place_of("s3:/bucket/profiles/").unwrap_err(),
            "`s3:/` is one slash short of a store's URL: write `s3://bucket/profiles/`"
        );
        assert_eq!(place_of("C:/data/profiles").unwrap(), Place::Local);
        let err = place_of("ftp://host/x").unwrap_err();
        assert!(err.contains("s3://, gs://, az://"), "{err}");
        assert!(
            place_of("s3:///profiles")
                .unwrap_err()
                .contains("no bucket")
        );
        assert!(
            place_of("s3://bucket/p?X-Amz-Signature=1")
                .unwrap_err()
                .contains("query")
        );
    }

    #[test]
    fn credentials_and_unknown_keys_are_refused_by_name() {
        let problems = check_storage(
            "s3://bucket/p/",
            &storage(&[
                ("secret_access_key", StorageValue::Text("x".into())),
                ("aws_session_token", StorageValue::Text("x".into())),
                ("regoin", StorageValue::Text("eu-west-1".into())),
                ("region", StorageValue::Text("eu-west-1".into())),
            ]),
        );
        let text: Vec<String> = problems
            .iter()
            .map(|(k, m)| format!("{}: {m}", k.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(problems.len(), 3, "{text:?}");
        assert!(text[0].starts_with("aws_session_token: is a credential"));
        assert!(text[0].contains("AWS_ACCESS_KEY_ID"), "{}", text[0]);
        assert!(text[1].starts_with("regoin: is not a S3 setting; the keys are: region, endpoint"));
        assert!(text[2].starts_with("secret_access_key: is a credential"));
        let azure = check_storage(
            "az://c/p/",
            &storage(&[("account_key", StorageValue::Text("k".into()))]),
        );
        assert!(
            azure[0].1.contains("AZURE_STORAGE_ACCOUNT_KEY"),
            "{azure:?}"
        );
    }

    #[test]
    fn plain_http_is_for_a_loopback_endpoint_only() {
        let on = StorageValue::Switch(true);
        let remote = check_storage(
            "s3://b/p/",
            &storage(&[
                ("allow_http", on.clone()),
                (
                    "endpoint",
                    StorageValue::Text("http://minio.internal:9000".into()),
                ),
            ]),
        );
        assert_eq!(remote.len(), 1);
        assert!(remote[0].1.contains("on this machine"), "{remote:?}");
        let loopback = check_storage(
            "s3://b/p/",
            &storage(&[
                ("allow_http", on),
                (
                    "endpoint",
                    StorageValue::Text("http://127.0.0.1:9000".into()),
                ),
            ]),
        );
        assert!(loopback.is_empty(), "{loopback:?}");
        // Every cloud takes it: a fake GCS server, Azurite.
        for url in ["gs://b/p/", "az://c/p/"] {
            let mut settings = storage(&[
                ("allow_http", StorageValue::Switch(true)),
                (
                    "endpoint",
                    StorageValue::Text("http://127.0.0.1:4443".into()),
                ),
            ]);
            if url.starts_with("az") {
                settings.insert("account".into(), StorageValue::Text("dev".into()));
            }
            let problems = check_storage(url, &settings);
            assert!(problems.is_empty(), "{url}: {problems:?}");
        }
        let endpoint = |url: &str| {
            check_storage(
                "s3://b/p/",
                &storage(&[("endpoint", StorageValue::Text(url.into()))]),
            )
        };
        assert_eq!(
            endpoint("http://127.0.0.1:9000"),
            [(
                Some("endpoint".to_owned()),
                "`http://127.0.0.1:9000` is plain http: add `allow_http: true` beside it (allowed for an endpoint on this machine only)".to_owned()
            )]
        );
        assert_eq!(
            endpoint("http://minio.internal:9000"),
            [(
                Some("endpoint".to_owned()),
                "`http://minio.internal:9000` is plain http to another machine, where profiles and signed requests would cross the network unencrypted: give the server's https address".to_owned()
            )]
        );
        assert!(endpoint("https://minio.internal:9000").is_empty());
        let local = check_storage(
            "data/",
            &storage(&[("region", StorageValue::Text("x".into()))]),
        );
        assert!(local[0].1.contains("object-store URLs"), "{local:?}");
    }
}
