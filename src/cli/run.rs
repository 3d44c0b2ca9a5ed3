//! `samocode run`: one session in the foreground, on the same actor tree as the daemon (a
//! supervisor with one session), until it is done, waits for a person, blocks or fails.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ractor::Actor;
use ractor::rpc::CallResult;

use super::{CliError, exit};
use crate::agent::launch::{self, LocalProcess};
use crate::config::Config;
use crate::daemon::exit_watch;
use crate::protocol::qa::QaDoc;
use crate::protocol::{SessionState, WaitFor};
use crate::session::context::{self, ContextInput};
use crate::session::name;
use crate::session::open::{Settled, StartRequest};
use crate::session::store::{QA, SessionFolder};
use crate::shutdown::Shutdown;
use crate::supervisor::{Started, SupervisorActor, SupervisorArgs, SupervisorMsg};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: super::SessionSpec,
    /// The agent CLI: claude (the default) or codex (also SAMOCODE_PROVIDER).
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// The hard limit of one agent attempt (90s, 30m, 2h; default 30m, also CLAUDE_TIMEOUT or
    /// CODEX_TIMEOUT).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Run a single iteration, then exit (0 when it was accepted).
    #[arg(long)]
    pub once: bool,
    /// Print the resolved configuration and the agent command line, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub log: super::LogArgs,
}

pub async fn run(args: RunArgs, config: &Config, mut shutdown: Shutdown) -> Result<u8, CliError> {
    name::validate(&args.spec.session)?;
    let project = config.project()?;
    // Checked before a dry run too: it succeeds only where the run itself would start.
    config.check_agent()?;
    if args.dry_run {
        return dry_run(&args, config).await;
    }
    // Orphans of the agent become children of this process (see `agent::reaper`).
    crate::agent::reaper::adopt_orphans();
    let sink = telegram(config)?.map(|t| Arc::new(t) as Arc<dyn crate::notify::Sink>);
    // Notices wait in an outbox in the state directory until sent: one that is not safe to
    // use is refused, as the daemon refuses it, rather than notices lost without a word.
    if sink.is_some() {
        crate::daemon::prepare_state_dir(&config.state_dir).map_err(|error| {
            CliError::usage(anyhow::anyhow!(
                "{error} (Telegram's notices wait there until they are sent)"
            ))
        })?;
    }
    // The same tree as the daemon, with one session that lets go once it parks.
    let supervisor = SupervisorActor {
        agent: config.agent.clone(),
        retry: config.retry.clone(),
        keep_parked: false,
        state_dir: None,
        sink: sink.clone(),
        // Its own outbox: what this run could not send is sent by the next run of the session,
        // or by the daemon at its next start.
        outbox: sink
            .as_ref()
            .map(|_| crate::notify::outbox::run_outbox(&config.state_dir, &args.spec.session)),
        launcher: Arc::new(LocalProcess),
        failpoints: config.failpoints.clone(),
        budgets: std::sync::Arc::new(config.budgets.clone()),
    };
    let failure = |what: String| CliError::failure(anyhow::anyhow!(what));
    let (watch, mut died) = exit_watch::start().await.map_err(failure)?;
    let (supervisor, handle) = Actor::spawn_linked(
        None,
        supervisor,
        SupervisorArgs {
            max_parallel: 1,
            open_files: None,
            fleet_costs: Vec::new(),
        },
        watch.get_cell(),
    )
    .await
    .map_err(|e| failure(format!("cannot start the supervisor: {e}")))?;
    let request = StartRequest {
        project: project.clone(),
        name: args.spec.session.clone(),
        dive: args.spec.dive.clone(),
        task: args.spec.task.clone(),
        once: args.once,
        budget: config.budgets.given,
    };
    let until_settled = async {
        let started = supervisor
            .call(
                |reply| SupervisorMsg::StartSession { request, reply },
                Some(crate::control::ANSWER_TIMEOUT),
            )
            .await;
        match started {
            Ok(CallResult::Success(Ok(Started {
                folder,
                settled: Some(settled),
                ..
            }))) => Ok((folder, settled)),
            Ok(CallResult::Success(Ok(Started {
                folder,
                dir,
                settled: None,
                // The one call without a limit: a session may run for days before it settles.
            }))) => match supervisor
                .call(|reply| SupervisorMsg::Watch { dir, reply }, None)
                .await
            {
                Ok(CallResult::Success(settled)) => Ok((folder, settled)),
                _ => Err(failure("the supervisor stopped unexpectedly".into())),
            },
            // Driven by a daemon: said as such (not "Ctrl-C the `run`" there is none of).
            Ok(CallResult::Success(Err(crate::supervisor::StartError::Open(
                crate::session::open::OpenError::Store(crate::session::store::StoreError::Locked {
                    dir,
                    pid: Some(pid),
                }),
            )))) if super::status::owner::is_daemon(pid) => {
                let name = crate::session::name::short_name(
                    &dir.file_name().unwrap_or_default().to_string_lossy(),
                )
                .to_string();
                Err(CliError::new(
                    exit::LOCKED,
                    anyhow::anyhow!(
                        "a samocode daemon (pid {pid}) drives session {}: act on it there (`samocode status {name}` shows where it stands; `samocode resume`, `answer`, `approve`, `reject`, `stop` and `logs {name} --follow` reach it as usual)",
                        dir.display()
                    ),
                ))
            }
            Ok(CallResult::Success(Err(error))) => Err(CliError {
                code: error.exit_code(),
                error: error.into(),
            }),
            _ => Err(failure("the supervisor did not answer".into())),
        }
    };
    let outcome = tokio::select! {
        outcome = until_settled => outcome,
        reason = &mut died => {
            launch::kill_all_live();
            Err(failure(format!(
                "the supervisor stopped unexpectedly ({}); its agent was killed, and the next `samocode run` takes over",
                reason.unwrap_or_else(|_| "no reason".into())
            )))
        }
        signal = shutdown.requested() => {
            eprintln!(
                "samocode: {}; stopping the agent (an iteration it has not ended runs again next time)",
                signal_words(signal)
            );
            let grace = config.agent.kill_grace
                + Duration::from_secs(10)
                + crate::supervisor::NOTICES_AT_STOP;
            let stopped = supervisor.call(|reply| SupervisorMsg::Shutdown { reply }, Some(grace));
            tokio::select! {
                result = stopped => {
                    if !matches!(result, Ok(CallResult::Success(()))) {
                        launch::kill_all_live();
                    }
                }
                _ = shutdown.forced() => {
                    launch::kill_all_live();
                    eprintln!("samocode: second signal; the agent was killed");
                }
            }
            Err(CliError {
                code: crate::shutdown::exit_code(signal),
                error: anyhow::anyhow!("interrupted"),
            })
        }
    };
    // The notices of the session get their chance to go out before the tree stops.
    let _ = supervisor
        .call(
            |reply| SupervisorMsg::Shutdown { reply },
            Some(
                config.agent.kill_grace
                    + Duration::from_secs(10)
                    + crate::supervisor::NOTICES_AT_STOP,
            ),
        )
        .await;
    supervisor.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(60), handle).await;
    watch.stop(None);
    let (folder, settled) = outcome?;
    Ok(explain(config, &folder, &settled))
}

fn signal_words(signal: i32) -> String {
    match signal {
        0 => "asked to stop".into(),
        n => format!("interrupted by {}", crate::agent::launch::signal_name(n)),
    }
}

/// The Telegram sink, when configured.
pub(super) fn telegram(config: &Config) -> Result<Option<crate::bot::Telegram>, CliError> {
    config
        .telegram
        .as_ref()
        .map(crate::bot::Telegram::new)
        .transpose()
        .map_err(CliError::usage)
}

/// Prints what the session needs next and returns the exit code of its condition.
fn explain(config: &Config, folder: &str, settled: &Settled) -> u8 {
    let project = config.project.as_ref().expect("run has a project");
    let dir = project.sessions.join(folder);
    let session = SessionFolder::new(&dir);
    let state = session.load_state().ok();
    match settled {
        Settled::Done { summary } => {
            println!(
                "{folder}: done{}",
                summary
                    .as_deref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            );
            println!("  session files: {}", dir.display());
            if let Some(SessionState {
                worktree: Some(w),
                branch: Some(b),
                ..
            }) = &state
            {
                println!("  branch {b} in {}", w.display());
            }
            exit::DONE
        }
        Settled::Continued { phase } => {
            println!("{folder}: iteration accepted; next phase {phase}");
            exit::DONE
        }
        Settled::Waiting {
            wait_for: WaitFor::QaAnswers,
        } => {
            println!(
                "{folder}: waiting for answers in {}",
                dir.join(QA).display()
            );
            if let Ok(Some(text)) = session.read(QA) {
                for q in QaDoc::parse(&text).open() {
                    let suggested = q
                        .suggested
                        .as_deref()
                        .map(|s| format!(" (suggested: {s})"))
                        .unwrap_or_default();
                    println!("  Q{}: {}{suggested}", q.number, q.text);
                }
            }
            println!(
                "answer with `samocode answer {folder} --q N TEXT` or `--accept-suggestions`, then run again"
            );
            exit::WAITING
        }
        Settled::Waiting {
            wait_for: WaitFor::PlanApproval,
        } => {
            println!("{folder}: waiting for plan approval");
            if let Some(plan) = crate::session::profile::newest_artifact(&dir, "plan") {
                println!("  plan: {}", plan.display());
            }
            println!(
                "approve with `samocode approve {folder}` or `samocode reject {folder} --reason TEXT`, then run again"
            );
            exit::WAITING
        }
        Settled::Waiting {
            wait_for: WaitFor::HumanAction,
        } => {
            println!(
                "{folder}: waiting for a person's action (see Next: in {})",
                dir.join("_overview.md").display()
            );
            println!("when it is done, `samocode resume {folder}` and run again");
            exit::WAITING
        }
        Settled::Stopped => {
            println!("{folder}: stopped; `samocode resume {folder}` continues it");
            exit::WAITING
        }
        Settled::Blocked { reason } => {
            println!("{folder}: blocked: {reason}");
            if let Some(SessionState {
                status:
                    crate::protocol::RunState::Blocked {
                        needs: Some(needs), ..
                    },
                ..
            }) = &state
            {
                println!("  it needs: {needs}");
            }
            if let Some(limit) = crate::protocol::budget::limit_of_reason(reason) {
                // A plain resume is refused while the budget it reached still holds.
                println!(
                    "raise the {} budget it reached (e.g. `samocode resume {folder} --raise-budget {}`), then run again",
                    limit.word(),
                    limit.example()
                );
            } else {
                println!("fix the cause, then `samocode resume {folder}` and run again");
            }
            exit::BLOCKED
        }
        Settled::Failed { reason } => {
            println!("{folder}: failed: {reason}");
            println!(
                "the attempt logs are in {}; `samocode resume {folder}` tries again",
                dir.join("_logs").display()
            );
            exit::FAILURE
        }
    }
}

async fn dry_run(args: &RunArgs, config: &Config) -> Result<u8, CliError> {
    let project = config.project()?;
    // A repository the run's init would refuse is refused here too.
    // A git that cannot be run at all is left to the run's init, which says so.
    match crate::session::worktree::checkout_blocking(&project.main_repo) {
        Err(crate::session::worktree::WorktreeError::CannotRun { .. }) | Ok(()) => {}
        Err(e) => return Err(CliError::usage(anyhow::anyhow!("{e}"))),
    }
    // A base branch the run's init would refuse is refused here too.
    if let Some(base) = &project.base_branch
        && !crate::session::worktree::names_a_commit(&project.main_repo, base)
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "BASE_BRANCH={base} (from {}) is not a branch or commit of {}; fix it, or remove it for the repository's default branch",
            project.file.display(),
            project.main_repo.display()
        )));
    }
    // As does a repository whose default branch it could not tell (no commits yet, a
    // detached HEAD); named when found, since it is where the sessions' branches start.
    let base = match &project.base_branch {
        Some(base) => base.clone(),
        None => match crate::session::worktree::default_branch(&project.main_repo).await {
            Ok(branch) => format!("{branch} (the repository's default)"),
            Err(crate::session::worktree::WorktreeError::CannotRun { .. }) => {
                "(the repository's default)".into()
            }
            Err(e) => return Err(CliError::usage(anyhow::anyhow!("{e}"))),
        },
    };
    let agent = &config.agent;
    println!("project file:   {}", project.file.display());
    println!("main repo:      {}", project.main_repo.display());
    println!("worktrees:      {}", project.worktrees.display());
    println!("sessions:       {}", project.sessions.display());
    println!("base branch:    {base}");
    println!(
        "branch prefix:  {}",
        project.branch_prefix.as_deref().unwrap_or("(none)")
    );
    println!("provider:       {}", agent.provider);
    println!("agent program:  {}", agent.program().display());
    println!(
        "model:          {}",
        agent.model().unwrap_or("(per phase, from its profile)")
    );
    if agent.provider == crate::config::Provider::Claude {
        println!("max turns:      {}", agent.claude_max_turns);
    }
    println!(
        "timeout:        {}",
        humantime::format_duration(agent.timeout)
    );
    println!(
        "attempts:       {} (first backoff {})",
        config.retry.max_attempts,
        humantime::format_duration(config.retry.first_delay)
    );
    println!("state dir:      {}", config.state_dir.display());
    // What this command gives the session, over the defaults a session without its own gets.
    let budget = config.budgets.given.over(&config.budgets.defaults);
    println!(
        "budget:         {}",
        crate::config::describe_budget(&budget)
    );
    println!(
        "telegram:       {}",
        if config.telegram.is_some() {
            "configured"
        } else {
            "off"
        }
    );
    println!(
        "traces:         {}",
        config.otlp_traces.as_ref().map_or("off".into(), |traces| {
            crate::config::without_userinfo(&traces.endpoint)
        })
    );

    let today = jiff::Zoned::now().strftime("%y-%m-%d").to_string();
    let resolved = name::resolve(&project.sessions, &args.spec.session, &today)?;
    name::check_texts(
        &resolved,
        args.spec.dive.as_deref(),
        args.spec.task.as_deref(),
    )?;
    let mut state = match &resolved {
        name::Resolved::Existing(dir) => SessionFolder::new(dir).load_state()?,
        name::Resolved::New(dir) => {
            let (Some(dive), Some(task)) = (&args.spec.dive, &args.spec.task) else {
                return Err(crate::session::open::OpenError::NeedsDiveAndTask(
                    args.spec.session.clone(),
                )
                .into());
            };
            SessionState::new(
                &dir.file_name().unwrap_or_default().to_string_lossy(),
                dive,
                task,
                jiff::Timestamp::now(),
            )
        }
    };
    println!(
        "session:        {} ({})",
        resolved.path().display(),
        match resolved {
            name::Resolved::Existing(_) => "existing",
            name::Resolved::New(_) => "new",
        }
    );
    if state.phase == crate::protocol::Phase::Init {
        state.enter_phase(crate::protocol::Phase::Investigation);
    }
    state.iteration += 1;
    state.phase_iteration += 1;
    state.attempt = 1;
    let workdir = state
        .worktree
        .clone()
        .unwrap_or_else(|| project.worktrees.join(state.name.clone()));
    let memory = context::memory_for(agent.provider, &workdir);
    let text = context::render(&ContextInput {
        state: &state,
        session_dir: resolved.path(),
        workdir: &workdir,
        time_limit: agent.timeout,
        now: jiff::Timestamp::now(),
        memory: memory.as_deref(),
    });
    let context_file = resolved.path().join("_logs/<attempt>.context.md");
    let picked = crate::session::profile::pick(state.phase, resolved.path());
    let choice = agent.choose(picked.profile);
    println!(
        "next attempt:   {} with profile {}: model {}, effort {}",
        state.phase, choice.profile, choice.model, choice.effort
    );
    let command =
        crate::agent::command(&agent.for_attempt(&choice), &text, &context_file, &workdir);
    println!("agent command (next attempt, in {}):", workdir.display());
    println!("  {}", command.display());
    println!("agent environment (names only; nothing else is inherited):");
    println!("  {}", command.env.names().join(" "));
    Ok(exit::DONE)
}
