//! The tracked files of a worktree at one moment, and what changed since: the guard of the
//! read-only testing phase. The worker takes a [`Baseline`] before every attempt of such a
//! phase (recorded in `_state.json` with the attempt, so an interrupted attempt is checked too)
//! and compares after it, whatever the attempt's end.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// HEAD and the status of the tracked files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub head: String,
    /// `git status --porcelain --untracked-files=no`: one line per changed tracked file.
    pub changes: String,
}

/// What an attempt changed, and how a person undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub worktree: PathBuf,
    /// HEAD before, when the attempt moved it.
    pub moved_from: Option<String>,
    /// Tracked files whose status changed.
    pub paths: Vec<String>,
}

impl Baseline {
    /// What differs in `after`; `None` when nothing tracked changed.
    pub fn mutation(&self, after: &Baseline, worktree: PathBuf) -> Option<Mutation> {
        let before: Vec<&str> = self.changes.lines().collect();
        let paths: Vec<String> = after
            .changes
            .lines()
            .filter(|line| !before.contains(line))
            .chain(
                // A file that was changed before and was restored since changed too.
                before
                    .iter()
                    .copied()
                    .filter(|line| !after.changes.lines().any(|l| l == *line)),
            )
            .filter_map(path_of)
            .collect();
        let moved_from = (self.head != after.head).then(|| self.head.clone());
        (moved_from.is_some() || !paths.is_empty()).then_some(Mutation {
            worktree,
            moved_from,
            paths,
        })
    }
}

/// The path of a porcelain status line (`XY path`, or `XY old -> new` for a rename).
fn path_of(line: &str) -> Option<String> {
    let path = line.get(3..)?.trim();
    let path = path.rsplit(" -> ").next().unwrap_or(path);
    (!path.is_empty()).then(|| path.trim_matches('"').to_string())
}

impl Mutation {
    /// The exact commands that put the worktree back as it was.
    pub fn undo(&self) -> String {
        let dir = shell_word(&self.worktree.to_string_lossy());
        let mut steps = Vec::new();
        if let Some(head) = &self.moved_from {
            steps.push(format!("git -C {dir} reset --keep {head}"));
        }
        if !self.paths.is_empty() {
            let paths: Vec<String> = self.paths.iter().map(|p| shell_word(p)).collect();
            steps.push(format!("git -C {dir} checkout -- {}", paths.join(" ")));
        }
        steps.join(" && ")
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the testing phase changed the worktree, which it may only read")?;
        if let Some(head) = &self.moved_from {
            write!(f, "; HEAD moved from {}", head.get(..10).unwrap_or(head))?;
        }
        if !self.paths.is_empty() {
            write!(f, "; changed: {}", self.paths.join(", "))?;
        }
        write!(
            f,
            "; look at the change, undo it with `{}` if it is unwanted, then `samocode resume`",
            self.undo()
        )
    }
}

fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(head: &str, changes: &str) -> Baseline {
        Baseline {
            head: head.into(),
            changes: changes.into(),
        }
    }

    #[test]
    fn an_edit_names_the_paths_and_the_exact_undo() {
        let before = at("aaaa", " M notes.md\n");
        let after = at("aaaa", " M notes.md\n M README.md\n M my file.txt\n");
        let m = before.mutation(&after, "/wt/s".into()).unwrap();
        assert_eq!(m.paths, ["README.md", "my file.txt"]);
        assert_eq!(m.undo(), "git -C /wt/s checkout -- README.md 'my file.txt'");
        assert!(m.to_string().contains("changed: README.md, my file.txt"));
        assert_eq!(before.mutation(&before.clone(), "/wt".into()), None);
    }

    #[test]
    fn a_commit_is_undone_by_resetting_to_the_old_head() {
        let before = at("0123456789abcdef", "");
        let after = at("fedcba9876543210", "");
        let m = before.mutation(&after, "/wt".into()).unwrap();
        assert_eq!(m.undo(), "git -C /wt reset --keep 0123456789abcdef");
        // A change restored by the attempt is a change too.
        let restored = at("aaaa", " M a.txt\n").mutation(&at("aaaa", ""), "/wt".into());
        assert_eq!(restored.unwrap().paths, ["a.txt"]);
    }
}
