//! `samocode worker`: runs attempts a daemon published to NATS, on this host.
//!
//! It pulls specs from the shared consumer while it has a free slot, and runs each as a child
//! `samocode attempt-run` process (which stops its agent when the worker dies, even of
//! SIGKILL), forwarding every event line it prints to the attempt's events subject. While the
//! agent runs it acks the work message "in progress" three times per AckWait, so JetStream
//! keeps the attempt with it (on a task of its own, so that output waiting on NATS never delays
//! it; out of reach for so long that JetStream would give the attempt away before the agent's
//! kill grace ended, it stops the agent); at the end it acks the message, once the result is in
//! the attempt's events (a result that did not reach NATS leaves the message to be given
//! again). A cancel request on the
//! attempt's cancel subject becomes SIGTERM to the runner. Before it runs an attempt, a worker
//! claims it ([`Claim`]: this copy of the work message, as the next epoch), so that two copies
//! of one attempt's message never both run; a spec whose attempt is already over, already
//! cancelled, or claimed by another worker for another copy of its message is acked and not
//! run. A stop request (SIGTERM) stops taking work, stops the running attempts with
//! their grace, and gives them back (not acked, and no result sent) before the worker exits:
//! another worker runs each as its next epoch, and the stop is no failure of the session's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Claim, Link, WORKERS, cancel_subject, events_subject};
use crate::executor::result::{AttemptResult, End, Event};
use crate::executor::runner::HEARTBEAT;
use crate::executor::spec::RemoteSpec;
use crate::shutdown::Shutdown;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Its name, the `host` of the attempts it runs.
    pub name: String,
    /// Attempts it runs at once.
    pub slots: usize,
    /// Where its spec files and checkouts go.
    pub dir: PathBuf,
    /// The samocode binary that runs `attempt-run`.
    pub exe: PathBuf,
}

/// Runs until `shutdown` asks it to stop; then stops its attempts and returns.
pub async fn run(
    link: Link,
    settings: WorkerSettings,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut consumer: PullConsumer = link
        .work
        .get_consumer(WORKERS)
        .await
        .map_err(std::io::Error::other)?;
    // How many times the queue gives an attempt (whoever made it said; 0 or less: no end).
    let mut deliveries = consumer.cached_info().config.max_deliver;
    for dir in ["specs", "work"] {
        std::fs::create_dir_all(settings.dir.join(dir))?;
    }
    let (stop, stopping) = watch::channel(false);
    let mut running = JoinSet::new();
    tracing::info!(name = %settings.name, slots = settings.slots, url = %crate::config::without_userinfo(&link.settings.url), "samocode worker running");
    loop {
        while running.try_join_next().is_some() {}
        if running.len() >= settings.slots {
            tokio::select! {
                _ = shutdown.requested() => break,
                Some(_) = running.join_next() => {}
            }
            continue;
        }
        // A pull is never cut short for an attempt that ended meanwhile: the server would hand
        // its next message to a pull nobody reads, and JetStream would count that as a
        // delivery (at the AckWait's end) that no worker ran.
        tokio::select! {
            _ = shutdown.requested() => break,
            taken = take(&consumer) => match taken {
                Ok(Some(message)) => {
                    running.spawn(run_one(link.clone(), message, deliveries, settings.clone(), stopping.clone()));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot pull work from NATS; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // A server that lost its store lost the queue too: made again.
                    if let Ok(made) = link.ensure().await {
                        deliveries = made.cached_info().config.max_deliver;
                        consumer = made;
                    }
                }
            },
        }
    }
    tracing::info!(
        running = running.len(),
        "stopping: running attempts get their grace"
    );
    let _ = stop.send(true);
    while running.join_next().await.is_some() {}
    Ok(())
}

/// One message from the work queue, waiting up to two seconds for one.
async fn take(
    consumer: &PullConsumer,
) -> Result<Option<async_nats::jetstream::Message>, async_nats::Error> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await?;
    match batch.next().await {
        Some(message) => Ok(Some(message?)),
        None => Ok(None),
    }
}

/// Runs one attempt to its end and acks its message (`deliveries`: how many times the queue
/// gives an attempt).
async fn run_one(
    link: Link,
    message: async_nats::jetstream::Message,
    deliveries: i64,
    settings: WorkerSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let Ok(mut spec) = serde_json::from_slice::<RemoteSpec>(&message.payload) else {
        tracing::error!("a work message is not an attempt spec of this version; dropped");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    // The message's place in the work stream (what tells its copies apart), and how many
    // times JetStream says it has given it.
    let Ok(info) = message.info() else {
        // Which message it is cannot be told: left for JetStream to give again.
        tracing::error!(key = %spec.key, "a work message's delivery cannot be read; not run");
        return;
    };
    let (work, delivered) = (
        info.stream_sequence,
        info.delivered.clamp(1, i64::from(u32::MAX)) as u32,
    );
    let key = spec.key.clone();
    // A stop meanwhile (the decision may watch the holder's events for 11 s) leaves the
    // delivery for another worker rather than claim a new epoch only to give it back.
    let decided = tokio::select! {
        decided = decide(&link, &message, &key, work, delivered, &settings.name) => decided,
        _ = stopping.changed() => Ok(Taking::Leave("this worker is stopping")),
    };
    let epoch = match decided {
        Ok(Taking::Run { epoch }) => epoch,
        Ok(Taking::Skip(reason)) => {
            tracing::info!(%key, %reason, "not run");
            let _ = message.double_ack().await;
            return;
        }
        Ok(Taking::Leave(reason)) => {
            // Neither acked nor given back: either would act on the message the other
            // worker holds.
            tracing::warn!(%key, %reason, "not run, and neither acked nor given back");
            return;
        }
        Ok(Taking::Cancelled { epoch }) => {
            tracing::info!(%key, reason = "it was cancelled before it started", "not run");
            // A daemon that cancelled it may have gone (stopped, and started again since):
            // the one that follows the attempt now learns its end from this, rather than
            // waiting for a worker that will never run it.
            let end = End::Signaled {
                signal: "SIGTERM".into(),
            };
            let note = Some("cancelled before a worker started it".into());
            match publish_end(&link, &spec, epoch, &settings, end, note).await {
                Ok(()) => {
                    let _ = message.double_ack().await;
                }
                Err(_) => {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
            return;
        }
        Err(error) => {
            tracing::warn!(%key, %error, "cannot look at the attempt's events; left for later");
            let why = format!("cannot look at the attempt's events in NATS: {error}");
            let back = Back {
                after: Duration::from_secs(1),
                deliveries,
                delivered,
                epoch: delivered,
                why,
            };
            back.give(&link, &message, &spec, &settings).await;
            return;
        }
    };
    spec.epoch = epoch;
    let file = settings
        .dir
        .join("specs")
        .join(format!("{key}-e{epoch}.json"));
    if let Err(error) = std::fs::write(&file, serde_json::to_vec(&spec).expect("specs serialize")) {
        tracing::error!(%key, %error, "cannot write the spec file; the attempt goes back");
        // Not at once: a worker that cannot write here would take it back again at once, and
        // use up its deliveries in a moment.
        let why = format!("cannot write the spec file {}: {error}", file.display());
        let back = Back {
            after: Duration::from_secs(5),
            deliveries,
            delivered,
            epoch,
            why,
        };
        back.give(&link, &message, &spec, &settings).await;
        return;
    }
    tracing::info!(%key, epoch, "running");
    let mut reported = run_child(&link, &message, &spec, &file, &settings, &mut stopping).await;
    if reported == Reported::None {
        let end = End::Failed {
            detail: "samocode attempt-run ended without a result".into(),
        };
        if publish_end(&link, &spec, epoch, &settings, end, None)
            .await
            .is_err()
        {
            reported = Reported::Lost;
        }
    }
    let _ = std::fs::remove_file(&file);
    if reported == Reported::Released {
        // Back to the queue for another worker (after this one's pull has ended, so that it
        // is not handed to a worker on its way out).
        tracing::info!(%key, epoch, "stopping: the attempt is given back for another worker");
        let why = "the worker running it stopped before it ended".to_string();
        let back = Back {
            after: Duration::from_secs(3),
            deliveries,
            delivered,
            epoch,
            why,
        };
        back.give(&link, &message, &spec, &settings).await;
        return;
    }
    if reported == Reported::Lost {
        match deliveries > 0 && i64::from(delivered) >= deliveries {
            true => {
                tracing::error!(%key, epoch, "the attempt's end is not sent, at its last delivery: JetStream gives it no more, and its daemon ends it at its time limit")
            }
            false => {
                tracing::warn!(%key, epoch, "the attempt's end is not sent (NATS out of reach, or the agent stopped for it): not acked, so JetStream gives it again")
            }
        }
        return;
    }
    // A newer epoch claimed the attempt meanwhile (this worker was given up for dead): its
    // message is that worker's now, and an ack would take it from the queue under it.
    if let Ok(Some((claim, _))) = link.last_claim(&key).await
        && (claim.epoch, claim.host.as_str()) != (epoch, settings.name.as_str())
    {
        tracing::warn!(%key, epoch, newer = claim.epoch, host = %claim.host, "a newer epoch holds the attempt: its message is not acked here");
        return;
    }
    if let Err(error) = message.double_ack().await {
        tracing::warn!(%key, %error, "the end of the attempt was not acknowledged");
    }
    tracing::info!(%key, epoch, "done");
}

/// An attempt this worker gives back to the queue, for another worker.
struct Back {
    /// When the queue may give it again.
    after: Duration,
    /// How many times the queue gives an attempt (0 or less: no end).
    deliveries: i64,
    /// How many times the queue has given it, this time included.
    delivered: u32,
    /// The epoch this worker ran it as (its end, when this is the last delivery, is of it).
    epoch: u32,
    /// Why it is given back.
    why: String,
}

impl Back {
    /// Gives the attempt back; at its last delivery, when the queue would never give it to
    /// anyone again (and its daemon wait for its end for ever), ends it instead, saying why.
    async fn give(
        self,
        link: &Link,
        message: &async_nats::jetstream::Message,
        spec: &RemoteSpec,
        settings: &WorkerSettings,
    ) {
        if self.deliveries <= 0 || i64::from(self.delivered) < self.deliveries {
            let _ = message.ack_with(AckKind::Nak(Some(self.after))).await;
            return;
        }
        let detail = format!(
            "{}; it was given to workers {} times, the most the work queue gives an attempt",
            self.why, self.delivered
        );
        tracing::error!(key = %spec.key, %detail, "the attempt ends here");
        let end = End::Failed { detail };
        if publish_end(link, spec, self.epoch, settings, end, None)
            .await
            .is_ok()
        {
            let _ = message.double_ack().await;
        } else {
            tracing::error!(key = %spec.key, "the attempt's end could not be sent at its last delivery: its daemon ends it at its time limit");
        }
    }
}

/// A subject nobody serves: a request to it is answered by the server itself.
const PING_SUBJECT: &str = "samocode.worker.ping";

/// What a worker does with a work message it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Taking {
    /// It is claimed: run it, as this epoch.
    Run { epoch: u32 },
    /// Ack it and run nothing.
    Skip(&'static str),
    /// Cancelled before any worker started it: its end is published (of this epoch), then it
    /// is acked.
    Cancelled { epoch: u32 },
    /// Another worker took this very message at the same moment: leave it to that one.
    Leave(&'static str),
}

/// Why a delivery of work message `work` (at stream sequence `work`, given `delivered` times
/// by JetStream's count) is not run, or the epoch it runs as, from the attempt's last event and
/// the last claim on it.
///
/// The epoch is never JetStream's count alone: a delivery count can start again at 1 for a
/// message a worker already ran (a consumer made again, or its state restored without the
/// delivery), and that delivery, taken for a second copy, was acked and never run: its daemon
/// waited for the attempt until its time limit.
fn judge(
    last: Option<&Event>,
    claim: Option<&Claim>,
    work: u64,
    delivered: u32,
) -> Result<u32, &'static str> {
    // Past every epoch the events show too (a worker of an earlier build claims nothing).
    let seen = match last {
        Some(
            Event::Started { epoch, .. } | Event::Out { epoch, .. } | Event::Heartbeat { epoch },
        ) => epoch.saturating_add(1),
        _ => 1,
    };
    match (last, claim) {
        (Some(Event::Result(_)), _) => Err("it is over already"),
        // The message another worker claimed is another copy of this attempt's spec.
        (_, Some(claim)) if claim.work != work => Err("another copy of its work message runs"),
        // The message itself again: its holder lost it (a worker dead, or out of reach; one
        // still running it is looked for before this is run: see [`holder_runs`]).
        (_, Some(claim)) => Ok(delivered.max(claim.epoch.saturating_add(1)).max(seen)),
        // Started by a worker of an earlier build, which claims nothing: only a second copy
        // of the message is delivered for the first time.
        (Some(Event::Started { .. } | Event::Out { .. } | Event::Heartbeat { .. }), None)
            if delivered == 1 =>
        {
            Err("another worker runs it")
        }
        (_, None) => Ok(delivered.max(seen)),
    }
}

/// Whether the worker that claimed this very message still runs it: its attempt's events go
/// on (its runner beats every [`HEARTBEAT`]). A delivery of a message whose holder is alive
/// (the queue's consumer made again while it ran, which counts deliveries afresh) is left to
/// that holder; one whose holder is gone (dead, or fenced for a lost lease) is run. The
/// delivery is kept meanwhile (acked in progress).
async fn holder_runs(
    link: &Link,
    message: &async_nats::jetstream::Message,
    key: &str,
) -> std::io::Result<bool> {
    let before = link.last_event_sequence(key).await?;
    let until = tokio::time::Instant::now() + HEARTBEAT * 2 + Duration::from_secs(1);
    let tick = (link.settings.ack_wait / 3).max(Duration::from_millis(100));
    while tokio::time::Instant::now() < until {
        let _ = message.ack_with(AckKind::Progress).await;
        tokio::time::sleep(tick.min(until - tokio::time::Instant::now())).await;
    }
    Ok(link.last_event_sequence(key).await? != before)
}

/// Decides what to do with a delivery of work message `work` (see [`judge`]), and claims the
/// attempt when it is to run.
async fn decide(
    link: &Link,
    message: &async_nats::jetstream::Message,
    key: &str,
    work: u64,
    delivered: u32,
    host: &str,
) -> std::io::Result<Taking> {
    let last = link.last_event(key).await?;
    let claimed = link.last_claim(key).await?;
    let epoch = match judge(
        last.as_ref(),
        claimed.as_ref().map(|(claim, _)| claim),
        work,
        delivered,
    ) {
        Ok(epoch) => epoch,
        Err(reason) => return Ok(Taking::Skip(reason)),
    };
    if link.cancelled(key).await? {
        return Ok(Taking::Cancelled { epoch });
    }
    // Its spec is stored before it is queued and dropped when the daemon is done with it: a
    // copy of an attempt given up on, or long over.
    if super::attempt::queued_spec(link, key).await?.is_none() {
        return Ok(Taking::Skip("the daemon is done with it"));
    }
    let claim = Claim {
        work,
        epoch,
        host: host.to_string(),
    };
    if claimed
        .as_ref()
        .is_some_and(|(claim, _)| claim.work == work)
        && holder_runs(link, message, key).await?
    {
        return Ok(Taking::Leave(
            "the worker that claimed this message still runs it (its events go on)",
        ));
    }
    let after = claimed.map_or(0, |(_, sequence)| sequence);
    if link.claim(key, &claim, after).await? {
        return Ok(Taking::Run { epoch });
    }
    // Claimed by another worker since it was looked at.
    Ok(match link.last_claim(key).await? {
        Some((other, _)) if other.work != work => {
            Taking::Skip("another copy of its work message runs")
        }
        _ => Taking::Leave("another worker claimed this message at the same moment"),
    })
}

/// How a run of `attempt-run` ended, for the work message's ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    /// Its result is in the attempt's events: the message is acked.
    Sent,
    /// It printed no result.
    None,
    /// It printed one that did not reach NATS, or the worker stopped the agent for the lease
    /// it lost: the message is not acked, so that JetStream gives the attempt again once its
    /// AckWait has passed (never an attempt the daemon waits for until its time limit).
    Lost,
    /// The worker itself is stopping, and stopped the agent for that: its end is not sent,
    /// and the message goes back to the queue at once, for another worker.
    Released,
}

/// Runs `attempt-run` for the spec in `file`, forwarding its events.
async fn run_child(
    link: &Link,
    message: &async_nats::jetstream::Message,
    spec: &RemoteSpec,
    file: &std::path::Path,
    settings: &WorkerSettings,
    stopping: &mut watch::Receiver<bool>,
) -> Reported {
    let mut cancels = match link.client.subscribe(cancel_subject(&spec.key)).await {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for cancel requests");
            None
        }
    };
    let child = tokio::process::Command::new(&settings.exe)
        .arg("attempt-run")
        .arg("--spec")
        .arg(file)
        .arg("--dir")
        .arg(settings.dir.join("work"))
        .arg("--host")
        .arg(&settings.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            tracing::error!(%error, "cannot start samocode attempt-run");
            return Reported::None;
        }
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let term = move || {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    };
    // The keeper acks "in progress" on its own task, so that output waiting on a NATS out of
    // reach never delays it.
    let fenced = Arc::new(AtomicBool::new(false));
    let keeper = tokio::spawn(keep(
        link.clone(),
        message.clone(),
        spec.key.clone(),
        spec.kill_grace,
        fenced.clone(),
        term,
    ))
    .abort_handle();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut reported = Reported::None;
    let mut told_to_stop = false;
    // Stopped because this worker stops, not because the daemon asked.
    let mut released = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                    // Stopped for the lease it lost: JetStream gives the attempt again, and
                    // the next epoch's result is the one; this one, sent late, could reach the
                    // daemon before the next epoch's start and be taken for the attempt's end.
                    Ok(Event::Result(_)) if fenced.load(Ordering::SeqCst) => {
                        reported = Reported::Lost;
                    }
                    // The end of a run this worker's own stop cut short (its agent signalled,
                    // or failing on the way out): not the attempt's. An agent that had ended
                    // well before the stop reached it is the attempt's end, published below.
                    Ok(Event::Result(result))
                        if released && !matches!(result.end, End::Exited { code: 0 }) =>
                    {
                        reported = Reported::Released;
                    }
                    Ok(Event::Result(mut result)) => {
                        reported = Reported::Sent;
                        if let Err(error) = publish(link, &spec.key, &Event::Result(result.clone())).await {
                            // Too large for the server, most likely: the daemon hears why.
                            result.end = End::Failed { detail: format!("the result could not be sent: {error}") };
                            result.changed.clear();
                            result.deleted.clear();
                            result.stderr.clear();
                            if publish(link, &spec.key, &Event::Result(result)).await.is_err() {
                                reported = Reported::Lost;
                            }
                        }
                    }
                    Ok(event) => {
                        let _ = publish(link, &spec.key, &event).await;
                    }
                    Err(error) => tracing::warn!(%error, "attempt-run printed a line that is not an event"),
                },
                _ => break,
            },
            Some(_) = async { cancels.as_mut()?.next().await }, if !told_to_stop => {
                told_to_stop = true;
                term();
            }
            _ = stopping.changed(), if !told_to_stop => {
                told_to_stop = true;
                released = true;
                term();
            }
        }
    }
    let _ = child.wait().await;
    if matches!(reported, Reported::None) {
        // The runner ended without a result (killed outright): its agent, in a process
        // group of its own, may run on. It is found by its markers and killed before the
        // attempt is reported failed, so that its retry never runs beside it.
        let session = crate::executor::runner::session_copy(&settings.dir.join("work"), spec);
        let attempt = spec.attempt_id.clone();
        let killed = tokio::task::spawn_blocking(move || {
            crate::agent::reaper::kill_marked(&session, Some(&attempt))
        })
        .await
        .unwrap_or_default();
        if !killed.is_empty() {
            tracing::warn!(key = %spec.key, ?killed, "attempt-run ended without a result; its agent's processes were killed");
        }
    }
    keeper.abort();
    if fenced.load(Ordering::SeqCst) {
        return Reported::Lost;
    }
    if released && reported != Reported::Sent {
        return Reported::Released;
    }
    reported
}

/// Tells JetStream every third of the AckWait that the attempt is in progress. Past the
/// AckWait without hearing so, JetStream gives the attempt to another worker: an agent still
/// running here then would be a second one of its session. So when NATS has been out of reach
/// for so long that the agent's kill grace would end past that point, the agent is stopped.
async fn keep(
    link: Link,
    message: async_nats::jetstream::Message,
    key: String,
    grace: Duration,
    fenced: Arc<AtomicBool>,
    term: impl Fn(),
) {
    let ack_wait = link.settings.ack_wait;
    let tick = ack_wait / 3;
    let stop_after = ack_wait.saturating_sub(grace).saturating_sub(tick);
    let mut progress = tokio::time::interval(tick);
    // When JetStream last surely heard from this worker: stamped before the ack is sent.
    let mut kept = tokio::time::Instant::now();
    loop {
        progress.tick().await;
        let asked = tokio::time::Instant::now();
        // Not heard by JetStream for a whole AckWait (this worker frozen: SIGSTOP, a paused
        // VM, a suspended machine): the attempt may be another worker's by now, whatever the
        // next ack says. The agent stops; its end is not this epoch's to report.
        if !fenced.load(Ordering::SeqCst) && asked.duration_since(kept) >= ack_wait {
            tracing::warn!(
                %key,
                silent = %humantime::format_duration(asked.duration_since(kept)),
                "JetStream did not hear from this worker for its whole AckWait (frozen?): stopping the agent, whose attempt may be another worker's now"
            );
            fenced.store(true, Ordering::SeqCst);
            term();
            continue;
        }
        if in_progress(&link, &message, tick).await {
            kept = asked;
        } else if !fenced.load(Ordering::SeqCst) && kept.elapsed() >= stop_after {
            tracing::warn!(
                %key,
                unreachable = %humantime::format_duration(kept.elapsed()),
                "NATS is out of reach: stopping the agent before JetStream gives its attempt to another worker"
            );
            fenced.store(true, Ordering::SeqCst);
            term();
        }
    }
}

/// Tells JetStream the attempt is in progress; true when that surely reached the server. A
/// publish is only written to the socket (a flush says no more), and a connection that went
/// silent without a reset still reads as connected; so a request follows it on the same
/// connection, to a subject nobody serves: the server answers it itself ("no responders"),
/// and only after it has read, and handed on, the ack before it. That answer is the proof,
/// and costs the server no more than routing a message.
async fn in_progress(
    link: &Link,
    message: &async_nats::jetstream::Message,
    within: Duration,
) -> bool {
    if let Err(error) = message.ack_with(AckKind::Progress).await {
        tracing::warn!(%error, "cannot tell JetStream the attempt is in progress");
        return false;
    }
    let asked = link.client.request(PING_SUBJECT, bytes::Bytes::new());
    match tokio::time::timeout(within, asked).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "NATS did not answer");
            false
        }
        Err(_) => false,
    }
}

/// Publishes an end of the attempt that the worker itself decided (the runner printed none),
/// with nothing of the agent's.
async fn publish_end(
    link: &Link,
    spec: &RemoteSpec,
    epoch: u32,
    settings: &WorkerSettings,
    end: End,
    note: Option<String>,
) -> std::io::Result<()> {
    let result = AttemptResult {
        key: spec.key.clone(),
        attempt_id: spec.attempt_id.clone(),
        epoch,
        host: settings.name.clone(),
        end,
        commit: None,
        changed: Vec::new(),
        deleted: Vec::new(),
        stderr: String::new(),
        note,
    };
    publish(link, &spec.key, &Event::Result(Box::new(result))).await
}

async fn publish(link: &Link, key: &str, event: &Event) -> std::io::Result<()> {
    let body = serde_json::to_vec(event).expect("events serialize");
    let stored = link.store(events_subject(key), body, None).await;
    if let Err(error) = &stored {
        tracing::error!(%key, %error, "an event of the attempt did not reach NATS");
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(work: u64, epoch: u32) -> Claim {
        Claim {
            work,
            epoch,
            host: "host-1".into(),
        }
    }

    fn started(epoch: u32) -> Event {
        Event::Started {
            key: "k".into(),
            epoch,
            host: "host-1".into(),
        }
    }

    #[test]
    fn a_message_delivered_again_runs_past_every_epoch_claimed_whatever_its_count() {
        // JetStream counted this delivery as the first, though a worker ran it as epoch 1.
        let last = Event::Heartbeat { epoch: 1 };
        assert_eq!(judge(Some(&last), Some(&claim(7, 1)), 7, 1), Ok(2));
        assert_eq!(judge(Some(&started(3)), Some(&claim(7, 3)), 7, 2), Ok(4));
        // A count past the claims is kept: epochs only grow.
        assert_eq!(judge(Some(&started(1)), Some(&claim(7, 1)), 7, 5), Ok(5));
    }

    #[test]
    fn another_copy_of_a_claimed_message_is_not_run() {
        assert!(judge(Some(&started(1)), Some(&claim(7, 1)), 9, 1).is_err());
        assert!(judge(None, Some(&claim(7, 1)), 9, 3).is_err());
    }

    #[test]
    fn an_attempt_over_is_not_run_and_a_first_delivery_runs_as_epoch_1() {
        let over = Event::Result(Box::new(AttemptResult {
            key: "k".into(),
            attempt_id: "a".into(),
            epoch: 1,
            host: "host-1".into(),
            end: End::Exited { code: 0 },
            commit: None,
            changed: Vec::new(),
            deleted: Vec::new(),
            stderr: String::new(),
            note: None,
        }));
        assert_eq!(
            judge(Some(&over), Some(&claim(7, 1)), 7, 2),
            Err("it is over already")
        );
        assert_eq!(judge(None, None, 7, 1), Ok(1));
    }

    #[test]
    fn a_run_of_a_worker_that_claims_nothing_keeps_the_first_delivery_rule() {
        // Started by a worker of an earlier build: a first delivery is a second copy, a later
        // one the message given again.
        assert!(judge(Some(&started(1)), None, 7, 1).is_err());
        assert_eq!(judge(Some(&started(1)), None, 7, 2), Ok(2));
    }
}
