//! One line of an attempt log as text a person reads: assistant text, tool calls and their
//! results, and the final result with its cost or usage. Reads both claude's stream-json and
//! codex's `--json` events; their event types do not overlap. Lines that are not JSON are shown
//! as they are.

use serde_json::Value;

/// One line of an attempt log as text a person reads; `None` for lines with nothing to show.
pub fn readable(line: &str) -> Option<String> {
    if line.is_empty() {
        return None;
    }
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return Some(line.to_string());
    };
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
    };
    match kind {
        "system" => match event.get("subtype").and_then(Value::as_str) {
            Some("init") => Some(format!(
                "[session {} · model {}]",
                text("/session_id"),
                text("/model")
            )),
            Some("api_retry") => Some(format!(
                "[API error {} ({}); the CLI retries: {} of {}]",
                event.get("error_status").unwrap_or(&Value::Null),
                text("/error"),
                event.get("attempt").unwrap_or(&Value::Null),
                event.get("max_retries").unwrap_or(&Value::Null),
            )),
            _ => None,
        },
        "assistant" | "user" => {
            let blocks = event.pointer("/message/content")?.as_array()?;
            let parts: Vec<String> = blocks.iter().filter_map(|b| block(kind, b)).collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        "result" => Some(format!(
            "[result: {}{} · ${:.4} · {} turns]",
            text("/subtype"),
            if event.get("is_error").and_then(Value::as_bool) == Some(true) {
                format!(" (error: {})", shorten(text("/result"), 300))
            } else {
                String::new()
            },
            event
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            event.get("num_turns").and_then(Value::as_u64).unwrap_or(0)
        )),
        // codex
        "thread.started" => Some(format!("[thread {}]", text("/thread_id"))),
        "item.completed" => codex_item(event.get("item")?),
        "turn.completed" => {
            let tokens = |key: &str| crate::agent::stream::tokens(&event, key);
            Some(format!(
                "[turn completed · {} tokens in ({} cached) · {} out]",
                tokens("input_tokens"),
                tokens("cached_input_tokens"),
                tokens("output_tokens")
            ))
        }
        "turn.failed" => Some(format!("[turn failed: {}]", text("/error/message"))),
        "error" => Some(format!("[error: {}]", text("/message"))),
        _ => None,
    }
}

/// A finished codex item: a message, a command with its output, an edit, an error.
fn codex_item(item: &Value) -> Option<String> {
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or("");
    match item.get("type")?.as_str()? {
        "agent_message" => Some(text("text").to_string()),
        "reasoning" => Some(format!("({})", shorten(text("text"), 300))),
        "command_execution" => {
            let exit = item
                .get("exit_code")
                .and_then(Value::as_i64)
                .map(|code| format!(" (exit {code})"))
                .unwrap_or_default();
            Some(format!(
                "→ shell {}\n← {}{exit}",
                shorten(text("command"), 300),
                shorten(text("aggregated_output").trim_end(), 300)
            ))
        }
        "file_change" => {
            let paths: Vec<&str> = item
                .get("changes")?
                .as_array()?
                .iter()
                .filter_map(|c| c.get("path").and_then(Value::as_str))
                .collect();
            Some(format!("→ edit {}", paths.join(", ")))
        }
        "mcp_tool_call" => Some(format!("→ {}.{}", text("server"), text("tool"))),
        "error" => Some(format!("[error: {}]", text("message"))),
        _ => None,
    }
}

fn block(kind: &str, block: &Value) -> Option<String> {
    match block.get("type")?.as_str()? {
        "text" => Some(block.get("text")?.as_str()?.to_string()),
        "tool_use" => Some(format!(
            "→ {} {}",
            block.get("name")?.as_str()?,
            shorten(
                &block.get("input").map(Value::to_string).unwrap_or_default(),
                300
            )
        )),
        "tool_result" if kind == "user" => {
            let content = match block.get("content")? {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("← {}", shorten(&content, 300)))
        }
        _ => None,
    }
}

pub use crate::protocol::shorten;

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn claude_lines_read_as_text_tool_calls_and_result() {
        let lines = [
            r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-x"}"#,
            r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"error_status":529,"error":"overloaded"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Looking."},{"type":"tool_use","name":"Bash","input":{"command":"ls"}}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"README.md"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.0105,"num_turns":2}"#,
        ];
        let shown: Vec<String> = lines.iter().filter_map(|l| readable(l)).collect();
        assert_eq!(
            shown,
            [
                "[session s-1 · model claude-x]",
                "[API error 529 (overloaded); the CLI retries: 1 of 2]",
                "Looking.\n→ Bash {\"command\":\"ls\"}",
                "← README.md",
                "[result: success · $0.0105 · 2 turns]",
            ]
        );
    }

    #[test]
    fn codex_lines_read_as_text_commands_and_usage() {
        let lines = [
            r#"{"type":"thread.started","thread_id":"t-1"}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.started","item":{"id":"i1","type":"command_execution","command":"ls","status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"i1","type":"command_execution","command":"ls","aggregated_output":"README.md\n","exit_code":0}}"#,
            r#"{"type":"item.completed","item":{"id":"i2","type":"agent_message","text":"Done."}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":2000,"cached_input_tokens":400,"output_tokens":300}}"#,
            r#"{"type":"error","message":"Reconnecting... 1/1"}"#,
            r#"{"type":"turn.failed","error":{"message":"unexpected status 401"}}"#,
        ];
        let shown: Vec<String> = lines.iter().filter_map(|l| readable(l)).collect();
        assert_eq!(
            shown,
            [
                "[thread t-1]",
                "→ shell ls\n← README.md (exit 0)",
                "Done.",
                "[turn completed · 2000 tokens in (400 cached) · 300 out]",
                "[error: Reconnecting... 1/1]",
                "[turn failed: unexpected status 401]",
            ]
        );
    }
}
