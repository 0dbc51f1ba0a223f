//! A contact's fields as an upsert sends them and the account keeps them: the reserved
//! text fields in fixed slots, the alternate emails, and the custom fields by id. A request
//! body is parsed straight into them, without a JSON map per contact.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// SendGrid's reserved fields, in its order (the field definitions number them so).
pub(crate) const RESERVED: [&str; 14] = [
    "email",
    "first_name",
    "last_name",
    "address_line_1",
    "address_line_2",
    "alternate_emails",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number_id",
    "external_id",
    "anonymous_id",
    "custom_fields",
];
const ALTERNATE_EMAILS: usize = 5;
const CUSTOM_FIELDS: usize = 13;

/// One contact's fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactFields {
    /// The text fields by their place in [`RESERVED`]; the alternate emails' slot is unused.
    pub text: [Option<Box<str>>; CUSTOM_FIELDS],
    pub alternate_emails: Option<Vec<String>>,
    /// Custom field values by field id.
    pub custom: Map<String, Value>,
}

impl ContactFields {
    pub fn email(&self) -> Option<&str> {
        self.text[0].as_deref()
    }

    /// The identifiers the contact carries, by name.
    pub fn identifiers(&self) -> Vec<(&'static str, String)> {
        crate::state::IDENTIFIER_SLOTS
            .iter()
            .filter_map(|slot| Some((RESERVED[*slot], self.text[*slot].as_deref()?.to_owned())))
            .collect()
    }

    /// The text fields sent, by name.
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        RESERVED
            .iter()
            .zip(&self.text)
            .filter_map(|(name, value)| Some((*name, value.as_deref()?)))
    }

    /// Sets every field `sent` carries over these: later values win, custom field by field.
    pub fn update(&mut self, sent: ContactFields) {
        for (slot, value) in self.text.iter_mut().zip(sent.text) {
            if value.is_some() {
                *slot = value;
            }
        }
        if sent.alternate_emails.is_some() {
            self.alternate_emails = sent.alternate_emails;
        }
        if self.custom.is_empty() {
            self.custom = sent.custom;
        } else {
            for (id, value) in sent.custom {
                self.custom.insert(id, value);
            }
        }
    }

    /// The reserved fields as SendGrid shows them; custom fields apart.
    pub fn reserved_json(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = self
            .texts()
            .map(|(name, value)| (name.to_owned(), Value::from(value)))
            .collect();
        if let Some(emails) = &self.alternate_emails {
            out.insert(
                RESERVED[ALTERNATE_EMAILS].into(),
                Value::from(emails.clone()),
            );
        }
        out
    }
}

impl<'de> Deserialize<'de> for ContactFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = ContactFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a contact object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContactFields, A::Error> {
        let mut out = ContactFields::default();
        while let Some(Key(name)) = map.next_key()? {
            match RESERVED.iter().position(|f| *f == name) {
                Some(ALTERNATE_EMAILS) => out.alternate_emails = Some(map.next_value()?),
                Some(CUSTOM_FIELDS) => out.custom = map.next_value()?,
                Some(slot) => out.text[slot] = Some(map.next_value::<String>()?.into()),
                None => return Err(de::Error::custom(format_args!("unknown field {name}"))),
            }
        }
        Ok(out)
    }
}

/// A field name, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// An upsert request as a well-typed body has it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsertRequest {
    #[serde(default)]
    pub list_ids: Vec<String>,
    pub contacts: Vec<ContactFields>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reserved_custom_and_escaped_names_and_refuses_unknown_ones() {
        let body = br#"{"list_ids":["x"],"contacts":[{"email":"A@b.co","first\u005fname":"Ann",
            "alternate_emails":["c@d.co"],"custom_fields":{"e1_N":3}}]}"#;
        let request: UpsertRequest = serde_json::from_slice(body).unwrap();
        let c = &request.contacts[0];
        assert_eq!(
            c.texts().collect::<Vec<_>>(),
            vec![("email", "A@b.co"), ("first_name", "Ann")]
        );
        assert_eq!(c.alternate_emails, Some(vec!["c@d.co".to_owned()]));
        assert_eq!(c.custom["e1_N"], 3);
        let json = c.reserved_json();
        assert_eq!(json["alternate_emails"][0], "c@d.co");
        assert!(!json.contains_key("custom_fields"));

        for bad in [
            r#"{"contacts":[{"email":"a@b.co","nickname":"x"}]}"#,
            r#"{"contacts":[{"email":null}]}"#,
            r#"{"contacts":[{"email":"a@b.co","alternate_emails":"c@d.co"}]}"#,
            r#"{"contacts":[7]}"#,
            r#"{"contacts":[],"extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<UpsertRequest>(bad).is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn an_update_keeps_what_it_does_not_send() {
        let parse = |s: &str| serde_json::from_str::<ContactFields>(s).unwrap();
        let mut known =
            parse(r#"{"email":"a@b.co","city":"Oslo","custom_fields":{"e1":1,"e2":2}}"#);
        known.update(parse(
            r#"{"email":"a@b.co","first_name":"Ann","custom_fields":{"e2":5}}"#,
        ));
        assert_eq!(
            known.texts().collect::<Vec<_>>(),
            vec![("email", "a@b.co"), ("first_name", "Ann"), ("city", "Oslo")]
        );
        assert_eq!(known.custom["e1"], 1);
        assert_eq!(known.custom["e2"], 5);
    }
}
