//! Which model profile an attempt runs with: the phase table's default, or in implementation the
//! profile of the plan phase that holds the next step of the newest plan artifact.
//!
//! The decision is pure ([`crate::protocol::profile::plan_profile`]); this file only finds and
//! reads the plan.

use std::path::{Path, PathBuf};

use crate::protocol::artifact;

use super::untrusted::Links;
use crate::protocol::Phase;
use crate::protocol::Profile;
use crate::protocol::profile::plan_profile;

/// The profile of an attempt and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePick {
    pub profile: Profile,
    /// The plan artifact that named it; `None` when it is the phase's default.
    pub plan: Option<String>,
}

/// The profile of the next attempt in `phase` of the session in `session_dir`.
pub fn pick(phase: Phase, session_dir: &Path) -> ProfilePick {
    let default = ProfilePick {
        profile: phase.rules().profile,
        plan: None,
    };
    if phase != Phase::Implementation {
        return default;
    }
    let Some(plan) = newest_plan(session_dir) else {
        return default;
    };
    // The plan is the agent's file: read as any session file is, and ignored when unusable.
    let named = super::untrusted::read_text(&plan, super::store::TEXT_LIMIT, Links::Refuse)
        .ok()
        .flatten()
        .and_then(|text| plan_profile(&text));
    match named {
        Some(profile) => ProfilePick {
            profile,
            plan: plan.file_name().map(|n| n.to_string_lossy().into_owned()),
        },
        None => default,
    }
}

fn newest_plan(session_dir: &Path) -> Option<PathBuf> {
    newest_artifact(session_dir, "plan")
}

/// The session's newest artifact of `kind` (`plan`: `MM-DD-HH:MM-plan-<slug>.md`), ordered by
/// the time in its name from the day the session was created. Not the modification time:
/// ticking steps rewrites an older plan too. Of two names of one minute, the one made later
/// ([`made_at`]).
pub fn newest_artifact(session_dir: &Path, kind: &str) -> Option<PathBuf> {
    let files: Vec<String> = std::fs::read_dir(session_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let created = session_dir
        .file_name()
        .and_then(|name| artifact::created(&name.to_string_lossy()));
    artifact::newest_by_made(files.iter().map(String::as_str), kind, created, |file| {
        made_at(&session_dir.join(file))
    })
    .map(|file| session_dir.join(file))
}

/// When the file at `path` was made: its birth time, or where the filesystem keeps none its
/// last change. Orders two artifacts whose names share a minute (a plan rejected and its
/// revision written in that minute under another slug).
pub fn made_at(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.created().or_else(|_| meta.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementation_follows_the_newest_plan_and_other_phases_their_default() {
        let dir = tempfile::tempdir().unwrap();
        let pick_now = |phase| pick(phase, dir.path());
        assert_eq!(pick_now(Phase::Implementation).profile, Profile::Standard);
        std::fs::write(
            dir.path().join("03-14-09:05-plan-a.md"),
            "## Phase 1 (profile: max)\n- [ ] 1.1 x\n",
        )
        .unwrap();
        let picked = pick_now(Phase::Implementation);
        assert_eq!(picked.profile, Profile::Max);
        assert_eq!(picked.plan.as_deref(), Some("03-14-09:05-plan-a.md"));
        assert_eq!(pick_now(Phase::Testing).profile, Profile::Light);
        assert_eq!(pick_now(Phase::Planning).profile, Profile::Strong);
        // A newer plan is in force, even when it names no profile.
        std::fs::write(
            dir.path().join("03-14-10:00-plan-b.md"),
            "## Phase 1\n- [ ] 1.1 x\n",
        )
        .unwrap();
        assert_eq!(
            pick_now(Phase::Implementation),
            ProfilePick {
                profile: Profile::Standard,
                plan: None
            }
        );
    }

    /// A requirements artifact whose slug says "plan", and a plan revised after the new year,
    /// do not hide the plan in force.
    #[test]
    fn the_plan_in_force_is_the_newest_of_its_kind_across_the_new_year() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("26-12-30-login");
        std::fs::create_dir(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "12-31-23:58-plan-login.md",
            "## Phase 1 (profile: max)\n- [ ] 1.1 x\n",
        );
        write(
            "01-01-00:03-plan-login.md",
            "## Phase 1 (profile: light)\n- [ ] 1.1 x\n",
        );
        write(
            "01-01-00:03-requirements-meal-plan-export.md",
            "# Requirements\n",
        );
        let picked = pick(Phase::Implementation, &dir);
        assert_eq!(picked.profile, Profile::Light);
        assert_eq!(picked.plan.as_deref(), Some("01-01-00:03-plan-login.md"));
    }

    /// A plan rejected and revised within one minute, the revision under another slug: the
    /// revision is in force, though its name sorts first.
    #[test]
    fn a_plan_revised_in_the_minute_of_the_rejected_one_is_in_force() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("26-12-07-login");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("12-07-19:05-plan-zeta.md"),
            "## Phase 1 (profile: max)\n- [ ] 1.1 x\n",
        )
        .unwrap();
        // Past the filesystem clock's tick, so that the two files' times differ.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(
            dir.join("12-07-19:05-plan-alpha.md"),
            "## Phase 1 (profile: light)\n- [ ] 1.1 x\n",
        )
        .unwrap();
        let picked = pick(Phase::Implementation, &dir);
        assert_eq!(picked.plan.as_deref(), Some("12-07-19:05-plan-alpha.md"));
        assert_eq!(picked.profile, Profile::Light);
        assert_eq!(
            newest_artifact(&dir, "plan"),
            Some(dir.join("12-07-19:05-plan-alpha.md"))
        );
    }
}
