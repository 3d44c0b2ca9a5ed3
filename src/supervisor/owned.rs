//! The daemon's list of the sessions it owns, in its state directory: `sessions.jsonl`, one
//! `{"dir":…,"project":…}` line per session taken over, appended (and fsynced) before the
//! daemon acknowledges the start, so that a session it said yes to is resumed after any crash.
//! A session is listed once however many lines name it; the file is compacted at start, and
//! a session whose folder was deleted is forgotten then (see [`load_and_compact`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A session as the daemon lists it, and as it is saved in the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSession {
    pub dir: PathBuf,
    /// The project file the session belongs to.
    pub project: PathBuf,
}

/// The file, in the daemon's state directory.
pub const FILE: &str = "sessions.jsonl";
/// The file of earlier builds: one JSON array, rewritten whole.
const LEGACY: &str = "sessions.json";

/// Appends one session to the list (durably).
pub fn append(state_dir: &Path, session: &OwnedSession) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(session).expect("an owned session serializes");
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(state_dir.join(FILE))?;
    // One write per line, so a crash leaves whole lines; a failed one leaves none of it.
    let len = file.metadata()?.len();
    crate::session::store::append_whole(&mut file, len, &line)?;
    file.sync_data()
}

/// The most bytes of the list (or of the legacy file) read: some 300,000 sessions.
const CAP: u64 = 64 << 20;

/// The file at `path` (`None` when there is none): a regular file, never waited on (a named
/// pipe there would hang the daemon's start beyond the reach of a SIGTERM).
fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use crate::session::untrusted::{Links, read_bytes};
    read_bytes(path, CAP, Links::Refuse).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Whether the list in `state_dir` names the session in `dir` (read only: a command other
/// than the daemon's start never rewrites it).
pub fn lists(state_dir: &Path, dir: &Path) -> bool {
    read(&state_dir.join(FILE)).is_ok_and(|bytes| {
        bytes
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<OwnedSession>(line).ok())
            .any(|session| crate::session::worktree::same_dir(&session.dir, dir))
    })
}

/// Appends to the list the sessions of `sessions` it does not name: the file deleted or cut
/// while the daemon ran (by hand, a cleaner of the folder, an agent) would have the next start
/// forget them. Returns how many were missing.
pub fn restore_missing(state_dir: &Path, sessions: &[OwnedSession]) -> std::io::Result<usize> {
    let listed: std::collections::HashSet<PathBuf> = read(&state_dir.join(FILE))?
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<OwnedSession>(line).ok())
        .map(|session| session.dir)
        .collect();
    let missing: Vec<&OwnedSession> = sessions
        .iter()
        .filter(|session| !listed.contains(&session.dir))
        .collect();
    for session in &missing {
        append(state_dir, session)?;
    }
    Ok(missing.len())
}

/// The list as the daemon's start reads it.
#[derive(Debug, Default)]
pub struct Listed {
    /// Each session once, in the order first named.
    pub owned: Vec<OwnedSession>,
    /// Lines that cannot be read.
    pub problems: Vec<String>,
    /// Sessions whose folder was deleted: left out of the list.
    pub forgotten: Vec<OwnedSession>,
}

/// Reads the list and rewrites the file without repeats, and without the sessions whose folder
/// is gone from a sessions folder that holds something else: a person deleted (or moved) it,
/// and is done with it. When the sessions folder itself is missing or empty (a disk not
/// mounted yet, a project moved), the session is kept: it shows as broken until it is back
/// and resumed. A line this build cannot read as a session, but that is whole JSON (another
/// build's), is kept as it is, and so are the fields a readable line has beyond this build's:
/// only a line a crash cut short is dropped.
pub fn load_and_compact(state_dir: &Path) -> std::io::Result<Listed> {
    // Each session with the line that names it first, and the lines kept unread.
    let mut owned: Vec<(OwnedSession, String)> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut legacy_read = true;
    let mut take =
        |line: String, place: String, problems: &mut Vec<String>| match serde_json::from_str::<
            OwnedSession,
        >(&line)
        {
            // An object only: serde would read a list (`["a","b"]`) as a session.
            Ok(session) if line.trim_start().starts_with('{') => owned.push((session, line)),
            Ok(_) => {
                problems.push(format!(
                    "{place}: not a JSON object (kept in {FILE} as it is)"
                ));
                kept.push(line);
            }
            Err(e) if serde_json::from_str::<serde_json::Value>(&line).is_ok() => {
                problems.push(format!("{place}: {e} (kept in {FILE} as it is)"));
                kept.push(line);
            }
            Err(e) => problems.push(format!("{place}: {e} (a line cut short; dropped)")),
        };
    if let Some(text) = read(&state_dir.join(LEGACY))? {
        match serde_json::from_slice::<Vec<serde_json::Value>>(&text) {
            Ok(list) => {
                for (n, value) in list.into_iter().enumerate() {
                    take(value.to_string(), format!("{LEGACY}[{n}]"), &mut problems);
                }
            }
            Err(e) => {
                legacy_read = false;
                problems.push(format!(
                    "{LEGACY}: {e} (left where it is; its sessions are not resumed until it is mended)"
                ));
            }
        }
    }
    for (n, line) in read(&state_dir.join(FILE))?
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .enumerate()
    {
        let place = format!("{FILE}:{}", n + 1);
        match std::str::from_utf8(line) {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => take(line.to_string(), place, &mut problems),
            // Cut inside a character by a crash: no session this build or another wrote.
            Err(_) => problems.push(format!(
                "{place}: not UTF-8 text (a line cut short; dropped)"
            )),
        }
    }
    let mut seen = std::collections::HashSet::new();
    owned.retain(|(s, _)| seen.insert(s.dir.clone()));
    // Gone for certain (not found), not only unreadable for a moment (a permission, a network
    // filesystem's hiccup), from a sessions folder that holds something: an empty one may be
    // a mount point whose disk is not mounted yet (a container started without its volume),
    // and its sessions stay, shown broken with why.
    let deleted = |s: &OwnedSession| {
        std::fs::symlink_metadata(&s.dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            && s.dir
                .parent()
                .and_then(|sessions| std::fs::read_dir(sessions).ok())
                .is_some_and(|mut entries| entries.next().is_some())
    };
    let (forgotten, owned): (Vec<_>, Vec<_>) = owned.into_iter().partition(|(s, _)| deleted(s));
    let mut text = Vec::new();
    for line in owned.iter().map(|(_, line)| line).chain(&kept) {
        text.extend(line.as_bytes());
        text.push(b'\n');
    }
    crate::session::store::write_atomic(&state_dir.join(FILE), &text)
        .map_err(std::io::Error::other)?;
    if legacy_read {
        let _ = std::fs::remove_file(state_dir.join(LEGACY));
    }
    Ok(Listed {
        owned: owned.into_iter().map(|(s, _)| s).collect(),
        problems,
        forgotten: forgotten.into_iter().map(|(s, _)| s).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list deleted (or cut) while the daemon ran: the sessions it drives are listed again.
    #[test]
    fn sessions_missing_from_the_list_are_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = |d: &str| OwnedSession {
            dir: PathBuf::from(d),
            project: PathBuf::from("/p/.samocode"),
        };
        append(dir.path(), &s("/s/a")).unwrap();
        let held = [s("/s/a"), s("/s/b")];
        assert_eq!(restore_missing(dir.path(), &held).unwrap(), 1);
        assert_eq!(restore_missing(dir.path(), &held).unwrap(), 0);
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        assert_eq!(restore_missing(dir.path(), &held).unwrap(), 2);
        assert_eq!(load_and_compact(dir.path()).unwrap().owned, held);
    }

    #[test]
    fn appended_sessions_come_back_once_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = |d: &str| OwnedSession {
            dir: PathBuf::from(d),
            project: PathBuf::from("/p/.samocode"),
        };
        std::fs::write(
            dir.path().join(LEGACY),
            serde_json::to_vec(&vec![s("/s/a")]).unwrap(),
        )
        .unwrap();
        for d in ["/s/b", "/s/a", "/s/b", "/s/c"] {
            append(dir.path(), &s(d)).unwrap();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        // Cut inside a character (a session path of non-ASCII names).
        std::io::Write::write_all(&mut f, b"{\"dir\": \"/home/zo\xc3").unwrap();
        // A session accepted after a cut line (a crash, a full disk) is not glued to it: it
        // would have been skipped as unreadable, and forgotten at the next restart.
        append(dir.path(), &s("/s/d")).unwrap();
        let Listed {
            owned, problems, ..
        } = load_and_compact(dir.path()).unwrap();
        assert_eq!(owned, [s("/s/a"), s("/s/b"), s("/s/c"), s("/s/d")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!dir.path().join(LEGACY).exists());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 4);
    }

    /// A named pipe in place of the list hung the daemon's start, beyond a SIGTERM's reach.
    #[test]
    fn a_list_that_is_a_named_pipe_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join(FILE))
            .status()
            .unwrap();
        assert!(made.success());
        let error = load_and_compact(dir.path()).unwrap_err().to_string();
        assert!(error.contains("named pipe"), "{error}");
        assert!(!lists(dir.path(), Path::new("/s/a")));
    }

    #[test]
    fn a_session_deleted_from_its_sessions_folder_is_forgotten_one_whose_sessions_folder_is_missing_kept()
     {
        let dir = tempfile::tempdir().unwrap();
        let sessions = dir.path().join("sessions");
        std::fs::create_dir_all(sessions.join("26-01-01-here")).unwrap();
        let s = |d: &Path| OwnedSession {
            dir: d.to_path_buf(),
            project: PathBuf::from("/p/.samocode"),
        };
        let here = s(&sessions.join("26-01-01-here"));
        let deleted = s(&sessions.join("26-01-01-deleted"));
        let unmounted = s(&dir.path().join("elsewhere/26-01-01-away"));
        // A mount point with nothing mounted on it: an empty folder.
        std::fs::create_dir_all(dir.path().join("mount")).unwrap();
        let empty = s(&dir.path().join("mount/26-01-01-on-the-disk"));
        for session in [&here, &deleted, &unmounted, &empty] {
            append(dir.path(), session).unwrap();
        }
        let listed = load_and_compact(dir.path()).unwrap();
        assert_eq!(
            listed.owned,
            [here.clone(), unmounted.clone(), empty.clone()]
        );
        assert_eq!(listed.forgotten, [deleted]);
        let again = load_and_compact(dir.path()).unwrap();
        assert_eq!(again.owned, [here, unmounted, empty]);
        assert!(again.forgotten.is_empty());
    }

    #[test]
    fn lines_and_fields_this_build_cannot_read_are_kept_not_erased() {
        let dir = tempfile::tempdir().unwrap();
        let other = r#"{"dir":"/s/other","project_file":"/p/.samocode"}"#;
        let more = r#"{"dir":"/s/more","project":"/p/.samocode","owner":"ann"}"#;
        std::fs::write(
            dir.path().join(LEGACY),
            r#"[{"dir":"/s/old","project":"/p/.samocode"},"B"]"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(FILE),
            format!("{other}\n{more}\n[\"a\",\"list\"]\n"),
        )
        .unwrap();
        let listed = load_and_compact(dir.path()).unwrap();
        let dirs: Vec<_> = listed.owned.iter().map(|s| s.dir.clone()).collect();
        assert_eq!(dirs, [PathBuf::from("/s/old"), PathBuf::from("/s/more")]);
        assert_eq!(listed.problems.len(), 3, "{:?}", listed.problems);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains(other), "{text}");
        assert!(text.contains(more), "{text}");
        assert!(text.contains(r#""B""#), "{text}");
        // Read again: the same, nothing lost at a second start.
        let again = load_and_compact(dir.path()).unwrap();
        assert_eq!(again.owned.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            text
        );
        // A legacy file that is not a list at all is left where it is.
        std::fs::write(dir.path().join(LEGACY), "[{").unwrap();
        load_and_compact(dir.path()).unwrap();
        assert!(dir.path().join(LEGACY).exists());
    }
}
