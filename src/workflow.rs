//! The agent-facing texts, compiled into the binary so that samocode runs the same from any
//! directory: `workflow.md` (the iteration contract), the skills under `skills/`, and the Claude
//! Code slash commands under `commands/` (which `samocode install` copies when there is no
//! checkout to link to).

/// `workflow.md`: read by the agent at the top of every iteration.
pub const WORKFLOW: &str = include_str!("../workflow.md");

/// Every skill as (name, SKILL.md text).
pub const SKILLS: &[(&str, &str)] = &[
    (
        "investigation",
        include_str!("../skills/investigation/SKILL.md"),
    ),
    (
        "task-definition",
        include_str!("../skills/task-definition/SKILL.md"),
    ),
    ("planning", include_str!("../skills/planning/SKILL.md")),
    (
        "implementation",
        include_str!("../skills/implementation/SKILL.md"),
    ),
    ("testing", include_str!("../skills/testing/SKILL.md")),
    ("quality", include_str!("../skills/quality/SKILL.md")),
    ("summary", include_str!("../skills/summary/SKILL.md")),
    (
        "session-management",
        include_str!("../skills/session-management/SKILL.md"),
    ),
    (
        "samocode-run",
        include_str!("../skills/samocode-run/SKILL.md"),
    ),
];

/// Every slash command as (name, text of `commands/<name>.md`).
pub const COMMANDS: &[(&str, &str)] = &[
    ("cleanup", include_str!("../commands/cleanup.md")),
    ("create-plan", include_str!("../commands/create-plan.md")),
    ("dive", include_str!("../commands/dive.md")),
    ("do", include_str!("../commands/do.md")),
    ("do2", include_str!("../commands/do2.md")),
    ("dop", include_str!("../commands/dop.md")),
    ("dop2", include_str!("../commands/dop2.md")),
    ("multi-review", include_str!("../commands/multi-review.md")),
    (
        "session-archive",
        include_str!("../commands/session-archive.md"),
    ),
    (
        "session-continue",
        include_str!("../commands/session-continue.md"),
    ),
    (
        "session-start",
        include_str!("../commands/session-start.md"),
    ),
    ("session-sync", include_str!("../commands/session-sync.md")),
    ("summary", include_str!("../commands/summary.md")),
    ("task", include_str!("../commands/task.md")),
];

/// The SKILL.md text of `name`.
pub fn skill(name: &str) -> Option<&'static str> {
    SKILLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Phase;

    #[test]
    fn every_agent_phase_has_its_instructions() {
        for phase in Phase::AGENT {
            let name = phase.rules().skill;
            let text = skill(name).unwrap_or_else(|| panic!("no skill {name} for {phase}"));
            assert!(text.starts_with("---\n"), "{name} has no front matter");
            assert!(
                text.contains(&format!("name: {name}\n")),
                "{name} front matter"
            );
            assert!(text.contains("description:"), "{name} description");
        }
    }
}
