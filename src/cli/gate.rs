//! `samocode approve`, `reject`, `resume` and `stop`: through the daemon when it runs, else on
//! the session files under the session lock (a session a worker is driving answers with exit
//! code 12).

use clap::Args;

use super::{CliError, daemon, exit};
use crate::config::Config;
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

/// Sends a person's command to the daemon, or applies it to the files when no daemon runs.
pub(super) async fn command(
    config: &Config,
    session: &str,
    command: PersonCommand,
) -> Result<u8, CliError> {
    let project = config.project()?;
    let dir = name::resolve_existing(&project.sessions, session)?;
    if let Some(client) = daemon::Client::connect(config).await? {
        let message = client.person(&dir, command).await?;
        println!("{message}");
        return Ok(exit::DONE);
    }
    let store = SessionFolder::new(dir).lock()?;
    let mut state = store.load_state()?;
    // A `samocode run` killed mid-attempt may have left its agent running.
    crate::session::recover::take_over(&store, &mut state, &crate::agent::launch::LocalProcess)?;
    let message = person::apply(&store, &mut state, &command, Some(daemon::FROM_CLI))?;
    println!("{message}");
    if state.status.is_runnable() {
        println!("run `samocode run --session {}` to continue", store.name());
    }
    Ok(exit::DONE)
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

pub async fn resume(session: &str, config: &Config) -> Result<u8, CliError> {
    command(config, session, PersonCommand::Resume).await
}

pub async fn stop(session: &str, config: &Config) -> Result<u8, CliError> {
    command(config, session, PersonCommand::Stop).await
}
