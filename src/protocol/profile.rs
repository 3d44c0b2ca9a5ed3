//! Model profiles: how strong a model an iteration needs, in four words the plan and the phase
//! table share (light, standard, strong, max).
//!
//! Which concrete model and effort a profile means is configuration (`config.toml`, per
//! provider); which profile an iteration runs with is decided here, from the phase table's
//! default or, in implementation, from the plan phase that holds the next step.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::phase::UnknownWord;

/// How strong a model a piece of work needs, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Mechanical edits, config, docs, running checks.
    Light,
    /// Ordinary feature code and tests.
    Standard,
    /// Tricky logic, concurrency, cross-cutting changes, planning and review.
    Strong,
    /// The hardest reasoning: subtle correctness, security-critical code.
    Max,
}

impl Profile {
    /// Every profile, weakest first.
    pub const ALL: [Profile; 4] = [
        Profile::Light,
        Profile::Standard,
        Profile::Strong,
        Profile::Max,
    ];

    /// The word for this profile in plans and in `config.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Light => "light",
            Profile::Standard => "standard",
            Profile::Strong => "strong",
            Profile::Max => "max",
        }
    }
}

impl FromStr for Profile {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownWord {
                kind: "profile",
                word: s.to_string(),
                expected: "light standard strong max",
            })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The profile named by the plan section that holds the first unticked step of `plan` (the
/// text of a `*-plan-*.md` artifact), if that section or one of its parents names one.
///
/// A section names its profile in its heading, as the planning skill asks:
/// `## Phase 2: storage (profile: strong)`. Headings nest by level, so a profile on a parent
/// heading covers sub-sections that name none. A step is a list item with a checkbox, `- [ ]`
/// (unticked) or `- [x]`. `None` when every step is ticked, there is no step, or the section
/// names no profile or an unknown word: the phase table's default applies then.
pub fn plan_profile(plan: &str) -> Option<Profile> {
    // (heading level, the profile it names) for the headings enclosing the current line.
    let mut sections: Vec<(usize, Option<Profile>)> = Vec::new();
    let mut in_fence = false;
    for line in plan.lines() {
        let line = line.trim_start();
        if line.starts_with("```") || line.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(level) = heading_level(line) {
            sections.retain(|(l, _)| *l < level);
            sections.push((level, named_profile(line)));
            continue;
        }
        if is_unticked_step(line) {
            return sections.iter().rev().find_map(|(_, p)| *p);
        }
    }
    None
}

/// The level of a markdown ATX heading (`## x` is 2), `None` for any other line.
fn heading_level(line: &str) -> Option<usize> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with(' '))).then_some(level)
}

/// The profile a heading names as `profile: WORD` (any case, backticks or emphasis allowed).
/// Every occurrence of the word is tried, so that a title that names the word itself ("user
/// profile page (profile: max)") still gives the profile its `profile:` names.
fn named_profile(heading: &str) -> Option<Profile> {
    let lower = heading.to_ascii_lowercase();
    lower.match_indices("profile").find_map(|(at, word)| {
        let rest = lower[at + word.len()..]
            .trim_start_matches(['*', '_', '`'])
            .trim_start();
        let rest = rest.strip_prefix(':')?;
        let named: String = rest
            .trim_start_matches(|c: char| c.is_whitespace() || "*_`".contains(c))
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        named.parse().ok()
    })
}

fn is_unticked_step(line: &str) -> bool {
    let Some(rest) = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("+ "))
    else {
        return false;
    };
    rest.trim_start().starts_with("[ ]")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
# Plan: JWT login

Goal: log in. Requirements: 03-14-09:00-requirements-jwt.md.

## Phase 1: scaffolding (profile: light)
- [x] 1.1 add the module — files: src/auth.rs; tests: none
- [x] 1.2 wire it

## Phase 2: tokens (profile: strong)
- [ ] 2.1 sign tokens
- [ ] 2.2 verify tokens

## Phase 3: docs (profile: light)
- [ ] 3.1 README

## Verification
- [ ] not a step of any phase
";

    #[test]
    fn the_section_of_the_first_unticked_step_wins() {
        assert_eq!(plan_profile(PLAN), Some(Profile::Strong));
        let later = PLAN
            .replace("- [ ] 2.1", "- [x] 2.1")
            .replace("- [ ] 2.2", "- [X] 2.2");
        assert_eq!(plan_profile(&later), Some(Profile::Light));
    }

    #[test]
    fn no_profile_when_done_unnamed_or_unknown() {
        let done = "## Phase 1 (profile: max)\n- [x] 1.1 a\n";
        assert_eq!(plan_profile(done), None);
        assert_eq!(plan_profile("## Phase 1: a\n- [ ] 1.1 a\n"), None);
        assert_eq!(
            plan_profile("## Phase 1 (profile: huge)\n- [ ] 1.1\n"),
            None
        );
        assert_eq!(plan_profile(""), None);
    }

    #[test]
    fn parents_cover_children_and_siblings_reset() {
        let nested = "# Plan (profile: max)\n## Phase 1\n### Part a\n* [ ] 1.1 x\n";
        assert_eq!(plan_profile(nested), Some(Profile::Max));
        let sibling = "## Phase 1 (profile: light)\n- [x] 1.1\n## Phase 2\n- [ ] 2.1\n";
        assert_eq!(plan_profile(sibling), None);
    }

    #[test]
    fn heading_spellings_and_code_fences() {
        for heading in [
            "## Phase 1: x (Profile: Strong)",
            "## Phase 1 — **profile:** `strong`",
            "### Phase 1 [profile:strong]",
            // The word in the title too: the profile named after it still counts.
            "## Phase 1: user profile page (profile: strong)",
            "## Phase 1: Profiles and profilers (profile: strong)",
        ] {
            let plan = format!("{heading}\n- [ ] 1.1 step\n");
            assert_eq!(plan_profile(&plan), Some(Profile::Strong), "{heading}");
        }
        let fenced =
            "## Phase 1 (profile: light)\n```\n## Phase 9 (profile: max)\n```\n- [ ] 1.1\n";
        assert_eq!(plan_profile(fenced), Some(Profile::Light));
        assert_eq!(heading_level("#hashtag"), None);
    }

    #[test]
    fn words_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("Max".parse::<Profile>().is_err());
    }
}
