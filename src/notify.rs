//! NotifierActor: tells people what their sessions do.
//!
//! Accepts `Deliver` from SessionActors and the supervisor. Delivers each event to every sink:
//! the log (always) and, when configured, a Telegram chat. A sink that fails is logged and
//! skipped; delivery never blocks a session. Links no children.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::bot::Telegram;
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

pub struct NotifierActor;

impl Actor for NotifierActor {
    type Msg = NotifierMsg;
    /// The Telegram sink, when configured.
    type State = Option<Telegram>;
    type Arguments = Option<Telegram>;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMsg>,
        telegram: Option<Telegram>,
    ) -> Result<Option<Telegram>, ActorProcessingErr> {
        Ok(telegram)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMsg>,
        message: NotifierMsg,
        telegram: &mut Option<Telegram>,
    ) -> Result<(), ActorProcessingErr> {
        let NotifierMsg::Deliver(event) = message;
        let headline = event.headline();
        match &event {
            SessionEvent::AttemptFailed { .. } | SessionEvent::UsageLimited { .. } => {
                tracing::warn!(target: "samocode::events", "{headline}")
            }
            _ => tracing::info!(target: "samocode::events", "{headline}"),
        }
        if let Some(telegram) = telegram {
            telegram.notify(&event).await;
        }
        Ok(())
    }
}
