//! SupervisorActor: the root of the actor tree.
//!
//! Owns the registry of sessions: one [`Entry`] per session folder, holding how to reopen it,
//! its actor, its agent slot, how it last settled, who waits on it and its restarts. It also
//! owns the concurrency limit: a SessionActor asks for a slot before each attempt, waits in
//! order in state `queued` while all slots are taken, and gives it back when the attempt ends.
//!
//! Its mailbox stays free: it does no file IO and waits on nobody. Opening a session (folder,
//! lock, taking over from a dead worker) happens in a task that reports back with `Opened`; a
//! person's command goes to its session from a task that waits for the answer with a timeout.
//! Only a session's own actor writes its state, also to mark it failed.
//!
//! Accepts `StartSession`, `Watch`, `Control` and `Shutdown` from the command layer (`run`, the
//! daemon, the demo, the control socket and the bot), [`SessionReport`]s from its sessions,
//! `Opened` from its opening tasks and `FolderChanged` from its folder watcher. Links the
//! NotifierActor (restarted when it fails) and one SessionActor per session. Under the daemon
//! (`keep_parked`) a parked session keeps its actor, which holds the session lock, no process
//! and no timer; a person's command wakes it. A SessionActor that fails or is killed is
//! reopened from its files, at most [`MAX_RESTARTS`] times within [`RESTART_WINDOW`]; then it is
//! started once more only to mark itself failed, and a person is told. Overrides ractor's
//! default of stopping when a child stops.

mod fleet;
pub(crate) mod owned;
mod registry;
pub use registry::by_name;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

pub use owned::OwnedSession;
use registry::{Entry, Registry};

use crate::config::{AgentSettings, BudgetSettings, ConfigError, RetryPolicy};
use crate::control::{Request, Response};
use crate::executor::AttemptExecutor;
use crate::notify::{NotifierActor, NotifierArgs, NotifierHandle, NotifierMsg, SessionEvent, Sink};
use crate::protocol::budget::Budget;
use crate::session::actor::{STOP_SETTLED, STOP_SHUTDOWN, SessionActor, SessionMsg, SessionReport};
use crate::session::open::{OpenError, SessionArgs, Settled, StartRequest, open_resolved};
use crate::session::person::PersonCommand;

pub use owned::FILE as OWNED_FILE;

/// Restarts of one session allowed within [`RESTART_WINDOW`] before it is marked failed.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// How long a person's command may take in its session before the caller hears "no answer".
/// A session busy creating its worktree answers after that; nothing else waits this long.
pub const PERSON_TIMEOUT: Duration = Duration::from_secs(30);

/// Without inotify, how often sessions waiting for answers look at `_qa.md`.
const ANSWER_POLL: Duration = Duration::from_secs(2);

/// How often the daemon looks again at a session it owns that another worker drives (a
/// `samocode run`), to take it up once that worker lets go.
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// How the daemon's refusal of a command for a folder it does not drive begins (the command
/// line then says who holds it instead).
pub const NOT_DRIVEN: &str = "the daemon does not drive";

/// Why a session's actor is stopped when its folder was renamed under it.
const MOVED: &str = "its folder was renamed";

/// What a start request found.
#[derive(Debug, Clone)]
pub struct Started {
    pub dir: PathBuf,
    pub folder: String,
    /// How it stands when it does not need the worker now.
    pub settled: Option<Settled>,
}

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The project file named in a control request could not be read.
    #[error(transparent)]
    Project(#[from] ConfigError),
    /// The worker is shutting down.
    #[error("samocode is shutting down; start the session again once it runs")]
    Stopping,
}

impl StartError {
    /// The exit code the CLI uses for it.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Open(error) => open_error_code(error),
            StartError::Project(_) => 2,
            StartError::Stopping => 1,
        }
    }
}

/// Messages of the SupervisorActor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// From the command layer: drive this session.
    StartSession {
        request: StartRequest,
        reply: RpcReplyPort<Result<Started, StartError>>,
    },
    /// From the command layer: reply once the session settles (at once if it already has).
    Watch {
        dir: PathBuf,
        reply: RpcReplyPort<Settled>,
    },
    /// From the control socket, the bot or the demo: one request of the control protocol.
    Control {
        request: Request,
        reply: RpcReplyPort<Response>,
    },
    /// From the bot: the folder of the one session a name (folder or short name) means, as
    /// a person's command by that name finds it (also one renamed under the daemon).
    Locate {
        session: String,
        reply: RpcReplyPort<Result<PathBuf, String>>,
    },
    /// From a SessionActor.
    Session(SessionReport),
    /// From an opening task: a session's folder is open (or could not be).
    Opened(Box<Opened>),
    /// From the folder watcher (or its own timer without one): `_qa.md` changed in `dir`.
    FolderChanged { dir: PathBuf },
    /// From its own timer when the folder watcher is unavailable: look at waiting sessions.
    PollAnswers,
    /// From the daemon at start: take over a session it owned before.
    Resume { dir: PathBuf, project: PathBuf },
    /// From the daemon at start: take over a session it owned before at `old`, whose folder
    /// was renamed to `dir` (listed there already).
    ResumeRenamed {
        old: PathBuf,
        dir: PathBuf,
        project: PathBuf,
    },
    /// From the command layer: stop every session (their attempts are journaled as
    /// interrupted), then stop; replies when done.
    Shutdown { reply: RpcReplyPort<()> },
}

impl From<SessionReport> for SupervisorMsg {
    fn from(report: SessionReport) -> SupervisorMsg {
        SupervisorMsg::Session(report)
    }
}

impl TryFrom<SupervisorMsg> for SessionReport {
    type Error = SupervisorMsg;
    fn try_from(message: SupervisorMsg) -> Result<SessionReport, SupervisorMsg> {
        match message {
            SupervisorMsg::Session(report) => Ok(report),
            other => Err(other),
        }
    }
}

/// The result of opening a session in the background, and who asked.
#[derive(Debug)]
pub struct Opened {
    result: Result<(StartRequest, Box<SessionArgs>, Option<Settled>), StartError>,
    origin: Origin,
    restarts: Vec<Instant>,
}

/// Who asked for a session to be opened.
#[derive(Debug)]
enum Origin {
    /// `StartSession`.
    Caller(RpcReplyPort<Result<Started, StartError>>),
    /// A control `start` request.
    Control(RpcReplyPort<Response>),
    /// The supervisor, after the session's actor failed, or the daemon resuming it at start
    /// (`dir` and its project are known; a failure leaves it listed as broken).
    Restart { dir: PathBuf, project: PathBuf },
    /// A person's command for a session the daemon could not open before.
    Retry {
        dir: PathBuf,
        project: PathBuf,
        command: Order,
        reply: RpcReplyPort<Response>,
    },
}

/// A person's command and who gave it.
#[derive(Debug)]
struct Order {
    command: PersonCommand,
    by: Option<String>,
    /// The park the person saw, when a button says (see `Request::Named`).
    park: Option<i64>,
}

/// What to open: a request as given, or one to build from a control request's project file.
enum ToOpen {
    Request(StartRequest),
    Project {
        file: PathBuf,
        session: String,
        dive: Option<String>,
        task: Option<String>,
        budget: Budget,
    },
}

/// The configuration shared by every session.
pub struct SupervisorActor {
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
    /// Keep parked sessions in place (the daemon) rather than letting them go (`run`).
    pub keep_parked: bool,
    /// The daemon's state directory, where the owned sessions are listed (`None` for `run`).
    pub state_dir: Option<PathBuf>,
    /// Where the notifier also tells people about sessions (a Telegram chat).
    pub sink: Option<Arc<dyn Sink>>,
    /// The notifier's durable outbox (`None`: notices are kept in memory only).
    pub outbox: Option<PathBuf>,
    pub launcher: Arc<dyn AttemptExecutor>,
    /// Faults to inject, for the tests of supervision (`SAMOCODE_FAILPOINTS`).
    pub failpoints: Vec<String>,
    /// Session budgets, the fleet budget and the price table.
    pub budgets: Arc<BudgetSettings>,
}

/// Startup input.
pub struct SupervisorArgs {
    /// Agents allowed to run at once.
    pub max_parallel: usize,
    /// The process's open-files limit, which new sessions and a higher cap must fit in
    /// (`open_files::check`); `None` checks nothing (one session under `run`, the demo).
    pub open_files: Option<u64>,
    /// What each owned session had cost when the daemon started (with a fleet budget): counted
    /// before any slot is granted, so that a restart cannot start attempts past a fleet budget
    /// that the sessions not yet opened have used up.
    pub fleet_costs: Vec<(PathBuf, f64)>,
}

pub struct SupervisorState {
    notifier: ActorRef<NotifierMsg>,
    /// What sessions send their events through (the notifier by name, so a restarted one is
    /// found).
    notices: NotifierHandle,
    notifier_restarts: Vec<Instant>,
    registry: Registry,
    watch: Option<watch::FolderWatch>,
    /// Set once `Shutdown` arrives: who to tell when the last session is gone.
    stopping: Option<RpcReplyPort<()>>,
    /// What the owned sessions cost together, against the fleet budget.
    fleet: fleet::Fleet,
    /// The open-files limit new sessions and a higher cap must fit in.
    open_files: Option<u64>,
    /// Sessions being opened in the background (each may be taking its lock).
    opening: usize,
    /// Turns to open a session: at most `open_files::OPENING_AT_ONCE` at once, so that a burst
    /// of starts (or a restart with thousands of owned sessions) holds a bounded number of
    /// files and threads.
    opening_turns: Arc<tokio::sync::Semaphore>,
    /// The folder name of every session this daemon has opened or is opening, and its folder:
    /// the dashboard and Telegram know sessions by that name, so a new start of another
    /// project's session of a name taken here is refused. Shared with the opening tasks,
    /// which claim a name before they make anything.
    names: crate::notify::Names,
    /// Sessions not driven now that are being opened again (a person's command, an actor's
    /// restart, the daemon's start), with the commands that came meanwhile: they are handed on
    /// once it is open (each open of its own would find the folder locked by this very
    /// daemon, and call the session broken).
    reopening: HashMap<PathBuf, Vec<(Order, RpcReplyPort<Response>)>>,
    /// Sessions whose folder a person renamed while the daemon held them, by their old path:
    /// their actor is stopping, and the session opens again at the new path once it is gone.
    moving: HashMap<PathBuf, PathBuf>,
}

impl SupervisorState {
    /// Sessions whose lock is held or being taken.
    fn sessions_held(&self) -> usize {
        self.registry.driven_count() + self.opening
    }

    /// Whether `more` sessions beside those held, with `agents` at once, fit in the
    /// open-files limit.
    fn fits(&self, more: usize, agents: usize) -> Result<(), String> {
        match self.open_files {
            Some(limit) => crate::open_files::check(limit, self.sessions_held() + more, agents),
            None => Ok(()),
        }
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let notices = NotifierHandle::of_supervisor(myself.get_id());
        let names: crate::notify::Names = Arc::default();
        let notifier = self.spawn_notifier(&myself, &notices, &names).await?;
        let watch = self.keep_parked.then(|| {
            let watch = watch::FolderWatch::new(myself.clone());
            if !watch.is_live() {
                myself.send_interval(ANSWER_POLL, || SupervisorMsg::PollAnswers);
            }
            watch
        });
        let mut fleet = fleet::Fleet::new(self.budgets.fleet_cost_usd);
        for (dir, cost) in &args.fleet_costs {
            fleet.record(dir, *cost);
        }
        if let Some(state_dir) = &self.state_dir {
            fleet.remembered_in(state_dir);
        }
        let mut registry = Registry::new(args.max_parallel);
        registry.set_hold(fleet.holds());
        Ok(SupervisorState {
            notifier,
            notices,
            notifier_restarts: Vec::new(),
            registry,
            watch,
            stopping: None,
            fleet,
            open_files: args.open_files,
            opening: 0,
            opening_turns: Arc::new(tokio::sync::Semaphore::new(
                crate::open_files::OPENING_AT_ONCE,
            )),
            names,
            reopening: HashMap::new(),
            moving: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartSession { request, reply } => {
                if state.stopping.is_some() {
                    let _ = reply.send(Err(StartError::Stopping));
                } else if let Some(started) = state.registry.started(&request) {
                    let _ = reply.send(Ok(started));
                } else {
                    self.open_in_background(
                        &myself,
                        state,
                        ToOpen::Request(request),
                        Origin::Caller(reply),
                        Vec::new(),
                        None,
                    );
                }
            }
            SupervisorMsg::Resume { dir, project } => {
                // Taken up meanwhile (a person's resume, a start): nothing to open.
                if state.registry.get(&dir).is_some_and(|e| e.actor.is_some()) {
                    return Ok(());
                }
                let folder = folder_of(&dir);
                state.reopening.entry(dir.clone()).or_default();
                self.open_in_background(
                    &myself,
                    state,
                    ToOpen::Project {
                        file: project.clone(),
                        session: folder,
                        dive: None,
                        task: None,
                        budget: Budget::default(),
                    },
                    Origin::Restart { dir, project },
                    Vec::new(),
                    None,
                );
            }
            SupervisorMsg::ResumeRenamed { old, dir, project } => {
                // Its notices' open message and its buttons follow the new name.
                let renamed = NotifierMsg::Renamed {
                    from: folder_of(&old),
                    to: folder_of(&dir),
                    old: old.clone(),
                    dir: dir.clone(),
                };
                let _ = state.notifier.send_message(renamed);
                state.registry.alias(folder_of(&old), dir.clone());
                myself.send_message(SupervisorMsg::Resume { dir, project })?;
            }
            SupervisorMsg::Watch { dir, reply } => {
                state.registry.watch(dir, reply, self.keep_parked)
            }
            SupervisorMsg::Control { request, reply } => {
                self.control(&myself, state, request, reply)
            }
            SupervisorMsg::Locate { session, reply } => {
                let _ = reply.send(state.registry.named(&session));
            }
            SupervisorMsg::Session(report) => self.session_report(state, report),
            SupervisorMsg::Opened(opened) => {
                let reopened = match &opened.origin {
                    Origin::Retry { dir, .. } | Origin::Restart { dir, .. } => Some(dir.clone()),
                    _ => None,
                };
                self.opened(&myself, state, *opened).await;
                // The commands that came while it opened, in their order: to its actor now,
                // or (a finished session) each opening it in turn.
                if let Some(dir) = reopened {
                    for (command, reply) in state.reopening.remove(&dir).unwrap_or_default() {
                        self.person(&myself, state, dir.clone(), command, reply);
                    }
                }
            }
            SupervisorMsg::FolderChanged { dir } => {
                if let Some(actor) = state.registry.waiting_for_answers(&dir) {
                    let _ = actor.send_message(SessionMsg::CheckAnswers);
                }
            }
            SupervisorMsg::PollAnswers => {
                for actor in state.registry.all_waiting_for_answers() {
                    let _ = actor.send_message(SessionMsg::CheckAnswers);
                }
            }
            SupervisorMsg::Shutdown { reply } => {
                let live = state.registry.live_actors();
                if live.is_empty() {
                    finish_shutdown(&myself, state, reply);
                } else {
                    state.stopping = Some(reply);
                    for actor in live {
                        let _ = actor.send_message(SessionMsg::Shutdown);
                    }
                }
            }
        }
        if crate::telemetry::metrics::enabled() {
            let (running, queued, sessions) = state.registry.figures();
            crate::telemetry::metrics::fleet(running, queued, &sessions);
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Overrides ractor's default, which stops the supervisor when any child stops.
        let (who, reason, failed) = match event {
            SupervisionEvent::ActorFailed(who, error) => (who, error.to_string(), true),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                let reason = reason.unwrap_or_default();
                let expected = reason == STOP_SETTLED || reason == STOP_SHUTDOWN;
                (who, reason, !expected)
            }
            _ => return Ok(()),
        };
        if who.get_id() == state.notifier.get_id() {
            if state.stopping.is_none() {
                tracing::error!(%reason, "the notifier stopped; restarting it");
                self.restart_notifier(&myself, state).await?;
            }
            return Ok(());
        }
        let Some(dir) = state.registry.actor_gone(who.get_id()) else {
            return Ok(());
        };
        if state.stopping.is_none()
            && let Some(new) = state.moving.remove(&dir)
        {
            self.open_moved(&myself, state, &dir, new);
            return Ok(());
        }
        if let Some(reply) = state.stopping.take() {
            // Not restarted as the daemon stops, but said: the next start takes it up.
            if failed {
                tracing::error!(session = %dir.display(), %reason, "a session failed as the daemon stopped; the next start takes it up from its files");
            }
            if state.registry.live_actors().is_empty() {
                finish_shutdown(&myself, state, reply);
            } else {
                state.stopping = Some(reply);
            }
            return Ok(());
        }
        if failed {
            match reason == crate::session::actor::STOP_REPLACED {
                true => {
                    tracing::warn!(session = %dir.display(), "its folder was made again; opening it anew")
                }
                false => {
                    tracing::error!(session = %dir.display(), %reason, "session actor ended unexpectedly")
                }
            }
            self.restart(&myself, state, dir, reason);
        } else {
            state.registry.tell_watchers(&dir);
        }
        Ok(())
    }
}

impl SupervisorActor {
    async fn spawn_notifier(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        notices: &NotifierHandle,
        names: &crate::notify::Names,
    ) -> Result<ActorRef<NotifierMsg>, ActorProcessingErr> {
        let (notifier, _) = Actor::spawn_linked(
            Some(notices.name().to_string()),
            NotifierActor,
            NotifierArgs {
                sink: self.sink.clone(),
                outbox: self.outbox.clone(),
                adopt: self.keep_parked,
                failpoints: self.failpoints.clone(),
                names: self.keep_parked.then(|| names.clone()),
            },
            myself.get_cell(),
        )
        .await?;
        Ok(notifier)
    }

    /// A failed notifier is started again under its name, where sessions find it; notices
    /// sent while it was down are lost. More than [`MAX_RESTARTS`] in the window fails the
    /// supervisor.
    async fn restart_notifier(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        state
            .notifier_restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        state.notifier_restarts.push(now);
        if state.notifier_restarts.len() > MAX_RESTARTS {
            return Err("the notifier keeps failing".into());
        }
        state.notifier = self
            .spawn_notifier(myself, &state.notices, &state.names)
            .await?;
        Ok(())
    }

    /// Opens a session off the actor's threads; the result comes back as `Opened`.
    fn open_in_background(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        what: ToOpen,
        origin: Origin,
        restarts: Vec<Instant>,
        fail: Option<String>,
    ) {
        // Counted until `Opened` comes back: it may take a session's lock meanwhile.
        state.opening += 1;
        let myself = myself.clone();
        let state_dir = self.state_dir.clone();
        let launcher = self.launcher.clone();
        let budgets = self.budgets.clone();
        // A person's new start may not take a folder name another project's session holds
        // here; a restart or a retry reopens what is owned already, and only claims its name.
        let names = self.keep_parked.then(|| state.names.clone());
        let new_start = matches!(origin, Origin::Caller(_) | Origin::Control(_));
        // An owned session keeps its name whether it opens or not: one that cannot (its
        // project moved, its `.samocode` unreadable) is still this daemon's, shown broken, and
        // another project's session of its folder name beside it would make both unreachable
        // by that name.
        if let (Some(names), Origin::Restart { dir, .. } | Origin::Retry { dir, .. }) =
            (&names, &origin)
            && dir.exists()
        {
            let _ = claim_name(names, dir, false);
        }
        let turns = state.opening_turns.clone();
        tokio::spawn(async move {
            let turn = turns.acquire_owned().await;
            let opened = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                let request = match what {
                    ToOpen::Request(request) => request,
                    ToOpen::Project {
                        file,
                        session,
                        dive,
                        task,
                        budget,
                    } => StartRequest {
                        project: crate::config::load_project(&file)?,
                        name: session,
                        dive,
                        task,
                        budget,
                        once: false,
                    },
                };
                let resolved = crate::session::open::resolve(&request.project, &request)?;
                let claimed = match &names {
                    Some(names) => claim_name(names, resolved.path(), new_start)?,
                    None => None,
                };
                let opened = open_resolved(
                    &request.project,
                    &request,
                    resolved,
                    launcher.as_ref(),
                    &budgets.prices,
                );
                if opened.is_err()
                    && let (Some(names), Some(name)) = (&names, claimed)
                {
                    // Nothing was made under it: the name is free again.
                    lock_names(names).remove(&name);
                }
                let (mut args, settled) = opened?;
                args.fail = fail;
                // A session reopened (at the daemon's start, an actor's restart, a retry) is
                // listed already: listed again, every owned session had a second line (and a
                // synced write) at each start.
                if new_start && let Some(state_dir) = &state_dir {
                    // Listed before the daemon says yes: a session it accepted is resumed
                    // after any crash.
                    let entry = OwnedSession {
                        dir: args.store.dir().to_path_buf(),
                        project: request.project.file.clone(),
                    };
                    owned::append(state_dir, &entry).map_err(|source| {
                        OpenError::Store(crate::session::StoreError::Io {
                            action: "cannot record the owned session in",
                            path: state_dir.join(owned::FILE),
                            source,
                        })
                    })?;
                }
                Ok((request, args, settled))
            })
            .await
            .unwrap_or_else(|panic| {
                Err(StartError::Open(OpenError::Store(
                    crate::session::StoreError::Io {
                        action: "opening panicked for",
                        path: PathBuf::new(),
                        source: std::io::Error::other(panic.to_string()),
                    },
                )))
            });
            let _ = myself.send_message(SupervisorMsg::Opened(Box::new(Opened {
                result: opened,
                origin,
                restarts,
            })));
        });
    }

    async fn opened(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        opened: Opened,
    ) {
        let Opened {
            result,
            origin,
            restarts,
        } = opened;
        state.opening -= 1;
        let (request, mut args, settled) = match result {
            Ok(found) if state.stopping.is_none() => found,
            Ok(_) => return answer(origin, Err(StartError::Stopping)),
            Err(error) => {
                let known = match &origin {
                    Origin::Restart { dir, project } | Origin::Retry { dir, project, .. } => {
                        Some((dir.clone(), project.clone()))
                    }
                    _ => None,
                };
                if let Some((dir, project)) = known {
                    let reason = format!("cannot open the session: {error}");
                    // Driven by another worker (a `samocode run` someone started while this
                    // daemon was down): listed as that worker's meanwhile, nobody told of a
                    // failure, and taken up once that worker lets go of it.
                    if let StartError::Open(OpenError::Store(crate::session::StoreError::Locked {
                        pid: Some(pid),
                        ..
                    })) = &error
                        && *pid != std::process::id()
                        && self.keep_parked
                        && matches!(origin, Origin::Restart { .. })
                    {
                        let free = state.registry.get(&dir).is_none_or(|e| e.actor.is_none());
                        if free
                            && state
                                .registry
                                .driven_elsewhere(dir.clone(), project.clone(), *pid)
                        {
                            tracing::info!(session = %dir.display(), %reason, "another worker drives the session (a `samocode run`); the daemon takes it up once that worker lets go");
                        }
                        myself
                            .send_after(LOOK_AGAIN, move || SupervisorMsg::Resume { dir, project });
                        return answer(origin, Err(error));
                    }
                    // It could not even be opened: it stays listed, broken, until a person's
                    // `resume` tries again.
                    self.broken(state, dir, project, reason);
                }
                return answer(origin, Err(error));
            }
        };
        let dir = args.store.dir().to_path_buf();
        let folder = args.store.name();
        let failing = args.fail.is_some();
        if self.keep_parked {
            self.spent(state, &dir, args.state.usage.cost_usd);
        }
        let done = matches!(settled, Some(Settled::Done { .. }));
        // Listed broken (it could not be opened), and opened now at its gate: the chat's
        // message of that gate was closed by the failure's notice, so the park is told again.
        let was_broken = state.registry.get(&dir).is_some_and(|entry| {
            entry.actor.is_none()
                && matches!(&entry.settled, Some(failed @ Settled::Failed { .. }) if Some(failed) != settled.as_ref())
        });
        if was_broken && settled.is_some() && !failing {
            args.announce = true;
        }
        // Parked by the open's take-over of a dead worker's verdict, and not told yet: its
        // actor tells people (then a `run` lets it go; the daemon keeps it, done or not).
        let untold = args.announce;
        if !failing && !untold && settled.is_some() && (!self.keep_parked || done) {
            // Nothing for a worker to do: the lock goes with `args`.
            drop(args);
            if self.keep_parked
                && let Some(settled) = settled.clone()
            {
                state.registry.parked_without_actor(
                    dir.clone(),
                    request.project.file.clone(),
                    settled,
                );
            }
            return answer(
                origin,
                Ok(Started {
                    dir,
                    folder,
                    settled,
                }),
            );
        }
        // Driven, it keeps its lock open: one file more, which must fit in the limit beside the
        // agents (a daemon restarted with more sessions than its limit holds drives those that
        // fit; the others wait, shown broken with why, for a higher limit and a `resume`).
        if let Err(problem) = state.fits(1, state.registry.max_parallel()) {
            drop(args);
            let reason = format!("cannot open the session: {problem}");
            state.registry.parked_without_actor(
                dir.clone(),
                request.project.file.clone(),
                Settled::Failed {
                    reason: reason.clone(),
                },
            );
            self.tell(state, &dir, reason.clone());
            return answer(
                origin,
                Err(StartError::Open(OpenError::Store(
                    crate::session::StoreError::Io {
                        action: "cannot drive",
                        path: dir,
                        source: std::io::Error::other(problem),
                    },
                ))),
            );
        }
        let actor = SessionActor {
            project: request.project.clone(),
            agent: self.agent.clone(),
            retry: self.retry.clone(),
            supervisor: myself.get_derived(),
            notifier: state.notices.clone(),
            stop_when_parked: !self.keep_parked,
            launcher: self.launcher.clone(),
            budgets: self.budgets.clone(),
            failpoints: self.failpoints.clone(),
            tells: self.sink.is_some(),
        };
        match Actor::spawn_linked(None, actor, *args, myself.get_cell()).await {
            Ok((session, _)) => {
                let parked = settled.clone().filter(|_| !failing);
                let runnable = parked.is_none();
                // An actor of the path before (its folder deleted and made again while it
                // ran) lets go of it, and its agent, now that another holds the new folder.
                if let Some(before) = state.registry.get(&dir).and_then(|e| e.actor.clone()) {
                    let _ = before.send_message(SessionMsg::Replaced);
                    // Its slot is not the new actor's, nor freed at its end (see `actor_gone`).
                    state.registry.release_slot(&dir);
                }
                state.registry.driven(
                    dir.clone(),
                    request.project.file.clone(),
                    session,
                    parked,
                    restarts,
                );
                if let Some(watch) = &mut state.watch {
                    update_watch(watch, &state.registry, &dir);
                }
                if let Origin::Retry { command, reply, .. } = origin {
                    // A `resume` of a session that could not be opened: opened now and runnable,
                    // it is resumed by that, and told so (its files may still say it runs, so
                    // the gate would answer "already running" to a session that goes on).
                    if matches!(command.command, PersonCommand::Resume) && runnable {
                        // The notice that it could not be opened loses its Resume button.
                        let at = jiff::Zoned::now().strftime("%H:%M").to_string();
                        let line = match &command.by {
                            Some(by) => format!("resumed {by} {at}"),
                            None => format!("resumed {at}"),
                        };
                        let _ = state.notifier.send_message(NotifierMsg::Deliver {
                            event: SessionEvent::Unparked {
                                session: folder.clone(),
                                line,
                            },
                            told: None,
                            from: Some(dir.clone()),
                        });
                        let _ = reply.send(Response::Done {
                            message: format!("{folder} opened again and resumed"),
                        });
                        return;
                    }
                    // Opened again at a gate: there is nothing to resume, and the gate's own
                    // refusal would read as if nothing had been done.
                    if matches!(command.command, PersonCommand::Resume)
                        && let Some(Settled::Waiting { wait_for }) = &settled
                    {
                        let _ = reply.send(Response::Done {
                            message: format!(
                                "{folder} opened again; it waits for {}",
                                wait_for.to_string().replace('_', " ")
                            ),
                        });
                        return;
                    }
                    // Finished (its end told again, after its failure's notice): no
                    // command applies, and its actor, stopping once it has told, would never
                    // answer ("the session stopped before it answered").
                    if done {
                        let _ = reply.send(Response::error(
                            crate::protocol::gate::GateError::Finished(folder).to_string(),
                            2,
                        ));
                        return;
                    }
                    self.forward_person(state, dir, command, reply);
                    return;
                }
                // A `run` of a session parked untold waits while its actor tells people.
                let settled = settled.filter(|_| self.keep_parked || !untold);
                answer(
                    origin,
                    Ok(Started {
                        dir,
                        folder,
                        settled,
                    }),
                );
            }
            Err(error) => {
                let error = StartError::Open(OpenError::Store(crate::session::StoreError::Io {
                    action: "cannot start the session actor for",
                    path: dir,
                    source: std::io::Error::other(error.to_string()),
                }));
                answer(origin, Err(error));
            }
        }
    }

    fn control(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        request: Request,
        reply: RpcReplyPort<Response>,
    ) {
        if self.failpoints.iter().any(|f| f == "supervisor-panic")
            && matches!(request, Request::Status)
        {
            panic!("failpoint supervisor-panic: the supervisor fails on a status request");
        }
        let response = match request {
            Request::Start {
                project,
                session,
                dive,
                task,
                budget,
            } => {
                if !project.is_absolute() {
                    Response::error(
                        format!(
                            "the project file {} must be an absolute path (the daemon may be restarted from another directory)",
                            project.display()
                        ),
                        2,
                    )
                } else if state.stopping.is_some() {
                    Response::error(StartError::Stopping.to_string(), 1)
                } else if let Err(problem) = state.fits(1, state.registry.max_parallel()) {
                    Response::error(
                        format!(
                            "the daemon cannot take another session: {problem}, or lower its cap on agents at once with `samocode parallel N`"
                        ),
                        1,
                    )
                } else {
                    self.open_in_background(
                        myself,
                        state,
                        ToOpen::Project {
                            file: project,
                            session,
                            dive,
                            task,
                            budget,
                        },
                        Origin::Control(reply),
                        Vec::new(),
                        None,
                    );
                    return;
                }
            }
            Request::Person { dir, command, by } => {
                return self.person(
                    myself,
                    state,
                    dir,
                    Order {
                        command,
                        by,
                        park: None,
                    },
                    reply,
                );
            }
            Request::Named {
                session,
                command,
                by,
                park,
            } => match state.registry.named(&session) {
                Ok(dir) => {
                    let order = Order { command, by, park };
                    return self.person(myself, state, dir, order, reply);
                }
                Err(message) => Response::error(message, 2),
            },
            Request::Status => Response::Sessions {
                sessions: state.registry.owned(),
                max_parallel: state.registry.max_parallel(),
                running: state.registry.held(),
                fleet: Some(crate::control::FleetFigures {
                    cost_usd: state.fleet.spent(),
                    max_cost_usd: state.fleet.limit(),
                    held: state.fleet.holds(),
                }),
                broken: state.registry.broken(),
                budget_defaults: (!self.budgets.defaults.is_empty())
                    .then(|| Box::new(self.budgets.defaults)),
            },
            Request::RaiseFleetBudget { cost_usd } => match state.fleet.raise(cost_usd) {
                Ok(message) => {
                    state.registry.set_hold(state.fleet.holds());
                    Response::Done { message }
                }
                Err(message) => Response::error(message, 2),
            },
            Request::Parallel { max } => {
                if let Some(limit) = state.open_files
                    && (1..=1000).contains(&max)
                    && let Err(problem) = state.fits(0, max)
                {
                    let most = crate::open_files::most_agents(limit, state.sessions_held());
                    Response::error(
                        format!("parallel {max}: {problem}; at most {most} fit now"),
                        2,
                    )
                } else if (1..=1000).contains(&max) {
                    state.registry.set_max_parallel(max);
                    Response::Done {
                        message: format!("at most {max} agents run at once now"),
                    }
                } else {
                    Response::error(
                        format!(
                            "parallel {max} is out of range: give a whole number from 1 to 1000"
                        ),
                        2,
                    )
                }
            }
            // The control socket answers it from the dashboard's handle; it never comes here.
            Request::Dashboard => Response::error(
                "the dashboard is asked through the control socket".into(),
                2,
            ),
        };
        let _ = reply.send(response);
    }

    /// A person's command for the session in `dir`.
    fn person(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        dir: PathBuf,
        command: Order,
        reply: RpcReplyPort<Response>,
    ) {
        // The folder as the daemon knows it, whichever way the command spelt its path.
        let known = state.registry.key_of(&dir);
        if let Some(old) = known.as_ref().filter(|old| **old != dir)
            && std::fs::symlink_metadata(old).is_err()
            && state.stopping.is_none()
        {
            return self.moved(myself, state, old.clone(), dir, command, reply);
        }
        let dir = known.unwrap_or(dir);
        match state.registry.get(&dir) {
            Some(Entry { actor: Some(_), .. }) => self.forward_person(state, dir, command, reply),
            Some(_) if state.stopping.is_none() && state.reopening.contains_key(&dir) => {
                if let Some(waiting) = state.reopening.get_mut(&dir) {
                    waiting.push((command, reply));
                }
            }
            Some(entry) if state.stopping.is_none() => {
                // Not driven now (finished, or it could not be opened): open it again, then
                // hand it the command; a person's `resume` after fixing the files lands here.
                let project = entry.project.clone();
                state.reopening.insert(dir.clone(), Vec::new());
                self.open_in_background(
                    myself,
                    state,
                    ToOpen::Project {
                        file: project.clone(),
                        session: folder_of(&dir),
                        dive: None,
                        task: None,
                        budget: Budget::default(),
                    },
                    Origin::Retry {
                        dir,
                        project,
                        command,
                        reply,
                    },
                    Vec::new(),
                    None,
                );
            }
            _ => {
                let _ = reply.send(Response::error(
                    format!(
                        "{NOT_DRIVEN} {}; `samocode start` hands it over",
                        dir.display()
                    ),
                    2,
                ));
            }
        }
    }

    /// A person's command for a session whose folder was renamed (from `old` to `new`) while
    /// the daemon held it: its actor, whose files are gone from under it, lets go; the session
    /// opens again at its new path, listed there, and gets the command. (Nothing reached it by
    /// either name until the daemon restarted.) One whose attempt runs is left to end it.
    fn moved(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        old: PathBuf,
        new: PathBuf,
        command: Order,
        reply: RpcReplyPort<Response>,
    ) {
        let Some(entry) = state.registry.get(&old) else {
            return;
        };
        match (&entry.actor, &entry.settled) {
            (Some(_), None) => {
                let _ = reply.send(Response::error(
                    format!(
                        "session {}'s folder was renamed (from {}) while its attempt runs: give the command again once the attempt has ended",
                        new.display(),
                        old.display()
                    ),
                    12,
                ));
            }
            (Some(actor), Some(_)) => {
                tracing::info!(from = %old.display(), to = %new.display(), "a session's folder was renamed while the daemon held it: it is opened again at its new path");
                state.moving.insert(old, new.clone());
                state
                    .reopening
                    .entry(new)
                    .or_default()
                    .push((command, reply));
                actor.stop(Some(MOVED.into()));
            }
            (None, _) => {
                tracing::info!(from = %old.display(), to = %new.display(), "a session's folder was renamed while the daemon listed it: it is opened again at its new path");
                state
                    .reopening
                    .entry(new.clone())
                    .or_default()
                    .push((command, reply));
                self.open_moved(myself, state, &old, new);
            }
        }
    }

    /// Lists the session of the renamed folder `old` at `new` (the owned list, its name) and
    /// opens it there; the commands waiting for `new` follow once it is open.
    fn open_moved(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        old: &std::path::Path,
        new: PathBuf,
    ) {
        let Some(project) = state.registry.get(old).map(|entry| entry.project.clone()) else {
            return;
        };
        state.registry.forget(old);
        if let Some(watch) = &mut state.watch {
            watch.unwatch(old);
        }
        // Before the session's next event: a close under its new name finds the message its
        // notices left open under the old one.
        let renamed = NotifierMsg::Renamed {
            from: folder_of(old),
            to: folder_of(&new),
            old: old.to_path_buf(),
            dir: new.clone(),
        };
        // The buttons of its notices from before carry the old name.
        state.registry.alias(folder_of(old), new.clone());
        if state.notifier.send_message(renamed).is_err() {
            tracing::warn!(dir = %new.display(), "the notifier is gone; the renamed session's open message keeps its buttons");
        }
        {
            let mut names = lock_names(&state.names);
            if names.get(&folder_of(old)).is_some_and(|held| held == old) {
                names.remove(&folder_of(old));
            }
        }
        // Listed at its new path before it opens: a crash meanwhile resumes it there (the
        // old path, gone, is forgotten at the next start).
        if let Some(state_dir) = &self.state_dir {
            let entry = OwnedSession {
                dir: new.clone(),
                project: project.clone(),
            };
            if let Err(error) = owned::append(state_dir, &entry) {
                tracing::error!(%error, dir = %new.display(), "cannot list the renamed session's new path; the daemon drives it until it stops, and not after");
            }
        }
        self.open_in_background(
            myself,
            state,
            ToOpen::Project {
                file: project.clone(),
                session: folder_of(&new),
                dive: None,
                task: None,
                budget: Budget::default(),
            },
            Origin::Restart { dir: new, project },
            Vec::new(),
            None,
        );
    }

    /// Sends a command to a driven session from a task, so this mailbox never waits on it.
    fn forward_person(
        &self,
        state: &SupervisorState,
        dir: PathBuf,
        order: Order,
        reply: RpcReplyPort<Response>,
    ) {
        let Some(actor) = state.registry.get(&dir).and_then(|e| e.actor.clone()) else {
            let _ = reply.send(Response::error("the session is not running".into(), 1));
            return;
        };
        tokio::spawn(async move {
            let result = actor
                .call(
                    |reply| SessionMsg::Person {
                        command: order.command,
                        by: order.by,
                        park: order.park,
                        reply,
                    },
                    Some(PERSON_TIMEOUT),
                )
                .await;
            let response = match result {
                Ok(ractor::rpc::CallResult::Success(Ok(message))) => Response::Done { message },
                Ok(ractor::rpc::CallResult::Success(Err((message, code)))) => {
                    Response::error(message, code)
                }
                Ok(ractor::rpc::CallResult::Timeout) => Response::error(
                    format!(
                        "the session did not answer within {} (it may be making its worktree); the command waits in its queue and is applied when it answers, so do not send it again: `samocode status` shows where things stand",
                        humantime::format_duration(PERSON_TIMEOUT)
                    ),
                    1,
                ),
                _ => Response::error("the session stopped before it answered".into(), 1),
            };
            let _ = reply.send(response);
        });
    }

    fn session_report(&self, state: &mut SupervisorState, report: SessionReport) {
        match report {
            SessionReport::Settled { dir, settled } => {
                state.registry.settled(&dir, settled);
                if let Some(watch) = &mut state.watch {
                    update_watch(watch, &state.registry, &dir);
                }
                // Under `run` the actor stops and lets go of the lock first; watchers hear of
                // it then, so they can act on the files at once. Its termination may have been
                // handled already: supervision events overtake ordinary messages.
                let gone = state.registry.get(&dir).is_some_and(|e| e.actor.is_none());
                if self.keep_parked || gone {
                    state.registry.tell_watchers(&dir);
                }
            }
            SessionReport::RequestSlot { dir } => state.registry.request_slot(&dir),
            SessionReport::ReleaseSlot { dir } => state.registry.release_slot(&dir),
            SessionReport::Spent { dir, cost_usd } => {
                if self.keep_parked {
                    self.spent(state, &dir, cost_usd);
                }
            }
        }
    }

    /// A session's cost in all, against the fleet budget: once the sessions together reach
    /// it, no slot is granted and people are told, once.
    fn spent(&self, state: &mut SupervisorState, dir: &std::path::Path, cost_usd: f64) {
        state.fleet.record(dir, cost_usd);
        state.registry.set_hold(state.fleet.holds());
        if let Some((spent, limit)) = state.fleet.news() {
            tracing::warn!(
                spent,
                limit,
                "the fleet budget is reached; new attempts wait"
            );
            let _ = state.notifier.send_message(NotifierMsg::Deliver {
                event: SessionEvent::FleetBudgetReached {
                    spent_usd: spent,
                    limit_usd: limit,
                },
                told: None,
                from: None,
            });
        }
    }

    fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        dir: PathBuf,
        error: String,
    ) {
        let Some(entry) = state.registry.get(&dir) else {
            return;
        };
        let now = Instant::now();
        let mut restarts: Vec<Instant> = entry
            .restarts
            .iter()
            .copied()
            .filter(|t| now.duration_since(*t) < RESTART_WINDOW)
            .collect();
        let project = entry.project.clone();
        if restarts.len() > MAX_RESTARTS {
            // The actor opened to mark the session failed ended too: opening it again would
            // only fail again, as fast as it opens. It stays listed, broken, until a person's
            // `resume` tries again.
            let reason = format!(
                "the session actor failed {} times within {} and could not record it; the last: {error}",
                restarts.len() + 1,
                humantime::format_duration(RESTART_WINDOW)
            );
            self.broken(state, dir, project, reason);
            return;
        }
        restarts.push(now);
        state.reopening.entry(dir.clone()).or_default();
        let fail = (restarts.len() > MAX_RESTARTS).then(|| {
            format!(
                "the session actor failed {} times within {}; the last: {error}",
                restarts.len(),
                humantime::format_duration(RESTART_WINDOW)
            )
        });
        self.open_in_background(
            myself,
            state,
            ToOpen::Project {
                file: project.clone(),
                session: folder_of(&dir),
                dive: None,
                task: None,
                budget: Budget::default(),
            },
            Origin::Restart { dir, project },
            restarts,
            fail,
        );
    }

    /// Leaves a session listed, failed with `reason` and without an actor, until a person's
    /// `resume` tries again; tells people and those waiting on it.
    fn broken(&self, state: &mut SupervisorState, dir: PathBuf, project: PathBuf, reason: String) {
        // An actor drives it (opened meanwhile by a person's command): an open that failed on
        // its own lock says nothing about it.
        if state
            .registry
            .get(&dir)
            .is_some_and(|entry| entry.actor.is_some())
        {
            return;
        }
        // Told already, for the same reason: people are not told again, only those waiting.
        let told = state.registry.get(&dir).is_some_and(|entry| {
            entry.actor.is_none()
                && matches!(&entry.settled, Some(Settled::Failed { reason: was }) if *was == reason)
        });
        if told {
            state.registry.tell_watchers(&dir);
            return;
        }
        state.registry.parked_without_actor(
            dir.clone(),
            project,
            Settled::Failed {
                reason: reason.clone(),
            },
        );
        self.tell(state, &dir, reason);
    }

    /// Tells people about a session no actor can speak for, and those waiting on it.
    fn tell(&self, state: &mut SupervisorState, dir: &std::path::Path, reason: String) {
        let session = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let phase = None;
        let _ = state.notifier.send_message(NotifierMsg::Deliver {
            event: SessionEvent::Broken {
                session,
                phase,
                reason,
            },
            told: None,
            from: Some(dir.to_path_buf()),
        });
        state.registry.tell_watchers(dir);
    }
}

/// How long a stopping worker waits for its notices to go out.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How long it then waits for a send under way to end: Telegram's own limit on a send, and a
/// little more.
const SETTLE_LIMIT: Duration = Duration::from_secs(65);
/// The most a stopping worker spends on its notices once its sessions are gone: a caller
/// waiting for the supervisor's shutdown gives it this on top of the sessions' own stop.
pub const NOTICES_AT_STOP: Duration = FLUSH_LIMIT.saturating_add(SETTLE_LIMIT);

/// Every session is gone: the notices still waiting get a little time to go out (what does
/// not stays in the outbox for the next start), then the supervisor stops.
fn finish_shutdown(
    myself: &ActorRef<SupervisorMsg>,
    state: &SupervisorState,
    reply: RpcReplyPort<()>,
) {
    let notifier = state.notifier.clone();
    let myself = myself.clone();
    tokio::spawn(async move {
        let flushed = notifier
            .call(|reply| NotifierMsg::Flush { reply }, Some(FLUSH_LIMIT))
            .await;
        if !matches!(flushed, Ok(ractor::rpc::CallResult::Success(()))) {
            // What is left waits in the outbox for the next start; a send under way is let
            // end, so that its record is kept.
            let _ = notifier
                .call(|reply| NotifierMsg::Settle { reply }, Some(SETTLE_LIMIT))
                .await;
        }
        let _ = reply.send(());
        myself.stop(Some("shutdown".into()));
    });
}

fn lock_names(
    names: &std::sync::Mutex<HashMap<String, PathBuf>>,
) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
    names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Claims the folder name of the session in `dir` for this daemon: refused for a new
/// start when another folder of that name (another project's) holds it; a reopening claims it
/// whatever holds it, and says so in the log (two such sessions from an earlier build). The
/// name it newly claimed, if any.
fn claim_name(
    names: &std::sync::Mutex<HashMap<String, PathBuf>>,
    dir: &std::path::Path,
    new_start: bool,
) -> Result<Option<String>, StartError> {
    let name = folder_of(dir);
    let mut names = lock_names(names);
    match names.get(&name) {
        Some(held) if *held == dir => Ok(None),
        // Its folder gone (its project moved, or a disk not mounted): the name is not held
        // against a folder that is there.
        Some(held) if new_start && !held.exists() => {
            tracing::warn!(session = %name, gone = %held.display(), now = %dir.display(), "a session of this name the daemon owns has no folder now; the name goes to the one started");
            names.insert(name.clone(), dir.to_path_buf());
            Ok(Some(name))
        }
        Some(held) if new_start => Err(StartError::Open(OpenError::NameTaken {
            folder: name,
            other: held.clone(),
            exists: dir.exists(),
        })),
        Some(held) => {
            tracing::warn!(
                session = %name,
                "two sessions this daemon owns are called {name} ({} and {}): the dashboard and Telegram cannot tell them apart; act on them with the command line, from each project's directory",
                held.display(),
                dir.display()
            );
            Ok(None)
        }
        None => {
            names.insert(name.clone(), dir.to_path_buf());
            Ok(Some(name))
        }
    }
}

fn folder_of(dir: &std::path::Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Watches a session's folder while it waits for answers, and only then. A new watch is
/// followed by one look, for answers written before it began.
fn update_watch(watch: &mut watch::FolderWatch, registry: &Registry, dir: &std::path::Path) {
    match registry.waiting_for_answers(dir) {
        Some(actor) => {
            if watch.watch(dir) {
                let _ = actor.send_message(SessionMsg::CheckAnswers);
            }
        }
        None => watch.unwatch(dir),
    }
}

fn answer(origin: Origin, result: Result<Started, StartError>) {
    match origin {
        Origin::Caller(reply) => {
            let _ = reply.send(result);
        }
        Origin::Control(reply) => {
            let _ = reply.send(match result {
                // Its lock is this daemon's own: the session is one it drives already (the
                // message named the daemon's pid as "another worker").
                Err(StartError::Open(OpenError::Store(crate::session::StoreError::Locked {
                    dir,
                    pid: Some(pid),
                }))) if pid == std::process::id() => Response::error(
                    format!(
                        "this daemon drives {} already; `samocode status {}` shows it, and `samocode resume {} --raise-budget WORD=VALUE` changes its budget",
                        dir.display(),
                        folder_of(&dir),
                        folder_of(&dir),
                    ),
                    2,
                ),
                Ok(started) => Response::Done {
                    message: match started.settled {
                        None => format!("{} started", started.folder),
                        Some(settled) => {
                            format!("{} is parked: {}", started.folder, settled.describe())
                        }
                    },
                },
                Err(error) => Response::error(error.to_string(), error.exit_code()),
            });
        }
        Origin::Retry { reply, .. } => {
            let _ = reply.send(match result {
                Err(error) => Response::error(error.to_string(), error.exit_code()),
                // Opened with nothing to drive: a finished session, where no command applies
                // (the dropped reply read "the daemon is shutting down").
                Ok(started) => Response::error(
                    crate::protocol::gate::GateError::Finished(started.folder).to_string(),
                    2,
                ),
            });
        }
        Origin::Restart { .. } => {}
    }
}

/// The exit code the CLI uses for an error opening a session.
pub fn open_error_code(error: &OpenError) -> u8 {
    match error {
        OpenError::Store(crate::session::StoreError::Locked { .. }) => 12,
        OpenError::Store(crate::session::StoreError::Io { .. }) => 1,
        _ => 2,
    }
}

/// Reads the daemon's list of owned sessions (compacting the file).
pub fn load_owned(state_dir: &std::path::Path) -> std::io::Result<owned::Listed> {
    owned::load_and_compact(state_dir)
}
