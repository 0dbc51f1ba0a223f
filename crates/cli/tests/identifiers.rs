//! Exports keyed by an identifier other than the email: contacts without an email, dedupe
//! and state by that identifier, SendGrid's rule that an update carries all of a contact's
//! identifiers (held back by the state, enforced by the emulator), and mirror removals
//! looked up by the identifier.

mod common;

use common::account::*;
use common::*;
use serde_json::{Value, json};

/// Keyed by `external_id` (the customer id), with the email beside.
const BY_EXTERNAL_ID: &str = "    identifier: external_id
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mapping:
      external_id: customer_id
      email: email
      first_name: first_name";

/// Twenty profiles: 1 to 3 have no email; 6 has an address SendGrid would refuse; 7 is
/// there twice (the second row, with another email and name, loses the dedupe).
fn profiles() -> Vec<Row> {
    let mut rows = rows(20);
    for r in &mut rows[..3] {
        r.email = String::new();
    }
    rows[5].email = "not-an-address".into();
    let mut twin = row(7);
    twin.email = "twin@example.com".into();
    twin.first_name = "Zed".into();
    rows.push(twin);
    rows
}

/// Every contact in the account by external id: (email, first name, on list `daily`).
fn account(s: &Setup) -> Vec<(String, Option<String>, String, bool)> {
    let state = s.emulator.inspect();
    let on_list: Vec<String> = state["lists"][LIST]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut out: Vec<(String, Option<String>, String, bool)> = s
        .emulator
        .requests()
        .iter()
        .flat_map(|r| r.upserted.iter())
        .filter_map(|u| u.external_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            let contact = find(&state, &id);
            (
                id.clone(),
                contact["email"].as_str().map(str::to_owned),
                contact["first_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                on_list.contains(&id),
            )
        })
        .collect();
    out.sort_by_key(|(id, ..)| id.parse::<i64>().unwrap_or(i64::MAX));
    out
}

/// The contact with external id `id` on any list.
fn find(state: &Value, id: &str) -> Value {
    state["lists"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l["contacts"].as_array().unwrap().iter())
        .find(|c| c["external_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn rejects(s: &Setup) -> Vec<Value> {
    std::fs::read_to_string(s.dir.path().join("rejects/daily.rejects.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn contacts_keyed_by_external_id_need_no_email_and_are_deduplicated_by_it() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &profiles());
    // Customer 4's external id is blank.
    let blank_four = BY_EXTERNAL_ID.replace(
        "external_id: customer_id",
        "external_id: CASE WHEN customer_id = 4 THEN ' ' ELSE CAST(customer_id AS VARCHAR) END",
    );
    let file = s.pipeline(&format!("{blank_four}\n    allowed_rejects: 5"));

    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // 21 rows: 4 has no external id, 6 a bad email, 7 is there twice.
    assert_eq!(summary["rows"], 21);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["rejected_by_reason"]["missing_identifier"], 1);
    assert_eq!(summary["rejected_by_reason"]["invalid_email"], 1);
    assert_eq!(summary["invalid_emails"], json!({"no `@`": 1}));
    assert_eq!(summary["sent"], 18);

    let got = account(&s);
    let ids: Vec<&str> = got.iter().map(|(id, ..)| id.as_str()).collect();
    let expected: Vec<String> = (1..=20)
        .filter(|i| ![4, 6].contains(i))
        .map(|i| i.to_string())
        .collect();
    assert_eq!(ids, expected);
    assert!(got.iter().all(|(.., on_list)| *on_list));
    // Customers 1 to 3 have no email in SendGrid: none was sent.
    for (id, email, ..) in &got[..3] {
        assert_eq!(email, &None, "customer {id}");
    }
    // Customer 7's first row by order_by won: its own email and name.
    let seven = got.iter().find(|(id, ..)| id == "7").unwrap();
    assert_eq!(seven.1.as_deref(), Some(email(7).as_str()));
    assert_eq!(seven.2, "Name7");

    // The rejects file names the rejected rows by the export's identifier, as written.
    let rejected = rejects(&s);
    let named: Vec<(&str, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["external_id"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(named, [(" ", "missing_identifier"), ("6", "invalid_email")]);
    assert!(rejected.iter().all(|r| r.get("email").is_none()));
    // What is wrong with the email beside the key, without the address.
    assert_eq!(rejected[0]["detail"], Value::Null);
    assert_eq!(rejected[1]["detail"], "no `@`");

    // The state knows them by external id: an unchanged rerun sends nothing.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["unchanged"], 18);
}

#[test]
fn a_contact_that_lost_an_identifier_it_was_sent_with_is_held_back() {
    let s = Setup::new(0);
    let mut profiles = rows(10);
    write_profiles(s.dir.path(), &profiles);
    let file = s.pipeline(BY_EXTERNAL_ID);
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Customer 5's email is gone from the table, customer 8 changed its name.
    profiles[4].email = String::new();
    profiles[7].first_name = "Renamed".into();
    write_profiles(s.dir.path(), &profiles);
    let before = s.log_len();
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(summary["rejected_by_reason"]["identifier_dropped"], 1);
    assert_eq!(summary["sent"], 1);
    let sent: Vec<String> = s.emulator.requests()[before..]
        .iter()
        .flat_map(|r| r.upserted.iter())
        .map(|u| u.external_id.clone().unwrap())
        .collect();
    assert_eq!(sent, ["8"]);
    let rejected = rejects(&s);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["external_id"], "5");
    assert_eq!(rejected[0]["reason"], "identifier_dropped");
    assert_eq!(
        rejected[0]["detail"],
        "it was sent to SendGrid with email, which this row has no value for; SendGrid refuses \
         an update without all of a contact's identifiers: map a value for it (or delete the \
         contact in SendGrid and run with --full-refresh)"
    );
    // SendGrid still has customer 5 as it was.
    assert_eq!(find(&s.emulator.inspect(), "5")["email"], email(5));

    // --full-refresh sends everything else again, but never the contact without its email.
    let before = s.log_len();
    let (run, summary) = s.run_json(&["run", file, "--full-refresh"]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(summary["sent"], 9);
    assert!(
        !s.emulator.requests()[before..]
            .iter()
            .flat_map(|r| r.upserted.iter())
            .any(|u| u.external_id.as_deref() == Some("5"))
    );
}

#[test]
fn sendgrid_refuses_an_update_without_all_identifiers_and_the_run_reports_it() {
    let s = Setup::new(0);
    let mut profiles = rows(6);
    write_profiles(s.dir.path(), &profiles);
    let file = s.pipeline(BY_EXTERNAL_ID);
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // The state is lost (a fresh worker, say): nothing remembers what customer 2 was sent
    // with, so its update goes out without the email SendGrid has for it.
    std::fs::remove_dir_all(s.dir.path().join(".state")).unwrap();
    profiles[1].email = String::new();
    profiles[2].first_name = "Renamed".into();
    write_profiles(s.dir.path(), &profiles);
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(summary["rejected_by_reason"]["import_errored"], 1);
    let rejected = rejects(&s);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["external_id"], "2");
    assert_eq!(
        rejected[0]["detail"],
        "email is missing: an update must include all of the contact's identifiers"
    );
    let state = s.emulator.inspect();
    assert_eq!(
        find(&state, "2")["email"],
        email(2),
        "SendGrid kept it as it was"
    );
    assert_eq!(find(&state, "3")["first_name"], "Renamed");

    // The refusal is remembered: the next run does not send it again unchanged.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["still_refused"], 1);
}

#[test]
fn mirror_mode_takes_leavers_off_the_list_by_their_external_id() {
    let s = Setup::new(0);
    let mut profiles = rows(12);
    profiles[1].email = String::new();
    write_profiles(s.dir.path(), &profiles);
    let file = s.pipeline(&format!(
        "{BY_EXTERNAL_ID}\n    mode: mirror\n    max_removal_share: 0.5"
    ));
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Customer 2 (no email) and 12 leave the segment.
    profiles[1].subscribed = false;
    profiles[11].subscribed = false;
    write_profiles(s.dir.path(), &profiles);
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sync"]["leavers"], 2);
    assert_eq!(summary["sync"]["removed"], 2);
    let searched: Vec<String> = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v3/marketing/contacts/search"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        searched,
        ["/v3/marketing/contacts/search/identifiers/external_id"]
    );
    let on_list: Vec<String> = account(&s)
        .into_iter()
        .filter(|(.., on_list)| *on_list)
        .map(|(id, ..)| id)
        .collect();
    let expected: Vec<String> = (1..=11)
        .filter(|i| *i != 2)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(on_list, expected);
    // Both are still contacts of the account: membership only.
    assert_eq!(s.contacts_in_account(), 12);
}

#[test]
fn changing_the_identifier_replaces_the_state_and_says_so() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(5));
    let by_email = s.pipeline(
        "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mapping:
      email: email
      external_id: customer_id",
    );
    let (run, _) = s.run_json(&["run", by_email]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let by_id = s.pipeline(
        "    identifier: external_id
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mapping:
      email: email
      external_id: customer_id",
    );
    let (run, summary) = s.run_json(&["run", by_id]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sent"], 5);
    let notes = summary["sync"]["notes"].to_string();
    assert!(
        notes
            .contains("the state keys contacts by email, this export now keys them by external_id"),
        "{notes}"
    );
    // The contacts were matched by both identifiers: still five.
    assert_eq!(s.contacts_in_account(), 5);
}

#[test]
fn suppressions_are_matched_by_email_whatever_keys_the_export() {
    let s = Setup::with(sendgrid_emulator::Config {
        suppressions: vec![("bounced".into(), email(3))],
        ..sendgrid_emulator::Config::default()
    });
    write_profiles(s.dir.path(), &rows(6));
    let file = s.pipeline(&format!("{BY_EXTERNAL_ID}\n    skip_suppressed: true"));
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sent"], 5);
    assert_eq!(summary["sync"]["suppressed"]["bounced"], 1);
    assert!(find(&s.emulator.inspect(), "3").is_null());

    // Without an email there is nothing to match: skip_suppressed is refused, and plan
    // says why it did not check.
    let no_email = BY_EXTERNAL_ID.replace("      email: email\n", "");
    let file = s.pipeline(&format!("{no_email}\n    skip_suppressed: true"));
    let validate = s.run(&["validate", file]);
    assert_eq!(validate.code, 2, "{}", validate.stderr);
    assert!(
        validate.stderr.contains(
            "exports[0].skip_suppressed: needs `mapping.email`: SendGrid's suppression lists hold addresses"
        ),
        "{}",
        validate.stderr
    );
    let file = s.pipeline(&no_email);
    let plan = s.run(&["plan", file, "--suppressions"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("suppressions not checked: the export maps no email"),
        "{}",
        plan.stdout
    );
}
