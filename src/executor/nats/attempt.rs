//! One attempt on the NATS engine, as the daemon sees it: a driver task that publishes the
//! spec (after pushing the base commit where the workers fetch it), follows the attempt's
//! events (its output into the pipe the AgentProcess reads, the worker's name into the
//! attempt's [`Host`]), and applies the result of the newest epoch to the session folder
//! before the exit resolves. The group's signals become cancel requests on the attempt's
//! cancel subject; a kill that no worker answers within [`RESULT_AFTER_KILL`] (the attempt
//! was never taken, or its worker is gone) ends the attempt all the same.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};

use super::{Cancel, Link, cancel_subject, events_subject};
use crate::agent::AttemptSpec;
use crate::agent::launch::{ExitKind, Group, Launched};
use crate::executor::Host;
use crate::executor::RESULT_AFTER_KILL;
use crate::executor::result::{ApplyError, Event, Expected, apply};
use crate::executor::spec::{RemoteSpec, attempt_key, prepare};

/// How long a killed attempt that no worker has started is followed for a start already on
/// its way, before it is over.
const UNSTARTED_AFTER_KILL: Duration = Duration::from_secs(2);

/// The subject that keeps an attempt's spec, for a restarted daemon.
pub fn spec_subject(key: &str) -> String {
    format!("samocode.attempt.{key}.spec")
}

/// An attempt a previous daemon started: its spec as published, and how much of its output
/// the attempt log already holds.
pub struct Adoption {
    pub queued: RemoteSpec,
    pub skip: u64,
}

/// The spec attempt `key` was published with, while the engine holds it.
pub async fn queued_spec(link: &Link, key: &str) -> std::io::Result<Option<RemoteSpec>> {
    link.last(&spec_subject(key)).await
}

/// How often an attempt no worker has started looks whether NATS still holds its spec.
const SPEC_LOOK: Duration = Duration::from_secs(5);

/// Starts following (and, unless adopted, publishing) the attempt of `spec`.
pub fn start(link: Link, spec: AttemptSpec, adoption: Option<Adoption>) -> Launched {
    let key = attempt_key(&spec.session_dir, &spec.attempt_id);
    // The pipe holds a burst of output while the attempt log is written.
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let (exit_tx, exit_rx) = oneshot::channel();
    let host = Host::new("nats");
    let killed = Arc::new(Notify::new());
    let over = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = oneshot::channel::<jiff::Timestamp>();
    let driver = Driver {
        link: link.clone(),
        key: key.clone(),
        spec,
        host: host.clone(),
        killed: killed.clone(),
        over: over.clone(),
    };
    let task = tokio::spawn(async move {
        let mut writer = writer;
        let outcome = driver.run(adoption, &mut writer, started_tx).await;
        // End of output first: the AgentProcess reports once both have come.
        drop(writer);
        let _ = exit_tx.send(outcome);
    });
    Launched {
        group: Box::new(RemoteGroup {
            link,
            key,
            killed,
            over,
            task: task.abort_handle(),
        }),
        output: Box::pin(reader),
        // The worker keeps the agent's standard error in its own log.
        errors: None,
        exit: Box::pin(async move {
            exit_rx.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the daemon stopped following the attempt",
                ))
            })
        }),
        input: None,
        host,
        // Its time counts from a worker's start, not from its wait in the queue. (Ended
        // without a start, the attempt ends anyway.)
        started: Some(Box::pin(async move { started_rx.await.ok() })),
    }
}

struct Driver {
    link: Link,
    key: String,
    spec: AttemptSpec,
    host: Host,
    killed: Arc<Notify>,
    over: Arc<AtomicBool>,
}

impl Driver {
    async fn run(
        &self,
        adoption: Option<Adoption>,
        out: &mut tokio::io::DuplexStream,
        started: oneshot::Sender<jiff::Timestamp>,
    ) -> std::io::Result<ExitKind> {
        let mut start_told = Some(started);
        // Only an adopted attempt has run before this daemon heard of it: its start is the
        // server's stamp of the worker's `started` event. A fresh one's time counts from now:
        // the server's clock is not this machine's (a daemon 45 minutes ahead of it saw every
        // attempt past its 30-minute limit at its start).
        let adopted = adoption.is_some();
        let (remote, mut skip) = match adoption {
            Some(adoption) => {
                // A worker that never started it may still find it queued; publishing it
                // again is deduplicated while it is.
                if self.link.last_event(&self.key).await?.is_none() {
                    self.link.enqueue(&adoption.queued).await?;
                }
                (adoption.queued, adoption.skip)
            }
            None => {
                let handed = async {
                    let remote = prepare(&self.spec).await?;
                    self.queue(&remote).await?;
                    Ok::<_, std::io::Error>(remote)
                };
                let remote = handed.await.map_err(|e| {
                    std::io::Error::other(format!("it was not handed to the workers: {e}"))
                })?;
                (remote, 0)
            }
        };
        // Followed from here on whatever NATS does: once the spec is in the queue a worker may
        // run it, so an end that could not be learned would be a retry beside it. Made (and
        // made again after NATS was out of reach: a restarted server forgets the consumer)
        // from the stream sequence after the last event read.
        let mut events: Option<async_nats::jetstream::consumer::pull::Ordered> = None;
        let mut read = 0u64;
        let mut again = tokio::time::Instant::now();
        let mut epoch = 0u32;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let mut give_up: Option<tokio::time::Instant> = None;
        // Whether its spec is still in NATS is looked at now and then: a server back without
        // its store may not interrupt the events' reading (the client follows the stream made
        // again without a word, from the old one's sequence).
        let mut look_for_spec = tokio::time::Instant::now() + SPEC_LOOK;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(look_for_spec), if give_up.is_none() => {
                    if self.again_if_lost(&remote, epoch).await {
                        // A stream made anew counts its sequence from 1 again: followed afresh.
                        (events, read) = (None, 0);
                        again = tokio::time::Instant::now();
                    }
                    look_for_spec = tokio::time::Instant::now() + SPEC_LOOK;
                }
                next = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => {
                    let message = match next {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            tracing::warn!(key = %self.key, %error, "reading the attempt's events; following them again");
                            events = None;
                            again = tokio::time::Instant::now() + Duration::from_secs(1);
                            continue;
                        }
                        None => {
                            tracing::warn!(key = %self.key, "the attempt's events stopped; following them again");
                            events = None;
                            again = tokio::time::Instant::now() + Duration::from_secs(1);
                            continue;
                        }
                    };
                    let mut published = None;
                    if let Ok(info) = message.info() {
                        read = info.stream_sequence;
                        published =
                            jiff::Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
                                .ok();
                    }
                    let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
                        tracing::warn!(key = %self.key, "an event that does not parse; skipped");
                        continue;
                    };
                    match event {
                        Event::Started { epoch: started, host, .. } if started >= epoch => {
                            // Started after all: its agent gets the whole wait for its end.
                            if epoch == 0 && give_up.is_some() {
                                give_up = Some(tokio::time::Instant::now() + RESULT_AFTER_KILL);
                            }
                            if epoch > 0 {
                                tracing::warn!(key = %self.key, epoch = started, %host, "the attempt was given to another worker");
                            }
                            epoch = started;
                            self.host.set(&host);
                            if let Some(tell) = start_told.take() {
                                let at = published
                                    .filter(|_| adopted)
                                    .unwrap_or_else(jiff::Timestamp::now);
                                let _ = tell.send(at);
                            }
                        }
                        Event::Out { epoch: of, data, .. } if of == epoch => {
                            let bytes = data.as_bytes();
                            let from = (skip.min(bytes.len() as u64)) as usize;
                            skip -= from as u64;
                            if out.write_all(&bytes[from..]).await.is_err() {
                                tracing::debug!("the attempt's output is no longer read");
                            }
                        }
                        Event::Result(result) => {
                            let expected = Expected {
                                attempt_id: self.spec.attempt_id.clone(),
                                epoch,
                                session_dir: self.spec.session_dir.clone(),
                                workdir: self.spec.command.workdir.clone(),
                                stderr_file: self.spec.files.stderr.clone(),
                                repo_url: remote.repository.url.clone(),
                                result_ref: remote.repository.result_ref.clone(),
                                base_commit: remote.repository.base_commit.clone(),
                            };
                            match apply(&expected, &result).await {
                                Err(ApplyError::Stale { .. }) => {
                                    tracing::warn!(key = %self.key, epoch = result.epoch, newest = epoch, "a stale result was refused");
                                    continue;
                                }
                                applied => {
                                    self.over.store(true, Ordering::SeqCst);
                                    self.host.set(&result.host);
                                    if let Some(note) = &result.note {
                                        note_in_stderr(&self.spec.files.stderr, note);
                                    }
                                    self.forget().await;
                                    return match applied {
                                        Ok(()) => result.exit(),
                                        Err(error) => Err(std::io::Error::other(error.to_string())),
                                    };
                                }
                            }
                        }
                        // Heartbeats, and output or starts of an older epoch.
                        _ => {}
                    }
                }
                () = tokio::time::sleep_until(again), if events.is_none() => {
                    match self.follow(read).await {
                        Ok(followed) => {
                            events = Some(followed);
                            if epoch == 0 && self.again_if_lost(&remote, epoch).await {
                                // A stream made anew counts its sequence from 1 again.
                                (events, read) = (None, 0);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(key = %self.key, %error, "NATS still out of reach");
                            again = tokio::time::Instant::now() + Duration::from_secs(1);
                            // A server back without its store: its streams are made again.
                            let _ = self.link.ensure().await;
                        }
                    }
                }
                () = self.killed.notified(), if give_up.is_none() => {
                    // An attempt no worker has started has no agent to wait for: a moment
                    // for a start already on its way, then it is over (its spec goes, so a
                    // worker that takes it later runs nothing). That no worker started it is
                    // asked of the stream: this daemon may not have read a start yet (it was
                    // out of reach of NATS a moment ago).
                    let unstarted = epoch == 0
                        && matches!(
                            tokio::time::timeout(UNSTARTED_AFTER_KILL, self.link.last_event(&self.key)).await,
                            Ok(Ok(None))
                        );
                    let wait = if unstarted { UNSTARTED_AFTER_KILL } else { RESULT_AFTER_KILL };
                    give_up = Some(tokio::time::Instant::now() + wait);
                }
                () = tokio::time::sleep_until(give_up.unwrap_or(far)), if give_up.is_some() => {
                    self.over.store(true, Ordering::SeqCst);
                    note_in_stderr(
                        &self.spec.files.stderr,
                        "no worker reported the attempt's end after it was killed; given up",
                    );
                    // Its spec goes, so that a copy still queued is never run later.
                    self.forget().await;
                    return Ok(ExitKind::Signal("SIGKILL".into()));
                }
            }
        }
    }

    /// Stores the attempt's spec (what a restarted daemon adopts it from), then puts it in the
    /// work queue.
    async fn queue(&self, remote: &RemoteSpec) -> std::io::Result<()> {
        let body = serde_json::to_vec(remote).expect("specs serialize");
        self.link.store(spec_subject(&self.key), body, None).await?;
        self.link.enqueue(remote).await
    }

    /// Looks whether NATS still holds the attempt's spec; when it is gone, the server lost its
    /// store, and the attempt's events with it. One that no worker had started (`epoch` 0) is
    /// queued again (within the queue's dedup window, a copy still queued is not stored
    /// twice); one a worker runs keeps running there and publishes into the streams made
    /// anew, so only its spec is stored again (what a restarted daemon adopts it from).
    /// True when it was lost: its events are to be followed afresh.
    async fn again_if_lost(&self, remote: &RemoteSpec, epoch: u32) -> bool {
        if !matches!(queued_spec(&self.link, &self.key).await, Ok(None)) {
            return false;
        }
        let stored = match epoch {
            0 => self.queue(remote).await,
            _ => {
                let body = serde_json::to_vec(remote).expect("specs serialize");
                self.link.store(spec_subject(&self.key), body, None).await
            }
        };
        match stored {
            Ok(()) if epoch == 0 => {
                tracing::warn!(key = %self.key, "NATS lost the attempt before a worker started it; queued again");
                true
            }
            Ok(()) => {
                tracing::warn!(key = %self.key, epoch, "NATS lost the attempt's events while a worker runs it; following them afresh");
                true
            }
            Err(error) => {
                tracing::warn!(key = %self.key, %error, "cannot store the attempt again");
                false
            }
        }
    }

    /// The attempt's events after stream sequence `read` (all of them from 0).
    async fn follow(
        &self,
        read: u64,
    ) -> std::io::Result<async_nats::jetstream::consumer::pull::Ordered> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let consumer = self
            .link
            .attempts
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: events_subject(&self.key),
                deliver_policy: match read {
                    0 => DeliverPolicy::All,
                    read => DeliverPolicy::ByStartSequence {
                        start_sequence: read + 1,
                    },
                },
                ..Default::default()
            })
            .await
            .map_err(std::io::Error::other)?;
        consumer.messages().await.map_err(std::io::Error::other)
    }

    /// Drops the attempt's events and spec from the stream: its result is in the session
    /// folder now, and a restarted daemon must not adopt it.
    async fn forget(&self) {
        let filter = format!("samocode.attempt.{}.>", self.key);
        if let Err(error) = self.link.attempts.purge().filter(filter).await {
            tracing::warn!(key = %self.key, %error, "the attempt's events were not purged");
        }
    }
}

fn note_in_stderr(stderr: &Path, note: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
    {
        let _ = writeln!(file, "samocode: {note}");
    }
}

/// The attempt as a group of processes: its signals become cancel requests to the worker.
struct RemoteGroup {
    link: Link,
    key: String,
    killed: Arc<Notify>,
    /// Set once the result is in: signals after that have nothing to stop.
    over: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl Group for RemoteGroup {
    fn signal(&self, signal: Signal) {
        if self.over.load(Ordering::SeqCst) {
            return;
        }
        let kill = signal == Signal::SIGKILL;
        if kill {
            self.killed.notify_one();
        }
        let link = self.link.clone();
        let subject = cancel_subject(&self.key);
        let body = serde_json::to_vec(&Cancel { kill }).expect("cancels serialize");
        tokio::spawn(async move {
            if let Err(error) = link.store(subject, body, None).await {
                tracing::warn!(%error, "the cancel did not reach NATS");
            }
        });
    }

    fn sweep(&self, _settled: bool) {}

    fn describe(&self) -> String {
        format!("NATS attempt {}", self.key)
    }
}

impl Drop for RemoteGroup {
    fn drop(&mut self) {
        self.task.abort();
    }
}
