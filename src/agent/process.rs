//! AgentProcess: one actor per agent attempt.
//!
//! Owns one launched agent ([`super::launch`]): the guard of its process group, and the tasks
//! that copy its stdout to the attempt log (parsing the events the worker reads), feed its
//! standard input, and wait for it to exit. The guard kills the group and the tasks end when the
//! actor's state is dropped, so whatever ends the actor (its report, a panic, a kill of it or of
//! its session) no process of the attempt outlives it; ractor's `post_stop`, which a panic or a
//! kill skips, is not relied on.
//!
//! The attempt moves through [`Stage`]s: `Running` until the agent exits or samocode stops it
//! (`Stopping`: SIGTERM to the group, SIGKILL at `GraceOver`, scheduled as messages, never slept
//! through), then `Exited` until its stdout and standard error are closed. What the agent
//! leaves in its group after it exits (holding either pipe) is asked to stop, then killed after
//! the grace; a descendant outside the group that keeps a pipe open past the grace is killed
//! by its markers, and the pipe is abandoned, so the attempt always ends. Then it reports [`AttemptDone`] to its session and stops.
//!
//! Accepts `AgentMsg` from its own tasks and timers, and `Cancel` from its session. It links no
//! children. If it panics, its session sees `ActorFailed` and counts a failed attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::Signal;
use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::launch::{ExitKind, GroupGuard, Launched, Output};
use super::stream::{self, StreamEvent};
use super::{AttemptDone, AttemptReport, AttemptSpec, ProcessEnd};
use crate::executor::AttemptExecutor;

/// The longest stdout line parsed for events; longer lines are still logged, only not parsed.
/// Claude's events are far smaller; this bounds memory when an agent floods its output.
pub(crate) const MAX_EVENT_LINE: usize = 4 * 1024 * 1024;

/// Error messages kept per attempt; a CLI that reconnects many times repeats itself.
const MAX_ERRORS: usize = 8;

/// After the last SIGKILL, how long the pipe may stay open before it is abandoned: enough for
/// the kernel to close it once its last holder is dead.
const PIPE_DRAIN: Duration = Duration::from_millis(200);

pub struct AgentProcess;

pub struct AgentArgs {
    pub spec: AttemptSpec,
    /// Which attempt of the session this is (echoed in the report).
    pub flight: u64,
    pub report_to: DerivedActorRef<AttemptDone>,
    pub launcher: Arc<dyn AttemptExecutor>,
    pub begin: Begin,
}

/// How an AgentProcess's attempt begins.
pub enum Begin {
    /// Launched by the actor; `log` is its stdout log, just made by the session.
    New { log: std::fs::File },
    /// An attempt a previous daemon started, which the engine still runs: the actor takes it
    /// over instead of launching, and appends to its log. `ran`: how long it had run then (by
    /// its in-flight record's start), which counts as its running time too.
    Adopted { launched: Launched, ran: Duration },
}

/// Messages of an AgentProcess.
#[derive(Debug)]
pub enum AgentMsg {
    /// From the reader task: an event the worker reads.
    Event(StreamEvent),
    /// From the reader task: the agent printed something (at once, then at most once per
    /// activity interval).
    Output,
    /// From the reader task: stdout reached end of file (or failed); total bytes seen.
    OutputClosed { bytes: u64, skipped: u32 },
    /// From the stderr task: standard error reached end of file; its last line when its log
    /// could not be written whole.
    ErrorsClosed { unlogged: Option<String> },
    /// From the waiter task: the agent's main process was reaped.
    Exited(std::io::Result<ExitKind>),
    /// From the launch: an attempt that waited for a host has started on one, at `at`; its
    /// time limit counts from then, its stall watch from now.
    Started { at: Option<Timestamp> },
    /// From its own timer: the hard timeout passed.
    TimeLimit,
    /// From its own interval: time to look whether the agent has gone silent.
    CheckSilence,
    /// From its own timer: the grace period after SIGTERM is over.
    GraceOver,
    /// From its own timer: the pipe stayed open after the last kill; stop reading it.
    AbandonPipe,
    /// From the session: stop the attempt now.
    Cancel,
}

/// Where the attempt stands.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// The agent runs and nobody asked it to stop.
    Running,
    /// samocode sent SIGTERM to the group for this reason; SIGKILL follows at `GraceOver`.
    Stopping { why: ProcessEnd },
    /// The main process was reaped; waiting for stdout and standard error to close.
    Exited {
        end: ProcessEnd,
        status: Option<ExitKind>,
    },
    /// The report is sent.
    Reported,
}

/// What the agent said about itself on the way.
#[derive(Default)]
struct Seen {
    model: Option<String>,
    agent_session_id: Option<String>,
    result: Option<stream::RunResult>,
    /// The agent's last message, the run's text when the result event has none.
    last_text: Option<String>,
    errors: Vec<String>,
}

pub struct AgentState {
    spec: AttemptSpec,
    flight: u64,
    report_to: DerivedActorRef<AttemptDone>,
    /// `None` when the agent could not be started.
    group: Option<GroupGuard>,
    /// Where the attempt runs, as its engine says.
    host: Option<crate::executor::Host>,
    /// The reader, waiter and input tasks; dropping the set aborts them.
    tasks: JoinSet<()>,
    /// The actor's timers (see [`after`]); they end with it.
    timers: JoinSet<()>,
    stage: Stage,
    output_open: bool,
    /// Standard error is still being copied to its log.
    errors_open: bool,
    output_bytes: u64,
    seen: Seen,
    started_at: Timestamp,
    /// When it started by the monotonic clock: how long it ran, whatever the wall clock did.
    began: Instant,
    /// When the agent last printed something (for the stall watchdog).
    last_output: Instant,
    note: Option<String>,
}

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
            flight: args.flight,
            report_to: args.report_to,
            group: None,
            host: None,
            tasks: JoinSet::new(),
            timers: JoinSet::new(),
            stage: Stage::Running,
            output_open: true,
            errors_open: false,
            output_bytes: 0,
            seen: Seen::default(),
            started_at: Timestamp::now(),
            began: match &args.begin {
                Begin::Adopted { ran, .. } => Instant::now()
                    .checked_sub(*ran)
                    .unwrap_or_else(Instant::now),
                Begin::New { .. } => Instant::now(),
            },
            last_output: Instant::now(),
            note: None,
        };
        match start(
            &state.spec,
            args.launcher.as_ref(),
            args.begin,
            &myself,
            &mut state.tasks,
        )
        .await
        {
            Ok((guard, errors_open, host, waits)) => {
                state.group = Some(guard);
                state.errors_open = errors_open;
                state.host = Some(host);
                if !waits {
                    let limit = state.spec.timeout;
                    watch_time(&myself, &mut state, limit);
                }
            }
            Err(error) => {
                state.stage = Stage::Exited {
                    end: not_started(&state.spec.command.program, &error),
                    status: None,
                };
                state.output_open = false;
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

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Output => state.last_output = Instant::now(),
            AgentMsg::Event(event) => state.seen.take(event),
            AgentMsg::OutputClosed { bytes, skipped } => {
                state.output_open = false;
                state.output_bytes = bytes;
                if skipped > 0 {
                    // Said with the attempt: a result among them leaves its cost uncounted.
                    let said = format!(
                        "{skipped} output line(s) over {} MiB not read for events: a result among them leaves this attempt's cost and tokens uncounted",
                        MAX_EVENT_LINE >> 20
                    );
                    add_note(state, said);
                }
            }
            AgentMsg::ErrorsClosed { unlogged } => {
                state.errors_open = false;
                // First, so that an error the agent reported in its output comes before it.
                if let Some(line) = unlogged {
                    state.seen.errors.insert(0, line);
                }
            }
            AgentMsg::Exited(exit) => {
                let status = exit.as_ref().ok().cloned();
                let end = match (&state.stage, exit) {
                    (Stage::Stopping { why }, _) => why.clone(),
                    (_, Ok(ExitKind::Code(code))) => ProcessEnd::Exited(code),
                    (_, Ok(ExitKind::Signal(name))) => ProcessEnd::Signaled(name),
                    (_, Err(e)) => ProcessEnd::Lost(format!(
                        "the attempt did not run to an end samocode could learn ({e}); it is retried"
                    )),
                };
                let already_stopping = matches!(state.stage, Stage::Stopping { .. });
                state.stage = Stage::Exited { end, status };
                // The agent is gone; anything it left in its group would keep a pipe open
                // (stdout, or standard error alone) and outlive the attempt. Ask it to stop,
                // and kill it after the grace period (a grace already running from a stop keeps
                // its schedule).
                if (state.output_open || state.errors_open) && !already_stopping {
                    signal(state, Signal::SIGTERM);
                    after(&myself, &mut state.timers, state.spec.kill_grace, || {
                        AgentMsg::GraceOver
                    });
                }
            }
            AgentMsg::CheckSilence => {
                let silent = state.last_output.elapsed();
                if let Some(stall) = state.spec.stall
                    && state.stage == Stage::Running
                    && silent >= stall
                {
                    tracing::warn!(attempt = %state.spec.attempt_id, silent = ?silent, "agent printed nothing for too long");
                    stop(&myself, state, ProcessEnd::Stalled);
                }
            }
            AgentMsg::Started { at } => {
                if state.stage == Stage::Running {
                    state.last_output = Instant::now();
                    // Already running for a while when the daemon hears of it (a restarted
                    // daemon adopting it): that part of its time counts too.
                    let ran = at
                        .and_then(|at| {
                            std::time::Duration::try_from(at.duration_until(Timestamp::now())).ok()
                        })
                        .unwrap_or_default();
                    // Its running time counts from its host's start: not its wait in a queue.
                    if let Some(began) = Instant::now().checked_sub(ran) {
                        state.began = began;
                    }
                    let left = state.spec.timeout.saturating_sub(ran);
                    watch_time(&myself, state, left.max(Duration::from_secs(1)));
                }
            }
            AgentMsg::TimeLimit => {
                if state.stage == Stage::Running {
                    tracing::warn!(attempt = %state.spec.attempt_id, timeout = ?state.spec.timeout, "agent passed its time limit");
                    stop(&myself, state, ProcessEnd::TimedOut);
                }
            }
            AgentMsg::Cancel => {
                if state.stage == Stage::Running {
                    stop(&myself, state, ProcessEnd::Cancelled);
                }
            }
            AgentMsg::GraceOver => {
                if matches!(state.stage, Stage::Stopping { .. } | Stage::Exited { .. })
                    && let Some(group) = &state.group
                {
                    group.kill();
                    if state.output_open || state.errors_open {
                        after(&myself, &mut state.timers, PIPE_DRAIN, || {
                            AgentMsg::AbandonPipe
                        });
                    }
                }
            }
            AgentMsg::AbandonPipe => {
                if matches!(state.stage, Stage::Exited { .. })
                    && (state.output_open || state.errors_open)
                {
                    // Something outside the group, and without our markers, still holds a
                    // pipe: the attempt is over all the same.
                    let pipe = if state.output_open {
                        "stdout"
                    } else {
                        "standard error"
                    };
                    tracing::warn!(attempt = %state.spec.attempt_id, pipe, "a pipe still open after the kill grace; abandoning it");
                    add_note(
                        state,
                        format!(
                            "{pipe} was still held open after the kill grace by a process outside the agent's group; it was abandoned"
                        ),
                    );
                    state.tasks.abort_all();
                    state.output_open = false;
                    state.errors_open = false;
                }
            }
        }
        finish_if_over(&myself, state);
        Ok(())
    }
}

impl Seen {
    fn take(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Init { session_id, model } => {
                self.agent_session_id = session_id.or(self.agent_session_id.take());
                self.model = model.or(self.model.take());
            }
            StreamEvent::Result(result) => {
                if self.agent_session_id.is_none() {
                    self.agent_session_id = result.session_id.clone();
                }
                self.result = Some(result);
            }
            StreamEvent::Text(text) => self.last_text = Some(text),
            StreamEvent::Error(message) => {
                if self.errors.len() == MAX_ERRORS {
                    self.errors.remove(0);
                }
                self.errors.push(message);
            }
        }
    }
}

/// Adds `said` to what the attempt's report notes.
fn add_note(state: &mut AgentState, said: String) {
    state.note = Some(match state.note.take() {
        Some(note) => format!("{note}; {said}"),
        None => said,
    });
}

fn signal(state: &AgentState, signal: Signal) {
    if let Some(group) = &state.group {
        group.signal(signal);
    }
}

/// Asks the group to stop for `why`: SIGTERM now, SIGKILL after the grace.
fn stop(myself: &ActorRef<AgentMsg>, state: &mut AgentState, why: ProcessEnd) {
    state.stage = Stage::Stopping { why };
    signal(state, Signal::SIGTERM);
    after(myself, &mut state.timers, state.spec.kill_grace, || {
        AgentMsg::GraceOver
    });
}

/// Sends `message` to the actor after `delay`, from a timer that ends with the actor. (The
/// task of ractor's `send_after` runs to its deadline whatever becomes of the actor, and keeps
/// the actor's mailbox until then: with a 30-minute time limit, every finished attempt's actor
/// stayed in memory for 30 minutes, 7 KB an attempt.)
fn after(
    myself: &ActorRef<AgentMsg>,
    timers: &mut JoinSet<()>,
    delay: Duration,
    message: fn() -> AgentMsg,
) {
    let actor = myself.clone();
    timers.spawn(async move {
        let deadline = tokio::time::Instant::now() + delay;
        tokio::time::sleep_until(deadline).await;
        if deadline.elapsed() > FROZEN {
            // Woken late: the worker was frozen (stopped, suspended) past the deadline while
            // the agent ran on. What happened meanwhile (its exit, its output) is heard
            // first: an agent that ended in time is not timed out.
            tokio::time::sleep(FROZEN).await;
        }
        let _ = actor.send_message(message());
    });
}

/// A timer woken this much past its deadline was frozen with the worker.
const FROZEN: Duration = Duration::from_secs(1);

/// Sends `message` to the actor every `period`, from a timer that ends with the actor.
fn every(
    myself: &ActorRef<AgentMsg>,
    timers: &mut JoinSet<()>,
    period: Duration,
    message: fn() -> AgentMsg,
) {
    let actor = myself.clone();
    timers.spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let due = ticks.tick().await;
            // Ticks missed while the worker was frozen are not looks: the agent's output of
            // that time is still in the pipe, unread.
            if due.elapsed() > FROZEN.max(period) {
                continue;
            }
            if actor.send_message(message()).is_err() {
                break;
            }
        }
    });
}

/// Reports and stops once the main process is reaped and both its pipes are closed.
fn finish_if_over(myself: &ActorRef<AgentMsg>, state: &mut AgentState) {
    if state.output_open || state.errors_open || !matches!(state.stage, Stage::Exited { .. }) {
        return;
    }
    let Stage::Exited { end, status } = std::mem::replace(&mut state.stage, Stage::Reported) else {
        unreachable!("checked above");
    };
    // The group may still hold processes that closed their stdout; they go now, with any
    // escaped descendant.
    if let Some(group) = &mut state.group {
        group.finish();
    }
    let seen = std::mem::take(&mut state.seen);
    let mut result = seen.result;
    // A success's summary is the agent's last message; an error's text is only its own (a
    // refusal is read from it, never from what the agent said).
    if let Some(result) = &mut result
        && result.text.is_none()
        && !result.is_error
    {
        result.text = seen.last_text;
    }
    let report = AttemptReport {
        end,
        status,
        note: state.note.take(),
        started_at: state.started_at,
        ended_at: Timestamp::now(),
        ran: Some(state.began.elapsed()),
        model: seen.model,
        agent_session_id: seen.agent_session_id,
        result,
        output_bytes: state.output_bytes,
        errors: seen.errors,
        host: state.host.as_ref().map(crate::executor::Host::get),
    };
    let done = AttemptDone {
        flight: state.flight,
        report: Box::new(report),
    };
    if state.report_to.send_message(done).is_err() {
        tracing::warn!("the session is gone; attempt report dropped");
    }
    myself.stop(None);
}

/// How an attempt whose agent could not be started ends: out of open files, processes or
/// memory for the moment is not the CLI's fault, and is retried like a crash; anything else
/// needs a person.
fn not_started(program: &std::path::Path, error: &std::io::Error) -> ProcessEnd {
    use nix::errno::Errno;
    let program = program.display();
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE | Errno::ENFILE | Errno::EAGAIN | Errno::ENOMEM) => {
            ProcessEnd::Lost(format!(
                "cannot start {program} for now: {error} (the machine is short of it; the attempt is retried)"
            ))
        }
        _ => ProcessEnd::SpawnFailed(format!(
            "cannot start {program}: {error}; install the agent CLI, or point CLAUDE_PATH (CODEX_PATH for codex) at it"
        )),
    }
}

/// Arms the attempt's time limit (`limit` from now) and, when it has one, its stall watch.
fn watch_time(myself: &ActorRef<AgentMsg>, state: &mut AgentState, limit: Duration) {
    after(myself, &mut state.timers, limit, || AgentMsg::TimeLimit);
    if let Some(stall) = state.spec.stall {
        // A quarter of the limit between looks: silence is caught within 125% of it.
        every(myself, &mut state.timers, stall / 4, || {
            AgentMsg::CheckSilence
        });
    }
}

/// Launches (or takes the adopted) attempt and starts its reader tasks: its process group's
/// guard, whether its standard error is kept, its host, and whether it waits for a host to
/// start it (then `AgentMsg::Started` comes when one has).
async fn start(
    spec: &AttemptSpec,
    launcher: &dyn AttemptExecutor,
    begin: Begin,
    myself: &ActorRef<AgentMsg>,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<(GroupGuard, bool, crate::executor::Host, bool)> {
    let (log, launched) = match begin {
        Begin::New { log } => (log, launcher.launch(spec)?),
        Begin::Adopted { launched, .. } => {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(&spec.files.stdout)?;
            (log, launched)
        }
    };
    let host = launched.host.clone();
    let waits = launched.started.is_some();
    if let Some(started) = launched.started {
        let told = myself.clone();
        tasks.spawn(async move {
            let at = started.await;
            let _ = told.send_message(AgentMsg::Started { at });
        });
    }
    let guard = GroupGuard::new(launched.group);
    if let Some(input) = launched.input {
        tasks.spawn(input);
    }
    let reader = myself.clone();
    let provider = spec.command.provider;
    // Activity is reported at once, then often enough for the stall watchdog to see it well
    // within its limit, and never more than once a second.
    let every = spec.stall.map_or(Duration::from_secs(1), |stall| {
        (stall / 8).min(Duration::from_secs(1))
    });
    tasks.spawn(async move {
        let (bytes, skipped) = copy_and_parse(launched.output, log, provider, every, &reader).await;
        let _ = reader.send_message(AgentMsg::OutputClosed { bytes, skipped });
    });
    let waiter = myself.clone();
    let exit = launched.exit;
    tasks.spawn(async move {
        let status = exit.await;
        let _ = waiter.send_message(AgentMsg::Exited(status));
    });
    let copies_errors = launched.errors.is_some();
    if let Some(errors) = launched.errors {
        let path = spec.files.stderr.clone();
        let reader = myself.clone();
        tasks.spawn(async move {
            let unlogged = copy_errors(errors, &path).await;
            let _ = reader.send_message(AgentMsg::ErrorsClosed { unlogged });
        });
    }
    Ok((guard, copies_errors, host, waits))
}

/// Copies standard error to its log, made at the first byte: most attempts print nothing
/// there, and a file that is never made costs nothing. When some of it could not be written
/// (a full disk), says so once, and returns its last line, which the log may lack: the reason
/// of a failed attempt is read from it.
pub(crate) async fn copy_errors(mut errors: Output, path: &std::path::Path) -> Option<String> {
    let mut chunk = Chunk::new(16 * 1024);
    let mut log: Option<std::fs::File> = None;
    let mut unlogged = 0u64;
    // The end of what was read: enough for the last line of a failure.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        if let Ok(0) | Err(_) = chunk.read(&mut errors).await {
            break;
        }
        tail.extend_from_slice(chunk.bytes());
        tail.drain(..tail.len().saturating_sub(TAIL_KEPT));
        if log.is_none() && unlogged == 0 {
            match std::fs::File::create(path) {
                Ok(file) => log = Some(file),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "cannot create the stderr log; the agent's standard error is not kept");
                }
            }
        }
        // Written here, as the stdout log is (see `copy_and_parse`). Reading goes on whatever
        // the write did, so the agent never blocks on a full pipe.
        let written = match &mut log {
            Some(file) => std::io::Write::write_all(file, chunk.bytes()),
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        if let Err(error) = written {
            if unlogged == 0 && log.is_some() {
                tracing::warn!(%error, path = %path.display(), "the stderr log cannot be written; the agent's standard error is lost from here on");
            }
            unlogged += chunk.bytes().len() as u64;
            log = None;
        }
    }
    if unlogged == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(crate::session::store::from_a_character(&tail, true));
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| line.trim().to_string())
}

/// How much of the end of standard error is kept in memory for its last line.
const TAIL_KEPT: usize = 8 * 1024;

/// Copies stdout to the log as it arrives and sends the events of complete lines.
async fn copy_and_parse(
    mut stdout: Output,
    mut log: std::fs::File,
    provider: crate::config::Provider,
    every: Duration,
    actor: &ActorRef<AgentMsg>,
) -> (u64, u32) {
    let mut chunk = Chunk::new(64 * 1024);
    let mut lines = Lines::default();
    let mut total = 0u64;
    let mut told: Option<Instant> = None;
    let mut unlogged = 0u64;
    let send = |line: &[u8]| {
        if let Some(event) = super::parse_line(provider, line.trim_ascii()) {
            let _ = actor.send_message(AgentMsg::Event(event));
        }
    };
    loop {
        let n = match chunk.read(&mut stdout).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if told.is_none_or(|at| at.elapsed() >= every) {
            told = Some(Instant::now());
            let _ = actor.send_message(AgentMsg::Output);
        }
        // Written here rather than through tokio's file, which copies every chunk into a
        // buffer of its own and hands it to a blocking-pool thread: a write of at most 64 KiB
        // into the page cache takes microseconds, less than the copy and the handoff (see
        // benches/README.md, ingestion). Each chunk is in the log before the next is read.
        if let Err(error) = std::io::Write::write_all(&mut log, chunk.bytes()) {
            // Once per attempt: a full disk failed every chunk of a large output.
            if unlogged == 0 {
                tracing::warn!(%error, "the attempt log cannot be written; what the agent prints is read but not kept");
            }
            unlogged += n as u64;
        }
        lines.feed(chunk.bytes(), send);
    }
    if unlogged > 0 {
        tracing::warn!(
            bytes = unlogged,
            "the attempt log lacks part of what the agent printed"
        );
    }
    let skipped = lines.finish(send);
    (total, skipped)
}

/// A read buffer that starts small and doubles, up to `max`, each time a read fills it: most
/// agents print a few lines at a time, and a buffer of the largest size for each of 256 agents
/// kept about 15 MB of the daemon's heap in use (the pages freed buffers left were touched
/// again by everything allocated after them). A flood of output still reads `max` at a time.
struct Chunk {
    buffer: Vec<u8>,
    max: usize,
}

impl Chunk {
    const FIRST: usize = 4 * 1024;

    fn new(max: usize) -> Chunk {
        Chunk {
            buffer: Vec::with_capacity(Self::FIRST.min(max)),
            max,
        }
    }

    /// Reads what is there into the buffer, in place of what it held; 0 at end of file.
    async fn read(&mut self, from: &mut Output) -> std::io::Result<usize> {
        let capacity = self.buffer.capacity();
        if self.buffer.len() == capacity && capacity < self.max {
            // A new buffer: what the old one held is not copied.
            self.buffer = Vec::with_capacity((2 * capacity).min(self.max));
        }
        self.buffer.clear();
        // Into spare capacity, never zeroed: only the pages the output reaches are touched.
        from.read_buf(&mut self.buffer).await
    }

    /// What the last read gave.
    fn bytes(&self) -> &[u8] {
        &self.buffer
    }
}

/// Cuts output into lines for parsing, whatever the chunks: a line may span chunks, and one
/// longer than `MAX_EVENT_LINE` is skipped without being kept (memory stays bounded).
#[derive(Default)]
struct Lines {
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
    /// The current line passed `MAX_EVENT_LINE`: the rest of it is dropped.
    overlong: bool,
    /// Lines skipped for their length.
    skipped: u32,
}

impl Lines {
    /// Hands every line that ends in `chunk` (with its newline) to `line`.
    fn feed(&mut self, chunk: &[u8], mut line: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while !rest.is_empty() {
            // Line ends found with memchr, not byte by byte: most of the time here is this.
            let (piece, complete) = match memchr::memchr(b'\n', rest) {
                Some(end) => (&rest[..=end], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            if complete && self.partial.is_empty() && !self.overlong {
                // A whole line within the chunk is read where it is, not copied.
                if piece.len() <= MAX_EVENT_LINE {
                    line(piece);
                } else {
                    self.skipped += 1;
                }
                continue;
            }
            if !self.overlong {
                self.partial.extend_from_slice(piece);
                if self.partial.len() > MAX_EVENT_LINE {
                    self.overlong = true;
                    self.skipped += 1;
                    self.partial = Vec::new();
                }
            }
            if complete {
                if !self.overlong {
                    line(&self.partial);
                }
                self.partial.clear();
                self.overlong = false;
            }
        }
    }

    /// The last line, when the output did not end with a newline; then how many lines were
    /// skipped for their length.
    fn finish(self, mut line: impl FnMut(&[u8])) -> u32 {
        if !self.overlong && !self.partial.is_empty() {
            line(&self.partial);
        }
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::{Chunk, Lines, MAX_EVENT_LINE, ProcessEnd, not_started};

    /// A stderr log that cannot be written (a full disk) lost the agent's own words from the
    /// failed attempt's reason ("the agent exited with code 1", nothing more): its last line
    /// is kept from memory; a log written whole needs none.
    #[tokio::test]
    async fn standard_error_a_full_disk_kept_from_its_log_still_gives_its_last_line() {
        let said = || -> super::Output {
            Box::pin(std::io::Cursor::new(
                b"starting\nError: Invalid API key \xc2\xb7 Please run /login\n\n".to_vec(),
            ))
        };
        let full = super::copy_errors(said(), std::path::Path::new("/dev/full")).await;
        assert_eq!(
            full.as_deref(),
            Some("Error: Invalid API key \u{b7} Please run /login")
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.stderr.log");
        assert_eq!(super::copy_errors(said(), &log).await, None);
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("Invalid API key")
        );
    }

    /// An agent that cannot start for want of open files (a daemon at its limit) is retried;
    /// one whose program is missing fails with what to install.
    #[test]
    fn an_agent_short_of_files_is_retried_and_a_missing_one_is_not() {
        let program = std::path::Path::new("/opt/claude");
        let full = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert!(
            matches!(not_started(program, &full), ProcessEnd::Lost(m) if m.contains("retried"))
        );
        let missing = std::io::Error::from_raw_os_error(nix::libc::ENOENT);
        assert!(matches!(
            not_started(program, &missing),
            ProcessEnd::SpawnFailed(m) if m.contains("install the agent CLI")
        ));
    }

    #[tokio::test]
    async fn a_read_buffer_grows_only_for_output_that_fills_it() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut flood: super::Output = Box::pin(std::io::Cursor::new(data.clone()));
        let mut chunk = Chunk::new(64 * 1024);
        let (mut read, mut sizes) = (Vec::new(), Vec::new());
        while chunk.read(&mut flood).await.unwrap() > 0 {
            read.extend_from_slice(chunk.bytes());
            sizes.push(chunk.bytes().len());
        }
        assert_eq!(read, data, "every byte, in order");
        assert_eq!(sizes[..6], [4096, 8192, 16384, 32768, 65536, 65536]);

        // An agent that prints a little at a time keeps the first, small buffer.
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut talk: super::Output = Box::pin(reader);
        let mut chunk = Chunk::new(64 * 1024);
        for _ in 0..50 {
            tokio::io::AsyncWriteExt::write_all(&mut writer, &[b'x'; 300])
                .await
                .unwrap();
            assert_eq!(chunk.read(&mut talk).await.unwrap(), 300);
        }
        assert_eq!(chunk.buffer.capacity(), 4096);
    }

    /// Every line `Lines` hands on when `output` comes in chunks of `size` bytes.
    fn lines_of(output: &[u8], size: usize) -> Vec<Vec<u8>> {
        counted_lines_of(output, size).0
    }

    /// The lines read, and how many were skipped for their length.
    fn counted_lines_of(output: &[u8], size: usize) -> (Vec<Vec<u8>>, u32) {
        let mut seen = Vec::new();
        let mut lines = Lines::default();
        for chunk in output.chunks(size) {
            lines.feed(chunk, |l| seen.push(l.to_vec()));
        }
        let skipped = lines.finish(|l| seen.push(l.to_vec()));
        (seen, skipped)
    }

    #[test]
    fn lines_are_the_same_whatever_the_chunks() {
        let output = b"{\"type\":\"system\"}\n\n{\"type\":\"result\",\"result\":\"done\"}\nlast";
        let whole = lines_of(output, output.len());
        assert_eq!(
            whole,
            [
                &b"{\"type\":\"system\"}\n"[..],
                b"\n",
                b"{\"type\":\"result\",\"result\":\"done\"}\n",
                b"last"
            ]
        );
        for size in [1, 2, 3, 7, 19, 64] {
            assert_eq!(lines_of(output, size), whole, "chunks of {size}");
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        let mut output = vec![b'x'; MAX_EVENT_LINE + 1];
        output.extend_from_slice(b"\n{\"type\":\"result\"}\n");
        output.extend(std::iter::repeat_n(b'y', MAX_EVENT_LINE + 5));
        for size in [64 * 1024, MAX_EVENT_LINE + 100] {
            let (lines, skipped) = counted_lines_of(&output, size);
            assert_eq!(lines, [&b"{\"type\":\"result\"}\n"[..]], "chunks of {size}");
            // Counted, so that the attempt says what it could not read.
            assert_eq!(skipped, 2, "chunks of {size}");
        }
        // A line of exactly the limit is still read.
        let mut output = vec![b' '; MAX_EVENT_LINE - 1];
        output.push(b'\n');
        assert_eq!(lines_of(&output, 64 * 1024).len(), 1);
        assert_eq!(lines_of(&output, output.len()).len(), 1);
    }
}
