//! `samocode attempt-run`: one attempt from a spec file, against a local bare repository, with
//! the scripted agent; and the daemon's side, applying the result it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use samocode::executor::result::{ApplyError, AttemptResult, End, Event, Expected, apply};
use samocode::executor::spec::{RemoteSpec, RepoSpec, Resources, SessionFile};

use super::fixture::{Project, alive, git, wait_for};

const ATTEMPT: &str = "_logs/11-24-120000-004-implementation-a1.jsonl";

/// A bare repository holding the project's commit on `main`, and a spec of one
/// implementation attempt whose daemon-side paths do not exist on this "worker".
fn setup(project: &Project) -> (PathBuf, RemoteSpec) {
    let bare = project.root.join("origin.git");
    git(
        &project.root,
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    git(
        &project.repo,
        &[
            "push",
            "-q",
            bare.to_str().unwrap(),
            "main:refs/samocode/s/base",
        ],
    );
    let base = git(&project.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let daemon_session = PathBuf::from("/daemon/sessions/26-11-24-remote");
    let daemon_workdir = PathBuf::from("/daemon/worktrees/26-11-24-remote");
    let context = format!(
        "Session: 26-11-24-remote\nSession path: {}\nWorking directory: {}\nPhase: implementation\nTotal iteration: 004\nAttempt: 1\n\n## Task\nbuild it\n",
        daemon_session.display(),
        daemon_workdir.display()
    );
    let overview = "# Session\n\n## Status\nPhase: implementation\nLast Action: planned\nNext: build\n\n## Flow Log\n";
    let plan = "# Plan\n\n## Phase 1: all\n- [ ] 1.1 one\n";
    let spec = RemoteSpec {
        v: 1,
        key: "0000abcd-11-24-120000-004-implementation-a1".into(),
        session: "26-11-24-remote".into(),
        attempt_id: ATTEMPT.into(),
        epoch: 1,
        provider: samocode::config::Provider::Claude,
        args: vec![
            "--append-system-prompt".into(),
            context.clone(),
            "-p".into(),
            "go".into(),
        ],
        stdin: None,
        context,
        env: vec!["SAMOCODE_FAKE".into(), "SAMOCODE_FAKE_PIDS".into()],
        session_dir: daemon_session,
        workdir: daemon_workdir,
        context_file: "_logs/11-24-120000-004-implementation-a1.context.md".into(),
        repository: RepoSpec {
            url: bare.display().to_string(),
            base_ref: "refs/samocode/s/base".into(),
            base_commit: base,
            result_ref: "refs/samocode/26-11-24-remote/11-24-120000-004-implementation-a1".into(),
        },
        timeout: Duration::from_secs(120),
        kill_grace: Duration::from_secs(1),
        deadline: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120),
        resources: Resources::default(),
        files: vec![
            SessionFile {
                path: "_overview.md".into(),
                text: overview.into(),
            },
            SessionFile {
                path: "11-24-11:00-plan-steps.md".into(),
                text: plan.into(),
            },
        ],
    };
    (bare, spec)
}

fn write_spec(project: &Project, spec: &RemoteSpec) -> PathBuf {
    let path = project.root.join("spec.json");
    std::fs::write(&path, serde_json::to_string(spec).unwrap()).unwrap();
    path
}

/// `samocode attempt-run` of `spec`, in the workspace `work` of the project, with `more`.
fn attempt_run(project: &Project, spec: &RemoteSpec, more: &[&str]) -> super::fixture::Run {
    let file = write_spec(project, spec);
    let workspace = project.root.join("work");
    let mut args = vec![
        "attempt-run",
        "--spec",
        file.to_str().unwrap(),
        "--dir",
        workspace.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    project.run(&args)
}

fn events(stdout: &str) -> Vec<Event> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn result_of(events: &[Event]) -> AttemptResult {
    match events.last() {
        Some(Event::Result(result)) => (**result).clone(),
        other => panic!("the last event is not the result: {other:?}"),
    }
}

#[test]
fn an_attempt_runs_from_its_spec_pushes_its_commits_and_returns_the_agents_files() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "implementation=grandchild");
    let (bare, spec) = setup(&project);
    let workspace = project.root.join("work");
    let run = attempt_run(&project, &spec, &["--host", "worker-a"]);
    run.expect(0);
    let events = events(&run.stdout());
    assert!(
        matches!(&events[0], Event::Started { epoch: 1, host, .. } if host == "worker-a"),
        "{events:?}"
    );
    let output: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Out { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert!(output.contains(r#""subtype":"init""#), "{output}");
    assert!(output.contains("committed step 1"), "{output}");
    let result = result_of(&events);
    assert_eq!(result.end, End::Exited { code: 0 });
    assert_eq!(result.host, "worker-a");

    // The agent's commit is on the result ref, and nothing was committed for it.
    let commit = result.commit.clone().expect("the agent committed");
    let pushed = git(&bare, &["rev-parse", &spec.repository.result_ref]);
    assert_eq!(pushed.trim(), commit);
    let message = git(&bare, &["log", "-1", "--format=%s", &commit]);
    assert_eq!(message.trim(), "Implement step 1");

    // The files the agent wrote came back, under the worker's paths rewritten nowhere.
    let changed: Vec<&str> = result.changed.iter().map(|f| f.path.as_str()).collect();
    assert!(changed.contains(&"_signal.json"), "{changed:?}");
    assert!(changed.contains(&"_overview.md"), "{changed:?}");
    assert!(
        changed.contains(&"11-24-11:00-plan-steps.md"),
        "{changed:?}"
    );
    // The grandchild the agent left holding its output was stopped with the group.
    for pid in project.left_behind() {
        assert!(
            !alive(pid),
            "the agent's grandchild {pid} outlived the attempt"
        );
    }
    assert!(
        std::fs::read_dir(&workspace).unwrap().next().is_none(),
        "the workspace is removed at the end"
    );

    // The daemon's side: a worktree at the base commit and the session folder.
    let worktree = project.root.join("daemon-worktree");
    git(
        &project.root,
        &[
            "clone",
            "-q",
            project.repo.to_str().unwrap(),
            worktree.to_str().unwrap(),
        ],
    );
    let session = project.root.join("daemon-session");
    std::fs::create_dir_all(&session).unwrap();
    let expected = |epoch| Expected {
        attempt_id: ATTEMPT.into(),
        epoch,
        session_dir: session.clone(),
        workdir: worktree.clone(),
        stderr_file: session.join("stderr.log"),
        repo_url: bare.display().to_string(),
        result_ref: spec.repository.result_ref.clone(),
        base_commit: spec.repository.base_commit.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A result of an older epoch than the newest one started is refused, and writes nothing.
    let stale = runtime.block_on(apply(&expected(2), &result));
    assert!(
        matches!(
            stale,
            Err(ApplyError::Stale {
                got_epoch: 1,
                epoch: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    assert!(!session.join("_signal.json").exists());
    runtime.block_on(apply(&expected(1), &result)).unwrap();
    let signal = std::fs::read_to_string(session.join("_signal.json")).unwrap();
    assert!(signal.contains("continue"), "{signal}");
    let head = git(&worktree, &["rev-parse", "HEAD"]);
    assert_eq!(
        head.trim(),
        commit,
        "the worktree moved forward to the agent's commit"
    );
}

#[test]
fn sigterm_stops_the_agent_and_the_grandchild_it_left() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "implementation=hang");
    let (_bare, spec) = setup(&project);
    let file = write_spec(&project, &spec);
    let workspace = project.root.join("work");
    let child = project
        .command(&[
            "attempt-run",
            "--spec",
            file.to_str().unwrap(),
            "--dir",
            workspace.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the agent's grandchild", || {
        !project.left_behind().is_empty()
    });
    let grandchild = project.left_behind()[0];
    assert!(alive(grandchild));
    super::fixture::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let output = child.wait_with_output().unwrap();
    let events = events(&String::from_utf8_lossy(&output.stdout));
    let result = result_of(&events);
    // The scripted agent holds SIGTERM (it is samocode, which catches it), so the group is
    // killed at the end of the grace.
    assert!(
        matches!(&result.end, End::Signaled { signal } if signal == "SIGKILL"),
        "{:?}\n{}",
        result.end,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        result.commit.is_none(),
        "the hanging agent committed nothing"
    );
    wait_for(Duration::from_secs(5), "the grandchild to die", || {
        !alive(grandchild)
    });
    assert!(
        super::fixture::agents_of(&workspace_session(&workspace, &spec)).is_empty(),
        "no process of the attempt is left"
    );
}

fn workspace_session(workspace: &Path, spec: &RemoteSpec) -> PathBuf {
    workspace
        .join(format!("{}-e{}", spec.key, spec.epoch))
        .join("session")
        .join(&spec.session)
}

/// A remote whose address carries a token (`https://x-access-token:TOKEN@host/…`, as README
/// suggests) that cannot be fetched: the attempt fails saying so, without the token, which
/// would reach the session's state, its log and the chat.
#[test]
fn a_token_in_the_remotes_address_is_not_in_the_failure() {
    let project = Project::new();
    let (_bare, mut spec) = setup(&project);
    spec.repository.url = "http://x-access-token:ghp_SECRET123@127.0.0.1:9/repo.git".into();
    let run = attempt_run(&project, &spec, &[]);
    let events = events(&run.stdout());
    let result = result_of(&events);
    let End::Failed { detail } = &result.end else {
        panic!("{result:?}");
    };
    assert!(detail.contains("cannot fetch"), "{detail}");
    assert!(!run.stdout().contains("ghp_SECRET123"), "{}", run.stdout());
    assert!(!run.stderr().contains("ghp_SECRET123"), "{}", run.stderr());
}
