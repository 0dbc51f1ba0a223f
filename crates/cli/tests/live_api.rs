//! What the live SendGrid API does that a first guess would not, against the emulator
//! that follows it: countdown rate-limit resets and tight windows, errors files on a
//! storage host that expire, jobs in which every contact errored, and mirror removals of
//! contacts deleted in SendGrid or with addresses too long for search by emails.

mod common;

use std::collections::BTreeSet;

use common::account::*;
use common::*;
use sendgrid_emulator::{Config, Fault, Faults, RateLimits};
use serde_json::Value;

const UPSERT: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    allowed_rejects: 10
    mapping:
      email: email
      first_name: first_name";

const MIRROR: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mode: mirror
    max_removal_share: 1.0
    mapping:
      email: email
      first_name: first_name";

fn subscribed(rows: &[Row]) -> Vec<String> {
    let mut emails: Vec<String> = rows
        .iter()
        .filter(|r| r.subscribed)
        .map(|r| r.email.to_lowercase())
        .collect();
    emails.sort();
    emails
}

fn notes(summary: &Value) -> String {
    summary["sync"]["notes"].to_string()
}

/// An export of 300 contacts in bodies of 50 under a window of 4 requests a second: every
/// run waits for resets many times, and must land everything without a failure.
fn tight_window(unix_resets: bool) {
    let s = Setup::with(Config {
        rate_limits: Some(RateLimits {
            unix_resets,
            ..RateLimits::uniform(4, 1000)
        }),
        ..Config::default()
    });
    let data = rows(300);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), subscribed(&data));
    assert_eq!(summary["sent"], 300);
    assert_eq!(summary["sink"]["retries"], 0);
    let requests = s.emulator.requests();
    let refused = requests.iter().filter(|r| r.status == 429).count() as u64;
    assert_eq!(summary["sink"]["rate_limited"], refused);
    // Waiting whenever the budget is spent means SendGrid refuses almost nothing: at most
    // the requests already in flight when a window closed.
    assert!(refused <= 4, "{refused} requests refused");
    assert!(requests.iter().all(|r| matches!(r.status, 200..=299 | 429)));
}

#[test]
fn a_tight_window_with_countdown_resets_lands_everything() {
    tight_window(false);
}

#[test]
fn a_tight_window_with_unix_time_resets_lands_everything() {
    tight_window(true);
}

#[test]
fn an_errored_job_reads_its_errors_file_from_the_storage_host_without_the_key() {
    let s = Setup::new(0);
    let data = rows(30);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    let refused = [email(3), email(17)];
    s.emulator.script(Faults {
        jobs: [Fault::ErrorJob {
            emails: refused.to_vec(),
        }]
        .into(),
        ..Faults::default()
    });
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["rejected_by_reason"]["import_errored"], 2);
    let download = s
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/errors/"))
        .expect("the errors file was downloaded");
    // The storage host refuses (400) a request that carries an Authorization header.
    assert_eq!(download.status, 200, "sent without the API key");
    let rejects =
        std::fs::read_to_string(s.dir.path().join("rejects/daily.rejects.jsonl")).unwrap();
    for email in &refused {
        assert!(
            rejects.contains(&format!(
                r#""email":"{email}","reason":"import_errored","detail":"undeliverable: bounced, blocked or invalid""#
            )),
            "{rejects}"
        );
    }
    let landed: BTreeSet<String> = s.emulator.list_emails(LIST).into_iter().collect();
    assert_eq!(landed.len(), 28);
    assert!(refused.iter().all(|e| !landed.contains(e)));
}

#[test]
fn an_expired_errors_file_leaves_its_jobs_contacts_unsynced_for_the_next_run() {
    let s = Setup::with(Config {
        errors_file_ttl_ms: Some(0),
        ..Config::default()
    });
    let data = rows(120);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    s.emulator.script(Faults {
        // Bodies may reach SendGrid in either order: the second job holds one of these.
        jobs: [
            Fault::CompleteJob,
            Fault::ErrorJob {
                emails: vec![email(10), email(60)],
            },
        ]
        .into(),
        ..Faults::default()
    });
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let jobs = summary["sink"]["jobs"].as_array().unwrap();
    let unread: Vec<&Value> = jobs
        .iter()
        .filter(|j| j.get("errors_unread").is_some())
        .collect();
    assert_eq!(unread.len(), 1, "{jobs:?}");
    let job_id = unread[0]["job_id"].as_str().unwrap();
    assert!(
        unread[0]["errors_unread"]
            .as_str()
            .unwrap()
            .contains("HTTP 403 (AccessDenied: Request has expired)"),
        "{}",
        unread[0]
    );
    assert!(
        notes(&summary).contains(&format!(
            "import job {job_id} (50 contacts, 1 errored): its errors file could not be downloaded"
        )),
        "{}",
        notes(&summary)
    );
    assert!(
        !run.stdout.contains("X-Amz-Signature"),
        "the pre-signed link is never shown"
    );
    let job_contacts: BTreeSet<String> = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.job_id.as_deref() == Some(job_id))
        .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
        .collect();
    assert_eq!(job_contacts.len(), 50);

    let before = s.log_len();
    let (run, again) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let resent: BTreeSet<String> = s.upserted_since(before).into_iter().collect();
    assert_eq!(
        resent, job_contacts,
        "the unverified job's contacts, and only them"
    );
    assert_eq!(again["sync"]["unchanged"], 70);
}

#[test]
fn a_job_in_which_every_contact_errored_is_not_a_failed_run() {
    let s = Setup::new(0);
    let data = rows(3);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    s.emulator.script(Faults {
        jobs: [Fault::ErrorJob {
            emails: data.iter().map(|r| r.email.clone()).collect(),
        }]
        .into(),
        ..Faults::default()
    });
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let job = &summary["sink"]["jobs"][0];
    assert_eq!(job["status"], "errored", "{job}");
    assert_eq!(job["errored"], 3);
    assert_eq!(summary["rejected_by_reason"]["import_errored"], 3);
    assert!(s.emulator.list_emails(LIST).is_empty());
}

#[test]
fn a_mirror_run_survives_leavers_deleted_in_sendgrid_and_long_addresses() {
    let s = Setup::new(0);
    let mut data = rows(40);
    // 133 characters: more than search by emails takes.
    data[39].email = format!(
        "customer40@{}.{}.example.com",
        "d".repeat(60),
        "e".repeat(50)
    );
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(MIRROR);
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), subscribed(&data));

    // Five leave: one deleted in SendGrid before the run, one deleted between the run's
    // lookup and its removal, one with the long address, and two plain ones.
    for i in [0, 1, 2, 3, 39] {
        data[i].subscribed = false;
    }
    write_profiles(s.dir.path(), &data);
    assert!(s.emulator.delete_contact(&email(1)));
    s.emulator.script(Faults {
        vanish_before_removal: [email(2)].into(),
        ..Faults::default()
    });
    let before = s.log_len();
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sync = &summary["sync"];
    assert_eq!(sync["leavers"], 5);
    assert_eq!(sync["removal"], "done");
    assert_eq!(
        (sync["removed"].as_u64(), sync["not_found"].as_u64()),
        (Some(3), Some(2)),
        "{sync}"
    );
    assert_eq!(s.emulator.list_emails(LIST), subscribed(&data));
    let log = s.emulator.requests();
    let paths: Vec<(&str, u16)> = log[before..]
        .iter()
        .filter(|r| r.path.contains("search") || r.method == "DELETE")
        .map(|r| (r.path.as_str(), r.status))
        .collect();
    assert!(
        paths.contains(&("/v3/marketing/contacts/search/identifiers/email", 200)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&(&format!("/v3/marketing/lists/{LIST}/contacts")[..], 404)),
        "the vanished contact's 404 was met: {paths:?}"
    );

    // The leavers are forgotten: nothing left to remove.
    let (run, again) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(again["sync"]["leavers"], 0);
}
