//! The agent-facing texts against the code: `workflow.md`, the skills and the slash commands must
//! name exactly the phases, statuses, waits and needs of the phase table, and every reference
//! between them must lead somewhere.

use std::collections::BTreeSet;
use std::path::Path;

use samocode::protocol::{Needs, Phase, Signal, Status, WaitFor};
use samocode::workflow::{self, COMMANDS, SKILLS, WORKFLOW};

/// The lines of `text` from the heading `title` to the next heading of the same level.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let level = title.bytes().take_while(|b| *b == b'#').count();
    let start = text
        .find(&format!("\n{title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?}"))
        + 1;
    let body = &text[start + title.len() + 1..];
    let end = body
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let hashes = body[i..].bytes().take_while(|b| *b == b'#').count();
            hashes > 0 && hashes <= level && body[i + hashes..].starts_with(' ')
        })
        .unwrap_or(body.len());
    &body[..end]
}

/// The words separated by commas in one table cell, without backticks; `-` is none, and a
/// remark such as "only through `approve`" is not a word.
fn words(cell: &str) -> BTreeSet<String> {
    cell.split(',')
        .map(|w| w.trim().trim_matches('`'))
        .filter(|w| !w.is_empty() && *w != "-" && !w.starts_with("only "))
        .map(|w| w.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn names<T: Copy>(items: &[T], name: impl Fn(T) -> &'static str) -> BTreeSet<String> {
    items.iter().map(|i| name(*i).to_string()).collect()
}

#[test]
fn the_workflow_phase_table_is_the_phase_table() {
    let table = section(WORKFLOW, "## Phases");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| phase "))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let listed: Vec<Phase> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(
        listed,
        Phase::ALL,
        "workflow.md lists every phase, in order"
    );
    for row in &rows {
        let phase: Phase = row[0].parse().unwrap();
        let rules = phase.rules();
        assert_eq!(
            words(row[2]),
            names(rules.statuses, Status::name),
            "statuses of {phase}"
        );
        assert_eq!(
            words(row[3]),
            names(rules.next, Phase::name),
            "may move to, from {phase}"
        );
        assert_eq!(
            row[3].contains("approve"),
            rules.gated_next.is_some(),
            "gate of {phase}"
        );
        assert_eq!(
            words(row[4]),
            names(rules.waits, WaitFor::name),
            "waits of {phase}"
        );
        let max = if phase == Phase::Init {
            "-".to_string()
        } else {
            rules.max_iterations.to_string()
        };
        assert_eq!(row[5], max, "max iterations of {phase}");
    }
}

#[test]
fn the_signal_section_names_every_wait_and_need_where_it_is_allowed() {
    let signal = section(WORKFLOW, "## The signal `_signal.json`");
    // "`qa_answers` only in requirements, `plan_approval` only in planning, ..."
    let waits_line = signal
        .lines()
        .find(|l| l.starts_with("- `waiting`"))
        .unwrap();
    let mut waits = BTreeSet::new();
    for part in waits_line.split(", ") {
        if let Some((word, phase)) = part.split_once("` only in ") {
            let wait: WaitFor = word.rsplit('`').next().unwrap().parse().unwrap();
            let phase: Phase = phase.trim_end_matches('.').parse().unwrap();
            assert!(phase.rules().waits.contains(&wait), "{wait} in {phase}");
            waits.insert(wait.name().to_string());
        }
    }
    let all_waits = [
        WaitFor::QaAnswers,
        WaitFor::PlanApproval,
        WaitFor::HumanAction,
    ];
    assert_eq!(waits, names(&all_waits, WaitFor::name));

    let needs_line = signal
        .lines()
        .find(|l| l.starts_with("- `blocked`"))
        .unwrap();
    let listed = words(
        needs_line
            .split("one of ")
            .nth(1)
            .unwrap()
            .trim_end_matches('.'),
    );
    let all_needs = [
        Needs::HumanDecision,
        Needs::Clarification,
        Needs::ErrorResolution,
        Needs::Environment,
    ];
    assert_eq!(listed, names(&all_needs, Needs::name));

    // Every example is a signal some agent phase accepts, and every status has an example.
    let mut statuses = BTreeSet::new();
    for example in signal.lines().filter(|l| l.starts_with("{\"status\"")) {
        let parsed = Signal::parse(example).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(
            Phase::AGENT.iter().any(|p| parsed.validate(*p).is_ok()),
            "no phase accepts {example}"
        );
        statuses.insert(parsed.status.name().to_string());
    }
    let all_statuses = [
        Status::Continue,
        Status::Waiting,
        Status::Blocked,
        Status::Done,
    ];
    assert_eq!(statuses, names(&all_statuses, Status::name));
}

#[test]
fn every_agent_phase_has_its_skill_and_every_skill_is_well_formed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for phase in Phase::AGENT {
        let skill = phase.rules().skill;
        assert!(
            workflow::skill(skill).is_some(),
            "{phase}: no skill {skill}"
        );
        // workflow.md's guidance names the same skill: "**testing** (skill: testing)".
        assert!(
            WORKFLOW.contains(&format!("**{phase}** (skill: {skill})")),
            "workflow.md guidance for {phase}"
        );
    }
    for (name, text) in SKILLS {
        let front = text
            .strip_prefix("---\n")
            .and_then(|t| t.split_once("\n---\n"))
            .unwrap_or_else(|| panic!("{name}: no front matter"))
            .0;
        assert!(
            front.lines().any(|l| l == format!("name: {name}")),
            "{name}"
        );
        assert!(
            front
                .lines()
                .any(|l| l.starts_with("description: Use ") && l.len() > 40),
            "{name}: description"
        );
    }
    let on_disk = |sub: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.trim_end_matches(".md").to_string()
            })
            .collect()
    };
    assert_eq!(on_disk("skills"), names(SKILLS, |(n, _)| n), "skills/");
    assert_eq!(
        on_disk("commands"),
        names(COMMANDS, |(n, _)| n),
        "commands/"
    );
}

#[test]
fn skill_signal_examples_are_accepted_in_their_phase() {
    for phase in Phase::AGENT {
        let text = workflow::skill(phase.rules().skill).unwrap();
        let examples: Vec<&str> = section(text, "## Signals")
            .split('`')
            .filter(|s| s.starts_with("{\"status\""))
            .collect();
        assert!(!examples.is_empty(), "{phase}: no signal examples");
        for example in examples {
            // Placeholders stand for a real reason and need.
            let concrete = example.replace("\"needs\": \"...\"", "\"needs\": \"environment\"");
            let signal = Signal::parse(&concrete).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert!(
                signal.validate(phase).is_ok(),
                "{phase} rejects its own example {example}"
            );
        }
    }
}

#[test]
fn every_command_follows_a_skill_that_exists() {
    for (name, text) in COMMANDS {
        assert!(
            text.starts_with("---\ndescription: "),
            "{name}: front matter"
        );
        let skill = text
            .split("Follow the `")
            .nth(1)
            .and_then(|rest| rest.split_once("` skill"))
            .unwrap_or_else(|| panic!("{name}: no \"Follow the `<skill>` skill\""))
            .0;
        let skill_text = workflow::skill(skill)
            .unwrap_or_else(|| panic!("{name}: follows a missing skill {skill}"));
        // "section \"Archive a session\"" must be a section of that skill.
        if let Some(rest) = text.split("section \"").nth(1) {
            let title = rest.split('"').next().unwrap();
            assert!(
                skill_text.contains(&format!("\n## {title}\n")),
                "{name}: {skill} has no section {title:?}"
            );
        }
        assert!(text.contains("$ARGUMENTS"), "{name}: takes no arguments");
    }
}

#[test]
fn the_interactive_skill_maps_phases_to_their_skills() {
    let text = workflow::skill("session-management").unwrap();
    for phase in Phase::AGENT {
        let mapping = format!("{phase} → `{}`", phase.rules().skill);
        assert!(text.contains(&mapping), "session-management: {mapping}");
    }
}

#[test]
fn the_context_lines_and_sections_workflow_md_names_are_the_ones_the_worker_writes() {
    use samocode::protocol::SessionState;
    use samocode::session::context::{ContextInput, header_value, render};

    let now = jiff::Timestamp::now();
    let mut state = SessionState::new("26-11-24-x", "dive", "task", now);
    state.enter_phase(Phase::Planning);
    state.iteration = 4;
    state.phase_iteration = 1;
    state.attempt = 2;
    state.last_rejection = Some("no signal".into());
    state.feedback = Some("split step 2".into());
    state.last_failure = Some("attempt 1 failed: the agent passed its time limit".into());
    state.guidance.push(samocode::protocol::state::Guidance {
        text: "use the existing middleware".into(),
        at: now,
    });
    let text = render(&ContextInput {
        state: &state,
        session_dir: Path::new("/s/26-11-24-x"),
        workdir: Path::new("/w/26-11-24-x"),
        time_limit: std::time::Duration::from_secs(60),
        now,
        memory: None,
    });
    // The paragraph that describes the context, not the later ones about `_overview.md`.
    let described = section(WORKFLOW, "## The iteration contract")
        .split("\n\n")
        .find(|p| p.contains("The context below"))
        .unwrap();
    let quoted: Vec<&str> = described.split('`').skip(1).step_by(2).collect();
    let keys: Vec<&str> = quoted
        .iter()
        .filter_map(|q| q.strip_suffix(':'))
        .filter(|k| k.chars().next().is_some_and(char::is_uppercase))
        .collect();
    assert!(keys.len() >= 8, "{keys:?}");
    for key in keys {
        assert!(
            header_value(&text, key).is_some(),
            "workflow.md names {key:?}"
        );
    }
    let sections: Vec<&&str> = quoted.iter().filter(|q| q.starts_with("## ")).collect();
    assert!(sections.len() >= 4, "{sections:?}");
    for title in sections {
        assert!(text.contains(&format!("\n{title}\n")), "no {title:?}");
    }
}
