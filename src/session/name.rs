//! Session names and folders (PROTOCOL.md section 2): validation before anything is touched,
//! and resolution of a name to its `YY-MM-DD-name` folder.
//!
//! A name also becomes a git branch (`[BRANCH_PREFIX/]name`), so it follows
//! `git check-ref-format` as well ([`check_ref`]): `a.lock`, `a.` or `a_b.` are refused here,
//! not by git after the folder exists.

use std::path::{Path, PathBuf};

/// Why a session name or folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The name breaks `[a-z0-9][a-z0-9._-]{0,63}`.
    #[error(
        "invalid session name {0:?}: use 1 to 64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit (no slashes, spaces or '..')"
    )]
    Invalid(String),
    /// The name fits the pattern, but git would refuse it as a branch name.
    #[error(
        "invalid session name {name:?}: the session's git branch cannot be named so ({reason}); choose another name"
    )]
    NotABranch { name: String, reason: &'static str },
    /// Two dated folders end in the same name.
    #[error("session name {name:?} is ambiguous: it matches {} ; pass the full folder name", .matches.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    Ambiguous { name: String, matches: Vec<PathBuf> },
    /// No folder of that name exists (for commands that act on an existing session).
    #[error("no session {name:?} in {sessions}; `samocode status` lists the sessions")]
    NotFound { name: String, sessions: PathBuf },
    /// The sessions folder could not be listed.
    #[error("cannot list the sessions folder {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--dive` or `--task` given for a session that already exists.
    #[error(
        "session {folder} already exists, and the dive and task of an existing session are not changed; drop --dive and --task to continue it, or pick a new name for new work"
    )]
    TextsOfExisting { folder: String },
    /// A file (not a folder) has the name a new session's folder would take.
    #[error(
        "{} exists and is not a folder, so the new session's folder cannot take its name; move it away, or choose another session name",
        .0.display()
    )]
    InTheWay(PathBuf),
    /// The name leads to a folder that holds no session.
    #[error(
        "{} exists but holds no session (no _state.json or _overview.md); move it out of the sessions folder, or choose another session name",
        .0.display()
    )]
    NotASession(PathBuf),
    /// A text (name, dive, task) holds a NUL byte, which no file or argument can carry.
    #[error("the {what} contains a NUL byte; remove it")]
    Nul { what: &'static str },
    /// A new session's dive or task says nothing: the agent would have nothing to go on.
    #[error(
        "--{what} is empty; say what the session should {}",
        if *what == "dive" { "investigate" } else { "build" }
    )]
    Empty { what: &'static str },
    /// The session's folder is a symbolic link, which samocode never writes through.
    #[error(
        "the session folder {0} is a symbolic link, and samocode never writes through one; move the link away and put the folder itself there"
    )]
    Link(PathBuf),
}

/// Checks a name against `[a-z0-9][a-z0-9._-]{0,63}` and the rules git has for a branch
/// name's last part: no `..`, no trailing `.`, no `.lock` ending.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.contains('\0') {
        return Err(NameError::Nul {
            what: "session name",
        });
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if !(first_ok && rest_ok && name.len() <= 64 && !name.contains("..")) {
        return Err(NameError::Invalid(name.to_string()));
    }
    check_ref(name).map_err(|reason| NameError::NotABranch {
        name: name.to_string(),
        reason,
    })
}

/// Checks `text` as `git check-ref-format` checks a branch name (and refuses a leading `-`,
/// which git would read as an option); the reason names the rule broken.
pub fn check_ref(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.starts_with('-') {
        return Err("it starts with '-', which git reads as an option");
    }
    if text == "@" {
        return Err("it is '@'");
    }
    if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
        return Err("it starts or ends with '/' or has '//'");
    }
    if text.ends_with('.') {
        return Err("it ends with '.'");
    }
    if text.contains("..") {
        return Err("it contains '..'");
    }
    if text.contains("@{") {
        return Err("it contains '@{'");
    }
    if text
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        return Err("it contains a space, a control character or one of ~ ^ : ? * [ \\");
    }
    for part in text.split('/') {
        if part.starts_with('.') {
            return Err("a part of it starts with '.'");
        }
        if part.ends_with(".lock") {
            return Err("a part of it ends with '.lock'");
        }
    }
    Ok(())
}

/// Checks the texts a start request carries for session `resolved`: a new session may get its
/// dive and task; an existing one keeps its own, so giving either is an error that says so
/// rather than being ignored. No text may hold a NUL byte.
pub fn check_texts(
    resolved: &Resolved,
    dive: Option<&str>,
    task: Option<&str>,
) -> Result<(), NameError> {
    for (what, text) in [("dive", dive), ("task", task)] {
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(NameError::Nul { what });
        }
        if text.is_some_and(|t| t.trim().is_empty()) {
            return Err(NameError::Empty { what });
        }
    }
    match resolved {
        // Before any lock or file is made in it.
        Resolved::Existing(dir)
            if !dir.join(super::store::STATE).exists()
                && !dir.join(super::store::OVERVIEW).exists() =>
        {
            Err(NameError::NotASession(dir.clone()))
        }
        Resolved::Existing(dir) if dive.is_some() || task.is_some() => {
            Err(NameError::TextsOfExisting {
                folder: dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// Where a name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An existing folder.
    Existing(PathBuf),
    /// No folder yet: this is where a new one goes.
    New(PathBuf),
}

impl Resolved {
    pub fn path(&self) -> &Path {
        match self {
            Resolved::Existing(p) | Resolved::New(p) => p,
        }
    }
}

/// Resolves `name`: an exact folder name; else the one `YY-MM-DD-name` folder; else a new
/// folder named with `today` (`YY-MM-DD`).
pub fn resolve(sessions: &Path, name: &str, today: &str) -> Result<Resolved, NameError> {
    validate(name)?;
    let exact = sessions.join(name);
    match std::fs::symlink_metadata(&exact) {
        Ok(meta) if meta.is_symlink() => return Err(NameError::Link(exact)),
        Ok(meta) if meta.is_dir() => return Ok(Resolved::Existing(exact)),
        _ => {}
    }
    let matches = dated_matches(sessions, name)?;
    match matches.len() {
        0 => {
            let new = sessions.join(format!("{today}-{name}"));
            // Something that is not a folder in the new one's place: nothing is made.
            match std::fs::symlink_metadata(&new) {
                Ok(meta) if meta.is_symlink() => Err(NameError::Link(new)),
                Ok(_) => Err(NameError::InTheWay(new)),
                Err(_) => Ok(Resolved::New(new)),
            }
        }
        1 => Ok(Resolved::Existing(matches.into_iter().next().expect("one"))),
        _ => Err(NameError::Ambiguous {
            name: name.to_string(),
            matches,
        }),
    }
}

/// Resolves a name that must already exist.
pub fn resolve_existing(sessions: &Path, name: &str) -> Result<PathBuf, NameError> {
    match resolve(sessions, name, "00-00-00")? {
        Resolved::Existing(path) => Ok(path),
        Resolved::New(_) => Err(NameError::NotFound {
            name: name.to_string(),
            sessions: sessions.to_path_buf(),
        }),
    }
}

fn dated_matches(sessions: &Path, name: &str) -> Result<Vec<PathBuf>, NameError> {
    let entries = std::fs::read_dir(sessions).map_err(|source| NameError::List {
        path: sessions.to_path_buf(),
        source,
    })?;
    let mut matches = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let folder = entry.file_name();
        let folder = folder.to_string_lossy();
        if !(is_date_prefix(&folder) && folder.get(9..) == Some(name)) {
            continue;
        }
        // The entry's own type: a link is never followed.
        match entry.file_type() {
            Ok(kind) if kind.is_symlink() => return Err(NameError::Link(entry.path())),
            Ok(kind) if kind.is_dir() => matches.push(entry.path()),
            _ => {}
        }
    }
    matches.sort();
    Ok(matches)
}

/// `YY-MM-DD-` at the start of a folder name.
pub fn is_date_prefix(folder: &str) -> bool {
    let b = folder.as_bytes();
    b.len() > 9
        && b[..8].iter().enumerate().all(|(i, c)| {
            if i == 2 || i == 5 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && b[8] == b'-'
}

/// The session's short name: the folder name without its date.
pub fn short_name(folder: &str) -> &str {
    if is_date_prefix(folder) {
        &folder[9..]
    } else {
        folder
    }
}

/// The one folder among `dirs` that `name` means: the folder of that exact name, else the one
/// whose short name it is. `Err(n)`: no folder is so named exactly and `n` (0 or more than
/// one) have it for their short name. An exact name always wins: `26-12-07-zz` is that folder,
/// also beside `26-12-07-26-12-07-zz`, whose short name it is.
pub fn named_among<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    name: &str,
) -> Result<&'a Path, usize> {
    let mut short: Vec<&Path> = Vec::new();
    for dir in dirs {
        let folder = dir.file_name().unwrap_or_default().to_string_lossy();
        if folder == name {
            return Ok(dir);
        }
        if short_name(&folder) == name {
            short.push(dir);
        }
    }
    match short.as_slice() {
        [dir] => Ok(dir),
        _ => Err(short.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder's exact name was ambiguous beside a session whose short name it is: its
    /// buttons, and the commands its notices advise, were refused as naming several.
    #[test]
    fn an_exact_folder_name_wins_over_a_short_name() {
        let a = Path::new("/s/26-12-07-zz");
        let b = Path::new("/s/26-12-07-26-12-07-zz");
        let c = Path::new("/s/26-12-08-zz");
        assert_eq!(named_among([b, a], "26-12-07-zz"), Ok(a));
        assert_eq!(named_among([a, b], "26-12-07-26-12-07-zz"), Ok(b));
        assert_eq!(named_among([b, a, c], "zz"), Err(2));
        assert_eq!(named_among([b, c], "zz"), Ok(c));
        assert_eq!(named_among([b], "yy"), Err(0));
    }

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["a", "auth-login", "v1.2_fix", &"x".repeat(64)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "Auth",
            "-x",
            ".x",
            "a b",
            "a..b",
            &"x".repeat(65),
            "a.lock",
            "a.",
            "a_b.",
            "x\0y",
        ] {
            let err = validate(bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid session name") || err.to_string().contains("NUL"),
                "{bad}"
            );
        }
        let err = validate("fix.lock").unwrap_err().to_string();
        assert!(err.contains("ends with '.lock'"), "{err}");
    }

    #[test]
    fn refs_follow_git_check_ref_format() {
        for ok in [
            "main",
            "origin/main",
            "feat/x-1",
            "release/2.0",
            "samocode",
            "a@b",
        ] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-D", "--help", "@", "/x", "x/", "a//b", "a.", "a..b", "a@{1}", "a b", "a~1", "a^",
            "a:b", "a?", "a*", "a[", "a\\b", ".x", "x/.y", "x.lock", "x.lock/y", "a\tb",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?}");
        }
        assert!(check_ref("--help").unwrap_err().contains("option"));
    }

    #[test]
    fn texts_are_for_new_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("26-01-01-x");
        std::fs::create_dir(&folder).unwrap();
        // A folder with no session files is no session, with texts or without.
        let empty = Resolved::Existing(folder.clone());
        for texts in [None, Some("d")] {
            let err = check_texts(&empty, texts, texts).unwrap_err().to_string();
            assert!(err.contains("holds no session"), "{err}");
        }
        std::fs::write(folder.join("_state.json"), "{}").unwrap();
        let new = Resolved::New(PathBuf::from("/s/26-01-01-x"));
        let existing = Resolved::Existing(folder);
        assert!(check_texts(&new, Some("d"), Some("t")).is_ok());
        let empty_task = check_texts(&new, Some("d"), Some(" \n")).unwrap_err();
        assert_eq!(
            empty_task.to_string(),
            "--task is empty; say what the session should build"
        );
        assert!(check_texts(&existing, None, None).is_ok());
        let err = check_texts(&existing, Some("d"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("session 26-01-01-x already exists") && err.contains("are not changed"),
            "{err}"
        );
        let err = check_texts(&new, Some("a\0b"), Some("t"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the dive contains a NUL byte; remove it");
    }

    #[test]
    fn resolution_prefers_exact_then_one_dated_then_new() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        assert_eq!(
            resolve(s, "auth", "26-11-24").unwrap(),
            Resolved::New(s.join("26-11-24-auth"))
        );
        std::fs::create_dir(s.join("26-11-20-auth")).unwrap();
        assert_eq!(
            resolve(s, "auth", "26-11-24").unwrap(),
            Resolved::Existing(s.join("26-11-20-auth"))
        );
        assert_eq!(
            resolve(s, "26-11-20-auth", "26-11-24").unwrap(),
            Resolved::Existing(s.join("26-11-20-auth"))
        );
        std::fs::create_dir(s.join("26-11-21-auth")).unwrap();
        let err = resolve(s, "auth", "26-11-24").unwrap_err().to_string();
        assert!(
            err.contains("26-11-20-auth") && err.contains("26-11-21-auth"),
            "{err}"
        );
        assert!(matches!(
            resolve_existing(s, "other"),
            Err(NameError::NotFound { .. })
        ));
        assert_eq!(short_name("26-11-20-auth"), "auth");
    }
}
