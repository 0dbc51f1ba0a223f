use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, ListBuilder, StringArray, StringBuilder};
use serde_json::{Value, json};

use super::*;

fn fields() -> Vec<ContactField> {
    [
        ("email", FieldKind::Reserved),
        ("first_name", FieldKind::Reserved),
        ("alternate_emails", FieldKind::Reserved),
        ("ltv", FieldKind::Custom),
        ("visits", FieldKind::Custom),
    ]
    .into_iter()
    .map(|(name, kind)| ContactField {
        name: name.into(),
        kind,
    })
    .collect()
}

fn batch(n: usize) -> RecordBatch {
    let emails: StringArray = (0..n).map(|i| Some(format!("c{i}@example.com"))).collect();
    let names: StringArray = (0..n)
        .map(|i| (i % 2 == 0).then(|| format!("Zoë \"{i}\"\n")))
        .collect();
    let mut alternates = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        if i % 3 == 0 {
            alternates
                .values()
                .append_value(format!("alt{i}@example.com"));
            alternates.append(true);
        } else {
            alternates.append(false);
        }
    }
    let ltv: Float64Array = (0..n)
        .map(|i| match i % 3 {
            0 => Some(i as f64 + 0.5),
            1 => Some(f64::NAN),
            _ => None,
        })
        .collect();
    let visits: Int64Array = (0..n).map(|i| (i % 4 != 1).then_some(i as i64)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(emails),
        Arc::new(names),
        Arc::new(alternates.finish()),
        Arc::new(ltv),
        Arc::new(visits),
    ];
    RecordBatch::try_from_iter(
        ["email", "first_name", "alternate_emails", "ltv", "visits"]
            .into_iter()
            .zip(columns),
    )
    .unwrap()
}

fn encode(encoder: &mut BodyEncoder, batch: &RecordBatch) -> Vec<Body> {
    let mut bodies = Vec::new();
    encoder
        .push_batch(batch, |b| {
            bodies.push(b);
            Ok(())
        })
        .unwrap();
    bodies
}

#[test]
fn encodes_fields_omits_nulls_and_nests_custom_fields() {
    let lists = vec!["l1".to_string()];
    let mut encoder = BodyEncoder::new(&lists, fields());
    assert!(encode(&mut encoder, &batch(4)).is_empty());
    let body = encoder.finish().unwrap();
    assert_eq!(body.contacts, 4);
    let parsed: Value = serde_json::from_slice(&body.bytes).unwrap();
    assert_eq!(
        parsed,
        json!({
            "list_ids": ["l1"],
            "contacts": [
                {"email": "c0@example.com", "first_name": "Zoë \"0\"\n",
                 "alternate_emails": ["alt0@example.com"],
                 "custom_fields": {"ltv": 0.5, "visits": 0}},
                {"email": "c1@example.com"},
                {"email": "c2@example.com", "first_name": "Zoë \"2\"\n",
                 "custom_fields": {"visits": 2}},
                {"email": "c3@example.com", "alternate_emails": ["alt3@example.com"],
                 "custom_fields": {"ltv": 3.5, "visits": 3}},
            ]
        })
    );
}

#[test]
fn cuts_bodies_at_the_contact_limit() {
    let mut encoder = BodyEncoder::with_limits(&[], fields(), 3, MAX_BODY_BYTES);
    let mut bodies = encode(&mut encoder, &batch(7));
    bodies.extend(encoder.finish());
    let counts: Vec<usize> = bodies.iter().map(|b| b.contacts).collect();
    assert_eq!(counts, [3, 3, 1]);
    for b in &bodies {
        let v: Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v["contacts"].as_array().unwrap().len(), b.contacts);
    }
}

#[test]
fn cuts_bodies_strictly_under_the_byte_limit() {
    let limit = 400;
    let mut encoder = BodyEncoder::with_limits(&[], fields(), 30_000, limit);
    let mut bodies = encode(&mut encoder, &batch(50));
    bodies.extend(encoder.finish());
    assert!(bodies.len() > 2);
    let total: usize = bodies.iter().map(|b| b.contacts).sum();
    assert_eq!(total, 50);
    for b in &bodies {
        assert!(b.bytes.len() < limit, "{} bytes", b.bytes.len());
        serde_json::from_slice::<Value>(&b.bytes).unwrap();
    }
}

#[test]
fn a_contact_no_body_can_hold_is_rejected_and_the_others_go_out() {
    let limit = 400;
    let mut encoder = BodyEncoder::with_limits(&["l1".into()], fields(), 30_000, limit);
    let mut rows = batch(3);
    // The second contact's name alone is longer than a body may be.
    let names: StringArray = [Some("Ann"), Some(&*"é".repeat(300)), None]
        .into_iter()
        .collect();
    let mut columns = rows.columns().to_vec();
    columns[1] = Arc::new(names);
    rows = RecordBatch::try_new(rows.schema(), columns).unwrap();
    let mut bodies = encode(&mut encoder, &rows);
    let rejected = encoder.take_too_large();
    assert!(encoder.take_too_large().is_empty(), "taken once");
    bodies.extend(encoder.finish());
    let sent: Vec<Value> = bodies
        .iter()
        .flat_map(|b| {
            let v: Value = serde_json::from_slice(&b.bytes).unwrap();
            v["contacts"].as_array().unwrap().clone()
        })
        .collect();
    let emails: Vec<&str> = sent.iter().map(|c| c["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["c0@example.com", "c2@example.com"]);
    assert_eq!(rejected.len(), 1);
    let reject = &rejected[0];
    assert_eq!(reject.email, "c1@example.com");
    assert_eq!(reject.reason, CONTACT_TOO_LARGE);
    assert_eq!(reject.hash, None, "no hashes in these batches");
    // The body's frame `{"list_ids":["l1"],"contacts":[` and `]}` takes 33 of the 400,
    // a contact's `,` one more, and a body stays strictly under its limit.
    assert_eq!(
        reject.message,
        "the contact encodes to 642 bytes, but a SendGrid request holds at most 365 bytes \
         of contacts beside its list ids; its largest field, `first_name`, takes 602"
    );
}

#[test]
fn string_escaping_matches_serde_json() {
    for s in [
        "plain",
        "quote\" back\\slash",
        "ctl\u{1}\u{1f}\t\r\n",
        "日本語 Ωμέγα",
        "",
    ] {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
    }
}

#[test]
fn wrong_column_count_is_an_internal_error() {
    let mut encoder = BodyEncoder::new(&[], fields()[..2].to_vec());
    let err = encoder.push_batch(&batch(1), |_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("5 columns, the export maps 2"),
        "{err}"
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn email_and_name() -> Vec<ContactField> {
        fields()[..2].to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        /// Any text, any length mix: every body is valid JSON under the byte limit,
        /// holds at most the contact limit, and gives back exactly what went in.
        #[test]
        fn any_text_encodes_to_valid_json_that_round_trips(
            names in proptest::collection::vec(proptest::option::of(".{0,200}"), 1..60),
            per_body in 1usize..10,
            limit in 2_000usize..8_000,
        ) {
            let emails = StringArray::from_iter_values((0..names.len()).map(|i| format!("c{i}@example.com")));
            let given = StringArray::from(names.clone());
            let batch = RecordBatch::try_from_iter([
                ("email", Arc::new(emails) as ArrayRef),
                ("first_name", Arc::new(given) as ArrayRef),
            ])
            .unwrap();
            let mut encoder = BodyEncoder::with_limits(&["l1".into()], email_and_name(), per_body, limit);
            let mut bodies = encode(&mut encoder, &batch);
            bodies.extend(encoder.finish());
            let mut back = Vec::new();
            for body in &bodies {
                prop_assert!(body.bytes.len() < limit, "{} bytes", body.bytes.len());
                prop_assert!(body.contacts <= per_body);
                let v: Value = serde_json::from_slice(&body.bytes).unwrap();
                let contacts = v["contacts"].as_array().unwrap();
                prop_assert_eq!(contacts.len(), body.contacts);
                back.extend(contacts.iter().map(|c| c.get("first_name").and_then(Value::as_str).map(str::to_owned)));
            }
            prop_assert_eq!(back, names);
        }
    }
}
