//! The real codex CLI under samocode.

use super::agents::{use_codex, walk_through_gates};

#[test]
fn codex_walks_a_session_through_both_gates() {
    let (server, project, s, rows) = walk_through_gates(use_codex, "health");
    for row in &rows {
        assert_eq!(row["provider"], "codex");
        // The attempt log is the CLI's own JSONL: the thread, the command it ran for the
        // server's function call, the closing message and the turn's usage.
        let log = s.read(row["log"].as_str().unwrap());
        for needle in [
            r#""type":"thread.started""#,
            r#""type":"command_execution""#,
            r#""type":"agent_message""#,
            r#""type":"turn.completed""#,
        ] {
            assert!(log.contains(needle), "{needle} in {}:\n{log}", row["log"]);
        }
    }
    // The context went on standard input: the first request of each attempt carries it.
    let contexts = server
        .requests()
        .iter()
        .filter(|r| {
            r.path.starts_with("/v1/responses") && r.body.to_string().contains("Session path: ")
        })
        .count();
    assert!(
        contexts >= rows.len(),
        "{contexts} requests carried a context"
    );

    let status = project.run(&["status", "--json"]);
    status.expect(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_eq!(status[0]["state"], "done");
    assert!(
        status[0]["input_tokens"].as_u64().unwrap() >= 16_000,
        "{}",
        status[0]
    );

    // `logs` shows the newest attempt readably: the command, its output, the usage.
    let logs = project.run(&["logs", "health"]);
    logs.expect(0);
    for needle in [
        "[thread ",
        "→ shell ",
        "(exit 0)",
        "The samocode iteration is done.",
        "[turn completed · 2000 tokens in",
    ] {
        assert!(
            logs.stdout().contains(needle),
            "{needle} in\n{}",
            logs.stdout()
        );
    }
}
