//! Model profiles: each phase runs with its profile's model, implementation with the profile of
//! the plan phase that holds its next step, and CLAUDE_MODEL still wins when set.

use super::fixture::Project;

const CONFIG: &str = r#"
[profiles.claude.light]
model = "small-model"

[profiles.claude.standard]
model = "mid-model"
effort = "medium"

[profiles.claude.strong]
model = "big-model"
effort = "high"
"#;

fn configure(project: &Project) {
    let dir = project.root.join("home/.config/samocode");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), CONFIG).unwrap();
}

#[test]
fn each_phase_runs_with_its_profile_and_implementation_with_its_plan_phase() {
    let project = Project::new();
    configure(&project);
    project.through_both_gates("prof");
    project.run(&["run", "--session", "prof"]).expect(0);

    let rows = project.session("prof").jsonl("_iterations.jsonl");
    let seen: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap(),
                r["profile"].as_str().unwrap(),
                r["model"].as_str().unwrap(),
                r["effort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("investigation", "standard", "mid-model", "medium"),
            ("requirements", "standard", "mid-model", "medium"),
            ("requirements", "standard", "mid-model", "medium"),
            ("planning", "strong", "big-model", "high"),
            // The plan: phase 1 (profile: light) holds step 1.1, phase 2 (profile: strong) the rest.
            ("implementation", "light", "small-model", "low"),
            ("implementation", "strong", "big-model", "high"),
            ("implementation", "strong", "big-model", "high"),
            ("testing", "light", "small-model", "low"),
            ("quality", "strong", "big-model", "high"),
            ("done", "light", "small-model", "low"),
        ]
    );
    // The scripted agent reports the model it was given, so no second model is recorded.
    assert!(rows.iter().all(|r| r.get("reported_model").is_none()));
    let log = project.session("prof").read("session.log");
    assert!(log.contains("(profile strong from "), "{log}");
}

#[test]
fn an_explicit_claude_model_wins_over_the_profile() {
    let mut project = Project::new();
    configure(&project);
    project.env("CLAUDE_MODEL", "pinned-model");
    project
        .run(&[
            "run",
            "--session",
            "pin",
            "--dive",
            "d",
            "--task",
            "t",
            "--once",
        ])
        .expect(0);
    let rows = project.session("pin").jsonl("_iterations.jsonl");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["model"], "pinned-model");
    assert_eq!(rows[0]["profile"], "standard");
    assert_eq!(rows[0]["effort"], "medium");
}
