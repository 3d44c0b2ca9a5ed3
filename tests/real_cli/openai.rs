//! The OpenAI Responses API, streaming: the server-sent events of one response.

use serde_json::{Value, json};

use super::server::{Answer, Fault};

/// The event stream of one response answering `request`.
pub fn stream(request: &Value, answer: &Answer, call: u64) -> String {
    let model = request["model"].as_str().unwrap_or("gpt-5");
    let id = format!("resp_{call}");
    let item = match answer {
        Answer::Tool(command) => json!({
            "type": "function_call", "id": format!("fc_{call}"), "call_id": format!("call_{call}"),
            "name": "exec_command", "status": "completed",
            "arguments": json!({"cmd": command}).to_string()}),
        Answer::Text(text) => json!({
            "type": "message", "id": format!("msg_{call}"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}),
    };
    let mut out = String::new();
    let mut event = |value: Value| {
        out.push_str(&format!(
            "event: {}\ndata: {value}\n\n",
            value["type"].as_str().unwrap()
        ));
    };
    event(json!({"type": "response.created", "response": {
        "id": id, "object": "response", "status": "in_progress", "model": model, "output": []}}));
    event(json!({"type": "response.output_item.added", "output_index": 0, "item": item}));
    event(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    event(json!({"type": "response.completed", "response": {
        "id": id, "object": "response", "status": "completed", "model": model, "output": [item],
        "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 200},
                  "output_tokens": 150, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 1150}}}));
    out
}

/// The status line, JSON body and headers of an error answer.
pub fn error(fault: &Fault) -> (&'static str, Value, Vec<(&'static str, String)>) {
    match fault {
        Fault::Overloaded => (
            "529 Site Overloaded",
            json!({"error": {"type": "server_error", "message": "overloaded"}}),
            vec![],
        ),
        Fault::UsageLimit { reset_at } => (
            "429 Too Many Requests",
            json!({"error": {"type": "usage_limit_reached",
                "message": format!("usage limit reached, resets_at {reset_at}"),
                "resets_at": reset_at}}),
            vec![],
        ),
        Fault::BadKey => (
            "401 Unauthorized",
            json!({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                "message": "Incorrect API key provided"}}),
            vec![],
        ),
        Fault::Hang | Fault::Garbage => unreachable!("answered by the server itself"),
    }
}
