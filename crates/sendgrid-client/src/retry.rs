//! One classifier decides what is retried, what waits for the rate limit, and what is
//! fatal; the backoff is bounded and jittered; rate limits are read per endpoint family.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::ClientError;

/// Retry bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request for 5xx, 408, timeouts and dropped connections.
    pub max_attempts: u32,
    /// First backoff; doubled per attempt.
    pub base_delay: Duration,
    /// Longest single backoff.
    pub max_delay: Duration,
    /// Longest time one request may spend waiting out rate limits (429 answers and spent
    /// budgets together) before it fails. Bounded by time, never by a count of answers.
    pub rate_limit_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            rate_limit_budget: Duration::from_secs(600),
        }
    }
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request succeeded.
    Done,
    /// 429: wait this long, then try again; not a failure.
    RateLimited(Duration),
    /// A transient failure: back off and try again.
    Retry,
    /// Retrying cannot help.
    Fatal,
}

/// Classifies a status code.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Done,
        // A 429 without a usable reset waits a second: never a busy loop.
        429 => Verdict::RateLimited(
            rate_limit_wait(headers)
                .unwrap_or(MIN_429_WAIT)
                .max(MIN_RETRY_AFTER_429),
        ),
        408 | 500 | 502..=599 => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// Classifies a transport error: timeouts, refused and dropped connections are transient.
pub fn classify_error(error: &reqwest::Error) -> Verdict {
    if error.is_timeout() || error.is_connect() || error.is_request() || error.is_body() {
        Verdict::Retry
    } else {
        Verdict::Fatal
    }
}

/// A header by name, matched case-insensitively (HeaderMap does this already).
fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The wait after a 429 whose headers give no usable reset.
pub const MIN_429_WAIT: Duration = Duration::from_secs(1);
/// The shortest wait after any 429, whatever its reset says.
const MIN_RETRY_AFTER_429: Duration = Duration::from_millis(100);
/// Added to every reset: the window ends a little after the second SendGrid names.
const RESET_MARGIN: Duration = Duration::from_millis(50);
/// Resets below this are seconds to wait; at or above, a Unix time (2001-09-09).
const UNIX_RESET_FROM: u64 = 1_000_000_000;

/// How long until the window that `X-RateLimit-Reset` names resets. The marketing
/// endpoints send seconds until the reset (`20`, `19`, …, as recorded from the live API);
/// SendGrid's general v3 documentation describes a Unix time. Both are read: a value below
/// 10⁹ is a countdown, anything else a Unix time.
pub fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_u64(headers, "x-ratelimit-reset")?;
    let wait = if reset < UNIX_RESET_FROM {
        Duration::from_secs(reset)
    } else {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        Duration::from_secs(reset).saturating_sub(now)
    };
    Some(wait + RESET_MARGIN)
}

/// Whether `X-RateLimit-Remaining` says the budget is spent.
pub fn budget_spent(headers: &HeaderMap) -> bool {
    header_u64(headers, "x-ratelimit-remaining") == Some(0)
}

/// The backoff before attempt `attempt` (1-based), with jitter between half and all of it.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(policy.max_delay);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let jitter = 0.5 + (mix(nanos ^ attempt as u64) % 1000) as f64 / 2000.0;
    exp.mul_f64(jitter)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Endpoints that share one rate-limit window. Recorded answers of the live API carry
/// `x-ratelimit-limit: 200` on the contacts endpoints (upsert, search, delete) and `600`
/// on lists (list-membership removal included) and field definitions: each family is
/// paced on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `/v3/marketing/contacts…`.
    Contacts,
    /// `/v3/marketing/lists…`, list-membership removal included.
    Lists,
    /// `/v3/marketing/field_definitions…`.
    Fields,
    /// Anything else (`/v3/scopes`).
    Other,
}

impl Family {
    /// The family of a request path (the query is ignored).
    pub fn of(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        if path.starts_with("/v3/marketing/contacts") {
            Self::Contacts
        } else if path.starts_with("/v3/marketing/lists") {
            Self::Lists
        } else if path.starts_with("/v3/marketing/field_definitions") {
            Self::Fields
        } else {
            Self::Other
        }
    }
}

/// The error of a request whose rate-limit waits would pass the policy's budget.
pub(crate) fn rate_limit_exhausted(
    what: &str,
    started: Instant,
    next_wait: Duration,
    policy: &RetryPolicy,
) -> ClientError {
    ClientError::RateLimited {
        what: what.into(),
        waited_secs: started.elapsed().as_secs(),
        reset_secs: next_wait.as_secs_f64().ceil() as u64,
        budget_secs: policy.rate_limit_budget.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses() {
        let h = HeaderMap::new();
        assert_eq!(classify_status(StatusCode::ACCEPTED, &h), Verdict::Done);
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h),
                Verdict::Retry,
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413, 501] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h),
                Verdict::Fatal,
                "{s}"
            );
        }
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::RateLimited(MIN_429_WAIT),
            "a 429 without headers waits a second"
        );
    }

    fn headers(pairs: &[(&'static str, u64)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from(*value));
        }
        h
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_small_reset_is_a_countdown_in_seconds() {
        // As the live marketing endpoints answer: limit 200, reset 20, 19, 18 ...
        let h = headers(&[("x-ratelimit-reset", 20), ("X-RateLimit-Remaining", 0)]);
        assert_eq!(
            rate_limit_wait(&h),
            Some(Duration::from_secs(20) + RESET_MARGIN)
        );
        assert!(budget_spent(&h));
        let h = headers(&[("x-ratelimit-reset", 0)]);
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::RateLimited(MIN_RETRY_AFTER_429),
            "a window ending now still waits a moment"
        );
    }

    #[test]
    fn a_large_reset_is_a_unix_time() {
        let h = headers(&[("x-ratelimit-reset", unix_now() + 2)]);
        let wait = rate_limit_wait(&h).unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(2100),
            "{wait:?}"
        );
        let past = headers(&[("x-ratelimit-reset", unix_now() - 30)]);
        assert_eq!(rate_limit_wait(&past), Some(RESET_MARGIN));
        let unusable = headers(&[("x-ratelimit-remaining", 3)]);
        assert_eq!(rate_limit_wait(&unusable), None);
        assert!(!budget_spent(&unusable));
    }

    #[test]
    fn endpoint_families_follow_the_recorded_limits() {
        assert_eq!(Family::of("/v3/marketing/contacts"), Family::Contacts);
        assert_eq!(
            Family::of("/v3/marketing/contacts/search/emails"),
            Family::Contacts
        );
        assert_eq!(
            Family::of("/v3/marketing/lists/x/contacts?contact_ids=a,b"),
            Family::Lists
        );
        assert_eq!(Family::of("/v3/marketing/lists"), Family::Lists);
        assert_eq!(
            Family::of("/v3/marketing/field_definitions"),
            Family::Fields
        );
        assert_eq!(Family::of("/v3/scopes"), Family::Other);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy::default();
        let first = backoff(&p, 1);
        assert!(first >= p.base_delay / 2 && first <= p.base_delay);
        assert!(backoff(&p, 30) <= p.max_delay);
        assert!(backoff(&p, 4) >= p.base_delay * 4);
    }
}
