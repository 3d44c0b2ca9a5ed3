//! Attaching to an attempt a remote engine still runs, after the daemon that started it
//! crashed or was killed.
//!
//! A remote attempt does not die with the daemon: its worker goes on, and its events and
//! result wait in the engine. A restarted daemon that finds an in-flight record asks the
//! engine to adopt the attempt ([`crate::executor::AttemptExecutor::adopt`]). When the engine
//! still holds it, an AgentProcess takes it over: the attempt log goes on where it stopped,
//! and the attempt ends as any other (its result applied, its row journaled, the signal
//! read). When the engine does not, the attempt is given up as interrupted, as after a local
//! crash ([`super::recover::take_over`]), and the iteration runs again.

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::actor::{InFlight, Life, SessionActor, SessionMsg, SessionRun};
use super::open::Settled;
use super::store::AttemptFiles;
use crate::agent::process::{AgentArgs, AgentProcess, Begin};
use crate::agent::{AgentCommand, AttemptSpec};
use crate::config::ModelChoice;

impl SessionActor {
    /// At start, with an in-flight record left by a previous daemon: adopt its attempt, or
    /// give it up and go on as the state says.
    pub(super) async fn adopt(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        // An attempt whose row is journaled is over (the daemon died after its end, before
        // the state that follows was saved): nothing to adopt, `take_over` goes on from it.
        let running = match &run.state.in_flight {
            Some(record) => run.store.journaled(&record.log)?.is_none(),
            None => false,
        };
        if let Some(record) = run.state.in_flight.clone().filter(|_| running) {
            let stdout = run.store.path(&record.log);
            let stem = stdout.with_extension("");
            let files = AttemptFiles {
                stderr: super::store::stderr_log_of(&stdout),
                context: stem.with_extension("context.md"),
                stdout,
            };
            let workdir = run
                .state
                .worktree
                .clone()
                .unwrap_or_else(|| self.project.main_repo.clone());
            // The time limit counts from the attempt's start, not from the adoption.
            let ran =
                std::time::Duration::try_from(record.started_at.duration_until(Timestamp::now()))
                    .unwrap_or_default();
            let spec = AttemptSpec {
                command: AgentCommand {
                    provider: self.agent.provider,
                    program: self.agent.program().to_path_buf(),
                    args: Vec::new(),
                    workdir,
                    env: Default::default(),
                    stdin: None,
                },
                files: files.clone(),
                timeout: self
                    .agent
                    .timeout
                    .saturating_sub(ran)
                    .max(std::time::Duration::from_secs(1)),
                kill_grace: self.agent.kill_grace,
                stall: self.agent.stall_timeout,
                session_dir: run.store.dir().to_path_buf(),
                attempt_id: record.log.clone(),
                context: String::new(),
            };
            match self.launcher.adopt(&spec).await {
                Ok(Some(launched)) => {
                    // One that waits for a host counts its time from its host's start, which
                    // it reports: the whole limit, not less the time it waited in a queue.
                    let mut spec = spec;
                    if launched.started.is_some() {
                        spec.timeout = self.agent.timeout;
                    }
                    run.store.log(&format!(
                        "adopted attempt {} from the engine; it still runs",
                        record.log
                    ));
                    run.flights += 1;
                    let id = run.flights;
                    let (agent, _) = Actor::spawn_linked(
                        None,
                        AgentProcess,
                        AgentArgs {
                            spec,
                            flight: id,
                            report_to: myself.get_derived(),
                            launcher: self.launcher.clone(),
                            begin: Begin::Adopted { launched, ran },
                        },
                        myself.get_cell(),
                    )
                    .await?;
                    let state = &run.state;
                    let fallback = self.agent.choose(
                        record
                            .profile
                            .unwrap_or(crate::protocol::profile::Profile::Standard),
                    );
                    let span = run.trace.attempt(
                        &run.state,
                        &self.agent.provider.to_string(),
                        record.model.as_deref().unwrap_or(fallback.model.as_str()),
                        fallback.profile.name(),
                        record.effort.as_deref().unwrap_or(fallback.effort.as_str()),
                    );
                    span.record("samocode.adopted", true);
                    run.life = Life::Running(Box::new(InFlight {
                        id,
                        agent,
                        files,
                        phase: state.phase,
                        iteration: state.iteration,
                        attempt: state.attempt,
                        baseline: record.baseline.clone(),
                        guidance: record.notes,
                        span,
                        started_at: record.started_at,
                        choice: ModelChoice {
                            profile: fallback.profile,
                            model: record.model.clone().unwrap_or(fallback.model),
                            effort: record.effort.clone().unwrap_or(fallback.effort),
                            explicit: fallback.explicit,
                        },
                    }));
                    if let Some(opened) = run.trace.opened() {
                        run.state.last_trace = Some(opened);
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(session = %run.state.name, %error, "cannot ask the engine about the attempt in flight; it is given up");
                }
            }
        }
        self.take_over(run)?;
        match Settled::of(&run.state) {
            Some(settled) => self.settle(run, settled),
            None => {
                myself.send_message(SessionMsg::RunNext {
                    generation: run.generation,
                })?;
                Ok(())
            }
        }
    }
}
