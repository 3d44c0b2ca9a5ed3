//! Who drives a session: the daemon that owns it, a `run` holding its lock (with that
//! process's pid), or nobody.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::session::SessionFolder;

/// Who drives a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Daemon,
    /// A process holding the lock: a `samocode run`, by its pid.
    Run(u32),
    /// A daemon holding the lock that is not the one this command asked (it has another
    /// state directory), by its pid.
    OtherDaemon(u32),
    Nobody,
}

impl Owner {
    /// The daemon when it owns `folder`; else whoever holds the session's lock; else nobody.
    pub(super) fn of(
        folder: &SessionFolder,
        daemon_owns: &HashSet<PathBuf>,
        locks: &Locks,
    ) -> Owner {
        if daemon_owns.contains(folder.dir()) {
            return Owner::Daemon;
        }
        match locks.holder(folder) {
            // A daemon other than the one asked (another state directory) holds it.
            Some(pid) if is_daemon(pid) => Owner::OtherDaemon(pid),
            Some(pid) => Owner::Run(pid),
            None => Owner::Nobody,
        }
    }

    pub(super) fn word(self) -> &'static str {
        match self {
            Owner::Daemon | Owner::OtherDaemon(_) => "daemon",
            Owner::Run(_) => "run",
            Owner::Nobody => "nobody",
        }
    }

    pub(super) fn pid(self) -> Option<u32> {
        match self {
            Owner::Run(pid) | Owner::OtherDaemon(pid) => Some(pid),
            _ => None,
        }
    }
}

/// The command of samocode's process `pid`: the first of its arguments that is one of
/// `commands` (`run --session demo` is a run; a session or a note called `run` comes after
/// the command).
fn command_of(pid: u32, commands: &[&[u8]]) -> Option<Vec<u8>> {
    let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    line.split(|b| *b == 0)
        .skip(1)
        .find(|arg| commands.contains(arg))
        .map(<[u8]>::to_vec)
}

/// The commands that drive sessions, and those of a person.
const DRIVERS: [&[u8]; 4] = [b"run", b"supervise", b"demo", b"worker"];
const COMMANDS: [&[u8]; 8] = [
    b"start", b"answer", b"approve", b"reject", b"resume", b"stop", b"tell", b"status",
];

/// Whether process `pid` is a samocode daemon (`supervise`, or the demo's).
pub(crate) fn is_daemon(pid: u32) -> bool {
    command_of(pid, &[b"run", b"supervise", b"demo"]).is_some_and(|command| command != b"run")
}

/// Whether process `pid` drives sessions (`run`, `supervise`, the demo, a `worker`): a lock
/// it holds is held for long, not for the moment of a person's command.
pub(crate) fn drives(pid: u32) -> bool {
    let words: Vec<&[u8]> = DRIVERS.iter().chain(&COMMANDS).copied().collect();
    command_of(pid, &words).is_some_and(|command| DRIVERS.contains(&command.as_slice()))
}

/// The holders of the machine's `flock`s, read once from `/proc/locks` (not by trying a lock:
/// a probe with `flock` itself, however brief, can make a worker's own attempt to take the
/// lock fail, and a lock file the agent replaced by a pipe would hang it). Read once per
/// listing: the kernel writes the whole table for every read, a line per lock, and a daemon
/// holds one per session.
pub(super) struct Locks(HashMap<(u32, u32, u64), u32>);

impl Locks {
    pub(super) fn read() -> Locks {
        Locks::parse(&std::fs::read_to_string("/proc/locks").unwrap_or_default())
    }

    /// From the text of `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 4242 fe:00:10010635 0 EOF`:
    /// device major and minor in hex, the inode in decimal; lines with `->` are waiters, not
    /// holders).
    fn parse(text: &str) -> Locks {
        let holders = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(1) != Some(&"FLOCK") {
                    return None;
                }
                let mut id = fields.get(5)?.split(':');
                let major = u32::from_str_radix(id.next()?, 16).ok()?;
                let minor = u32::from_str_radix(id.next()?, 16).ok()?;
                let ino: u64 = id.next()?.parse().ok()?;
                Some(((major, minor, ino), fields.get(4)?.parse().ok()?))
            })
            .collect();
        Locks(holders)
    }

    fn holder_of(&self, dev: u64, ino: u64) -> Option<u32> {
        let (major, minor) = (nix::libc::major(dev), nix::libc::minor(dev));
        self.0.get(&(major, minor, ino)).copied()
    }

    /// The pid of the process holding the session's lock (the folder's own, or the
    /// `_worker.lock` file's that a worker of an earlier build takes), if any.
    pub(super) fn holder(&self, folder: &SessionFolder) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(folder.dir()).ok()?;
        if !meta.is_dir() {
            return None;
        }
        self.holder_of(meta.dev(), meta.ino()).or_else(|| {
            let file = std::fs::symlink_metadata(folder.path(crate::session::store::LOCK))
                .ok()
                .filter(std::fs::Metadata::is_file)?;
            self.holder_of(file.dev(), file.ino())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_comes_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 24952 00:1b:84594 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 fe:00:10010635 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 88 fe:00:10010635 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 1335 fe:00:10010635 0 EOF\n";
        let dev = nix::libc::makedev(0xfe, 0);
        let locks = Locks::parse(locks);
        assert_eq!(locks.holder_of(dev, 10010635), Some(1335));
        assert_eq!(
            locks.holder_of(nix::libc::makedev(0, 0x1b), 84594),
            Some(24952)
        );
        assert_eq!(locks.holder_of(dev, 1), None);

        // And for real: this process holds a session's lock.
        let dir = tempfile::tempdir().unwrap();
        let folder = SessionFolder::new(dir.path());
        assert_eq!(Locks::read().holder(&folder), None);
        let store = folder.clone().lock().unwrap();
        assert_eq!(Locks::read().holder(&folder), Some(std::process::id()));
        drop(store);
        assert_eq!(Locks::read().holder(&folder), None);
    }
}
