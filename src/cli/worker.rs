//! `samocode worker --nats-url URL [--name NAME] [--slots N] [--dir DIR]`: runs the attempts a
//! daemon (`supervise --executor nats`) publishes, on this host, until SIGTERM or SIGINT (see
//! [`crate::executor::nats::worker`]). The credentials come from SAMOCODE_NATS_TOKEN or
//! SAMOCODE_NATS_NKEY_FILE (or config.toml), never from the command line.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::{Config, Provider};
use crate::executor::nats::Link;
use crate::executor::nats::worker::{self, WorkerSettings};
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The NATS server (also SAMOCODE_NATS_URL).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// This worker's name, recorded as the host of the attempts it runs (default: the
    /// hostname and the directory, so that two workers on one host differ).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Attempts it runs at once (1 to 1000).
    #[arg(long, value_name = "N", default_value = "1", value_parser = super::parallel_value)]
    pub slots: usize,
    /// Where its checkouts and spec files go (default: `worker` in the state directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub async fn worker(args: WorkerArgs, config: &Config, shutdown: Shutdown) -> Result<u8, CliError> {
    let Some(settings) = &config.remote.nats else {
        return Err(CliError::usage(anyhow::anyhow!(
            "samocode worker needs a NATS server: give --nats-url URL, or set SAMOCODE_NATS_URL"
        )));
    };
    // The daemon picks each session's provider; this host runs whichever comes. One it
    // cannot start at all would fail every attempt it takes, so it does not start; one of
    // the two missing is said in its log.
    let programs = [Provider::Claude, Provider::Codex].map(|p| (p, config.check_program(p)));
    if programs.iter().all(|(_, found)| found.is_err()) {
        let [(_, claude), _] = programs;
        return Err(CliError::usage(claude.unwrap_err()));
    }
    for (provider, found) in &programs {
        if let Err(problem) = found {
            tracing::warn!(%problem, "this worker cannot run {provider} attempts; a session of that provider fails its attempts here");
        }
    }
    if args.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(CliError::usage(anyhow::anyhow!(
            "--name is empty; give the name this worker's attempts record as their host, or leave it out for the hostname and directory"
        )));
    }
    // It is shown in `status`, the dashboard and journals, one line each.
    if let Some(name) = args
        .name
        .as_deref()
        .filter(|n| n.chars().any(char::is_control))
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "--name {name:?} holds a control character (a line break, a tab); give a name of one line"
        )));
    }
    let open_files = crate::open_files::raise();
    crate::open_files::check(open_files.limit, 0, args.slots)
        .map_err(|problem| CliError::usage(anyhow::anyhow!("{problem}, or give fewer --slots")))?;
    // It holds the attempts' specs (the notebook, the context, the remote's address): its
    // user's alone, as the daemon's state directory is, and so is that one when it is in it.
    let holds = "the attempts' specs";
    if args.dir.is_none() {
        // The folders an earlier build made itself, open to others (0755): made private.
        tighten(&config.state_dir);
        tighten(&config.state_dir.join("worker"));
        crate::daemon::private_dir(&config.state_dir, holds, "set SAMOCODE_STATE_DIR to").map_err(
            |problem| {
                CliError::usage(anyhow::anyhow!(
                    "state directory {}: {problem}",
                    config.state_dir.display()
                ))
            },
        )?;
    }
    let dir = args.dir.unwrap_or_else(|| config.state_dir.join("worker"));
    crate::daemon::private_dir(&dir, holds, "give --dir").map_err(|problem| {
        CliError::usage(anyhow::anyhow!(
            "worker folder {}: {problem}",
            dir.display()
        ))
    })?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let name = args
        .name
        .unwrap_or_else(|| format!("{}:{}", super::attempt_run::hostname(), dir.display()));
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot find the samocode binary: {e}")))?;
    let link = Link::connect(settings).await.map_err(CliError::failure)?;
    worker::run(
        link,
        WorkerSettings {
            name,
            slots: args.slots,
            dir,
            exe,
        },
        shutdown,
    )
    .await
    .map_err(CliError::failure)?;
    Ok(0)
}

/// Makes a folder of the user's that others may enter private (0700), saying so: the worker's
/// default folders, which a build before this one made open.
fn tighten(dir: &std::path::Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mine = meta.uid() == nix::unistd::geteuid().as_raw();
    if meta.is_dir() && mine && meta.mode() & 0o077 != 0 {
        let private = std::fs::Permissions::from_mode(0o700);
        if std::fs::set_permissions(dir, private).is_ok() {
            tracing::warn!(dir = %dir.display(), "made private (0700): it holds the attempts' specs");
        }
    }
}
