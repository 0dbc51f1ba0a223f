//! Pure checks of a parsed pipeline file: references, names, ids, limits.
//!
//! No file, network or credential is touched; SQL is checked later against the sources.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Diagnostic;
use crate::interpolate::{is_var_name, sole_reference};
use crate::model::{ExportMode, Identifier, PipelineFile, SourceFormat};

/// Every problem found, in file order.
pub(crate) fn validate(file: &PipelineFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut err = |path: String, message: String| out.push(Diagnostic::new(path, message));

    if file.version != 1 {
        err(
            "version".into(),
            format!(
                "version {} is not supported; write `version: 1`",
                file.version
            ),
        );
    }
    // Every number is bounded to what makes sense, so that no computation on it can
    // overflow or wrap.
    if !(16..=1_048_576).contains(&file.engine.memory_limit_mib) {
        err(
            "engine.memory_limit_mib".into(),
            "must be between 16 and 1048576 (MiB, that is 1 TiB)".into(),
        );
    }
    if !(1..=1_048_576).contains(&file.engine.batch_size) {
        err(
            "engine.batch_size".into(),
            "must be between 1 and 1048576 rows".into(),
        );
    }

    if let Some(partitions) = file.engine.partitions
        && !(1..=1024).contains(&partitions)
    {
        err(
            "engine.partitions".into(),
            "must be between 1 and 1024 (leave it out for one per core)".into(),
        );
    }

    if let Some(cluster) = &file.engine.cluster
        && let Err(message) = cluster_address(cluster)
    {
        err("engine.cluster".into(), message);
    }

    if file.connections.is_empty() {
        err(
            "connections".into(),
            "declare at least one connection, here or in a connections file (--connections, PIPELINE_CONNECTIONS)".into(),
        );
    }
    for (name, c) in &file.connections {
        let at = |field: &str| format!("connections.{name}.{field}");
        match (&c.api_key, &c.api_key_file) {
            (Some(_), Some(_)) => err(
                at("api_key"),
                "set either api_key or api_key_file, not both".into(),
            ),
            (None, None) => err(
                format!("connections.{name}"),
                "no API key: write `api_key: ${SENDGRID_API_KEY}` (an environment variable) or `api_key_file: path/to/secret`".into(),
            ),
            // A shell's `$NAME`: a reference to a variable, not a key (echoing it is safe).
            (Some(key), None) if key.strip_prefix('$').is_some_and(is_var_name) => {
                err(
                    at("api_key"),
                    format!(
                        "`{key}` is not replaced: the file replaces `${{NAME}}` only; write `api_key: ${{{}}}`",
                        &key[1..]
                    ),
                )
            }
            (Some(key), None) if sole_reference(key).is_none() => err(
                at("api_key"),
                "a literal API key in the pipeline file is refused: the file ends up in version control and logs. \
                 Put the key in an environment variable and write `api_key: ${SENDGRID_API_KEY}`, or use `api_key_file`"
                    .into(),
            ),
            _ => {}
        }
        if !c.data_privacy_consent {
            err(
                at("data_privacy_consent"),
                "must be `true`: an export sends personal data (emails, names, addresses) to SendGrid, outside your \
                 organisation's compliance boundary. Set `data_privacy_consent: true` once you have confirmed that this is allowed"
                    .into(),
            );
        }
        if !(1..=16).contains(&c.concurrency) {
            err(at("concurrency"), "must be between 1 and 16".into());
        }
        if !(1..=3_600).contains(&c.request_timeout_secs) {
            err(
                at("request_timeout_secs"),
                "must be between 1 and 3600 (an hour)".into(),
            );
        }
        if !(1..=100).contains(&c.max_attempts) {
            err(at("max_attempts"), "must be between 1 and 100".into());
        }
        if !(1..=86_400).contains(&c.rate_limit_wait_secs) {
            err(
                at("rate_limit_wait_secs"),
                "must be between 1 and 86400 (a day)".into(),
            );
        }
        if let Some(Err(message)) = c.endpoint.as_deref().map(check_endpoint) {
            err(at("endpoint"), message);
        }
    }

    if let Some(state_dir) = &file.state_dir {
        match crate::place_of(state_dir) {
            Err(message) => err("state_dir".into(), message),
            // The state would go to a folder of that name beside the file.
            Ok(crate::Place::Local) => {
                if let Some(advice) = crate::unexpanded(std::path::Path::new(state_dir)) {
                    err("state_dir".into(), advice);
                }
            }
            Ok(_) => {}
        }
        for (key, message) in crate::check_storage(state_dir, &file.state_storage) {
            let at = key.map_or_else(|| "state_storage".into(), |k| format!("state_storage.{k}"));
            err(at, message);
        }
    } else if !file.state_storage.is_empty() {
        err(
            "state_storage".into(),
            "applies to a `state_dir` in an object store; set `state_dir: s3://bucket/prefix/` or remove it".into(),
        );
    }
    if !(5..=3_600).contains(&file.state_lease_secs) {
        err(
            "state_lease_secs".into(),
            "must be between 5 and 3600 seconds".into(),
        );
    }

    if file.sources.is_empty() {
        err("sources".into(), "declare at least one source".into());
    }
    for (name, source) in &file.sources {
        if let Err(m) = check_identifier(name) {
            err(format!("sources.{name}"), format!("source name {m}"));
        }
        if source.path.trim().is_empty() {
            err(
                format!("sources.{name}.path"),
                "is empty; give a Parquet file, folder or glob".into(),
            );
        }
        if let Err(message) = crate::place_of(&source.path) {
            err(format!("sources.{name}.path"), message);
        }
        for (key, message) in crate::check_storage(&source.path, &source.storage) {
            let at = match key {
                Some(key) => format!("sources.{name}.storage.{key}"),
                None => format!("sources.{name}.storage"),
            };
            err(at, message);
        }
        match source.format {
            SourceFormat::Parquet if source.version.is_some() => err(
                format!("sources.{name}.version"),
                "applies to Delta tables only; write `format: delta` or remove `version`".into(),
            ),
            SourceFormat::Delta if source.binary_as_string => err(
                format!("sources.{name}.binary_as_string"),
                "applies to Parquet files only; a Delta table's schema already says which columns are strings".into(),
            ),
            SourceFormat::Delta if source.path.contains(['*', '?', '[']) => err(
                format!("sources.{name}.path"),
                "a Delta table is a folder (the one holding `_delta_log/`), not a glob".into(),
            ),
            _ => {}
        }
    }

    for (name, sql) in &file.segments {
        if let Err(m) = check_identifier(name) {
            err(format!("segments.{name}"), format!("segment name {m}"));
        }
        if file.sources.contains_key(name) {
            err(
                format!("segments.{name}"),
                "has the name of a source; give the segment another name".into(),
            );
        }
        if sql.trim().is_empty() {
            err(
                format!("segments.{name}"),
                "is empty; write a SELECT query".into(),
            );
        }
    }

    if file.exports.is_empty() {
        err("exports".into(), "declare at least one export".into());
    }
    let mut export_names = BTreeSet::new();
    for (i, e) in file.exports.iter().enumerate() {
        let at = |field: &str| format!("exports[{i}].{field}");
        if e.name.is_empty()
            || !e
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            err(
                at("name"),
                format!(
                    "`{}` is not a valid export name: use letters, digits, `_` and `-`",
                    e.name
                ),
            );
        } else if !export_names.insert(e.name.as_str()) {
            err(at("name"), format!("export `{}` is declared twice", e.name));
        }
        if !file.connections.contains_key(&e.connection) {
            err(
                at("connection"),
                format!(
                    "no connection named `{}`{}; declared: {}",
                    e.connection,
                    crate::did_you_mean(&e.connection, file.connections.keys().map(String::as_str)),
                    names(file.connections.keys())
                ),
            );
        }
        if e.list_ids.is_empty() && e.lists.is_empty() {
            err(
                at("list_ids"),
                "give at least one SendGrid list: its id in `list_ids`, or its name in `lists: [NAME]`"
                    .into(),
            );
        }
        let mut named = BTreeSet::new();
        for (j, list) in e.lists.iter().enumerate() {
            let field = format!("exports[{i}].lists[{j}].name");
            let length = list.name.chars().count();
            if list.name.trim().is_empty() || length > 100 {
                err(field, "a list name has 1 to 100 characters".into());
            } else if !named.insert(list.name.as_str()) {
                err(field, format!("list `{}` is named twice", list.name));
            }
        }
        let mut seen = BTreeSet::new();
        for (j, id) in e.list_ids.iter().enumerate() {
            if let Some(name) = id.strip_prefix('$').filter(|n| !n.starts_with('{')) {
                err(
                    format!("exports[{i}].list_ids[{j}]"),
                    format!(
                        "`{id}` is not a SendGrid list id: an environment variable is written `${{{name}}}` (in quotes inside `[...]`)"
                    ),
                );
            } else if !is_uuid(id) {
                err(
                    format!("exports[{i}].list_ids[{j}]"),
                    format!(
                        "`{id}` is not a SendGrid list id: expected a UUID such as 0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11 (a list may be named instead, in `lists: [NAME]`)"
                    ),
                );
            } else if !seen.insert(id.to_ascii_lowercase()) {
                err(
                    format!("exports[{i}].list_ids[{j}]"),
                    format!("list id {id} is given twice"),
                );
            }
        }
        if e.segments.is_empty() {
            err(at("segments"), "name at least one segment".into());
        }
        let mut seen = BTreeSet::new();
        for (j, s) in e.segments.iter().enumerate() {
            // `segments: vip, high_value` is one name to YAML.
            let parts: Vec<&str> = s.split(',').map(str::trim).collect();
            if parts.len() > 1 && parts.iter().all(|p| file.segments.contains_key(*p)) {
                err(
                    format!("exports[{i}].segments[{j}]"),
                    format!(
                        "`{s}` is one name to YAML: a list of names goes in brackets, `segments: [{}]`",
                        parts.join(", ")
                    ),
                );
            } else if !file.segments.contains_key(s) {
                err(
                    format!("exports[{i}].segments[{j}]"),
                    format!(
                        "no segment named `{s}`{}; declared: {}",
                        crate::did_you_mean(s, file.segments.keys().map(String::as_str)),
                        names(file.segments.keys())
                    ),
                );
            } else if !seen.insert(s.as_str()) {
                err(
                    format!("exports[{i}].segments[{j}]"),
                    format!("segment `{s}` is listed twice"),
                );
            }
        }
        for (field, expr) in e
            .mapping
            .reserved()
            .into_iter()
            .map(|(f, x)| (f.to_owned(), x))
            .chain(
                e.mapping
                    .custom_fields
                    .iter()
                    .map(|(f, x)| (format!("custom_fields.{f}"), x.as_str())),
            )
        {
            if expr.trim().is_empty() {
                err(
                    format!("exports[{i}].mapping.{field}"),
                    "is empty; give a column name or an SQL expression".into(),
                );
            }
        }
        let mut folded: BTreeMap<String, &str> = BTreeMap::new();
        for name in e.mapping.custom_fields.keys() {
            let field = format!("exports[{i}].mapping.custom_fields.{name}");
            if let Err(message) = check_custom_field_name(name) {
                err(field, message);
            } else if let Some(first) = folded.insert(name.to_ascii_lowercase(), name) {
                err(
                    field,
                    format!(
                        "SendGrid's field names are unique whatever their case: `{first}` and `{name}` are one field"
                    ),
                );
            }
        }
        if e.mapping.get(e.identifier.name()).is_none() {
            let key = e.identifier;
            let mapped = e.mapping.identifiers();
            let hint = match mapped.first() {
                None => format!(
                    "map the `{key}` column; every contact needs an identifier (email, external_id, phone_number_id or anonymous_id)"
                ),
                Some(other) => format!(
                    "map it, or key the export by a mapped identifier with `identifier: {other}`"
                ),
            };
            let (place, what) = if e.identifier == Identifier::Email {
                (at("mapping"), "has no `email`")
            } else {
                (at("identifier"), "names an identifier that is not mapped")
            };
            err(place, format!("{what}: {hint}"));
        }
        if e.skip_suppressed && e.mapping.email.is_none() {
            err(
                at("skip_suppressed"),
                "needs `mapping.email`: SendGrid's suppression lists hold addresses".into(),
            );
        }
        if !(1..=1_000_000_000).contains(&e.max_profiles) {
            err(
                at("max_profiles"),
                "must be between 1 and 1000000000".into(),
            );
        }
        if let Some(max) = e.max_new_contacts
            && !(1..=1_000_000_000).contains(&max)
        {
            err(
                at("max_new_contacts"),
                "must be between 1 and 1000000000".into(),
            );
        }
        if !(1..=604_800).contains(&e.import_timeout_secs) {
            err(
                at("import_timeout_secs"),
                "must be between 1 and 604800 (a week)".into(),
            );
        }
        if !(0.0..=1.0).contains(&e.max_removal_share) {
            err(
                at("max_removal_share"),
                "must be between 0 and 1 (a share of the list, 0.2 is 20%)".into(),
            );
        }
        if !(1..=30_000).contains(&e.contacts_per_request) {
            err(
                at("contacts_per_request"),
                "must be between 1 and 30000 (SendGrid's limit per request)".into(),
            );
        }
        for (j, o) in e.order_by.iter().enumerate() {
            if o.trim().is_empty() {
                err(format!("exports[{i}].order_by[{j}]"), "is empty".into());
            }
        }
    }
    for (i, message) in mirror_conflicts(file) {
        err(format!("exports[{i}].mode"), message);
    }
    out
}

/// Each export in mirror mode that shares a list with another export of the file (by id,
/// whatever its case, or by name, through one connection): its index, and why it may not.
/// The mirror would take off the list contacts that the other export keeps there, and
/// that export does not send a contact again while it is unchanged.
pub fn mirror_conflicts(file: &PipelineFile) -> Vec<(usize, String)> {
    let mut fillers: BTreeMap<(&str, String), Vec<usize>> = BTreeMap::new();
    for (i, e) in file.exports.iter().enumerate() {
        let ids = e.list_ids.iter().map(|id| id.to_ascii_lowercase());
        let names = e.lists.iter().map(|l| format!("`{}`", l.name));
        for list in ids.chain(names) {
            let exports = fillers.entry((e.connection.as_str(), list)).or_default();
            if !exports.contains(&i) {
                exports.push(i);
            }
        }
    }
    let mut conflicts = Vec::new();
    for ((_, list), exports) in fillers {
        for &i in &exports {
            let e = &file.exports[i];
            let other = exports.iter().find(|&&o| o != i).map(|&o| &file.exports[o]);
            if let Some(other) = other.filter(|_| e.mode == ExportMode::Mirror) {
                conflicts.push((
                    i,
                    format!(
                        "export `{}` mirrors list {list}, which export `{}` also fills: `{}` \
                         would take off the list contacts that left its segments but are in \
                         `{}`'s, and `{}` does not send a contact again while it is unchanged; \
                         give a mirrored list to one export (one export may take several \
                         segments)",
                        e.name, other.name, e.name, other.name, other.name
                    ),
                ));
            }
        }
    }
    conflicts.sort();
    conflicts
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Names become SQL identifiers, so they must need no quoting.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a plain SQL name: use lower-case letters, digits and `_`, not starting with a digit"
        ))
    }
}

/// A UUID in its hyphenated 8-4-4-4-12 form (the form SendGrid's list ids take).
/// Names SendGrid keeps for its own fields (from its field-definitions API and contact
/// identifiers): a custom field may not take one, in any case.
pub const SENDGRID_RESERVED_FIELDS: [&str; 27] = [
    "email",
    "phone_number_id",
    "external_id",
    "anonymous_id",
    "first_name",
    "last_name",
    "alternate_emails",
    "address_line_1",
    "address_line_2",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number",
    "whatsapp",
    "line",
    "facebook",
    "unique_name",
    "contact_id",
    "created_at",
    "updated_at",
    "email_domains",
    "last_clicked",
    "last_emailed",
    "last_opened",
    "list_ids",
    "segment_ids",
];

/// SendGrid's rules for a custom field name: 1 to 100 characters of `[A-Za-z0-9_]`,
/// starting with a letter or an underscore, and not a reserved field's name.
pub fn check_custom_field_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(60).collect();
    if name.is_empty() {
        return Err("a custom field name is empty".into());
    }
    if name.len() > 100 {
        return Err(format!(
            "custom field name `{shown}…` is longer than SendGrid's 100 characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "custom field name `{shown}` has {c:?}: SendGrid takes only letters, digits and `_`"
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "custom field name `{shown}` starts with a digit: SendGrid's start with a letter or `_`"
        ));
    }
    if let Some(reserved) = SENDGRID_RESERVED_FIELDS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "`{name}` is SendGrid's reserved field `{reserved}`, not a custom field: map reserved fields by their own key under `mapping`, or pick another name"
        ));
    }
    Ok(())
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// Whether `url` is plain http to `localhost` or a loopback IP address, read by the URL
/// parser the HTTP client uses.
pub fn is_loopback_http(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}

/// `global`, `eu`, an https URL, or an http URL to a loopback address, read with the
/// parser the HTTP client uses (`url`), and with nothing but a scheme, a host, a port and
/// a path: a user name or password, a query or a fragment could make one reader see
/// another host than the other. `sendgrid_client` applies the same rule when it is built
/// (a test in the CLI holds the two to agree). A URL with credentials is not echoed.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if matches!(endpoint, "global" | "eu") {
        return Ok(());
    }
    let Ok(url) = url::Url::parse(endpoint.trim_end_matches('/')) else {
        return Err(format!(
            "`{endpoint}` is not an endpoint: use `global`, `eu`, or a base URL such as https://api.sendgrid.com"
        ));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the endpoint must not carry a user name or password (the URL is not shown: it may hold a secret)"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{endpoint}`: a base URL has no query or fragment"));
    }
    // SendGrid's pages write the API's address with its version; here it would be doubled
    // (`/v3/v3/marketing/lists`), and every answer a 404 that reads as a missing list.
    let path = url.path().trim_end_matches('/');
    if path.to_ascii_lowercase().ends_with("/v3") {
        let mut fixed = url.clone();
        fixed.set_path(&path[..path.len() - 3]);
        return Err(format!(
            "`{endpoint}` ends with /v3, which every request's path starts with (/v3/marketing/...): write `{}`",
            fixed.as_str().trim_end_matches('/')
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback_http(endpoint) => Ok(()),
        "http" => Err(format!(
            "`{endpoint}` uses plain http to a non-loopback host: the API key would cross the network unencrypted; use https"
        )),
        _ => Err(format!(
            "`{endpoint}` is not an endpoint: use `global`, `eu`, or a base URL such as https://api.sendgrid.com"
        )),
    }
}

/// The `HOST:PORT` of a Ballista scheduler written as `df://HOST:PORT`.
pub fn cluster_address(written: &str) -> Result<String, String> {
    let hint = "write the scheduler as `df://HOST:PORT`, for example `df://localhost:50050`";
    let url = url::Url::parse(written.trim())
        .map_err(|e| format!("`{written}` is not a URL ({e}); {hint}"))?;
    if url.scheme() != "df" {
        return Err(format!("`{written}` has scheme `{}`; {hint}", url.scheme()));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{written}` names no host; {hint}"))?;
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || !matches!(url.path(), "" | "/")
    {
        return Err(format!(
            "`{written}` has more than a host and a port; {hint}"
        ));
    }
    let port = url
        .port()
        .ok_or_else(|| format!("`{written}` names no port; {hint}"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11"));
        assert!(!is_uuid("0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a1"));
        assert!(!is_uuid("0b7c2a53x0a0f-4c35-9a3e-0f6f1d8f3a11"));
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("eu").is_ok());
        assert!(check_endpoint("https://api.sendgrid.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://[::1]:9000/").is_ok());
        assert!(check_endpoint("http://localhost:1").is_ok());
        assert!(
            check_endpoint("http://api.sendgrid.com")
                .unwrap_err()
                .contains("unencrypted")
        );
        assert!(check_endpoint("ftp://x").is_err());
        assert_eq!(
            check_endpoint("https://api.sendgrid.com/v3/").unwrap_err(),
            "`https://api.sendgrid.com/v3/` ends with /v3, which every request's path starts with (/v3/marketing/...): write `https://api.sendgrid.com`"
        );
        assert_eq!(
            check_endpoint("https://gateway.example/sendgrid/v3").unwrap_err(),
            "`https://gateway.example/sendgrid/v3` ends with /v3, which every request's path starts with (/v3/marketing/...): write `https://gateway.example/sendgrid`"
        );
        // A gateway's own path is kept as written.
        assert!(check_endpoint("https://gateway.example/sendgrid/").is_ok());
    }

    #[test]
    fn cluster_addresses() {
        assert_eq!(
            cluster_address("df://localhost:50050").unwrap(),
            "localhost:50050"
        );
        assert_eq!(
            cluster_address("df://10.0.0.5:7000/").unwrap(),
            "10.0.0.5:7000"
        );
        assert!(
            cluster_address("df://localhost")
                .unwrap_err()
                .contains("names no port")
        );
        assert!(
            cluster_address("localhost:50050")
                .unwrap_err()
                .contains("has scheme `localhost`")
        );
        assert!(
            cluster_address("df://u:p@host:1")
                .unwrap_err()
                .contains("more than a host")
        );
        assert!(
            cluster_address("grpc://host:1")
                .unwrap_err()
                .contains("write the scheduler as `df://HOST:PORT`")
        );
    }
}
