//! SessionActor: drives one session through its phases, one agent attempt at a time.
//!
//! Owns the session folder (held under the worker lock for the actor's whole life) and its
//! state. Accepts `RunNext` from itself (at start, after an accepted continue, when a retry's
//! backoff is over), `SlotGranted` from the supervisor (room for one more agent), `AgentExited`
//! from its AgentProcess, `Person` (a person's command through the daemon) and `CheckAnswers`
//! (the daemon's look at a hand-edited `_qa.md`). Links one AgentProcess child per attempt; a
//! child that panics counts as a crashed attempt. Asks the supervisor for a slot before each
//! attempt and gives it back after. Reports `SessionSettled` to the supervisor whenever it parks
//! (waiting, blocked, failed, stopped) or finishes, and tells the notifier every event worth
//! telling a person. Under `samocode run` it then stops and lets go of the lock; under the
//! daemon it stays parked, holding no process and no timer, until a person's command.
//!
//! What follows an attempt (`outcome.rs`): an accepted signal -> the next iteration or a park;
//! a protocol error -> one retry with the reason in the context, then blocked; a failed
//! process -> capped exponential backoff up to the attempt budget, then failed.

use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::context::{self, ContextInput};
use super::name;
use super::open::{SessionArgs, Settled};
use super::outcome::journal_attempt;
use super::person::{self, PersonCommand};
use super::profile;
use super::store::{AttemptFiles, SessionStore, StoreError};
use super::worktree::{self, TrackedSnapshot};
use crate::agent::process::{AgentArgs, AgentMsg, AgentProcess};
use crate::agent::refusal;
use crate::agent::{self, AttemptReport, AttemptSpec, ProcessEnd};
use crate::config::{AgentSettings, ModelChoice, Project, RetryPolicy};
use crate::notify::{NotifierMsg, SessionEvent};
use crate::protocol::journal::{AttemptOutcome, IterationRow, Source};
use crate::protocol::{Phase, RunState, SessionState};
use crate::supervisor::SupervisorMsg;

/// The configuration every session shares.
pub struct SessionActor {
    pub project: Project,
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub notifier: ActorRef<NotifierMsg>,
    /// Stop the actor (and let go of the lock) once the session parks: `samocode run`.
    pub stop_when_parked: bool,
    /// Where attempts record their process groups (the daemon).
    pub agents_dir: Option<std::path::PathBuf>,
}

/// Messages of a SessionActor.
#[derive(Debug)]
pub enum SessionMsg {
    /// From itself: start the next attempt (a new iteration, or a retry of the current one).
    RunNext,
    /// From its AgentProcess: the attempt is over.
    AgentExited(Box<AttemptReport>),
    /// From the supervisor: an agent slot is free for this session's next attempt.
    SlotGranted,
    /// From the supervisor (the CLI or Telegram through the daemon): a person's command.
    /// Replies with a sentence, or an error sentence and the CLI exit code.
    Person {
        command: PersonCommand,
        reply: RpcReplyPort<Result<String, (String, u8)>>,
    },
    /// From the supervisor's interval: look whether `_qa.md` was answered by hand.
    CheckAnswers,
}

/// The attempt in flight.
pub(super) struct InFlight {
    pub(super) agent: ActorRef<AgentMsg>,
    pub(super) files: AttemptFiles,
    pub(super) phase: Phase,
    /// Tracked files before a read-only phase ran.
    pub(super) snapshot: Option<TrackedSnapshot>,
    /// The attempt's trace span: opened when the agent starts, closed when its report is in.
    pub(super) span: tracing::Span,
    pub(super) started_at: Timestamp,
    /// The profile, model and effort the attempt was started with.
    pub(super) choice: ModelChoice,
}

pub struct SessionRun {
    pub(super) store: SessionStore,
    pub(super) state: SessionState,
    pub(super) once: bool,
    pub(super) in_flight: Option<InFlight>,
    /// The session parked or finished and told the supervisor.
    pub(super) settled: bool,
    /// The supervisor granted a slot that this session has not given back yet.
    pub(super) has_slot: bool,
    /// A slot was asked for and not granted yet.
    pub(super) awaiting_slot: bool,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionRun;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionRun, ActorProcessingErr> {
        let parked = !args.state.status.is_runnable();
        if !parked {
            myself.send_message(SessionMsg::RunNext)?;
        }
        Ok(SessionRun {
            store: args.store,
            state: args.state,
            once: args.once,
            in_flight: None,
            settled: parked,
            has_slot: false,
            awaiting_slot: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::RunNext => self.run_next(&myself, run).await?,
            SessionMsg::SlotGranted => {
                run.awaiting_slot = false;
                run.has_slot = true;
                self.run_next(&myself, run).await?;
            }
            SessionMsg::AgentExited(report) => self.attempt_over(&myself, run, *report).await?,
            SessionMsg::Person { command, reply } => {
                let answer = self.person(&myself, run, command);
                let _ = reply.send(answer);
            }
            SessionMsg::CheckAnswers => {
                if run.in_flight.is_none()
                    && !run.state.status.is_runnable()
                    && let Ok(Some(state)) = person::wake_on_answers(&run.store)
                {
                    run.state = state;
                    run.store
                        .log("the answers in _qa.md are complete; resuming");
                    myself.send_message(SessionMsg::RunNext)?;
                }
            }
        }
        // A slot is held only while an attempt runs.
        if run.has_slot && run.in_flight.is_none() && !run.awaiting_slot {
            run.has_slot = false;
            let _ = self.supervisor.send_message(SupervisorMsg::ReleaseSlot {
                dir: run.store.dir().to_path_buf(),
            });
        }
        // Under `run`, a parked session's actor goes and lets go of the lock; under the daemon
        // it stays, holding no process and no timer, until a person's command wakes it.
        if self.stop_when_parked && run.settled && run.in_flight.is_none() {
            myself.stop(Some("settled".into()));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionMsg>,
        event: SupervisionEvent,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        // Overrides ractor's default, which would stop this session whenever an attempt ends.
        if let SupervisionEvent::ActorFailed(who, error) = event {
            let ours = run
                .in_flight
                .as_ref()
                .is_some_and(|f| f.agent.get_id() == who.get_id());
            if ours {
                let report = AttemptReport {
                    end: ProcessEnd::Signaled(format!("agent watcher failed: {error}")),
                    started_at: Timestamp::now(),
                    ended_at: Timestamp::now(),
                    model: None,
                    agent_session_id: None,
                    result: None,
                    output_bytes: 0,
                    errors: Vec::new(),
                };
                self.attempt_over(&myself, run, report).await?;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(flight) = run.in_flight.take() {
            // Stopping mid-attempt (shutdown): the agent gets SIGTERM and its grace period,
            // then SIGKILL. The state still says running, so the next worker runs this
            // iteration again as a new attempt.
            let _ = flight.agent.send_message(AgentMsg::Cancel);
            let deadline =
                std::time::Instant::now() + self.agent.kill_grace + Duration::from_secs(2);
            while flight.agent.get_status() != ractor::ActorStatus::Stopped
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            flight
                .agent
                .stop_and_wait(None, Some(Duration::from_secs(2)))
                .await
                .ok();
            let row = IterationRow {
                started_at: flight.started_at,
                ended_at: Timestamp::now(),
                iteration: run.state.iteration,
                attempt: run.state.attempt,
                phase: flight.phase,
                provider: self.agent.provider.to_string(),
                model: Some(flight.choice.model.clone()),
                reported_model: None,
                profile: Some(flight.choice.profile),
                effort: Some(flight.choice.effort.clone()),
                exit_code: None,
                exit_signal: None,
                outcome: AttemptOutcome::Crashed,
                detail: Some("interrupted: the worker stopped during the attempt".into()),
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
                agent_session_id: None,
                log: flight.files.relative_log(),
            };
            let _ = journal_attempt(&run.store, &flight.span, &row);
            run.store
                .log("stopped by the worker during an attempt; it will be retried");
        }
        run.store.release();
        Ok(())
    }
}

impl SessionActor {
    #[tracing::instrument(skip_all, fields(session = %run.state.name, phase = %run.state.phase, profile, model, effort))]
    async fn run_next(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        if run.in_flight.is_some() || run.awaiting_slot {
            return Ok(());
        }
        run.settled = false;
        if !run.state.status.is_runnable() {
            return self.settle(run);
        }
        if let Some(at) = run.state.not_before {
            // Parked for a provider's usage limit: wait out the rest (also after a restart),
            // holding no slot, then run the refused attempt again under its own number.
            let left = Timestamp::now().duration_until(at);
            if left.is_positive() {
                let left = Duration::try_from(left).unwrap_or_default();
                myself.send_after(left, || SessionMsg::RunNext);
                return Ok(());
            }
        }
        if !run.has_slot {
            // Queued until the supervisor has room for one more agent.
            run.awaiting_slot = true;
            self.supervisor.send_message(SupervisorMsg::RequestSlot {
                dir: run.store.dir().to_path_buf(),
            })?;
            return Ok(());
        }
        if run.state.phase == Phase::Init
            && let Err(error) = self.init(run).await
        {
            return self.block(run, format!("init failed: {error}"), Source::Worker);
        }
        let state = &mut run.state;
        let refused_before = state.not_before.take().is_some() && state.attempt > 0;
        if refused_before {
            // The attempt the provider refused runs again; it keeps its number.
        } else if state.attempt == 0 {
            let max = state.phase.rules().max_iterations;
            if state.phase_iteration >= max {
                let reason = format!(
                    "iteration_limit_exceeded: the {} phase used all {max} of its iterations",
                    state.phase
                );
                return self.block(run, reason, Source::Worker);
            }
            state.iteration += 1;
            state.phase_iteration += 1;
            state.attempt = 1;
        } else {
            // A retry, or an attempt interrupted by a crash of the previous worker.
            state.attempt += 1;
        }
        state.status = RunState::Running;
        run.store.remove_signal()?;
        let workdir = state
            .worktree
            .clone()
            .unwrap_or_else(|| self.project.main_repo.clone());
        let snapshot = if state.phase.rules().read_only {
            TrackedSnapshot::take(&workdir).await.ok()
        } else {
            None
        };
        let files = run
            .store
            .attempt_files(state.iteration, state.phase, state.attempt)?;
        let text = context::render(&ContextInput {
            state,
            session_dir: run.store.dir(),
            workdir: &workdir,
            time_limit: self.agent.timeout,
            now: Timestamp::now(),
        });
        std::fs::write(&files.context, &text)?;
        // The model is decided once per attempt: the phase's profile (or its plan's), then the
        // provider's model for it, unless CLAUDE_MODEL names one.
        let picked = profile::pick(state.phase, run.store.dir());
        let choice = self.agent.choose(picked.profile);
        let span = tracing::Span::current();
        span.record("profile", choice.profile.name());
        span.record("model", choice.model.as_str());
        span.record("effort", choice.effort.as_str());
        let settings = self.agent.for_attempt(&choice);
        let command = agent::command(&settings, &text, &files.context, &workdir);
        run.store.save(&mut run.state)?;
        let state = &run.state;
        run.store.log(&format!(
            "iteration {} ({} #{}) attempt {} started: {} (profile {}{}, model {})",
            state.iteration,
            state.phase,
            state.phase_iteration,
            state.attempt,
            files.relative_log(),
            choice.profile,
            picked
                .plan
                .map(|plan| format!(" from {plan}"))
                .unwrap_or_default(),
            choice.model,
        ));
        self.notify(SessionEvent::AttemptStarted {
            session: state.name.clone(),
            phase: state.phase,
            iteration: state.iteration,
            attempt: state.attempt,
        });
        let spec = AttemptSpec {
            command,
            files: files.clone(),
            timeout: self.agent.timeout,
            kill_grace: self.agent.kill_grace,
            stall: self.agent.stall_timeout,
            session_dir: run.store.dir().to_path_buf(),
            registry: self.agents_dir.clone(),
        };
        let (agent, _) = Actor::spawn_linked(
            None,
            AgentProcess,
            AgentArgs {
                spec,
                report_to: myself.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        // A root span: the actor's own spans live as long as the actor and would swallow it.
        let span = tracing::info_span!(
            parent: None,
            "attempt",
            session = %state.name,
            phase = %state.phase,
            iteration = state.iteration,
            attempt = state.attempt,
            provider = %self.agent.provider,
            outcome = tracing::field::Empty,
            cost_usd = tracing::field::Empty,
            input_tokens = tracing::field::Empty,
            output_tokens = tracing::field::Empty,
        );
        run.in_flight = Some(InFlight {
            agent,
            files,
            phase: state.phase,
            snapshot,
            span,
            started_at: Timestamp::now(),
            choice,
        });
        Ok(())
    }

    async fn init(&self, run: &mut SessionRun) -> Result<(), worktree::WorktreeError> {
        let folder = run.store.name();
        let tree = worktree::prepare(&self.project, &folder, name::short_name(&folder)).await?;
        let state = &mut run.state;
        state.worktree = Some(tree.path.clone());
        state.branch = Some(tree.branch.clone());
        state.enter_phase(Phase::Investigation);
        let entry = format!(
            "Session initialised: worktree {} on branch {}",
            tree.path.display(),
            tree.branch
        );
        run.store
            .save(state)
            .map_err(|e| worktree::WorktreeError::Git {
                args: "(saving state)".into(),
                dir: run.store.dir().to_path_buf(),
                detail: e.to_string(),
            })?;
        let _ = run.store.flow_log(state.iteration, &entry);
        run.store.log(&entry);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(session = %run.state.name, iteration = run.state.iteration, attempt = run.state.attempt))]
    async fn attempt_over(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        report: AttemptReport,
    ) -> Result<(), ActorProcessingErr> {
        let Some(flight) = run.in_flight.take() else {
            return Ok(());
        };
        let usage = report.usage();
        run.state.usage.add(usage);
        if let Some(id) = &report.agent_session_id
            && !run.state.agent_session_ids.contains(id)
        {
            run.state.agent_session_ids.push(id.clone());
        }
        let mut row = IterationRow {
            started_at: report.started_at,
            ended_at: report.ended_at,
            iteration: run.state.iteration,
            attempt: run.state.attempt,
            phase: flight.phase,
            provider: self.agent.provider.to_string(),
            model: Some(flight.choice.model.clone()),
            reported_model: report
                .model
                .clone()
                .filter(|reported| *reported != flight.choice.model),
            profile: Some(flight.choice.profile),
            effort: Some(flight.choice.effort.clone()),
            exit_code: None,
            exit_signal: None,
            outcome: AttemptOutcome::Ok,
            detail: None,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: usage.cost_usd,
            agent_session_id: report.agent_session_id.clone(),
            log: flight.files.relative_log(),
        };
        let failure = match &report.end {
            ProcessEnd::Exited(0) => {
                row.exit_code = Some(0);
                None
            }
            ProcessEnd::Exited(code) => {
                row.exit_code = Some(*code);
                let detail = report
                    .result
                    .as_ref()
                    .and_then(|r| r.text.clone())
                    .map(|t| format!(": {}", t.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                Some((
                    AttemptOutcome::Nonzero,
                    format!("the agent exited with code {code}{detail}"),
                ))
            }
            ProcessEnd::Signaled(signal) => {
                row.exit_signal = Some(signal.clone());
                Some((
                    AttemptOutcome::Crashed,
                    format!("the agent was killed by {signal}"),
                ))
            }
            ProcessEnd::TimedOut => Some((
                AttemptOutcome::Timeout,
                format!(
                    "the agent passed its time limit of {} and was stopped",
                    humantime::format_duration(self.agent.timeout)
                ),
            )),
            ProcessEnd::Stalled => Some((
                AttemptOutcome::Stalled,
                format!(
                    "the agent printed nothing for {} and was stopped",
                    humantime::format_duration(self.agent.stall_timeout.unwrap_or_default())
                ),
            )),
            ProcessEnd::Cancelled => Some((AttemptOutcome::Crashed, "stopped by samocode".into())),
            ProcessEnd::SpawnFailed(message) => Some((AttemptOutcome::Crashed, message.clone())),
        };

        if let Some((_, detail)) = &failure
            && let ProcessEnd::Exited(_) = report.end
            && let Some(refusal) =
                refusal::of_report(&report, Timestamp::now(), &jiff::tz::TimeZone::system())
        {
            row.detail = Some(detail.clone());
            return self.refused(myself, run, &flight.span, row, refusal);
        }

        if let Some((outcome, detail)) = failure {
            row.outcome = outcome;
            row.detail = Some(detail.clone());
            journal_attempt(&run.store, &flight.span, &row)?;
            run.store
                .log(&format!("attempt {} failed: {detail}", run.state.attempt));
            if report.end == ProcessEnd::Cancelled {
                return Ok(());
            }
            self.notify(SessionEvent::AttemptFailed {
                session: run.state.name.clone(),
                attempt: run.state.attempt,
                detail: detail.clone(),
            });
            let spawn_failed = matches!(report.end, ProcessEnd::SpawnFailed(_));
            if !spawn_failed && run.state.attempt < self.retry.max_attempts {
                let delay = self.retry.delay_before(run.state.attempt + 1);
                run.store.save(&mut run.state)?;
                run.store.log(&format!(
                    "retrying in {}",
                    humantime::format_duration(delay)
                ));
                myself.send_after(delay, || SessionMsg::RunNext);
                return Ok(());
            }
            let reason = if spawn_failed {
                detail
            } else {
                format!("{} attempts failed; the last: {detail}", run.state.attempt)
            };
            return self.fail(run, reason);
        }

        // A clean exit: the signal decides.
        let evaluation = self.evaluate(run, &flight).await?;
        match evaluation {
            Err(problem) => {
                row.outcome = AttemptOutcome::ProtocolError;
                row.detail = Some(problem.text.clone());
                journal_attempt(&run.store, &flight.span, &row)?;
                let retry = problem.retryable && run.state.last_rejection.is_none();
                self.history(
                    run,
                    Source::Agent,
                    flight.phase,
                    problem.signal.as_ref(),
                    false,
                    Some(format!("{}: {}", problem.code, problem.text)),
                    if retry { "retry" } else { "blocked" },
                )?;
                if retry {
                    run.state.last_rejection = Some(problem.text.clone());
                    run.store.save(&mut run.state)?;
                    run.store
                        .log(&format!("protocol error, retrying once: {}", problem.text));
                    myself.send_message(SessionMsg::RunNext)?;
                    return Ok(());
                }
                self.block(run, problem.text, Source::Agent)
            }
            Ok((signal, verdict)) => {
                journal_attempt(&run.store, &flight.span, &row)?;
                self.apply(myself, run, flight.phase, &signal, verdict)
            }
        }
    }

    /// Tells the supervisor and the notifier how the session stands now that it is parked.
    pub(super) fn settle(&self, run: &mut SessionRun) -> Result<(), ActorProcessingErr> {
        run.settled = true;
        match Settled::of(&run.state) {
            Some(settled) => self.report_settled(run, settled),
            None => Ok(()),
        }
    }

    pub(super) fn report_settled(
        &self,
        run: &SessionRun,
        settled: Settled,
    ) -> Result<(), ActorProcessingErr> {
        self.notify(SessionEvent::Settled {
            session: run.state.name.clone(),
            phase: run.state.phase,
            settled: settled.clone(),
        });
        self.supervisor
            .send_message(SupervisorMsg::SessionSettled {
                dir: run.store.dir().to_path_buf(),
                settled,
            })?;
        Ok(())
    }

    /// Applies a person's command with the lock this actor holds, and acts on the result.
    fn person(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        command: PersonCommand,
    ) -> Result<String, (String, u8)> {
        let (state, message) = person::apply(&run.store, &command).map_err(|e| {
            let code = match &e {
                person::ActError::Store(StoreError::Io { .. }) => 1,
                person::ActError::Store(StoreError::Locked { .. }) => 12,
                _ => 2,
            };
            (e.to_string(), code)
        })?;
        run.state = state;
        if matches!(command, PersonCommand::Stop) {
            if let Some(flight) = &run.in_flight {
                let _ = flight.agent.send_message(AgentMsg::Cancel);
            }
            let _ = self.settle(run);
        } else if run.state.status.is_runnable() {
            run.settled = false;
            let _ = myself.send_message(SessionMsg::RunNext);
        }
        Ok(message)
    }

    pub(super) fn notify(&self, event: SessionEvent) {
        let _ = self.notifier.send_message(NotifierMsg::Deliver(event));
    }
}
