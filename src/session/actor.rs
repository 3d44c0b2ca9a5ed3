//! SessionActor: drives one session through its phases, one agent attempt at a time.
//!
//! Owns the session folder (held under the worker lock for the actor's whole life) and its
//! state: it alone writes `_state.json`. Where the session stands is one [`Life`], and every
//! message is handled by matching on it, so that an impossible combination (an attempt and a
//! park, a slot and no attempt) cannot be written down:
//!
//! ```text
//! Parked(why) --person--> Ready --RunNext{gen}--> AwaitingSlot --SlotGranted--> Running(flight)
//!      ^                  ^ ^ \--timer (backoff, usage limit)--/                  |     |
//!      |                  | +------------- the attempt's outcome -----------------+     |
//!      |                  +-- Prepared -- Preparing <--RunNext (no worktree yet)        |
//!      +---------------- Cancelling { flight, then } <--------- stop / shutdown --------+
//! ```
//!
//! Accepts `RunNext { generation }` from itself (at once, or from a timer after a retry's
//! backoff or a usage limit; a timer whose generation is not the current one is stale and
//! ignored), `SlotGranted` from the supervisor, `AgentExited` from its AgentProcess (through a
//! derived reference: the agent module never names this type), `Person` (a person's command:
//! applied to the state in memory, then saved), `CheckAnswers` (the daemon saw `_qa.md` change)
//! and `Shutdown` (the worker is stopping: the attempt is stopped, journaled as interrupted, and
//! the actor stops). A session without a worktree has it made in a task of its own before it
//! asks for a slot (`Preparing`: `Claim` records the branch before git makes it, `Prepared`
//! reports), so that a slow checkout holds no slot and no person's command waits on it.
//! Links one AgentProcess child per attempt; one that fails counts as a crashed attempt.
//! Reports to the supervisor through [`SessionReport`]: a slot is asked for before each
//! attempt and given back after it; every park is reported once. Under `samocode run` a parked
//! session's actor stops and lets go of the lock; under the daemon it stays, holding no process
//! and no timer, until a person's command.
//!
//! What follows an attempt is in `outcome.rs`: an accepted signal -> the next iteration or a
//! park; a protocol error -> one retry with the reason in the context, then blocked; a failed
//! process -> capped exponential backoff up to the attempt budget, then failed.

use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use ractor::{
    Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort, SupervisionEvent,
};

use super::context::{self, ContextInput};
use super::name;
use super::open::{SessionArgs, Settled};
use super::person::{self, PersonCommand};
use super::profile;
use super::store::{AttemptFiles, SessionStore, StoreError};
use super::trace::Trace;
use super::worktree;
use crate::agent::process::{AgentArgs, AgentMsg, AgentProcess, Begin};
use crate::agent::{self, AttemptDone, AttemptReport, AttemptSpec};
use crate::config::{AgentSettings, BudgetSettings, ModelChoice, Project, RetryPolicy};
use crate::executor::AttemptExecutor;
use crate::notify::{NotifierHandle, SessionEvent};
use crate::protocol::baseline::Baseline;
use crate::protocol::journal::{HistoryRow, IterationRow, Source};
use crate::protocol::{InFlightRecord, Phase, RunState, SessionState, WaitFor};
use tracing::Instrument;

/// The configuration every session shares.
pub struct SessionActor {
    pub project: Project,
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
    pub supervisor: DerivedActorRef<SessionReport>,
    pub notifier: NotifierHandle,
    /// Stop the actor (and let go of the lock) once the session parks: `samocode run`.
    pub stop_when_parked: bool,
    pub launcher: Arc<dyn AttemptExecutor>,
    /// The default budget of a session, and the prices of models that print none.
    pub budgets: Arc<BudgetSettings>,
    /// Faults to inject for the tests of recovery (SAMOCODE_FAILPOINTS): `kill-after-verdict`
    /// kills the worker with SIGKILL once an attempt's `continue` is journaled, before the
    /// state that follows it is saved; `kill-after-parking-verdict` the same for a verdict of
    /// waiting, blocked or done; `kill-after-parked` once such a verdict's state is saved,
    /// before its notice is safe.
    pub failpoints: Vec<String>,
    /// People are told of parks (a notifier with a sink): a park is marked untold in the state
    /// until its notice is safe.
    pub tells: bool,
}

/// What a session tells its supervisor.
#[derive(Debug)]
pub enum SessionReport {
    /// It parked (waiting, blocked, failed, stopped) or finished.
    Settled { dir: PathBuf, settled: Settled },
    /// It wants to start an agent attempt.
    RequestSlot { dir: PathBuf },
    /// Its attempt is over (or it no longer wants the slot it was granted).
    ReleaseSlot { dir: PathBuf },
    /// What it has cost in all, after each attempt (the fleet budget sums these).
    Spent { dir: PathBuf, cost_usd: f64 },
}

/// Messages of a SessionActor.
#[derive(Debug)]
pub enum SessionMsg {
    /// From itself, at once or from a timer: start the next attempt, if `generation` is still
    /// the current one.
    RunNext { generation: u64 },
    /// From the supervisor: an agent slot is free for this session's next attempt.
    SlotGranted,
    /// From the supervisor: no slot is free; the session waits in the queue.
    SlotQueued,
    /// From its AgentProcess: the attempt is over.
    AgentExited(AttemptDone),
    /// From the supervisor (the CLI or Telegram through the daemon): a person's command, and
    /// who gave it. Replies with a sentence, or an error sentence and the CLI exit code.
    Person {
        command: PersonCommand,
        by: Option<String>,
        /// The park the person saw (a button's), checked against the session's now.
        park: Option<i64>,
        reply: RpcReplyPort<Result<String, (String, u8)>>,
    },
    /// From the supervisor: `_qa.md` may have been answered by hand.
    CheckAnswers,
    /// From the notifier: the notice of park `park` is safe; or (`None`) from a timer under
    /// `samocode run`: no longer wait for it before letting go of the session.
    Told { park: Option<u64> },
    /// From the session's worktree being made in the background: record `branch` as the
    /// session's before git makes it (a crash from then on finds it the session's own).
    Claim {
        branch: String,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// From the session's worktree being made in the background: it is made (or not).
    Prepared {
        id: u64,
        made: Result<Prepared, worktree::WorktreeError>,
        /// The branch the session claimed for it is another's (a branch of the name was made
        /// first, or clashes with one): the claim is dropped.
        disown: bool,
    },
    /// From the supervisor: another actor opened the session's path (its folder was made
    /// again): this one lets go, if the folder it holds is not the one there any more.
    Replaced,
    /// From the supervisor: the worker is stopping.
    Shutdown,
}

/// A worktree made in the background, with its base when the state had none.
#[derive(Debug)]
pub struct Prepared {
    tree: worktree::Worktree,
    base: Option<crate::protocol::state::BaseRef>,
}

impl From<AttemptDone> for SessionMsg {
    fn from(done: AttemptDone) -> SessionMsg {
        SessionMsg::AgentExited(done)
    }
}

impl TryFrom<SessionMsg> for AttemptDone {
    type Error = SessionMsg;
    fn try_from(message: SessionMsg) -> Result<AttemptDone, SessionMsg> {
        match message {
            SessionMsg::AgentExited(done) => Ok(done),
            other => Err(other),
        }
    }
}

/// Where the session stands.
#[derive(Debug)]
pub(super) enum Life {
    /// Waiting for a person, or finished: no process, no timer.
    Parked(Settled),
    /// Runnable: a `RunNext` of the current generation is on its way (now, or from a timer).
    Ready,
    /// The session's worktree is being made (a new session's, or one a Python session lacked),
    /// in a task of its own, holding no slot: a slow checkout (a filter fetching large files)
    /// keeps no other session from its agent and no person's command from this one.
    /// `exit`: the worker stops once it is made.
    Preparing { id: u64, exit: bool },
    /// A slot was asked for and not granted yet.
    AwaitingSlot,
    /// An attempt runs; the session holds a slot.
    Running(Box<InFlight>),
    /// The attempt is being stopped; `then` says what follows once its agent is gone.
    Cancelling { flight: Box<InFlight>, then: Then },
}

/// What a session does once a cancelled attempt is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Park as the state says (stopped by a person).
    Park,
    /// Run again: a person resumed the session while its agent was stopping.
    Rerun,
    /// Stop the actor: the worker is shutting down.
    Exit,
}

/// The attempt in flight.
#[derive(Debug)]
pub(super) struct InFlight {
    /// This attempt's number within the actor, echoed by its report.
    pub(super) id: u64,
    pub(super) agent: ActorRef<AgentMsg>,
    pub(super) files: AttemptFiles,
    pub(super) phase: Phase,
    pub(super) iteration: u32,
    pub(super) attempt: u32,
    /// Tracked files before a read-only phase ran.
    pub(super) baseline: Option<Baseline>,
    /// The attempt's trace span: opened when the agent starts, closed when its report is in.
    pub(super) span: tracing::Span,
    pub(super) started_at: Timestamp,
    /// The profile, model and effort the attempt was started with.
    pub(super) choice: ModelChoice,
    /// How many of the person's notes its context carried.
    pub(super) guidance: usize,
}

pub struct SessionRun {
    pub(super) store: SessionStore,
    pub(super) state: SessionState,
    pub(super) once: bool,
    pub(super) life: Life,
    /// Bumped whenever a scheduled `RunNext` must no longer act (a stop, a resume, a new
    /// schedule).
    pub(super) generation: u64,
    /// Attempts started by this actor, for the flight ids.
    pub(super) flights: u64,
    /// Mark the session failed as soon as the actor starts (the supervisor's restart budget is
    /// spent).
    fail: Option<String>,
    /// Ask the engine to adopt the in-flight attempt when the actor starts.
    pub(super) adopt: bool,
    /// The open spans of the session's trace.
    pub(super) trace: Trace,
    /// The state holds an attempt's verdict that is not saved yet: it is saved with the next
    /// attempt's in-flight record (one write of `_state.json` per iteration), or as soon as the
    /// session has to wait for a slot or stops. A crash before that is made good from the
    /// journals by the next worker (see `recover::take_over`).
    pub(super) unsaved: bool,
    /// The sync of the journal rows the last save carried, running in the background.
    pub(super) syncing: Option<Syncing>,
    /// The journals the rows not yet handed to a sync were appended through.
    pub(super) appended: Vec<super::store::Unsynced>,
    /// The last save was of the state alone ([`SessionRun::save_state`]).
    pub(super) notebook_behind: bool,
    /// The phase whose standing text `_logs/contexts.md` last wrote out whole, by this actor,
    /// and the entry (its attempt's log) that holds it.
    pub(super) standing_journaled: Option<(Phase, String)>,
    /// The entry of `_logs/contexts.md` where this actor last wrote out a long dive and task
    /// (see [`context::JOURNALED_ONCE`]).
    pub(super) dive_journaled: Option<String>,
    /// Why `_qa.md` could not be read, as last said: said again only when it changes.
    pub(super) qa_unreadable: Option<String>,
    /// The worker stops, and this actor goes once the notice of its park is safe.
    pub(super) exiting: bool,
    /// The base of a state without one was looked for (once per actor: where git cannot
    /// tell, it is not asked again at every attempt).
    pub(super) base_sought: bool,
    /// Who stopped the attempt in flight: the stop holds after a verdict taken from it, and
    /// its second history row names them too.
    pub(super) stopped_by: Option<String>,
    /// The usage-limit refusals of the attempts just before, in a row: the waits after
    /// them grow, and people are told once.
    pub(super) limited: Option<Limited>,
    /// The session's own actor, which the notifier tells when a park's notice is safe.
    myself: ActorRef<SessionMsg>,
    /// This actor's worker tells people of parks (see [`SessionActor::tells`]).
    tells: bool,
    /// The park people were last told of (or were told of before this actor opened it).
    told: Option<Settled>,
    /// Parks marked untold by this actor, for the notifier's receipts: one for an older park
    /// does not clear a newer one.
    untold_park: u64,
    /// A person answered `_qa.md` while the attempt in flight ran (by whom): a `waiting` for
    /// answers it then signals finds them all given, and goes on at once.
    pub(super) answered_while_running: Option<String>,
    /// Under `run`: a timer no longer to wait for a park's receipt is set, or has fired.
    told_timer: bool,
    told_waited: bool,
}

/// Usage-limit refusals in a row, and the reset people were last told of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limited {
    pub(super) in_a_row: u32,
    pub(super) told: Timestamp,
}

/// A sync of the journals in the background, and how many of the state's unsynced rows of
/// each journal it makes durable (those appended before it began).
pub(super) struct Syncing {
    // In a Mutex for `Sync` alone: the actor's futures hold `&SessionRun` across awaits.
    done: std::sync::Mutex<std::sync::mpsc::Receiver<Result<(), StoreError>>>,
    iterations: usize,
    history: usize,
}

impl SessionRun {
    /// Saves the state (and the notebook's worker lines): every save of the actor while it
    /// runs goes through here, so a verdict held back for the next save is never saved twice.
    ///
    /// The rows of an accepted `continue` are journaled without waiting for the disk and go
    /// to disk with this save, in the state; their own sync then runs in the background while
    /// the next attempt does, and the first save after it drops them from the state.
    pub(super) fn save(&mut self) -> Result<(), StoreError> {
        self.save_as(true, None)
    }

    /// [`Self::save`], with a Flow Log line written in the same write of the notebook.
    pub(super) fn save_noting(&mut self, entry: &str) -> Result<(), StoreError> {
        self.save_as(true, Some(entry))
    }

    /// Saves the state alone, the notebook's worker lines left for the next [`Self::save`]:
    /// when the session waits for a slot, which at saturation is after nearly every attempt.
    /// The phase line of `_overview.md` then shows the last attempt's phase until the next
    /// one starts (or the session stops).
    pub(super) fn save_state(&mut self) -> Result<(), StoreError> {
        self.save_as(false, None)
    }

    fn save_as(&mut self, notebook: bool, entry: Option<&str>) -> Result<(), StoreError> {
        // A save that parks the session marks it untold until its notice is safe.
        match Settled::of(&self.state) {
            // Runnable again: its next park, of whatever kind, is a new one to tell.
            None => {
                self.state.untold = false;
                self.told = None;
            }
            Some(settled) => {
                if self.tells && self.told.as_ref() != Some(&settled) && !self.state.untold {
                    self.state.untold = true;
                    self.untold_park += 1;
                }
            }
        }
        let open = self.trace.open_after(&self.state);
        if let Some(segment) = &mut self.state.last_trace {
            segment.open = open;
        }
        self.synced()?;
        // A person's rows the journal refused before: journaled now if it takes them, so that
        // this save no longer carries them.
        self.store.journal_waiting(&mut self.state);
        match notebook {
            true => self.store.save_noting(&mut self.state, entry)?,
            false => self.store.save_state(&mut self.state)?,
        }
        self.notebook_behind = !notebook;
        self.unsaved = false;
        if !self.state.unsynced.is_empty() {
            let (done, result) = std::sync::mpsc::sync_channel(1);
            // Through the files the rows were appended with: no second open, and the file
            // synced is the one written. Rows a failed sync left are synced by name.
            let files = std::mem::take(&mut self.appended);
            let dir = self.store.dir().to_path_buf();
            tokio::task::spawn_blocking(move || {
                let _ = done.send(match files.is_empty() {
                    true => super::store::sync_journals(&dir),
                    false => super::store::sync_appended(files),
                });
            });
            self.syncing = Some(Syncing {
                done: std::sync::Mutex::new(result),
                iterations: self.state.unsynced.iterations.len(),
                history: self.state.unsynced.history.len(),
            });
        }
        Ok(())
    }

    /// Waits for the journals' sync in the background, if one runs (it has usually ended
    /// long before: it started when the running attempt did), and drops the rows it made
    /// durable from the state. True when it dropped some.
    pub(super) fn synced(&mut self) -> Result<bool, StoreError> {
        let Some(syncing) = self.syncing.take() else {
            return Ok(false);
        };
        let done = syncing
            .done
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        done.recv().unwrap_or_else(|_| {
            Err(StoreError::Io {
                action: "cannot sync the journals of",
                path: self.store.dir().to_path_buf(),
                source: std::io::Error::other("the sync stopped before its end"),
            })
        })?;
        let rows = &mut self.state.unsynced;
        rows.iterations
            .drain(..syncing.iterations.min(rows.iterations.len()));
        rows.history
            .drain(..syncing.history.min(rows.history.len()));
        Ok(syncing.iterations + syncing.history > 0)
    }

    /// Journals an accepted `continue`'s row without waiting for the disk: the next save
    /// carries it (see [`Self::save`]).
    pub(super) fn journal_unsynced(&mut self, row: IterationRow) -> Result<(), StoreError> {
        let journal = self.store.append_iteration_unsynced(&row)?;
        self.appended.push(journal);
        self.state.unsynced.iterations.push(row);
        Ok(())
    }

    /// See [`Self::journal_unsynced`].
    pub(super) fn history_unsynced(&mut self, row: HistoryRow) -> Result<(), StoreError> {
        let journal = self.store.append_history_unsynced(&row)?;
        self.appended.push(journal);
        self.state.unsynced.history.push(row);
        Ok(())
    }
}

impl SessionActor {
    async fn handle_message(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        // What writes into the session's folder by path checks first that the folder is still
        // the one this actor holds (`RunNext`, `Person` and `AgentExited` check on their way).
        let writes = matches!(
            message,
            SessionMsg::SlotGranted
                | SessionMsg::SlotQueued
                | SessionMsg::CheckAnswers
                | SessionMsg::Told { park: Some(_) }
                | SessionMsg::Claim { .. }
                | SessionMsg::Prepared { .. }
        );
        if writes && self.let_go_if_replaced(&myself, run) {
            if matches!(message, SessionMsg::SlotGranted) {
                self.release_slot(run);
            }
            return Ok(());
        }
        match message {
            SessionMsg::RunNext { generation } => {
                if generation == run.generation && matches!(run.life, Life::Ready) {
                    self.run_next(&myself, run)?;
                }
            }
            SessionMsg::SlotGranted => {
                if matches!(run.life, Life::AwaitingSlot) {
                    self.launch(&myself, run).await?;
                } else {
                    // Granted after the session stopped wanting it: give it back.
                    self.report(SessionReport::ReleaseSlot {
                        dir: run.store.dir().to_path_buf(),
                    });
                }
            }
            SessionMsg::SlotQueued => {
                // Waiting may take a while: what `status` reads must say queued, not running.
                // The notebook's lines are written when the next attempt starts.
                if run.unsaved {
                    run.save_state()?;
                }
            }
            SessionMsg::AgentExited(done) if run.store.replaced() => {
                // Its folder is gone, and the one at its path is another session's: the
                // attempt's end is written into neither.
                let ours = matches!(&run.life,
                    Life::Running(flight) | Life::Cancelling { flight, .. } if flight.id == done.flight);
                if ours {
                    run.life = Life::Ready;
                    self.release_slot(run);
                    tracing::warn!(session = %run.store.dir().display(), "the session's folder was deleted and made again while its attempt ran: the attempt's end is not written into the new folder, and the old session's actor lets it go");
                    myself.stop(Some(STOP_REPLACED.into()));
                }
            }
            SessionMsg::AgentExited(done) => {
                match std::mem::replace(&mut run.life, Life::Ready) {
                    Life::Running(flight) if flight.id == done.flight => {
                        self.attempt_over(&myself, run, *flight, *done.report)
                            .await?;
                    }
                    Life::Cancelling { flight, then } if flight.id == done.flight => {
                        self.cancelled_over(&myself, run, *flight, *done.report, then)
                            .await?;
                    }
                    // The report of an attempt this actor no longer waits for.
                    other => run.life = other,
                }
            }
            SessionMsg::Person {
                command,
                by,
                park,
                reply,
            } => {
                // A button of a message older than the session's park now (a plan written
                // again since, a later round of questions): the person has not seen what it
                // waits on. Checked here, where the park cannot change before the command.
                let stale = park.is_some_and(|seen| Some(seen) != park_of(&run.state));
                let answer = match stale {
                    true => Err((not_its_latest(&run.state.name), 2)),
                    false => self.person(&myself, run, command, by),
                };
                let _ = reply.send(answer);
            }
            SessionMsg::CheckAnswers => {
                let waiting = matches!(
                    run.life,
                    Life::Parked(Settled::Waiting {
                        wait_for: WaitFor::QaAnswers
                    })
                );
                if waiting {
                    match person::wake_on_answers(&run.store, &mut run.state)? {
                        person::Wake::Woken => {
                            run.qa_unreadable = None;
                            run.store
                                .log("the answers in _qa.md are complete; resuming");
                            self.unparked(run, "answered", Some("in _qa.md"));
                            self.wake(&myself, run)?;
                        }
                        // Said once per problem, not at every event of the file.
                        person::Wake::Unreadable(why)
                            if run.qa_unreadable.as_ref() != Some(&why) =>
                        {
                            person::say_unreadable(&run.store, &why);
                            run.qa_unreadable = Some(why);
                        }
                        person::Wake::Unreadable(_) => {}
                        person::Wake::Waits => run.qa_unreadable = None,
                    }
                }
            }
            SessionMsg::Told { park: Some(park) } => {
                if park == run.untold_park && run.state.untold {
                    run.state.untold = false;
                    run.save_state()?;
                }
            }
            SessionMsg::Told { park: None } => run.told_waited = true,
            SessionMsg::Replaced => drop(self.let_go_if_replaced(&myself, run)),
            SessionMsg::Claim { branch, reply } => {
                run.state.branch = Some(branch);
                let _ = reply.send(run.save().map_err(|e| e.to_string()));
            }
            SessionMsg::Prepared { id, made, disown } => {
                self.prepared(&myself, run, id, made, disown)?
            }
            SessionMsg::Shutdown => match std::mem::replace(&mut run.life, Life::Ready) {
                // The checkout under way is let end (cut short, it would leave a half-made
                // worktree on the session's branch).
                Life::Preparing { id, .. } => run.life = Life::Preparing { id, exit: true },
                Life::Running(flight) | Life::Cancelling { flight, .. } => {
                    let _ = flight.agent.send_message(AgentMsg::Cancel);
                    run.life = Life::Cancelling {
                        flight,
                        then: Then::Exit,
                    };
                }
                other => {
                    run.life = other;
                    myself.stop(Some(STOP_SHUTDOWN.into()));
                }
            },
        }
        // Under `run`, a parked session's actor goes and lets go of the lock; under the daemon
        // it stays, holding no process and no timer, until a person's command wakes it.
        // A daemon keeps no actor for a finished session either. Either goes once its notice
        // is safe: gone before, it would leave the park marked untold, and the next worker
        // would tell it again.
        let lets_go = match &run.life {
            Life::Parked(Settled::Done { .. }) => true,
            Life::Parked(_) => self.stop_when_parked || run.exiting,
            _ => false,
        };
        if lets_go {
            if !run.state.untold || run.told_waited {
                myself.stop(Some(STOP_SETTLED.into()));
            } else if !run.told_timer {
                run.told_timer = true;
                myself.send_after(TOLD_WAIT, || SessionMsg::Told { park: None });
            }
        }
        Ok(())
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionRun;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionRun, ActorProcessingErr> {
        let life = match Settled::of(&args.state) {
            // The attempt in flight may still run on a remote engine: `post_start` asks.
            None if args.adopt => Life::Ready,
            // Parked by the open's take-over, untold: the next step settles it, telling people.
            Some(_) if args.announce => {
                myself.send_message(SessionMsg::RunNext { generation: 0 })?;
                Life::Ready
            }
            Some(settled) => Life::Parked(settled),
            None => {
                myself.send_message(SessionMsg::RunNext { generation: 0 })?;
                Life::Ready
            }
        };
        // What the opening said of an unreadable `_qa.md`, so that it is not said again.
        let qa_unreadable = person::unreadable_answers(&args.store, &args.state);
        // A park found untold (its worker died before its notice was safe) is told again.
        let told = Settled::of(&args.state).filter(|_| !args.state.untold);
        Ok(SessionRun {
            store: args.store,
            state: args.state,
            once: args.once,
            life,
            generation: 0,
            flights: 0,
            fail: args.fail,
            adopt: args.adopt,
            trace: Trace::default(),
            unsaved: false,
            syncing: None,
            appended: Vec::new(),
            notebook_behind: false,
            standing_journaled: None,
            dive_journaled: None,
            qa_unreadable,
            exiting: false,
            base_sought: false,
            stopped_by: None,
            limited: None,
            myself,
            tells: self.tells,
            told,
            untold_park: 0,
            answered_while_running: None,
            told_timer: false,
            told_waited: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(segment) = run.state.last_trace.clone().filter(|s| s.open) {
            // Ended by this very process when its actor before this one went down in place.
            if segment.pid != Some(std::process::id()) {
                // Its attempts a take-over journaled as interrupted (this open's, or a person's
                // command's before it) have their spans under it.
                let interrupted = run.store.interrupted_since(segment.started);
                Trace::end_left_open(&run.state, &segment, &interrupted);
            }
            run.save_state()?;
        }
        if let Some(reason) = run.fail.take() {
            run.generation += 1;
            // An attempt left in flight (a remote engine's, not taken over at the open) is
            // journaled, or its verdict taken, before the session is marked failed.
            self.take_over(run)?;
            self.fail(run, reason)?;
        } else if std::mem::take(&mut run.adopt) {
            self.adopt(&myself, run).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        // What is logged while handling a message belongs to the session's open span: its
        // log lines carry the span's fields (the trace id among them).
        let span = run.trace.current();
        self.handle_message(myself, message, run)
            .instrument(span)
            .await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionMsg>,
        event: SupervisionEvent,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        // Overrides ractor's default, which would stop this session whenever an attempt ends.
        // An AgentProcess that failed (or was killed) before reporting is a crashed attempt; its
        // guard has already killed its process group.
        let (who, why) = match event {
            SupervisionEvent::ActorFailed(who, error) => (who, format!("failed: {error}")),
            SupervisionEvent::ActorTerminated(who, _, Some(reason)) if reason == "killed" => {
                (who, "was killed".to_string())
            }
            _ => return Ok(()),
        };
        let ours = match &run.life {
            Life::Running(flight) | Life::Cancelling { flight, .. } => {
                flight.agent.get_id() == who.get_id()
            }
            _ => false,
        };
        if ours {
            let (id, started_at) = match &run.life {
                Life::Running(f) | Life::Cancelling { flight: f, .. } => (f.id, f.started_at),
                _ => unreachable!("checked above"),
            };
            let report = AttemptReport::lost(format!("the agent's watcher {why}"), started_at);
            myself.send_message(SessionMsg::AgentExited(AttemptDone {
                flight: id,
                report: Box::new(report),
            }))?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        if run.store.replaced() {
            // Its folder is gone, and what is at its path is another session's: written by
            // path, the attempt's row or the state would go into that one.
            run.trace.end(None);
            run.store.release();
            return Ok(());
        }
        // Stopped with an attempt still in flight (not through `Shutdown`): ractor kills the
        // agent's actor next, and its guard the process group. Journal the attempt now, while
        // the lock is held; the state still says running, so the next worker runs the
        // iteration again.
        if let Life::Running(flight) | Life::Cancelling { flight, .. } =
            std::mem::replace(&mut run.life, Life::Ready)
        {
            let report = AttemptReport::lost("the worker stopped".into(), flight.started_at);
            self.journal_interrupted(run, &flight, &report);
        }
        // Its spans end with the actor; the state says so, or the next worker would end the
        // segment's span again.
        run.trace.end(Some(&run.state));
        if run.state.last_trace.as_ref().is_some_and(|s| s.open) {
            run.unsaved = true;
        }
        if let Err(error) = self.save_pending(run) {
            tracing::warn!(session = %run.state.name, %error, "cannot save the state at the stop; the next worker takes it from the journals");
        }
        // The state on the disk carries the last rows until their sync has ended; then it is
        // saved without them. Should that fail, the next worker restores what is missing.
        if !run.state.unsynced.is_empty()
            && let Err(error) = run.synced().and_then(|dropped| match dropped {
                true => run.save(),
                false => Ok(()),
            })
        {
            tracing::warn!(session = %run.state.name, %error, "the state still carries the journals' last rows; the next worker checks them");
        }
        run.store.release();
        Ok(())
    }
}

/// The reasons a SessionActor stops itself with; any other end is unexpected.
pub const STOP_SETTLED: &str = "settled";
pub const STOP_SHUTDOWN: &str = "shutdown";

/// How long a `samocode run` waits for its park's notice to be safe before it lets go of the
/// session anyway (it is then told again by the next worker).
const TOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a session actor stopped when its folder was replaced: its supervisor opens the session
/// again, at its path, with that folder's lock.
pub const STOP_REPLACED: &str = "the session's folder was deleted and made again";

/// How often a session parked for a usage limit looks at the wall clock again.
pub(super) const LIMIT_LOOK: std::time::Duration = std::time::Duration::from_secs(60);

impl SessionActor {
    /// The session's path leads to another folder than the one this actor holds locked
    /// (deleted and made again, and perhaps driven by a `run` that holds its lock): acting on
    /// it by path would write into that one without its lock. The actor stops, and its
    /// supervisor opens the session again.
    fn let_go_if_replaced(&self, myself: &ActorRef<SessionMsg>, run: &SessionRun) -> bool {
        if !run.store.replaced() {
            return false;
        }
        tracing::warn!(session = %run.store.dir().display(), "the session's folder was deleted and made again; its actor lets it go");
        myself.stop(Some(STOP_REPLACED.into()));
        true
    }

    /// In `Ready`: waits out a usage limit, or asks for a slot.
    fn run_next(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        if self.let_go_if_replaced(myself, run) {
            return Ok(());
        }
        if let Some(settled) = Settled::of(&run.state) {
            return self.settle(run, settled);
        }
        if let Some(reached) = self.budget_reached(&run.state) {
            return self.block_for_budget(run, reached);
        }
        if let Some(at) = run.state.not_before {
            // Parked for a provider's usage limit: wait out the rest (also after a restart),
            // holding no slot, then run the refused attempt again under its own number.
            let left = Timestamp::now().duration_until(at);
            if left.is_positive() {
                // Looked at again every minute by the wall clock: the timer's clock does not
                // count a machine's sleep, nor the wall clock's steps.
                let left = std::time::Duration::try_from(left).unwrap_or_default();
                self.schedule(myself, run, left.min(LIMIT_LOOK));
                return Ok(());
            }
        }
        if needs_worktree(&run.state) {
            self.prepare(myself, run);
            return Ok(());
        }
        run.life = Life::AwaitingSlot;
        self.report(SessionReport::RequestSlot {
            dir: run.store.dir().to_path_buf(),
        });
        Ok(())
    }

    /// In `Ready`, for a session with no worktree: makes it in a task of its own (see
    /// [`Life::Preparing`]), which asks this actor to record the branch before git makes it
    /// and reports with [`SessionMsg::Prepared`].
    fn prepare(&self, myself: &ActorRef<SessionMsg>, run: &mut SessionRun) {
        run.flights += 1;
        let id = run.flights;
        run.life = Life::Preparing { id, exit: false };
        let project = self.project.clone();
        let folder = run.store.name().to_string();
        let dir = run.store.dir().to_path_buf();
        let claimed = run.state.branch.clone();
        let sought = run.state.base.is_none();
        let actor = myself.clone();
        let work = async move {
            let unsaved = |detail: String| worktree::WorktreeError::Git {
                args: "(saving state)".into(),
                dir: dir.clone(),
                detail,
            };
            let claim = async |branch: &str| {
                let branch = branch.to_string();
                match actor
                    .call(|reply| SessionMsg::Claim { branch, reply }, None)
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(saved)) => saved.map_err(unsaved),
                    _ => Err(unsaved("the session's worker is gone".into())),
                }
            };
            let made = worktree::prepare(
                &project,
                &folder,
                name::short_name(&folder),
                claimed.as_deref(),
                claim,
            )
            .await;
            let disown = claimed.is_none()
                && matches!(
                    made,
                    Err(worktree::WorktreeError::BranchTaken { .. }
                        | worktree::WorktreeError::BranchClash { .. })
                );
            let made = match made {
                Ok(tree) => {
                    let base = match sought {
                        true => worktree::base_of(&project, &tree.path).await,
                        false => None,
                    };
                    Ok(Prepared { tree, base })
                }
                Err(error) => Err(error),
            };
            // Gone (the worker stopped): the next one finds the worktree, on its own branch.
            let _ = actor.send_message(SessionMsg::Prepared { id, made, disown });
        };
        tokio::spawn(work.instrument(run.trace.current()));
    }

    /// The session's worktree is made (or could not be): recorded, then the session goes on
    /// as its state says (stopped by a person meanwhile, it parks so).
    fn prepared(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        id: u64,
        made: Result<Prepared, worktree::WorktreeError>,
        disown: bool,
    ) -> Result<(), ActorProcessingErr> {
        let exit = match run.life {
            Life::Preparing { id: ours, exit } if ours == id => exit,
            _ => return Ok(()),
        };
        run.life = Life::Ready;
        let init = run.state.phase == Phase::Init;
        let failed = match made {
            Ok(Prepared { tree, base }) => {
                run.state.worktree = Some(tree.path.clone());
                run.state.branch = Some(tree.branch.clone());
                if run.state.base.is_none() {
                    run.state.base = base;
                }
                let entry = if init {
                    run.state.enter_phase(Phase::Investigation);
                    format!(
                        "Session initialised: worktree {} on branch {}",
                        tree.path.display(),
                        tree.branch
                    )
                } else {
                    format!(
                        "The session had no worktree samocode could find: made {} on branch {}",
                        tree.path.display(),
                        tree.branch
                    )
                };
                self.save_worktree_entry(run, &entry).err()
            }
            Err(error) => {
                if disown && run.state.branch.is_some() {
                    run.state.branch = None;
                    if let Err(unsaved) = run.save() {
                        run.store.log(&format!(
                            "the branch this session was about to make is another's, and that could not be saved ({unsaved}): do not resume it, start it under another name"
                        ));
                    }
                }
                Some(error)
            }
        };
        if let Some(error) = failed {
            let reason = match init {
                true => format!("init failed: {error}"),
                false => format!("the session has no worktree and none could be made: {error}"),
            };
            if run.state.status.is_runnable() {
                self.block(run, reason, Source::Worker)?;
            } else {
                // A person stopped it meanwhile: it stays stopped, and tries again at its resume.
                run.store.log(&reason);
            }
        }
        if exit {
            let _ = self.save_pending(run);
            myself.stop(Some(STOP_SHUTDOWN.into()));
            return Ok(());
        }
        match run.life {
            Life::Ready => self.run_next(myself, run),
            _ => Ok(()),
        }
    }

    /// Saves a verdict the state holds and has not saved yet, or the notebook's lines a
    /// state-only save left behind.
    pub(super) fn save_pending(&self, run: &mut SessionRun) -> Result<(), StoreError> {
        match run.unsaved || run.notebook_behind {
            true => run.save(),
            false => Ok(()),
        }
    }

    /// A `RunNext` after `delay`, of a new generation (earlier timers go stale).
    pub(super) fn schedule(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        delay: std::time::Duration,
    ) {
        run.generation += 1;
        run.life = Life::Ready;
        let generation = run.generation;
        if delay.is_zero() {
            // Sent, not timed: a zero timer still waits for the timer wheel's next tick (up
            // to a millisecond, which was a quarter of the worker's cost per iteration).
            let _ = myself.send_message(SessionMsg::RunNext { generation });
        } else {
            myself.send_after(delay, move || SessionMsg::RunNext { generation });
        }
    }

    /// Takes over the attempt a dead worker, or a remote engine, left in flight (see
    /// `recover::take_over`).
    pub(super) fn take_over(&self, run: &mut SessionRun) -> Result<(), StoreError> {
        super::recover::take_over(
            &run.store,
            &mut run.state,
            self.launcher.as_ref(),
            &self.budgets.prices,
        )
    }

    /// Makes a parked (or stopping) session run again after a person's command.
    pub(super) fn wake(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        match &mut run.life {
            Life::Parked(_) | Life::Ready => self.schedule(myself, run, std::time::Duration::ZERO),
            Life::Cancelling { then, .. } if *then == Then::Park => *then = Then::Rerun,
            Life::Preparing { .. }
            | Life::AwaitingSlot
            | Life::Running(_)
            | Life::Cancelling { .. } => {}
        }
        Ok(())
    }

    /// In `AwaitingSlot`, with the slot granted: starts the attempt.
    async fn launch(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
    ) -> Result<(), ActorProcessingErr> {
        run.answered_while_running = None;
        if needs_worktree(&run.state) {
            // Made before a slot is asked for (`run_next`); should one be missing here, it is
            // made now, and the slot asked for again once it is.
            self.release_slot(run);
            self.prepare(myself, run);
            return Ok(());
        }
        if let Err(error) = self.restore_worktree(run).await {
            self.release_slot(run);
            return self.block(run, error.to_string(), Source::Worker);
        }
        let workdir = run
            .state
            .worktree
            .clone()
            .unwrap_or_else(|| self.project.main_repo.clone());
        // A read-only phase's tracked files before its attempt: on a worktree git cannot read,
        // the rule could not be checked, so no attempt runs.
        let baseline = if run.state.phase.rules().read_only {
            match worktree::baseline(&workdir).await {
                Ok(baseline) => Some(baseline),
                Err(error) => {
                    self.release_slot(run);
                    let reason = format!(
                        "worktree_unreadable: the {} phase may only read the worktree, and git cannot read it to check that ({error}); put it right (`git -C {} status` shows what is wrong), then `samocode resume`",
                        run.state.phase,
                        crate::protocol::shell_path(&workdir)
                    );
                    return self.block(run, reason, Source::Worker);
                }
            }
        } else {
            None
        };
        // What the attempt's start changes, put back should its start not reach the disk.
        let before = Counters::of(&run.state);
        let state = &mut run.state;
        let refused_before = state.not_before.take().is_some() && state.attempt > 0;
        if refused_before {
            // The attempt the provider refused runs again; it keeps its number.
        } else if state.attempt == 0 {
            let max = state.phase.rules().max_iterations;
            if state.phase_iteration >= max {
                let reason = format!(
                    "iteration_limit_exceeded: the {} phase used all {max} of its iterations",
                    state.phase
                );
                self.release_slot(run);
                return self.block(run, reason, Source::Worker);
            }
            state.iteration += 1;
            state.phase_iteration += 1;
            state.attempt = 1;
            state.failures = 0;
        } else {
            // A retry, or an attempt after one the previous worker's end interrupted.
            state.attempt += 1;
        }
        state.status = RunState::Running;
        run.store.remove_signal()?;
        let files = run
            .store
            .attempt_files(state.iteration, state.phase, state.attempt)?;
        let memory = context::memory_for(self.agent.provider, &workdir);
        let (text, own) = context::render_parts(&ContextInput {
            state,
            session_dir: run.store.dir(),
            workdir: &workdir,
            time_limit: self.agent.timeout,
            now: Timestamp::now(),
            memory: memory.as_deref(),
        });
        // A context too large for one argument goes by file; every context is journaled.
        if text.len() > context::INLINE_LIMIT {
            std::fs::write(&files.context, &text)?;
        }
        // The journal of contexts writes the standing text (workflow.md and the skill) out once
        // per run of a phase in this process, and points back to it after.
        let log = files.relative_log();
        let dive = context::dive_and_task(state);
        let mut own_part = std::borrow::Cow::Borrowed(&text[..own]);
        let long_dive = dive.len() > context::JOURNALED_ONCE;
        if long_dive && let Some(earlier) = &run.dive_journaled {
            own_part = own_part
                .replacen(&dive, &context::dive_and_task_as_in(earlier), 1)
                .into();
        }
        let dive_written_here = long_dive && run.dive_journaled.is_none();
        match &run.standing_journaled {
            Some((phase, earlier)) if *phase == state.phase => {
                let rest = context::standing_as_in(earlier);
                run.store.append_context(&log, &own_part, &rest)?;
            }
            _ => {
                run.store
                    .append_context(&log, &format!("{own_part}{}", &text[own..]), "")?;
                run.standing_journaled = Some((state.phase, log.clone()));
            }
        }
        // Named by later entries only once it is written.
        if dive_written_here {
            run.dive_journaled = Some(log);
        }
        // The model is decided once per attempt: the phase's profile (or its plan's), then the
        // provider's model for it, unless CLAUDE_MODEL names one.
        let picked = profile::pick(state.phase, run.store.dir());
        let choice = self.agent.choose(picked.profile);
        let settings = self.agent.for_attempt(&choice);
        let command = agent::command(&settings, &text, &files.context, &workdir);
        let span = run.trace.attempt(
            state,
            &self.agent.provider.to_string(),
            choice.model.as_str(),
            choice.profile.name(),
            choice.effort.as_str(),
        );
        // After the span (and the segment it may open): an attempt of a segment starts within
        // it, which is how the segment's interrupted attempt is found (`interrupted_since`).
        let started_at = Timestamp::now();
        if let Some(opened) = run.trace.opened() {
            // Saved with the in-flight record: the next segment's trace links to this one,
            // and should this process die, the next one ends the span in its place.
            state.last_trace = Some(opened);
        }
        // Recorded before the agent starts: a worker that dies from here on leaves what the
        // next one needs to find the agent's processes and journal the attempt.
        state.in_flight = Some(InFlightRecord {
            log: files.relative_log(),
            started_at,
            worker_pid: std::process::id(),
            provider: self.agent.provider.to_string(),
            model: Some(choice.model.clone()),
            profile: Some(choice.profile),
            effort: Some(choice.effort.clone()),
            baseline: baseline.clone(),
            notes: state.guidance.len(),
            limit_secs: Some((self.agent.timeout + self.agent.kill_grace).as_secs()),
        });
        if let Err(error) = run.save() {
            let StoreError::Unreadable(unreadable) = error else {
                return Err(error.into());
            };
            // The notebook cannot be read or written (too large, not UTF-8, a link): a
            // person's to mend, and no attempt runs until then.
            before.put_back(&mut run.state);
            self.release_slot(run);
            return self.block(run, unreadable.to_string(), Source::Worker);
        }
        let log = run.store.create_log(&files)?;
        let state = &run.state;
        run.store.log(&format!(
            "iteration {} ({} #{}) attempt {} started: {} (profile {}{}, model {})",
            state.iteration,
            state.phase,
            state.phase_iteration,
            state.attempt,
            files.relative_log(),
            choice.profile,
            picked
                .plan
                .map(|plan| format!(" from {plan}"))
                .unwrap_or_default(),
            choice.model,
        ));
        self.notify(
            run,
            SessionEvent::AttemptStarted {
                session: state.name.clone(),
                phase: state.phase,
                iteration: state.iteration,
                attempt: state.attempt,
            },
        );
        let spec = AttemptSpec {
            command,
            files: files.clone(),
            timeout: self.agent.timeout,
            kill_grace: self.agent.kill_grace,
            stall: self.agent.stall_timeout,
            session_dir: run.store.dir().to_path_buf(),
            attempt_id: files.relative_log(),
            context: text,
        };
        run.flights += 1;
        let id = run.flights;
        let (agent, _) = Actor::spawn_linked(
            None,
            AgentProcess,
            AgentArgs {
                spec,
                flight: id,
                report_to: myself.get_derived(),
                launcher: self.launcher.clone(),
                begin: Begin::New { log },
            },
            myself.get_cell(),
        )
        .await?;
        run.life = Life::Running(Box::new(InFlight {
            id,
            agent,
            files,
            phase: state.phase,
            iteration: state.iteration,
            attempt: state.attempt,
            baseline,
            span,
            started_at,
            choice,
            guidance: state.guidance.len(),
        }));
        Ok(())
    }

    /// A worktree deleted by hand is made again from the session's branch (what was not
    /// committed is gone with the folder), and the Flow Log says so.
    async fn restore_worktree(&self, run: &mut SessionRun) -> Result<(), worktree::WorktreeError> {
        let (Some(path), Some(branch)) = (run.state.worktree.clone(), run.state.branch.clone())
        else {
            return Ok(());
        };
        let tree = worktree::Worktree { path, branch };
        // A few small reads of git's files per attempt on the common path; git runs only
        // when the folder is gone.
        if tree.path.exists() {
            worktree::check_own(&tree, &self.project.main_repo).await?;
            // A state derived again (a Python session's, one deleted or moved away) has no
            // base: the branch's fork point from the base branch, looked for once by this
            // actor and saved with the attempt's record.
            if run.state.base.is_none() && !run.base_sought {
                run.base_sought = true;
                run.state.base = worktree::base_of(&self.project, &tree.path).await;
            }
            return Ok(());
        }
        // Not where the state says, but where WORKTREES puts it now (the project moved, or
        // WORKTREES changed): the session goes on there, once it is its own; it is not made
        // again at the old place.
        // Where WORKTREES puts it now, or where a person moved it with `git worktree move`.
        let mut here = self.project.worktrees.join(run.store.name());
        if !here.exists()
            && let Some(moved) =
                worktree::moved_to(&self.project.main_repo, &tree.branch, &tree.path).await
        {
            here = moved;
        }
        if here != tree.path && here.exists() {
            let moved = worktree::Worktree {
                path: here,
                branch: tree.branch.clone(),
            };
            worktree::check_own(&moved, &self.project.main_repo).await?;
            run.state.worktree = Some(moved.path.clone());
            let entry = format!(
                "Worktree {} is not there; the session goes on in {}, where its branch is checked out now",
                tree.path.display(),
                moved.path.display()
            );
            run.store.log(&entry);
            return run
                .save_noting(&entry)
                .map_err(|e| worktree::WorktreeError::Git {
                    args: "(saving state)".into(),
                    dir: run.store.dir().to_path_buf(),
                    detail: e.to_string(),
                });
        }
        if worktree::restore(&self.project, &tree).await? {
            let entry = format!(
                "Worktree {} was missing; made again from branch {} (changes not committed were lost with it)",
                tree.path.display(),
                tree.branch
            );
            run.store.log(&entry);
            run.save_noting(&entry)
                .map_err(|e| worktree::WorktreeError::Git {
                    args: "(saving state)".into(),
                    dir: run.store.dir().to_path_buf(),
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }

    fn save_worktree_entry(
        &self,
        run: &mut SessionRun,
        entry: &str,
    ) -> Result<(), worktree::WorktreeError> {
        run.store
            .save_noting(&mut run.state, Some(entry))
            .map_err(|e| worktree::WorktreeError::Git {
                args: "(saving state)".into(),
                dir: run.store.dir().to_path_buf(),
                detail: e.to_string(),
            })?;
        run.store.log(entry);
        Ok(())
    }

    /// Applies a person's command with the lock this actor holds, and acts on the result.
    fn person(
        &self,
        myself: &ActorRef<SessionMsg>,
        run: &mut SessionRun,
        command: PersonCommand,
        by: Option<String>,
    ) -> Result<String, (String, u8)> {
        if self.let_go_if_replaced(myself, run) {
            return Err((
                format!(
                    "session {} was deleted and made again since this daemon opened it: nothing was done; the daemon opens it anew now, then give the command again",
                    run.store.dir().display()
                ),
                1,
            ));
        }
        if std::fs::symlink_metadata(run.store.dir())
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err((
                format!(
                    "the folder of session {} is gone (moved or deleted): nothing was done; put it back, or `samocode status` shows what the daemon knows of it",
                    run.state.name
                ),
                1,
            ));
        }
        let raise = match &command {
            PersonCommand::Resume => Some(crate::protocol::budget::Budget::default()),
            PersonCommand::RaiseBudget { budget } => Some(*budget),
            _ => None,
        };
        if let Some(raise) = raise
            && let Some(refused) = self.resume_refused(&run.state, &raise)
        {
            return Err((refused, 2));
        }
        let before = match &run.life {
            Life::Parked(settled) => Some(settled.clone()),
            _ => None,
        };
        let mut message = person::apply(&run.store, &mut run.state, &command, by.as_deref())
            .map_err(|e| (e.to_string(), e.exit_code()))?;
        if let PersonCommand::Answer { .. } = &command
            && matches!(run.life, Life::Running(_))
        {
            run.answered_while_running = Some(by.clone().unwrap_or_else(|| "a person".into()));
        }
        if let PersonCommand::Tell { now: true, .. } = &command {
            message = match &run.life {
                Life::Running(_)
                | Life::Cancelling {
                    then: Then::Rerun, ..
                } => format!(
                    "noted for {}: its attempt in flight is stopped and runs again with the note",
                    run.state.name
                ),
                _ => format!("{message} (no attempt was running to stop)"),
            };
        }
        // The notice of the park the session leaves is closed: who did what, and when.
        if before.is_some() && before != Settled::of(&run.state) {
            self.unparked(run, command.done(), by.as_deref());
        }
        match (&command, std::mem::replace(&mut run.life, Life::Ready)) {
            (PersonCommand::Stop, Life::Running(flight)) => {
                run.stopped_by = by.clone();
                let _ = flight.agent.send_message(AgentMsg::Cancel);
                run.life = Life::Cancelling {
                    flight,
                    then: Then::Park,
                };
            }
            (PersonCommand::Stop, Life::Cancelling { flight, then }) => {
                let then = if then == Then::Exit {
                    Then::Exit
                } else {
                    Then::Park
                };
                run.life = Life::Cancelling { flight, then };
            }
            // The checkout is let end; the stop holds once it is made (see `prepared`).
            (PersonCommand::Stop, life @ Life::Preparing { .. }) => run.life = life,
            (PersonCommand::Stop, _) => {
                // Timers of the old life are stale from now on.
                run.generation += 1;
                let _ = self.settle(run, Settled::Stopped);
            }
            (PersonCommand::Tell { now: true, .. }, Life::Running(flight)) => {
                // The attempt is stopped and run again, with the note.
                let _ = flight.agent.send_message(AgentMsg::Cancel);
                run.life = Life::Cancelling {
                    flight,
                    then: Then::Rerun,
                };
            }
            (_, life) => {
                run.life = life;
                if run.state.status.is_runnable() {
                    let _ = self.wake(myself, run);
                } else if let (Life::Parked(now), Some(settled)) =
                    (&run.life, Settled::of(&run.state))
                    && *now != settled
                {
                    // Still parked, on another condition (stopped at a gate that is still
                    // closed waits again): people hear of it.
                    let _ = self.settle(run, settled);
                }
            }
        }
        Ok(message)
    }

    /// Tells the notifier the session left its park: `what` was done, `by` whom.
    pub(super) fn unparked(&self, run: &mut SessionRun, what: &str, by: Option<&str>) {
        run.trace.decided(what, by);
        let at = jiff::Zoned::now().strftime("%H:%M").to_string();
        let line = match by {
            Some(by) => format!("{what} {by} {at}"),
            None => format!("{what} {at}"),
        };
        self.notify(
            run,
            SessionEvent::Unparked {
                session: run.state.name.clone(),
                line,
            },
        );
    }

    /// Parks the session and tells the supervisor and the notifier, once per park.
    pub(super) fn settle(
        &self,
        run: &mut SessionRun,
        settled: Settled,
    ) -> Result<(), ActorProcessingErr> {
        run.life = Life::Parked(settled.clone());
        let waiting = match &settled {
            Settled::Waiting { wait_for } => Some(*wait_for),
            _ => None,
        };
        run.trace.parked(&run.state, waiting);
        let questions = match &settled {
            Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            } => open_questions(&run.store),
            _ => Vec::new(),
        };
        let ask = match (&settled, &run.state.status) {
            (
                Settled::Waiting {
                    wait_for: WaitFor::HumanAction,
                },
                _,
            ) => run
                .store
                .read(super::store::OVERVIEW)
                .ok()
                .flatten()
                .and_then(|text| crate::protocol::overview::parse(&text).next),
            (
                _,
                RunState::Blocked {
                    needs: Some(needs), ..
                },
            ) => Some(format!("needs {needs}")),
            (Settled::Done { .. }, _) if !run.state.guidance.is_empty() => {
                Some(unread_notes(&run.state.guidance))
            }
            _ => None,
        };
        let event = SessionEvent::Settled {
            session: run.state.name.clone(),
            phase: run.state.phase,
            settled: settled.clone(),
            questions,
            ask,
            park: park_of(&run.state),
        };
        run.told = Some(settled.clone());
        if run.state.untold {
            let (myself, park) = (run.myself.clone(), run.untold_park);
            let told = crate::notify::Told::new(move || {
                let _ = myself.send_message(SessionMsg::Told { park: Some(park) });
            });
            self.notifier.deliver_told(run.store.dir(), event, told);
        } else {
            self.notify(run, event);
        }
        self.report(SessionReport::Settled {
            dir: run.store.dir().to_path_buf(),
            settled,
        });
        Ok(())
    }

    pub(super) fn release_slot(&self, run: &SessionRun) {
        self.report(SessionReport::ReleaseSlot {
            dir: run.store.dir().to_path_buf(),
        });
    }

    fn report(&self, report: SessionReport) {
        if self.supervisor.send_message(report).is_err() {
            tracing::debug!("the supervisor is gone");
        }
    }

    pub(super) fn notify(&self, run: &SessionRun, event: SessionEvent) {
        self.notifier.deliver(run.store.dir(), event);
    }
}

/// A session with no worktree yet: new (in init), or one the Python samocode began whose
/// worktree was not found. Its agents never work in the main checkout.
fn needs_worktree(state: &SessionState) -> bool {
    state.phase == Phase::Init || state.worktree.is_none()
}

/// Why a press of a button of a message that is not `session`'s latest is refused.
pub fn not_its_latest(session: &str) -> String {
    format!(
        "this message of {session} is not its latest (it waits on something newer, or the message is another project's session of that name); use the buttons of its latest message"
    )
}

/// A session's park, as a button names it: the millisecond it entered its parked state.
/// (A finished session has no park: nothing it waits on could be pressed for.)
pub fn park_of(state: &SessionState) -> Option<i64> {
    match state.status {
        RunState::Done { .. } => None,
        _ => state.status.since().map(|at| at.as_millisecond()),
    }
}

/// What a finished session says of the notes people gave during its last iteration, which no
/// iteration read.
pub(super) fn unread_notes(notes: &[crate::protocol::state::Guidance]) -> String {
    let quoted: Vec<String> = notes.iter().map(|n| format!("\"{}\"", n.text)).collect();
    format!(
        "{} came while its last iteration ran, and no iteration read {}: {}",
        match notes.len() {
            1 => "a note".to_string(),
            n => format!("{n} notes"),
        },
        if notes.len() == 1 { "it" } else { "them" },
        quoted.join("; ")
    )
}

/// The open questions of `_qa.md`, as a notice offers them.
fn open_questions(store: &SessionStore) -> Vec<crate::notify::Asked> {
    let Ok(Some(text)) = store.read(super::store::QA) else {
        return Vec::new();
    };
    crate::protocol::qa::QaDoc::parse(&text)
        .open()
        .map(|q| crate::notify::Asked {
            round: q.round,
            number: q.number,
            text: q.text.clone(),
            options: q.options.clone(),
            suggested: q.suggested.clone(),
        })
        .collect()
}

/// The counters an attempt's start changes.
#[derive(Clone, Copy)]
struct Counters {
    iteration: u32,
    phase_iteration: u32,
    attempt: u32,
    failures: u32,
}

impl Counters {
    fn of(state: &SessionState) -> Counters {
        Counters {
            iteration: state.iteration,
            phase_iteration: state.phase_iteration,
            attempt: state.attempt,
            failures: state.failures,
        }
    }

    /// Puts the counters back, with no attempt in flight.
    fn put_back(self, state: &mut SessionState) {
        state.iteration = self.iteration;
        state.phase_iteration = self.phase_iteration;
        state.attempt = self.attempt;
        state.failures = self.failures;
        // The session blocks: a usage limit's wait it had is over.
        state.not_before = None;
        state.in_flight = None;
    }
}
