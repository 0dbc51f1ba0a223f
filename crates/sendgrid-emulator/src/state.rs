//! The emulator's account: keys, lists, contacts, custom fields, import jobs, scripted
//! faults and the request log.

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
        "suppression.read",
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

/// Endpoints that share one rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Contacts upsert, import status and search.
    Contacts,
    /// Lists (list-membership removal included), field definitions and scopes.
    Other,
}

impl Family {
    pub fn of(path: &str) -> Self {
        if path.starts_with("/v3/marketing/contacts") {
            Self::Contacts
        } else {
            Self::Other
        }
    }
}

/// The rate limits, per endpoint family, and how the reset is told.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateLimits {
    /// Recorded live: `x-ratelimit-limit: 200`.
    pub contacts: RateLimit,
    /// Recorded live: `x-ratelimit-limit: 600`.
    pub other: RateLimit,
    /// `X-RateLimit-Reset` as a Unix time (SendGrid's general v3 documentation) instead of
    /// seconds until the reset (what the marketing endpoints were recorded sending).
    pub unix_resets: bool,
}

impl RateLimits {
    /// The live limits (200 and 600) per window of `window_ms`.
    pub fn live(window_ms: u64) -> Self {
        Self::uniform(200, window_ms).with_other(600)
    }

    /// `limit` requests per `window_ms` for every family, with countdown resets.
    pub fn uniform(limit: u32, window_ms: u64) -> Self {
        let each = RateLimit { limit, window_ms };
        Self {
            contacts: each,
            other: each,
            unix_resets: false,
        }
    }

    fn with_other(mut self, limit: u32) -> Self {
        self.other.limit = limit;
        self
    }

    fn of(&self, family: Family) -> RateLimit {
        match family {
            Family::Contacts => self.contacts,
            Family::Other => self.other,
        }
    }
}

/// One answer's rate-limit headers: limit, remaining, and the reset as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset: u64,
}

/// The window the live limits are counted over. A guess: the recorded resets count down
/// from 20 s, and SendGrid's documentation speaks of requests per minute.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;

/// How the emulator starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub keys: Vec<KeyConfig>,
    /// How long an import job stays `pending` (live: about 20 s to several minutes).
    pub import_delay_ms: u64,
    /// Rate limits per endpoint family; `None` admits everything.
    pub rate_limits: Option<RateLimits>,
    /// One import job in this many ends `failed` (live: a small share does); 0 for none.
    pub fail_one_job_in: u32,
    /// How long an errors file can be downloaded; afterwards it answers 403 as an expired
    /// pre-signed link does. `None` keeps it.
    pub errors_file_ttl_ms: Option<u64>,
    /// Lists that exist from the start: (id, name).
    pub lists: Vec<(String, String)>,
    /// Custom fields that exist from the start: (name, field_type).
    pub custom_fields: Vec<(String, String)>,
    /// Suppressed addresses: (list, email), the list being `unsubscribed`, `bounced`,
    /// `blocked`, `spam_report` or `invalid`.
    pub suppressions: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            import_delay_ms: 0,
            rate_limits: Some(RateLimits::live(DEFAULT_WINDOW_MS)),
            fail_one_job_in: 0,
            errors_file_ttl_ms: None,
            lists: Vec::new(),
            custom_fields: Vec::new(),
            suppressions: Vec::new(),
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
    /// The next import job completes (to script the one after it).
    CompleteJob,
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
    /// Whether a 400 names only the first refused contact (as the live API was seen to).
    pub first_problem_only: bool,
    /// Contacts deleted (as in SendGrid's UI) just before the next list-membership
    /// removal: found by the search, gone by the removal.
    pub vanish_before_removal: BTreeSet<String>,
}

impl Faults {
    /// Adds `more` after the faults already scripted.
    pub fn extend(&mut self, more: Faults) {
        self.upserts.extend(more.upserts);
        self.jobs.extend(more.jobs);
        self.poisoned.extend(more.poisoned);
        self.poisoned_without_index |= more.poisoned_without_index;
        self.first_problem_only |= more.first_problem_only;
        self.vanish_before_removal
            .extend(more.vanish_before_removal);
    }
}

/// One upserted contact as the request log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upserted {
    /// The contact's email, lower-cased; empty when it has none.
    pub email: String,
    /// The contact's external id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
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
    /// The contacts to apply (emails lower-cased); emptied when the job ends.
    pub(crate) contacts: Vec<ContactFields>,
    /// How many contacts the upsert held.
    pub requested: usize,
    pub end: JobEnd,
    /// Set once the job has ended: (status, created, updated, errored).
    pub result: Option<(&'static str, u64, u64, u64)>,
    /// The contacts that errored: their identifiers (name, value), and why.
    pub errors: Vec<(Vec<(&'static str, String)>, String)>,
    /// When the job ended (the errors file's link expires from then).
    pub ended: Option<Instant>,
}

/// Where the identifiers are in [`crate::fields::RESERVED`]: email, phone number id,
/// external id, anonymous id.
pub(crate) const IDENTIFIER_SLOTS: [usize; 4] = [0, 10, 11, 12];

/// Everything the emulator knows.
pub struct State {
    pub config: Config,
    /// Contacts by id; the inspection views sort them by identifier.
    pub contacts: HashMap<String, Contact>,
    /// Contact ids by identifier: (slot in [`crate::fields::RESERVED`], value).
    identifiers: HashMap<(usize, Box<str>), String>,
    pub lists: BTreeMap<String, List>,
    pub fields: Vec<FieldDef>,
    pub jobs: HashMap<String, Job>,
    pub faults: Faults,
    pub log: Vec<LoggedRequest>,
    rate_windows: HashMap<Family, (Instant, u32)>,
    /// Import jobs created so far (for `fail_one_job_in`).
    jobs_created: u64,
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
            identifiers: HashMap::new(),
            lists: BTreeMap::new(),
            fields: Vec::new(),
            jobs: HashMap::new(),
            faults: Faults::default(),
            log: Vec::new(),
            rate_windows: HashMap::new(),
            jobs_created: 0,
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

    /// Counts a request to `path` against its family's window: the headers to send, and
    /// whether the request is admitted.
    pub fn rate(&mut self, path: &str) -> Option<(RateHeaders, bool)> {
        let limits = self.config.rate_limits?;
        let family = Family::of(path);
        let RateLimit { limit, window_ms } = limits.of(family);
        let window = Duration::from_millis(window_ms.max(1));
        let now = Instant::now();
        let (started, used) = self.rate_windows.entry(family).or_insert((now, 0));
        if now.duration_since(*started) >= window {
            (*started, *used) = (now, 0);
        }
        let allowed = *used < limit;
        if allowed {
            *used += 1;
        }
        let reset_in = window.saturating_sub(now.duration_since(*started));
        let headers = RateHeaders {
            limit,
            remaining: limit - *used,
            reset: self.reset_header(reset_in),
        };
        Some((headers, allowed))
    }

    /// `X-RateLimit-Reset` for a window ending in `reset_in`: whole seconds until then
    /// (rounded up), or the Unix second it ends.
    pub fn reset_header(&self, reset_in: Duration) -> u64 {
        let unix = self.config.rate_limits.is_some_and(|l| l.unix_resets);
        if unix {
            (unix_now_f64() + reset_in.as_secs_f64()).ceil() as u64
        } else {
            reset_in.as_secs_f64().ceil() as u64
        }
    }

    /// How the next import job ends: scripted, or failed as one in `fail_one_job_in`.
    pub fn next_job_end(&mut self) -> JobEnd {
        self.jobs_created += 1;
        match self.faults.jobs.pop_front() {
            Some(Fault::FailJob) => JobEnd::Fail,
            Some(Fault::ErrorJob { emails }) => {
                JobEnd::Error(emails.into_iter().map(|e| e.to_lowercase()).collect())
            }
            _ => {
                let every = u64::from(self.config.fail_one_job_in);
                if every > 0 && self.jobs_created.is_multiple_of(every) {
                    JobEnd::Fail
                } else {
                    JobEnd::Complete
                }
            }
        }
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
            let job_requested = job.requested as u64;
            let (mut created, mut updated, mut errored) = (0, 0, 0);
            let mut errors = Vec::new();
            let status = match &end {
                JobEnd::Fail => "failed",
                JobEnd::Complete | JobEnd::Error(_) => {
                    for c in contacts {
                        let bad = matches!(&end, JobEnd::Error(bad) if c.email().is_some_and(|e| bad.contains(e)));
                        let ids = c.identifiers();
                        let outcome = if bad {
                            Err("undeliverable: bounced, blocked or invalid".to_owned())
                        } else {
                            self.upsert(c, &list_ids)
                        };
                        match outcome {
                            Ok(true) => created += 1,
                            Ok(false) => updated += 1,
                            Err(why) => {
                                errored += 1;
                                errors.push((ids, why));
                            }
                        }
                    }
                    match errored {
                        0 => "completed",
                        // A job in which every contact errored ends `failed` (with its
                        // errors file), as the live API's does.
                        n if n == job_requested => "failed",
                        _ => "errored",
                    }
                }
            };
            let j = self.jobs.get_mut(&id).expect("listed");
            j.result = Some((status, created, updated, errored));
            j.errors = errors;
            j.ended = Some(Instant::now());
        }
    }

    /// Inserts or updates a contact found by any of its identifiers; true when it was new.
    /// As SendGrid does, an update must carry all of the contact's identifiers with their
    /// values, and identifiers of two contacts cannot meet in one: either is an error.
    fn upsert(&mut self, sent: ContactFields, list_ids: &[String]) -> Result<bool, String> {
        let given: Vec<(usize, Box<str>)> = IDENTIFIER_SLOTS
            .iter()
            .filter_map(|slot| Some((*slot, sent.text[*slot].clone()?)))
            .collect();
        let mut matched: Vec<&String> = given
            .iter()
            .filter_map(|key| self.identifiers.get(key))
            .collect();
        matched.sort_unstable();
        matched.dedup();
        let id = match matched.as_slice() {
            [] => None,
            [id] => Some((*id).clone()),
            _ => return Err("the identifiers given belong to different contacts".into()),
        };
        let new = id.is_none();
        let id = match id {
            Some(id) => {
                let contact = self.contacts.get_mut(&id).expect("indexed");
                if let Some(slot) = IDENTIFIER_SLOTS.iter().find(|slot| {
                    contact.fields.text[**slot].is_some()
                        && contact.fields.text[**slot] != sent.text[**slot]
                }) {
                    return Err(format!(
                        "{} is missing: an update must include all of the contact's identifiers",
                        crate::fields::RESERVED[*slot]
                    ));
                }
                contact.fields.update(sent);
                id
            }
            None => {
                let id = next_uuid(&mut self.next_id);
                let contact = Contact {
                    id: id.clone(),
                    fields: sent,
                    list_ids: BTreeSet::new(),
                };
                self.contacts.insert(id.clone(), contact);
                id
            }
        };
        for key in given {
            self.identifiers.insert(key, id.clone());
        }
        let contact = self.contacts.get_mut(&id).expect("inserted");
        for list in list_ids {
            if !contact.list_ids.contains(list) {
                contact.list_ids.insert(list.clone());
            }
        }
        Ok(new)
    }

    /// The contact whose identifier `name` (`email`, `external_id`, ...) is `value`; an
    /// email is matched whatever its case.
    pub fn find(&self, name: &str, value: &str) -> Option<&Contact> {
        let slot = crate::fields::RESERVED.iter().position(|n| *n == name)?;
        let value: Box<str> = if slot == 0 {
            value.to_lowercase().into()
        } else {
            value.into()
        };
        self.identifiers
            .get(&(slot, value))
            .and_then(|id| self.contacts.get(id))
    }

    /// Deletes a contact found by identifier, as someone might in SendGrid's UI; true when
    /// it existed.
    pub fn delete(&mut self, name: &str, value: &str) -> bool {
        let Some(id) = self.find(name, value).map(|c| c.id.clone()) else {
            return false;
        };
        self.identifiers.retain(|_, v| *v != id);
        self.contacts.remove(&id).is_some()
    }

    pub fn contact_count(&self, list_id: &str) -> usize {
        self.contacts
            .values()
            .filter(|c| c.list_ids.contains(list_id))
            .count()
    }
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
