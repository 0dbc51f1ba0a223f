//! The pipeline file as typed structs: what a user may write, and nothing else.
//!
//! Every struct denies unknown keys so a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use crate::identifier::{Identifier, IdentifierSet};

/// Default profile cap per export.
pub const DEFAULT_MAX_PROFILES: u64 = 100_000;
/// Default DataFusion memory limit in MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 256;
/// Default Arrow batch size.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// A pipeline file: SendGrid connections, Parquet sources, SQL segments and exports.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Version of the file format; only `1` exists.
    pub version: u32,
    /// Settings of the query engine.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Named SendGrid connections (beside those of a connections file).
    #[serde(default, deserialize_with = "unique::names")]
    pub connections: BTreeMap<String, Connection>,
    /// Named Parquet sources, registered as SQL tables under their names.
    #[serde(deserialize_with = "unique::names")]
    pub sources: BTreeMap<String, Source>,
    /// Named segments: DataFusion SQL queries (SELECT only) whose rows are the members.
    #[serde(deserialize_with = "unique::names")]
    pub segments: BTreeMap<String, String>,
    /// Exports: which segments go to which SendGrid lists, and how fields are filled.
    pub exports: Vec<Export>,
    /// Folder for each export's sync state (what SendGrid accepted, the run journal, the
    /// lock), relative to the pipeline file, or an object-store URL (`s3://bucket/state/`)
    /// that every worker running the pipeline shares. Default: `.state` beside the file.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Non-secret settings of the store a `state_dir` URL names (as a source's `storage:`).
    #[serde(default)]
    pub state_storage: crate::Storage,
    /// With the state in an object store: how long a run's lock lasts unless the run
    /// renews it (every third of it). A killed run's lock is taken over after this long.
    #[serde(default = "default_state_lease")]
    pub state_lease_secs: u64,
}

fn default_state_lease() -> u64 {
    60
}

/// Query engine settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Memory the query engine may use, in MiB; sorts spill to disk beyond it.
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mib: u64,
    /// Rows per Arrow record batch of the segment SQL; the export's own sorts keep at most
    /// 8192.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Partitions the segment SQL runs in (DataFusion's `target_partitions`, which goes to
    /// a cluster's scheduler with the query too); none takes one per core. Each partition
    /// decodes a row group of the scanned columns at a time, outside `memory_limit_mib`,
    /// so fewer bound the scan's memory on a machine of many cores, at a cost in time.
    #[serde(default)]
    pub partitions: Option<usize>,
    /// A Ballista scheduler (`df://HOST:PORT`) that runs each export's selection query;
    /// none runs it in this process. See docs/cluster.md.
    #[serde(default)]
    pub cluster: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            memory_limit_mib: DEFAULT_MEMORY_LIMIT_MIB,
            batch_size: DEFAULT_BATCH_SIZE,
            partitions: None,
            cluster: None,
        }
    }
}

fn default_memory_limit() -> u64 {
    DEFAULT_MEMORY_LIMIT_MIB
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

/// Kind of connection; selects the sink that uploads the contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// SendGrid Marketing contacts API.
    Sendgrid,
}

/// A SendGrid connection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Kind of connection: `sendgrid`.
    #[serde(rename = "type")]
    pub kind: ConnectionType,
    /// A human name for summaries and messages.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The API key as a reference to an environment variable, written `${NAME}`.
    /// A literal key is refused.
    #[serde(default)]
    pub api_key: Option<String>,
    /// A file holding the API key (for example a mounted secret), relative to the pipeline file.
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// `global` (https://api.sendgrid.com, the default), `eu` (https://api.eu.sendgrid.com),
    /// or a base URL; plain http is allowed only to a loopback address.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Must be `true`: an export sends personal data to SendGrid, outside your
    /// organisation's compliance boundary, and you accept that.
    #[serde(default)]
    pub data_privacy_consent: bool,
    /// Upload requests in flight at once (1 to 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds before one request times out.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Attempts per request on 5xx, 408, timeouts and dropped connections.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest time one request may wait out SendGrid's rate limit (429 answers and spent
    /// budgets together) before the run fails, in seconds.
    #[serde(default = "default_rate_limit_wait")]
    pub rate_limit_wait_secs: u64,
    /// In a connections file: the pipeline files (paths or globs, relative to the
    /// connections file) that may use this connection. Unset: any.
    #[serde(default)]
    pub allowed_pipelines: Option<Vec<String>>,
    /// In a connections file: the exports (by name) that may use this connection.
    /// Unset: any.
    #[serde(default)]
    pub allowed_exports: Option<Vec<String>>,
    /// The connections file this connection came from; `None` for the pipeline file's own.
    #[serde(skip)]
    #[schemars(skip)]
    pub defined_in: Option<std::path::PathBuf>,
}

fn default_concurrency() -> usize {
    2
}

fn default_request_timeout() -> u64 {
    60
}

fn default_max_attempts() -> u32 {
    6
}

fn default_rate_limit_wait() -> u64 {
    600
}

/// A SendGrid list named by its name: `Newsletter`, or `{ name: Newsletter }`.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(with = "ListNameForm")]
pub struct ListName {
    /// The list's name, exactly as SendGrid shows it (1 to 100 characters).
    pub name: String,
}

/// The forms a `lists` item takes, for the schema.
#[derive(JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
#[allow(dead_code)]
enum ListNameForm {
    /// The list's name, exactly as SendGrid shows it (1 to 100 characters).
    Name(String),
    Settings {
        /// The list's name, exactly as SendGrid shows it (1 to 100 characters).
        name: String,
    },
}

impl<'de> Deserialize<'de> for ListName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListNameVisitor;
        impl<'de> Visitor<'de> for ListNameVisitor {
            type Value = ListName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                // A number is not taken as a name: `2024.10` would be read as 2024.1.
                f.write_str("a list's name, or `{ name: ... }` (quote a name that reads as a number or true/false: `\"2024.10\"`)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListName, E> {
                Ok(ListName { name: v.to_owned() })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListName, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                        "name" => name = Some(map.next_value::<String>()?),
                        other => return Err(de::Error::unknown_field(other, &["name"])),
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                Ok(ListName { name })
            }
        }
        deserializer.deserialize_any(ListNameVisitor)
    }
}

/// Format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Apache Parquet.
    Parquet,
    /// A Delta Lake table: its current Parquet files (or those of `version`).
    Delta,
}

/// A source: Parquet files or a Delta table, on local disk or in an object store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `parquet` or `delta`.
    pub format: SourceFormat,
    /// A file, a folder, or a glob such as `data/profiles/*.parquet`, relative to the
    /// pipeline file; or an object-store URL (`s3://bucket/profiles/`, `gs://…`,
    /// `az://…`, `abfss://…`), which may end in a glob. A Delta table is its folder.
    pub path: String,
    /// Non-secret settings of the object store: `region`, `endpoint`, `allow_http`
    /// (loopback endpoints only) and the like. Credentials come from the environment.
    #[serde(default)]
    pub storage: crate::Storage,
    /// Delta tables only: the table version to read (default: the latest).
    #[serde(default)]
    pub version: Option<u64>,
    /// Parquet only: read byte columns with no string annotation as text, as Impala and
    /// older Hive write their strings (default: false, they stay bytes).
    #[serde(default)]
    pub binary_as_string: bool,
}

/// What happens when an export has more contacts than its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCapExceeded {
    /// Send nothing and exit with the cap-exceeded code.
    #[default]
    Fail,
    /// Keep the first `max_profiles` contacts by `order_by` and say how many were dropped.
    Truncate,
}

/// What happens to a value longer than SendGrid's limit for its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldLengthPolicy {
    /// Cut the value at the limit, on a character boundary.
    #[default]
    Truncate,
    /// Reject the whole contact into the rejects file.
    Reject,
}

/// How an export treats the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportMode {
    /// Add or update the segment members on the lists.
    #[default]
    Upsert,
    /// Also take contacts that left the segments off the export's lists (membership
    /// only: no contact is ever deleted).
    Mirror,
}

/// An export: segments to SendGrid lists.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Unique name of the export (letters, digits, `_` and `-`).
    pub name: String,
    /// Name of the connection to upload through.
    pub connection: String,
    /// SendGrid list ids (UUIDs) the contacts are added to.
    #[serde(default)]
    pub list_ids: Vec<String>,
    /// Lists named instead of (or beside) their ids: resolved to ids when a command talks
    /// to SendGrid (`run`, `check`, `plan`, `--dry-run`).
    #[serde(default)]
    pub lists: Vec<ListName>,
    /// Create the named lists that do not exist (default `false`).
    #[serde(default)]
    pub create_missing_lists: bool,
    /// Most contacts one run may add that this export never synced (each may be a new
    /// contact in the account, counting against its allotment). Over it, the run sends
    /// nothing for the export. Unset: no limit.
    #[serde(default)]
    pub max_new_contacts: Option<u64>,
    /// Leave out the contacts on the account's suppression lists (unsubscribed, bounced,
    /// blocked, spam reports, invalid), as if they were not selected; they are counted
    /// in the summary (default `false`).
    #[serde(default)]
    pub skip_suppressed: bool,
    /// Names of the segments whose members are sent (one name may stand alone).
    #[serde(deserialize_with = "one_or_many")]
    #[schemars(with = "OneOrMany")]
    pub segments: Vec<String>,
    /// The identifier that keys the export's contacts (`email`, `external_id`,
    /// `phone_number_id` or `anonymous_id`; default `email`): rows are deduplicated by
    /// it, the state remembers contacts by it, and mirror removals look contacts up by it.
    /// It must be mapped; a row without it is rejected.
    #[serde(default)]
    pub identifier: Identifier,
    /// Which column or SQL expression fills each SendGrid field.
    pub mapping: Mapping,
    /// Most contacts sent per run, counted after dedupe and validation.
    #[serde(default = "default_max_profiles")]
    pub max_profiles: u64,
    /// `fail` (default) or `truncate` when the cap is exceeded.
    #[serde(default)]
    pub on_cap_exceeded: OnCapExceeded,
    /// Column names or SQL expressions, each optionally followed by `ASC` or `DESC`,
    /// that order the contacts: the first row of an email wins the dedupe and the first
    /// `max_profiles` survive a truncation. Nulls come last (`NULLS LAST` may be written).
    /// Defaults to the email and then every mapped field.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "Option<OneOrMany>")]
    pub order_by: Vec<String>,
    /// `truncate` (default) or `reject` a contact whose field is longer than SendGrid allows.
    #[serde(default)]
    pub field_length_policy: FieldLengthPolicy,
    /// Rejected contacts tolerated before the run exits with the rejects code.
    #[serde(default)]
    pub allowed_rejects: u64,
    /// `upsert` (default) or `mirror`.
    #[serde(default)]
    pub mode: ExportMode,
    /// With `mode: mirror`, the largest share (0 to 1) of the contacts this export put on
    /// its lists that one run may remove; more needs `--allow-mass-removal`.
    #[serde(default = "default_max_removal_share")]
    pub max_removal_share: f64,
    /// Contacts per upload request (1 to 30,000); bodies also stay under 6 MB.
    #[serde(default = "default_contacts_per_request")]
    pub contacts_per_request: usize,
    /// Follow SendGrid's import jobs until they end (default `true`).
    #[serde(default = "default_true")]
    pub wait_for_import: bool,
    /// Longest wait for the import jobs, in seconds.
    #[serde(default = "default_import_timeout")]
    pub import_timeout_secs: u64,
    /// Create mapped custom fields that do not exist in the account (default `false`).
    #[serde(default)]
    pub create_missing_fields: bool,
}

fn default_true() -> bool {
    true
}

fn default_max_removal_share() -> f64 {
    0.2
}

fn default_contacts_per_request() -> usize {
    30_000
}

fn default_import_timeout() -> u64 {
    900
}

fn default_max_profiles() -> u64 {
    DEFAULT_MAX_PROFILES
}

/// One string or a list of strings.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrManyVisitor;
    impl<'de> Visitor<'de> for OneOrManyVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(OneOrManyVisitor)
}

/// Which column or SQL expression fills each SendGrid contact field.
///
/// A value that names a column of the segment is that column (case as written);
/// anything else is read as a DataFusion SQL expression over the segment's columns.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The contact's email: required unless the export is keyed by another identifier.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub address_line_1: Option<String>,
    #[serde(default)]
    pub address_line_2: Option<String>,
    /// A list of strings, at most 5 addresses.
    #[serde(default)]
    pub alternate_emails: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state_province_region: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub phone_number_id: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub anonymous_id: Option<String>,
    /// Custom fields by their SendGrid name.
    #[serde(default, deserialize_with = "unique::names")]
    pub custom_fields: BTreeMap<String, String>,
}

/// Each reserved field's name with its slot in a [`Mapping`], in SendGrid's field
/// order, borrowed as `$borrow` (`&` or `&mut`).
macro_rules! reserved_slots {
    ($mapping:ident, $($borrow:tt)+) => {
        [
            ("email", $($borrow)+ $mapping.email),
            ("first_name", $($borrow)+ $mapping.first_name),
            ("last_name", $($borrow)+ $mapping.last_name),
            ("address_line_1", $($borrow)+ $mapping.address_line_1),
            ("address_line_2", $($borrow)+ $mapping.address_line_2),
            ("alternate_emails", $($borrow)+ $mapping.alternate_emails),
            ("city", $($borrow)+ $mapping.city),
            ("state_province_region", $($borrow)+ $mapping.state_province_region),
            ("postal_code", $($borrow)+ $mapping.postal_code),
            ("country", $($borrow)+ $mapping.country),
            ("phone_number_id", $($borrow)+ $mapping.phone_number_id),
            ("external_id", $($borrow)+ $mapping.external_id),
            ("anonymous_id", $($borrow)+ $mapping.anonymous_id),
        ]
    };
}

impl Mapping {
    /// The mapped identifiers, in SendGrid's field order.
    pub fn identifiers(&self) -> Vec<Identifier> {
        Identifier::ALL
            .into_iter()
            .filter(|i| self.get(i.name()).is_some())
            .collect()
    }

    /// The expression mapped to reserved field `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.reserved()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, x)| x)
    }

    /// The reserved fields that are mapped, `key` first, then in SendGrid's field order.
    pub fn reserved_keyed(&self, key: Identifier) -> Vec<(&'static str, &str)> {
        let mut fields = self.reserved();
        if let Some(at) = fields.iter().position(|(n, _)| *n == key.name()) {
            let keyed = fields.remove(at);
            fields.insert(0, keyed);
        }
        fields
    }

    /// The reserved fields that are mapped, in SendGrid's field order.
    pub fn reserved(&self) -> Vec<(&'static str, &str)> {
        reserved_slots!(self, &)
            .into_iter()
            .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
            .collect()
    }

    /// Every mapped expression with its place under `mapping` (`email`,
    /// `custom_fields.tier`), the reserved fields first.
    pub(crate) fn expressions(&self) -> Vec<(String, &str)> {
        let reserved = self.reserved().into_iter().map(|(f, x)| (f.to_owned(), x));
        let custom =
            (self.custom_fields.iter()).map(|(f, x)| (format!("custom_fields.{f}"), x.as_str()));
        reserved.chain(custom).collect()
    }

    /// [`Mapping::expressions`], to be rewritten in place.
    pub(crate) fn expressions_mut(&mut self) -> Vec<(String, &mut String)> {
        let reserved = reserved_slots!(self, &mut)
            .into_iter()
            .filter_map(|(name, value)| value.as_mut().map(|v| (name.to_owned(), v)));
        let custom =
            (self.custom_fields.iter_mut()).map(|(f, x)| (format!("custom_fields.{f}"), x));
        reserved.chain(custom).collect()
    }
}

/// A connections file: SendGrid connections an administrator keeps apart from the
/// pipelines that use them by name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsFile {
    /// Version of the file format; only `1` exists.
    pub version: u32,
    /// Named SendGrid connections.
    #[serde(deserialize_with = "unique::names")]
    pub connections: BTreeMap<String, Connection>,
}

/// Maps whose names must be unique: YAML lets a key repeat, and the second would silently
/// replace the first.
mod unique {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

    pub fn names<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de>,
    {
        struct Names<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Names<V> {
            type Value = BTreeMap<String, V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.contains_key(&name) {
                        return Err(A::Error::custom(format!(
                            "`{name}` is given twice: each name must be unique, or the second would silently replace the first"
                        )));
                    }
                    let value = map.next_value()?;
                    out.insert(name, value);
                }
                Ok(out)
            }
        }

        deserializer.deserialize_map(Names(PhantomData))
    }
}
