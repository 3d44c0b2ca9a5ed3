//! The agent-facing texts, compiled into the binary so that samocode runs the same from any
//! directory: `workflow.md` (the iteration contract) and the skills under `skills/`.

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
