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
    /// MAIN_REPO is a bare repository: no checkout to branch a worktree from.
    #[error(
        "MAIN_REPO {path} is a bare repository; point MAIN_REPO in .samocode at a checkout of it (a clone with a work tree)"
    )]
    Bare { path: PathBuf },
    /// No base branch could be found.
    #[error(
        "cannot tell the default branch of {path}; set BASE_BRANCH in .samocode (the repository needs at least one commit)"
    )]
    NoBaseBranch { path: PathBuf },
    /// BASE_BRANCH names nothing in the repository.
    #[error(
        "BASE_BRANCH={base} (from .samocode) is not a branch or commit of {repo}; fix BASE_BRANCH in .samocode (or remove it for the repository's default branch), then `samocode resume`"
    )]
    NoSuchBase { base: String, repo: PathBuf },
    /// HEAD is detached and no remote names a default branch.
    #[error(
        "cannot tell the default branch of {path}: its HEAD is detached; set BASE_BRANCH in .samocode, or check out a branch there"
    )]
    Detached { path: PathBuf },
    /// A new session's branch exists already: it is someone's, not this session's.
    #[error(
        "branch {branch} already exists in {repo}; a new session does not take over a branch it did not make: name the session differently, set BRANCH_PREFIX in .samocode (branches become PREFIX/NAME), or rename that branch, then `samocode resume`"
    )]
    BranchTaken { branch: String, repo: PathBuf },
    /// The session's worktree is gone, and so is its branch.
    #[error(
        "the session's worktree {path} is gone, and its branch {branch} is not in {repo}; restore the branch (or start a new session)"
    )]
    Lost {
        path: PathBuf,
        branch: String,
        repo: PathBuf,
    },
    /// The worktree folder exists but belongs to something else.
    #[error(
        "{path} exists but is not this session's worktree (it is on {found:?}, expected branch {branch:?}); move it away or rename the session"
    )]
    Foreign {
        path: PathBuf,
        branch: String,
        found: String,
    },
    /// git could not be started at all (not installed, or the process short of open files
    /// or processes): nothing is known of the repository.
    #[error(
        "cannot run git {args} in {dir}: {source}; check that git is installed and in PATH, and that samocode is not short of open files (its log says), then `samocode resume`"
    )]
    CannotRun {
        args: String,
        dir: PathBuf,
        source: std::io::Error,
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
    let output = Command::from(git_command(dir, args)).output().await;
    git_output(dir, args, output)
}

/// [`git_raw`] for callers off the async threads.
fn git_raw_blocking(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let output = git_command(dir, args).output();
    git_output(dir, args, output)
}

/// `git -C DIR ARGS`, never asking for a password.
fn git_command(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// A git command's standard output, or why it failed.
fn git_output(
    dir: &Path,
    args: &[&str],
    output: std::io::Result<std::process::Output>,
) -> Result<String, WorktreeError> {
    let failed = |detail: String| WorktreeError::Git {
        args: args.join(" "),
        dir: dir.to_path_buf(),
        detail,
    };
    let output = output.map_err(|source| WorktreeError::CannotRun {
        args: args.join(" "),
        dir: dir.to_path_buf(),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// Makes (or finds) the worktree of session folder `folder` with short name `name`.
///
/// A branch that exists already is taken only when this session claimed it before: `claimed`
/// is the branch its state records, and `claim` records a new one before git makes it, so that
/// an init a crash cut short (the branch made, the checkout not) finds its own branch again.
pub async fn prepare(
    project: &Project,
    folder: &str,
    name: &str,
    claimed: Option<&str>,
    claim: impl FnOnce(&str) -> Result<(), WorktreeError>,
) -> Result<Worktree, WorktreeError> {
    let repo = &project.main_repo;
    checkout(repo).await?;
    let branch = match &project.branch_prefix {
        Some(prefix) => format!("{prefix}/{name}"),
        None => name.to_string(),
    };
    let path = project.worktrees.join(folder);
    if path.exists() {
        // Its own checkout's top, on its branch: a plain folder inside some other checkout
        // answers for that checkout, and the agent would commit there.
        let top = git(&path, &["rev-parse", "--show-toplevel"]).await.ok();
        let own = top.is_some_and(|top| same_dir(Path::new(&top), &path));
        let found = match own {
            true => git(&path, &["rev-parse", "--abbrev-ref", "HEAD"])
                .await
                .unwrap_or_else(|_| "no git checkout".to_string()),
            false => "no git checkout of its own".to_string(),
        };
        if found == branch {
            return Ok(Worktree { path, branch });
        }
        return Err(WorktreeError::Foreign {
            path,
            branch,
            found,
        });
    }
    let _turn = ADDING.lock().await;
    if has_branch(repo, &branch).await? {
        if claimed != Some(branch.as_str()) {
            return Err(WorktreeError::BranchTaken {
                branch,
                repo: repo.clone(),
            });
        }
        // Ours, from an init cut short (a crash, or a checkout that failed after git made
        // the branch): the checkout is made on it now.
        add_on(repo, &path, &branch).await?;
        return Ok(Worktree { path, branch });
    }
    let base = match &project.base_branch {
        Some(base) => base.clone(),
        None => default_branch(repo).await?,
    };
    // Named before anything is made: git's own word for it names neither the setting nor
    // the file.
    if !succeeds(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{base}^{{commit}}"),
        ],
    )
    .await?
    {
        return Err(WorktreeError::NoSuchBase {
            base,
            repo: repo.clone(),
        });
    }
    claim(&branch)?;
    let path_text = path.to_string_lossy().into_owned();
    git(
        repo,
        &["worktree", "add", "-b", &branch, "--", &path_text, &base],
    )
    .await?;
    Ok(Worktree { path, branch })
}

/// Checks out the existing `branch` at `path`, once git has forgotten any worktree of it whose
/// folder is gone.
async fn add_on(repo: &Path, path: &Path, branch: &str) -> Result<(), WorktreeError> {
    let path_text = path.to_string_lossy().into_owned();
    git(repo, &["worktree", "prune"]).await?;
    git(repo, &["worktree", "add", "--", &path_text, branch]).await?;
    Ok(())
}

/// git does not make worktrees safely in parallel (it reads and writes .git/worktrees):
/// sessions of one process take turns.
static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes a session's worktree again from its branch when the folder is gone (deleted by
/// hand); `Ok(false)` when it is there.
pub async fn restore(project: &Project, tree: &Worktree) -> Result<bool, WorktreeError> {
    if tree.path.exists() {
        return Ok(false);
    }
    let repo = &project.main_repo;
    checkout(repo).await?;
    let _turn = ADDING.lock().await;
    if !has_branch(repo, &tree.branch).await? {
        return Err(WorktreeError::Lost {
            path: tree.path.clone(),
            branch: tree.branch.clone(),
            repo: repo.clone(),
        });
    }
    add_on(repo, &tree.path, &tree.branch).await?;
    Ok(true)
}

/// Checks that `repo` is a git checkout (not a bare repository, not a plain folder).
async fn checkout(repo: &Path) -> Result<(), WorktreeError> {
    if git(repo, &["rev-parse", "--is-bare-repository"])
        .await
        .is_ok_and(|bare| bare == "true")
    {
        return Err(WorktreeError::Bare {
            path: repo.to_path_buf(),
        });
    }
    git(repo, &["rev-parse", "--show-toplevel"])
        .await
        .map_err(|e| match e {
            WorktreeError::Git { detail, .. } => WorktreeError::NotARepo {
                path: repo.to_path_buf(),
                detail,
            },
            // git never ran: that says nothing about the repository.
            other => other,
        })?;
    Ok(())
}

async fn has_branch(repo: &Path, branch: &str) -> Result<bool, WorktreeError> {
    let branch_ref = format!("refs/heads/{branch}");
    succeeds(repo, &["rev-parse", "--verify", "--quiet", &branch_ref]).await
}

/// Whether a git command that answers a question by its exit code said yes; a git that could
/// not be started at all is an error, never a "no".
async fn succeeds(dir: &Path, args: &[&str]) -> Result<bool, WorktreeError> {
    match git(dir, args).await {
        Ok(_) => Ok(true),
        Err(error @ WorktreeError::CannotRun { .. }) => Err(error),
        Err(_) => Ok(false),
    }
}

/// True when `a` and `b` name the same folder, also through links or `..`.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

async fn default_branch(repo: &Path) -> Result<String, WorktreeError> {
    let head = |args: &'static [&'static str]| async move {
        match git(repo, args).await {
            Err(error @ WorktreeError::CannotRun { .. }) => Err(error),
            answer => Ok(answer.ok()),
        }
    };
    if let Some(remote_head) = head(&[
        "symbolic-ref",
        "--quiet",
        "--short",
        "refs/remotes/origin/HEAD",
    ])
    .await?
    {
        return Ok(remote_head);
    }
    let current = head(&["symbolic-ref", "--quiet", "--short", "HEAD"])
        .await?
        .ok_or(());
    let has_commit = succeeds(repo, &["rev-parse", "--verify", "--quiet", "HEAD"]).await?;
    match current {
        Ok(branch) if has_commit => Ok(branch),
        // No symbolic HEAD, and yet a commit: HEAD is detached.
        Err(_) if has_commit => Err(WorktreeError::Detached {
            path: repo.to_path_buf(),
        }),
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

/// Whether `base` names a commit of `repo` (a dry run's check of BASE_BRANCH).
pub fn names_a_commit(repo: &Path, base: &str) -> bool {
    git_raw_blocking(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{base}^{{commit}}"),
        ],
    )
    .is_ok()
}

/// [`baseline`] for callers off the async threads (taking over a session).
pub fn baseline_blocking(dir: &Path) -> Result<Baseline, WorktreeError> {
    Ok(Baseline {
        head: git_raw_blocking(dir, &["rev-parse", "HEAD"])?
            .trim()
            .to_string(),
        changes: git_raw_blocking(dir, &["status", "--porcelain", "--untracked-files=no"])?,
    })
}

/// The worktree an older tool left for a session: the `Working Dir:` its notebook names
/// (`named`), else `WORKTREES/<folder>` (used when adopting a Python samocode session). Only a
/// checkout of its own, of the project's repository, and not the main checkout itself: an
/// agent must never work on the branch a person has checked out.
pub fn adopt(project: &Project, folder: &str, named: Option<&Path>) -> Option<Worktree> {
    named
        .and_then(|path| adopt_at(project, path))
        .or_else(|| adopt_at(project, &project.worktrees.join(folder)))
}

fn adopt_at(project: &Project, path: &Path) -> Option<Worktree> {
    let ask = |dir: &Path, args: &[&str]| {
        git_raw_blocking(dir, args)
            .ok()
            .map(|out| out.trim().to_string())
    };
    // A checkout of its own, not a folder inside another one (which would answer for it).
    let top = ask(path, &["rev-parse", "--show-toplevel"])?;
    if !same_dir(Path::new(&top), path) || same_dir(path, &project.main_repo) {
        return None;
    }
    // A worktree of the project's repository: both share one git directory.
    let common = |dir: &Path| {
        let common = ask(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        )?;
        Some(PathBuf::from(common))
    };
    if !same_dir(&common(path)?, &common(&project.main_repo)?) {
        return None;
    }
    // On a branch: a detached checkout has none to restore it from.
    let branch = ask(path, &["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD")?;
    Some(Worktree {
        branch,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A git that could not be started (here: the process out of open files) is said to be
    /// that, not a repository that is not one with advice to `git init` it.
    #[test]
    fn a_git_that_cannot_start_is_not_taken_for_a_missing_repository() {
        let dir = Path::new("/work/repo");
        let emfile = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        let error = git_output(dir, &["rev-parse", "--show-toplevel"], Err(emfile)).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, WorktreeError::CannotRun { .. }), "{text}");
        assert!(
            text.contains("cannot run git rev-parse --show-toplevel in /work/repo"),
            "{text}"
        );
        assert!(text.contains("Too many open files"), "{text}");
        assert!(!text.contains("git init"), "{text}");
    }
}
