//! `_signal.json`: parsing (PROTOCOL.md section 4) and validation against the phase table.
//!
//! Parsing failures are protocol errors (the attempt is retried once); a well-formed signal that
//! breaks a rule is a [`Rejection`] (the session is blocked). Both carry a stable code for the
//! history and a sentence for people.

use serde_json::{Map, Value};

use super::phase::{Needs, Phase, Status, UnknownWord, WaitFor};

/// A well-formed signal, exactly as the agent wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub status: Status,
    /// The phase to run next (continue) or the phase the agent believes it is in.
    pub phase: Option<Phase>,
    pub wait_for: Option<WaitFor>,
    pub reason: Option<String>,
    pub needs: Option<Needs>,
    pub summary: Option<String>,
}

/// Why a signal file could not be read as a signal (a protocol error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The agent exited cleanly without writing `_signal.json`.
    #[error("the agent wrote no _signal.json")]
    Missing,
    /// The file is a pipe, a link, a directory, too large or not UTF-8: nothing was read.
    #[error("_signal.json cannot be used: {0}")]
    Unreadable(String),
    /// The file is empty or only white space.
    #[error("_signal.json is empty")]
    Empty,
    /// The file is not JSON.
    #[error("_signal.json is not valid JSON: {0}")]
    BadJson(String),
    /// The JSON is not an object.
    #[error("_signal.json must be a JSON object, found {0}")]
    NotObject(&'static str),
    /// `{}`: the Python samocode read this as continue; we do not.
    #[error("_signal.json is an empty object; it must at least name a status")]
    EmptyObject,
    /// No `status` field.
    #[error("_signal.json has no \"status\"")]
    MissingStatus,
    /// A field that must be a string is something else.
    #[error("\"{0}\" in _signal.json must be a string")]
    NotString(&'static str),
    /// A word that is not in the protocol.
    #[error("_signal.json: {0}")]
    Unknown(#[from] UnknownWord),
    /// `continue` without the phase to run next.
    #[error("a continue signal must name the \"phase\" to run next")]
    ContinueWithoutPhase,
    /// `waiting` without what it waits for.
    #[error(
        "a waiting signal must say what it waits \"for\" (qa_answers, plan_approval or human_action)"
    )]
    WaitingWithoutFor,
}

impl SignalError {
    /// A stable code for `_signal_history.jsonl`.
    pub fn code(&self) -> &'static str {
        match self {
            SignalError::Missing => "missing_signal",
            SignalError::Unreadable(_) => "unreadable_signal",
            _ => "malformed_signal",
        }
    }
}

/// Why a well-formed signal is refused (the session is blocked with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The status is not in the phase's row.
    #[error("status {status} is not allowed in the {phase} phase")]
    StatusNotAllowed { status: Status, phase: Phase },
    /// The phase named by continue is not reachable from the current one.
    #[error("the {from} phase may not move to {to}")]
    TransitionNotAllowed { from: Phase, to: Phase },
    /// The wait reason does not belong to this phase.
    #[error("the {phase} phase may not wait for {wait}")]
    WaitNotAllowed { wait: WaitFor, phase: Phase },
    /// A waiting signal names another phase.
    #[error("a waiting signal must keep the phase {current}, not {named}")]
    WaitingMovesPhase { current: Phase, named: Phase },
    /// A blocked signal names another phase.
    #[error("a blocked signal must keep the phase {current}, not {named}")]
    BlockedMovesPhase { current: Phase, named: Phase },
    /// Status done naming another phase than done (the status check already refused done
    /// outside the done phase).
    #[error("a done signal must name the done phase, not {named}")]
    DoneOutsideDone { named: Phase },
    /// `continue` from planning to implementation: only `approve` crosses the plan gate.
    #[error(
        "planning may move to implementation only through a person's approval (samocode approve), not by a continue signal"
    )]
    PlanGate,
    /// A read-only phase (testing) changed tracked files of the worktree.
    #[error("{0}")]
    WorktreeMutated(super::baseline::Mutation),
}

impl Rejection {
    /// A stable code for `_signal_history.jsonl`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::StatusNotAllowed { .. } => "status_not_allowed",
            Rejection::TransitionNotAllowed { .. } => "transition_not_allowed",
            Rejection::WaitNotAllowed { .. } => "wait_not_allowed",
            Rejection::WaitingMovesPhase { .. } => "waiting_moves_phase",
            Rejection::BlockedMovesPhase { .. } => "blocked_moves_phase",
            Rejection::DoneOutsideDone { .. } => "done_outside_done",
            Rejection::PlanGate => "plan_gate",
            Rejection::WorktreeMutated(_) => "worktree_mutated",
        }
    }
}

/// What an accepted signal asks the worker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run another iteration in `to` (equal to the current phase: stay).
    Continue { to: Phase },
    /// Park until a person acts.
    Wait { wait_for: WaitFor },
    /// Park until a person resumes.
    Block {
        reason: String,
        needs: Option<Needs>,
    },
    /// The session is finished.
    Finish { summary: Option<String> },
}

impl Signal {
    /// Parses the text of `_signal.json`. Unknown fields are ignored.
    pub fn parse(text: &str) -> Result<Signal, SignalError> {
        // A byte order mark is JSON's to ignore (RFC 8259, 8.1); an editor may write one.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(SignalError::Empty);
        }
        if text.contains('\0') {
            return Err(SignalError::BadJson(
                "it holds NUL bytes, as UTF-16 text does: write it as UTF-8".into(),
            ));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| SignalError::BadJson(e.to_string()))?;
        let object = match value {
            Value::Object(object) => object,
            Value::Array(_) => return Err(SignalError::NotObject("an array")),
            Value::String(_) => return Err(SignalError::NotObject("a string")),
            Value::Number(_) => return Err(SignalError::NotObject("a number")),
            Value::Bool(_) => return Err(SignalError::NotObject("a boolean")),
            Value::Null => return Err(SignalError::NotObject("null")),
        };
        if object.is_empty() {
            return Err(SignalError::EmptyObject);
        }
        let status: Status = text_field(&object, "status")?
            .ok_or(SignalError::MissingStatus)?
            .parse()?;
        let phase = text_field(&object, "phase")?
            .map(str::parse::<Phase>)
            .transpose()?;
        let wait_for = text_field(&object, "for")?
            .map(str::parse::<WaitFor>)
            .transpose()?;
        let needs = text_field(&object, "needs")?
            .map(str::parse::<Needs>)
            .transpose()?;
        let signal = Signal {
            status,
            phase,
            wait_for,
            reason: text_field(&object, "reason")?.map(super::bounded),
            needs,
            summary: text_field(&object, "summary")?.map(super::bounded),
        };
        match signal.status {
            Status::Continue if signal.phase.is_none() => Err(SignalError::ContinueWithoutPhase),
            Status::Waiting if signal.wait_for.is_none() => Err(SignalError::WaitingWithoutFor),
            _ => Ok(signal),
        }
    }

    /// Checks the signal against the rules of `current`; the first failure wins, in the order
    /// of PROTOCOL.md section 4.
    pub fn validate(&self, current: Phase) -> Result<Verdict, Rejection> {
        let rules = current.rules();
        if !rules.statuses.contains(&self.status) {
            return Err(Rejection::StatusNotAllowed {
                status: self.status,
                phase: current,
            });
        }
        let named = self.phase.unwrap_or(current);
        match self.status {
            Status::Continue => {
                if named != current && !rules.next.contains(&named) {
                    return Err(Rejection::TransitionNotAllowed {
                        from: current,
                        to: named,
                    });
                }
                if rules.gated_next == Some(named) {
                    return Err(Rejection::PlanGate);
                }
                Ok(Verdict::Continue { to: named })
            }
            Status::Waiting => {
                let wait_for = self.wait_for.expect("parse requires for with waiting");
                if !rules.waits.contains(&wait_for) {
                    return Err(Rejection::WaitNotAllowed {
                        wait: wait_for,
                        phase: current,
                    });
                }
                if named != current {
                    return Err(Rejection::WaitingMovesPhase { current, named });
                }
                Ok(Verdict::Wait { wait_for })
            }
            Status::Blocked => {
                if named != current {
                    return Err(Rejection::BlockedMovesPhase { current, named });
                }
                let reason = self
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the agent gave no reason".to_string());
                // Only samocode blocks a session for its budget: an agent's reason worded as
                // one would have people told to raise a budget that holds nothing back.
                let reason = match super::budget::is_budget_reason(&reason) {
                    true => format!("the agent says: {reason}"),
                    false => reason,
                };
                Ok(Verdict::Block {
                    reason,
                    needs: self.needs,
                })
            }
            // The status check let done through only in the done phase; the signal must not
            // name another one.
            Status::Done => {
                if named != Phase::Done {
                    return Err(Rejection::DoneOutsideDone { named });
                }
                Ok(Verdict::Finish {
                    summary: self.summary.clone(),
                })
            }
        }
    }
}

fn text_field<'a>(
    object: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, SignalError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(SignalError::NotString(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_AGENT_TEXT;
    use proptest::prelude::*;

    fn check(current: Phase, json: &str) -> Result<Verdict, Rejection> {
        Signal::parse(json).unwrap().validate(current)
    }

    /// An agent's megabyte of reason (or of a status word) reached the state twice, the
    /// notebook twice and a hundred messages: samocode keeps a bounded part, saying so.
    #[test]
    fn an_agents_long_texts_are_kept_bounded_and_said_to_be_cut() {
        let long = "я".repeat(400_000);
        let blocked =
            format!(r#"{{"status": "blocked", "phase": "testing", "reason": "{long}КОНЕЦ"}}"#);
        let signal = Signal::parse(&blocked).unwrap();
        let reason = signal.reason.unwrap();
        assert!(
            reason.chars().count() < MAX_AGENT_TEXT + 100,
            "{}",
            reason.len()
        );
        assert!(reason.ends_with("of 400005 characters: the whole signal is kept in _logs]"));
        let error = Signal::parse(&format!(r#"{{"status": "продолжить-{long}"}}"#))
            .unwrap_err()
            .to_string();
        assert!(error.chars().count() < 200, "{}", error.len());
    }

    #[test]
    fn protocol_examples_are_accepted() {
        assert_eq!(
            check(
                Phase::Quality,
                r#"{"status": "continue", "phase": "testing"}"#
            ),
            Ok(Verdict::Continue { to: Phase::Testing })
        );
        assert_eq!(
            check(
                Phase::Requirements,
                r#"{"status": "waiting", "phase": "requirements", "for": "qa_answers"}"#
            ),
            Ok(Verdict::Wait {
                wait_for: WaitFor::QaAnswers
            })
        );
        assert_eq!(
            check(
                Phase::Planning,
                r#"{"status": "waiting", "phase": "planning", "for": "plan_approval"}"#
            ),
            Ok(Verdict::Wait {
                wait_for: WaitFor::PlanApproval
            })
        );
        assert_eq!(
            check(
                Phase::Testing,
                r#"{"status": "blocked", "phase": "testing", "reason": "tests need a database", "needs": "human_decision"}"#
            ),
            Ok(Verdict::Block {
                reason: "tests need a database".into(),
                needs: Some(Needs::HumanDecision)
            })
        );
        // An agent's reason worded as a budget block is not taken for one of samocode's.
        assert_eq!(
            check(
                Phase::Testing,
                r#"{"status": "blocked", "phase": "testing", "reason": "cost budget reached: $9.00 of $5.00"}"#
            ),
            Ok(Verdict::Block {
                reason: "the agent says: cost budget reached: $9.00 of $5.00".into(),
                needs: None
            })
        );
        assert_eq!(
            check(
                Phase::Done,
                r#"{"status": "done", "phase": "done", "summary": "Added JWT login", "extra": 1}"#
            ),
            Ok(Verdict::Finish {
                summary: Some("Added JWT login".into())
            })
        );
        assert_eq!(
            check(
                Phase::Implementation,
                r#"{"status":"continue","phase":"implementation"}"#
            ),
            Ok(Verdict::Continue {
                to: Phase::Implementation
            })
        );
    }

    #[test]
    fn malformed_signals_are_protocol_errors() {
        assert_eq!(Signal::parse(""), Err(SignalError::Empty));
        assert_eq!(Signal::parse("  \n"), Err(SignalError::Empty));
        assert_eq!(Signal::parse("{}"), Err(SignalError::EmptyObject));
        assert_eq!(
            Signal::parse("[1]"),
            Err(SignalError::NotObject("an array"))
        );
        assert!(matches!(
            Signal::parse("{status"),
            Err(SignalError::BadJson(_))
        ));
        // A byte order mark is ignored; UTF-16 is named as such.
        assert!(
            Signal::parse(
                "\u{feff}{\"status\":\"waiting\",\"phase\":\"requirements\",\"for\":\"qa_answers\"}"
            )
            .is_ok()
        );
        let utf16: String = "{\"status\":\"done\"}"
            .chars()
            .flat_map(|c| [c, '\0'])
            .collect();
        let Err(SignalError::BadJson(said)) = Signal::parse(&utf16) else {
            panic!("UTF-16 read as a signal");
        };
        assert!(said.contains("UTF-16"), "{said}");
        assert_eq!(
            Signal::parse(r#"{"phase":"testing"}"#),
            Err(SignalError::MissingStatus)
        );
        assert_eq!(
            Signal::parse(r#"{"status":"continue"}"#),
            Err(SignalError::ContinueWithoutPhase)
        );
        assert_eq!(
            Signal::parse(r#"{"status":"waiting","phase":"planning"}"#),
            Err(SignalError::WaitingWithoutFor)
        );
        assert_eq!(
            Signal::parse(r#"{"status":3}"#),
            Err(SignalError::NotString("status"))
        );
        let err = Signal::parse(r#"{"status":"finished"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown status \"finished\""),
            "{err}"
        );
        let err = Signal::parse(r#"{"status":"continue","phase":"deploy"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown phase \"deploy\""),
            "{err}"
        );
    }

    #[test]
    fn each_rejection_reason() {
        use Rejection::*;
        let cases: &[(Phase, &str, Rejection)] = &[
            (
                Phase::Investigation,
                r#"{"status":"waiting","phase":"investigation","for":"qa_answers"}"#,
                StatusNotAllowed {
                    status: Status::Waiting,
                    phase: Phase::Investigation,
                },
            ),
            (
                Phase::Investigation,
                r#"{"status":"continue","phase":"testing"}"#,
                TransitionNotAllowed {
                    from: Phase::Investigation,
                    to: Phase::Testing,
                },
            ),
            (
                Phase::Implementation,
                r#"{"status":"waiting","phase":"implementation","for":"plan_approval"}"#,
                WaitNotAllowed {
                    wait: WaitFor::PlanApproval,
                    phase: Phase::Implementation,
                },
            ),
            (
                Phase::Requirements,
                r#"{"status":"waiting","phase":"planning","for":"qa_answers"}"#,
                WaitingMovesPhase {
                    current: Phase::Requirements,
                    named: Phase::Planning,
                },
            ),
            (
                Phase::Testing,
                r#"{"status":"blocked","phase":"quality","reason":"x"}"#,
                BlockedMovesPhase {
                    current: Phase::Testing,
                    named: Phase::Quality,
                },
            ),
            (
                Phase::Quality,
                r#"{"status":"done","phase":"done"}"#,
                StatusNotAllowed {
                    status: Status::Done,
                    phase: Phase::Quality,
                },
            ),
            // The issue's case: the status check comes first (PROTOCOL section 4's order).
            (
                Phase::Investigation,
                r#"{"status":"done"}"#,
                StatusNotAllowed {
                    status: Status::Done,
                    phase: Phase::Investigation,
                },
            ),
            (
                Phase::Done,
                r#"{"status":"done","phase":"testing"}"#,
                DoneOutsideDone {
                    named: Phase::Testing,
                },
            ),
            (
                Phase::Planning,
                r#"{"status":"continue","phase":"implementation"}"#,
                PlanGate,
            ),
        ];
        for (phase, json, expected) in cases {
            assert_eq!(&check(*phase, json).unwrap_err(), expected, "{json}");
            assert!(!expected.code().is_empty());
        }
    }

    fn any_phase() -> impl Strategy<Value = Phase> {
        proptest::sample::select(Phase::ALL.to_vec())
    }

    proptest! {
        /// Whatever the agent writes, an accepted continue lands on a phase the table allows,
        /// and nothing but approval ever moves planning to implementation.
        #[test]
        fn accepted_transitions_follow_the_table(
            current in any_phase(),
            target in any_phase(),
            status in proptest::sample::select(vec!["continue", "waiting", "blocked", "done"]),
            wait in proptest::sample::select(vec!["qa_answers", "plan_approval", "human_action"]),
        ) {
            let json = format!(r#"{{"status":"{status}","phase":"{target}","for":"{wait}","reason":"r"}}"#);
            let signal = Signal::parse(&json).unwrap();
            if let Ok(verdict) = signal.validate(current) {
                match verdict {
                    Verdict::Continue { to } => {
                        prop_assert!(to == current || current.rules().next.contains(&to));
                        prop_assert!(!(current == Phase::Planning && to == Phase::Implementation));
                    }
                    Verdict::Wait { wait_for } => {
                        prop_assert!(current.rules().waits.contains(&wait_for));
                        prop_assert_eq!(target, current);
                    }
                    Verdict::Block { .. } => prop_assert_eq!(target, current),
                    Verdict::Finish { .. } => prop_assert_eq!(current, Phase::Done),
                }
            }
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            let _ = Signal::parse(&text);
        }
    }
}
