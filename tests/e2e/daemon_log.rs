//! The daemon's log file in its state directory, and `--log-format json`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use super::fixture::Project;

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Every line parsed as JSON, with the level and message every log line carries.
fn json_lines(text: &str, origin: &str) -> Vec<Value> {
    lines(text)
        .into_iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{origin}: not JSON ({e}): {line}"));
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&value["level"].as_str().unwrap_or("")),
                "{origin}: no level: {line}"
            );
            assert!(
                value["fields"]["message"].is_string(),
                "{origin}: no message: {line}"
            );
            value
        })
        .collect()
}

#[test]
fn the_daemon_writes_its_log_lines_to_a_private_file_in_its_state_directory() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "logged", "--dive", "d", "--task", "t"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    assert_eq!(daemon.terminate(), Some(0));

    let file = project.state_dir().join("samocode.log");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log file is the daemon user's alone");
    let logged = std::fs::read_to_string(&file).unwrap();
    let stderr = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    let logged = lines(&logged);
    assert!(logged.len() >= 3, "{logged:#?}");
    assert!(logged.iter().any(|l| l.contains(" INFO ")), "{logged:#?}");
    // The same lines as on standard error (each layer takes its own timestamp), without
    // colour codes.
    for line in &logged {
        let (_timestamp, event) = line.split_once(' ').unwrap();
        assert!(
            stderr.contains(event),
            "{event} is not on standard error:\n{stderr}"
        );
        assert!(!line.contains('\u{1b}'));
    }
}

#[test]
fn log_format_json_writes_json_lines_to_standard_error_and_the_file() {
    let mut project = Project::new();
    let daemon = project.daemon(&["--log-format", "json"]);
    project
        .run(&[
            "start",
            "--session",
            "structured",
            "--dive",
            "d",
            "--task",
            "t",
        ])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    assert_eq!(daemon.terminate(), Some(0));

    let file = std::fs::read_to_string(project.state_dir().join("samocode.log")).unwrap();
    let logged = json_lines(&file, "samocode.log");
    assert!(logged.len() >= 3, "{file}");
    // Structured fields beside the message, as they were logged.
    assert!(
        logged.iter().any(|l| l["fields"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k != "message")),
        "{file}"
    );
    let stderr = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    assert_eq!(json_lines(&stderr, "standard error").len(), logged.len());
}

#[test]
fn run_takes_the_log_format_from_its_flag_or_the_environment_and_keeps_no_log_file() {
    let mut project = Project::new();
    let run = project.run(&[
        "run",
        "--session",
        "one",
        "--dive",
        "d",
        "--task",
        "t",
        "--log-format",
        "json",
    ]);
    run.expect(10);
    assert!(!json_lines(&run.stderr(), "run --log-format json").is_empty());

    project.env("SAMOCODE_LOG_FORMAT", "json");
    let run = project.run(&["run", "--session", "two", "--dive", "d", "--task", "t"]);
    run.expect(10);
    assert!(!json_lines(&run.stderr(), "SAMOCODE_LOG_FORMAT=json").is_empty());
    let state = project.root.join("home/.local/state/samocode");
    assert!(
        !state.join("samocode.log").exists(),
        "only the daemon keeps a log file"
    );

    let bad = project.run(&["run", "--session", "three", "--log-format", "xml"]);
    bad.expect(2);
    assert!(
        bad.stderr().contains(
            "--log-format=\"xml\" (from the command line) is not valid: expected text or json"
        ),
        "{}",
        bad.stderr()
    );
}

/// A retried iteration's log lines say each attempt's outcome once, and the session's name
/// once (they had said every outcome in turn, `samocode.outcome="nonzero"
/// samocode.outcome="ok"`, and the name twice).
#[test]
fn a_retried_attempts_log_line_says_its_outcome_and_session_once() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=exit:3");
    let run = project.run(&["run", "--session", "again", "--dive", "d", "--task", "t"]);
    run.expect(10);
    let err = run.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("attempt journaled") && l.contains("attempt=2"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("outcome=\"ok\""), "{line}");
    assert!(!line.contains("nonzero"), "{line}");
    assert_eq!(line.matches("samocode.session=").count(), 1, "{line}");
}
