//! Budgets through the real binary: `run --max-cost` blocks the session with the figures (exit
//! 11), a plain `resume` is refused, `resume --raise-budget` lets the next `run` finish, and
//! `status` shows the budget left and the cost per phase. Bad budget values are usage errors.

use super::fixture::Project;

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
            .contains("cost budget reached: $0.03 of $0.02"),
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
        text.contains("cost/phase:  investigation $0.01, requirements $0.01"),
        "{text}"
    );
    assert!(
        text.contains("budget:      cost $0.02 ($0.00 left), iterations none, time none"),
        "{text}"
    );

    let refused = project.run(&["resume", "capped"]);
    refused.expect(2);
    assert!(
        refused.stderr().contains("--raise-budget cost=N"),
        "{}",
        refused.stderr()
    );
    project
        .run(&["resume", "capped", "--raise-budget", "cost=0.01"])
        .expect(2);
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
}
