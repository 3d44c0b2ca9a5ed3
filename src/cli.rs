//! The command line: clap structures, and one file per command under `cli/`.
//!
//! Every command returns an exit code or a [`CliError`] that carries its own; `main` only
//! prints and exits.

/// Every `println!` and `print!` under `cli/` is this one, not std's: when the reader closes
/// standard output (`samocode status | head -1`), the command ends quietly with exit 0, the
/// way `head` expects, where std's macro panics on the broken pipe (exit 101). SIGPIPE stays
/// ignored, as Rust sets it: the daemon writes to sockets and pipes of other processes and
/// must never die of a reader that went away.
macro_rules! println {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// See [`println!`] above.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::cli::output::text(format_args!($($arg)*))
    };
}

macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::cli::output::error_line(format_args!($($arg)*))
    };
}

mod answer;
mod attempt_run;
mod daemon;
mod dashboard;
mod demo;
mod gate;
mod install;
pub mod logs;
pub mod output;
mod run;
pub(crate) mod status;
mod worker;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, Flags, Sources};
use crate::protocol::gate::GateError;
use crate::protocol::qa::QaError;
use crate::session::StoreError;
use crate::session::name::NameError;
use crate::session::open::OpenError;
use crate::telemetry;

/// Exit codes of PROTOCOL.md section 7.
pub mod exit {
    pub const DONE: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const WAITING: u8 = 10;
    pub const BLOCKED: u8 = 11;
    pub const LOCKED: u8 = 12;
}

#[derive(Debug, Parser)]
#[command(
    name = "samocode",
    version,
    about = "Runs AI coding agents autonomously on real repositories, one supervised session per task",
    propagate_version = true
)]
pub struct Cli {
    /// The project file (.samocode); found by walking up from the current directory otherwise.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive one session in the foreground until it is done, waits for a person, or blocks.
    Run(run::RunArgs),
    /// The daemon: many sessions in parallel, gates that wait in place, a control socket.
    Supervise(daemon::SuperviseArgs),
    /// Hand a new or existing session to the running daemon.
    Start(SessionSpec),
    /// Change how many agents the running daemon runs at once.
    Parallel {
        /// Agents allowed to run at once (1 to 1000).
        #[arg(value_parser = parallel_value)]
        max: usize,
    },
    /// Show the sessions of the project, or one session in full.
    Status(status::StatusArgs),
    /// Fill answers into the session's _qa.md (and let it continue when all are answered).
    Answer(answer::AnswerArgs),
    /// Approve the plan of a session waiting for plan approval.
    Approve(SessionArg),
    /// Send a plan back to planning with feedback.
    Reject(gate::RejectArgs),
    /// Continue a blocked, stopped, failed or waiting session (or raise a budget).
    Resume(gate::ResumeArgs),
    /// Park a session until `resume`.
    Stop(SessionArg),
    /// Give a session's next iteration a note from you (under "Guidance from a person").
    Tell(gate::TellArgs),
    /// Show the agent's output of the newest attempt, readably.
    Logs(logs::LogsArgs),
    /// Print the running daemon's web dashboard address with a one-time login, and open it.
    Dashboard(dashboard::DashboardArgs),
    /// A self-contained run of several sessions with the built-in scripted agent.
    Demo(demo::DemoArgs),
    /// Install the skills and slash commands for Claude Code (~/.claude) and Codex ($CODEX_HOME).
    Install(install::InstallArgs),
    /// Remove what `install` put there (and nothing else).
    Uninstall,
    /// Run the attempts a daemon publishes to NATS, on this host.
    Worker(worker::WorkerArgs),
    /// Run one attempt from its spec file and print its events as JSON lines (what a worker
    /// or a Kubernetes Job runs).
    #[command(name = "attempt-run")]
    AttemptRun(attempt_run::AttemptRunArgs),
    /// The scripted agent used by the demo and the tests (speaks like `claude -p`).
    #[command(hide = true, name = "fake-agent")]
    FakeAgent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Which session, and for a new one what it is about (`run` and `start`).
#[derive(Debug, Args)]
pub struct SessionSpec {
    /// The session name: `[a-z0-9][a-z0-9._-]{0,63}`, or an existing YY-MM-DD-name folder.
    #[arg(long)]
    pub session: String,
    /// What to investigate (required for a new session).
    #[arg(long)]
    pub dive: Option<String>,
    /// What to build (required for a new session).
    #[arg(long)]
    pub task: Option<String>,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// A session's budget (`run` and `start`); kept in its `_state.json`. Unset limits come from
/// SAMOCODE_MAX_COST, SAMOCODE_MAX_ITERATIONS, SAMOCODE_MAX_TIME or config.toml.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Block the session for a person once it has cost this many US dollars (20, 7.50).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<String>,
    /// Block the session before its iteration number N+1 (N from 1 to 100000).
    #[arg(long, value_name = "N")]
    pub max_iterations: Option<String>,
    /// Block the session once its agent attempts have taken this long in all (8h, 90m).
    #[arg(long, value_name = "DURATION")]
    pub max_time: Option<String>,
}

impl BudgetArgs {
    fn apply(&self, flags: &mut Flags) {
        flags.budget.max_cost = self.max_cost.clone();
        flags.budget.max_iterations = self.max_iterations.clone();
        flags.budget.max_time = self.max_time.clone();
    }
}

/// How the command's log lines are written (`run` and `supervise`).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log lines as `text` (the default) or as `json` objects, one a line (also
    /// SAMOCODE_LOG_FORMAT).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionArg {
    /// The session name (or its full YY-MM-DD-name folder).
    pub session: String,
}

/// A failed command: the message for the user and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError::new(exit::USAGE, error)
    }

    pub fn failure(error: impl Into<anyhow::Error>) -> CliError {
        CliError::new(exit::FAILURE, error)
    }

    /// An error with exit code `code` (`main` prints it with each cause once).
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code,
            error: error.into(),
        }
    }
}

/// `samocode parallel N`: the same range as `--max-parallel` and SAMOCODE_MAX_PARALLEL.
fn parallel_value(text: &str) -> Result<usize, String> {
    config::parse_parallel(text).ok_or_else(|| {
        format!(
            "{text:?} is not a number of agents from 1 to 1000 (the range --max-parallel takes)"
        )
    })
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::usage(e)
    }
}

impl From<NameError> for CliError {
    fn from(e: NameError) -> Self {
        CliError::usage(e)
    }
}

impl From<GateError> for CliError {
    fn from(e: GateError) -> Self {
        CliError::usage(e)
    }
}

impl From<QaError> for CliError {
    fn from(e: QaError) -> Self {
        CliError::usage(e)
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        use crate::session::untrusted::ReadError;
        let code = match e {
            StoreError::Locked { .. } => exit::LOCKED,
            StoreError::NotASession(_)
            | StoreError::BadState { .. }
            | StoreError::Behind { .. }
            | StoreError::Copied { .. }
            | StoreError::Legacy { .. } => exit::USAGE,
            // A session file that is a pipe, a link, too large or not UTF-8 is bad input a
            // person can fix; a failed read is a failure.
            StoreError::Unreadable(ReadError::Io { .. }) => exit::FAILURE,
            StoreError::Unreadable(_) => exit::USAGE,
            StoreError::Io { .. } => exit::FAILURE,
        };
        // A daemon drives it: its `status` and gates are asked of it.
        if let StoreError::Locked {
            dir,
            pid: Some(pid),
        } = &e
            && status::owner::is_daemon(*pid)
        {
            return CliError::new(
                code,
                anyhow::anyhow!(
                    "a samocode daemon (pid {pid}) drives session {}; give the command to that daemon, with the SAMOCODE_STATE_DIR (or SAMOCODE_CONTROL) it was started with",
                    dir.display()
                ),
            );
        }
        CliError::new(code, e)
    }
}

impl From<crate::session::person::ActError> for CliError {
    fn from(e: crate::session::person::ActError) -> Self {
        use crate::session::person::ActError;
        match e {
            ActError::Store(e) => e.into(),
            e @ (ActError::Gate(_)
            | ActError::Qa(_)
            | ActError::NoQuestions { .. }
            | ActError::Used { .. }) => CliError::usage(e),
        }
    }
}

impl From<OpenError> for CliError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Store(e) => e.into(),
            OpenError::Name(e) => e.into(),
            e @ (OpenError::NeedsDiveAndTask(_)
            | OpenError::NameTaken { .. }
            | OpenError::BlockedByBudget(_)
            | OpenError::BudgetOfDone(_)) => CliError::usage(e),
        }
    }
}

/// Whether a command needs the project file and how chatty its logs are.
fn needs(command: &Command) -> (bool, bool) {
    match command {
        Command::Run(_) | Command::Demo(_) | Command::Supervise(_) => (false, false),
        Command::Parallel { .. }
        | Command::Install(_)
        | Command::Uninstall
        | Command::Dashboard(_)
        | Command::AttemptRun(_) => (false, true),
        Command::Worker(_) => (false, false),
        // Without a project, status lists what a running daemon owns.
        Command::Status(args) => (false, args.json),
        // Without a project, they find the session among those a running daemon owns.
        Command::Logs(_) => (false, true),
        command if command.is_a_persons() => (false, true),
        _ => (true, true),
    }
}

impl Command {
    /// A person's command on a session: given to the daemon that owns it, else applied to the
    /// session's files.
    fn is_a_persons(&self) -> bool {
        matches!(
            self,
            Command::Answer(_)
                | Command::Approve(_)
                | Command::Reject(_)
                | Command::Resume(_)
                | Command::Stop(_)
                | Command::Tell(_)
        )
    }
}

/// Resolves the configuration for `cli` from the process's environment.
pub fn configure(cli: &Cli, sources: &Sources) -> Result<Config, CliError> {
    let (require_project, _) = needs(&cli.command);
    let mut flags = Flags {
        config: cli.config.clone(),
        require_project: require_project || matches!(cli.command, Command::Run(_)),
        ..Flags::default()
    };
    if let Command::Start(spec) = &cli.command {
        spec.budget.apply(&mut flags);
    }
    if let Command::Run(args) = &cli.command {
        args.spec.budget.apply(&mut flags);
        flags.provider = args.provider.clone();
        flags.timeout = args.timeout.clone();
        flags.log_format = args.log.log_format.clone();
    }
    if let Command::Worker(args) = &cli.command {
        flags.nats_url = args.nats_url.clone();
    }
    if let Command::Supervise(args) = &cli.command {
        flags.executor = args.executor.clone();
        flags.nats_url = args.nats_url.clone();
        flags.max_parallel = args.max_parallel.clone();
        flags.budget.fleet_max_cost = args.fleet_max_cost.clone();
        flags.log_format = args.log.log_format.clone();
        args.http.apply(&mut flags);
    }
    // The demo makes its own project: a project file given to it would be ignored.
    if matches!(cli.command, Command::Demo(_))
        && let Some(given) = &cli.config
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "--config {}: the demo makes a project of its own and reads none; leave --config out (`samocode demo --dir DIR` says where it goes)",
            given.display()
        )));
    }
    if matches!(cli.command, Command::Demo(_) | Command::FakeAgent { .. }) {
        flags.require_project = false;
        flags.no_project = true;
        flags.config = None;
    }
    // The demo keeps nothing in a state directory: one need not be found for it (with no
    // HOME, or a relative one, none would be).
    if matches!(cli.command, Command::Demo(_))
        && sources
            .env
            .get("SAMOCODE_STATE_DIR")
            .is_none_or(|v| v.is_empty())
        && ["XDG_STATE_HOME", "HOME"]
            .iter()
            .all(|k| sources.absolute_dir(k).is_none())
    {
        let mut sources = sources.clone();
        sources.env.insert(
            "SAMOCODE_STATE_DIR".into(),
            demo::stand_in_state_dir().display().to_string(),
        );
        return Ok(config::resolve(&flags, &sources)?);
    }
    if matches!(cli.command, Command::FakeAgent { .. }) {
        // The scripted agent takes no configuration: it reads its own knobs from the
        // environment it is given, and samocode's settings are not passed to agents.
        // It has no state directory either; one is named only so that none is looked for.
        let bare = Sources {
            env: [(
                "SAMOCODE_STATE_DIR".to_string(),
                sources.cwd.display().to_string(),
            )]
            .into(),
            cwd: sources.cwd.clone(),
        };
        return Ok(config::resolve(&flags, &bare)?);
    }
    Ok(config::resolve(&flags, sources)?)
}

/// How chatty the command's logs are, and where they go besides standard error: the daemon
/// keeps a rotating log file in its state directory.
pub fn logging(cli: &Cli, config: &Config) -> telemetry::Logging {
    telemetry::Logging {
        // The demo's table on a terminal is redrawn in place: lines logged beside it would be
        // drawn over (its sessions' files tell the whole story).
        quiet: needs(&cli.command).1
            || (matches!(cli.command, Command::Demo(_))
                && std::io::IsTerminal::is_terminal(&std::io::stdout())),
        // Only into a state directory that is safe to use; the daemon reports one that is not.
        // Nor for a daemon whose dashboard settings it refuses before making anything.
        file: (matches!(cli.command, Command::Supervise(_))
            && crate::dashboard::Dashboard::check(config).is_ok()
            && crate::control::fits(&config.control_socket).is_ok()
            && crate::daemon::prepare_state_dir(&config.state_dir).is_ok())
        .then(|| config.state_dir.join(telemetry::LOG_FILE)),
    }
}

/// The runtime's worker threads for the command, when not tokio's default (one per core).
///
/// `run` drives one session, whose actors take turns: with a second worker, a message between
/// them can wake the idle one, which then takes the CPU from the one that sent it. One worker
/// was faster per iteration by a median of 0.05 to 0.11 ms in four series of 40 alternating
/// pairs of runs, 27 to 31 pairs in its favour (`benches/README.md`, the sixth session).
pub fn worker_threads(cli: &Cli) -> Option<usize> {
    matches!(cli.command, Command::Run(_)).then_some(1)
}

/// Whether the process keeps the other processes of its user, its agents among them, from
/// reading its environment and memory (`/proc/PID/environ`: the bot token, the NATS token,
/// the keys): every command but the stand-in agent, which is read as an agent is.
pub fn private_memory(cli: &Cli) -> bool {
    !matches!(cli.command, Command::FakeAgent { .. })
}

/// Whether the command handles SIGINT, SIGTERM and SIGHUP itself: those that run agents,
/// which stop them with their grace, and the scripted agent, which ignores them as a stubborn
/// agent would (so that the grace's end, SIGKILL, is tested). Any other (`logs --follow`,
/// `status` waiting on a daemon) is simply ended by the signal.
pub fn stops_on_request(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Command::Run(_)
            | Command::Supervise(_)
            | Command::Demo(_)
            | Command::Worker(_)
            | Command::AttemptRun(_)
            | Command::FakeAgent { .. }
    )
}

/// Runs the parsed command; `shutdown` is how a stop is asked for (signals, from `main`).
pub async fn dispatch(
    cli: Cli,
    config: Config,
    sources: Sources,
    shutdown: crate::shutdown::Shutdown,
) -> Result<u8, CliError> {
    let drives = match &cli.command {
        Command::Run(args) => !args.dry_run,
        Command::Supervise(_) | Command::Demo(_) | Command::Worker(_) => true,
        _ => false,
    };
    if drives {
        output::drive_on_without_output();
    }
    // An agent that answers its own questions or approves a plan through the session's files
    // opens gates meant for people (the daemon refuses the same through its socket). An agent
    // of another project's session (one running samocode's own tests) is this project's person.
    let on_files = cli.command.is_a_persons();
    if on_files
        && let Ok(project) = config.project()
        && let Some(ref agent @ crate::agent::reaper::AgentAsker::Marked { ref session, .. }) =
            crate::agent::reaper::agent_behind(std::process::id() as i32)
        && session
            .parent()
            .is_some_and(|sessions| crate::session::worktree::same_dir(sessions, &project.sessions))
    {
        return Err(CliError::usage(anyhow::anyhow!(
            crate::control::not_a_person(&agent.to_string())
        )));
    }
    match cli.command {
        Command::Run(args) => run::run(args, &config, shutdown).await,
        Command::Supervise(_) => daemon::supervise(&config, shutdown).await,
        Command::Start(args) => daemon::start(args, &config).await,
        Command::Parallel { max } => daemon::parallel(max, &config).await,
        Command::Status(args) => status::status(args, &config).await,
        Command::Answer(args) => answer::answer(args, &config).await,
        Command::Approve(args) => gate::approve(&args.session, &config).await,
        Command::Reject(args) => gate::reject(&args, &config).await,
        Command::Resume(args) => gate::resume(args, &config).await,
        Command::Stop(args) => gate::stop(&args.session, &config).await,
        Command::Tell(args) => gate::tell(args, &config).await,
        Command::Logs(args) => logs::logs(args, &config).await,
        Command::Dashboard(args) => dashboard::dashboard(args, &config).await,
        Command::Demo(args) => demo::demo(args, &config, &sources, shutdown).await,
        Command::Install(args) => install::install(&args, &config),
        Command::Uninstall => install::uninstall(&config),
        Command::Worker(args) => worker::worker(args, &config, shutdown).await,
        Command::AttemptRun(args) => {
            attempt_run::attempt_run(args, &config, &sources, shutdown).await
        }
        Command::FakeAgent { args } => Ok(crate::fake_agent::main(&args, &sources.env)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// One session, one worker; the daemon runs many sessions side by side on all the cores.
    #[test]
    fn only_run_has_a_single_worker() {
        let threads = |args: &[&str]| worker_threads(&Cli::try_parse_from(args).unwrap());
        assert_eq!(threads(&["samocode", "run", "--session", "x"]), Some(1));
        assert_eq!(threads(&["samocode", "supervise"]), None);
        assert_eq!(threads(&["samocode", "status"]), None);
    }
}
