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
        "MAIN_REPO {path} is not a git repository ({detail}); {}",
        not_a_repo_advice(path, detail)
    )]
    NotARepo { path: PathBuf, detail: String },
    /// The remote's HEAD names a branch the remote no longer has (a default branch renamed).
    #[error(
        "the default branch of {repo} is {named} by its origin/HEAD, and there is no {named}; run `git -C {} remote set-head origin -a`, or set BASE_BRANCH in .samocode, then `samocode resume`",
        crate::protocol::shell_path(.repo)
    )]
    StaleRemoteHead { repo: PathBuf, named: String },
    /// MAIN_REPO is a bare repository: no checkout to branch a worktree from.
    #[error(
        "MAIN_REPO {path} is a bare repository; point MAIN_REPO in .samocode at a checkout of it (a clone with a work tree)"
    )]
    Bare { path: PathBuf },
    /// No base branch could be found.
    #[error("cannot tell the default branch of {path}; set BASE_BRANCH in .samocode")]
    NoBaseBranch { path: PathBuf },
    /// The repository has no commit to make a session's branch from.
    #[error(
        "{} has no commits yet: each session's branch is made from one; commit something there first (`git -C {} commit --allow-empty -m start`); a session blocked by this goes on with `samocode resume`",
        .path.display(),
        crate::protocol::shell_path(.path)
    )]
    NoCommits { path: PathBuf },
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
    /// The session's branch is checked out in another worktree (a person's own, or the main
    /// checkout): its worktree cannot be made again until it is not.
    #[error(
        "the session's worktree {path} is gone, and its branch {branch} is checked out in {there}, which samocode does not take for the session's: switch that checkout to another branch (or `git worktree remove` it, keeping what is yours), then `samocode resume`"
    )]
    CheckedOutElsewhere {
        branch: String,
        there: PathBuf,
        path: PathBuf,
    },
    /// The branch cannot be made: a branch of the repository is a folder of its name's, or
    /// its name a folder of that branch's (`fix` beside `fix/login`).
    #[error(
        "branch {branch} cannot be made in {repo} ({detail}): git keeps a branch name and a folder of branch names apart; name the session differently or set BRANCH_PREFIX in .samocode (branches become PREFIX/NAME), then `samocode resume`"
    )]
    BranchClash {
        branch: String,
        repo: PathBuf,
        detail: String,
    },
    /// The session's worktree is gone, and so is its branch.
    #[error(
        "the session's worktree {path} is gone, and its branch {branch} is not in {repo}; restore the branch (or start a new session)"
    )]
    Lost {
        path: PathBuf,
        branch: String,
        repo: PathBuf,
    },
    /// The worktree folder is another session's worktree, on a branch of the same name (of
    /// another repository, or one this session did not make).
    #[error(
        "{path} is another session's worktree (branch {branch} of {}), which this session did not make: a session of this name in another project that shares WORKTREES (or this repository), or one deleted before whose worktree stayed; give each project a WORKTREES folder of its own in .samocode, or remove the old worktree (`git worktree remove {}`, and its branch if it is not wanted), or name the session differently, then `samocode resume`",
        of.display(),
        crate::protocol::shell_path(.path)
    )]
    Another {
        path: PathBuf,
        branch: String,
        of: PathBuf,
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
    /// The session's worktree folder is there, but is no longer its worktree on its branch.
    #[error(
        "{path} is no longer this session's worktree on branch {branch}: {problem}; {advice}, then `samocode resume`"
    )]
    NotItsOwn {
        path: PathBuf,
        branch: String,
        problem: String,
        advice: String,
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

/// The longest a git command of samocode's own may take: a filter of the repository's (LFS
/// fetching over the network) can hold `worktree add` while the session cannot answer, and a
/// remote engine's push or fetch a session's attempt.
pub(crate) const GIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A git command's standard output as it printed it (porcelain lines start with a space).
async fn git_raw(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let Some(output) = output_within(Command::from(git_command(dir, args)), GIT_LIMIT).await else {
        return Err(WorktreeError::Git {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            detail: format!(
                "it did not end within {} and was stopped; a filter of the repository (git lfs) may be waiting on the network",
                humantime::format_duration(GIT_LIMIT)
            ),
        });
    };
    git_output(dir, args, output)
}

/// What `command` printed, or `None` when it did not end within `limit`: then it is killed,
/// with what it started (a filter, a remote helper holding a connection).
pub(crate) async fn output_within(
    mut command: Command,
    limit: std::time::Duration,
) -> Option<std::io::Result<std::process::Output>> {
    use std::process::Stdio;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Some(Err(error)),
    };
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => Some(output),
        Err(_) => {
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            None
        }
    }
}

/// [`git_raw`] for callers off the async threads.
fn git_raw_blocking(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let output = git_command(dir, args).output();
    git_output(dir, args, output)
}

/// `git -C DIR ARGS`, never asking for a password, and running none of the repository's
/// hooks or its file-system monitor: samocode's own commands (`worktree add`, `status`, a
/// remote engine's push and fetch) are plumbing, and a hook that waits (an `npm install` on
/// post-checkout) would hold the session where no `stop` reaches it. In a process group of its
/// own: a terminal's Ctrl-C is samocode's to act on, and cut short by it, a `worktree add`
/// left a half-made checkout and the session blocked with git's progress line for a reason.
pub(crate) fn git_command(dir: &Path, args: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("git");
    command
        .process_group(0)
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.askPass=",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // Its refusals are read by their English words (a `safe.directory` refusal, a
        // missing repository), whatever the person's locale.
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS");
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
    claim: impl AsyncFnOnce(&str) -> Result<(), WorktreeError>,
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
            // On the branch of the name, but another session's worktree unless this session
            // made that branch, in this repository: two projects sharing WORKTREES (or one
            // repository) have sessions of one name, whose folders are the same.
            let common = async |dir: &Path| {
                git(
                    dir,
                    &["rev-parse", "--path-format=absolute", "--git-common-dir"],
                )
                .await
                .ok()
                .map(|dir| PathBuf::from(dir.trim()))
            };
            let of = common(&path).await;
            let same_repo = matches!((&of, common(repo).await), (Some(theirs), Some(ours)) if same_dir(theirs, &ours));
            if same_repo && claimed == Some(branch.as_str()) {
                return Ok(Worktree { path, branch });
            }
            return Err(WorktreeError::Another {
                path,
                branch,
                of: of.unwrap_or_default(),
            });
        }
        return Err(WorktreeError::Foreign {
            path,
            branch,
            found,
        });
    }
    let turn = adding(repo);
    let _turn = turn.lock().await;
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
        if !has_any_commit(repo).await? {
            return Err(WorktreeError::NoCommits { path: repo.clone() });
        }
        return Err(WorktreeError::NoSuchBase {
            base,
            repo: repo.clone(),
        });
    }
    claim(&branch).await?;
    let path_text = path.to_string_lossy().into_owned();
    // `--no-track`: a branch made from `origin/main` would track it, and a plain `git push`
    // of the session's work (with `push.default=upstream`) would go to the team's main.
    let added = git(
        repo,
        &[
            "worktree",
            "add",
            "--no-track",
            "-b",
            &branch,
            "--",
            &path_text,
            &base,
        ],
    )
    .await;
    match added {
        Ok(_) => Ok(Worktree { path, branch }),
        Err(error) => Err(not_made(error, branch, repo)),
    }
}

/// The error of a `git worktree add -b` that made no branch because another git process (a
/// session of another worker, a person) got there first, or because a branch is a folder of
/// this name's: said as such, so that the session does not take the branch for its own.
fn not_made(error: WorktreeError, branch: String, repo: &Path) -> WorktreeError {
    let WorktreeError::Git { detail, .. } = &error else {
        return error;
    };
    if detail.contains(&format!("a branch named '{branch}' already exists"))
        || detail.contains("reference already exists")
    {
        return WorktreeError::BranchTaken {
            branch,
            repo: repo.to_path_buf(),
        };
    }
    // `'refs/heads/fix/login' exists; cannot create 'refs/heads/fix'` (not a lock file left
    // by another git: "Unable to create '….lock': File exists").
    if detail.contains("' exists; cannot create '") {
        return WorktreeError::BranchClash {
            branch,
            repo: repo.to_path_buf(),
            detail: detail
                .lines()
                .find(|l| l.contains("cannot lock ref"))
                .unwrap_or(detail)
                .trim()
                .to_string(),
        };
    }
    error
}

/// Checks out the existing `branch` at `path`, once git has forgotten any worktree of it whose
/// folder is gone.
async fn add_on(repo: &Path, path: &Path, branch: &str) -> Result<(), WorktreeError> {
    let path_text = path.to_string_lossy().into_owned();
    forget_missing(repo, path).await?;
    match git(repo, &["worktree", "add", "--", &path_text, branch]).await {
        Ok(_) => Ok(()),
        // Checked out in a worktree of a person's (or the main checkout): not taken over.
        Err(WorktreeError::Git { detail, .. })
            if let Some(there) = detail
                .split_once("is already used by worktree at '")
                .or_else(|| detail.split_once("is already checked out at '"))
                .and_then(|(_, rest)| rest.split_once('\''))
                .map(|(there, _)| PathBuf::from(there)) =>
        {
            Err(WorktreeError::CheckedOutElsewhere {
                branch: branch.to_string(),
                there,
                path: path.to_path_buf(),
            })
        }
        Err(error) => Err(error),
    }
}

/// Has git forget the worktree it records at `path` when that folder is gone, and no other:
/// a `git worktree prune` would also forget a person's own worktree whose disk is not
/// mounted just now, and with it its index and HEAD.
async fn forget_missing(repo: &Path, path: &Path) -> Result<(), WorktreeError> {
    let common = git(
        repo,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .await?;
    let Ok(records) = std::fs::read_dir(Path::new(&common).join("worktrees")) else {
        return Ok(());
    };
    for record in records.flatten() {
        let admin = record.path();
        let Some(named) = read_small(&admin.join("gitdir")) else {
            continue;
        };
        // git 2.48 may write it relative (`worktree.useRelativePaths`): `..` is resolved
        // by hand, as the folder is gone and cannot be asked.
        let named = lexical(&admin.join(named.trim_end()));
        if named.parent() == Some(path) && !path.exists() {
            std::fs::remove_dir_all(&admin).map_err(|e| WorktreeError::Git {
                args: "(forgetting the missing worktree)".into(),
                dir: admin.clone(),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// git does not make worktrees safely in parallel (it reads and writes .git/worktrees): the
/// sessions of one repository take turns; another repository's do not wait on them.
fn adding(repo: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    type Turns = std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>;
    static TURNS: std::sync::LazyLock<std::sync::Mutex<Turns>> =
        std::sync::LazyLock::new(Default::default);
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    turns.entry(repo.to_path_buf()).or_default().clone()
}

/// Makes a session's worktree again from its branch when the folder is gone (deleted by
/// hand); `Ok(false)` when it is there.
pub async fn restore(project: &Project, tree: &Worktree) -> Result<bool, WorktreeError> {
    if tree.path.exists() {
        return Ok(false);
    }
    let repo = &project.main_repo;
    checkout(repo).await?;
    let turn = adding(repo);
    let _turn = turn.lock().await;
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

/// Where the session's worktree, last at `old` on `branch`, is now by git's record, when a
/// person moved it with `git worktree move` (its old place is gone, and a checkout made there
/// again would be refused by git: the branch is checked out elsewhere). Only the worktree git
/// keeps under the old folder's name (`.git/worktrees/<name>`, which a move keeps): the main
/// checkout, or a person's own worktree of the branch, is never taken for it.
pub async fn moved_to(repo: &Path, branch: &str, old: &Path) -> Option<PathBuf> {
    let name = old.file_name()?.to_string_lossy().into_owned();
    let listed = git_raw(repo, &["worktree", "list", "--porcelain"])
        .await
        .ok()?;
    let wanted = format!("branch refs/heads/{branch}");
    let ours = |path: &Path| {
        // A linked worktree's `.git` is a file naming its record; the main checkout's is a
        // folder. git adds a number to a name it already keeps.
        let text = std::fs::read_to_string(path.join(".git")).ok()?;
        let record = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
        let id = record.file_name()?.to_string_lossy().into_owned();
        id.strip_prefix(&name)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
            .then_some(())
    };
    listed
        .split("\n\n")
        .filter(|block| block.lines().any(|line| line == wanted))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| line.strip_prefix("worktree "))
        })
        .map(PathBuf::from)
        .find(|path| path.exists() && ours(path).is_some())
}

/// Checks, before an attempt, that the folder at `tree.path` is still the session's own
/// worktree on its branch: a plain folder there (an agent that made its deleted worktree
/// again) would have the agent commit to whatever checkout holds it, a worktree git no
/// longer knows fails every commit, and one on another branch leaves the work off the
/// session's. Read from git's own files, without starting git: the folder's `.git` file
/// names its admin folder, which names it back, has the branch in its `HEAD`, and is not
/// locked by a `git worktree add` that was cut short.
pub async fn check_own(tree: &Worktree, repo: &Path) -> Result<(), WorktreeError> {
    let not = |problem: String, advice: String| WorktreeError::NotItsOwn {
        path: tree.path.clone(),
        branch: tree.branch.clone(),
        problem,
        advice,
    };
    let path = crate::protocol::shell_path(&tree.path);
    let repo_word = crate::protocol::shell_path(repo);
    let remake = || {
        format!(
            "move the folder away (what is in it is yours to keep) so that samocode makes the worktree again from branch {}",
            tree.branch
        )
    };
    let repair = || format!("run `git -C {repo_word} worktree repair {path}`");
    let dot_git = tree.path.join(".git");
    let Some(admin) = read_small(&dot_git)
        .as_deref()
        .and_then(|text| text.trim_end().strip_prefix("gitdir: "))
        .map(|dir| tree.path.join(dir))
    else {
        return Err(not(
            "it is not a worktree of the repository (it has no `.git` file naming one: a plain folder, or a repository of its own)".into(),
            remake(),
        ));
    };
    let Some(back) = read_small(&admin.join("gitdir")) else {
        // Its record is named in this repository: git pruned it, and the folder, made again,
        // is the way back. Named elsewhere: the repository moved, and git can repair that.
        let pruned = admin.starts_with(repo)
            || repo
                .canonicalize()
                .is_ok_and(|repo| admin.starts_with(repo));
        return Err(not(
            format!(
                "git no longer knows it (its record {} is gone: {})",
                admin.display(),
                if pruned {
                    "pruned"
                } else {
                    "the repository moved"
                }
            ),
            if pruned { remake() } else { repair() },
        ));
    };
    let back = admin.join(back.trim_end());
    if !same_dir(back.parent().unwrap_or(&back), &tree.path) {
        return Err(not(
            format!(
                "git's record of it names another folder ({})",
                back.display()
            ),
            repair(),
        ));
    }
    // A worktree of another repository: a project copied with its sessions, whose state still
    // names the original's worktree (the agent would commit into that repository).
    if let (Some(theirs), Some(ours)) = (common_of_record(&admin), common_of_repo(repo))
        && !same_dir(&theirs, &ours)
    {
        return Err(not(
            format!(
                "it is a worktree of another repository ({}), not of {}",
                theirs.canonicalize().unwrap_or(theirs).display(),
                repo.display()
            ),
            "the session's files name another project's worktree (copied from it, perhaps): leave that worktree to its project, and start a session of this project's own (or drive this one from the project it belongs to)".to_string(),
        ));
    }
    if read_small(&admin.join("locked")).is_some_and(|why| why.contains("initializing")) {
        return Err(not(
            "its checkout was cut short (git's lock on it says `initializing`; its files may be missing)".into(),
            format!(
                "remove it (`git -C {repo_word} worktree remove --force --force {path}`) so that samocode makes it again from branch {}",
                tree.branch
            ),
        ));
    }
    let mut head = read_small(&admin.join("HEAD")).unwrap_or_default();
    // A repository of the reftable format keeps HEAD in its table, and this file only says
    // so: git is asked.
    if head.trim_end() == "ref: refs/heads/.invalid" {
        head = match git_raw(&tree.path, &["symbolic-ref", "-q", "HEAD"]).await {
            Ok(named) => format!("ref: {}", named.trim()),
            Err(_) => git_raw(&tree.path, &["rev-parse", "HEAD"])
                .await
                .unwrap_or_default(),
        };
    }
    let head = head.trim_end();
    if head.strip_prefix("ref: refs/heads/") != Some(tree.branch.as_str()) {
        let on = match head.strip_prefix("ref: refs/heads/") {
            Some(other) => format!("branch {other}"),
            None => format!("a detached HEAD ({head})"),
        };
        let branch = crate::protocol::shell_word(&tree.branch);
        // A branch deleted since cannot be switched to: it is made again, where the work is.
        let advice = match has_branch(repo, &tree.branch).await {
            Ok(false) => format!(
                "branch {branch} is gone: if what is checked out there holds the session's work, make the branch again at it (`git -C {path} switch -c {branch}`); else restore the branch from `git -C {repo_word} reflog` first"
            ),
            _ => format!("check the branch out again (`git -C {path} switch {branch}`)"),
        };
        return Err(not(
            format!("it is on {on}, and the session's work goes on its own branch"),
            advice,
        ));
    }
    Ok(())
}

/// The common git folder a worktree's record (`admin`, `<common>/worktrees/<name>`) belongs
/// to, from its `commondir` file or its place.
fn common_of_record(admin: &Path) -> Option<PathBuf> {
    match read_small(&admin.join("commondir")) {
        Some(named) => Some(admin.join(named.trim_end())),
        None => admin.parent()?.parent().map(Path::to_path_buf),
    }
}

/// The common git folder of the checkout at `repo`, read from its files (no git process):
/// its `.git` folder; or the folder its `.git` file names (a `--separate-git-dir` repository,
/// a submodule's `.git/modules/NAME`), or, when that is a linked worktree's record (it has a
/// `commondir`), the one that names.
fn common_of_repo(repo: &Path) -> Option<PathBuf> {
    let dot_git = repo.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let gitdir = read_small(&dot_git)?
        .trim_end()
        .strip_prefix("gitdir: ")
        .map(|dir| repo.join(dir))?;
    Some(match read_small(&gitdir.join("commondir")) {
        Some(named) => gitdir.join(named.trim_end()),
        None => gitdir,
    })
}

/// Writes git's files of a worktree of `repo` at `tree.path` on `tree.branch` (its `.git`
/// file, its record's `gitdir` and `HEAD`) as `git worktree add` leaves them, without running
/// git: for the lifecycle tests and the bench, which measure no git, and whose worktree the
/// check before each attempt ([`check_own`]) must take for the session's own.
pub fn lay_out_by_hand(repo: &Path, tree: &Worktree) -> std::io::Result<()> {
    let folder = tree.path.file_name().unwrap_or_default();
    let admin = repo.join(".git/worktrees").join(folder);
    std::fs::create_dir_all(&tree.path)?;
    std::fs::create_dir_all(&admin)?;
    std::fs::write(
        tree.path.join(".git"),
        format!("gitdir: {}\n", admin.display()),
    )?;
    std::fs::write(
        admin.join("gitdir"),
        format!("{}\n", tree.path.join(".git").display()),
    )?;
    std::fs::write(
        admin.join("HEAD"),
        format!("ref: refs/heads/{}\n", tree.branch),
    )
}

/// `path` with its `.` and `..` parts resolved without asking the file system.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A small file of git's, as text; `None` when it is missing or unreadable.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// What to do about a MAIN_REPO git does not take for a checkout, from what git said.
fn not_a_repo_advice(path: &Path, detail: &str) -> String {
    if detail.contains("dubious ownership") {
        "git refuses a repository another user owns: add it to safe.directory as git says, or run samocode as its owner".into()
    } else if path.file_name().is_some_and(|name| name == ".git") {
        format!(
            "point MAIN_REPO in .samocode at the checkout that holds it ({})",
            path.parent().unwrap_or(path).display()
        )
    } else {
        "run `git init` there or fix MAIN_REPO in .samocode".into()
    }
}

/// Checks that `repo` is a git checkout (not a bare repository, not a plain folder), with
/// git's time limit (a git stuck on a stalled network folder is stopped); [`checkout_blocking`]
/// answers the same for a dry run.
async fn checkout(repo: &Path) -> Result<(), WorktreeError> {
    let bare = git(repo, &["rev-parse", "--is-bare-repository"]).await;
    let top = git(repo, &["rev-parse", "--show-toplevel"]).await;
    repository_checked(repo, bare, top)
}

/// What two answers of git (`--is-bare-repository`, `--show-toplevel`) say of `repo`.
fn repository_checked(
    repo: &Path,
    bare: Result<String, WorktreeError>,
    top: Result<String, WorktreeError>,
) -> Result<(), WorktreeError> {
    if bare.is_ok_and(|bare| bare.trim() == "true") {
        return Err(WorktreeError::Bare {
            path: repo.to_path_buf(),
        });
    }
    top.map_err(|e| match e {
        WorktreeError::Git { detail, .. } => WorktreeError::NotARepo {
            path: repo.to_path_buf(),
            detail,
        },
        // git never ran: that says nothing about the repository.
        other => other,
    })
    .map(drop)
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

/// Whether any ref of `repo` names a commit (a repository just made with `git init` has none).
async fn has_any_commit(repo: &Path) -> Result<bool, WorktreeError> {
    match git(
        repo,
        &["for-each-ref", "--count=1", "--format=%(objectname)"],
    )
    .await
    {
        Err(error @ WorktreeError::CannotRun { .. }) => Err(error),
        answer => Ok(answer.is_ok_and(|found| !found.is_empty())),
    }
}

pub(crate) async fn default_branch(repo: &Path) -> Result<String, WorktreeError> {
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
        let commit = format!("{remote_head}^{{commit}}");
        if !succeeds(repo, &["rev-parse", "--verify", "--quiet", &commit]).await? {
            return Err(WorktreeError::StaleRemoteHead {
                repo: repo.to_path_buf(),
                named: remote_head,
            });
        }
        return Ok(remote_head);
    }
    let current = head(&["symbolic-ref", "--quiet", "--short", "HEAD"])
        .await?
        .ok_or(());
    let has_commit = succeeds(repo, &["rev-parse", "--verify", "--quiet", "HEAD"]).await?;
    if !has_commit && !has_any_commit(repo).await? {
        return Err(WorktreeError::NoCommits {
            path: repo.to_path_buf(),
        });
    }
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

/// The branch the project's worktrees are made from and the commit `tree` branched from it
/// at; `None` when git cannot tell.
pub async fn base_of(
    project: &crate::config::Project,
    tree: &Path,
) -> Option<crate::protocol::state::BaseRef> {
    let branch = match &project.base_branch {
        Some(base) => base.clone(),
        None => default_branch(&project.main_repo).await.ok()?,
    };
    let commit = git(tree, &["merge-base", "HEAD", &branch]).await.ok()?;
    Some(crate::protocol::state::BaseRef {
        branch,
        commit: commit.trim().to_string(),
    })
}

/// The tracked files of a worktree now, to tell whether a read-only attempt changed them.
pub async fn baseline(dir: &Path) -> Result<Baseline, WorktreeError> {
    let changes = git_raw(dir, &["status", "--porcelain", "--untracked-files=no"]).await?;
    let paths = Baseline::present_paths(&changes);
    let contents = match hash_args(&paths) {
        Some(args) => contents_of(&paths, git_raw(dir, &args).await),
        None => Default::default(),
    };
    Ok(Baseline {
        head: git(dir, &["rev-parse", "HEAD"]).await?,
        changes,
        contents,
    })
}

/// The most changed files whose contents a baseline records (one `git hash-object`).
const HASHED_AT_MOST: usize = 2000;

/// `git hash-object` of `paths`, when there are some and not too many.
fn hash_args(paths: &[String]) -> Option<Vec<&str>> {
    if paths.is_empty() || paths.len() > HASHED_AT_MOST {
        return None;
    }
    let mut args = vec!["hash-object", "--no-filters", "--"];
    args.extend(paths.iter().map(String::as_str));
    Some(args)
}

/// The hashes `git hash-object` printed for `paths`, by path; none when it failed (a path
/// that is a folder now): the status lines alone are compared then.
fn contents_of(
    paths: &[String],
    hashed: Result<String, WorktreeError>,
) -> std::collections::BTreeMap<String, String> {
    let Ok(hashed) = hashed else {
        return Default::default();
    };
    let hashes: Vec<&str> = hashed.lines().collect();
    if hashes.len() != paths.len() {
        return Default::default();
    }
    paths
        .iter()
        .cloned()
        .zip(hashes.into_iter().map(str::to_string))
        .collect()
}

/// Checks that `repo` is a git checkout (not a bare repository, not a plain folder): the
/// init's check, and a dry run's.
pub fn checkout_blocking(repo: &Path) -> Result<(), WorktreeError> {
    repository_checked(
        repo,
        git_raw_blocking(repo, &["rev-parse", "--is-bare-repository"]),
        git_raw_blocking(repo, &["rev-parse", "--show-toplevel"]),
    )
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
    let changes = git_raw_blocking(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    let paths = Baseline::present_paths(&changes);
    let contents = match hash_args(&paths) {
        Some(args) => contents_of(&paths, git_raw_blocking(dir, &args)),
        None => Default::default(),
    };
    Ok(Baseline {
        head: git_raw_blocking(dir, &["rev-parse", "HEAD"])?
            .trim()
            .to_string(),
        changes,
        contents,
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

    /// git's words for a branch another git made first, and for a name that is a folder of
    /// branch names, each say so; a lock file another git left is neither.
    #[test]
    fn a_branch_git_did_not_make_is_told_by_why() {
        let git = |detail: &str| WorktreeError::Git {
            args: "worktree add".into(),
            dir: PathBuf::from("/r"),
            detail: detail.into(),
        };
        let repo = Path::new("/r");
        let taken = not_made(
            git("fatal: a branch named 'x' already exists"),
            "x".into(),
            repo,
        );
        assert!(
            matches!(taken, WorktreeError::BranchTaken { .. }),
            "{taken}"
        );
        let clash = not_made(
            git(
                "fatal: cannot lock ref 'refs/heads/fix': 'refs/heads/fix/login' exists; cannot create 'refs/heads/fix'",
            ),
            "fix".into(),
            repo,
        );
        assert!(
            matches!(clash, WorktreeError::BranchClash { .. }),
            "{clash}"
        );
        let locked = not_made(
            git(
                "fatal: cannot lock ref 'refs/heads/x': Unable to create '/r/.git/refs/heads/x.lock': File exists.\n\nAnother git process seems to be running",
            ),
            "x".into(),
            repo,
        );
        assert!(matches!(locked, WorktreeError::Git { .. }), "{locked}");
    }

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

    /// A git held by the network (an LFS filter, a stalled mount) held the session's worker
    /// where no `stop` reached it: a command past its limit is stopped, and its process
    /// killed; one within it is read.
    #[tokio::test]
    async fn a_command_past_its_limit_is_stopped_and_killed() {
        let marker = std::env::temp_dir().join(format!("samocode-limit-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut held = Command::new("sh");
        held.arg("-c")
            .arg(format!("sleep 3; touch {}", marker.display()));
        let limit = std::time::Duration::from_millis(200);
        assert!(output_within(held, limit).await.is_none());
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the stopped command ran on");
        let quick = output_within(Command::new("true"), std::time::Duration::from_secs(60)).await;
        assert!(quick.is_some_and(|output| output.is_ok_and(|o| o.status.success())));
    }

    /// Gives the repository at `repo` its first (empty) commit.
    fn first_commit(repo: &Path) {
        let args = [
            "-c",
            "user.name=p",
            "-c",
            "user.email=p@p",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ];
        git_raw_blocking(repo, &args).unwrap();
    }

    /// A worktree git no longer knows (pruned while its folder was away), one whose `git
    /// worktree add` was cut short, and one on a detached HEAD are not taken for the
    /// session's own.
    #[tokio::test]
    async fn a_worktree_git_forgot_or_never_finished_is_not_the_sessions_own() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let run = |dir: &Path, args: &[&str]| git_raw_blocking(dir, args).unwrap();
        run(&repo, &["init", "-q", "-b", "main"]);
        first_commit(&repo);
        let path = dir.path().join("tree");
        let path_text = path.display().to_string();
        run(
            &repo,
            &["worktree", "add", "-q", "-b", "s1", &path_text, "main"],
        );
        let tree = Worktree {
            path: path.clone(),
            branch: "s1".into(),
        };
        check_own(&tree, &repo).await.unwrap();
        // Checked against another repository (a project copied with its sessions, whose state
        // names the original's worktree): not its own.
        let copy = dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        run(&copy, &["init", "-q", "-b", "main"]);
        let text = check_own(&tree, &copy).await.unwrap_err().to_string();
        assert!(text.contains("a worktree of another repository"), "{text}");
        // A repository whose git folder is elsewhere (`--separate-git-dir`, as a submodule's
        // is): its own worktrees are its own.
        let apart = dir.path().join("apart");
        run(
            dir.path(),
            &[
                "init",
                "-q",
                "-b",
                "main",
                "--separate-git-dir",
                dir.path().join("apart.git").to_str().unwrap(),
                apart.to_str().unwrap(),
            ],
        );
        first_commit(&apart);
        let apart_tree = dir.path().join("apart-tree");
        run(
            &apart,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "s2",
                apart_tree.to_str().unwrap(),
                "main",
            ],
        );
        let own = Worktree {
            path: apart_tree,
            branch: "s2".into(),
        };
        check_own(&own, &apart).await.unwrap();
        let problem = async |tree: &Worktree| check_own(tree, &repo).await.unwrap_err().to_string();

        let admin = repo.join(".git/worktrees/tree");
        std::fs::write(admin.join("locked"), "initializing").unwrap();
        assert!(
            problem(&tree).await.contains("cut short"),
            "{}",
            problem(&tree).await
        );
        std::fs::remove_file(admin.join("locked")).unwrap();

        run(&path, &["checkout", "-q", "--detach"]);
        assert!(
            problem(&tree).await.contains("detached HEAD"),
            "{}",
            problem(&tree).await
        );
        run(&path, &["checkout", "-q", "s1"]);

        std::fs::rename(&path, dir.path().join("away")).unwrap();
        run(&repo, &["worktree", "prune"]);
        std::fs::rename(dir.path().join("away"), &path).unwrap();
        let text = problem(&tree).await;
        assert!(
            text.contains("git no longer knows it") && text.contains("pruned"),
            "{text}"
        );
        assert!(text.contains("move the folder away"), "{text}");
        assert_eq!(
            lexical(Path::new("/r/.git/worktrees/x/../../../wt/x/.git")),
            Path::new("/r/wt/x/.git")
        );
    }

    /// A repository of git's reftable format keeps HEAD in its table (the admin folder's
    /// `HEAD` file only says `.invalid`): its worktree on its branch is its own.
    #[tokio::test]
    async fn a_reftable_repositorys_worktree_is_read_through_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let run = |dir: &Path, args: &[&str]| git_raw_blocking(dir, args);
        if run(
            &repo,
            &["init", "-q", "-b", "main", "--ref-format=reftable"],
        )
        .is_err()
        {
            // A git before 2.45 has no reftable: nothing to check.
            return;
        }
        let commit = ["-c", "user.name=p", "-c", "user.email=p@p", "commit", "-q"];
        run(
            &repo,
            &[&commit[..], &["--allow-empty", "-m", "init"]].concat(),
        )
        .unwrap();
        let path = dir.path().join("tree");
        let path_text = path.display().to_string();
        run(
            &repo,
            &["worktree", "add", "-q", "-b", "s1", &path_text, "main"],
        )
        .unwrap();
        let tree = Worktree {
            path: path.clone(),
            branch: "s1".into(),
        };
        check_own(&tree, &repo).await.unwrap();
        run(&path, &["switch", "-q", "-c", "other"]).unwrap();
        let text = check_own(&tree, &repo).await.unwrap_err().to_string();
        assert!(text.contains("it is on branch other"), "{text}");
    }
}
