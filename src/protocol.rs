//! The samocode protocol as pure code: no files, no clocks, no processes.
//!
//! - [`phase`]: the phase table and the words of a signal;
//! - [`artifact`]: the agent's artifacts' names, their kind and their order;
//! - [`signal`]: `_signal.json` parsing and validation;
//! - [`overview`]: `_overview.md`, rewriting only the worker's lines;
//! - [`qa`]: `_qa.md` questions and answers;
//! - [`state`]: `_state.json`, and deriving it from a Python samocode session;
//! - [`profile`]: model profiles and the plan's choice of one;
//! - [`journal`]: the rows of `_signal_history.jsonl` and `_iterations.jsonl`;
//! - [`baseline`]: the tracked files of a worktree, and what a read-only attempt changed;
//! - [`budget`]: a session's budgets (cost, iterations, time), what is spent and what is left.

pub mod artifact;
pub mod baseline;
pub mod budget;
pub mod gate;
pub mod journal;
pub mod overview;
pub mod phase;
pub mod profile;
pub mod qa;
pub mod signal;
pub mod state;

pub use phase::{Needs, Phase, Status, WaitFor};
pub use profile::Profile;
pub use signal::{Rejection, Signal, SignalError, Verdict};
pub use state::{InFlightRecord, RunState, SessionState, Usage};
