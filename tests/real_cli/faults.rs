//! How samocode copes when the model server misbehaves under the real CLIs: overload, a usage
//! limit, bad credentials, a hang, a garbled stream.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::agents::{drive_through_gates, use_claude, use_codex};
use super::server::{Fault, ModelServer};
use crate::fixture::{BIN, Project, Session, wait_for};

#[derive(Clone, Copy, PartialEq)]
enum Cli {
    Claude,
    Codex,
}

fn project(cli: Cli, server: &ModelServer) -> Project {
    let mut project = Project::new();
    match cli {
        Cli::Claude => {
            use_claude(&mut project, server);
            // The CLI's own retries: one, so that a test can outlast them quickly.
            project.env("CLAUDE_CODE_MAX_RETRIES", "1");
        }
        Cli::Codex => use_codex(&mut project, server),
    }
    project
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rows(s: &Session) -> Vec<Value> {
    s.jsonl("_iterations.jsonl")
}

/// The text of a session's file, once the session and the file exist.
fn session_file(project: &Project, name: &str, file: &str) -> Option<String> {
    std::fs::read_dir(&project.sessions)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!("-{name}"))
        })
        .and_then(|e| std::fs::read_to_string(e.path().join(file)).ok())
}

fn faults_served(server: &ModelServer, fault: &Fault) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.fault.as_ref() == Some(fault))
        .count()
}

/// Processes that carry this session's marker in their environment (the agent and all it
/// started).
fn processes_of(session: &Path) -> Vec<i32> {
    let marker = format!("SAMOCODE_SESSION={}", session.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                && crate::fixture::alive(*pid)
        })
        .collect()
}

fn overload_is_retried_by_the_cli_then_by_samocode(cli: Cli) {
    let server = ModelServer::start(BIN.as_ref());
    let mut project = project(cli, &server);
    // More overloaded answers than the CLI retries in one attempt.
    for _ in 0..5 {
        server.fault(Fault::Overloaded);
    }
    let s = drive_through_gates(&mut project, "busy");
    assert_eq!(faults_served(&server, &Fault::Overloaded), 5);
    let rows = rows(&s);
    assert_eq!(rows[0]["outcome"], "nonzero", "{}", rows[0]);
    let detail = rows[0]["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("529") || detail.contains("overloaded"),
        "{detail}"
    );
    assert_eq!(rows[0]["iteration"], rows[1]["iteration"]);
    assert!(rows[1]["attempt"].as_u64().unwrap() >= 2);
    assert!(rows.iter().skip(1).any(|r| r["outcome"] == "ok"));
    assert_eq!(rows.last().unwrap()["outcome"], "ok");
    // The CLI retried inside the first attempt before giving up.
    let first_log = s.read(rows[0]["log"].as_str().unwrap());
    let cli_retried = match cli {
        Cli::Claude => r#""subtype":"api_retry""#,
        Cli::Codex => "Reconnecting",
    };
    assert!(first_log.contains(cli_retried), "{first_log}");
}

#[test]
fn claude_overload_is_retried_by_the_cli_then_by_samocode() {
    overload_is_retried_by_the_cli_then_by_samocode(Cli::Claude);
}

#[test]
fn codex_overload_is_retried_by_the_cli_then_by_samocode() {
    overload_is_retried_by_the_cli_then_by_samocode(Cli::Codex);
}

/// The first attempt is refused for a usage limit that resets a few seconds ahead: the
/// session parks as queued, with no agent, and runs the same attempt again by itself after
/// the reset; `earliest` is when the CLI's message lets it resume.
fn usage_limit_parks_then_resumes(cli: Cli, reset_at: i64, earliest: i64) {
    let server = ModelServer::start(BIN.as_ref());
    let project = project(cli, &server);
    server.fault(Fault::UsageLimit { reset_at });
    let mut child = project
        .command(&[
            "run",
            "--session",
            "limited",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The row is journaled first, then the state that parks the session is saved.
    wait_for(
        Duration::from_secs(60),
        "the usage-limit row and the park",
        || {
            session_file(&project, "limited", "_iterations.jsonl")
                .is_some_and(|rows| rows.contains("usage_limit"))
                && session_file(&project, "limited", "_state.json")
                    .is_some_and(|state| state.contains("not_before"))
        },
    );
    let s = project.session("limited");
    let state = s.state();
    assert_eq!(state["status"]["state"], "queued", "{state}");
    let not_before: jiff::Timestamp = state["not_before"].as_str().unwrap().parse().unwrap();
    assert!(
        not_before.as_second() >= earliest,
        "{not_before} before {earliest}"
    );
    assert!(processes_of(&s.0).is_empty(), "an agent runs while parked");
    let shown = project.run(&["status", "limited"]);
    assert!(shown.stdout().contains("resumes at:"), "{}", shown.stdout());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let rows = rows(&s);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "usage_limit");
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("usage limit")
    );
    // The same attempt again, once the limit was over.
    assert_eq!(rows[1]["outcome"], "ok");
    assert_eq!(
        (rows[1]["iteration"].clone(), rows[1]["attempt"].clone()),
        (1.into(), 1.into())
    );
    let resumed: jiff::Timestamp = rows[1]["started_at"].as_str().unwrap().parse().unwrap();
    assert!(resumed.as_second() >= earliest, "resumed at {resumed}");
    assert!(s.state()["not_before"].is_null());
    assert_eq!(s.state()["phase"], "requirements");
}

#[test]
fn claude_usage_limit_parks_the_session_until_the_reset() {
    let reset = unix_now() + 4;
    usage_limit_parks_then_resumes(Cli::Claude, reset, reset);
}

#[test]
fn codex_usage_limit_parks_the_session_until_the_reset() {
    // codex names the reset to the minute ("Try again at 3:27 PM."), so the session waits
    // for the end of that minute.
    let reset = unix_now() + 2;
    usage_limit_parks_then_resumes(Cli::Codex, reset, reset - reset % 60 + 60);
}

fn bad_credentials_block_at_once(cli: Cli) {
    let server = ModelServer::start(BIN.as_ref());
    let project = project(cli, &server);
    for _ in 0..20 {
        server.fault(Fault::BadKey);
    }
    let run = project.run(&["run", "--session", "key", "--dive", "d", "--task", "t"]);
    run.expect(11);
    assert!(run.stdout().contains("credentials"), "{}", run.stdout());
    let s = project.session("key");
    assert_eq!(rows(&s).len(), 1, "no retry of ours");
    let state = s.state();
    assert_eq!(state["status"]["state"], "blocked");
    assert!(
        state["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("the provider refused the credentials"),
        "{state}"
    );
}

#[test]
fn claude_bad_credentials_block_at_once() {
    bad_credentials_block_at_once(Cli::Claude);
}

#[test]
fn codex_bad_credentials_block_at_once() {
    bad_credentials_block_at_once(Cli::Codex);
}

/// codex with no API key at all says so and stops: the session blocks at once, as for a key
/// the provider refused, instead of spending its retries.
#[test]
fn codex_without_its_key_blocks_at_once() {
    let server = ModelServer::start(BIN.as_ref());
    let mut project = project(Cli::Codex, &server);
    project.unset("OPENAI_API_KEY");
    let run = project.run(&["run", "--session", "nokey", "--dive", "d", "--task", "t"]);
    run.expect(11);
    let s = project.session("nokey");
    assert_eq!(rows(&s).len(), 1, "no retry of ours");
    let reason = s.state()["status"]["reason"].to_string();
    assert!(
        reason.contains("the provider refused the credentials")
            && reason.contains("OPENAI_API_KEY"),
        "{reason}"
    );
}

fn hang_is_killed_at_the_timeout_then_retried(cli: Cli) {
    let server = ModelServer::start(BIN.as_ref());
    let project = project(cli, &server);
    server.fault(Fault::Hang);
    let mut run = project
        .command(&[
            "run",
            "--session",
            "stuck",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
            "--timeout",
            "4s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the CLI's hanging request", || {
        faults_served(&server, &Fault::Hang) == 1
    });
    let s = project.session("stuck");
    // While the model hangs, the CLI (and whatever it started) carries the session's marker.
    let hanging = processes_of(&s.0);
    assert!(
        !hanging.is_empty(),
        "no agent process while the model hangs"
    );
    assert_eq!(run.wait().unwrap().code(), Some(0));

    let rows = rows(&s);
    assert_eq!(rows[0]["outcome"], "timeout", "{}", rows[0]);
    assert_eq!(rows[1]["outcome"], "ok", "{}", rows[1]);
    assert_eq!(faults_served(&server, &Fault::Hang), 1);
    let survivors: Vec<i32> = hanging
        .into_iter()
        .filter(|pid| crate::fixture::alive(*pid))
        .collect();
    assert!(survivors.is_empty(), "survived the timeout: {survivors:?}");
    assert!(processes_of(&s.0).is_empty(), "an agent process is left");
}

#[test]
fn claude_hang_is_killed_at_the_timeout_then_retried() {
    hang_is_killed_at_the_timeout_then_retried(Cli::Claude);
}

#[test]
fn codex_hang_is_killed_at_the_timeout_then_retried() {
    hang_is_killed_at_the_timeout_then_retried(Cli::Codex);
}

#[test]
fn claude_garbled_stream_is_an_ordinary_failure() {
    let server = ModelServer::start(BIN.as_ref());
    let project = project(Cli::Claude, &server);
    server.fault(Fault::Garbage);
    project
        .run(&[
            "run",
            "--session",
            "noise",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
        ])
        .expect(0);
    let rows = rows(&project.session("noise"));
    assert_eq!(rows[0]["outcome"], "nonzero");
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("malformed response")
    );
    assert_eq!(rows[1]["outcome"], "ok");
}
