//! The project file `.samocode` (PROTOCOL.md section 1): `KEY=VALUE` lines, `#` comments, `~`
//! expanded, paths resolved against the file's folder. Every line is checked and every
//! problem reported: a line that is not `KEY=VALUE`, a key it does not know (with the nearest
//! known one), a key given twice, a directory that does not exist, and a `BASE_BRANCH` or
//! `BRANCH_PREFIX` git would refuse or read as an option.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::file::CONFIG_LIMIT;
use super::values::nearest;
use super::{ConfigError, Problems, Project, Sources, absolute, expand_home};
use crate::session::name::check_ref;
use crate::session::untrusted::{self, Links};

pub(super) const KEYS: [&str; 5] = [
    "MAIN_REPO",
    "WORKTREES",
    "SESSIONS",
    "BASE_BRANCH",
    "BRANCH_PREFIX",
];

/// Reads the project file at `path`; `None` when anything in it is wrong (said in `problems`).
pub(super) fn read(path: &Path, sources: &Sources, problems: &mut Problems) -> Option<Project> {
    let before = problems.len();
    // A dotfile manager may make .samocode a link: followed, but never a pipe or a flood.
    let text = match untrusted::read_text(path, CONFIG_LIMIT, Links::Follow) {
        Ok(Some(text)) => text,
        Ok(None) => {
            problems.push(ConfigError::Read {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
            return None;
        }
        Err(error) => {
            problems.push(error.into());
            return None;
        }
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    // An editor's byte-order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // key -> (line number, value)
    let mut values: HashMap<&str, (usize, String)> = HashMap::new();
    // The keys misspelt ones were meant as: said with the misspelling, not also as missing.
    let mut meant: Vec<&'static str> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Written as a shell file, to be sourced as well: `export KEY=VALUE`.
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            problems.push(ConfigError::BadLine {
                path: path.to_path_buf(),
                line: number,
                text: raw.to_string(),
            });
            continue;
        };
        let key = key.trim();
        let value = without_comment(value)
            .trim_matches('"')
            .trim_matches('\'')
            .to_string();
        let Some(known) = KEYS.iter().find(|k| **k == key) else {
            if super::values::SETTINGS.contains(&key) || super::file::LISTS.contains(&key) {
                problems.push(ConfigError::Misplaced {
                    place: format!("{}:{number}", path.display()),
                    key: key.to_string(),
                    belongs: format!(
                        "it is samocode's own, for every project: set it in the environment, or as {} in config.toml",
                        super::values::file_key(key)
                    ),
                });
                continue;
            }
            let suggestion = nearest(key, KEYS);
            meant.extend(suggestion);
            problems.push(ConfigError::UnknownKey {
                place: format!("{}:{number}", path.display()),
                key: key.to_string(),
                suggestion: suggestion.map(str::to_string),
            });
            continue;
        };
        if let Some((first, _)) = values.get(known) {
            problems.push(ConfigError::DuplicateKey {
                path: path.to_path_buf(),
                key: known,
                first: *first,
                second: number,
            });
            continue;
        }
        if value.contains('\0') {
            problems.push(ConfigError::ProjectValue {
                path: path.to_path_buf(),
                line: number,
                key: known,
                value: value.replace('\0', "\\0"),
                expected: "text without NUL bytes".into(),
            });
            continue;
        }
        values.insert(known, (number, value));
    }

    let mut dir = |key: &'static str, what: &'static str| -> Option<PathBuf> {
        let Some((line, value)) = values.get(key) else {
            if !meant.contains(&key) {
                problems.push(ConfigError::MissingKey {
                    path: path.to_path_buf(),
                    key,
                    what,
                });
            }
            return None;
        };
        if value.is_empty() {
            problems.push(ConfigError::EmptyKey {
                path: path.to_path_buf(),
                line: *line,
                key,
                what,
            });
            return None;
        }
        let dir = absolute(base, Path::new(&expand_home(value, sources)));
        // Resolved through links, the path goes to git, to the agent's context (one path per
        // line) and to every table: it must read as itself.
        let unreadable = match dir.to_str() {
            None => Some("a folder whose path, resolved through its links, is UTF-8"),
            Some(text) if text.chars().any(char::is_control) => Some(
                "a folder whose path, resolved through its links, holds no control character (a newline, a tab)",
            ),
            Some(_) => None,
        };
        if let Some(expected) = unreadable {
            problems.push(ConfigError::ProjectValue {
                path: path.to_path_buf(),
                line: *line,
                key,
                value: format!("{value} ({})", dir.display().to_string().escape_debug()),
                expected: expected.into(),
            });
            return None;
        }
        if !dir.is_dir() {
            problems.push(ConfigError::NotADirectory {
                path: path.to_path_buf(),
                key,
                dir,
            });
            return None;
        }
        Some(dir)
    };
    let main_repo = dir("MAIN_REPO", "git repository the agents work on");
    let worktrees = dir("WORKTREES", "folder for the sessions' git worktrees");
    let sessions = dir("SESSIONS", "folder for the session folders");
    // A session's folder and its worktree have the same name: in one folder they would be one.
    if let (Some(worktrees), Some(sessions)) = (&worktrees, &sessions)
        && crate::session::worktree::same_dir(worktrees, sessions)
        && let Some((line, value)) = values.get("SESSIONS")
    {
        problems.push(ConfigError::ProjectValue {
            path: path.to_path_buf(),
            line: *line,
            key: "SESSIONS",
            value: value.clone(),
            expected: "a folder other than WORKTREES (a session's folder and its worktree take the same name)".into(),
        });
    }

    // Both go to git as arguments: each must be a ref name git accepts, and none may start
    // with '-' (git would read `--help` or `-D` as an option).
    let mut reference = |key: &'static str, trim_slashes: bool| -> Option<String> {
        let (line, value) = values.get(key)?;
        let value = if trim_slashes {
            value.trim_matches('/')
        } else {
            value.as_str()
        };
        if value.is_empty() {
            return None;
        }
        match check_ref(value) {
            Ok(()) => Some(value.to_string()),
            Err(reason) => {
                problems.push(ConfigError::ProjectValue {
                    path: path.to_path_buf(),
                    line: *line,
                    key,
                    value: value.to_string(),
                    expected: format!("a git branch name, but {reason}"),
                });
                None
            }
        }
    };
    let base_branch = reference("BASE_BRANCH", false);
    let branch_prefix = reference("BRANCH_PREFIX", true);

    if problems.len() > before {
        return None;
    }
    Some(Project {
        file: path.to_path_buf(),
        main_repo: main_repo?,
        worktrees: worktrees?,
        sessions: sessions?,
        base_branch,
        branch_prefix,
    })
}

/// A value without the comment after it, trimmed: `#` after a space or a tab starts one, as in
/// the README's example (`MAIN_REPO=~/code/app   # the repository`); a `#` inside a word
/// (`feat#2`) or inside quotes (`"a #b"`) is part of the value.
pub(super) fn without_comment(raw: &str) -> &str {
    let value = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote)
            && let Some(end) = rest.find(quote)
        {
            return &value[..end + 2];
        }
    }
    // Searched in the value as written: `KEY=   # none` is a key with no value.
    let cut = raw
        .char_indices()
        .find(|&(i, c)| c == '#' && raw[..i].ends_with([' ', '\t']))
        .map_or(raw.len(), |(i, _)| i);
    raw[..cut].trim()
}
