//! The one task that notices what changes in the fleet, for every open page at once.
//!
//! The daemon has no event bus, so the watcher looks: once per [`TICK`] it asks the supervisor
//! for the sessions it owns (the same `status` control request as the CLI) and stats each one's
//! `_state.json`, `_overview.md` and `_qa.md` (a partial answer changes only that). Only a
//! session whose files changed (inode, size or modification time), or whose state could not be
//! read last time, is read again. A session that cannot be read, or that the daemon could not
//! open, is shown as `error` with why, as `samocode status` shows it. When anything changed, it publishes a new [`Fleet`]
//! snapshot (what a page renders from) and sends one [`Change`] through a broadcast channel;
//! the HTML of the changed rows is rendered here, once, not once per page. For each session
//! that an open page shows (its [`Interest`]), it also watches the newest attempt log and
//! announces its growth; the session page reads the new bytes itself. The `_logs` folder of a
//! long session holds thousands of files, so it is listed again only when its own modification
//! time says a file was added.
//!
//! The file work of a tick runs on the blocking pool: a thousand sessions are two thousand
//! `stat` calls, which must not hold up the runtime's workers.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ractor::ActorRef;
use tokio::sync::{broadcast, watch};

use super::pages;
use crate::cli::status::SessionRow;
use crate::control::{self, Request, Response};
use crate::session::SessionFolder;
use crate::session::store::{OVERVIEW, QA, STATE};
use crate::supervisor::{OwnedSession, SupervisorMsg};

/// How often the watcher looks. A person reading a page notices a second's delay no more than
/// a longer one; the cost is two `stat` calls per session per tick.
pub const TICK: Duration = Duration::from_secs(1);

/// Changes kept for a page that falls behind; one that falls further is sent a full refresh.
pub const BACKLOG: usize = 64;

/// One session as the fleet lists it.
#[derive(Debug)]
pub struct FleetRow {
    pub row: SessionRow,
    pub dir: PathBuf,
    /// The `.samocode` file of its project.
    pub project_file: PathBuf,
    /// The generation in which this row last changed.
    pub changed: u64,
}

impl FleetRow {
    /// The folder name, which is also its path on the dashboard.
    pub fn name(&self) -> &str {
        &self.row.name
    }
}

/// What the fleet looks like, as of one tick.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Counts the ticks that changed something; pages and event streams compare it.
    pub generation: u64,
    /// Sorted by folder name.
    pub rows: Vec<Arc<FleetRow>>,
    pub max_parallel: usize,
    pub running: usize,
    /// The fleet budget's line (`FleetFigures::line`) when the daemon has one, and whether it
    /// is reached (new attempts wait).
    pub budget: Option<(String, bool)>,
}

impl Fleet {
    /// Reads every owned session from its files (what a first tick does).
    pub fn read(owned: &[OwnedSession], max_parallel: usize, running: usize) -> Fleet {
        let mut rows: Vec<Arc<FleetRow>> = owned
            .iter()
            .filter_map(|o| read_row(&o.dir, &o.project, None, 0).map(Arc::new))
            .collect();
        rows.sort_by(|a, b| a.row.name.cmp(&b.row.name));
        Fleet {
            generation: 0,
            rows,
            max_parallel,
            running,
            budget: None,
        }
    }

    /// The row of session `name`; none when two owned sessions share the name (two
    /// projects' of an earlier build's daemon): a page or an action could not tell which.
    pub fn find(&self, name: &str) -> Option<&Arc<FleetRow>> {
        let first = self.rows.partition_point(|r| r.row.name.as_str() < name);
        match &self.rows[first..] {
            [one, rest @ ..]
                if one.row.name == name && rest.first().is_none_or(|r| r.row.name != name) =>
            {
                Some(one)
            }
            _ => None,
        }
    }
}

/// What a tick found.
#[derive(Debug)]
pub enum Change {
    /// Rows changed, appeared or went away.
    Fleet {
        generation: u64,
        /// Folder names of the sessions whose files changed.
        sessions: Vec<String>,
        /// The fleet page's event, as JSON: the changed rows' HTML, the removed rows' ids, the
        /// counts. The same text goes to every fleet page.
        payload: Arc<str>,
    },
    /// The newest attempt log of a running session grew, or a new one began.
    Log {
        session: String,
        path: PathBuf,
        len: u64,
    },
}

/// The feed pages subscribe to.
#[derive(Clone)]
pub struct Feed {
    pub fleet: watch::Receiver<Arc<Fleet>>,
    pub changes: broadcast::Sender<Arc<Change>>,
    shown: Shown,
}

/// How many open pages show each session (by folder name). A plain counter map behind a
/// mutex: pages register and leave, the watcher copies it once per tick.
type Shown = Arc<Mutex<HashMap<String, usize>>>;

impl Feed {
    /// Tells the watcher that a page shows `session` until the returned guard drops.
    pub fn interest(&self, session: &str) -> Interest {
        *lock(&self.shown).entry(session.to_string()).or_default() += 1;
        Interest {
            shown: self.shown.clone(),
            session: session.to_string(),
        }
    }
}

/// A page's interest in one session's log; withdrawn on drop (when the page goes).
pub struct Interest {
    shown: Shown,
    session: String,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut shown = lock(&self.shown);
        if let Some(count) = shown.get_mut(&self.session) {
            *count -= 1;
            if *count == 0 {
                shown.remove(&self.session);
            }
        }
    }
}

fn lock(shown: &Shown) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // Counters stay meaningful even if a holder panicked.
    shown.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending halves, kept across restarts of the watcher task.
#[derive(Clone)]
pub struct Publisher {
    fleet: Arc<watch::Sender<Arc<Fleet>>>,
    changes: broadcast::Sender<Arc<Change>>,
    shown: Shown,
}

/// A new feed and its publisher.
pub fn channel() -> (Publisher, Feed) {
    let (fleet_tx, fleet_rx) = watch::channel(Arc::new(Fleet::default()));
    let (changes, _) = broadcast::channel(BACKLOG);
    let shown = Shown::default();
    (
        Publisher {
            fleet: Arc::new(fleet_tx),
            changes: changes.clone(),
            shown: shown.clone(),
        },
        Feed {
            fleet: fleet_rx,
            changes,
            shown,
        },
    )
}

/// Which version of a file was seen: inode (an atomic replace makes a new one), size, time.
type FileMark = Option<(u64, u64, SystemTime)>;

fn mark(path: &Path) -> FileMark {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

struct Seen {
    marks: (FileMark, FileMark, FileMark),
    /// Why the daemon could not open it, when it could not.
    broken: Option<String>,
    row: Arc<FleetRow>,
}

/// What the watcher remembers between ticks.
#[derive(Default)]
struct Memory {
    sessions: HashMap<PathBuf, Seen>,
    /// For each shown session: its `_logs` folder's modification time when last listed, the
    /// newest log then, and that log's length when last announced.
    logs: HashMap<PathBuf, FollowedLog>,
}

struct FollowedLog {
    listed: Option<SystemTime>,
    newest: Option<PathBuf>,
    len: u64,
}

/// Watches until the task is aborted.
pub async fn run(supervisor: ActorRef<SupervisorMsg>, publisher: Publisher, tick: Duration) {
    let mut memory = Memory::default();
    let mut interval = tokio::time::interval(tick);
    // A slow tick (a busy disk) is followed by the next one on schedule, not by a burst.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Response::Sessions {
            sessions,
            max_parallel,
            running,
            broken,
            fleet,
            ..
        } = control::ask(&supervisor, Request::Status).await
        else {
            continue;
        };
        let generation = publisher.fleet.borrow().generation;
        let shown: Vec<String> = lock(&publisher.shown).keys().cloned().collect();
        let scanned = tokio::task::spawn_blocking(move || {
            let broken: HashMap<PathBuf, String> =
                broken.into_iter().map(|b| (b.dir, b.reason)).collect();
            let found = scan(&mut memory, &sessions, &broken, generation + 1);
            let logs = grown_logs(&mut memory, &shown);
            (memory, found, logs)
        })
        .await;
        let Ok((kept, found, logs)) = scanned else {
            // The scan panicked; start again from nothing on the next tick.
            memory = Memory::default();
            continue;
        };
        memory = kept;
        let budget = fleet.and_then(|f| Some((f.line()?, f.held)));
        publish(&publisher, &memory, found, (max_parallel, running), budget);
        for change in logs {
            let _ = publisher.changes.send(Arc::new(change));
        }
    }
}

/// What one scan found changed.
struct Found {
    changed: Vec<Arc<FleetRow>>,
    removed: Vec<String>,
}

fn scan(
    memory: &mut Memory,
    owned: &[OwnedSession],
    broken: &HashMap<PathBuf, String>,
    generation: u64,
) -> Found {
    let mut changed = Vec::new();
    let mut present = std::collections::HashSet::with_capacity(owned.len());
    for session in owned {
        present.insert(session.dir.clone());
        let marks = (
            mark(&session.dir.join(STATE)),
            mark(&session.dir.join(OVERVIEW)),
            mark(&session.dir.join(QA)),
        );
        let reason = broken.get(&session.dir);
        if memory.sessions.get(&session.dir).is_some_and(|seen| {
            seen.marks == marks && seen.broken.as_ref() == reason && seen.row.row.error.is_none()
        }) {
            continue;
        }
        // A folder with a notebook and no state yet (being made) reads again on the next
        // tick; one with no session files (gone, or emptied) is shown so, not as it last was.
        let row = match read_row(&session.dir, &session.project, reason, generation) {
            Some(row) => row,
            None if (&marks.0, &marks.1) == (&None, &None) => {
                gone_row(&session.dir, &session.project, generation)
            }
            None => continue,
        };
        // An unreadable session is read again at every tick, until it reads; its row is sent
        // again only when it says something new.
        if memory
            .sessions
            .get(&session.dir)
            .is_some_and(|seen| seen.row.row.error.is_some() && seen.row.row.error == row.row.error)
        {
            continue;
        }
        let row = Arc::new(row);
        changed.push(row.clone());
        memory.sessions.insert(
            session.dir.clone(),
            Seen {
                marks,
                broken: reason.cloned(),
                row,
            },
        );
    }
    let mut removed = Vec::new();
    memory.sessions.retain(|dir, seen| {
        let keep = present.contains(dir);
        if !keep {
            removed.push(seen.row.row.name.clone());
        }
        keep
    });
    Found { changed, removed }
}

/// The newest log of every shown session, when it is new or longer than last time.
fn grown_logs(memory: &mut Memory, shown: &[String]) -> Vec<Change> {
    let mut changes = Vec::new();
    let dirs: HashMap<&str, &PathBuf> = memory
        .sessions
        .iter()
        .map(|(dir, seen)| (seen.row.row.name.as_str(), dir))
        .collect();
    let mut followed = HashMap::with_capacity(shown.len());
    for name in shown {
        let Some(dir) = dirs.get(name.as_str()).copied() else {
            continue;
        };
        let mut log = memory.logs.remove(dir).unwrap_or(FollowedLog {
            listed: None,
            newest: None,
            len: 0,
        });
        let logs_dir = dir.join(crate::session::store::LOGS);
        let modified = std::fs::metadata(&logs_dir).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified != log.listed {
            log.listed = modified;
            let newest = super::view::newest_log(&logs_dir);
            if newest != log.newest {
                log.newest = newest;
                log.len = 0;
            }
        }
        if let Some(path) = &log.newest {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len != log.len {
                log.len = len;
                changes.push(Change::Log {
                    session: name.clone(),
                    path: path.clone(),
                    len,
                });
            }
        }
        followed.insert(dir.clone(), log);
    }
    memory.logs = followed;
    changes
}

fn publish(
    publisher: &Publisher,
    memory: &Memory,
    found: Found,
    (max_parallel, running): (usize, usize),
    budget: Option<(String, bool)>,
) {
    let current = publisher.fleet.borrow().clone();
    let counts_same = current.max_parallel == max_parallel
        && current.running == running
        && current.budget == budget;
    if found.changed.is_empty() && found.removed.is_empty() && counts_same {
        return;
    }
    let generation = current.generation + 1;
    let mut rows: Vec<Arc<FleetRow>> = memory.sessions.values().map(|s| s.row.clone()).collect();
    rows.sort_by(|a, b| a.row.name.cmp(&b.row.name));
    let fleet = Arc::new(Fleet {
        generation,
        rows,
        max_parallel,
        running,
        budget,
    });
    publisher.fleet.send_replace(fleet.clone());
    // With no page open, nobody needs the rows' HTML: the next page renders from the snapshot.
    if publisher.changes.receiver_count() == 0 {
        return;
    }
    let payload = pages::fleet_event(&fleet, &found.changed, &found.removed);
    let sessions = found.changed.iter().map(|r| r.row.name.clone()).collect();
    let _ = publisher.changes.send(Arc::new(Change::Fleet {
        generation,
        sessions,
        payload: payload.into(),
    }));
}

/// The row of an owned session whose folder holds no session files any more.
fn gone_row(dir: &Path, project_file: &Path, generation: u64) -> FleetRow {
    let folder = SessionFolder::new(dir);
    FleetRow {
        row: SessionRow::gone_from_daemon(&folder, project_file),
        dir: dir.to_path_buf(),
        project_file: project_file.to_path_buf(),
        changed: generation,
    }
}

/// One session's row, from its files and, when the daemon could not open it, `broken`'s
/// reason: state `error` with why, also when its state cannot be read. `None` for a folder
/// that holds no session (yet, or any more).
pub fn read_row(
    dir: &Path,
    project_file: &Path,
    broken: Option<&String>,
    generation: u64,
) -> Option<FleetRow> {
    let folder = SessionFolder::new(dir);
    let row = SessionRow::of_daemon(&folder, project_file, broken)?;
    Some(FleetRow {
        row,
        dir: dir.to_path_buf(),
        project_file: project_file.to_path_buf(),
        changed: generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SessionState;

    fn session_in(root: &Path, folder: &str) -> OwnedSession {
        let dir = root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SessionFolder::new(&dir).lock().unwrap();
        let mut state = SessionState::new(folder, "d", "t", jiff::Timestamp::now());
        store.save(&mut state).unwrap();
        OwnedSession {
            dir,
            project: root.join(".samocode"),
        }
    }

    /// Two owned sessions of one name (two projects', from an earlier build): the dashboard
    /// finds neither rather than one at a guess.
    #[test]
    fn a_name_two_owned_sessions_share_finds_neither() {
        let root = tempfile::tempdir().unwrap();
        let owned = [
            session_in(&root.path().join("a"), "26-01-01-dup"),
            session_in(&root.path().join("b"), "26-01-01-dup"),
            session_in(&root.path().join("a"), "26-01-01-one"),
        ];
        let fleet = Fleet::read(&owned, 4, 0);
        assert!(fleet.find("26-01-01-dup").is_none());
        assert!(fleet.find("26-01-01-one").is_some());
        assert!(fleet.find("26-01-01-zzz").is_none());
    }

    /// A fleet budget reached holds every queued session: the fleet's summary says so, as
    /// `status` does (it said only "1 queued": found by the story hunt).
    #[test]
    fn the_summary_says_when_the_fleet_budget_holds_the_queue() {
        let mut fleet = Fleet::read(&[], 4, 0);
        fleet.budget = Some((
            crate::control::FleetFigures {
                cost_usd: 1.5727,
                max_cost_usd: Some(1.56),
                held: true,
            }
            .line()
            .unwrap(),
            true,
        ));
        let html = super::super::pages::summary(&fleet).into_string();
        assert!(
            html.contains("fleet budget reached: $1.5727 of $1.56"),
            "{html}"
        );
        assert!(html.contains("fleet-budget held"), "{html}");
    }

    /// A session the daemon owns whose folder went away is shown as an error, once, not as
    /// it last was.
    #[test]
    fn an_owned_session_whose_folder_went_away_is_shown_as_an_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("26-01-01-gone");
        std::fs::create_dir(&dir).unwrap();
        {
            let store = SessionFolder::new(&dir).lock().unwrap();
            let mut state = SessionState::new("26-01-01-gone", "d", "t", jiff::Timestamp::now());
            store.save(&mut state).unwrap();
        }
        let owned = vec![OwnedSession {
            dir: dir.clone(),
            project: root.path().join(".samocode"),
        }];
        let mut memory = Memory::default();
        let found = scan(&mut memory, &owned, &HashMap::new(), 1);
        assert_eq!(found.changed[0].row.state, "queued");
        std::fs::remove_dir_all(&dir).unwrap();
        let found = scan(&mut memory, &owned, &HashMap::new(), 2);
        assert_eq!(found.changed.len(), 1);
        let row = &found.changed[0].row;
        assert_eq!(row.state, "error");
        assert!(
            row.error.as_deref().unwrap().contains("its folder is gone"),
            "{row:?}"
        );
        assert!(
            scan(&mut memory, &owned, &HashMap::new(), 3)
                .changed
                .is_empty()
        );
    }

    /// A session whose state cannot be read, or that the daemon could not open, is shown as
    /// `error` with why, from the first look on, and as it is again once it reads (it had kept
    /// its last row, or had none).
    #[test]
    fn a_session_that_cannot_be_read_or_opened_is_shown_as_an_error_with_why() {
        let root = tempfile::tempdir().unwrap();
        let owned = vec![session_in(root.path(), "26-01-01-bad")];
        let dir = owned[0].dir.clone();
        let good = std::fs::read(dir.join(STATE)).unwrap();
        std::fs::write(dir.join(STATE), b"{\"schema\": 1, garbage").unwrap();
        let fleet = Fleet::read(&owned, 4, 0);
        assert_eq!(fleet.rows[0].row.state, "error");
        let none = HashMap::new();
        let mut memory = Memory::default();
        let found = scan(&mut memory, &owned, &none, 1);
        let row = &found.changed[0].row;
        assert_eq!(row.state, "error");
        assert!(
            row.error
                .as_deref()
                .unwrap()
                .contains("not a valid samocode state file"),
            "{row:?}"
        );
        assert!(
            scan(&mut memory, &owned, &none, 2).changed.is_empty(),
            "said once"
        );
        std::fs::write(dir.join(STATE), &good).unwrap();
        let found = scan(&mut memory, &owned, &none, 3);
        assert_eq!(found.changed[0].row.state, "queued");
        // Readable files, but the daemon could not open it: its reason, not its files' state.
        let broken = HashMap::from([(dir.clone(), "cannot open the session: x".to_string())]);
        let found = scan(&mut memory, &owned, &broken, 4);
        let row = &found.changed[0].row;
        assert_eq!(row.state, "error");
        assert_eq!(
            row.error.as_deref(),
            Some("the daemon could not open it: cannot open the session: x")
        );
        let found = scan(&mut memory, &owned, &none, 5);
        assert_eq!(found.changed[0].row.state, "queued", "opened again");
    }

    /// A partial answer changes only `_qa.md`: the session is marked changed, so that an open
    /// page shows the question answered (a stale form had overwritten the answer).
    #[test]
    fn an_answer_in_qa_md_alone_marks_the_session_changed() {
        let root = tempfile::tempdir().unwrap();
        let owned = vec![session_in(root.path(), "26-01-01-qa")];
        let none = HashMap::new();
        let mut memory = Memory::default();
        scan(&mut memory, &owned, &none, 1);
        assert!(scan(&mut memory, &owned, &none, 2).changed.is_empty());
        std::fs::write(owned[0].dir.join(QA), "## Q1: x?\nAnswer: y\n").unwrap();
        let found = scan(&mut memory, &owned, &none, 3);
        assert_eq!(found.changed.len(), 1);
    }
}
