//! Lists named instead of given by id: resolved through the account's paged lists, created
//! when the export allows it, refused when missing or ambiguous, shown by plan and check.

mod common;

use common::account::*;
use common::*;
use sendgrid_emulator::Config;

const BY_NAME: &str = "    lists: [{ name: daily }]
    mapping:
      email: email
      first_name: first_name";

fn landed_on(s: &Setup, name: &str) -> Vec<String> {
    let state = s.emulator.inspect();
    let (id, _) = state["lists"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, l)| l["name"] == name)
        .unwrap_or_else(|| panic!("no list named {name}"));
    s.emulator.list_emails(id)
}

#[test]
fn a_list_named_by_its_name_gets_the_contacts() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(30));
    let file = s.pipeline(BY_NAME);

    let plan = s.run(&["plan", file]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains(&format!("note: list `daily` is {LIST} (found by name)")),
        "{}",
        plan.stdout
    );
    let check = s.run(&["check", file]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains(&format!("ok   export daily list `daily`: is {LIST}")),
        "{}",
        check.stdout
    );

    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(summary["sent"], 30);
    assert_eq!(s.emulator.list_emails(LIST).len(), 30);
    assert!(s.emulator.list_emails(OTHER_LIST).is_empty());

    // The state knows the list by its id: an unchanged rerun sends nothing.
    let (sent, again) = s.run_sending(&["run", file], 0);
    assert!(sent.is_empty());
    assert_eq!(again["sync"]["unchanged"], 30);
}

#[test]
fn a_mirrored_list_named_in_one_export_and_given_by_id_in_another_is_refused() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(10));
    let two = format!(
        "{BY_NAME}\n    mode: mirror\n  - name: weekly\n    connection: marketing\n    segments: [subscribed]\n    list_ids: [{LIST}]\n    mapping: {{ email: email }}\n"
    );
    let file = s.pipeline(&two);
    // Only SendGrid knows that `daily` is that list.
    let validate = s.run(&["validate", file]);
    assert_eq!(validate.code, 0, "{}", validate.stderr);
    for command in ["plan", "run"] {
        let run = s.run(&[command, file]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "export `daily` mirrors list {LIST}, which export `weekly` also fills: `daily` would take off the list contacts that left its segments but are in `weekly`'s"
            )) && run.stderr.contains("(one names the list, the other gives its id)"),
            "{}",
            run.stderr
        );
    }
    assert!(s.upserted_since(0).is_empty());
    let check = s.run(&["check", file]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    assert!(
        check.stdout.contains(&format!(
            "FAIL export daily mode: export `daily` mirrors list {LIST}, which export `weekly` also fills"
        )),
        "{}",
        check.stdout
    );
}

#[test]
fn a_missing_list_is_an_error_or_is_created_when_the_export_allows_it() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(10));
    let missing = BY_NAME.replace("daily", "VIP customers");
    let file = s.pipeline(&missing);
    let run = s.run(&["run", file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "export `daily`: no list is named `VIP customers` in this SendGrid account: create it, fix the name, or set create_missing_lists: true"
        ),
        "{}",
        run.stderr
    );
    assert!(s.upserted_since(0).is_empty());
    let check = s.run(&["check", file]);
    assert_eq!(check.code, 4, "{}", check.stderr);
    assert!(
        check.stdout.contains(
            "FAIL export daily lists by name: no list is named `VIP customers` in this SendGrid account"
        ),
        "{}",
        check.stdout
    );
    // With a key SendGrid refuses, the connection fails once and no name is looked up.
    let refused = pipeline(
        s.dir.path(),
        &["check", file],
        &[("SENDGRID_API_KEY", "SG.revoked")],
    );
    assert_eq!(
        refused.stdout,
        "FAIL connection marketing: SendGrid refused connection marketing's API key (from ${SENDGRID_API_KEY}) (401): check that the key is right and not revoked\n\
         FAIL export daily: not checked: connection marketing failed\n",
    );

    // A mistake in the file stops the run before any list is created.
    let file = s.pipeline(&format!(
        "{}\n    create_missing_lists: true",
        missing.replace("first_name: first_name", "first_name: no_such_column")
    ));
    let run = s.run(&["run", file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("column `no_such_column` is not in segment"),
        "{}",
        run.stderr
    );
    assert_eq!(s.emulator.inspect()["lists"].as_object().unwrap().len(), 2);

    let file = s.pipeline(&format!("{missing}\n    create_missing_lists: true"));
    let plan = s.run(&["plan", file]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "note: list `VIP customers` does not exist yet: a run creates it (create_missing_lists)"
        ),
        "{}",
        plan.stdout
    );
    assert_eq!(
        s.emulator.inspect()["lists"].as_object().unwrap().len(),
        2,
        "a plan creates nothing"
    );
    let (run, summary) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        summary["sync"]["notes"]
            .to_string()
            .contains("(created by name)"),
        "{summary}"
    );
    assert_eq!(landed_on(&s, "VIP customers").len(), 10);

    // The next run finds it and creates no second one.
    let (run, again) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        again["sync"]["notes"]
            .to_string()
            .contains("(found by name)")
    );
    assert_eq!(s.emulator.inspect()["lists"].as_object().unwrap().len(), 3);
}

#[test]
fn a_name_two_lists_share_is_an_error_that_lists_their_ids() {
    let twin = "5f0c1d9e-8a7b-4c3d-9e2f-00000000d00b";
    let s = Setup::with(Config {
        lists: vec![(twin.into(), "daily".into())],
        ..Config::default()
    });
    write_profiles(s.dir.path(), &rows(5));
    let file = s.pipeline(BY_NAME);
    let run = s.run(&["run", file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "export `daily`: 2 lists are named `daily` ({LIST}, {twin}): name the one you mean by its id in list_ids"
        )),
        "{}",
        run.stderr
    );
    let check = s.run(&["check", file]);
    assert_ne!(check.code, 0);
    assert!(
        check
            .stdout
            .contains("FAIL export daily lists by name: 2 lists are named `daily`"),
        "{}",
        check.stdout
    );
}

#[test]
fn names_are_found_on_any_page_of_the_accounts_lists() {
    // 1,500 lists: the one named is on the second page of 1,000.
    let lists: Vec<(String, String)> = (0..1500)
        .map(|i| {
            (
                format!("00000000-0000-4000-8000-{i:012x}"),
                format!("list {i:04}"),
            )
        })
        .collect();
    let s = Setup::with(Config {
        lists,
        ..Config::default()
    });
    write_profiles(s.dir.path(), &rows(5));
    let file = s.pipeline(&BY_NAME.replace("daily", "list 1499"));
    let (run, _) = s.run_json(&["run", file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        s.emulator
            .list_emails("00000000-0000-4000-8000-0000000005db")
            .len(),
        5
    );
    let pages = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v3/marketing/lists")
        .count();
    assert_eq!(pages, 2);
}

#[test]
fn the_local_emulator_knows_the_named_lists() {
    let dir = sample_dir();
    let text = pipeline_yaml(SEGMENTS, EXPORT).replace(
        &format!("    list_ids: [{LIST}]\n"),
        "    lists: [{ name: Newsletter subscribers }]\n",
    );
    let file = write(dir.path(), &text);
    let run = pipeline(
        dir.path(),
        &["run", file, "--local-emulator", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    let landed = doc["landed"].as_object().unwrap();
    assert_eq!(landed.len(), 1);
    assert_eq!(
        landed.values().next().unwrap().as_array().unwrap().len(),
        13
    );
}
