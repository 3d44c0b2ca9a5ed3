//! Taking over a session from a worker that died mid-attempt (a `kill -9` of `samocode run`
//! or of the daemon, a power cut).
//!
//! Such a worker leaves `_state.json` with its in-flight record (written before the agent
//! started) and, possibly, agents still running: they were in a process group of their own,
//! and nothing killed them. The next worker, holding the lock, first kills every process that
//! carries this session's marker, then journals the interrupted attempt (unless its row made it
//! to `_iterations.jsonl` before the end), checks a read-only phase's worktree against the
//! recorded baseline, and clears the record. Only then may a new attempt start, so one session
//! never has two agents at once.

use jiff::Timestamp;

use super::store::{SessionStore, StoreError};
use super::worktree;
use crate::config::Prices;
use crate::executor::AttemptExecutor;
use crate::protocol::baseline::Mutation;
use crate::protocol::journal::{AttemptOutcome, HistoryRow, IterationRow, Source};
use crate::protocol::{RunState, SessionState};

/// The usage an attempt's log reports in its result event (the CLI prints it last), read from
/// the log's last MiB. A claude attempt that did not get so far is priced from the tokens its
/// messages report (as a live attempt that ended without its cost is), at `prices` for
/// `model`. (A codex attempt's cost is priced only when the worker sees it end: its tokens
/// count here, its cost does not.)
fn reported_usage(
    store: &SessionStore,
    log: &str,
    provider: &str,
    model: Option<&str>,
    prices: &Prices,
) -> crate::protocol::Usage {
    let provider = match provider {
        "codex" => crate::config::Provider::Codex,
        _ => crate::config::Provider::Claude,
    };
    let tail = super::store::tail(&store.path(log), 1 << 20);
    let reported = tail.lines().rev().find_map(|line| {
        match crate::agent::parse_line(provider, line.as_bytes()) {
            Some(crate::agent::stream::StreamEvent::Result(result)) => Some(result.usage),
            _ => None,
        }
    });
    if let Some(usage) = reported {
        return usage;
    }
    if provider != crate::config::Provider::Claude {
        return crate::protocol::Usage::default();
    }
    super::budget::estimate_unreported(
        store,
        &store.path(log),
        model.as_slice(),
        prices,
        "the interrupted attempt printed no cost",
    )
    .unwrap_or_default()
}

/// The status an attempt's accepted verdict of `waiting`, `blocked` or `done` (`verdict`'s
/// journaled attempt) parks the session in, read again from the signal kept beside the
/// attempt's log (`log`); `None` for another verdict, or when the signal is not there to say
/// what it waits for or why it is blocked (the iteration then runs again).
pub(crate) fn settled_by(
    store: &super::SessionFolder,
    log: &str,
    attempt: &IterationRow,
) -> Result<Option<RunState>, StoreError> {
    use crate::protocol::signal::{Signal, Verdict};
    let Some(verdict) = store.verdict_of(attempt)? else {
        return Ok(None);
    };
    if !matches!(verdict.outcome.as_str(), "waiting" | "blocked" | "done") {
        return Ok(None);
    }
    let kept = store.path(log).with_extension("signal.json");
    // Never waited on, never more than a signal may be: the agent may have left a named pipe
    // or a link to /dev/zero there.
    let Ok(Some(text)) = super::untrusted::read_text(
        &kept,
        super::store::SIGNAL_LIMIT,
        super::untrusted::Links::Refuse,
    ) else {
        return Ok(None);
    };
    let Ok(Ok(checked)) = Signal::parse(&text).map(|signal| signal.validate(verdict.from)) else {
        return Ok(None);
    };
    let since = verdict.at;
    // Only the verdict the journal holds: a kept signal that says otherwise (edited since) is
    // not taken.
    Ok(match (checked, verdict.outcome.as_str()) {
        (Verdict::Wait { wait_for }, "waiting") => Some(RunState::Waiting { wait_for, since }),
        (Verdict::Block { reason, needs }, "blocked") => Some(RunState::Blocked {
            reason,
            needs,
            since,
        }),
        (Verdict::Finish { summary }, "done") => Some(RunState::Done { summary, at: since }),
        _ => None,
    })
}

/// How a parked status reads in the Flow Log of a take-over.
fn verdict_label(status: &RunState) -> String {
    match status {
        RunState::Waiting { wait_for, .. } => format!("waiting for {wait_for}"),
        RunState::Blocked { reason, .. } => format!("blocked: {reason}"),
        other => other.name().to_string(),
    }
}

/// Kills whatever a dead worker's agents left running for this session.
pub fn kill_leftovers(store: &SessionStore, launcher: &dyn AttemptExecutor) -> Vec<i32> {
    let killed = launcher.kill_leftovers(store.dir());
    if !killed.is_empty() {
        tracing::warn!(session = %store.name(), pids = ?killed, "killed agent processes left by a previous worker");
        store.log(&format!(
            "killed {} agent process(es) left by a previous worker: {killed:?}",
            killed.len()
        ));
    }
    killed
}

/// The words of an interrupted attempt's `_iterations.jsonl` detail that say a take-over
/// journaled it (the worker that ran it never did, nor exported its span).
pub const FOUND_BY_NEXT: &str = "found by the next worker";

/// Cleans up after a worker that stopped mid-attempt, if the state says one did. A park this
/// makes (the dead worker's verdict of waiting, blocked or done taken from the journals, or a
/// block for what the attempt changed) is marked `untold` in the state saved: nobody has told
/// people yet. (The span of an attempt it journals as interrupted is exported by the worker
/// that ends the dead worker's segment: see `Trace::end_left_open`.)
pub fn take_over(
    store: &SessionStore,
    state: &mut SessionState,
    launcher: &dyn AttemptExecutor,
    prices: &Prices,
) -> Result<(), StoreError> {
    let Some(record) = state.in_flight.take() else {
        return Ok(());
    };
    kill_leftovers(store, launcher);
    let now = Timestamp::now();
    let journaled = store.journaled(&record.log)?;
    if let Some(row) = &journaled
        && row.outcome == AttemptOutcome::Ok
        && let Some(to) = store.continued_to(row)?
    {
        // The attempt ended and its verdict is journaled; the worker died before the state
        // that follows it was saved (it is saved with the next attempt). The state takes the
        // verdict now, as that worker would have: nothing runs twice, nothing is lost.
        state.spend(row);
        let seen = record.notes.min(state.guidance.len());
        state.guidance.drain(..seen);
        // A session that was running moves on, as does one a person stopped (and perhaps
        // resumed) as its agent ended: the stop holds, as the worker that died would have
        // kept it. One the worker has parked since (failed after too many restarts) keeps its
        // status, with the attempt counted.
        let stopped = matches!(state.status, RunState::Stopped { .. });
        if stopped || state.status.is_runnable() {
            state.continue_to(to);
        }
        // A stop that holds is saved once, with its row, below.
        if !stopped {
            store.save(state)?;
        }
        store.log(&format!(
            "took over from worker pid {}, which stopped after attempt {} ended: its verdict (continue in {to}) is taken from the journals",
            record.worker_pid, record.log
        ));
        if stopped {
            super::person::act(store, state, None, |state| {
                let mut effect = crate::protocol::gate::stop(state, now)?;
                effect.flow_log = "The stop given during the attempt holds: its verdict was taken, and the session waits for `resume`".into();
                Ok(effect)
            })
            .map_err(|error| match error {
                super::person::ActError::Store(error) => error,
                other => StoreError::Io {
                    action: "cannot keep the stop of",
                    path: store.dir().to_path_buf(),
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        }
        return Ok(());
    }
    if let Some(row) = &journaled
        && row.outcome == AttemptOutcome::Ok
        && let Some(status) = settled_by(store, &record.log, row)?
    {
        // The same, for a verdict that parks the session (waiting, blocked, done): its
        // journal row was synced before the state that parks it was saved. Taken from the
        // journals and the signal kept beside the attempt's log, so that the iteration does
        // not run again (a second `done`, questions asked again, a plan written again).
        state.spend(row);
        let seen = record.notes.min(state.guidance.len());
        state.guidance.drain(..seen);
        // A person's stop as its agent ended gives way to the park, as it does in the worker
        // that died (the session waits where its verdict put it).
        if state.status.is_runnable() || matches!(state.status, RunState::Stopped { .. }) {
            state.status = status;
            state.last_rejection = None;
            state.last_failure = None;
            state.attempt = 0;
            state.failures = 0;
        }
        state.untold = true;
        store.save(state)?;
        store.log(&format!(
            "took over from worker pid {}, which stopped after attempt {} ended: its verdict ({}) is taken from the journals",
            record.worker_pid,
            record.log,
            verdict_label(&state.status)
        ));
        return Ok(());
    }
    if let Some(row) = &journaled {
        // Journaled, but the state that counts it was never saved: counted now.
        state.spend(row);
    } else if store.path(&record.log).exists() {
        // What it reported before the worker died (its result, if it got so far): its cost
        // counts against the budget like any attempt's.
        let usage = reported_usage(
            store,
            &record.log,
            &record.provider,
            record.model.as_deref(),
            prices,
        );
        // The attempt's time runs to the last moment it was heard from (its logs' last
        // write): the worker that watched it is gone, and the time since (a machine down for
        // the night) is not the agent's. It counts against the time budget as any attempt's.
        let row = IterationRow {
            started_at: record.started_at,
            ended_at: last_heard(store, &record.log, record.started_at, now).min(
                match record.limit_secs {
                    // No longer than it could have run: a wall clock stepped meanwhile
                    // moved its log's last write, not its running time.
                    Some(limit) => record
                        .started_at
                        .checked_add(jiff::SignedDuration::from_secs(limit as i64))
                        .unwrap_or(now),
                    None => now,
                },
            ),
            // Nobody watched it to its end: its time is the wall clock's, up to when its log
            // was last written.
            seconds: None,
            iteration: state.iteration,
            attempt: state.attempt,
            phase: state.phase,
            provider: record.provider.clone(),
            model: record.model.clone(),
            reported_model: None,
            profile: record.profile,
            effort: record.effort.clone(),
            exit_code: None,
            exit_signal: None,
            outcome: AttemptOutcome::Interrupted,
            // The same pid may be a worker that stopped and another that took its pid (a
            // container's pid 1), or this very worker whose session actor failed (a journal it
            // could not write) and was opened again: both are said.
            detail: Some(format!(
                "interrupted: the worker (pid {}) stopped, or its session's actor failed, during the attempt; {FOUND_BY_NEXT} at {}",
                record.worker_pid,
                now.round(jiff::Unit::Second).unwrap_or(now)
            )),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cost_usd: usage.cost_usd,
            agent_session_id: None,
            log: record.log.clone(),
            host: Some(launcher.engine().to_string()),
        };
        store.append_iteration(&row)?;
        state.spend(&row);
    }
    // A context handed by path served the attempt, whatever its end; `contexts.md` keeps it.
    let _ = std::fs::remove_file(store.path(&record.log).with_extension("context.md"));
    let mutation = match (&record.baseline, &state.worktree) {
        (Some(before), Some(tree)) => match worktree::baseline_blocking(tree) {
            Ok(after) => before.mutation(&after, tree.clone()),
            Err(error) => Some(Mutation::unreadable(tree.clone(), error.to_string())),
        },
        _ => None,
    };
    if let Some(mutation) = mutation {
        let reason = format!("worktree_mutated: {mutation}");
        store.append_history(&HistoryRow {
            at: now,
            iteration: state.iteration,
            attempt: state.attempt,
            source: Source::Worker,
            from: state.phase,
            to: None,
            status: "-".into(),
            accepted: false,
            reason: Some(reason.clone()),
            outcome: "blocked".into(),
            by: None,
        })?;
        state.status = RunState::Blocked {
            reason: reason.clone(),
            needs: None,
            since: now,
        };
        state.attempt = 0;
        state.failures = 0;
        state.untold = true;
        store.save_noting(state, Some(&format!("Blocked by samocode: {reason}")))?;
        store.log(&format!("blocked: {reason}"));
        return Ok(());
    }
    store.save(state)?;
    store.log(&format!(
        "took over from worker pid {}, which stopped during attempt {}; the iteration runs again",
        record.worker_pid, record.log
    ));
    Ok(())
}

/// When an attempt logged at `log` (relative to the session folder) was last heard from: the
/// latest write to its log or its stderr log, between its start and `now`.
fn last_heard(store: &SessionStore, log: &str, started: Timestamp, now: Timestamp) -> Timestamp {
    let log = store.path(log);
    let stderr = super::store::stderr_log_of(&log);
    [log, stderr]
        .iter()
        .filter_map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .filter_map(|at| Timestamp::try_from(at).ok())
        .max()
        // A clock set back since the attempt started (`now` before `started`) makes it end
        // where it started: never a panic of `clamp`, never a negative time.
        .map_or(started, |at| at.min(now).max(started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::local::LocalProcess;

    #[test]
    fn an_attempt_that_started_after_now_by_the_clock_ends_where_it_started() {
        // The clock was set back after the worker died (a machine without a hardware clock,
        // NTP stepping back): every command that opened the session panicked.
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-c")).unwrap();
        std::fs::create_dir_all(store.path("_logs")).unwrap();
        std::fs::write(store.path("_logs/a.jsonl"), "{}\n").unwrap();
        let now = Timestamp::now();
        let started = now + jiff::SignedDuration::from_hours(1);
        assert_eq!(last_heard(&store, "_logs/a.jsonl", started, now), started);
        let earlier = now - jiff::SignedDuration::from_hours(1);
        let heard = last_heard(&store, "_logs/a.jsonl", earlier, now);
        assert!(heard > earlier && heard <= now);
    }
    use crate::protocol::{InFlightRecord, Phase};

    /// A session whose attempt ended with an accepted `continue` to requirements, both rows
    /// journaled, while `_state.json` still holds the attempt's in-flight record and `status`.
    fn verdict_journaled(status: RunState) -> (tempfile::TempDir, SessionStore, SessionState) {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-r")).unwrap();
        let now = Timestamp::now();
        let mut state = SessionState::new(&store.name(), "d", "t", now);
        state.enter_phase(Phase::Investigation);
        (state.iteration, state.phase_iteration, state.attempt) = (1, 1, 1);
        state.status = status;
        let log = "_logs/11-24-100000-001-investigation-a1.jsonl";
        std::fs::create_dir_all(store.path("_logs")).unwrap();
        std::fs::write(store.path(log), "").unwrap();
        state.in_flight = Some(InFlightRecord {
            log: log.into(),
            started_at: now,
            worker_pid: 1,
            provider: "claude".into(),
            model: None,
            profile: None,
            effort: None,
            baseline: None,
            notes: 0,
            limit_secs: None,
        });
        store.save(&mut state).unwrap();
        store
            .append_iteration(&IterationRow {
                input_tokens: 100,
                output_tokens: 10,
                cached_input_tokens: 40,
                cost_usd: 0.25,
                agent_session_id: Some("s-1".into()),
                ..IterationRow::ok(
                    1,
                    Phase::Investigation,
                    log,
                    now,
                    now.checked_add(jiff::SignedDuration::from_secs(3)).unwrap(),
                )
            })
            .unwrap();
        store
            .append_history(&HistoryRow {
                at: now,
                iteration: 1,
                attempt: 1,
                source: Source::Agent,
                from: Phase::Investigation,
                to: Some(Phase::Requirements),
                status: "continue".into(),
                accepted: true,
                reason: None,
                outcome: "next".into(),
                by: None,
            })
            .unwrap();
        (dir, store, state)
    }

    #[test]
    fn a_journaled_continue_is_taken_by_the_next_worker_not_run_again() {
        let (_dir, store, mut state) = verdict_journaled(RunState::Running);
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert_eq!(saved, state);
        assert_eq!(saved.phase, Phase::Requirements);
        assert_eq!(saved.status, RunState::Queued);
        assert_eq!((saved.iteration, saved.attempt), (1, 0));
        assert!(saved.in_flight.is_none());
        assert_eq!(saved.usage.cost_usd, 0.25);
        assert_eq!(saved.usage.cached_input_tokens, 40);
        assert_eq!(saved.agent_seconds, 3.0);
        assert_eq!(saved.agent_session_ids, ["s-1"]);
        let rows = store
            .read(crate::session::store::ITERATIONS)
            .unwrap()
            .unwrap();
        assert_eq!(rows.lines().count(), 1, "no interrupted row: {rows}");
    }

    /// An attempt a later build journaled with an outcome this build does not know (after a
    /// rollback): counted, not journaled a second time, and its iteration runs again (it was
    /// journaled twice and its cost never counted: found by the upgrade hunt).
    #[test]
    fn an_attempt_another_build_journaled_is_counted_once_not_journaled_again() {
        let (_dir, store, mut state) = verdict_journaled(RunState::Running);
        let path = store.path(crate::session::store::ITERATIONS);
        let text = std::fs::read_to_string(&path).unwrap();
        let later = text.replace("\"outcome\":\"ok\"", "\"outcome\":\"cancelled\"");
        assert_ne!(later, text);
        std::fs::write(&path, &later).unwrap();
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert_eq!(saved.usage.cost_usd, 0.25);
        assert_eq!(
            saved.phase,
            Phase::Investigation,
            "its verdict is not taken"
        );
        assert!(saved.in_flight.is_none());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            later,
            "not journaled again"
        );
    }

    /// An attempt a killed worker left running counts against the time budget: until its
    /// logs were last written, not until it was found (a daemon down for an hour), and not
    /// for nothing (it had counted 0 s, so `--max-time` let a session run past it).
    #[test]
    fn an_interrupted_attempt_counts_its_time_until_it_was_last_heard_from() {
        let (_dir, store, mut state) = verdict_journaled(RunState::Running);
        std::fs::write(store.path(crate::session::store::ITERATIONS), "").unwrap();
        let started = Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        state.in_flight.as_mut().unwrap().started_at = started;
        let log = store.path(&state.in_flight.as_ref().unwrap().log);
        let heard = started + jiff::SignedDuration::from_secs(75);
        std::fs::File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_modified(std::time::SystemTime::from(heard))
            .unwrap();
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert_eq!(saved.agent_seconds, 75.0);
        let rows = store
            .read(crate::session::store::ITERATIONS)
            .unwrap()
            .unwrap();
        let row: IterationRow = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
        assert_eq!(row.outcome, AttemptOutcome::Interrupted);
        assert_eq!((row.started_at, row.ended_at), (started, heard));
        assert!(saved.in_flight.is_none());
    }

    /// A wall clock stepped a day ahead while the attempt ran moved its log's last write a
    /// day on: the attempt counted a day against a one-hour time budget. It counts no longer
    /// than it could have run (its limit, kept in the in-flight record).
    #[test]
    fn an_interrupted_attempt_counts_no_longer_than_its_limit_whatever_the_clock_did() {
        let (_dir, store, mut state) = verdict_journaled(RunState::Running);
        std::fs::write(store.path(crate::session::store::ITERATIONS), "").unwrap();
        let started = Timestamp::now() - jiff::SignedDuration::from_hours(2);
        let record = state.in_flight.as_mut().unwrap();
        record.started_at = started;
        record.limit_secs = Some(1810);
        let log = store.path(&record.log);
        let stepped = started + jiff::SignedDuration::from_hours(24);
        std::fs::File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_modified(std::time::SystemTime::from(stepped))
            .unwrap();
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        assert_eq!(store.load_state().unwrap().agent_seconds, 1810.0);
    }

    /// A person stopped the session as its agent ended (its signal written), and the worker
    /// died after journaling the verdict: the verdict is taken and the stop holds (the phase
    /// stayed, and the resume ran the iteration again); a verdict that parks it parks it.
    #[test]
    fn a_verdict_journaled_after_a_persons_stop_is_taken_and_the_stop_holds() {
        let stopped = RunState::Stopped {
            at: Timestamp::now(),
            waiting_for: None,
        };
        let (_dir, store, mut state) = verdict_journaled(stopped.clone());
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert_eq!(saved.phase, Phase::Requirements);
        assert!(
            matches!(saved.status, RunState::Stopped { .. }),
            "{saved:?}"
        );
        assert!(saved.in_flight.is_none());
        let history = store.read(crate::session::store::HISTORY).unwrap().unwrap();
        let last: HistoryRow = serde_json::from_str(history.lines().last().unwrap()).unwrap();
        assert_eq!(
            (last.status.as_str(), last.source),
            ("stop", Source::Person)
        );

        let (_dir, store, mut state) = verdict_journaled(stopped);
        let log = state.in_flight.as_ref().unwrap().log.clone();
        std::fs::write(
            store.path(&log).with_extension("signal.json"),
            r#"{"status":"blocked","phase":"investigation","reason":"needs a key"}"#,
        )
        .unwrap();
        store
            .append_history(&HistoryRow {
                at: Timestamp::now(),
                iteration: 1,
                attempt: 1,
                source: Source::Agent,
                from: Phase::Investigation,
                to: None,
                status: "blocked".into(),
                accepted: true,
                reason: None,
                outcome: "blocked".into(),
                by: None,
            })
            .unwrap();
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert!(
            matches!(saved.status, RunState::Blocked { .. }),
            "{saved:?}"
        );
    }

    #[test]
    fn a_session_failed_since_keeps_its_status_with_the_attempt_counted() {
        // Failed after the verdict was journaled.
        let failed = RunState::Failed {
            reason: "the session actor failed 4 times".into(),
            at: Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(5))
                .unwrap(),
        };
        let (_dir, store, mut state) = verdict_journaled(failed.clone());
        take_over(&store, &mut state, &LocalProcess, &Prices::default()).unwrap();
        let saved = store.load_state().unwrap();
        assert_eq!(saved.status, failed);
        assert_eq!(saved.phase, Phase::Investigation);
        assert!(saved.in_flight.is_none());
        assert_eq!(saved.usage.cost_usd, 0.25);
    }
}
