//! The far side of a remote attempt: what `samocode attempt-run --spec FILE` does wherever it
//! is placed (a worker's host, a Kubernetes pod).
//!
//! It fetches the repository and checks the base commit out into a fresh checkout, lays out a
//! copy of the session folder from the spec, points the context and the arguments at those
//! copies, and spawns the agent CLI exactly as the daemon would ([`LocalProcess`]: its own
//! process group, the markers, the allowlisted environment). While the agent runs it streams
//! [`Event`]s: the agent's output lines and a heartbeat. A cancel (SIGTERM to the runner, or
//! the spec's deadline passing) stops the group: SIGTERM, the grace, then SIGKILL, escaped
//! descendants found by their markers. At the end it commits nothing itself: it pushes the
//! agent's commits to the spec's result ref, and returns the session files the agent wrote,
//! as the [`AttemptResult`], the last event. The daemon decides what the result means.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::git_remote::GitRemote;
use super::local::LocalProcess;
use super::result::{AttemptResult, End, Event};
use super::spec::{RemoteSpec, SessionFile, snapshot};
use crate::agent::launch::{ExitKind, GroupGuard};
use crate::agent::process::copy_errors;
use crate::agent::{AgentCommand, AttemptSpec};
use crate::config::{Config, Provider};
use crate::session::store::AttemptFiles;

/// How often a running attempt says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The most of the agent's standard error returned with the result (its end).
const STDERR_TAIL: u64 = 256 * 1024;
/// After the last SIGKILL, how long the agent's output may stay open before it is abandoned.
const PIPE_DRAIN: Duration = Duration::from_millis(200);
/// The most of one output event: longer runs of text without a newline are sent in pieces.
const OUT_CHUNK: usize = 64 * 1024;

/// What the runner needs besides the spec.
pub struct Place<'a> {
    /// The worker's configuration: the agent CLIs' paths, its environment policy.
    pub config: &'a Config,
    /// The worker's environment, from which the variables the spec names take their values.
    pub env: &'a HashMap<String, String>,
    /// Where the checkout and the session copy go (a folder of their own inside it).
    pub workspace: &'a Path,
    /// The name the result carries (`host` of the `_iterations.jsonl` row).
    pub host: String,
}

/// Runs the attempt of `spec`, sending its events to `events` (the result last); `cancel`
/// resolving stops the agent with its grace.
pub async fn run(
    spec: &RemoteSpec,
    place: &Place<'_>,
    cancel: impl std::future::Future<Output = ()>,
    events: mpsc::UnboundedSender<Event>,
) -> AttemptResult {
    let _ = events.send(Event::Started {
        key: spec.key.clone(),
        epoch: spec.epoch,
        host: place.host.clone(),
    });
    let root = attempt_root(place.workspace, spec);
    let mut result = AttemptResult {
        key: spec.key.clone(),
        attempt_id: spec.attempt_id.clone(),
        epoch: spec.epoch,
        host: place.host.clone(),
        end: End::Failed {
            detail: String::new(),
        },
        commit: None,
        changed: Vec::new(),
        deleted: Vec::new(),
        stderr: String::new(),
        note: None,
    };
    match prepare(spec, place, &root).await {
        Err(detail) => result.end = End::Failed { detail },
        Ok(local) => {
            let (end, note) = supervise(spec, &local, cancel, &events).await;
            result.end = end;
            result.note = note;
            collect(spec, &local, &mut result).await;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// The attempt as it runs here.
struct Local {
    spec: AttemptSpec,
    repo: PathBuf,
}

/// The copy of the session folder an attempt's agent works with, under the worker's
/// `workspace`: also the session marker in the agent's environment.
pub fn session_copy(workspace: &Path, spec: &RemoteSpec) -> std::path::PathBuf {
    session_in(&attempt_root(workspace, spec), spec)
}

/// The session copy in an attempt's folder `root`.
fn session_in(root: &Path, spec: &RemoteSpec) -> std::path::PathBuf {
    root.join("session").join(&spec.session)
}

/// The folder of one epoch of an attempt under the worker's `workspace`.
fn attempt_root(workspace: &Path, spec: &RemoteSpec) -> std::path::PathBuf {
    workspace.join(format!("{}-e{}", spec.key, spec.epoch))
}

/// Fetches the repository, checks the base commit out, lays out the session copy and builds
/// the local spec; an error says what failed, for the result.
async fn prepare(spec: &RemoteSpec, place: &Place<'_>, root: &Path) -> Result<Local, String> {
    let _ = std::fs::remove_dir_all(root);
    let repo = root.join("repo");
    let session = session_in(root, spec);
    for dir in [&repo, &session] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let repository = &spec.repository;
    git(&repo, &["init", "-q"]).await?;
    let remote = GitRemote::of(&repository.url);
    git_with(
        &repo,
        &[
            "fetch",
            "-q",
            "--no-tags",
            "--",
            &remote.url,
            &repository.base_ref,
        ],
        Some(&remote),
    )
    .await
    .map_err(|e| {
        // The address may carry a token (`https://x-access-token:TOKEN@…`), and git's own
        // words may quote it: never in the attempt's detail.
        crate::config::without_userinfo(&format!(
            "cannot fetch {} from {}: {e}",
            repository.base_ref, repository.url
        ))
        .into_owned()
    })?;
    git(
        &repo,
        &["checkout", "-q", "--detach", &repository.base_commit, "--"],
    )
    .await
    .map_err(|e| format!("cannot check out {}: {e}", repository.base_commit))?;
    for file in &spec.files {
        let path = session.join(&file.path);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, &file.text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let context = session.join(&spec.context_file);
    if let Some(parent) = context.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&context, spec.rewrite(&spec.context, &session, &repo))
        .map_err(|e| format!("cannot write {}: {e}", context.display()))?;
    let program = match spec.provider {
        Provider::Claude => place.config.agent.claude_path.clone(),
        Provider::Codex => place.config.agent.codex_path.clone(),
    };
    let command = AgentCommand {
        provider: spec.provider,
        program,
        args: spec
            .args
            .iter()
            .map(|arg| spec.rewrite(arg, &session, &repo))
            .collect(),
        workdir: repo.clone(),
        env: place
            .config
            .env_policy
            .apply_named(&spec.env, place.env)
            .of(spec.provider),
        stdin: spec
            .stdin
            .as_ref()
            .map(|input| spec.rewrite(input, &session, &repo)),
    };
    Ok(Local {
        spec: AttemptSpec {
            command,
            files: AttemptFiles {
                stdout: root.join("stdout.jsonl"),
                stderr: root.join("stderr.log"),
                context,
            },
            timeout: spec.timeout,
            kill_grace: spec.kill_grace,
            stall: None,
            session_dir: session,
            attempt_id: spec.attempt_id.clone(),
            context: spec.context.clone(),
        },
        repo,
    })
}

/// Runs the agent to its end; returns how it ended and a note.
async fn supervise(
    spec: &RemoteSpec,
    local: &Local,
    cancel: impl std::future::Future<Output = ()>,
    events: &mpsc::UnboundedSender<Event>,
) -> (End, Option<String>) {
    let launched = match LocalProcess.spawn(&local.spec) {
        Ok(launched) => launched,
        Err(error) => {
            return (
                End::Failed {
                    detail: format!(
                        "cannot start {}: {error}; install the agent CLI on this host, or point CLAUDE_PATH (CODEX_PATH for codex) at it",
                        local.spec.command.program.display()
                    ),
                },
                None,
            );
        }
    };
    let mut guard = GroupGuard::new(launched.group);
    if let Some(input) = launched.input {
        tokio::spawn(input);
    }
    let errors = launched.errors.map(|errors| {
        let path = local.spec.files.stderr.clone();
        tokio::spawn(async move { copy_errors(errors, &path).await })
    });
    let epoch = spec.epoch;
    let out = events.clone();
    let mut reader = tokio::spawn(forward_output(launched.output, epoch, out));
    let mut exit = launched.exit;
    let grace = spec.kill_grace;
    // The daemon enforces the time limit; this deadline only catches a runner cut off from it.
    // It counts from here, where the agent starts: not from the spec's publishing, which may
    // have waited in a queue for longer than the limit.
    let deadline = Instant::now() + spec.timeout + grace + Duration::from_secs(30);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    tokio::pin!(cancel);
    // Set once samocode asked the agent to stop (a cancel, or the deadline).
    let mut stopping = false;
    let mut status: Option<std::io::Result<ExitKind>> = None;
    let mut output_open = true;
    let mut kill_at: Option<Instant> = None;
    let mut abandon_at: Option<Instant> = None;
    let mut note = None;
    while status.is_none() || output_open {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        tokio::select! {
            exited = &mut exit, if status.is_none() => {
                status = Some(exited);
                // What the agent left in its group would keep the output open: asked to stop,
                // killed after the grace (a grace already running keeps its schedule).
                if output_open && kill_at.is_none() {
                    guard.signal(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
            }
            _ = &mut reader, if output_open => output_open = false,
            () = &mut cancel, if !stopping => {
                stopping = true;
                guard.signal(Signal::SIGTERM);
                kill_at.get_or_insert(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(deadline), if !stopping && status.is_none() => {
                stopping = true;
                note = Some("the attempt passed its deadline on the worker and was stopped".to_string());
                guard.signal(Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                guard.kill();
                kill_at = None;
                abandon_at = Some(Instant::now() + PIPE_DRAIN);
            }
            () = tokio::time::sleep_until(abandon_at.unwrap_or(far)), if abandon_at.is_some() && status.is_some() => {
                reader.abort();
                output_open = false;
                note = Some("stdout was still held open after the kill grace by a process outside the agent's group; it was abandoned".into());
            }
            _ = beat.tick() => {
                let _ = events.send(Event::Heartbeat { epoch });
            }
        }
    }
    guard.finish();
    if let Some(copier) = errors {
        // The group is dead; only an escaped holder of the pipe could keep it open.
        if tokio::time::timeout(PIPE_DRAIN, copier).await.is_err() {
            tracing::warn!(
                "the agent's standard error was still held open after the kill; its log may be cut short"
            );
        }
    }
    let end = match status {
        Some(Ok(ExitKind::Code(code))) => End::Exited { code },
        Some(Ok(ExitKind::Signal(signal))) => End::Signaled { signal },
        Some(Err(error)) => End::Failed {
            detail: format!("cannot wait for the agent: {error}"),
        },
        None => unreachable!("the loop ends once the agent exited"),
    };
    (end, note)
}

/// Sends the agent's output as events of complete lines (a line longer than [`OUT_CHUNK`]
/// goes in pieces), and what is left at the end.
async fn forward_output(
    mut output: crate::agent::launch::Output,
    epoch: u32,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut chunk = vec![0u8; OUT_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0u64;
    let mut send = |data: String| {
        let start = at;
        at += data.len() as u64;
        let _ = events.send(Event::Out {
            epoch,
            data,
            at: Some(start),
        });
    };
    loop {
        let n = match output.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let cut = match pending.iter().rposition(|b| *b == b'\n') {
            Some(last) => last + 1,
            None if pending.len() >= OUT_CHUNK => pending.len(),
            None => continue,
        };
        let data = String::from_utf8_lossy(&pending[..cut]).into_owned();
        pending.drain(..cut);
        send(data);
    }
    if !pending.is_empty() {
        send(String::from_utf8_lossy(&pending).into_owned());
    }
}

/// Pushes the agent's commits and gathers the session files it changed and its stderr.
async fn collect(spec: &RemoteSpec, local: &Local, result: &mut AttemptResult) {
    let repository = &spec.repository;
    match git_output(&local.repo, &["rev-parse", "HEAD"]).await {
        Ok(head) if head != repository.base_commit => {
            let refspec = format!("HEAD:{}", repository.result_ref);
            match push(&local.repo, &repository.url, &refspec).await {
                Ok(()) => result.commit = Some(head),
                Err(error) => add_note(
                    result,
                    crate::config::without_userinfo(&format!(
                        "the agent's commits could not be pushed to {}: {error}",
                        repository.url
                    ))
                    .into_owned(),
                ),
            }
        }
        Ok(_) => {}
        Err(error) => add_note(result, format!("cannot read the checkout's HEAD: {error}")),
    }
    let before: HashMap<&str, &str> = spec
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    match snapshot(&local.spec.session_dir) {
        Ok(after) => {
            let kept: std::collections::HashSet<&str> =
                after.iter().map(|f| f.path.as_str()).collect();
            result.deleted = spec
                .files
                .iter()
                .filter(|f| !kept.contains(f.path.as_str()))
                .map(|f| f.path.clone())
                .collect();
            result.changed = after
                .into_iter()
                .filter(|f: &SessionFile| before.get(f.path.as_str()) != Some(&f.text.as_str()))
                .collect();
        }
        Err(error) => add_note(
            result,
            format!("the session files were not returned: {error}"),
        ),
    }
    result.stderr = crate::session::store::tail(&local.spec.files.stderr, STDERR_TAIL);
}

fn add_note(result: &mut AttemptResult, note: String) {
    result.note = Some(match result.note.take() {
        Some(first) => format!("{first}; {note}"),
        None => note,
    });
}

/// `git push --force`, tried again a few times: receiving into a repository fails for a
/// moment while the daemon adds a worktree there, and a network remote may blink.
async fn push(dir: &Path, url: &str, refspec: &str) -> Result<(), String> {
    let mut pause = Duration::from_millis(250);
    let mut tries = 1;
    let remote = GitRemote::of(url);
    let push = ["push", "-q", "--force", "--", &remote.url, refspec];
    loop {
        match git_with(dir, &push, Some(&remote)).await {
            Ok(_) => return Ok(()),
            Err(error) if tries == PUSH_TRIES => return Err(error),
            Err(error) => {
                tracing::warn!(%error, tries, "the push failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
        }
    }
}

const PUSH_TRIES: u32 = 4;

async fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    git_output(dir, args).await.map(drop)
}

async fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    git_with(dir, args, None).await
}

/// git in `dir`, with the credentials of the `remote` it talks to.
async fn git_with(dir: &Path, args: &[&str], remote: Option<&GitRemote>) -> Result<String, String> {
    super::git_remote::run_git(dir, args, remote).await
}
