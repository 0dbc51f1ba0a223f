//! Object stores: S3, Google Cloud Storage and Azure, built from each cloud's standard
//! environment plus a source's non-secret `storage:` settings, and the errors they give
//! turned into messages that say what to do.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use pipeline_spec::{Cloud, Storage};

pub use object_store::path::Path as StorePath;

/// An object store and the URL of its root (`s3://bucket`).
#[derive(Clone)]
pub struct Store {
    pub cloud: Cloud,
    pub root: url::Url,
    pub inner: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root.as_str())
            .finish()
    }
}

/// Builds the store `url` lives in. Fails, before any request, when a cloud's
/// credentials are certainly missing.
pub fn open(cloud: Cloud, url: &url::Url, storage: &Storage) -> Result<Store, String> {
    // A missing bucket or a wrong endpoint must not keep `validate` waiting for minutes.
    let client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120));
    let retry = RetryConfig {
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    };
    let setting = |key: &str| storage.get(key).map(|v| v.as_text());
    let inner: Arc<dyn ObjectStore> = match cloud {
        Cloud::S3 => {
            if setting("skip_signature").as_deref() != Some("true") {
                aws_credentials_present()?;
            }
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in storage {
                let name = match key.as_str() {
                    "region" => "aws_region",
                    "endpoint" => "aws_endpoint",
                    "virtual_hosted_style" => "aws_virtual_hosted_style_request",
                    "skip_signature" => "aws_skip_signature",
                    other => other,
                };
                let key = AmazonS3ConfigKey::from_str(name).map_err(|e| e.to_string())?;
                builder = builder.with_config(key, value.as_text());
            }
            let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
            for (key, value) in proxy_bypass(endpoint.as_deref()) {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            Arc::new(builder.build().map_err(|e| unusable(cloud, url, &e))?)
        }
        Cloud::Gcs => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in storage {
                let name = match key.as_str() {
                    "endpoint" => "google_base_url",
                    "application_credentials" => "google_application_credentials",
                    "skip_signature" => "google_skip_signature",
                    other => other,
                };
                let key = GoogleConfigKey::from_str(name).map_err(|e| e.to_string())?;
                builder = builder.with_config(key, value.as_text());
            }
            let endpoint = builder.get_config_value(&GoogleConfigKey::BaseUrl);
            for (key, value) in proxy_bypass(endpoint.as_deref()) {
                builder = builder.with_config(GoogleConfigKey::Client(key), value);
            }
            Arc::new(builder.build().map_err(|e| unusable(cloud, url, &e))?)
        }
        Cloud::Azure => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in storage {
                let name = match key.as_str() {
                    "account" => "azure_storage_account_name",
                    "endpoint" => "azure_storage_endpoint",
                    "use_emulator" => "azure_storage_use_emulator",
                    "skip_signature" => "azure_skip_signature",
                    other => other,
                };
                let key = AzureConfigKey::from_str(name).map_err(|e| e.to_string())?;
                builder = builder.with_config(key, value.as_text());
            }
            // Azurite, the emulator `use_emulator` names, listens where the client looks
            // for it: `AZURITE_BLOB_STORAGE_URL`, else on this machine.
            let endpoint = match builder.get_config_value(&AzureConfigKey::UseEmulator) {
                Some(on) if on.eq_ignore_ascii_case("true") => Some(
                    std::env::var("AZURITE_BLOB_STORAGE_URL")
                        .unwrap_or_else(|_| "http://127.0.0.1:10000".into()),
                ),
                _ => builder.get_config_value(&AzureConfigKey::Endpoint),
            };
            for (key, value) in proxy_bypass(endpoint.as_deref()) {
                builder = builder.with_config(AzureConfigKey::Client(key), value);
            }
            Arc::new(builder.build().map_err(|e| unusable(cloud, url, &e))?)
        }
    };
    Ok(Store {
        cloud,
        root: root_of(url),
        inner,
    })
}

/// A store on this machine (MinIO, Azurite, moto) is never reached through the
/// environment's proxy (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`), which would carry the
/// requests, and the data in them, off the machine, or fail them. The settings that say
/// so: the proxy named here, which stops the client reading the environment, with the
/// endpoint's host among the hosts it skips (and `NO_PROXY`'s). None for another
/// endpoint, or when the environment names no proxy.
fn proxy_bypass(endpoint: Option<&str>) -> Vec<(ClientConfigKey, String)> {
    let Some(url) = endpoint.and_then(|e| url::Url::parse(e).ok()) else {
        return Vec::new();
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => d.to_owned(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => ip.to_string(),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => ip.to_string(),
        _ => return Vec::new(),
    };
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    // The proxy the environment gives this endpoint's scheme; other hosts the client may
    // call (a cloud's token service) go through it too, unless NO_PROXY names them.
    let proxy = if url.scheme() == "https" {
        var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
    } else {
        var(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
    };
    let Some(proxy) = proxy else {
        return Vec::new();
    };
    let excludes = match var(&["NO_PROXY", "no_proxy"]) {
        Some(listed) => format!("{listed},{host}"),
        None => host,
    };
    vec![
        (ClientConfigKey::ProxyUrl, proxy),
        (ClientConfigKey::ProxyExcludes, excludes),
    ]
}

/// A store the settings and environment do not describe fully.
fn unusable(cloud: Cloud, url: &url::Url, error: &object_store::Error) -> String {
    let text = one_line(&error.to_string());
    let hint = if cloud == Cloud::Azure && text.contains("Account must be specified") {
        ": name the storage account with `storage: { account: NAME }`, AZURE_STORAGE_ACCOUNT_NAME, or an abfss://container@account.dfs.core.windows.net/ URL"
    } else {
        ""
    };
    format!("cannot read {url} from {} ({text}){hint}", cloud.name())
}

/// `s3://bucket/a/b` → `s3://bucket`: the key a session registers a store under.
pub fn root_of(url: &url::Url) -> url::Url {
    let mut root = url.clone();
    root.set_path("");
    root
}

/// The object path a URL names inside its store (percent-decoded, no leading `/`).
pub fn path_in_store(url: &url::Url) -> Result<StorePath, String> {
    StorePath::from_url_path(url.path()).map_err(|e| format!("is not a valid object path ({e})"))
}

/// Registers `store` on the session so its URLs can be scanned.
pub fn register(ctx: &SessionContext, store: &Store) {
    ctx.register_object_store(&store.root, Arc::clone(&store.inner));
}

/// AWS has several credential sources; when none of them is in the environment and
/// the instance metadata service is switched off (`AWS_EC2_METADATA_DISABLED`), the
/// run cannot sign a request, and says so before sending one.
fn aws_credentials_present() -> Result<(), String> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let any = [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|v| set(v));
    let imds_off = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if any || !imds_off {
        return Ok(());
    }
    Err(format!(
        "no AWS credentials: the environment has none, and the instance metadata service is off \
         (AWS_EC2_METADATA_DISABLED). Set {}; for a public bucket, set `storage: {{ skip_signature: true }}`",
        Cloud::S3.credentials_hint()
    ))
}

/// What an object-store error means for the user, with the store's own words after.
pub fn describe(cloud: Cloud, url: &url::Url, error: &object_store::Error) -> String {
    let mut text = error.to_string();
    // "error sending request" says nothing of why; the innermost cause does.
    let cause = innermost_cause(error);
    if !text.contains(&cause) {
        text = format!("{text}: {cause}");
    }
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let what = if matches!(error, object_store::Error::NotFound { .. }) {
        format!("{url} does not exist")
    } else if has(&[
        "NoSuchBucket",
        "ContainerNotFound",
        "The specified bucket does not exist",
    ]) {
        format!(
            "the bucket of {url} does not exist (check its name, and the account the credentials belong to)"
        )
    } else if has(&[
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraint",
        "301 Moved Permanently",
        "wrong region",
    ]) {
        format!(
            "the bucket of {url} is in another region: set `storage: {{ region: ... }}` on the source, or AWS_REGION, to the bucket's region"
        )
    } else if has(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "403 Forbidden",
        "401 Unauthorized",
        "AuthorizationFailure",
        "AuthenticationFailed",
    ]) || matches!(
        error,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        format!(
            "access to {url} was denied: the credentials in the environment ({}) are not valid or may not read it",
            cloud.credentials_hint()
        )
    } else if has(&[
        "instance metadata",
        "credential",
        "Credential",
        "Missing AWS",
        "MissingAccessKey",
    ]) {
        format!(
            "no usable {} credentials: set {}",
            cloud.name(),
            cloud.credentials_hint()
        )
    } else if has(&["URL scheme is not allowed"]) {
        format!(
            "the {} endpoint for {url} is plain http: write it in the source's `storage: {{ endpoint: \"http://...\", allow_http: true }}` (plain http is allowed for an endpoint on this machine only)",
            cloud.name()
        )
    } else if has(&["InvalidContentType"]) {
        format!(
            "the {} endpoint for {url} does not answer in TLS: a server that serves plain HTTP is written `http://` in `storage: {{ endpoint }}`",
            cloud.name()
        )
    } else if has(&["invalid peer certificate"]) {
        format!(
            "the {} endpoint for {url} has a certificate this machine does not trust: check `storage: {{ endpoint }}`, or add the authority that signed the certificate to the system's trust store",
            cloud.name()
        )
    } else if has(&[
        "error sending request",
        "Connection refused",
        "dns error",
        "timed out",
        "connection",
    ]) {
        format!(
            "cannot reach the {} endpoint for {url}: check `storage: {{ endpoint }}` and the network",
            cloud.name()
        )
    } else {
        format!("{} refused a request for {url}", cloud.name())
    };
    format!("{what} ({})", one_line(&text))
}

/// The words of an error's innermost cause, looking inside the `io::Error`s that hide the
/// error they wrap from `source()` (as the TLS connector's do): a request's own message
/// names only its URL.
pub fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(inner) = last
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            last = inner;
        } else if let Some(next) = last.source() {
            last = next;
        } else {
            return last.to_string();
        }
    }
}

fn one_line(text: &str) -> String {
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 600 {
        let cut = (0..=600)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    #[test]
    fn a_bucket_in_another_region_says_which_setting_fixes_it() {
        // What S3 answers a request signed for the wrong region (the moto server used in
        // the tests does not check regions, so the text is S3's own).
        let url = url::Url::parse("s3://lake/profiles/").unwrap();
        let error = generic(
            "Error performing list request: Server returned non-2xx status code: 301 Moved Permanently: \
             <Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>",
        );
        let text = describe(Cloud::S3, &url, &error);
        assert!(
            text.starts_with("the bucket of s3://lake/profiles/ is in another region: set `storage: { region: ... }`"),
            "{text}"
        );
        let unknown = describe(Cloud::Gcs, &url, &generic("something else"));
        assert!(
            unknown.starts_with("Google Cloud Storage refused a request for s3://lake/profiles/ (Generic S3 error: something else)"),
            "{unknown}"
        );
    }

    #[test]
    fn a_certificate_this_machine_does_not_trust_is_said_so() {
        // The words rustls gives, after the client's (the S3 test's server speaks plain
        // HTTP, so the tests there meet the other TLS failure).
        let url = url::Url::parse("s3://lake/profiles/").unwrap();
        let error = generic(
            "Error performing list request: HTTP error: error sending request: invalid peer certificate: UnknownIssuer",
        );
        let text = describe(Cloud::S3, &url, &error);
        assert!(
            text.starts_with("the S3 endpoint for s3://lake/profiles/ has a certificate this machine does not trust: check `storage: { endpoint }`"),
            "{text}"
        );
    }

    #[test]
    fn gcs_and_azure_stores_are_built_from_urls_and_settings() {
        let settings = |pairs: &[(&str, &str)]| -> Storage {
            pairs
                .iter()
                .map(|(k, v)| {
                    let value = match *v {
                        "true" => pipeline_spec::StorageValue::Switch(true),
                        v => pipeline_spec::StorageValue::Text(v.into()),
                    };
                    ((*k).to_owned(), value)
                })
                .collect()
        };
        let gcs = url::Url::parse("gs://profiles-bucket/daily/").unwrap();
        let store = open(
            Cloud::Gcs,
            &gcs,
            &settings(&[
                ("skip_signature", "true"),
                ("endpoint", "http://127.0.0.1:4443"),
            ]),
        )
        .unwrap();
        assert_eq!(store.root.as_str(), "gs://profiles-bucket");
        assert!(
            store.inner.to_string().contains("profiles-bucket"),
            "{}",
            store.inner
        );

        let azure =
            url::Url::parse("abfss://profiles@lakeaccount.dfs.core.windows.net/daily/").unwrap();
        let store = open(
            Cloud::Azure,
            &azure,
            &settings(&[("skip_signature", "true")]),
        )
        .unwrap();
        assert_eq!(
            store.root.as_str(),
            "abfss://profiles@lakeaccount.dfs.core.windows.net"
        );
        assert!(
            store.inner.to_string().contains("profiles"),
            "{}",
            store.inner
        );
        let az = url::Url::parse("az://profiles/daily/").unwrap();
        let store = open(
            Cloud::Azure,
            &az,
            &settings(&[("account", "lakeaccount"), ("skip_signature", "true")]),
        )
        .unwrap();
        assert!(
            store.inner.to_string().contains("lakeaccount"),
            "{}",
            store.inner
        );
        // Without an account, Azure cannot know where the container is.
        let err = open(Cloud::Azure, &az, &settings(&[("skip_signature", "true")])).unwrap_err();
        assert!(
            err.contains("name the storage account with `storage: { account: NAME }`"),
            "{err}"
        );
    }
}
