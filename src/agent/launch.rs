//! Starting an attempt's agent, behind a seam the tests can replace.
//!
//! A [`Launcher`] turns an [`AttemptSpec`] into a [`Launched`] agent: its standard output, a
//! future that resolves when it exits, and the [`Group`] of processes it runs in. The
//! AgentProcess actor owns what it gets back and never names the real operating system, so the
//! in-process lifecycle tests drive it with a scripted launcher and a paused clock.
//!
//! [`LocalProcess`] is the real launcher: the agent CLI in a process group of its own, every
//! process of it carrying two markers in its environment ([`SESSION_MARKER`], the session
//! folder, and [`ATTEMPT_MARKER`], the attempt), so that descendants that left the group with
//! `setsid` are still found and killed ([`super::reaper`]). Each live group is also entered in a
//! process-wide table, so that a worker forced to exit at once (a second SIGTERM) can kill every
//! agent it started before it goes ([`kill_all_live`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::AttemptSpec;

/// The variable every agent process inherits: the session folder it works for. The reaper
/// kills a leftover process only when this names the session it cleans up.
pub const SESSION_MARKER: &str = "SAMOCODE_SESSION";
/// The variable every agent process inherits: the attempt it belongs to (its log's name), so
/// that the end of one attempt never touches the next attempt of the same session.
pub const ATTEMPT_MARKER: &str = "SAMOCODE_ATTEMPT";

/// How a process ended, as the operating system tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    /// Killed by this signal (its name, such as `SIGTERM`).
    Signal(String),
}

impl From<std::process::ExitStatus> for ExitKind {
    fn from(status: std::process::ExitStatus) -> ExitKind {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitKind::Code(code),
            (None, Some(number)) => ExitKind::Signal(signal_name(number)),
            (None, None) => ExitKind::Signal("unknown".into()),
        }
    }
}

/// The name of signal `number` (`SIGTERM`), or `signal N` for one nix does not know.
pub fn signal_name(number: i32) -> String {
    Signal::try_from(number)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {number}"))
}

/// The processes of one attempt, which samocode may signal as a whole.
pub trait Group: Send + Sync + 'static {
    /// Sends `signal` to every process of the group.
    fn signal(&self, signal: Signal);
    /// Kills the attempt's processes that left the group (found by their markers). `settled`:
    /// the main process is reaped and the group was killed, so this may wait for the group to
    /// empty and catch everything; otherwise one quick pass.
    fn sweep(&self, settled: bool);
    /// A few words for logs (`process group 4242`).
    fn describe(&self) -> String;
}

/// The standard output of a launched agent.
pub type Output = Pin<Box<dyn AsyncRead + Send>>;
/// Resolves when the agent's main process has exited (and was reaped).
pub type Exit = Pin<Box<dyn Future<Output = std::io::Result<ExitKind>> + Send>>;
/// Feeds the agent's standard input; ends when all of it is written (or the agent left).
pub type Input = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An agent that has been started.
pub struct Launched {
    pub group: Box<dyn Group>,
    pub output: Output,
    /// Its standard error, when it is to be kept (in a file made at its first byte).
    pub errors: Option<Output>,
    pub exit: Exit,
    pub input: Option<Input>,
}

/// Starts agents, and finds what a dead worker's agents left behind.
pub trait Launcher: Send + Sync + 'static {
    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched>;

    /// Kills every process still running for the session in `session_dir` (the agents of a
    /// worker that died mid-attempt); returns their ids. Called by a worker that has just taken
    /// the session's lock, before its first attempt.
    fn kill_leftovers(&self, session_dir: &Path) -> Vec<i32> {
        super::reaper::kill_marked(session_dir, None)
    }
}

/// Owns a [`Group`] and kills it when dropped: whatever ends the attempt's actor (a report, a
/// panic, a kill of the actor or of its session), no process of the attempt outlives it.
pub struct GroupGuard {
    group: Box<dyn Group>,
    done: bool,
}

impl GroupGuard {
    pub fn new(group: Box<dyn Group>) -> GroupGuard {
        GroupGuard { group, done: false }
    }

    pub fn signal(&self, signal: Signal) {
        self.group.signal(signal);
    }

    /// SIGKILL to the group and to every escaped process of the attempt found now.
    pub fn kill(&self) {
        self.group.signal(Signal::SIGKILL);
        self.group.sweep(false);
    }

    /// Kills whatever is left once the main process is reaped, and waits for the group to be
    /// empty; the drop then has nothing more to do.
    pub fn finish(&mut self) {
        if !self.done {
            self.group.signal(Signal::SIGKILL);
            self.group.sweep(true);
            self.done = true;
        }
    }

    pub fn describe(&self) -> String {
        self.group.describe()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // The actor ended without finishing (a panic, a kill): its main process may still be
        // waiting to be reaped, so no waiting here.
        if !self.done {
            self.kill();
            self.done = true;
        }
    }
}

/// The real launcher: the agent CLI as a child process in its own process group.
pub struct LocalProcess;

impl Launcher for LocalProcess {
    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
        let mut command = tokio::process::Command::new(&spec.command.program);
        command
            .args(&spec.command.args)
            .current_dir(&spec.command.workdir)
            .stdin(if spec.command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            // A pipe, so that the stderr log is made only when there is something to keep.
            .stderr(Stdio::piped())
            // Its own group, so that one killpg reaches every process the agent starts.
            .process_group(0)
            // The guard kills the group; this also covers the child alone if the exit future
            // is dropped before it.
            .kill_on_drop(true);
        // Nothing inherited: the agent's environment is exactly what the policy kept.
        command.env_clear().envs(spec.command.env.vars());
        command
            .env(SESSION_MARKER, &spec.session_dir)
            .env(ATTEMPT_MARKER, &spec.attempt_id);
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the agent exited before it had a pid"))?
            as i32;
        let group = LocalGroup::enter(pid, spec.session_dir.clone(), spec.attempt_id.clone());
        let output = child.stdout.take().expect("stdout is piped");
        let errors = child.stderr.take().map(|e| Box::pin(e) as Output);
        let input = match (child.stdin.take(), spec.command.stdin.clone()) {
            (Some(mut pipe), Some(payload)) => Some(Box::pin(async move {
                // A payload larger than the pipe buffer blocks until the agent reads it; when
                // this future ends the pipe is dropped, which ends the agent's read.
                if let Err(error) = pipe.write_all(payload.as_bytes()).await {
                    tracing::warn!(%error, "cannot write the context to the agent's standard input");
                }
            }) as Input),
            _ => None,
        };
        Ok(Launched {
            group: Box::new(group),
            output: Box::pin(output),
            errors,
            exit: Box::pin(async move { child.wait().await.map(ExitKind::from) }),
            input,
        })
    }
}

/// A live process group started by this process: (session folder, attempt) by group id.
static LIVE: Mutex<Option<HashMap<i32, (PathBuf, String)>>> = Mutex::new(None);

struct LocalGroup {
    pgid: i32,
    session: PathBuf,
    attempt: String,
}

impl LocalGroup {
    fn enter(pgid: i32, session: PathBuf, attempt: String) -> LocalGroup {
        LIVE.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(pgid, (session.clone(), attempt.clone()));
        LocalGroup {
            pgid,
            session,
            attempt,
        }
    }
}

impl Group for LocalGroup {
    fn signal(&self, signal: Signal) {
        // ESRCH means the group is already empty, which is what is wanted.
        let _ = killpg(Pid::from_raw(self.pgid), signal);
    }

    fn sweep(&self, settled: bool) {
        super::reaper::clear_attempt(self.pgid, &self.session, &self.attempt, settled, &is_live);
    }

    fn describe(&self) -> String {
        format!("process group {}", self.pgid)
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        if let Some(live) = LIVE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_mut()
        {
            live.remove(&self.pgid);
        }
    }
}

/// True when `pid` is the main process of an agent this process started and still watches.
fn is_live(pid: i32) -> bool {
    LIVE.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .is_some_and(|live| live.contains_key(&pid))
}

/// Kills every agent this process started and has not seen end: the last act of a worker that
/// must exit at once. Returns how many groups it killed.
pub fn kill_all_live() -> usize {
    let live: Vec<(i32, (PathBuf, String))> = LIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
        .unwrap_or_default();
    for (pgid, (session, attempt)) in &live {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        super::reaper::kill_marked(session, Some(attempt));
    }
    live.len()
}
