//! A session from `run --dive --task` to done through both gates.

use super::fixture::{Project, git};

#[test]
fn a_session_walks_every_phase_through_both_gates() {
    let project = Project::new();
    let first = project.run(&[
        "run",
        "--session",
        "auth",
        "--dive",
        "How does login work?",
        "--task",
        "Add JWT login",
    ]);
    first.expect(10);
    assert!(
        first.stdout().contains("waiting for answers"),
        "{}",
        first.stdout()
    );
    assert!(
        first
            .stdout()
            .contains("Q1: Where should the demo files go?")
    );
    let s = project.session("auth");
    let folder = s.0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        folder.len() == "YY-MM-DD-auth".len() && folder.ends_with("-auth"),
        "{folder}"
    );

    // Waiting in place: a second run does not start an agent until the answers are in.
    project.run(&["run", "--session", "auth"]).expect(10);
    assert_eq!(s.jsonl("_iterations.jsonl").len(), 2);

    let answered = project.run(&["answer", "auth", "--accept-suggestions"]);
    answered.expect(0);
    assert!(
        answered.stdout().contains("all questions"),
        "{}",
        answered.stdout()
    );
    assert!(s.read("_qa.md").contains("Answer: samocode-demo"));

    let second = project.run(&["run", "--session", "auth"]);
    second.expect(10);
    assert!(
        second.stdout().contains("waiting for plan approval"),
        "{}",
        second.stdout()
    );
    assert_eq!(s.state()["status"]["for"], "plan_approval");

    project.run(&["approve", "auth"]).expect(0);
    let last = project.run(&["run", "--session", "auth"]);
    last.expect(0);
    assert!(
        last.stdout()
            .contains("done: Implemented the scripted steps"),
        "{}",
        last.stdout()
    );

    // _state.json: schema 1, done, counters and usage.
    let state = s.state();
    assert_eq!(state["schema"], 1);
    assert_eq!(state["phase"], "done");
    assert_eq!(state["status"]["state"], "done");
    assert_eq!(state["iteration"], 10);
    assert!(state["usage"]["cost_usd"].as_f64().unwrap() > 0.1);
    assert_eq!(state["agent_session_ids"].as_array().unwrap().len(), 10);

    // _overview.md: worker lines current, agent lines and the Flow Log kept.
    let overview = s.read("_overview.md");
    for line in [
        "Phase: done\n",
        "Total Iterations: 10\n",
        "Blocked: no\n",
        "Last Action: wrote the summary\n",
    ] {
        assert!(overview.contains(line), "{line:?} in\n{overview}");
    }
    assert!(overview.contains("Plan approved by a person"));
    assert!(overview.contains("] implementation: implemented step 3"));
    assert!(overview.contains("## Dive\nHow does login work?"));

    // The journals: one iteration row per attempt, one history row per signal and person.
    let iterations = s.jsonl("_iterations.jsonl");
    assert_eq!(iterations.len(), 10);
    for row in &iterations {
        assert_eq!(row["outcome"], "ok");
        assert_eq!(row["provider"], "claude");
        assert_eq!(row["host"], "local", "the attempt ran on this machine");
        assert_eq!(row["input_tokens"], 1200);
        assert!(s.path(row["log"].as_str().unwrap()).is_file());
    }
    let phases: Vec<&str> = iterations
        .iter()
        .map(|r| r["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "investigation",
            "requirements",
            "requirements",
            "planning",
            "implementation",
            "implementation",
            "implementation",
            "testing",
            "quality",
            "done"
        ]
    );
    let history = s.jsonl("_signal_history.jsonl");
    let verbs: Vec<&str> = history
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        verbs,
        [
            "continue", "waiting", "answer", "continue", "waiting", "approve", "continue",
            "continue", "continue", "continue", "continue", "done"
        ]
    );
    assert!(history.iter().all(|r| r["accepted"] == true));

    // One log per attempt, never overwritten; no stderr log for attempts that printed none
    // there; every context in the one journal, under its attempt's log.
    let logs = s.logs();
    assert_eq!(logs.iter().filter(|n| n.ends_with(".jsonl")).count(), 10);
    assert_eq!(
        logs.iter().filter(|n| n.ends_with(".stderr.log")).count(),
        0,
        "{logs:?}"
    );
    // Each attempt's signal is kept beside its log, as the agent wrote it; none is left for
    // the next attempt.
    for log in logs.iter().filter(|n| n.ends_with(".jsonl")) {
        let kept = s.read(&format!("_logs/{}", log.replace(".jsonl", ".signal.json")));
        let signal: serde_json::Value = serde_json::from_str(&kept).unwrap();
        assert!(signal["status"].is_string(), "{log}: {kept}");
    }
    assert!(!s.path("_signal.json").exists());
    let contexts = s.contexts();
    assert_eq!(contexts.len(), 10);
    assert!(
        contexts.iter().all(
            |(log, context)| logs.iter().any(|l| log.ends_with(l.as_str()))
                && context.contains("Session path: ")
        ),
        "{:?}",
        contexts.iter().map(|(log, _)| log).collect::<Vec<_>>()
    );
    // The workflow and the phase's instructions are written out once per run of a phase; the
    // implementation's second and third attempts point back to its first.
    let workflow =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/workflow.md")).unwrap();
    let phase_of = |context: &str| {
        let line = context.lines().find(|l| l.starts_with("Phase: ")).unwrap();
        line.to_string()
    };
    let mut pointers = 0;
    for (i, (log, context)) in contexts.iter().enumerate() {
        let earlier = context.lines().find_map(|l| {
            l.strip_prefix("(workflow.md and this phase's instructions: as in the entry of ")?
                .strip_suffix(" above)")
        });
        let Some(earlier) = earlier else {
            assert!(
                context.contains(workflow.trim()),
                "{log} lacks the workflow"
            );
            continue;
        };
        pointers += 1;
        assert!(!context.contains(workflow.trim()), "{log}");
        let (_, whole) = contexts[..i]
            .iter()
            .find(|(l, _)| l == earlier)
            .unwrap_or_else(|| panic!("{log} points to {earlier}, not an earlier entry"));
        assert!(whole.contains(workflow.trim()), "{earlier}");
        assert_eq!(phase_of(whole), phase_of(context), "{log}");
    }
    assert_eq!(pointers, 2, "the implementation's 2nd and 3rd attempts");
    assert!(
        logs.iter()
            .any(|n| n.ends_with("-005-implementation-a1.jsonl")),
        "{logs:?}"
    );
    let first_log = s.read(&format!(
        "_logs/{}",
        logs.iter().find(|n| n.ends_with(".jsonl")).unwrap()
    ));
    assert!(first_log.contains("\"type\":\"result\""));
    assert!(s.read("session.log").contains("done"));
    for kind in [
        "dive",
        "requirements",
        "plan",
        "test-report",
        "review",
        "summary",
    ] {
        assert_eq!(s.artifacts(kind).len(), 1, "{kind}");
    }

    // The agent's commits are on the session branch, in the worktree.
    let worktree = project.worktrees.join(&folder);
    assert_eq!(state["worktree"], worktree.display().to_string());
    assert_eq!(
        git(&worktree, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "auth"
    );
    let log = git(&project.repo, &["log", "--format=%s", "auth"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "Implement step 3",
            "Implement step 2",
            "Implement step 1",
            "init"
        ]
    );
    assert_eq!(
        git(&project.repo, &["log", "--format=%s", "main"]).trim(),
        "init"
    );

    // status reads it all back without a daemon.
    let status = project.run(&["status", "--json"]);
    status.expect(0);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let row = &rows[0];
    assert_eq!(row["name"], folder);
    assert_eq!(row["state"], "done");
    assert_eq!(row["worker"], "stopped");
    assert_eq!(row["total_iterations"], 10);
    assert_eq!(row["output_tokens"], 3000);
    assert_eq!(row["host"], "local", "where the newest attempt ran");
    for key in [
        "dir",
        "phase",
        "iteration",
        "waiting_for",
        "blocked_reason",
        "last_action",
        "next",
        "updated_at",
        "cost_usd",
        "input_tokens",
    ] {
        assert!(row.get(key).is_some(), "{key}");
    }
    let active = project.run(&["status", "--active", "--json"]);
    assert_eq!(active.stdout().trim(), "[]");
}

#[test]
fn a_rejected_plan_goes_back_to_planning_with_the_feedback() {
    let project = Project::new();
    project
        .run(&["run", "--session", "plan", "--dive", "d", "--task", "t"])
        .expect(10);
    project
        .run(&["answer", "plan", "--q", "1", "docs", "--q", "2", "5"])
        .expect(0);
    let s = project.session("plan");
    assert!(s.read("_qa.md").contains("Answer: docs\n"));
    project.run(&["run", "--session", "plan"]).expect(10);

    let refused = project.run(&["reject", "plan", "--reason", ""]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("reject needs a reason"),
        "{}",
        refused.stderr()
    );

    project
        .run(&["reject", "plan", "--reason", "split step 2"])
        .expect(0);
    project
        .run(&["run", "--session", "plan", "--once"])
        .expect(10);
    let plans = s.artifacts("plan");
    let newest = plans.iter().max().unwrap();
    assert!(s.read(newest).contains("revised after feedback"));
    let (_, context) = s
        .contexts()
        .into_iter()
        .filter(|(log, _)| log.ends_with("planning-a1.jsonl"))
        .max()
        .unwrap();
    assert!(context.contains("## Feedback from a person\nsplit step 2"));
    let history = s.jsonl("_signal_history.jsonl");
    assert!(
        history
            .iter()
            .any(|r| r["status"] == "reject" && r["reason"] == "split step 2")
    );
}

/// A long dive and task (100 KB each) were written twice per attempt: into the context file
/// the agent reads and into `_logs/contexts.md`. The journal holds them once per run of the
/// worker and points back after; the context file goes once its attempt is over.
#[test]
fn a_long_dive_and_task_are_journaled_once_and_no_context_file_is_left() {
    let project = Project::new();
    let dive = format!("{}end of the dive", "dive text ".repeat(10_000));
    let task = format!("{}end of the task", "task text ".repeat(10_000));
    project
        .run(&["run", "--session", "long", "--dive", &dive, "--task", &task])
        .expect(10);
    let s = project.session("long");
    let contexts = s.contexts();
    assert_eq!(contexts.len(), 2, "investigation, requirements");
    assert!(contexts[0].1.contains("end of the dive") && contexts[0].1.contains("end of the task"));
    assert!(
        !contexts[1].1.contains("dive text"),
        "{}",
        contexts[1].1.len()
    );
    assert!(
        contexts[1].1.contains(&format!(
            "(the dive and the task: as in the entry of {} above)",
            contexts[0].0
        )),
        "{}",
        &contexts[1].1[..2000]
    );
    let left: Vec<String> = s
        .logs()
        .into_iter()
        .filter(|n| n.ends_with(".context.md"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The quality and summary agents are told to measure the change against its base, which no
/// context named (an agent guessed `main`, and reviewed another branch's commits): the branch
/// the worktree was made from, and the commit, are in every context after the init.
#[test]
fn every_context_names_the_base_the_worktree_was_made_from() {
    let project = Project::new();
    git(&project.repo, &["branch", "develop"]);
    git(
        &project.repo,
        &["commit", "-q", "--allow-empty", "-m", "on main only"],
    );
    let develop = git(&project.repo, &["rev-parse", "develop"]);
    let project_file = project.root.join(".samocode");
    let text = std::fs::read_to_string(&project_file).unwrap();
    std::fs::write(&project_file, format!("{text}BASE_BRANCH=develop\n")).unwrap();
    project
        .run(&["run", "--session", "based", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("based");
    let contexts = s.contexts();
    let line = format!("Base: develop at {}", develop.trim());
    assert!(!contexts.is_empty());
    assert!(
        contexts.iter().all(|(_, context)| context.contains(&line)),
        "{line}: {contexts:#?}"
    );
    assert_eq!(s.state()["base"]["branch"], "develop");
}

/// Answers to a session stopped at its questions said "all answered" and left it stopped,
/// while an approval of a plan stopped at its gate goes on: answering is a person going on.
#[test]
fn answers_to_a_session_stopped_at_its_questions_let_it_go_on() {
    let project = Project::new();
    project
        .run(&["run", "--session", "halt", "--dive", "d", "--task", "t"])
        .expect(10);
    project.run(&["stop", "halt"]).expect(0);
    let s = project.session("halt");
    assert_eq!(s.state()["status"]["state"], "stopped");
    project
        .run(&["answer", "halt", "--accept-suggestions"])
        .expect(0);
    assert_eq!(s.state()["status"]["state"], "queued", "{}", s.state());
    project.run(&["run", "--session", "halt"]).expect(10);
    assert_eq!(s.state()["status"]["for"], "plan_approval");
}
