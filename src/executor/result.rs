//! What comes back from a remote attempt: the [`Event`]s its runner streams (as JSON lines on
//! `attempt-run`'s standard output, and on the engine's per-attempt subject), the last of them
//! the [`AttemptResult`], and [`apply`]: the daemon taking that result into the session folder
//! as if the agent had run here.
//!
//! The daemon applies a result under the session's lock, which its session actor holds for as
//! long as it drives the session, and only the result of the attempt in flight, of its newest
//! epoch: a worker that was given up for dead and comes back late is refused ([`ApplyError::Stale`]),
//! so one attempt's files never land twice and never over a newer run's.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::git_remote::GitRemote;
use super::spec::{SessionFile, daemon_owned};
use crate::agent::launch::ExitKind;

/// One line of a runner's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A worker took the attempt (epoch N: its Nth delivery).
    Started {
        key: String,
        epoch: u32,
        host: String,
    },
    /// Complete lines the agent printed on its standard output; `at`: where they start in it
    /// (bytes of the data sent before; absent from an older runner).
    Out {
        epoch: u32,
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// The runner is alive (every few seconds while the agent runs).
    Heartbeat { epoch: u32 },
    /// The attempt is over; nothing follows.
    Result(Box<AttemptResult>),
}

/// How the agent's process ended on the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum End {
    Exited {
        code: i32,
    },
    /// Killed by this signal (`SIGTERM` after a cancel, `SIGKILL` after the grace).
    Signaled {
        signal: String,
    },
    /// The attempt could not run at all on the worker (the repository could not be fetched,
    /// the agent CLI is missing): a configuration problem, not the agent's.
    Failed {
        detail: String,
    },
}

/// The end of a remote attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptResult {
    pub key: String,
    pub attempt_id: String,
    pub epoch: u32,
    /// Where it ran: the worker's name, or `pod/<name>`.
    pub host: String,
    pub end: End,
    /// HEAD of the worker's checkout after the agent, when it moved past the base commit; it
    /// was pushed to the spec's result ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Session files the agent created or changed, relative to the session folder.
    pub changed: Vec<SessionFile>,
    /// Session files the agent deleted.
    pub deleted: Vec<String>,
    /// The end of the agent's standard error.
    pub stderr: String,
    /// Something worth recording about the attempt's end on the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the daemon expects of the result it applies.
#[derive(Debug, Clone)]
pub struct Expected {
    pub attempt_id: String,
    /// The newest epoch seen started; an older one is stale.
    pub epoch: u32,
    pub session_dir: PathBuf,
    /// The agent's working directory here (the session's worktree), moved forward to the
    /// result's commit.
    pub workdir: PathBuf,
    /// The attempt's `.stderr.log`.
    pub stderr_file: PathBuf,
    /// Where the worker pushed the commits, and the ref.
    pub repo_url: String,
    pub result_ref: String,
    pub base_commit: String,
}

/// Why a result was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The result is of another attempt, or of an epoch older than the newest one started.
    #[error(
        "stale result refused: attempt {got_attempt} epoch {got_epoch}, while attempt {attempt} runs at epoch {epoch}"
    )]
    Stale {
        attempt: String,
        epoch: u32,
        got_attempt: String,
        got_epoch: u32,
    },
    /// A file path that would land outside the session folder, or on a file the daemon owns.
    #[error(
        "result refused: the worker returned the file {0:?}, which is not the agent's to write"
    )]
    Path(String),
    /// A commit id that is not one.
    #[error("result refused: {0:?} is not a commit id")]
    Commit(String),
    /// Writing into the session folder failed.
    #[error(transparent)]
    Write(#[from] crate::session::StoreError),
    /// The agent's commits could not be brought into the worktree.
    #[error("cannot bring the agent's commit {commit} into {workdir}: {detail}")]
    Git {
        commit: String,
        workdir: PathBuf,
        detail: String,
    },
}

impl AttemptResult {
    /// How the agent's process ended, as the AgentProcess reads an exit; a run that failed on
    /// the worker before the agent started is an error, like a local spawn that failed.
    pub fn exit(&self) -> std::io::Result<ExitKind> {
        match &self.end {
            End::Exited { code } => Ok(ExitKind::Code(*code)),
            End::Signaled { signal } => Ok(ExitKind::Signal(signal.clone())),
            End::Failed { detail } => Err(std::io::Error::other(format!(
                "the attempt could not run on {}: {detail}",
                self.host
            ))),
        }
    }
}

/// Applies `result` to the session folder and worktree of `expected`: the agent's files
/// written (each atomically) or deleted, its standard error appended to the attempt's
/// `.stderr.log`, and the worktree moved forward (fast-forward only) to the commit the worker
/// pushed. Checks everything before it writes anything.
pub async fn apply(expected: &Expected, result: &AttemptResult) -> Result<(), ApplyError> {
    if result.attempt_id != expected.attempt_id || result.epoch < expected.epoch {
        return Err(ApplyError::Stale {
            attempt: expected.attempt_id.clone(),
            epoch: expected.epoch,
            got_attempt: result.attempt_id.clone(),
            got_epoch: result.epoch,
        });
    }
    for path in result
        .changed
        .iter()
        .map(|f| &f.path)
        .chain(result.deleted.iter())
    {
        if !agents_file(path) {
            return Err(ApplyError::Path(path.clone()));
        }
    }
    let commit = match &result.commit {
        Some(commit) if *commit != expected.base_commit => {
            if !(commit.len() >= 40 && commit.chars().all(|c| c.is_ascii_hexdigit())) {
                return Err(ApplyError::Commit(commit.clone()));
            }
            Some(commit.clone())
        }
        _ => None,
    };
    if let Some(commit) = &commit {
        let merged = fast_forward(expected, commit).await;
        // git may leave a detached maintenance behind (adopted by the daemon, the subreaper):
        // those of earlier merges have ended by now, and are reaped here.
        crate::executor::local::reap_dead_orphans();
        merged?;
    }
    for file in &result.changed {
        let path = expected.session_dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| crate::session::StoreError::Io {
                action: "cannot create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::session::store::write_atomic(&path, file.text.as_bytes())?;
    }
    for deleted in &result.deleted {
        let path = expected.session_dir.join(deleted);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
            let _ = std::fs::remove_file(&path);
        }
    }
    if !result.stderr.is_empty() {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&expected.stderr_file)
            .and_then(|mut f| f.write_all(result.stderr.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(%error, "the remote attempt's standard error was not kept");
        }
    }
    Ok(())
}

/// A path the agent may have written: relative, inside the folder, not the daemon's.
fn agents_file(path: &str) -> bool {
    let relative = Path::new(path);
    !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !daemon_owned(path)
}

/// Brings `commit` into the worktree: fetched from the result ref when this repository does
/// not have it yet (a shared git server), then a fast-forward, which refuses to lose anything.
async fn fast_forward(expected: &Expected, commit: &str) -> Result<(), ApplyError> {
    let workdir = expected.workdir.as_path();
    let git = super::git_remote::run_git;
    let fail = |detail: String| ApplyError::Git {
        commit: commit.to_string(),
        workdir: expected.workdir.clone(),
        detail,
    };
    let object = format!("{commit}^{{commit}}");
    if git(workdir, &["cat-file", "-e", &object], None)
        .await
        .is_err()
    {
        let remote = GitRemote::of(&expected.repo_url);
        let fetch = [
            "fetch",
            "-q",
            "--no-tags",
            "--",
            &remote.url,
            &expected.result_ref,
        ];
        git(workdir, &fetch, Some(&remote)).await.map_err(fail)?;
    }
    git(workdir, &["merge", "--ff-only", "-q", commit], None)
        .await
        .map(drop)
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_files_may_come_back() {
        for ok in [
            "_signal.json",
            "_qa.md",
            "notes/a.md",
            "11-24-10:00-plan-x.md",
        ] {
            assert!(agents_file(ok), "{ok}");
        }
        for refused in [
            "",
            "../x",
            "/etc/passwd",
            "a/../../x",
            "_state.json",
            "_logs/a.jsonl",
            "_iterations.jsonl",
            "session.log",
        ] {
            assert!(!agents_file(refused), "{refused}");
        }
    }
}
