//! AgentProcess: one actor per agent attempt.
//!
//! Owns one child process, started in its own process group; its standard input gets the
//! command's payload (Codex's context) and is closed, or is empty from the start. A
//! reader task copies stdout byte for byte to the attempt log and sends the events it parses;
//! a waiter task reaps the child. The actor enforces the hard timeout (SIGTERM to the group,
//! then SIGKILL after the grace period, scheduled as messages, never slept through), kills
//! whatever the agent left in its group when it exits (so that nothing holds stdout open), and
//! when the process is reaped and stdout is closed, sends `SessionMsg::AgentExited` to its
//! session and stops.
//!
//! Accepts `AgentMsg` from its own tasks and timers, and `Cancel` from its session. It links no
//! children. If it panics, its session sees `ActorFailed` and counts a failed attempt; its
//! `post_stop` kills the process group in every case.

use std::process::Stdio;

use jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::stream::{self, StreamEvent};
use super::{AttemptReport, AttemptSpec, ProcessEnd};
use crate::session::actor::SessionMsg;

/// The longest stdout line parsed for events; longer lines are still logged, only not parsed.
/// Claude's events are far smaller; this bounds memory when an agent floods its output.
const MAX_EVENT_LINE: usize = 4 * 1024 * 1024;

pub struct AgentProcess;

pub struct AgentArgs {
    pub spec: AttemptSpec,
    pub report_to: ActorRef<SessionMsg>,
}

/// Messages of an AgentProcess.
#[derive(Debug)]
pub enum AgentMsg {
    /// From the reader task: an event the worker reads.
    Event(StreamEvent),
    /// From the reader task: the agent printed something (sent at most once a second).
    Output,
    /// From the reader task: stdout reached end of file (or failed); total bytes seen.
    OutputClosed { bytes: u64 },
    /// From the waiter task: the child was reaped.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// From its own timer: the hard timeout passed.
    TimeLimit,
    /// From its own interval: time to look whether the agent has gone silent.
    CheckSilence,
    /// From its own timer: the grace period after SIGTERM is over.
    GraceOver,
    /// From the session: stop the attempt now.
    Cancel,
}

pub struct AgentState {
    spec: AttemptSpec,
    report_to: ActorRef<SessionMsg>,
    pid: Option<Pid>,
    started_at: Timestamp,
    exit: Option<ProcessEnd>,
    output_closed: bool,
    output_bytes: u64,
    /// Why samocode is stopping the process, when it is.
    stopping: Option<ProcessEnd>,
    model: Option<String>,
    agent_session_id: Option<String>,
    result: Option<stream::RunResult>,
    /// The agent's last message, the run's text when the result event has none.
    last_text: Option<String>,
    errors: Vec<String>,
    reported: bool,
    /// When the agent last printed something (for the stall watchdog).
    last_output: std::time::Instant,
}

/// Error messages kept per attempt; a CLI that reconnects many times repeats itself.
const MAX_ERRORS: usize = 8;

impl Actor for AgentProcess {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let mut state = AgentState {
            spec: args.spec,
            report_to: args.report_to,
            pid: None,
            started_at: Timestamp::now(),
            exit: None,
            output_closed: false,
            output_bytes: 0,
            stopping: None,
            model: None,
            agent_session_id: None,
            result: None,
            last_text: None,
            errors: Vec::new(),
            reported: false,
            last_output: std::time::Instant::now(),
        };
        match spawn(&state.spec, &myself).await {
            Ok(pid) => {
                state.pid = Some(pid);
                myself.send_after(state.spec.timeout, || AgentMsg::TimeLimit);
                if let Some(stall) = state.spec.stall {
                    // A quarter of the limit between looks: silence is caught within 125% of it.
                    myself.send_interval(stall / 4, || AgentMsg::CheckSilence);
                }
            }
            Err(error) => {
                state.exit = Some(ProcessEnd::SpawnFailed(format!(
                    "cannot start {}: {error}; install the agent CLI, or point CLAUDE_PATH (CODEX_PATH for codex) at it",
                    state.spec.command.program.display()
                )));
                state.output_closed = true;
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        finish_if_over(&myself, state);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(pid = ?state.pid))]
    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Output => state.last_output = std::time::Instant::now(),
            AgentMsg::Event(StreamEvent::Init { session_id, model }) => {
                state.agent_session_id = session_id.or(state.agent_session_id.take());
                state.model = model.or(state.model.take());
            }
            AgentMsg::Event(StreamEvent::Result(result)) => {
                if state.agent_session_id.is_none() {
                    state.agent_session_id = result.session_id.clone();
                }
                state.result = Some(result);
            }
            AgentMsg::Event(StreamEvent::Text(text)) => state.last_text = Some(text),
            AgentMsg::Event(StreamEvent::Error(message)) => {
                if state.errors.len() == MAX_ERRORS {
                    state.errors.remove(0);
                }
                state.errors.push(message);
            }
            AgentMsg::OutputClosed { bytes } => {
                state.output_closed = true;
                state.output_bytes = bytes;
            }
            AgentMsg::Exited(status) => {
                state.exit = Some(match (state.stopping.clone(), status) {
                    (Some(reason), _) => reason,
                    (None, Ok(status)) => end_of(status),
                    (None, Err(e)) => {
                        ProcessEnd::SpawnFailed(format!("cannot wait for the agent: {e}"))
                    }
                });
                // The agent is gone; anything it left in its group would keep stdout open and
                // outlive the attempt. Ask it to stop, and kill it after the grace period.
                if !state.output_closed {
                    signal_group(state.pid, Signal::SIGTERM);
                    myself.send_after(state.spec.kill_grace, || AgentMsg::GraceOver);
                }
            }
            AgentMsg::CheckSilence => {
                let silent = state.last_output.elapsed();
                if let Some(stall) = state.spec.stall
                    && state.exit.is_none()
                    && state.stopping.is_none()
                    && silent >= stall
                {
                    tracing::warn!(silent = ?silent, "agent printed nothing for too long");
                    stop_group(&myself, state, ProcessEnd::Stalled);
                }
            }
            AgentMsg::TimeLimit => {
                if state.exit.is_none() {
                    tracing::warn!(timeout = ?state.spec.timeout, "agent passed its time limit");
                    stop_group(&myself, state, ProcessEnd::TimedOut);
                }
            }
            AgentMsg::Cancel => {
                if state.exit.is_none() {
                    stop_group(&myself, state, ProcessEnd::Cancelled);
                }
            }
            AgentMsg::GraceOver => {
                if !(state.exit.is_some() && state.output_closed) {
                    signal_group(state.pid, Signal::SIGKILL);
                }
            }
        }
        finish_if_over(&myself, state);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever stopped this actor, no process of the attempt may outlive it.
        if !(state.exit.is_some() && state.output_closed) {
            signal_group(state.pid, Signal::SIGKILL);
        }
        forget(state);
        Ok(())
    }
}

/// Takes the attempt's process group off the daemon's record once it is gone.
fn forget(state: &AgentState) {
    if let (Some(registry), Some(pid)) = (&state.spec.registry, state.pid) {
        super::reaper::forget(registry, pid.as_raw());
    }
}

fn stop_group(myself: &ActorRef<AgentMsg>, state: &mut AgentState, reason: ProcessEnd) {
    state.stopping = Some(reason);
    signal_group(state.pid, Signal::SIGTERM);
    myself.send_after(state.spec.kill_grace, || AgentMsg::GraceOver);
}

fn finish_if_over(myself: &ActorRef<AgentMsg>, state: &mut AgentState) {
    if state.reported || !state.output_closed {
        return;
    }
    let Some(end) = state.exit.clone() else {
        return;
    };
    state.reported = true;
    // The group may still hold processes that closed their stdout; they go now.
    signal_group(state.pid, Signal::SIGKILL);
    forget(state);
    let mut result = state.result.clone();
    if let Some(result) = &mut result
        && result.text.is_none()
    {
        result.text = state.last_text.clone();
    }
    let report = AttemptReport {
        end,
        started_at: state.started_at,
        ended_at: Timestamp::now(),
        model: state.model.clone(),
        agent_session_id: state.agent_session_id.clone(),
        result,
        output_bytes: state.output_bytes,
        errors: state.errors.clone(),
    };
    if let Err(error) = state
        .report_to
        .send_message(SessionMsg::AgentExited(Box::new(report)))
    {
        tracing::warn!(%error, "the session is gone; attempt report dropped");
    }
    myself.stop(None);
}

fn signal_group(pid: Option<Pid>, signal: Signal) {
    if let Some(pid) = pid {
        // ESRCH means the group is already empty, which is what we want.
        let _ = killpg(pid, signal);
    }
}

fn end_of(status: std::process::ExitStatus) -> ProcessEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(sig)) => ProcessEnd::Signaled(
            Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}")),
        ),
        (None, None) => ProcessEnd::Signaled("unknown".into()),
    }
}

/// Starts the child and its reader and waiter tasks.
async fn spawn(spec: &AttemptSpec, myself: &ActorRef<AgentMsg>) -> std::io::Result<Pid> {
    let stderr = std::fs::File::create(&spec.files.stderr)?;
    let log = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&spec.files.stdout)
        .await?;
    let mut command = Command::new(&spec.command.program);
    command
        .args(&spec.command.args)
        .current_dir(&spec.command.workdir)
        .stdin(if spec.command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        // Its own group, so that one killpg reaches every process the agent starts.
        .process_group(0)
        .kill_on_drop(true);
    // Nothing inherited: the agent's environment is exactly what the policy kept.
    command.env_clear().envs(spec.command.env.vars());
    command.env(super::reaper::MARKER, &spec.session_dir);
    let mut child = command.spawn()?;
    let pid = Pid::from_raw(child.id().expect("a just-spawned child has a pid") as i32);
    if let Some(registry) = &spec.registry {
        super::reaper::record(registry, pid.as_raw(), &spec.session_dir);
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    if let (Some(mut input), Some(payload)) = (child.stdin.take(), spec.command.stdin.clone()) {
        // A task of its own: a payload larger than the pipe buffer blocks until the agent
        // reads it. Dropping the handle closes standard input, which ends the agent's read.
        tokio::spawn(async move {
            if let Err(error) = input.write_all(payload.as_bytes()).await {
                tracing::warn!(%error, "cannot write the context to the agent's standard input");
            }
        });
    }

    let reader = myself.clone();
    let provider = spec.command.provider;
    tokio::spawn(async move {
        let bytes = copy_and_parse(stdout, log, provider, &reader).await;
        let _ = reader.send_message(AgentMsg::OutputClosed { bytes });
    });
    let waiter = myself.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = waiter.send_message(AgentMsg::Exited(status));
    });
    Ok(pid)
}

/// Copies stdout to the log as it arrives and sends the events of complete lines.
async fn copy_and_parse(
    mut stdout: tokio::process::ChildStdout,
    mut log: tokio::fs::File,
    provider: crate::config::Provider,
    actor: &ActorRef<AgentMsg>,
) -> u64 {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut total = 0u64;
    let mut told = std::time::Instant::now();
    loop {
        let n = match stdout.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if told.elapsed() >= std::time::Duration::from_secs(1) {
            told = std::time::Instant::now();
            let _ = actor.send_message(AgentMsg::Output);
        }
        if let Err(error) = log.write_all(&chunk[..n]).await {
            tracing::warn!(%error, "attempt log write failed");
        }
        for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
            let complete = piece.ends_with(b"\n");
            if !overlong {
                line.extend_from_slice(piece);
                if line.len() > MAX_EVENT_LINE {
                    overlong = true;
                    line = Vec::new();
                }
            }
            if complete {
                if !overlong && let Some(event) = super::parse_line(provider, line.trim_ascii()) {
                    let _ = actor.send_message(AgentMsg::Event(event));
                }
                line.clear();
                overlong = false;
            }
        }
    }
    if !overlong
        && !line.is_empty()
        && let Some(event) = super::parse_line(provider, line.trim_ascii())
    {
        let _ = actor.send_message(AgentMsg::Event(event));
    }
    let _ = log.flush().await;
    total
}
