//! `_state.json` (schema 1): the authoritative machine state of a session.
//!
//! Only the session's worker writes it. A session made by the Python samocode has none; then
//! [`SessionState::from_legacy_overview`] derives one from `_overview.md`, once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::baseline::Baseline;
use super::budget::Budget;
use super::journal::{IterationRow, UnsyncedRows};
use super::overview::{self, WorkerLines};
use super::phase::{Needs, Phase, WaitFor};

/// The schema version this build reads and writes.
pub const SCHEMA: u32 = 1;

/// Where a session stands, with the data each condition needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Ready to run an iteration as soon as a worker has room.
    Queued,
    /// A worker is driving it (an attempt may be in flight).
    Running,
    /// Parked until a person acts.
    Waiting {
        #[serde(rename = "for")]
        wait_for: WaitFor,
        since: Timestamp,
    },
    /// Parked until a person resumes it.
    Blocked {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needs: Option<Needs>,
        since: Timestamp,
    },
    /// Finished.
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        at: Timestamp,
    },
    /// The agent kept failing; `resume` tries again.
    Failed { reason: String, at: Timestamp },
    /// A person parked it with `stop`; `waiting_for` is the gate it was waiting at then,
    /// which `resume` goes back to rather than run an attempt past it.
    Stopped {
        at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_for: Option<WaitFor>,
    },
}

impl RunState {
    /// When a parked or finished session entered its state (`since` of a wait or a block, `at`
    /// of the others); `None` while it can run.
    pub fn since(&self) -> Option<Timestamp> {
        match self {
            RunState::Waiting { since, .. } | RunState::Blocked { since, .. } => Some(*since),
            RunState::Done { at, .. }
            | RunState::Failed { at, .. }
            | RunState::Stopped { at, .. } => Some(*at),
            RunState::Queued | RunState::Running => None,
        }
    }
}

impl RunState {
    /// Whether `stop` parks a session in this state: not one that is done, nor one blocked or
    /// failed (it runs nothing, and waits for a person's `resume` already).
    pub fn stoppable(&self) -> bool {
        !matches!(
            self,
            RunState::Done { .. } | RunState::Blocked { .. } | RunState::Failed { .. }
        )
    }

    /// The one-word name used by `status` (queued, running, waiting, ...).
    pub fn name(&self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Waiting { .. } => "waiting",
            RunState::Blocked { .. } => "blocked",
            RunState::Done { .. } => "done",
            RunState::Failed { .. } => "failed",
            RunState::Stopped { .. } => "stopped",
        }
    }

    /// True for states a worker drives without a person (queued, running).
    pub fn is_runnable(&self) -> bool {
        matches!(self, RunState::Queued | RunState::Running)
    }
}

/// Tokens and money spent, summed over attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the provider's cache (codex reports it; it is
    /// priced lower).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Adds another attempt's usage. The sums stay finite and in range whatever an agent
    /// reported, so that `_state.json` can always be written and read back (JSON has no
    /// infinity: serde writes it as `null`).
    pub fn add(&mut self, other: Usage) {
        if other.cost_usd.is_finite() && other.cost_usd > 0.0 {
            self.cost_usd = (self.cost_usd + other.cost_usd).min(f64::MAX);
        }
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
    }
}

/// A person's note for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guidance {
    pub text: String,
    pub at: Timestamp,
}

/// An attempt in flight, as `_state.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightRecord {
    /// The attempt's stdout log, relative to the session folder (also its marker value).
    pub log: String,
    pub started_at: Timestamp,
    /// The worker process that started it.
    pub worker_pid: u32,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<super::profile::Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// The tracked files before a read-only phase's attempt (HEAD and the porcelain status),
    /// so a change is caught even when the attempt was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// How many of the person's notes (`guidance`, oldest first) the attempt's context
    /// carried: they are used once the attempt's verdict is taken.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub notes: usize,
    /// The longest the attempt can run, in seconds (its time limit and kill grace): an
    /// attempt a crash interrupted is counted as running no longer than this, whatever the
    /// wall clock did meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_secs: Option<u64>,
}

fn is_zero_count(n: &usize) -> bool {
    *n == 0
}

/// A run segment's `session` span by its ids in hex, as OpenTelemetry writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRef {
    pub trace_id: String,
    pub span_id: String,
    /// When the segment began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// The span is not ended yet: its process still runs the segment, or waits at its gate.
    /// Found so by the next process, the process that had it ended without ending it (killed
    /// or crashed), and the next process ends it in its place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// The process that opened the segment: a process that finds its own pid here ended the
    /// span itself (its session's actor was restarted in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// The branch a session's worktree was made from, and the commit it was made at: what its
/// change is measured against (`git diff COMMIT...HEAD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    pub branch: String,
    pub commit: String,
}

/// How many agent session ids the state keeps: enough to find the latest attempts' own
/// records in the agent CLI, bounded so that a session of thousands of attempts saves a state
/// of the same size as a new one.
pub const KEPT_AGENT_SESSION_IDS: usize = 32;

/// The contents of `_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    pub schema: u32,
    /// The session folder's name (`YY-MM-DD-name`).
    pub name: String,
    pub phase: Phase,
    pub status: RunState,
    /// Iterations of the whole session (one per agent run that was not a retry).
    pub iteration: u32,
    /// Iterations in the current phase since a person last acted on the session (over all
    /// its visits), the running one included: the phase's limit is counted on it.
    pub phase_iteration: u32,
    /// The same count for the phases the session has left since a person last acted, so that
    /// two phases sending each other back and forth meet their limits too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub left_phases: BTreeMap<Phase, u32>,
    /// Attempt of the current iteration (1 for the first try). Every attempt has its own
    /// number, also one a crash of the worker interrupted.
    pub attempt: u32,
    /// Attempts of the current iteration that failed (a crash of the worker is not the
    /// agent's failure and does not count); the retry budget is spent by these.
    #[serde(default)]
    pub failures: u32,
    /// The attempt running now: recorded before its agent starts and cleared once its row is
    /// journaled, so a worker that dies mid-attempt leaves what the next one needs to find
    /// the agent's processes and journal the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightRecord>,
    /// The reason the last attempt's signal or output was refused, shown to the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejection: Option<String>,
    /// What the next attempt is told of what went before it: why the last attempt failed (its
    /// time limit, its exit code), or why the session was blocked or failed before a person
    /// resumed it. Cleared once an iteration's signal is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Set while a queued session waits for a provider's usage limit to reset: the attempt
    /// that was refused runs again, under its own number, at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Notes from a person (`samocode tell`), shown to the next iteration and kept until an
    /// iteration that saw them is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guidance: Vec<Guidance>,
    /// A person's feedback from `reject`, shown to the next planning attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The `session` span of the last run segment, when traces are exported: the next
    /// segment's trace links to it (also after a restart of the daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trace: Option<TraceRef>,
    pub dive: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where the worktree was made from (sessions made by earlier builds have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    #[serde(default)]
    pub usage: Usage,
    /// The agent CLI's session ids of the latest attempts, oldest first: at most
    /// [`KEPT_AGENT_SESSION_IDS`] (every attempt's is in its `_iterations.jsonl` row).
    #[serde(default)]
    pub agent_session_ids: Vec<String>,
    /// The session's own budget (its `start`/`run` flags and raises); what it leaves unset
    /// comes from the configuration of the worker driving it.
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    /// The wall time of its agent attempts, summed, in seconds (what the time budget counts).
    #[serde(default)]
    pub agent_seconds: f64,
    /// The last accepted `continue`'s journal rows, until they are known to be on the disk
    /// (see [`UnsyncedRows`]).
    #[serde(default, skip_serializing_if = "UnsyncedRows::is_empty")]
    pub unsynced: UnsyncedRows,
    /// The session parked (waiting, blocked, failed, stopped or done) by its worker, and its
    /// notice is not safe yet (in the notifier's outbox, or sent): set in the save that parks
    /// it, cleared once it is. A worker that opens a parked session so marked tells people,
    /// as the one that parked it and died would have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untold: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Top-level fields this build does not know (a later build's, read after a rollback),
    /// written back as they were so that running an older build for a while loses nothing.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

impl SessionState {
    /// True when the session runs its next attempt as soon as a worker drives it: running
    /// (a worker's attempt was in flight) or queued, and not held by a usage limit.
    pub fn runs_when_driven(&self) -> bool {
        matches!(self.status, RunState::Running)
            || (matches!(self.status, RunState::Queued) && self.not_before.is_none())
    }

    /// The time a provider's usage limit resets, while it is still ahead: a queued session
    /// whose reset has passed waits only for a worker (or a slot), not for the provider.
    pub fn usage_limit_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.not_before.filter(|at| *at > now)
    }

    /// A session that has just been created and waits for its first iteration.
    pub fn new(name: &str, dive: &str, task: &str, now: Timestamp) -> SessionState {
        SessionState {
            schema: SCHEMA,
            name: name.to_string(),
            phase: Phase::Init,
            status: RunState::Queued,
            iteration: 0,
            phase_iteration: 0,
            left_phases: BTreeMap::new(),
            attempt: 0,
            failures: 0,
            in_flight: None,
            last_rejection: None,
            last_failure: None,
            not_before: None,
            guidance: Vec::new(),
            feedback: None,
            last_trace: None,
            dive: dive.to_string(),
            task: task.to_string(),
            worktree: None,
            branch: None,
            base: None,
            usage: Usage::default(),
            agent_session_ids: Vec::new(),
            budget: Budget::default(),
            agent_seconds: 0.0,
            unsynced: UnsyncedRows::default(),
            untold: false,
            created_at: now,
            updated_at: now,
            unknown: serde_json::Map::new(),
        }
    }

    /// The worker's lines of `_overview.md` for this state.
    pub fn worker_lines(&self) -> WorkerLines {
        WorkerLines {
            phase: self.phase,
            iteration: self.phase_iteration,
            total_iterations: self.iteration,
            blocked: match &self.status {
                RunState::Blocked { reason, .. } => Some(reason.clone()),
                RunState::Failed { reason, .. } => Some(format!("failed: {reason}")),
                _ => None,
            },
        }
    }

    /// Takes an accepted `continue` into `to`: the next attempt starts a new iteration there,
    /// with a clean slate of failures, and the person's feedback stays only within its phase.
    pub fn continue_to(&mut self, to: Phase) {
        if to != self.phase {
            self.feedback = None;
        }
        self.enter_phase(to);
        self.status = RunState::Queued;
        self.last_rejection = None;
        self.last_failure = None;
        self.attempt = 0;
        self.failures = 0;
    }

    /// Counts a finished attempt's spending, as its `_iterations.jsonl` row gives it.
    pub fn spend(&mut self, row: &IterationRow) {
        self.usage.add(row.usage());
        self.agent_seconds += row.took();
        if let Some(id) = &row.agent_session_id
            && !self.agent_session_ids.contains(id)
        {
            self.agent_session_ids.push(id.clone());
            let over = self
                .agent_session_ids
                .len()
                .saturating_sub(KEPT_AGENT_SESSION_IDS);
            self.agent_session_ids.drain(..over);
        }
    }

    /// Moves to `phase`, whose iteration count goes on from its last visit since a person
    /// last acted ([`SessionState::person_acted`]).
    pub fn enter_phase(&mut self, phase: Phase) {
        if phase != self.phase {
            if self.phase_iteration > 0 {
                self.left_phases.insert(self.phase, self.phase_iteration);
            }
            self.phase = phase;
            self.phase_iteration = self.left_phases.remove(&phase).unwrap_or(0);
        }
    }

    /// A person passed a gate or resumed the session: the phases it left count afresh.
    pub fn person_acted(&mut self) {
        self.left_phases.clear();
    }

    /// Derives a state from an overview written by the Python samocode (no `_state.json`).
    /// The phase comes from `Phase:` (the Python tool's own phase names read as ours: its
    /// `waiting_qa` is requirements waiting for answers, its fix and regression phases are the
    /// phases they fix in); `Blocked:` other than `no` parks the session as blocked; a
    /// `_signal.json` it left waiting at a gate (`signal`) keeps the session waiting there; a
    /// done phase is a finished session. The phase's iteration count starts afresh because the
    /// old tool did not record it, and the session's age counts from its folder's date.
    pub fn from_legacy_overview(
        name: &str,
        text: &str,
        signal: Option<&str>,
        now: Timestamp,
    ) -> Result<SessionState, LegacyError> {
        let parsed = overview::parse(text);
        let phase_text = parsed.phase.clone().ok_or(LegacyError::NoPhase)?;
        let word = phase_text.trim().to_ascii_lowercase();
        let (phase, mut waiting): (Phase, Option<WaitFor>) = match word.as_str() {
            "waiting_qa" => (Phase::Requirements, Some(WaitFor::QaAnswers)),
            "implementation_simple" | "implementation_complex" | "quick_fix" => {
                (Phase::Implementation, None)
            }
            "quality_fix" => (Phase::Quality, None),
            "testing_regression" => (Phase::Testing, None),
            other => (
                other
                    .parse()
                    .map_err(|_| LegacyError::UnknownPhase(phase_text.clone()))?,
                None,
            ),
        };
        let total = parsed
            .total_iterations
            .as_deref()
            .or(parsed.iteration.as_deref())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let mut state = SessionState::new(
            name,
            parsed.dive.as_deref().unwrap_or(""),
            parsed.task.as_deref().unwrap_or(""),
            now,
        );
        state.created_at = folder_date(name).unwrap_or(now);
        state.phase = phase;
        state.iteration = total;
        // The gate a Python run stopped at is in the signal it left.
        let left: Option<serde_json::Value> = signal.and_then(|s| serde_json::from_str(s).ok());
        if let Some(left) = left.filter(|s| s["status"] == "waiting") {
            waiting = match left["for"].as_str() {
                Some("plan_approval") => Some(WaitFor::PlanApproval),
                Some("qa_answers") => Some(WaitFor::QaAnswers),
                _ => waiting,
            };
        }
        if let Some(reason) = parsed.blocked.filter(|b| !is_no(b)) {
            // The Python tool often wrote a bare `yes`: the reason is then its Next: line.
            let reason = match reason.trim().eq_ignore_ascii_case("yes") {
                true => match parsed.next.as_deref().map(str::trim) {
                    Some(next) if !next.is_empty() => {
                        format!("blocked in the Python samocode: {next}")
                    }
                    _ => "blocked in the Python samocode (its notebook says no more)".to_string(),
                },
                false => reason,
            };
            // When it entered its state is not written anywhere: its folder's date, the
            // earliest it can have been, rather than now (its age read 0 s at every look).
            state.status = RunState::Blocked {
                reason,
                needs: None,
                since: state.created_at,
            };
        } else if phase == Phase::Done {
            state.status = RunState::Done {
                summary: parsed.last_action.clone(),
                at: state.created_at,
            };
        } else if let Some(wait_for) = waiting {
            state.status = RunState::Waiting {
                wait_for,
                since: state.created_at,
            };
        }
        Ok(state)
    }
}

/// Midnight (UTC) of the date a session's folder name starts with (`YY-MM-DD-`).
fn folder_date(name: &str) -> Option<Timestamp> {
    let date: jiff::civil::Date = format!("20{}", name.get(..8)?).parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

fn is_no(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "" | "no" | "none" | "false" | "-"
    )
}

/// Why a Python samocode overview could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The `## Status` section has no `Phase:` line.
    #[error("_overview.md has no \"Phase:\" line under \"## Status\"")]
    NoPhase,
    /// The `Phase:` line names no known phase.
    #[error(
        "_overview.md names an unknown phase {0:?}; samocode's phases are init, investigation, requirements, planning, implementation, testing, quality and done (the Python samocode's waiting_qa, implementation_simple, implementation_complex, quick_fix, quality_fix and testing_regression read as theirs): edit its Phase: line"
    )]
    UnknownPhase(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_stay_finite_and_in_range_whatever_an_agent_reports() {
        let mut usage = Usage {
            cost_usd: 1.0,
            ..Usage::default()
        };
        let huge = Usage {
            cost_usd: 1e308,
            input_tokens: u64::MAX - 5,
            output_tokens: 3,
            cached_input_tokens: 0,
        };
        usage.add(huge);
        usage.add(huge);
        usage.add(Usage {
            cost_usd: -100.0,
            ..Usage::default()
        });
        usage.add(Usage {
            cost_usd: f64::NAN,
            ..Usage::default()
        });
        assert!(usage.cost_usd.is_finite() && usage.cost_usd >= 1e308);
        assert_eq!(usage.input_tokens, u64::MAX);
        let text = serde_json::to_string(&usage).unwrap();
        let back: Usage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, usage);
    }

    /// A session of days makes thousands of attempts: the state keeps only the latest agent
    /// session ids, so that what every save writes and syncs does not grow with its age (all
    /// of them stay in `_iterations.jsonl`).
    #[test]
    fn the_state_keeps_the_latest_agent_session_ids_not_every_one() {
        let t0: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let mut state = SessionState::new("26-11-24-long", "d", "t", t0);
        let small = serde_json::to_vec(&state).unwrap().len();
        for i in 0..5_000u32 {
            let mut row = IterationRow::ok(i, Phase::Implementation, "l", t0, t0);
            row.agent_session_id = Some(format!("0b6f1c2e-5d4a-4e8f-9a7b-{i:012}"));
            state.spend(&row);
        }
        assert_eq!(state.agent_session_ids.len(), KEPT_AGENT_SESSION_IDS);
        assert_eq!(
            state.agent_session_ids.last().unwrap(),
            "0b6f1c2e-5d4a-4e8f-9a7b-000000004999"
        );
        assert_eq!(
            state.agent_session_ids[0],
            format!(
                "0b6f1c2e-5d4a-4e8f-9a7b-{:012}",
                5_000 - KEPT_AGENT_SESSION_IDS
            )
        );
        let saved = serde_json::to_vec(&state).unwrap().len();
        assert!(
            saved < small + 2_000,
            "{small} bytes new, {saved} after 5,000 attempts"
        );
        // An id seen again (an agent resumed) is not kept twice.
        let mut row = IterationRow::ok(1, Phase::Implementation, "l", t0, t0);
        row.agent_session_id = state.agent_session_ids.last().cloned();
        state.spend(&row);
        assert_eq!(state.agent_session_ids.len(), KEPT_AGENT_SESSION_IDS);
    }

    #[test]
    fn state_json_shape_is_stable() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let mut state = SessionState::new("26-11-24-auth", "d", "t", now);
        state.status = RunState::Waiting {
            wait_for: WaitFor::QaAnswers,
            since: now,
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["phase"], "init");
        assert_eq!(json["status"]["state"], "waiting");
        assert_eq!(json["status"]["for"], "qa_answers");
        let back: SessionState = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, state);
        // A state written before budgets existed still reads, with none of its own.
        let mut old = json;
        old.as_object_mut().unwrap().remove("agent_seconds");
        assert!(
            old.get("budget").is_none(),
            "an empty budget is not written"
        );
        let back: SessionState = serde_json::from_value(old).unwrap();
        assert!(back.budget.is_empty());
        assert_eq!(back.agent_seconds, 0.0);
        // A stop written before the gate was remembered still reads.
        let old: RunState =
            serde_json::from_str(r#"{"state":"stopped","at":"2026-11-24T10:00:00Z"}"#).unwrap();
        assert_eq!(
            old,
            RunState::Stopped {
                at: now,
                waiting_for: None
            }
        );
    }

    #[test]
    fn legacy_overview_becomes_state() {
        let now = Timestamp::now();
        let text = "# Session\n\n## Status\nPhase: Implementation\nIteration: 4\nTotal Iterations: 12\nBlocked: no\nLast Action: step 2\n\n## Task\nAdd login\n";
        let state = SessionState::from_legacy_overview("26-01-02-old", text, None, now).unwrap();
        assert_eq!(state.phase, Phase::Implementation);
        assert_eq!(state.iteration, 12);
        assert_eq!(state.phase_iteration, 0);
        assert_eq!(state.status, RunState::Queued);
        assert_eq!(state.task, "Add login");

        let bare = text.replace("Blocked: no", "Blocked: yes");
        let state = SessionState::from_legacy_overview("x", &bare, None, now).unwrap();
        let RunState::Blocked { reason, .. } = &state.status else {
            panic!("{:?}", state.status);
        };
        assert!(
            reason.starts_with("blocked in the Python samocode"),
            "{reason}"
        );
        let blocked = text.replace("Blocked: no", "Blocked: needs a key");
        let state = SessionState::from_legacy_overview("x", &blocked, None, now).unwrap();
        assert_eq!(state.status.name(), "blocked");

        assert_eq!(
            SessionState::from_legacy_overview("x", "# nothing\n", None, now),
            Err(LegacyError::NoPhase)
        );
        assert!(matches!(
            SessionState::from_legacy_overview("x", "## Status\nPhase: deploy\n", None, now),
            Err(LegacyError::UnknownPhase(_))
        ));
        assert_eq!(state_created(text), "2026-01-02T00:00:00Z");
    }

    fn state_created(text: &str) -> String {
        SessionState::from_legacy_overview("26-01-02-old", text, None, Timestamp::now())
            .unwrap()
            .created_at
            .to_string()
    }

    #[test]
    fn a_python_sessions_gate_phase_names_and_end_are_kept() {
        let now = Timestamp::now();
        let at = |phase: &str, signal: Option<&str>| {
            let text = format!("## Status\nPhase: {phase}\nBlocked: no\nLast Action: shipped\n");
            SessionState::from_legacy_overview("26-01-02-old", &text, signal, now).unwrap()
        };
        let plan = at(
            "planning",
            Some(r#"{"status":"waiting","for":"plan_approval"}"#),
        );
        // Since its folder's date, the earliest it can have been (its age read 0 s always).
        let day: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            plan.status,
            RunState::Waiting {
                wait_for: WaitFor::PlanApproval,
                since: day
            }
        );
        let qa = at("waiting_qa", None);
        assert_eq!(
            (qa.phase, qa.status.name()),
            (Phase::Requirements, "waiting")
        );
        assert_eq!(at("quick_fix", None).phase, Phase::Implementation);
        assert_eq!(
            at("implementation_complex", None).phase,
            Phase::Implementation
        );
        assert_eq!(at("quality_fix", None).phase, Phase::Quality);
        assert_eq!(at("testing_regression", None).phase, Phase::Testing);
        let done = at("done", Some("{}"));
        assert_eq!(done.status.name(), "done");
        assert_eq!(done.status.since(), Some(day));
        assert_eq!(at("implementation", Some("{}")).status, RunState::Queued);
        let unknown =
            SessionState::from_legacy_overview("x", "## Status\nPhase: deploy\n", None, now)
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("edit its Phase: line"), "{unknown}");
    }
}
