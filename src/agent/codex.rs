//! The Codex CLI as an agent provider: the command line of one attempt and its `--json` events.
//!
//! `codex exec` reads its prompt from standard input when no prompt argument is given, so the
//! whole context goes there: it is never limited by the 128 KiB cap on one argument and never
//! shows up in a process listing. Where the CLI keeps its own state is `CODEX_HOME`, which the
//! child inherits from samocode's environment like the provider's API key.

use std::path::Path;

use serde_json::Value;

use super::stream::{RunResult, StreamEvent, tokens};
use super::{AgentCommand, PROMPT};
use crate::config::{AgentSettings, Provider};
use crate::protocol::Usage;

/// The command for one attempt: the context, then the user turn, on standard input.
pub fn command(settings: &AgentSettings, context: &str, workdir: &Path) -> AgentCommand {
    let mut args: Vec<String> = [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
    ]
    .map(String::from)
    .to_vec();
    if let Some(model) = &settings.codex_model {
        args.extend(["--model".into(), model.clone()]);
    }
    if let Some(effort) = &settings.effort {
        args.extend(["-c".into(), format!("model_reasoning_effort={effort}")]);
    }
    AgentCommand {
        provider: Provider::Codex,
        program: settings.codex_path.clone(),
        args,
        workdir: workdir.to_path_buf(),
        env: settings.env.of(Provider::Codex),
        stdin: Some(format!("{context}\n\n---\n\n{PROMPT}\n")),
    }
}

/// Parses one line of `codex exec --json`; `None` for lines the worker does not read.
///
/// `thread.started` names the session; an `agent_message` item is the text a run ends with;
/// `turn.completed` carries the usage and ends a successful run; `turn.failed` and `error`
/// report why a run failed (`error` also reports reconnection attempts, so it only records
/// the message and does not end the run).
pub fn parse_line(line: &[u8]) -> Option<StreamEvent> {
    let kind = super::stream::event_type(line)?;
    if !matches!(
        kind.as_ref(),
        "thread.started" | "item.completed" | "turn.completed" | "turn.failed" | "error"
    ) {
        return None;
    }
    let value: Value = super::stream::value_of(line)?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    match value.get("type")?.as_str()? {
        "thread.started" => Some(StreamEvent::Init {
            session_id: super::stream::identifier(&value, "thread_id"),
            model: None,
        }),
        "item.completed" => {
            let item = value.get("item")?;
            (item.get("type")?.as_str()? == "agent_message")
                .then(|| StreamEvent::Text(text(item, "text").unwrap_or_default()))
        }
        "turn.completed" => {
            let tokens = |key: &str| tokens(&value, key);
            Some(StreamEvent::Result(RunResult {
                is_error: false,
                subtype: Some("success".into()),
                text: None,
                session_id: None,
                api_status: None,
                denied: 0,
                // Codex reports cached tokens as a part of input_tokens, not beside it; it
                // prints no price, so the cost stays zero here and the session prices the
                // tokens from its price table (`config::prices`).
                usage: Usage {
                    cost_usd: 0.0,
                    input_tokens: tokens("input_tokens"),
                    output_tokens: tokens("output_tokens"),
                    cached_input_tokens: tokens("cached_input_tokens"),
                },
            }))
        }
        "turn.failed" => Some(StreamEvent::Result(RunResult {
            is_error: true,
            subtype: Some("turn_failed".into()),
            text: value.get("error").and_then(|e| text(e, "message")),
            session_id: None,
            api_status: None,
            denied: 0,
            usage: Usage::default(),
        })),
        "error" => Some(StreamEvent::Error(
            text(&value, "message").unwrap_or_default(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn settings() -> AgentSettings {
        AgentSettings {
            provider: Provider::Codex,
            claude_path: PathBuf::from("claude"),
            claude_model: None,
            claude_max_turns: 300,
            codex_path: PathBuf::from("/bin/codex"),
            codex_model: Some("gpt-x".into()),
            profiles: Default::default(),
            effort: Some("high".into()),
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
            stall_timeout: None,
            env: Default::default(),
        }
    }

    #[test]
    fn the_context_goes_on_standard_input_never_in_an_argument() {
        let big = "x".repeat(300 * 1024);
        let cmd = command(&settings(), &big, Path::new("/w"));
        assert_eq!(
            cmd.args.join(" "),
            "exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --model gpt-x -c model_reasoning_effort=high"
        );
        assert!(cmd.stdin.as_deref().unwrap().starts_with(&big));
        assert!(
            cmd.stdin
                .as_deref()
                .unwrap()
                .ends_with(&format!("{PROMPT}\n"))
        );
        assert_eq!(cmd.program, PathBuf::from("/bin/codex"));
    }

    #[test]
    fn reads_thread_message_usage_and_failures() {
        assert_eq!(
            parse_line(br#"{"type":"thread.started","thread_id":"t-1"}"#),
            Some(StreamEvent::Init {
                session_id: Some("t-1".into()),
                model: None
            })
        );
        assert_eq!(
            parse_line(
                br#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"done"}}"#
            ),
            Some(StreamEvent::Text("done".into()))
        );
        assert_eq!(
            parse_line(
                br#"{"type":"item.completed","item":{"id":"i","type":"command_execution","command":"ls","exit_code":0}}"#
            ),
            None
        );
        let Some(StreamEvent::Result(r)) = parse_line(
            br#"{"type":"turn.completed","usage":{"input_tokens":120,"cached_input_tokens":100,"output_tokens":7}}"#,
        ) else {
            panic!("no result")
        };
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (120, 7));
        assert_eq!(r.usage.cached_input_tokens, 100);
        assert!(!r.is_error);
        let Some(StreamEvent::Result(r)) =
            parse_line(br#"{"type":"turn.failed","error":{"message":"unexpected status 401"}}"#)
        else {
            panic!("no failure")
        };
        assert!(r.is_error);
        assert_eq!(r.text.as_deref(), Some("unexpected status 401"));
        assert_eq!(
            parse_line(br#"{"type":"error","message":"Reconnecting... 1/5"}"#),
            Some(StreamEvent::Error("Reconnecting... 1/5".into()))
        );
        assert_eq!(parse_line(b"not json"), None);
    }
}
