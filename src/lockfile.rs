//! Locks: an exclusive `flock` held while the file stays open, with the holder's pid in a
//! file for the message a second comer prints. The session lock (one worker per session) is
//! the session folder's own, its pid in `_worker.lock`; the daemon lock (one daemon per state
//! directory) is the file `daemon.lock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

/// Extra tries, 10 ms apart, before a busy lock counts as held: a child process forked by this
/// program (an agent, git) briefly shares every open file until it execs, and with it a lock
/// this process has just released. A second, as a loaded machine may take that long to run
/// the child (0.3 s was too short for the test suite on a busy CI machine).
const RETRIES: u32 = 100;

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone holds it; their pid when they wrote one.
    Held { pid: Option<u32> },
    /// The file could not be opened or locked.
    Io(std::io::Error),
}

/// Takes the lock at `path` (created when missing) and writes this process's pid into it.
pub fn acquire(path: &Path) -> Result<File, LockError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(LockError::Io)?;
    if !take(&file)? {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held {
            pid: text.trim().parse().ok(),
        });
    }
    file.set_len(0).map_err(LockError::Io)?;
    file.rewind().map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
}

/// Takes the lock of the folder `dir` itself, and writes this process's pid into `pid_file`
/// for the message a second comer prints. A lock on the folder cannot be lost by deleting a
/// file (a person clearing a "stale" lock file, an agent cleaning up): a second worker could
/// then have locked a new file while the first still held the deleted one.
pub fn acquire_folder(dir: &Path, pid_file: &Path) -> Result<FolderLock, LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let folder = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .map_err(LockError::Io)?;
    // Never through a link or into a pipe the agent planted in its place.
    // One name for one file: a hard link to a file of the person's would be truncated.
    let mut pid = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(pid_file)
        .ok()
        .filter(|f| {
            use std::os::unix::fs::MetadataExt;
            f.metadata().is_ok_and(|m| m.is_file() && m.nlink() == 1)
        });
    // A worker of an earlier build locks the file itself: one holding it drives the session.
    let earlier = pid
        .as_ref()
        .is_some_and(|f| matches!(f.try_lock(), Err(TryLockError::WouldBlock)));
    if earlier || !take(&folder)? {
        let mut text = String::new();
        if let Some(file) = pid.as_ref() {
            let _ = file.take(32).read_to_string(&mut text);
        }
        return Err(LockError::Held {
            pid: text.trim().parse().ok(),
        });
    }
    if let Some(file) = pid.as_mut() {
        // What it says is for people: a lock without it still holds.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
    }
    // The file's lock is kept too: a worker of an earlier build, which knows only that one,
    // is kept out of a session this one drives.
    let identity = {
        use std::os::unix::fs::MetadataExt;
        folder.metadata().ok().map(|m| (m.dev(), m.ino()))
    };
    Ok(FolderLock {
        _folder: folder,
        _file: pid,
        identity,
    })
}

/// A session folder's lock, held until dropped: the folder's `flock`, and that of its pid
/// file when it could be opened.
#[derive(Debug)]
pub struct FolderLock {
    _folder: File,
    _file: Option<File>,
    /// The locked folder's device and inode, read once when it was locked.
    identity: Option<(u64, u64)>,
}

impl FolderLock {
    /// Whether `dir` is now another folder than the one this lock holds (deleted and made
    /// again, or another moved to its place): one that cannot be looked at is not said to be.
    pub fn replaced_at(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        // One stat per look: the held folder's identity cannot change.
        match (self.identity, std::fs::symlink_metadata(dir)) {
            (Some(held), Ok(now)) => held != (now.dev(), now.ino()),
            _ => false,
        }
    }
}

/// Takes the exclusive lock of `file`, trying again for a moment; false when it stays held.
fn take(file: &File) -> Result<bool, LockError> {
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if tries < RETRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
    }
}

/// True when someone holds the lock at `path` (checked without keeping it).
pub fn is_held(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = acquire(&path).unwrap();
        assert!(is_held(&path));
        match acquire(&path) {
            Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(!is_held(&path));
        acquire(&path).unwrap();
    }

    /// Deleting the pid file does not free a folder's lock.
    #[test]
    fn a_folder_lock_holds_when_its_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("_worker.lock");
        let held = acquire_folder(dir.path(), &pid_file).unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        match acquire_folder(dir.path(), &pid_file) {
            Err(LockError::Held { .. }) => {}
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(acquire_folder(dir.path(), &pid_file).is_ok());
    }

    /// A worker of an earlier build, which locks the file itself, keeps a new one out; and a
    /// hard link in the file's place is not written through.
    #[test]
    fn an_earlier_builds_file_lock_keeps_a_folder_lock_out() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("_worker.lock");
        let earlier = acquire(&pid_file).unwrap();
        match acquire_folder(dir.path(), &pid_file) {
            Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(earlier);
        std::fs::remove_file(&pid_file).unwrap();
        let theirs = dir.path().join("theirs.txt");
        std::fs::write(&theirs, "keep me").unwrap();
        std::fs::hard_link(&theirs, &pid_file).unwrap();
        let _held = acquire_folder(dir.path(), &pid_file).unwrap();
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "keep me");
    }

    /// The other way round: a worker of an earlier build, which knows only the file's lock,
    /// is kept out of a folder this build holds.
    #[test]
    fn a_folder_lock_keeps_an_earlier_builds_worker_out() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("_worker.lock");
        let held = acquire_folder(dir.path(), &pid_file).unwrap();
        match acquire(&pid_file) {
            Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(acquire(&pid_file).is_ok());
    }
}
