//! What keeps a session safe: names, the worker lock, old sessions, configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::fixture::{Project, git, wait_for};

/// A new session `name` blocks at its init (exit 11), saying each of `says`.
fn blocks_at_init(project: &Project, name: &str, says: &[&str]) {
    let run = project.run(&["run", "--session", name, "--dive", "d", "--task", "t"]);
    run.expect(11);
    for text in says {
        assert!(run.stdout().contains(text), "{name}: {}", run.stdout());
    }
}

/// Commits `file` with `text` in the repository, as its person would.
fn commit(repo: &std::path::Path, file: &str, text: &str) {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", file]);
    git(
        repo,
        &[
            "-c",
            "user.name=p",
            "-c",
            "user.email=p@p",
            "commit",
            "-qm",
            file,
        ],
    );
}

/// Points the project's `.samocode` at this main repository and worktrees folder.
fn point_at(project: &Project, repo: &std::path::Path, worktrees: &std::path::Path) {
    std::fs::write(
        project.root.join(".samocode"),
        format!(
            "MAIN_REPO={}\nWORKTREES={}\nSESSIONS={}\n",
            repo.display(),
            worktrees.display(),
            project.sessions.display()
        ),
    )
    .unwrap();
}

/// Two projects sharing one WORKTREES folder (a `~/worktrees` of one's own), each with a
/// session of the same name on the same day: the second took the first's worktree, and its
/// agents committed into the first project's repository, on the first session's branch. It is
/// blocked, saying why, and nothing of it lands there; the same with two projects on one
/// repository.
#[test]
fn a_session_never_takes_another_projects_worktree_of_its_name() {
    let first = Project::new();
    first
        .run(&["run", "--session", "w", "--dive", "d", "--task", "t"])
        .expect(10);
    let branch_before = super::fixture::git(&first.repo, &["rev-parse", "w"]);
    for repo in [Project::new().repo, first.repo.clone()] {
        let second = Project::new();
        point_at(&second, &repo, &first.root.join("worktrees"));
        let run = second.run(&["run", "--session", "w", "--dive", "d", "--task", "t"]);
        run.expect(11);
        assert!(
            run.stdout().contains("another session's worktree"),
            "{}",
            run.stdout()
        );
        let state = second.session("w").state();
        assert_eq!(state["status"]["state"], "blocked", "{state}");
        assert!(!second.session("w").path("_iterations.jsonl").exists());
    }
    assert_eq!(
        super::fixture::git(&first.repo, &["rev-parse", "w"]),
        branch_before
    );
}

#[test]
fn a_name_with_a_path_is_refused_before_anything_is_written() {
    let project = Project::new();
    for name in ["../evil", "a/b", "Upper", "has space", ".."] {
        let run = project.run(&["run", "--session", name, "--dive", "d", "--task", "t"]);
        run.expect(2);
        assert!(
            run.stderr().contains("invalid session name"),
            "{name}: {}",
            run.stderr()
        );
    }
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
    assert!(!project.root.join("evil").exists());
    assert!(!project.root.join("sessions/../evil").exists());
}

#[test]
fn a_second_worker_on_the_same_session_exits_12() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=slow:3");
    let mut first = project.spawn(&["run", "--session", "busy", "--dive", "d", "--task", "t"]);
    wait_for(
        Duration::from_secs(20),
        "the first worker to hold the session",
        || {
            let status = project.run(&["status", "--json"]);
            status.stdout().contains("\"worker\": \"running\"")
        },
    );
    let second = project.run(&["run", "--session", "busy"]);
    second.expect(12);
    assert!(
        second
            .stderr()
            .contains("another worker is driving session"),
        "{}",
        second.stderr()
    );
    let approve = project.run(&["approve", "busy"]);
    approve.expect(12);
    assert_eq!(first.wait().unwrap().code(), Some(10));
}

#[test]
fn a_new_session_needs_dive_and_task() {
    let project = Project::new();
    let run = project.run(&["run", "--session", "empty"]);
    run.expect(2);
    assert!(
        run.stderr().contains("needs --dive TEXT and --task TEXT"),
        "{}",
        run.stderr()
    );
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
}

#[test]
fn two_dated_folders_with_one_name_are_an_error_not_a_guess() {
    let project = Project::new();
    std::fs::create_dir(project.sessions.join("26-01-01-twin")).unwrap();
    std::fs::create_dir(project.sessions.join("26-02-01-twin")).unwrap();
    let run = project.run(&["status", "twin"]);
    run.expect(2);
    assert!(
        run.stderr().contains("26-01-01-twin") && run.stderr().contains("26-02-01-twin"),
        "{}",
        run.stderr()
    );
}

/// A worktree on a new `branch` at `path`, as the Python samocode made them.
fn python_worktree(project: &Project, branch: &str, path: &Path) {
    let path = path.to_str().unwrap();
    git(
        &project.repo,
        &["worktree", "add", "-q", "-b", branch, path, "main"],
    );
}

#[test]
fn a_python_samocode_session_resumes_and_finishes() {
    let project = Project::new();
    let folder = "26-01-02-legacy";
    let dir = project.sessions.join(folder);
    std::fs::create_dir(&dir).unwrap();
    let worktree = project.worktrees.join(folder);
    python_worktree(&project, "legacy", &worktree);
    let overview = "# Session: legacy\n\n## Status\nPhase: implementation\nIteration: 2\nTotal Iterations: 7\nBlocked: no\nLast Action: step 1 done\nNext: step 2\n\n## Task\nPort the parser\n\n## Flow Log\n- [007 @ 01-02 10:00] implementation: step 1\n";
    std::fs::write(dir.join("_overview.md"), overview).unwrap();

    let run = project.run(&["run", "--session", "legacy"]);
    run.expect(0);
    let s = project.session("legacy");
    let state = s.state();
    assert_eq!(state["status"]["state"], "done");
    assert_eq!(state["task"], "Port the parser");
    assert_eq!(state["worktree"], worktree.display().to_string());
    // 7 iterations from the old tool, then 3 steps, testing, quality and done.
    assert_eq!(state["iteration"], 13);
    let text = s.read("_overview.md");
    assert!(
        text.contains("- [007 @ 01-02 10:00] implementation: step 1\n"),
        "old Flow Log kept:\n{text}"
    );
    assert!(text.contains("Phase: done\n"));
    let commits = git(&worktree, &["log", "--format=%s"]);
    assert!(commits.starts_with("Implement step 3\n"), "{commits}");
}

/// A Python samocode session waiting for answers, answered before any samocode `run`: the
/// first state written (by the answer) keeps the worktree its notebook names, and the next
/// `run` works there (found by the upgrade hunt: a new branch was made from main).
#[test]
fn a_python_session_answered_before_its_first_run_keeps_its_worktree() {
    let project = Project::new();
    let elsewhere = project.root.join("old-trees/pyqa");
    python_worktree(&project, "feature/pyqa", &elsewhere);
    let dir = project.sessions.join("26-01-02-pyqa");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("_overview.md"),
        format!(
            "# Session: pyqa\nWorking Dir: {}\n\n## Status\nPhase: waiting_qa\nTotal Iterations: 3\nBlocked: no\n\n## Task\nPort the parser\n",
            elsewhere.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("_qa.md"),
        "# Questions\n\n## Q1: Which parser?\nSuggested: the old one\nAnswer:\n",
    )
    .unwrap();
    project
        .run(&["answer", "pyqa", "--accept-suggestions"])
        .expect(0);
    let state = project.session("pyqa").state();
    assert_eq!(
        state["worktree"],
        elsewhere.display().to_string(),
        "{state}"
    );
    assert_eq!(state["branch"], "feature/pyqa");
    project
        .run(&["run", "--session", "pyqa", "--once"])
        .expect(0);
    let state = project.session("pyqa").state();
    assert_eq!(
        state["worktree"],
        elsewhere.display().to_string(),
        "{state}"
    );
    assert!(!project.worktrees.join("26-01-02-pyqa").exists());
}

#[test]
fn a_python_session_works_in_the_worktree_its_notebook_names_and_never_in_the_main_checkout() {
    let project = Project::new();
    let main_log = || git(&project.repo, &["log", "--format=%s", "main"]);
    let before = main_log();
    // Its worktree where the Python samocode put it, named by the notebook's `Working Dir:`.
    let elsewhere = project.root.join("old-trees/named");
    python_worktree(&project, "py-named", &elsewhere);
    let legacy = |folder: &str, working_dir: &Path| {
        let dir = project.sessions.join(folder);
        std::fs::create_dir(&dir).unwrap();
        let overview = format!(
            "# Session: x\nWorking Dir: {}\n\n## Status\nPhase: implementation\nIteration: 2\nBlocked: no\n\n## Task\nPort the parser\n",
            working_dir.display()
        );
        std::fs::write(dir.join("_overview.md"), overview).unwrap();
    };
    legacy("26-01-02-named", &elsewhere);
    // A person's edit not yet committed in the main checkout.
    std::fs::write(project.repo.join("README.md"), "work in progress\n").unwrap();

    project
        .run(&["run", "--session", "named", "--once"])
        .expect(0);
    let state = project.session("named").state();
    assert_eq!(state["worktree"], elsewhere.display().to_string());
    assert_eq!(state["branch"], "py-named");
    let commits = git(&elsewhere, &["log", "--format=%s", "-1"]);
    assert!(commits.starts_with("Implement step"), "{commits}");

    // A notebook whose working directory was the main checkout, and no worktree to be found:
    // the session gets a worktree of its own before its agent starts.
    legacy("26-01-03-inmain", &project.repo);
    project
        .run(&["run", "--session", "inmain", "--once"])
        .expect(0);
    let s = project.session("inmain");
    let state = s.state();
    let made = project.worktrees.join("26-01-03-inmain");
    assert_eq!(state["worktree"], made.display().to_string());
    let commits = git(&made, &["log", "--format=%s", "-1"]);
    assert!(commits.starts_with("Implement step"), "{commits}");
    assert!(s.read("session.log").contains("had no worktree"));

    // A second notebook naming the worktree the first session took gets one of its own.
    legacy("26-01-04-again", &elsewhere);
    project
        .run(&["run", "--session", "again", "--once"])
        .expect(0);
    let again = project.session("again").state();
    assert_eq!(
        again["worktree"],
        project
            .worktrees
            .join("26-01-04-again")
            .display()
            .to_string()
    );

    assert_eq!(main_log(), before, "nothing was committed on main");
    assert_eq!(
        std::fs::read_to_string(project.repo.join("README.md")).unwrap(),
        "work in progress\n",
        "the person's edit is untouched"
    );
    let status = git(&project.repo, &["status", "--porcelain"]);
    assert!(status.contains("README.md"), "still uncommitted: {status}");
}

#[test]
fn a_relative_agent_path_is_taken_from_where_it_was_given_and_a_missing_one_is_refused_up_front() {
    let mut project = Project::new();
    // A file of the same name in the repository, and so in the session's worktree: never run.
    let marker = project.root.join("the-repository's-script-ran");
    let script = format!("#!/bin/sh\ntouch '{}'\nexit 3\n", marker.display());
    std::fs::write(project.repo.join("fake-claude"), script).unwrap();
    git(&project.repo, &["add", "fake-claude"]);
    git(
        &project.repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "x",
        ],
    );
    project.env("CLAUDE_PATH", "./fake-claude");
    project
        .run(&["run", "--session", "rel", "--dive", "d", "--task", "t"])
        .expect(10);
    assert!(!marker.exists(), "the repository's file ran as the agent");

    // A program that is not there, or that cannot start (a script without `#!`, or naming an
    // interpreter that is not there), is refused before a session folder or a worktree is
    // made, by a dry run too.
    // A binary of another machine, and one whose program loader is not there (an Alpine
    // build on a glibc system): the kernel would not start either.
    let binary = std::fs::read("/bin/true").unwrap();
    let mut other_machine = binary.clone();
    other_machine[18..20].copy_from_slice(&183u16.to_le_bytes());
    let loader = b"/lib64/ld-linux-x86-64.so.2";
    let mut no_loader = binary.clone();
    let at = binary
        .windows(loader.len())
        .position(|w| w == loader)
        .expect("/bin/true names the x86-64 loader");
    no_loader[at + loader.len() - 1] = b'9';
    let programs: [(&str, Vec<u8>); 5] = [
        ("no-shebang", b"echo hi\n".to_vec()),
        (
            "no-interpreter",
            b"#!/nonexistent/interp\necho hi\n".to_vec(),
        ),
        ("crlf-script", b"#!/bin/sh\r\necho hi\r\n".to_vec()),
        ("other-machine", other_machine),
        ("no-loader", no_loader),
    ];
    for (name, bytes) in programs {
        let path = project.root.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        project.env("CLAUDE_PATH", &format!("./{name}"));
        let run = project.run(&["run", "--session", "gone", "--dive", "d", "--task", "t"]);
        run.expect(2);
        assert!(run.stderr().contains(name), "{}", run.stderr());
        assert!(
            run.stderr().contains("an executable file"),
            "{}",
            run.stderr()
        );
    }
    project.env("CLAUDE_PATH", "./no-such-agent");
    for dry in [true, false] {
        let mut args = vec!["run", "--session", "gone", "--dive", "d", "--task", "t"];
        if dry {
            args.push("--dry-run");
        }
        let run = project.run(&args);
        run.expect(2);
        let expected = format!(
            "CLAUDE_PATH=\"{}\"",
            project.root.join("no-such-agent").display()
        );
        assert!(run.stderr().contains(&expected), "{}", run.stderr());
        assert!(
            run.stderr().contains("an executable file"),
            "{}",
            run.stderr()
        );
    }
    let folders = std::fs::read_dir(&project.sessions).unwrap().count();
    assert_eq!(folders, 1, "only the first session's folder");
    assert!(
        !project
            .worktrees
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with("gone") })
    );
}

#[test]
fn a_base_branch_the_repository_lacks_is_named_by_its_setting() {
    let project = Project::new();
    let file = project.root.join(".samocode");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("BASE_BRANCH=nope\n");
    std::fs::write(&file, text).unwrap();
    dry_run_refuses(&project, "b", "BASE_BRANCH=nope");
    blocks_at_init(&project, "base", &["BASE_BRANCH=nope (from .samocode)"]);
}

/// A dry run of a new session `name` refuses (exit 2) what the run's init would block on,
/// saying `needle`.
fn dry_run_refuses(project: &Project, name: &str, needle: &str) {
    let dry = project.run(&[
        "run",
        "--session",
        name,
        "--dive",
        "d",
        "--task",
        "t",
        "--dry-run",
    ]);
    dry.expect(2);
    assert!(dry.stderr().contains(needle), "{}", dry.stderr());
}

#[test]
fn a_missing_project_file_or_directory_is_named() {
    let project = Project::new();
    std::fs::write(
        project.root.join(".samocode"),
        "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=nowhere\n",
    )
    .unwrap();
    let run = project.run(&["run", "--session", "x", "--dive", "d", "--task", "t"]);
    run.expect(2);
    assert!(
        run.stderr().contains("SESSIONS=") && run.stderr().contains("nowhere"),
        "{}",
        run.stderr()
    );

    std::fs::remove_file(project.root.join(".samocode")).unwrap();
    let run = project.run(&["status"]);
    run.expect(2);
    assert!(
        run.stderr().contains("no .samocode project file"),
        "{}",
        run.stderr()
    );
}

#[test]
fn main_repo_that_is_not_git_blocks_with_a_clear_reason() {
    let project = Project::new();
    std::fs::remove_dir_all(project.repo.join(".git")).unwrap();
    // A dry run refuses what the run's init would block on (it passed).
    dry_run_refuses(&project, "nogit", "is not a git repository");
    blocks_at_init(&project, "nogit", &["is not a git repository"]);
}

#[test]
fn a_session_never_takes_over_a_branch_or_checkout_it_did_not_make() {
    let project = Project::new();
    // A branch of the person's own, named like the session.
    git(&project.repo, &["checkout", "-q", "-b", "feature"]);
    commit(&project.repo, "mine.txt", "my work\n");
    git(&project.repo, &["checkout", "-q", "-"]);
    let tip = git(&project.repo, &["rev-parse", "feature"]);
    for name in ["feature", "main"] {
        blocks_at_init(&project, name, &[&format!("branch {name} already exists")]);
    }
    assert_eq!(git(&project.repo, &["rev-parse", "feature"]), tip);
    assert_eq!(git(&project.repo, &["worktree", "list"]).lines().count(), 1);

    // A plain folder inside the main checkout where the worktree goes.
    let inside = project.repo.join("wt");
    std::fs::create_dir_all(&inside).unwrap();
    let folder = format!("{}-nest", jiff::Zoned::now().strftime("%y-%m-%d"));
    std::fs::create_dir_all(project.repo.join("wt").join(&folder)).unwrap();
    point_at(&project, &project.repo, &inside);
    blocks_at_init(&project, "nest", &["is not this session's worktree"]);
    assert_eq!(git(&project.repo, &["log", "--oneline"]).lines().count(), 1);
}

#[test]
fn an_init_whose_checkout_failed_resumes_on_the_branch_it_claimed() {
    let project = Project::new();
    // A filter the checkout needs, failing for now (an LFS server out of reach, say).
    commit(&project.repo, ".gitattributes", "README.md filter=gate\n");
    git(&project.repo, &["config", "filter.gate.required", "true"]);
    git(&project.repo, &["config", "filter.gate.smudge", "false"]);
    git(&project.repo, &["config", "filter.gate.clean", "cat"]);
    blocks_at_init(&project, "lfs", &["init failed"]);
    // git made the branch before the checkout failed: the session claimed it first, so the
    // resume takes it as its own instead of blocking as if it were someone's.
    git(&project.repo, &["config", "filter.gate.smudge", "cat"]);
    project.run(&["resume", "lfs"]).expect(0);
    project.run(&["run", "--session", "lfs"]).expect(10);
}

#[test]
fn an_init_a_crash_cut_short_takes_its_own_branch_again() {
    let project = Project::new();
    project
        .run(&["run", "--session", "cut", "--dive", "d", "--task", "t"])
        .expect(10);
    // What a crash between the branch and its checkout leaves: the state, still in init,
    // records the branch it claimed; the branch is there, its worktree is not.
    let s = project.session("cut");
    let mut state = s.state();
    let tree = std::path::PathBuf::from(state["worktree"].as_str().unwrap());
    state["phase"] = "init".into();
    state["status"] = serde_json::json!({"state": "queued"});
    state.as_object_mut().unwrap().remove("worktree");
    std::fs::write(s.path("_state.json"), state.to_string()).unwrap();
    std::fs::remove_dir_all(&tree).unwrap();
    project.run(&["run", "--session", "cut"]).expect(10);
    assert!(tree.join(".git").exists());
}

#[test]
fn a_worktree_deleted_by_hand_is_made_again_from_its_branch() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE_STEPS", "1");
    // samocode started from a git hook: GIT_DIR names another repository.
    project.env("GIT_DIR", "/nonexistent/.git");
    project
        .run(&["run", "--session", "gone", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("gone");
    let tree = std::path::PathBuf::from(s.state()["worktree"].as_str().unwrap());
    std::fs::remove_dir_all(&tree).unwrap();
    project
        .run(&["answer", "gone", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "gone"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "plan_approval");
    assert!(tree.join(".git").exists());
    assert!(
        s.read("_overview.md")
            .contains("was missing; made again from branch gone"),
        "{}",
        s.read("_overview.md")
    );
}

#[test]
fn a_bare_or_detached_main_repository_gets_advice_that_fits() {
    let project = Project::new();
    git(&project.repo, &["checkout", "-q", "--detach"]);
    blocks_at_init(&project, "loose", &["HEAD is detached", "BASE_BRANCH"]);
    let bare = project.root.join("bare.git");
    git(
        &project.root,
        &[
            "clone",
            "-q",
            "--bare",
            project.repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    point_at(&project, &bare, &project.worktrees);
    blocks_at_init(&project, "bare", &["is a bare repository"]);
}

#[test]
fn dry_run_prints_the_configuration_and_the_agent_command_and_writes_nothing() {
    let mut project = Project::new();
    project
        .env("CLAUDE_MODEL", "opus")
        .env("CLAUDE_MAX_TURNS", "42");
    let run = project.run(&[
        "run",
        "--session",
        "dry",
        "--dive",
        "d",
        "--task",
        "t",
        "--timeout",
        "90s",
        "--dry-run",
    ]);
    run.expect(0);
    let out = run.stdout();
    assert!(out.contains("timeout:        1m 30s"), "{out}");
    assert!(out.contains("--dangerously-skip-permissions --setting-sources user --model opus --max-turns 42 --verbose --output-format stream-json --append-system-prompt"), "{out}");
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);

    // With codex the context goes on standard input; the command line carries none of it.
    let codex = project.root.join("codex");
    std::fs::copy(project.root.join("fake-claude"), &codex).unwrap();
    project.env("CODEX_PATH", codex.to_str().unwrap());
    let run = project.run(&[
        "run",
        "--session",
        "dry",
        "--dive",
        "The dive text",
        "--task",
        "t",
        "--provider",
        "codex",
        "--dry-run",
    ]);
    run.expect(0);
    let out = run.stdout();
    let command = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", codex.display())))
        .unwrap_or_else(|| panic!("no codex command in\n{out}"));
    assert!(
        command.contains("exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --model gpt-5.1-codex -c model_reasoning_effort=medium < <"),
        "{command}"
    );
    assert!(!command.contains("The dive text"), "{command}");
    assert_eq!(std::fs::read_dir(&project.sessions).unwrap().count(), 0);
}

/// `samocode demo ARGS` with no HOME and no state directory of the person's, as on a fresh
/// machine's service account.
fn demo_without_home(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(super::fixture::BIN);
    command
        .arg("demo")
        .args(args)
        .env_remove("SAMOCODE_FAKE")
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("SAMOCODE_STATE_DIR");
    command
}

/// The demo needs no project of the person's: run inside a workspace whose `.samocode` is
/// unfinished, with a `--dir` relative to where it runs, it makes its own and runs it to done.
#[test]
fn the_demo_runs_three_sessions_on_the_daemon_to_done_and_says_where_things_are() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    std::fs::write(dir_path.join(".samocode"), "MAIN_REPO=~/nowhere\n").unwrap();
    let root = dir_path.join("demo");
    // Nor a HOME: it keeps nothing in a state directory.
    let out = demo_without_home(&["--dir", "demo"])
        .current_dir(&dir_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["login", "search", "export"] {
        assert!(
            stdout.contains(&"demo, as a person: all questions of ".to_string())
                && stdout.contains(&format!("-{name} are answered")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("-{name}; next phase: implementation")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("-{name}: done after 10 iterations")),
            "{stdout}"
        );
        let branch = format!("demo/{name}");
        let log = git(&root.join("repo"), &["log", "--format=%s", &branch]);
        assert!(log.starts_with("Implement step 3\n"), "{log}");
    }
    assert!(
        stdout.contains(&format!(
            "sessions (notebook, state, journals, artifacts): {}",
            root.join("sessions").display()
        )),
        "{stdout}"
    );
    assert!(
        !root.join("repo/demo").exists(),
        "a stray folder under the repository"
    );
    // Its closing hint works as printed: without a HOME, status needs the state directory.
    let hint = stdout.lines().find(|l| l.starts_with("try: cd ")).unwrap();
    assert!(hint.contains(" SAMOCODE_STATE_DIR="), "{hint}");
    let status = std::process::Command::new("sh")
        .args(["-c", hint.trim_start_matches("try: ")])
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .output()
        .unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("done"),
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A demo that cannot set its project up (here no git on PATH; a full disk does the same)
/// says what failed and leaves nothing behind: it left a half-made folder, and said only "No
/// such file or directory".
#[test]
fn a_demo_that_cannot_set_up_says_why_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let empty = dir.path().join("given");
    std::fs::create_dir(&empty).unwrap();
    for folder in [&root, &empty] {
        let out = std::process::Command::new(super::fixture::BIN)
            .args(["demo", "--dir", folder.to_str().unwrap()])
            .env_remove("SAMOCODE_FAKE")
            .env("PATH", dir.path().join("no-bin"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("git") && stderr.contains("install"),
            "{stderr}"
        );
        assert!(
            std::fs::read_dir(folder).map_or(true, |mut d| d.next().is_none()),
            "{} holds what the demo left",
            folder.display()
        );
    }
    assert!(!root.exists() && empty.is_dir());
}

/// The demo makes its project in a new or empty folder only: one that holds anything (a
/// demo's, or the person's own work) is refused before a file is touched.
#[test]
fn the_demo_refuses_a_folder_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(mine.join("repo")).unwrap();
    std::fs::write(mine.join(".samocode"), "MAIN_REPO=app\n# my notes\n").unwrap();
    std::fs::write(mine.join("repo/README.md"), "my own readme\n").unwrap();
    let out = std::process::Command::new(super::fixture::BIN)
        .args(["demo", "--dir", mine.to_str().unwrap()])
        .env_remove("SAMOCODE_FAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is not empty", mine.display())) && stderr.contains("--dir"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join(".samocode")).unwrap(),
        "MAIN_REPO=app\n# my notes\n"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("repo/README.md")).unwrap(),
        "my own readme\n"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 2);
    // A file, a link to nothing: said as such; and no HOME is needed for the demo.
    let file = dir.path().join("afile");
    std::fs::write(&file, "").unwrap();
    let nothing = dir.path().join("nothing");
    std::os::unix::fs::symlink(dir.path().join("gone"), &nothing).unwrap();
    for (path, said) in [(&file, "is a file"), (&nothing, "is a link to nothing")] {
        let out = demo_without_home(&["--dir", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }
}

/// The scripted agent runs in the session's worktree, below the person's `.samocode`: it reads
/// no project file (it had read README's `~/...` paths without a HOME, and exited 2 at every
/// attempt).
#[test]
fn the_scripted_agent_reads_no_project_file() {
    let project = Project::new();
    std::fs::write(
        project.root.join(".samocode"),
        "MAIN_REPO=~/../repo\nWORKTREES=~/../worktrees\nSESSIONS=~/../sessions\n",
    )
    .unwrap();
    project
        .run(&["run", "--session", "tilde", "--dive", "d", "--task", "t"])
        .expect(10);
}

#[test]
fn a_session_actor_that_keeps_failing_is_restarted_then_marked_failed() {
    let project = Project::new();
    project
        .run(&["run", "--session", "broken", "--dive", "d", "--task", "t"])
        .expect(10);
    project
        .run(&["answer", "broken", "--accept-suggestions"])
        .expect(0);
    let s = project.session("broken");
    // The worker must clear _signal.json before every attempt (the last one's was moved beside
    // its log); a directory there defeats it.
    assert!(!s.path("_signal.json").exists());
    std::fs::create_dir(s.path("_signal.json")).unwrap();
    let run = project.run(&["run", "--session", "broken"]);
    run.expect(1);
    assert!(
        run.stdout()
            .contains("failed: the session actor failed 4 times"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout().contains("_signal.json"),
        "the cause is named: {}",
        run.stdout()
    );
    assert_eq!(s.state()["status"]["state"], "failed");
}

#[test]
fn an_inherited_claudecode_variable_does_not_reach_the_agent() {
    // Started from inside an interactive Claude Code session, samocode still runs its agent as
    // a top-level one (the scripted agent refuses to start nested, as claude did).
    let mut project = Project::new();
    project.env("CLAUDECODE", "1");
    project
        .run(&[
            "run",
            "--session",
            "nested",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
        ])
        .expect(0);
    let rows = project.session("nested").jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "ok");
}

/// A session at its plan gate, worktrees inside the main checkout (`repo/wt`), approved: its
/// next `run` implements.
fn approved_in_repo_worktrees(project: &Project, name: &str) -> std::path::PathBuf {
    let worktrees = project.repo.join("wt");
    std::fs::create_dir_all(&worktrees).unwrap();
    point_at(project, &project.repo, &worktrees);
    project.through_both_gates(name);
    let state = project.session(name).state();
    std::path::PathBuf::from(state["worktree"].as_str().unwrap())
}

/// The session's worktree folder made again by hand (or by an agent whose worktree was
/// deleted) as a plain folder, or switched to another branch: the next attempt does not
/// start there, and nothing lands on the main checkout's branch or another (the agent's
/// commits went to `main`).
#[test]
fn a_worktree_folder_that_is_no_longer_the_sessions_own_blocks_before_the_agent() {
    let project = Project::new();
    let tree = approved_in_repo_worktrees(&project, "plain");
    let main_before = git(&project.repo, &["rev-parse", "main"]);
    std::fs::remove_dir_all(&tree).unwrap();
    std::fs::create_dir(&tree).unwrap();
    let run = project.run(&["run", "--session", "plain"]);
    run.expect(11);
    assert!(
        run.stdout()
            .contains("no longer this session's worktree on branch plain")
            && run.stdout().contains("not a worktree of the repository"),
        "{}",
        run.stdout()
    );
    assert_eq!(git(&project.repo, &["rev-parse", "main"]), main_before);
    // Moved away as it says, the worktree is made again and the session goes on.
    std::fs::remove_dir(&tree).unwrap();
    project.run(&["resume", "plain"]).expect(0);
    project.run(&["run", "--session", "plain"]).expect(0);
    assert_eq!(git(&project.repo, &["rev-parse", "main"]), main_before);
    assert!(git(&project.repo, &["log", "--format=%s", "plain"]).contains("Implement"));

    let project = Project::new();
    let tree = approved_in_repo_worktrees(&project, "switched");
    git(&tree, &["switch", "-q", "-c", "mine"]);
    let run = project.run(&["run", "--session", "switched"]);
    run.expect(11);
    assert!(
        run.stdout().contains("it is on branch mine"),
        "{}",
        run.stdout()
    );
    assert_eq!(
        git(&project.repo, &["rev-parse", "mine"]),
        git(&project.repo, &["rev-parse", "switched"]),
        "no commit on either"
    );
    // Its branch deleted as well: the advice was to switch to a branch that is no more.
    git(&project.repo, &["branch", "-q", "-D", "switched"]);
    project.run(&["resume", "switched"]).expect(0);
    let run = project.run(&["run", "--session", "switched"]);
    run.expect(11);
    let advice = format!("git -C {} switch -c switched", tree.display());
    assert!(run.stdout().contains(&advice), "{}", run.stdout());
    let followed = std::process::Command::new("sh")
        .arg("-c")
        .arg(&advice)
        .output()
        .unwrap();
    assert!(followed.status.success(), "{followed:?}");
    project.run(&["resume", "switched"]).expect(0);
    project.run(&["run", "--session", "switched"]).expect(0);
}

/// samocode's own git commands (the worktree's `worktree add`, the baseline's `status`) run
/// none of the repository's hooks: one that waits (an `npm install` on post-checkout) held
/// the session, and every session of the daemon, where no `stop` reached it.
#[test]
fn the_repositorys_hooks_do_not_run_for_samocodes_own_git_commands() {
    let project = Project::new();
    let ran = project.root.join("hook-ran");
    let hook = project.repo.join(".git/hooks/post-checkout");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho ran >> '{}'\nsleep 600\n", ran.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    project
        .run(&["run", "--session", "hooked", "--dive", "d", "--task", "t"])
        .expect(10);
    assert!(!ran.exists(), "the post-checkout hook ran");
}

/// Making a session's deleted worktree again has git forget that worktree only: a person's
/// own worktree whose folder is away just now (a disk not mounted) keeps its record (a
/// repository-wide `git worktree prune` dropped it, and its index and HEAD with it).
#[test]
fn remaking_a_sessions_worktree_leaves_a_persons_away_worktree_known() {
    let project = Project::new();
    let mine = project.root.join("mine");
    let mine_text = mine.display().to_string();
    git(
        &project.repo,
        &["worktree", "add", "-q", "-b", "mywork", &mine_text, "main"],
    );
    project
        .run(&["run", "--session", "remade", "--dive", "d", "--task", "t"])
        .expect(10);
    let away = project.root.join("away");
    std::fs::rename(&mine, &away).unwrap();
    let tree = project.session("remade").state()["worktree"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_dir_all(&tree).unwrap();
    project
        .run(&["answer", "remade", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "remade"]).expect(10);
    assert!(std::path::Path::new(&tree).join(".git").exists());
    std::fs::rename(&away, &mine).unwrap();
    assert_eq!(
        git(&mine, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "mywork"
    );
}

/// The advice for a repository git does not take says what is wrong with it: an origin/HEAD
/// naming a branch the remote no longer has (a renamed default branch; it read as a wrong
/// BASE_BRANCH in .samocode, which set none), and MAIN_REPO naming the `.git` folder (it
/// advised `git init` there, which would make a repository inside the repository).
#[test]
fn a_repository_git_does_not_take_gets_advice_for_what_is_wrong() {
    let project = Project::new();
    git(
        &project.repo,
        &[
            "symbolic-ref",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/master",
        ],
    );
    blocks_at_init(
        &project,
        "stale",
        &["origin/master", "remote set-head origin -a"],
    );

    let project = Project::new();
    point_at(&project, &project.repo.join(".git"), &project.worktrees);
    let run = project.run(&["run", "--session", "dotgit", "--dive", "d", "--task", "t"]);
    let said = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        said.contains("at the checkout that holds it") && !said.contains("git init"),
        "{said}"
    );
}

/// A session whose worktree is no longer where its state says but where WORKTREES puts it
/// now (the project moved, WORKTREES changed, and git told with `git worktree repair`) goes
/// on there; it was made again at the old place, beside the work.
#[test]
fn a_worktree_moved_with_worktrees_is_found_where_worktrees_puts_it() {
    let project = Project::new();
    project
        .run(&["run", "--session", "moved", "--dive", "d", "--task", "t"])
        .expect(10);
    let old = std::path::PathBuf::from(
        project.session("moved").state()["worktree"]
            .as_str()
            .unwrap(),
    );
    let elsewhere = project.root.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let new = elsewhere.join(old.file_name().unwrap());
    std::fs::rename(&old, &new).unwrap();
    git(
        &project.repo,
        &["worktree", "repair", &new.display().to_string()],
    );
    point_at(&project, &project.repo, &elsewhere);
    project
        .run(&["answer", "moved", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "moved"]).expect(10);
    assert!(!old.exists(), "made again at the old place");
    assert_eq!(
        project.session("moved").state()["worktree"],
        new.display().to_string()
    );
}

/// A session made from a remote's branch (a clone, with no BASE_BRANCH) tracked it: a plain
/// `git push` of the session's work (with `push.default=upstream`) went to the team's main,
/// and each session wrote a section of `.git/config` (another git's lock there blocked
/// inits).
#[test]
fn a_session_branch_made_from_a_remote_branch_tracks_nothing() {
    let project = Project::new();
    let origin = project.root.join("origin.git");
    git(
        &project.root,
        &[
            "clone",
            "-q",
            "--bare",
            &project.repo.display().to_string(),
            &origin.display().to_string(),
        ],
    );
    git(
        &project.repo,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(&project.repo, &["fetch", "-q", "origin"]);
    git(&project.repo, &["remote", "set-head", "origin", "-a"]);
    project
        .run(&["run", "--session", "solo", "--dive", "d", "--task", "t"])
        .expect(10);
    let base = project.session("solo").state()["base"]["branch"].clone();
    assert!(base.as_str().unwrap().starts_with("origin/"), "{base}");
    let upstream = git(
        &project.repo,
        &["for-each-ref", "--format=%(upstream)", "refs/heads/solo"],
    );
    assert_eq!(
        upstream.trim(),
        "",
        "the session's branch tracks {upstream}"
    );
    let config = std::fs::read_to_string(project.repo.join(".git/config")).unwrap();
    assert!(!config.contains("[branch \"solo\"]"), "{config}");
}

/// Another git (a session of another worker on the same repository) made the branch between
/// the session's look and its `git worktree add`: the session blocked with git's words, its
/// state claiming the branch, and a later resume took the other session's branch and its
/// commits for its own.
#[test]
fn a_branch_another_git_made_first_is_never_taken_for_the_sessions_own() {
    let mut project = Project::new();
    super::fixture::git_wrapper(&mut project, "racing-git", |real| {
        format!(
            "#!/bin/sh\n# Another git makes the branch first.\ndir=.; next=; b=\nfor a in \"$@\"; do\n  case \"$next\" in C) dir=$a;; b) b=$a;; esac\n  next=\n  case \"$a\" in -C) next=C;; -b) next=b;; esac\ndone\n[ -n \"$b\" ] && {real} -C \"$dir\" branch \"$b\" HEAD\nexec {real} \"$@\"\n"
        )
    });
    blocks_at_init(
        &project,
        "race",
        &["does not take over a branch it did not make"],
    );
    let s = project.session("race");
    assert!(s.state()["branch"].is_null(), "{}", s.state());
    // The other session's work on its branch.
    commit(&project.repo, "theirs.txt", "theirs");
    let theirs = git(&project.repo, &["rev-parse", "HEAD"]);
    git(&project.repo, &["branch", "-f", "race", theirs.trim()]);
    project.env("PATH", &std::env::var("PATH").unwrap());
    project.run(&["resume", "race"]).expect(0);
    let run = project.run(&["run", "--session", "race"]);
    run.expect(11);
    assert!(
        run.stdout()
            .contains("does not take over a branch it did not make"),
        "{}",
        run.stdout()
    );
    assert!(s.state()["worktree"].is_null(), "{}", s.state());
}

/// A session whose branch would be a folder of another branch's (`fix` beside `fix/login`)
/// was blocked with git's words and advice (`resume`) that could not help.
#[test]
fn a_branch_name_that_clashes_with_a_branch_folder_is_explained() {
    let project = Project::new();
    git(&project.repo, &["branch", "fix/login"]);
    blocks_at_init(
        &project,
        "fix",
        &[
            "cannot be made",
            "name the session differently or set BRANCH_PREFIX",
        ],
    );
    assert!(project.session("fix").state()["branch"].is_null());
}

/// A session's worktree moved by a person with `git worktree move`: the session was blocked
/// with git's "already used by worktree" and no advice. It goes on where git says its branch
/// is checked out now.
#[test]
fn a_worktree_moved_with_git_worktree_move_is_followed() {
    let project = Project::new();
    project
        .run(&["run", "--session", "moved", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("moved");
    let old = s.state()["worktree"].as_str().unwrap().to_string();
    let new = project.root.join("elsewhere");
    git(
        &project.repo,
        &["worktree", "move", &old, &new.display().to_string()],
    );
    project
        .run(&["answer", "moved", "--accept-suggestions"])
        .expect(0);
    project.run(&["run", "--session", "moved"]).expect(10);
    assert_eq!(s.state()["worktree"], new.display().to_string());
    assert_eq!(s.state()["status"]["for"], "plan_approval");
    assert!(
        s.read("session.log")
            .contains("where its branch is checked out now"),
        "{}",
        s.read("session.log")
    );

    // A person's own worktree of a session's branch (the session's deleted and pruned) is not
    // taken for the session's: its agent would work and commit there.
    let project = Project::new();
    let s = project.to_the_plan_gate("review");
    let tree = s.state()["worktree"].as_str().unwrap().to_string();
    std::fs::remove_dir_all(&tree).unwrap();
    git(&project.repo, &["worktree", "prune"]);
    let mine = project.root.join("my-review");
    git(
        &project.repo,
        &[
            "worktree",
            "add",
            "-q",
            &mine.display().to_string(),
            "review",
        ],
    );
    project.run(&["approve", "review"]).expect(0);
    let blocked = project.run(&["run", "--session", "review"]);
    blocked.expect(11);
    assert!(
        blocked
            .stdout()
            .contains(&format!("is checked out in {}", mine.display())),
        "{}",
        blocked.stdout()
    );
    assert_ne!(s.state()["worktree"], mine.display().to_string());
    assert_eq!(
        git(&mine, &["log", "--oneline", "-1"]),
        git(&project.repo, &["log", "--oneline", "-1", "review"]),
    );
    assert_eq!(git(&mine, &["status", "--porcelain"]), "");
}

/// A repository with no commits yet (`git init` alone): the dry run accepted it and the run
/// blocked; with BASE_BRANCH=main the reason said to fix or remove BASE_BRANCH, and without it
/// to set BASE_BRANCH, each sending the person to the other. Both say the repository has no
/// commits, and the dry run names the default branch it found.
#[test]
fn a_repository_without_commits_is_said_to_have_none() {
    let project = Project::new();
    let empty = project.root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    git(&empty, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(project.root.join("wt-empty")).unwrap();
    point_at(&project, &empty, &project.root.join("wt-empty"));
    dry_run_refuses(&project, "e", "has no commits yet");
    blocks_at_init(
        &project,
        "e",
        &["has no commits yet", "commit --allow-empty"],
    );
    let file = project.root.join(".samocode");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("BASE_BRANCH=main\n");
    std::fs::write(&file, text).unwrap();
    blocks_at_init(&project, "f", &["has no commits yet"]);
    commit(&empty, "a.txt", "a");
    point_at(&project, &empty, &project.root.join("wt-empty"));
    let dry = project.run(&[
        "run",
        "--session",
        "g",
        "--dive",
        "d",
        "--task",
        "t",
        "--dry-run",
    ]);
    dry.expect(0);
    assert!(
        dry.stdout()
            .contains("base branch:    main (the repository's default)"),
        "{}",
        dry.stdout()
    );
}
