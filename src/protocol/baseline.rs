//! The tracked files of a worktree at one moment, and what changed since: the guard of the
//! read-only testing phase. The worker takes a [`Baseline`] before every attempt of such a
//! phase (recorded in `_state.json` with the attempt, so an interrupted attempt is checked too)
//! and compares after it, whatever the attempt's end.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// HEAD and the status of the tracked files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub head: String,
    /// `git status --porcelain --untracked-files=no`: one line per changed tracked file.
    pub changes: String,
    /// The contents (`git hash-object`) of the changed tracked files that are there, by path:
    /// a file changed before the attempt and changed again keeps its status line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contents: BTreeMap<String, String>,
}

/// What an attempt changed, and how a person undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub worktree: PathBuf,
    /// HEAD before, when the attempt moved it.
    pub moved_from: Option<String>,
    /// Tracked files whose status changed.
    pub paths: Vec<String>,
    /// Tracked files changed before the attempt and changed again by it: a checkout would
    /// lose the earlier changes too, so no undo is offered for them.
    pub changed_again: Vec<String>,
    /// Why git could not read the worktree after the attempt (its index broken, its HEAD
    /// gone): what changed is not known, so the rule is not taken to hold.
    pub unreadable: Option<String>,
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
        // A file with changes of its own from before the attempt is never offered a checkout
        // (it would lose them), whether its status line changed (staged since) or only its
        // contents did.
        // A file whose status line changed is named by its old and its new line: once.
        let mut seen = std::collections::BTreeSet::new();
        let (mut changed_again, paths): (Vec<String>, Vec<String>) = paths
            .into_iter()
            .filter(|path| seen.insert(path.clone()))
            .partition(|path| self.contents.contains_key(path));
        changed_again.extend(
            self.contents
                .iter()
                .filter(|(path, before)| {
                    !changed_again.contains(path)
                        && after.contents.get(*path).is_some_and(|now| now != *before)
                })
                .map(|(path, _)| path.clone())
                .collect::<Vec<_>>(),
        );
        let moved_from = (self.head != after.head).then(|| self.head.clone());
        (moved_from.is_some() || !paths.is_empty() || !changed_again.is_empty()).then_some(
            Mutation {
                worktree,
                moved_from,
                paths,
                changed_again,
                unreadable: None,
            },
        )
    }

    /// The paths of the changed tracked files that are there (not deleted), whose contents
    /// [`Baseline::contents`] records.
    pub fn present_paths(changes: &str) -> Vec<String> {
        changes
            .lines()
            .filter(|line| {
                let status = line.as_bytes();
                status.len() > 3 && status[0] != b'D' && status[1] != b'D'
            })
            .filter_map(path_of)
            .collect()
    }
}

/// The path of a porcelain status line (`XY path`, or `XY old -> new` for a rename), as it is
/// on the disk: git quotes a path holding a quote, a backslash, a control character or a byte
/// past ASCII as a C string (`"caf\303\251.txt"`), which is read back here.
fn path_of(line: &str) -> Option<String> {
    let path = line.get(3..)?.trim_end_matches(['\n', '\r']);
    // A rename's new path.
    let path = path.rsplit(" -> ").next().unwrap_or(path);
    let path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => unquote(quoted),
        None => path.to_string(),
    };
    (!path.is_empty()).then_some(path)
}

/// A C-quoted path's bytes (git's `\"`, `\\`, `\t`, `\n`, and `\ooo` octal escapes).
fn unquote(quoted: &str) -> String {
    let mut bytes = Vec::with_capacity(quoted.len());
    let mut rest = quoted.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let Some((&e, tail)) = rest.split_first() else {
            bytes.push(b);
            break;
        };
        rest = tail;
        match e {
            b'a' => bytes.push(7),
            b'b' => bytes.push(8),
            b't' => bytes.push(b'\t'),
            b'n' => bytes.push(b'\n'),
            b'v' => bytes.push(11),
            b'f' => bytes.push(12),
            b'r' => bytes.push(b'\r'),
            b'0'..=b'7' => {
                let digits: Vec<u8> = std::iter::once(e)
                    .chain(rest.iter().copied().take(2))
                    .take_while(|d| (b'0'..=b'7').contains(d))
                    .collect();
                rest = &rest[digits.len() - 1..];
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                bytes.push(value as u8);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Mutation {
    /// The worktree at `worktree` could not be read after the attempt, for `why`.
    pub fn unreadable(worktree: PathBuf, why: String) -> Mutation {
        Mutation {
            worktree,
            moved_from: None,
            paths: Vec::new(),
            changed_again: Vec::new(),
            unreadable: Some(why),
        }
    }

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
        if let Some(why) = &self.unreadable {
            return write!(
                f,
                "the testing phase may only read the worktree, and git cannot read it after the attempt to check that ({why}); put it right (`git -C {} status` shows what is wrong), look at what the attempt changed, then `samocode resume`",
                shell_word(&self.worktree.to_string_lossy())
            );
        }
        f.write_str("the testing phase changed the worktree, which it may only read")?;
        if let Some(head) = &self.moved_from {
            write!(f, "; HEAD moved from {}", head.get(..10).unwrap_or(head))?;
        }
        if !self.paths.is_empty() {
            write!(f, "; changed: {}", self.paths.join(", "))?;
        }
        if !self.changed_again.is_empty() {
            write!(
                f,
                "; changed again, with uncommitted changes of their own from before the attempt: {} (look at `git -C {} diff -- {}`: a checkout would lose those as well)",
                self.changed_again.join(", "),
                shell_word(&self.worktree.to_string_lossy()),
                self.changed_again
                    .iter()
                    .map(|p| shell_word(p))
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
        }
        match self.undo() {
            undo if undo.is_empty() => {
                f.write_str("; put back what is unwanted, then `samocode resume`")
            }
            undo => write!(
                f,
                "; look at the change, undo it with `{undo}` if it is unwanted, then `samocode resume`"
            ),
        }
    }
}

use super::shell_word;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_git_quotes_are_read_back_as_they_are_on_the_disk() {
        assert_eq!(path_of(" M src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(path_of(" M a b.txt").as_deref(), Some("a b.txt"));
        assert_eq!(
            path_of(r#" M "caf\303\251.txt""#).as_deref(),
            Some("café.txt")
        );
        assert_eq!(path_of(r#" M "q\"x.txt""#).as_deref(), Some("q\"x.txt"));
        assert_eq!(path_of(r#" M "tab\tx.txt""#).as_deref(), Some("tab\tx.txt"));
        assert_eq!(
            path_of(r#"R  old.txt -> "n\303\251w.txt""#).as_deref(),
            Some("néw.txt")
        );
        assert_eq!(
            path_of(r#"R  "\303\251" -> plain"#).as_deref(),
            Some("plain")
        );
    }

    fn at(head: &str, changes: &str) -> Baseline {
        Baseline {
            head: head.into(),
            changes: changes.into(),
            contents: BTreeMap::new(),
        }
    }

    /// A file changed before the attempt and changed again keeps its status line: its
    /// contents tell; no checkout is offered for it (it would lose the earlier changes).
    #[test]
    fn a_file_changed_again_is_told_by_its_contents() {
        let mut before = at("aaaa", " M notes.md\n D gone.md\n");
        assert_eq!(Baseline::present_paths(&before.changes), ["notes.md"]);
        before.contents.insert("notes.md".into(), "1111".into());
        let mut after = before.clone();
        assert_eq!(before.mutation(&after, "/wt".into()), None);
        after.contents.insert("notes.md".into(), "2222".into());
        let m = before.mutation(&after, "/wt".into()).unwrap();
        assert_eq!(m.changed_again, ["notes.md"]);
        assert!(m.paths.is_empty() && m.undo().is_empty());
        // Staged since (its status line changed too): still no checkout for it.
        let staged = at("aaaa", "M  notes.md\n D gone.md\n");
        let m = before.mutation(&staged, "/wt".into()).unwrap();
        assert_eq!(m.changed_again, ["notes.md"]);
        assert!(!m.undo().contains("notes.md"), "{}", m.undo());
        let text = m.to_string();
        assert!(
            text.contains("changed again") && text.contains("git -C /wt diff -- notes.md"),
            "{text}"
        );
        assert!(!text.contains("checkout --"), "{text}");
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
