//! `samocode logs SESSION [--follow]`: the newest attempt's output, readably: assistant text,
//! tool calls and their results, and the final result with its cost.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{CliError, exit};
use crate::config::Config;
use crate::session::{SessionFolder, name};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The session name.
    pub session: String,
    /// Keep printing as the attempt writes, and move on to newer attempts.
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn logs(args: LogsArgs, config: &Config) -> Result<u8, CliError> {
    let project = config.project()?;
    let folder = SessionFolder::new(name::resolve_existing(&project.sessions, &args.session)?);
    let Some(mut path) = folder.latest_log() else {
        println!("{} has no attempt logs yet", folder.name());
        return Ok(exit::DONE);
    };
    let mut offset = 0usize;
    let mut pending = String::new();
    println!("== {}", path.display());
    loop {
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.len() > offset {
            pending.push_str(&String::from_utf8_lossy(&bytes[offset..]));
            offset = bytes.len();
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if let Some(text) = readable(line.trim()) {
                    println!("{text}");
                }
            }
            let _ = std::io::stdout().flush();
        }
        if !args.follow {
            if let Some(text) = readable(pending.trim()) {
                println!("{text}");
            }
            return Ok(exit::DONE);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(newer) = folder.latest_log().filter(|p| p != &path) {
            path = newer;
            offset = 0;
            pending.clear();
            println!("== {}", path.display());
        }
    }
}

/// One stream-json line as text a person reads; `None` for lines with nothing to show.
pub fn readable(line: &str) -> Option<String> {
    if line.is_empty() {
        return None;
    }
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return Some(line.to_string());
    };
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "system" => Some(format!(
            "[session {} · model {}]",
            event
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            event.get("model").and_then(Value::as_str).unwrap_or("?")
        )),
        "assistant" | "user" => {
            let blocks = event.pointer("/message/content")?.as_array()?;
            let parts: Vec<String> = blocks.iter().filter_map(|b| block(kind, b)).collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        "result" => Some(format!(
            "[result: {}{} · ${:.4} · {} turns]",
            event.get("subtype").and_then(Value::as_str).unwrap_or("?"),
            if event.get("is_error").and_then(Value::as_bool) == Some(true) {
                " (error)"
            } else {
                ""
            },
            event
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            event.get("num_turns").and_then(Value::as_u64).unwrap_or(0)
        )),
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

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}
