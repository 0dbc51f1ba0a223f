//! One classifier decides what is retried, what waits for the rate limit, and what is
//! fatal; the backoff is bounded and jittered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Retry bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request for 5xx, 408, timeouts and dropped connections.
    pub max_attempts: u32,
    /// First backoff; doubled per attempt.
    pub base_delay: Duration,
    /// Longest single backoff.
    pub max_delay: Duration,
    /// Longest wait for one rate-limit reset.
    pub max_rate_limit_wait: Duration,
    /// Most 429 answers tolerated for one request before giving up.
    pub max_rate_limited: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            max_rate_limit_wait: Duration::from_secs(60),
            max_rate_limited: 50,
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
pub fn classify_status(status: StatusCode, headers: &HeaderMap, policy: &RetryPolicy) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Done,
        429 => {
            Verdict::RateLimited(rate_limit_wait(headers, policy).unwrap_or(Duration::from_secs(1)))
        }
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

/// How long until `X-RateLimit-Reset` (Unix seconds), bounded by the policy.
pub fn rate_limit_wait(headers: &HeaderMap, policy: &RetryPolicy) -> Option<Duration> {
    let reset = header_u64(headers, "x-ratelimit-reset")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let wait = Duration::from_secs_f64((reset as f64 - now).max(0.0)) + Duration::from_millis(50);
    Some(wait.min(policy.max_rate_limit_wait))
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses() {
        let p = RetryPolicy::default();
        let h = HeaderMap::new();
        assert_eq!(classify_status(StatusCode::ACCEPTED, &h, &p), Verdict::Done);
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h, &p),
                Verdict::Retry,
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413, 501] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h, &p),
                Verdict::Fatal,
                "{s}"
            );
        }
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, &p),
            Verdict::RateLimited(_)
        ));
    }

    #[test]
    fn rate_limit_headers_are_read_in_any_case_and_bounded() {
        let p = RetryPolicy {
            max_rate_limit_wait: Duration::from_secs(5),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert("x-ratelimit-reset", HeaderValue::from(now + 2));
        h.insert("X-RateLimit-Remaining", HeaderValue::from(0));
        let wait = rate_limit_wait(&h, &p).unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(2100),
            "{wait:?}"
        );
        assert!(budget_spent(&h));
        h.insert("x-ratelimit-reset", HeaderValue::from(now + 3600));
        assert_eq!(rate_limit_wait(&h, &p).unwrap(), Duration::from_secs(5));
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
