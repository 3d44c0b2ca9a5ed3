//! An agent that misbehaves ends as documented, with a clear reason.

use std::time::Duration;

use serde_json::Value;

use super::fixture::{Project, alive, git, wait_for};

fn new_session(project: &Project, name: &str) -> super::fixture::Run {
    project.run(&["run", "--session", name, "--dive", "d", "--task", "t"])
}

/// A provider whose clock is behind names a reset time just past, and refuses again: each
/// refusal waited the first retry step (every few seconds) and told the chat again. The waits
/// double, and people are told once.
#[test]
fn usage_limits_refused_again_past_their_reset_wait_longer_and_are_told_once() {
    let mut project = Project::new();
    project
        .env("SAMOCODE_FAKE", "investigation=limit-past:60")
        .env("SAMOCODE_RETRY_DELAY", "0.25");
    let out = project.root.join("run.out");
    let mut run = project
        .command(&["run", "--session", "past", "--dive", "d", "--task", "t"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    run.kill().unwrap();
    run.wait().unwrap();
    let rows = project.session("past").jsonl("_iterations.jsonl");
    assert!(
        rows.iter().all(|r| r["outcome"] == "usage_limit"),
        "{rows:#?}"
    );
    // 0.25 + 0.5 + 1 + 2 s: five refusals at most in 5 s (twenty at a steady 0.25 s).
    assert!(
        (2..=6).contains(&rows.len()),
        "{} refusals: {rows:#?}",
        rows.len()
    );
    let said = std::fs::read_to_string(&out).unwrap();
    assert_eq!(said.matches("usage limit is reached").count(), 1, "{said}");
}

#[test]
fn a_nonzero_exit_is_retried_then_the_session_fails() {
    let mut project = Project::new();
    project
        .env("SAMOCODE_FAKE", "investigation=exit:3")
        .env("SAMOCODE_MAX_RETRIES", "2");
    let run = new_session(&project, "crash");
    run.expect(1);
    assert!(
        // With what the agent said on standard error, as it gave no result.
        run.stdout().contains(
            "failed: 2 attempts failed; the last: the agent exited with code 3: fake-agent: failing on purpose"
        ),
        "{}",
        run.stdout()
    );
    let s = project.session("crash");
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "nonzero" && r["exit_code"] == 3)
    );
    assert_eq!(
        (rows[0]["attempt"].as_u64(), rows[1]["attempt"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(s.state()["status"]["state"], "failed");
    // What the agent printed on standard error is kept, beside its log.
    let stderr: Vec<String> = s
        .logs()
        .into_iter()
        .filter(|l| l.ends_with(".stderr.log"))
        .collect();
    assert_eq!(stderr.len(), 2, "{:?}", s.logs());
    assert!(
        s.read(&format!("_logs/{}", stderr[0]))
            .contains("failing on purpose")
    );
    assert!(
        s.read("_overview.md")
            .contains("Blocked: failed: 2 attempts failed")
    );

    // resume gives it another chance; a healthy agent then gets through.
    project.run(&["resume", "crash"]).expect(0);
    project.env("SAMOCODE_FAKE", "");
    project
        .run(&["run", "--session", "crash", "--once"])
        .expect(0);
    assert_eq!(s.state()["phase"], "requirements");
}

#[test]
fn a_failed_first_attempt_is_retried_and_the_retry_counts() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=exit:1");
    new_session(&project, "flaky").expect(10);
    let rows = project.session("flaky").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "nonzero");
    assert_eq!(
        (rows[1]["iteration"].as_u64(), rows[1]["attempt"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(rows[1]["outcome"], "ok");
}

/// An agent that wrote its signal whole and valid, then whose CLI ended badly (an error on
/// its closing turn, a usage limit met after the work): the iteration's work is taken, not
/// run again (after a usage limit, hours later). It was thrown away.
#[test]
fn a_valid_signal_written_before_the_cli_failed_is_taken() {
    let mut project = Project::new();
    project.env(
        "SAMOCODE_FAKE",
        "investigation@1=done-then:exit:3;requirements@1=done-then:limit-in:3600",
    );
    let run = project.run(&["run", "--session", "taken", "--dive", "d", "--task", "t"]);
    run.expect(10);
    let s = project.session("taken");
    let state = s.state();
    assert_eq!(
        (&state["status"]["state"], &state["status"]["for"]),
        (
            &serde_json::json!("waiting"),
            &serde_json::json!("qa_answers")
        ),
        "{state:#}"
    );
    assert!(state["not_before"].is_null(), "{state:#}");
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 2, "each phase ran once: {rows:#?}");
    for (row, code) in rows.iter().zip([3, 1]) {
        assert_eq!(
            (&row["outcome"], &row["exit_code"]),
            (&serde_json::json!("ok"), &serde_json::json!(code)),
            "{row:#}"
        );
        let detail = row["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("exited with code {code}")) && detail.contains("valid signal"),
            "{detail}"
        );
    }
}

#[test]
fn a_hang_is_killed_at_the_timeout_with_its_grandchild() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=hang");
    let run = project.run(&[
        "run",
        "--session",
        "hang",
        "--dive",
        "d",
        "--task",
        "t",
        "--timeout",
        "1s",
    ]);
    run.expect(10);
    let rows = project.session("hang").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "timeout");
    // The scripted agent ignores SIGTERM, so the grace ends with SIGKILL, and the row says so.
    assert_eq!(rows[0]["exit_signal"], "SIGKILL", "{}", rows[0]);
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("time limit of 1s")
    );
    assert_eq!(rows[1]["outcome"], "ok", "the retry succeeds");
    let pids = project.left_behind();
    assert_eq!(pids.len(), 1);
    wait_for(Duration::from_secs(5), "the grandchild to be gone", || {
        !alive(pids[0])
    });
}

#[test]
fn a_grandchild_holding_stdout_does_not_stall_the_session() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=grandchild");
    new_session(&project, "orphan").expect(10);
    let pids = project.left_behind();
    assert_eq!(pids.len(), 1);
    assert!(
        !alive(pids[0]),
        "the process the agent left behind was killed"
    );
    assert_eq!(
        project.session("orphan").jsonl("_iterations.jsonl")[0]["outcome"],
        "ok"
    );
}

#[test]
fn a_flood_of_output_is_logged_in_full() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=flood:20");
    new_session(&project, "flood").expect(10);
    let s = project.session("flood");
    let row = &s.jsonl("_iterations.jsonl")[0];
    assert_eq!(row["outcome"], "ok");
    assert_eq!(
        row["cost_usd"], 0.0125,
        "the result event after the flood is still read"
    );
    let size = std::fs::metadata(s.path(row["log"].as_str().unwrap()))
        .unwrap()
        .len();
    assert!(size >= 20 * 1024 * 1024, "log has {size} bytes");
}

#[test]
fn a_bad_or_missing_signal_is_retried_once_then_blocks() {
    for (action, code) in [
        ("badjson", "malformed_signal"),
        ("nosignal", "missing_signal"),
        ("empty", "malformed_signal"),
    ] {
        let mut project = Project::new();
        project.env("SAMOCODE_FAKE", &format!("investigation={action}"));
        let run = new_session(&project, "proto");
        run.expect(11);
        assert!(
            run.stdout().contains("blocked: protocol error"),
            "{action}: {}",
            run.stdout()
        );
        let s = project.session("proto");
        let history = s.jsonl("_signal_history.jsonl");
        assert_eq!(history.len(), 2, "{action}");
        assert!(
            history
                .iter()
                .all(|r| r["accepted"] == false && r["reason"].as_str().unwrap().starts_with(code)),
            "{action}: {history:?}"
        );
        assert_eq!(history[0]["outcome"], "retry");
        assert_eq!(history[1]["outcome"], "blocked");
        let rows = s.jsonl("_iterations.jsonl");
        assert!(rows.iter().all(|r| r["outcome"] == "protocol_error"));
        let (_, retry_context) = s
            .contexts()
            .into_iter()
            .find(|(log, _)| log.ends_with("-a2.jsonl"))
            .unwrap();
        assert!(retry_context.contains("## Last attempt rejected\nprotocol error"));
    }
}

#[test]
fn a_missing_signal_then_a_good_one_continues() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=nosignal");
    new_session(&project, "recover").expect(10);
    assert_eq!(project.session("recover").state()["phase"], "requirements");
}

#[test]
fn an_invalid_transition_is_rejected_and_recorded() {
    let mut project = Project::new();
    project.env(
        "SAMOCODE_FAKE",
        r#"investigation=signal:{"status":"continue","phase":"testing"}"#,
    );
    let run = new_session(&project, "jump");
    run.expect(11);
    assert!(
        run.stdout()
            .contains("the investigation phase may not move to testing"),
        "{}",
        run.stdout()
    );
    let history = project.session("jump").jsonl("_signal_history.jsonl");
    assert_eq!(history.len(), 1, "a rejection is not retried");
    assert_eq!(history[0]["accepted"], false);
    assert_eq!(history[0]["to"], "testing");
    assert!(
        history[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("transition_not_allowed")
    );
}

/// A summary that finds the work unfinished sends it back to quality: the done phase's only
/// way out was a block a person had to undo by hand (nothing could send it back).
#[test]
fn a_summary_that_finds_the_work_unfinished_sends_it_back_to_quality() {
    let mut project = Project::new();
    project.through_both_gates("back");
    project.env(
        "SAMOCODE_FAKE",
        r#"done=signal:{"status":"continue","phase":"quality"}"#,
    );
    // Every summary sends it back: the session's budget ends the loop.
    let run = project.run(&["run", "--session", "back", "--max-iterations", "16"]);
    run.expect(11);
    let history = project.session("back").jsonl("_signal_history.jsonl");
    let back: Vec<&Value> = history
        .iter()
        .filter(|row| row["from"] == "done" && row["to"] == "quality")
        .collect();
    assert!(!back.is_empty(), "{history:?}");
    assert!(back.iter().all(|row| row["accepted"] == true), "{back:?}");
    let iterations = project.session("back").jsonl("_iterations.jsonl");
    let phases: Vec<&str> = iterations
        .iter()
        .filter_map(|row| row["phase"].as_str())
        .collect();
    let summary = phases.iter().position(|p| *p == "done").unwrap();
    assert_eq!(phases.get(summary + 1), Some(&"quality"), "{phases:?}");
    // Any other way out of the summary is still refused.
    let mut other = Project::new();
    other.through_both_gates("jump");
    other.env(
        "SAMOCODE_FAKE",
        r#"done=signal:{"status":"continue","phase":"implementation"}"#,
    );
    let run = other.run(&["run", "--session", "jump"]);
    run.expect(11);
    assert!(
        run.stdout()
            .contains("the done phase may not move to implementation"),
        "{}",
        run.stdout()
    );
}

/// A wait for answers with no question a person could answer would be a gate nobody can
/// open: the agent is told and tries once more, then the session blocks, and `resume` runs it
/// again.
#[test]
fn waiting_for_answers_without_a_question_blocks_instead_of_waiting_forever() {
    let mut project = Project::new();
    project.env(
        "SAMOCODE_FAKE",
        r#"requirements=signal:{"status":"waiting","phase":"requirements","for":"qa_answers"}"#,
    );
    let run = new_session(&project, "noq");
    run.expect(11);
    assert!(
        run.stdout()
            .contains("it waits for qa_answers, but there is no _qa.md"),
        "{}",
        run.stdout()
    );
    let s = project.session("noq");
    assert_eq!(s.state()["status"]["state"], "blocked");
    let history = s.jsonl("_signal_history.jsonl");
    let rejected: Vec<&str> = history
        .iter()
        .filter(|r| r["accepted"] == false)
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ["retry", "blocked"], "{history:?}");

    project.env("SAMOCODE_FAKE", "");
    project.run(&["resume", "noq"]).expect(0);
    project.run(&["run", "--session", "noq"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "qa_answers");
    project
        .run(&["answer", "noq", "--accept-suggestions"])
        .expect(0);
}

#[test]
fn continue_cannot_cross_the_plan_gate() {
    let mut project = Project::new();
    project.env(
        "SAMOCODE_FAKE",
        r#"planning=signal:{"status":"continue","phase":"implementation"}"#,
    );
    new_session(&project, "gate").expect(10);
    project
        .run(&["answer", "gate", "--accept-suggestions"])
        .expect(0);
    let run = project.run(&["run", "--session", "gate"]);
    run.expect(11);
    assert!(
        run.stdout().contains("only through a person's approval"),
        "{}",
        run.stdout()
    );
    let s = project.session("gate");
    assert_eq!(s.state()["phase"], "planning");
    let last = s.jsonl("_signal_history.jsonl").pop().unwrap();
    assert!(last["reason"].as_str().unwrap().starts_with("plan_gate"));
}

/// Testing and quality sending each other back and forth count their iterations over all
/// their visits: the phase whose limit is reached first blocks the session (quality, 10),
/// and a person's resume starts the counts afresh.
#[test]
fn a_loop_between_two_phases_meets_their_iteration_limits() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1").env(
        "SAMOCODE_FAKE",
        r#"testing=signal:{"status":"continue","phase":"quality"};quality=signal:{"status":"continue","phase":"testing"}"#,
    );
    project.through_both_gates("pingpong");
    let run = project.run(&["run", "--session", "pingpong"]);
    run.expect(11);
    assert!(
        run.stdout()
            .contains("iteration_limit_exceeded: the quality phase used all 10"),
        "{}",
        run.stdout()
    );
    let s = project.session("pingpong");
    let phases = |s: &super::fixture::Session| {
        s.jsonl("_iterations.jsonl")
            .iter()
            .map(|row| row["phase"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let count = |phases: &[String], phase: &str| phases.iter().filter(|p| *p == phase).count();
    let first = phases(&s);
    assert_eq!(count(&first, "quality"), 10, "{first:?}");
    // The 10th quality iteration sent the session to testing once more.
    assert_eq!(count(&first, "testing"), 11, "{first:?}");
    // Resumed by a person, the loop gets its limits afresh.
    project.run(&["resume", "pingpong"]).expect(0);
    project.run(&["run", "--session", "pingpong"]).expect(11);
    let second = phases(&s);
    assert_eq!(count(&second, "quality"), 20, "{second:?}");
}

#[test]
fn the_iteration_limit_blocks() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=stay");
    let run = new_session(&project, "loop");
    run.expect(11);
    assert!(
        run.stdout()
            .contains("iteration_limit_exceeded: the investigation phase used all 20"),
        "{}",
        run.stdout()
    );
    let s = project.session("loop");
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 20);
    assert_eq!(s.state()["status"]["state"], "blocked");
    assert!(
        s.state()["unsynced"].is_null(),
        "the last continue's rows are synced before the worker ends: {}",
        s.state()
    );
    let last = s.jsonl("_signal_history.jsonl").pop().unwrap();
    assert_eq!(last["source"], "worker");

    // A person's resume grants a fresh budget for the phase.
    project.run(&["resume", "loop"]).expect(0);
    project
        .run(&["run", "--session", "loop", "--once"])
        .expect(0);
    assert_eq!(s.state()["phase_iteration"], 1);
}

/// A testing attempt that left the worktree so that git cannot read it (its index broken)
/// was taken, the read-only rule passed over in silence: the session goes no further, and
/// says why and what to do; once the person puts the worktree right, it goes on.
#[test]
fn a_testing_attempt_that_leaves_the_worktree_unreadable_blocks_the_session() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "testing=break-index");
    project.through_both_gates("broken");
    let run = project.run(&["run", "--session", "broken"]);
    run.expect(11);
    assert!(
        run.stdout().contains("worktree_mutated")
            && run
                .stdout()
                .contains("git cannot read it after the attempt"),
        "{}",
        run.stdout()
    );
    let s = project.session("broken");
    assert_eq!(s.state()["phase"], "testing");
    let worktree = std::path::PathBuf::from(s.state()["worktree"].as_str().unwrap());
    // Still broken when resumed: no attempt runs on a worktree the rule cannot be checked on.
    project.env("SAMOCODE_FAKE", "");
    project.run(&["resume", "broken"]).expect(0);
    let run = project.run(&["run", "--session", "broken"]);
    run.expect(11);
    assert!(
        run.stdout().contains("worktree_unreadable"),
        "{}",
        run.stdout()
    );
    let testing = |s: &super::fixture::Session| {
        s.jsonl("_iterations.jsonl")
            .iter()
            .filter(|r| r["phase"] == "testing")
            .count()
    };
    assert_eq!(testing(&s), 1, "an attempt ran on the unreadable worktree");
    let index = git(&worktree, &["rev-parse", "--git-dir"]);
    std::fs::remove_file(worktree.join(index.trim()).join("index")).unwrap();
    git(&worktree, &["reset", "-q"]);
    project.run(&["resume", "broken"]).expect(0);
    project.run(&["run", "--session", "broken"]).expect(0);
    assert_eq!(s.state()["status"]["state"], "done");
}

/// A tracked file left changed (uncommitted) before testing, and changed again by a testing
/// attempt, kept its status line: the edit was taken. Its contents are compared too; the
/// undo offered does not lose the earlier changes, and a file left as it was passes.
#[test]
fn a_testing_edit_of_a_file_already_changed_is_caught() {
    let mut project = Project::new();
    let until_testing = |project: &Project, name: &str| {
        project.through_both_gates(name);
        let s = project.session(name);
        while s.state()["phase"] != "testing" {
            project.run(&["run", "--session", name, "--once"]).expect(0);
        }
        let worktree = std::path::PathBuf::from(s.state()["worktree"].as_str().unwrap());
        let readme = worktree.join("README.md");
        let text = std::fs::read_to_string(&readme).unwrap_or_default();
        std::fs::write(&readme, format!("{text}a person's change, not committed\n")).unwrap();
        s
    };
    let calm = until_testing(&project, "calm");
    project.run(&["run", "--session", "calm"]).expect(0);
    assert_eq!(calm.state()["status"]["state"], "done");

    project.env("SAMOCODE_FAKE", "testing=touch");
    let s = until_testing(&project, "again");
    let run = project.run(&["run", "--session", "again"]);
    run.expect(11);
    assert!(
        run.stdout().contains("worktree_mutated")
            && run.stdout().contains("changed again")
            && run.stdout().contains("README.md")
            && !run.stdout().contains("checkout -- README.md"),
        "{}",
        run.stdout()
    );
    assert_eq!(s.state()["phase"], "testing");
}

#[test]
fn the_testing_phase_may_not_change_tracked_files() {
    // Testing writes into a tracked file instead of only reporting: first in an attempt that
    // then fails (a retry must not take the edit as its baseline), then in one that succeeds.
    for rule in ["testing@1=touch+exit:1", "testing=touch"] {
        let mut project = Project::new();
        project.env("SAMOCODE_FAKE", rule);
        project.through_both_gates("ro");
        let run = project.run(&["run", "--session", "ro"]);
        run.expect(11);
        let s = project.session("ro");
        let worktree = s.state()["worktree"].as_str().unwrap().to_string();
        let undo = format!("git -C {worktree} checkout -- README.md");
        assert!(
            run.stdout().contains("worktree_mutated")
                && run.stdout().contains("changed: README.md")
                && run.stdout().contains(&undo),
            "{rule}: {}",
            run.stdout()
        );
        let rows = s.jsonl("_iterations.jsonl");
        let testing: Vec<_> = rows.iter().filter(|r| r["phase"] == "testing").collect();
        assert_eq!(
            testing.len(),
            1,
            "{rule}: no retry after the edit: {testing:?}"
        );
        assert!(
            testing[0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("worktree_mutated"),
            "{rule}: {}",
            testing[0]
        );
        // The person undoes the edit exactly as told, and the session goes on from testing.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&undo)
            .status()
            .unwrap();
        assert!(status.success());
        project.env("SAMOCODE_FAKE", "");
        project.run(&["resume", "ro"]).expect(0);
        project.run(&["run", "--session", "ro"]).expect(0);
        assert_eq!(s.state()["status"]["state"], "done");
    }
}

/// The pids of the scripted agents running now, from the files they keep in `running`.
fn running_agents(running: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir(running)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .rsplit_once('.')
                        .and_then(|(_, pid)| pid.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `nohup samocode run ...`: a hangup the run was started to ignore does not stop it.
#[test]
fn a_hangup_ignored_at_start_as_nohup_does_leaves_run_driving() {
    use std::os::unix::process::CommandExt as _;
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:3");
    let running = project.track_agents();
    let mut command = project.command(&["run", "--session", "nohup", "--dive", "d", "--task", "t"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let mut run = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the agent to start", || {
        !running_agents(&running).is_empty()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert_eq!(
        run.wait().unwrap().code(),
        Some(10),
        "it drove on to the gate"
    );
    let rows = project.session("nohup").jsonl("_iterations.jsonl");
    assert!(rows.iter().all(|row| row["outcome"] == "ok"), "{rows:?}");
}

/// Ctrl-C on the demo stops its agents with it, as on `supervise`.
#[test]
fn ctrl_c_on_the_demo_stops_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    let demo = std::process::Command::new(super::fixture::BIN)
        .args(["demo", "--dir", dir.path().join("demo").to_str().unwrap()])
        .env_remove("SAMOCODE_FAKE")
        .env("SAMOCODE_FAKE_RUNNING", &running)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut agents = Vec::new();
    wait_for(Duration::from_secs(30), "an agent to start", || {
        agents = running_agents(&running);
        !agents.is_empty()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = demo.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<i32> = running_agents(&running)
        .into_iter()
        .chain(agents)
        .filter(|pid| alive(*pid))
        .collect();
    assert!(left.is_empty(), "agents outlived the demo: {left:?}");
}

#[test]
fn interrupting_run_stops_the_agent_and_the_next_run_retries_the_iteration() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:60");
    project.track_agents();
    let mut run = project
        .command(&["run", "--session", "intr", "--dive", "d", "--task", "t"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = project.root.join("running");
    let mut agent = None;
    wait_for(Duration::from_secs(20), "the agent to start", || {
        agent = std::fs::read_dir(&running)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .and_then(|e| {
                e.file_name()
                    .to_string_lossy()
                    .rsplit_once('.')
                    .and_then(|(_, p)| p.parse::<i32>().ok())
            });
        agent.is_some()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!alive(agent.unwrap()), "the agent was stopped with the run");

    let s = project.session("intr");
    assert_eq!(
        s.state()["status"]["state"],
        "running",
        "the interrupted iteration is still to be done"
    );
    // Nobody drives it now: status and resume say so, and how to go on.
    let shown = project.run(&["status", "intr"]).expect(0).stdout();
    assert!(
        shown.contains("nobody drives it; `samocode run --session"),
        "{shown}"
    );
    let resumed = project.run(&["resume", "intr"]).expect(2).stderr();
    assert!(
        !resumed.contains("already running") && resumed.contains("samocode run --session"),
        "{resumed}"
    );
    project.run(&["run", "--session", "intr"]).expect(10);
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(
        rows[0]["detail"],
        "interrupted: the worker stopped during the attempt"
    );
    assert_eq!(
        (
            rows[1]["iteration"].as_u64(),
            rows[1]["attempt"].as_u64(),
            rows[1]["outcome"].as_str()
        ),
        (Some(1), Some(2), Some("ok"))
    );
}

#[test]
fn a_silent_agent_is_stopped_as_stalled_and_retried() {
    let mut project = Project::new();
    project
        .env("SAMOCODE_FAKE", "investigation@1=hang")
        .env("SAMOCODE_STALL_TIMEOUT", "1s");
    new_session(&project, "quiet").expect(10);
    let rows = project.session("quiet").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "stalled");
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("printed nothing for 1s")
    );
    assert_eq!(rows[1]["outcome"], "ok");
    for pid in project.left_behind() {
        wait_for(
            Duration::from_secs(5),
            "the stalled agent's grandchild to be gone",
            || !alive(pid),
        );
    }
}

#[test]
fn a_healthy_agent_is_not_taken_for_stalled_near_the_limit() {
    let mut project = Project::new();
    // Printing every 0.3 s for 3 s under a 1 s stall limit is not silence.
    project
        .env("SAMOCODE_FAKE", "investigation=chatty:3")
        .env("SAMOCODE_STALL_TIMEOUT", "1s");
    new_session(&project, "busy").expect(10);
    let rows = project.session("busy").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "ok", "{}", rows[0]);
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_usage_limit_reported_with_exit_code_0_parks_instead_of_blocking() {
    let mut project = Project::new();
    let reset = jiff::Timestamp::now().as_second() + 3;
    project.env("SAMOCODE_FAKE", &format!("investigation=limit-0:{reset}"));
    new_session(&project, "zero").expect(10);
    let rows = project.session("zero").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "usage_limit", "{}", rows[0]);
    assert_eq!(rows[1]["outcome"], "ok", "{}", rows[1]);
}

/// An agent that blocks says what it needs; the person sees it where they look.
#[test]
fn what_a_blocked_session_needs_is_shown() {
    let mut project = Project::new();
    project.env(
        "SAMOCODE_FAKE",
        r#"investigation=signal:{"status":"blocked","phase":"investigation","reason":"need a db","needs":"environment"}"#,
    );
    let run = new_session(&project, "needy");
    run.expect(11);
    assert!(
        run.stdout().contains("it needs: environment"),
        "{}",
        run.stdout()
    );
    let shown = project.run(&["status", "needy"]).expect(0).stdout();
    assert!(shown.contains("needs:       environment"), "{shown}");
    let rows = project.status();
    assert_eq!(rows[0]["needs"], "environment", "{rows:?}");
    // Resumed, the next attempt learns why the session had stopped.
    project.run(&["resume", "needy"]).expect(0);
    project.run(&["run", "--session", "needy"]).expect(11);
    let contexts = project.session("needy").contexts();
    let last = &contexts.last().unwrap().1;
    assert!(
        last.contains(
            "## Before this attempt\nthe session was blocked: need a db; a person resumed it"
        ),
        "{last}"
    );
}

/// A retry is told why the attempt before it failed, or it meets the same end.
#[test]
fn a_retry_is_told_why_the_attempt_before_it_failed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:10");
    project
        .run(&[
            "run",
            "--session",
            "slowpoke",
            "--dive",
            "d",
            "--task",
            "t",
            "--timeout",
            "1s",
        ])
        .expect(10);
    let contexts = project.session("slowpoke").contexts();
    assert!(
        !contexts[0].1.contains("\n## Before this attempt\n"),
        "{}",
        contexts[0].1
    );
    assert!(
        contexts[1].1.contains(
            "## Before this attempt\nattempt 1 failed: the agent passed its time limit of 1s"
        ),
        "{}",
        contexts[1].1
    );
    // Accepted, the next iteration is told nothing of it.
    assert!(!contexts[2].1.contains("\n## Before this attempt\n"));
}

/// A signal written into the working directory (a relative path) is not read; the reason
/// says where the signal goes and where the stray one is, so that the retry can mend it.
#[test]
fn a_signal_in_the_working_directory_is_pointed_out() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=stray");
    let run = new_session(&project, "stray");
    run.expect(11);
    let s = project.session("stray");
    let worktree = s.state()["worktree"].as_str().unwrap().to_string();
    let rows = s.jsonl("_iterations.jsonl");
    let detail = rows[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}/_signal.json", s.0.display()))
            && detail.contains(&format!("{worktree}/_signal.json"))
            && detail.contains("Session path:"),
        "{detail}"
    );
    // The retry was told.
    let contexts = s.contexts();
    assert!(
        contexts[1].1.contains("one is in the working directory"),
        "{}",
        contexts[1].1
    );
}

/// A `run` interrupted while it waits out a usage limit leaves a session nobody will run at
/// the reset: `status` says so, as for any session nobody drives.
#[test]
fn a_usage_limit_wait_nobody_keeps_is_shown_as_such() {
    let mut project = Project::new();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    project.env("SAMOCODE_FAKE", &format!("investigation=limit:{reset}"));
    let mut run = project
        .command(&["run", "--session", "limited", "--dive", "d", "--task", "t"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the usage limit's wait", || {
        std::fs::read_dir(&project.sessions).is_ok_and(|mut d| d.next().is_some())
            && project.session("limited").path("_state.json").exists()
            && !project.session("limited").state()["not_before"].is_null()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    run.wait().unwrap();
    let shown = project.run(&["status", "limited"]).expect(0).stdout();
    assert!(
        shown.contains("resumes at:") && shown.contains("nobody drives it"),
        "{shown}"
    );
    // Once the reset has passed, nobody is waiting for the provider any more: the session is
    // shown queued, not "until" a time gone by.
    let s = project.session("limited");
    let mut state = s.state();
    state["not_before"] = serde_json::json!("2020-01-01T00:00:00Z");
    std::fs::write(s.path("_state.json"), state.to_string()).unwrap();
    let shown = project.run(&["status", "limited"]).expect(0).stdout();
    assert!(
        !shown.contains("resumes at:")
            && !shown.contains("(at the reset)")
            && shown.contains("nobody drives it"),
        "{shown}"
    );
    let table = project.run(&["status"]).expect(0).stdout();
    assert!(!table.contains("usage limit until"), "{table}");
}

/// A person who deletes `_worker.lock` (taking it for a stale one) does not let a second
/// `run` drive the session beside the first.
#[test]
fn deleting_the_lock_file_lets_no_second_worker_in() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:5");
    let running = project.track_agents();
    let mut first = project
        .command(&["run", "--session", "locked", "--dive", "d", "--task", "t"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the agent to start", || {
        !running_agents(&running).is_empty()
    });
    let s = project.session("locked");
    std::fs::remove_file(s.path("_worker.lock")).unwrap();
    let second = project.run(&["run", "--session", "locked"]);
    second.expect(12);
    assert!(
        second.stderr().contains("another worker is driving"),
        "{}",
        second.stderr()
    );
    assert_eq!(first.wait().unwrap().code(), Some(10));
    let rows = s.jsonl("_iterations.jsonl");
    assert!(rows.iter().all(|row| row["outcome"] == "ok"), "{rows:?}");
}

/// A `run` frozen past its attempt's time limit (Ctrl-Z, SIGSTOP, a suspended machine) while
/// its agent ran on and ended in time: the attempt is the agent's, not a timeout run again (it
/// was journaled `timeout` with exit code 0, and the iteration ran twice).
#[test]
fn an_attempt_that_ended_in_time_while_its_run_was_frozen_is_not_timed_out() {
    let mut project = Project::new();
    project
        .env("SAMOCODE_FAKE", "investigation=slow:2")
        .env("CLAUDE_TIMEOUT", "6s");
    let running = project.track_agents();
    let mut run = project.spawn(&[
        "run",
        "--session",
        "frozen",
        "--dive",
        "d",
        "--task",
        "t",
        "--once",
    ]);
    // Frozen once its agent runs, until well past the limit.
    wait_for(Duration::from_secs(30), "the agent", || {
        !super::fixture::running_agents(&running).is_empty()
    });
    let session = project.session("frozen");
    let pid = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(9));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0));
    let rows = session.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["outcome"], "ok", "{rows:#?}");
}

/// An attempt whose agent printed its result (its cost) and lingered, when its `run` was
/// killed: the next worker journals it interrupted with the cost it reported, so the budget
/// counts it (it was journaled at $0).
#[test]
fn an_attempt_that_reported_its_cost_before_its_worker_died_counts_it() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_LINGER", "120");
    let mut run = project.spawn(&[
        "run",
        "--session",
        "lingers",
        "--dive",
        "d",
        "--task",
        "t",
        "--once",
    ]);
    let reported = || {
        std::fs::read_dir(&project.sessions).is_ok_and(|mut d| d.next().is_some())
            && project.session("lingers").logs().iter().any(|name| {
                name.ends_with("-a1.jsonl")
                    && std::fs::read_to_string(
                        project.session("lingers").path(&format!("_logs/{name}")),
                    )
                    .is_ok_and(|text| text.contains("total_cost_usd"))
            })
    };
    wait_for(Duration::from_secs(30), "the result in the log", reported);
    run.kill().unwrap();
    run.wait().unwrap();
    project.unset("SAMOCODE_FAKE_LINGER");
    project
        .run(&["run", "--session", "lingers", "--once"])
        .expect(0);
    let rows = project.session("lingers").jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "interrupted", "{rows:#?}");
    assert_eq!(rows[0]["cost_usd"], 0.0125, "{rows:#?}");
    assert_eq!(rows[0]["output_tokens"], 300, "{rows:#?}");
}

/// The same worker death before the agent printed any result (claude prints its cost last):
/// the tokens its messages reported are priced, rather than the attempt counting $0.
#[test]
fn an_attempt_whose_worker_died_before_its_result_counts_the_tokens_it_spent() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=hang");
    let mut run = project.spawn(&[
        "run",
        "--session",
        "midway",
        "--dive",
        "d",
        "--task",
        "t",
        "--once",
    ]);
    let spoke = || {
        std::fs::read_dir(&project.sessions).is_ok_and(|mut d| d.next().is_some())
            && project.session("midway").logs().iter().any(|name| {
                std::fs::read_to_string(project.session("midway").path(&format!("_logs/{name}")))
                    .is_ok_and(|text| text.contains("fake-msg-2"))
            })
    };
    wait_for(
        Duration::from_secs(30),
        "the agent's messages in the log",
        spoke,
    );
    run.kill().unwrap();
    run.wait().unwrap();
    project
        .run(&["run", "--session", "midway", "--once"])
        .expect(0);
    let session = project.session("midway");
    let rows = session.jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "interrupted", "{rows:#?}");
    assert_eq!(rows[0]["input_tokens"], 11000, "{rows:#?}");
    let cost = rows[0]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.02265).abs() < 1e-9, "{rows:#?}");
    assert!(
        session
            .read("session.log")
            .contains("estimated from the 11000 input"),
        "{}",
        session.read("session.log")
    );
}

/// claude refuses `--dangerously-skip-permissions` as root (outside a sandbox): every attempt
/// failed at once and was retried with backoff until the session failed, minutes later, with
/// nothing said of the cause. It is blocked at the first, saying what to do.
#[test]
fn claude_refusing_to_run_as_root_blocks_at_once_saying_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let mut project = Project::new();
    let claude = project.root.join("root-refusing-claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\necho '--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    project.env("CLAUDE_PATH", &claude.display().to_string());
    let run = project.run(&["run", "--session", "root", "--dive", "d", "--task", "t"]);
    run.expect(11);
    let s = project.session("root");
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 1, "not retried");
    let reason = s.state()["status"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("IS_SANDBOX=1") && reason.contains("not root"),
        "{reason}"
    );
}
