//! Trouble shown, not hidden (issue 10): broken sessions in `status`, sessions a foreground
//! `run` drives while a daemon runs, the order of the signal checks, and the gates that a
//! stop and resume, or two questions numbered alike, used to get wrong.

use std::time::Duration;

use serde_json::Value;

use super::fixture::{Project, wait_for};

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no row {name} in {rows:#?}"))
}

#[test]
fn broken_sessions_are_shown_as_errors_with_the_reason() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    project
        .run(&["run", "--session", "fine", "--dive", "d", "--task", "t"])
        .expect(10);
    let broken: [(&str, &str, &[u8], &str); 4] = [
        (
            "26-01-01-corrupt",
            "_state.json",
            b"{\"schema\": 1, ",
            "not a valid samocode state file",
        ),
        (
            "26-01-01-empty",
            "_state.json",
            b"",
            "not a valid samocode state file",
        ),
        (
            "26-01-01-binary",
            "_state.json",
            b"\xff\xfe\x00",
            "is not UTF-8 text",
        ),
        (
            "26-01-01-legacy",
            "_overview.md",
            b"## Status\nPhase: bogus\n",
            "unknown phase \"bogus\"",
        ),
    ];
    for (folder, file, bytes, _) in broken {
        std::fs::create_dir_all(project.sessions.join(folder)).unwrap();
        std::fs::write(project.sessions.join(folder).join(file), bytes).unwrap();
    }
    // A state that reads, and a notebook that does not: every command on it fails.
    project
        .run(&["run", "--session", "notebook", "--dive", "d", "--task", "t"])
        .expect(10);
    std::fs::write(
        project.session("notebook").0.join("_overview.md"),
        b"\xff\xfe",
    )
    .unwrap();
    let table = project.run(&["status"]);
    table.expect(0);
    assert!(
        !table.stdout().contains("no sessions"),
        "{}",
        table.stdout()
    );
    let rows = project.status();
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert_eq!(row(&rows, "fine")["state"], "waiting");
    let notebook = row(&rows, "notebook");
    assert_eq!(notebook["state"], "error", "{notebook}");
    assert!(
        notebook["error"]
            .as_str()
            .unwrap()
            .contains("_overview.md is not UTF-8 text"),
        "{notebook}"
    );
    let one = project.run(&["status", "notebook"]);
    one.expect(0);
    assert!(one.stdout().contains("reason:      "), "{}", one.stdout());
    for (folder, _, _, reason) in broken {
        let r = row(&rows, folder);
        assert_eq!(r["state"], "error", "{r}");
        assert!(r["error"].as_str().unwrap().contains(reason), "{r}");
        let line = table
            .stdout()
            .lines()
            .find(|l| l.starts_with(folder))
            .unwrap_or_else(|| panic!("{folder} not in the table:\n{}", table.stdout()))
            .to_string();
        assert!(line.contains(" error "), "{line}");
    }
    let only = project.run(&["status", "--json", "--state", "error"]);
    only.expect(0);
    let only: Vec<Value> = serde_json::from_str(&only.stdout()).unwrap();
    assert_eq!(only.len(), 5);
    let one = project.run(&["status", "corrupt"]);
    one.expect(0);
    assert!(
        one.stdout().contains("state:       error"),
        "{}",
        one.stdout()
    );
}

#[test]
fn with_a_daemon_status_in_a_project_shows_every_session_and_its_owner() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:4");
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "served", "--dive", "d", "--task", "t"])
        .expect(0);
    let mut foreground =
        project.spawn(&["run", "--session", "alone", "--dive", "d", "--task", "t"]);
    let pid = foreground.id();
    wait_for(Duration::from_secs(20), "both sessions driven", || {
        let rows = project.status();
        rows.len() == 2 && rows.iter().all(|r| r["worker"] == "running")
    });
    let rows = project.status();
    assert_eq!(row(&rows, "served")["owner"], "daemon");
    let alone = row(&rows, "alone");
    assert_eq!(alone["owner"], "run", "{alone}");
    assert_eq!(alone["owner_pid"], pid, "{alone}");
    let table = project.run(&["status"]);
    assert!(
        table.stdout().contains(&format!("run (pid {pid})")),
        "{}",
        table.stdout()
    );
    assert_eq!(foreground.wait().unwrap().code(), Some(10));
    let rows = project.status();
    assert_eq!(row(&rows, "alone")["owner"], "nobody");
}

#[test]
fn done_outside_done_is_rejected_as_a_status_not_allowed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", r#"investigation=signal:{"status":"done"}"#);
    project
        .run(&["run", "--session", "early", "--dive", "d", "--task", "t"])
        .expect(11);
    let history = project.session("early").jsonl("_signal_history.jsonl");
    let reason = history[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("status_not_allowed"), "{reason}");
}

#[test]
fn stop_and_resume_at_the_questions_run_no_attempt_while_they_are_open() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    project
        .run(&["run", "--session", "gate", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("gate");
    let attempts = s.jsonl("_iterations.jsonl").len();
    project.run(&["stop", "gate"]).expect(0);
    let resume = project.run(&["resume", "gate"]);
    resume.expect(0);
    assert!(
        resume.stdout().contains("waits for qa_answers again"),
        "{}",
        resume.stdout()
    );
    assert_eq!(s.state()["status"]["for"], "qa_answers");
    project.run(&["run", "--session", "gate"]).expect(10);
    assert_eq!(
        s.jsonl("_iterations.jsonl").len(),
        attempts,
        "no paid attempt"
    );
    project
        .run(&["answer", "gate", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "gate"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "plan_approval");
}

#[test]
fn two_questions_numbered_q1_can_both_be_answered() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "requirements=twins");
    project
        .run(&["run", "--session", "twins", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("twins");
    assert_eq!(s.read("_qa.md").matches("## Q1:").count(), 2);
    let first = project.run(&["answer", "twins", "--q", "1", "samocode-demo"]);
    first.expect(0);
    assert!(
        first.stdout().contains("still open: Q1"),
        "{}",
        first.stdout()
    );
    let second = project.run(&["answer", "twins", "--q", "1", "3"]);
    second.expect(0);
    assert!(
        second.stdout().contains("all questions of"),
        "{}",
        second.stdout()
    );
    project.run(&["run", "--session", "twins"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "plan_approval");
    // Past the gate, the answers were used: they are not rewritten behind the plan's back.
    let qa = s.read("_qa.md");
    let late = project.run(&["answer", "twins", "--q", "1", "docs"]);
    late.expect(2);
    assert!(
        late.stderr().contains("answered already") && late.stderr().contains("samocode tell"),
        "{}",
        late.stderr()
    );
    assert_eq!(s.read("_qa.md"), qa);
    project
        .run(&["answer", "twins", "--accept-suggestions"])
        .expect(2);
    assert_eq!(s.read("_qa.md"), qa);
}

/// A state moved away, as the advice for a broken one says, is derived again with what the
/// session's attempts cost, from its journal (it read $0.00 and spent without a count).
#[test]
fn a_state_moved_away_comes_back_with_what_the_attempts_cost() {
    let project = Project::new();
    project
        .run(&["run", "--session", "lost", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("lost");
    let spent: f64 = s
        .jsonl("_iterations.jsonl")
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(spent > 0.0);
    let before = s.state()["usage"]["cost_usd"].as_f64().unwrap();
    std::fs::rename(s.path("_state.json"), project.root.join("moved.json")).unwrap();
    let rows = project.status();
    let cost = row(&rows, "lost")["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - spent).abs() < 1e-9 && (cost - before).abs() < 1e-9,
        "{cost} {spent}"
    );
}

/// A state deleted while the session waited at its plan gate lost the gate: `approve` was
/// refused ("queued in planning"), and the next run paid a planning attempt again. The gate
/// is read back from the journal's last verdict.
#[test]
fn a_state_deleted_at_a_gate_comes_back_waiting_at_it() {
    let project = Project::new();
    let s = project.to_the_plan_gate("gate");
    let planning = |s: &super::fixture::Session| {
        s.jsonl("_iterations.jsonl")
            .iter()
            .filter(|r| r["phase"] == "planning")
            .count()
    };
    let planned = planning(&s);
    let base = s.state()["base"].clone();
    assert!(base["commit"].is_string(), "{base}");
    std::fs::remove_file(s.path("_state.json")).unwrap();
    let rows = project.status();
    assert_eq!(
        row(&rows, "gate")["waiting_for"],
        "plan_approval",
        "{rows:#?}"
    );
    project.run(&["approve", "gate"]).expect(0);
    project.run(&["run", "--session", "gate"]).expect(0);
    assert_eq!(planning(&s), planned, "the planning attempt was paid again");
    // The base the change is measured against is found again: the agents of the phases after
    // are told it.
    assert_eq!(s.state()["base"], base);
    assert!(
        s.read("_logs/contexts.md").contains(&format!(
            "Base: {} at {}",
            base["branch"].as_str().unwrap(),
            base["commit"].as_str().unwrap()
        )),
        "{}",
        s.read("_logs/contexts.md")
    );
    assert!(
        s.read("session.log")
            .contains("state derived from _overview.md and the journals"),
        "{}",
        s.read("session.log")
    );
}

/// An older `_state.json` put back beside newer journals (a backup restored) was driven as it
/// was: the approval given since was lost, requirements and planning ran again, and the cost
/// read lower than the journal's. It is refused, saying why and what to do, and the advice
/// works.
#[test]
fn a_state_older_than_its_journals_is_refused_not_driven() {
    let project = Project::new();
    project
        .run(&["run", "--session", "old", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("old");
    // The state and the notebook both put back from an older backup.
    let backup = project.root.join("backup.json");
    let notebook = project.root.join("backup.md");
    std::fs::copy(s.path("_state.json"), &backup).unwrap();
    std::fs::copy(s.path("_overview.md"), &notebook).unwrap();
    project
        .run(&["answer", "old", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "old"]).expect(10);
    project.run(&["approve", "old"]).expect(0);
    project
        .run(&["run", "--session", "old", "--once"])
        .expect(0);
    let rows = s.jsonl("_iterations.jsonl").len();
    std::fs::copy(&backup, s.path("_state.json")).unwrap();
    std::fs::copy(&notebook, s.path("_overview.md")).unwrap();
    let run = project.run(&["run", "--session", "old"]);
    run.expect(2);
    assert!(
        run.stderr().contains("older than the session's journals"),
        "{}",
        run.stderr()
    );
    assert_eq!(s.jsonl("_iterations.jsonl").len(), rows, "an attempt ran");
    // As advised: moved away, the state is derived, and the session goes on where it was.
    std::fs::rename(s.path("_state.json"), project.root.join("moved.json")).unwrap();
    project.run(&["run", "--session", "old"]).expect(0);
    let phases: Vec<String> = s.jsonl("_iterations.jsonl")[rows..]
        .iter()
        .map(|r| r["phase"].as_str().unwrap().to_string())
        .collect();
    assert!(
        phases
            .iter()
            .all(|p| p != "requirements" && p != "planning"),
        "{phases:?}"
    );
    let mut iterations: Vec<u64> = s
        .jsonl("_iterations.jsonl")
        .iter()
        .filter(|r| r["outcome"] == "ok")
        .map(|r| r["iteration"].as_u64().unwrap())
        .collect();
    let all = iterations.len();
    iterations.dedup();
    assert_eq!(
        iterations.len(),
        all,
        "an iteration ran twice: {iterations:?}"
    );
    assert_eq!(s.state()["status"]["state"], "done");
}

/// Session `name` run to its plan gate, with a copy of its state there.
fn at_the_plan_gate_backed_up(
    project: &Project,
    name: &str,
) -> (super::fixture::Session, std::path::PathBuf) {
    let s = project.to_the_plan_gate(name);
    let backup = project.root.join(format!("{name}-at-the-gate.json"));
    std::fs::copy(s.path("_state.json"), &backup).unwrap();
    (s, backup)
}

/// An older state put back after a person's `approve` (no iteration since) was taken: the
/// session waited for approval again, the approval lost without a word.
#[test]
fn a_state_put_back_from_before_an_approval_is_refused() {
    let project = Project::new();
    let (s, backup) = at_the_plan_gate_backed_up(&project, "appr");
    project.run(&["approve", "appr"]).expect(0);
    std::fs::copy(&backup, s.path("_state.json")).unwrap();
    let run = project.run(&["approve", "appr"]);
    run.expect(2);
    assert!(
        run.stderr().contains("older than the session's journals")
            && run.stderr().contains("`approve` since"),
        "{}",
        run.stderr()
    );
    // Moved away as advised: it goes on from the approval.
    std::fs::rename(s.path("_state.json"), project.root.join("moved.json")).unwrap();
    let rows = project.status();
    assert_eq!(row(&rows, "appr")["phase"], "implementation", "{rows:#?}");
    project.run(&["run", "--session", "appr"]).expect(0);
}

/// A state moved away (as samocode advises for a broken one) came back queued when the worker
/// had failed or blocked the session (its park's row is the worker's own), and without its
/// gate when a person had stopped it there: it comes back as it was.
#[test]
fn a_state_moved_away_keeps_the_park_the_worker_or_a_stop_left() {
    let mut project = Project::new();
    project.env("SAMOCODE_MAX_RETRIES", "1");
    project.through_both_gates("fails");
    project.env("SAMOCODE_FAKE", "implementation=exit:1");
    project.run(&["run", "--session", "fails"]);
    let s = project.session("fails");
    let before = s.state()["status"]["state"].clone();
    assert!(before == "failed" || before == "blocked", "{}", s.state());
    std::fs::rename(s.path("_state.json"), project.root.join("fails.json")).unwrap();
    let rows = project.status();
    assert_eq!(row(&rows, "fails")["state"], before, "{rows:#?}");

    project.env("SAMOCODE_FAKE", "");
    let s = project.to_the_plan_gate("halt");
    project.run(&["stop", "halt"]).expect(0);
    std::fs::remove_file(s.path("_state.json")).unwrap();
    project.run(&["resume", "halt"]).expect(0);
    project.run(&["approve", "halt"]).expect(0);
}

/// An approval followed by a stop, then the state from before the approval put back: the
/// approval was lost, the last row being the stop's.
#[test]
fn a_state_from_before_an_approval_and_a_stop_is_refused() {
    let project = Project::new();
    let (s, backup) = at_the_plan_gate_backed_up(&project, "late");
    project.run(&["approve", "late"]).expect(0);
    project.run(&["stop", "late"]).expect(0);
    std::fs::copy(&backup, s.path("_state.json")).unwrap();
    let refused = project.run(&["approve", "late"]);
    refused.expect(2);
    assert!(
        refused
            .stderr()
            .contains("older than the session's journals"),
        "{}",
        refused.stderr()
    );
}

/// A state deleted while its session waited for a person's action (not a gate of its own
/// phase) came back queued, and the next run paid the iteration again.
#[test]
fn a_state_deleted_while_waiting_for_a_person_comes_back_waiting() {
    let mut project = Project::new();
    project.through_both_gates("act");
    project.env(
        "SAMOCODE_FAKE",
        r#"implementation=signal:{"status":"waiting","phase":"implementation","for":"human_action"}"#,
    );
    project.run(&["run", "--session", "act"]).expect(10);
    let s = project.session("act");
    std::fs::remove_file(s.path("_state.json")).unwrap();
    let rows = project.status();
    assert_eq!(
        row(&rows, "act")["waiting_for"],
        "human_action",
        "{rows:#?}"
    );
}

/// A session folder copied with `cp -a` was a second session in the first one's worktree and
/// branch (two agents in one checkout), its notices named after the first. It is refused; a
/// folder renamed takes its new name.
#[test]
fn a_copied_session_folder_is_refused_and_a_renamed_one_takes_its_name() {
    let project = Project::new();
    project.through_both_gates("orig");
    let s = project.session("orig");
    let copy = s.0.with_file_name(format!("{}copy", folder_name(&s)));
    let copy_whole = || {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&s.0)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(copied.success());
    };
    copy_whole();
    let copy_name = copy.file_name().unwrap().to_string_lossy().into_owned();
    let run = project.run(&["run", "--session", &copy_name]);
    run.expect(2);
    assert!(
        run.stderr().contains("record one worktree"),
        "{}",
        run.stderr()
    );
    // Refused by every command that opens it, and shown broken.
    project.run(&["stop", &copy_name]).expect(2);
    let rows = project.status();
    assert_eq!(row(&rows, &copy_name)["state"], "error", "{rows:#?}");
    // A link beside a renamed folder, keeping its old name, is no copy.
    let renamed = s.0.with_file_name(format!("{}-new", folder_name(&s)));
    std::fs::rename(&s.0, &renamed).unwrap();
    std::os::unix::fs::symlink(&renamed, &s.0).unwrap();
    let new_name = renamed.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_dir_all(&copy).unwrap();
    let rows = project.status();
    assert!(
        rows.iter().all(|r| r["state"] != "error"),
        "{new_name}: {rows:#?}"
    );
    std::fs::remove_file(&s.0).unwrap();
    std::fs::rename(&renamed, &s.0).unwrap();
    copy_whole();
    // The original, renamed since, is no better told from the copy: both are refused.
    let moved = s.0.with_file_name(format!("{}moved", folder_name(&s)));
    std::fs::rename(&s.0, &moved).unwrap();
    let moved_name = moved.file_name().unwrap().to_string_lossy().into_owned();
    project.run(&["run", "--session", &moved_name]).expect(2);
    std::fs::remove_dir_all(&copy).unwrap();
    project.run(&["run", "--session", &moved_name]).expect(0);

    project
        .run(&["run", "--session", "ren", "--dive", "d", "--task", "t"])
        .expect(10);
    let before = project.session("ren");
    let renamed = before
        .0
        .with_file_name(format!("{}amed", folder_name(&before)));
    std::fs::rename(&before.0, &renamed).unwrap();
    let name = renamed.file_name().unwrap().to_string_lossy().into_owned();
    project
        .run(&["answer", &name, "--accept-suggestions"])
        .expect(0);
    let run = project.run(&["run", "--session", &name]);
    run.expect(10);
    assert!(
        run.stdout()
            .contains(&format!("{name}: waiting for plan approval")),
        "{}",
        run.stdout()
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(renamed.join("_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["name"], name.as_str());
}

fn folder_name(s: &super::fixture::Session) -> String {
    s.0.file_name().unwrap().to_string_lossy().into_owned()
}

/// A session the daemon could not open (a journal it cannot append to, a full disk) is shown
/// as `error` with the daemon's reason, not as the `running` its files still say; `resume`
/// once it is fixed says it resumed, and it goes on (it said "already running", rc 2).
#[test]
fn a_session_the_daemon_could_not_open_is_shown_broken_and_resumed_once_fixed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:2");
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "b", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("b");
    wait_for(Duration::from_secs(20), "the attempt running", || {
        s.state()["in_flight"].is_object()
    });
    // A directory where the journal is: the attempt's row cannot be written, nor the session
    // opened again.
    let journal = s.path("_iterations.jsonl");
    let _ = std::fs::remove_file(&journal);
    std::fs::create_dir(&journal).unwrap();
    wait_for(Duration::from_secs(20), "the session shown broken", || {
        row(&project.status(), "b")["state"] == "error"
    });
    let rows = project.status();
    let error = row(&rows, "b")["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("the daemon could not open it") && error.contains("_iterations.jsonl"),
        "{error}"
    );
    let one = project.run(&["status", "b"]);
    assert!(
        one.stdout().contains("state:       error"),
        "{}",
        one.stdout()
    );
    std::fs::remove_dir(&journal).unwrap();
    let resumed = project.run(&["resume", "b"]);
    resumed.expect(0);
    assert!(
        resumed.stdout().contains("opened again and resumed"),
        "{}",
        resumed.stdout()
    );
    wait_for(Duration::from_secs(30), "the questions", || {
        s.state()["status"]["for"] == "qa_answers"
    });
    assert_ne!(row(&project.status(), "b")["state"], "error");
}

/// A git that cannot be started is said to be that, with what to check: not a repository
/// that is not one (with advice to `git init` it), nor a branch or base that is missing.
#[test]
fn a_git_that_cannot_start_blocks_the_init_saying_so() {
    let project = super::fixture::Project::new();
    let out = project
        .command(&["run", "--session", "nogit", "--dive", "d", "--task", "t"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(11), "{said}");
    assert!(said.contains("cannot run git"), "{said}");
    assert!(said.contains("check that git is installed"), "{said}");
    assert!(
        !said.contains("git init") && !said.contains("BASE_BRANCH"),
        "{said}"
    );
}

/// A field of `_state.json` this build does not know (a later build's, after a rollback) is
/// kept when this build saves the state: running the older build for a while loses nothing.
#[test]
fn a_state_field_of_a_later_build_survives_this_builds_saves() {
    let project = Project::new();
    project
        .run(&["run", "--session", "later", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("later");
    let mut state = s.state();
    state["from_a_later_build"] = serde_json::json!({"kept": [1, 2]});
    std::fs::write(s.path("_state.json"), state.to_string()).unwrap();
    project
        .run(&["answer", "later", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "later"]).expect(10);
    let state = s.state();
    assert_eq!(state["status"]["for"], "plan_approval", "{state:#}");
    assert_eq!(
        state["from_a_later_build"],
        serde_json::json!({"kept": [1, 2]}),
        "{state:#}"
    );
}

/// Commands that come at once for a session the daemon owns but does not drive (done, here)
/// each get the answer for it; none finds the folder locked by the daemon itself, calls the
/// session broken, or tells the chat it cannot be opened.
#[test]
fn commands_at_once_on_a_finished_session_each_get_its_answer() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "over", "--dive", "d", "--task", "t"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    let children: Vec<_> = (0..8)
        .map(|i| {
            project
                .command(&["tell", "over", &format!("note {i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("is done"), "{said}");
    }
    assert_eq!(row(&project.status(), "over")["state"], "done");
    assert!(
        !project.daemon_log().contains("cannot open the session"),
        "{}",
        project.daemon_log()
    );
}

/// A session folder deleted and made again (by `run`) while the daemon held the old one
/// parked: the daemon went on acting by path on the new folder without its lock, writing its
/// old state over the new session's, and driving it beside `run`. It lets the old one go and
/// opens the new one, with its lock, and nothing of the old state comes back.
#[test]
fn a_session_folder_made_again_under_a_daemon_is_opened_anew_not_written_over() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&[
            "start",
            "--session",
            "del",
            "--dive",
            "old dive",
            "--task",
            "old task",
        ])
        .expect(0);
    let s = project.session("del");
    wait_for(
        Duration::from_secs(30),
        "the old session's questions",
        || s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers",
    );
    std::fs::remove_dir_all(&s.0).unwrap();
    // Its worktree and branch too, or the new session would not take them (they are not its).
    let tree = project.worktrees.join(s.0.file_name().unwrap());
    super::fixture::git(
        &project.repo,
        &["worktree", "remove", "--force", tree.to_str().unwrap()],
    );
    super::fixture::git(&project.repo, &["branch", "-D", "del"]);
    project
        .run(&[
            "run",
            "--session",
            "del",
            "--dive",
            "new dive",
            "--task",
            "new task",
        ])
        .expect(10);
    let refused = project.run(&["answer", "del", "--accept-suggestions"]);
    refused.expect(1);
    assert!(
        refused.stderr().contains("deleted and made again"),
        "{}",
        refused.stderr()
    );
    assert_eq!(s.state()["dive"], "new dive");
    let driven = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = project.run(&["status", "--json"]).stdout();
        if shown.contains("\"owner\": \"daemon\"")
            && project.daemon_log().contains("opening it anew")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < driven,
            "the daemon does not drive the new folder: {shown}\n{}",
            project.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    project
        .run(&["answer", "del", "--accept-suggestions"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the new plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    let state = s.state();
    assert_eq!(state["dive"], "new dive", "{state}");
    assert_eq!(state["task"], "new task", "{state}");
}

/// A project reached by another path than the one the daemon took its session by (its folder
/// moved and linked back, a bind mount): a person's command there was refused ("the daemon
/// does not drive …") and the session stayed stuck until the daemon restarted.
#[test]
fn a_command_given_through_a_link_to_the_project_reaches_the_daemons_session() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "linked", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("linked");
    wait_for(Duration::from_secs(30), "the questions", || {
        s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers"
    });
    // The project moved, and linked back where it was: the daemon knows the session by the
    // old path, the command comes by the real one.
    let moved = project.root.with_extension("moved");
    std::fs::rename(&project.root, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &project.root).unwrap();
    let out = project
        .command(&["answer", "linked", "--accept-suggestions"])
        .current_dir(&moved)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(30), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    // Put back, for the temporary folder's own clean-up.
    std::fs::remove_file(&project.root).unwrap();
    std::fs::rename(&moved, &project.root).unwrap();
}

/// A control socket this user cannot use (another user's state directory; here a path under
/// a file) failed `status` in the user's own project, whose sessions the files show.
#[test]
fn status_in_a_project_shows_the_files_when_the_control_socket_cannot_be_used() {
    let mut project = Project::new();
    project
        .run(&["run", "--session", "mine", "--dive", "d", "--task", "t"])
        .expect(10);
    let file = project.root.join("not-a-folder");
    std::fs::write(&file, "").unwrap();
    project.env(
        "SAMOCODE_CONTROL",
        &file.join("control.sock").display().to_string(),
    );
    let shown = project.run(&["status"]);
    shown.expect(0);
    assert!(shown.stdout().contains("mine"), "{}", shown.stdout());
    assert!(
        shown.stderr().contains("shown from their files"),
        "{}",
        shown.stderr()
    );
}

/// A command to a daemon that does not answer (stopped, as by SIGSTOP) said nothing for 90 s,
/// like a command that hung: after 10 s it says it is waiting, and it gets its answer once the
/// daemon goes on.
#[test]
fn a_command_to_a_stopped_daemon_says_it_waits_and_is_answered_when_it_goes_on() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let said = project.root.join("said.txt");
    let child = project
        .command(&["parallel", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .unwrap();
    let waiting = || std::fs::read_to_string(&said).unwrap_or_default();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !waiting().contains("has not answered") && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        waiting().contains("has not answered in 10s"),
        "{}",
        waiting()
    );
    assert_eq!(out.status.code(), Some(0), "{}", waiting());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('3'),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A daemon that does not answer (stopped here, as by SIGSTOP) costs `status` in a project
/// only who drives its sessions: they are shown from their files after a short wait, with a
/// line saying so (it waited 90 s and failed, pointing at `samocode status`).
#[test]
fn status_in_a_project_shows_the_files_when_the_daemon_does_not_answer() {
    let mut project = Project::new();
    project
        .run(&["run", "--session", "mine", "--dive", "d", "--task", "t"])
        .expect(10);
    let daemon = project.daemon(&[]);
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let shown = project.run(&["status"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    shown.expect(0);
    assert!(shown.stdout().contains("mine"), "{}", shown.stdout());
    assert!(
        shown.stderr().contains("the daemon did not answer"),
        "{}",
        shown.stderr()
    );
}

/// Two people's commands at the same moment, with no daemon: the second found the session's
/// lock held by the first for an instant and was refused (exit 12) with advice to Ctrl-C a
/// `samocode run` there was not. It waits for the moment to pass.
#[test]
fn a_command_given_while_another_holds_the_session_for_a_moment_waits_for_it() {
    let project = Project::new();
    let s = project.to_the_plan_gate("both");
    // Another command's hold of the session's folder, for a second.
    let mut held = std::process::Command::new("flock")
        .arg("-x")
        .arg(&s.0)
        .args(["sleep", "1"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let approved = project.run(&["approve", "both"]);
    held.wait().unwrap();
    approved.expect(0);
    assert_eq!(s.state()["phase"], "implementation");
}

/// Starts session `name` (dive and task "old …") on the daemon and deletes its folder once
/// its first attempt runs.
fn deleted_while_its_attempt_runs(project: &Project, name: &str) -> super::fixture::Session {
    project
        .run(&[
            "start",
            "--session",
            name,
            "--dive",
            "old dive",
            "--task",
            "old task",
        ])
        .expect(0);
    let s = project.session(name);
    wait_for(Duration::from_secs(30), "the attempt running", || {
        s.path("_state.json").exists() && s.state()["in_flight"].is_object()
    });
    std::fs::remove_dir_all(&s.0).unwrap();
    s
}

/// A session folder deleted and made again (by a `run`) while the daemon's attempt of the old
/// one ran: the attempt's end wrote its row, its verdict and the old state (dive and task) into
/// the new folder, and the daemon then drove that as the old session. Its end is written
/// nowhere now: the old folder is gone, and the new one is another session's.
#[test]
fn an_attempt_whose_folder_was_made_again_writes_nothing_into_the_new_one() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:4");
    let _daemon = project.daemon(&[]);
    let s = deleted_while_its_attempt_runs(&project, "again");
    // The new session blocks at its init: the old one's worktree is not its own.
    project
        .run(&[
            "run",
            "--session",
            "again",
            "--dive",
            "new dive",
            "--task",
            "new task",
            "--once",
        ])
        .expect(11);
    wait_for(Duration::from_secs(30), "the old attempt's end", || {
        project.daemon_log().contains("deleted and made again")
    });
    std::thread::sleep(Duration::from_millis(500));
    let state = s.state();
    assert_eq!(state["dive"], "new dive", "{state}");
    assert_eq!(state["status"]["state"], "blocked", "{state}");
    assert!(
        !s.path("_iterations.jsonl").exists() || s.read("_iterations.jsonl").is_empty(),
        "{}",
        s.read("_iterations.jsonl")
    );
    assert!(
        !s.read("session.log").contains("continue"),
        "{}",
        s.read("session.log")
    );
}

/// The same, made again by a `start` to the daemon itself: the daemon opened the new folder
/// beside the old actor, whose end then marked the session undriven and opened it again
/// against the new actor's lock: `status` said `error` ("another worker is driving", the
/// daemon's own pid) and every command was refused until a restart. The old actor lets go
/// when the new one opens, and the new session is the daemon's.
#[test]
fn a_session_folder_made_again_by_a_start_to_the_daemon_is_driven_by_it() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:4");
    let _daemon = project.daemon(&["--max-parallel", "1"]);
    let s = deleted_while_its_attempt_runs(&project, "anew");
    project
        .run(&[
            "start",
            "--session",
            "anew",
            "--dive",
            "new dive",
            "--task",
            "new task",
        ])
        .expect(0);
    wait_for(Duration::from_secs(30), "the new session parked", || {
        s.path("_state.json").exists() && s.state()["status"]["state"] == "blocked"
    });
    // Past the old attempt's end.
    std::thread::sleep(Duration::from_secs(5));
    let rows = project.status();
    assert!(rows.iter().all(|r| r["state"] != "error"), "{rows:#?}");
    assert_eq!(s.state()["dive"], "new dive");
    project.run(&["tell", "anew", "noted"]).expect(0);
    // The old attempt's slot is free: at one agent at a time, another session runs.
    project
        .run(&["start", "--session", "next", "--dive", "d", "--task", "t"])
        .expect(0);
    let next = project.session("next");
    wait_for(
        Duration::from_secs(30),
        "the next session's questions",
        || next.path("_state.json").exists() && next.state()["status"]["for"] == "qa_answers",
    );
}
