//! The events of a session that people hear about, and the line each makes in the log.

use crate::protocol::Phase;
use crate::session::open::Settled;

/// Something that happened to a session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    AttemptStarted {
        session: String,
        phase: Phase,
        iteration: u32,
        attempt: u32,
    },
    AttemptFailed {
        session: String,
        attempt: u32,
        detail: String,
    },
    Settled {
        session: String,
        phase: Phase,
        settled: Settled,
        /// The open questions, when it waits for answers (a notice offers their options).
        questions: Vec<Asked>,
        /// What the person is asked for, in the agent's words: the notebook's `Next:` when it
        /// waits for a person's action, what it needs when it is blocked.
        ask: Option<String>,
        /// The park, as its buttons name it (`session::actor::park_of`), so that a press of
        /// this message's button is refused once the session is parked otherwise.
        park: Option<i64>,
    },
    /// The provider refused an attempt for a usage limit; the session runs again at `until`.
    UsageLimited {
        session: String,
        until: jiff::Timestamp,
    },
    /// The session could not be opened again after its actor ended; a person must look.
    Broken {
        session: String,
        phase: Option<Phase>,
        reason: String,
    },
    /// The daemon's sessions together reached the fleet budget: new attempts wait until it is
    /// raised. Told once per time it is reached.
    FleetBudgetReached { spent_usd: f64, limit_usd: f64 },
    /// The session left the condition its last notice told of (a gate passed, a resume):
    /// `line` says what happened, by whom and when (`approved by @ann 14:02`).
    Unparked { session: String, line: String },
}

/// A question of `_qa.md` as a notice shows it: its round and number, its text, its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// 1 for `# Questions`, N for `# Round N`: a later round may number its questions again.
    pub round: u32,
    pub number: u32,
    pub text: String,
    pub options: Vec<String>,
    pub suggested: Option<String>,
}

impl SessionEvent {
    /// One line a person reads.
    pub fn headline(&self) -> String {
        match self {
            SessionEvent::AttemptStarted {
                session,
                phase,
                iteration,
                attempt,
            } => {
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("{session}: iteration {iteration}, {phase}{retry}")
            }
            SessionEvent::AttemptFailed {
                session,
                attempt,
                detail,
            } => format!("{session}: attempt {attempt} failed: {detail}"),
            SessionEvent::Broken {
                session,
                phase,
                reason,
            } => match phase {
                Some(phase) => format!("{session}: failed in {phase}: {reason}"),
                None => format!("{session}: failed: {reason}"),
            },
            SessionEvent::Unparked { session, line } => format!("{session}: {line}"),
            SessionEvent::FleetBudgetReached {
                spent_usd,
                limit_usd,
            } => format!(
                "fleet budget reached: {} of {}; new attempts of every session wait (`samocode resume --raise-budget cost=N` lifts it)",
                crate::protocol::budget::money(*spent_usd),
                crate::protocol::budget::money(*limit_usd)
            ),
            SessionEvent::UsageLimited { session, until } => {
                format!("{session}: the provider's usage limit is reached; it resumes at {until}")
            }
            SessionEvent::Settled {
                session,
                phase,
                settled,
                ..
            } => match settled {
                Settled::Done { summary } => format!(
                    "{session}: done{}",
                    summary
                        .as_deref()
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ),
                Settled::Waiting { wait_for } => {
                    format!("{session}: waiting for {wait_for} in {phase}")
                }
                Settled::Blocked { reason } => format!("{session}: blocked in {phase}: {reason}"),
                Settled::Failed { reason } => format!("{session}: failed in {phase}: {reason}"),
                Settled::Stopped => format!("{session}: stopped in {phase}"),
                Settled::Continued { phase } => {
                    format!("{session}: iteration accepted; next phase {phase}")
                }
            },
        }
    }
}
