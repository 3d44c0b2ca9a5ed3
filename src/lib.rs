//! samocode runs AI coding agents (the Claude Code CLI, later the Codex CLI) autonomously on
//! real repositories, one supervised session per task.
//!
//! A session walks the phases of `PROTOCOL.md`: investigation, requirements (questions to a
//! person), planning (a person approves the plan), implementation, testing, quality, done. Each
//! iteration is one fresh agent process that reads the session's notebook (`_overview.md`),
//! does one step, and writes `_signal.json`. The worker is strict about the protocol and simple
//! about the work: the agent decides what to do, the worker decides what is allowed.
//!
//! # The actor tree (ractor on tokio)
//!
//! ```text
//! SupervisorActor            the session registry and who waits on which session;
//!  |                         restarts a failed session from its files
//!  +-- NotifierActor         session events -> the log (and Telegram when configured)
//!  +-- SessionActor x N      one per session: its folder (under the worker lock) and its
//!       |                    phase machine; decides continue / park / retry / block
//!       +-- AgentProcess     one per attempt: the CLI in its own process group, stdout to the
//!                            attempt log, hard timeout, reports AgentExited and stops
//! ```
//!
//! Crashes, timeouts and retries are messages: a failed attempt comes back to its session,
//! which schedules the next one with `send_after` (capped exponential backoff) or blocks.
//!
//! # Modules
//!
//! - [`protocol`]: pure, no IO: phases, signal, overview, qa, state, gates, model profiles;
//! - [`config`]: `.samocode`, `config.toml`, environment and flags into a valid [`config::Config`];
//! - [`session`]: the session folder, its worktree, the context of an attempt, the SessionActor;
//! - [`agent`]: the agent CLIs and the AgentProcess actor;
//! - [`supervisor`], [`notify`]: the root actor and the notifier;
//! - [`dashboard`]: the web dashboard the daemon serves, a thin adapter like the bot;
//! - [`workflow`]: the agent's texts (workflow, skills, slash commands) built into the binary;
//! - [`cli`]: the commands people type, `install` among them; [`fake_agent`]: the scripted agent used by the demo
//!   and the tests; [`telemetry`]: logs and traces.

pub mod agent;
pub mod bot;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod executor;
pub mod fake_agent;
pub mod lockfile;
pub mod notify;
pub mod open_files;
pub mod protocol;
pub mod session;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod workflow;

/// Runs the daemon (`samocode supervise`) with `config` until `shutdown` asks it to stop: the
/// entry for tests and embedders, which need neither a subprocess nor signals.
pub async fn run(
    config: &config::Config,
    shutdown: shutdown::Shutdown,
) -> Result<(), daemon::DaemonError> {
    daemon::run(config, shutdown).await
}
