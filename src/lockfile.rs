//! A lock file: an exclusive `flock` held while the file stays open, with the holder's pid
//! inside for the message a second comer prints. Used for the session lock (one worker per
//! session) and the daemon lock (one daemon per state directory).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

/// Extra tries, 10 ms apart, before a busy lock counts as held: a child process forked by this
/// program (an agent, git) briefly shares every open file until it execs, and with it a lock
/// this process has just released.
const RETRIES: u32 = 30;

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
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if tries < RETRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
    }
    file.set_len(0).map_err(LockError::Io)?;
    file.rewind().map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
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
}
