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

/// Whether the list in `state_dir` names the session in `dir` (read only: a command other
/// than the daemon's start never rewrites it).
pub fn lists(state_dir: &Path, dir: &Path) -> bool {
    std::fs::read_to_string(state_dir.join(FILE)).is_ok_and(|text| {
        text.lines()
            .filter_map(|line| serde_json::from_str::<OwnedSession>(line).ok())
            .any(|session| crate::session::worktree::same_dir(&session.dir, dir))
    })
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
/// and resumed.
pub fn load_and_compact(state_dir: &Path) -> std::io::Result<Listed> {
    let mut owned: Vec<OwnedSession> = Vec::new();
    let mut problems = Vec::new();
    if let Ok(text) = std::fs::read_to_string(state_dir.join(LEGACY)) {
        match serde_json::from_str::<Vec<OwnedSession>>(&text) {
            Ok(list) => owned.extend(list),
            Err(e) => problems.push(format!("{LEGACY}: {e}")),
        }
    }
    match std::fs::read_to_string(state_dir.join(FILE)) {
        Ok(text) => {
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                match serde_json::from_str::<OwnedSession>(line) {
                    Ok(session) => owned.push(session),
                    Err(e) => problems.push(format!("{FILE}:{}: {e}", n + 1)),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut seen = std::collections::HashSet::new();
    owned.retain(|s| seen.insert(s.dir.clone()));
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
    let (forgotten, owned): (Vec<OwnedSession>, Vec<OwnedSession>) =
        owned.into_iter().partition(deleted);
    let mut text = Vec::new();
    for session in &owned {
        text.extend(serde_json::to_vec(session).expect("an owned session serializes"));
        text.push(b'\n');
    }
    crate::session::store::write_atomic(&state_dir.join(FILE), &text)
        .map_err(std::io::Error::other)?;
    let _ = std::fs::remove_file(state_dir.join(LEGACY));
    Ok(Listed {
        owned,
        problems,
        forgotten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::io::Write::write_all(&mut f, b"{\"dir\": \"/s/half").unwrap();
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
}
