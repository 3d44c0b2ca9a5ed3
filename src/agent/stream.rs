//! Claude Code's `--output-format stream-json`: one JSON object per line. Only the events the
//! worker needs are read (the init event's session id and model, the result event's cost,
//! usage and error flag); every line, read or not, goes to the attempt log untouched.

use serde_json::Value;

use crate::protocol::Usage;

/// An event the worker acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `{"type":"system","subtype":"init",...}`
    Init {
        session_id: Option<String>,
        model: Option<String>,
    },
    /// `{"type":"result",...}`: the last event of a run.
    Result(RunResult),
    /// A message of the agent's (Codex's `agent_message`); the last one is the run's text
    /// when the result carries none.
    Text(String),
    /// An error the agent reported without ending the run (Codex's `error` event).
    Error(String),
}

/// The result event of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunResult {
    pub is_error: bool,
    pub subtype: Option<String>,
    pub text: Option<String>,
    pub session_id: Option<String>,
    /// The HTTP status of the provider's error, when the CLI names it (claude's
    /// `api_error_status`).
    pub api_status: Option<u16>,
    /// Tool calls the CLI refused for want of permission (claude's `permission_denials`).
    pub denied: usize,
    pub usage: Usage,
}

/// A token count from an event's `usage` object; 0 when it is not there.
pub fn tokens(event: &Value, key: &str) -> u64 {
    event
        .get("usage")
        .and_then(|usage| usage.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// The top-level `type` of an event line, read without building the object: the lines the
/// worker skips (the agent's messages and tool results) are most of the output and often
/// large. `None` for a line that is not a JSON object.
pub fn event_type(line: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Head>(line) {
        Ok(head) => head.kind,
        Err(_) => {
            let mended = mended(line)?;
            let kind = serde_json::from_slice::<Head>(&mended).ok()?.kind?;
            Some(std::borrow::Cow::Owned(kind.into_owned()))
        }
    }
}

/// An event line as a JSON value. A line JSON's grammar allows but a strict reader refuses
/// (a lone surrogate escape, `\ud83d`, which a JavaScript CLI writes for an emoji cut in
/// half), or with bytes that are not UTF-8, is read with those replaced by U+FFFD: one bad
/// character in an agent's result text must not cost the attempt its usage and cost.
pub fn value_of<T: serde::de::DeserializeOwned>(line: &[u8]) -> Option<T> {
    match serde_json::from_slice(line) {
        Ok(value) => Some(value),
        Err(_) => serde_json::from_slice(&mended(line)?).ok(),
    }
}

/// `line` with its bytes that are not UTF-8 and its lone surrogate escapes replaced by
/// U+FFFD; `None` when it has neither (it is bad JSON some other way).
fn mended(line: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(line);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let bytes = text.as_bytes();
    let hex = |at: usize| -> Option<u32> {
        let digits = bytes.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            // Another escape (`\\`, `\"`): kept whole, so its second byte is not read as one.
            out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
            i += 2;
            continue;
        }
        match hex(i + 2) {
            Some(0xD800..=0xDBFF)
                if bytes.get(i + 6..i + 8) == Some(b"\\u")
                    && matches!(hex(i + 8), Some(0xDC00..=0xDFFF)) =>
            {
                out.extend_from_slice(&bytes[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                changed = true;
                i += 6;
            }
            _ => {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
            }
        }
    }
    changed.then_some(out)
}

/// The longest identifier (a session id, a model name) taken from an agent's output: the
/// CLIs' own are UUIDs and short names. A longer one is not taken: it would be kept in
/// `_state.json` and every journal row, which must stay small enough to be read back.
pub const IDENTIFIER_MAX: usize = 200;

/// The identifier at `key` of an event: a string of at most [`IDENTIFIER_MAX`] bytes without
/// control characters, or nothing.
pub fn identifier(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|id| id.len() <= IDENTIFIER_MAX && !id.contains(char::is_control))
        .map(str::to_string)
}

/// Parses one line; `None` for lines that are not JSON or not an event the worker reads.
pub fn parse_line(line: &[u8]) -> Option<StreamEvent> {
    if !matches!(event_type(line)?.as_ref(), "system" | "result") {
        return None;
    }
    let value: Value = value_of(line)?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    match value.get("type")?.as_str()? {
        "system" if value.get("subtype")?.as_str()? == "init" => Some(StreamEvent::Init {
            session_id: identifier(&value, "session_id"),
            model: identifier(&value, "model"),
        }),
        "result" => {
            let tokens = |key: &str| tokens(&value, key);
            Some(StreamEvent::Result(RunResult {
                is_error: value
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                subtype: text("subtype"),
                text: text("result"),
                session_id: identifier(&value, "session_id"),
                api_status: value
                    .get("api_error_status")
                    .and_then(Value::as_u64)
                    .and_then(|status| u16::try_from(status).ok()),
                denied: value
                    .get("permission_denials")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
                usage: Usage {
                    // A cost that cannot be one (negative, not a number) counts as none: it
                    // would lower what the budget sees, or make the state unwritable.
                    cost_usd: value
                        .get("total_cost_usd")
                        .or_else(|| value.get("cost_usd"))
                        .and_then(Value::as_f64)
                        .filter(|usd| usd.is_finite() && *usd >= 0.0)
                        .unwrap_or(0.0),
                    // Cached prompt tokens are input the model read, so they count as input.
                    input_tokens: tokens("input_tokens")
                        .saturating_add(tokens("cache_creation_input_tokens"))
                        .saturating_add(tokens("cache_read_input_tokens")),
                    output_tokens: tokens("output_tokens"),
                    cached_input_tokens: tokens("cache_read_input_tokens"),
                },
            }))
        }
        _ => None,
    }
}

/// The tokens claude's messages report in an attempt log that holds no result event (an
/// attempt stopped at its time limit, or killed): each `assistant` event carries its API
/// message's `usage`, repeated for every content block of the message, so each message id is
/// counted once (its largest figures). `None` when the log reports none, or cannot be read.
pub fn spent_before_result(log: &std::path::Path) -> Option<Usage> {
    use std::collections::HashMap;
    use std::io::BufRead;
    #[derive(serde::Deserialize)]
    struct Event {
        message: Option<Message>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        id: Option<String>,
        usage: Option<Tokens>,
    }
    #[derive(serde::Deserialize, Default, Clone, Copy)]
    struct Tokens {
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        cache_creation_input_tokens: u64,
        #[serde(default)]
        cache_read_input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
    }
    let mut reader = std::io::BufReader::new(std::fs::File::open(log).ok()?);
    let mut by_message: HashMap<String, Tokens> = HashMap::new();
    let mut unnamed = Tokens::default();
    // Lines as the live reader takes them: one longer than it reads (an agent's flood) is
    // skipped without being kept.
    let limit = super::process::MAX_EVENT_LINE;
    let mut line = Vec::new();
    let mut skipping = false;
    let mut next_line = |reader: &mut std::io::BufReader<std::fs::File>| -> Option<Vec<u8>> {
        loop {
            let buf = match reader.fill_buf() {
                Ok([]) | Err(_) => {
                    let last = (!skipping && !line.is_empty()).then(|| std::mem::take(&mut line));
                    skipping = false;
                    line.clear();
                    return last;
                }
                Ok(buf) => buf,
            };
            match buf.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    if !skipping {
                        line.extend_from_slice(&buf[..end]);
                    }
                    reader.consume(end + 1);
                    let whole = !skipping && line.len() <= limit;
                    skipping = false;
                    let taken = std::mem::take(&mut line);
                    if whole {
                        return Some(taken);
                    }
                }
                None => {
                    let len = buf.len();
                    if !skipping {
                        line.extend_from_slice(buf);
                        if line.len() > limit {
                            line = Vec::new();
                            skipping = true;
                        }
                    }
                    reader.consume(len);
                }
            }
        }
    };
    while let Some(line) = next_line(&mut reader) {
        if event_type(line.trim_ascii()).as_deref() != Some("assistant") {
            continue;
        }
        let Ok(Event {
            message:
                Some(Message {
                    id,
                    usage: Some(tokens),
                }),
        }) = value_of::<Event>(line.trim_ascii()).ok_or(())
        else {
            continue;
        };
        let most = |a: Tokens, b: Tokens| Tokens {
            input_tokens: a.input_tokens.max(b.input_tokens),
            cache_creation_input_tokens: a
                .cache_creation_input_tokens
                .max(b.cache_creation_input_tokens),
            cache_read_input_tokens: a.cache_read_input_tokens.max(b.cache_read_input_tokens),
            output_tokens: a.output_tokens.max(b.output_tokens),
        };
        match id {
            Some(id) => {
                let seen = by_message.entry(id).or_default();
                *seen = most(*seen, tokens);
            }
            None => {
                unnamed.input_tokens = unnamed.input_tokens.saturating_add(tokens.input_tokens);
                unnamed.cache_creation_input_tokens = unnamed
                    .cache_creation_input_tokens
                    .saturating_add(tokens.cache_creation_input_tokens);
                unnamed.cache_read_input_tokens = unnamed
                    .cache_read_input_tokens
                    .saturating_add(tokens.cache_read_input_tokens);
                unnamed.output_tokens = unnamed.output_tokens.saturating_add(tokens.output_tokens);
            }
        }
    }
    let mut usage = Usage::default();
    for tokens in by_message.into_values().chain([unnamed]) {
        // As in a result event: cached prompt tokens are input the model read.
        usage.input_tokens = usage
            .input_tokens
            .saturating_add(tokens.input_tokens)
            .saturating_add(tokens.cache_creation_input_tokens)
            .saturating_add(tokens.cache_read_input_tokens);
        usage.cached_input_tokens = usage
            .cached_input_tokens
            .saturating_add(tokens.cache_read_input_tokens);
        usage.output_tokens = usage.output_tokens.saturating_add(tokens.output_tokens);
    }
    (usage.input_tokens > 0 || usage.output_tokens > 0).then_some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_with_a_lone_surrogate_or_a_bad_byte_keeps_its_usage() {
        let line = |text: &[u8]| {
            let mut line = br#"{"type":"result","subtype":"success","result":"step done "#.to_vec();
            line.extend_from_slice(text);
            line.extend_from_slice(
                br#"","total_cost_usd":0.25,"usage":{"input_tokens":1200,"output_tokens":300}}"#,
            );
            line
        };
        for text in [
            &br"\ud83d"[..],
            &br"\ude00 and \\ud83d"[..],
            &b"\xff"[..],
            &br"\ud83d\ude00"[..],
        ] {
            let Some(StreamEvent::Result(result)) = parse_line(&line(text)) else {
                panic!(
                    "no result read from {}",
                    String::from_utf8_lossy(&line(text))
                );
            };
            assert_eq!(result.usage.input_tokens, 1200);
            assert_eq!(result.usage.cost_usd, 0.25);
        }
        let Some(StreamEvent::Result(pair)) = parse_line(&line(br"\ud83d\ude00")) else {
            panic!("no result");
        };
        assert_eq!(pair.text.as_deref(), Some("step done \u{1f600}"));
        let Some(StreamEvent::Result(lone)) = parse_line(&line(br"\ud83d")) else {
            panic!("no result");
        };
        assert_eq!(lone.text.as_deref(), Some("step done \u{fffd}"));
        // An escaped backslash before `u` is text, not an escape.
        assert_eq!(mended(br#"{"a":"\\ud83d"}"#), None);
    }

    /// An agent's session id or model is kept in `_state.json` and every journal row: one of
    /// megabytes (or with control characters) is not taken, so the state stays readable.
    #[test]
    fn an_identifier_too_long_to_be_one_is_not_taken() {
        let init = |id: &str| {
            let line = serde_json::json!({"type": "system", "subtype": "init",
                "session_id": id, "model": id});
            match parse_line(line.to_string().as_bytes()) {
                Some(StreamEvent::Init { session_id, model }) => (session_id, model),
                other => panic!("{other:?}"),
            }
        };
        let uuid = "0b6f1c2e-5d4a-4e8f-9a7b-000000004999";
        assert_eq!(init(uuid), (Some(uuid.into()), Some(uuid.into())));
        assert_eq!(init(&"x".repeat(1_500_000)), (None, None));
        assert_eq!(init("id\u{1b}[2K"), (None, None));
        let result = format!(r#"{{"type":"result","session_id":"{}"}}"#, "y".repeat(300));
        let Some(StreamEvent::Result(r)) = parse_line(result.as_bytes()) else {
            panic!("a result")
        };
        assert_eq!(r.session_id, None);
        let thread = format!(
            r#"{{"type":"thread.started","thread_id":"{}"}}"#,
            "z".repeat(300)
        );
        assert!(matches!(
            crate::agent::codex::parse_line(thread.as_bytes()),
            Some(StreamEvent::Init {
                session_id: None,
                ..
            })
        ));
    }

    #[test]
    fn a_cost_that_cannot_be_one_counts_as_none() {
        for cost in ["-100", "null", "\"12\""] {
            let line = format!(
                r#"{{"type":"result","total_cost_usd":{cost},"usage":{{"input_tokens":18446744073709551615,"cache_read_input_tokens":9}}}}"#
            );
            let Some(StreamEvent::Result(r)) = parse_line(line.as_bytes()) else {
                panic!("{line} is a result");
            };
            assert_eq!(r.usage.cost_usd, 0.0, "{line}");
            assert_eq!(r.usage.input_tokens, u64::MAX, "{line}");
        }
    }

    #[test]
    fn the_type_is_the_top_level_one_wherever_it_stands() {
        let message = br#"{"message":{"content":[{"type":"result"}]},"type":"assistant"}"#;
        assert_eq!(event_type(message).as_deref(), Some("assistant"));
        assert_eq!(parse_line(message), None);
        // Last in the object, after nested types, and escaped: still the result.
        let result = br#"{"usage":{"output_tokens":3},"content":[{"type":"x"}],"type":"\u0072esult","result":"ok"}"#;
        let Some(StreamEvent::Result(r)) = parse_line(result) else {
            panic!("no result")
        };
        assert_eq!((r.usage.output_tokens, r.text.as_deref()), (3, Some("ok")));
        for line in [&b"[1,2]"[..], b"not json", b"{\"type\":7}", b"{}"] {
            assert_eq!(parse_line(line), None);
        }
    }

    #[test]
    fn reads_init_and_result() {
        let init = br#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-x","tools":[]}"#;
        assert_eq!(
            parse_line(init),
            Some(StreamEvent::Init {
                session_id: Some("s-1".into()),
                model: Some("claude-x".into())
            })
        );
        let result = br#"{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s-1","total_cost_usd":0.25,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#;
        let Some(StreamEvent::Result(r)) = parse_line(result) else {
            panic!("no result")
        };
        assert_eq!(r.usage.input_tokens, 15);
        assert_eq!(r.usage.output_tokens, 7);
        assert_eq!(r.usage.cost_usd, 0.25);
        assert_eq!(r.subtype.as_deref(), Some("success"));
        assert!(!r.is_error);
        assert_eq!(r.denied, 0);
        let denied = br#"{"type":"result","subtype":"success","is_error":false,"result":"could not","permission_denials":[{"tool_name":"Bash"},{"tool_name":"Write"}]}"#;
        let Some(StreamEvent::Result(r)) = parse_line(denied) else {
            panic!("a result")
        };
        assert_eq!(r.denied, 2);
    }

    #[test]
    fn tokens_before_a_result_count_each_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.jsonl");
        let lines = [
            r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5"}"#,
            // Two content blocks of one message, the usage repeated (the second a little on).
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"a"}],"usage":{"input_tokens":10,"cache_read_input_tokens":1000,"output_tokens":5}}}"#,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use"}],"usage":{"input_tokens":10,"cache_read_input_tokens":1000,"output_tokens":40}}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"x"}]}}"#,
            r#"{"type":"assistant","message":{"id":"m2","usage":{"input_tokens":3,"cache_creation_input_tokens":200,"output_tokens":7}}}"#,
            r#"{"type":"assistant","message":{"id":"m3"}}"#,
            "not json at all",
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let spent = spent_before_result(&log).unwrap();
        assert_eq!(spent.input_tokens, 10 + 1000 + 3 + 200);
        assert_eq!(spent.cached_input_tokens, 1000);
        assert_eq!(spent.output_tokens, 40 + 7);
        assert_eq!(spent.cost_usd, 0.0);
        // A line longer than the live reader reads (a flood) is skipped without being kept,
        // and the lines after it still count.
        let flood = format!(
            r#"{{"type":"assistant","message":{{"id":"m9","usage":{{"output_tokens":1000}}}},"x":"{}"}}"#,
            "x".repeat(super::super::process::MAX_EVENT_LINE)
        );
        std::fs::write(
            &log,
            [lines[1], &flood, lines[4], &"y".repeat(5 << 20)].join("\n"),
        )
        .unwrap();
        let spent = spent_before_result(&log).unwrap();
        assert_eq!(spent.output_tokens, 5 + 7);
        std::fs::write(&log, lines[0]).unwrap();
        assert_eq!(spent_before_result(&log), None);
        assert_eq!(spent_before_result(&dir.path().join("none.jsonl")), None);
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(parse_line(b"not json"), None);
        assert_eq!(parse_line(br#"{"type":"assistant","message":{}}"#), None);
        assert_eq!(parse_line(br#"[1,2]"#), None);
        assert_eq!(parse_line(b""), None);
    }
}
