//! A person's command (approve, reject, resume, stop, answer) applied to a session folder held
//! under the worker lock: the pure gate change, then the state, the history row and the Flow
//! Log line, in that order.

use jiff::Timestamp;

use super::store::{SessionStore, StoreError};
use crate::protocol::SessionState;
use crate::protocol::gate::{GateEffect, GateError};
use crate::protocol::journal::{HistoryRow, Source};

/// Why a person's command could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
