//! Hostile surroundings (issue 10): an agent that leaves a pipe, a link or a flood where its
//! signal goes, secrets in samocode's environment, a reader that closes the pipe early.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::fixture::{Daemon, Project, wait_for};

fn new_session(project: &Project, name: &str) -> super::fixture::Run {
    project.run(&["run", "--session", name, "--dive", "d", "--task", "t"])
}

/// A new session `name` whose questions a person answered: at rest, its next attempt plans.
fn answered(project: &Project, name: &str) -> super::fixture::Session {
    new_session(project, name).expect(10);
    project
        .run(&["answer", name, "--accept-suggestions"])
        .expect(0);
    project.session(name)
}

/// `mkfifo _signal.json`, a link to `/dev/zero`, a file larger than the cap: each is a
/// protocol error with its reason, retried once, then the session blocks; nothing hangs and
/// nothing is read whole.
#[test]
fn a_signal_that_is_not_a_small_regular_file_is_a_protocol_error() {
    for (action, reason) in [
        ("fifo", "is a named pipe (FIFO), not a regular file"),
        ("link:/dev/zero", "is a symbolic link"),
        ("huge:3", "over the limit of 1048576 bytes"),
    ] {
        let mut project = Project::new();
        project.env("SAMOCODE_FAKE", &format!("investigation={action}"));
        let started = Instant::now();
        let run = new_session(&project, "hostile");
        run.expect(11);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{action} took {:?}",
            started.elapsed()
        );
        let history = project.session("hostile").jsonl("_signal_history.jsonl");
        assert_eq!(history.len(), 2, "{action}: retried once: {history:?}");
        for row in &history {
            let text = row["reason"].as_str().unwrap();
            assert!(text.starts_with("unreadable_signal"), "{action}: {text}");
            assert!(text.contains(reason), "{action}: {text}");
        }
        assert!(
            run.stdout().contains("blocked: protocol error"),
            "{}",
            run.stdout()
        );
    }
}

/// Under the daemon a pipe for a signal leaves every request answered: `status` and `stop`.
#[test]
fn a_fifo_signal_under_the_daemon_leaves_it_responsive() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=fifo");
    let daemon: Daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "pipe", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("pipe");
    wait_for(Duration::from_secs(30), "the session to block", || {
        s.state()["status"]["state"] == "blocked"
    });
    project.run(&["status"]).expect(0);
    // Answered: a blocked session runs nothing to stop, and keeps why it waits.
    let stop = project.run(&["stop", "pipe"]);
    stop.expect(2);
    assert!(
        stop.stderr().contains("is blocked already"),
        "{}",
        stop.stderr()
    );
    assert_eq!(s.state()["status"]["state"], "blocked");
    assert_eq!(daemon.terminate(), Some(0));
}

/// The agent sees its API key, HOME and PATH, and none of samocode's secrets or settings;
/// `run --dry-run` lists the kept variables by name.
#[test]
fn the_agent_gets_an_allowlisted_environment() {
    let mut project = Project::new();
    std::fs::create_dir_all(project.root.join("home/.config/samocode")).unwrap();
    std::fs::write(
        project.root.join("home/.config/samocode/config.toml"),
        "strip_env = [\"MYCORP_*\"]\nkeep_env = [\"BUILD_FLAVOUR\"]\n",
    )
    .unwrap();
    project
        .env("SAMOCODE_FAKE", "investigation=env")
        .env("ANTHROPIC_API_KEY", "sk-ant-kept")
        .env("OPENAI_API_KEY", "sk-openai-not-for-claude")
        .env("TELEGRAM_BOT_TOKEN", "123:bot-secret")
        .env("TELEGRAM_CHAT_ID", "42")
        .env("TELEGRAM_ALLOWED_USERS", "7")
        // A closed port: the notifier's posts fail at once and harmlessly.
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20otlp-secret",
        )
        .env("MYCORP_TOKEN", "corp-secret")
        .env("BUILD_FLAVOUR", "release")
        .env("UNRELATED_SETTING", "x");

    let dry = project.run(&[
        "run",
        "--session",
        "env",
        "--dive",
        "d",
        "--task",
        "t",
        "--dry-run",
    ]);
    dry.expect(0);
    let names = dry
        .stdout()
        .lines()
        .skip_while(|l| !l.starts_with("agent environment"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    for kept in [
        "ANTHROPIC_API_KEY",
        "HOME",
        "PATH",
        "BUILD_FLAVOUR",
        "SAMOCODE_FAKE",
    ] {
        assert!(names.split(' ').any(|n| n == kept), "{kept} in {names}");
    }
    assert!(
        !dry.stdout().contains("sk-ant-kept"),
        "values are never printed"
    );

    project
        .run(&[
            "run",
            "--session",
            "env",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
        ])
        .expect(0);
    let seen = project.session("env").read("agent-env.txt");
    let seen: Vec<&str> = seen.lines().map(|l| l.split('=').next().unwrap()).collect();
    for kept in [
        "ANTHROPIC_API_KEY",
        "HOME",
        "PATH",
        "BUILD_FLAVOUR",
        "SAMOCODE_SESSION",
    ] {
        assert!(seen.contains(&kept), "{kept} not in {seen:?}");
    }
    for dropped in [
        "OPENAI_API_KEY",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "TELEGRAM_ALLOWED_USERS",
        "TELEGRAM_API_URL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "MYCORP_TOKEN",
        "UNRELATED_SETTING",
        "SAMOCODE_RETRY_DELAY",
        "CLAUDE_PATH",
    ] {
        assert!(
            !seen.contains(&dropped),
            "{dropped} reached the agent: {seen:?}"
        );
        assert!(
            !names.split(' ').any(|n| n == dropped),
            "{dropped} in {names}"
        );
    }
}

/// `samocode status | head -1` and `samocode logs NAME | head -1`: a reader that is gone
/// ends the command quietly with exit 0.
#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    new_session(&project, "piped").expect(10);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["logs", "piped"],
        &["status", "piped"],
    ] {
        // A pipe whose reading end is already closed: the first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = project
            .command(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And with `head -1` for real: one line read, then the pipe closes.
    let mut child = project
        .command(&["logs", "piped"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A terminal that went away (an ssh connection dropped, a tmux pane killed) leaves `run`
/// writing into a closed pipe and a hung-up terminal: it keeps driving the session and ends
/// with the code of where the session stands, instead of panicking (101) or claiming done (0).
#[test]
fn run_whose_terminal_went_away_drives_on_and_exits_with_the_sessions_code() {
    let unix_in = |seconds: u64| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + seconds
    };
    let project = Project::new();
    // Standard output a closed pipe, standard error a hung-up terminal; then standard output
    // to nowhere and standard error the hung-up terminal (run prints its warnings there).
    for (name, closed_stdout) in [("gone", true), ("hungup", false)] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        // A terminal whose other side is closed: every write to it fails with EIO.
        let pty = nix::pty::openpty(None, None).unwrap();
        drop(pty.master);
        let stdout = match closed_stdout {
            true => Stdio::from(writer),
            false => Stdio::null(),
        };
        let mut command =
            project.command(&["run", "--session", name, "--dive", "d", "--task", "t"]);
        command
            .stdout(stdout)
            .stderr(std::fs::File::from(pty.slave))
            // A warning on standard error at the start of the run: the usage limit's park.
            .env(
                "SAMOCODE_FAKE",
                format!("investigation=limit:{}", unix_in(2)),
            );
        let out = command.status().unwrap();
        assert_eq!(out.code(), Some(10), "{name}: waits for answers");
        let s = project.session(name);
        assert_eq!(s.state()["status"]["for"], "qa_answers", "{name}");
    }
}

/// samocode touches only what it owns: a control socket path taken by a file or by a live
/// daemon, and a state directory others may enter, are refused and left as they were.
#[test]
fn the_daemon_refuses_paths_it_does_not_own_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut project = Project::new();
    let notes = project.root.join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    project.env(
        "SAMOCODE_STATE_DIR",
        &project.root.join("state").display().to_string(),
    );
    project.env("SAMOCODE_CONTROL", &notes.display().to_string());
    let refused = project.run(&["supervise"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("notes.txt")
            && refused
                .stderr()
                .contains("it is an existing file, not a socket"),
        "{}",
        refused.stderr()
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");

    // A shared directory (mode 1777) is not made private behind its owner's back.
    let shared = project.root.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    project.env("SAMOCODE_STATE_DIR", &shared.display().to_string());
    project.env("SAMOCODE_CONTROL", "");
    let refused = project.run(&["supervise"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("its mode is 1777") && refused.stderr().contains("chmod 700"),
        "{}",
        refused.stderr()
    );
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the directory is left as it was");
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing written in it"
    );

    // A socket a live daemon answers on belongs to that daemon, whatever its state directory.
    let daemon = project.daemon(&[]);
    project.env("SAMOCODE_CONTROL", &daemon.socket.display().to_string());
    project.env(
        "SAMOCODE_STATE_DIR",
        &project.root.join("state2").display().to_string(),
    );
    let refused = project.run(&["supervise"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("a live daemon answers on it"),
        "{}",
        refused.stderr()
    );
    project.env(
        "SAMOCODE_STATE_DIR",
        &project.state_dir().display().to_string(),
    );
    project.run(&["status"]).expect(0);
    drop(daemon);
}

/// Waits up to `limit` for `child` to end, and returns its exit code; kills it and fails when
/// it does not end.
fn ends_within(mut child: std::process::Child, limit: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A notebook grown past what samocode reads (a paste, a runaway Flow Log) while the session
/// rests: the session is blocked once, with the file and what to do, under `run` and under
/// the daemon alike; the worker does not restart it in a loop, and it goes on once the file
/// is shortened.
#[test]
fn a_notebook_over_the_read_limit_blocks_the_session_once_and_says_what_to_do() {
    let mut project = Project::new();
    let s = answered(&project, "big");
    let notebook = s.path("_overview.md");
    let kept = std::fs::read_to_string(&notebook).unwrap();
    let paste = "- a pasted line of a long log, far more than a notebook holds\n".repeat(70_000);
    std::fs::write(&notebook, format!("{kept}{paste}")).unwrap();

    let code = ends_within(
        project.spawn(&["run", "--session", "big"]),
        Duration::from_secs(60),
        "run",
    );
    assert_eq!(code, 11, "blocked: {}", s.read("_state.json"));
    let state = s.state();
    assert_eq!(state["status"]["state"], "blocked", "{state}");
    let reason = state["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("_overview.md") && reason.contains("shorten"),
        "{reason}"
    );
    assert!(state.get("in_flight").is_none(), "no attempt ran: {state}");

    // Under the daemon: blocked, not restarted over and over.
    std::fs::write(s.path("_state.json"), {
        let mut state = state.clone();
        state["status"] = serde_json::json!({"state": "running"});
        serde_json::to_vec(&state).unwrap()
    })
    .unwrap();
    let daemon = project.daemon(&[]);
    project.run(&["start", "--session", "big"]).expect(0);
    wait_for(Duration::from_secs(30), "the block", || {
        s.state()["status"]["state"] == "blocked"
    });
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("ended unexpectedly").count(),
        0,
        "the session's actor is not restarted in a loop: {}",
        &log[log.len().saturating_sub(3000)..]
    );
    // Shortened, it goes on.
    std::fs::write(&notebook, &kept).unwrap();
    project.run(&["resume", "big"]).expect(0);
    wait_for(Duration::from_secs(60), "the plan", || {
        s.state()["status"]["for"] == "plan_approval"
    });
    daemon.terminate();
}

/// A session whose state cannot be written at all (here its spare is a folder) makes its
/// actor fail at every start: the daemon reopens it a few times, then leaves it failed and
/// says why, instead of reopening it as fast as it fails.
#[test]
fn a_session_that_fails_at_every_start_is_not_reopened_without_end() {
    let mut project = Project::new();
    let s = answered(&project, "stuck");
    let _ = std::fs::remove_file(s.path("._state.json.prev"));
    std::fs::create_dir_all(s.path("._state.json.prev").join("x")).unwrap();
    let daemon = project.daemon(&[]);
    project.run(&["start", "--session", "stuck"]);
    let log = || std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    wait_for(Duration::from_secs(30), "the daemon to give up", || {
        log().contains("could not record it")
    });
    let before = log().matches("ended unexpectedly").count();
    std::thread::sleep(Duration::from_secs(3));
    let after = log().matches("ended unexpectedly").count();
    assert!(
        before <= 5 && after == before,
        "reopened {before} times, then {after}: {}",
        &log()[log().len().saturating_sub(2000)..]
    );
    let status = project.run(&["status", "stuck"]);
    assert!(
        status.stdout().contains("could not record it"),
        "{}",
        status.stdout()
    );
    daemon.terminate();
}

/// A session whose actor fails at every attempt is marked failed after its restarts; resumed
/// by a person and failing again, it is counted afresh and marked failed again, not given up
/// on with its files still saying it runs.
#[test]
fn a_session_failing_again_after_a_resume_is_marked_failed_again() {
    let mut project = Project::new();
    let s = answered(&project, "again");
    // `_logs` a file: no attempt's log can be made.
    std::fs::remove_dir_all(s.path("_logs")).unwrap();
    std::fs::write(s.path("_logs"), "not a folder").unwrap();
    let daemon = project.daemon(&[]);
    project.run(&["start", "--session", "again"]).expect(0);
    let failed_at = || {
        let state = s.state();
        (state["status"]["state"] == "failed").then(|| state["status"]["at"].to_string())
    };
    wait_for(Duration::from_secs(30), "failed", || failed_at().is_some());
    let first = failed_at().unwrap();
    project.run(&["resume", "again"]).expect(0);
    wait_for(Duration::from_secs(30), "failed again", || {
        failed_at().is_some_and(|at| at != first)
    });
    let log = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    assert!(!log.contains("could not record it"), "{log}");
    daemon.terminate();
}

/// What an agent wrote reaches the terminal with its control characters shown, not obeyed:
/// an agent that prints "FAILED", erases the line and prints "passed" over it, or rings, or
/// sends a C1 control, is seen doing so in `logs`, in its standard error, in the blocked
/// reason `run` and `status` print.
#[test]
fn escape_sequences_an_agent_wrote_are_shown_not_obeyed_by_the_terminal() {
    // (No `;` in the texts: the fake agent's rules are separated by it.)
    let trick = "tests FAILED\u{1b}[2K\rtests passed\u{7}\u{9b}2J";
    let seen = "tests FAILED^[[2K^Mtests passed^G<U+009B>2J";
    let raw = |text: &str| text.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}']);

    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", &format!("requirements=say:{trick}"));
    new_session(&project, "said").expect(10);
    let logs = project.run(&["logs", "said"]);
    logs.expect(0);
    assert!(!raw(&logs.stdout()), "{:?}", logs.stdout());
    // The message, and the same text under the attempt's standard error.
    assert_eq!(logs.stdout().matches(seen).count(), 2, "{}", logs.stdout());

    let reason = format!(
        r#"investigation=signal:{{"status":"blocked","phase":"investigation","reason":{}}}"#,
        serde_json::to_string(trick).unwrap()
    );
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", &reason);
    let run = new_session(&project, "blocked");
    run.expect(11);
    let said = format!("{}{}", run.stdout(), run.stderr());
    assert!(said.contains(seen), "{said:?}");
    assert!(!raw(&said), "{said:?}");
    for args in [&["status"][..], &["status", "blocked"]] {
        let status = project.run(args);
        assert!(
            status.stdout().contains("tests FAILED^[[2K"),
            "{}",
            status.stdout()
        );
        assert!(!raw(&status.stdout()), "{:?}", status.stdout());
    }
    // JSON is for programs: it carries the reason exactly as the agent wrote it, and the
    // controls JSON leaves raw (DEL, C1) are escaped there, so that it is safe on a terminal too.
    let with_del = format!("{trick}\u{7f}");
    let reason = format!(
        r#"investigation=signal:{{"status":"blocked","phase":"investigation","reason":{}}}"#,
        serde_json::to_string(&with_del).unwrap()
    );
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", &reason);
    new_session(&project, "json").expect(11);
    for args in [&["status", "--json"][..], &["status", "json", "--json"]] {
        let status = project.run(args);
        status.expect(0);
        let out = status.stdout();
        assert!(!raw(&out) && !out.contains('\u{7f}'), "{out:?}");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        let row = if value.is_array() { &value[0] } else { &value };
        assert_eq!(row["blocked_reason"], with_del.as_str(), "{out}");
    }
}

/// Gives every file under `dir` (and `dir`) to user and group `id`.
fn give_to(dir: &std::path::Path, id: u32) {
    std::os::unix::fs::lchown(dir, Some(id), Some(id)).unwrap();
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            give_to(&entry.path(), id);
        }
    }
}

/// An agent runs as samocode's user, so it could read samocode's environment (the bot token,
/// the NATS token, the keys) in `/proc/PID/environ`: samocode keeps it to the superuser,
/// while its agents' stay readable to it (how it finds what an agent left running).
#[test]
fn an_agent_cannot_read_samocodes_environment() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:30");
    let running = project.track_agents();
    // As the superuser every file is readable: the run is then another user's, with a copy
    // of the binary that user can reach wherever the build is.
    let bin = project.root.join("samocode-copy");
    std::fs::copy(super::fixture::BIN, &bin).unwrap();
    let claude = project.root.join("fake-claude-copy");
    std::fs::write(
        &claude,
        format!("#!/bin/sh\nexec '{}' fake-agent \"$@\"\n", bin.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    project.env("CLAUDE_PATH", &claude.display().to_string());
    let user = if nix::unistd::geteuid().is_root() {
        give_to(&project.root, 65534);
        65534
    } else {
        nix::unistd::geteuid().as_raw()
    };
    let given = project.command(&["run", "--session", "private", "--dive", "d", "--task", "t"]);
    let mut command = std::process::Command::new(&bin);
    command.args(given.get_args()).current_dir(&project.root);
    for (key, value) in given.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.stdin(Stdio::null());
    if user == 65534 {
        command.uid(user).gid(user);
    }
    let mut run = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the agent", || {
        !super::fixture::running_agents(&running).is_empty()
    });
    let agent = super::fixture::running_agents(&running)[0];
    let owner = |pid: i32| {
        std::fs::metadata(format!("/proc/{pid}/environ"))
            .unwrap()
            .uid()
    };
    let samocode = owner(run.id() as i32);
    let agents = owner(agent);
    let _ = run.kill();
    let _ = run.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(samocode, 0, "samocode's environment is its user's to read");
    assert_eq!(agents, user, "its agent's is not samocode's to read");
}
