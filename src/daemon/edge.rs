//! The daemon's edges (the control server, the Telegram poller): tasks that must keep running
//! for as long as the daemon does. Each runs in a task of its own; when it ends or panics it is
//! started again after a pause that doubles from one second up to a minute (and starts over once
//! a run lasted a minute), so a fault that repeats does not spin.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, JoinSet};

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// Runs `start()` again and again until the returned handle is aborted (which also ends the
/// running instance).
pub fn keep_running<F, Fut>(name: &'static str, mut start: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            let began = Instant::now();
            // A set of one: dropping it (when this task is aborted) aborts the instance too.
            let mut instance = JoinSet::new();
            instance.spawn(start());
            match instance.join_next().await {
                Some(Err(error)) if error.is_panic() => {
                    tracing::error!(edge = name, %error, "panicked; restarting it")
                }
                _ => tracing::error!(edge = name, "ended; restarting it"),
            }
            if began.elapsed() >= LONGEST_PAUSE {
                pause = FIRST_PAUSE;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn an_edge_that_panics_is_restarted_with_growing_pauses() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let edge = keep_running("test edge", move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                panic!("an edge fault");
            }
        });
        // Pauses of 1, 2 and 4 seconds: four runs within 7.5 s, not more.
        tokio::time::sleep(Duration::from_millis(7500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        edge.abort();
        let _ = edge.await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "aborted edges stay down");
    }
}
