//! Budgets through the real binary: `run --max-cost` blocks the session with the figures (exit
//! 11), a plain `resume` is refused, `resume --raise-budget` lets the next `run` finish, and
//! `status` shows the budget left and the cost per phase. Bad budget values are usage errors.

use std::time::Duration;

use super::fixture::{Project, wait_for};

#[test]
fn a_session_stops_at_max_cost_and_finishes_after_a_raise() {
    let project = Project::new();
    // The scripted agent reports $0.0125 per attempt: the third iteration would pass $0.02.
    project
        .run(&[
            "run",
            "--session",
            "capped",
            "--dive",
            "d",
            "--task",
            "t",
            "--max-cost",
            "0.02",
        ])
        .expect(10);
    let s = project.session("capped");
    assert_eq!(s.state()["budget"]["cost_usd"], 0.02);
    project
        .run(&["answer", "capped", "--accept-suggestions"])
        .expect(0);

    let blocked = project.run(&["run", "--session", "capped"]);
    blocked.expect(11);
    assert!(
        blocked
            .stdout()
            .contains("cost budget reached: $0.025 of $0.02"),
        "{}",
        blocked.stdout()
    );
    // What to do is a raise of the limit reached, as it can be pasted: a plain resume is
    // refused while the budget holds (it said `--raise-budget WORD=VALUE`).
    assert!(
        blocked
            .stdout()
            .contains("raise the cost budget it reached (e.g. `samocode resume ")
            && blocked
                .stdout()
                .contains("--raise-budget cost=40`), then run again"),
        "{}",
        blocked.stdout()
    );
    let state = s.state();
    assert_eq!(state["status"]["needs"], "human_decision");
    assert_eq!(state["iteration"], 2);
    assert!(
        s.read("_overview.md")
            .contains("`samocode resume capped --raise-budget cost=N` goes on")
    );

    let status = project.run(&["status", "capped"]);
    status.expect(0);
    let text = status.stdout();
    assert!(
        text.contains("cost/phase:  investigation $0.0125, requirements $0.0125"),
        "{text}"
    );
    assert!(
        text.contains("budget:      cost $0.02 ($0.00 left), iterations none, time none"),
        "{text}"
    );

    // The budget flags of `run` are no raise: refused, the budget unchanged (they set it
    // silently, and the run still said the old limit was reached).
    let flags = project.run(&["run", "--session", "capped", "--max-cost", "100"]);
    flags.expect(2);
    assert!(
        flags.stderr().contains("is blocked by its budget")
            && flags.stderr().contains("--raise-budget"),
        "{}",
        flags.stderr()
    );
    assert_eq!(s.state()["budget"]["cost_usd"], 0.02);

    let refused = project.run(&["resume", "capped"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("--raise-budget cost="),
        "{}",
        refused.stderr()
    );
    project
        .run(&["resume", "capped", "--raise-budget", "cost=0.01"])
        .expect(2);
    // A raise of another limit leaves the one reached: refused, and nothing changes.
    let other = project.run(&["resume", "capped", "--raise-budget", "iterations=100"]);
    other.expect(2);
    assert!(
        other
            .stderr()
            .contains("this raise leaves the cost limit as it is; nothing was changed"),
        "{}",
        other.stderr()
    );
    assert!(
        s.state()["budget"].get("iterations").is_none(),
        "{}",
        s.state()
    );
    assert_eq!(s.state()["status"]["state"], "blocked");
    project
        .run(&["resume", "capped", "--raise-budget", "cost=5"])
        .expect(0);
    assert_eq!(s.state()["budget"]["cost_usd"], 5.0);

    project.run(&["run", "--session", "capped"]).expect(10);
    project.run(&["approve", "capped"]).expect(0);
    project.run(&["run", "--session", "capped"]).expect(0);
    let json = project.run(&["status", "capped", "--json"]);
    let row: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(row["state"], "done");
    assert_eq!(row["budget"]["max_cost_usd"], 5.0);
    let left = row["budget"]["left"]["cost_usd"].as_f64().unwrap();
    assert!(left > 4.8 && left < 5.0, "{row}");
    let phases: Vec<&str> = row["cost_by_phase"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.first(), Some(&"investigation"), "{row}");
    assert_eq!(phases.last(), Some(&"done"), "{row}");
}

/// Eight attempts at $0.0125 spend the whole of $0.10: the session stops there, although
/// their sum in binary floating point is a hair under $0.10 (a ninth attempt ran).
#[test]
fn a_cost_budget_spent_exactly_stops_the_session() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation=stay");
    let args = ["run", "--session", "exact", "--dive", "d", "--task", "t"];
    let blocked = project.run(&[&args[..], &["--max-cost", "0.1"]].concat());
    blocked.expect(11);
    assert!(
        blocked
            .stdout()
            .contains("cost budget reached: $0.10 of $0.10"),
        "{}",
        blocked.stdout()
    );
    assert_eq!(project.session("exact").jsonl("_iterations.jsonl").len(), 8);
    // A raise to what is spent is no raise.
    project
        .run(&["resume", "exact", "--raise-budget", "cost=0.1"])
        .expect(2);
}

/// An attempt stopped at its time limit printed no cost (claude prints it last): it counted
/// $0, so budgets let hung or long attempts spend without limit. The tokens its messages
/// report are priced (here 11,000 input of which 8,000 cached, and 750 output, at sonnet's
/// list price: $0.02265), and that reaches a $0.02 budget before any retry.
#[test]
fn an_attempt_stopped_at_its_time_limit_counts_the_tokens_it_spent() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "investigation@1=hang");
    let run = project.run(&[
        "run",
        "--session",
        "spent",
        "--dive",
        "d",
        "--task",
        "t",
        "--timeout",
        "1s",
        "--max-cost",
        "0.02",
    ]);
    run.expect(11);
    let session = project.session("spent");
    let rows = session.jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 1, "no retry past the budget: {rows:#?}");
    assert_eq!(rows[0]["outcome"], "timeout");
    assert_eq!(rows[0]["input_tokens"], 11000);
    assert_eq!(rows[0]["output_tokens"], 750);
    let cost = rows[0]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.02265).abs() < 1e-9, "{cost}");
    assert!(
        session
            .read("session.log")
            .contains("ended before claude printed its cost: $0.02"),
        "{}",
        session.read("session.log")
    );
    assert!(
        run.stdout().contains("cost budget reached"),
        "{}",
        run.stdout()
    );
}

/// A long session's journal outgrows what samocode reads of a file at once (4 MiB): its
/// cost per phase still counts every attempt.
#[test]
fn the_cost_per_phase_of_a_long_session_counts_every_attempt() {
    let project = Project::new();
    project
        .run(&["run", "--session", "long", "--dive", "d", "--task", "t"])
        .expect(10);
    let s = project.session("long");
    let journal = s.path("_iterations.jsonl");
    let rows = std::fs::read_to_string(&journal).unwrap();
    let first = rows.lines().next().unwrap().to_string();
    let copies = 5 * 1024 * 1024 / first.len() + 1;
    let mut grown = rows.clone();
    for _ in 0..copies {
        grown.push_str(&first);
        grown.push('\n');
    }
    std::fs::write(&journal, grown).unwrap();
    let json = project
        .run(&["status", "long", "--json"])
        .expect(0)
        .stdout();
    let row: serde_json::Value = serde_json::from_str(&json).unwrap();
    let attempts: u64 = row["cost_by_phase"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attempts as usize,
        rows.lines().count() + copies,
        "{}",
        row["cost_by_phase"]
    );
}

#[test]
fn bad_budget_flags_and_settings_are_usage_errors_naming_key_value_and_source() {
    let mut project = Project::new();
    let bad = project.run(&[
        "run",
        "--session",
        "x",
        "--dive",
        "d",
        "--task",
        "t",
        "--max-time",
        "soon",
    ]);
    bad.expect(2);
    assert!(
        bad.stderr()
            .contains("--max-time=\"soon\" (from the command line) is not valid"),
        "{}",
        bad.stderr()
    );
    project.env("SAMOCODE_MAX_COST", "free");
    let bad = project.run(&["status"]);
    bad.expect(2);
    assert!(
        bad.stderr()
            .contains("SAMOCODE_MAX_COST=\"free\" (from the environment) is not valid"),
        "{}",
        bad.stderr()
    );
    let bad = project.run(&["resume", "x", "--raise-budget", "speed=3"]);
    bad.expect(2);

    project.env("SAMOCODE_MAX_COST", "");
    project.env("SAMOCODE_MAX_ITERATIONS", "60");
    let dry = project.run(&[
        "run",
        "--session",
        "x",
        "--dive",
        "d",
        "--task",
        "t",
        "--max-cost",
        "20",
        "--dry-run",
    ]);
    dry.expect(0);
    assert!(
        dry.stdout()
            .contains("budget:         cost $20.00, iterations 60, time none"),
        "{}",
        dry.stdout()
    );
}

/// The state of session `name` as `status --json` shows it.
fn row(project: &Project, name: &str) -> serde_json::Value {
    project
        .status()
        .into_iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with(name)))
        .unwrap_or_else(|| panic!("no session {name}"))
}

#[test]
fn through_the_daemon_start_max_cost_blocks_and_resume_raise_budget_goes_on() {
    let mut project = Project::new();
    let _daemon = project.daemon(&[]);
    project
        .run(&[
            "start",
            "--session",
            "capped",
            "--dive",
            "d",
            "--task",
            "t",
            "--max-cost",
            "0.02",
        ])
        .expect(0);
    wait_for(Duration::from_secs(30), "the questions", || {
        row(&project, "capped")["waiting_for"] == "qa_answers"
    });
    project
        .run(&["answer", "capped", "--accept-suggestions"])
        .expect(0);
    wait_for(Duration::from_secs(30), "the budget to block it", || {
        row(&project, "capped")["state"] == "blocked"
    });
    assert_eq!(
        row(&project, "capped")["blocked_reason"],
        "cost budget reached: $0.025 of $0.02"
    );
    let refused = project.run(&["resume", "capped"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("$0.025 of $0.02"),
        "{}",
        refused.stderr()
    );
    let other = project.run(&["resume", "capped", "--raise-budget", "time=12h"]);
    other.expect(2);
    assert!(
        other.stderr().contains("leaves the cost limit as it is"),
        "{}",
        other.stderr()
    );
    assert_eq!(row(&project, "capped")["state"], "blocked");
    project
        .run(&["resume", "capped", "--raise-budget", "cost=5"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
}

#[test]
fn a_fleet_budget_holds_every_session_tells_once_and_a_raise_lifts_it() {
    let mut project = Project::new();
    // Reached by the fourth attempt only, whichever order the sessions' attempts run in.
    let _daemon = project.daemon(&["--fleet-max-cost", "0.04"]);
    start_all(&project, &["one", "two"]);
    // Each asks its questions after two attempts at $0.0125: $0.05 in all, past $0.04.
    wait_for(Duration::from_secs(30), "both to ask", || {
        project
            .status()
            .iter()
            .all(|r| r["waiting_for"] == "qa_answers")
            && project.status().len() == 2
    });
    for name in ["one", "two"] {
        project
            .run(&["answer", name, "--accept-suggestions"])
            .expect(0);
    }
    wait_for(
        Duration::from_secs(30),
        "both to wait for the fleet",
        || project.status().iter().all(|r| r["state"] == "queued"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = project.run(&["status"]);
    assert!(
        status
            .stdout()
            .contains("fleet budget reached: $0.05 of $0.04"),
        "{}",
        status.stdout()
    );
    for name in ["one", "two"] {
        assert_eq!(
            project.session(name).jsonl("_iterations.jsonl").len(),
            2,
            "no attempt past the fleet budget"
        );
    }
    let told = project
        .daemon_log()
        .matches("fleet budget reached:")
        .count();
    assert_eq!(told, 1, "{}", project.daemon_log());

    project
        .run(&["resume", "--raise-budget", "cost=0.01"])
        .expect(2);
    let raised = project.run(&["resume", "--raise-budget", "cost=10"]);
    raised.expect(0);
    assert!(raised.stdout().contains("$10.00"), "{}", raised.stdout());
    project.drive_to_done(2, Duration::from_secs(90));
}

/// The attempt that reaches the fleet budget gives its slot to no queued session: with one
/// slot, the second session never starts (it ran one attempt past the limit at every
/// crossing: the slot went back before the spend was counted).
#[test]
fn the_slot_of_the_attempt_that_reaches_the_fleet_budget_goes_to_no_one() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "*=slow:1");
    let _daemon = project.daemon(&["--fleet-max-cost", "0.01", "--max-parallel", "1"]);
    start_all(&project, &["first", "second"]);
    wait_for(Duration::from_secs(30), "the fleet budget reached", || {
        project.daemon_log().contains("fleet budget reached")
    });
    std::thread::sleep(Duration::from_secs(2));
    let attempts: usize = ["first", "second"]
        .iter()
        .map(|name| {
            let session = project.session(name);
            match session.path("_iterations.jsonl").exists() {
                true => session.jsonl("_iterations.jsonl").len(),
                false => 0,
            }
        })
        .sum();
    let running = project
        .status()
        .iter()
        .filter(|r| r["state"] == "running")
        .count();
    assert_eq!((attempts, running), (1, 0), "{:#?}", project.status());
}

/// A daemon restarted past its fleet budget starts no attempt: what every owned session cost
/// is counted before any slot is granted (the first sessions opened had run new attempts
/// while the others were still being counted).
#[test]
fn a_restart_past_the_fleet_budget_starts_no_attempt() {
    let mut project = Project::new();
    let fleet = ["--fleet-max-cost", "0.05", "--max-parallel", "4"];
    let daemon = project.daemon(&fleet);
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    start_all(&project, &names);
    wait_for(Duration::from_secs(60), "the fleet budget reached", || {
        fleet_reached(&project) && project.status().iter().all(|r| r["state"] != "running")
    });
    // Attempts that ran to their end (the crash below may interrupt one that was starting
    // as the budget was reached; its row, written by the next daemon, is not a new attempt).
    let attempts = |project: &Project| -> usize {
        names
            .iter()
            .map(|n| {
                let rows = project.session(n).path("_iterations.jsonl");
                std::fs::read_to_string(rows).map_or(0, |text| {
                    text.lines()
                        .filter(|row| !row.contains("\"interrupted\""))
                        .count()
                })
            })
            .sum()
    };
    let mut before = attempts(&project);
    wait_for(Duration::from_secs(30), "no attempt ending", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = attempts(&project);
        std::mem::replace(&mut before, now) == now
    });
    daemon.crash();
    let _daemon = project.daemon(&fleet);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(attempts(&project), before, "{}", project.daemon_log());
    assert!(fleet_reached(&project));
    // People were told by the daemon that reached it; the restart tells them nothing new.
    let told = project
        .daemon_log()
        .matches("the fleet budget is reached")
        .count();
    assert_eq!(told, 1, "{}", project.daemon_log());
}

/// A session whose `_state.json` cannot be read when the daemon starts was left out of the
/// fleet's spend: the fleet ran on past its budget. Its cost is counted from its journal.
#[test]
fn a_session_whose_state_cannot_be_read_still_counts_toward_the_fleet_budget() {
    let mut project = Project::new();
    let fleet = ["--fleet-max-cost", "0.05"];
    let daemon = project.daemon(&fleet);
    start_all(&project, &["a", "b"]);
    // Two attempts at $0.0125 each, then each waits for answers: $0.05 in all.
    wait_for(Duration::from_secs(60), "the fleet budget reached", || {
        fleet_reached(&project)
    });
    assert_eq!(daemon.terminate(), Some(0));
    std::fs::write(project.session("a").path("_state.json"), "{\"schema\":1,").unwrap();
    let _daemon = project.daemon(&fleet);
    let status = project.run(&["status"]).stdout();
    assert!(status.contains("fleet budget reached"), "{status}");
    assert!(
        project
            .daemon_log()
            .contains("counted from its _iterations.jsonl"),
        "{}",
        project.daemon_log()
    );
}

/// `status` shows a daemon's session held to the daemon's own default budget, whatever the
/// asking command's settings say (it showed its own: no budget, or another one, beside the
/// daemon's "cost budget reached").
#[test]
fn status_shows_the_budget_the_daemon_holds_its_session_to() {
    let mut project = Project::new();
    project.env("SAMOCODE_MAX_COST", "0.02");
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "b", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("b");
    // Two attempts at $0.0125 each, then it waits for answers, past its $0.02.
    wait_for(Duration::from_secs(30), "the questions", || {
        s.path("_state.json").exists() && s.state()["status"]["for"] == "qa_answers"
    });
    let out = project
        .command(&["status", "b", "--json"])
        .env("SAMOCODE_MAX_COST", "5")
        .output()
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["budget"]["max_cost_usd"], 0.02, "{row}");
    assert_eq!(row["budget"]["left"]["cost_usd"], 0.0, "{row}");
}

/// The time budget counts how long the agents ran, not how far the wall clock moved: a clock
/// stepped a day ahead during a 3-second attempt (a suspended machine, an NTP step) used up a
/// one-hour budget and blocked the session.
#[test]
fn a_wall_clock_jump_during_an_attempt_does_not_spend_the_time_budget() {
    let mut project = Project::new();
    let clock = project.root.join("clock");
    std::fs::write(&clock, "+0").unwrap();
    project
        .env("SAMOCODE_FAKE", "investigation@1=slow:3")
        .env(
            "LD_PRELOAD",
            &super::fixture::faketime_library().display().to_string(),
        )
        .env("FAKETIME_TIMESTAMP_FILE", &clock.display().to_string())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let running = project.track_agents();
    let mut run = project
        .command(&[
            "run",
            "--session",
            "jump",
            "--dive",
            "d",
            "--task",
            "t",
            "--max-time",
            "1h",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the agent to start", || {
        !super::fixture::running_agents(&running).is_empty()
    });
    std::fs::write(&clock, "+1d").unwrap();
    let status = run.wait().unwrap();
    let state = project.session("jump").state();
    assert_eq!(
        (status.code(), &state["status"]["state"]),
        (Some(10), &serde_json::json!("waiting")),
        "{state:#}"
    );
    let seconds = state["agent_seconds"].as_f64().unwrap();
    assert!(seconds < 600.0, "agent time {seconds} s");
}

/// Starts a session of each of `names` on the project's daemon.
fn start_all(project: &Project, names: &[&str]) {
    for name in names {
        project
            .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
            .expect(0);
    }
}

/// Whether `status` says the daemon's fleet budget is reached.
fn fleet_reached(project: &Project) -> bool {
    project
        .run(&["status"])
        .stdout()
        .contains("fleet budget reached")
}

/// `--max-cost` given with a finished session set a budget on it, logged as set, though every
/// other command refuses a done session: nothing is changed, and the words say why.
#[test]
fn budget_flags_for_a_done_session_change_nothing() {
    let project = Project::new();
    project.through_both_gates("over");
    project.run(&["run", "--session", "over"]).expect(0);
    let s = project.session("over");
    assert_eq!(s.state()["status"]["state"], "done");
    let before = s.read("_state.json");
    let run = project.run(&["run", "--session", "over", "--max-cost", "5"]);
    run.expect(2);
    assert!(run.stderr().contains("is done"), "{}", run.stderr());
    assert_eq!(s.read("_state.json"), before);
}
