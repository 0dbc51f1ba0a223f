//! Values that are never shown as they are. Any value a `${VAR}` reference brought in from
//! the environment may be a secret put in the wrong place, and an API key is one: messages
//! and outputs show the reference (or `***`) instead.

use std::borrow::Cow;
use std::fmt;

/// Values to hide, each with what is shown in its place.
#[derive(Clone, Default)]
pub struct Redactions {
    /// Longest first, so a value inside another is not replaced before it.
    pairs: Vec<(String, String)>,
}

impl Redactions {
    /// Shorter values are not hidden: they would blot out ordinary words and numbers, and
    /// no API key is that short.
    pub const MIN_CHARS: usize = 8;

    /// Hides `value` (trimmed) behind `shown_as` from now on.
    pub fn add(&mut self, value: &str, shown_as: impl Into<String>) {
        let value = value.trim();
        if value.chars().count() < Self::MIN_CHARS || self.pairs.iter().any(|(v, _)| v == value) {
            return;
        }
        self.pairs.push((value.to_owned(), shown_as.into()));
        self.pairs
            .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &Redactions) {
        for (value, shown) in &other.pairs {
            self.add(value, shown.clone());
        }
    }

    /// Whether some hidden value contains `secret`.
    pub fn any_contains(&self, secret: &str) -> bool {
        !secret.is_empty() && self.pairs.iter().any(|(v, _)| v.contains(secret))
    }

    /// `text` with every hidden value replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (value, shown) in &self.pairs {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), shown));
            }
        }
        out
    }
}

impl fmt::Debug for Redactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactions({} values)", self.pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_values_are_replaced_longest_first_and_never_debug_printed() {
        let mut r = Redactions::default();
        r.add("SG.abcdefgh", "${KEY}");
        r.add("SG.abcdefgh-longer", "${LONG}");
        r.add("gold", "${TIER}");
        assert_eq!(
            r.redact("a SG.abcdefgh-longer b SG.abcdefgh c gold"),
            "a ${LONG} b ${KEY} c gold"
        );
        assert!(r.any_contains("SG.abcdefgh"));
        assert!(!format!("{r:?}").contains("SG."));
    }
}
