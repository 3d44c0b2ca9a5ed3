//! Agent CLIs: the command line of one attempt per provider, the process that runs it, and the
//! parsing of what it prints.
//!
//! - [`claude`]: the Claude Code command line;
//! - [`codex`]: the Codex command line and its `--json` events;
//! - [`stream`]: Claude's stream-json events, and the event type both providers parse into;
//! - [`refusal`]: what a failed attempt's output says about why (usage limit, credentials);
//! - [`launch`]: starting the agent (the seam tests replace) and the guard that kills it;
//! - [`reaper`]: finding an attempt's processes by the markers in their environment;
//! - [`process`]: the AgentProcess actor (one per attempt);
//! - [`env`](mod@env): the environment an agent gets (an allowlist).

pub mod claude;
pub mod codex;
pub mod env;
pub mod launch;
pub mod process;
pub mod reaper;
pub mod refusal;
pub mod stream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{AgentSettings, Provider};
use crate::protocol::Usage;
use crate::session::store::AttemptFiles;

/// The command for one attempt with the configured provider. `context_file` already holds
/// the context; a provider that cannot take it whole points the agent there.
pub fn command(
    settings: &AgentSettings,
    context: &str,
    context_file: &Path,
    workdir: &Path,
) -> AgentCommand {
    match settings.provider {
        Provider::Claude => claude::command(settings, context, context_file, workdir),
        Provider::Codex => codex::command(settings, context, workdir),
    }
}

/// The user turn of every attempt; everything specific is in the context.
pub(crate) const PROMPT: &str = "Run one samocode iteration now, exactly as your system prompt describes: read the session's _overview.md first, do one step of the current phase, update the notebook, and write _signal.json last.";

/// A program to run for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// Whose output format the program prints.
    pub provider: Provider,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub workdir: PathBuf,
    /// The program's whole environment: nothing else is inherited (see [`env`](mod@env)).
    pub env: env::AgentEnv,
    /// Written to the program's standard input, which is then closed; `None` leaves standard
    /// input empty (at end of file).
    pub stdin: Option<String>,
}

/// Parses one line of an agent's standard output with its provider's parser.
pub fn parse_line(provider: Provider, line: &[u8]) -> Option<stream::StreamEvent> {
    match provider {
        Provider::Claude => stream::parse_line(line),
        Provider::Codex => codex::parse_line(line),
    }
}

impl AgentCommand {
    /// The command as a shell would show it, for `--dry-run` (long arguments shortened).
    pub fn display(&self) -> String {
        let mut parts = vec![quote(&self.program.to_string_lossy())];
        for arg in &self.args {
            let shown = if arg.len() > 120 {
                format!("<{} bytes: the iteration context>", arg.len())
            } else {
                arg.clone()
            };
            parts.push(quote(&shown));
        }
        if let Some(input) = &self.stdin {
            parts.push(format!("< <{} bytes: the iteration context>", input.len()));
        }
        parts.join(" ")
    }
}

fn quote(text: &str) -> String {
    crate::protocol::shell_word(text)
}

/// Everything an AgentProcess needs to run one attempt.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub command: AgentCommand,
    pub files: AttemptFiles,
    /// The hard limit; the process group is stopped when it passes.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Stop the agent after this long without output (`None`: never).
    pub stall: Option<Duration>,
    /// The session folder, exported to the agent as SAMOCODE_SESSION (it marks the agent's
    /// processes as this session's when a worker looks for leftovers).
    pub session_dir: PathBuf,
    /// Unique within the session (the attempt log's name), exported as SAMOCODE_ATTEMPT.
    pub attempt_id: String,
    /// The iteration context the command carries (a remote engine sends it with the attempt;
    /// empty for an attempt taken over from a previous daemon).
    pub context: String,
}

/// Why the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    /// Exited with this code.
    Exited(i32),
    /// Killed by a signal samocode did not send.
    Signaled(String),
    /// Stopped by samocode at the hard timeout.
    TimedOut,
    /// Stopped by samocode after printing nothing for too long.
    Stalled,
    /// Stopped by samocode because the session is stopping.
    Cancelled,
    /// Could not be started at all.
    SpawnFailed(String),
    /// Started, but how it ended could not be learned (the engine that runs it remotely was
    /// unreachable): a failure like a crash, retried with backoff.
    Lost(String),
}

/// What an attempt reports to its session when it is over.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub end: ProcessEnd,
    /// How the main process ended, as the operating system said (also when samocode stopped
    /// it: the signal that did it); `None` when it never ran or was never reaped.
    pub status: Option<launch::ExitKind>,
    /// Something worth recording about how the attempt ended (a pipe held open after the kill).
    pub note: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// How long it ran by the monotonic clock (a wall clock stepped meanwhile does not count);
    /// `None` when nobody watched it run.
    pub ran: Option<Duration>,
    pub model: Option<String>,
    pub agent_session_id: Option<String>,
    /// The result event, when the agent printed one.
    pub result: Option<stream::RunResult>,
    /// Bytes of stdout seen.
    pub output_bytes: u64,
    /// Error messages the agent printed on the way (Codex's `error` events), the last few.
    pub errors: Vec<String>,
    /// Where the attempt ran (`local`, a worker's name, `pod/<name>`); `None` when it never
    /// started anywhere.
    pub host: Option<String>,
}

impl AttemptReport {
    pub fn usage(&self) -> Usage {
        self.result.as_ref().map(|r| r.usage).unwrap_or_default()
    }

    /// The report of an attempt whose watcher failed before it could report itself.
    pub fn lost(detail: String, started_at: Timestamp) -> AttemptReport {
        AttemptReport {
            end: ProcessEnd::Signaled(detail),
            status: None,
            note: None,
            started_at,
            ended_at: Timestamp::now(),
            ran: None,
            model: None,
            agent_session_id: None,
            result: None,
            output_bytes: 0,
            errors: Vec::new(),
            host: None,
        }
    }
}

/// The message an AgentProcess sends its session when the attempt is over. The session takes
/// it through a derived reference, so the agent module never names the session's messages.
#[derive(Debug)]
pub struct AttemptDone {
    /// Which attempt of the session this was (a report of an older one is ignored).
    pub flight: u64,
    pub report: Box<AttemptReport>,
}
