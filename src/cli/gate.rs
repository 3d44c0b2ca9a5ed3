//! `samocode approve`, `reject`, `resume` and `stop`: through the daemon when it runs, else on
//! the session files under the session lock (a session a worker is driving answers with exit
//! code 12).

use clap::Args;

use super::{CliError, daemon, exit};
use crate::config::Config;
use crate::protocol::budget::{self, Budget};
use crate::session::person::{self, PersonCommand};
use crate::session::{SessionFolder, name};

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The session name.
    pub session: String,
    /// What the planning agent should change.
    #[arg(long)]
    pub reason: String,
}

/// The session's lock, for a person's command on its files. Another person's command given
/// at the same moment holds it for an instant: asked again for a while (not when a worker
/// that drives sessions holds it), rather than refused with advice for a `run` there is not.
async fn lock_for_a_command(
    dir: &std::path::Path,
) -> Result<crate::session::SessionStore, crate::session::StoreError> {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(3);
    let since = std::time::Instant::now();
    loop {
        match SessionFolder::new(dir.to_path_buf()).lock() {
            Err(crate::session::StoreError::Locked { pid, .. })
                if since.elapsed() < WAIT && !pid.is_some_and(super::status::owner::drives) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Sends a person's command to the daemon, or applies it to the files when no daemon runs.
pub(super) async fn command(
    config: &Config,
    session: &str,
    command: PersonCommand,
) -> Result<u8, CliError> {
    let dir = session_dir(config, session).await?;
    if let Some(client) = owner(config, &dir).await? {
        let message = client.person(&dir, command).await?;
        println!("{message}");
        return Ok(exit::DONE);
    }
    let store = match lock_for_a_command(&dir).await {
        Ok(store) => store,
        // The running daemon holds it under another path (its folder renamed while it held
        // it): the daemon knows it by the folder itself, and is asked.
        Err(locked @ crate::session::StoreError::Locked { pid: Some(pid), .. })
            if super::status::owner::is_daemon(pid)
                && let Some(client) = daemon::Client::connect(config).await? =>
        {
            return match client.person(&dir, command).await {
                Ok(message) => {
                    println!("{message}");
                    Ok(exit::DONE)
                }
                // Not this daemon's: another one (of another state directory) holds it.
                Err(error)
                    if error
                        .error
                        .to_string()
                        .starts_with(crate::supervisor::NOT_DRIVEN) =>
                {
                    Err(locked.into())
                }
                Err(error) => Err(error),
            };
        }
        Err(error) => return Err(error.into()),
    };
    let project = config.project()?;
    let had_state = store.read(crate::session::store::STATE)?.is_some();
    let mut state = store.load_state()?;
    if !had_state {
        // A Python samocode session: its first state keeps its worktree.
        crate::session::open::adopt_legacy(project, &store, &mut state)?;
    }
    // A `samocode run` killed mid-attempt may have left its agent running.
    crate::session::recover::take_over(
        &store,
        &mut state,
        &crate::agent::launch::LocalProcess,
        &config.budgets.prices,
    )?;
    // Its lock was free, so a runnable session here is one a `run` left (interrupted, or
    // killed): not parked, and not running either. Resume has nothing to change (exit 2, as
    // for any session that is not parked); it says how to go on.
    if state.runs_when_driven() && matches!(command, PersonCommand::Resume) {
        if crate::supervisor::owned::lists(&config.state_dir, store.dir()) {
            return Err(CliError::usage(anyhow::anyhow!(
                "session {0} is not parked: its daemon, which is not running, takes it up again when it starts (`samocode supervise`); nothing to resume",
                store.name()
            )));
        }
        return Err(CliError::usage(anyhow::anyhow!(
            "session {0} is not parked: nobody drives it since its last `samocode run` ended; run `samocode run --session {0}` to continue (or `samocode start --session {0}` to hand it to the daemon)",
            store.name()
        )));
    }
    let message = person::apply(&store, &mut state, &command, Some(daemon::FROM_CLI))?;
    println!("{message}");
    if state.status.is_runnable() {
        if crate::supervisor::owned::lists(&config.state_dir, store.dir()) {
            // Its daemon is not running (or was stopping): it takes the session up again at
            // its next start.
            println!(
                "its daemon resumes it when it runs again (`samocode supervise`); or run `samocode run --session {}`",
                store.name()
            );
        } else {
            println!("run `samocode run --session {}` to continue", store.name());
        }
    }
    Ok(exit::DONE)
}

/// The folder of the session `session` names: in this project's sessions folder; outside a
/// project, among those the running daemon owns (as `status NAME` finds it there).
pub(super) async fn session_dir(
    config: &Config,
    session: &str,
) -> Result<std::path::PathBuf, CliError> {
    let no_project = match config.project() {
        Ok(project) => return Ok(name::resolve_existing(&project.sessions, session)?),
        Err(error) => error,
    };
    let Some(client) = daemon::Client::connect(config).await? else {
        return Err(no_project.into());
    };
    let owned = client.owned().await?.sessions;
    crate::supervisor::by_name(owned.iter().map(|o| o.dir.as_path()), session, |_| None).map_err(
        |refused| {
            CliError::usage(anyhow::anyhow!(
                "{refused}; outside a project's directory only the sessions the daemon owns are known by name (`samocode status` lists them)"
            ))
        },
    )
}

/// The running daemon, when it owns the session in `dir`: a session it does not own (one a
/// `samocode run` drives, or drove and left at a gate) is the files' business, whatever
/// daemon runs.
async fn owner(config: &Config, dir: &std::path::Path) -> Result<Option<daemon::Client>, CliError> {
    let Some(client) = daemon::Client::connect(config).await? else {
        return Ok(None);
    };
    let owned = client.owned().await?.sessions;
    let same = |other: &std::path::Path| crate::session::worktree::same_dir(other, dir);
    if !owned.iter().any(|session| same(&session.dir)) {
        return Ok(None);
    }
    daemon::Client::connect(config).await
}

#[derive(Debug, Args)]
pub struct TellArgs {
    /// The session name.
    pub session: String,
    /// The note, as the agent should read it ("use the existing auth middleware").
    pub text: String,
    /// Stop the running attempt and run it again with the note (through the daemon).
    #[arg(long)]
    pub now: bool,
}

pub async fn tell(args: TellArgs, config: &Config) -> Result<u8, CliError> {
    command(
        config,
        &args.session,
        PersonCommand::Tell {
            text: args.text,
            now: args.now,
        },
    )
    .await
}

pub async fn approve(session: &str, config: &Config) -> Result<u8, CliError> {
    command(config, session, PersonCommand::Approve).await
}

pub async fn reject(args: &RejectArgs, config: &Config) -> Result<u8, CliError> {
    command(
        config,
        &args.session,
        PersonCommand::Reject {
            reason: args.reason.clone(),
        },
    )
    .await
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The session name; without one, `--raise-budget cost=N` raises the daemon's fleet budget.
    pub session: Option<String>,
    /// Raise a budget and go on: cost=USD, iterations=N or time=DURATION, each the new limit
    /// (repeatable).
    #[arg(long, value_name = "WORD=VALUE")]
    pub raise_budget: Vec<String>,
}

pub async fn resume(args: ResumeArgs, config: &Config) -> Result<u8, CliError> {
    let raise = budget::parse_raises(&args.raise_budget).map_err(CliError::usage)?;
    let Some(session) = &args.session else {
        return match raise {
            Budget {
                cost_usd: Some(cost),
                iterations: None,
                time_secs: None,
            } => daemon::raise_fleet(cost, config).await,
            _ => Err(CliError::usage(anyhow::anyhow!(
                "resume needs a session name; without one, only --raise-budget cost=N (the daemon's fleet budget) is accepted"
            ))),
        };
    };
    // The daemon's session actor checks with the daemon's own defaults; without one, here.
    let dir = session_dir(config, session).await?;
    let daemon = owner(config, &dir).await?.is_some();
    if !daemon
        && let Ok(state) = SessionFolder::new(dir.clone()).load_state()
        && let Some(refused) =
            budget::resume_refused(&state, session, &raise, &config.budgets.defaults)
    {
        return Err(CliError::usage(anyhow::anyhow!(refused)));
    }
    let command_given = match raise.is_empty() {
        true => PersonCommand::Resume,
        false => PersonCommand::RaiseBudget { budget: raise },
    };
    command(config, session, command_given).await
}

pub async fn stop(session: &str, config: &Config) -> Result<u8, CliError> {
    command(config, session, PersonCommand::Stop).await
}
