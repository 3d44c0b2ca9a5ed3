//! `samocode supervise`: many sessions in one daemon, gates that wait in place, recovery.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::fixture::{Project, Session, alive, wait_for};
use serde_json::Value;

/// Starts session `name` on the running daemon and waits until it asks its questions.
fn start_until_questions(project: &Project, name: &str) -> Session {
    project
        .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session(name);
    wait_for(Duration::from_secs(30), "the questions", || {
        s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers"
    });
    s
}

/// A restart listed every owned session again in `sessions.jsonl` (a second line, and a
/// synced write, for each at every start): the sessions a daemon reopens are listed already.
#[test]
fn a_restart_lists_no_owned_session_twice() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    for name in ["one", "two"] {
        project
            .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
    let file = project.state_dir().join("sessions.jsonl");
    let listed = || std::fs::read_to_string(&file).unwrap().lines().count();
    assert_eq!(listed(), 2);
    assert_eq!(daemon.terminate(), Some(0));
    let _daemon = project.daemon(&[]);
    wait_for(Duration::from_secs(30), "both sessions reopened", || {
        project
            .run(&["status", "--json"])
            .stdout()
            .matches("\"owner\": \"daemon\"")
            .count()
            == 2
    });
    assert_eq!(listed(), 2, "{}", project.daemon_log());
}

#[test]
fn fifty_sessions_never_run_more_than_eight_agents_and_all_finish() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "*=slow:0.05");
    project.track_agents();
    let _daemon = project.daemon(&["--max-parallel", "8"]);
    for i in 0..50 {
        project
            .run(&[
                "start",
                "--session",
                &format!("s{i:02}"),
                "--dive",
                "d",
                "--task",
                "t",
            ])
            .expect(0);
    }
    project.drive_to_done(50, Duration::from_secs(240));
    let seen = project.concurrency();
    assert_eq!(seen.len(), 500, "ten agent runs per session");
    let most = seen.iter().map(|(all, _)| *all).max().unwrap();
    assert!(most <= 8, "at most 8 agents at once, saw {most}");
    assert!(most >= 2, "sessions did run in parallel (saw {most})");
    println!("most agents at once: {most} (cap 8)");
    assert!(
        seen.iter().all(|(_, same)| *same == 1),
        "a session never ran two agents at once"
    );
}

#[test]
fn gates_through_the_socket_and_through_the_files() {
    let mut project = Project::new();
    // Without a daemon: start refuses and says what to do; gates act on the files.
    let start = project.run(&["start", "--session", "one", "--dive", "d", "--task", "t"]);
    start.expect(2);
    assert!(
        start.stderr().contains("samocode supervise")
            && start.stderr().contains("samocode run --session one"),
        "{}",
        start.stderr()
    );
    project
        .run(&["run", "--session", "one", "--dive", "d", "--task", "t"])
        .expect(10);
    project
        .run(&["answer", "one", "--accept-suggestions"])
        .expect(0);
    project.run(&["stop", "one"]).expect(0);
    assert_eq!(project.session("one").state()["status"]["state"], "stopped");
    project.run(&["resume", "one"]).expect(0);

    // With a daemon: the same commands go through its socket, which only its user may use.
    let daemon = project.daemon(&[]);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let second = project.run(&["supervise"]);
    second.expect(12);
    assert!(
        second
            .stderr()
            .contains("another samocode daemon is running"),
        "{}",
        second.stderr()
    );

    project.run(&["start", "--session", "one"]).expect(0);
    project
        .run(&["start", "--session", "two", "--dive", "d", "--task", "t"])
        .expect(0);
    let one = project.session("one");
    wait_for(
        Duration::from_secs(30),
        "one to wait for plan approval",
        || one.state()["status"]["for"] == "plan_approval",
    );
    // The daemon holds the session: a foreground worker may not take it.
    project.run(&["run", "--session", "one"]).expect(12);
    let approve = project.run(&["approve", "one"]);
    approve.expect(0);
    assert!(
        approve.stdout().contains("approved the plan"),
        "{}",
        approve.stdout()
    );
    wait_for(Duration::from_secs(30), "one to be done", || {
        one.state()["status"]["state"] == "done"
    });

    let two = project.session("two");
    wait_for(Duration::from_secs(30), "two to ask", || {
        two.state()["status"]["for"] == "qa_answers"
    });
    project.run(&["stop", "two"]).expect(0);
    assert_eq!(two.state()["status"]["state"], "stopped");
    let refused = project.run(&["approve", "two"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("not waiting for plan approval"),
        "{}",
        refused.stderr()
    );
    // Resumed, it asks again; resuming a session that waits for answers says what it needs.
    project.run(&["resume", "two"]).expect(0);
    wait_for(Duration::from_secs(30), "two to ask again", || {
        two.state()["status"]["for"] == "qa_answers"
    });
    let early = project.run(&["resume", "two"]);
    early.expect(2);
    assert!(
        early.stderr().contains("answer every question"),
        "{}",
        early.stderr()
    );
    project
        .run(&["answer", "two", "--q", "1", "docs"])
        .expect(0);
    project.run(&["answer", "two", "--q", "2", "5"]).expect(0);
    wait_for(Duration::from_secs(30), "two to reach the plan", || {
        two.state()["status"]["for"] == "plan_approval"
    });

    let status = project.run(&["status"]);
    assert!(status.stdout().contains("PROJECT"), "{}", status.stdout());
    let rows = project.status();
    assert_eq!(
        rows.len(),
        2,
        "status lists the finished session too: {rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["worker"] == "running" || r["state"] == "done")
    );

    assert_eq!(daemon.terminate(), Some(0));
    assert!(!project.state_dir().join("control.sock").exists());
}

#[test]
fn answers_written_by_hand_wake_a_waiting_session() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "hand");
    let qa = s
        .read("_qa.md")
        .replace("Answer:\n", "Answer: typed in an editor\n");
    std::fs::write(s.path("_qa.md"), qa).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the session to go on by itself",
        || s.state()["status"]["for"] == "plan_approval",
    );
}

/// An editor or a program that writes `_qa.md` in place, in more than one write, was taken at
/// its first: the answers in the part written so far (every question there answered) were
/// the session's, and the rest never reached the agent. The file is read once it is closed.
#[test]
fn answers_written_by_hand_are_read_once_the_file_is_closed() {
    use std::io::Write;
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "slowhand");
    let qa = s
        .read("_qa.md")
        .replace("Answer:\n", "Answer: typed by hand\n");
    let second = qa.find("## Q2").expect("two questions");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(s.path("_qa.md"))
        .unwrap();
    file.write_all(&qa.as_bytes()[..second]).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.state()["status"]["for"],
        "qa_answers",
        "a file half written was taken: {}",
        project.daemon_log()
    );
    file.write_all(&qa.as_bytes()[second..]).unwrap();
    drop(file);
    wait_for(Duration::from_secs(30), "the answers taken", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    let answered = s
        .jsonl("_signal_history.jsonl")
        .into_iter()
        .filter(|row| row["status"] == "answer")
        .count();
    assert_eq!(answered, 1, "{:#?}", s.jsonl("_signal_history.jsonl"));
}

/// Questions answered from the command line while the attempt that asked them still ran
/// (its agent lingering after its `waiting` signal): the `waiting` is met at once, the
/// session goes on, and the answer is journaled as the person's. (It was a protocol error, a
/// paid retry, and an agent told it had made a mistake: found by the races hunt.)
#[test]
fn questions_answered_before_their_attempt_ends_are_taken_not_a_protocol_error() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_LINGER", "3");
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "early", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("early");
    wait_for(Duration::from_secs(60), "the questions written", || {
        s.path("_qa.md").exists() && s.state()["status"]["state"] == "running"
    });
    project
        .run(&["answer", "early", "--accept-suggestions"])
        .expect(0);
    wait_for(Duration::from_secs(60), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    let rows = s.jsonl("_iterations.jsonl");
    assert!(
        rows.iter().all(|r| r["outcome"] == "ok"),
        "every attempt ok: {rows:#?}"
    );
    let history = s.jsonl("_signal_history.jsonl");
    assert!(
        history
            .iter()
            .any(|r| r["status"] == "answer" && r["by"] == "from the command line"),
        "{history:#?}"
    );
}

/// A session the daemon owns, driven by a `samocode run` while the daemon was down: `resume`
/// says the daemon takes it up (not "nobody drives it"), and a daemon started meanwhile,
/// which cannot open it then, takes it up once the run lets go, rather than show it broken
/// for good (found by the story hunt).
#[test]
fn a_session_a_run_holds_when_the_daemon_starts_is_taken_up_once_the_run_ends() {
    let (mut project, s) = owned_by_a_stopped_daemon();
    let resume = project.run(&["resume", "held"]);
    resume.expect(2);
    assert!(
        resume.stderr().contains("its daemon, which is not running"),
        "{}",
        resume.stderr()
    );
    let mut run = hold_with_a_run(&mut project, &s);
    let _daemon = project.daemon(&[]);
    wait_for_held(&project);
    // Shown as the run's meanwhile, not as broken.
    let rows = project.status();
    let row = rows
        .iter()
        .find(|r| r["name"] == s.state()["name"])
        .expect("the session listed");
    assert_eq!(
        (&row["state"], &row["owner"]),
        (&"running".into(), &"run".into()),
        "{row}"
    );
    assert_eq!(
        run.wait().unwrap().code(),
        Some(10),
        "the run waits for answers"
    );
    wait_for(Duration::from_secs(30), "the daemon to take it up", || {
        project
            .status()
            .iter()
            .any(|r| r["name"] == s.state()["name"] && r["state"] == "waiting")
    });
}

/// A session `held` that a daemon owns, stopped (SIGTERM) during its first attempt.
fn owned_by_a_stopped_daemon() -> (Project, Session) {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:30");
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "held", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("held");
    wait_for(Duration::from_secs(20), "the attempt", || {
        s.path("_state.json").exists() && s.state()["status"]["state"] == "running"
    });
    assert_eq!(daemon.terminate(), Some(0));
    (project, s)
}

/// Waits until the daemon says another worker drives the session it opened.
fn wait_for_held(project: &Project) {
    wait_for(
        Duration::from_secs(20),
        "the daemon to find it held",
        || {
            project
                .daemon_log()
                .contains("another worker drives the session")
        },
    );
}

/// Starts `samocode run` on the session and waits until its own attempt runs (a new attempt
/// log: the state says running already, from the worker before).
fn hold_with_a_run(project: &mut Project, s: &Session) -> std::process::Child {
    let logs = || std::fs::read_dir(s.path("_logs")).map_or(0, |d| d.count());
    let before = logs();
    project.env("SAMOCODE_FAKE", "investigation=slow:5");
    let run = project.spawn(&["run", "--session", "held"]);
    wait_for(Duration::from_secs(20), "the run's attempt", || {
        logs() > before
    });
    run
}

/// The same, with a person's command taking the session up before the daemon looks again: the
/// look finds it driven and does nothing (it reported the daemon's own lock as another
/// worker's, and left the session deaf to answers written by hand: found by the second read).
#[test]
fn a_session_resumed_before_the_daemon_looks_again_is_left_alone() {
    let (mut project, s) = owned_by_a_stopped_daemon();
    let mut run = hold_with_a_run(&mut project, &s);
    let _daemon = project.daemon(&[]);
    wait_for_held(&project);
    assert_eq!(run.wait().unwrap().code(), Some(10));
    // Handed to the daemon before its look (a `start`; a `resume` from the command line
    // goes to the files, as the daemon does not list a session another worker held).
    project.run(&["start", "--session", "held"]).expect(0);
    // Past the daemon's look again: said once, and never told as a failure.
    std::thread::sleep(Duration::from_secs(12));
    let log = project.daemon_log();
    assert_eq!(
        log.matches("another worker drives the session").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("failed: cannot open"), "{log}");
    let qa = s
        .read("_qa.md")
        .replace("Answer:\n", "Answer: typed by hand\n");
    std::fs::write(s.path("_qa.md"), qa).unwrap();
    wait_for(Duration::from_secs(30), "the hand answers taken", || {
        s.state()["status"]["for"] == "plan_approval"
    });
}

/// A hand edit that leaves `_qa.md` unreadable (a byte that is not UTF-8) keeps the session
/// waiting, with the reason in its log; the edit made good wakes it. (The session's actor had
/// failed: the session showed `error`, and a later good edit went unseen.)
#[test]
fn answers_written_by_hand_in_a_bad_encoding_keep_the_session_waiting() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "latin");
    let good = s
        .read("_qa.md")
        .replace("Answer:\n", "Answer: typed in an editor\n");
    let mut bad = good.clone().into_bytes();
    bad.extend_from_slice(b"caf\xe9\n");
    std::fs::write(s.path("_qa.md"), bad).unwrap();
    wait_for(Duration::from_secs(30), "the reason in the log", || {
        std::fs::read_to_string(s.path("session.log"))
            .unwrap_or_default()
            .contains("_qa.md")
    });
    let rows = project.status();
    assert_eq!(rows[0]["state"], "waiting", "{rows:#?}");
    // Said once, not at every event of the file.
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(s.path("session.log")).unwrap();
    assert_eq!(log.matches("still waiting for answers").count(), 1, "{log}");
    std::fs::write(s.path("_qa.md"), good).unwrap();
    wait_for(Duration::from_secs(30), "the session to go on", || {
        s.state()["status"]["for"] == "plan_approval"
    });
}

/// A session waiting for answers whose `_qa.md` was deleted is resumed: its phase runs again
/// and asks again. (`answer` said there was nothing to answer, and `resume` said to answer
/// first: the session could not move.)
#[test]
fn a_session_whose_questions_file_was_deleted_is_resumed_and_asks_again() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "gone");
    std::fs::remove_file(s.path("_qa.md")).unwrap();
    let answer = project.run(&["answer", "gone", "--q", "1", "x"]);
    answer.expect(2);
    assert!(
        answer.stderr().contains("samocode resume"),
        "{}",
        answer.stderr()
    );
    project.run(&["resume", "gone"]).expect(0);
    wait_for(Duration::from_secs(30), "the questions asked again", || {
        s.path("_qa.md").exists() && s.state()["status"]["for"] == "qa_answers"
    });
}

#[test]
fn an_approval_whose_notebook_cannot_be_written_leaves_the_session_waiting() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "plan");
    project
        .run(&["answer", "plan", "--accept-suggestions"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    // A folder where the notebook's spare goes: the approval cannot write the notebook, says
    // so, and is not half applied: the session still waits, in the daemon and on disk.
    let spare = s.path("._overview.md.prev");
    let _ = std::fs::remove_file(&spare);
    std::fs::create_dir(&spare).unwrap();
    let refused = project.run(&["approve", "plan"]);
    refused.expect(1);
    assert!(
        refused.stderr().contains("._overview.md.prev")
            && refused.stderr().contains("move it away"),
        "{}",
        refused.stderr()
    );
    assert_eq!(s.state()["phase"], "planning");
    assert_eq!(s.state()["status"]["for"], "plan_approval");
    assert!(!s.read("_overview.md").contains("Plan approved"));
    // Moved away, the same approval goes through, once.
    std::fs::remove_dir(&spare).unwrap();
    project.run(&["approve", "plan"]).expect(0);
    wait_for(Duration::from_secs(30), "plan to be done", || {
        s.state()["status"]["state"] == "done"
    });
    let approvals = s
        .jsonl("_signal_history.jsonl")
        .iter()
        .filter(|row| row["status"] == "approve")
        .count();
    assert_eq!(approvals, 1);
    assert_eq!(s.read("_overview.md").matches("Plan approved").count(), 1);
}

/// An answer whose state cannot be saved is not applied at all: the answers in `_qa.md` go
/// back too, so nothing applies them later, and the notebook does not claim it.
#[test]
fn an_answer_whose_state_cannot_be_saved_is_not_applied_at_all() {
    for through_daemon in [false, true] {
        let mut project = Project::new();
        let daemon = through_daemon.then(|| project.daemon(&[]));
        let s = if through_daemon {
            start_until_questions(&project, "ask")
        } else {
            project
                .run(&["run", "--session", "ask", "--dive", "d", "--task", "t"])
                .expect(10);
            project.session("ask")
        };
        let questions = s.read("_qa.md");
        let spare = s.path("._state.json.prev");
        let _ = std::fs::remove_file(&spare);
        std::fs::create_dir(&spare).unwrap();
        let refused = project.run(&["answer", "ask", "--accept-suggestions"]);
        refused.expect(1);
        assert!(
            refused.stderr().contains("._state.json.prev"),
            "{}",
            refused.stderr()
        );
        assert_eq!(s.read("_qa.md"), questions, "the answers went back");
        assert_eq!(s.state()["status"]["for"], "qa_answers");
        assert!(!s.read("_overview.md").contains("Questions answered"));
        // Moved away, the same answer goes through, once.
        std::fs::remove_dir(&spare).unwrap();
        project
            .run(&["answer", "ask", "--accept-suggestions"])
            .expect(0);
        assert_ne!(s.read("_qa.md"), questions);
        assert_eq!(
            s.read("_overview.md")
                .matches("Questions answered by a person")
                .count(),
            1
        );
        let answers = s
            .jsonl("_signal_history.jsonl")
            .iter()
            .filter(|row| row["status"] == "answer")
            .count();
        assert_eq!(answers, 1);
        drop(daemon);
    }
}

/// A person's command whose state is saved is applied, and said so, even when its history
/// row cannot be written then (a full disk): the row waits in `_state.json` and is journaled
/// when the session is next opened. It used to exit 1 after applying the approval.
#[test]
fn an_approval_whose_history_row_cannot_be_written_is_applied_and_its_row_kept() {
    let project = Project::new();
    let s = project.to_the_plan_gate("plan");
    assert_eq!(s.state()["status"]["for"], "plan_approval");
    // A directory where the journal is: no row can be appended to it.
    let journal = s.path("_signal_history.jsonl");
    let kept = s.path("history.kept");
    std::fs::rename(&journal, &kept).unwrap();
    std::fs::create_dir(&journal).unwrap();
    project.run(&["approve", "plan"]).expect(0);
    assert_eq!(s.state()["phase"], "implementation");
    let waiting = s.state()["unsynced"]["unjournaled"].clone();
    assert_eq!(waiting.as_array().map(Vec::len), Some(1), "{waiting}");
    assert_eq!(waiting[0]["status"], "approve");
    assert_eq!(s.read("_overview.md").matches("Plan approved").count(), 1);
    // The journal back, the next opening writes the row, once.
    std::fs::remove_dir(&journal).unwrap();
    std::fs::rename(&kept, &journal).unwrap();
    project.run(&["run", "--session", "plan"]).expect(0);
    let approvals = s
        .jsonl("_signal_history.jsonl")
        .iter()
        .filter(|row| row["status"] == "approve")
        .count();
    assert_eq!(approvals, 1);
    assert_eq!(s.state()["status"]["state"], "done");
}

/// A running daemon does not stand between a person and a session it does not own: the
/// README's `run`, then `answer`, works while any daemon runs (it said "the daemon does not
/// drive ...").
#[test]
fn a_session_the_daemon_does_not_own_is_answered_through_its_files() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&["run", "--session", "mine", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("mine");
    project.run(&["tell", "mine", "keep it small"]).expect(0);
    project
        .run(&["answer", "mine", "--accept-suggestions"])
        .expect(0);
    assert!(s.read("_qa.md").contains("Answer: samocode-demo"));
    assert_eq!(s.state()["status"]["state"], "queued");
    project.run(&["stop", "mine"]).expect(0);
    assert_eq!(s.state()["status"]["state"], "stopped");
    let rows = project.status();
    let row = rows
        .iter()
        .find(|r| r["name"] == s.state()["name"])
        .unwrap();
    assert_eq!(row["owner"], "nobody", "the daemon did not take it: {row}");
    project.run(&["resume", "mine"]).expect(0);
    project.run(&["run", "--session", "mine"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "plan_approval");
}

/// `start` of a session the daemon drives already says so (it said another worker, the
/// daemon's own pid, was driving it, with exit 12).
#[test]
fn starting_a_session_the_daemon_drives_says_so() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    start_until_questions(&project, "twice");
    let again = project.run(&["start", "--session", "twice", "--max-cost", "5"]);
    again.expect(2);
    assert!(
        again.stderr().contains("this daemon drives") && again.stderr().contains("--raise-budget"),
        "{}",
        again.stderr()
    );
}

/// A person's command for a finished session the daemon owns says so, as without a daemon
/// (it said "the daemon is shutting down").
#[test]
fn a_command_for_a_finished_session_says_it_is_done() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "fin", "--dive", "d", "--task", "t"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    for args in [
        vec!["approve", "fin"],
        vec!["resume", "fin"],
        vec!["stop", "fin"],
        vec!["tell", "fin", "more"],
    ] {
        let run = project.run(&args);
        run.expect(2);
        assert!(
            run.stderr().contains("is done; start a new session"),
            "{args:?}: {}",
            run.stderr()
        );
    }
}

#[test]
fn a_crashed_daemon_is_replaced_and_every_session_finishes() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "*=slow:2");
    project.track_agents();
    let daemon = project.daemon(&["--max-parallel", "20"]);
    for i in 0..20 {
        project
            .run(&[
                "start",
                "--session",
                &format!("c{i:02}"),
                "--dive",
                "d",
                "--task",
                "t",
            ])
            .expect(0);
    }
    // Let the sessions get into their iterations, answering the first gates.
    let running_dir = project.root.join("running");
    wait_for(Duration::from_secs(60), "agents in flight", || {
        std::fs::read_dir(&running_dir)
            .map(|d| d.count() >= 10)
            .unwrap_or(false)
    });
    daemon.crash();
    let orphans: Vec<i32> = std::fs::read_dir(&running_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .rsplit_once('.')
                .and_then(|(_, p)| p.parse().ok())
        })
        .filter(|pid| alive(*pid))
        .collect();
    assert!(!orphans.is_empty(), "the crash left agents running");

    let _daemon = project.daemon(&["--max-parallel", "20"]);
    for pid in &orphans {
        wait_for(
            Duration::from_secs(10),
            "the first daemon's agents to be killed",
            || !alive(*pid),
        );
    }
    project.drive_to_done(20, Duration::from_secs(240));
    assert!(
        project.concurrency().iter().all(|(_, same)| *same == 1),
        "no session ever ran twice at once"
    );
    for i in 0..20 {
        let s = project.session(&format!("c{i:02}"));
        let history = s.jsonl("_signal_history.jsonl");
        let mut keys: Vec<(u64, u64, String, String)> = history
            .iter()
            .map(|r| {
                (
                    r["iteration"].as_u64().unwrap(),
                    r["attempt"].as_u64().unwrap(),
                    r["source"].to_string(),
                    r["status"].to_string(),
                )
            })
            .collect();
        let agent_iterations: Vec<u64> = history
            .iter()
            .filter(|r| r["source"] == "agent")
            .map(|r| r["iteration"].as_u64().unwrap())
            .collect();
        assert_eq!(
            agent_iterations,
            (1..=10).collect::<Vec<_>>(),
            "one accepted signal per iteration, none lost or repeated"
        );
        let count = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), count, "no duplicated history row");
        assert_eq!(s.state()["status"]["state"], "done");
    }
}

#[test]
fn sigterm_stops_running_agents_within_their_grace_and_exits_zero() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=hang");
    project.track_agents();
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "long", "--dive", "d", "--task", "t"])
        .expect(0);
    let running = project.root.join("running");
    let mut agent = None;
    wait_for(Duration::from_secs(20), "the agent to run", || {
        agent = std::fs::read_dir(&running)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| {
                e.file_name()
                    .to_string_lossy()
                    .rsplit_once('.')
                    .and_then(|(_, p)| p.parse::<i32>().ok())
            });
        agent.is_some()
    });
    let left_behind = {
        let mut pids = Vec::new();
        wait_for(Duration::from_secs(10), "the agent's grandchild", || {
            pids = project.left_behind();
            !pids.is_empty()
        });
        pids
    };
    assert_eq!(daemon.terminate(), Some(0));
    assert!(!alive(agent.unwrap()), "the agent was stopped");
    for pid in left_behind {
        assert!(!alive(pid), "no process of the attempt outlives the daemon");
    }
    let state = project.session("long").state();
    assert_eq!(
        state["status"]["state"], "running",
        "an interrupted attempt runs again on the next start"
    );
    let log = project.session("long").read("session.log");
    assert!(
        log.contains("stopped by the worker during an attempt"),
        "{log}"
    );
}

/// The notebook's phase line of a session waiting for a slot is written when its next attempt
/// starts; a daemon that stops first writes it then. (Into testing, a read-only phase, the
/// verdict's rows are synced at once, so the state carries none that would make the stop save.)
#[test]
fn a_session_queued_at_the_stop_leaves_its_notebook_in_its_phase() {
    let mut project = Project::new();
    // One slot, taken in turn: while the two are in implementation (3 steps of 5 s each), the
    // first to finish it waits for the other's step to end, and then runs its slow testing.
    project.env("SAMOCODE_FAKE", "implementation=slow:5;testing=slow:30");
    let daemon = project.daemon(&["--max-parallel", "1"]);
    for name in ["first", "second"] {
        project
            .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
    let sessions = [project.session("first"), project.session("second")];
    let mut waiting = None;
    wait_for(
        Duration::from_secs(60),
        "one session queued for testing",
        || {
            project.pass_gates(&project.status());
            waiting = sessions.iter().position(|s| {
                let state = s.state();
                state["phase"] == "testing" && state["status"]["state"] == "queued"
            });
            waiting.is_some()
                && sessions
                    .iter()
                    .any(|s| s.state()["status"]["state"] == "running")
        },
    );
    let waiting = &sessions[waiting.unwrap()];
    assert_eq!(daemon.terminate(), Some(0));
    let state = waiting.state();
    assert_eq!(
        (state["phase"].as_str(), state["status"]["state"].as_str()),
        (Some("testing"), Some("queued")),
        "stopped while it waited: no attempt of it wrote the notebook"
    );
    let notebook = waiting.read("_overview.md");
    assert!(
        notebook.contains("\nPhase: testing\n"),
        "the notebook agrees with the state: {notebook}"
    );
}

/// Stopping an attempt and resuming the session goes on with the same iteration: the
/// attempts a person stopped do not use up an iteration budget (four stops used to block a
/// session with `--max-iterations 4` after one real iteration).
#[test]
fn stops_during_attempts_do_not_use_up_iterations() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:30");
    let _daemon = project.daemon(&[]);
    project
        .run(&[
            "start",
            "--session",
            "busy",
            "--dive",
            "d",
            "--task",
            "t",
            "--max-iterations",
            "2",
        ])
        .expect(0);
    let s = project.session("busy");
    for attempt in 1..=4 {
        wait_for(Duration::from_secs(20), "the next attempt running", || {
            let state = s.state();
            state["status"]["state"] == "running" && state["attempt"] == attempt
        });
        assert_eq!(s.state()["iteration"], 1);
        if attempt < 4 {
            project.run(&["stop", "busy"]).expect(0);
            project.run(&["resume", "busy"]).expect(0);
        }
    }
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "interrupted" && r["iteration"] == 1)
    );
}

#[test]
fn stop_parks_a_running_session_and_parallel_changes_the_cap() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:30");
    let _daemon = project.daemon(&["--max-parallel", "1"]);
    project
        .run(&["start", "--session", "busy", "--dive", "d", "--task", "t"])
        .expect(0);
    project
        .run(&["start", "--session", "next", "--dive", "d", "--task", "t"])
        .expect(0);
    let busy = project.session("busy");
    let next = project.session("next");
    wait_for(Duration::from_secs(20), "busy to run", || {
        busy.state()["status"]["state"] == "running"
    });
    assert_eq!(
        next.state()["status"]["state"],
        "queued",
        "one slot: the second session waits its turn"
    );
    let rows = project.status();
    assert!(rows.iter().any(|r| r["state"] == "queued"));

    let stop = project.run(&["stop", "busy"]);
    stop.expect(0);
    assert_eq!(busy.state()["status"]["state"], "stopped");
    wait_for(Duration::from_secs(20), "next to get the slot", || {
        next.state()["status"]["state"] == "running"
    });

    let parallel = project.run(&["parallel", "3"]);
    parallel.expect(0);
    assert!(
        parallel.stdout().contains("at most 3 agents"),
        "{}",
        parallel.stdout()
    );
    project.run(&["resume", "busy"]).expect(0);
    wait_for(Duration::from_secs(20), "busy to run beside next", || {
        busy.state()["status"]["state"] == "running"
    });
    let rows = busy.jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["detail"], "stopped by a person");
}

#[test]
fn usage_limited_sessions_park_without_a_slot_and_resume_after_a_daemon_restart() {
    let mut project = Project::new();
    let reset = jiff::Timestamp::now().as_second() + 6;
    project.env("SAMOCODE_FAKE", &format!("investigation=limit:{reset}"));
    let daemon = project.daemon(&["--max-parallel", "1"]);
    for name in ["la", "lb"] {
        project
            .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
    // One slot, two refused attempts: a parked session gives its slot back.
    wait_for(Duration::from_secs(20), "both sessions parked", || {
        let rows = project.status();
        rows.len() == 2 && rows.iter().all(|r| r["resumes_at"].is_string())
    });
    for row in project.status() {
        assert_eq!(row["state"], "queued", "{row}");
        let at: jiff::Timestamp = row["resumes_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(at.as_second(), reset);
    }
    daemon.crash();

    let _daemon = project.daemon(&["--max-parallel", "1"]);
    project.drive_to_done(2, Duration::from_secs(60));
    for name in ["la", "lb"] {
        let rows = project.session(name).jsonl("_iterations.jsonl");
        assert_eq!(rows[0]["outcome"], "usage_limit", "{}", rows[0]);
        // The refused attempt ran again, once, after the reset, under its own number.
        assert_eq!(rows[1]["outcome"], "ok", "{}", rows[1]);
        assert_eq!(
            (rows[1]["iteration"].as_u64(), rows[1]["attempt"].as_u64()),
            (Some(1), Some(1))
        );
        let resumed: jiff::Timestamp = rows[1]["started_at"].as_str().unwrap().parse().unwrap();
        assert!(resumed.as_second() >= reset, "{name} resumed at {resumed}");
        assert_eq!(
            rows.iter()
                .filter(|r| r["phase"] == "investigation")
                .count(),
            2
        );
    }
}

#[test]
fn resume_tries_a_usage_limited_session_now() {
    let mut project = Project::new();
    let reset = jiff::Timestamp::now().as_second() + 3600;
    project.env("SAMOCODE_FAKE", &format!("investigation=limit:{reset}"));
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "later", "--dive", "d", "--task", "t"])
        .expect(0);
    wait_for(Duration::from_secs(20), "the session parked", || {
        project
            .status()
            .first()
            .is_some_and(|r| r["resumes_at"].is_string())
    });
    let table = project.run(&["status"]);
    assert!(
        table.stdout().contains("usage limit until"),
        "{}",
        table.stdout()
    );
    // A person who knows better (the plan was upgraded) says try now.
    let resumed = project.run(&["resume", "later"]);
    resumed.expect(0);
    let s = project.session("later");
    wait_for(Duration::from_secs(20), "a second attempt", || {
        s.jsonl("_iterations.jsonl").len() == 2
    });
    let rows = s.jsonl("_iterations.jsonl");
    let second: jiff::Timestamp = rows[1]["started_at"].as_str().unwrap().parse().unwrap();
    assert!(second.as_second() < reset - 3000, "it waited for the reset");
    // Still limited, so it parks again until the reset.
    assert_eq!(rows[1]["outcome"], "usage_limit");
    wait_for(Duration::from_secs(20), "parked again", || {
        project.status()[0]["resumes_at"].is_string()
    });
}

/// Starts sessions `s0` to `s{count - 1}` on the running daemon.
fn start_numbered(project: &Project, count: usize) {
    for i in 0..count {
        let name = format!("s{i}");
        project
            .run(&["start", "--session", &name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
}

/// Linux starts processes with a soft limit of 1,024 open files, and the daemon holds one per
/// session it owns and a few per running agent: it raises its soft limit to the hard one.
#[test]
fn a_daemon_started_under_a_low_soft_open_files_limit_holds_more_sessions_than_it() {
    let mut project = Project::new();
    // 48 files: without the raise, the 32nd session or so fails with "Too many open files".
    let _daemon = project.daemon_under("-S -n 48", &["--max-parallel", "4"]);
    start_numbered(&project, 60);
    wait_for(Duration::from_secs(60), "60 sessions at their gate", || {
        let rows = project.status();
        rows.len() == 60 && rows.iter().all(|r| r["waiting_for"] == "qa_answers")
    });
}

/// Under a hard limit, the daemon refuses a new session before it would run short of files,
/// also when the starts come all at once: every session it accepted reaches its gate. A
/// session holds two files (its folder and `_worker.lock`, both locked), and one being opened
/// a few more for a moment; counted as one, sessions failed with "Too many open files" (and
/// advice about git) at half the fleet the limit was said to hold.
#[test]
fn every_session_a_daemon_accepts_under_its_open_files_limit_runs() {
    let mut project = Project::new();
    let _daemon = project.daemon_under("-n 400", &["--max-parallel", "2"]);
    let project = std::sync::Arc::new(project);
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let starters: Vec<_> = (0..8)
        .map(|t| {
            let (project, refused) = (project.clone(), refused.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("b{t}-{i}");
                    let run =
                        project.run(&["start", "--session", &name, "--dive", "d", "--task", "t"]);
                    if run.code() != 0 {
                        refused.lock().unwrap().push(run.stderr());
                    }
                }
            })
        })
        .collect();
    for starter in starters {
        starter.join().unwrap();
    }
    let refused = refused.lock().unwrap();
    assert!(!refused.is_empty(), "200 sessions do not fit in 400 files");
    for message in refused.iter() {
        assert!(
            message.contains("cannot take another session") && message.contains("limit of 400"),
            "{message}"
        );
    }
    let accepted = 200 - refused.len();
    wait_for(
        Duration::from_secs(120),
        "every accepted session at its gate",
        || {
            let rows = project.status();
            let settled = rows
                .iter()
                .filter(|r| r["state"] != "running" && r["state"] != "queued");
            rows.len() == accepted && settled.count() == accepted
        },
    );
    for row in project.status() {
        assert_eq!(
            row["waiting_for"],
            "qa_answers",
            "{row}\n{}",
            project.daemon_log()
        );
    }
}

/// Under a hard limit too low for more, a new session and a higher cap are refused with the
/// numbers and what to do, and the sessions already held go on.
#[test]
fn a_fleet_over_the_hard_open_files_limit_is_refused_with_what_to_do() {
    let mut project = Project::new();
    // 304 files: 256 for the daemon, 6 for each of 4 agents, two for each of 12 sessions.
    let daemon = project.daemon_under("-n 304", &["--max-parallel", "4"]);
    start_numbered(&project, 12);
    let refused = project.run(&[
        "start",
        "--session",
        "one-more",
        "--dive",
        "d",
        "--task",
        "t",
    ]);
    refused.expect(1);
    let message = refused.stderr();
    for part in [
        "cannot take another session",
        "limit of 304",
        "ulimit -n 4096",
        "LimitNOFILE=4096",
        "samocode parallel N",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(
        std::fs::read_dir(&project.sessions).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("one-more")),
        "a refused session leaves no folder"
    );
    let higher = project.run(&["parallel", "10"]);
    higher.expect(2);
    assert!(
        higher.stderr().contains("at most 4 fit now"),
        "{}",
        higher.stderr()
    );
    project.run(&["parallel", "3"]).expect(0);
    wait_for(Duration::from_secs(30), "12 sessions at their gate", || {
        let rows = project.status();
        rows.len() == 12 && rows.iter().all(|r| r["waiting_for"] == "qa_answers")
    });
    drop(daemon);

    // A daemon whose cap alone does not fit does not start.
    let over = project
        .command_under("-n 300", &["supervise", "--max-parallel", "10"])
        .output()
        .unwrap();
    assert_eq!(over.status.code(), Some(2));
    let message = String::from_utf8_lossy(&over.stderr);
    assert!(
        message.contains("limit of 300") && message.contains("lower --max-parallel"),
        "{message}"
    );

    // One whose cap fits but not all its sessions drives those that fit; the others are shown
    // broken with why, and a daemon with room takes them all back.
    // 284 files: 256 for the daemon, 6 for each of 4 agents, two for each of 2 sessions.
    let tight = project.daemon_under("-n 284", &["--max-parallel", "4"]);
    wait_for(Duration::from_secs(30), "every session opened", || {
        let rows = project.status();
        rows.iter().filter(|r| r["state"] == "error").count() == 10
    });
    let rows = project.status();
    let broken = rows.iter().find(|r| r["state"] == "error").unwrap();
    assert!(
        broken["error"].as_str().unwrap().contains("limit of 284"),
        "{broken}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["waiting_for"] == "qa_answers" && r["state"] == "waiting")
            .count(),
        2
    );
    drop(tight);
    let _roomy = project.daemon(&[]);
    wait_for(Duration::from_secs(30), "every session back", || {
        let rows = project.status();
        rows.len() == 12 && rows.iter().all(|r| r["state"] == "waiting")
    });
}

/// A person who deletes a session's folder is done with it: the daemon's next start forgets
/// it, saying so in its log, instead of listing it broken and telling the chat at every
/// start. A session whose whole sessions folder is missing (a disk not mounted yet) is kept.
#[test]
fn a_session_whose_folder_was_deleted_is_forgotten_at_the_next_start() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let deleted = start_until_questions(&project, "deleted");
    start_until_questions(&project, "kept");
    let mut other = Project::new();
    other.env(
        "SAMOCODE_STATE_DIR",
        &project.state_dir().display().to_string(),
    );
    start_until_questions(&other, "unmounted");
    daemon.terminate();
    std::fs::remove_dir_all(deleted.path("")).unwrap();
    let away = other.root.join("sessions-away");
    std::fs::rename(&other.sessions, &away).unwrap();

    let _daemon = project.daemon(&[]);
    // Outside a project, `status` lists every session the daemon owns.
    let owned = || project.owned_status();
    wait_for(Duration::from_secs(30), "the sessions opened", || {
        let rows = owned();
        rows.iter().any(|r| r["state"] == "waiting") && rows.iter().any(|r| r["state"] == "error")
    });
    let rows = owned();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(!names.iter().any(|n| n.ends_with("-deleted")), "{rows:?}");
    let unmounted = rows
        .iter()
        .find(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-unmounted"))
        })
        .unwrap_or_else(|| panic!("the unmounted session is kept: {rows:?}"));
    assert_eq!(unmounted["state"], "error", "{unmounted}");
    assert!(
        unmounted["error"]
            .as_str()
            .is_some_and(|e| e.contains("SESSIONS=") && e.contains("is not an existing directory")),
        "{unmounted}"
    );
    let listed = std::fs::read_to_string(project.state_dir().join("sessions.jsonl")).unwrap();
    assert!(!listed.contains("-deleted"), "{listed}");
    assert!(
        listed.contains("-unmounted") && listed.contains("-kept"),
        "{listed}"
    );
    let log = project.daemon_log();
    assert!(
        log.contains("forgets") && log.contains("its folder is gone"),
        "{log}"
    );
}

/// An agent a killed daemon left running for a session whose folder was deleted since is
/// killed by the next daemon as it forgets the session: nothing runs on with nobody to stop it.
#[test]
fn a_forgotten_sessions_leftover_agent_is_killed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=hang");
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "left", "--dive", "d", "--task", "t"])
        .expect(0);
    let left = project.session("left");
    wait_for(Duration::from_secs(30), "the agent", || {
        !super::fixture::agents_of(&left.0).is_empty()
    });
    let agents = super::fixture::agents_of(&left.0);
    // Another session keeps the sessions folder from being empty (as an unmounted disk's is).
    std::fs::create_dir(project.sessions.join("26-01-01-other")).unwrap();
    daemon.crash();
    std::fs::remove_dir_all(&left.0).unwrap();
    let _daemon = project.daemon(&[]);
    wait_for(Duration::from_secs(30), "the leftover agent killed", || {
        agents.iter().all(|pid| !alive(*pid))
    });
}

/// A session its daemon could not open (its folder away) and that a person resumes
/// once the folder is back is opened again; parked at its gate, it says so and what it waits
/// for (the gate's own refusal, exit 2, read as if nothing had been done).
#[test]
fn resuming_a_session_opened_again_at_its_gate_says_so() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let back = start_until_questions(&project, "back");
    assert_eq!(daemon.terminate(), Some(0));
    // Its folder away, from a sessions folder left empty (as an unmounted disk leaves it).
    let away = project.root.join("away");
    std::fs::rename(&back.0, &away).unwrap();
    let _daemon = project.daemon(&[]);
    let owned = || project.owned_status();
    wait_for(Duration::from_secs(30), "the session broken", || {
        owned().iter().any(|r| r["state"] == "error")
    });
    std::fs::rename(&away, &back.0).unwrap();
    let resumed = project.run(&["resume", "back"]);
    resumed.expect(0);
    assert!(
        resumed
            .stdout()
            .contains("opened again; it waits for qa answers"),
        "{}",
        resumed.stdout()
    );
}

/// `status` shows every session: one whose folder went away while the daemon held it at a
/// gate, and a folder in SESSIONS that holds no session, each as `error` with what it is.
#[test]
fn a_session_whose_folder_went_away_is_shown_as_an_error_not_left_out() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let gone = start_until_questions(&project, "gone");
    std::fs::remove_dir_all(gone.path("")).unwrap();
    std::fs::create_dir(project.sessions.join("26-01-01-stray")).unwrap();
    // Folders not named as sessions are (the Python tool's archive) are not sessions.
    std::fs::create_dir(project.sessions.join("_archive")).unwrap();
    let rows = project.status();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |suffix: &str| {
        rows.iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
            .unwrap_or_else(|| panic!("no {suffix} in {rows:?}"))
            .clone()
    };
    let gone = row("-gone");
    assert_eq!(gone["state"], "error", "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains("its folder is gone"),
        "{gone}"
    );
    let stray = row("-stray");
    assert_eq!(stray["state"], "error", "{stray}");
    assert!(
        stray["error"]
            .as_str()
            .unwrap()
            .contains("move it out of the sessions folder"),
        "{stray}"
    );
}

/// A session the daemon owns but could not open at its start (its project moved, its
/// `.samocode` unreadable) held no name: another project's session of that folder name was
/// taken beside it, and Telegram and the dashboard could reach neither ("names several").
#[test]
fn a_session_the_daemon_could_not_reopen_keeps_its_name() {
    let mut alpha = Project::new();
    let daemon = alpha.daemon(&[]);
    let mut beta = Project::new();
    beta.env(
        "SAMOCODE_STATE_DIR",
        &alpha.state_dir().display().to_string(),
    );
    start_until_questions(&alpha, "login");
    assert_eq!(daemon.terminate(), Some(0));
    let project_file = alpha.root.join(".samocode");
    let kept = std::fs::read(&project_file).unwrap();
    std::fs::remove_file(&project_file).unwrap();
    std::fs::create_dir(&project_file).unwrap();
    let _daemon = alpha.daemon(&[]);
    let refused = beta.run(&["start", "--session", "login", "--dive", "d", "--task", "t"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("another project's session"),
        "{}",
        refused.stderr()
    );
    assert_eq!(std::fs::read_dir(&beta.sessions).unwrap().count(), 0);
    std::fs::remove_dir(&project_file).unwrap();
    std::fs::write(&project_file, kept).unwrap();
}

/// A session moved to another project while the daemon was down (its project moved, its
/// old project file gone): its old folder stays listed as broken (a disk may not be mounted
/// yet), and held its name against the folder that is there: no `start` could hand the
/// session to the daemon again, whatever the restarts.
#[test]
fn a_session_moved_with_its_project_is_taken_again_by_its_name() {
    let mut alpha = Project::new();
    let daemon = alpha.daemon(&[]);
    let s = start_until_questions(&alpha, "login");
    assert_eq!(daemon.terminate(), Some(0));
    let mut beta = Project::new();
    beta.env(
        "SAMOCODE_STATE_DIR",
        &alpha.state_dir().display().to_string(),
    );
    let name = s.0.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&s.0, beta.sessions.join(&name)).unwrap();
    std::fs::remove_file(alpha.root.join(".samocode")).unwrap();
    let _daemon = alpha.daemon(&[]);
    // Taken by the daemon (any refusal, of the name or another, would fail here), and its
    // folder's session listed at its new place.
    beta.run(&["start", "--session", "login"]).expect(0);
    let rows = beta.status();
    assert!(
        rows.iter()
            .any(|r| r["name"] == name.as_str() && r["state"] != "error"),
        "{rows:#?}"
    );
}

/// A finished session the daemon could not open at its start, fixed since: its `resume`
/// answered "the session stopped before it answered" (exit 1), its actor having stopped once
/// it told its end again; it is done, and is said to be.
#[test]
fn a_resume_of_a_finished_session_opened_again_says_it_is_done() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "fin", "--dive", "d", "--task", "t"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(120));
    assert_eq!(daemon.terminate(), Some(0));
    let s = project.session("fin");
    let good = std::fs::read(s.path("_state.json")).unwrap();
    std::fs::write(s.path("_state.json"), "{garbage").unwrap();
    let _daemon = project.daemon(&[]);
    wait_for(Duration::from_secs(30), "the session shown broken", || {
        project.status().iter().any(|r| r["state"] == "error")
    });
    std::fs::write(s.path("_state.json"), good).unwrap();
    let resumed = project.run(&["resume", "fin"]);
    resumed.expect(2);
    assert!(resumed.stderr().contains("is done"), "{}", resumed.stderr());
}

/// A folder renamed while the daemon held its session at a gate: no command reached it by
/// either name (the new one was "driven by a daemon", the old one no session) until the
/// daemon restarted. The daemon knows the folder itself: the command reaches the session,
/// which goes on at its new path, under its new name, also after a restart.
#[test]
fn a_session_whose_folder_was_renamed_under_the_daemon_takes_commands_by_its_new_name() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "before");
    let renamed = s.0.with_file_name(format!(
        "{}-after",
        s.0.file_name().unwrap().to_string_lossy()
    ));
    std::fs::rename(&s.0, &renamed).unwrap();
    let name = renamed.file_name().unwrap().to_string_lossy().into_owned();
    let answered = project.run(&["answer", &name, "--accept-suggestions"]);
    answered.expect(0);
    let state = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(renamed.join("_state.json")).unwrap())
            .unwrap()
    };
    wait_for(Duration::from_secs(30), "the plan", || {
        state()["status"]["for"] == "plan_approval"
    });
    assert_eq!(state()["name"], name.as_str());
    let rows = project.status();
    assert!(rows.iter().all(|r| r["state"] != "error"), "{rows:#?}");
    assert_eq!(daemon.terminate(), Some(0));
    let _daemon = project.daemon(&[]);
    project.run(&["approve", &name]).expect(0);
    wait_for(Duration::from_secs(60), "the end", || {
        state()["status"]["state"] == "done"
    });
}

/// The dashboard and Telegram know a session by its folder name: a daemon refuses a second
/// project's session of a name it drives, before anything is made, instead of letting a
/// button or a page act on the wrong one.
#[test]
fn a_daemon_refuses_another_projects_session_of_a_name_it_drives() {
    let mut alpha = Project::new();
    let _daemon = alpha.daemon(&[]);
    let mut beta = Project::new();
    beta.env(
        "SAMOCODE_STATE_DIR",
        &alpha.state_dir().display().to_string(),
    );
    start_until_questions(&alpha, "login");
    let refused = beta.run(&["start", "--session", "login", "--dive", "d", "--task", "t"]);
    refused.expect(2);
    let message = refused.stderr();
    assert!(
        message.contains("another project's session")
            && message.contains(&alpha.sessions.display().to_string())
            && message.contains("--session OTHER-NAME"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&beta.sessions).unwrap().count(), 0);
    beta.run(&[
        "start",
        "--session",
        "login-b",
        "--dive",
        "d",
        "--task",
        "t",
    ])
    .expect(0);
    // The project's own session of that name is still its own to start again.
    let again = alpha.run(&["start", "--session", "login"]);
    assert!(
        !again.stderr().contains("another project"),
        "{}",
        again.stderr()
    );
}

/// Anyone on the machine may connect to the dashboard before logging in: it serves a capped
/// number of connections at once, so held connections cannot take the open files the
/// agents need, and it serves again once they are gone.
#[test]
fn connections_held_on_the_dashboard_leave_the_agents_their_open_files() {
    use std::io::{Read, Write};
    let mut project = Project::new();
    // 300 files: 256 for the daemon, 6 for each of 4 agents, two for each session.
    let _daemon = project.daemon_under("-n 300", &["--max-parallel", "4", "--http", "127.0.0.1:0"]);
    let run = project.run(&["dashboard", "--no-open"]);
    run.expect(0);
    let link = run.stdout();
    let address = link
        .trim()
        .strip_prefix("http://")
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("no dashboard link in {link}"))
        .to_string();
    // Up to more than the daemon's whole limit, each with half a request, held open; those
    // past what the daemon serves and its socket's queue wait for a connection (not made).
    let socket: std::net::SocketAddr = address.parse().unwrap();
    let held: Vec<std::net::TcpStream> = (0..400)
        .map_while(|_| {
            let mut stream =
                std::net::TcpStream::connect_timeout(&socket, Duration::from_millis(500)).ok()?;
            stream.write_all(b"GET / HTTP/1.1\r\n").ok()?;
            Some(stream)
        })
        .collect();
    assert!(held.len() > 64, "{} connections made", held.len());
    start_numbered(&project, 6);
    wait_for(Duration::from_secs(60), "6 sessions at their gate", || {
        let rows = project.status();
        rows.len() == 6 && rows.iter().all(|r| r["waiting_for"] == "qa_answers")
    });
    drop(held);
    wait_for(Duration::from_secs(30), "the dashboard to answer", || {
        let Ok(mut stream) = std::net::TcpStream::connect(&address) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 401")
    });
}

/// A dashboard on a public address without a token file is refused before the daemon makes
/// its state directory, lock or log.
#[test]
fn a_refused_dashboard_setting_leaves_no_state_behind() {
    let project = Project::new();
    let state = project.root.join("fresh-state");
    let out = project
        .command(&["supervise", "--http", "0.0.0.0:0"])
        .env("SAMOCODE_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("--http-token-file"), "{message}");
    assert!(!state.exists(), "the state directory was made");
}

/// A session a daemon drives is shown as the daemon's, with its pid, also to a `status` that
/// asked another daemon (another state directory): not as a `run`.
#[test]
fn a_session_another_daemon_drives_is_shown_as_a_daemons() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "held", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("held");
    wait_for(Duration::from_secs(30), "the questions", || {
        s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers"
    });
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = project
        .command(&["status", "--json"])
        .env("SAMOCODE_STATE_DIR", elsewhere.path())
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["owner"], "daemon", "{rows}");
    assert_eq!(rows[0]["owner_pid"], daemon.child.id(), "{rows}");
    // A gate given there is refused as the daemon's, with how to reach it.
    let out = project
        .command(&["answer", "held", "--accept-suggestions"])
        .env("SAMOCODE_STATE_DIR", elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains(&format!("a samocode daemon (pid {})", daemon.child.id()))
            && message.contains("SAMOCODE_STATE_DIR"),
        "{message}"
    );
    assert_eq!(s.state()["status"]["for"], "qa_answers");
}

/// A gate passed on the files while the daemon that owns the session is down: the reply says
/// that daemon takes it up again when it runs, not only that a `run` would.
#[test]
fn a_gate_passed_while_its_daemon_is_down_says_the_daemon_resumes_it() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "owned", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("owned");
    wait_for(Duration::from_secs(30), "the questions", || {
        s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers"
    });
    daemon.terminate();
    let answered = project
        .run(&["answer", "owned", "--accept-suggestions"])
        .expect(0)
        .stdout();
    assert!(
        answered.contains("its daemon resumes it when it runs again"),
        "{answered}"
    );
    let _daemon = project.daemon(&[]);
    wait_for(Duration::from_secs(30), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
}

/// `samocode dashboard` gives the browser a private page that leads on to the login link,
/// not the link: a command line is seen by every local user, who could use its one-time
/// token first.
#[test]
fn the_browser_is_not_given_the_login_token_on_its_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let mut project = Project::new();
    let _daemon = project.daemon(&["--http", "127.0.0.1:0"]);
    let bin = project.root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let opened = project.root.join("opened");
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\necho \"$@\" > '{}'\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = project
        .command(&["dashboard"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let link = String::from_utf8_lossy(&out.stdout);
    let token = link
        .split("token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token in {link}"))
        .to_string();
    let argument = std::fs::read_to_string(&opened).unwrap();
    assert!(!argument.contains(&token), "{argument}");
    let page = std::path::PathBuf::from(argument.trim().strip_prefix("file://").unwrap());
    assert!(std::fs::read_to_string(&page).unwrap().contains(&token));
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Starts session `name` on the daemon with an agent that leaves a child holding its output
/// (`escape`): once the agent has written its signal and ended, the attempt is not over until
/// the kill grace ends or the child is gone. Waits for that moment.
fn start_until_the_agent_ended(project: &Project, name: &str) -> Session {
    project
        .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session(name);
    wait_for(Duration::from_secs(30), "the agent's signal", || {
        s.path("_signal.json").exists()
    });
    // The agent exits right after it writes the signal.
    std::thread::sleep(Duration::from_millis(500));
    s
}

/// A stop that reached an attempt whose agent had already ended well, its signal written (a
/// child it left held its output through the kill grace), threw the verdict away: the
/// attempt was journaled interrupted, and its iteration ran again at the resume.
#[test]
fn a_stop_after_the_agent_ended_well_keeps_its_iteration() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape");
    project.env("SAMOCODE_KILL_GRACE", "5s");
    let _daemon = project.daemon(&[]);
    let s = start_until_the_agent_ended(&project, "late");
    project.run(&["stop", "late"]).expect(0);
    wait_for(Duration::from_secs(30), "the attempt's end", || {
        s.path("_iterations.jsonl").exists()
    });
    wait_for(Duration::from_secs(30), "the stop", || {
        s.state()["status"]["state"] == "stopped"
    });
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "ok", "{rows:?}");
    assert_eq!(s.state()["phase"], "requirements");
    // The history ends with the stop: a state derived from it again is stopped too.
    let history = s.jsonl("_signal_history.jsonl");
    let last = history.last().unwrap();
    assert_eq!(
        (&last["status"], &last["outcome"]),
        (&Value::from("stop"), &Value::from("stopped")),
        "{history:?}"
    );
    // Both stop rows name who gave it (the second had no `by`).
    assert_eq!(last["by"], "from the command line", "{history:?}");
    assert!(
        s.read("_overview.md")
            .contains("The stop given during the attempt holds"),
        "{}",
        s.read("_overview.md")
    );
    project.run(&["resume", "late"]).expect(0);
    wait_for(Duration::from_secs(30), "the questions", || {
        s.state()["status"]["for"] == "qa_answers"
    });
    let phases: Vec<String> = s
        .jsonl("_iterations.jsonl")
        .iter()
        .map(|r| r["phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        phases,
        ["investigation", "requirements"],
        "nothing ran twice"
    );
}

/// `tell --now` to an attempt whose agent had already ended well: its verdict is taken, and
/// the note goes to the next iteration rather than the same one run again.
#[test]
fn a_note_now_after_the_agent_ended_well_goes_to_the_next_iteration() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape");
    project.env("SAMOCODE_KILL_GRACE", "5s");
    let _daemon = project.daemon(&[]);
    let s = start_until_the_agent_ended(&project, "note");
    project
        .run(&["tell", "note", "use the files store", "--now"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the questions", || {
        s.state()["status"]["for"] == "qa_answers"
    });
    let rows = s.jsonl("_iterations.jsonl");
    let phases: Vec<&str> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["investigation", "requirements"], "{rows:?}");
    assert_eq!(rows[0]["outcome"], "ok", "{rows:?}");
    assert!(
        s.read("_logs/contexts.md").contains("use the files store"),
        "the note reached the next iteration"
    );
}

/// An agent ran `samocode answer` for its session's questions (or another's), and the gate
/// opened as if a person had answered: the journal said so. An agent's command is refused,
/// by the command line (its markers, or its parent's) and by the daemon (a process below it,
/// whatever its environment).
#[test]
fn an_agent_cannot_answer_or_stop_as_a_person() {
    let mut project = Project::new();
    let bin = super::fixture::BIN;
    let said = project.root.join("said.txt");
    let orphan = project.root.join("orphan.txt");
    let forged = project.root.join("forged.txt");
    let wrapper = project.root.join("meddling-claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             case \"$SAMOCODE_SESSION\" in *-meddler) ;; *) exec '{bin}' fake-agent \"$@\";; esac\n\
             SAMOCODE_STATE_DIR='{state}' '{bin}' answer asked --accept-suggestions > '{said}' 2>&1; echo rc=$? >> '{said}'\n\
             # Markers set to another project's session: below the daemon all the same.\n\
             SAMOCODE_SESSION=/elsewhere/sessions/26-01-01-x SAMOCODE_STATE_DIR='{state}' '{bin}' stop asked > '{forged}' 2>&1; echo rc=$? >> '{forged}'\n\
             # Out of its group, its markers cleared, orphaned to the daemon.\n\
             setsid env -i HOME=\"$HOME\" PATH=\"$PATH\" SAMOCODE_STATE_DIR='{state}' sh -c \"sleep 1; cd '{root}'; '{bin}' stop asked > '{orphan}' 2>&1; echo rc=\\$? >> '{orphan}'\" &\n\
             exec '{bin}' fake-agent \"$@\"\n",
            said = said.display(),
            orphan = orphan.display(),
            forged = forged.display(),
            root = project.root.display(),
            state = project.state_dir().display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    project.env("CLAUDE_PATH", &wrapper.display().to_string());
    let _daemon = project.daemon(&[]);
    let asked = start_until_questions(&project, "asked");
    start_until_questions(&project, "meddler");
    let waited = std::time::Instant::now();
    while !std::fs::read_to_string(&orphan).is_ok_and(|text| text.contains("rc=")) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the orphan's command did not end: {:?} {:?}",
            std::fs::read_to_string(&said),
            std::fs::read_to_string(&orphan)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (who, file) in [
        ("the agent", &said),
        ("its orphan", &orphan),
        ("its forged markers", &forged),
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.contains("an agent may not act as a person") && text.contains("rc=2"),
            "{who}: {text}"
        );
    }
    assert_eq!(asked.state()["status"]["for"], "qa_answers");
    let qa = asked.read("_qa.md");
    assert!(!qa.contains("Answer: files"), "{qa}");
    // An agent of another project's session (one running samocode's own tests, whose daemons
    // are their own) is this project's person.
    let answered = project
        .command(&["answer", "asked", "--accept-suggestions"])
        .env("SAMOCODE_ATTEMPT", "elsewhere-a1")
        .env("SAMOCODE_SESSION", "/elsewhere/sessions/26-12-07-other")
        .output()
        .unwrap();
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
}

/// The control socket deleted while the daemon runs (by hand, a cleaner of the folder, an
/// agent): every command found no daemon until a restart, and `answer` was refused with
/// advice that could not help. The daemon makes it again.
#[test]
fn a_control_socket_deleted_under_the_daemon_is_made_again() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    std::fs::remove_file(project.state_dir().join("control.sock")).unwrap();
    wait_for(Duration::from_secs(30), "the socket made again", || {
        project.state_dir().join("control.sock").exists()
    });
    start_until_questions(&project, "after");
    assert!(
        project
            .daemon_log()
            .contains("the control socket was gone; made again"),
        "{}",
        project.daemon_log()
    );
}

/// The daemon's list of sessions deleted while it ran: the next start forgot every session,
/// with no word. It is listed again before the daemon stops.
#[test]
fn a_list_of_sessions_deleted_under_the_daemon_is_listed_again() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "kept");
    std::fs::remove_file(project.state_dir().join("sessions.jsonl")).unwrap();
    assert_eq!(daemon.terminate(), Some(0));
    let _daemon = project.daemon(&[]);
    project
        .run(&["answer", "kept", "--accept-suggestions"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
}

/// A person's stop, then the daemon's own, both while an agent that had ended well waited
/// for a child it left: the person's stop was lost (the verdict was saved queued, and the
/// session ran on after the restart).
#[test]
fn a_stop_then_the_daemons_stop_after_the_agent_ended_well_stays_stopped() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape");
    project.env("SAMOCODE_KILL_GRACE", "5s");
    let daemon = project.daemon(&[]);
    let s = start_until_the_agent_ended(&project, "held");
    project.run(&["stop", "held"]).expect(0);
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(s.state()["status"]["state"], "stopped", "{}", s.state());
    assert_eq!(s.state()["phase"], "requirements");
    let _daemon = project.daemon(&[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.state()["status"]["state"], "stopped", "{}", s.state());
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 1, "it ran on");
}

/// A session's first checkout is slow (a filter fetching large files): the session held an
/// agent slot and its actor while git ran, so at `--max-parallel 1` every other session waited
/// with no agent running, and a `stop` of it went unanswered ("did not answer within 30s")
/// while its first attempt started afterwards. The checkout holds no slot now, and a stop
/// given during it holds once it is made: the session stops with its worktree, no attempt run.
#[test]
fn a_slow_first_checkout_holds_no_slot_and_a_stop_given_during_it_holds() {
    let mut project = Project::new();
    let gate = project.root.join("checkout-may-go");
    let held = project.root.join("checkout-held");
    super::fixture::holding_git(&mut project, &gate, &held);
    let _daemon = project.daemon(&["--max-parallel", "1"]);
    project
        .run(&["start", "--session", "held", "--dive", "d", "--task", "t"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the checkout held", || {
        held.exists()
    });
    // Another project's session runs its agents meanwhile (one repository's checkouts take
    // turns; another's do not wait on them).
    let mut other = Project::new();
    other.env(
        "SAMOCODE_STATE_DIR",
        &project.state_dir().display().to_string(),
    );
    start_until_questions(&other, "other");
    let stopped = project.run(&["stop", "held"]);
    stopped.expect(0);
    std::fs::write(&gate, "").unwrap();
    let s = project.session("held");
    wait_for(
        Duration::from_secs(30),
        "stopped, with its worktree",
        || {
            let state = s.state();
            state["status"]["state"] == "stopped" && state["worktree"].is_string()
        },
    );
    assert_eq!(s.state()["phase"], "investigation", "{}", s.state());
    assert!(
        !s.path("_iterations.jsonl").exists() || s.read("_iterations.jsonl").is_empty(),
        "no attempt ran: {}",
        s.read("_iterations.jsonl")
    );
    project.run(&["resume", "held"]).expect(0);
    wait_for(Duration::from_secs(30), "its questions", || {
        s.state()["status"]["for"] == "qa_answers"
    });
}

/// A stop (or a stop and a resume) given after the agent ended well, then the daemon killed
/// once the verdict was journaled and before its state was saved: the next daemon refused to
/// open the stopped session ("_state.json is older than the session's journals"), and the
/// resumed one ran its iteration again (the verdict was taken only for a running state). Both
/// take the verdict, and the stop holds.
#[test]
fn a_stop_after_the_agent_ended_well_then_a_crash_keeps_the_verdict_and_the_stop() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape");
    project.env("SAMOCODE_KILL_GRACE", "4s");
    project.env("SAMOCODE_FAILPOINTS", "kill-after-verdict");
    let mut sessions = Vec::new();
    for (name, resumed) in [("held", false), ("back", true)] {
        let daemon = project.daemon(&[]);
        let s = start_until_the_agent_ended(&project, name);
        project.run(&["stop", name]).expect(0);
        if resumed {
            project.run(&["resume", name]).expect(0);
        }
        let pid = daemon.pid();
        wait_for(Duration::from_secs(30), "the kill at the failpoint", || {
            !alive(pid as i32)
        });
        drop(daemon);
        sessions.push((s, resumed));
    }
    project.env("SAMOCODE_FAILPOINTS", "");
    let _daemon = project.daemon(&[]);
    for (s, resumed) in &sessions {
        let name = s.0.file_name().unwrap().to_string_lossy().into_owned();
        let status = if *resumed { "waiting" } else { "stopped" };
        wait_for(Duration::from_secs(30), status, || {
            s.state()["status"]["state"] == status
        });
        let rows = project.status();
        assert!(rows.iter().all(|r| r["state"] != "error"), "{rows:#?}");
        if !resumed {
            assert_eq!(s.state()["phase"], "requirements", "{}", s.state());
            project.run(&["resume", &name]).expect(0);
            wait_for(Duration::from_secs(30), "the questions", || {
                s.state()["status"]["for"] == "qa_answers"
            });
        }
        let phases: Vec<String> = s
            .jsonl("_iterations.jsonl")
            .iter()
            .map(|r| r["phase"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(phases, ["investigation", "requirements"], "{name}");
    }
}

/// `run` of a session the daemon drives said another worker drives it and to Ctrl-C the
/// `run` in its terminal, where there was none: it says the daemon drives it, and how to
/// follow it.
#[test]
fn run_of_a_session_the_daemon_drives_says_so() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    start_until_questions(&project, "driven");
    let run = project.run(&["run", "--session", "driven"]);
    run.expect(12);
    let said = run.stderr();
    assert!(
        said.contains(&format!("a samocode daemon (pid {})", daemon.pid()))
            && said.contains("samocode status driven")
            && said.contains("samocode resume")
            && !said.contains("Ctrl-C"),
        "{said}"
    );
}

/// Outside a project's directory `status NAME` found a session the daemon owns, but `answer`,
/// `tell`, `approve` and `logs` said to create a project file: they find it among the daemon's
/// sessions too.
#[test]
fn outside_a_project_commands_by_name_reach_the_daemons_session() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    let s = start_until_questions(&project, "away");
    let elsewhere = tempfile::tempdir().unwrap();
    let given = |args: &[&str]| {
        let out = project
            .command(args)
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    given(&["tell", "away", "mind the docs"]);
    given(&["answer", "away", "--accept-suggestions"]);
    wait_for(Duration::from_secs(30), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    assert!(given(&["logs", "away"]).contains("== "));
    given(&["approve", "away"]);
    wait_for(Duration::from_secs(60), "the end", || {
        s.state()["status"]["state"] == "done"
    });
    let out = project
        .command(&["approve", "nosuch"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("samocode status"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
