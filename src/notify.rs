//! NotifierActor: tells people what their sessions do.
//!
//! Accepts `Deliver` from SessionActors and the supervisor. Delivers each event to every sink:
//! the log (always) and, when configured, a Telegram chat. A sink that fails is logged and
//! skipped; delivery never blocks a session. Links no children. It runs under a name, and
//! senders hold a [`NotifierHandle`] that looks it up by that name at each send, so a notifier
//! the supervisor restarted is reached without telling every session.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use std::sync::Arc;

use crate::protocol::Phase;
use crate::session::open::Settled;

/// Something that happened to a session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    AttemptStarted {
        session: String,
        phase: Phase,
        iteration: u32,
        attempt: u32,
    },
    AttemptFailed {
        session: String,
        attempt: u32,
        detail: String,
    },
    Settled {
        session: String,
        phase: Phase,
        settled: Settled,
    },
    /// The provider refused an attempt for a usage limit; the session runs again at `until`.
    UsageLimited {
        session: String,
        until: jiff::Timestamp,
    },
    /// The session could not be opened again after its actor ended; a person must look.
    Broken {
        session: String,
        phase: Option<Phase>,
        reason: String,
    },
}

impl SessionEvent {
    /// One line a person reads.
    pub fn headline(&self) -> String {
        match self {
            SessionEvent::AttemptStarted {
                session,
                phase,
                iteration,
                attempt,
            } => {
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("{session}: iteration {iteration}, {phase}{retry}")
            }
            SessionEvent::AttemptFailed {
                session,
                attempt,
                detail,
            } => format!("{session}: attempt {attempt} failed: {detail}"),
            SessionEvent::Broken {
                session,
                phase,
                reason,
            } => match phase {
                Some(phase) => format!("{session}: failed in {phase}: {reason}"),
                None => format!("{session}: failed: {reason}"),
            },
            SessionEvent::UsageLimited { session, until } => {
                format!("{session}: the provider's usage limit is reached; it resumes at {until}")
            }
            SessionEvent::Settled {
                session,
                phase,
                settled,
            } => match settled {
                Settled::Done { summary } => format!(
                    "{session}: done{}",
                    summary
                        .as_deref()
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ),
                Settled::Waiting { wait_for } => {
                    format!("{session}: waiting for {wait_for} in {phase}")
                }
                Settled::Blocked { reason } => format!("{session}: blocked in {phase}: {reason}"),
                Settled::Failed { reason } => format!("{session}: failed in {phase}: {reason}"),
                Settled::Stopped => format!("{session}: stopped in {phase}"),
                Settled::Continued { phase } => {
                    format!("{session}: iteration accepted; next phase {phase}")
                }
            },
        }
    }
}

/// Messages of the NotifierActor.
#[derive(Debug)]
pub enum NotifierMsg {
    /// From a SessionActor or the supervisor: tell people about this event.
    Deliver(SessionEvent),
}

/// Somewhere people hear about sessions (a Telegram chat; a test's recorder). The notifier
/// knows only this; the adapters implement it.
pub trait Sink: Send + Sync + 'static {
    /// Tells the sink about `event`; a sink that cannot deliver logs why, and never blocks a
    /// session.
    fn deliver<'a>(
        &'a self,
        event: &'a SessionEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

pub struct NotifierActor;

/// Where events go: the notifier, found by its name at each send.
#[derive(Debug, Clone)]
pub struct NotifierHandle {
    name: String,
}

impl NotifierHandle {
    /// A handle for the notifier spawned under `name`.
    pub fn new(name: impl Into<String>) -> NotifierHandle {
        NotifierHandle { name: name.into() }
    }

    /// The name to spawn the notifier with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands the event to the notifier; dropped (with a log line) while none runs.
    pub fn deliver(&self, event: SessionEvent) {
        match ractor::registry::where_is(self.name.clone()) {
            Some(cell) => {
                let notifier: ActorRef<NotifierMsg> = cell.into();
                if notifier.send_message(NotifierMsg::Deliver(event)).is_err() {
                    tracing::warn!("the notifier is stopping; a notice was dropped");
                }
            }
            None => {
                tracing::warn!(target: "samocode::events", "no notifier runs; dropped: {}", event.headline())
            }
        }
    }
}

impl Actor for NotifierActor {
    type Msg = NotifierMsg;
    /// The sinks besides the log.
    type State = Vec<Arc<dyn Sink>>;
    type Arguments = Vec<Arc<dyn Sink>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMsg>,
        sinks: Vec<Arc<dyn Sink>>,
    ) -> Result<Vec<Arc<dyn Sink>>, ActorProcessingErr> {
        Ok(sinks)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMsg>,
        message: NotifierMsg,
        sinks: &mut Vec<Arc<dyn Sink>>,
    ) -> Result<(), ActorProcessingErr> {
        let NotifierMsg::Deliver(event) = message;
        let headline = event.headline();
        match &event {
            SessionEvent::AttemptFailed { .. }
            | SessionEvent::UsageLimited { .. }
            | SessionEvent::Broken { .. } => {
                tracing::warn!(target: "samocode::events", "{headline}")
            }
            _ => tracing::info!(target: "samocode::events", "{headline}"),
        }
        for sink in sinks.iter() {
            sink.deliver(&event).await;
        }
        Ok(())
    }
}
