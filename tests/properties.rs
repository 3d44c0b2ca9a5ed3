//! Property targets over every parser of outside input: the configuration (`.samocode` text,
//! `config.toml` text, environment values), `_signal.json`, `_qa.md` parsing and filling,
//! `_overview.md` parsing and rewriting, and control socket requests. No input may panic the
//! binary; where a parser accepts, what it returns must hold its promises. Each target runs a
//! bounded number of cases in the normal `cargo test`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use samocode::config::{self, Flags, Sources};
use samocode::control::{self, Request};
use samocode::protocol::overview::{self, WorkerLines};
use samocode::protocol::qa::{self, QaDoc};
use samocode::protocol::{Phase, SessionState, Signal};

/// Cases per target: enough to reach the odd corners, few enough for a two-core machine.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text built from `words`, plus arbitrary characters (NUL, controls, non-ASCII among them).
fn text_of(words: &'static [&'static str], lines: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(words).prop_map(str::to_string),
        1 => "\\PC{0,12}",
        1 => "[\\x00-\\x1f\\-\\.=:/@{}~^ ]{0,6}",
    ];
    proptest::collection::vec((piece.clone(), piece).prop_map(|(a, b)| a + &b), 0..lines)
        .prop_map(|lines| lines.join("\n"))
}

const SETTING_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "99999999999999999999",
    "2e19",
    "1e-300",
    "NaN",
    "inf",
    "90s",
    "7d",
    "8d",
    "30m",
    "",
    " ",
    "claude",
    "codex",
    "http://127.0.0.1:1",
    "a=b,c",
    "=",
    "samocode=[",
    "~",
    "~/x",
    "--help",
];

const SETTINGS: &[&str] = &[
    "CLAUDE_TIMEOUT",
    "CODEX_TIMEOUT",
    "CLAUDE_MAX_TURNS",
    "SAMOCODE_PROVIDER",
    "SAMOCODE_MAX_RETRIES",
    "SAMOCODE_RETRY_DELAY",
    "SAMOCODE_KILL_GRACE",
    "SAMOCODE_STALL_TIMEOUT",
    "SAMOCODE_MAX_PARALLEL",
    "SAMOCODE_STRIP_ENV",
    "SAMOCODE_KEEP_ENV",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_API_URL",
    "TELEGRAM_ALLOWED_USERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_RESOURCE_ATTRIBUTES",
    "RUST_LOG",
    "CODEX_HOME",
];

fn setting_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(SETTING_VALUES).prop_map(str::to_string),
        1 => "[^\\x00]{0,20}",
    ]
}

fn project(dir: &Path, samocode: &str, toml: &str) {
    for d in ["repo", "wt", "sessions", "home/.config/samocode"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join(".samocode"), samocode).unwrap();
    std::fs::write(dir.join("home/.config/samocode/config.toml"), toml).unwrap();
}

/// Whatever the configuration, `resolve` answers; an accepted one is in range.
fn check_resolve(dir: &Path, env: HashMap<String, String>, timeout: Option<String>) {
    let mut env = env;
    env.insert("HOME".into(), dir.join("home").display().to_string());
    let sources = Sources {
        env,
        cwd: dir.to_path_buf(),
    };
    let flags = Flags {
        timeout,
        ..Flags::default()
    };
    match config::resolve(&flags, &sources) {
        Ok(config) => {
            let timeout = config.agent.timeout;
            assert!(timeout >= Duration::from_secs(1) && timeout <= Duration::from_secs(604_800));
            assert!((1..=1000).contains(&config.max_parallel));
            assert!(config.agent.kill_grace <= Duration::from_secs(600));
            assert!(config.retry.first_delay <= Duration::from_secs(300));
            if let Some(project) = &config.project {
                assert!(project.main_repo.is_dir() && project.sessions.is_dir());
                for reference in [&project.base_branch, &project.branch_prefix]
                    .into_iter()
                    .flatten()
                {
                    assert!(!reference.starts_with('-'), "{reference}");
                }
            }
            // No agent is handed samocode's own secrets.
            for name in config.agent.env.names() {
                assert!(!name.starts_with("TELEGRAM_") && !name.starts_with("OTEL_"));
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(cases(48))]

    /// `.samocode` text of any shape.
    #[test]
    fn project_files_never_panic(text in text_of(&[
        "MAIN_REPO=repo", "WORKTREES=wt", "SESSIONS=sessions", "BASE_BRANCH=", "BRANCH_PREFIX=",
        "MAIN_REPO=", "SESSIONS=\"sessions\"", "# comment", "=", "BOGUS=1", "main", "-D", "a.lock",
        "feat/", "..", "@{", "~",
    ], 12)) {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), &text, "");
        check_resolve(dir.path(), HashMap::new(), None);
    }

    /// `config.toml` text of any shape.
    #[test]
    fn config_toml_never_panics(text in text_of(&[
        "claude_timeout = ", "max_parallel = ", "kill_grace = ", "stall_timeout = ",
        "retry_delay = ", "rust_log = ", "strip_env = ", "keep_env = ", "telegram_chat_id = ",
        "otel_exporter_otlp_headers = ", "codex_home = ", "[profiles.claude.max]",
        "[profiles.codex]", "model = ", "effort = ", "\"x\"", "\"99999999999999999999\"",
        "[\"A_*\"]", "1e400", "-1", "true", "[1]", "{a = 1}",
    ], 10)) {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=sessions\n", &text);
        check_resolve(dir.path(), HashMap::new(), None);
    }

    /// Environment values and the --timeout flag of any shape.
    #[test]
    fn environment_values_never_panic(
        values in proptest::collection::hash_map(
            proptest::sample::select(SETTINGS).prop_map(str::to_string),
            setting_value(),
            0..8,
        ),
        timeout in proptest::option::of(setting_value()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=sessions\n", "");
        check_resolve(dir.path(), values, timeout);
    }
}

/// JSON values of any shape, biased towards signal-like objects.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let word = prop_oneof![
        proptest::sample::select(
            &[
                "continue",
                "waiting",
                "blocked",
                "done",
                "testing",
                "done",
                "planning",
                "implementation",
                "investigation",
                "qa_answers",
                "plan_approval",
                "human_action",
                "human_decision",
                "Testing",
                "",
            ][..]
        )
        .prop_map(str::to_string),
        "\\PC{0,10}",
    ];
    let leaf = prop_oneof![
        word.prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::Bool),
        Just(serde_json::Value::Null),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(
                    &["status", "phase", "for", "reason", "needs", "summary", "x",][..]
                )
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any JSON (or any text) as `_signal.json`: parsed or refused, never a panic; an accepted
    /// signal's status is one the phase allows (the first check of PROTOCOL section 4).
    #[test]
    fn signals_never_panic_and_checks_start_with_the_status(
        value in json_value(),
        raw in "\\PC{0,40}",
        phase in proptest::sample::select(Phase::ALL.to_vec()),
    ) {
        let _ = Signal::parse(&raw);
        if let Ok(signal) = Signal::parse(&value.to_string()) {
            match signal.validate(phase) {
                Ok(_) => prop_assert!(phase.rules().statuses.contains(&signal.status)),
                Err(rejection) => {
                    if !phase.rules().statuses.contains(&signal.status) {
                        prop_assert_eq!(rejection.code(), "status_not_allowed");
                    }
                }
            }
        }
    }

    /// Any `_qa.md`: parsing, filling and accepting suggestions never panic; a fill that
    /// succeeds changes only `Answer:` lines and keeps every question.
    #[test]
    fn qa_files_never_panic(
        text in text_of(&[
            "# Questions", "# Round 2", "# Round x", "## Q1: a?", "## Q1: b?", "## Q2: c?",
            "## Q99999999999: d?", "## Q: e?", "Options: a | b", "Suggested: s", "Suggested:",
            "Answer:", "Answer: yes", "Answer:   ", "\r",
        ], 14),
        answers in proptest::collection::vec((0u32..4, "\\PC{0,8}"), 0..4),
    ) {
        let doc = QaDoc::parse(&text);
        let _ = doc.is_answered();
        if let Ok(filled) = qa::fill(&text, &answers) {
            prop_assert_eq!(QaDoc::parse(&filled).questions.len(), doc.questions.len());
            for (before, after) in text.lines().zip(filled.lines()) {
                prop_assert!(before == after || after.starts_with("Answer:"), "{before:?} -> {after:?}");
            }
        }
        if let Ok(all) = qa::accept_suggestions(&text) {
            prop_assert_eq!(QaDoc::parse(&all).open().count(), 0);
        }
    }

    /// Any `_overview.md`: parsing, adopting it as a Python samocode session, rewriting the
    /// worker's lines and appending to the Flow Log never panic, and never drop a line that is
    /// not one of the worker's.
    #[test]
    fn overviews_never_panic_and_keep_agent_text(
        text in text_of(&[
            "# Session", "## Status", "Phase: testing", "Phase: bogus", "Iteration: 3",
            "Total Iterations: x", "Blocked: no", "Blocked: yes", "Last Action: a", "Next: b",
            "## Dive", "## Task", "## Flow Log", "- [001 @ 01-01 10:00] x", "#", "##", "\r",
        ], 16),
        phase in proptest::sample::select(Phase::ALL.to_vec()),
        entry in "\\PC{0,20}",
    ) {
        let _ = overview::parse(&text);
        let _ = SessionState::from_legacy_overview("x", &text, Some(&text), jiff::Timestamp::UNIX_EPOCH);
        let lines = WorkerLines { phase, iteration: 2, total_iterations: 5, blocked: None };
        let rewritten = overview::apply_worker_lines(&text, &lines);
        let worker = ["Phase:", "Iteration:", "Total Iterations:", "Blocked:"];
        for line in text.lines().filter(|l| !worker.iter().any(|w| l.starts_with(w))) {
            prop_assert!(rewritten.contains(line), "lost {line:?}");
        }
        let appended = overview::append_flow_log(&rewritten, 7, "01-01 10:00", &entry);
        prop_assert!(appended.len() > rewritten.len());
    }

    /// Any line on the control socket: a request or an error sentence, never a panic; no text
    /// with a NUL byte gets through.
    #[test]
    fn control_requests_never_panic(
        raw in "\\PC{0,60}",
        cmd in proptest::sample::select(&["start", "person", "named", "status", "parallel", "x"][..]),
        v in prop_oneof![Just(1u64), any::<u64>()],
        text in prop_oneof!["[a-z]{1,6}", "[a-z]{0,3}\\x00[a-z]{0,3}"],
        verb in proptest::sample::select(&["approve", "reject", "resume", "stop", "answer"][..]),
        max in any::<i64>(),
    ) {
        let _ = control::parse_request(raw.as_bytes());
        let line = serde_json::json!({
            "v": v, "cmd": cmd, "project": format!("/p/{text}"), "session": text,
            "dive": text, "task": text, "dir": "/s", "max": max,
            "command": {"verb": verb, "reason": text, "answers": {"given": [[1, text]]}},
        })
        .to_string();
        let carries_text = match control::parse_request(line.as_bytes()) {
            Ok(Request::Start { .. } | Request::Named { .. }) => true,
            Ok(Request::Person { .. }) => verb == "reject" || verb == "answer",
            _ => false,
        };
        prop_assert!(!(carries_text && text.contains('\0')), "{line}");
    }
}
