//! A request to stop, injected rather than wired to signals: `main` turns SIGINT, SIGTERM and
//! SIGHUP into requests ([`Shutdown::from_signals`]); tests and embedders make their own with
//! [`Shutdown::new`].
//!
//! The first request asks for a graceful stop (running agents get SIGTERM and their grace,
//! their attempts are journaled, locks are released); a second one asks to stop at once (the
//! agents are killed and the process exits).

use tokio::sync::watch;

/// Makes requests.
#[derive(Clone)]
pub struct Trigger {
    tx: watch::Sender<Requests>,
}

/// Waits for requests.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Requests>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Requests {
    count: u32,
    /// The signal of the first request (0 when it came from no signal).
    first: i32,
    /// The last request's signal and when it came.
    last: Option<(i32, std::time::Instant)>,
}

/// A signal of the kind of the last request that comes within this of it is the same request
/// delivered twice: GNU `timeout` sends its SIGTERM to the command and again to its own
/// process group, and the second delivery killed the agent with no grace.
const SAME_REQUEST: std::time::Duration = std::time::Duration::from_millis(100);

impl Trigger {
    /// Asks to stop, for `signal` (its number; 0 for none).
    pub fn request(&self, signal: i32) {
        let now = std::time::Instant::now();
        self.tx.send_if_modified(|r| {
            if let Some((last, at)) = r.last
                && last == signal
                && signal != 0
                && now.duration_since(at) < SAME_REQUEST
            {
                return false;
            }
            if r.count == 0 {
                r.first = signal;
            }
            r.count += 1;
            r.last = Some((signal, now));
            true
        });
    }
}

impl Shutdown {
    /// A pair that only the returned trigger sets off.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(Requests::default());
        (Trigger { tx }, Shutdown { rx })
    }

    /// Requests from SIGINT, SIGTERM and SIGHUP (a dropped terminal). A SIGHUP or SIGINT the
    /// process was started with ignored stays ignored: `nohup` ignores SIGHUP so that a
    /// command outlives its terminal, and a shell starts a background job with SIGINT ignored
    /// so that Ctrl-C reaches only the foreground. Must be called inside a tokio runtime.
    pub fn from_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let (trigger, shutdown) = Shutdown::new();
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .filter(|kind| kind == &SignalKind::terminate() || !ignored(kind.as_raw_value()));
        for kind in kinds {
            let mut stream = signal(kind)?;
            let trigger = trigger.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    trigger.request(kind.as_raw_value());
                }
            });
        }
        Ok(shutdown)
    }

    /// Resolves at the first request; returns its signal's number (0 for none).
    pub async fn requested(&mut self) -> i32 {
        match self.rx.wait_for(|r| r.count >= 1).await {
            Ok(r) => r.first,
            // Nobody can ask any more: never.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves at the second request.
    pub async fn forced(&mut self) {
        if self.rx.wait_for(|r| r.count >= 2).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// True once a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.rx.borrow().count >= 1
    }
}

/// Whether `signal` is ignored now (as inherited), asked without changing it.
fn ignored(signal: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `current`, a plain struct
    // that sigaction fills.
    unsafe {
        let mut current: nix::libc::sigaction = std::mem::zeroed();
        nix::libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == nix::libc::SIG_IGN
    }
}

/// The exit code of a process stopped by signal `number` (128 + the number), or 1 for none.
pub fn exit_code(number: i32) -> u8 {
    if number > 0 {
        128u8.saturating_add(number as u8)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_asks_the_second_forces() {
        let (trigger, mut shutdown) = Shutdown::new();
        assert!(!shutdown.is_requested());
        trigger.request(15);
        assert_eq!(shutdown.requested().await, 15);
        let mut forced = shutdown.clone();
        let waiting = tokio::spawn(async move { forced.forced().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        trigger.request(2);
        waiting.await.unwrap();
        assert_eq!(shutdown.requested().await, 15, "the first signal is kept");
        assert_eq!(exit_code(15), 143);
    }

    /// `timeout` delivers its SIGTERM twice, at once: one request, the agents' grace kept.
    /// The same signal again later, or another signal, forces.
    #[tokio::test]
    async fn one_signal_delivered_twice_at_once_is_one_request() {
        let (trigger, shutdown) = Shutdown::new();
        trigger.request(15);
        trigger.request(15);
        assert_eq!(shutdown.rx.borrow().count, 1);
        tokio::time::sleep(SAME_REQUEST * 2).await;
        trigger.request(15);
        assert_eq!(shutdown.rx.borrow().count, 2);
        let (trigger, shutdown) = Shutdown::new();
        trigger.request(15);
        trigger.request(2);
        assert_eq!(shutdown.rx.borrow().count, 2);
    }
}
