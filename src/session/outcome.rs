//! What the worker does with the end of an attempt: check the worktree of a read-only phase,
//! read and check the signal, move the session on, retry, park or block it, and write the
//! journals. These are the SessionActor's decisions, kept apart from its message handling.
//!
//! Every attempt that ends gets its `_iterations.jsonl` row before the state that follows it is
//! saved, and the state's in-flight record is cleared in that same save: a crash in between
//! leaves the record, and the next worker sees the row is there and does not write it twice.

use jiff::Timestamp;
use ractor::{ActorProcessingErr, ActorRef};

use super::actor::{InFlight, Life, SessionActor, SessionMsg, SessionRun, Then};
use super::open::Settled;
use super::person;
use super::store::{QA, SessionStore, StoreError};
use super::worktree;
use crate::agent::launch::ExitKind;
use crate::agent::refusal::{self, Refusal};
use crate::agent::{AttemptReport, ProcessEnd};
use crate::notify::SessionEvent;
use crate::protocol::baseline::Mutation;
use crate::protocol::journal::{AttemptOutcome, HistoryRow, IterationRow, Source};
use crate::protocol::qa::QaDoc;
use crate::protocol::{Phase, RunState, Signal, SignalError, Verdict, WaitFor};

impl SessionActor {
    /// The attempt in `Running` is over.
    pub(super) async fn attempt_over(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        flight: InFlight,
        report: AttemptReport,
    ) -> Result<(), ActorProcessingErr> {
        // Its spend first: a fleet budget it reaches holds the slot it gives back.
        let mut row = self.take_report(run, &flight, &report);
        // Kept only through refusals in a row.
        let limited = run.limited.take();
        self.release_slot(run);
        let failure = self.failure_of(&report, &flight.files.stderr);

        // The read-only guard holds whatever the attempt's end: a change never becomes the
        // next attempt's baseline.
        if let Some(mutation) = self.mutation(run, &flight).await {
            let (outcome, _) = failure
                .clone()
                .unwrap_or((AttemptOutcome::ProtocolError, String::new()));
            row.outcome = outcome;
            row.detail = Some(format!("worktree_mutated: {mutation}"));
            journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
            return self.block(run, format!("worktree_mutated: {mutation}"), Source::Worker);
        }

        // The agent wrote its signal whole and valid, then its CLI ended badly by itself (an
        // API error or a usage limit on its closing turn, its turn limit): the iteration's
        // work is done, and is taken rather than run again (after a usage limit, hours later).
        // A time limit, a stall or a kill is no such end: the signal may be half the work's.
        let mut taken = None;
        if let Some((_, detail)) = &failure
            && let ProcessEnd::Exited(code) = report.end
            && code != 0
            && let Ok(verdict) = self.evaluate(run, flight.phase)
        {
            row.detail = Some(format!(
                "the agent exited with code {code} after it wrote a valid signal, which is taken ({})",
                detail.trim_start_matches(&format!("the agent exited with code {code}: "))
            ));
            run.store.log(&format!(
                "attempt {}: the agent exited with code {code} after it wrote a valid signal; the signal is taken",
                flight.attempt
            ));
            taken = Some(verdict);
        }
        let failure = failure.filter(|_| taken.is_none());

        if let Some((_, detail)) = &failure
            && let ProcessEnd::Exited(_) = report.end
            && let Some(refusal) =
                refusal::of_report(&report, Timestamp::now(), &jiff::tz::TimeZone::system())
        {
            row.detail = Some(detail.clone());
            return self.refused(myself, run, &flight, row, refusal, limited);
        }

        // claude's own refusal of how it is started, on its standard error (not words of the
        // agent's that mention it).
        if let Some((outcome, detail)) = &failure
            && self.agent.provider == crate::config::Provider::Claude
            && let Some(advice) =
                last_line(&flight.files.stderr).and_then(|line| refusal::of_setup(&line))
        {
            row.outcome = *outcome;
            row.detail = Some(detail.clone());
            journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
            return self.block(run, format!("{detail}; {advice}"), Source::Worker);
        }

        if let Some((outcome, detail)) = failure {
            row.outcome = outcome;
            row.detail = Some(detail.clone());
            journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
            run.store
                .log(&format!("attempt {} failed: {detail}", flight.attempt));
            self.notify(
                run,
                SessionEvent::AttemptFailed {
                    session: run.state.name.clone(),
                    attempt: flight.attempt,
                    detail: detail.clone(),
                },
            );
            run.state.failures += 1;
            let spawn_failed = matches!(report.end, ProcessEnd::SpawnFailed(_));
            if !spawn_failed && run.state.failures < self.retry.max_attempts {
                let delay = self.retry.delay_before(run.state.failures + 1);
                // The retry is told, or it would meet the same end (a time limit, a crash).
                run.state.last_failure =
                    Some(format!("attempt {} failed: {detail}", flight.attempt));
                run.save()?;
                run.store.log(&format!(
                    "retrying in {}",
                    humantime::format_duration(delay)
                ));
                self.schedule(myself, run, delay);
                return Ok(());
            }
            let reason = if spawn_failed {
                detail
            } else {
                match run.state.failures {
                    1 => format!("its attempt failed: {detail}"),
                    n => format!("{n} attempts failed; the last: {detail}"),
                }
            };
            return self.fail(run, reason);
        }

        // A clean exit (or a signal taken above): the signal decides.
        let verdict = match taken {
            Some(verdict) => Ok(verdict),
            None => self.evaluate(run, flight.phase),
        };
        run.store.keep_signal(&flight.files);
        match verdict {
            // `claude -p` may end an attempt the API refused with exit code 0 and the error
            // in its result: with no good signal, the refusal is why.
            Err(problem)
                if report.result.as_ref().is_some_and(|r| r.is_error)
                    && let Some(refusal) = refusal::of_report(
                        &report,
                        Timestamp::now(),
                        &jiff::tz::TimeZone::system(),
                    ) =>
            {
                row.detail = Some(format!(
                    "the agent exited with code 0 and reported an error ({})",
                    problem.text
                ));
                self.refused(myself, run, &flight, row, refusal, limited)
            }
            Err(mut problem) => {
                // Tool calls the CLI refused are why no signal was written: said, so that a
                // person knows what to change.
                if let Some(denied) = report.result.as_ref().map(|r| r.denied).filter(|n| *n > 0) {
                    problem.text.push_str(&format!(
                        "; the CLI refused {denied} of the agent's tool calls for want of permission: its permission bypass is off (a setting such as permissions.disableBypassPermissionsMode in ~/.claude/settings.json, or a managed policy)"
                    ));
                }
                row.outcome = AttemptOutcome::ProtocolError;
                row.detail = Some(problem.text.clone());
                journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
                let retry = problem.retryable && run.state.last_rejection.is_none();
                run.store.append_history(&self.history_row(
                    run,
                    Source::Agent,
                    flight.phase,
                    problem.signal.as_ref(),
                    false,
                    Some(format!("{}: {}", problem.code, problem.text)),
                    if retry { "retry" } else { "blocked" },
                ))?;
                if retry {
                    run.state.last_rejection = Some(problem.text.clone());
                    run.save()?;
                    run.store
                        .log(&format!("protocol error, retrying once: {}", problem.text));
                    self.schedule(myself, run, std::time::Duration::ZERO);
                    return Ok(());
                }
                self.block(run, problem.text, Source::Agent)
            }
            Ok((signal, verdict)) => {
                if goes_on(run, &verdict) {
                    // The next attempt need not wait for the disk: the row goes there with
                    // the state saved before it starts (see `SessionRun::save`).
                    let journaled = run.journal_unsynced(row.clone());
                    observe_attempt(&flight.span, &run.trace, &row, journaled.as_ref().err());
                    journaled?;
                } else {
                    journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
                }
                // The notes this iteration saw are used: the next one does not get them again.
                let seen = flight.guidance.min(run.state.guidance.len());
                run.state.guidance.drain(..seen);
                self.apply(myself, run, flight.phase, &signal, verdict)
            }
        }
    }

    /// The attempt in `Cancelling` is over: journal it, then do what was decided.
    pub(super) async fn cancelled_over(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        flight: InFlight,
        report: AttemptReport,
        then: Then,
    ) -> Result<(), ActorProcessingErr> {
        // The agent had ended by itself, its signal written and valid, before the stop reached
        // it (a child it left held its output through the kill grace, or the stop came a
        // moment late): its iteration is done and is taken as any other's, then the stop holds.
        if matches!(report.end, ProcessEnd::Exited(_)) && self.evaluate(run, flight.phase).is_ok() {
            // A person's stop is in the state already; it holds after the verdict, whatever
            // else (the worker's own stop) came since.
            let stopped = matches!(run.state.status, RunState::Stopped { .. });
            run.store.log(&format!(
                "attempt {}: the agent had ended with a valid signal before it was stopped; the signal is taken",
                flight.attempt
            ));
            self.attempt_over(myself, run, flight, report).await?;
            return self.stop_after_the_verdict(myself, run, then, stopped);
        }
        let mut row = self.take_report(run, &flight, &report);
        self.release_slot(run);
        row.outcome = AttemptOutcome::Interrupted;
        row.detail = Some(match then {
            Then::Exit => "interrupted: the worker stopped during the attempt".into(),
            // Only a person stops an attempt so: `stop`, or `tell --now` (or a resume given
            // while a stop was under way) to run it again.
            Then::Park => "stopped by a person".into(),
            Then::Rerun => "stopped by a person, to run again".into(),
        });
        let mutation = self.mutation(run, &flight).await;
        if let Some(mutation) = &mutation {
            row.detail = Some(format!("worktree_mutated: {mutation}"));
        }
        journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
        if let Some(mutation) = mutation {
            self.block(run, format!("worktree_mutated: {mutation}"), Source::Worker)?;
            if then == Then::Exit {
                myself.stop(Some(super::actor::STOP_SHUTDOWN.into()));
            }
            return Ok(());
        }
        run.save()?;
        match then {
            Then::Park => {
                let settled = Settled::of(&run.state).unwrap_or(Settled::Stopped);
                self.settle(run, settled)
            }
            Then::Rerun => {
                self.schedule(myself, run, std::time::Duration::ZERO);
                Ok(())
            }
            Then::Exit => {
                run.store
                    .log("stopped by the worker during an attempt; it will be retried");
                run.life = Life::Ready;
                myself.stop(Some(super::actor::STOP_SHUTDOWN.into()));
                Ok(())
            }
        }
    }

    /// What a stop asked of an attempt whose verdict was taken: a person's stop (`stopped`)
    /// parks a session the verdict left runnable (one it parked stays so); `tell --now` has
    /// nothing to run again (its note goes to the next iteration); the worker's own stop ends
    /// the actor, once the notice of a park is safe.
    fn stop_after_the_verdict(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        then: Then,
        stopped: bool,
    ) -> Result<(), ActorProcessingErr> {
        if stopped && run.state.status.is_runnable() {
            // The next attempt the verdict scheduled must not run.
            run.generation += 1;
            run.save()?;
            // Applied again, with its row: the history would read the verdict's `next` last,
            // and a state derived from it again would run.
            let by = run.stopped_by.take();
            person::act(&run.store, &mut run.state, by.as_deref(), |state| {
                let mut effect = crate::protocol::gate::stop(state, Timestamp::now())?;
                effect.flow_log = "The stop given during the attempt holds: its verdict was taken, and the session waits for `resume`".into();
                Ok(effect)
            })?;
            self.settle(run, Settled::Stopped)?;
        }
        match then {
            Then::Park | Then::Rerun => Ok(()),
            Then::Exit => {
                if run.unsaved {
                    run.save()?;
                }
                // Parked by the verdict or the stop, its notice not yet safe: the actor goes
                // once it is (see `handle`), or the next start would tell the park again.
                if matches!(run.life, Life::Parked(_)) && run.state.untold {
                    run.exiting = true;
                    return Ok(());
                }
                run.life = Life::Ready;
                myself.stop(Some(super::actor::STOP_SHUTDOWN.into()));
                Ok(())
            }
        }
    }

    /// Journals an attempt the actor could not see to its end (it is stopping), synchronously.
    pub(super) fn journal_interrupted(
        &self,
        run: &mut SessionRun,
        flight: &InFlight,
        report: &AttemptReport,
    ) {
        let mut row = self.take_report(run, flight, report);
        row.outcome = AttemptOutcome::Interrupted;
        row.detail = Some("interrupted: the worker stopped during the attempt".into());
        let _ = journal_attempt(&run.store, &flight.span, &run.trace, &row);
        let _ = run.save();
        run.store
            .log("stopped by the worker during an attempt; it will be retried");
    }

    /// Takes in what the report says (usage, agent time, the agent's session id), tells the
    /// supervisor the session's new total and clears the in-flight record; returns the
    /// attempt's row, its outcome still to be decided.
    fn take_report(
        &self,
        run: &mut SessionRun,
        flight: &InFlight,
        report: &AttemptReport,
    ) -> IterationRow {
        let usage = self.price(run, &flight.choice.model, report, &flight.files.stdout);
        let (exit_code, exit_signal) = match &report.status {
            Some(ExitKind::Code(code)) => (Some(*code), None),
            Some(ExitKind::Signal(name)) => (None, Some(name.clone())),
            None => (None, None),
        };
        let row = IterationRow {
            // When the attempt started, as its in-flight record says: an attempt a restarted
            // daemon adopted was started by the one before (its report starts at the adoption).
            started_at: flight.started_at.min(report.started_at),
            ended_at: report.ended_at,
            seconds: report.ran.map(|ran| ran.as_secs_f64()),
            iteration: flight.iteration,
            attempt: flight.attempt,
            phase: flight.phase,
            provider: self.agent.provider.to_string(),
            model: Some(flight.choice.model.clone()),
            reported_model: report
                .model
                .clone()
                .filter(|reported| *reported != flight.choice.model),
            profile: Some(flight.choice.profile),
            effort: Some(flight.choice.effort.clone()),
            exit_code,
            exit_signal,
            outcome: AttemptOutcome::Ok,
            detail: report.note.clone(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cost_usd: usage.cost_usd,
            agent_session_id: report.agent_session_id.clone(),
            log: flight.files.relative_log(),
            host: report.host.clone(),
        };
        // The same sums a worker taking over after a crash makes from the journaled row.
        run.state.spend(&row);
        run.state.in_flight = None;
        self.report_spent(run);
        // A context passed by file served its attempt; `_logs/contexts.md` keeps it.
        let _ = std::fs::remove_file(&flight.files.context);
        row
    }

    /// Why the process failed, when it did.
    fn failure_of(
        &self,
        report: &AttemptReport,
        stderr: &std::path::Path,
    ) -> Option<(AttemptOutcome, String)> {
        let note = report
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        match &report.end {
            ProcessEnd::Exited(0) => None,
            ProcessEnd::Exited(code) => {
                // What the CLI said, wherever it said it: its result's text, else the kind of
                // end it reported (`error_max_turns`), else its last error event, else the last
                // line it wrote on standard error (a configuration it refused).
                let result = report.result.as_ref();
                let detail = result
                    .and_then(|r| r.text.clone())
                    .filter(|t| !t.trim().is_empty())
                    .or_else(|| {
                        result
                            .and_then(|r| r.subtype.clone())
                            .filter(|s| s != "success")
                    })
                    .or_else(|| report.errors.last().cloned())
                    .or_else(|| last_line(stderr))
                    .map(|t| format!(": {}", ends(t.trim())))
                    .unwrap_or_default();
                Some((
                    AttemptOutcome::Nonzero,
                    format!("the agent exited with code {code}{detail}{note}"),
                ))
            }
            ProcessEnd::Signaled(signal) => Some((
                AttemptOutcome::Crashed,
                format!("the agent was killed by {signal}{note}"),
            )),
            ProcessEnd::TimedOut => Some((
                AttemptOutcome::Timeout,
                format!(
                    "the agent passed its time limit of {} and was stopped{note}",
                    humantime::format_duration(self.agent.timeout)
                ),
            )),
            ProcessEnd::Stalled => Some((
                AttemptOutcome::Stalled,
                format!(
                    "the agent printed nothing for {} and was stopped{note}",
                    humantime::format_duration(self.agent.stall_timeout.unwrap_or_default())
                ),
            )),
            ProcessEnd::Cancelled => {
                Some((AttemptOutcome::Interrupted, "stopped by samocode".into()))
            }
            ProcessEnd::SpawnFailed(message) | ProcessEnd::Lost(message) => {
                Some((AttemptOutcome::Crashed, message.clone()))
            }
        }
    }

    /// What a read-only phase's attempt changed in the worktree, if anything.
    async fn mutation(&self, run: &SessionRun, flight: &InFlight) -> Option<Mutation> {
        let before = flight.baseline.as_ref()?;
        let workdir = run
            .state
            .worktree
            .clone()
            .unwrap_or_else(|| self.project.main_repo.clone());
        match worktree::baseline(&workdir).await {
            Ok(after) => before.mutation(&after, workdir),
            Err(error) => Some(Mutation::unreadable(workdir, error.to_string())),
        }
    }

    /// Where `_signal.json` was looked for, and a signal the agent left in its working
    /// directory instead (a relative path there is the commonest slip), which samocode never
    /// reads: said so that the retry puts it in the session folder.
    fn where_the_signal_goes(&self, run: &SessionRun) -> String {
        let expected = run.store.path(super::store::SIGNAL);
        let workdir = run
            .state
            .worktree
            .clone()
            .unwrap_or_else(|| self.project.main_repo.clone());
        let stray = workdir.join(super::store::SIGNAL);
        let mut text = format!(" in the session folder ({})", expected.display());
        if std::fs::symlink_metadata(&stray).is_ok_and(|m| m.is_file()) {
            text.push_str(&format!(
                "; one is in the working directory ({}), which samocode does not read: write the signal in the folder `Session path:` names, and delete that one",
                stray.display()
            ));
        }
        text
    }

    /// Reads and checks `_signal.json`.
    fn evaluate(&self, run: &SessionRun, phase: Phase) -> Result<(Signal, Verdict), Problem> {
        let text = match run.store.read_signal() {
            Ok(Ok(text)) => text,
            Ok(Err(SignalError::Missing)) => {
                let mut problem = Problem::protocol(SignalError::Missing);
                problem.text.push_str(&self.where_the_signal_goes(run));
                return Err(problem);
            }
            Ok(Err(error)) => return Err(Problem::protocol(error)),
            Err(error) => {
                return Err(Problem {
                    code: "unreadable_signal",
                    text: format!("protocol error: {error}"),
                    retryable: true,
                    signal: None,
                });
            }
        };
        let signal = Signal::parse(&text).map_err(Problem::protocol)?;
        match signal.validate(phase) {
            Ok(Verdict::Wait {
                wait_for: WaitFor::QaAnswers,
            }) if let Some(why) = no_open_question(run)
                && !answered_while_asked(run) =>
            {
                Err(Problem {
                    code: "no_open_question",
                    text: format!(
                        "signal rejected: it waits for qa_answers, but {why}; no person could answer it"
                    ),
                    // The agent is told why and may write its questions on the retry.
                    retryable: true,
                    signal: Some(signal),
                })
            }
            Ok(verdict) => Ok((signal, verdict)),
            Err(rejection) => Err(Problem {
                code: rejection.code(),
                text: format!("signal rejected: {rejection}"),
                retryable: false,
                signal: Some(signal),
            }),
        }
    }

    fn apply(
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
        let row = self.history_row(run, Source::Agent, from, Some(signal), true, None, outcome);
        match goes_on(run, &verdict) {
            true => run.history_unsynced(row)?,
            false => run.store.append_history(&row)?,
        }
        let state = &mut run.state;
        state.last_rejection = None;
        state.last_failure = None;
        state.attempt = 0;
        state.failures = 0;
        match verdict {
            Verdict::Continue { to } => {
                state.continue_to(to);
                run.store.log(&format!("continue: {from} -> {to}"));
                if run.once {
                    run.save()?;
                    return self.settle(run, Settled::Continued { phase: to });
                }
                // Saved with the next attempt's in-flight record, or when the session has to
                // wait for its slot: one write of the state per iteration.
                run.unsaved = true;
                self.failpoint("kill-after-verdict");
                self.schedule(myself, run, std::time::Duration::ZERO);
                Ok(())
            }
            Verdict::Wait { wait_for } => {
                state.status = RunState::Waiting {
                    wait_for,
                    since: now,
                };
                self.failpoint("kill-after-parking-verdict");
                run.save()?;
                self.failpoint("kill-after-parked");
                run.store.log(&format!("waiting for {wait_for}"));
                // (`wake_answered` reads `_qa.md` itself: a partial answer keeps it waiting.)
                if wait_for == WaitFor::QaAnswers
                    && let Some(by) = run.answered_while_running.take()
                    && let person::Wake::Woken = person::wake_answered(
                        &run.store,
                        &mut run.state,
                        &by,
                        "Questions answered by a person while they were asked; resuming",
                    )?
                {
                    run.store.log(&format!(
                        "the questions were answered ({by}) before the attempt that asked them ended; resuming"
                    ));
                    return self.wake(myself, run);
                }
                self.settle_as_state(run)
            }
            Verdict::Block { reason, needs } => {
                state.status = RunState::Blocked {
                    reason: reason.clone(),
                    needs,
                    since: now,
                };
                self.failpoint("kill-after-parking-verdict");
                run.save()?;
                self.failpoint("kill-after-parked");
                run.store.log(&format!("blocked by the agent: {reason}"));
                self.settle_as_state(run)
            }
            Verdict::Finish { summary } => {
                state.status = RunState::Done { summary, at: now };
                self.failpoint("kill-after-parking-verdict");
                match state.guidance.is_empty() {
                    true => run.save()?,
                    false => {
                        let unread = super::actor::unread_notes(&state.guidance);
                        run.store.log(&format!("done, but {unread}"));
                        run.save_noting(&format!("Done, but {unread}"))?;
                    }
                }
                self.failpoint("kill-after-parked");
                run.store.log("done");
                self.settle_as_state(run)
            }
        }
    }

    /// The provider refused the attempt. A usage limit parks the session as queued until the
    /// reset time the provider named, then runs the same attempt again without spending the
    /// retry budget; refused credentials block it at once, since no retry can help.
    fn refused(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        flight: &InFlight,
        mut row: IterationRow,
        refusal: Refusal,
        limited: Option<super::actor::Limited>,
    ) -> Result<(), ActorProcessingErr> {
        match refusal {
            Refusal::UsageLimit { until, message } => {
                let now = Timestamp::now();
                // Without a reset time, wait the longest backoff step; a reset time just past
                // (clock skew) waits the first step, and one long past (not the provider's
                // clock) counts as none.
                let skew = jiff::SignedDuration::from_mins(10);
                // Refused again past a reset time: the provider's clock is behind ours, or it
                // resets late. The waits double (they were the first step each time: a refusal
                // every few seconds, each told to the chat).
                let in_a_row = limited.map_or(0, |l| l.in_a_row);
                let backoff = self
                    .retry
                    .first_delay
                    .saturating_mul(1 << in_a_row.min(20))
                    .min(self.retry.max_delay.max(self.retry.first_delay));
                let fallback = match until {
                    Some(at) if at > now.checked_sub(skew).unwrap_or(now) => backoff,
                    _ => self.retry.max_delay,
                };
                // To the second, rounded up: shown to people (a reset with nanoseconds read
                // as noise in the chat).
                let at = until
                    .filter(|at| *at > now)
                    .unwrap_or_else(|| now.checked_add(fallback).unwrap_or(now));
                let at = at
                    .round(
                        jiff::TimestampRound::new()
                            .smallest(jiff::Unit::Second)
                            .mode(jiff::RoundMode::Ceil),
                    )
                    .unwrap_or(at);
                row.outcome = AttemptOutcome::UsageLimit;
                row.detail = Some(format!("usage limit until {at}: {message}"));
                journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
                run.state.not_before = Some(at);
                run.state.status = RunState::Queued;
                run.save_noting(&format!("Usage limit reached; samocode resumes at {at}"))?;
                run.store.log(&format!(
                    "attempt {} refused for a usage limit; it runs again at {at}",
                    flight.attempt
                ));
                // Told once for refusals in a row, unless the reset moves on by more than the
                // skew (a longer limit reached).
                let told = match limited {
                    Some(before) if at <= before.told.checked_add(skew).unwrap_or(before.told) => {
                        before.told
                    }
                    _ => {
                        self.notify(
                            run,
                            SessionEvent::UsageLimited {
                                session: run.state.name.clone(),
                                until: at,
                            },
                        );
                        at
                    }
                };
                run.limited = Some(super::actor::Limited {
                    in_a_row: in_a_row.saturating_add(1),
                    told,
                });
                let wait =
                    std::time::Duration::try_from(now.duration_until(at)).unwrap_or_default();
                self.schedule(myself, run, wait.min(super::actor::LIMIT_LOOK));
                Ok(())
            }
            Refusal::Authentication { message } => {
                row.outcome = AttemptOutcome::Nonzero;
                journal_attempt(&run.store, &flight.span, &run.trace, &row)?;
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
    /// decided it (an agent's own `blocked` signal has its row already), the state with its
    /// Flow Log line, the session log; then tells the supervisor and the notifier.
    pub(super) fn park(
        &self,
        run: &mut SessionRun,
        status: RunState,
        reason: &str,
        by_worker: bool,
        flow: &str,
    ) -> Result<(), ActorProcessingErr> {
        let word = status.name();
        if by_worker {
            run.store.append_history(&self.history_row(
                run,
                Source::Worker,
                run.state.phase,
                None,
                false,
                Some(reason.to_string()),
                word,
            ))?;
        }
        run.state.status = status;
        run.state.attempt = 0;
        run.state.failures = 0;
        match run.save_noting(flow) {
            // A notebook samocode cannot read (too large, not UTF-8, a link) is what this
            // park may be about: the state alone still tells every command.
            Err(StoreError::Unreadable(_)) => run.save_state()?,
            saved => saved?,
        }
        run.store.log(&format!("{word}: {reason}"));
        self.settle_as_state(run)
    }

    /// Parks as the saved state says.
    fn settle_as_state(&self, run: &mut SessionRun) -> Result<(), ActorProcessingErr> {
        let settled = Settled::of(&run.state).expect("a parked state");
        self.settle(run, settled)
    }

    /// Kills the worker with SIGKILL here when `SAMOCODE_FAILPOINTS` names `name` (the tests
    /// of recovery).
    fn failpoint(&self, name: &str) {
        if self.failpoints.iter().any(|f| f == name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// The `_signal_history.jsonl` row of a verdict (and the signal on the iteration's span).
    #[allow(clippy::too_many_arguments)]
    fn history_row(
        &self,
        run: &SessionRun,
        source: Source,
        from: Phase,
        signal: Option<&Signal>,
        accepted: bool,
        reason: Option<String>,
        outcome: &str,
    ) -> HistoryRow {
        if let Some(signal) = signal {
            run.trace.signal(
                &signal.status.to_string(),
                signal.phase.map(|p| p.to_string()).as_deref(),
            );
        }
        HistoryRow {
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
            by: None,
        }
    }
}

/// An accepted `continue` of a session that goes on in this actor: its rows are journaled
/// without waiting for the disk, and the next save (moments later) carries them. Not into a
/// read-only phase: its attempt first records the worktree (git), which would keep the rows
/// off the disk longer.
fn goes_on(run: &SessionRun, verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Continue { to } if !to.rules().read_only) && !run.once
}

/// Appends the attempt's row to `_iterations.jsonl` and puts its figures on the attempt span.
pub(super) fn journal_attempt(
    store: &SessionStore,
    span: &tracing::Span,
    trace: &super::trace::Trace,
    row: &IterationRow,
) -> Result<(), StoreError> {
    let journaled = store.append_iteration(row);
    observe_attempt(span, trace, row, journaled.as_ref().err());
    journaled
}

/// Puts an attempt's figures on its span and metrics, and logs it in the iteration's span.
fn observe_attempt(
    span: &tracing::Span,
    trace: &super::trace::Trace,
    row: &IterationRow,
    unjournaled: Option<&StoreError>,
) {
    trace.attempt_over(span, row);
    crate::telemetry::metrics::attempt(row);
    // In the iteration's span (see the actor's `handle`): the line carries the trace id.
    match unjournaled {
        None => tracing::info!(
            attempt = row.attempt,
            outcome = row.outcome.name(),
            "attempt journaled"
        ),
        Some(error) => tracing::error!(
            attempt = row.attempt,
            outcome = row.outcome.name(),
            %error,
            "the attempt's row cannot be journaled"
        ),
    }
}

/// A signal that could not be used, and whether the attempt may be retried for it.
struct Problem {
    code: &'static str,
    text: String,
    retryable: bool,
    signal: Option<Signal>,
}

impl Problem {
    fn protocol(error: crate::protocol::SignalError) -> Problem {
        Problem {
            code: error.code(),
            text: format!("protocol error: {error}"),
            retryable: true,
            signal: None,
        }
    }
}

/// Whether a person answered every question of `_qa.md` while the attempt that asked them ran
/// (before it signalled): its `waiting` is then met at once.
fn answered_while_asked(run: &SessionRun) -> bool {
    run.answered_while_running.is_some()
        && matches!(run.store.read(QA), Ok(Some(text)) if QaDoc::parse(&text).is_answered())
}

/// Why `_qa.md` holds no question a person can answer, if it holds none (one read, capped
/// like any session file).
fn no_open_question(run: &SessionRun) -> Option<String> {
    match run.store.read(QA) {
        Ok(Some(text)) if QaDoc::parse(&text).open().next().is_some() => None,
        Ok(Some(_)) => Some(format!(
            "{QA} has no question without an answer (a `## Q1: ...` heading with an empty `Answer:` line)"
        )),
        Ok(None) => Some(format!("there is no {QA}")),
        Err(error) => Some(error.to_string()),
    }
}

/// The last line with something on it of a file's last 4 KiB (an agent's standard error).
fn last_line(path: &std::path::Path) -> Option<String> {
    const WINDOW: u64 = 4096;
    let window = super::store::tail(path, WINDOW);
    let line = window
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    // The window began inside this very line: what came before it is not shown.
    let cut = std::fs::metadata(path).is_ok_and(|m| m.len() > WINDOW)
        && window.trim_start().starts_with(line);
    Some(match cut {
        true => format!("…{line}"),
        false => line.to_string(),
    })
}

/// A failure's text of at most 200 characters: its start and its end, when it is longer (the
/// end of an error line is often what says why).
fn ends(text: &str) -> String {
    let count = text.chars().count();
    if count <= 200 {
        return text.to_string();
    }
    let start: String = text.chars().take(140).collect();
    let end: String = text.chars().skip(count - 59).collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure read from a long last line of standard error began with a broken character
    /// (the window began inside one), was a slice of its middle, and lost its end.
    #[test]
    fn a_long_error_line_is_told_by_its_start_and_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("a.stderr.log");
        let line = format!("ошибка {} КОНЕЦ!", "调用栈 🔥 ".repeat(3000));
        std::fs::write(&stderr, format!("first line\n{line}\n")).unwrap();
        let told = ends(&last_line(&stderr).unwrap());
        assert!(!told.contains('\u{fffd}'), "{told}");
        assert!(told.starts_with('…') && told.ends_with("КОНЕЦ!"), "{told}");
        assert!(told.chars().count() <= 200, "{}", told.chars().count());
        let short = dir.path().join("b.stderr.log");
        std::fs::write(&short, "warning\nbad flag --x\n\n").unwrap();
        assert_eq!(last_line(&short).as_deref(), Some("bad flag --x"));
    }
}
