//! The Anthropic Messages API, streaming: the server-sent events of one assistant message.

use serde_json::{Value, json};

use super::server::{Answer, Fault};

/// The event stream of one message answering `request`.
pub fn stream(request: &Value, answer: &Answer, call: u64) -> String {
    let model = request["model"].as_str().unwrap_or("claude-sonnet-4-5");
    let mut out = String::new();
    let mut event = |value: Value| {
        out.push_str(&format!(
            "event: {}\ndata: {value}\n\n",
            value["type"].as_str().unwrap()
        ));
    };
    event(json!({"type": "message_start", "message": {
        "id": format!("msg_{call}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 1000, "output_tokens": 1}}}));
    let stop_reason = match answer {
        Answer::Tool(command) => {
            event(
                json!({"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": format!("toolu_{call}"), "name": "Bash", "input": {}}}),
            );
            let input = json!({"command": command, "description": "Run the samocode iteration"});
            event(json!({"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": input.to_string()}}));
            "tool_use"
        }
        Answer::Text(text) => {
            event(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}));
            event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}));
            "end_turn"
        }
    };
    event(json!({"type": "content_block_stop", "index": 0}));
    event(
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": 150}}),
    );
    event(json!({"type": "message_stop"}));
    out
}

/// The status line, JSON body and headers of an error answer.
pub fn error(fault: &Fault) -> (&'static str, Value, Vec<(&'static str, String)>) {
    let body = |kind: &str, message: String| json!({"type": "error", "error": {"type": kind, "message": message}});
    match fault {
        Fault::Overloaded => (
            "529 Overloaded",
            body("overloaded_error", "Overloaded".into()),
            vec![],
        ),
        Fault::UsageLimit { reset_at } => (
            "429 Too Many Requests",
            body(
                "rate_limit_error",
                format!("Claude AI usage limit reached|{reset_at}"),
            ),
            vec![
                ("anthropic-ratelimit-unified-status", "rejected".into()),
                ("anthropic-ratelimit-unified-reset", reset_at.to_string()),
                ("x-should-retry", "false".into()),
            ],
        ),
        Fault::BadKey => (
            "401 Unauthorized",
            body("authentication_error", "invalid x-api-key".into()),
            vec![],
        ),
        Fault::Hang | Fault::Garbage => unreachable!("answered by the server itself"),
    }
}
