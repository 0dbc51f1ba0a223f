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
        // Bodies may reach SendGrid in any order: whichever is the second job holds
        // exactly one of these (one per body of 50, 50 and 20).
        jobs: [
            Fault::CompleteJob,
            Fault::ErrorJob {
                emails: vec![email(10), email(60), email(110)],
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
    let size = unread[0]["requested"].as_u64().unwrap();
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
            "import job {job_id} ({size} contacts, 1 errored): its errors file could not be downloaded"
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
    assert_eq!(job_contacts.len() as u64, size);

    let (sent, again) = s.run_sending(&["run", file], 0);
    let resent: BTreeSet<String> = sent.into_iter().collect();
    assert_eq!(
        resent, job_contacts,
        "the unverified job's contacts, and only them"
    );
    assert_eq!(again["sync"]["unchanged"], 120 - size);
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
    data[39].email = long_email(40);
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

#[test]
fn a_contact_refused_for_good_is_remembered_and_not_resent_until_it_changes() {
    let s = Setup::new(0);
    let mut data = rows(30);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    // One refused in the import (errors file), one refused at upload (a 400).
    s.emulator.script(Faults {
        jobs: [Fault::ErrorJob {
            emails: vec![email(4)],
        }]
        .into(),
        poisoned: [email(9)].into(),
        ..Faults::default()
    });
    let (run, first) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(first["rejected_by_reason"]["import_errored"], 1);
    assert_eq!(first["rejected_by_reason"]["sendgrid_rejected"], 1);

    // Unchanged: nothing is sent, and the summary says why.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["still_refused"], 2);
    assert_eq!(again["sync"]["unchanged"], 28);
    let text = s.run(&["plan", file]);
    assert!(
        text.stdout.contains(
            "refused: 2 contact(s) SendGrid refused for good earlier, unchanged since: not sent"
        ),
        "{}",
        text.stdout
    );

    // A changed one is sent again; the other stays remembered.
    data[3].first_name = "Fixed".into();
    write_profiles(s.dir.path(), &data);
    let (sent, changed) = s.run_sending(&["run", file], 0);
    assert_eq!(sent, [email(4)]);
    assert_eq!(changed["sync"]["still_refused"], 1);
    assert!(s.emulator.list_emails(LIST).contains(&email(4)));

    // --full-refresh sends everything, the refused one included.
    let before = s.log_len();
    let (run, _) = s.run_json(&["run", file, "--full-refresh"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.upserted_since(before).len(), 29, "all but the refused");
    let requests = s.emulator.requests();
    assert!(
        requests[before..].iter().any(|r| r.status == 400),
        "the poisoned contact was sent again"
    );
}

#[test]
fn many_refused_contacts_in_a_batch_cost_a_few_bodies_not_one_each() {
    // About two requests per refusal: no rate limit, so the test measures bytes, not waits.
    let s = Setup::with(Config {
        rate_limits: None,
        ..Config::default()
    });
    let data = rows(4700);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    let text = std::fs::read_to_string(s.dir.path().join(file)).unwrap();
    std::fs::write(
        s.dir.path().join(file),
        text.replace("contacts_per_request: 50", "contacts_per_request: 30000")
            .replace("allowed_rejects: 10", "allowed_rejects: 100"),
    )
    .unwrap();
    // 95 refused contacts, spread through the one body; each 400 names only the first.
    let poisoned: BTreeSet<String> = (0..95).map(|i| email(1 + i * 49)).collect();
    s.emulator.script(Faults {
        poisoned: poisoned.clone(),
        first_problem_only: true,
        ..Faults::default()
    });
    let dry = s.run(&["run", file, "--dry-run", "out", "--output", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let full_body = dry.json()["exports"][0]["sink"]["bytes"].as_u64().unwrap();

    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["rejected_by_reason"]["sendgrid_rejected"], 95);
    assert_eq!(s.emulator.list_emails(LIST).len(), 4605);
    let sent = summary["sink"]["bytes"].as_u64().unwrap();
    let refusals = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.status == 400)
        .count();
    assert_eq!(refusals, 95, "each refusal named once");
    // Resending the rest after each 400 would cost 95 bodies; halving costs a few.
    assert!(
        sent < 10 * full_body,
        "{sent} bytes sent for a {full_body}-byte body"
    );
}

#[test]
fn the_dry_run_writes_the_bodies_a_run_sends() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(120));
    let file = s.pipeline(UPSERT);
    let dry = s.run(&["run", file, "--dry-run", "out"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let written: Vec<usize> = bodies(&s.dir.path().join("out/daily"))
        .iter()
        .map(|b| b["contacts"].as_array().unwrap().len())
        .collect();
    assert_eq!(written, [50, 50, 20]);
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut sent: Vec<usize> = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.status == 202 && !r.upserted.is_empty())
        .map(|r| r.upserted.len())
        .collect();
    sent.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sent, written);
}

/// The emails a run's log slice accepted (202), each with its job id.
fn accepted(requests: &[sendgrid_emulator::LoggedRequest]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|r| r.status == 202)
        .filter_map(|r| Some((r.job_id.clone()?, r)))
        .flat_map(|(job, r)| {
            r.upserted
                .iter()
                .map(move |u| (u.email.clone(), job.clone()))
        })
        .collect()
}

/// Every email the rejects file names with a SendGrid refusal.
fn refused_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("rejects/daily.rejects.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            matches!(
                v["reason"].as_str(),
                Some("sendgrid_rejected" | "import_errored")
            )
        })
        .filter_map(|v| v["email"].as_str().map(str::to_owned))
        .collect()
}

/// 200,000 contacts against mixed faults drawn from a printed seed (`SOAK_SEED` replays
/// one): 5xx bursts, dropped connections, 429 storms, slow and failed import jobs,
/// refused contacts. Then unchanged reruns: the list ends exactly right, nothing accepted
/// is sent twice, and each summary says what happened.
#[test]
fn a_soak_under_mixed_faults_ends_exactly_right() {
    let (seed, mut rng) = Lcg::from_env("SOAK_SEED");
    let s = Setup::with(Config {
        import_delay_ms: 200,
        ..Config::default()
    });
    let n = 200_000;
    let data = rows(n);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(&UPSERT.replace(
        "allowed_rejects: 10",
        "allowed_rejects: 5000\n    max_profiles: 1000000",
    ));
    let text = std::fs::read_to_string(s.dir.path().join(file)).unwrap();
    std::fs::write(
        s.dir.path().join(file),
        text.replace("contacts_per_request: 50", "contacts_per_request: 10000")
            .replace("max_attempts: 2", "max_attempts: 4"),
    )
    .unwrap();

    let mut upserts = Vec::new();
    for _ in 0..12 {
        upserts.push(match rng.below(6) {
            0 => Fault::Status { status: 500 },
            1 => Fault::Status { status: 503 },
            2 => Fault::Status { status: 429 },
            3 => Fault::Drop,
            4 => Fault::Delay { ms: 300 },
            _ => Fault::Status { status: 502 },
        });
    }
    let some_emails = |rng: &mut Lcg, k: u64| -> Vec<String> {
        (0..k)
            .map(|_| email(1 + rng.below(n as u64) as i64))
            .collect()
    };
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.push(match rng.below(5) {
            0 => Fault::FailJob,
            1 => Fault::ErrorJob {
                emails: some_emails(&mut rng, 200),
            },
            _ => Fault::CompleteJob,
        });
    }
    let poisoned: BTreeSet<String> = some_emails(&mut rng, 5).into_iter().collect();
    s.emulator.script(Faults {
        upserts: upserts.into(),
        jobs: jobs.into(),
        poisoned: poisoned.clone(),
        ..Faults::default()
    });

    let everyone: BTreeSet<String> = data.iter().map(|r| r.email.clone()).collect();
    let mut imported: BTreeSet<String> = BTreeSet::new();
    // The rejects file holds one run's rejects: the refusals of all runs.
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 6, "seed {seed}: not settled after 5 reruns");
        let before = s.log_len();
        let (run, summary) = s.run_json(&["run", file]);
        let requests = s.emulator.requests();
        let sent = accepted(&requests[before..]);
        refused.extend(refused_in(s.dir.path()));
        // Nothing SendGrid took and imported is sent again; nothing is sent twice in a run.
        let sent_emails: BTreeSet<&String> = sent.iter().map(|(e, _)| e).collect();
        assert_eq!(
            sent_emails.len(),
            sent.len(),
            "seed {seed}: a contact sent twice in run {runs}"
        );
        let again: Vec<&&String> = sent_emails
            .iter()
            .filter(|e| imported.contains(**e))
            .collect();
        assert!(
            again.is_empty(),
            "seed {seed}: run {runs} resent {} imported contact(s)",
            again.len()
        );
        if summary.is_null() {
            // Retries ran out: the run failed with a message; the next run resumes.
            assert_eq!(run.code, 4, "seed {seed}: run {runs}: {}", run.stderr);
            assert!(
                run.json()["error"].is_string(),
                "seed {seed}: {}",
                run.stdout
            );
            continue;
        }
        assert_eq!(
            summary["sent"].as_u64(),
            Some(sent.len() as u64),
            "seed {seed}: run {runs}'s summary counts what was accepted"
        );
        // What the summary says was imported joins the imported set.
        let imported_jobs: BTreeSet<&str> = summary["sink"]["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| matches!(j["status"].as_str(), Some("completed" | "errored")))
            .filter_map(|j| j["job_id"].as_str())
            .collect();
        imported.extend(
            sent.iter()
                .filter(|(_, job)| imported_jobs.contains(job.as_str()))
                .map(|(e, _)| e.clone()),
        );
        if run.code == 0 {
            assert!(
                refused.is_subset(&everyone),
                "seed {seed}: refusals are of selected contacts"
            );
            assert!(
                poisoned.is_subset(&refused),
                "seed {seed}: every poisoned contact refused"
            );
            let landed: BTreeSet<String> = s.emulator.list_emails(LIST).into_iter().collect();
            let expected: BTreeSet<String> = everyone.difference(&refused).cloned().collect();
            let missing: Vec<&String> = expected.difference(&landed).take(5).collect();
            let extra: Vec<&String> = landed.difference(&expected).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "seed {seed}: {} landed, {} expected; missing {missing:?}, extra {extra:?}",
                landed.len(),
                expected.len()
            );
            // Settled: an unchanged rerun sends nothing and counts the refusals.
            let before = s.log_len();
            let (run, last) = s.run_json(&["run", file]);
            assert_eq!(run.code, 0, "seed {seed}: {}", run.stderr);
            assert!(
                accepted(&s.emulator.requests()[before..]).is_empty(),
                "seed {seed}"
            );
            assert_eq!(
                last["sync"]["still_refused"].as_u64(),
                Some(refused.len() as u64)
            );
            assert_eq!(
                last["sync"]["unchanged"].as_u64(),
                Some(n as u64 - refused.len() as u64)
            );
            break;
        }
        assert_eq!(run.code, 4, "seed {seed}: run {runs}: {}", run.stderr);
    }
}
