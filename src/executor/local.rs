//! The default engine: the agent CLI as a child process of this one, in a process group of
//! its own, with the session and attempt markers in its environment (see
//! [`crate::agent::launch`]). Each live group is also entered in a process-wide table, so that
//! a worker forced to exit at once (a second SIGTERM) can kill every agent it started before
//! it goes ([`kill_all_live`]). `attempt-run` uses the same spawn on a remote worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use super::{AttemptExecutor, Host};
use crate::agent::AttemptSpec;
use crate::agent::launch::{
    ATTEMPT_MARKER, ExitKind, Group, Input, Launched, Output, SESSION_MARKER,
};

/// The real launcher: the agent CLI as a child process in its own process group.
pub struct LocalProcess;

impl AttemptExecutor for LocalProcess {
    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
        self.spawn(spec)
    }
}

impl LocalProcess {
    /// Spawns the agent of `spec` here; also what `attempt-run` does on a worker.
    pub fn spawn(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
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
        let spawning = crate::agent::reaper::spawning();
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the agent exited before it had a pid"))?
            as i32;
        let group = LocalGroup::enter(pid, spec.session_dir.clone(), spec.attempt_id.clone());
        drop(spawning);
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
            host: Host::local(),
            started: None,
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
        crate::agent::reaper::clear_attempt(
            self.pgid,
            &self.session,
            &self.attempt,
            settled,
            &is_live,
        );
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

/// Reaps the adopted orphans that have died (see [`crate::agent::reaper::reap_dead_orphans`]).
pub fn reap_dead_orphans() {
    crate::agent::reaper::reap_dead_orphans(&is_live);
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
        crate::agent::reaper::kill_marked(session, Some(attempt));
    }
    live.len()
}
