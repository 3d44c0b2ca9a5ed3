//! The phase table of PROTOCOL.md section 3, and the words a signal is made of.
//!
//! Every rule about which phase may go where lives in [`Phase::rules`]; nothing else in the crate
//! hard-codes a transition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::profile::Profile;

/// A step of a session's life, in the order a session normally walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Init,
    Investigation,
    Requirements,
    Planning,
    Implementation,
    Testing,
    Quality,
    Done,
}

/// What an agent says about its iteration in `_signal.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Continue,
    Waiting,
    Blocked,
    Done,
}

/// What a waiting session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    QaAnswers,
    PlanApproval,
    HumanAction,
}

/// What a blocked session needs from a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Needs {
    HumanDecision,
    Clarification,
    ErrorResolution,
    Environment,
}

/// The rules of one phase: one row of the table in PROTOCOL.md section 3.
#[derive(Debug)]
pub struct PhaseRules {
    /// Phases a `continue` signal may name besides the current one.
    pub next: &'static [Phase],
    /// Statuses an agent may report in this phase.
    pub statuses: &'static [Status],
    /// What a `waiting` signal may wait for in this phase.
    pub waits: &'static [WaitFor],
    /// Iterations allowed in this phase before the session is blocked (the current one counts).
    pub max_iterations: u32,
    /// The skill (folder under `skills/`) whose instructions the agent gets in this phase.
    pub skill: &'static str,
    /// The model profile of this phase's iterations (implementation may take its plan's).
    pub profile: Profile,
    /// A phase listed in `next` that only a person's approval may enter.
    pub gated_next: Option<Phase>,
    /// The agent must leave tracked files of the worktree unchanged.
    pub read_only: bool,
}

impl Phase {
    /// Every phase, in walking order.
    pub const ALL: [Phase; 8] = [
        Phase::Init,
        Phase::Investigation,
        Phase::Requirements,
        Phase::Planning,
        Phase::Implementation,
        Phase::Testing,
        Phase::Quality,
        Phase::Done,
    ];

    /// The phases an agent runs (all but `init`, which the worker does itself).
    pub const AGENT: [Phase; 7] = [
        Phase::Investigation,
        Phase::Requirements,
        Phase::Planning,
        Phase::Implementation,
        Phase::Testing,
        Phase::Quality,
        Phase::Done,
    ];

    pub fn rules(self) -> &'static PhaseRules {
        use Status::{Blocked, Continue, Done as Finished, Waiting};
        match self {
            Phase::Init => &PhaseRules {
                next: &[Phase::Investigation],
                statuses: &[],
                waits: &[],
                max_iterations: 0,
                skill: "",
                profile: Profile::Light,
                gated_next: None,
                read_only: false,
            },
            Phase::Investigation => &PhaseRules {
                next: &[Phase::Requirements],
                statuses: &[Continue, Blocked],
                waits: &[],
                max_iterations: 20,
                skill: "investigation",
                profile: Profile::Standard,
                gated_next: None,
                read_only: false,
            },
            Phase::Requirements => &PhaseRules {
                next: &[Phase::Planning],
                statuses: &[Continue, Waiting, Blocked],
                waits: &[WaitFor::QaAnswers],
                max_iterations: 10,
                skill: "task-definition",
                profile: Profile::Standard,
                gated_next: None,
                read_only: false,
            },
            Phase::Planning => &PhaseRules {
                next: &[Phase::Implementation],
                statuses: &[Continue, Waiting, Blocked],
                waits: &[WaitFor::PlanApproval],
                max_iterations: 10,
                skill: "planning",
                profile: Profile::Strong,
                gated_next: Some(Phase::Implementation),
                read_only: false,
            },
            Phase::Implementation => &PhaseRules {
                next: &[Phase::Testing, Phase::Quality],
                statuses: &[Continue, Waiting, Blocked],
                waits: &[WaitFor::HumanAction],
                max_iterations: 100,
                skill: "implementation",
                profile: Profile::Standard,
                gated_next: None,
                read_only: false,
            },
            Phase::Testing => &PhaseRules {
                next: &[Phase::Quality, Phase::Done],
                statuses: &[Continue, Blocked],
                waits: &[],
                max_iterations: 20,
                skill: "testing",
                profile: Profile::Light,
                gated_next: None,
                read_only: true,
            },
            Phase::Quality => &PhaseRules {
                next: &[Phase::Testing, Phase::Done],
                statuses: &[Continue, Blocked],
                waits: &[],
                max_iterations: 10,
                skill: "quality",
                profile: Profile::Strong,
                gated_next: None,
                read_only: false,
            },
            // The summary finds the work unfinished: back to quality, not a block a person
            // must undo by hand.
            Phase::Done => &PhaseRules {
                next: &[Phase::Quality],
                statuses: &[Finished, Continue, Blocked],
                waits: &[],
                max_iterations: 3,
                skill: "summary",
                profile: Profile::Light,
                gated_next: None,
                read_only: false,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Investigation => "investigation",
            Phase::Requirements => "requirements",
            Phase::Planning => "planning",
            Phase::Implementation => "implementation",
            Phase::Testing => "testing",
            Phase::Quality => "quality",
            Phase::Done => "done",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not one of the protocol's names for a phase, status, wait or need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {word:?} (expected one of: {expected})")]
pub struct UnknownWord {
    /// What kind of word was expected (phase, status, ...).
    pub kind: &'static str,
    /// The word as it was written (its first 60 characters: it is echoed in reasons).
    pub word: String,
    /// The accepted words, comma separated.
    pub expected: &'static str,
}

macro_rules! words {
    ($ty:ty, $kind:literal, $($word:literal => $value:expr),+ $(,)?) => {
        impl FromStr for $ty {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($value),)+
                    _ => Err(UnknownWord {
                        kind: $kind,
                        word: crate::protocol::shorten(s, 60),
                        expected: concat!($($word, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl $ty {
            /// The protocol's name for this value.
            pub fn name(self) -> &'static str {
                match self {
                    $(v if v == $value => $word,)+
                    _ => unreachable!("every variant is listed"),
                }
            }
        }
    };
}

words!(Phase, "phase",
    "init" => Phase::Init,
    "investigation" => Phase::Investigation,
    "requirements" => Phase::Requirements,
    "planning" => Phase::Planning,
    "implementation" => Phase::Implementation,
    "testing" => Phase::Testing,
    "quality" => Phase::Quality,
    "done" => Phase::Done,
);
words!(Status, "status",
    "continue" => Status::Continue,
    "waiting" => Status::Waiting,
    "blocked" => Status::Blocked,
    "done" => Status::Done,
);
words!(WaitFor, "wait reason",
    "qa_answers" => WaitFor::QaAnswers,
    "plan_approval" => WaitFor::PlanApproval,
    "human_action" => WaitFor::HumanAction,
);
words!(Needs, "need",
    "human_decision" => Needs::HumanDecision,
    "clarification" => Needs::Clarification,
    "error_resolution" => Needs::ErrorResolution,
    "environment" => Needs::Environment,
);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for phase in Phase::ALL {
            assert_eq!(phase.name().parse::<Phase>().unwrap(), phase);
            assert_eq!(phase.as_str(), phase.name());
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.name()));
        }
        let err = "Testing".parse::<Phase>().unwrap_err();
        assert!(
            err.to_string().contains("unknown phase \"Testing\""),
            "{err}"
        );
        assert!(err.to_string().contains("investigation"), "{err}");
    }

    #[test]
    fn every_transition_target_is_an_agent_phase_and_the_walk_reaches_done() {
        let mut reached = vec![Phase::Init];
        let mut frontier = vec![Phase::Init];
        while let Some(p) = frontier.pop() {
            for &n in p.rules().next {
                assert_ne!(n, Phase::Init);
                if !reached.contains(&n) {
                    reached.push(n);
                    frontier.push(n);
                }
            }
        }
        reached.sort();
        assert_eq!(reached, Phase::ALL.to_vec());
    }

    #[test]
    fn table_matches_protocol_limits() {
        let limits: Vec<u32> = Phase::AGENT
            .iter()
            .map(|p| p.rules().max_iterations)
            .collect();
        assert_eq!(limits, [20, 10, 10, 100, 20, 10, 3]);
        assert!(Phase::Testing.rules().read_only);
        let profiles: Vec<Profile> = Phase::AGENT.iter().map(|p| p.rules().profile).collect();
        assert_eq!(
            profiles,
            [
                Profile::Standard,
                Profile::Standard,
                Profile::Strong,
                Profile::Standard,
                Profile::Light,
                Profile::Strong,
                Profile::Light
            ]
        );
        assert_eq!(
            Phase::Planning.rules().gated_next,
            Some(Phase::Implementation)
        );
        for p in Phase::AGENT {
            for w in p.rules().waits {
                assert!(p.rules().statuses.contains(&Status::Waiting));
                let _ = w;
            }
        }
    }
}
