//! `samocode attempt-run --spec FILE`: one attempt, wherever it is placed (a worker runs it as
//! a child process; a Kubernetes Job as its container's PID 1). Prints the attempt's events as
//! JSON lines on standard output, the result last (see [`crate::executor::runner`]). SIGTERM
//! or SIGINT stops the agent with its grace; so does the death of the process that started
//! this one, which is told to the kernel (the parent-death signal), so that a worker killed
//! with SIGKILL leaves no agent behind.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tokio::sync::mpsc;

use super::CliError;
use crate::config::{Config, Sources};
use crate::executor::result::{End, Event};
use crate::executor::runner::{self, Place};
use crate::executor::spec::RemoteSpec;
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct AttemptRunArgs {
    /// The attempt spec (JSON), as a worker or the Kubernetes executor writes it.
    #[arg(long, value_name = "FILE")]
    pub spec: PathBuf,
    /// Where the checkout and the session copy go (default: the system's temp directory);
    /// removed at the end.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The name the result gives as the attempt's host (default: this machine's hostname).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

pub async fn attempt_run(
    args: AttemptRunArgs,
    config: &Config,
    sources: &Sources,
    mut shutdown: Shutdown,
) -> Result<u8, CliError> {
    // Started by a worker: when it dies (even of SIGKILL), this gets SIGTERM and stops the
    // agent with its grace, like any cancel.
    if let Err(error) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(%error, "cannot ask for a signal at the death of the parent process");
    }
    let spec = RemoteSpec::read(&args.spec).map_err(CliError::usage)?;
    let workspace = args
        .dir
        .unwrap_or_else(|| PathBuf::from(sources.env.get("TMPDIR").map_or("/tmp", String::as_str)));
    std::fs::create_dir_all(&workspace).map_err(|e| {
        CliError::failure(anyhow::anyhow!(
            "cannot create the workspace {}: {e}",
            workspace.display()
        ))
    })?;
    let place = Place {
        config,
        env: &sources.env,
        workspace: &workspace,
        host: args.host.unwrap_or_else(hostname),
    };
    let (events, mut stream) = mpsc::unbounded_channel::<Event>();
    // One writer for every event, so that lines never interleave; a reader gone away (a dead
    // worker) is not an error here: the parent-death signal stops the attempt.
    let printer = tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        while let Some(event) = stream.blocking_recv() {
            let line = serde_json::to_string(&event).expect("events serialize");
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    });
    let cancel = async move {
        shutdown.requested().await;
    };
    let result = runner::run(&spec, &place, cancel, events.clone()).await;
    let failed = matches!(result.end, End::Failed { .. });
    if let End::Failed { detail } = &result.end {
        tracing::error!(%detail, "the attempt could not run");
    }
    let _ = events.send(Event::Result(Box::new(result)));
    drop(events);
    let _ = printer.await;
    Ok(if failed { 1 } else { 0 })
}

/// This machine's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}
