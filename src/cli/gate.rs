//! `samocode approve`, `reject`, `resume` and `stop`, acting on the session files under the
//! session lock (a session that a worker is driving answers with exit code 12).

use clap::Args;

use super::{CliError, exit};
use crate::config::Config;
use crate::protocol::SessionState;
use crate::protocol::gate::{self, GateEffect, GateError};
use crate::protocol::qa::QaDoc;
use crate::session::person;
use crate::session::store::QA;
use crate::session::{SessionFolder, SessionStore, name};

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The session name.
    pub session: String,
    /// What the planning agent should change.
    #[arg(long)]
    pub reason: String,
}

/// Opens an existing session under the lock.
pub(super) fn locked(config: &Config, session: &str) -> Result<SessionStore, CliError> {
    let project = config.project()?;
    let dir = name::resolve_existing(&project.sessions, session)?;
    Ok(SessionFolder::new(dir).lock()?)
}

fn apply(
    config: &Config,
    session: &str,
    verb: impl FnOnce(&mut SessionState, bool) -> Result<GateEffect, GateError>,
) -> Result<(SessionStore, SessionState), CliError> {
    let store = locked(config, session)?;
    let answered = store
        .read(QA)?
        .is_some_and(|t| QaDoc::parse(&t).is_answered());
    let state = person::act(&store, |state| verb(state, answered))?;
    Ok((store, state))
}

pub(super) fn continue_hint(folder: &str) -> String {
    format!("run `samocode run --session {folder}` to continue")
}

pub fn approve(session: &str, config: &Config) -> Result<u8, CliError> {
    let (store, _) = apply(config, session, |s, _| gate::approve(s))?;
    println!(
        "approved the plan of {}; next phase: implementation",
        store.name()
    );
    println!("{}", continue_hint(&store.name()));
    Ok(exit::DONE)
}

pub fn reject(args: &RejectArgs, config: &Config) -> Result<u8, CliError> {
    let (store, _) = apply(config, &args.session, |s, _| gate::reject(s, &args.reason))?;
    println!(
        "sent the plan of {} back to planning with your feedback",
        store.name()
    );
    println!("{}", continue_hint(&store.name()));
    Ok(exit::DONE)
}

pub fn resume(session: &str, config: &Config) -> Result<u8, CliError> {
    let (store, state) = apply(config, session, gate::resume)?;
    println!("resumed {} in {}", store.name(), state.phase);
    println!("{}", continue_hint(&store.name()));
    Ok(exit::DONE)
}

pub fn stop(session: &str, config: &Config) -> Result<u8, CliError> {
    let (store, state) = apply(config, session, |s, _| {
        gate::stop(s, jiff::Timestamp::now())
    })?;
    println!(
        "stopped {} in {}; `samocode resume {}` continues it",
        store.name(),
        state.phase,
        store.name()
    );
    Ok(exit::DONE)
}
