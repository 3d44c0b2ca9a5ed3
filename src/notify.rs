//! NotifierActor: tells people what their sessions do, and never loses a notice.
//!
//! Accepts `Deliver` from SessionActors and the supervisor, and `Flush` from the supervisor
//! when the worker stops. Every event goes to the log; when a [`Sink`] is configured (a
//! Telegram chat), the sink renders it into a [`Notice`], which is appended to the durable
//! [`outbox`] before it is sent and marked sent only once the sink accepted it. Notices go out
//! one at a time, in order, from a task that reports back (`Delivered`); one the sink could not
//! take now is retried after the delay the sink asks for (Telegram's `retry_after`) or a
//! doubling backoff, so a session never waits on a chat. When a session leaves the condition its
//! last notice told of, that message is closed: edited to drop its buttons and to say what
//! happened. Links no children. It runs under a name, and senders hold a [`NotifierHandle`] that
//! looks it up by that name at each send, so a notifier the supervisor restarted (replaying its
//! outbox) is reached without telling every session.

mod event;
pub mod outbox;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

pub use event::{Asked, SessionEvent};
use outbox::{Entry, OpenMessage, Outbox, Replay};

/// A message for people, as a sink renders an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub session: String,
    /// Kept open after it is sent: the session waits on a person, and its message is edited
    /// once it has moved on.
    pub open: bool,
    pub html: String,
    /// Rows of buttons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Vec<Button>>,
    /// The session's folder, when its worker told it: a daemon takes over the open message
    /// a finished `run` left only for the same folder (another project's session may have the
    /// same folder name). Set by the notifier, not by a sink's rendering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The messages its first pieces became, when a long notice was sent in part before a
    /// failure: the next try (also by the next start) sends only the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<i64>,
}

/// A button of a notice: its label and the data it sends back when pressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub data: String,
}

/// Why a sink did not take a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Not now (the service is down, busy, or asked to wait): try again, after this long when
    /// it said.
    Later(Option<Duration>),
    /// Never: the sink refuses this notice (the chat is gone, the message no longer exists).
    Refused(String),
}

/// A boxed future, for the sink's methods.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere people hear about sessions (a Telegram chat; a test's recorder). The notifier
/// knows only this; the adapters implement it.
pub trait Sink: Send + Sync + 'static {
    /// What the sink tells people of `event`; `None` for routine progress.
    fn render(&self, event: &SessionEvent) -> Option<Notice>;
    /// Sends a notice; the ids of the messages it became, the one with the buttons last.
    fn send<'a>(&'a self, notice: &'a Notice) -> Pending<'a, Result<Vec<i64>, SendError>>;
    /// Closes an open message: drops its buttons and adds `line`.
    fn close<'a>(
        &'a self,
        message: &'a OpenMessage,
        line: &'a str,
    ) -> Pending<'a, Result<(), SendError>>;
    /// The messages the first pieces of `notice` became, when a send of it failed part way.
    fn sent_in_part(&self, _notice: &Notice) -> Vec<i64> {
        Vec::new()
    }
}

/// Messages of the NotifierActor.
#[derive(Debug)]
pub enum NotifierMsg {
    /// From a SessionActor or the supervisor: tell people about this event, and call `Told`
    /// once the notice is safe: in the outbox, or sent (or refused for good, or none was
    /// due). A session parked by a worker is marked untold in its state until then, so that
    /// a worker killed before it is safe leaves it to the next to tell.
    Deliver {
        event: SessionEvent,
        told: Option<Told>,
        /// The session's folder (`None` from the supervisor's fleet-wide notices).
        from: Option<PathBuf>,
    },
    /// From its delivery task: entry `id` went out (or did not).
    Delivered {
        id: u64,
        result: Result<Vec<i64>, SendError>,
    },
    /// From its own timer: try the head of the queue again.
    Retry,
    /// From its own timer: take over the outboxes `samocode run`s left since the last look.
    Adopt,
    /// From the supervisor: reply once nothing waits to be sent.
    Flush { reply: RpcReplyPort<()> },
    /// From the supervisor, stopping: start no more sends, and reply once none is under way
    /// (one cut off would be sent again by the next start, beside the copy Telegram took).
    Settle { reply: RpcReplyPort<()> },
    /// From the supervisor: the folder `old` of session `from` was renamed to `dir` (session
    /// `to`) under the daemon; the session's open message is the renamed session's.
    Renamed {
        from: String,
        to: String,
        old: PathBuf,
        dir: PathBuf,
    },
    /// From the bot: the session's latest message, for a button pressed on an older one.
    Latest {
        session: String,
        reply: RpcReplyPort<Latest>,
    },
}

/// What a notifier calls once a notice is safe (see [`NotifierMsg::Deliver`]).
pub struct Told(Box<dyn FnOnce() + Send>);

impl Told {
    pub fn new(then: impl FnOnce() + Send + 'static) -> Told {
        Told(Box::new(then))
    }

    fn fire(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Told")
    }
}

/// What the notifier knows of a session's messages in the chat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latest {
    /// The message that holds the session's live buttons, when one does.
    pub open: Option<i64>,
    /// A newer notice of the session is still to be sent: every message in the chat is older
    /// than what the session waits on now.
    pub newer: bool,
}

/// Startup input.
pub struct NotifierArgs {
    pub sink: Option<Arc<dyn Sink>>,
    /// The outbox file (`None`: notices are kept in memory only).
    pub outbox: Option<PathBuf>,
    /// Also send what `samocode run`s left in their outboxes beside it (the daemon does).
    pub adopt: bool,
    /// `outbox-full`: every write of the outbox fails half way, as on a full disk;
    /// `outbox-compact`: the outbox is compacted at every record (tests).
    pub failpoints: Vec<String>,
    /// The daemon's sessions' folders by the names it claimed: a notice of another folder
    /// of such a name (a namesake `run`'s, adopted) never becomes, closes or hides that
    /// session's open message.
    pub names: Option<Names>,
}

/// Folders by session name, shared with the supervisor that claims them.
pub type Names = Arc<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>>;

pub struct NotifierActor;

pub struct NotifierState {
    sink: Option<Arc<dyn Sink>>,
    outbox: Option<Outbox>,
    /// What is still to be sent, in order, and the open messages.
    queue: Replay,
    /// The entry being sent now.
    in_flight: Option<u64>,
    /// Failed tries of the head of the queue.
    tries: u32,
    /// Waiting out a pause before the next try: nothing is sent until `Retry`.
    pausing: bool,
    flushes: Vec<RpcReplyPort<()>>,
    /// Stopping: no send is started any more; these wait for the one under way.
    settling: Option<Vec<RpcReplyPort<()>>>,
    /// The daemon's outbox, beside which `samocode run`s leave theirs: looked at every
    /// [`ADOPT_EVERY`], not only at start.
    adopt_into: Option<std::path::PathBuf>,
    /// The runs' outboxes found with nothing to send, not read again until they change.
    looked: outbox::Looked,
    /// Whom to tell once the entry of this id is sent: its notice could not be written to the
    /// outbox (a full disk), so only its sending makes it safe.
    receipts: std::collections::HashMap<u64, Told>,
    /// The daemon's claimed names (see [`NotifierArgs::names`]).
    names: Option<Names>,
    /// Open messages of other folders' sessions of this notifier's sessions' names (namesake
    /// runs' notices it sent or adopted), by name and folder: closed by their own closes.
    foreign: Foreign,
}

/// Open messages by session name and folder (see [`NotifierState::foreign`]).
type Foreign = std::collections::HashMap<(String, PathBuf), OpenMessage>;

/// The longest pause between two tries of one notice.
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// How often a daemon's notifier looks for what `samocode run`s could not send: a run that
/// ends while Telegram is down leaves its notices in its own outbox.
const ADOPT_EVERY: Duration = Duration::from_secs(15);

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

    /// The handle of the notifier of the supervisor `supervisor`.
    pub fn of_supervisor(supervisor: ractor::ActorId) -> NotifierHandle {
        NotifierHandle::new(format!("samocode-notifier-{supervisor}"))
    }

    /// The notifier spawned under this handle's name, while one runs.
    fn running(&self) -> Option<ActorRef<NotifierMsg>> {
        ractor::registry::where_is(self.name.clone()).map(ActorRef::from)
    }

    /// The name to spawn the notifier with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the notifier knows of the session's latest message; `None` while no notifier
    /// answers.
    pub async fn latest(&self, session: &str) -> Option<Latest> {
        let notifier = self.running()?;
        let session = session.to_string();
        ractor::call_t!(
            notifier,
            |reply| NotifierMsg::Latest { session, reply },
            5_000
        )
        .ok()
    }

    /// Hands the event of the session in folder `from` to the notifier; dropped (with a log
    /// line) while none runs.
    pub fn deliver(&self, from: &Path, event: SessionEvent) {
        self.hand(from, event, None)
    }

    /// [`Self::deliver`], calling `told` once the notice is safe (never, when it was dropped).
    pub fn deliver_told(&self, from: &Path, event: SessionEvent, told: Told) {
        self.hand(from, event, Some(told))
    }

    fn hand(&self, from: &Path, event: SessionEvent, told: Option<Told>) {
        match self.running() {
            Some(notifier) => {
                let from = Some(from.to_path_buf());
                if notifier
                    .send_message(NotifierMsg::Deliver { event, told, from })
                    .is_err()
                {
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
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let mut looked = outbox::Looked::default();
        let mut foreign = Foreign::new();
        let (outbox, queue) = match (&args.sink, &args.outbox) {
            (Some(_), Some(path)) => {
                let (mut outbox, mut replay) = open_outbox(path).await?;
                if args.failpoints.iter().any(|f| f == "outbox-full") {
                    outbox.fail_writes();
                }
                if args.failpoints.iter().any(|f| f == "outbox-compact") {
                    outbox.compact_always();
                }
                if args.adopt {
                    // What cannot be written waits in memory: the runs' files are gone already.
                    let namesake = |session: &str, dir: Option<&Path>| {
                        namesake_of(args.names.as_ref(), session, dir)
                    };
                    if let Err(error) = adopt(
                        path,
                        &mut outbox,
                        &mut replay,
                        &mut looked,
                        &namesake,
                        &mut foreign,
                    ) {
                        tracing::warn!(%error, "the outbox cannot be written; what a run left waits in memory until it is sent");
                    }
                    myself.send_after(ADOPT_EVERY, || NotifierMsg::Adopt);
                }
                if !replay.pending.is_empty() {
                    tracing::info!(
                        pending = replay.pending.len(),
                        "notices from before a restart are sent now"
                    );
                }
                (Some(outbox), replay)
            }
            _ => (None, Replay::default()),
        };
        let state = NotifierState {
            adopt_into: outbox
                .as_ref()
                .and(args.outbox.clone())
                .filter(|_| args.adopt),
            sink: args.sink,
            outbox,
            queue,
            in_flight: None,
            tries: 0,
            pausing: false,
            flushes: Vec::new(),
            settling: None,
            looked,
            foreign,
            receipts: std::collections::HashMap::new(),
            names: args.names,
        };
        myself.send_message(NotifierMsg::Retry)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        message: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NotifierMsg::Deliver { event, told, from } => state.take(&event, told, from),
            NotifierMsg::Delivered { id, result } => {
                state.in_flight = None;
                let head = state.queue.pending.front().map(outbox::entry_id);
                if head == Some(id) {
                    match result {
                        Ok(messages) => {
                            state.tries = 0;
                            let entry = state.queue.pending.pop_front().expect("the head");
                            // Remembered before it is recorded: the record may compact the
                            // outbox, which keeps the open messages it knows of then.
                            state.remember(entry, &messages);
                            state.record(Entry::Sent {
                                id,
                                messages: messages.clone(),
                            })?;
                            if let Some(told) = state.receipts.remove(&id) {
                                told.fire();
                            }
                        }
                        Err(SendError::Refused(reason)) => {
                            // Which notice, so that a person can look at the session.
                            let (session, begins) = match state.queue.pending.front() {
                                Some(Entry::Notice { notice, .. }) => (
                                    notice.session.clone(),
                                    notice
                                        .html
                                        .lines()
                                        .next()
                                        .unwrap_or_default()
                                        .chars()
                                        .take(120)
                                        .collect(),
                                ),
                                Some(Entry::Close { session, line, .. }) => {
                                    (session.clone(), format!("closing its message: {line}"))
                                }
                                _ => (String::new(), String::new()),
                            };
                            tracing::error!(%reason, %session, notice = %begins, "a notice was refused for good; dropped");
                            state.tries = 0;
                            state.queue.pending.pop_front();
                            state.record(Entry::Dropped { id, reason })?;
                            if let Some(told) = state.receipts.remove(&id) {
                                told.fire();
                            }
                        }
                        Err(SendError::Later(after)) => {
                            // The pieces of a long notice that went out are recorded: a stop
                            // before the next try does not send them again.
                            state.record_pieces(id)?;
                            state.tries += 1;
                            let pause = after.unwrap_or_else(|| backoff(state.tries));
                            tracing::warn!(tries = state.tries, pause = ?pause, "a notice could not be sent now; trying again");
                            state.pausing = true;
                            myself.send_after(pause, || NotifierMsg::Retry);
                            return Ok(());
                        }
                    }
                }
            }
            NotifierMsg::Retry => state.pausing = false,
            NotifierMsg::Adopt => {
                if let (Some(outbox), Some(path)) = (&mut state.outbox, &state.adopt_into) {
                    let before = state.queue.pending.len();
                    let names = state.names.as_ref();
                    let namesake =
                        |session: &str, dir: Option<&Path>| namesake_of(names, session, dir);
                    if let Err(error) = adopt(
                        path,
                        outbox,
                        &mut state.queue,
                        &mut state.looked,
                        &namesake,
                        &mut state.foreign,
                    ) {
                        tracing::warn!(%error, "the outbox cannot be written; what a run left waits in memory until it is sent");
                    }
                    let adopted = state.queue.pending.len() - before;
                    if adopted > 0 {
                        tracing::info!(
                            adopted,
                            "notices a samocode run could not send are sent now"
                        );
                    }
                }
                myself.send_after(ADOPT_EVERY, || NotifierMsg::Adopt);
            }
            NotifierMsg::Flush { reply } => state.flushes.push(reply),
            NotifierMsg::Settle { reply } => {
                // Ending with notices unsent: said, so that nobody takes them as lost.
                let left = state.queue.pending.len();
                if left > 0 && state.sink.is_some() {
                    tracing::warn!(
                        left,
                        "notices not sent yet as the notifier stops: those its outbox holds are sent by the next start (a daemon also sends a finished run's within 15 s)"
                    );
                }
                state.settling.get_or_insert_default().push(reply)
            }
            NotifierMsg::Renamed { from, to, old, dir } => {
                state.queue.rename(&from, &to, &old, &dir);
                let id = state.queue.next_id;
                state.queue.next_id += 1;
                state.record(Entry::Renamed {
                    id,
                    from,
                    to,
                    old,
                    dir,
                })?;
            }
            NotifierMsg::Latest { session, reply } => {
                // A button of the message a run left newer than the daemon's: it is the latest.
                let folder = state.names.as_ref().and_then(|names| {
                    names
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&session)
                        .cloned()
                });
                // Only for a session the daemon drives: a run's own session keeps its outbox
                // for the run's next close.
                if let Some(folder) = folder {
                    state.take_run_open(&session, Some(&folder));
                }
                let newer = state.queue.pending.iter().any(|entry| {
                    matches!(entry, Entry::Notice { notice, .. }
                        if notice.session == session && !state.namesake(notice))
                });
                let open = state.queue.open.get(&session).map(|m| m.message);
                let _ = reply.send(Latest { open, newer });
            }
        }
        state.pump(&myself);
        Ok(())
    }
}

impl NotifierState {
    /// Queues what `event` tells, written to the outbox first; `told` is called once that is
    /// safe.
    fn take(&mut self, event: &SessionEvent, told: Option<Told>, from: Option<PathBuf>) {
        log(event);
        let mut safe = true;
        let mut last = None;
        for entry in self.entries_for(event, from) {
            if let Some(outbox) = &mut self.outbox {
                // Durable before it is sent: a crash from here on replays it. An outbox that
                // cannot take it (a full disk) does not lose it: it waits in memory, and only
                // a crash before it is sent loses it.
                if let Err(error) = outbox.append(&entry) {
                    tracing::warn!(%error, "the outbox cannot be written; the notice waits in memory until it is sent");
                    safe = false;
                }
            } else if self.sink.is_some() {
                // Kept in memory only: safe once sent.
                safe = false;
            }
            last = Some(outbox::entry_id(&entry));
            self.queue.pending.push_back(entry);
        }
        match (told, last) {
            (Some(told), Some(last)) if !safe => {
                self.receipts.insert(last, told);
            }
            (Some(told), _) => told.fire(),
            (None, _) => {}
        }
    }

    /// The outbox entries of an event, when the sink has something to say about it: its
    /// notice, after closing the session's message that still has buttons (the session moved
    /// on where the notifier did not see it: a `samocode answer` between two runs, an edit
    /// of `_qa.md` while the daemon was down), so that no old button stays live.
    fn entries_for(&mut self, event: &SessionEvent, from: Option<PathBuf>) -> Vec<Entry> {
        let Some(sink) = self.sink.as_ref() else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        match event {
            SessionEvent::Unparked { session, line } => {
                // A session handed from `samocode run` to the daemon: a button of the run's
                // message pressed, or its gate passed from the command line, closes it.
                self.take_run_open(session, from.as_deref());
                entries.push(Entry::Close {
                    id: self.queue.next_id,
                    session: session.clone(),
                    line: line.clone(),
                    dir: from,
                    message: None,
                })
            }
            _ => {
                let Some(mut notice) = sink.render(event) else {
                    return Vec::new();
                };
                notice.dir = from;
                self.take_run_open(&notice.session, notice.dir.as_deref());
                if self.has_open(&notice.session) {
                    entries.push(Entry::Close {
                        id: self.queue.next_id,
                        session: notice.session.clone(),
                        line: "moved on: see the newer message".into(),
                        dir: notice.dir.clone(),
                        message: None,
                    });
                    self.queue.next_id += 1;
                }
                entries.push(Entry::Notice {
                    id: self.queue.next_id,
                    notice,
                });
            }
        }
        self.queue.next_id += 1;
        entries
    }

    /// The message a finished `samocode run` of the session left open, when one did: it is
    /// the session's open message if the daemon has none (the session was handed to it), or
    /// if it is newer than the daemon's (the run drove the session on while the daemon was
    /// down), whose own is then closed; an older one is closed. Kept in this outbox (as
    /// compaction keeps one: a sent notice without buttons) before the run's outbox goes.
    fn take_run_open(&mut self, session: &str, dir: Option<&Path>) {
        // A notice of no session's folder (the fleet's) takes nothing.
        if dir.is_none() {
            return;
        }
        let ours = self.queue.open.get(session).cloned();
        // A notice of it still to send: what that makes open is newer than any message.
        if ours.is_none() && self.has_open(session) {
            return;
        }
        let Some(path) = self.adopt_into.clone() else {
            return;
        };
        let moved_on = |message: &OpenMessage, id: u64| Entry::Close {
            id,
            session: session.to_string(),
            line: "moved on: see the newer message".into(),
            dir: message.dir.clone(),
            message: Some(message.clone()),
        };
        let mut closes = Vec::new();
        let outbox = &mut self.outbox;
        let next_id = &mut self.queue.next_id;
        let keep = |theirs: &OpenMessage| {
            let mut entries = Vec::new();
            let newer = match &ours {
                Some(own) if own.message == theirs.message => return,
                Some(own) => theirs.message > own.message,
                None => true,
            };
            // The older of the two loses its buttons.
            if let Some(older) = match newer {
                true => ours.as_ref(),
                false => Some(theirs),
            } {
                entries.push(moved_on(older, *next_id));
                *next_id += 1;
            }
            if let Some(outbox) = outbox {
                let written = match newer {
                    true => outbox.keep_open(session, theirs),
                    false => Ok(()),
                }
                .and_then(|()| entries.iter().try_for_each(|e| outbox.append(e)));
                if let Err(error) = written {
                    tracing::warn!(%error, "the outbox cannot be written; the run's open message is kept in memory");
                }
            }
            closes.extend(entries);
        };
        let taken = outbox::take_run_open(&path, session, dir, keep);
        self.queue.pending.extend(closes);
        if let Some(theirs) = taken
            && ours.as_ref().is_none_or(|own| own.message < theirs.message)
        {
            self.queue.open.insert(session.to_string(), theirs);
        }
    }

    /// True when the session has a message with buttons, sent or about to be.
    fn has_open(&self, session: &str) -> bool {
        self.queue.open.contains_key(session)
            || self
                .queue
                .pending
                .iter()
                .rev()
                .find_map(|entry| match entry {
                    Entry::Notice { notice, .. }
                        if notice.session == session && !self.namesake(notice) =>
                    {
                        Some(notice.open)
                    }
                    Entry::Close {
                        session: closed,
                        dir,
                        message: None,
                        ..
                    } if closed == session && !self.namesake_at(closed, dir.as_deref()) => {
                        Some(false)
                    }
                    _ => None,
                })
                == Some(true)
    }

    /// Records in the outbox what became of a notice. One that cannot be recorded (a full
    /// disk) is logged: after a crash its notice would be sent again, which is better than a
    /// notifier that stops.
    fn record(&mut self, entry: Entry) -> Result<(), ActorProcessingErr> {
        if let Some(outbox) = &mut self.outbox {
            let recorded = outbox
                .append(&entry)
                .and_then(|()| outbox.compact_if_large(&self.queue));
            if let Err(error) = recorded {
                tracing::warn!(%error, "the outbox cannot be written; what was sent is not recorded");
            }
        }
        Ok(())
    }

    /// Records which pieces of the notice `id` (the head of the queue) went out before its
    /// send failed, when the sink says more did than the entry knows.
    fn record_pieces(&mut self, id: u64) -> Result<(), ActorProcessingErr> {
        let Some(sink) = self.sink.clone() else {
            return Ok(());
        };
        let Some(Entry::Notice { notice, .. }) = self.queue.pending.front_mut() else {
            return Ok(());
        };
        let sent = sink.sent_in_part(notice);
        if sent.len() <= notice.sent.len() {
            return Ok(());
        }
        notice.sent = sent.clone();
        self.record(Entry::Pieces { id, messages: sent })
    }

    /// True for a notice of another folder than this notifier's session of that name.
    fn namesake(&self, notice: &Notice) -> bool {
        self.namesake_at(&notice.session, notice.dir.as_deref())
    }

    /// True when `dir` is another folder than this notifier's session `session`'s.
    fn namesake_at(&self, session: &str, dir: Option<&Path>) -> bool {
        namesake_of(self.names.as_ref(), session, dir)
    }

    /// Keeps track of the open message a delivered entry made, or closed.
    fn remember(&mut self, entry: Entry, messages: &[i64]) {
        match entry {
            Entry::Notice { notice, .. } if self.namesake(&notice) => {
                let key = (notice.session, notice.dir.unwrap_or_default());
                self.foreign.remove(&key);
                if let (true, Some(message)) = (notice.open, messages.last()) {
                    let message = OpenMessage {
                        message: *message,
                        html: notice.html,
                        dir: Some(key.1.clone()),
                    };
                    self.foreign.insert(key, message);
                }
            }
            Entry::Notice { notice, .. } => {
                // A newer notice of the session replaces whatever was open before.
                self.queue.open.remove(&notice.session);
                if let (true, Some(message)) = (notice.open, messages.last()) {
                    self.queue.open.insert(
                        notice.session,
                        OpenMessage {
                            message: *message,
                            html: notice.html,
                            dir: notice.dir,
                        },
                    );
                }
            }
            Entry::Close {
                session,
                message: Some(closed),
                ..
            } => {
                // Only when it is the one open (it is not, once a newer one took its place).
                self.queue
                    .open
                    .retain(|open, m| *open != session || m.message != closed.message);
            }
            Entry::Close { session, dir, .. } => match dir {
                Some(dir) if self.namesake_at(&session, Some(&dir)) => {
                    self.foreign.remove(&(session, dir));
                }
                _ => drop(self.queue.open.remove(&session)),
            },
            _ => {}
        }
    }

    /// Sends the head of the queue, unless a send is under way.
    fn pump(&mut self, myself: &ActorRef<NotifierMsg>) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(waiting) = &mut self.settling {
            for reply in waiting.drain(..) {
                let _ = reply.send(());
            }
            return;
        }
        if self.pausing {
            return;
        }
        let (Some(sink), Some(head)) = (self.sink.clone(), self.queue.pending.front().cloned())
        else {
            for reply in self.flushes.drain(..) {
                let _ = reply.send(());
            }
            return;
        };
        let id = outbox::entry_id(&head);
        let open = match &head {
            Entry::Close {
                message: Some(message),
                ..
            } => Some(message.clone()),
            // Another folder's close (a namesake run's, adopted) closes that folder's message,
            // never the one open under its name for this notifier's session.
            Entry::Close {
                session,
                dir: Some(dir),
                ..
            } if self.namesake_at(session, Some(dir)) => {
                self.foreign.get(&(session.clone(), dir.clone())).cloned()
            }
            Entry::Close { session, .. } => self.queue.open.get(session).cloned(),
            _ => None,
        };
        self.in_flight = Some(id);
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = match &head {
                Entry::Notice { notice, .. } => sink.send(notice).await,
                Entry::Close { line, .. } => match &open {
                    Some(message) => sink.close(message, line).await.map(|()| Vec::new()),
                    // Nothing was sent for what it would close: nothing to edit.
                    None => Ok(Vec::new()),
                },
                _ => Ok(Vec::new()),
            };
            let _ = myself.send_message(NotifierMsg::Delivered { id, result });
        });
    }
}

/// True when `dir` is another folder than that of the daemon's session `session` (the name
/// it claimed for it). A `run`'s notifier has no names, and hears of its own session only.
fn namesake_of(names: Option<&Names>, session: &str, dir: Option<&Path>) -> bool {
    let (Some(theirs), Some(names)) = (dir, names) else {
        return false;
    };
    let ours = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(session)
        .cloned();
    ours.is_some_and(|ours| !outbox::same_folder(theirs, &ours))
}

/// Takes over the outboxes of `samocode run`s that ended with notices unsent: their entries,
/// renumbered, go to the end of `replay` and into `outbox`, and their open messages are kept
/// in both; one of another folder than the daemon's session of its name (`namesake`) is kept
/// in `foreign` instead.
fn adopt(
    path: &std::path::Path,
    outbox: &mut Outbox,
    replay: &mut Replay,
    looked: &mut outbox::Looked,
    namesake: &dyn Fn(&str, Option<&Path>) -> bool,
    foreign: &mut Foreign,
) -> std::io::Result<()> {
    let mut failed = Ok(());
    outbox::adopt_orphans(path, looked, &mut |orphans| {
        for entry in orphans.pending {
            // Renumbered into this outbox, in their order; one this outbox cannot take waits
            // in memory with the rest.
            let entry = outbox::renumber(entry, replay.next_id);
            replay.next_id += 1;
            if let Err(error) = outbox.append(&entry) {
                failed = Err(error);
            }
            replay.pending.push_back(entry);
        }
        for (session, message) in orphans.open {
            if let Some(dir) = message.dir.clone()
                && namesake(&session, Some(&dir))
            {
                foreign.insert((session, dir), message);
                continue;
            }
            if let Err(error) = outbox.keep_open(&session, &message) {
                failed = Err(error);
            }
            replay.open.insert(session, message);
        }
    });
    failed
}

/// Opens the outbox; a notifier restarted in this process waits briefly for its predecessor's
/// hold on the file to go.
async fn open_outbox(path: &std::path::Path) -> std::io::Result<(Outbox, Replay)> {
    let mut tries = 0;
    loop {
        match Outbox::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Held by another process all along: a daemon that still runs on this state
            // directory (its `daemon.lock` deleted, so this one started beside it).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "another process holds the notices' outbox {} (its lock file beside it): a samocode daemon still runs on this state directory; stop it first (its daemon.lock may have been deleted)",
                        path.display()
                    ),
                ));
            }
            other => return other,
        }
    }
}

/// The pause before try `tries + 1`: one second, doubling, at most a minute.
fn backoff(tries: u32) -> Duration {
    Duration::from_secs(1u64 << tries.saturating_sub(1).min(6)).min(LONGEST_PAUSE)
}

fn log(event: &SessionEvent) {
    let headline = event.headline();
    match event {
        SessionEvent::AttemptFailed { .. }
        | SessionEvent::UsageLimited { .. }
        | SessionEvent::FleetBudgetReached { .. }
        | SessionEvent::Broken { .. } => {
            tracing::warn!(target: "samocode::events", "{headline}")
        }
        _ => tracing::info!(target: "samocode::events", "{headline}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon started beside one that still runs on the same state directory (its
    /// `daemon.lock` deleted) stopped with "Actor panicked during startup 'operation would
    /// block'": the words now say what holds the outbox and what to do.
    #[tokio::test(start_paused = true)]
    async fn an_outbox_another_process_holds_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let _held = Outbox::open(&path).unwrap();
        let error = match open_outbox(&path).await {
            Err(error) => error.to_string(),
            Ok(_) => panic!("opened twice"),
        };
        assert!(
            error.contains(&path.display().to_string())
                && error.contains("a samocode daemon still runs on this state directory"),
            "{error}"
        );
    }
}
