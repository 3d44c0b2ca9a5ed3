//! Where the pinned agent CLIs are, and the environment that points them at the model server.
//!
//! `CLAUDE_PATH` and `CODEX_PATH` name them when set; otherwise they are the binaries of the
//! npm packages in `tests/agents`, installed there with `npm ci` from the committed lockfile
//! when missing (`.ci/run` does this up front).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fixture::{BIN, Project, Session};
use crate::real_cli::server::ModelServer;

/// The folder of the pinned npm packages.
fn packages() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents")
}

/// Installs the pinned packages once per test run if a binary is missing.
fn installed() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = packages();
        let bin = dir.join("node_modules/.bin");
        if !(bin.join("claude").exists() && bin.join("codex").exists()) {
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| {
                    panic!("the real-CLI tests need npm to install tests/agents: {e}")
                });
            assert!(
                out.status.success(),
                "npm ci in {} failed:\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bin
    })
}

fn program(variable: &str, name: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => installed().join(name),
    }
}

/// Points `project` at the real claude CLI talking to `server`.
pub fn use_claude(project: &mut Project, server: &ModelServer) {
    let claude = program("CLAUDE_PATH", "claude");
    project
        .env("CLAUDE_PATH", &claude.display().to_string())
        .env("SAMOCODE_PROVIDER", "claude")
        .env("ANTHROPIC_BASE_URL", &server.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
        // claude refuses --dangerously-skip-permissions as root outside a sandbox.
        .env("IS_SANDBOX", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1");
}

/// Points `project` at the real codex CLI talking to `server`, with its own CODEX_HOME.
pub fn use_codex(project: &mut Project, server: &ModelServer) {
    let codex = program("CODEX_PATH", "codex");
    let home = project.root.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            r#"model_provider = "scripted"
model = "gpt-5.1-codex"

[model_providers.scripted]
name = "scripted model server"
base_url = "{}/v1"
wire_api = "responses"
env_key = "OPENAI_API_KEY"
request_max_retries = 1
stream_max_retries = 1
"#,
            server.base_url()
        ),
    )
    .unwrap();
    project
        .env("CODEX_PATH", &codex.display().to_string())
        .env("CODEX_HOME", &home.display().to_string())
        .env("SAMOCODE_PROVIDER", "codex")
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key");
}

/// A session from `run --dive --task` to done through both gates, as a person would drive
/// it: `run` stops at the questions (10), `answer`, `run` stops at the plan (10), `approve`,
/// `run` finishes (0). One implementation step keeps it short.
pub fn drive_through_gates(project: &mut Project, name: &str) -> Session {
    project.env("SAMOCODE_FAKE_STEPS", "1");
    project
        .run(&[
            "run",
            "--session",
            name,
            "--dive",
            "How are requests handled?",
            "--task",
            "Add a health check",
        ])
        .expect(10);
    project
        .run(&["answer", name, "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", name]).expect(10);
    project.run(&["approve", name]).expect(0);
    let last = project.run(&["run", "--session", name]);
    last.expect(0);
    assert!(last.stdout().contains("done:"), "{}", last.stdout());
    project.session(name)
}

/// [`drive_through_gates`] with the real `cli` on a new project and model server. Checks what
/// both CLIs must show: every attempt ok, one per phase step, with the usage the server
/// reported for two model turns (the tool call, the closing text) and the CLI's session id.
pub fn walk_through_gates(
    cli: fn(&mut Project, &ModelServer),
    name: &str,
) -> (ModelServer, Project, Session, Vec<Value>) {
    let server = ModelServer::start(BIN.as_ref());
    let mut project = Project::new();
    cli(&mut project, &server);
    let session = drive_through_gates(&mut project, name);
    let rows = session.jsonl("_iterations.jsonl");
    let phases: Vec<&str> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(
        phases,
        [
            "investigation",
            "requirements",
            "requirements",
            "planning",
            "implementation",
            "testing",
            "quality",
            "done",
        ]
    );
    for row in &rows {
        assert_eq!(row["outcome"], "ok", "{row}");
        assert!(row["input_tokens"].as_u64().unwrap() >= 2000, "{row}");
        assert!(row["output_tokens"].as_u64().unwrap() >= 300, "{row}");
        assert!(
            row["agent_session_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{row}"
        );
    }
    // The real tool calls did the phase's work: the commit is on the session branch.
    let commits = crate::fixture::git(&project.repo, &["log", "--format=%s", name]);
    assert!(commits.starts_with("Implement step 1\n"), "{commits}");
    (server, project, session, rows)
}
