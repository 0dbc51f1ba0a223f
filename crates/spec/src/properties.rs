//! Property tests: no pipeline text, however broken, makes parsing or interpolation panic.

use std::path::Path;

use proptest::prelude::*;

use crate::interpolate::expand;
use crate::parse;

const GOOD: &str = "version: 1
connections:
  m: { type: sendgrid, api_key: ${KEY}, data_privacy_consent: true }
sources:
  p: { format: parquet, path: data/ }
segments:
  s: SELECT * FROM p WHERE tier = '${TIER}'
exports:
  - name: e
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [s]
    mapping: { email: email, custom_fields: { ltv: ltv } }
";

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("SG.property-test-key".into()),
        "TIER" => Some("gold".into()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn any_text_parses_or_fails_without_panicking(text in "\\PC{0,400}") {
        let _ = parse(&text, Path::new("p.yaml"), &env);
    }

    /// A good file with a few characters changed, inserted or removed anywhere.
    #[test]
    fn a_damaged_good_file_parses_or_fails_without_panicking(
        edits in proptest::collection::vec((0usize..GOOD.len(), "\\PC{0,3}", any::<bool>()), 1..6)
    ) {
        let mut text = GOOD.to_owned();
        for (at, insert, remove) in edits {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if remove && at < text.len() {
                let next = text[at..].chars().next().map_or(0, char::len_utf8);
                text.replace_range(at..at + next, "");
            }
            text.insert_str(at, &insert);
        }
        if let Err(e) = parse(&text, Path::new("p.yaml"), &env) {
            // Whatever went wrong, the key never shows in the message.
            prop_assert!(!e.to_string().contains("SG.property-test-key"));
        }
    }

    #[test]
    fn interpolation_never_panics_and_leaves_text_without_dollars_alone(text in "\\PC{0,200}") {
        let expanded = expand(&text, &env);
        if !text.contains('$') {
            prop_assert_eq!(expanded.unwrap(), text);
        }
    }
}
