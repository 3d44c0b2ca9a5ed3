//! A launched agent attempt, whatever runs it: its output, its exit, and the [`Group`] of
//! processes samocode may signal, with the guard that kills the group whatever ends the
//! attempt. The engines that produce a [`Launched`] are behind [`crate::executor`]; the real
//! local one, [`LocalProcess`], runs the agent CLI in a process group of its own, every
//! process of it carrying two markers in its environment ([`SESSION_MARKER`], the session
//! folder, and [`ATTEMPT_MARKER`], the attempt), so that descendants that left the group with
//! `setsid` are still found and killed ([`super::reaper`]).

use std::future::Future;
use std::pin::Pin;

use nix::sys::signal::Signal;
use tokio::io::AsyncRead;

use crate::executor::Host;

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
/// Ends when an attempt that waits for a host (a NATS work queue) has started on one, with
/// when it started (`None`: not known, taken as now).
pub type Started = Pin<Box<dyn Future<Output = Option<jiff::Timestamp>> + Send>>;

/// An agent that has been started.
pub struct Launched {
    pub group: Box<dyn Group>,
    pub output: Output,
    /// Its standard error, when it is to be kept (in a file made at its first byte).
    pub errors: Option<Output>,
    pub exit: Exit,
    pub input: Option<Input>,
    /// Where the attempt runs (`local`, a worker's name, `pod/<name>`).
    pub host: Host,
    /// For an attempt that may wait for a host to take it: ends when one has started it. Its
    /// time limit and stall watch count from then, not from the wait. `None`: started now.
    pub started: Option<Started>,
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

pub use crate::executor::local::{LocalProcess, kill_all_live};
