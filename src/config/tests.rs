//! The configuration as a person meets it: precedence, every problem in one report, ranges,
//! unknown and duplicate keys, and the agent's environment.

use super::*;
use crate::protocol::Profile;

fn sources(dir: &Path, env: &[(&str, &str)]) -> Sources {
    let mut map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("HOME".into(), dir.join("home").display().to_string());
    Sources {
        env: map,
        cwd: dir.to_path_buf(),
    }
}

fn project_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in [
        "repo",
        "wt",
        "sessions",
        "home/.config/samocode",
        "sub/deeper",
    ] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(
        dir.path().join(".samocode"),
        "# comment\nMAIN_REPO=repo\nWORKTREES = wt\nSESSIONS=\"sessions\"\nBRANCH_PREFIX=feat/\n",
    )
    .unwrap();
    dir
}

#[test]
fn project_found_by_walking_up_and_paths_made_absolute() {
    let dir = project_dir();
    let mut s = sources(dir.path(), &[]);
    s.cwd = dir.path().join("sub/deeper");
    let config = resolve(&Flags::default(), &s).unwrap();
    let project = config.project.unwrap();
    assert!(project.main_repo.is_absolute());
    assert!(project.sessions.ends_with("sessions"));
    assert_eq!(project.branch_prefix.as_deref(), Some("feat"));
    assert_eq!(config.agent.timeout, Duration::from_secs(1800));
    assert_eq!(config.retry.max_attempts, 3);
}

#[test]
fn the_readmes_project_file_with_comments_after_its_values_reads_as_meant() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo          # the git repository the agent works on\n\
         WORKTREES=wt  # one git worktree per session goes here\n\
         SESSIONS=\"sessions\"\t# one folder per session goes here\n\
         BASE_BRANCH=main                # optional: default is the repository's default branch\n\
         BRANCH_PREFIX=feat#2 # a # inside a word is kept\n",
    )
    .unwrap();
    let config = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap();
    let project = config.project.unwrap();
    assert!(project.main_repo.ends_with("repo"), "{project:?}");
    assert!(project.worktrees.ends_with("wt"));
    assert!(project.sessions.ends_with("sessions"));
    assert_eq!(project.base_branch.as_deref(), Some("main"));
    assert_eq!(project.branch_prefix.as_deref(), Some("feat#2"));
    assert_eq!(project::without_comment("\"a #b\"  # c"), "\"a #b\"");
    assert_eq!(project::without_comment("   # none"), "");
    assert_eq!(project::without_comment(" feat#2"), "feat#2");
}

#[test]
fn a_secret_of_the_wrong_type_in_config_toml_is_named_but_never_shown() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "telegram_bot_token = [\"123:SECRETARRAY\"]\notel_exporter_otlp_headers = { a = \"SECRETTABLE\" }\nmax_retries = [\"shown\"]\n",
    )
    .unwrap();
    let error = resolve(&Flags::default(), &sources(dir.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("telegram_bot_token"), "{error}");
    assert!(error.contains("otel_exporter_otlp_headers"), "{error}");
    assert!(!error.contains("SECRET"), "{error}");
    assert!(error.contains("<hidden: it holds a secret>"), "{error}");
    assert!(error.contains("shown"), "other values are shown: {error}");
}

#[test]
fn a_config_toml_that_does_not_parse_says_where() {
    let dir = project_dir();
    let file = dir.path().join("home/.config/samocode/config.toml");
    for (text, place) in [
        (
            "max_retries = 5\nclaude_timeout = \"45m\"\nclaude_timeout = \"1h\"\n",
            "line 3",
        ),
        ("max_retries = 5\nrust_log = \"samocode=debug\n", "line 2"),
    ] {
        std::fs::write(&file, text).unwrap();
        let error = resolve(&Flags::default(), &sources(dir.path(), &[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.toml is not valid TOML") && error.contains(place),
            "{text:?}: {error}"
        );
    }
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "claude_timeout = 60\nmax_retries = 5\nclaude_model = \"from-file\"\n",
    )
    .unwrap();
    let s = sources(dir.path(), &[("CLAUDE_TIMEOUT", "2m")]);
    let config = resolve(&Flags::default(), &s).unwrap();
    assert_eq!(config.agent.timeout, Duration::from_secs(120));
    assert_eq!(config.retry.max_attempts, 5);
    assert_eq!(config.agent.claude_model.as_deref(), Some("from-file"));
    let flags = Flags {
        timeout: Some("90s".into()),
        ..Flags::default()
    };
    assert_eq!(
        resolve(&flags, &s).unwrap().agent.timeout,
        Duration::from_secs(90)
    );
}

#[test]
fn errors_name_the_key_and_the_path() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=nope\n",
    )
    .unwrap();
    let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
    assert!(err.to_string().contains("SESSIONS="), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=wt\n",
    )
    .unwrap();
    let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
    assert!(err.to_string().contains("SESSIONS is required"), "{err}");

    // Empty is not the project folder: `.` says that.
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=\nWORKTREES=wt\nSESSIONS=sessions   # here\n",
    )
    .unwrap();
    let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
    assert!(
        err.to_string()
            .contains(".samocode:1: MAIN_REPO is empty: expected the git repository"),
        "{err}"
    );

    let project = project_dir();
    let err = resolve(
        &Flags::default(),
        &sources(project.path(), &[("CLAUDE_TIMEOUT", "soon")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CLAUDE_TIMEOUT=\"soon\""), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let flags = Flags {
        require_project: true,
        ..Flags::default()
    };
    let err = resolve(&flags, &sources(empty.path(), &[])).unwrap_err();
    assert!(
        err.to_string().contains("no .samocode project file"),
        "{err}"
    );
}

#[test]
fn profiles_default_per_provider_and_config_toml_overrides_them() {
    let dir = project_dir();
    let config = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap();
    let profiles = &config.agent.profiles;
    let claude: Vec<&str> = Profile::ALL
        .iter()
        .map(|p| profiles.get(Provider::Claude, *p).model.as_str())
        .collect();
    assert_eq!(claude, ["haiku", "sonnet", "opus", "opus"]);
    assert_eq!(profiles.get(Provider::Codex, Profile::Max).effort, "xhigh");
    assert_eq!(config.home, Some(dir.path().join("home")));
    assert_eq!(config.codex_home, Some(dir.path().join("home/.codex")));

    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "max_retries = 4\n[profiles.claude.strong]\nmodel = \"opus-next\"\n[profiles.codex.light]\neffort = \"minimal\"\n",
    )
    .unwrap();
    let s = sources(dir.path(), &[("CODEX_HOME", "/elsewhere/codex")]);
    let config = resolve(&Flags::default(), &s).unwrap();
    assert_eq!(config.retry.max_attempts, 4);
    let strong = config.agent.profiles.get(Provider::Claude, Profile::Strong);
    assert_eq!(
        (strong.model.as_str(), strong.effort.as_str()),
        ("opus-next", "high")
    );
    let light = config.agent.profiles.get(Provider::Codex, Profile::Light);
    assert_eq!(light.effort, "minimal");
    assert_eq!(config.codex_home, Some(PathBuf::from("/elsewhere/codex")));
    // With codex as the provider, a CODEX_HOME that does not exist is refused before any
    // agent runs (install may still create it).
    let s = sources(
        dir.path(),
        &[
            ("CODEX_HOME", "/elsewhere/codex"),
            ("SAMOCODE_PROVIDER", "codex"),
        ],
    );
    let codex = resolve(&Flags::default(), &s).unwrap();
    let error = codex.check_agent().unwrap_err().to_string();
    assert!(
        error.starts_with("CODEX_HOME=\"/elsewhere/codex\" (from the environment) is not valid: expected an existing directory"),
        "{error}"
    );

    let choice = config.agent.choose(Profile::Strong);
    assert_eq!(
        (choice.model.as_str(), choice.explicit),
        ("opus-next", false)
    );
    let attempt = config.agent.for_attempt(&choice);
    assert_eq!(attempt.claude_model.as_deref(), Some("opus-next"));
    assert_eq!(attempt.effort.as_deref(), Some("high"));
    let pinned = resolve(
        &Flags::default(),
        &sources(dir.path(), &[("CLAUDE_MODEL", "pinned")]),
    )
    .unwrap();
    let choice = pinned.agent.choose(Profile::Light);
    assert_eq!(
        (choice.model.as_str(), choice.effort.as_str()),
        ("pinned", "low")
    );
    assert!(choice.explicit);
}

#[test]
fn bad_profiles_name_their_key() {
    let dir = project_dir();
    let file = dir.path().join("home/.config/samocode/config.toml");
    for (text, key) in [
        (
            "[profiles.gemini.light]\nmodel = \"x\"\n",
            "profiles.gemini",
        ),
        (
            "[profiles.claude.huge]\nmodel = \"x\"\n",
            "profiles.claude.huge",
        ),
        (
            "[profiles.claude.max]\neffort = \"extreme\"\n",
            "profiles.claude.max.effort",
        ),
        (
            "[profiles.claude.max]\nmodel = \"\"\n",
            "profiles.claude.max.model",
        ),
        (
            "[profiles.claude.max]\nmodl = \"x\"\n",
            "profiles.claude.max.modl",
        ),
        (
            "[profiles.claude.standard]\nmodel = \"--append-system-prompt\"\n",
            "profiles.claude.standard.model",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{key}=")), "{err}");
    }
    // A model goes to the CLI after --model: one that reads as an option is refused.
    std::fs::write(&file, "").unwrap();
    let err = resolve(
        &Flags::default(),
        &sources(
            dir.path(),
            &[("CLAUDE_MODEL", "-x"), ("CODEX_MODEL", "--help")],
        ),
    )
    .unwrap_err();
    for name in ["CLAUDE_MODEL=\"-x\"", "CODEX_MODEL=\"--help\""] {
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        first_delay: Duration::from_secs(5),
        max_delay: Duration::from_secs(30),
    };
    let delays: Vec<u64> = (2..7).map(|a| policy.delay_before(a).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 30, 30]);
}

fn error_text(dir: &Path, env: &[(&str, &str)], flags: &Flags) -> String {
    resolve(flags, &sources(dir, env)).unwrap_err().to_string()
}

#[test]
fn every_problem_is_reported_in_one_run_with_key_value_and_source() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo\nMAIN_REPO=repo\nWORKTREES=nope\nSESSIONS=sessions\nBOGUS=1\nBASE_BRANCH=--help\nBRANCH_PREFIX=-D\njust text\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "max_retrys = 5\nunkown_key = 1\n[profiles.claude.max]\neffort = \"extreme\"\n",
    )
    .unwrap();
    let flags = Flags {
        timeout: Some("0".into()),
        ..Flags::default()
    };
    let text = error_text(
        dir.path(),
        &[
            ("SAMOCODE_MAX_PARALLEL", "0"),
            ("SAMOCODE_STALL_TIMEOUT", "2e19"),
            ("SAMOCODE_RETRY_DELAY", "soon"),
        ],
        &flags,
    );
    for expected in [
        "13 problems in the configuration:",
        ".samocode:2: MAIN_REPO is given again (first on line 1); keep one",
        "WORKTREES=",
        "nope is not an existing directory",
        ".samocode:5: unknown setting \"BOGUS\"; remove it",
        ".samocode:6: BASE_BRANCH=\"--help\" is not valid: expected a git branch name, but it starts with '-', which git reads as an option",
        ".samocode:7: BRANCH_PREFIX=\"-D\" is not valid",
        ".samocode:8: expected KEY=VALUE, found \"just text\"",
        "config.toml: unknown setting \"max_retrys\"; did you mean max_retries?",
        "config.toml: unknown setting \"unkown_key\"; remove it",
        "profiles.claude.max.effort=\"extreme\" (from config.toml)",
        "--timeout=\"0\" (from the command line) is not valid: expected a duration from 1s to 7 days",
        "SAMOCODE_MAX_PARALLEL=\"0\" (from the environment) is not valid: expected a whole number from 1 to 1000",
        "SAMOCODE_STALL_TIMEOUT=\"2e19\" (from the environment)",
        "SAMOCODE_RETRY_DELAY=\"soon\" (from the environment)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn numbers_that_overflow_a_duration_are_errors_not_panics() {
    let dir = project_dir();
    for (key, value) in [
        ("CLAUDE_TIMEOUT", "99999999999999999999"),
        ("CODEX_TIMEOUT", "1e300"),
        ("SAMOCODE_KILL_GRACE", "11m"),
        ("SAMOCODE_STALL_TIMEOUT", "2e19"),
        ("CLAUDE_MAX_TURNS", "99999999999999999999"),
    ] {
        let text = error_text(dir.path(), &[(key, value)], &Flags::default());
        assert!(text.starts_with(&format!("{key}={value:?}")), "{text}");
    }
    let flags = Flags {
        timeout: Some("99999999999999999999".into()),
        ..Flags::default()
    };
    let text = error_text(dir.path(), &[], &flags);
    assert!(text.starts_with("--timeout="), "{text}");
    // In range: the stall timeout 0 means off.
    let s = sources(dir.path(), &[("SAMOCODE_STALL_TIMEOUT", "0")]);
    assert_eq!(
        resolve(&Flags::default(), &s).unwrap().agent.stall_timeout,
        None
    );
}

#[test]
fn telegram_needs_both_token_and_chat_and_never_shows_the_token() {
    let dir = project_dir();
    let text = error_text(
        dir.path(),
        &[("TELEGRAM_BOT_TOKEN", "123:very-secret")],
        &Flags::default(),
    );
    assert_eq!(
        text,
        "TELEGRAM_BOT_TOKEN is set (from the environment) but TELEGRAM_CHAT_ID (the chat the notifier posts to) is not; set both, or neither"
    );
    let text = error_text(dir.path(), &[("TELEGRAM_CHAT_ID", "42")], &Flags::default());
    assert!(text.starts_with("TELEGRAM_CHAT_ID is set"), "{text}");
    let text = error_text(
        dir.path(),
        &[
            ("TELEGRAM_BOT_TOKEN", "123:very-secret"),
            ("TELEGRAM_CHAT_ID", "forty-two"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization"),
        ],
        &Flags::default(),
    );
    assert!(text.contains("TELEGRAM_CHAT_ID=\"forty-two\""), "{text}");
    assert!(!text.contains("very-secret"), "{text}");
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_HEADERS=\"<hidden: it holds a secret>\""),
        "{text}"
    );
    // A template's placeholder: no chat has id 0.
    let zero = error_text(
        dir.path(),
        &[
            ("TELEGRAM_BOT_TOKEN", "123:very-secret"),
            ("TELEGRAM_CHAT_ID", "0"),
        ],
        &Flags::default(),
    );
    assert!(
        zero.contains("TELEGRAM_CHAT_ID=\"0\"") && zero.contains("not 0"),
        "{zero}"
    );
    // A token with a space or a line end in it, and the token pasted as the chat: refused,
    // never shown.
    let text = error_text(
        dir.path(),
        &[
            ("TELEGRAM_BOT_TOKEN", "123:very secret\r"),
            ("TELEGRAM_CHAT_ID", "123:very-secret"),
        ],
        &Flags::default(),
    );
    assert!(text.contains("TELEGRAM_BOT_TOKEN=\"<hidden"), "{text}");
    assert!(text.contains("a bot token as BotFather gives it"), "{text}");
    assert!(text.contains("TELEGRAM_CHAT_ID=\"<hidden"), "{text}");
    assert!(!text.contains("very"), "{text}");
}

#[test]
fn otel_rust_log_and_codex_home_may_come_from_config_toml() {
    let dir = project_dir();
    std::fs::create_dir_all(dir.path().join("codex")).unwrap();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        format!(
            "otel_exporter_otlp_endpoint = \"http://collector:4318/\"\notel_service_name = \"svc\"\notel_exporter_otlp_headers = \"authorization=Bearer%20t\"\notel_resource_attributes = \"team=core\"\nrust_log = \"samocode=debug\"\ncodex_home = \"{}\"\nstrip_env = [\"AWS_*\"]\n",
            dir.path().join("codex").display()
        ),
    )
    .unwrap();
    let s = sources(
        dir.path(),
        &[
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("ANTHROPIC_API_KEY", "k"),
            ("TELEGRAM_API_URL", "http://127.0.0.1:1"),
        ],
    );
    let config = resolve(&Flags::default(), &s).unwrap();
    assert_eq!(
        config.otlp_traces.as_ref().map(|t| t.endpoint.as_str()),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(config.otel_service_name, "svc");
    assert_eq!(
        config.otlp_headers.0,
        [("authorization".to_string(), "Bearer t".to_string())]
    );
    assert_eq!(format!("{:?}", config.otlp_headers), "[\"authorization\"]");
    assert_eq!(config.otel_resource, [("team".into(), "core".into())]);
    assert_eq!(config.log_filter.as_deref(), Some("samocode=debug"));
    assert_eq!(config.codex_home, Some(dir.path().join("codex")));
    assert_eq!(config.codex_home_origin, Some("config.toml"));
    // The agent gets CODEX_HOME from the file, its API key, and no AWS secret or Telegram URL;
    // a codex agent only is given CODEX_HOME (a claude agent got it too).
    assert_eq!(
        config.agent.env.names(),
        ["ANTHROPIC_API_KEY", "CODEX_HOME", "HOME"]
    );
    assert_eq!(
        config.agent.env.of(Provider::Claude).names(),
        ["ANTHROPIC_API_KEY", "HOME"]
    );
    assert!(
        config
            .agent
            .env
            .of(Provider::Codex)
            .names()
            .contains(&"CODEX_HOME")
    );

    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "rust_log = \"samocode=[\"\notel_exporter_otlp_protocol = \"http/xml\"\nstrip_env = [\"A B\"]\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(
        text.contains("rust_log=\"samocode=[\" (from config.toml)"),
        "{text}"
    );
    assert!(
        text.contains("otel_exporter_otlp_protocol=\"http/xml\""),
        "{text}"
    );
    assert!(text.contains("strip_env=\"A B\""), "{text}");
    // A number is shown as it was written: not as text, which would read as the mistake.
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "max_parallel = -1\nretry_delay = true\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(
        text.contains("max_parallel=-1 (from config.toml)")
            && text.contains("retry_delay=true (from config.toml)"),
        "{text}"
    );
}

#[test]
fn grpc_takes_the_general_endpoint_as_it_is_and_only_in_plaintext() {
    let dir = project_dir();
    let config = |env: &[(&str, &str)]| resolve(&Flags::default(), &sources(dir.path(), env));
    let grpc = config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
    ])
    .unwrap();
    let grpc_export = |gzip| OtlpExport {
        endpoint: "http://collector:4317".into(),
        protocol: OtlpProtocol::Grpc,
        timeout: Some(Duration::from_millis(2500)),
        gzip,
    };
    assert_eq!(grpc.otlp_traces, Some(grpc_export(false)));
    assert_eq!(grpc.otlp_metrics, Some(grpc_export(true)));
    // Each signal may choose its own protocol; the general endpoint follows each one.
    let mixed = config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
    ])
    .unwrap();
    let traces = mixed.otlp_traces.unwrap();
    assert_eq!(traces.endpoint, "http://collector:4317");
    assert_eq!(traces.timeout, None);
    let metrics = mixed.otlp_metrics.unwrap();
    assert_eq!(metrics.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(metrics.endpoint, "http://collector:4317/v1/metrics");
    let text = error_text(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=x"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_BSP_SCHEDULE_DELAY", "abc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ],
        &Flags::default(),
    );
    for name in [
        "OTEL_BSP_SCHEDULE_DELAY=\"abc\"",
        "OTEL_METRIC_EXPORT_INTERVAL=\"0\"",
    ] {
        assert!(text.contains(name), "{text}");
    }
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=\"10s\"") && text.contains("milliseconds"),
        "{text}"
    );
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_COMPRESSION=\"zstd\"") && text.contains("gzip or none"),
        "{text}"
    );
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_ENDPOINT=\"https://collector:4317\"")
            && text.contains("gRPC export is plaintext"),
        "{text}"
    );
    assert!(text.contains("HTTP headers can carry"), "{text}");
}

#[test]
fn configuration_files_that_are_not_text_name_themselves() {
    let dir = project_dir();
    std::fs::write(dir.path().join(".samocode"), b"MAIN_REPO=\xff\xfe\n").unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(text.contains(".samocode is not UTF-8 text"), "{text}");
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=sessions\nBASE_BRANCH=ma\0in\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(
        text.contains("BASE_BRANCH=\"ma\\\\0in\" is not valid: expected text without NUL bytes"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "claude_model = \"op\\u0000us\"\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(
        text.contains("claude_model=") && text.contains("expected text without NUL bytes"),
        "{text}"
    );
}

#[test]
fn budgets_come_from_flags_env_and_file_and_bad_ones_name_key_value_and_source() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "max_cost = 20\nmax_time = \"8h\"\nfleet_max_cost = 100.5\n[prices.\"my-model\"]\ninput = 1\noutput = 2\n",
    )
    .unwrap();
    let s = sources(dir.path(), &[("SAMOCODE_MAX_ITERATIONS", "60")]);
    let mut flags = Flags::default();
    flags.budget.max_cost = Some("7.5".into());
    let config = resolve(&flags, &s).unwrap();
    let budgets = &config.budgets;
    assert_eq!(budgets.defaults.cost_usd, Some(20.0));
    assert_eq!(budgets.defaults.iterations, Some(60));
    assert_eq!(budgets.defaults.time_secs, Some(8 * 3600));
    assert_eq!(
        budgets.given.cost_usd,
        Some(7.5),
        "the flag is the session's own"
    );
    assert_eq!(budgets.given.iterations, None);
    assert_eq!(budgets.fleet_cost_usd, Some(100.5));
    assert!(budgets.prices.get("my-model").is_some());
    // A claude model's full name is priced as its family, unless the table names it.
    let sonnet = budgets.prices.get("sonnet").copied();
    assert!(sonnet.is_some());
    assert_eq!(
        budgets.prices.get("claude-sonnet-4-5-20250929").copied(),
        sonnet
    );
    assert_eq!(budgets.prices.get("my-sonnet-model"), None);

    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "max_cost = 0\nmax_time = \"5s\"\n",
    )
    .unwrap();
    let mut flags = Flags::default();
    flags.budget.max_iterations = Some("lots".into());
    flags.budget.fleet_max_cost = Some("-3".into());
    let text = error_text(dir.path(), &[], &flags);
    assert!(text.contains("4 problems"), "{text}");
    assert!(
        text.contains(
            "max_cost=0 (from config.toml) is not valid: expected an amount of US dollars"
        ),
        "{text}"
    );
    assert!(
        text.contains("max_time=\"5s\" (from config.toml)"),
        "{text}"
    );
    assert!(
        text.contains("--max-iterations=\"lots\" (from the command line) is not valid: expected a whole number of iterations"),
        "{text}"
    );
    assert!(text.contains("--fleet-max-cost=\"-3\""), "{text}");
}

/// A misspelt key of a price table is named with the key it was meant to be, and the table is
/// not also said to lack that price.
#[test]
fn a_misspelt_price_key_is_named_with_the_nearest_one() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "[prices.third]\ninptu = 1\noutput = 2\n[prices.fourth]\nprice = 1\noutput = 2\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(text.contains("3 problems"), "{text}");
    assert!(
        text.contains("config.toml [prices.third]: unknown setting \"inptu\"; did you mean input?"),
        "{text}"
    );
    assert!(
        text.contains("unknown setting \"price\"; did you mean input, output or cached_input?"),
        "{text}"
    );
    // "price" was not meant as input: the table lacks its input price, and is told so.
    assert_eq!(text.matches("both input and output").count(), 1, "{text}");
    assert!(text.contains("prices.fourth"), "{text}");
    // A misspelt input where the output is missing too: both are said.
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "[prices.fifth]\ninptu = 1\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(text.contains("did you mean input?"), "{text}");
    assert!(text.contains("both input and output"), "{text}");
    // A table named after no model, and a cached price above the input price: slips.
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "[prices.\"\"]\ninput = 1\noutput = 2\n[prices.sixth]\ninput = 1\noutput = 2\ncached_input = 5\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(text.contains("2 problems"), "{text}");
    assert!(text.contains("a table named after a model"), "{text}");
    assert!(
        text.contains("prices.sixth.cached_input") && text.contains("at most the input price"),
        "{text}"
    );
}

#[test]
fn a_relative_path_in_config_toml_means_one_place_wherever_a_command_runs() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "state_dir = \"mystate\"\nhttp_token_file = \"token\"\n",
    )
    .unwrap();
    let config_dir = dir.path().join("home/.config/samocode");
    for cwd in [dir.path().to_path_buf(), dir.path().join("sub/deeper")] {
        let mut s = sources(dir.path(), &[]);
        s.cwd = cwd;
        let config = resolve(&Flags::default(), &s).unwrap();
        assert_eq!(config.state_dir, config_dir.join("mystate"));
        assert_eq!(
            config.control_socket,
            config_dir.join("mystate/control.sock")
        );
        assert_eq!(config.http_token_file, Some(config_dir.join("token")));
    }
    // The same setting in the environment is taken from the working directory.
    let mut s = sources(dir.path(), &[("SAMOCODE_STATE_DIR", "here")]);
    s.cwd = dir.path().join("sub");
    let config = resolve(&Flags::default(), &s).unwrap();
    assert_eq!(config.state_dir, dir.path().join("sub/here"));
}

#[test]
fn a_secret_pasted_where_its_file_belongs_is_never_shown() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "executor = \"nats\"\nnats_url = \"nats://127.0.0.1:1\"\nnats_nkey_file = \"SUASECRETSEED\"\n",
    )
    .unwrap();
    let error = refused(&sources(dir.path(), &[]));
    assert!(error.contains("nats_nkey_file"), "{error}");
    assert!(!error.contains("SUASECRETSEED"), "{error}");
}

/// A build without the Kubernetes engine refuses it as a setting (exit 2, which restart
/// policies do not retry), not as a failed start.
#[cfg(not(feature = "kube"))]
#[test]
fn the_kubernetes_engine_in_a_build_without_it_is_a_bad_setting() {
    let dir = project_dir();
    let s = sources(
        dir.path(),
        &[
            ("SAMOCODE_EXECUTOR", "kubernetes"),
            ("SAMOCODE_KUBE_IMAGE", "x"),
        ],
    );
    let error = refused(&s);
    assert!(
        error.contains("SAMOCODE_EXECUTOR=\"kubernetes\"") && error.contains("--features kube"),
        "{error}"
    );
}

#[test]
fn a_misspelt_setting_in_the_environment_is_named_with_the_setting_it_misses() {
    let dir = project_dir();
    let s = sources(
        dir.path(),
        &[
            ("SAMOCODE_MAX_COSTS", "1"),
            ("SAMOCODE_KILLGRACE", "5s"),
            ("SAMOCODE_MAX_RETRY", "5"),
            // Names people guess: the agent's setting, without MAX_, a letter off.
            ("SAMOCODE_TIMEOUT", "5m"),
            ("SAMOCODE_PARALLEL", "2"),
            ("SAMOCODE_RETRIES", "2"),
            ("SAMOCODE_MAXCOST", "3"),
            ("TELEGRAM_API_URI", "http://127.0.0.1:1"),
            ("TELEGRAM_ALLOWED_USER", "1"),
            // Not near any setting: samocode's own markers, a test agent's, or someone else's.
            ("SAMOCODE_SESSION", "x"),
            ("SAMOCODE_FAKE_STEPS", "2"),
            ("SAMOCODE_SOMETHING_ELSE_ENTIRELY", "1"),
            // Other words, though a few letters from a setting's.
            ("SAMOCODE_HOME", "/x"),
            ("SAMOCODE_VERSION", "3"),
            ("SAMOCODE_PROFILE", "x"),
            ("SAMOCODE_PATH", "x"),
        ],
    );
    let error = refused(&s);
    assert!(
        error.contains("\"SAMOCODE_MAX_COSTS\"; did you mean SAMOCODE_MAX_COST (or unset"),
        "{error}"
    );
    assert!(
        error.contains("\"SAMOCODE_KILLGRACE\"; did you mean SAMOCODE_KILL_GRACE (or unset"),
        "{error}"
    );
    assert!(
        error.contains("\"SAMOCODE_MAX_RETRY\"; did you mean SAMOCODE_MAX_RETRIES (or unset"),
        "{error}"
    );
    for (guess, meant) in [
        ("SAMOCODE_TIMEOUT", "CLAUDE_TIMEOUT"),
        ("SAMOCODE_PARALLEL", "SAMOCODE_MAX_PARALLEL"),
        ("SAMOCODE_RETRIES", "SAMOCODE_MAX_RETRIES"),
        ("SAMOCODE_MAXCOST", "SAMOCODE_MAX_COST"),
        ("TELEGRAM_API_URI", "TELEGRAM_API_URL"),
        ("TELEGRAM_ALLOWED_USER", "TELEGRAM_ALLOWED_USERS"),
    ] {
        assert!(
            error.contains(&format!("\"{guess}\"; did you mean {meant} (or unset")),
            "{guess}: {error}"
        );
    }
    assert!(error.starts_with("9 problems"), "{error}");
}

#[test]
fn without_a_home_the_state_directory_must_be_named() {
    let dir = project_dir();
    let mut s = sources(dir.path(), &[]);
    s.env.remove("HOME");
    let error = refused(&s);
    assert!(
        error.contains("no state directory") && error.contains("SAMOCODE_STATE_DIR"),
        "{error}"
    );
    s.env
        .insert("SAMOCODE_STATE_DIR".into(), "/var/lib/x".into());
    assert_eq!(
        resolve(&Flags::default(), &s).unwrap().state_dir,
        PathBuf::from("/var/lib/x")
    );
}

/// A relative HOME or XDG_STATE_HOME (`HOME=.` in a service file) made a state directory
/// relative to wherever a command ran: a daemon and the commands to it each had their own.
#[test]
fn a_relative_home_places_no_state_directory() {
    let dir = project_dir();
    let mut s = sources(dir.path(), &[]);
    s.env.insert("HOME".into(), "home".into());
    s.env.insert("XDG_STATE_HOME".into(), ".state".into());
    let error = refused(&s);
    assert!(
        error.contains("no state directory") && error.contains("absolute"),
        "{error}"
    );
    s.env.insert("XDG_STATE_HOME".into(), "/srv/state".into());
    assert_eq!(
        resolve(&Flags::default(), &s).unwrap().state_dir,
        PathBuf::from("/srv/state/samocode")
    );
}

#[test]
fn worktrees_and_sessions_in_one_folder_are_refused() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=./wt/\n",
    )
    .unwrap();
    let error = refused(&sources(dir.path(), &[]));
    assert!(
        error.contains("SESSIONS") && error.contains("other than WORKTREES"),
        "{error}"
    );
}

#[test]
fn keeping_one_of_samocodes_own_variables_for_agents_is_refused() {
    let dir = project_dir();
    let s = sources(
        dir.path(),
        &[("SAMOCODE_KEEP_ENV", "BUILD_FLAVOUR,TELEGRAM_BOT_TOKEN")],
    );
    let error = refused(&s);
    assert!(
        error.contains("SAMOCODE_KEEP_ENV (from the environment) names TELEGRAM_BOT_TOKEN:")
            && error.contains("never reach an agent"),
        "{error}"
    );
    for own in ["TELEGRAM*", "SAMOCODE_*", "RUST_LOG"] {
        let s = sources(dir.path(), &[("SAMOCODE_KEEP_ENV", own)]);
        assert!(resolve(&Flags::default(), &s).is_err(), "{own} accepted");
    }
    let fine = sources(
        dir.path(),
        &[("SAMOCODE_KEEP_ENV", "BUILD_FLAVOUR,MYCORP_*")],
    );
    assert!(resolve(&Flags::default(), &fine).is_ok());
    // From config.toml, the key is named as it is written there.
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "keep_env = [\"RUST_LOG\"]\n",
    )
    .unwrap();
    let error = refused(&sources(dir.path(), &[]));
    assert!(
        error.contains("keep_env (from config.toml) names RUST_LOG:"),
        "{error}"
    );
}

#[test]
fn an_environment_name_used_as_a_config_toml_key_is_pointed_to_the_key() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "samocode_max_retries = 4\n",
    )
    .unwrap();
    let error = refused(&sources(dir.path(), &[]));
    assert!(error.contains("did you mean max_retries?"), "{error}");
}

/// The message of a configuration `resolve` refuses.
fn refused(sources: &Sources) -> String {
    resolve(&Flags::default(), sources).unwrap_err().to_string()
}

/// A broken `.samocode` where a command runs (a link to nothing, a pipe) was passed over, and
/// the parent folder's project taken without a word; a `config.toml` link to nothing read as
/// no settings (a cost budget dropped). Each is refused by its name.
#[test]
fn a_broken_project_file_or_config_link_is_refused_not_passed_over() {
    let dir = project_dir();
    let sub = dir.path().join("sub");
    std::os::unix::fs::symlink("/nonexistent/.samocode", sub.join(".samocode")).unwrap();
    let error = refused(&sources(&sub, &[]));
    assert!(
        error.contains(&format!("{}/.samocode is a link to", sub.display())),
        "{error}"
    );
    let config = dir.path().join("home/.config/samocode/config.toml");
    std::os::unix::fs::symlink("/nonexistent/real.toml", &config).unwrap();
    let error = refused(&sources(dir.path(), &[]));
    assert!(
        error.contains("config.toml is a link to /nonexistent/real.toml, which does not exist"),
        "{error}"
    );
}

/// A project file saved by an editor with a byte-order mark, or written as a shell file with
/// `export`, reads as meant.
#[test]
fn a_project_file_with_a_byte_order_mark_or_export_reads_as_meant() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "\u{feff}MAIN_REPO=repo\r\nexport WORKTREES=wt\r\nSESSIONS=sessions\r\n",
    )
    .unwrap();
    let config = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap();
    let project = config.project.unwrap();
    assert!(project.main_repo.ends_with("repo"), "{project:?}");
    assert!(project.worktrees.ends_with("wt"), "{project:?}");
}

/// `--config` naming a folder, or nothing, is said in those words, with what to give instead.
#[test]
fn config_naming_a_folder_or_nothing_says_so() {
    let dir = project_dir();
    let flags = |path: &str| Flags {
        config: Some(PathBuf::from(path)),
        ..Flags::default()
    };
    let text = error_text(dir.path(), &[], &flags("repo"));
    assert!(
        text.contains("--config") && text.contains("is a folder, and holds no .samocode"),
        "{text}"
    );
    assert!(!text.contains("replace it"), "{text}");
    // A folder that holds one: named.
    let text = error_text(dir.path(), &[], &flags("."));
    assert!(text.contains("give its project file"), "{text}");
    assert!(text.contains("/.samocode"), "{text}");
    let text = error_text(dir.path(), &[], &flags("nope"));
    assert!(
        text.contains("--config") && text.contains("nope") && text.contains("does not exist"),
        "{text}"
    );
    assert!(!text.contains("entity not found"), "{text}");
}

/// A misspelt key of `.samocode` is said with the key it was meant as, not also as missing.
#[test]
fn a_misspelt_project_key_is_not_also_said_missing() {
    let dir = project_dir();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPOS=repo\nWORKTREES=wt\nSESSIONS=sessions\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    assert!(text.contains("did you mean MAIN_REPO?"), "{text}");
    assert!(!text.contains("MAIN_REPO is required"), "{text}");
}

/// A project folder reached through a link to a path that is not UTF-8, or whose path holds a
/// newline, is refused by name: git and the agent's context would be given another path.
#[test]
fn project_folders_whose_real_path_is_not_readable_text_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let latin = dir.path().join(std::ffi::OsStr::from_bytes(b"lat\xe9"));
    let newline = dir.path().join("new\nline");
    for real in [&latin, &newline] {
        for d in ["repo", "wt", "sessions"] {
            std::fs::create_dir_all(real.join(d)).unwrap();
        }
    }
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(&latin, dir.path().join("link")).unwrap();
    std::fs::write(
        dir.path().join(".samocode"),
        "MAIN_REPO=link/repo\nWORKTREES=link/wt\nSESSIONS=new\\nline/sessions\n",
    )
    .unwrap();
    // The newline folder is named through a link as well: a value holds no newline.
    std::os::unix::fs::symlink(&newline, dir.path().join("new\\nline")).unwrap();
    let err = resolve(&Flags::default(), &sources(dir.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MAIN_REPO") && err.contains("is UTF-8"),
        "{err}"
    );
    assert!(err.contains("WORKTREES"), "{err}");
    assert!(
        err.contains("SESSIONS") && err.contains("no control character"),
        "{err}"
    );
}

/// A daemon's setting in `.samocode` (a token, an agent's timeout) or a project's in
/// `config.toml` was refused with "unknown setting …; remove it", not where it belongs; the
/// secret's value is never shown.
#[test]
fn a_setting_in_the_wrong_file_is_told_where_it_belongs() {
    let dir = project_dir();
    let file = dir.path().join(".samocode");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("TELEGRAM_BOT_TOKEN=123:secret-value\nCLAUDE_TIMEOUT=5m\n");
    std::fs::write(&file, text).unwrap();
    std::fs::write(
        dir.path().join("home/.config/samocode/config.toml"),
        "main_repo = \"repo\"\n",
    )
    .unwrap();
    let text = error_text(dir.path(), &[], &Flags::default());
    for expected in [
        "TELEGRAM_BOT_TOKEN is not a setting of this file; it is samocode's own, for every project: set it in the environment, or as telegram_bot_token in config.toml",
        "CLAUDE_TIMEOUT is not a setting of this file; it is samocode's own",
        "main_repo is not a setting of this file; it is a project's: set MAIN_REPO= in the project's .samocode file",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(!text.contains("secret-value"), "{text}");
}
