//! A parent for the SupervisorActor whose only job is to say how it ended: the supervisor is
//! the root of the tree, and without a parent nobody would hear that it died, so the daemon
//! would keep its lock and answer "shutting down" forever.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

pub struct ExitWatch;

impl Actor for ExitWatch {
    type Msg = ();
    type State = Option<oneshot::Sender<String>>;
    type Arguments = oneshot::Sender<String>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        tell: oneshot::Sender<String>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Some(tell))
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        tell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let reason = match event {
            SupervisionEvent::ActorFailed(_, error) => format!("it failed: {error}"),
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                format!(
                    "it stopped: {}",
                    reason.unwrap_or_else(|| "no reason".into())
                )
            }
            _ => return Ok(()),
        };
        if let Some(tell) = tell.take() {
            let _ = tell.send(reason);
        }
        Ok(())
    }
}

/// Starts a watch; the receiver resolves with how the watched child ended.
pub async fn start() -> Result<(ActorRef<()>, oneshot::Receiver<String>), String> {
    let (tx, rx) = oneshot::channel();
    let (watch, _) = Actor::spawn(None, ExitWatch, tx)
        .await
        .map_err(|e| e.to_string())?;
    Ok((watch, rx))
}
