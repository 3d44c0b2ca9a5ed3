//! Supervision as a user meets it: workers killed or signalled mid-attempt, agents that escape
//! their group, hostile clients of the control socket, a supervisor that dies.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::fixture::{Project, agents_of, alive, running_agents, signal, wait_for};

/// `run` of a new session whose first attempt hangs, in the background, once its agent runs.
fn run_hanging(project: &mut Project, name: &str) -> (std::process::Child, i32) {
    project.env("SAMOCODE_FAKE", "investigation@1=hang");
    let running = project.track_agents();
    let child = project
        .command(&["run", "--session", name, "--dive", "d", "--task", "t"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = None;
    wait_for(Duration::from_secs(30), "the agent to run", || {
        agent = running_agents(&running).first().copied();
        agent.is_some()
    });
    wait_for(Duration::from_secs(10), "its grandchild", || {
        !project.left_behind().is_empty()
    });
    (child, agent.unwrap())
}

/// Each `_iterations.jsonl` row as (iteration, attempt, phase, outcome).
fn attempts(rows: &[serde_json::Value]) -> Vec<(u64, u64, String, String)> {
    rows.iter()
        .map(|row| {
            (
                row["iteration"].as_u64().unwrap(),
                row["attempt"].as_u64().unwrap(),
                row["phase"].as_str().unwrap().to_string(),
                row["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn run_killed_mid_attempt_then_run_again_kills_the_old_agent_first() {
    let mut project = Project::new();
    let (mut run, agent) = run_hanging(&mut project, "k9");
    run.kill().unwrap();
    run.wait().unwrap();
    let s = project.session("k9");
    assert!(alive(agent), "a kill -9 leaves the agent running");
    let orphans = agents_of(&s.0);
    assert!(!orphans.is_empty());

    // The next run takes over: the leftovers die before its own agent starts.
    project.run(&["run", "--session", "k9"]).expect(10);
    for pid in orphans.iter().chain(&project.left_behind()) {
        assert!(!alive(*pid), "process {pid} of the dead worker survived");
    }
    assert!(
        project.concurrency().iter().all(|(_, same)| *same == 1),
        "exactly one agent of the session ran at a time: {:?}",
        project.concurrency()
    );
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "interrupted", "{}", rows[0]);
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("found by the next worker"),
        "{}",
        rows[0]
    );
    assert_eq!(
        (rows[1]["iteration"].as_u64(), rows[1]["attempt"].as_u64()),
        (Some(1), Some(2))
    );
    let logs = s.logs().iter().filter(|l| l.ends_with(".jsonl")).count();
    assert_eq!(rows.len(), logs, "one row per attempt log");
    assert!(s.state()["in_flight"].is_null());
}

#[test]
fn a_worker_killed_after_a_verdict_is_journaled_loses_nothing_and_runs_nothing_twice() {
    // The verdict of an attempt is saved with the next attempt's in-flight record; the
    // failpoint kills the worker in between, when only the journals know the verdict.
    let mut project = Project::new();
    project.env("SAMOCODE_FAILPOINTS", "kill-after-verdict");
    let first = project.run(&["run", "--session", "kv", "--dive", "d", "--task", "t"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(first.0.status.signal(), Some(9), "{}", first.stderr());
    let s = project.session("kv");
    assert!(
        !s.state()["in_flight"].is_null(),
        "the verdict was not saved"
    );
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 1);

    project.env("SAMOCODE_FAILPOINTS", "");
    project.run(&["run", "--session", "kv"]).expect(10);
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(
        attempts(&rows),
        [
            (1, 1, "investigation".into(), "ok".into()),
            (2, 1, "requirements".into(), "ok".into())
        ],
        "investigation is not run again"
    );
    let state = s.state();
    assert_eq!(state["phase"], "requirements");
    assert_eq!(state["iteration"], 2);
    assert!(state["in_flight"].is_null());
    let sum = |key: &str| rows.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>();
    let usage = &state["usage"];
    assert!(
        (usage["cost_usd"].as_f64().unwrap() - sum("cost_usd")).abs() < 1e-9,
        "{usage}"
    );
    assert_eq!(usage["input_tokens"].as_f64(), Some(sum("input_tokens")));
    assert_eq!(usage["output_tokens"].as_f64(), Some(sum("output_tokens")));
    assert_eq!(
        usage["cached_input_tokens"].as_f64(),
        Some(sum("cached_input_tokens"))
    );
    let history = s.jsonl("_signal_history.jsonl");
    assert_eq!(history.len(), 2, "one verdict per attempt: {history:?}");
    assert!(
        s.read("session.log").contains("taken from the journals"),
        "{}",
        s.read("session.log")
    );
}

/// The same for a verdict that parks the session: a worker killed after the requirements
/// agent's `waiting` was journaled, before the state that parks the session was saved, had
/// the next worker run the requirements iteration again (its questions asked a second time;
/// a `done` written twice). Its verdict is taken from the journals and the kept signal.
#[test]
fn a_worker_killed_after_a_waiting_verdict_is_journaled_does_not_run_the_iteration_again() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAILPOINTS", "kill-after-parking-verdict");
    let first = project.run(&["run", "--session", "kw", "--dive", "d", "--task", "t"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(first.0.status.signal(), Some(9), "{}", first.stderr());
    let s = project.session("kw");
    assert!(
        !s.state()["in_flight"].is_null(),
        "the verdict was not saved"
    );
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 2);

    project.env("SAMOCODE_FAILPOINTS", "");
    let again = project.run(&["run", "--session", "kw"]);
    again.expect(10);
    assert!(
        again.stdout().contains("waiting for answers"),
        "{}",
        again.stdout()
    );
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(
        attempts(&rows),
        [
            (1, 1, "investigation".into(), "ok".into()),
            (2, 1, "requirements".into(), "ok".into())
        ],
        "requirements is not run again"
    );
    let state = s.state();
    assert_eq!(state["status"]["state"], "waiting", "{state}");
    assert_eq!(state["status"]["for"], "qa_answers", "{state}");
    assert!(state["in_flight"].is_null());
    let history = s.jsonl("_signal_history.jsonl");
    assert_eq!(history.len(), 2, "one verdict per attempt: {history:?}");
    assert!(
        s.read("session.log")
            .contains("its verdict (waiting for qa_answers) is taken from the journals"),
        "{}",
        s.read("session.log")
    );
}

#[test]
fn journal_rows_a_machine_stop_lost_come_back_from_the_state() {
    // An accepted `continue` is journaled without waiting for the disk: the state saved
    // before the next attempt carries its rows until their sync has ended. A machine that
    // stops meanwhile may lose the journals' unsynced end; here it is cut by hand.
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "requirements@1=hang");
    let running = project.track_agents();
    let mut run = project.spawn(&["run", "--session", "cut", "--dive", "d", "--task", "t"]);
    // The first attempt's row is journaled once its agent has exited: the one running then
    // is the second attempt's.
    let journaled = || {
        std::fs::read_dir(&project.sessions)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|e| e.path().join("_iterations.jsonl").exists())
    };
    wait_for(Duration::from_secs(30), "the second attempt to run", || {
        journaled() && !running_agents(&running).is_empty()
    });
    let s = project.session("cut");
    let state = s.state();
    let first = s.jsonl("_iterations.jsonl");
    assert_eq!(first.len(), 1);
    assert_eq!(
        state["unsynced"]["iterations"][0], first[0],
        "the state carries the row: {state}"
    );
    assert_eq!(state["unsynced"]["history"][0]["outcome"], "next");
    run.kill().unwrap();
    run.wait().unwrap();
    std::fs::write(s.0.join("_iterations.jsonl"), "").unwrap();
    std::fs::write(s.0.join("_signal_history.jsonl"), "").unwrap();

    project.env("SAMOCODE_FAKE", "");
    project.run(&["run", "--session", "cut"]).expect(10);
    let rows = s.jsonl("_iterations.jsonl");
    assert_eq!(
        attempts(&rows),
        [
            (1, 1, "investigation".into(), "ok".into()),
            (2, 1, "requirements".into(), "interrupted".into()),
            (2, 2, "requirements".into(), "ok".into()),
        ],
        "the investigation's row is back, once"
    );
    assert_eq!(rows[0], first[0]);
    let history = s.jsonl("_signal_history.jsonl");
    assert_eq!(history[0], state["unsynced"]["history"][0]);
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(s.state()["unsynced"].is_null(), "{}", s.state());
    assert!(
        s.read("session.log").contains("restored from the state"),
        "{}",
        s.read("session.log")
    );
}

#[test]
fn sigterm_or_sighup_to_run_stops_the_agent_and_journals_the_attempt() {
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let mut project = Project::new();
        let (mut run, agent) = run_hanging(&mut project, "sig");
        signal(run.id(), sig);
        let status = run.wait().unwrap();
        let mut stderr = String::new();
        run.stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(code), "{sig}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by {sig}")),
            "{stderr}"
        );
        let s = project.session("sig");
        assert!(!alive(agent));
        assert!(
            agents_of(&s.0).is_empty(),
            "{sig}: no agent process survives"
        );
        let rows = s.jsonl("_iterations.jsonl");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["outcome"], "interrupted");
        // The lock is free: the next run goes on with the iteration.
        project.run(&["run", "--session", "sig"]).expect(10);
    }
}

/// An agent that closes its stdout and exits, leaving a child that holds only its standard
/// error (an MCP server started with it inherited): the attempt ends with the grace, its child
/// killed, the agent's good end kept. It had waited on the pipe for ever, deaf to its time
/// limit, `stop` and the worker's own shutdown.
#[test]
fn an_agent_whose_child_holds_only_its_standard_error_ends_with_the_grace() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=stderr-child");
    let mut run = project
        .command(&["run", "--session", "err", "--dive", "d", "--task", "t"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut code = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while code.is_none() && std::time::Instant::now() < deadline {
        code = run.try_wait().unwrap().map(|status| status.code());
        std::thread::sleep(Duration::from_millis(100));
    }
    if code.is_none() {
        let _ = run.kill();
    }
    let _ = run.wait();
    let left = project.left_behind();
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(code, Some(Some(10)), "run did not reach the questions");
    assert_eq!(left.len(), 1);
    let s = project.session("err");
    let row = &s.jsonl("_iterations.jsonl")[0];
    assert_eq!(row["outcome"], "ok", "{row}");
}

#[test]
fn an_escaped_grandchild_holding_stdout_ends_with_the_grace_and_is_killed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape");
    project
        .run(&["run", "--session", "esc", "--dive", "d", "--task", "t"])
        .expect(10);
    let escaped = project.left_behind();
    assert_eq!(escaped.len(), 1);
    assert!(
        !alive(escaped[0]),
        "the escaped grandchild was found and killed"
    );
    let s = project.session("esc");
    let row = &s.jsonl("_iterations.jsonl")[0];
    assert_eq!(row["outcome"], "ok", "{row}");
    let started: jiff::Timestamp = row["started_at"].as_str().unwrap().parse().unwrap();
    let ended: jiff::Timestamp = row["ended_at"].as_str().unwrap().parse().unwrap();
    // The grace is 1 s here: without the markers the attempt would wait for the sleep's hour.
    assert!(
        started.duration_until(ended) < jiff::SignedDuration::from_secs(30),
        "{started} .. {ended}"
    );
}

#[test]
fn an_escaped_grandchild_whose_main_thread_exited_is_still_found_and_killed() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=escape-threads");
    project
        .run(&["run", "--session", "ghost", "--dive", "d", "--task", "t"])
        .expect(10);
    let escaped = project.left_behind();
    assert_eq!(escaped.len(), 1);
    // Its main thread is a zombie from the start; its other threads are what must be gone.
    assert!(
        !alive(escaped[0]),
        "the escaped grandchild's threads were found and killed"
    );
    let s = project.session("ghost");
    let row = &s.jsonl("_iterations.jsonl")[0];
    assert_eq!(row["outcome"], "ok", "{row}");
}

#[test]
fn a_dead_workers_escaped_grandchild_whose_main_thread_exited_is_killed_by_the_next() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=hang:escape-threads");
    project.track_agents();
    let mut run = project
        .command(&["run", "--session", "ghost", "--dive", "d", "--task", "t"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the escaped grandchild", || {
        !project.left_behind().is_empty()
    });
    let escaped = project.left_behind()[0];
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(alive(escaped), "a kill -9 of the worker leaves it running");
    // The next worker finds it by its markers (read from its live threads) before going on.
    project.run(&["run", "--session", "ghost"]).expect(10);
    assert!(
        !alive(escaped),
        "the dead worker's escaped grandchild survived"
    );
}

/// Sends raw bytes on the control socket and reads the answer line.
fn raw_request(socket: &std::path::Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A client the daemon stops reading may see its write fail; the answer still comes.
    let _ = stream.write_all(bytes);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn garbage_a_huge_line_and_silent_clients_do_not_stop_the_daemon() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    // Clients that connect and say nothing hold no one up.
    let silent: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    let answer = raw_request(&daemon.socket, b"hello daemon\n");
    assert!(answer.contains("unreadable request"), "{answer}");
    let mut huge = vec![b'x'; 10 * 1024 * 1024];
    huge.push(b'\n');
    let answer = raw_request(&daemon.socket, &huge);
    assert!(answer.contains("longer than 1048576 bytes"), "{answer}");
    let started = Instant::now();
    project.run(&["status", "--json"]).expect(0);
    project
        .run(&["start", "--session", "fine", "--dive", "d", "--task", "t"])
        .expect(0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the others were served while the silent clients waited"
    );
    // A silent client is told so and dropped.
    let mut first = silent.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("no request within"), "{answer}");
    wait_for(Duration::from_secs(30), "the session to ask", || {
        project
            .status()
            .first()
            .is_some_and(|r| r["waiting_for"] == "qa_answers")
    });
}

#[test]
fn a_dead_supervisor_ends_the_daemon_non_zero_and_the_next_start_recovers() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "*=slow:2");
    let running = project.track_agents();
    project.env("SAMOCODE_FAILPOINTS", "supervisor-panic");
    let mut daemon = project.daemon(&[]);
    for name in ["sa", "sb", "sc"] {
        project
            .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
    wait_for(Duration::from_secs(30), "agents to run", || {
        !running_agents(&running).is_empty()
    });
    // The failpoint makes the supervisor panic on a status request.
    let _ = project.run(&["status", "--json"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon lingers without its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1));
    let log = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    assert!(log.contains("the supervisor stopped unexpectedly"), "{log}");
    for name in ["sa", "sb", "sc"] {
        assert!(agents_of(&project.session(name).0).is_empty(), "{name}");
    }
    std::mem::forget(daemon);

    project.env("SAMOCODE_FAILPOINTS", "");
    project.env("SAMOCODE_FAKE", "*=slow:0.1");
    let _daemon = project.daemon(&[]);
    project.drive_to_done(3, Duration::from_secs(120));
    for name in ["sa", "sb", "sc"] {
        let s = project.session(name);
        let rows = s.jsonl("_iterations.jsonl");
        let logs = s.logs().iter().filter(|l| l.ends_with(".jsonl")).count();
        assert_eq!(rows.len(), logs, "{name}: one row per attempt log");
    }
}

#[test]
fn a_second_sigterm_stops_the_daemon_at_once_and_kills_the_agents() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=hang");
    project.env("SAMOCODE_KILL_GRACE", "60s");
    let running = project.track_agents();
    let mut daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "slow", "--dive", "d", "--task", "t"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the agent to run", || {
        !running_agents(&running).is_empty()
    });
    let pid = daemon.child.id();
    // The agent ignores SIGTERM, so the first signal would wait out the 60 s grace.
    signal(pid, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    signal(pid, Signal::SIGTERM);
    let code = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the second signal did not end the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(143));
    assert!(agents_of(&project.session("slow").0).is_empty());
    std::mem::forget(daemon);
}

/// Ctrl-C in the terminal of a `run` while its new session's worktree was being made reached
/// git too (one process group): the checkout was cut short and the session blocked, its reason
/// git's progress line ("init failed: … Preparing worktree"), with nothing to fix. git is in a
/// group of its own: the run lets the checkout end, exits 130, and the next run goes on.
#[test]
fn ctrl_c_during_a_new_sessions_checkout_leaves_it_to_go_on() {
    use std::os::unix::process::CommandExt;
    let mut project = Project::new();
    let gate = project.root.join("checkout-may-go");
    let held = project.root.join("checkout-held");
    super::fixture::holding_git(&mut project, &gate, &held);
    let mut run = project
        .command(&["run", "--session", "held", "--dive", "d", "--task", "t"])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the checkout held", || {
        held.exists()
    });
    // A terminal's Ctrl-C goes to its whole foreground group.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(run.id() as i32), Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gate, "").unwrap();
    let ended = run.wait().unwrap();
    let mut said = String::new();
    run.stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(ended.code(), Some(130), "{said}");
    let s = project.session("held");
    let state = s.state();
    assert_eq!(state["phase"], "investigation", "{state}");
    assert!(state["worktree"].is_string(), "{state}");
    assert_ne!(state["status"]["state"], "blocked", "{state}");
    project.run(&["run", "--session", "held"]).expect(10);
}
