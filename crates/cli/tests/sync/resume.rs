//! The run lock, and runs that give up or are killed finished by the next one.

use super::*;

#[test]
fn a_second_run_of_the_same_export_is_refused_while_the_first_holds_the_lock() {
    let s = Setup::new(0);
    write_profiles(s.dir.path(), &rows(10));
    let file = s.pipeline(UPSERT);
    std::fs::create_dir_all(s.state_dir()).unwrap();
    let held = pipeline_sync::RunLock::acquire(&s.state_dir().join("run.lock"), "daily").unwrap();
    let busy = s.run(&["run", file]);
    assert_eq!(busy.code, 6, "{}", busy.stderr);
    assert!(
        busy.stderr.contains(&format!(
            "error: export `daily` is already running (pid {}",
            std::process::id()
        )),
        "{}",
        busy.stderr
    );
    assert!(s.emulator.requests().is_empty(), "nothing sent");
    drop(held);
    assert_eq!(s.run(&["run", file]).code, 0);
}

#[test]
fn a_run_that_gives_up_is_finished_by_the_next_without_resending_accepted_bodies() {
    let s = Setup::new(0);
    let data = rows(200);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    // Two bodies are accepted, then the third fails twice (max_attempts: 2).
    s.emulator.script(Faults {
        upserts: [
            Fault::Delay { ms: 0 },
            Fault::Delay { ms: 0 },
            Fault::Status { status: 500 },
            Fault::Status { status: 500 },
        ]
        .into(),
        ..Faults::default()
    });
    // One upload at a time, so the two accepted bodies come first.
    let text = std::fs::read_to_string(s.dir.path().join(file)).unwrap();
    std::fs::write(
        s.dir.path().join(file),
        text.replace(
            "    max_attempts: 2\n",
            "    max_attempts: 2\n    concurrency: 1\n",
        ),
    )
    .unwrap();
    let failed = s.run(&["run", file]);
    assert_eq!(failed.code, 4, "{}", failed.stderr);
    let journal_path = s.state_dir().join("journal.jsonl");
    assert_eq!(mode(&journal_path), 0o600);
    assert_eq!(mode(&s.state_dir()), 0o700);
    let journal = pipeline_sync::read_journal(&journal_path).unwrap();
    assert_eq!(journal.len(), 2);
    let accepted: BTreeSet<String> = journal
        .iter()
        .flat_map(|b| b.contacts.iter().map(|(e, _)| e.clone()))
        .collect();
    assert_eq!(accepted.len(), 100);

    let (sent, resumed) = s.run_sending(&["run", file], 0);
    assert_eq!(resumed["sync"]["resumed_jobs"], 2);
    let resent: BTreeSet<String> = sent.into_iter().collect();
    assert!(
        resent.is_disjoint(&accepted),
        "accepted bodies are not sent again"
    );
    assert_eq!(resent.len(), 100);
    assert_eq!(s.list_names(LIST), expected(&data));
    assert!(!s.state_dir().join("journal.jsonl").exists());
}

#[test]
fn contacts_of_a_failed_import_job_are_sent_again_by_the_next_run() {
    let s = Setup::new(0);
    let data = rows(120);
    write_profiles(s.dir.path(), &data);
    let file = s.pipeline(UPSERT);
    s.emulator.script(Faults {
        jobs: [Fault::FailJob].into(),
        ..Faults::default()
    });
    let (failed, summary) = s.run_json(&["run", file]);
    assert_eq!(failed.code, 4, "{}", failed.stderr);
    let failed_job = summary["sink"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["status"] == "failed")
        .unwrap()
        .clone();
    let lost: BTreeSet<String> = s
        .emulator
        .requests()
        .iter()
        .filter(|r| r.job_id.as_deref() == failed_job["job_id"].as_str())
        .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
        .collect();
    assert_eq!(lost.len() as u64, failed_job["requested"].as_u64().unwrap());

    let (sent, again) = s.run_sending(&["run", file], 0);
    let resent: BTreeSet<String> = sent.into_iter().collect();
    assert_eq!(
        resent, lost,
        "only the failed job's contacts are sent again"
    );
    assert_eq!(again["sync"]["unchanged"], 120 - lost.len() as u64);
}

/// Ctrl-C (SIGINT) and an orchestrator stopping a task (SIGTERM) end a run with a message
/// and the shell's exit code for the signal; the lock is released, and the next run
/// finishes the export without sending again what the journal holds.
#[test]
fn an_interrupted_run_says_so_and_the_next_run_finishes_it() {
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let s = Setup::new(100);
        let data = rows(600);
        write_profiles(s.dir.path(), &data);
        let file = s.pipeline(UPSERT);
        // Slow uploads: the signal lands while bodies are still going out.
        s.emulator.script(Faults {
            upserts: (0..20).map(|_| Fault::Delay { ms: 200 }).collect(),
            ..Faults::default()
        });
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["run", file])
            .current_dir(s.dir.path())
            .env("SENDGRID_API_KEY", KEY)
            .env_remove("PIPELINE_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The signal lands once the journal holds an accepted body (a body SendGrid
        // accepted whose answer comes after the signal is not journaled).
        let journal_at = s.state_dir().join("journal.jsonl");
        let journaled_any =
            || pipeline_sync::read_journal(&journal_at).is_ok_and(|j| !j.is_empty());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !journaled_any() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{name}: the run ended first"
            );
            assert!(Instant::now() < deadline, "{name}: no body journaled");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill sends a signal to the child, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: interrupted by {name}: what SendGrid accepted so far is in each export's journal, and the next run finishes the export without sending it again"
            )),
            "{name}: {stderr}"
        );
        // Released, not left behind: a killed run's lock keeps its holder's note.
        assert_eq!(
            std::fs::read_to_string(s.state_dir().join("run.lock")).unwrap(),
            "",
            "{name}"
        );
        // The export's history has the run, stopped,
        let (_, history) = s.run_json(&["history", file]);
        let runs = history["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{name}: {history}");
        assert_eq!(runs[0]["outcome"], "interrupted", "{name}");
        assert_eq!(runs[0]["exit_code"], code, "{name}");
        let journal = pipeline_sync::read_journal(&s.state_dir().join("journal.jsonl")).unwrap();
        assert!(!journal.is_empty(), "{name}: nothing journaled");
        let journaled: BTreeSet<String> = journal
            .iter()
            .flat_map(|b| b.contacts.iter().map(|(e, _)| e.clone()))
            .collect();
        // with what SendGrid accepted before it stopped.
        let jobs: Vec<&str> = journal.iter().map(|b| b.job_id.as_str()).collect();
        assert_eq!(runs[0]["sent"], journaled.len(), "{name}: {history}");
        assert_eq!(
            runs[0]["job_ids"],
            serde_json::json!(jobs),
            "{name}: {history}"
        );

        let before = s.log_len();
        let (run, rerun) = s.run_json(&["run", file]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(s.list_names(LIST), expected(&data), "{name}");
        let resent: BTreeSet<String> = s.upserted_since(before).into_iter().collect();
        assert!(
            resent.is_disjoint(&journaled),
            "{name}: a journaled body was sent again"
        );
        assert_eq!(
            rerun["sync"]["resumed_jobs"].as_u64().unwrap(),
            journal.len() as u64,
            "{name}"
        );
    }
}

/// SIGKILLs the binary at random points of a run over many rounds, reruns it, and checks
/// each time that the list ends complete and that no body the journal recorded as
/// accepted was sent again.
#[test]
fn killed_runs_are_finished_by_the_next_run_without_resending_accepted_bodies() {
    let (seed, mut rng) = Lcg::from_env("KILL_SEED");
    const ROUNDS: usize = 12;
    const CONTACTS: i64 = 1500;
    const BODIES: u64 = (CONTACTS as u64).div_ceil(50);
    let mut killed_mid_upload = 0;
    for round in 0..ROUNDS {
        let context = format!("round {round}, KILL_SEED={seed}");
        let s = Setup::new(150);
        let data = rows(CONTACTS);
        write_profiles(s.dir.path(), &data);
        let file = s.pipeline(UPSERT);
        // Every upload takes a while, so kills land between and during requests.
        s.emulator.script(Faults {
            upserts: (0..BODIES).map(|_| Fault::Delay { ms: 15 }).collect(),
            ..Faults::default()
        });
        // Kill after a random number of accepted bodies: 0 (while starting) up to all
        // of them (while following the import jobs).
        let kill_after = rng.below(BODIES + 1) as usize;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["run", file])
            .current_dir(s.dir.path())
            .env("SENDGRID_API_KEY", KEY)
            .env_remove("PIPELINE_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let accepted = s
                .emulator
                .requests()
                .iter()
                .filter(|r| r.job_id.is_some())
                .count();
            if accepted >= kill_after
                || child.try_wait().unwrap().is_some()
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() && kill_after > 0 && (kill_after as u64) < BODIES {
            killed_mid_upload += 1;
        }

        // What the journal holds as accepted when the process died.
        let journal = pipeline_sync::read_journal(&s.state_dir().join("journal.jsonl"))
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let journaled_jobs: BTreeSet<String> = journal.iter().map(|b| b.job_id.clone()).collect();
        let journaled: BTreeSet<String> = journal
            .iter()
            .flat_map(|b| b.contacts.iter().map(|(e, _)| e.clone()))
            .collect();
        let folded: BTreeSet<String> =
            pipeline_sync::Snapshot::load(&s.state_dir().join("snapshot.parquet"))
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .map(|snap| snap.entries.into_keys().collect())
                .unwrap_or_default();

        let (run, rerun) = s.run_json(&["run", file]);
        assert_eq!(run.code, 0, "{context}: {}", run.stderr);
        assert_eq!(
            s.list_names(LIST),
            expected(&data),
            "{context}: the list holds exactly the segment"
        );
        let rerun_jobs: BTreeSet<String> = rerun["sink"]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect();
        let log = s.emulator.requests();
        let resent: BTreeSet<String> = log
            .iter()
            .filter(|r| r.job_id.as_ref().is_some_and(|j| rerun_jobs.contains(j)))
            .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
            .collect();
        assert!(
            resent.is_disjoint(&journaled),
            "{context}: a body the journal recorded as accepted was sent again"
        );
        assert!(
            resent.is_disjoint(&folded),
            "{context}: a contact the snapshot recorded as accepted was sent again"
        );
        // Bodies SendGrid accepted that the dead run never heard back about are the only
        // ones sent twice: at most one per upload slot (concurrency 2).
        let unheard = log
            .iter()
            .filter(|r| {
                r.job_id
                    .as_ref()
                    .is_some_and(|j| !rerun_jobs.contains(j) && !journaled_jobs.contains(j))
                    && !r.upserted.iter().all(|u| folded.contains(&u.email))
            })
            .count();
        assert!(
            unheard <= 2,
            "{context}: {unheard} accepted bodies were neither journaled nor folded"
        );
        eprintln!(
            "{context}: kill point: after {kill_after} accepted bodies ({status}); journal {} bodies, snapshot {} contacts; rerun sent {}",
            journal.len(),
            folded.len(),
            resent.len()
        );
        if !journal.is_empty() {
            // The dead run held the lock when it was killed; the rerun took it over.
            assert!(
                rerun["sync"]["notes"].as_array().unwrap().iter().any(|n| n
                    .as_str()
                    .unwrap()
                    .starts_with("recovered the lock of an interrupted run (pid ")),
                "{context}: {}",
                rerun["sync"]["notes"]
            );
        }
        assert_eq!(
            rerun["sync"]["resumed_jobs"].as_u64().unwrap(),
            journal.len() as u64,
            "{context}: the rerun follows every journaled job"
        );
    }
    assert!(
        killed_mid_upload >= 3,
        "KILL_SEED={seed}: only {killed_mid_upload} of {ROUNDS} kills landed mid-upload"
    );
}
