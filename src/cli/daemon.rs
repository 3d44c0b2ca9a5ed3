//! `samocode supervise` (the daemon), and the commands that only make sense with one:
//! `start` and `parallel`. Also the client the other commands use to reach a running daemon.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliError, exit};
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::session::person::PersonCommand;
use crate::shutdown::Shutdown;
use crate::supervisor::OwnedSession;

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Agents allowed to run at once, 1 to 1000 (default 4; also SAMOCODE_MAX_PARALLEL or
    /// max_parallel in config.toml).
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<String>,
    /// Where attempts run: local (the default), nats or kubernetes (also SAMOCODE_EXECUTOR).
    #[arg(long, value_name = "ENGINE")]
    pub executor: Option<String>,
    /// The NATS server of `--executor nats` (also SAMOCODE_NATS_URL).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The most the daemon's sessions may cost together, in US dollars; once reached, new
    /// attempts wait (also SAMOCODE_FLEET_MAX_COST or fleet_max_cost in config.toml).
    #[arg(long, value_name = "USD")]
    pub fleet_max_cost: Option<String>,
    #[command(flatten)]
    pub log: super::LogArgs,
    #[command(flatten)]
    pub http: super::dashboard::HttpArgs,
}

/// How a person's command from the command line is recorded.
pub const FROM_CLI: &str = "from the command line";

/// How long a command waits for the daemon's answer before it says it is waiting.
const SAY_WAITING: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to a running daemon, for one request.
pub struct Client {
    socket: PathBuf,
    stream: tokio::net::UnixStream,
}

impl Client {
    /// The daemon at the configured control socket, or `None` when none runs. The connection
    /// made to find out is the one the request then uses.
    pub async fn connect(config: &Config) -> Result<Option<Client>, CliError> {
        let socket = config.control_socket.clone();
        let found = control::connect(&socket).await.map_err(CliError::failure)?;
        Ok(found.map(|stream| Client { socket, stream }))
    }

    /// Sends `request` and waits for the answer; a daemon silent for [`SAY_WAITING`] has the
    /// person told that it is waited for, and how long at most (a daemon stopped with
    /// SIGSTOP, or a machine too busy, otherwise looked like a command that hung).
    pub async fn request(self, request: Request) -> Result<Response, CliError> {
        let answer = control::call(self.stream, &self.socket, request);
        tokio::pin!(answer);
        let answered = tokio::select! {
            answered = &mut answer => answered,
            () = tokio::time::sleep(SAY_WAITING) => {
                eprintln!(
                    "samocode: the daemon has not answered in {}; waiting for it up to {} in all (Ctrl-C gives up; a daemon stopped with SIGSTOP answers once continued)",
                    humantime::format_duration(SAY_WAITING),
                    humantime::format_duration(control::CLIENT_WAIT)
                );
                answer.await
            }
        };
        answered.map_err(CliError::failure)
    }

    /// Sends a person's command; returns the daemon's sentence.
    pub async fn person(self, dir: &Path, command: PersonCommand) -> Result<String, CliError> {
        done(
            self.request(Request::Person {
                dir: dir.to_path_buf(),
                command,
                by: Some(FROM_CLI.into()),
            })
            .await?,
        )
    }

    /// The sessions the daemon owns, its fleet budget's figures, and the owned sessions it
    /// could not open.
    pub async fn owned(self) -> Result<Owned, CliError> {
        match self.request(Request::Status).await? {
            Response::Sessions {
                sessions,
                fleet,
                broken,
                budget_defaults,
                ..
            } => Ok(Owned {
                sessions,
                fleet,
                broken,
                budget_defaults: Some(budget_defaults.map(|b| *b).unwrap_or_default()),
            }),
            other => done(other).map(|_| Owned::default()),
        }
    }
}

/// What the daemon says it owns.
#[derive(Debug, Default)]
pub struct Owned {
    pub sessions: Vec<OwnedSession>,
    pub fleet: Option<control::FleetFigures>,
    pub broken: Vec<control::BrokenSession>,
    /// The daemon's budget for sessions without their own (`None` without a daemon).
    pub budget_defaults: Option<crate::protocol::budget::Budget>,
}

fn done(response: Response) -> Result<String, CliError> {
    match response {
        Response::Done { message } => Ok(message),
        Response::Error { message, code } => Err(CliError {
            code,
            error: anyhow::anyhow!(message),
        }),
        Response::Sessions { .. } | Response::Dashboard { .. } => Err(CliError::failure(
            anyhow::anyhow!("unexpected answer from the daemon"),
        )),
    }
}

/// `samocode start`: hands a session to the running daemon.
pub async fn start(args: super::SessionSpec, config: &Config) -> Result<u8, CliError> {
    crate::session::name::validate(&args.session)?;
    let project = config.project()?;
    let Some(client) = Client::connect(config).await? else {
        return Err(CliError::usage(anyhow::anyhow!(
            "no samocode daemon is running (no control socket at {}); start one with `samocode supervise`, or drive the session in the foreground with `samocode run --session {}`",
            config.control_socket.display(),
            args.session
        )));
    };
    let message = done(
        client
            .request(Request::Start {
                project: project.file.clone(),
                session: args.session,
                dive: args.dive,
                task: args.task,
                budget: config.budgets.given,
            })
            .await?,
    )?;
    println!("{message}");
    Ok(exit::DONE)
}

/// `samocode resume --raise-budget cost=N` without a session: raises the running daemon's
/// fleet budget.
pub async fn raise_fleet(cost_usd: f64, config: &Config) -> Result<u8, CliError> {
    let Some(client) = Client::connect(config).await? else {
        return Err(CliError::usage(anyhow::anyhow!(
            "no samocode daemon is running: the fleet budget is the daemon's (start it with a higher --fleet-max-cost or fleet_max_cost in config.toml)"
        )));
    };
    println!(
        "{}",
        done(
            client
                .request(Request::RaiseFleetBudget { cost_usd })
                .await?
        )?
    );
    Ok(exit::DONE)
}

/// `samocode parallel N`: changes the cap on running agents of the running daemon.
pub async fn parallel(max: usize, config: &Config) -> Result<u8, CliError> {
    let Some(client) = Client::connect(config).await? else {
        return Err(CliError::usage(anyhow::anyhow!(
            "no samocode daemon is running; `samocode supervise --max-parallel N` starts one"
        )));
    };
    println!(
        "{}",
        done(client.request(Request::Parallel { max }).await?)?
    );
    Ok(exit::DONE)
}

/// `samocode supervise`: the daemon, in the foreground, until a signal stops it.
pub async fn supervise(config: &Config, shutdown: Shutdown) -> Result<u8, CliError> {
    config.check_agent()?;
    match crate::daemon::run(config, shutdown).await {
        Ok(()) => Ok(exit::DONE),
        Err(error) => Err(CliError {
            code: error.exit_code(),
            error: error.into(),
        }),
    }
}
