//! What a person can do to a session (PROTOCOL.md section 6), as pure state changes.
//!
//! The same verbs serve every layer: `samocode approve` acting on the files, the daemon's
//! `SupervisorMsg::Approve`, the bot's `/approve`. Each returns the history `status` word and
//! the Flow Log line to record.

use jiff::Timestamp;

use super::budget::{self, Budget, Limit, Spent};
use super::phase::{Phase, WaitFor};
use super::state::{Guidance, RunState, SessionState};

/// Why a person's command does not apply to the session as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// approve/reject on a session that is not waiting for plan approval.
    #[error("session {name} is not waiting for plan approval (it is {state} in {phase}){hint}")]
    NotAwaitingApproval {
        name: String,
        state: &'static str,
        phase: Phase,
        /// What the person can do instead, when there is something.
        hint: String,
    },
    /// resume on a session waiting for approval or answers.
    #[error("session {name} waits for {wait_for}: {hint}")]
    NeedsOtherCommand {
        name: String,
        wait_for: WaitFor,
        hint: &'static str,
    },
    /// A command on a finished session.
    #[error("session {0} is done; start a new session for more work")]
    Finished(String),
    /// resume on a session that is already queued or running.
    #[error("session {name} is already {state}; nothing to resume")]
    NotParked { name: String, state: &'static str },
    /// stop on a blocked or failed session: nothing runs, and the session already waits for
    /// a person's `resume` (a stop would have forgotten why it waits).
    #[error(
        "session {name} is {state} already ({reason}): nothing runs to stop; mend the cause, then `samocode resume {name}`"
    )]
    AlreadyHeld {
        name: String,
        state: &'static str,
        reason: String,
    },
    /// stop on a stopped session: it stays as it was stopped (its notice and its buttons with
    /// it; a stop again would have told people again and made those buttons stale).
    #[error("session {name} is stopped already; `samocode resume {name}` continues it")]
    AlreadyStopped { name: String },
    /// reject without a reason.
    #[error("reject needs a reason (--reason TEXT) for the planning agent to act on")]
    EmptyReason,
    /// tell without a note.
    #[error("tell needs the text of the note for the agent")]
    EmptyNote,
    /// A raise to a limit the session has already spent.
    #[error(
        "--raise-budget {word}={value} is not above the {spent} session {name} has already spent; give a higher {word}"
    )]
    RaiseTooLow {
        name: String,
        word: &'static str,
        value: String,
        spent: String,
    },
    /// --raise-budget with nothing to raise.
    #[error("--raise-budget needs WORD=VALUE (cost=40, iterations=80, time=10h)")]
    EmptyRaise,
    /// A note or a reason longer than the session's files take from a person.
    #[error(
        "the {what} is {bytes} bytes, over the limit of {max} bytes: put a long text in a file in the repository and {verb} the session where it is"
    )]
    TooLong {
        what: &'static str,
        verb: &'static str,
        bytes: usize,
        max: usize,
    },
    /// tell while as many notes as a session keeps already wait for its next iteration.
    #[error(
        "session {name} already has {max} notes waiting for its next iteration; let an iteration take them first"
    )]
    TooManyNotes { name: String, max: usize },
}

/// The longest note (`tell`) or reject reason a person may give, in bytes: it is kept in
/// `_state.json` until used and copied into the Flow Log, and both files have a size cap.
pub const MAX_PERSON_TEXT: usize = 16 * 1024;
/// The most notes that wait for a session's next iteration at once.
pub const MAX_NOTES: usize = 20;

fn within_limit(text: &str, what: &'static str, verb: &'static str) -> Result<(), GateError> {
    if text.len() > MAX_PERSON_TEXT {
        return Err(GateError::TooLong {
            what,
            verb,
            bytes: text.len(),
            max: MAX_PERSON_TEXT,
        });
    }
    Ok(())
}

/// What a gate change did, for the journals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateEffect {
    /// The verb for `_signal_history.jsonl` (approve, reject, resume, stop, answer).
    pub verb: &'static str,
    /// The line for the Flow Log.
    pub flow_log: String,
    /// The text that goes with it in the history (a rejection's feedback, a note).
    pub reason: Option<String>,
}

/// Crosses the plan gate: planning becomes implementation.
pub fn approve(state: &mut SessionState) -> Result<GateEffect, GateError> {
    expect_plan_approval(state)?;
    state.enter_phase(Phase::Implementation);
    state.feedback = None;
    requeue(state);
    Ok(GateEffect {
        verb: "approve",
        flow_log: "Plan approved by a person; moving to implementation".into(),
        reason: None,
    })
}

/// Sends the plan back to planning with the person's feedback.
pub fn reject(state: &mut SessionState, reason: &str) -> Result<GateEffect, GateError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(GateError::EmptyReason);
    }
    within_limit(reason, "reason", "tell")?;
    expect_plan_approval(state)?;
    state.feedback = Some(reason.to_string());
    // A person answered the plan: planning's count starts afresh (ten rejections in a row
    // met its limit).
    state.phase_iteration = 0;
    requeue(state);
    Ok(GateEffect {
        verb: "reject",
        flow_log: format!("Plan rejected by a person: {reason}"),
        reason: Some(reason.to_string()),
    })
}

/// Continues a parked session: blocked, failed, stopped, waiting for human action, or waiting
/// for answers that are now all given (`qa_answered`). A blocked or failed phase gets a fresh
/// iteration budget, since a person decided it should go on. A session stopped at a gate
/// goes back to that gate while it is still closed (questions open, a plan to approve): no
/// attempt runs past it.
pub fn resume(state: &mut SessionState, qa_answered: bool) -> Result<GateEffect, GateError> {
    let name = state.name.clone();
    if let RunState::Stopped {
        waiting_for: Some(wait_for),
        ..
    } = state.status
    {
        let still_closed = match wait_for {
            WaitFor::QaAnswers => !qa_answered,
            WaitFor::PlanApproval => true,
            WaitFor::HumanAction => false,
        };
        if still_closed {
            state.status = RunState::Waiting {
                wait_for,
                since: Timestamp::now(),
            };
            return Ok(GateEffect {
                verb: "resume",
                flow_log: format!("Resumed by a person; waiting for {wait_for} again"),
                reason: None,
            });
        }
    }
    match &state.status {
        RunState::Done { .. } => return Err(GateError::Finished(name)),
        // Parked for a provider's usage limit: a person says try now.
        RunState::Queued if state.not_before.is_some() => {}
        RunState::Queued | RunState::Running => {
            return Err(GateError::NotParked {
                name,
                state: state.status.name(),
            });
        }
        RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            ..
        } => {
            return Err(GateError::NeedsOtherCommand {
                name,
                wait_for: WaitFor::PlanApproval,
                hint: "use `samocode approve` or `samocode reject --reason TEXT`",
            });
        }
        RunState::Waiting {
            wait_for: WaitFor::QaAnswers,
            ..
        } if !qa_answered => {
            return Err(GateError::NeedsOtherCommand {
                name,
                wait_for: WaitFor::QaAnswers,
                hint: "answer every question in _qa.md first (`samocode answer`)",
            });
        }
        RunState::Blocked { reason, .. } | RunState::Failed { reason, .. } => {
            state.phase_iteration = 0;
            // The next attempt learns why the session stopped, as the person did.
            state.last_failure = Some(format!(
                "the session was {}: {reason}; a person resumed it",
                state.status.name()
            ));
        }
        RunState::Waiting { .. } | RunState::Stopped { .. } => {}
    }
    // A stop that ended an attempt before its verdict (or a retry it was waiting for) leaves
    // the iteration unfinished: it goes on with its next attempt, and counts once.
    // So does a wait for a provider's usage limit to reset: the refused attempt is retried.
    let unfinished = matches!(state.status, RunState::Stopped { .. })
        || (state.status == RunState::Queued && state.not_before.is_some());
    let unfinished = unfinished.then_some(state.attempt);
    requeue(state);
    if let Some(attempt) = unfinished {
        state.attempt = attempt;
    }
    Ok(GateEffect {
        verb: "resume",
        flow_log: "Resumed by a person".into(),
        reason: None,
    })
}

/// Raises a session's budget (each limit given becomes its new value), then continues it as
/// [`resume`] does when it is parked; a running session only gets the higher limits.
pub fn raise(
    state: &mut SessionState,
    raise: &Budget,
    qa_answered: bool,
) -> Result<GateEffect, GateError> {
    if raise.is_empty() {
        return Err(GateError::EmptyRaise);
    }
    if matches!(state.status, RunState::Done { .. }) {
        return Err(GateError::Finished(state.name.clone()));
    }
    let spent = Spent::of(state);
    let too_low = |limit: Limit, spent: String| GateError::RaiseTooLow {
        name: state.name.clone(),
        word: limit.word(),
        value: raise.show(limit).unwrap_or_default(),
        spent,
    };
    if let Some(cost) = raise.cost_usd
        && budget::cost_reached(spent.cost_usd, cost)
    {
        return Err(too_low(Limit::Cost, budget::money(spent.cost_usd)));
    }
    if let Some(iterations) = raise.iterations
        && iterations <= spent.iterations
    {
        return Err(too_low(
            Limit::Iterations,
            format!("{} iterations", spent.iterations),
        ));
    }
    if let Some(time) = raise.time_secs
        && time as f64 <= spent.seconds
    {
        let took = std::time::Duration::from_secs(spent.seconds as u64);
        return Err(too_low(
            Limit::Time,
            humantime::format_duration(took).to_string(),
        ));
    }
    state.budget = state.budget.merged(raise);
    let text = [Limit::Cost, Limit::Iterations, Limit::Time]
        .iter()
        .filter_map(|l| raise.show(*l).map(|v| format!("{} {v}", l.word())))
        .collect::<Vec<_>>()
        .join(", ");
    // A session waiting at a gate keeps waiting there; one that runs keeps running.
    let parked = match state.status {
        RunState::Blocked { .. } | RunState::Failed { .. } | RunState::Stopped { .. } => true,
        RunState::Queued => state.not_before.is_some(),
        _ => false,
    };
    let flow_log = if parked {
        resume(state, qa_answered)?;
        format!("Budget raised by a person: {text}; resuming")
    } else {
        format!("Budget raised by a person: {text}")
    };
    Ok(GateEffect {
        verb: "raise_budget",
        flow_log,
        reason: Some(text),
    })
}

/// Parks a session until `resume`, remembering the gate it was waiting at.
pub fn stop(state: &mut SessionState, now: Timestamp) -> Result<GateEffect, GateError> {
    let waiting_for = match &state.status {
        RunState::Done { .. } => return Err(GateError::Finished(state.name.clone())),
        // Not `stoppable`: said with the reason it waits for.
        RunState::Blocked { reason, .. } | RunState::Failed { reason, .. } => {
            return Err(GateError::AlreadyHeld {
                name: state.name.clone(),
                state: state.status.name(),
                reason: reason.clone(),
            });
        }
        RunState::Waiting { wait_for, .. } => Some(*wait_for),
        RunState::Stopped { .. } => {
            return Err(GateError::AlreadyStopped {
                name: state.name.clone(),
            });
        }
        _ => None,
    };
    state.status = RunState::Stopped {
        at: now,
        waiting_for,
    };
    // A stopped session waits for a person, not for a usage limit to reset.
    state.not_before = None;
    Ok(GateEffect {
        verb: "stop",
        flow_log: "Stopped by a person".into(),
        reason: None,
    })
}

/// Keeps a person's note for the session's next iteration (`samocode tell`). It is shown to
/// the agent under `## Guidance from a person` until an iteration that saw it is accepted.
pub fn tell(state: &mut SessionState, text: &str, now: Timestamp) -> Result<GateEffect, GateError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(GateError::EmptyNote);
    }
    within_limit(text, "note", "tell")?;
    if matches!(state.status, RunState::Done { .. }) {
        return Err(GateError::Finished(state.name.clone()));
    }
    if state.guidance.len() >= MAX_NOTES {
        return Err(GateError::TooManyNotes {
            name: state.name.clone(),
            max: MAX_NOTES,
        });
    }
    state.guidance.push(Guidance {
        text: text.to_string(),
        at: now,
    });
    Ok(GateEffect {
        verb: "tell",
        // The whole note goes to the next iteration; the notebook keeps its start (twenty
        // long notes there pushed it past what samocode reads).
        flow_log: format!(
            "Guidance from a person: {}",
            match text.chars().count() {
                n if n > 300 => format!(
                    "{} [{n} characters; its next iteration gets them all]",
                    super::shorten(text, 300)
                ),
                _ => text.to_string(),
            }
        ),
        reason: Some(text.to_string()),
    })
}

/// True while the session waits for answers, also when stopped there.
pub fn waits_for_answers(state: &SessionState) -> bool {
    matches!(
        state.status,
        RunState::Waiting {
            wait_for: WaitFor::QaAnswers,
            ..
        } | RunState::Stopped {
            waiting_for: Some(WaitFor::QaAnswers),
            ..
        }
    )
}

/// True when a session waiting for answers may go on because `_qa.md` is answered.
pub fn wakes_on_answers(state: &SessionState, qa_answered: bool) -> bool {
    qa_answered
        && matches!(
            state.status,
            RunState::Waiting {
                wait_for: WaitFor::QaAnswers,
                ..
            }
        )
}

fn expect_plan_approval(state: &SessionState) -> Result<(), GateError> {
    match state.status {
        RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            ..
        }
        | RunState::Stopped {
            waiting_for: Some(WaitFor::PlanApproval),
            ..
        } if state.phase == Phase::Planning => Ok(()),
        _ => Err(GateError::NotAwaitingApproval {
            name: state.name.clone(),
            state: state.status.name(),
            phase: state.phase,
            hint: instead_of_approval(state),
        }),
    }
}

/// What a person can do with a session they meant to approve or reject, in its state.
fn instead_of_approval(state: &SessionState) -> String {
    let name = &state.name;
    match &state.status {
        RunState::Waiting {
            wait_for: WaitFor::QaAnswers,
            ..
        }
        | RunState::Stopped {
            waiting_for: Some(WaitFor::QaAnswers),
            ..
        } => format!(
            "; it waits for answers to its questions: `samocode answer {name} --q N TEXT` or `--accept-suggestions`"
        ),
        RunState::Waiting {
            wait_for: WaitFor::HumanAction,
            ..
        } => format!("; it waits for a person's action: do it, then `samocode resume {name}`"),
        RunState::Queued | RunState::Running if state.phase <= Phase::Planning => {
            "; it runs, and waits for approval once its plan is written".into()
        }
        RunState::Blocked { .. } | RunState::Failed { .. } | RunState::Stopped { .. } => {
            format!("; `samocode status {name}` says why, and `samocode resume {name}` goes on")
        }
        _ => String::new(),
    }
}

/// Ready for a fresh iteration.
fn requeue(state: &mut SessionState) {
    state.person_acted();
    state.status = RunState::Queued;
    state.attempt = 0;
    state.failures = 0;
    state.last_rejection = None;
    state.not_before = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(phase: Phase, wait_for: WaitFor) -> SessionState {
        let now = Timestamp::now();
        let mut state = SessionState::new("s", "d", "t", now);
        state.enter_phase(phase);
        state.phase_iteration = 3;
        state.attempt = 1;
        state.status = RunState::Waiting {
            wait_for,
            since: now,
        };
        state
    }

    /// The whole note is kept for the next iteration; the notebook gets its start (twenty notes
    /// of 16 KiB, copied whole, pushed it past what samocode reads).
    #[test]
    fn a_long_note_is_kept_whole_and_logged_in_short() {
        let now = Timestamp::now();
        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        let long = "ж".repeat(MAX_PERSON_TEXT / 2);
        let effect = tell(&mut state, &long, now).unwrap();
        assert_eq!(state.guidance[0].text, long);
        assert!(effect.flow_log.chars().count() < 400, "{}", effect.flow_log);
        assert!(effect.flow_log.ends_with(&format!(
            "[{} characters; its next iteration gets them all]",
            MAX_PERSON_TEXT / 2
        )));
    }

    #[test]
    fn notes_and_reasons_are_capped_so_the_state_stays_readable() {
        let now = Timestamp::now();
        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        let long = "a".repeat(MAX_PERSON_TEXT + 1);
        let error = tell(&mut state, &long, now).unwrap_err();
        assert!(
            error.to_string().contains(&format!(
                "the note is {} bytes, over the limit of {MAX_PERSON_TEXT} bytes: put a long text in a file",
                MAX_PERSON_TEXT + 1
            )),
            "{error}"
        );
        assert!(matches!(
            reject(&mut state, &long),
            Err(GateError::TooLong { what: "reason", .. })
        ));
        assert!(state.guidance.is_empty() && state.feedback.is_none());
        let full = "b".repeat(MAX_PERSON_TEXT);
        for _ in 0..MAX_NOTES {
            tell(&mut state, &full, now).unwrap();
        }
        let error = tell(&mut state, "one more", now).unwrap_err();
        assert!(
            error.to_string().contains("already has 20 notes waiting"),
            "{error}"
        );
        assert_eq!(state.guidance.len(), MAX_NOTES);
        // The most a person can leave in the state stays far under its 4 MiB cap.
        let bytes = serde_json::to_string(&state).unwrap().len();
        assert!(bytes < 1024 * 1024, "{bytes}");
    }

    #[test]
    fn a_stop_during_an_attempt_then_resume_goes_on_with_the_same_iteration() {
        let now = Timestamp::now();
        let mut state = waiting(Phase::Implementation, WaitFor::HumanAction);
        state.iteration = 7;
        state.attempt = 2;
        state.status = RunState::Running;
        stop(&mut state, now).unwrap();
        resume(&mut state, false).unwrap();
        assert_eq!(state.status, RunState::Queued);
        assert_eq!(
            (state.iteration, state.attempt),
            (7, 2),
            "the next launch is attempt 3"
        );
        // Blocked and resumed: a fresh iteration.
        state.status = RunState::Blocked {
            reason: "r".into(),
            needs: None,
            since: now,
        };
        resume(&mut state, false).unwrap();
        assert_eq!(state.attempt, 0);
        // Waiting out a usage limit, resumed: the refused attempt's iteration goes on.
        state.attempt = 1;
        state.status = RunState::Queued;
        state.not_before = Some(now);
        resume(&mut state, false).unwrap();
        assert_eq!((state.attempt, state.not_before), (1, None));
    }

    /// A blocked session stopped and resumed was "resumed" past its block (a budget reached,
    /// a phase's iterations used up), then blocked again at once: stop forgot why it waited.
    #[test]
    fn a_blocked_or_failed_session_is_not_stopped_and_keeps_why_it_waits() {
        let now = Timestamp::now();
        for status in [
            RunState::Blocked {
                reason: "cost budget reached: $0.02 of $0.01".into(),
                needs: None,
                since: now,
            },
            RunState::Failed {
                reason: "3 attempts failed".into(),
                at: now,
            },
        ] {
            let mut state = waiting(Phase::Implementation, WaitFor::HumanAction);
            state.status = status.clone();
            let error = stop(&mut state, now).unwrap_err().to_string();
            assert!(
                error.contains(&format!("is {} already (", status.name()))
                    && error.contains("nothing runs to stop")
                    && error.contains("samocode resume"),
                "{error}"
            );
            assert_eq!(state.status, status);
        }
    }

    #[test]
    fn approve_crosses_the_gate_and_reject_stays() {
        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        approve(&mut state).unwrap();
        assert_eq!(state.phase, Phase::Implementation);
        assert_eq!(state.phase_iteration, 0);
        assert_eq!(state.status, RunState::Queued);
        assert!(matches!(
            approve(&mut state),
            Err(GateError::NotAwaitingApproval { .. })
        ));
        // A refusal says what the session waits for instead, with the command for it.
        let mut asking = waiting(Phase::Requirements, WaitFor::QaAnswers);
        let said = approve(&mut asking).unwrap_err().to_string();
        assert!(said.contains("`samocode answer s --q N TEXT`"), "{said}");
        let mut acting = waiting(Phase::Implementation, WaitFor::HumanAction);
        let said = reject(&mut acting, "no").unwrap_err().to_string();
        assert!(said.contains("then `samocode resume s`"), "{said}");

        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        state.phase_iteration = 9;
        assert_eq!(reject(&mut state, " "), Err(GateError::EmptyReason));
        let effect = reject(&mut state, "split step 2").unwrap();
        assert_eq!(state.phase, Phase::Planning);
        // A person answered the plan: planning's count starts afresh (ten rejections in a row
        // met its limit of ten).
        assert_eq!(state.phase_iteration, 0);
        assert_eq!(state.feedback.as_deref(), Some("split step 2"));
        assert!(effect.flow_log.contains("split step 2"));
    }

    #[test]
    fn resume_knows_what_each_wait_needs() {
        let mut state = waiting(Phase::Requirements, WaitFor::QaAnswers);
        assert!(matches!(
            resume(&mut state, false),
            Err(GateError::NeedsOtherCommand { .. })
        ));
        assert!(wakes_on_answers(&state, true));
        resume(&mut state, true).unwrap();
        assert_eq!(state.status, RunState::Queued);

        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        let err = resume(&mut state, true).unwrap_err();
        assert!(err.to_string().contains("samocode approve"), "{err}");

        let mut state = waiting(Phase::Testing, WaitFor::HumanAction);
        state.status = RunState::Blocked {
            reason: "iteration_limit_exceeded".into(),
            needs: None,
            since: Timestamp::now(),
        };
        resume(&mut state, false).unwrap();
        assert_eq!(state.phase_iteration, 0);
        assert!(matches!(
            resume(&mut state, false),
            Err(GateError::NotParked { .. })
        ));

        stop(&mut state, Timestamp::now()).unwrap();
        assert_eq!(state.status.name(), "stopped");
        resume(&mut state, false).unwrap();

        // Queued for a usage limit's reset: resume runs it now, as a new attempt of the same
        // iteration (the launch numbers it 3); so does a stop and resume.
        state.attempt = 2;
        state.not_before = Some(Timestamp::now() + jiff::SignedDuration::from_hours(3));
        resume(&mut state, false).unwrap();
        assert_eq!((state.not_before, state.attempt), (None, 2));
        assert!(matches!(
            resume(&mut state, false),
            Err(GateError::NotParked { .. })
        ));
        state.not_before = Some(Timestamp::now() + jiff::SignedDuration::from_hours(3));
        stop(&mut state, Timestamp::now()).unwrap();
        assert_eq!(state.not_before, None);
    }

    #[test]
    fn a_stopped_gate_stays_closed_on_resume() {
        // Stopped while waiting for answers: resume with questions open waits again, it does
        // not queue a paid attempt; once they are answered, it runs.
        let mut state = waiting(Phase::Requirements, WaitFor::QaAnswers);
        stop(&mut state, Timestamp::now()).unwrap();
        assert_eq!(
            state.status,
            RunState::Stopped {
                at: match state.status {
                    RunState::Stopped { at, .. } => at,
                    _ => unreachable!(),
                },
                waiting_for: Some(WaitFor::QaAnswers)
            }
        );
        let effect = resume(&mut state, false).unwrap();
        assert!(!state.status.is_runnable());
        assert!(matches!(
            state.status,
            RunState::Waiting {
                wait_for: WaitFor::QaAnswers,
                ..
            }
        ));
        assert!(
            effect.flow_log.contains("waiting for qa_answers"),
            "{effect:?}"
        );
        stop(&mut state, Timestamp::now()).unwrap();
        resume(&mut state, true).unwrap();
        assert_eq!(state.status, RunState::Queued);

        // Stopped at the plan gate: approve still works, and resume goes back to the gate.
        let mut state = waiting(Phase::Planning, WaitFor::PlanApproval);
        stop(&mut state, Timestamp::now()).unwrap();
        // A second stop changes nothing, and says how to go on.
        let stopped = state.status.clone();
        let again = stop(&mut state, Timestamp::now()).unwrap_err().to_string();
        assert!(
            again.contains("stopped already") && again.contains("`samocode resume s`"),
            "{again}"
        );
        assert_eq!(state.status, stopped);
        resume(&mut state, true).unwrap();
        assert!(matches!(state.status, RunState::Waiting { .. }));
        stop(&mut state, Timestamp::now()).unwrap();
        approve(&mut state).unwrap();
        assert_eq!(state.phase, Phase::Implementation);

        // Stopped while waiting for a person's action: resume is that person saying done.
        let mut state = waiting(Phase::Implementation, WaitFor::HumanAction);
        stop(&mut state, Timestamp::now()).unwrap();
        resume(&mut state, false).unwrap();
        assert_eq!(state.status, RunState::Queued);
    }

    #[test]
    fn a_raise_resumes_a_blocked_session_keeps_a_gate_waiting_and_refuses_a_cut() {
        let now = Timestamp::now();
        let mut state = SessionState::new("s", "d", "t", now);
        state.phase = Phase::Implementation;
        state.phase_iteration = 7;
        state.usage.cost_usd = 20.31;
        state.status = RunState::Blocked {
            reason: "cost budget reached: $20.31 of $20.00".into(),
            needs: Some(super::super::Needs::HumanDecision),
            since: now,
        };
        let raise = Budget {
            cost_usd: Some(40.0),
            ..Budget::default()
        };
        let effect = super::raise(&mut state, &raise, false).unwrap();
        assert_eq!(effect.verb, "raise_budget");
        assert_eq!(
            effect.flow_log,
            "Budget raised by a person: cost $40.00; resuming"
        );
        assert_eq!(state.status, RunState::Queued);
        assert_eq!(state.budget.cost_usd, Some(40.0));

        let cut = Budget {
            cost_usd: Some(20.0),
            ..Budget::default()
        };
        let error = super::raise(&mut state, &cut, false).unwrap_err();
        assert!(
            error.to_string().contains("not above the $20.31"),
            "{error}"
        );
        assert_eq!(
            super::raise(&mut state, &Budget::default(), false),
            Err(GateError::EmptyRaise)
        );

        let mut gate = waiting(Phase::Planning, WaitFor::PlanApproval);
        super::raise(&mut gate, &raise, false).unwrap();
        assert!(
            matches!(gate.status, RunState::Waiting { .. }),
            "still at its gate"
        );
    }
}
