//! Bad input (issue 10): values that panicked or went to git unchecked, names git refuses,
//! configuration errors one at a time, texts that repeat, files that are not text, NUL bytes,
//! and flags that were ignored.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::fixture::{Project, wait_for};

fn assert_usage(run: &super::fixture::Run, needles: &[&str]) {
    run.expect(2);
    for needle in needles {
        assert!(
            run.stderr().contains(needle),
            "{needle:?} not in:\n{}",
            run.stderr()
        );
    }
}

#[test]
fn numbers_too_large_for_a_duration_are_errors_not_panics() {
    let mut project = Project::new();
    project.env("CLAUDE_TIMEOUT", "99999999999999999999");
    assert_usage(
        &project.run(&["status"]),
        &[
            "CLAUDE_TIMEOUT=\"99999999999999999999\" (from the environment) is not valid: expected a duration from 1s to 7 days",
        ],
    );
    let mut project = Project::new();
    project.env("SAMOCODE_STALL_TIMEOUT", "2e19");
    assert_usage(
        &project.run(&["status"]),
        &["SAMOCODE_STALL_TIMEOUT=\"2e19\" (from the environment) is not valid"],
    );
    let project = Project::new();
    for timeout in ["99999999999999999999", "0"] {
        let run = project.run(&[
            "run",
            "--session",
            "t",
            "--dive",
            "d",
            "--task",
            "t",
            "--timeout",
            timeout,
        ]);
        assert_usage(
            &run,
            &[&format!(
                "--timeout=\"{timeout}\" (from the command line) is not valid"
            )],
        );
    }
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
}

#[test]
fn parallel_takes_one_to_a_thousand_like_the_flag() {
    let project = Project::new();
    for n in ["0", "100000"] {
        assert_usage(
            &project.run(&["parallel", n]),
            &["is not a number of agents from 1 to 1000"],
        );
    }
    assert_usage(
        &project.run(&["supervise", "--max-parallel", "0"]),
        &["--max-parallel=\"0\" (from the command line) is not valid"],
    );
}

#[test]
fn base_branch_and_prefix_that_git_would_read_as_options_are_refused() {
    let project = Project::new();
    std::fs::write(
        project.root.join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\nBASE_BRANCH=--help\nBRANCH_PREFIX=-D\n",
    )
    .unwrap();
    let run = project.run(&["run", "--session", "opt", "--dive", "d", "--task", "t"]);
    assert_usage(
        &run,
        &[
            "2 problems in the configuration",
            ".samocode:4: BASE_BRANCH=\"--help\" is not valid: expected a git branch name, but it starts with '-'",
            ".samocode:5: BRANCH_PREFIX=\"-D\" is not valid",
        ],
    );
    assert!(!run.stderr().contains("usage: git"), "{}", run.stderr());
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
}

#[test]
fn names_git_refuses_as_branches_are_refused_before_a_file_is_touched() {
    let project = Project::new();
    for name in ["a.lock", "a.", "a_b."] {
        let run = project.run(&["run", "--session", name, "--dive", "d", "--task", "t"]);
        assert_usage(&run, &["invalid session name", "git branch"]);
    }
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&project.worktrees).unwrap().count(), 0);
}

#[test]
fn every_configuration_error_is_listed_in_one_run() {
    let mut project = Project::new();
    std::fs::write(
        project.root.join(".samocode"),
        "MAIN_REPO=repo\nMAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\nBOGUS=1\nSESIONS=x\n",
    )
    .unwrap();
    std::fs::create_dir_all(project.root.join("home/.config/samocode")).unwrap();
    std::fs::write(
        project.root.join("home/.config/samocode/config.toml"),
        "unkown_key = 1\nmax_retrys = 2\n",
    )
    .unwrap();
    project
        .env("SAMOCODE_MAX_RETRIES", "lots")
        .env("SAMOCODE_KILL_GRACE", "forever")
        .env("TELEGRAM_BOT_TOKEN", "123:secret-token");
    let run = project.run(&["status"]);
    assert_usage(
        &run,
        &[
            "8 problems in the configuration",
            ".samocode:2: MAIN_REPO is given again (first on line 1)",
            ".samocode:5: unknown setting \"BOGUS\"; remove it",
            ".samocode:6: unknown setting \"SESIONS\"; did you mean SESSIONS?",
            "config.toml: unknown setting \"unkown_key\"",
            "config.toml: unknown setting \"max_retrys\"; did you mean max_retries?",
            "SAMOCODE_MAX_RETRIES=\"lots\" (from the environment)",
            "SAMOCODE_KILL_GRACE=\"forever\" (from the environment)",
            "TELEGRAM_BOT_TOKEN is set (from the environment) but TELEGRAM_CHAT_ID",
        ],
    );
    assert!(!run.stderr().contains("secret-token"), "{}", run.stderr());
}

#[test]
fn otel_rust_log_and_codex_home_may_come_from_config_toml() {
    let mut project = Project::new();
    std::fs::create_dir_all(project.root.join("home/.config/samocode")).unwrap();
    std::fs::write(
        project.root.join("home/.config/samocode/config.toml"),
        "otel_exporter_otlp_traces_endpoint = \"http://127.0.0.1:9/v1/traces\"\nrust_log = \"samocode=debug\"\ncodex_home = \"/nowhere/codex\"\n",
    )
    .unwrap();
    let dry = project.run(&[
        "run",
        "--session",
        "x",
        "--dive",
        "d",
        "--task",
        "t",
        "--dry-run",
    ]);
    dry.expect(0);
    assert!(
        dry.stdout()
            .contains("traces:         http://127.0.0.1:9/v1/traces"),
        "{}",
        dry.stdout()
    );
    project.env("SAMOCODE_PROVIDER", "codex");
    assert_usage(
        &project.run(&["run", "--session", "x", "--dive", "d", "--task", "t"]),
        &[
            "CODEX_HOME=\"/nowhere/codex\" (from config.toml) is not valid: expected an existing directory",
        ],
    );
    std::fs::write(
        project.root.join("home/.config/samocode/config.toml"),
        "rust_log = \"samocode=[\"\n",
    )
    .unwrap();
    assert_usage(
        &project.run(&["status"]),
        &["rust_log=\"samocode=[\" (from config.toml) is not valid"],
    );
}

#[test]
fn an_error_says_its_cause_once() {
    let project = Project::new();
    let dir = project.sessions.join("26-01-01-old");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("_overview.md"),
        "# Old\n\n## Status\nPhase: bogus\n",
    )
    .unwrap();
    let run = project.run(&["resume", "old"]);
    run.expect(2);
    assert_eq!(
        run.stderr()
            .matches("names an unknown phase \"bogus\"")
            .count(),
        1,
        "{}",
        run.stderr()
    );
}

#[test]
fn files_that_are_not_text_exit_2_naming_the_file() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    project
        .run(&["run", "--session", "bytes", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("bytes");
    std::fs::write(s.path("_qa.md"), b"## Q1: a?\nAnswer: \xff\xfe\n").unwrap();
    assert_usage(
        &project.run(&["answer", "bytes", "--accept-suggestions"]),
        &["_qa.md is not UTF-8 text"],
    );
    std::fs::write(project.root.join(".samocode"), b"MAIN_REPO=\xff\n").unwrap();
    assert_usage(&project.run(&["status"]), &[".samocode is not UTF-8 text"]);
}

#[test]
fn dive_and_task_for_an_existing_session_are_refused_not_ignored() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    project
        .run(&["run", "--session", "twice", "--dive", "d", "--task", "t"])
        .expect(10);
    let again = project.run(&[
        "run",
        "--session",
        "twice",
        "--dive",
        "other",
        "--task",
        "t",
    ]);
    assert_usage(&again, &["already exists", "are not changed"]);
    assert!(project.session("twice").state()["dive"] == "d");
}

/// A NUL byte cannot come through argv; it can come over the control socket, and is refused
/// there with a sentence, not handed to the agent as an argument.
#[test]
fn a_nul_in_a_request_is_refused_clearly() {
    let mut project = Project::new();
    let daemon = project.daemon(&[]);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    let request = serde_json::json!({
        "v": 1, "cmd": "start", "project": project.root.join(".samocode"),
        "session": "nul", "dive": "a\u{0}b", "task": "t",
    });
    writeln!(stream, "{request}").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"reply\":\"error\""), "{answer}");
    assert!(answer.contains("the dive contains a NUL byte"), "{answer}");
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
    wait_for(
        Duration::from_secs(5),
        "the daemon to answer status",
        || project.run(&["status"]).code() == 0,
    );
}

/// A session folder that is a symbolic link is refused before anything is written: samocode
/// never writes through a link (it had put its lock file into the link's target).
#[test]
fn a_session_folder_that_is_a_link_is_refused_and_its_target_left_untouched() {
    let project = Project::new();
    let target = project.root.join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    for (link, name) in [("26-01-02-lnk", "lnk"), ("exact", "exact")] {
        std::os::unix::fs::symlink(&target, project.sessions.join(link)).unwrap();
        for args in [
            vec!["run", "--session", name, "--once"],
            vec!["status", name],
            vec!["stop", name],
        ] {
            let run = project.run(&args);
            assert_usage(&run, &["is a symbolic link", "move the link away"]);
        }
    }
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written through the link"
    );
}

/// A dry run succeeds only where the run itself would start: it checks the agent's settings
/// and a new session's dive and task as the run does (it printed them and exited 0).
#[test]
fn a_dry_run_refuses_what_the_run_refuses() {
    let mut project = Project::new();
    let new = project.run(&["run", "--session", "newx", "--dry-run"]);
    assert_usage(&new, &["needs --dive TEXT and --task TEXT"]);
    project
        .env("SAMOCODE_PROVIDER", "codex")
        .env("CODEX_HOME", "/nonexistent/codex-home");
    let run = ["run", "--session", "x", "--dive", "d", "--task", "t"];
    let codex = project.run(&[&run[..], &["--dry-run"]].concat());
    assert_usage(&codex, &["CODEX_HOME", "/nonexistent/codex-home"]);
    let real = project.run(&run);
    assert_usage(&real, &["CODEX_HOME", "/nonexistent/codex-home"]);
    assert_eq!(codex.stderr(), real.stderr(), "the same refusal");
}

/// A variable or a working directory that is not UTF-8 (after a `cd` into a Latin-1 folder,
/// `PWD` and `OLDPWD` are) panicked every command at its start. One samocode does not read is
/// left out; one of its settings, or a folder it would keep in its files, is refused by name.
#[test]
fn what_is_not_utf8_in_the_environment_is_left_out_or_refused_by_name() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let project = Project::new();
    let latin1 = OsStr::from_bytes(b"/tmp/lat\xe9n");
    let out = project
        .command(&["status"])
        .env("OLDPWD", latin1)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = project
        .command(&["status"])
        .env("SAMOCODE_STATE_DIR", latin1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SAMOCODE_STATE_DIR") && stderr.contains("not valid UTF-8"),
        "{stderr}"
    );
    // A secret's value is not shown, nor an address's password.
    for (name, value, secret) in [
        ("TELEGRAM_BOT_TOKEN", &b"123:SECRET\xe9x"[..], "SECRET"),
        ("SAMOCODE_NATS_URL", b"nats://u:PASSW\xe9RD@h:4222", "PASSW"),
    ] {
        let out = project
            .command(&["status"])
            .env(name, OsStr::from_bytes(value))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(name) && !stderr.contains(secret),
            "{stderr}"
        );
    }
    let folder = project.root.join(OsStr::from_bytes(b"lat\xe9n"));
    std::fs::create_dir(&folder).unwrap();
    let out = project
        .command(&["status"])
        .current_dir(&folder)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("current directory") && stderr.contains("not valid UTF-8"),
        "{stderr}"
    );
}

/// A new session whose dive or task says nothing is refused, naming the flag (it was made,
/// with empty sections the agent had nothing to go on from).
#[test]
fn an_empty_dive_or_task_is_refused() {
    let project = Project::new();
    let run = project.run(&["run", "--session", "blank", "--dive", "", "--task", "t"]);
    assert_usage(&run, &["--dive is empty"]);
    let run = project.run(&["run", "--session", "blank", "--dive", "d", "--task", "  "]);
    assert_usage(&run, &["--task is empty"]);
    assert!(
        std::fs::read_dir(&project.sessions)
            .unwrap()
            .next()
            .is_none(),
        "no session folder is made"
    );
}

/// Inputs that were taken without a word: a project file given to the demo (which reads
/// none), a worker name of two lines.
#[test]
fn a_project_file_for_the_demo_and_a_worker_name_of_two_lines_are_refused() {
    let project = Project::new();
    let demo = project.run(&["--config", "/nonexistent/.samocode", "demo"]);
    assert_usage(
        &demo,
        &["--config /nonexistent/.samocode", "leave --config out"],
    );
    let worker = project.run(&[
        "worker",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--name",
        "a\nb",
    ]);
    assert_usage(&worker, &["--name \"a\\nb\"", "a name of one line"]);
}
