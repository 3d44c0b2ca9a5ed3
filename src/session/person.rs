//! A person's command (approve, reject, resume, stop, answer) applied to a session folder held
//! under the worker lock: the pure gate change, then the state, the history row and the Flow
//! Log line, in that order.

use jiff::Timestamp;

use super::store::{QA, SessionStore, StoreError};
use crate::protocol::SessionState;
use crate::protocol::gate::{self, GateEffect, GateError};
use crate::protocol::journal::{HistoryRow, Source};
use crate::protocol::qa::{self, QaDoc, QaError};

/// Why a person's command could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Qa(#[from] QaError),
    /// `answer` on a session that asked nothing.
    #[error("session {0} has no _qa.md: there is nothing to answer")]
    NoQuestions(String),
}

/// Which answers to fill in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answers {
    /// Every open question's `Suggested:` text.
    Suggestions,
    /// (question number, text) pairs.
    Given(Vec<(u32, String)>),
}

/// What `answer` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// Numbers of the questions still open.
    pub open: Vec<u32>,
    /// The session was waiting for these answers and may now go on.
    pub resumed: bool,
}

/// Fills `_qa.md`; when every question is answered and the session waits for answers, makes it
/// runnable again and records that.
pub fn answer(store: &SessionStore, answers: &Answers) -> Result<Answered, ActError> {
    let text = store
        .read(QA)?
        .ok_or_else(|| ActError::NoQuestions(store.name()))?;
    let filled = match answers {
        Answers::Suggestions => qa::accept_suggestions(&text)?,
        Answers::Given(pairs) => qa::fill(&text, pairs)?,
    };
    store.write_atomic(QA, filled.as_bytes())?;
    let open: Vec<u32> = QaDoc::parse(&filled).open().map(|q| q.number).collect();
    let waiting = gate::wakes_on_answers(&store.load_state()?, open.is_empty());
    if waiting {
        act(store, |state| {
            let mut effect = gate::resume(state, true)?;
            effect.verb = "answer";
            effect.flow_log = "Questions answered by a person; resuming".into();
            Ok(effect)
        })?;
    }
    Ok(Answered {
        open,
        resumed: waiting,
    })
}

/// Applies `verb` to the session's state and records it.
pub fn act(
    store: &SessionStore,
    verb: impl FnOnce(&mut SessionState) -> Result<GateEffect, GateError>,
) -> Result<SessionState, ActError> {
    let mut state = store.load_state()?;
    let from = state.phase;
    let effect = verb(&mut state)?;
    store.save(&mut state)?;
    store.append_history(&HistoryRow {
        at: Timestamp::now(),
        iteration: state.iteration,
        attempt: state.attempt,
        source: Source::Person,
        from,
        to: Some(state.phase),
        status: effect.verb.to_string(),
        accepted: true,
        reason: state.feedback.clone().filter(|_| effect.verb == "reject"),
        outcome: state.status.name().to_string(),
    })?;
    store.flow_log(state.iteration, &effect.flow_log)?;
    store.log(&effect.flow_log);
    Ok(state)
}

/// A person's command, as it travels from the CLI or the control socket to a session.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum PersonCommand {
    Approve,
    Reject { reason: String },
    Resume,
    Stop,
    Answer { answers: Answers },
}

/// Applies a person's command to a session held under its lock; returns the new state and a
/// sentence saying what happened.
pub fn apply(
    store: &SessionStore,
    command: &PersonCommand,
) -> Result<(SessionState, String), ActError> {
    let name = store.name();
    match command {
        PersonCommand::Approve => {
            let state = act(store, gate::approve)?;
            Ok((
                state,
                format!("approved the plan of {name}; next phase: implementation"),
            ))
        }
        PersonCommand::Reject { reason } => {
            let state = act(store, |s| gate::reject(s, reason))?;
            Ok((
                state,
                format!("sent the plan of {name} back to planning with your feedback"),
            ))
        }
        PersonCommand::Resume => {
            let answered = store
                .read(QA)?
                .is_some_and(|t| QaDoc::parse(&t).is_answered());
            let state = act(store, |s| gate::resume(s, answered))?;
            let phase = state.phase;
            let message = match &state.status {
                crate::protocol::RunState::Waiting { wait_for, .. } => format!(
                    "{name} was stopped at a gate that is still closed; it waits for {wait_for} again"
                ),
                _ => format!("resumed {name} in {phase}"),
            };
            Ok((state, message))
        }
        PersonCommand::Stop => {
            let state = act(store, |s| gate::stop(s, Timestamp::now()))?;
            let phase = state.phase;
            Ok((
                state,
                format!("stopped {name} in {phase}; `samocode resume {name}` continues it"),
            ))
        }
        PersonCommand::Answer { answers } => {
            let answered = answer(store, answers)?;
            let message = if answered.open.is_empty() {
                format!("all questions of {name} are answered")
            } else {
                let open: Vec<String> = answered.open.iter().map(|n| format!("Q{n}")).collect();
                format!("saved; still open: {}", open.join(", "))
            };
            Ok((store.load_state()?, message))
        }
    }
}

/// Wakes a session waiting for answers when `_qa.md` has been answered by hand; returns the new
/// state when it did.
pub fn wake_on_answers(store: &SessionStore) -> Result<Option<SessionState>, ActError> {
    let answered = store
        .read(QA)?
        .is_some_and(|t| QaDoc::parse(&t).is_answered());
    if !gate::wakes_on_answers(&store.load_state()?, answered) {
        return Ok(None);
    }
    let state = act(store, |s| {
        let mut effect = gate::resume(s, true)?;
        effect.verb = "answer";
        effect.flow_log = "Questions answered in _qa.md; resuming".into();
        Ok(effect)
    })?;
    Ok(Some(state))
}
