//! `samocode logs`: large and overlong logs, a closed pipe, and `--follow` across attempts.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::fixture::Project;

/// A session folder with an empty `_logs`, as the worker leaves it.
fn session(project: &Project, name: &str) -> PathBuf {
    let dir = project.sessions.join(format!("26-01-01-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assistant(text: &str) -> String {
    format!(
        "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}]}}}}\n"
    )
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_large_log_with_an_overlong_line_is_shown_whole_and_the_long_line_announced() {
    let project = Project::new();
    let dir = session(&project, "big");
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let mut log = String::new();
    for i in 0..20_000 {
        log.push_str(&assistant(&format!("line {i}")));
    }
    // Six megabytes on one line: more than the 4 MiB of a line that logs reads.
    let long = format!(
        "{{\"type\":\"user\",\"message\":{{\"content\":[{{\"type\":\"tool_result\",\"content\":\"{}\"}}]}}}}\n",
        "z".repeat(6 << 20)
    );
    log.push_str(&long);
    log.push_str(&assistant("after the long line"));
    log.push_str(r#"{"type":"result","subtype":"success","total_cost_usd":0.25,"num_turns":3}"#);
    std::fs::write(
        dir.join("_logs/01-01-000000-001-investigation-a1.jsonl"),
        &log,
    )
    .unwrap();
    // An older attempt, which logs does not show.
    std::fs::write(
        dir.join("_logs/01-01-000000-000-investigation-a1.jsonl"),
        assistant("older attempt"),
    )
    .unwrap();

    let run = project.run(&["logs", "big"]);
    run.expect(0);
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 20_000 + 3,
        "header, lines, long, after, result"
    );
    assert!(lines[0].starts_with("== ") && lines[0].ends_with("-001-investigation-a1.jsonl"));
    assert!((0..20_000).all(|i| lines[1 + i] == format!("line {i}")));
    assert!(
        lines[20_001].starts_with(&format!(
            "[a line of {} bytes, longer than the 4 MiB shown of a line; it begins: {{\"type\":\"user\"",
            long.len() - 1
        )),
        "{}",
        &lines[20_001][..lines[20_001].len().min(300)]
    );
    assert!(lines[20_001].len() < 500);
    assert_eq!(lines[20_002], "after the long line");
    assert_eq!(lines[20_003], "[result: success · $0.2500 · 3 turns]");
    assert!(!out.contains("older attempt"));
}

#[test]
fn a_reader_that_goes_away_ends_logs_without_a_panic() {
    let project = Project::new();
    let dir = session(&project, "piped");
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let log: String = (0..50_000)
        .map(|i| assistant(&format!("line {i}")))
        .collect();
    std::fs::write(dir.join("_logs/01-01-000000-001-planning-a1.jsonl"), log).unwrap();
    // `samocode logs piped | head -1`: far more output than the pipe holds, read one line.
    let mut child = project
        .command(&["logs", "piped"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("== "), "{first}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(nix::libc::SIGPIPE),
        "{status:?}: {stderr}"
    );
}

/// `samocode logs NAME --follow`, its output read line by line on a thread.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(project: &Project, name: &str) -> Follower {
        let mut child = project
            .command(&["logs", name, "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a line equal to `expected` (or, for a header, ending with it) is printed.
    fn wait_for(&mut self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .seen
            .iter()
            .any(|l| l == expected || l.ends_with(expected))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("timed out waiting for {expected:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Bytes the follower has read so far (all files, /proc/PID/io).
    fn bytes_read(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_reads_only_what_is_appended_and_finishes_an_attempt_before_the_next() {
    let project = Project::new();
    let dir = session(&project, "live");
    let mut follower = Follower::start(&project, "live");
    follower.wait_for("26-01-01-live has no attempt logs yet; waiting for the first");

    // The first attempt's log appears (with `_logs` itself), and grows.
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let first = dir.join("_logs/01-01-000001-001-implementation-a1.jsonl");
    let bulk: String = (0..10_000)
        .map(|i| assistant(&format!("bulk {i}")))
        .collect();
    append(&first, &bulk);
    follower.wait_for("bulk 9999");
    let before = follower.bytes_read();
    for i in 0..20 {
        append(&first, &assistant(&format!("appended {i}")));
        follower.wait_for(&format!("appended {i}"));
    }
    let read = follower.bytes_read() - before;
    assert!(
        read < bulk.len() as u64 / 4,
        "{read} bytes read for 20 appended lines: the log was read again from its start"
    );

    // The end of the first attempt and the start of the second are written together; an
    // unfinished last line counts as a line.
    append(&first, &assistant("last words of attempt 1"));
    append(&first, "unfinished line");
    let second = dir.join("_logs/01-01-000002-001-implementation-a2.jsonl");
    append(&second, &assistant("attempt 2 begins"));
    follower.wait_for("attempt 2 begins");
    append(&second, &assistant("attempt 2 goes on"));
    follower.wait_for("attempt 2 goes on");

    let seen = &follower.seen;
    let at = |text: &str| {
        let found: Vec<usize> = (0..seen.len())
            .filter(|&i| seen[i] == text || seen[i].ends_with(text))
            .collect();
        assert_eq!(found.len(), 1, "{text:?} printed once: {seen:#?}");
        found[0]
    };
    assert!(at("000001-001-implementation-a1.jsonl") < at("bulk 0"));
    assert_eq!(at("bulk 9999") + 1, at("appended 0"));
    assert!(at("appended 19") < at("last words of attempt 1"));
    assert_eq!(at("last words of attempt 1") + 1, at("unfinished line"));
    assert_eq!(
        at("unfinished line") + 1,
        at("000002-001-implementation-a2.jsonl")
    );
    assert_eq!(
        at("000002-001-implementation-a2.jsonl") + 1,
        at("attempt 2 begins")
    );
    assert!(
        follower.child.try_wait().unwrap().is_none(),
        "--follow keeps following"
    );
}

/// Ctrl-C ends `logs --follow` (and any command that runs no agent) at once: the daemon's
/// and `run`'s stop-on-request handlers had swallowed it, and only SIGKILL ended it.
#[test]
fn ctrl_c_ends_logs_follow() {
    use std::os::unix::process::ExitStatusExt;
    let project = Project::new();
    project
        .run(&["run", "--session", "tail", "--dive", "d", "--task", "t"])
        .expect(10);
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let mut follow = project.spawn(&["logs", "tail", "--follow"]);
        std::thread::sleep(Duration::from_millis(500));
        assert!(follow.try_wait().unwrap().is_none(), "it follows");
        super::fixture::signal(follow.id(), signal);
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = follow.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = follow.kill();
                panic!("{signal} did not end logs --follow");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(signal as i32));
    }
}

/// A project with session `name` failed: its one attempt exited 3, saying why on standard
/// error only.
fn failed_session(name: &str) -> Project {
    let mut project = Project::new();
    project
        .env("SAMOCODE_FAKE", "investigation=exit:3")
        .env("SAMOCODE_MAX_RETRIES", "1");
    project
        .run(&["run", "--session", name, "--dive", "d", "--task", "t"])
        .expect(1);
    project
}

/// An attempt that failed saying why only on standard error shows it in `logs` (it showed
/// the header alone, and `status` only the exit code).
#[test]
fn logs_show_what_a_failed_attempt_wrote_to_standard_error() {
    let mut project = failed_session("err");
    let logs = project.run(&["logs", "err"]);
    logs.expect(0);
    let out = logs.stdout();
    assert!(
        out.contains("-- standard error:\n   fake-agent: failing on purpose"),
        "{out}"
    );
    // A healthy attempt wrote nothing there, and shows no such part.
    project.env("SAMOCODE_FAKE", "");
    project.run(&["resume", "err"]).expect(0);
    project
        .run(&["run", "--session", "err", "--once"])
        .expect(0);
    let out = project.run(&["logs", "err"]).stdout();
    assert!(!out.contains("standard error"), "{out}");
}

/// `--follow` on a session whose last attempt failed shows what it wrote to standard error
/// (why it failed) as soon as it is over: it was shown only when a next attempt began, so
/// never for a session's last one.
#[test]
fn follow_shows_the_end_of_an_attempt_once_it_is_over() {
    let project = failed_session("err");
    let mut follower = Follower::start(&project, "err");
    follower.wait_for("-- standard error:");
    follower.wait_for("   fake-agent: failing on purpose");
    assert!(
        follower.child.try_wait().unwrap().is_none(),
        "--follow keeps following"
    );
    // A session at a gate: its last attempt's unfinished line comes out too.
    let project = Project::new();
    let dir = session(&project, "gate");
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let log = "_logs/01-01-000001-001-requirements-a1.jsonl";
    append(&dir.join(log), &assistant("asked"));
    append(&dir.join(log), "no newline at the end");
    let state = |in_flight: Option<&str>| {
        let mut state = serde_json::json!({
            "schema": 1, "name": "26-01-01-gate", "phase": "requirements",
            "status": {"state": "running"}, "iteration": 1, "phase_iteration": 1,
            "attempt": 1, "dive": "d", "task": "t",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        });
        if let Some(log) = in_flight {
            state["in_flight"] = serde_json::json!({"log": log,
                "started_at": "2026-01-01T00:00:00Z", "worker_pid": 1, "provider": "claude"});
        }
        std::fs::write(dir.join("_state.json"), state.to_string()).unwrap();
    };
    state(Some(log));
    let mut follower = Follower::start(&project, "gate");
    follower.wait_for("asked");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !follower.seen.iter().any(|l| l == "no newline at the end"),
        "the attempt still runs: {:?}",
        follower.seen
    );
    state(None);
    follower.wait_for("no newline at the end");
}

/// `logs --follow | head -1` ends when `head` does, also while nothing is written (a session
/// at a gate, or done): it waited for the next write to find out.
#[test]
fn follow_ends_when_its_reader_goes_away_while_nothing_is_written() {
    let project = Project::new();
    project
        .run(&["run", "--session", "idle", "--dive", "d", "--task", "t"])
        .expect(10);
    let mut child = project
        .command(&["logs", "idle", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("== "), "{first}");
    drop(stdout);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("logs --follow went on after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// `--follow` goes on after `_logs` is removed and made again, and after the log it reads is
/// cut short: it reads the new folder, and the cut log again from its start, never a
/// fragment of a line.
#[test]
fn follow_survives_its_folder_made_again_and_its_log_cut_short() {
    let project = Project::new();
    let dir = session(&project, "cut");
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let first = dir.join("_logs/01-01-000001-001-implementation-a1.jsonl");
    append(&first, &assistant("a long first line of the first attempt"));
    let mut follower = Follower::start(&project, "cut");
    follower.wait_for("a long first line of the first attempt");
    // Cut to nothing, then a shorter line: read from the start.
    std::fs::File::create(&first).unwrap();
    append(&first, &assistant("short"));
    follower.wait_for("short");
    // The folder removed and made again, with a newer attempt in it.
    std::fs::remove_dir_all(dir.join("_logs")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::create_dir(dir.join("_logs")).unwrap();
    let second = dir.join("_logs/01-01-000002-001-implementation-a2.jsonl");
    append(&second, &assistant("the second attempt, in a new folder"));
    follower.wait_for("the second attempt, in a new folder");
    append(&second, &assistant("and more of it"));
    follower.wait_for("and more of it");
    assert!(
        follower
            .seen
            .iter()
            .all(|l| !l.contains("\"text\"") && !l.contains("}}")),
        "no fragment of a line: {:#?}",
        follower.seen
    );
}

/// A daemon killed mid-attempt leaves its attempt in flight with nobody to end it, and one
/// stopped cleanly leaves its session to run again: `--follow` says so (on standard error),
/// rather than wait in silence (found by the story hunt and the re-test).
#[test]
fn follow_says_when_nobody_drives_the_session_any_more() {
    for crash in [true, false] {
        let mut project = Project::new();
        project.env("SAMOCODE_FAKE", "investigation=hang");
        let daemon = project.daemon(&[]);
        project
            .run(&["start", "--session", "orphan", "--dive", "d", "--task", "t"])
            .expect(0);
        let dir = project.session("orphan").0;
        super::fixture::wait_for(Duration::from_secs(20), "the attempt's log", || {
            dir.join("_logs")
                .read_dir()
                .is_ok_and(|mut entries| entries.next().is_some())
        });
        let said = project.root.join("follow.err");
        let mut follower = project
            .command(&["logs", "orphan", "--follow"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&said).unwrap())
            .spawn()
            .unwrap();
        match crash {
            true => daemon.crash(),
            false => assert_eq!(daemon.terminate(), Some(0)),
        }
        super::fixture::wait_for(Duration::from_secs(20), "the follower to say so", || {
            std::fs::read_to_string(&said).is_ok_and(|t| t.contains("nobody drives"))
        });
        let _ = follower.kill();
        let _ = follower.wait();
        // The killed daemon's agent hangs on with no worker to stop it.
        for pid in super::fixture::agents_of(&dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let text = std::fs::read_to_string(&said).unwrap();
        assert_eq!(
            text.matches("nobody drives").count(),
            1,
            "said once: {text}"
        );
        assert!(text.contains("samocode status orphan"), "{text}");
    }
}
