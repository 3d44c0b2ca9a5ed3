//! SupervisorActor: the root of the actor tree.
//!
//! Owns the registry of sessions (by folder), who waits on them, and the concurrency limit:
//! a SessionActor asks for a slot before each agent attempt (`RequestSlot`), waits in order in
//! state `queued` while all slots are taken, and gives it back when the attempt ends.
//!
//! Accepts `StartSession`, `Watch` and `Control` from the command layer (`samocode run`, the
//! demo, the control socket) and `SessionSettled`, `RequestSlot`, `ReleaseSlot` from its
//! sessions; `CheckAnswers` from its own interval. Links the NotifierActor and one SessionActor
//! per session. Under the daemon (`keep_parked`) a parked session keeps its actor, which holds
//! the session lock, no process and no timer; a person's command wakes it. A SessionActor that
//! fails is restarted from its files, at most [`MAX_RESTARTS`] times within
//! [`RESTART_WINDOW`]; then the session is marked failed and a person is told. Overrides
//! ractor's default of stopping when a child stops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};

use crate::config::{AgentSettings, RetryPolicy};
use crate::control::{Request, Response};
use crate::notify::{NotifierActor, NotifierMsg, SessionEvent};
use crate::session::actor::{SessionActor, SessionMsg};
use crate::session::open::{OpenError, Settled, StartRequest, open};
use crate::session::person::PersonCommand;

/// Restarts of one session allowed within [`RESTART_WINDOW`] before it is marked failed.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// How often parked sessions waiting for answers look at `_qa.md` (edited by hand). One timer
/// for the whole daemon, so that a parked session itself holds none.
const ANSWER_CHECK: Duration = Duration::from_secs(2);

/// A session as the daemon lists it, and as it is saved in the state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedSession {
    pub dir: PathBuf,
    /// The project file the session belongs to.
    pub project: PathBuf,
}

/// What a start request found.
#[derive(Debug, Clone)]
pub struct Started {
    pub dir: PathBuf,
    pub folder: String,
    /// How it stands when it does not need the worker now.
    pub settled: Option<Settled>,
}

/// Messages of the SupervisorActor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// From the command layer: drive this session.
    StartSession {
        request: StartRequest,
        reply: RpcReplyPort<Result<Started, OpenError>>,
    },
    /// From the command layer: reply once the session settles (at once if it already has).
    Watch {
        dir: PathBuf,
        reply: RpcReplyPort<Settled>,
    },
    /// From the control socket or the demo: one request of the control protocol.
    Control {
        request: Request,
        reply: RpcReplyPort<Response>,
    },
    /// From a SessionActor: it parked or finished.
    SessionSettled { dir: PathBuf, settled: Settled },
    /// From a SessionActor: it wants to start an agent attempt.
    RequestSlot { dir: PathBuf },
    /// From a SessionActor: its attempt is over.
    ReleaseSlot { dir: PathBuf },
    /// From its own interval: wake sessions whose `_qa.md` was answered by hand.
    CheckAnswers,
}

/// The configuration shared by every session.
pub struct SupervisorActor {
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
    /// Keep parked sessions in place (the daemon) rather than letting them go (`run`).
    pub keep_parked: bool,
    /// Where attempts record their process groups, for recovery after a crash (the daemon).
    pub agents_dir: Option<PathBuf>,
    /// Where the list of owned sessions is saved (the daemon).
    pub owned_file: Option<PathBuf>,
    /// Where the notifier also tells people about sessions.
    pub telegram: Option<crate::bot::Telegram>,
}

/// Startup input.
pub struct SupervisorArgs {
    /// Agents allowed to run at once.
    pub max_parallel: usize,
}

struct Running {
    actor: ActorRef<SessionMsg>,
    request: StartRequest,
    restarts: Vec<Instant>,
}

pub struct SupervisorState {
    notifier: ActorRef<NotifierMsg>,
    sessions: HashMap<PathBuf, Running>,
    /// Sessions this daemon drove to done (folder -> project file): listed, not resumed.
    finished: HashMap<PathBuf, PathBuf>,
    settled: HashMap<PathBuf, Settled>,
    watchers: HashMap<PathBuf, Vec<RpcReplyPort<Settled>>>,
    max_parallel: usize,
    running: HashSet<PathBuf>,
    queue: VecDeque<PathBuf>,
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
        let (notifier, _) = Actor::spawn_linked(
            None,
            NotifierActor,
            self.telegram.clone(),
            myself.get_cell(),
        )
        .await?;
        if self.keep_parked {
            myself.send_interval(ANSWER_CHECK, || SupervisorMsg::CheckAnswers);
        }
        Ok(SupervisorState {
            notifier,
            sessions: HashMap::new(),
            finished: HashMap::new(),
            settled: HashMap::new(),
            watchers: HashMap::new(),
            max_parallel: args.max_parallel.max(1),
            running: HashSet::new(),
            queue: VecDeque::new(),
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
                let result = self.start(&myself, state, request, Vec::new()).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Watch { dir, reply } => {
                let gone = !state.sessions.contains_key(&dir) || self.keep_parked;
                match state.settled.get(&dir).filter(|_| gone) {
                    Some(settled) => {
                        let _ = reply.send(settled.clone());
                    }
                    None => state.watchers.entry(dir).or_default().push(reply),
                }
            }
            SupervisorMsg::Control { request, reply } => {
                let response = self.control(&myself, state, request).await;
                let _ = reply.send(response);
            }
            SupervisorMsg::SessionSettled { dir, settled } => {
                let done = matches!(settled, Settled::Done { .. });
                state.settled.insert(dir.clone(), settled);
                // Under `run` the actor stops and lets go of the lock first; watchers hear of it
                // then, so they can act on the files at once. Supervision events overtake
                // ordinary messages, so the actor may already be gone when this arrives.
                if self.keep_parked || !state.sessions.contains_key(&dir) {
                    tell_watchers(state, &dir);
                }
                if done && self.keep_parked {
                    if let Some(running) = state.sessions.remove(&dir) {
                        running.actor.stop(Some("done".into()));
                        state
                            .finished
                            .insert(dir, running.request.project.file.clone());
                    }
                    self.save_owned(state);
                }
            }
            SupervisorMsg::RequestSlot { dir } => {
                if !state.running.contains(&dir) && !state.queue.contains(&dir) {
                    state.queue.push_back(dir);
                }
                grant_slots(state);
            }
            SupervisorMsg::ReleaseSlot { dir } => {
                state.running.remove(&dir);
                grant_slots(state);
            }
            SupervisorMsg::CheckAnswers => {
                for running in state.sessions.values() {
                    let _ = running.actor.send_message(SessionMsg::CheckAnswers);
                }
            }
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
        match event {
            SupervisionEvent::ActorFailed(who, error) => {
                if let Some(dir) = dir_of(state, &who) {
                    tracing::error!(session = %dir.display(), %error, "session actor failed");
                    let running = state.sessions.remove(&dir).expect("found above");
                    forget_slot(state, &dir);
                    self.restart(&myself, state, dir, running, error.to_string())
                        .await;
                }
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                if let Some(dir) = dir_of(state, &who) {
                    state.sessions.remove(&dir);
                    forget_slot(state, &dir);
                    tell_watchers(state, &dir);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        _state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Sessions stop their agents in their own post_stop (SIGTERM, grace, SIGKILL); wait for
        // them so that no process group and no lock outlives the supervisor.
        let grace = self.agent.kill_grace + Duration::from_secs(10);
        myself
            .stop_children_and_wait(Some("supervisor stopping".into()), Some(grace))
            .await;
        Ok(())
    }
}

impl SupervisorActor {
    async fn start(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        request: StartRequest,
        restarts: Vec<Instant>,
    ) -> Result<Started, OpenError> {
        if let Some(dir) = self.owned_dir(state, &request) {
            let settled = state.settled.get(&dir).cloned();
            let folder = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            return Ok(Started {
                dir,
                folder,
                settled,
            });
        }
        let (args, settled) = open(&request.project, &request)?;
        let dir = args.store.dir().to_path_buf();
        let folder = args.store.name();
        let done = matches!(settled, Some(Settled::Done { .. }));
        if settled.is_some() && (!self.keep_parked || done) {
            if done && self.keep_parked {
                state
                    .finished
                    .insert(dir.clone(), request.project.file.clone());
            }
            return Ok(Started {
                dir,
                folder,
                settled,
            });
        }
        state.finished.remove(&dir);
        let actor = SessionActor {
            project: request.project.clone(),
            agent: self.agent.clone(),
            retry: self.retry.clone(),
            supervisor: myself.clone(),
            notifier: state.notifier.clone(),
            stop_when_parked: !self.keep_parked,
            agents_dir: self.agents_dir.clone(),
        };
        match &settled {
            Some(s) => {
                state.settled.insert(dir.clone(), s.clone());
            }
            None => {
                state.settled.remove(&dir);
            }
        }
        let (session, _) = Actor::spawn_linked(None, actor, *args, myself.get_cell())
            .await
            .map_err(|e| {
                OpenError::Store(crate::session::StoreError::Io {
                    action: "cannot start the session actor for",
                    path: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        state.sessions.insert(
            dir.clone(),
            Running {
                actor: session,
                request,
                restarts,
            },
        );
        self.save_owned(state);
        Ok(Started {
            dir,
            folder,
            settled,
        })
    }

    /// The folder of a session this supervisor already drives, if the request names one.
    fn owned_dir(&self, state: &SupervisorState, request: &StartRequest) -> Option<PathBuf> {
        let sessions = &request.project.sessions;
        let exact = sessions.join(&request.name);
        state
            .sessions
            .keys()
            .find(|dir| {
                **dir == exact
                    || (dir.parent() == Some(sessions.as_path())
                        && crate::session::name::short_name(
                            &dir.file_name().unwrap_or_default().to_string_lossy(),
                        ) == request.name)
            })
            .cloned()
    }

    async fn control(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        request: Request,
    ) -> Response {
        match request {
            Request::Start {
                project,
                session,
                dive,
                task,
            } => {
                let project = match crate::config::load_project(&project) {
                    Ok(project) => project,
                    Err(error) => {
                        return Response::Error {
                            message: error.to_string(),
                            code: 2,
                        };
                    }
                };
                let request = StartRequest {
                    project,
                    name: session,
                    dive,
                    task,
                    once: false,
                };
                match self.start(myself, state, request, Vec::new()).await {
                    Ok(started) => Response::Done {
                        message: match started.settled {
                            None => format!("{} started", started.folder),
                            Some(settled) => {
                                format!("{} is parked: {}", started.folder, settled.describe())
                            }
                        },
                    },
                    Err(error) => Response::Error {
                        code: open_error_code(&error),
                        message: error.to_string(),
                    },
                }
            }
            Request::Person { dir, command } => self.person(state, dir, command).await,
            Request::Named { session, command } => {
                let matches: Vec<PathBuf> = state
                    .sessions
                    .keys()
                    .filter(|dir| {
                        let folder = dir.file_name().unwrap_or_default().to_string_lossy();
                        folder == session.as_str()
                            || crate::session::name::short_name(&folder) == session
                    })
                    .cloned()
                    .collect();
                match matches.as_slice() {
                    [dir] => self.person(state, dir.clone(), command).await,
                    [] => Response::Error {
                        message: format!("the daemon drives no session {session:?}"),
                        code: 2,
                    },
                    _ => Response::Error {
                        message: format!(
                            "{session:?} names several sessions; use the full folder name"
                        ),
                        code: 2,
                    },
                }
            }
            Request::Status => Response::Sessions {
                sessions: owned(state),
                max_parallel: state.max_parallel,
                running: state.running.len(),
            },
            Request::Parallel { max } => {
                state.max_parallel = max.max(1);
                grant_slots(state);
                Response::Done {
                    message: format!("at most {} agents run at once now", state.max_parallel),
                }
            }
            // The control socket answers it from the dashboard's handle; it never comes here.
            Request::Dashboard => Response::Error {
                message: "the dashboard is asked through the control socket".into(),
                code: 2,
            },
        }
    }

    async fn person(
        &self,
        state: &mut SupervisorState,
        dir: PathBuf,
        command: PersonCommand,
    ) -> Response {
        let Some(running) = state.sessions.get(&dir) else {
            return Response::Error {
                message: format!(
                    "the daemon does not drive {}; `samocode start` hands it over",
                    dir.display()
                ),
                code: 2,
            };
        };
        let result = running
            .actor
            .call(|reply| SessionMsg::Person { command, reply }, None)
            .await;
        match result {
            Ok(ractor::rpc::CallResult::Success(Ok(message))) => {
                state.settled.remove(&dir);
                Response::Done { message }
            }
            Ok(ractor::rpc::CallResult::Success(Err((message, code)))) => {
                Response::Error { message, code }
            }
            _ => Response::Error {
                message: "the session did not answer".into(),
                code: 1,
            },
        }
    }

    async fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        dir: PathBuf,
        running: Running,
        error: String,
    ) {
        let now = Instant::now();
        let mut restarts: Vec<Instant> = running
            .restarts
            .into_iter()
            .filter(|t| now.duration_since(*t) < RESTART_WINDOW)
            .collect();
        restarts.push(now);
        if restarts.len() > MAX_RESTARTS {
            let reason = format!(
                "the session actor failed {} times within {}; the last: {error}",
                restarts.len(),
                humantime::format_duration(RESTART_WINDOW)
            );
            self.mark_failed(state, &dir, &reason);
            return;
        }
        let mut request = running.request;
        request.name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        request.project.sessions = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(request.project.sessions);
        if let Err(error) = self.start(myself, state, request, restarts).await {
            self.mark_failed(state, &dir, &format!("restart failed: {error}"));
        }
    }

    fn mark_failed(&self, state: &mut SupervisorState, dir: &Path, reason: &str) {
        if let Ok(store) = crate::session::SessionFolder::new(dir).lock()
            && let Ok(mut session) = store.load_state()
        {
            session.status = crate::protocol::RunState::Failed {
                reason: reason.to_string(),
                at: jiff::Timestamp::now(),
            };
            let _ = store.save(&mut session);
        }
        let settled = Settled::Failed {
            reason: reason.to_string(),
        };
        let folder = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let _ = state
            .notifier
            .send_message(NotifierMsg::Deliver(SessionEvent::Settled {
                session: folder,
                phase: crate::protocol::Phase::Init,
                settled: settled.clone(),
            }));
        state.settled.insert(dir.to_path_buf(), settled);
        tell_watchers(state, dir);
        self.save_owned(state);
    }

    /// Saves the owned sessions, so that a restarted daemon resumes them.
    fn save_owned(&self, state: &SupervisorState) {
        let Some(file) = &self.owned_file else { return };
        let json = serde_json::to_vec_pretty(&owned(state)).expect("owned sessions serialize");
        if let Err(error) = crate::session::store::write_atomic(file, &json) {
            tracing::error!(%error, file = %file.display(), "cannot save the owned sessions");
        }
    }
}

/// Every session the daemon drives or drove to done.
fn owned(state: &SupervisorState) -> Vec<OwnedSession> {
    let mut list: Vec<OwnedSession> = state
        .sessions
        .iter()
        .map(|(dir, running)| OwnedSession {
            dir: dir.clone(),
            project: running.request.project.file.clone(),
        })
        .chain(state.finished.iter().map(|(dir, project)| OwnedSession {
            dir: dir.clone(),
            project: project.clone(),
        }))
        .collect();
    list.sort_by(|a, b| a.dir.cmp(&b.dir));
    list
}

/// Grants free slots to the sessions queued longest.
fn grant_slots(state: &mut SupervisorState) {
    while state.running.len() < state.max_parallel {
        let Some(dir) = state.queue.pop_front() else {
            break;
        };
        let Some(running) = state.sessions.get(&dir) else {
            continue;
        };
        if running.actor.send_message(SessionMsg::SlotGranted).is_ok() {
            state.running.insert(dir);
        }
    }
}

fn forget_slot(state: &mut SupervisorState, dir: &Path) {
    state.running.remove(dir);
    state.queue.retain(|d| d != dir);
    grant_slots(state);
}

/// Answers everyone waiting on `dir`, if it has settled.
fn tell_watchers(state: &mut SupervisorState, dir: &Path) {
    if let Some(settled) = state.settled.get(dir).cloned() {
        for watcher in state.watchers.remove(dir).unwrap_or_default() {
            let _ = watcher.send(settled.clone());
        }
    }
}

fn dir_of(state: &SupervisorState, who: &ActorCell) -> Option<PathBuf> {
    state
        .sessions
        .iter()
        .find(|(_, r)| r.actor.get_id() == who.get_id())
        .map(|(dir, _)| dir.clone())
}

/// The exit code the CLI uses for an error opening a session.
pub fn open_error_code(error: &OpenError) -> u8 {
    match error {
        OpenError::Store(crate::session::StoreError::Locked { .. }) => 12,
        OpenError::Store(crate::session::StoreError::Io { .. }) => 1,
        _ => 2,
    }
}
