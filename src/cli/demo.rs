//! `samocode demo`: a self-contained run of several sessions on the daemon's actor tree (gates
//! wait in place, at most two agents at once), with the built-in scripted agent in a throwaway
//! git project. The demo answers the questions with their suggestions and approves the plans
//! through the same control requests as `samocode answer` and `samocode approve`, shows the
//! progress live, and at the end says where everything is.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use super::{CliError, exit};
use crate::config::{AgentSettings, Config, Project, Provider, RetryPolicy, Sources};
use crate::control::{Request, Response};
use crate::protocol::{RunState, SessionState, WaitFor};
use crate::session::SessionFolder;
use crate::session::open::StartRequest;
use crate::session::person::{Answers, PersonCommand};
use crate::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo project (default: a new folder under the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The sessions the demo runs, each with its dive and task.
const SESSIONS: &[(&str, &str, &str)] = &[
    (
        "login",
        "How are users identified today?",
        "Add a login page",
    ),
    ("search", "Where is the data kept?", "Add full-text search"),
    (
        "export",
        "Which formats do users ask for?",
        "Add CSV export",
    ),
];

/// Agents at once in the demo: fewer than sessions, so that queueing shows.
const DEMO_PARALLEL: usize = 2;

/// The demo gives up after this long (the scripted agent needs well under a minute).
const DEMO_LIMIT: Duration = Duration::from_secs(180);

pub async fn demo(
    args: DemoArgs,
    config: &Config,
    _sources: &Sources,
    mut shutdown: crate::shutdown::Shutdown,
) -> Result<u8, CliError> {
    let started = Instant::now();
    let root = match args.dir {
        // Made absolute: git runs in the repository, where a relative path means another place.
        Some(dir) => std::path::absolute(&dir)
            .map_err(|e| CliError::usage(anyhow::anyhow!("--dir {}: {e}", dir.display())))?,
        None => std::env::temp_dir().join(format!(
            "samocode-demo-{}-{}",
            jiff::Zoned::now().strftime("%y%m%d-%H%M%S"),
            std::process::id()
        )),
    };
    refuse_taken(&root)?;
    // The outermost folder the demo makes (`--dir a/b/c` under a new `a`: `a`).
    let made = root
        .ancestors()
        .take_while(|dir| std::fs::symlink_metadata(dir).is_err())
        .last()
        .map(Path::to_path_buf);
    let project = scaffold(&root).map_err(|e| {
        // Nothing half made is left: the folders were new, or the given one empty.
        let _ = match &made {
            Some(made) => std::fs::remove_dir_all(made),
            None => empty(&root),
        };
        CliError::failure(anyhow::anyhow!(
            "cannot set up the demo project in {}: {e}",
            root.display()
        ))
    })?;
    println!(
        "samocode demo: {} sessions, at most {DEMO_PARALLEL} agents at once, scripted agent, in {}",
        SESSIONS.len(),
        root.display()
    );

    crate::agent::reaper::adopt_orphans();
    let supervisor = SupervisorActor {
        agent: AgentSettings {
            provider: Provider::Claude,
            claude_path: root.join("bin/claude"),
            claude_model: None,
            claude_max_turns: 50,
            codex_path: PathBuf::from("codex"),
            codex_model: None,
            profiles: Default::default(),
            effort: None,
            timeout: Duration::from_secs(120),
            kill_grace: Duration::from_secs(2),
            stall_timeout: None,
            // The same environment policy as any agent: the scripted one needs only PATH.
            env: config.agent.env.clone(),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        },
        keep_parked: true,
        state_dir: None,
        sink: None,
        outbox: None,
        launcher: std::sync::Arc::new(crate::agent::launch::LocalProcess),
        failpoints: Vec::new(),
        budgets: std::sync::Arc::new(config.budgets.clone()),
    };
    let (supervisor, handle) = Actor::spawn(
        None,
        supervisor,
        SupervisorArgs {
            max_parallel: DEMO_PARALLEL,
            open_files: None,
            fleet_costs: Vec::new(),
        },
    )
    .await
    .map_err(|e| CliError::failure(anyhow::anyhow!("cannot start the supervisor: {e}")))?;

    let mut dirs = Vec::new();
    for (name, dive, task) in SESSIONS {
        let request = StartRequest {
            project: project.clone(),
            name: name.to_string(),
            dive: Some(dive.to_string()),
            task: Some(task.to_string()),
            once: false,
            budget: config.budgets.given,
        };
        match supervisor
            .call(|reply| SupervisorMsg::StartSession { request, reply }, None)
            .await
        {
            Ok(CallResult::Success(Ok(started))) => dirs.push(started.dir),
            Ok(CallResult::Success(Err(error))) => return Err(CliError::failure(error)),
            _ => {
                return Err(CliError::failure(anyhow::anyhow!(
                    "the supervisor did not answer"
                )));
            }
        }
    }

    let outcome = tokio::select! {
        outcome = watch(&supervisor, &dirs) => outcome,
        signal = shutdown.requested() => {
            // Ctrl-C: the agents are stopped with their grace, as under `supervise`; a second
            // signal kills them at once.
            eprintln!("samocode demo: interrupted; stopping the agents");
            let stopped = supervisor.call(
                |reply| SupervisorMsg::Shutdown { reply },
                Some(Duration::from_secs(15)),
            );
            tokio::select! {
                result = stopped => {
                    if !matches!(result, Ok(CallResult::Success(()))) {
                        crate::agent::launch::kill_all_live();
                    }
                }
                _ = shutdown.forced() => {
                    crate::agent::launch::kill_all_live();
                }
            }
            supervisor.stop(None);
            let _ = handle.await;
            eprintln!("the demo's project stays in {}", root.display());
            return Ok(crate::shutdown::exit_code(signal));
        }
    };
    supervisor.stop(None);
    let _ = handle.await;

    println!();
    println!("finished in {:.1}s:", started.elapsed().as_secs_f64());
    let mut all_done = outcome.is_ok();
    for dir in &dirs {
        let folder = SessionFolder::new(dir);
        match folder.load_state() {
            Ok(state) => {
                all_done &= state.status.name() == "done";
                let place = state
                    .worktree
                    .as_deref()
                    .map(|w| w.display().to_string())
                    .unwrap_or_default();
                println!(
                    "  {}: {} after {} iterations, ${:.4}, branch {} in {place}",
                    folder.name(),
                    state.status.name(),
                    state.iteration,
                    state.usage.cost_usd,
                    state.branch.clone().unwrap_or_default()
                );
            }
            Err(error) => println!("  {}: {error}", folder.name()),
        }
    }
    if let Err(error) = outcome {
        println!("  {error}");
    }
    println!();
    println!("where things are:");
    println!(
        "  sessions (notebook, state, journals, artifacts): {}",
        project.sessions.display()
    );
    println!(
        "  attempt logs:                                    {}/<session>/_logs",
        project.sessions.display()
    );
    println!(
        "  git worktrees (one branch per session):          {}",
        project.worktrees.display()
    );
    println!(
        "  the repository:                                  {}",
        project.main_repo.display()
    );
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "samocode".into());
    // Run with a stand-in (no HOME), the status command needs it named as well.
    let state = match config.state_dir == stand_in_state_dir() {
        false => String::new(),
        true => format!(
            "SAMOCODE_STATE_DIR={} ",
            shell_word(&config.state_dir.display().to_string())
        ),
    };
    println!(
        "try: cd {} && {state}{} status",
        shell_word(&root.display().to_string()),
        shell_word(&exe)
    );
    Ok(if all_done { exit::DONE } else { exit::FAILURE })
}

/// Shows progress and plays the person at the gates until every session is done.
async fn watch(supervisor: &ActorRef<SupervisorMsg>, dirs: &[PathBuf]) -> anyhow::Result<()> {
    let live = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut shown: HashMap<PathBuf, String> = HashMap::new();
    let mut answered: HashMap<PathBuf, u32> = HashMap::new();
    let mut drawn = 0;
    loop {
        let states: Vec<(String, Option<SessionState>)> = dirs
            .iter()
            .map(|d| {
                let folder = SessionFolder::new(d);
                (folder.name(), folder.load_state().ok())
            })
            .collect();
        let lines: Vec<String> = states
            .iter()
            .map(|(name, state)| match state {
                Some(s) => format!(
                    "{name:<20} {:<15} {:<8} iteration {:>2}",
                    s.phase.to_string(),
                    s.status.name(),
                    s.iteration
                ),
                None => format!("{name:<20} (starting)"),
            })
            .collect();
        if live {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for line in &lines {
                let _ = writeln!(out, "\x1b[2K  {line}");
            }
            let _ = out.flush();
            drawn = lines.len();
        } else {
            for (dir, line) in dirs.iter().zip(&lines) {
                if shown.get(dir) != Some(line) {
                    println!("  {line}");
                    shown.insert(dir.clone(), line.clone());
                }
            }
        }
        for (dir, (_, state)) in dirs.iter().zip(&states) {
            let Some(state) = state else { continue };
            // Each gate is answered once per iteration that asked.
            if answered.get(dir) == Some(&state.iteration) {
                continue;
            }
            let command = match state.status {
                RunState::Waiting {
                    wait_for: WaitFor::QaAnswers,
                    ..
                } => PersonCommand::Answer {
                    answers: Answers::Suggestions,
                },
                RunState::Waiting {
                    wait_for: WaitFor::PlanApproval,
                    ..
                } => PersonCommand::Approve,
                _ => continue,
            };
            answered.insert(dir.clone(), state.iteration);
            let request = Request::Person {
                dir: dir.clone(),
                command,
                by: Some("by the demo".into()),
            };
            match crate::control::ask(supervisor, request).await {
                Response::Done { message } if !live => {
                    println!("  demo, as a person: {message}")
                }
                Response::Error { message, .. } => {
                    anyhow::bail!("a gate was refused: {message}")
                }
                _ => {}
            }
        }
        let finished = states.iter().all(|(_, s)| {
            s.as_ref().is_some_and(|s| {
                !s.status.is_runnable() && !matches!(s.status, RunState::Waiting { .. })
            })
        });
        if finished {
            return Ok(());
        }
        if started.elapsed() > DEMO_LIMIT {
            anyhow::bail!(
                "the demo did not finish within {}",
                humantime::format_duration(DEMO_LIMIT)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The state directory the demo is given when nothing names one (no HOME): it keeps nothing
/// there, but the configuration needs one.
pub fn stand_in_state_dir() -> PathBuf {
    std::env::temp_dir().join("samocode-demo-state")
}

use crate::protocol::shell_word;

/// The demo writes its own project (`.samocode`, a repository, sessions): only into a folder
/// that is new or empty, never over a person's work or an earlier demo.
fn refuse_taken(root: &Path) -> Result<(), CliError> {
    if std::fs::symlink_metadata(root).is_ok() && !root.exists() {
        return Err(CliError::usage(anyhow::anyhow!(
            "--dir {} is a link to nothing; give --dir a new or empty folder",
            root.display()
        )));
    }
    let holds = match std::fs::read_dir(root) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(CliError::usage(anyhow::anyhow!(
                "--dir {} is a file, not a folder; give --dir a new or empty folder",
                root.display()
            )));
        }
        Err(e) => {
            return Err(CliError::usage(anyhow::anyhow!(
                "cannot read --dir {}: {e}",
                root.display()
            )));
        }
    };
    if holds {
        return Err(CliError::usage(anyhow::anyhow!(
            "{} is not empty: the demo makes a project of its own there (a repository, \
             .samocode, sessions); give --dir a new or empty folder",
            root.display()
        )));
    }
    Ok(())
}

/// Removes what `dir` holds, keeping the folder.
fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// A git repository with one commit, WORKTREES and SESSIONS, `.samocode`, and `bin/claude`
/// that runs this very binary as the scripted agent.
fn scaffold(root: &Path) -> std::io::Result<Project> {
    let repo = root.join("repo");
    for dir in ["repo", "worktrees", "sessions", "bin"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::write(
        repo.join("README.md"),
        "# Demo app\n\nA tiny repository for the samocode demo.\n",
    )?;
    let git = |args: &[&str]| -> std::io::Result<()> {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=samocode demo",
                "-c",
                "user.email=demo@samocode.invalid",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run git: {e}; install git (the demo makes a repository)"),
                )
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "git {} failed",
                args.join(" ")
            )))
        }
    };
    if !repo.join(".git").exists() {
        git(&["init", "-q", "-b", "main"])?;
        git(&["add", "."])?;
        git(&["commit", "-q", "-m", "Initial commit"])?;
    }
    std::fs::write(
        root.join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\n",
    )?;
    let exe = std::env::current_exe()?;
    let claude = root.join("bin/claude");
    // A short pause per iteration, so that the progress is there to be watched.
    std::fs::write(
        &claude,
        format!(
            "#!/bin/sh\nSAMOCODE_FAKE='*=slow:0.2'\nexport SAMOCODE_FAKE\nexec '{}' fake-agent \"$@\"\n",
            exe.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755))?;
    Ok(Project {
        file: root.join(".samocode"),
        main_repo: repo,
        worktrees: root.join("worktrees"),
        sessions: root.join("sessions"),
        base_branch: Some("main".into()),
        branch_prefix: Some("demo".into()),
    })
}
