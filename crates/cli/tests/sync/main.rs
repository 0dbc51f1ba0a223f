//! Incremental runs, mirror mode, resume and the lock, against the emulator over HTTP:
//! what each run sends (from the emulator's request log) and what the lists hold after.

#[path = "../common/mod.rs"]
mod common;
mod resume;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::account::*;
use common::*;
use sendgrid_emulator::{Fault, Faults};

const UPSERT: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mapping:
      email: email
      first_name: first_name";

fn expected(rows: &[Row]) -> BTreeMap<String, String> {
    rows.iter()
        .filter(|r| r.subscribed)
        .map(|r| (r.email.clone(), r.first_name.clone()))
        .collect()
}

#[test]
fn an_unchanged_rerun_sends_nothing_and_a_one_percent_change_sends_only_those() {
    let s = Setup::new(50);
    let mut data = rows(2000);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);

    let (run, first) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(first["sync"]["new"], 2000);
    assert_eq!(first["sent"], 2000);
    assert_eq!(s.list_names(LIST), expected(&data));
    let snapshot = s.state_dir().join("snapshot.parquet");
    assert_eq!(mode(&snapshot), 0o600);
    let saved = pipeline_sync::Snapshot::load(&snapshot).unwrap().unwrap();
    assert_eq!(saved.entries.len(), 2000);

    let before = s.log_len();
    let (run, second) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(s.upserted_since(before).is_empty(), "nothing is sent");
    assert_eq!(second["sync"]["unchanged"], 2000);
    assert_eq!(second["sent"], 0);
    assert!(run.stdout.contains("\"changed\": 0"), "{}", run.stdout);
    let run = s.run(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("unchanged (not sent)\n  sent: nothing\n"),
        "{}",
        run.stdout
    );

    // 1% of the rows change.
    let mut changed = BTreeSet::new();
    for r in data.iter_mut().filter(|r| r.id % 100 == 3) {
        r.first_name = format!("Renamed{}", r.id);
        changed.insert(email(r.id));
    }
    assert_eq!(changed.len(), 20);
    write_profiles(s.dir.path(), &data);
    // A dry run writes exactly what the run would send, and leaves the state alone.
    let dry = s.run(&["run", file, "--dry-run", "out"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let written: BTreeSet<String> = emails(&contacts(&s.dir.path().join("out/daily")))
        .into_iter()
        .collect();
    assert_eq!(written, changed);
    assert!(
        dry.stdout
            .contains("  wrote: 20 contact(s) in 1 request body"),
        "{}",
        dry.stdout
    );
    let (sent, third) = s.run_sending(&["run", file], 0);
    let sent: BTreeSet<String> = sent.into_iter().collect();
    assert_eq!(sent, changed);
    assert_eq!(
        (
            third["sync"]["changed"].as_u64(),
            third["sync"]["unchanged"].as_u64()
        ),
        (Some(20), Some(1980))
    );
    assert_eq!(s.list_names(LIST), expected(&data));
}

#[test]
fn changing_the_mapping_or_the_lists_resends_what_they_touch() {
    let s = Setup::new(0);
    let data = rows(300);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    assert_eq!(s.run(&["run", file]).code, 0);

    // A new mapped field changes every contact.
    let file = s.pipeline(&format!("{UPSERT}\n      city: city"));
    let before = s.log_len();
    let (run, with_city) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(with_city["sync"]["changed"], 300);
    assert_eq!(s.upserted_since(before).len(), 300);

    // A second list: every contact goes to it.
    let file = s.pipeline(&format!("{UPSERT}\n      city: city").replace(
        "list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]",
        &format!("list_ids: [{LIST}, {OTHER_LIST}]"),
    ));
    let (run, two_lists) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(two_lists["sync"]["changed"], 300);
    assert_eq!(s.list_names(OTHER_LIST), expected(&data));

    // Dropping a field resends and says SendGrid keeps its old values.
    let file = s.pipeline(&UPSERT.replace(
        "list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]",
        &format!("list_ids: [{LIST}, {OTHER_LIST}]"),
    ));
    let (run, dropped) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(dropped["sync"]["changed"], 300);
    assert_eq!(
        dropped["sync"]["notes"][0],
        "field(s) no longer mapped: city; SendGrid keeps the values it has for them"
    );
}

const MIRROR: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mode: mirror
    mapping:
      email: email
      first_name: first_name";

#[test]
fn plan_shows_the_changes_and_mirror_mode_removes_leavers_without_deleting_contacts() {
    let s = Setup::new(0);
    let mut data = rows(100);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(MIRROR);
    assert_eq!(s.run(&["run", file]).code, 0);
    let in_account = s.contacts_in_account();

    for r in data.iter_mut() {
        match r.id {
            1..=5 => r.first_name = format!("Changed{}", r.id),
            6..=9 => r.subscribed = false,
            _ => {}
        }
    }
    data.extend((101..=103).map(|id| Row {
        city: "New".into(),
        ..row(id)
    }));
    write_profiles(s.dir.path(), &data);

    let before = s.log_len();
    let plan = s.run(&["plan", file, "--output", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let planned = &plan.json()["exports"][0]["sync"];
    assert_eq!(
        [
            &planned["new"],
            &planned["changed"],
            &planned["unchanged"],
            &planned["leavers"]
        ],
        [3, 5, 91, 4]
    );
    assert_eq!(planned["removal"], "planned");
    let table = s.run(&["plan", file]);
    assert!(
        table
            .stdout
            .contains("changes: 3 new, 5 changed, 91 unchanged (not sent)"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("mirror: 4 leaver(s) would be taken off the lists (4.0% of a list)"),
        "{}",
        table.stdout
    );
    assert_eq!(s.log_len(), before, "a plan does not call SendGrid");

    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sync"]["removed"], 4);
    assert_eq!(summary["sync"]["removal"], "done");
    assert_eq!(s.list_names(LIST), expected(&data));
    assert_eq!(
        s.contacts_in_account(),
        in_account + 3,
        "leavers stay in the account"
    );
    let log = s.emulator.requests();
    assert!(
        log.iter()
            .all(|r| !(r.method == "DELETE" && r.path == "/v3/marketing/contacts")),
        "no contact deleted"
    );
    let searches = log
        .iter()
        .filter(|r| r.path == "/v3/marketing/contacts/search/emails")
        .count();
    assert_eq!(searches, 1);

    // The leavers are forgotten: the next run has nothing to do.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert_eq!(again["sync"]["leavers"], 0);
    assert!(sent.is_empty());
}

#[test]
fn a_member_this_run_rejects_is_not_taken_off_the_list() {
    let s = Setup::new(0);
    let mut data = rows(20);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(&format!(
        "{MIRROR}\n    field_length_policy: reject\n    allowed_rejects: 1"
    ));
    assert_eq!(s.run(&["run", file]).code, 0);
    data[0].first_name = "x".repeat(51);
    write_profiles(s.dir.path(), &data);
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["rejected"], 1);
    assert_eq!(summary["sync"]["leavers"], 0);
    assert!(s.list_names(LIST).contains_key(&email(1)), "still a member");
}

#[test]
fn a_contact_too_large_for_any_request_is_rejected_and_remembered_not_sent() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(5));
    // Customer 3's `bio` alone is more than a request may hold: it failed the whole run
    // once it was reached.
    let text = s.pipeline_text(
        "",
        "{ format: parquet, path: data/profiles.parquet }",
        &format!(
            "{UPSERT}
      custom_fields:
        bio: CASE WHEN customer_id = 3 THEN repeat('x', 6000000) ELSE 'short' END
    create_missing_fields: true"
        ),
    );
    let file = write(s.dir.path(), &text);
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(summary["sent"], 4);
    assert_eq!(summary["rejected_by_reason"]["contact_too_large"], 1);
    assert_eq!(
        s.upserted_since(0),
        [1, 2, 4, 5].map(email),
        "the others went out"
    );
    let rejects = std::fs::read_to_string(s.dir.path().join("rejects/daily.rejects.jsonl"))
        .expect("a rejects file");
    let reject: serde_json::Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(reject["email"], email(3));
    assert_eq!(reject["reason"], "contact_too_large");
    let detail = reject["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the contact encodes to 6000")
            && detail.contains("but a SendGrid request holds at most 59999")
            && detail.ends_with("its largest field, `custom_fields.bio`, takes 6000002"),
        "{detail}"
    );

    // Unchanged, it is not tried again; the others are unchanged too.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["still_refused"], 1);
}

#[test]
fn the_mass_removal_guard_refuses_until_allowed() {
    let s = Setup::new(0);
    let mut data = rows(100);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(MIRROR);
    assert_eq!(s.run(&["run", file]).code, 0);
    for r in data.iter_mut().filter(|r| r.id <= 30) {
        r.subscribed = false;
    }
    write_profiles(s.dir.path(), &data);

    let refused = s.run(&["run", file]);
    assert_eq!(refused.code, 7, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "error: export `daily`: mirror mode would take 30 contact(s), 30.0% of a list, off its lists; the limit is 20.0% (max_removal_share)"
        ),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--allow-mass-removal"));
    assert_eq!(s.list_names(LIST).len(), 100, "nothing removed");

    let allowed = s.run(&["run", file, "--allow-mass-removal"]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(s.list_names(LIST), expected(&data));
}

#[test]
fn a_run_that_would_add_more_new_contacts_than_allowed_sends_nothing() {
    let s = Setup::new(0);
    let mut data = rows(100);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(&format!("{UPSERT}\n    max_new_contacts: 50"));

    let plan = s.run(&["plan", file]);
    assert_eq!(plan.code, 8, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "new contacts: 100 not yet synced by this export (max_new_contacts 50): a run would send nothing"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stderr
            .contains("error: export `daily`: 100 new contact(s), more than max_new_contacts (50)"),
        "{}",
        plan.stderr
    );
    let (run, refused) = s.run_json(&["run", file]);
    assert_eq!(run.code, 8, "{}", run.stderr);
    assert_eq!(refused["sync"]["new_contacts_refused"], true);
    assert_eq!(refused["sent"], 0);
    assert!(s.upserted_since(0).is_empty(), "nothing was sent");
    // Said on stderr too, where an orchestrator's log shows it, and kept in the history.
    let said = "export `daily`: 100 new contact(s), more than max_new_contacts (50): nothing was sent; narrow the segments or raise max_new_contacts";
    assert!(
        run.stderr.contains(&format!("error: {said}\n")),
        "{}",
        run.stderr
    );
    let history = s.run(&["history", file]);
    assert!(
        history
            .stdout
            .contains("  why runs did not succeed, newest first:\n    ")
            && history
                .stdout
                .contains(said.strip_prefix("export `daily`: ").unwrap()),
        "{}",
        history.stdout
    );

    let file = s.pipeline(&format!("{UPSERT}\n    max_new_contacts: 150"));
    let (run, first) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(first["sent"], 100);
    assert_eq!(first["sync"]["max_new_contacts"], 150);

    // Changed contacts are not new: only the 160 added ones count.
    for r in data.iter_mut().take(10) {
        r.first_name = format!("Changed{}", r.id);
    }
    data.extend((101..=260).map(row));
    write_profiles(s.dir.path(), &data);
    let (sent, over) = s.run_sending(&["run", file], 8);
    assert_eq!(
        (
            over["sync"]["new"].as_u64(),
            over["sync"]["changed"].as_u64()
        ),
        (Some(160), Some(10))
    );
    assert!(sent.is_empty());

    let check = s.run(&["check", file]);
    assert!(
        check.stdout.contains(
            "ok   connection marketing: the account holds 100 contact(s), 100 billable this month"
        ),
        "{}",
        check.stdout
    );
}

#[test]
fn suppressed_contacts_are_counted_by_plan_and_left_out_with_skip_suppressed() {
    let s = Setup::with(sendgrid_emulator::Config {
        suppressions: vec![
            ("bounced".into(), email(3)),
            ("unsubscribed".into(), email(5).to_uppercase()),
            ("spam_report".into(), email(7)),
            ("invalid".into(), "nobody@example.com".into()),
        ],
        ..sendgrid_emulator::Config::default()
    });
    write_profiles(s.dir.path(), &rows(20));
    let file = s.pipeline(UPSERT);
    let reads_lists = |s: &Setup| {
        s.emulator
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v3/suppression/"))
            .count()
    };

    // A plain run does not read the suppression lists.
    let (run, _) = s.run_json(&["run", file, "--dry-run", "out"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(reads_lists(&s), 0);

    let plan = s.run(&["plan", file, "--suppressions"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "suppressed: 3 selected contact(s) on SendGrid's suppression lists (bounced 1, spam_report 1, unsubscribed 1): SendGrid will not email them; skip_suppressed leaves them out"
        ),
        "{}",
        plan.stdout
    );
    assert_eq!(reads_lists(&s), 5, "one page of each list");

    let file = s.pipeline(&format!("{UPSERT}\n    skip_suppressed: true"));
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sent"], 17);
    assert_eq!(summary["sync"]["suppressed"]["bounced"], 1);
    assert_eq!(summary["sync"]["suppressed_skipped"], true);
    let sent = s.upserted_since(0);
    for left_out in [email(3), email(5), email(7)] {
        assert!(!sent.contains(&left_out), "{left_out} was sent");
    }
    assert_eq!(s.emulator.list_emails(LIST).len(), 17);

    // Unchanged: nothing is sent, the suppressed ones still counted and left out.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["unchanged"], 17);
}

#[test]
fn every_run_leaves_a_line_in_the_exports_history() {
    let s = Setup::new(0);
    let mut data = rows(30);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    assert_eq!(s.run(&["run", file]).code, 0);
    data[0].first_name = "Changed".into();
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 0);
    // Plans and dry runs are not runs.
    assert_eq!(s.run(&["plan", file]).code, 0);
    assert_eq!(s.run(&["run", file, "--dry-run", "out"]).code, 0);
    // A failed run is recorded with its reason.
    s.emulator.script(Faults {
        jobs: [Fault::FailJob].into(),
        ..Faults::default()
    });
    data[1].first_name = "Changed too".into();
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 4);

    let history = s.run(&["history", file, "--output", "json"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    let runs = history.json()["exports"][0]["runs"].clone();
    let seen: Vec<(String, u64, u64, u64)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["sent"].as_u64().unwrap(),
                r["new"].as_u64().unwrap(),
                r["changed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("success".to_owned(), 30, 30, 0),
            ("success".to_owned(), 1, 0, 1),
            ("run_failed".to_owned(), 1, 0, 1),
        ]
    );
    assert_eq!(runs[0]["created"], 30);
    assert_eq!(runs[1]["updated"], 1);
    assert_eq!(runs[0]["job_ids"].as_array().unwrap().len(), 1);
    assert_eq!(runs[2]["exit_code"], 4);

    let table = s.run(&["history", file, "--last", "1"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.starts_with("export daily: 1 run(s)\n"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("run_failed"), "{}", table.stdout);
    // The table says why the run failed, under it, without the export's name again.
    let error = runs[2]["error"].as_str().unwrap();
    let why = error.strip_prefix("export `daily`: ").unwrap_or(error);
    let (_, under) = table
        .stdout
        .split_once("  why runs did not succeed, newest first:\n    ")
        .unwrap_or_else(|| panic!("no reason under the table:\n{}", table.stdout));
    assert!(
        under.trim_end().ends_with(&format!("  {why}")),
        "{}",
        table.stdout
    );
    assert!(!why.is_empty() && !why.contains("export `daily`"), "{why}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(s.state_dir().join("history.jsonl")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn an_export_that_fails_does_not_stop_the_others_and_the_run_says_both() {
    let s = Setup::new(0);
    let data = rows(20);
    write_profiles(s.dir.path(), &data);
    // `daily` names a list the account lacks; `weekly`, after it, one it has.
    let file = s.pipeline(&format!(
        "    list_ids: [22222222-2222-4222-8222-222222222222]
    mapping:
      email: email
  - name: weekly
    connection: marketing
    segments: [subscribed]
    list_ids: [{LIST}]
    mapping:
      email: email
      first_name: first_name"
    ));
    let run = s.run(&["run", file, "--output", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let doc = run.json();
    let said = "export `daily`: list 22222222-2222-4222-8222-222222222222 does not exist in this SendGrid account: create it, or fix list_ids of export `daily`";
    assert_eq!(doc["status"], "config_error");
    assert_eq!(doc["error"], said);
    assert_eq!(doc["failed"][0]["export"], "daily");
    assert_eq!(doc["failed"][0]["exit_code"], 2);
    assert_eq!(doc["failed"].as_array().unwrap().len(), 1);
    assert!(
        run.stderr.contains(&format!("error: {said}\n")),
        "{}",
        run.stderr
    );
    // The other export ran to its end, and its summary is in the document.
    assert_eq!(doc["exports"].as_array().unwrap().len(), 1);
    assert_eq!(doc["exports"][0]["export"], "weekly");
    assert_eq!(doc["exports"][0]["sent"], expected(&data).len());
    assert_eq!(s.list_names(LIST), expected(&data));
    // Each export's history says how its run ended.
    let history = s.run(&["history", file, "--output", "json"]).json();
    let outcomes: Vec<(&str, &str)> = history["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["export"].as_str().unwrap(),
                e["runs"][0]["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("daily", "config_error"), ("weekly", "success")]);
}

#[test]
fn an_export_that_fails_while_sending_leaves_the_next_exports_journal_open() {
    let s = Setup::new(0);
    let data = rows(120);
    write_profiles(s.dir.path(), &data);
    // One body at a time: `daily`'s first body is accepted, its second refused with 500
    // on both attempts, which fails the export after its journal took the first.
    let text = s
        .pipeline_text(
            "",
            "{ format: parquet, path: data/profiles.parquet }",
            &format!(
                "    list_ids: [{LIST}]
    mapping:
      email: email
  - name: weekly
    connection: marketing
    segments: [subscribed]
    contacts_per_request: 50
    list_ids: [{LIST}]
    mapping:
      email: email
      first_name: first_name"
            ),
        )
        .replace(
            "    max_attempts: 2\n",
            "    max_attempts: 2\n    concurrency: 1\n",
        );
    let file = write(s.dir.path(), &text);
    s.emulator.script(Faults {
        upserts: [
            Fault::Delay { ms: 0 },
            Fault::Status { status: 500 },
            Fault::Status { status: 500 },
        ]
        .into(),
        ..Faults::default()
    });
    let (sent, _) = s.run_sending(&["run", file], 4);
    // `weekly` sent its three bodies, journaled and folded into its state.
    assert_eq!(sent.len(), 50 + 120, "{sent:?}");
    let (again, summary) = s.run_sending(&["run", file, "--export", "weekly"], 0);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(summary["sync"]["unchanged"], 120);
    // `daily`'s journal kept its accepted body: its next run sends only the other 70.
    let (rest, summary) = s.run_sending(&["run", file, "--export", "daily"], 0);
    assert_eq!(rest.len(), 70, "{rest:?}");
    assert_eq!(summary["sync"]["unchanged"], 50);
}

#[test]
fn two_pipeline_files_beside_each_other_do_not_share_an_exports_state() {
    let s = Setup::new(0);
    let mut data = rows(20);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    assert_eq!(s.run(&["run", file]).code, 0);
    // Another file beside it with an export of the same name, which mirrors its segment:
    // with the first file's state as its own, it would take the first file's contacts off
    // the list as leavers.
    let text = std::fs::read_to_string(s.dir.path().join(file)).unwrap();
    let other = text.replace(
        "WHERE is_subscribed",
        "WHERE is_subscribed AND customer_id <= 5",
    ) + "\n    mode: mirror\n";
    assert_ne!(text, other.trim_end());
    std::fs::write(s.dir.path().join("weekly.yaml"), other).unwrap();
    let from = s.log_len();
    for command in ["plan", "run"] {
        let refused = s.run(&[command, "weekly.yaml"]);
        assert_eq!(refused.code, 2, "{}", refused.stderr);
        assert!(
            refused.stderr.contains(&format!(
                "error: the state folder ./.state/daily holds export `daily` of {file}, which is beside weekly.yaml: two pipeline files with an export of one name share its state folder, and each file's runs would take the other's contacts for their own (and mirror mode would take them off the lists). Give weekly.yaml a state_dir of its own (`state_dir: .state/weekly`), or rename one of the exports\n"
            )),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(s.log_len(), from, "nothing was sent");
    assert_eq!(s.emulator.list_emails(LIST).len(), expected(&data).len());

    // A file renamed takes its state over: nothing has changed, nothing is sent.
    std::fs::rename(s.dir.path().join(file), s.dir.path().join("daily.yaml")).unwrap();
    let (sent, summary) = s.run_sending(&["run", "daily.yaml"], 0);
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(summary["sync"]["unchanged"], expected(&data).len());
    assert!(
        summary["sync"]["notes"].to_string().contains(&format!(
            "the state was written by runs of {file}, which is not beside daily.yaml: taken over as a renamed pipeline file's state"
        )),
        "{summary}"
    );
    // And keeps it: the next run of the renamed file says nothing of it.
    data[0].first_name = "Changed".into();
    write_profiles(s.dir.path(), &data);
    let (sent, summary) = s.run_sending(&["run", "daily.yaml"], 0);
    assert_eq!(sent, [data[0].email.clone()]);
    assert!(
        !summary["sync"]["notes"].to_string().contains("renamed"),
        "{summary}"
    );
}

#[test]
fn requests_to_an_endpoint_on_this_machine_never_go_through_the_environments_proxy() {
    let s = Setup::new(0);
    let data = rows(10);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    // A proxy that only listens: a request sent through it would wait here, unanswered.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    let run = pipeline(
        s.dir.path(),
        &["run", file],
        &[
            ("SENDGRID_API_KEY", KEY),
            ("HTTP_PROXY", &url),
            ("HTTPS_PROXY", &url),
            ("ALL_PROXY", &url),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.list_names(LIST), expected(&data));
    // Not one connection reached it: the key went to the endpoint only.
    assert_eq!(
        proxy.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
}

/// One export can end two ways at once: its import job failed, and it rejected more rows
/// than it allows. The run exits with the graver (4); stderr and the export's history say
/// both.
#[test]
fn an_export_with_a_failed_import_job_and_too_many_rejects_says_both() {
    let s = Setup::new(0);
    let mut data = rows(30);
    data[10].email = "broken".into();
    data[11].email = "broken-too".into();
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(&format!(
        "    list_ids: [{LIST}]
    allowed_rejects: 1
    mapping:
      email: email
      first_name: first_name"
    ));
    s.emulator.script(Faults {
        jobs: [Fault::FailJob].into(),
        ..Default::default()
    });
    let run = s.run(&["run", file]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let failed = "export `daily`: import jobs did not complete: ";
    let rejected = "export `daily`: 2 contact(s) rejected, 1 allowed (allowed_rejects)";
    for said in [failed, rejected] {
        assert!(run.stderr.contains(said), "{said}\n{}", run.stderr);
    }
    let history = s.run(&["history", file, "--output", "json"]).json();
    let last = &history["exports"][0]["runs"][0];
    assert_eq!(last["outcome"], "run_failed", "{last}");
    assert_eq!(last["exit_code"], 4, "{last}");
    let error = last["error"].as_str().unwrap();
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 2, "{error}");
    assert!(lines[0].starts_with(failed), "{error}");
    assert!(lines[1].starts_with(rejected), "{error}");
}
