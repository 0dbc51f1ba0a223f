//! Real exports against the emulator over HTTP on loopback: what lands on the lists, and
//! what every fault leaves behind.

#[path = "../common/mod.rs"]
mod common;
mod keys;

use common::*;
use sendgrid_emulator::{Config, Emulator, Fault, Faults, KeyConfig, marketing_scopes};
use serde_json::{Value, json};

const KEY: &str = "SG.emulated-key-7c1d";

/// The thirteen contacts the sample's vip and high_value segments hold.
const EXPECTED: [&str; 13] = [
    "ada.lovelace@example.com",
    "aoife@example.ie",
    "giorgos@example.gr",
    "grace.hopper@example.com",
    "hubert@example.com",
    "ivan.petrov@example.ru",
    "lucja@example.pl",
    "misaki@example.jp",
    "mohammed@example.com",
    "nguyen.tran@example.vn",
    "ren@example.jp",
    "soren@example.dk",
    "zoe.muller@example.de",
];

struct Setup {
    emulator: Emulator,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Setup {
    fn new(custom_fields: Vec<(&str, &str)>, faults: Faults) -> Self {
        let (rt, emulator) = start_emulator(Config {
            keys: vec![
                KeyConfig {
                    key: KEY.into(),
                    scopes: marketing_scopes(),
                },
                KeyConfig {
                    key: "SG.mail-only".into(),
                    scopes: vec!["mail.send".into()],
                },
            ],
            import_delay_ms: 100,
            lists: vec![(LIST.into(), "newsletter".into())],
            custom_fields: custom_fields
                .into_iter()
                .map(|(n, t)| (n.into(), t.into()))
                .collect(),
            ..Config::default()
        });
        emulator.script(faults);
        Self {
            emulator,
            dir: sample_dir(),
            _rt: rt,
        }
    }

    /// Writes the pipeline with `export` lines and `connection` extra lines, pointed at the emulator.
    fn pipeline(&self, export: &str, connection: &str) -> &'static str {
        let text = pipeline_yaml(SEGMENTS, export).replace(
            "    data_privacy_consent: true\n",
            &format!(
                "    data_privacy_consent: true\n    endpoint: {}\n{connection}",
                self.emulator.url()
            ),
        );
        write(self.dir.path(), &text)
    }

    fn run(&self, args: &[&str], key: &str) -> Run {
        pipeline(self.dir.path(), args, &[("SENDGRID_API_KEY", key)])
    }

    fn upserted_emails(&self) -> Vec<String> {
        self.emulator
            .requests()
            .iter()
            .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
            .collect()
    }
}

const EXPORT_LTV: &str = "    segments: [vip, high_value]
    mapping:
      email: email
      first_name: first_name
      custom_fields: { lifetime_value: lifetime_value }
    order_by: customer_id
    allowed_rejects: 100";

fn summary(run: &Run) -> Value {
    run.json()["exports"][0].clone()
}

fn import_totals(s: &Value) -> (u64, u64, u64) {
    let jobs = s["sink"]["jobs"].as_array().unwrap();
    let sum = |k: &str| jobs.iter().map(|j| j[k].as_u64().unwrap()).sum();
    (sum("requested"), sum("created"), sum("errored"))
}

#[test]
fn a_full_export_lands_exactly_the_expected_contacts() {
    let s = Setup::new(vec![("lifetime_value", "Number")], Faults::default());
    let file = s.pipeline(EXPORT_LTV, "");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), EXPECTED);
    let state = s.emulator.inspect();
    let contacts = state["lists"][LIST]["contacts"].as_array().unwrap();
    let grace = contacts
        .iter()
        .find(|c| c["email"] == "grace.hopper@example.com")
        .unwrap();
    assert_eq!(grace["first_name"], "Grace");
    assert_eq!(grace["custom_fields"], json!({"lifetime_value": 8200.5}));
    // Only mapped fields leave the machine.
    let keys: std::collections::BTreeSet<&str> = contacts
        .iter()
        .flat_map(|c| c.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert_eq!(
        keys,
        ["custom_fields", "email", "first_name"]
            .into_iter()
            .collect()
    );
    let sum = summary(&run);
    assert_eq!(import_totals(&sum), (13, 13, 0));
    assert_eq!(sum["sink"]["jobs"][0]["status"], "completed");
    assert_eq!(sum["sent"], 13);
}

#[test]
fn a_full_refresh_rerun_updates_instead_of_creating() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT, "");
    assert_eq!(s.run(&["run", file], KEY).code, 0);
    let run = s.run(&["run", file, "--full-refresh", "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary(&run)["sync"]["unchanged"], 13);
    let jobs = &summary(&run)["sink"]["jobs"][0];
    assert_eq!(
        (jobs["created"].as_u64(), jobs["updated"].as_u64()),
        (Some(0), Some(13))
    );
    assert_eq!(s.emulator.list_emails(LIST), EXPECTED);
}

#[test]
fn a_429_storm_is_waited_out_and_never_counted_as_failure() {
    let faults = Faults {
        upserts: vec![Fault::Status { status: 429 }; 3].into(),
        ..Faults::default()
    };
    let s = Setup::new(vec![], faults);
    let file = s.pipeline(EXPORT, "    max_attempts: 2\n");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), EXPECTED);
    let sum = summary(&run);
    assert_eq!(sum["sink"]["rate_limited"], 3);
    assert_eq!(sum["sink"]["retries"], 0);
}

#[test]
fn bursts_of_5xx_dropped_connections_and_timeouts_are_retried() {
    let faults = Faults {
        upserts: vec![
            Fault::Status { status: 500 },
            Fault::Status { status: 503 },
            Fault::Drop,
            Fault::Delay { ms: 2500 },
            Fault::Status { status: 502 },
        ]
        .into(),
        ..Faults::default()
    };
    let s = Setup::new(vec![], faults);
    let file = s.pipeline(EXPORT, "    request_timeout_secs: 1\n");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), EXPECTED);
    assert_eq!(summary(&run)["sink"]["retries"], 5);
    assert_eq!(import_totals(&summary(&run)), (13, 13, 0));
}

#[test]
fn exhausted_retries_fail_the_run_with_its_code() {
    let faults = Faults {
        upserts: vec![Fault::Status { status: 503 }; 4].into(),
        ..Faults::default()
    };
    let s = Setup::new(vec![], faults);
    let file = s.pipeline(EXPORT, "    max_attempts: 2\n");
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("uploading contacts failed after 2 attempts: HTTP 503"),
        "{}",
        run.stderr
    );
    assert!(s.emulator.list_emails(LIST).is_empty());
}

fn poisoned(without_index: bool) {
    let faults = Faults {
        poisoned: [
            "grace.hopper@example.com".to_string(),
            "ren@example.jp".to_string(),
        ]
        .into(),
        poisoned_without_index: without_index,
        ..Faults::default()
    };
    let s = Setup::new(vec![], faults);
    let file = s.pipeline(EXPORT, "");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected: Vec<&str> = EXPECTED
        .iter()
        .copied()
        .filter(|e| *e != "grace.hopper@example.com" && *e != "ren@example.jp")
        .collect();
    assert_eq!(s.emulator.list_emails(LIST), expected);
    let sum = summary(&run);
    assert_eq!(sum["rejected_by_reason"]["sendgrid_rejected"], 2);
    assert_eq!(sum["rejected"], 9);
    assert_eq!(import_totals(&sum).0, 11);
    let rejects =
        std::fs::read_to_string(s.dir.path().join("rejects/newsletter.rejects.jsonl")).unwrap();
    let grace: Value = rejects
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["email"] == "grace.hopper@example.com")
        .unwrap();
    assert_eq!(grace["reason"], "sendgrid_rejected");
    // Good contacts are sent once they are accepted: none twice.
    let mut accepted: Vec<String> = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.status == 202)
        .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
        .collect();
    accepted.sort();
    let mut expected_sorted: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
    expected_sorted.sort();
    assert_eq!(accepted, expected_sorted);
}

#[test]
fn poisoned_contacts_named_by_index_are_isolated() {
    poisoned(false);
}

#[test]
fn poisoned_contacts_without_an_index_are_isolated_by_splitting() {
    poisoned(true);
}

#[test]
fn an_errored_import_job_puts_its_contacts_in_the_rejects() {
    let faults = Faults {
        jobs: vec![Fault::ErrorJob {
            emails: vec!["ada.lovelace@example.com".into()],
        }]
        .into(),
        ..Faults::default()
    };
    let s = Setup::new(vec![], faults);
    let file = s.pipeline(EXPORT, "");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), &EXPECTED[1..]);
    let sum = summary(&run);
    assert_eq!(import_totals(&sum), (13, 12, 1));
    assert_eq!(sum["sink"]["jobs"][0]["status"], "errored");
    assert_eq!(sum["rejected_by_reason"]["import_errored"], 1);
    let rejects =
        std::fs::read_to_string(s.dir.path().join("rejects/newsletter.rejects.jsonl")).unwrap();
    assert!(
        rejects.contains(r#""email":"ada.lovelace@example.com","reason":"import_errored""#),
        "{rejects}"
    );
}

#[test]
fn a_failed_import_job_fails_the_run_and_says_so() {
    let s = Setup::new(
        vec![],
        Faults {
            jobs: vec![Fault::FailJob].into(),
            ..Faults::default()
        },
    );
    let file = s.pipeline(EXPORT, "");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("import jobs did not complete"),
        "{}",
        run.stderr
    );
    assert_eq!(summary(&run)["sink"]["jobs"][0]["status"], "failed");
    assert!(s.emulator.list_emails(LIST).is_empty());
}

#[test]
fn a_bad_key_fails_at_once_and_sends_nothing() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT, "");
    let run = s.run(&["run", file], "SG.wrong");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "SendGrid refused connection marketing's API key (from ${SENDGRID_API_KEY}) (401)"
        ),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty());
    assert_eq!(s.emulator.requests().len(), 1, "no retry on 401");
}

#[test]
fn an_endpoint_that_is_not_sendgrids_api_is_said_to_be_so() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT, "");
    let path = s.dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let url = s.emulator.url();
    // A gateway's path that is not there: check says the endpoint, not a missing resource.
    std::fs::write(&path, text.replace(&url, &format!("{url}/gateway"))).unwrap();
    let run = s.run(&["check", file], KEY);
    assert_eq!(run.code, 4, "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "FAIL connection marketing: {url}/gateway answered 404 (not found) for /v3/scopes, which SendGrid's API always has: check the connection's endpoint (global is https://api.sendgrid.com)"
        )),
        "{}",
        run.stdout
    );
    let asked = s.emulator.requests().len();
    // The API's address as SendGrid's pages write it, version included.
    std::fs::write(&path, text.replace(&url, &format!("{url}/v3/"))).unwrap();
    for command in ["validate", "check", "run"] {
        let run = s.run(&[command, file], KEY);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "connections.marketing.endpoint: `{url}/v3/` ends with /v3, which every request's path starts with (/v3/marketing/...): write `{url}`"
            )),
            "{}",
            run.stderr
        );
    }
    assert_eq!(s.emulator.requests().len(), asked);
}

#[test]
fn a_key_without_marketing_permissions_fails_at_once() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT, "");
    let run = s.run(&["run", file], "SG.mail-only");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "connection marketing's API key (from ${SENDGRID_API_KEY}) lacks Marketing permissions (403)"
        ),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty());
}

#[test]
fn a_missing_list_fails_before_anything_is_sent() {
    let s = Setup::new(vec![], Faults::default());
    let other = "11111111-2222-4333-8444-555555555555";
    let file = s.pipeline(&format!("{EXPORT}\n").replace(LIST, other), "");
    let text = std::fs::read_to_string(s.dir.path().join(file))
        .unwrap()
        .replace(LIST, other);
    std::fs::write(s.dir.path().join(file), text).unwrap();
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("list {other} does not exist")),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty());
}

#[test]
fn a_missing_custom_field_fails_before_anything_is_sent_or_is_created_when_asked() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT_LTV, "");
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("custom field(s) lifetime_value do not exist"),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty());

    let file = s.pipeline(
        &format!("{EXPORT_LTV}\n    create_missing_fields: true"),
        "",
    );
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = s.emulator.inspect();
    let ada = &state["lists"][LIST]["contacts"][0];
    assert_eq!(ada["custom_fields"]["lifetime_value"], 12500.0);
}

#[test]
fn custom_fields_match_whatever_their_case_and_dates_go_as_iso_8601() {
    let s = Setup::new(
        vec![("Lifetime_Value", "Number"), ("Signup_Date", "Date")],
        Faults::default(),
    );
    let file = s.pipeline(
        &EXPORT_LTV.replace(
            "{ lifetime_value: lifetime_value }",
            "{ lifetime_value: lifetime_value, signup_date: signup_date }",
        ),
        "",
    );
    let check = s.run(&["check", file], KEY);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(
        check.stdout.contains(
            "ok   export newsletter custom field lifetime_value: exists as Lifetime_Value"
        ),
        "{}",
        check.stdout
    );
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = s.emulator.inspect();
    let ada = &state["lists"][LIST]["contacts"][0];
    assert_eq!(ada["email"], "ada.lovelace@example.com");
    assert_eq!(ada["custom_fields"]["Lifetime_Value"], 12500.0);
    assert_eq!(ada["custom_fields"]["Signup_Date"], "2022-01-09T00:00:00Z");
}

#[test]
fn a_column_that_cannot_fill_its_fields_type_fails_check_and_run_before_sending() {
    let s = Setup::new(vec![("lifetime_value", "Text")], Faults::default());
    let file = s.pipeline(EXPORT_LTV, "");
    let expected = "custom field lifetime_value is a Text field in SendGrid, but its mapped value is a number: map CAST(<expression> AS VARCHAR) instead";
    let check = s.run(&["check", file], KEY);
    assert_eq!(check.code, 4, "{}", check.stdout);
    assert!(
        check.stdout.contains(&format!(
            "FAIL export newsletter custom field lifetime_value: {expected}"
        )),
        "{}",
        check.stdout
    );
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(expected), "{}", run.stderr);
    assert!(s.upserted_emails().is_empty());
}

#[test]
fn check_gives_a_verdict_per_item() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(EXPORT_LTV, "");
    let run = s.run(&["check", file], KEY);
    assert_eq!(run.code, 4, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("ok   connection marketing: API key accepted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("ok   export newsletter list {LIST}: exists")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("FAIL export newsletter custom field lifetime_value: does not exist"),
        "{}",
        run.stdout
    );

    let run = s.run(&["check", file, "--output", "json"], "SG.mail-only");
    assert_eq!(run.code, 4);
    let checks = run.json()["checks"].clone();
    assert_eq!(checks[1]["ok"], false);
    assert!(checks[1]["detail"].as_str().unwrap().contains("403"));

    let run = s.run(&["check", file], "SG.wrong");
    assert!(
        run.stdout
            .contains("FAIL connection marketing: SendGrid refused connection marketing's API key (from ${SENDGRID_API_KEY}) (401)"),
        "{}",
        run.stdout
    );
    assert!(
        s.upserted_emails().is_empty(),
        "check sends no contact data"
    );
}

#[test]
fn not_waiting_for_import_returns_the_job_ids() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(&format!("{EXPORT}\n    wait_for_import: false"), "");
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let job = &summary(&run)["sink"]["jobs"][0];
    assert_eq!(job["status"], "accepted");
    assert_eq!(job["job_id"].as_str().unwrap().len(), 36);
}

#[test]
fn local_emulator_runs_the_quickstart_and_shows_what_landed() {
    let run = pipeline(
        &repo(),
        &["run", "pipelines/quickstart.yaml", "--local-emulator"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("list {LIST} now holds 13 contact(s):")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("imported: 13 requested, 13 created, 0 updated, 0 errored"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  a***@example.com"), "{}", run.stdout);
}

#[test]
fn truncate_mode_uploads_the_first_contacts_by_order_while_selecting() {
    let s = Setup::new(vec![], Faults::default());
    let file = s.pipeline(
        &format!("{EXPORT}\n    max_profiles: 4\n    on_cap_exceeded: truncate"),
        "",
    );
    let run = s.run(&["run", file, "--output", "json"], KEY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        s.emulator.list_emails(LIST),
        [
            "ada.lovelace@example.com",
            "grace.hopper@example.com",
            "ivan.petrov@example.ru",
            "zoe.muller@example.de"
        ]
    );
    let sum = summary(&run);
    assert_eq!(sum["cap"]["status"], "truncated");
    assert_eq!(sum["cap"]["over_by"], 9);
    assert_eq!(import_totals(&sum), (4, 4, 0));
}
