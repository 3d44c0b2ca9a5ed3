//! The rows of the two append-only journals of a session folder.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::phase::Phase;
use super::profile::Profile;
use super::state::Usage;

/// How one agent attempt ended (a column of `_iterations.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Exited 0 and wrote an acceptable signal file.
    Ok,
    /// Exited with a non-zero code.
    Nonzero,
    /// Killed at the hard timeout.
    Timeout,
    /// Killed after printing nothing for too long.
    Stalled,
    /// Killed by a signal we did not send, or could not be started or watched.
    Crashed,
    /// The provider refused for a usage limit.
    UsageLimit,
    /// Exited 0 without a readable signal.
    ProtocolError,
    /// The worker stopped (or died) while the attempt ran; the iteration runs again.
    Interrupted,
}

impl AttemptOutcome {
    pub fn name(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Nonzero => "nonzero",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Stalled => "stalled",
            AttemptOutcome::Crashed => "crashed",
            AttemptOutcome::UsageLimit => "usage_limit",
            AttemptOutcome::ProtocolError => "protocol_error",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }
}

/// One row of `_iterations.jsonl`: one agent attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRow {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// How long the agent ran, in seconds, by the monotonic clock: what the time budget
    /// counts. Absent when nobody watched it run to its end (an attempt a worker's crash
    /// interrupted) and in rows of earlier builds: then `ended_at - started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    pub iteration: u32,
    pub attempt: u32,
    pub phase: Phase,
    pub provider: String,
    /// The model samocode asked for (the profile's, or CLAUDE_MODEL/CODEX_MODEL); the one the
    /// agent reported when none was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model the agent reported in its output, when it differs from `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_model: Option<String>,
    /// The model profile the attempt ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The reasoning effort of the profile (recorded for claude too, which has no such flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The name of the signal that ended the process, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The attempt's stdout log, relative to the session folder.
    pub log: String,
    /// Where the attempt ran: `local`, a worker's name, or `pod/<name>` (absent in rows
    /// written before samocode ran attempts elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl IterationRow {
    /// How long the agent ran, in seconds (see [`IterationRow::seconds`]).
    pub fn took(&self) -> f64 {
        self.seconds.unwrap_or_else(|| {
            self.started_at
                .duration_until(self.ended_at)
                .as_secs_f64()
                .max(0.0)
        })
    }

    /// What the attempt spent.
    pub fn usage(&self) -> Usage {
        Usage {
            cost_usd: self.cost_usd,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
impl IterationRow {
    /// For tests: an ok attempt of claude (exit 0, no model, no usage) from `started_at` to
    /// `ended_at`, logged at `log`; the fields a test needs are set over it.
    pub(crate) fn ok(
        iteration: u32,
        phase: Phase,
        log: &str,
        started_at: Timestamp,
        ended_at: Timestamp,
    ) -> IterationRow {
        IterationRow {
            started_at,
            ended_at,
            seconds: None,
            iteration,
            attempt: 1,
            phase,
            provider: "claude".into(),
            model: None,
            reported_model: None,
            profile: None,
            effort: None,
            exit_code: Some(0),
            exit_signal: None,
            outcome: AttemptOutcome::Ok,
            detail: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cost_usd: 0.0,
            agent_session_id: None,
            log: log.into(),
            host: None,
        }
    }
}

/// Journal rows of an accepted `continue` that may not be on the disk yet. They are appended
/// without waiting for the disk and carried by the `_state.json` saved with the next attempt,
/// until a sync in the background (while that attempt runs) has made them durable. A worker
/// opening the session appends those its journals lack (after a crash of the machine).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnsyncedRows {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<IterationRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryRow>,
    /// A person's command's history rows that `_signal_history.jsonl` could not take when the
    /// command was saved (a full disk): not appended yet, so apart from the rows a sync makes
    /// durable. The next save of a worker driving the session, or the next opening of it,
    /// appends them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unjournaled: Vec<HistoryRow>,
}

impl UnsyncedRows {
    pub fn is_empty(&self) -> bool {
        self.iterations.is_empty() && self.history.is_empty() && self.unjournaled.is_empty()
    }
}

/// Who caused a history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The agent's `_signal.json`.
    Agent,
    /// A person's command (approve, reject, answer, resume, stop).
    Person,
    /// The worker's own rule (iteration limit, retries spent).
    Worker,
}

/// One row of `_signal_history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub at: Timestamp,
    pub iteration: u32,
    pub attempt: u32,
    pub source: Source,
    pub from: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Phase>,
    /// The signal's status, or the person's verb.
    pub status: String,
    pub accepted: bool,
    /// The rejection code and sentence, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the worker did: next, retry, waiting, blocked, done, failed.
    pub outcome: String,
    /// For a person's command: who gave it, and where (`by @ann`, `from the command line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}
