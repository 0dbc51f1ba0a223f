//! The emulator's account: keys, lists, contacts, custom fields, import jobs, scripted
//! faults and the request log.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fields::ContactFields;

/// An API key the emulator accepts, and its scopes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    pub key: String,
    pub scopes: Vec<String>,
}

/// Scopes of a key with full Marketing permissions.
pub fn marketing_scopes() -> Vec<String> {
    [
        "marketing_campaigns.create",
        "marketing_campaigns.read",
        "marketing_campaigns.update",
        "marketing_campaigns.delete",
        "marketing.read",
    ]
    .map(String::from)
    .to_vec()
}

/// Requests per window before 429.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub window_ms: u64,
}

/// How the emulator starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub keys: Vec<KeyConfig>,
    /// How long an import job stays `pending`.
    pub import_delay_ms: u64,
    pub rate_limit: Option<RateLimit>,
    /// Lists that exist from the start: (id, name).
    pub lists: Vec<(String, String)>,
    /// Custom fields that exist from the start: (name, field_type).
    pub custom_fields: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            import_delay_ms: 0,
            rate_limit: Some(RateLimit {
                limit: 10_000,
                window_ms: 1000,
            }),
            lists: Vec::new(),
            custom_fields: Vec::new(),
        }
    }
}

/// A scripted fault, consumed by the next matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Answer the next upsert with this status (429 carries rate-limit headers).
    Status { status: u16 },
    /// Answer the next upsert after this delay.
    Delay { ms: u64 },
    /// Close the connection of the next upsert without answering.
    Drop,
    /// The next import job ends `failed`.
    FailJob,
    /// The next import job ends `errored`, with these emails in its errors file.
    ErrorJob { emails: Vec<String> },
}

/// How the emulator misbehaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Scripted answers for upserts, in order.
    pub upserts: VecDeque<Fault>,
    /// Scripted endings for import jobs, in order.
    pub jobs: VecDeque<Fault>,
    /// Emails SendGrid refuses with a 400 (a "poisoned" contact).
    pub poisoned: BTreeSet<String>,
    /// Whether the 400 for a poisoned contact names its index.
    pub poisoned_without_index: bool,
}

impl Faults {
    /// Adds `more` after the faults already scripted.
    pub fn extend(&mut self, more: Faults) {
        self.upserts.extend(more.upserts);
        self.jobs.extend(more.jobs);
        self.poisoned.extend(more.poisoned);
        self.poisoned_without_index |= more.poisoned_without_index;
    }
}

/// One upserted contact as the request log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upserted {
    pub email: String,
    /// The request's list ids, shared by its contacts.
    #[serde(with = "shared")]
    pub list_ids: Arc<[String]>,
}

/// (De)serialises a shared slice as a plain sequence.
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ids: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
        ids[..].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[String]>, D::Error> {
        Vec::<String>::deserialize(d).map(Arc::from)
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// For upserts answered 202: every contact in the request.
    pub upserted: Vec<Upserted>,
    /// For upserts answered 202: the job id.
    pub job_id: Option<String>,
}

/// A stored contact.
#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    /// The fields as sent; the email as imported (lower case).
    pub(crate) fields: ContactFields,
    pub list_ids: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct List {
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct FieldDef {
    pub id: String,
    pub name: String,
    pub field_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Error(BTreeSet<String>),
    Fail,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub created: Instant,
    pub list_ids: Arc<[String]>,
    /// The contacts to apply, by lower-cased email; emptied when the job ends.
    pub(crate) contacts: Vec<(String, ContactFields)>,
    /// How many contacts the upsert held.
    pub requested: usize,
    pub end: JobEnd,
    /// Set once the job has ended: (status, created, updated, errored).
    pub result: Option<(&'static str, u64, u64, u64)>,
    pub errors: Vec<(String, String)>,
}

/// Everything the emulator knows.
pub struct State {
    pub config: Config,
    /// Contacts by email; the inspection views sort them.
    pub contacts: HashMap<String, Contact>,
    pub lists: BTreeMap<String, List>,
    pub fields: Vec<FieldDef>,
    pub jobs: HashMap<String, Job>,
    pub faults: Faults,
    pub log: Vec<LoggedRequest>,
    rate_window: (Instant, u32),
    next_id: u64,
}

/// A fresh UUID-shaped id from the clock and the account's id counter, which it advances.
fn next_uuid(counter: &mut u64) -> String {
    *counter += 1;
    let n = *counter;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = mix(seed ^ n);
    let b = mix(a ^ n.rotate_left(17));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

impl State {
    pub fn new(config: Config) -> Self {
        let mut state = Self {
            contacts: HashMap::new(),
            lists: BTreeMap::new(),
            fields: Vec::new(),
            jobs: HashMap::new(),
            faults: Faults::default(),
            log: Vec::new(),
            rate_window: (Instant::now(), 0),
            next_id: 0,
            config: config.clone(),
        };
        for (id, name) in config.lists {
            state.lists.insert(id, List { name });
        }
        for (name, field_type) in config.custom_fields {
            state.add_field(name, field_type);
        }
        state
    }

    /// A fresh UUID-shaped id.
    pub fn uuid(&mut self) -> String {
        next_uuid(&mut self.next_id)
    }

    pub fn add_field(&mut self, name: String, field_type: String) -> FieldDef {
        let suffix = match field_type.as_str() {
            "Number" => "N",
            "Date" => "D",
            _ => "T",
        };
        let def = FieldDef {
            id: format!("e{}_{suffix}", self.fields.len() + 1),
            name,
            field_type,
        };
        self.fields.push(def.clone());
        def
    }

    /// Counts a request against the rate limit: (limit, remaining, reset unix secs, allowed).
    pub fn rate(&mut self) -> Option<(u32, u32, u64, bool)> {
        let limit = self.config.rate_limit?;
        let window = Duration::from_millis(limit.window_ms.max(1));
        let now = Instant::now();
        if now.duration_since(self.rate_window.0) >= window {
            self.rate_window = (now, 0);
        }
        let allowed = self.rate_window.1 < limit.limit;
        if allowed {
            self.rate_window.1 += 1;
        }
        let reset_in = window.saturating_sub(now.duration_since(self.rate_window.0));
        Some((
            limit.limit,
            limit.limit - self.rate_window.1,
            // The window's true end, rounded up to the Unix second SendGrid reports.
            (unix_now_f64() + reset_in.as_secs_f64()).ceil() as u64,
            allowed,
        ))
    }

    /// Ends the jobs whose delay has passed, applying their contacts.
    pub fn settle(&mut self) {
        let delay = Duration::from_millis(self.config.import_delay_ms);
        let due: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.result.is_none() && j.created.elapsed() >= delay)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            // The contacts are applied once; the job keeps only its result.
            let job = self.jobs.get_mut(&id).expect("listed");
            let contacts = std::mem::take(&mut job.contacts);
            let (end, list_ids) = (job.end.clone(), job.list_ids.clone());
            let (mut created, mut updated, mut errored) = (0, 0, 0);
            let mut errors = Vec::new();
            let status = match &end {
                JobEnd::Fail => "failed",
                JobEnd::Complete | JobEnd::Error(_) => {
                    for (email, c) in contacts {
                        if matches!(&end, JobEnd::Error(bad) if bad.contains(&email)) {
                            errored += 1;
                            errors.push((email, "email address is undeliverable".to_owned()));
                            continue;
                        }
                        if self.upsert(email, c, &list_ids) {
                            created += 1;
                        } else {
                            updated += 1;
                        }
                    }
                    if errored > 0 { "errored" } else { "completed" }
                }
            };
            let j = self.jobs.get_mut(&id).expect("listed");
            j.result = Some((status, created, updated, errored));
            j.errors = errors;
        }
    }

    /// Inserts or updates a contact; true when it was new.
    fn upsert(&mut self, email: String, sent: ContactFields, list_ids: &[String]) -> bool {
        let (contact, new) = match self.contacts.entry(email) {
            Entry::Occupied(known) => {
                let contact = known.into_mut();
                contact.fields.update(sent);
                (contact, false)
            }
            Entry::Vacant(slot) => {
                let contact = Contact {
                    id: next_uuid(&mut self.next_id),
                    fields: sent,
                    list_ids: BTreeSet::new(),
                };
                (slot.insert(contact), true)
            }
        };
        for id in list_ids {
            if !contact.list_ids.contains(id) {
                contact.list_ids.insert(id.clone());
            }
        }
        new
    }

    pub fn contact_count(&self, list_id: &str) -> usize {
        self.contacts
            .values()
            .filter(|c| c.list_ids.contains(list_id))
            .count()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
