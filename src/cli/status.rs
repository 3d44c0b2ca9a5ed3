//! `samocode status [SESSION] [--json] [--active]`: the sessions of the project from their
//! files (no daemon needed): a table, a JSON array, or one session in full.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::daemon::Client;
use super::{CliError, exit};
use crate::config::Config;
use crate::protocol::overview;
use crate::protocol::qa::QaDoc;
use crate::protocol::{RunState, SessionState};
use crate::session::store::{LOCK, OVERVIEW, QA};
use crate::session::{SessionFolder, name};

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
    /// Only sessions in this state (queued, running, waiting, blocked, done, failed, stopped).
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
    pub phase: String,
    pub state: String,
    pub iteration: u32,
    pub total_iterations: u32,
    pub waiting_for: Option<String>,
    pub blocked_reason: Option<String>,
    /// A queued session parked for a provider's usage limit runs again at this time.
    pub resumes_at: Option<String>,
    pub worker: &'static str,
    pub last_action: Option<String>,
    pub next: Option<String>,
    pub updated_at: String,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl SessionRow {
    fn of(folder: &SessionFolder, state: &SessionState, project: &Path) -> SessionRow {
        let worker = if crate::lockfile::is_held(&folder.path(LOCK)) {
            "running"
        } else {
            "stopped"
        };
        SessionRow::with_worker(folder, state, project, worker)
    }

    /// The row, with the worker column given rather than probed: the daemon knows which
    /// sessions it drives, and a probe (a shared lock taken for a moment) inside the daemon could
    /// make a session it is opening at that instant find its lock taken.
    pub fn with_worker(
        folder: &SessionFolder,
        state: &SessionState,
        project: &Path,
        worker: &'static str,
    ) -> SessionRow {
        let notebook = folder
            .read(OVERVIEW)
            .ok()
            .flatten()
            .map(|t| overview::parse(&t))
            .unwrap_or_default();
        SessionRow {
            name: folder.name(),
            project: project
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: folder.dir().display().to_string(),
            phase: state.phase.to_string(),
            state: state.status.name().to_string(),
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
            resumes_at: state.not_before.map(|at| at.to_string()),
            worker,
            last_action: notebook.last_action,
            next: notebook.next,
            updated_at: state.updated_at.to_string(),
            cost_usd: state.usage.cost_usd,
            input_tokens: state.usage.input_tokens,
            output_tokens: state.usage.output_tokens,
        }
    }
}

pub async fn status(
    args: StatusArgs,
    explicit_config: bool,
    config: &Config,
) -> Result<u8, CliError> {
    const STATES: [&str; 7] = [
        "queued", "running", "waiting", "blocked", "done", "failed", "stopped",
    ];
    if let Some(wanted) = &args.state
        && !STATES.contains(&wanted.as_str())
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "--state {wanted:?} is not a state; use one of {}",
            STATES.join(", ")
        )));
    }
    // With a daemon and no --config: every session it owns; else the project's folders.
    let daemon = match explicit_config {
        false => Client::connect(config).await?,
        true => None,
    };
    let folders: Vec<(PathBuf, PathBuf)> = match &daemon {
        Some(client) => client
            .owned()
            .await?
            .into_iter()
            .map(|o| (o.dir, o.project))
            .collect(),
        None => {
            let project = config.project()?;
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&project.sessions)
                .map_err(|e| {
                    CliError::failure(anyhow::anyhow!(
                        "cannot list {}: {e}",
                        project.sessions.display()
                    ))
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            dirs.into_iter()
                .map(|d| (d, project.file.clone()))
                .collect()
        }
    };
    if let Some(session) = &args.session {
        let dir = match &daemon {
            None => name::resolve_existing(&config.project()?.sessions, session)?,
            Some(_) => folders
                .iter()
                .map(|(d, _)| d)
                .find(|d| {
                    d.file_name().is_some_and(|n| {
                        n == session.as_str() || name::short_name(&n.to_string_lossy()) == session
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    CliError::usage(anyhow::anyhow!(
                        "the daemon owns no session {session:?}; `samocode status` lists them"
                    ))
                })?,
        };
        let project = folders
            .iter()
            .find(|(d, _)| *d == dir)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        return show_one(&SessionFolder::new(dir), &project, args.json);
    }
    let mut rows = Vec::new();
    for (dir, project) in folders {
        let folder = SessionFolder::new(dir);
        let Ok(state) = folder.load_state() else {
            continue;
        };
        if args.active && matches!(state.status, RunState::Done { .. }) {
            continue;
        }
        if args
            .state
            .as_deref()
            .is_some_and(|s| s != state.status.name())
        {
            continue;
        }
        rows.push(SessionRow::of(&folder, &state, &project));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else {
        print!("{}", table(&rows, jiff::Timestamp::now()));
    }
    Ok(exit::DONE)
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
        "ITER",
        "WAITING ON",
        "COST",
        "AGE",
        "LAST ACTION",
    ];
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.project.clone(),
                r.phase.clone(),
                r.state.clone(),
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
                format!("${:.2}", r.cost_usd),
                age(&r.updated_at, now),
                shorten(r.last_action.as_deref().unwrap_or("-"), 50),
            ]
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

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

fn show_one(folder: &SessionFolder, project: &Path, json: bool) -> Result<u8, CliError> {
    let state = folder.load_state()?;
    let row = SessionRow::of(folder, &state, project);
    if json {
        let mut value = serde_json::to_value(&row).expect("row serializes");
        value["state_file"] = serde_json::to_value(&state).expect("state serializes");
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return Ok(exit::DONE);
    }
    println!("session:     {}", row.name);
    println!("folder:      {}", row.dir);
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
    if let Some(reason) = &row.blocked_reason {
        println!("reason:      {reason}");
    }
    if let Some(at) = &row.resumes_at {
        println!("resumes at:  {at} (the provider's usage limit resets)");
    }
    println!("worker:      {}", row.worker);
    if let (Some(w), Some(b)) = (&state.worktree, &state.branch) {
        println!("worktree:    {} (branch {b})", w.display());
    }
    println!(
        "cost:        ${:.4} ({} tokens in, {} out)",
        row.cost_usd, row.input_tokens, row.output_tokens
    );
    println!("last action: {}", row.last_action.as_deref().unwrap_or("-"));
    println!("next:        {}", row.next.as_deref().unwrap_or("-"));
    if let Some(text) = folder.read(OVERVIEW)? {
        let log = overview::parse(&text).flow_log;
        if !log.is_empty() {
            println!("flow log (latest):");
            for line in log.iter().rev().take(5).rev() {
                println!("  {line}");
            }
        }
    }
    if let Some(text) = folder.read(QA)? {
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
            resumes_at: None,
            worker: "stopped",
            last_action: Some(last.into()),
            next: None,
            updated_at: "2026-11-24T10:00:00Z".into(),
            cost_usd: 1.5,
            input_tokens: 10,
            output_tokens: 5,
        }
    }

    #[test]
    fn the_table_people_read() {
        let now: jiff::Timestamp = "2026-11-24T12:30:00Z".parse().unwrap();
        let rows = [
            row(
                "26-11-24-auth",
                "waiting",
                Some("plan_approval"),
                None,
                "wrote the plan",
            ),
            row(
                "26-11-24-search-index",
                "blocked",
                None,
                Some("tests need a database server to run against"),
                &"x".repeat(60),
            ),
        ];
        assert_eq!(
            table(&rows, now),
            "NAME                   PROJECT  PHASE     STATE    ITER  WAITING ON                      COST   AGE  LAST ACTION\n\
             26-11-24-auth          myapp    planning  waiting  2/5   plan_approval                   $1.50  2h   wrote the plan\n\
             26-11-24-search-index  myapp    planning  blocked  2/5   tests need a database server …  $1.50  2h   xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\n"
        );
        assert_eq!(table(&[], now), "no sessions\n");
    }
}
