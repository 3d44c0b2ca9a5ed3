//! samocode-bench-agent: the smallest agent that speaks the samocode protocol, for the
//! benchmarks (benches/perf.rs). It does no work: it reads the session path and phase from the
//! context samocode gives it (as claude gets it: `--append-system-prompt`, or a file that
//! argument points to), writes `_signal.json`, prints one stream-json result line, and exits.
//! What it costs is the floor the orchestrator is measured against.
//!
//! Its environment steers it: `BENCH_STEPS` (implementation iterations before moving on to
//! quality, then done; 0: stay in implementation for ever), `BENCH_SLEEP_MS` (sleep first;
//! with `BENCH_SLEEP_MATCH`, only in sessions whose path contains that text),
//! `BENCH_FLOOD_MB` (print that many megabytes of stream-json first), `BENCH_TIMES` (append
//! one line `SESSION START_NS EXIT_NS` per run, wall-clock nanoseconds, to this file). In
//! planning it signals waiting for `plan_approval`.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Appends this run's line to the times file, in one write so concurrent agents do not mix.
fn stamp(file: &Option<String>, session: &str, started: u128) {
    if let Some(file) = file
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
    {
        let name = session.rsplit('/').next().unwrap_or(session);
        let _ = f.write_all(format!("{name} {started} {}\n", now_ns()).as_bytes());
    }
}

fn header<'a>(context: &'a str, key: &str) -> Option<&'a str> {
    context
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

fn main() {
    let started = now_ns();
    let times = std::env::var("BENCH_TIMES").ok();
    let args: Vec<String> = std::env::args().collect();
    let Some(value) = args
        .iter()
        .position(|a| a == "--append-system-prompt")
        .and_then(|i| args.get(i + 1))
    else {
        eprintln!("bench-agent: no --append-system-prompt");
        std::process::exit(2);
    };
    let context = if header(value, "Session path").is_some() {
        value.clone()
    } else {
        let path = value
            .split("in the file ")
            .nth(1)
            .and_then(|r| r.split(". Read").next())
            .unwrap_or("");
        std::fs::read_to_string(path).unwrap_or_default()
    };
    let (Some(session), Some(phase)) =
        (header(&context, "Session path"), header(&context, "Phase"))
    else {
        eprintln!("bench-agent: the context names no session or phase");
        std::process::exit(2);
    };
    let number = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let sleeps = std::env::var("BENCH_SLEEP_MATCH").map_or(true, |m| session.contains(&m));
    if let Some(ms) = number("BENCH_SLEEP_MS").filter(|_| sleeps) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut out = std::io::stdout().lock();
    if let Some(mb) = number("BENCH_FLOOD_MB") {
        let line = format!(
            "{{\"type\":\"assistant\",\"message\":{{\"role\":\"assistant\",\"content\":[{{\"type\":\"text\",\"text\":\"{}\"}}]}}}}\n",
            "x".repeat(900)
        );
        let mut written = 0u64;
        while written < mb << 20 {
            let _ = out.write_all(line.as_bytes());
            written += line.len() as u64;
        }
    }
    let in_phase: u64 = header(&context, "Iteration")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let steps = number("BENCH_STEPS").unwrap_or(0);
    let signal = match phase {
        "implementation" if steps == 0 || in_phase < steps => {
            r#"{"status":"continue","phase":"implementation"}"#
        }
        "implementation" | "testing" => r#"{"status":"continue","phase":"quality"}"#,
        "quality" => r#"{"status":"continue","phase":"done"}"#,
        "done" => r#"{"status":"done","phase":"done","summary":"bench"}"#,
        // A plan, for a person to approve: how the latency bench's gates reach their gate.
        "planning" => r#"{"status":"waiting","phase":"planning","for":"plan_approval"}"#,
        _ => {
            r#"{"status":"blocked","phase":"investigation","reason":"the bench agent runs from planning or implementation on","needs":"human_decision"}"#
        }
    };
    if let Err(error) = std::fs::write(format!("{session}/_signal.json"), signal) {
        eprintln!("bench-agent: cannot write the signal: {error}");
        std::process::exit(1);
    }
    let _ = writeln!(
        out,
        r#"{{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok","total_cost_usd":0.001,"usage":{{"input_tokens":10,"output_tokens":2}}}}"#
    );
    let _ = out.flush();
    drop(out);
    stamp(&times, session, started);
}
