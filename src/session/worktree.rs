//! The session's git worktree: `WORKTREES/<folder>` on branch `[BRANCH_PREFIX/]<name>`, made
//! from `BASE_BRANCH` at init, reused when it is already this session's own.
//!
//! What goes to git as an argument cannot be read as an option: paths and the base follow
//! `--`, and the branch (`-b BRANCH`, `refs/heads/BRANCH`) is checked like a git ref name,
//! never starting with `-`, by the name and the configuration before it gets here.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::config::Project;
use crate::protocol::baseline::Baseline;

/// A worktree ready for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    pub path: PathBuf,
    pub branch: String,
}

/// Why the worktree could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// MAIN_REPO is not inside a git repository.
    #[error(
        "MAIN_REPO {path} is not a git repository ({detail}); run `git init` there or fix MAIN_REPO in .samocode"
    )]
    NotARepo { path: PathBuf, detail: String },
    /// No base branch could be found.
    #[error(
        "cannot tell the default branch of {path}; set BASE_BRANCH in .samocode (the repository needs at least one commit)"
    )]
    NoBaseBranch { path: PathBuf },
    /// The worktree folder exists but belongs to something else.
    #[error(
        "{path} exists but is not this session's worktree (it is on {found:?}, expected branch {branch:?}); move it away or rename the session"
    )]
    Foreign {
        path: PathBuf,
        branch: String,
        found: String,
    },
    /// A git command failed.
    #[error("git {args} failed in {dir}: {detail}")]
    Git {
        args: String,
        dir: PathBuf,
        detail: String,
    },
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    Ok(git_raw(dir, args).await?.trim().to_string())
}

/// A git command's standard output as it printed it (porcelain lines start with a space).
async fn git_raw(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .map_err(|e| WorktreeError::Git {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(WorktreeError::Git {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Makes (or finds) the worktree of session folder `folder` with short name `name`.
pub async fn prepare(
    project: &Project,
    folder: &str,
    name: &str,
) -> Result<Worktree, WorktreeError> {
    let repo = &project.main_repo;
    git(repo, &["rev-parse", "--show-toplevel"])
        .await
        .map_err(|e| WorktreeError::NotARepo {
            path: repo.clone(),
            detail: match e {
                WorktreeError::Git { detail, .. } => detail,
                other => other.to_string(),
            },
        })?;
    let branch = match &project.branch_prefix {
        Some(prefix) => format!("{prefix}/{name}"),
        None => name.to_string(),
    };
    let path = project.worktrees.join(folder);
    if path.exists() {
        let found = git(&path, &["rev-parse", "--abbrev-ref", "HEAD"])
            .await
            .unwrap_or_else(|_| "no git checkout".to_string());
        if found == branch {
            return Ok(Worktree { path, branch });
        }
        return Err(WorktreeError::Foreign {
            path,
            branch,
            found,
        });
    }
    // git does not make worktrees safely in parallel (it reads and writes .git/worktrees):
    // sessions of one process take turns here.
    static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ADDING.lock().await;
    let path_text = path.to_string_lossy().into_owned();
    let branch_ref = format!("refs/heads/{branch}");
    if git(repo, &["rev-parse", "--verify", "--quiet", &branch_ref])
        .await
        .is_ok()
    {
        git(repo, &["worktree", "add", "--", &path_text, &branch]).await?;
    } else {
        let base = match &project.base_branch {
            Some(base) => base.clone(),
            None => default_branch(repo).await?,
        };
        git(
            repo,
            &["worktree", "add", "-b", &branch, "--", &path_text, &base],
        )
        .await?;
    }
    Ok(Worktree { path, branch })
}

async fn default_branch(repo: &Path) -> Result<String, WorktreeError> {
    if let Ok(remote_head) = git(
        repo,
        &[
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    )
    .await
    {
        return Ok(remote_head);
    }
    let current = git(repo, &["symbolic-ref", "--quiet", "--short", "HEAD"]).await;
    match current {
        Ok(branch)
            if git(repo, &["rev-parse", "--verify", "--quiet", "HEAD"])
                .await
                .is_ok() =>
        {
            Ok(branch)
        }
        _ => Err(WorktreeError::NoBaseBranch {
            path: repo.to_path_buf(),
        }),
    }
}

/// The tracked files of a worktree now, to tell whether a read-only attempt changed them.
pub async fn baseline(dir: &Path) -> Result<Baseline, WorktreeError> {
    Ok(Baseline {
        head: git(dir, &["rev-parse", "HEAD"]).await?,
        changes: git_raw(dir, &["status", "--porcelain", "--untracked-files=no"]).await?,
    })
}

/// [`baseline`] for callers off the async threads (taking over a session).
pub fn baseline_blocking(dir: &Path) -> Result<Baseline, WorktreeError> {
    let run = |args: &[&str]| -> Result<String, WorktreeError> {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| WorktreeError::Git {
                args: args.join(" "),
                dir: dir.to_path_buf(),
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(WorktreeError::Git {
                args: args.join(" "),
                dir: dir.to_path_buf(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    Ok(Baseline {
        head: run(&["rev-parse", "HEAD"])?.trim().to_string(),
        changes: run(&["status", "--porcelain", "--untracked-files=no"])?,
    })
}

/// The worktree an older tool left at `WORKTREES/<folder>`, if there is one (used when adopting
/// a Python samocode session, which recorded no worktree in a form we read).
pub fn adopt(project: &Project, folder: &str) -> Option<Worktree> {
    let path = project.worktrees.join(folder);
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(&path)
        .args(["rev-parse", "--abbrev-ref", "HEAD"])
        .output()
        .ok()?;
    output.status.success().then(|| Worktree {
        branch: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        path,
    })
}
