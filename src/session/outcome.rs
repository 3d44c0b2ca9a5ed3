//! What the worker does with the end of an attempt: read and check the signal (and, in a
//! read-only phase, the tracked files), move the session on, park or block it, and write the
//! journals. These are the SessionActor's decisions, kept apart from its message handling.

use std::time::Duration;

use jiff::Timestamp;
use ractor::{ActorProcessingErr, ActorRef};

use super::actor::{InFlight, SessionActor, SessionMsg, SessionRun};
use super::open::Settled;
use super::store::{SessionStore, StoreError};
use super::worktree::TrackedSnapshot;
use crate::agent::refusal::Refusal;
use crate::notify::SessionEvent;
use crate::protocol::journal::{AttemptOutcome, HistoryRow, IterationRow, Source};
use crate::protocol::{Phase, Rejection, RunState, Signal, Verdict};

impl SessionActor {
    /// Reads and checks `_signal.json` (and, in a read-only phase, the tracked files).
    pub(super) async fn evaluate(
        &self,
        run: &SessionRun,
        flight: &InFlight,
    ) -> Result<Result<(Signal, Verdict), Problem>, ActorProcessingErr> {
        let text = match run.store.read_signal()? {
            Ok(text) => text,
            Err(error) => return Ok(Err(Problem::protocol(error))),
        };
        let signal = match Signal::parse(&text) {
            Ok(signal) => signal,
            Err(error) => return Ok(Err(Problem::protocol(error))),
        };
        let mut checked = signal.validate(flight.phase);
        if let (Ok(_), Some(before)) = (&checked, &flight.snapshot) {
            let workdir = run
                .state
                .worktree
                .clone()
                .unwrap_or_else(|| self.project.main_repo.clone());
            if let Ok(after) = TrackedSnapshot::take(&workdir).await
                && let Some(change) = after.difference(before)
            {
                checked = Err(Rejection::TrackedFilesChanged(change));
            }
        }
        Ok(match checked {
            Ok(verdict) => Ok((signal, verdict)),
            Err(rejection) => Err(Problem {
                code: rejection.code(),
                text: format!("signal rejected: {rejection}"),
                retryable: false,
                signal: Some(signal),
            }),
        })
    }

    pub(super) fn apply(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        from: Phase,
        signal: &Signal,
        verdict: Verdict,
    ) -> Result<(), ActorProcessingErr> {
        let now = Timestamp::now();
        let outcome = match &verdict {
            Verdict::Continue { .. } => "next",
            Verdict::Wait { .. } => "waiting",
            Verdict::Block { .. } => "blocked",
            Verdict::Finish { .. } => "done",
        };
        self.history(run, Source::Agent, from, Some(signal), true, None, outcome)?;
        let state = &mut run.state;
        state.last_rejection = None;
        match verdict {
            Verdict::Continue { to } => {
                state.attempt = 0;
                state.feedback = if to == from {
                    state.feedback.take()
                } else {
                    None
                };
                state.enter_phase(to);
                state.status = RunState::Queued;
                run.store.save(state)?;
                run.store.log(&format!("continue: {from} -> {to}"));
                if run.once {
                    run.settled = true;
                    return self.report_settled(run, Settled::Continued { phase: to });
                }
                myself.send_message(SessionMsg::RunNext)?;
                Ok(())
            }
            Verdict::Wait { wait_for } => {
                state.status = RunState::Waiting {
                    wait_for,
                    since: now,
                };
                state.attempt = 0;
                run.store.save(state)?;
                run.store.log(&format!("waiting for {wait_for}"));
                self.settle(run)
            }
            Verdict::Block { reason, needs } => {
                state.status = RunState::Blocked {
                    reason: reason.clone(),
                    needs,
                    since: now,
                };
                state.attempt = 0;
                run.store.save(state)?;
                run.store.log(&format!("blocked by the agent: {reason}"));
                self.settle(run)
            }
            Verdict::Finish { summary } => {
                state.status = RunState::Done { summary, at: now };
                state.attempt = 0;
                run.store.save(state)?;
                run.store.log("done");
                self.settle(run)
            }
        }
    }

    /// The provider refused the attempt. A usage limit parks the session as queued until the
    /// reset time the provider named, then runs the same attempt again without spending the
    /// retry budget; refused credentials block it at once, since no retry can help.
    pub(super) fn refused(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        span: &tracing::Span,
        mut row: IterationRow,
        refusal: Refusal,
    ) -> Result<(), ActorProcessingErr> {
        match refusal {
            Refusal::UsageLimit { until, message } => {
                let now = Timestamp::now();
                // Without a reset time, wait the longest backoff step; a reset time already
                // past (clock skew) waits the first step.
                let fallback = if until.is_some() {
                    self.retry.first_delay
                } else {
                    self.retry.max_delay
                };
                let at = until
                    .filter(|at| *at > now)
                    .unwrap_or_else(|| now.checked_add(fallback).unwrap_or(now));
                row.outcome = AttemptOutcome::UsageLimit;
                row.detail = Some(format!("usage limit until {at}: {message}"));
                journal_attempt(&run.store, span, &row)?;
                run.state.not_before = Some(at);
                run.state.status = RunState::Queued;
                run.store.save(&mut run.state)?;
                run.store.log(&format!(
                    "attempt {} refused for a usage limit; it runs again at {at}",
                    run.state.attempt
                ));
                let _ = run.store.flow_log(
                    run.state.iteration,
                    &format!("Usage limit reached; samocode resumes at {at}"),
                );
                self.notify(SessionEvent::UsageLimited {
                    session: run.state.name.clone(),
                    until: at,
                });
                let wait = Duration::try_from(now.duration_until(at)).unwrap_or_default();
                myself.send_after(wait, || SessionMsg::RunNext);
                Ok(())
            }
            Refusal::Authentication { message } => {
                row.outcome = AttemptOutcome::Nonzero;
                journal_attempt(&run.store, span, &row)?;
                self.block(
                    run,
                    format!("the provider refused the credentials: {message}"),
                    Source::Worker,
                )
            }
        }
    }

    pub(super) fn block(
        &self,
        run: &mut SessionRun,
        reason: String,
        source: Source,
    ) -> Result<(), ActorProcessingErr> {
        let status = RunState::Blocked {
            reason: reason.clone(),
            needs: None,
            since: Timestamp::now(),
        };
        let flow = format!("Blocked by samocode: {reason}");
        self.park(run, status, &reason, source == Source::Worker, &flow)
    }

    pub(super) fn fail(
        &self,
        run: &mut SessionRun,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let status = RunState::Failed {
            reason: reason.clone(),
            at: Timestamp::now(),
        };
        let flow = format!("Failed: {reason}");
        self.park(run, status, &reason, true, &flow)
    }

    /// Parks the session in `status` until a person acts: the history row when the worker
    /// decided it (an agent's own `blocked` signal has its row already), the state, the Flow
    /// Log, the session log; then tells the supervisor and the notifier.
    fn park(
        &self,
        run: &mut SessionRun,
        status: RunState,
        reason: &str,
        by_worker: bool,
        flow: &str,
    ) -> Result<(), ActorProcessingErr> {
        let word = status.name();
        if by_worker {
            self.history(
                run,
                Source::Worker,
                run.state.phase,
                None,
                false,
                Some(reason.to_string()),
                word,
            )?;
        }
        run.state.status = status;
        run.state.attempt = 0;
        run.store.save(&mut run.state)?;
        let _ = run.store.flow_log(run.state.iteration, flow);
        run.store.log(&format!("{word}: {reason}"));
        self.settle(run)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn history(
        &self,
        run: &SessionRun,
        source: Source,
        from: Phase,
        signal: Option<&Signal>,
        accepted: bool,
        reason: Option<String>,
        outcome: &str,
    ) -> Result<(), StoreError> {
        run.store.append_history(&HistoryRow {
            at: Timestamp::now(),
            iteration: run.state.iteration,
            attempt: run.state.attempt,
            source,
            from,
            to: signal.and_then(|s| s.phase),
            status: signal
                .map(|s| s.status.to_string())
                .unwrap_or_else(|| "-".into()),
            accepted,
            reason,
            outcome: outcome.to_string(),
        })
    }
}

/// Appends the attempt's row to `_iterations.jsonl` and puts its figures on the attempt span.
pub(super) fn journal_attempt(
    store: &SessionStore,
    span: &tracing::Span,
    row: &IterationRow,
) -> Result<(), StoreError> {
    span.record("outcome", row.outcome.name());
    span.record("cost_usd", row.cost_usd);
    span.record("input_tokens", row.input_tokens);
    span.record("output_tokens", row.output_tokens);
    store.append_iteration(row)
}

/// A signal that could not be used, and whether the attempt may be retried for it.
pub(super) struct Problem {
    pub(super) code: &'static str,
    pub(super) text: String,
    pub(super) retryable: bool,
    pub(super) signal: Option<Signal>,
}

impl Problem {
    pub(super) fn protocol(error: crate::protocol::SignalError) -> Problem {
        Problem {
            code: error.code(),
            text: format!("protocol error: {error}"),
            retryable: true,
            signal: None,
        }
    }
}
