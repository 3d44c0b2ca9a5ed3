//! Opening a session for a worker: finding or creating its folder, taking its lock, loading
//! (or deriving, or creating) its state, and saying how it stands.

use jiff::Timestamp;

use super::person;
use super::store::{SessionStore, StoreError};
use super::{name, worktree};
use crate::config::{Prices, Project};
use crate::executor::AttemptExecutor;
use crate::protocol::{Phase, RunState, SessionState};

/// How a session stands when it stops needing the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Done {
        summary: Option<String>,
    },
    Waiting {
        wait_for: crate::protocol::WaitFor,
    },
    Blocked {
        reason: String,
    },
    Failed {
        reason: String,
    },
    Stopped,
    /// `--once`: one iteration was accepted and the session can go on.
    Continued {
        phase: Phase,
    },
}

impl Settled {
    /// The settled condition of a parked or finished state; `None` while it can run.
    pub fn of(state: &SessionState) -> Option<Settled> {
        match &state.status {
            RunState::Queued | RunState::Running => None,
            RunState::Waiting { wait_for, .. } => Some(Settled::Waiting {
                wait_for: *wait_for,
            }),
            RunState::Blocked { reason, .. } => Some(Settled::Blocked {
                reason: reason.clone(),
            }),
            RunState::Done { summary, .. } => Some(Settled::Done {
                summary: summary.clone(),
            }),
            RunState::Failed { reason, .. } => Some(Settled::Failed {
                reason: reason.clone(),
            }),
            RunState::Stopped { .. } => Some(Settled::Stopped),
        }
    }

    /// A few words for a person.
    pub fn describe(&self) -> String {
        match self {
            Settled::Done { .. } => "done".into(),
            Settled::Waiting { wait_for } => format!("waiting for {wait_for}"),
            Settled::Blocked { reason } => format!("blocked: {reason}"),
            Settled::Failed { reason } => format!("failed: {reason}"),
            Settled::Stopped => "stopped".into(),
            Settled::Continued { phase } => format!("continues in {phase}"),
        }
    }
}

/// Startup input: the locked folder and its state, as [`open`] found them.
pub struct SessionArgs {
    pub store: SessionStore,
    pub state: SessionState,
    /// Run one iteration, then settle as `Continued`.
    pub once: bool,
    /// Mark the session failed for this reason as soon as its actor starts (its supervisor
    /// gave up restarting it); only the session's own actor writes its state.
    pub fail: Option<String>,
    /// The state's in-flight attempt may still run on a remote engine: the actor asks the
    /// engine to adopt it before it gives it up as interrupted (see `adopt.rs`).
    pub adopt: bool,
    /// The session is parked and nobody was told (`untold` in its state: a worker died before
    /// its notice was safe, or the open's take-over parked it; or the daemon listed it broken,
    /// closing its gate's message): its actor tells people.
    pub announce: bool,
}

impl std::fmt::Debug for SessionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionArgs")
            .field("dir", &self.store.dir())
            .field("phase", &self.state.phase)
            .finish_non_exhaustive()
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Name(#[from] name::NameError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A daemon drives another project's session of the same folder name: the dashboard and
    /// Telegram name sessions by folder, so two would be one to them.
    #[error(
        "this daemon holds another project's session {folder} ({}); the dashboard and Telegram know sessions by that name, so it cannot hold this one too: {}",
        .other.display(),
        if *.exists {
            "continue this project's session with `samocode run --session NAME` from its directory"
        } else {
            "give the new session another name (`--session OTHER-NAME`)"
        }
    )]
    NameTaken {
        folder: String,
        /// The folder of the session that holds the name.
        other: std::path::PathBuf,
        /// This project's session of that name exists already.
        exists: bool,
    },
    /// A new session needs both texts.
    #[error("session {0} does not exist yet: a new session needs --dive TEXT and --task TEXT")]
    NeedsDiveAndTask(String),
    /// Budget flags for a session its budget blocked: a raise, with its checks, is the way.
    #[error(
        "session {0} is blocked by its budget; raise it with `samocode resume {0} --raise-budget WORD=VALUE` (cost=, iterations=, time=), then run it: the --max-* flags set the budget of a session its budget does not block; nothing was changed"
    )]
    BlockedByBudget(String),
    /// Budget flags for a finished session: there is nothing left for a budget to hold.
    #[error(
        "session {0} is done: a budget holds nothing back there, and nothing was changed; start a new session for more work"
    )]
    BudgetOfDone(String),
}

/// A request to drive a session.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub project: Project,
    pub name: String,
    pub dive: Option<String>,
    pub task: Option<String>,
    pub once: bool,
    /// The budget the command line gave (`--max-cost` ...): it replaces those limits of the
    /// session's own budget in `_state.json`.
    pub budget: crate::protocol::budget::Budget,
}

/// Whether a session of the project other than the one in `own` records `path` as its
/// worktree.
fn worktree_of_another(project: &Project, own: &std::path::Path, path: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(&project.sessions) else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|dir| dir != own && dir.join(super::store::STATE).is_file())
        .filter_map(|dir| super::SessionFolder::new(dir).load_state().ok())
        .any(|state| {
            state
                .worktree
                .is_some_and(|tree| worktree::same_dir(&tree, path))
        })
}

/// Where `request`'s session name leads (an existing folder, or where a new one goes),
/// made nowhere.
pub fn resolve(project: &Project, request: &StartRequest) -> Result<name::Resolved, OpenError> {
    let today = jiff::Zoned::now().strftime("%y-%m-%d").to_string();
    Ok(name::resolve(&project.sessions, &request.name, &today)?)
}

/// Saves the state of a Python samocode session, just derived from its `_overview.md`, as its
/// first `_state.json`, with the worktree its notebook names (or one at the session's place),
/// so that its work goes on where it was. Whatever first writes such a state calls this: a
/// person's command before the first `run` too, or the worktree would be lost.
pub fn adopt_legacy(
    project: &Project,
    store: &SessionStore,
    state: &mut SessionState,
) -> Result<(), StoreError> {
    let named = store
        .read(super::store::OVERVIEW)
        .ok()
        .flatten()
        .and_then(|text| crate::protocol::overview::legacy_working_dir(&text))
        // One worktree, one session: one another session works in is not taken.
        .filter(|path| !worktree_of_another(project, store.dir(), path));
    if let Some(tree) = worktree::adopt(project, &store.name(), named.as_deref()) {
        state.worktree = Some(tree.path);
        state.branch = Some(tree.branch);
    }
    store.log(match store.has_journals() {
        true => "state derived from _overview.md and the journals (_state.json was missing)",
        false => "state derived from a Python samocode _overview.md",
    });
    store.save(state)
}

/// A session whose state names another folder, renamed: it takes its folder's name (its
/// worktree and branch stay as they are). A copy beside a folder that records the same
/// worktree never gets here: [`super::SessionFolder::load_state`] refuses it.
fn named_after_its_folder(store: &SessionStore, state: &mut SessionState) -> Result<(), OpenError> {
    let folder = store.name();
    store.log(&format!(
        "the session's folder was renamed from {} to {folder}: it goes on under its new name (its worktree and branch stay as they were)",
        state.name
    ));
    state.name = folder;
    store.save(state)?;
    Ok(())
}

/// Finds or creates the session folder, takes its lock, takes over from a worker that died
/// mid-attempt ([`take_over`]), and loads (or derives, or creates) its state. A session waiting
/// for answers that are all given becomes runnable here. Blocking: file IO and, for a locked
/// folder, short waits; run it off the async threads.
pub fn open(
    project: &Project,
    request: &StartRequest,
    launcher: &dyn AttemptExecutor,
    prices: &Prices,
) -> Result<(Box<SessionArgs>, Option<Settled>), OpenError> {
    open_resolved(
        project,
        request,
        resolve(project, request)?,
        launcher,
        prices,
    )
}

/// [`open`], with the name already resolved ([`resolve`]).
pub fn open_resolved(
    project: &Project,
    request: &StartRequest,
    resolved: name::Resolved,
    launcher: &dyn AttemptExecutor,
    prices: &Prices,
) -> Result<(Box<SessionArgs>, Option<Settled>), OpenError> {
    name::check_texts(&resolved, request.dive.as_deref(), request.task.as_deref())?;
    let now = Timestamp::now();
    let (store, mut state) = match resolved {
        name::Resolved::New(dir) => {
            let (Some(dive), Some(task)) = (&request.dive, &request.task) else {
                return Err(OpenError::NeedsDiveAndTask(request.name.clone()));
            };
            let folder = dir.file_name().unwrap_or_default().to_string_lossy();
            let mut state = SessionState::new(&folder, dive, task, now);
            state.budget = request.budget;
            let store = SessionStore::create_whole(&dir, |store| {
                store.save(&mut state)?;
                store.log("session created");
                Ok(())
            })?;
            (store, state)
        }
        name::Resolved::Existing(dir) => {
            let store = super::SessionFolder::new(dir).lock()?;
            let had_state = store.read(super::store::STATE)?.is_some();
            let mut state = match store.load_state() {
                Ok(state) => state,
                Err(error) => {
                    // Unreadable, but an agent of a dead worker may still run for it.
                    super::recover::kill_leftovers(&store, launcher);
                    return Err(error.into());
                }
            };
            // Rows whose sync had not ended when the machine stopped: the state carried them.
            let restored = match !state.unsynced.is_empty() || state.in_flight.is_some() {
                true => store.restore_unsynced(&mut state)?,
                false => 0,
            };
            if restored > 0 {
                store.log(&format!(
                    "{restored} journal row(s) the journals lacked (a machine's stop, or a full disk) restored from the state"
                ));
            }
            if !had_state {
                adopt_legacy(project, &store, &mut state)?;
            }
            if had_state && state.name != store.name() {
                named_after_its_folder(&store, &mut state)?;
            }
            if !request.budget.is_empty() {
                // The flags would change the budget with none of a raise's checks, and leave
                // the session blocked by the limit they replaced.
                if let RunState::Blocked { reason, .. } = &state.status
                    && crate::protocol::budget::is_budget_reason(reason)
                {
                    return Err(OpenError::BlockedByBudget(store.name()));
                }
                if let RunState::Done { .. } = &state.status {
                    return Err(OpenError::BudgetOfDone(store.name()));
                }
                state.budget = state.budget.merged(&request.budget);
                store.save(&mut state)?;
                store.log(&format!(
                    "budget set from the command line: {}",
                    crate::config::describe_budget(&state.budget)
                ));
            }
            // A remote engine may still run the attempt: the session's actor asks it first.
            if !(launcher.adopts() && state.in_flight.is_some()) {
                super::recover::take_over(&store, &mut state, launcher, prices)?;
            }
            (store, state)
        }
    };
    let woken = person::wake_on_answers(&store, &mut state).map_err(|e| match e {
        person::ActError::Store(e) => OpenError::Store(e),
        other => OpenError::Store(StoreError::Io {
            action: "cannot resume",
            path: store.dir().to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        }),
    })?;
    if let person::Wake::Unreadable(why) = &woken {
        person::say_unreadable(&store, why);
    }
    let settled = Settled::of(&state);
    // Parked by a worker that died before its notice was safe, or by the take-over of a dead
    // worker's attempt: nobody has told people yet.
    let announce = state.untold && settled.is_some();
    let state_in_flight = launcher.adopts() && state.in_flight.is_some();
    Ok((
        Box::new(SessionArgs {
            store,
            state,
            once: request.once,
            fail: None,
            adopt: state_in_flight,
            announce,
        }),
        settled,
    ))
}
