//! A person's command (approve, reject, resume, stop, answer) applied to a session held under
//! the worker lock: the pure gate change to the worker's state in memory, then the saved state
//! with its Flow Log line (one write of the notebook), then the history row. The state on disk
//! is never re-read here: whoever holds the lock (the SessionActor, or the CLI when no worker
//! runs) owns it.

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
    #[error("session {session} has no _qa.md: there is nothing to answer{}", if *.waiting {
        format!("; `samocode resume {session}` runs its phase again, which asks again if it still needs to")
    } else {
        String::new()
    })]
    NoQuestions { session: String, waiting: bool },
    /// `answer` that would change answers a session past its questions has used (or change
    /// nothing at all).
    #[error(
        "session {session} is not waiting for answers ({state}) and its questions were answered already: an answer given is not rewritten, since the session goes on from it; {}",
        if *.done {
            "it is done: start a new session for what is left".to_string()
        } else {
            format!("to change course, send a note with `samocode tell {session} TEXT` (its next iteration reads it)")
        }
    )]
    Used {
        session: String,
        state: String,
        /// The session is finished: no iteration would read a note.
        done: bool,
    },
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
pub fn answer(
    store: &SessionStore,
    state: &mut SessionState,
    answers: &Answers,
    by: Option<&str>,
) -> Result<Answered, ActError> {
    let text = store.read(QA)?.ok_or_else(|| ActError::NoQuestions {
        session: store.name(),
        waiting: gate::waits_for_answers(state),
    })?;
    let filled = match answers {
        Answers::Suggestions => qa::accept_suggestions(&text)?,
        Answers::Given(pairs) => qa::fill(&text, pairs)?,
    };
    // Past its questions, a session's answers are what it built on: an open question may still
    // be filled (a session blocked before the gate), an answer given is not rewritten.
    if !gate::waits_for_answers(state) {
        let before = QaDoc::parse(&text);
        let after = QaDoc::parse(&filled);
        let rewritten = before
            .questions
            .iter()
            .zip(&after.questions)
            .any(|(was, now)| was.answer.is_some() && was.answer != now.answer);
        if rewritten || filled == text {
            return Err(ActError::Used {
                session: store.name(),
                state: format!("{} in {}", state.status.name(), state.phase),
                done: matches!(state.status, crate::protocol::RunState::Done { .. }),
            });
        }
    }
    let replaced = store.write_atomic(QA, filled.as_bytes())?;
    let open: Vec<u32> = QaDoc::parse(&filled).open().map(|q| q.number).collect();
    // Waiting for them, or stopped there: answers go on as an approval of a stopped plan does.
    let waiting = open.is_empty() && gate::waits_for_answers(state);
    if waiting {
        let resumed = act(store, state, by, |state| {
            let mut effect = gate::resume(state, true)?;
            effect.verb = "answer";
            effect.flow_log = "Questions answered by a person; resuming".into();
            Ok(effect)
        });
        if let Err(error) = resumed {
            // Not saved, so not applied: the answers go too, or a watch of `_qa.md` would
            // apply them later behind the person's back.
            if gate::waits_for_answers(state) {
                let _ = store.undo_write(QA, replaced);
            }
            return Err(error);
        }
    }
    Ok(Answered {
        open,
        resumed: waiting,
    })
}

/// Applies `verb` to the state and records it. The state changes only when the new one is
/// saved, so memory and disk never disagree.
pub fn act(
    store: &SessionStore,
    state: &mut SessionState,
    by: Option<&str>,
    verb: impl FnOnce(&mut SessionState) -> Result<GateEffect, GateError>,
) -> Result<(), ActError> {
    let mut next = state.clone();
    let from = next.phase;
    let effect = verb(&mut next)?;
    // A command that parks the session anew (a stop, a resume back to a closed gate) is told
    // by whoever drives it, or by the next worker should that die first: marked untold in the
    // same save. A command that leaves the park as it was (a `tell`) changes nothing of that.
    let parked = super::open::Settled::of(&next);
    if parked.is_none() {
        next.untold = false;
    } else if parked != super::open::Settled::of(state) {
        next.untold = true;
    }
    let row = HistoryRow {
        at: Timestamp::now(),
        iteration: next.iteration,
        attempt: next.attempt,
        source: Source::Person,
        from,
        to: Some(next.phase),
        status: effect.verb.to_string(),
        accepted: true,
        reason: effect.reason.clone(),
        outcome: next.status.name().to_string(),
        by: by.map(str::to_string),
    };
    // The row is saved with the state that applies the command, so the two go to the disk
    // together: a command saved is never without its row, and one not saved has none.
    next.unsynced.unjournaled.push(row.clone());
    store.save_noting(&mut next, Some(&effect.flow_log))?;
    *state = next;
    match store.append_history(&row) {
        // In the journal now: the next save drops it from the state.
        Ok(()) => drop(state.unsynced.unjournaled.pop()),
        // Applied all the same (a full disk, say): the state keeps the row, and the next save
        // of the worker driving the session, or its next opening, journals it
        // (`SessionStore::journal_waiting`).
        Err(error) => store.log(&format!(
            "the history row of {} waits in _state.json: {error}",
            effect.verb
        )),
    }
    store.log(&effect.flow_log);
    Ok(())
}

/// A person's command, as it travels from the CLI or the control socket to a session.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum PersonCommand {
    Approve,
    Reject {
        reason: String,
    },
    Resume,
    /// Raise the session's budget (each limit given becomes its new value) and go on.
    RaiseBudget {
        budget: crate::protocol::budget::Budget,
    },
    Stop,
    Answer {
        answers: Answers,
    },
    /// A note for the next iteration; `now`: stop the running attempt and run it again with
    /// the note.
    Tell {
        text: String,
        #[serde(default)]
        now: bool,
    },
}

impl PersonCommand {
    /// The verb, as the control socket spells it (`approve`, `raise_budget`).
    pub fn verb(&self) -> &'static str {
        match self {
            PersonCommand::Approve => "approve",
            PersonCommand::Reject { .. } => "reject",
            PersonCommand::Resume => "resume",
            PersonCommand::RaiseBudget { .. } => "raise_budget",
            PersonCommand::Stop => "stop",
            PersonCommand::Answer { .. } => "answer",
            PersonCommand::Tell { .. } => "tell",
        }
    }

    /// The verb in the past, for the line that closes a notice (`approved by @ann 14:02`).
    pub fn done(&self) -> &'static str {
        match self {
            PersonCommand::Approve => "approved",
            PersonCommand::Reject { .. } => "sent back for changes",
            PersonCommand::Resume => "resumed",
            PersonCommand::RaiseBudget { .. } => "resumed with a raised budget",
            PersonCommand::Stop => "stopped",
            PersonCommand::Answer { .. } => "answered",
            PersonCommand::Tell { .. } => "told",
        }
    }
}

/// Applies a person's command to a session held under its lock; returns a sentence saying what
/// happened.
pub fn apply(
    store: &SessionStore,
    state: &mut SessionState,
    command: &PersonCommand,
    by: Option<&str>,
) -> Result<String, ActError> {
    let name = store.name();
    match command {
        PersonCommand::Approve => {
            act(store, state, by, gate::approve)?;
            Ok(format!(
                "approved the plan of {name}; next phase: implementation"
            ))
        }
        PersonCommand::Reject { reason } => {
            act(store, state, by, |s| gate::reject(s, reason))?;
            Ok(format!(
                "sent the plan of {name} back to planning with your feedback"
            ))
        }
        PersonCommand::Resume => {
            let answered = questions_answered(store)?;
            act(store, state, by, |s| gate::resume(s, answered))?;
            Ok(match &state.status {
                crate::protocol::RunState::Waiting { wait_for, .. } => format!(
                    "{name} was stopped at a gate that is still closed; it waits for {wait_for} again"
                ),
                _ => format!("resumed {name} in {}", state.phase),
            })
        }
        PersonCommand::RaiseBudget { budget } => {
            let answered = questions_answered(store)?;
            act(store, state, by, |s| gate::raise(s, budget, answered))?;
            Ok(format!(
                "raised the budget of {name}; it is {} in {}",
                state.status.name(),
                state.phase
            ))
        }
        PersonCommand::Stop => {
            act(store, state, by, |s| gate::stop(s, Timestamp::now()))?;
            Ok(format!(
                "stopped {name} in {}; `samocode resume {name}` continues it",
                state.phase
            ))
        }
        PersonCommand::Answer { answers } => {
            let answered = answer(store, state, answers, by)?;
            Ok(if answered.open.is_empty() {
                format!("all questions of {name} are answered")
            } else {
                let open: Vec<String> = answered.open.iter().map(|n| format!("Q{n}")).collect();
                format!("saved; still open: {}", open.join(", "))
            })
        }
        PersonCommand::Tell { text, .. } => {
            act(store, state, by, |s| gate::tell(s, text, Timestamp::now()))?;
            Ok(format!(
                "noted for {name}: its next iteration gets it under \"Guidance from a person\""
            ))
        }
    }
}

/// Whether a session's questions no longer hold it at its gate: all answered, or `_qa.md`
/// gone (deleted by hand: the phase runs again, and asks again if it still needs to; the
/// session could otherwise neither be answered nor resumed).
fn questions_answered(store: &SessionStore) -> Result<bool, StoreError> {
    Ok(store
        .read(QA)?
        .is_none_or(|t| QaDoc::parse(&t).is_answered()))
}

/// What a look at `_qa.md` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Every question is answered: the session was made runnable again.
    Woken,
    /// Not waiting for answers, or some are still open.
    Waits,
    /// Waiting, but a hand edit left `_qa.md` unreadable (not UTF-8, too large): why.
    Unreadable(String),
}

/// Wakes a session waiting for answers when `_qa.md` has been answered by hand.
///
/// `_qa.md` is read only while the session waits for answers; one a hand edit left unreadable
/// is not answered yet: the session keeps waiting, and the caller says why (once).
pub fn wake_on_answers(store: &SessionStore, state: &mut SessionState) -> Result<Wake, ActError> {
    wake_answered(
        store,
        state,
        "in _qa.md",
        "Questions answered in _qa.md; resuming",
    )
}

/// [`wake_on_answers`], for answers a person (`by`) gave before the session asked: while the
/// attempt that asked them still ran.
pub fn wake_answered(
    store: &SessionStore,
    state: &mut SessionState,
    by: &str,
    flow_log: &str,
) -> Result<Wake, ActError> {
    if !gate::wakes_on_answers(state, true) {
        return Ok(Wake::Waits);
    }
    let answered = match store.read(QA) {
        Ok(text) => text.is_some_and(|t| QaDoc::parse(&t).is_answered()),
        Err(error) => return Ok(Wake::Unreadable(error.to_string())),
    };
    if !answered {
        return Ok(Wake::Waits);
    }
    act(store, state, Some(by), |s| {
        let mut effect = gate::resume(s, true)?;
        effect.verb = "answer";
        effect.flow_log = flow_log.into();
        Ok(effect)
    })?;
    Ok(Wake::Woken)
}

impl ActError {
    /// The exit code of the CLI for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ActError::Store(StoreError::Io { .. }) => 1,
            ActError::Store(StoreError::Locked { .. }) => 12,
            _ => 2,
        }
    }
}

/// Why `_qa.md` cannot be read, while the session waits for answers in it.
pub fn unreadable_answers(store: &SessionStore, state: &SessionState) -> Option<String> {
    if !gate::wakes_on_answers(state, true) {
        return None;
    }
    store.read(QA).err().map(|error| error.to_string())
}

/// Says, in the session's log and the daemon's, why the answers in `_qa.md` cannot be read.
pub fn say_unreadable(store: &SessionStore, why: &str) {
    tracing::warn!(session = %store.name(), error = %why, "the answers in _qa.md cannot be read; still waiting for them");
    store.log(&format!("still waiting for answers: {why}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Phase, RunState, WaitFor};

    /// A command that parks the session anew (a stop, a resume back to its closed gate) is
    /// saved marked untold, for whoever drives it (or the next worker) to tell; one that leaves
    /// the park as it was is not (a kill after a person's stop lost its notice: found by the
    /// re-test).
    #[test]
    fn a_command_that_parks_the_session_anew_marks_it_untold() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let mut state = SessionState::new("26-11-24-x", "d", "t", Timestamp::now());
        state.phase = Phase::Planning;
        state.status = RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            since: Timestamp::now(),
        };
        store.save(&mut state).unwrap();
        let tell = PersonCommand::Tell {
            text: "use the cache".into(),
            now: false,
        };
        apply(&store, &mut state, &tell, None).unwrap();
        assert!(
            !store.load_state().unwrap().untold,
            "a note parks nothing anew"
        );
        apply(&store, &mut state, &PersonCommand::Stop, None).unwrap();
        let saved = store.load_state().unwrap();
        assert!(matches!(saved.status, RunState::Stopped { .. }));
        assert!(saved.untold, "the stop is to be told");
        state.untold = false;
        apply(&store, &mut state, &PersonCommand::Resume, None).unwrap();
        let saved = store.load_state().unwrap();
        assert!(matches!(saved.status, RunState::Waiting { .. }));
        assert!(saved.untold, "back at its gate: to be told");
        apply(&store, &mut state, &PersonCommand::Approve, None).unwrap();
        assert!(
            !store.load_state().unwrap().untold,
            "runnable: nothing to tell"
        );
    }
}
