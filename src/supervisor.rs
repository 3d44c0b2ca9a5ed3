//! SupervisorActor: the root of the actor tree.
//!
//! Owns the registry of running sessions and who waits on them. Accepts `StartSession` and
//! `Watch` from the command layer (`samocode run` today; the control socket later) and
//! `SessionSettled` from its SessionActors. Links the NotifierActor and one SessionActor per
//! session. A SessionActor that fails is restarted from its files, at most
//! [`MAX_RESTARTS`] times within [`RESTART_WINDOW`]; then the session is marked failed and a
//! person is told. Overrides ractor's default of stopping when a child stops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::config::{AgentSettings, Project, RetryPolicy};
use crate::notify::{NotifierActor, NotifierMsg, SessionEvent};
use crate::session::actor::{
    OpenError, Opened, SessionActor, SessionMsg, Settled, StartRequest, open,
};

/// Restarts of one session allowed within [`RESTART_WINDOW`] before it is marked failed.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Messages of the SupervisorActor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// From the command layer: drive this session. Replies with its folder name and, when it
    /// is parked or finished, how it stands.
    StartSession {
        request: StartRequest,
        reply: RpcReplyPort<Result<(String, Option<Settled>), OpenError>>,
    },
    /// From the command layer: reply once the session settles (at once if it already has).
    Watch {
        folder: String,
        reply: RpcReplyPort<Settled>,
    },
    /// From a SessionActor: it parked or finished.
    SessionSettled { folder: String, settled: Settled },
}

/// The configuration shared by every session.
pub struct SupervisorActor {
    pub project: Project,
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
}

struct Running {
    actor: ActorRef<SessionMsg>,
    request: StartRequest,
    restarts: Vec<Instant>,
}

pub struct SupervisorState {
    notifier: ActorRef<NotifierMsg>,
    sessions: HashMap<String, Running>,
    settled: HashMap<String, Settled>,
    watchers: HashMap<String, Vec<RpcReplyPort<Settled>>>,
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        _: (),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let (notifier, _) = Actor::spawn_linked(None, NotifierActor, (), myself.get_cell()).await?;
        Ok(SupervisorState {
            notifier,
            sessions: HashMap::new(),
            settled: HashMap::new(),
            watchers: HashMap::new(),
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
            SupervisorMsg::Watch { folder, reply } => {
                let finished = !state.sessions.contains_key(&folder);
                match state.settled.get(&folder).filter(|_| finished) {
                    Some(settled) => {
                        let _ = reply.send(settled.clone());
                    }
                    None => state.watchers.entry(folder).or_default().push(reply),
                }
            }
            SupervisorMsg::SessionSettled { folder, settled } => {
                // Watchers hear of it once the actor has stopped and let go of the lock, so
                // that they can act on the files at once. Supervision events overtake ordinary
                // messages, so the actor may already be gone when this arrives.
                state.settled.insert(folder.clone(), settled);
                if !state.sessions.contains_key(&folder) {
                    tell_watchers(state, &folder);
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
                if let Some(folder) = folder_of(state, &who) {
                    tracing::error!(session = %folder, %error, "session actor failed");
                    let running = state.sessions.remove(&folder).expect("found above");
                    self.restart(&myself, state, folder, running).await;
                }
            }
            SupervisionEvent::ActorTerminated(who, _, _) => {
                if let Some(folder) = folder_of(state, &who) {
                    state.sessions.remove(&folder);
                    tell_watchers(state, &folder);
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
        // Sessions stop their agents in their own post_stop; wait for them so that no process
        // group and no lock outlives the supervisor.
        myself
            .stop_children_and_wait(
                Some("supervisor stopping".into()),
                Some(Duration::from_secs(30)),
            )
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
    ) -> Result<(String, Option<Settled>), OpenError> {
        match open(&self.project, &request)? {
            Opened::Parked { folder, settled } => {
                state.settled.insert(folder.clone(), settled.clone());
                Ok((folder, Some(settled)))
            }
            Opened::Runnable(args) => {
                let folder = args.store.name();
                let actor = SessionActor {
                    project: self.project.clone(),
                    agent: self.agent.clone(),
                    retry: self.retry.clone(),
                    supervisor: myself.clone(),
                    notifier: state.notifier.clone(),
                };
                state.settled.remove(&folder);
                let (session, _) = Actor::spawn_linked(None, actor, *args, myself.get_cell())
                    .await
                    .map_err(|e| {
                        OpenError::Store(crate::session::StoreError::Io {
                            action: "cannot start the session actor for",
                            path: self.project.sessions.join(&folder),
                            source: std::io::Error::other(e.to_string()),
                        })
                    })?;
                state.sessions.insert(
                    folder.clone(),
                    Running {
                        actor: session,
                        request,
                        restarts,
                    },
                );
                Ok((folder, None))
            }
        }
    }

    async fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        folder: String,
        running: Running,
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
                "the session actor failed {} times within {}",
                restarts.len(),
                humantime::format_duration(RESTART_WINDOW)
            );
            self.mark_failed(state, &folder, &reason);
            return;
        }
        let mut request = running.request;
        request.name = folder.clone();
        // The failed actor's state, and with it the lock, is dropped before this event arrives.
        if let Err(error) = self.start(myself, state, request, restarts).await {
            self.mark_failed(state, &folder, &format!("restart failed: {error}"));
        }
    }

    fn mark_failed(&self, state: &mut SupervisorState, folder: &str, reason: &str) {
        let dir = self.project.sessions.join(folder);
        if let Ok(store) = crate::session::SessionFolder::new(&dir).lock()
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
        let _ = state
            .notifier
            .send_message(NotifierMsg::Deliver(SessionEvent::Settled {
                session: folder.to_string(),
                phase: crate::protocol::Phase::Init,
                settled: settled.clone(),
            }));
        for watcher in state.watchers.remove(folder).unwrap_or_default() {
            let _ = watcher.send(settled.clone());
        }
        state.settled.insert(folder.to_string(), settled);
    }
}

/// Answers everyone waiting on `folder`, if it has settled.
fn tell_watchers(state: &mut SupervisorState, folder: &str) {
    if let Some(settled) = state.settled.get(folder).cloned() {
        for watcher in state.watchers.remove(folder).unwrap_or_default() {
            let _ = watcher.send(settled.clone());
        }
    }
}

fn folder_of(state: &SupervisorState, who: &ActorCell) -> Option<String> {
    state
        .sessions
        .iter()
        .find(|(_, r)| r.actor.get_id() == who.get_id())
        .map(|(folder, _)| folder.clone())
}
