//! `samocode status [SESSION] [--json] [--active]`: the sessions of the project from their
//! files (no daemon needed): a table, a JSON array, or one session in full.
//!
//! In a project (a `.samocode` found or given), the rows are the project's session folders,
//! whoever drives them, each with its owner: the daemon (it owns the session), `run` (another
//! process holds the session's lock; its pid is in `_worker.lock`), or nobody. Outside a
//! project, with a daemon running, the rows are every session the daemon owns. A session
//! whose files cannot be read is shown as broken (state `error`, with the reason), never left
//! out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

mod budget;
pub(crate) mod owner;

use budget::BudgetView;
use owner::{Locks, Owner};

use super::daemon::Client;
use super::{CliError, exit};
use crate::config::Config;
use crate::protocol::overview;
use crate::protocol::qa::QaDoc;
use crate::protocol::{RunState, SessionState};
use crate::session::store::{OVERVIEW, QA, STATE};
use crate::session::{SessionFolder, StoreError, name};

/// Whether a worker (a daemon, a `run`) holds the session's lock now.
pub(crate) fn driven(folder: &SessionFolder) -> bool {
    Locks::read().holder(folder).is_some()
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One session to show in full.
    pub session: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Hide finished sessions (done).
    #[arg(long)]
    pub active: bool,
    /// Only sessions in this state (queued, running, waiting, blocked, done, failed, stopped,
    /// error).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

/// One row of `status --json` (PROTOCOL.md section 7).
#[derive(Debug, Serialize)]
pub struct SessionRow {
    pub name: String,
    /// The project: the folder holding its `.samocode` file.
    pub project: String,
    pub dir: String,
    /// The phase; `-` for a session in state `error`.
    pub phase: String,
    pub state: String,
    pub iteration: u32,
    pub total_iterations: u32,
    pub waiting_for: Option<String>,
    pub blocked_reason: Option<String>,
    /// What a blocked session needs, as its agent said (`human_decision`, `clarification`,
    /// `error_resolution`, `environment`).
    pub needs: Option<String>,
    /// A queued session parked for a provider's usage limit runs again at this time.
    pub resumes_at: Option<String>,
    pub worker: &'static str,
    /// Who drives the session: `daemon`, `run` (pid in `owner_pid`) or `nobody`.
    pub owner: &'static str,
    pub owner_pid: Option<u32>,
    /// Why the session's files cannot be read (state `error`).
    pub error: Option<String>,
    pub last_action: Option<String>,
    pub next: Option<String>,
    pub updated_at: String,
    /// When it entered its state, for a state that keeps the time (waiting, blocked, failed,
    /// stopped, done): its age counts from here, not from the state file's last write (which
    /// a restart may bump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Where the newest journaled attempt ran: `local`, a worker's name, or `pod/<name>`.
    pub host: Option<String>,
    /// Its budget and what is left of it, when a limit is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetView>,
}

/// The reason of a session whose folder went away.
pub const GONE: &str = "its folder is gone (moved or deleted)";

impl SessionRow {
    /// A session the daemon owns but could not open waits for a person's `resume`, whatever
    /// its files say: shown as `error` with the daemon's reason.
    fn mark_broken(&mut self, dir: &Path, broken: &HashMap<PathBuf, String>) {
        if let Some(reason) = broken.get(dir) {
            self.state = "error".into();
            // Its files' gate is for when a person's `resume` has it opened again.
            self.waiting_for = None;
            self.error = Some(format!("the daemon could not open it: {reason}"));
        }
    }

    fn of(
        folder: &SessionFolder,
        state: &SessionState,
        project: &Path,
        owner: Owner,
        worker: &'static str,
    ) -> SessionRow {
        // A notebook no command can read (not UTF-8, a link, too big) stops every gate and
        // attempt as surely as a broken state: the row says so instead of its state.
        let (notebook, unreadable) = match folder.read(OVERVIEW) {
            Ok(text) => (text.map(|t| overview::parse(&t)).unwrap_or_default(), None),
            Err(error) => (Default::default(), Some(error.to_string())),
        };
        SessionRow {
            phase: state.phase.to_string(),
            state: match unreadable {
                Some(_) => "error".to_string(),
                None => state.status.name().to_string(),
            },
            error: unreadable,
            iteration: state.phase_iteration,
            total_iterations: state.iteration,
            waiting_for: match &state.status {
                RunState::Waiting { wait_for, .. } => Some(wait_for.to_string()),
                _ => None,
            },
            blocked_reason: match &state.status {
                RunState::Blocked { reason, .. } | RunState::Failed { reason, .. } => {
                    Some(reason.clone())
                }
                _ => None,
            },
            needs: match &state.status {
                RunState::Blocked {
                    needs: Some(needs), ..
                } => Some(needs.to_string()),
                _ => None,
            },
            resumes_at: state
                .usage_limit_until(jiff::Timestamp::now())
                .map(|at| at.to_string()),
            last_action: notebook.last_action,
            next: notebook.next,
            updated_at: state.updated_at.to_string(),
            since: state.status.since().map(|at| at.to_string()),
            cost_usd: state.usage.cost_usd,
            input_tokens: state.usage.input_tokens,
            output_tokens: state.usage.output_tokens,
            host: crate::executor::last_host(folder.dir()),
            ..SessionRow::bare(folder, project, owner, worker)
        }
    }

    /// The row as the daemon's own adapters (the dashboard) make it of a session the daemon
    /// owns: it drives every one until it is done, and they must not probe a lock a session
    /// may be taking at that moment.
    pub fn of_owned(folder: &SessionFolder, state: &SessionState, project: &Path) -> SessionRow {
        match state.status {
            RunState::Done { .. } => {
                SessionRow::of(folder, state, project, Owner::Nobody, "stopped")
            }
            _ => SessionRow::of(folder, state, project, Owner::Daemon, "running"),
        }
    }

    /// The row of a session whose state cannot be read: state `error`, with the reason.
    fn broken(
        folder: &SessionFolder,
        project: &Path,
        owner: Owner,
        worker: &'static str,
        error: &StoreError,
    ) -> SessionRow {
        SessionRow::broken_because(folder, project, owner, worker, error.to_string())
    }

    /// The row of a session the daemon owns, as the dashboard shows it: from its state, or
    /// `error` with why its state cannot be read or the daemon could not open it (`broken`).
    /// `None` for a folder that holds no session.
    pub fn of_daemon(
        folder: &SessionFolder,
        project: &Path,
        broken: Option<&String>,
    ) -> Option<SessionRow> {
        let mut row = match folder.load_state() {
            Ok(state) => SessionRow::of_owned(folder, &state, project),
            Err(StoreError::NotASession(_)) => return None,
            Err(error) => SessionRow::broken(folder, project, Owner::Daemon, "running", &error),
        };
        if let Some(reason) = broken {
            let broken = HashMap::from([(folder.dir().to_path_buf(), reason.clone())]);
            row.mark_broken(folder.dir(), &broken);
        }
        Some(row)
    }

    /// [`SessionRow::gone`] of a session the daemon owns (the dashboard's row).
    pub fn gone_from_daemon(folder: &SessionFolder, project: &Path) -> SessionRow {
        SessionRow::gone(folder, project, Owner::Daemon)
    }

    /// The row of a session whose folder holds no session (any more): state `error`.
    fn gone(folder: &SessionFolder, project: &Path, owner: Owner) -> SessionRow {
        let reason = SessionRow::gone_reason(folder.dir());
        SessionRow::broken_because(folder, project, owner, "stopped", reason)
    }

    /// Why the folder `dir` holds no session (any more): it is gone, or it holds something
    /// else.
    fn gone_reason(dir: &Path) -> String {
        match dir.exists() {
            true => StoreError::NotASession(dir.to_path_buf()).to_string(),
            false => GONE.to_string(),
        }
    }

    fn broken_because(
        folder: &SessionFolder,
        project: &Path,
        owner: Owner,
        worker: &'static str,
        reason: String,
    ) -> SessionRow {
        SessionRow {
            error: Some(reason),
            ..SessionRow::bare(folder, project, owner, worker)
        }
    }

    fn bare(
        folder: &SessionFolder,
        project: &Path,
        owner: Owner,
        worker: &'static str,
    ) -> SessionRow {
        let updated_at = std::fs::metadata(folder.path(STATE))
            .or_else(|_| std::fs::metadata(folder.path(OVERVIEW)))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        SessionRow {
            name: folder.name(),
            project: project
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: folder.dir().display().to_string(),
            phase: "-".into(),
            state: "error".into(),
            iteration: 0,
            total_iterations: 0,
            waiting_for: None,
            blocked_reason: None,
            needs: None,
            resumes_at: None,
            worker,
            owner: owner.word(),
            owner_pid: owner.pid(),
            error: None,
            last_action: None,
            next: None,
            updated_at,
            since: None,
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            host: None,
            budget: None,
        }
    }

    /// The row of the session in `folder`, broken or not; `None` for a folder that is not a
    /// session at all (no `_state.json` and no `_overview.md`).
    fn read(
        folder: &SessionFolder,
        project: &Path,
        daemon_owns: &HashSet<PathBuf>,
        locks: &Locks,
    ) -> Option<(SessionRow, Option<SessionState>)> {
        let owner = Owner::of(folder, daemon_owns, locks);
        let worker = if locks.holder(folder).is_some() {
            "running"
        } else {
            "stopped"
        };
        match folder.load_state() {
            Ok(state) => Some((
                SessionRow::of(folder, &state, project, owner, worker),
                Some(state),
            )),
            // Shown as `error` with what it is: a session the daemon owns that is gone or
            // emptied, and a folder named as sessions are (`YY-MM-DD-NAME`) that holds none,
            // which takes the name of a session; other folders (the Python tool's `_archive`,
            // anything else kept beside the sessions) are not sessions and not shown.
            Err(StoreError::NotASession(_))
                if daemon_owns.contains(folder.dir()) || name::is_date_prefix(&folder.name()) =>
            {
                Some((SessionRow::gone(folder, project, owner), None))
            }
            Err(StoreError::NotASession(_)) => None,
            Err(error) => Some((
                SessionRow::broken(folder, project, owner, worker, &error),
                None,
            )),
        }
    }
}

const STATES: [&str; 8] = [
    "queued", "running", "waiting", "blocked", "done", "failed", "stopped", "error",
];

/// How long `status` in a project waits for the daemon before it shows the files alone
/// (before any command would say it is waiting).
const DAEMON_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

pub async fn status(args: StatusArgs, config: &Config) -> Result<u8, CliError> {
    if let Some(wanted) = &args.state
        && !STATES.contains(&wanted.as_str())
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "--state {wanted:?} is not a state; use one of {}",
            STATES.join(", ")
        )));
    }
    let daemon = match Client::connect(config).await {
        Ok(daemon) => daemon,
        // In a project the files are enough: a socket this user may not use (another user's
        // state directory) costs only who drives each session.
        Err(error) if config.project.is_some() => {
            eprintln!(
                "samocode: {}; the sessions are shown from their files, and who drives each from its lock",
                error.error
            );
            None
        }
        Err(error) => return Err(error),
    };
    let has_daemon = daemon.is_some();
    let super::daemon::Owned {
        sessions: owned,
        fleet,
        broken,
        budget_defaults,
    } = match daemon {
        // In a project the sessions are read from their files: a daemon that does not
        // answer (stopped, or too busy) costs only who drives them.
        Some(client) if config.project.is_some() => {
            match tokio::time::timeout(DAEMON_WAIT, client.owned()).await {
                Ok(Ok(owned)) => owned,
                Ok(Err(error)) => {
                    eprintln!(
                        "samocode: the daemon did not answer ({:#}); the sessions are shown from their files, and who drives each from its lock",
                        error.error
                    );
                    Default::default()
                }
                Err(_) => {
                    eprintln!(
                        "samocode: the daemon did not answer within {}; the sessions are shown from their files, and who drives each from its lock",
                        humantime::format_duration(DAEMON_WAIT)
                    );
                    Default::default()
                }
            }
        }
        Some(client) => client.owned().await?,
        None => Default::default(),
    };
    let daemon_owns: HashSet<PathBuf> = owned.iter().map(|o| o.dir.clone()).collect();
    let broken: HashMap<PathBuf, String> = broken.into_iter().map(|b| (b.dir, b.reason)).collect();
    // A session is held to the defaults of whoever drives it: the daemon's for its own.
    let defaults = |dir: &Path| match &budget_defaults {
        Some(daemons) if daemon_owns.contains(dir) => *daemons,
        _ => config.budgets.defaults,
    };
    // In a project: its folders, from the files. Outside one: what the daemon owns.
    let folders: Vec<(PathBuf, PathBuf)> = match (&config.project, has_daemon) {
        (Some(project), _) => {
            let mut folders: Vec<(PathBuf, PathBuf)> = project_folders(&project.sessions)?
                .into_iter()
                .map(|d| (d, project.file.clone()))
                .collect();
            // A session of this project the daemon owns whose folder went away is shown too.
            folders.extend(
                owned
                    .iter()
                    .filter(|o| o.project == project.file && !o.dir.exists())
                    .map(|o| (o.dir.clone(), o.project.clone())),
            );
            folders
        }
        (None, true) => owned.into_iter().map(|o| (o.dir, o.project)).collect(),
        (None, false) => {
            config.project()?;
            Vec::new()
        }
    };
    if let Some(session) = &args.session {
        let dir = match &config.project {
            Some(project) => name::resolve_existing(&project.sessions, session)?,
            None => {
                let found: Vec<&PathBuf> = folders
                    .iter()
                    .map(|(d, _)| d)
                    .filter(|d| {
                        d.file_name().is_some_and(|n| {
                            n == session.as_str()
                                || name::short_name(&n.to_string_lossy()) == session
                        })
                    })
                    .collect();
                match found[..] {
                    [one] => one.clone(),
                    [] => {
                        return Err(CliError::usage(anyhow::anyhow!(
                            "the daemon owns no session {session:?}; `samocode status` lists them"
                        )));
                    }
                    _ => {
                        let all: Vec<String> =
                            found.iter().map(|d| d.display().to_string()).collect();
                        return Err(CliError::usage(anyhow::anyhow!(
                            "more than one session the daemon owns is called {session:?}: {}; run `samocode status {session}` from the project's directory",
                            all.join(", ")
                        )));
                    }
                }
            }
        };
        let project = folders
            .iter()
            .find(|(d, _)| *d == dir)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let defaults = defaults(&dir);
        // Listed by a daemon that does not run now: it takes the session up at its start.
        let listed = crate::supervisor::owned::lists(&config.state_dir, &dir);
        return show_one(
            &SessionFolder::new(dir),
            &project,
            (&daemon_owns, &broken),
            &defaults,
            (args.json, listed),
        );
    }
    let mut rows = Vec::new();
    let locks = Locks::read();
    for (dir, project) in folders {
        let folder = SessionFolder::new(dir);
        let Some((mut row, state)) = SessionRow::read(&folder, &project, &daemon_owns, &locks)
        else {
            continue;
        };
        row.mark_broken(folder.dir(), &broken);
        row.budget = state.and_then(|s| BudgetView::of(&s, &defaults(folder.dir())));
        if args.active && row.state == "done" {
            continue;
        }
        if args.state.as_deref().is_some_and(|s| s != row.state) {
            continue;
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", super::output::json(&rows));
    } else {
        print!("{}", table(&rows, jiff::Timestamp::now()));
        if let Some(line) = fleet.as_ref().and_then(crate::control::FleetFigures::line) {
            println!("{line}");
        }
    }
    Ok(exit::DONE)
}

/// The session folders of a project, sorted (dot folders aside).
fn project_folders(sessions: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(sessions)
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot list {}: {e}", sessions.display())))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The table people read: one line per session.
pub fn table(rows: &[SessionRow], now: jiff::Timestamp) -> String {
    if rows.is_empty() {
        return "no sessions\n".to_string();
    }
    let header = [
        "NAME",
        "PROJECT",
        "PHASE",
        "STATE",
        "OWNER",
        "ITER",
        "WAITING ON",
        "COST",
        "AGE",
        "LAST ACTION",
    ];
    let lines: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            // A broken session says why where the last action goes, its own folder left out.
            let last = match &r.error {
                Some(error) => shorten(&error.replace(&format!("{}/", r.dir), ""), 90),
                None => shorten(r.last_action.as_deref().unwrap_or("-"), 50),
            };
            [
                r.name.clone(),
                r.project.clone(),
                r.phase.clone(),
                r.state.clone(),
                owner_text(r),
                format!("{}/{}", r.iteration, r.total_iterations),
                r.waiting_for
                    .clone()
                    .or_else(|| r.blocked_reason.clone().map(|b| shorten(&b, 30)))
                    .or_else(|| {
                        r.resumes_at
                            .as_ref()
                            .map(|at| format!("usage limit until {at}"))
                    })
                    .unwrap_or_else(|| "-".into()),
                crate::protocol::budget::money(r.cost_usd),
                age(r.age_from(), now),
                last,
            ]
            // Shown as the terminal will show them (a control character as `\u{1b}`), so
            // the columns are as wide as what is printed; on one line (a reason's newline
            // split the row, and could make a line that reads as another session's).
            .map(|cell| {
                crate::cli::output::visible(&cell.replace(['\n', '\r', '\t'], " ")).into_owned()
            })
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = render(header.to_vec());
    for line in &lines {
        out.push_str(&render(line.iter().map(String::as_str).collect()));
    }
    out
}

impl SessionRow {
    /// Where its age counts from: when it entered its state, else the state's last write.
    pub fn age_from(&self) -> &str {
        self.since.as_deref().unwrap_or(&self.updated_at)
    }
}

/// `daemon`, `run (pid N)` or `nobody`.
fn owner_text(row: &SessionRow) -> String {
    match row.owner_pid {
        Some(pid) => format!("{} (pid {pid})", row.owner),
        None => row.owner.to_string(),
    }
}

fn age(updated_at: &str, now: jiff::Timestamp) -> String {
    let Ok(then) = updated_at.parse::<jiff::Timestamp>() else {
        return "-".into();
    };
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

use crate::protocol::shorten;

fn show_one(
    folder: &SessionFolder,
    project: &Path,
    (daemon_owns, broken): (&HashSet<PathBuf>, &HashMap<PathBuf, String>),
    defaults: &crate::protocol::budget::Budget,
    (json, listed): (bool, bool),
) -> Result<u8, CliError> {
    let Some((mut row, state)) = SessionRow::read(folder, project, daemon_owns, &Locks::read())
    else {
        return Err(StoreError::NotASession(folder.dir().to_path_buf()).into());
    };
    row.mark_broken(folder.dir(), broken);
    row.budget = state.as_ref().and_then(|s| BudgetView::of(s, defaults));
    // A journal that cannot be read (a folder in its place) still leaves the session shown.
    let (phases, unread) = match budget::by_phase(folder) {
        Ok(phases) => (phases, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    if json {
        let mut value = serde_json::to_value(&row).expect("row serializes");
        value["cost_by_phase"] = serde_json::to_value(&phases).expect("costs serialize");
        if let Some(error) = &unread {
            value["cost_by_phase_error"] = error.as_str().into();
        }
        value["state_file"] = serde_json::to_value(&state).expect("state serializes");
        println!("{}", super::output::json(&value));
        return Ok(exit::DONE);
    }
    println!("session:     {}", row.name);
    println!("folder:      {}", row.dir);
    let Some(state) = state else {
        println!("state:       error");
        println!("reason:      {}", row.error.as_deref().unwrap_or("-"));
        println!("owner:       {}", owner_text(&row));
        return Ok(exit::DONE);
    };
    println!(
        "phase:       {} (iteration {} in phase, {} in all)",
        row.phase, row.iteration, row.total_iterations
    );
    println!(
        "state:       {}{}",
        row.state,
        row.waiting_for
            .as_deref()
            .map(|w| format!(" for {w}"))
            .unwrap_or_default()
    );
    // A state read, and an error all the same: the daemon could not open the session.
    if let Some(reason) = row.error.as_ref().or(row.blocked_reason.as_ref()) {
        println!("reason:      {reason}");
    }
    if let Some(needs) = &row.needs {
        println!("needs:       {needs}");
    }
    if let Some(at) = &row.resumes_at {
        println!("resumes at:  {at} (the provider's usage limit resets)");
    }
    println!("worker:      {}", row.worker);
    println!("owner:       {}", owner_text(&row));
    // A usage limit's wait is kept by a worker too: with none, nothing runs at the reset.
    let held = matches!(state.status, RunState::Queued) && state.not_before.is_some();
    if (state.runs_when_driven() || held) && row.owner == "nobody" && row.error.is_none() {
        if listed {
            println!(
                "             its daemon is not running; it takes the session up again when it starts (`samocode supervise`)"
            );
        } else {
            println!(
                "             nobody drives it; `samocode run --session {0}` or `samocode start --session {0}` continues it{1}",
                row.name,
                if row.resumes_at.is_some() {
                    " (at the reset)"
                } else {
                    ""
                }
            );
        }
    }
    if let (Some(w), Some(b)) = (&state.worktree, &state.branch) {
        println!("worktree:    {} (branch {b})", w.display());
    }
    println!(
        "cost:        ${:.4} ({} tokens in, {} out)",
        row.cost_usd, row.input_tokens, row.output_tokens
    );
    if let Some(error) = &unread {
        println!("cost/phase:  {error}");
    } else if !phases.is_empty() {
        println!("cost/phase:  {}", budget::phases_line(&phases));
    }
    if let Some(view) = &row.budget {
        println!("budget:      {}", view.line());
    }
    println!("last action: {}", row.last_action.as_deref().unwrap_or("-"));
    println!("next:        {}", row.next.as_deref().unwrap_or("-"));
    // Unreadable, the notebook is the row's `error` above.
    if let Ok(Some(text)) = folder.read(OVERVIEW) {
        let log = overview::parse(&text).flow_log;
        if !log.is_empty() {
            println!("flow log (latest):");
            for line in log.iter().rev().take(5).rev() {
                println!("  {line}");
            }
        }
    }
    let qa = folder.read(QA).unwrap_or_else(|error| {
        println!("questions:   {error}");
        None
    });
    if let Some(text) = qa {
        let doc = QaDoc::parse(&text);
        let open: Vec<_> = doc.open().collect();
        if !open.is_empty() {
            println!("open questions:");
            for q in open {
                println!("  Q{}: {}", q.number, q.text);
            }
        }
    }
    Ok(exit::DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        name: &str,
        state: &str,
        waiting: Option<&str>,
        blocked: Option<&str>,
        last: &str,
    ) -> SessionRow {
        SessionRow {
            name: name.into(),
            project: "myapp".into(),
            dir: format!("/s/{name}"),
            phase: "planning".into(),
            state: state.into(),
            iteration: 2,
            total_iterations: 5,
            waiting_for: waiting.map(str::to_string),
            blocked_reason: blocked.map(str::to_string),
            needs: None,
            resumes_at: None,
            worker: "stopped",
            owner: "nobody",
            owner_pid: None,
            error: None,
            last_action: Some(last.into()),
            next: None,
            updated_at: "2026-11-24T10:00:00Z".into(),
            since: None,
            cost_usd: 1.5,
            input_tokens: 10,
            output_tokens: 5,
            host: None,
            budget: None,
        }
    }

    /// A waiting session's age counts from when it began to wait: a restart that wrote its
    /// state again made a session waiting for days read as waiting for seconds.
    #[test]
    fn a_parked_sessions_age_counts_from_when_it_parked() {
        let now: jiff::Timestamp = "2026-11-24T12:30:00Z".parse().unwrap();
        let mut waiting = row("26-11-22-old", "waiting", Some("qa_answers"), None, "asked");
        waiting.updated_at = "2026-11-24T12:29:56Z".into();
        waiting.since = Some("2026-11-22T12:00:00Z".into());
        let shown = table(&[waiting], now);
        assert!(shown.contains("  2d  "), "{shown}");
    }

    #[test]
    fn a_cell_with_a_control_character_is_as_wide_as_it_is_shown() {
        let now: jiff::Timestamp = "2026-11-24T12:30:00Z".parse().unwrap();
        let mut odd = row("26-11-24-odd", "waiting", Some("qa_answers"), None, "asked");
        odd.project = "my\u{1b}app".into();
        let plain = row(
            "26-11-24-plain",
            "waiting",
            Some("qa_answers"),
            None,
            "asked",
        );
        let shown = table(&[odd, plain], now);
        let at = |line: &str| line.find("planning").unwrap();
        let lines: Vec<&str> = shown.lines().skip(1).collect();
        assert_eq!(at(lines[0]), at(lines[1]), "{shown}");
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
    }

    /// A reason or a project folder with a newline split its row: the line after it read as
    /// a row of its own ("OK  fake-row  done").
    #[test]
    fn a_row_is_one_line_whatever_its_cells_hold() {
        let now: jiff::Timestamp = "2026-11-24T12:30:00Z".parse().unwrap();
        let mut odd = row(
            "26-11-24-odd",
            "blocked",
            None,
            None,
            "db\nOK  fake-row  done\ttab",
        );
        odd.project = "new\nline\r".into();
        let shown = table(&[odd], now);
        assert_eq!(shown.lines().count(), 2, "{shown}");
        assert!(shown.contains("db OK  fake-row  done tab"), "{shown}");
    }

    #[test]
    fn the_table_people_read() {
        let now: jiff::Timestamp = "2026-11-24T12:30:00Z".parse().unwrap();
        let mut auth = row(
            "26-11-24-auth",
            "waiting",
            Some("plan_approval"),
            None,
            "wrote the plan",
        );
        auth.owner = "daemon";
        let mut search = row(
            "26-11-24-search-index",
            "blocked",
            None,
            Some("tests need a database server to run against"),
            &"x".repeat(60),
        );
        search.owner = "run";
        search.owner_pid = Some(4242);
        let mut broken = row("26-11-25-broken", "error", None, None, "-");
        broken.phase = "-".into();
        broken.iteration = 0;
        broken.total_iterations = 0;
        broken.cost_usd = 0.0;
        broken.error = Some(
            "/s/26-11-25-broken/_state.json is not a valid samocode state file: EOF while parsing a value at line 1 column 0; restore it from _overview.md by moving it away (its cost is read back from _iterations.jsonl; a budget it had must be set again with `samocode resume --raise-budget`)".into(),
        );
        let rows = [auth, search, broken];
        assert_eq!(
            table(&rows, now),
            "NAME                   PROJECT  PHASE     STATE    OWNER           ITER  WAITING ON                      COST   AGE  LAST ACTION\n\
             26-11-24-auth          myapp    planning  waiting  daemon          2/5   plan_approval                   $1.50  2h   wrote the plan\n\
             26-11-24-search-index  myapp    planning  blocked  run (pid 4242)  2/5   tests need a database server …  $1.50  2h   xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\n\
             26-11-25-broken        myapp    -         error    nobody          0/0   -                               $0.00  2h   _state.json is not a valid samocode state file: EOF while parsing a value at line 1 colum…\n"
        );
        assert_eq!(table(&[], now), "no sessions\n");
    }
}
