//! SendGrid's contact rules: email normalisation and validation, field length limits,
//! and the reasons a contact is rejected.

use std::borrow::Cow;

use serde::Serialize;

/// Longest email SendGrid accepts, in characters.
pub const EMAIL_MAX_CHARS: usize = 254;
/// Most alternate emails per contact.
pub const MAX_ALTERNATE_EMAILS: usize = 5;

/// Character limits of SendGrid's reserved text fields (from the contacts API spec).
pub fn field_max_chars(field: &str) -> Option<usize> {
    match field {
        "first_name" | "last_name" | "state_province_region" | "country" => Some(50),
        "city" => Some(60),
        "address_line_1" | "address_line_2" => Some(100),
        "email" | "external_id" | "anonymous_id" => Some(254),
        _ => None,
    }
}

/// Why a row did not become a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// No email, or only blanks.
    MissingEmail,
    /// Not a deliverable address form.
    InvalidEmail,
    /// Longer than 254 characters.
    EmailTooLong,
    /// A field is longer than SendGrid allows and the policy is `reject`.
    FieldTooLong,
    /// More than 5 alternate emails and the policy is `reject`.
    TooManyAlternateEmails,
    /// No value, or only blanks, for the identifier that keys the export.
    MissingIdentifier,
    /// An identifier longer than SendGrid allows: it is never cut, since a cut identifier
    /// names another contact.
    IdentifierTooLong,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        Self::MissingEmail,
        Self::InvalidEmail,
        Self::EmailTooLong,
        Self::FieldTooLong,
        Self::TooManyAlternateEmails,
        Self::MissingIdentifier,
        Self::IdentifierTooLong,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::MissingEmail => "missing_email",
            Self::InvalidEmail => "invalid_email",
            Self::EmailTooLong => "email_too_long",
            Self::FieldTooLong => "field_too_long",
            Self::TooManyAlternateEmails => "too_many_alternate_emails",
            Self::MissingIdentifier => "missing_identifier",
            Self::IdentifierTooLong => "identifier_too_long",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Trims and lower-cases `raw` into `out` (cleared first). SendGrid stores emails
/// lower-case, so two spellings of one address must dedupe to one contact.
pub fn normalize_email_into(raw: &str, out: &mut String) {
    out.clear();
    let trimmed = raw.trim();
    if trimmed.is_ascii() {
        out.push_str(trimmed);
        out.make_ascii_lowercase();
    } else {
        out.extend(trimmed.chars().flat_map(char::to_lowercase));
    }
}

/// What is wrong with a normalised email, if anything.
pub fn email_problem(email: &str) -> Option<RejectReason> {
    if email.is_empty() {
        return Some(RejectReason::MissingEmail);
    }
    if email.len() > EMAIL_MAX_CHARS && email.chars().count() > EMAIL_MAX_CHARS {
        return Some(RejectReason::EmailTooLong);
    }
    (!is_valid_email(email)).then_some(RejectReason::InvalidEmail)
}

/// A practical address check: one `@`, a dot-atom local part of at most 64 characters,
/// and a domain of at least two DNS labels with an alphabetic top-level label.
/// Quoted local parts, IP-literal domains and non-ASCII addresses are refused.
pub fn is_valid_email(email: &str) -> bool {
    email_flaw(email).is_none()
}

/// What [`is_valid_email`] refuses in a normalised `email`, said for the rejects file:
/// what is wrong, never the address, in one of a few dozen phrasings (the summary counts
/// them). `None` for a valid address.
pub fn email_flaw(email: &str) -> Option<Cow<'static, str>> {
    let Some((local, domain)) = email.split_once('@') else {
        return Some("no `@`".into());
    };
    let said = if local.is_empty() {
        "nothing before the `@`"
    } else if domain.is_empty() {
        "nothing after the `@`"
    } else if local.len() > 64 {
        "more than 64 characters before the `@`"
    } else if domain.len() > 253 {
        "more than 253 characters after the `@`"
    } else {
        ""
    };
    if !said.is_empty() {
        return Some(said.into());
    }
    if let Some(at) = local
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)))
    {
        return Some(usual_flaw(email, local, domain).map_or_else(
            || format!("`{}` before the `@`", first_char(&local[at..])).into(),
            Cow::Borrowed,
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Some(
            "a dot at the start or end of the part before the `@`, or two in a row".into(),
        );
    }
    if domain.starts_with('[') {
        return Some("an IP address for a domain".into());
    }
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() {
            return Some("a dot at the start or end of the domain, or two in a row".into());
        }
        if label.len() > 63 {
            return Some("a part of the domain longer than 63 characters".into());
        }
        if let Some(at) = label
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Some(usual_flaw(email, local, domain).map_or_else(
                || format!("`{}` in the domain", first_char(&label[at..])).into(),
                Cow::Borrowed,
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a part of the domain that starts or ends with `-`".into());
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        Some("a domain without a dot".into())
    } else if last.len() < 2 {
        Some("a top-level domain of one letter".into())
    } else if !(last.bytes().all(|b| b.is_ascii_alphabetic()) || last.starts_with("xn--")) {
        Some("a top-level domain that is not letters (such as `.com1`)".into())
    } else {
        None
    }
}

/// The usual ways a column holds more than an address, each of which puts a character no
/// address holds in it: said instead of that character (and looked for only then, off the
/// path of the valid addresses).
fn usual_flaw(email: &str, local: &str, domain: &str) -> Option<&'static str> {
    Some(if domain.contains('@') {
        "more than one `@`"
    } else if local.starts_with("mailto:") {
        "`mailto:` before the address"
    } else if email.contains(['<', '>']) {
        "a name or `<>` around the address: keep the address alone"
    } else if email.chars().any(|c| c.is_whitespace() || is_invisible(c)) {
        "a blank or invisible character inside the address"
    } else if !domain.is_ascii() {
        "a domain that is not ASCII: SendGrid takes its `xn--` form"
    } else if !local.is_ascii() {
        "a character that is not ASCII before the `@` (SendGrid takes ASCII addresses only)"
    } else {
        return None;
    })
}

/// The character `text` starts with (a byte scan stops at a character's first byte).
fn first_char(text: &str) -> char {
    text.chars().next().unwrap_or('?')
}

/// A character that shows as nothing: zero-width spaces and joiners, the word joiner, a
/// byte-order mark (pasted from documents and web pages).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        let mut out = String::new();
        normalize_email_into(raw, &mut out);
        out
    }

    #[test]
    fn normalises_case_and_padding() {
        assert_eq!(
            norm("  Ada.Lovelace@Example.COM \t"),
            "ada.lovelace@example.com"
        );
        assert_eq!(norm("ÉLODIE@EXAMPLE.FR"), "élodie@example.fr");
    }

    #[test]
    fn valid_addresses() {
        for e in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'brien@example.ie",
            "x_y-z@xn--bcher-kva.example",
        ] {
            assert_eq!(email_problem(e), None, "{e}");
        }
    }

    #[test]
    fn invalid_addresses_and_reasons() {
        assert_eq!(email_problem(""), Some(RejectReason::MissingEmail));
        for e in [
            "plainaddress",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example.c",
            "a@example.123",
            "a@exa_mple.com",
            "élodie@example.fr",
        ] {
            assert_eq!(email_problem(e), Some(RejectReason::InvalidEmail), "{e}");
        }
    }

    #[test]
    fn an_invalid_address_says_what_is_wrong_without_the_address() {
        let flaws = [
            ("plainaddress", "no `@`"),
            ("a@b.com,c@d.com", "more than one `@`"),
            ("mailto:a@b.com", "`mailto:` before the address"),
            (
                "ann <a@b.com>",
                "a name or `<>` around the address: keep the address alone",
            ),
            (
                "a\u{200b}b@c.com",
                "a blank or invisible character inside the address",
            ),
            (
                "a@bücher.de",
                "a domain that is not ASCII: SendGrid takes its `xn--` form",
            ),
            (
                "élodie@example.fr",
                "a character that is not ASCII before the `@` (SendGrid takes ASCII addresses only)",
            ),
            ("@example.com", "nothing before the `@`"),
            ("a@", "nothing after the `@`"),
            ("a(b)@c.com", "`(` before the `@`"),
            (
                "a..b@c.com",
                "a dot at the start or end of the part before the `@`, or two in a row",
            ),
            ("a@[1.2.3.4]", "an IP address for a domain"),
            (
                "a@b..com",
                "a dot at the start or end of the domain, or two in a row",
            ),
            ("a@exa_mple.com", "`_` in the domain"),
            (
                "a@-b.com",
                "a part of the domain that starts or ends with `-`",
            ),
            ("a@localhost", "a domain without a dot"),
            ("a@example.c", "a top-level domain of one letter"),
            (
                "a@example.123",
                "a top-level domain that is not letters (such as `.com1`)",
            ),
        ];
        for (email, said) in flaws {
            assert_eq!(email_flaw(email).as_deref(), Some(said), "{email}");
        }
        assert_eq!(email_flaw("first.last+tag@xn--bcher-kva.example"), None);
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert_eq!(email_problem(&long), Some(RejectReason::EmailTooLong));
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::default())]

            /// Any text: no panic, normalising twice changes nothing, and an address the
            /// rules accept has one `@`, fits SendGrid's 254 characters and is lower case.
            #[test]
            fn the_email_rules_hold_for_any_text(raw in "\\PC{0,300}") {
                let mut once = String::new();
                normalize_email_into(&raw, &mut once);
                let mut twice = String::new();
                normalize_email_into(&once, &mut twice);
                prop_assert_eq!(&once, &twice);
                if email_problem(&once).is_none() {
                    prop_assert_eq!(once.matches('@').count(), 1);
                    prop_assert!(once.chars().count() <= EMAIL_MAX_CHARS);
                    prop_assert_eq!(once.to_lowercase(), once.clone());
                }
            }

            #[test]
            fn addresses_of_the_usual_shape_are_accepted(
                local in "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]",
                domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\\.[a-z]{2,8}",
            ) {
                prop_assume!(!local.contains(".."));
                let email = format!("{local}@{domain}");
                prop_assert_eq!(email_problem(&email), None, "{}", email);
            }
        }
    }
}
