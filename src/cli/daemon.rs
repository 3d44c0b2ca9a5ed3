//! `samocode supervise` (the daemon), and the commands that only make sense with one:
//! `start` and `parallel`. Also the client the other commands use to reach a running daemon.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ractor::Actor;
use ractor::rpc::CallResult;

use super::{CliError, exit};
use crate::agent::reaper;
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::session::open::StartRequest;
use crate::session::person::PersonCommand;
use crate::supervisor::{OwnedSession, SupervisorActor, SupervisorArgs, SupervisorMsg};

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Agents allowed to run at once (also SAMOCODE_MAX_PARALLEL or max_parallel in config.toml).
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<String>,
    #[command(flatten)]
    pub http: super::dashboard::HttpArgs,
}

/// A connection to a running daemon.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The daemon at the configured control socket, or `None` when none runs.
    pub async fn connect(config: &Config) -> Result<Option<Client>, CliError> {
        let socket = config.control_socket.clone();
        let found = control::connect(&socket).await.map_err(CliError::failure)?;
        Ok(found.map(|_| Client { socket }))
    }

    pub async fn request(&self, request: Request) -> Result<Response, CliError> {
        let stream = control::connect(&self.socket)
            .await
            .map_err(CliError::failure)?
            .ok_or_else(|| {
                CliError::failure(anyhow::anyhow!(
                    "the daemon at {} went away",
                    self.socket.display()
                ))
            })?;
        control::call(stream, &self.socket, request)
            .await
            .map_err(CliError::failure)
    }

    /// Sends a person's command; returns the daemon's sentence.
    pub async fn person(&self, dir: &Path, command: PersonCommand) -> Result<String, CliError> {
        done(
            self.request(Request::Person {
                dir: dir.to_path_buf(),
                command,
            })
            .await?,
        )
    }

    /// The sessions the daemon owns.
    pub async fn owned(&self) -> Result<Vec<OwnedSession>, CliError> {
        match self.request(Request::Status).await? {
            Response::Sessions { sessions, .. } => Ok(sessions),
            other => done(other).map(|_| Vec::new()),
        }
    }
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
            })
            .await?,
    )?;
    println!("{message}");
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

/// The daemon's lock, held for its whole life.
struct DaemonLock {
    _file: File,
}

fn lock_state_dir(dir: &Path) -> Result<DaemonLock, CliError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CliError::failure(anyhow::anyhow!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
    // The socket's 0600 is only half the fence; the directory is the other half.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let path = dir.join("daemon.lock");
    match crate::lockfile::acquire(&path) {
        Ok(file) => Ok(DaemonLock { _file: file }),
        Err(crate::lockfile::LockError::Held { pid }) => Err(CliError {
            code: exit::LOCKED,
            error: anyhow::anyhow!(
                "another samocode daemon is running (pid {}) with state directory {}; stop it first, or set SAMOCODE_STATE_DIR for a second one",
                pid.map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                dir.display()
            ),
        }),
        Err(crate::lockfile::LockError::Io(e)) => Err(CliError::failure(anyhow::anyhow!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// `samocode supervise`: the daemon, in the foreground. SIGTERM or SIGINT stops it gracefully.
pub async fn supervise(config: &Config) -> Result<u8, CliError> {
    config.check_agent()?;
    let state_dir = &config.state_dir;
    let _lock = lock_state_dir(state_dir)?;
    let agents_dir = state_dir.join("agents");
    let killed = reaper::kill_leftovers(&agents_dir);
    if !killed.is_empty() {
        tracing::warn!(groups = ?killed, "killed agents left by a previous daemon");
    }
    let listener = control::bind(&config.control_socket).map_err(|e| {
        CliError::failure(anyhow::anyhow!(
            "cannot listen on {}: {e}",
            config.control_socket.display()
        ))
    })?;
    let owned_file = state_dir.join("sessions.json");
    let telegram = super::run::telegram(config)?;
    let supervisor = SupervisorActor {
        agent: config.agent.clone(),
        retry: config.retry.clone(),
        keep_parked: true,
        agents_dir: Some(agents_dir),
        owned_file: Some(owned_file.clone()),
        telegram: telegram.clone(),
    };
    let (supervisor, handle) = Actor::spawn(
        None,
        supervisor,
        SupervisorArgs {
            max_parallel: config.max_parallel,
        },
    )
    .await
    .map_err(|e| CliError::failure(anyhow::anyhow!("cannot start the supervisor: {e}")))?;

    // The web dashboard: an adapter beside the bot, stopped when this guard drops. Started
    // before any session, so that a refused setting stops the daemon with nothing running.
    let dashboard = crate::dashboard::Dashboard::start(config, supervisor.clone())
        .await
        .map_err(CliError::usage)?;
    resume_owned(&supervisor, &owned_file).await;
    let server = tokio::spawn(control::serve(
        listener,
        supervisor.clone(),
        dashboard.handle(),
    ));
    // The bot is a task beside the supervisor: it holds no session state, only asks.
    let bot = telegram.map(|telegram| tokio::spawn(telegram.poll(supervisor.clone())));
    tracing::info!(socket = %config.control_socket.display(), max_parallel = config.max_parallel, "samocode daemon running");

    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| CliError::failure(anyhow::anyhow!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(
        "stopping: running attempts get their grace period, then their process groups are killed"
    );
    server.abort();
    if let Some(bot) = bot {
        bot.abort();
    }
    supervisor.stop(None);
    let _ = tokio::time::timeout(config.agent.kill_grace + Duration::from_secs(30), handle).await;
    let _ = std::fs::remove_file(&config.control_socket);
    tracing::info!("samocode daemon stopped");
    Ok(exit::DONE)
}

/// Takes over again every session a previous daemon owned.
async fn resume_owned(supervisor: &ractor::ActorRef<SupervisorMsg>, owned_file: &Path) {
    let Ok(text) = std::fs::read_to_string(owned_file) else {
        return;
    };
    let owned: Vec<OwnedSession> = match serde_json::from_str(&text) {
        Ok(owned) => owned,
        Err(error) => {
            tracing::error!(%error, file = %owned_file.display(), "the list of owned sessions is unreadable; not resuming");
            return;
        }
    };
    for session in owned {
        let project = match crate::config::load_project(&session.project) {
            Ok(project) => project,
            Err(error) => {
                tracing::error!(%error, session = %session.dir.display(), "cannot resume");
                continue;
            }
        };
        let request = StartRequest {
            project,
            name: session
                .dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            dive: None,
            task: None,
            once: false,
        };
        match supervisor
            .call(|reply| SupervisorMsg::StartSession { request, reply }, None)
            .await
        {
            Ok(CallResult::Success(Ok(started))) => {
                tracing::info!(session = %started.folder, "resumed")
            }
            Ok(CallResult::Success(Err(error))) => {
                tracing::error!(%error, session = %session.dir.display(), "cannot resume")
            }
            _ => tracing::error!(session = %session.dir.display(), "the supervisor did not answer"),
        }
    }
}
