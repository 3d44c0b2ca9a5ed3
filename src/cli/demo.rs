//! `samocode demo`: a self-contained run of several sessions at once on one supervisor, with
//! the built-in scripted agent in a throwaway git project. Questions are answered with their
//! suggestions and plans approved by the demo itself, through the same code paths as
//! `samocode answer` and `samocode approve`. At the end it says where everything is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use super::{CliError, exit};
use crate::config::{AgentSettings, Config, Project, Provider, RetryPolicy, Sources};
use crate::protocol::{SessionState, WaitFor, gate};
use crate::session::SessionFolder;
use crate::session::actor::{Settled, StartRequest};
use crate::session::person::{self, Answers};
use crate::supervisor::{SupervisorActor, SupervisorMsg};

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

pub async fn demo(args: DemoArgs, _config: &Config, _sources: &Sources) -> Result<u8, CliError> {
    let started = Instant::now();
    let root = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!(
            "samocode-demo-{}",
            jiff::Zoned::now().strftime("%y%m%d-%H%M%S")
        )),
    };
    let project = scaffold(&root).map_err(|e| {
        CliError::failure(anyhow::anyhow!(
            "cannot set up the demo project in {}: {e}",
            root.display()
        ))
    })?;
    println!(
        "samocode demo: {} sessions with the scripted agent in {}",
        SESSIONS.len(),
        root.display()
    );

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
        },
        retry: RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        },
        project: project.clone(),
    };
    let (supervisor, handle) = Actor::spawn(None, supervisor, ())
        .await
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot start the supervisor: {e}")))?;

    let mut drivers = tokio::task::JoinSet::new();
    for (name, dive, task) in SESSIONS {
        let supervisor = supervisor.clone();
        let project = project.clone();
        let request = StartRequest {
            name: name.to_string(),
            dive: Some(dive.to_string()),
            task: Some(task.to_string()),
            once: false,
        };
        drivers.spawn(async move { drive(supervisor, project, request).await });
    }
    let mut finished = Vec::new();
    while let Some(result) = drivers.join_next().await {
        match result {
            Ok(Ok(folder)) => finished.push(folder),
            Ok(Err(error)) => println!("  a session ended early: {error:#}"),
            Err(error) => println!("  a session driver failed: {error}"),
        }
    }
    supervisor.stop(None);
    let _ = handle.await;

    println!();
    println!("finished in {:.1}s:", started.elapsed().as_secs_f64());
    finished.sort();
    let mut all_done = true;
    for folder in &finished {
        let state = SessionFolder::new(project.sessions.join(folder)).load_state();
        match state {
            Ok(state) => {
                all_done &= state.status.name() == "done";
                println!(
                    "  {folder}: {} after {} iterations, ${:.4}, branch {} in {}",
                    state.status.name(),
                    state.iteration,
                    state.usage.cost_usd,
                    state.branch.clone().unwrap_or_default(),
                    state
                        .worktree
                        .as_deref()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                );
            }
            Err(error) => println!("  {folder}: {error}"),
        }
    }
    all_done &= finished.len() == SESSIONS.len();
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
    println!(
        "try: cd {} && {} status",
        root.display(),
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "samocode".into())
    );
    Ok(if all_done { exit::DONE } else { exit::FAILURE })
}

/// Drives one session to the end, answering its gates the way a person would.
async fn drive(
    supervisor: ActorRef<SupervisorMsg>,
    project: Project,
    mut request: StartRequest,
) -> anyhow::Result<String> {
    let name = request.name.clone();
    loop {
        let req = request.clone();
        let started = supervisor
            .call(
                |reply| SupervisorMsg::StartSession {
                    request: req,
                    reply,
                },
                None,
            )
            .await;
        let (folder, settled) = match started {
            Ok(CallResult::Success(Ok(found))) => found,
            Ok(CallResult::Success(Err(error))) => return Err(error.into()),
            _ => anyhow::bail!("the supervisor did not answer for {name}"),
        };
        let settled = match settled {
            Some(settled) => settled,
            None => {
                let watch = folder.clone();
                match supervisor
                    .call(
                        |reply| SupervisorMsg::Watch {
                            folder: watch,
                            reply,
                        },
                        None,
                    )
                    .await
                {
                    Ok(CallResult::Success(settled)) => settled,
                    _ => anyhow::bail!("the supervisor stopped while {name} ran"),
                }
            }
        };
        let store = SessionFolder::new(project.sessions.join(&folder)).lock()?;
        match settled {
            Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            } => {
                println!("  {name}: questions asked; answering with the suggested answers");
                person::answer(&store, &Answers::Suggestions)?;
            }
            Settled::Waiting {
                wait_for: WaitFor::PlanApproval,
            } => {
                println!("  {name}: plan written; approving it");
                person::act(&store, gate::approve)?;
            }
            Settled::Done { .. } => {
                println!("  {name}: done");
                return Ok(folder);
            }
            other => {
                let state: SessionState = store.load_state()?;
                println!("  {name}: stopped as {} ({other:?})", state.status.name());
                return Ok(folder);
            }
        }
        drop(store);
        request.name = folder;
        request.dive = None;
        request.task = None;
    }
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
            .status()?;
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
    std::fs::write(
        &claude,
        format!("#!/bin/sh\nexec '{}' fake-agent \"$@\"\n", exe.display()),
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
