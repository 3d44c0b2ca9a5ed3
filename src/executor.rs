//! Where an attempt runs: the seam between a session and the machine that runs its agent.
//!
//! An [`AttemptExecutor`] turns an [`AttemptSpec`] into a [`Launched`] attempt: the agent's
//! standard output, a future that resolves when the attempt is over, the [`Group`] through
//! which samocode stops it (SIGTERM, the grace, SIGKILL: a cancel with a grace), and the
//! [`Host`] it runs on. The AgentProcess actor owns what it gets back and never knows which
//! engine is behind it, so the daemon stays the single writer of every session file and gate
//! whatever the engine:
//!
//! - [`local`]: `LocalProcess`, the default: the agent CLI in a process group of its own on
//!   this machine (`host` is `local`);
//! - [`nats`]: attempts published to a NATS JetStream work queue and run by `samocode worker`
//!   processes on other hosts (`host` is the worker's name);
//! - `kube` (cargo feature `kube`): one Kubernetes Job per attempt (`host` is `pod/<name>`).
//!
//! A remote attempt has the same shape as a local one: its output is the stream of events
//! its worker sends, its exit resolves once the worker's result has been applied to the
//! session folder ([`result::apply`]) by the daemon, under the session lock the daemon's
//! session actor holds, and its group's signals become cancel requests that reach the worker.
//! [`runner`] is what runs on the far side (`samocode attempt-run --spec FILE`), and [`spec`]
//! what travels there: the spec, with secrets by name only.
//!
//! `launch` is idempotent on the attempt id (an engine that already holds the attempt
//! attaches to it rather than starting it twice), and `adopt` lets a restarted daemon attach
//! to the attempt its predecessor left in flight, when the engine still has it.

pub mod git_remote;
#[cfg(feature = "kube")]
pub mod kube;
pub mod local;
pub mod nats;
pub mod result;
pub mod runner;
pub mod spec;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::agent::AttemptSpec;
pub use crate::agent::launch::{Exit, ExitKind, Group, Input, Launched, Output};
pub use local::LocalProcess;

/// After the kill of a remote attempt, how long the daemon waits for its result before it
/// gives the attempt up: enough for a worker to stop its agent, push and report.
pub const RESULT_AFTER_KILL: std::time::Duration = std::time::Duration::from_secs(30);

/// The place an attempt runs, for the `_iterations.jsonl` row, `status` and the trace: `local`,
/// a worker's name, or `pod/<name>`. A remote engine knows it only once a worker took the
/// attempt, so it is a cell the engine fills in and the AgentProcess reads at the end.
#[derive(Debug, Clone)]
pub struct Host(Arc<Mutex<String>>);

/// The host of an attempt run by this process.
pub const LOCAL: &str = "local";

impl Host {
    pub fn new(name: &str) -> Host {
        Host(Arc::new(Mutex::new(name.to_string())))
    }

    pub fn local() -> Host {
        Host::new(LOCAL)
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, name: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }
}

/// An attempt an engine still holds: queued, running, or finished with a result the daemon
/// has not applied yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAttempt {
    /// The attempt's key ([`spec::attempt_key`]).
    pub key: String,
    /// Where it runs, when a worker has taken it.
    pub host: Option<String>,
}

/// A boxed future, for the methods of the trait that talk to a remote engine.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = std::io::Result<T>> + Send + 'a>>;

/// Runs agent attempts somewhere, and finds what a dead daemon's attempts left behind.
pub trait AttemptExecutor: Send + Sync + 'static {
    /// The engine, for logs: `local`, `nats`, `kubernetes`.
    fn engine(&self) -> &'static str {
        "local"
    }

    /// Starts the attempt, or attaches to it when the engine already holds one with the same
    /// attempt id (a spec published twice runs once).
    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched>;

    /// The attempts the engine holds for this daemon: queued, running, or finished and not
    /// yet applied.
    fn list_live(&self) -> Pending<'_, Vec<LiveAttempt>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// True when attempts outlive the daemon that started them (a remote engine): a
    /// restarted daemon then asks [`AttemptExecutor::adopt`] before it gives an in-flight
    /// attempt up as interrupted.
    fn adopts(&self) -> bool {
        false
    }

    /// Attaches to the attempt `spec` describes, which a previous daemon started; `None` when
    /// the engine does not hold it (it never left, or its result was applied already).
    fn adopt<'a>(&'a self, spec: &'a AttemptSpec) -> Pending<'a, Option<Launched>> {
        let _ = spec;
        Box::pin(async { Ok(None) })
    }

    /// Kills every process still running on this machine for the session in `session_dir`
    /// (the agents of a worker that died mid-attempt); returns their ids. Called by a worker
    /// that has just taken the session's lock, before its first attempt.
    fn kill_leftovers(&self, session_dir: &Path) -> Vec<i32> {
        crate::agent::reaper::kill_marked(session_dir, None)
    }
}

/// Where the newest attempt journaled in `session_dir`'s `_iterations.jsonl` ran, read from
/// the file's end (a journal of thousands of rows is not read whole for one field). Like every
/// session file it is read without following a link and without blocking on a pipe.
pub fn last_host(session_dir: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    /// A row is a few hundred bytes; the last one is within this many from the end.
    const TAIL: u64 = 16 * 1024;
    let path = session_dir.join(crate::session::store::ITERATIONS);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    file.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL)))
        .ok()?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find_map(|line| {
        serde_json::from_str::<crate::protocol::journal::IterationRow>(line)
            .ok()
            .map(|row| row.host)
    })?
}

/// The engine the configuration names (`SAMOCODE_EXECUTOR`, `--executor`), connected.
pub async fn for_config(
    config: &crate::config::Config,
) -> Result<Arc<dyn AttemptExecutor>, String> {
    use crate::config::Engine;
    match config.remote.engine {
        Engine::Local => Ok(Arc::new(LocalProcess)),
        Engine::Nats => {
            let settings = config
                .remote
                .nats
                .as_ref()
                .ok_or("the nats engine needs SAMOCODE_NATS_URL (or --nats-url)")?;
            let executor = nats::NatsExecutor::connect(settings)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(executor))
        }
        Engine::Kubernetes => kube_executor(config).await,
    }
}

#[cfg(feature = "kube")]
async fn kube_executor(config: &crate::config::Config) -> Result<Arc<dyn AttemptExecutor>, String> {
    let settings = config
        .remote
        .kube
        .as_ref()
        .ok_or("the kubernetes engine needs SAMOCODE_KUBE_IMAGE")?;
    Ok(Arc::new(kube::KubeExecutor::connect(settings).await?))
}

#[cfg(not(feature = "kube"))]
async fn kube_executor(
    _config: &crate::config::Config,
) -> Result<Arc<dyn AttemptExecutor>, String> {
    Err("this samocode was built without the kube feature; build it with `cargo build --features kube` to run attempts as Kubernetes Jobs".into())
}
