//! The daemon (`samocode supervise`) as a library call: [`run`] takes a configuration and a
//! [`Shutdown`], so tests and embedders drive it in process and only `main` knows signals.
//!
//! It takes the state directory's lock, lists the sessions it owns, binds the control socket,
//! starts the SupervisorActor under an [`exit_watch`] and resumes every owned session. The
//! control server and the Telegram poller are edges run by [`edge::keep_running`]: restarted
//! with backoff when they end or panic. The daemon then waits for one of two things: a stop
//! request (graceful: every attempt is stopped with its grace and journaled, locks are
//! released; a second request kills the agents and returns at once) or the death of the
//! supervisor (the agents are killed and the daemon returns an error, so that systemd restarts
//! it and the next start recovers every session).

pub mod edge;
pub mod exit_watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use ractor::rpc::CallResult;

use crate::agent::launch;
use crate::config::Config;
use crate::control;
use crate::executor::AttemptExecutor;
use crate::lockfile;
use crate::shutdown::Shutdown;
use crate::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};

/// Why the daemon stopped other than by request, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory is not safe to use, or cannot be made.
    #[error("state directory {path}: {problem}")]
    StateDir { path: PathBuf, problem: String },
    /// Another daemon holds the state directory.
    #[error(
        "another samocode daemon is running (pid {pid}) with state directory {path}; stop it first, or set SAMOCODE_STATE_DIR for a second one"
    )]
    Locked { path: PathBuf, pid: String },
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The supervisor could not start.
    #[error("cannot start the supervisor: {0}")]
    Start(String),
    /// The supervisor died; its agents were killed.
    #[error(
        "the supervisor stopped unexpectedly ({0}); its agents were killed, and the next start resumes every session"
    )]
    SupervisorDied(String),
    /// The dashboard's settings were refused (a non-loopback address without a token file).
    #[error("{0}")]
    Dashboard(String),
    /// The sessions it owns and its agents at once do not fit in its open-files limit.
    #[error("{0}")]
    OpenFiles(String),
    /// A second stop request came before the graceful stop ended.
    #[error("stopped at once by a second signal; the running agents were killed")]
    Forced { signal: i32 },
}

impl DaemonError {
    /// The process's exit code for it.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Locked { .. } => 12,
            DaemonError::StateDir { .. }
            | DaemonError::Control(_)
            | DaemonError::Dashboard(_)
            | DaemonError::OpenFiles(_) => 2,
            DaemonError::Forced { signal } => crate::shutdown::exit_code(*signal),
            DaemonError::Start(_) | DaemonError::SupervisorDied(_) => 1,
        }
    }
}

/// Runs the daemon until `shutdown` asks it to stop (or its supervisor dies).
pub async fn run(config: &Config, shutdown: Shutdown) -> Result<(), DaemonError> {
    // Refused settings leave nothing behind: checked before the state directory is touched.
    crate::dashboard::Dashboard::check(config)
        .map_err(|e| DaemonError::Dashboard(e.to_string()))?;
    let executor = crate::executor::for_config(config)
        .await
        .map_err(DaemonError::Start)?;
    run_with(config, shutdown, executor).await
}

/// [`run`], with the launcher of the agents given.
pub async fn run_with(
    config: &Config,
    mut shutdown: Shutdown,
    launcher: Arc<dyn AttemptExecutor>,
) -> Result<(), DaemonError> {
    let state_dir = &config.state_dir;
    // Refused before the state directory is made for it.
    control::fits(&config.control_socket)?;
    prepare_state_dir(state_dir)?;
    let _lock = match lockfile::acquire(&state_dir.join("daemon.lock")) {
        Ok(file) => file,
        Err(lockfile::LockError::Held { pid }) => {
            return Err(DaemonError::Locked {
                path: state_dir.clone(),
                pid: pid.map_or_else(|| "unknown".into(), |p| p.to_string()),
            });
        }
        Err(lockfile::LockError::Io(e)) => {
            return Err(DaemonError::StateDir {
                path: state_dir.clone(),
                problem: format!("cannot lock daemon.lock: {e}"),
            });
        }
    };
    let crate::supervisor::owned::Listed {
        owned,
        problems,
        forgotten,
    } = crate::supervisor::load_owned(state_dir).map_err(|e| DaemonError::StateDir {
        path: state_dir.clone(),
        problem: format!("cannot read {}: {e}", crate::supervisor::OWNED_FILE),
    })?;
    for problem in problems {
        tracing::error!(%problem, "a line of the owned sessions cannot be read: its session is not resumed");
    }
    let mut renamed = Vec::new();
    let listed: std::collections::HashSet<PathBuf> = match forgotten.is_empty() {
        true => Default::default(),
        false => owned.iter().map(|o| o.dir.clone()).collect(),
    };
    for session in forgotten {
        // An agent a killed daemon left for it would run on with nobody to stop it.
        let killed = crate::agent::reaper::kill_marked(&session.dir, None);
        // Renamed beside where it was while the daemon was down (or before it learned of it):
        // driven on at its new path, not forgotten.
        if let Some(new) = renamed_beside(&session.dir, &listed) {
            tracing::info!(from = %session.dir.display(), to = %new.display(), "a session's folder was renamed: it is driven at its new path");
            let moved = crate::supervisor::owned::OwnedSession {
                dir: new.clone(),
                project: session.project.clone(),
            };
            if let Err(error) = crate::supervisor::owned::append(state_dir, &moved) {
                tracing::error!(%error, dir = %new.display(), "cannot list the renamed session's new path; the daemon drives it until it stops, and not after");
            }
            renamed.push((session.dir, moved));
            continue;
        }
        tracing::info!(dir = %session.dir.display(), agents_killed = killed.len(), "the daemon forgets a session: its folder is gone (deleted or moved) from its sessions folder");
    }
    // The cap alone is checked before anything runs; each session as it is opened (a finished
    // one holds no file, so the owned list overstates what is needed).
    let open_files = crate::open_files::raise();
    crate::open_files::check(open_files.limit, 0, config.max_parallel)
        .map_err(|problem| DaemonError::OpenFiles(format!("{problem}, or lower --max-parallel")))?;
    // With a fleet budget, what the owned sessions have cost is counted before any of them
    // is opened (each opens in the background, and the first opened would get slots first).
    let fleet_costs: Vec<(PathBuf, f64)> = match config.budgets.fleet_cost_usd {
        Some(_) => owned
            .iter()
            .map(|session| (session.dir.clone(), spent_by(&session.dir)))
            .collect(),
        None => Vec::new(),
    };
    let socket = Arc::new(control::bind(&config.control_socket).await?);
    // Orphans of the agents become children of the daemon, where the end of an attempt finds
    // them cheaply (see `agent::reaper`).
    crate::agent::reaper::adopt_orphans();
    let telegram = config
        .telegram
        .as_ref()
        .map(crate::bot::Telegram::new)
        .transpose()
        .map_err(|e| DaemonError::Start(e.to_string()))?;
    let engine = launcher.engine();
    let supervisor = SupervisorActor {
        agent: config.agent.clone(),
        retry: config.retry.clone(),
        keep_parked: true,
        state_dir: Some(state_dir.clone()),
        sink: telegram
            .clone()
            .map(|t| Arc::new(t) as Arc<dyn crate::notify::Sink>),
        outbox: Some(crate::notify::outbox::daemon_outbox(state_dir)),
        launcher,
        failpoints: config.failpoints.clone(),
        budgets: std::sync::Arc::new(config.budgets.clone()),
    };
    let (watch, mut died) = exit_watch::start().await.map_err(DaemonError::Start)?;
    let (supervisor, handle) = Actor::spawn_linked(
        None,
        supervisor,
        SupervisorArgs {
            max_parallel: config.max_parallel,
            open_files: Some(open_files.limit),
            fleet_costs,
        },
        watch.get_cell(),
    )
    .await
    .map_err(|e| DaemonError::Start(e.to_string()))?;

    // The web dashboard: an adapter beside the bot, stopped when this guard drops. Started
    // before any session, so that a refused setting stops the daemon with nothing running.
    let dashboard = match crate::dashboard::Dashboard::start(config, supervisor.clone()).await {
        Ok(dashboard) => dashboard,
        Err(error) => {
            supervisor.stop(None);
            watch.stop(None);
            return Err(DaemonError::Dashboard(error.to_string()));
        }
    };
    for session in owned {
        // Each opens in the supervisor's own background task; a session that cannot be opened
        // stays listed as broken until a person's `resume`.
        let _ = supervisor.send_message(SupervisorMsg::Resume {
            dir: session.dir,
            project: session.project,
        });
    }
    for (old, session) in renamed {
        let _ = supervisor.send_message(SupervisorMsg::ResumeRenamed {
            old,
            dir: session.dir,
            project: session.project,
        });
    }
    let mut edges = Vec::new();
    {
        let socket = socket.clone();
        let supervisor = supervisor.clone();
        let handle = dashboard.handle();
        edges.push(edge::keep_running("control server", move || {
            control::serve(socket.clone(), supervisor.clone(), handle.clone())
        }));
    }
    {
        // The list of sessions deleted or cut while the daemon runs (a `start` since may
        // have made it anew): mended, or the next start would forget the sessions it lacks.
        let supervisor = supervisor.clone();
        let state_dir = state_dir.to_path_buf();
        edges.push(edge::keep_running("sessions list", move || {
            let (supervisor, state_dir) = (supervisor.clone(), state_dir.clone());
            async move {
                loop {
                    tokio::time::sleep(RELIST_EVERY).await;
                    relist(&supervisor, &state_dir).await;
                }
            }
        }));
    }
    if let Some(telegram) = telegram {
        let supervisor = supervisor.clone();
        let place = state_dir.join("telegram-offset");
        edges.push(edge::keep_running("telegram poller", move || {
            telegram.clone().poll(supervisor.clone(), place.clone())
        }));
    }
    tracing::info!(socket = %config.control_socket.display(), max_parallel = config.max_parallel, executor = engine, open_files = open_files.limit, open_files_was = open_files.was, "samocode daemon running");

    let outcome = tokio::select! {
        reason = &mut died => {
            let reason = reason.unwrap_or_else(|_| "its watch went away".into());
            tracing::error!(%reason, "the supervisor stopped unexpectedly; killing its agents");
            launch::kill_all_live();
            Err(DaemonError::SupervisorDied(reason))
        }
        signal = shutdown.requested() => {
            tracing::info!(signal, "stopping: running attempts get their grace period, then their process groups are killed");
            for edge in &edges {
                edge.abort();
            }
            // Whatever became of the list while the daemon ran, it names every session the
            // next start resumes.
            relist(&supervisor, state_dir).await;
            // The sessions' stop (their agents' grace, and a remote attempt's wait for its
            // end), then the notices' (a send under way is let end).
            let grace = config.agent.kill_grace
                + Duration::from_secs(30)
                + crate::supervisor::NOTICES_AT_STOP;
            let stopped = supervisor.call(|reply| SupervisorMsg::Shutdown { reply }, Some(grace));
            tokio::select! {
                result = stopped => {
                    if !matches!(result, Ok(CallResult::Success(()))) {
                        tracing::error!("the sessions did not stop in time; killing their agents");
                        launch::kill_all_live();
                    }
                    Ok(())
                }
                _ = shutdown.forced() => {
                    let killed = launch::kill_all_live();
                    tracing::warn!(killed, "second signal: agents killed, exiting now");
                    Err(DaemonError::Forced { signal })
                }
            }
        }
    };
    for edge in &edges {
        edge.abort();
    }
    supervisor.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    watch.stop(None);
    drop(dashboard);
    socket.close();
    tracing::info!("samocode daemon stopped");
    outcome
}

/// Creates the state directory (0700) when absent; refuses one that others may enter or that
/// another user owns, rather than changing it.
pub fn prepare_state_dir(dir: &Path) -> Result<(), DaemonError> {
    private_dir(dir, "the control socket", "set SAMOCODE_STATE_DIR to").map_err(|problem| {
        DaemonError::StateDir {
            path: dir.to_path_buf(),
            problem,
        }
    })
}

/// Creates `dir` (0700) when absent; refuses one that others may enter (and reach what it
/// `holds`) or that another user owns, rather than changing it. `instead` says how to name
/// another one (`set SAMOCODE_STATE_DIR to`).
pub fn private_dir(dir: &Path, holds: &str, instead: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create its parent: {e}"))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "it exists and is not a directory; {instead} another path"
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "it belongs to user id {}, not to you ({me}); {instead} a directory of your own",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "its mode is {mode:o}, so other users may enter it and reach {holds}; run `chmod 700 {}` if it is yours alone, or {instead} a new path",
            crate::protocol::shell_path(dir)
        ));
    }
    Ok(())
}

/// What the session in `dir` has cost, toward the fleet budget: from its state, or, when that
/// cannot be read, from its journal's rows (left out, it let the fleet run on past its budget).
fn spent_by(dir: &Path) -> f64 {
    let folder = crate::session::SessionFolder::new(dir);
    let error = match folder.load_state() {
        Ok(state) => return state.usage.cost_usd,
        Err(error) => error,
    };
    let mut spent = crate::protocol::Usage::default();
    let counted = folder.each_row(
        crate::session::store::ITERATIONS,
        |row: crate::protocol::journal::IterationRow| spent.add(row.usage()),
    );
    match counted {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), %error, cost_usd = spent.cost_usd, "a session's state cannot be read: its cost toward the fleet budget is counted from its _iterations.jsonl")
        }
        Err(journal) => {
            tracing::error!(dir = %dir.display(), %error, %journal, "neither a session's state nor its journal can be read: its cost is not counted toward the fleet budget")
        }
    }
    spent.cost_usd
}

/// How often the daemon looks that its list of sessions names every session it drives.
const RELIST_EVERY: Duration = Duration::from_secs(30);

/// Lists again, in `sessions.jsonl`, the sessions the daemon drives that the list lacks (the
/// file deleted or cut while it ran: the next start would not resume them).
async fn relist(supervisor: &ractor::ActorRef<SupervisorMsg>, state_dir: &Path) {
    let control::Response::Sessions { sessions, .. } =
        control::ask(supervisor, control::Request::Status).await
    else {
        return;
    };
    match crate::supervisor::owned::restore_missing(state_dir, &sessions) {
        Ok(0) => {}
        Ok(missing) => tracing::warn!(
            missing,
            "the list of sessions (sessions.jsonl) lacked sessions this daemon drives (deleted or cut while it ran); listed again"
        ),
        Err(error) => tracing::warn!(
            %error,
            "the list of sessions (sessions.jsonl) lacks sessions this daemon drives and cannot be mended: a restart will not resume them; `samocode start` hands each over again"
        ),
    }
}

/// The folder beside `gone` (in its sessions folder) that is its session renamed: its state
/// still carries the old folder's name (a folder takes its new name at its next opening), and
/// no listed session has it. `None` when none, or more than one, does.
fn renamed_beside(
    gone: &std::path::Path,
    listed: &std::collections::HashSet<PathBuf>,
) -> Option<PathBuf> {
    let old_name = gone.file_name()?.to_str()?;
    let mut found = std::fs::read_dir(gone.parent()?)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir() && !listed.contains(path))
        .filter(|path| {
            crate::session::SessionFolder::new(path.clone())
                .load_state()
                .is_ok_and(|state| state.name == old_name)
        });
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}
