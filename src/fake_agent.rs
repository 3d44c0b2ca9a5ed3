//! The scripted agent: behaves like `claude -p --output-format stream-json` on the samocode
//! protocol, so the demo and the tests run the real worker without a model.
//!
//! It reads the context the worker put in `--append-system-prompt` (or the file that argument
//! points to), does the phase's work for real (artifacts in the session folder, commits in the
//! worktree, questions in `_qa.md`), prints stream-json events, and writes `_signal.json` last.
//!
//! `SAMOCODE_FAKE` makes it misbehave on request: rules `PHASE[@ATTEMPT]=ACTION` separated by
//! `;`, PHASE being a phase name or `*`. Actions: `exit:N` (exit N without a signal), `stray`
//! (write the signal into the working directory, not the session folder), `hang`
//! (leave a grandchild and never exit; `hang:escape-threads` leaves the grandchild of
//! `escape-threads` below instead; it first prints messages with their token usage, as claude
//! does, and no result), `nosignal`, `badjson`, `empty` (`{}`), `signal:JSON`
//! (write that JSON), `flood:MB` (print MB megabytes first), `grandchild` (leave a background
//! process holding stdout, then work normally), `stay` (continue in the same phase), `slow:S`
//! (sleep S seconds first), `touch` (edit the tracked README.md first; `touch+ACTION` edits, then
//! does ACTION), `break-index` (write garbage over the worktree's git index first, so that git
//! cannot read it; `break-index+ACTION` too), `limit:UNIX` (until that
//! unix time, refuse like claude at a usage limit that resets then; work normally after it;
//! `limit-0:UNIX` the same with exit code 0, as `claude -p` may end on an API error),
//! `fifo` (make `_signal.json` a named pipe), `link:TARGET` (make it a symbolic link to
//! TARGET), `huge:MB` (make it a regular file of MB megabytes), `env` (write the environment
//! it was given to `agent-env.txt` in the session folder, then work normally), `twins` (ask
//! two questions both numbered Q1, then work normally), `rounds` (once round 1 is answered, ask
//! a second round, `# Round 2`, whose question is numbered Q1 again, then work normally).
//! Also `escape` (leave a grandchild in a session of its own, out of the agent's process group,
//! holding stdout, then work normally), `escape-threads` (the same, a grandchild whose main
//! thread has exited while its other threads run: a zombie leader, whose `/proc/PID/environ`
//! cannot be read), `limit-in:S` (a usage limit that resets in S seconds), `limit-past:S`
//! (refuse for a usage limit whose reset it names S seconds ago, always: a provider's clock
//! behind),
//! `done-then:ACTION` (work normally, signal written, then end as ACTION does: `exit:N`, or
//! `limit-in:S`, a usage limit met on the closing turn),
//! `chatty:S` (print a line every 0.3 s for S seconds, then work normally), `say:TEXT` (print
//! TEXT as a message and on standard error, then work normally) and `stderr-child` (work
//! normally, then leave a child holding only standard error, close stdout, and exit 0 after
//! 0.3 s).
//! `SAMOCODE_FAKE_CHAOS=P[:SEED]` gives an iteration one of those faults with probability P
//! (see `chaos`). `SAMOCODE_FAKE_PIDS` names a file where it appends the pids of the processes
//! it leaves behind; `SAMOCODE_FAKE_STEPS` is the number of implementation steps (3);
//! `SAMOCODE_FAKE_LINGER=S` has it stay S seconds after printing its result.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::protocol::overview;
use crate::protocol::qa::QaDoc;
use crate::session::context::header_value;

/// Runs the fake agent with claude's arguments; returns the exit code.
pub fn main(args: &[String], env: &HashMap<String, String>) -> u8 {
    // As claude's own stand-in (`-p`), it refuses to start nested in a Claude Code session,
    // as claude did; the worker must have removed CLAUDECODE. (Inside a real CLI's shell tool,
    // where claude sets it on purpose, there is no `-p`.)
    if args.iter().any(|a| a == "-p") && env.contains_key("CLAUDECODE") {
        eprintln!(
            "fake-agent: cannot be launched inside another Claude Code session (CLAUDECODE is set)"
        );
        return 1;
    }
    let Some(context) = read_context(args) else {
        eprintln!("fake-agent: no samocode context in --append-system-prompt");
        return 2;
    };
    let Some(run) = Run::from_context(&context, env) else {
        eprintln!("fake-agent: the context lacks Session path, Working directory or Phase");
        return 2;
    };
    // Like claude, it reports the model it was given (a real CLI reports its full name).
    let model = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .map_or("fake-model", String::as_str);
    run.emit(json!({"type": "system", "subtype": "init", "session_id": run.session_id(), "model": model, "cwd": run.workdir}));
    let presence = env
        .get("SAMOCODE_FAKE_RUNNING")
        .map(|dir| Presence::enter(Path::new(dir), &run.session));
    let action = run
        .action(env.get("SAMOCODE_FAKE").map(String::as_str).unwrap_or(""))
        .or_else(|| run.chaos(env));
    let code = run.act(action.as_deref(), env);
    drop(presence);
    if code == REFUSED_WITH_0 {
        return 0;
    }
    if code == 0 {
        run.emit(json!({
            "type": "result", "subtype": "success", "is_error": false, "num_turns": 3,
            "result": format!("{} step done", run.phase), "session_id": run.session_id(),
            "total_cost_usd": 0.0125,
            "usage": {"input_tokens": 1000, "cache_read_input_tokens": 200, "output_tokens": 300}
        }));
        // `SAMOCODE_FAKE_LINGER=S`: stays S seconds after its result, as a CLI whose exit
        // waits on something.
        if let Some(linger) = env
            .get("SAMOCODE_FAKE_LINGER")
            .and_then(|s| s.parse::<f64>().ok())
        {
            std::thread::sleep(Duration::from_secs_f64(linger));
        }
    }
    code
}

/// What [`Run::act`] returns for a refusal that ends with exit code 0 and no more output.
const REFUSED_WITH_0: u8 = 250;

fn read_context(args: &[String]) -> Option<String> {
    let position = args.iter().position(|a| a == "--append-system-prompt")?;
    let value = args.get(position + 1)?;
    if header_value(value, "Session path").is_some() {
        return Some(value.clone());
    }
    // A large context comes as a pointer: "... are in the file PATH. Read ..."
    let path = value.split("in the file ").nth(1)?.split(". Read").next()?;
    std::fs::read_to_string(path).ok()
}

struct Run {
    session: PathBuf,
    workdir: PathBuf,
    phase: String,
    attempt: u32,
    total: u32,
    feedback: bool,
}

impl Run {
    fn from_context(context: &str, _env: &HashMap<String, String>) -> Option<Run> {
        Some(Run {
            session: PathBuf::from(header_value(context, "Session path")?),
            workdir: PathBuf::from(header_value(context, "Working directory")?),
            phase: header_value(context, "Phase")?.to_string(),
            attempt: header_value(context, "Attempt")?.parse().ok()?,
            total: header_value(context, "Total iteration")?.parse().ok()?,
            feedback: context.contains("\n## Feedback from a person\n"),
        })
    }

    fn session_id(&self) -> String {
        format!("fake-{}-{:03}-a{}", self.phase, self.total, self.attempt)
    }

    fn emit(&self, event: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{event}");
        let _ = out.flush();
    }

    fn say(&self, text: &str) {
        self.emit(json!({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}));
    }

    /// Prints claude's result for a usage limit that resets at unix time `reset`.
    fn refuse_for_limit(&self, reset: i64) {
        self.emit(json!({
            "type": "result", "subtype": "success", "is_error": true,
            "api_error_status": 429, "num_turns": 1, "total_cost_usd": 0,
            "result": format!("API Error: Request rejected (429) · Claude AI usage limit reached|{reset}"),
            "session_id": self.session_id(),
            "usage": {"input_tokens": 0, "output_tokens": 0}
        }));
    }

    /// Prints two API messages' worth of work as claude does: each content block an
    /// `assistant` event carrying its message's id and usage (repeated, the output growing).
    /// Together: 11,000 input tokens (8,000 of them from the cache) and 750 output tokens.
    fn spend(&self) {
        let block = |id: &str, text: &str, input: u64, cached: u64, output: u64| {
            self.emit(json!({"type": "assistant", "message": {
                "id": id, "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "usage": {"input_tokens": input, "cache_read_input_tokens": cached, "output_tokens": output}
            }}));
        };
        block("fake-msg-1", "looking around", 2000, 8000, 100);
        block("fake-msg-1", "reading more", 2000, 8000, 500);
        block("fake-msg-2", "thinking", 1000, 0, 250);
    }

    /// The first rule that matches this phase and attempt.
    fn action(&self, rules: &str) -> Option<String> {
        rules
            .split(';')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .find_map(|rule| {
                let (target, action) = rule.split_once('=')?;
                let (phase, attempt) = match target.split_once('@') {
                    Some((p, a)) => (p, a.parse::<u32>().ok()),
                    None => (target, None),
                };
                let phase_ok = phase == "*" || phase == self.phase;
                let attempt_ok = attempt.is_none_or(|a| a == self.attempt);
                (phase_ok && attempt_ok).then(|| action.to_string())
            })
    }

    /// `SAMOCODE_FAKE_CHAOS=P[:SEED]`: with probability P an iteration gets one fault, chosen
    /// by a hash of the session, the iteration and the seed (so a run can be repeated), and
    /// marked in the session folder (`.chaos-NNN`) so that its retry, or the same attempt run
    /// again after a usage limit or a crash, works normally.
    fn chaos(&self, env: &HashMap<String, String>) -> Option<String> {
        use std::hash::{Hash, Hasher};
        const FAULTS: [&str; 7] = [
            "exit:3",
            "hang",
            "badjson",
            "flood:50",
            "escape",
            "escape-threads",
            "limit-in:2",
        ];
        let spec = env.get("SAMOCODE_FAKE_CHAOS")?;
        let (p, seed) = spec.split_once(':').unwrap_or((spec, "0"));
        let p: f64 = p.parse().ok()?;
        let mark = self.session.join(format!(".chaos-{:03}", self.total));
        if mark.exists() {
            return None;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        (self.session.file_name(), self.total, seed).hash(&mut hasher);
        let h = hasher.finish();
        if (h % 10_000) as f64 >= p * 10_000.0 {
            return None;
        }
        let fault = FAULTS[((h / 10_000) % FAULTS.len() as u64) as usize];
        std::fs::write(&mark, fault).ok()?;
        Some(fault.to_string())
    }

    fn act(&self, action: Option<&str>, env: &HashMap<String, String>) -> u8 {
        // `A+B`: A first, then B (`touch+exit:1`: an edit, then a failure).
        if let Some((first, rest)) = action.and_then(|a| a.split_once('+')) {
            if first == "touch" {
                self.touch();
            } else if first == "break-index" {
                self.break_index();
            } else {
                eprintln!("fake-agent: only touch or break-index may come before +, not {first}");
                return 2;
            }
            return self.act(Some(rest), env);
        }
        let pids = env.get("SAMOCODE_FAKE_PIDS").map(PathBuf::from);
        let (verb, arg) = match action {
            Some(a) => a.split_once(':').unwrap_or((a, "")),
            None => ("", ""),
        };
        match verb {
            "done-then" => {
                let written = match self.work(false) {
                    Ok(signal) => self.signal_text(&signal.to_string()),
                    Err(error) => {
                        eprintln!("fake-agent: {error}");
                        1
                    }
                };
                if written != 0 {
                    return written;
                }
                return self.act(Some(arg), env);
            }
            "exit" => {
                self.say("failing on purpose");
                eprintln!("fake-agent: failing on purpose");
                return arg.parse().unwrap_or(1);
            }
            "hang" => {
                self.spend();
                self.say("hanging on purpose");
                match arg {
                    "escape-threads" => escape_threads(pids.as_deref()),
                    _ => leave_behind(pids.as_deref()),
                }
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            "nosignal" => {
                self.say("exiting without a signal");
                return 0;
            }
            "stray" => {
                // A signal written by a relative path: into the working directory.
                let signal = r#"{"status": "continue", "phase": "requirements"}"#;
                return match std::fs::write(self.workdir.join("_signal.json"), signal) {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!("fake-agent: {error}");
                        1
                    }
                };
            }
            "badjson" => return self.signal_text("{\"status\": \"continue\", "),
            "empty" => return self.signal_text("{}"),
            "signal" => return self.signal_text(arg),
            "flood" => {
                let megabytes: usize = arg.parse().unwrap_or(10);
                let line = format!("{}\n", "x".repeat(1023));
                let mut out = std::io::stdout().lock();
                for _ in 0..megabytes * 1024 {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
            "grandchild" => leave_behind(pids.as_deref()),
            "stderr-child" => {
                let code = match self.work(false) {
                    Ok(signal) => self.signal_text(&signal.to_string()),
                    Err(error) => {
                        eprintln!("fake-agent: {error}");
                        return 1;
                    }
                };
                // A child in the agent's group with only standard error inherited; stdout is
                // closed before the exit, so the worker sees it closed first.
                if let Ok(child) = Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                {
                    note_pid(pids.as_deref(), child.id());
                    std::mem::forget(child);
                }
                let _ = std::io::stdout().flush();
                let _ = nix::unistd::close(1);
                std::thread::sleep(Duration::from_millis(300));
                return code;
            }
            "touch" => self.touch(),
            "break-index" => self.break_index(),
            "limit" | "limit-0" => {
                let reset: i64 = arg.parse().unwrap_or(0);
                if jiff::Timestamp::now().as_second() < reset {
                    self.refuse_for_limit(reset);
                    return if verb == "limit" { 1 } else { REFUSED_WITH_0 };
                }
            }
            // A provider whose clock is behind: it names a reset S seconds past, and refuses.
            "limit-past" => {
                let ago: i64 = arg.parse().unwrap_or(60);
                self.refuse_for_limit(jiff::Timestamp::now().as_second() - ago);
                return 1;
            }
            "limit-in" => {
                let delay: i64 = arg.parse().unwrap_or(2);
                let reset = jiff::Timestamp::now().as_second() + delay;
                return self.act(Some(&format!("limit:{reset}")), env);
            }
            "escape" => {
                if let Some(pid) = escape(&["sleep", "3600"]) {
                    note_pid(pids.as_deref(), pid);
                }
            }
            "escape-threads" => escape_threads(pids.as_deref()),
            "chatty" => {
                // Busy but healthy: a line every 0.3 s for S seconds, then the normal work.
                let until =
                    std::time::Instant::now() + Duration::from_secs_f64(arg.parse().unwrap_or(2.0));
                while std::time::Instant::now() < until {
                    self.say("still working");
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            "slow" => std::thread::sleep(Duration::from_secs_f64(arg.parse().unwrap_or(1.0))),
            "say" => {
                self.say(arg);
                eprintln!("{arg}");
            }
            "fifo" | "link" | "huge" => return self.hostile_signal(verb, arg),
            "env" => {
                let mut lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                lines.sort();
                let _ = std::fs::write(self.session.join("agent-env.txt"), lines.join("\n"));
            }
            "twins" if self.phase == "requirements" && !self.session.join("_qa.md").exists() => {
                if let Err(error) = std::fs::write(self.session.join("_qa.md"), TWINS) {
                    eprintln!("fake-agent: {error}");
                    return 1;
                }
                self.note("asked two questions, both numbered Q1", "wait for answers");
                return self.signal_text(
                    r#"{"status": "waiting", "phase": "requirements", "for": "qa_answers"}"#,
                );
            }
            "rounds" if self.phase == "requirements" => {
                let qa = self.session.join("_qa.md");
                if let Ok(text) = std::fs::read_to_string(&qa)
                    && QaDoc::parse(&text).is_answered()
                    && !text.contains("# Round 2")
                {
                    if let Err(error) = std::fs::write(&qa, format!("{text}{ROUND_2}")) {
                        eprintln!("fake-agent: {error}");
                        return 1;
                    }
                    self.note("asked a second round of questions", "wait for answers");
                    return self.signal_text(
                        r#"{"status": "waiting", "phase": "requirements", "for": "qa_answers"}"#,
                    );
                }
            }
            _ => {}
        }
        match self.work(verb == "stay") {
            Ok(signal) => self.signal_text(&signal.to_string()),
            Err(error) => {
                eprintln!("fake-agent: {error}");
                1
            }
        }
    }

    /// Edits the tracked README.md of the worktree.
    fn touch(&self) {
        let readme = self.workdir.join("README.md");
        let text = std::fs::read_to_string(&readme).unwrap_or_default();
        let _ = std::fs::write(&readme, format!("{text}edited by the agent\n"));
    }

    /// Writes garbage over the worktree's index: git cannot read the worktree after it.
    fn break_index(&self) {
        if let Ok(dir) = git(&self.workdir, &["rev-parse", "--git-dir"]) {
            let _ = std::fs::write(self.workdir.join(dir.trim()).join("index"), "garbage");
        }
    }

    /// A `_signal.json` that is not a small regular file, as a hostile agent might leave it.
    fn hostile_signal(&self, verb: &str, arg: &str) -> u8 {
        let path = self.session.join("_signal.json");
        let _ = std::fs::remove_file(&path);
        let made = match verb {
            "fifo" => Command::new("mkfifo").arg(&path).status().and_then(|s| {
                s.success()
                    .then_some(())
                    .ok_or(std::io::Error::other("mkfifo failed"))
            }),
            "link" => std::os::unix::fs::symlink(arg, &path),
            _ => {
                let megabytes: usize = arg.parse().unwrap_or(2);
                std::fs::write(&path, " ".repeat(megabytes << 20))
            }
        };
        match made {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("fake-agent: cannot make the {verb} signal: {error}");
                1
            }
        }
    }

    fn signal_text(&self, text: &str) -> u8 {
        match std::fs::write(self.session.join("_signal.json"), text) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("fake-agent: cannot write the signal: {error}");
                1
            }
        }
    }

    /// The phase's scripted work; returns the signal to write.
    fn work(&self, stay: bool) -> std::io::Result<serde_json::Value> {
        let phase = self.phase.as_str();
        if stay {
            self.note("looked around again", "keep going");
            return Ok(json!({"status": "continue", "phase": phase}));
        }
        Ok(match phase {
            "investigation" => {
                let files = git(&self.workdir, &["ls-files"]).unwrap_or_default();
                self.artifact(
                    "dive",
                    "findings",
                    &format!("# Dive\n\nTracked files:\n\n```\n{files}\n```\n"),
                )?;
                self.note("wrote the dive", "define the requirements");
                json!({"status": "continue", "phase": "requirements"})
            }
            "requirements" => {
                let qa = self.session.join("_qa.md");
                match std::fs::read_to_string(&qa) {
                    Err(_) => {
                        std::fs::write(&qa, QUESTIONS)?;
                        self.note("asked two questions in _qa.md", "wait for answers");
                        json!({"status": "waiting", "phase": "requirements", "for": "qa_answers"})
                    }
                    Ok(text) if QaDoc::parse(&text).is_answered() => {
                        self.artifact(
                            "requirements",
                            "agreed",
                            &format!("# Requirements\n\n{text}"),
                        )?;
                        self.note("recorded the requirements", "plan the work");
                        json!({"status": "continue", "phase": "planning"})
                    }
                    Ok(_) => {
                        json!({"status": "waiting", "phase": "requirements", "for": "qa_answers"})
                    }
                }
            }
            "planning" => {
                let revised = if self.feedback {
                    " (revised after feedback)"
                } else {
                    ""
                };
                self.artifact("plan", "steps", &format!("# Plan{revised}\n\n## Phase 1: scaffolding (profile: light)\n- [ ] 1.1 first step\n\n## Phase 2: the feature (profile: strong)\n- [ ] 2.1 second step\n- [ ] 2.2 third step\n"))?;
                self.note(&format!("wrote the plan{revised}"), "wait for approval");
                json!({"status": "waiting", "phase": "planning", "for": "plan_approval"})
            }
            "implementation" => {
                let steps: usize = std::env::var("SAMOCODE_FAKE_STEPS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(3);
                let dir = self.workdir.join("samocode-demo");
                std::fs::create_dir_all(&dir)?;
                let done = std::fs::read_dir(&dir)?.count();
                let step = done + 1;
                std::fs::write(
                    dir.join(format!("step-{step}.txt")),
                    format!("step {step} of the plan\n"),
                )?;
                git(&self.workdir, &["add", "-A"])?;
                git(
                    &self.workdir,
                    &[
                        "-c",
                        "user.name=samocode fake agent",
                        "-c",
                        "user.email=fake-agent@samocode.invalid",
                        "commit",
                        "-q",
                        "-m",
                        &format!("Implement step {step}"),
                    ],
                )?;
                self.say(&format!("committed step {step}"));
                self.tick_plan_step()?;
                self.note(
                    &format!("implemented step {step}"),
                    if step >= steps {
                        "test the change"
                    } else {
                        "next step"
                    },
                );
                let next = if step >= steps {
                    "testing"
                } else {
                    "implementation"
                };
                json!({"status": "continue", "phase": next})
            }
            "testing" => {
                let log = git(&self.workdir, &["log", "--oneline"]).unwrap_or_default();
                self.artifact(
                    "test-report",
                    "results",
                    &format!("# Test report\n\nAll checks passed.\n\n```\n{log}\n```\n"),
                )?;
                self.note("tested the change", "review it");
                json!({"status": "continue", "phase": "quality"})
            }
            "quality" => {
                self.artifact("review", "findings", "# Review\n\nNo blocking findings.\n")?;
                self.note("reviewed the change", "write the summary");
                json!({"status": "continue", "phase": "done"})
            }
            "done" => {
                self.artifact(
                    "summary",
                    "pr",
                    "# Summary\n\nImplemented the scripted steps.\n",
                )?;
                self.note("wrote the summary", "nothing");
                json!({"status": "done", "phase": "done", "summary": "Implemented the scripted steps"})
            }
            other => {
                json!({"status": "blocked", "phase": other, "reason": "the fake agent has no script for this phase", "needs": "human_decision"})
            }
        })
    }

    /// Ticks the first unticked step of the newest plan, as the implementation skill asks.
    fn tick_plan_step(&self) -> std::io::Result<()> {
        if let Some(plan) = crate::session::profile::newest_artifact(&self.session, "plan") {
            let text = std::fs::read_to_string(&plan)?;
            std::fs::write(&plan, text.replacen("- [ ]", "- [x]", 1))?;
        }
        Ok(())
    }

    fn artifact(&self, kind: &str, slug: &str, text: &str) -> std::io::Result<()> {
        let stamp = jiff::Zoned::now().strftime("%m-%d-%H:%M").to_string();
        std::fs::write(self.session.join(format!("{stamp}-{kind}-{slug}.md")), text)
    }

    /// Updates `Last Action:` and `Next:` and appends a Flow Log line, as an agent must.
    fn note(&self, action: &str, next: &str) {
        let path = self.session.join("_overview.md");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let mut out = String::with_capacity(text.len() + 128);
        for line in text.split_inclusive('\n') {
            if line.starts_with("Last Action:") {
                out.push_str(&format!("Last Action: {action}\n"));
            } else if line.starts_with("Next:") {
                out.push_str(&format!("Next: {next}\n"));
            } else {
                out.push_str(line);
            }
        }
        let stamp = jiff::Zoned::now().strftime("%m-%d %H:%M").to_string();
        let out = overview::append_flow_log(
            &out,
            self.total,
            &stamp,
            &format!("{}: {action}", self.phase),
        );
        let _ = std::fs::write(&path, out);
        self.say(action);
    }
}

/// `SAMOCODE_FAKE_RUNNING=DIR`: each running agent keeps a file `DIR/<session>.<pid>`, and on
/// start appends to `DIR.log` how many agents ran at that moment, in all and for its session
/// (files of agents that were killed are not counted).
struct Presence(PathBuf);

impl Presence {
    fn enter(dir: &Path, session: &Path) -> Presence {
        let _ = std::fs::create_dir_all(dir);
        let name = session
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mine = dir.join(format!("{name}.{}", std::process::id()));
        let _ = std::fs::write(&mine, "");
        let (mut all, mut same) = (0, 0);
        for entry in std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((owner, pid)) = file.rsplit_once('.') else {
                continue;
            };
            let alive = pid
                .parse::<i32>()
                .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists() && !zombie(p));
            if alive {
                all += 1;
                same += usize::from(owner == name);
            }
        }
        let log = dir.with_extension("log");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // One write call, so that lines of agents starting together do not interleave.
            let _ = f.write_all(format!("{all} {same} {name} {}\n", std::process::id()).as_bytes());
        }
        Presence(mine)
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}

const TWINS: &str = "# Questions\n\n## Q1: Where should the demo files go?\nSuggested: samocode-demo\nAnswer:\n\n## Q1: How many steps should the plan have?\nSuggested: 3\nAnswer:\n";

const ROUND_2: &str = "\n# Round 2\n\n## Q1: Which colour should the demo use?\nOptions: red | blue\nSuggested: red\nAnswer:\n";

const QUESTIONS: &str = "# Questions\n\n## Q1: Where should the demo files go?\nOptions: samocode-demo | docs\nSuggested: samocode-demo\nAnswer:\n\n## Q2: How many steps should the plan have?\nOptions: 3 | 5\nSuggested: 3\nAnswer:\n";

/// Starts `sleep` in the background with our stdout, as a careless agent's tool might.
fn leave_behind(pids: Option<&Path>) {
    if let Ok(child) = Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
    {
        note_pid(pids, child.id());
        std::mem::forget(child);
    }
}

/// Appends `pid` to the `SAMOCODE_FAKE_PIDS` file, where the tests look for what was left.
fn note_pid(pids: Option<&Path>, pid: u32) {
    if let Some(file) = pids
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
    {
        let _ = writeln!(f, "{pid}");
    }
}

/// Starts `program` in a session of its own (`setsid`), out of the agent's process group, with
/// our stdout: what an agent's tool that daemonizes leaves behind. Returns its pid (setsid execs
/// the program in the same process: it forks only when it leads a group).
fn escape(program: &[&str]) -> Option<u32> {
    let child = Command::new("setsid")
        .args(program)
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    std::mem::forget(child);
    Some(pid)
}

/// [`escape`]s a copy of this program that becomes a zombie leader (see
/// [`become_zombie_leader_if_asked`]). Its pid is noted only once it is one (its main thread a
/// zombie, another thread running), so that whoever looks for it finds it in that state, and a
/// copy that died instead is never taken for one that was killed.
fn escape_threads(pids: Option<&Path>) {
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let me = me.display().to_string();
    let Some(pid) = escape(&[&me, "fake-agent", ZOMBIE_LEADER]) else {
        return;
    };
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if zombie(pid as i32) && threads() > 1 {
            note_pid(pids, pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("fake-agent: the zombie leader {pid} did not become one");
}

/// The arguments after `fake-agent` that make this program a zombie leader.
const ZOMBIE_LEADER: &str = "--zombie-leader";

/// Called first thing in `main`, before the command line is parsed or a runtime started: with
/// `fake-agent --zombie-leader`, this process ends its main thread and lives on for an hour in
/// one other thread, as a program that calls `pthread_exit` in `main` does (the fake agent's
/// `escape-threads`). Its `/proc/PID/stat` then reads `Z` and its `/proc/PID/environ` cannot be
/// read; its thread's `/proc/PID/task/TID/environ` can. Otherwise it returns.
pub fn become_zombie_leader_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("fake-agent") || args.next().as_deref() != Some(ZOMBIE_LEADER)
    {
        return;
    }
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(3600));
        std::process::exit(0);
    });
    // SAFETY: the exit system call ends the calling thread only and never returns. The main
    // thread's stack is never unmapped, so the few locals of `main` on it stay valid, and the
    // other thread refers to none of them.
    unsafe {
        nix::libc::syscall(nix::libc::SYS_exit, 0);
    }
    unreachable!("the exit system call returned")
}

fn git(dir: &Path, args: &[&str]) -> std::io::Result<String> {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
