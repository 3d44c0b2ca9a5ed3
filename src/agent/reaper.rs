//! Finding and killing an attempt's processes by the markers in their environment.
//!
//! Every process an agent starts inherits [`SESSION_MARKER`] (the session folder) and
//! [`ATTEMPT_MARKER`] (the attempt). A process that left the agent's process group (`setsid`)
//! is out of reach of `killpg`, and a worker that crashed left its agents running with nobody to
//! stop them; both are found here by reading `/proc/<pid>/environ`, and killed only when the
//! markers name the session (and, at the end of an attempt, the attempt) being cleaned up, so an
//! unrelated program, or another session's agent, is never touched.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use super::launch::{ATTEMPT_MARKER, SESSION_MARKER};

/// Kills (SIGKILL) every live process whose environment names `session` and, when given,
/// `attempt`. Returns the pids it killed. This process itself is never among them.
pub fn kill_marked(session: &Path, attempt: Option<&str>) -> Vec<i32> {
    let wanted_session = entry(SESSION_MARKER, session.as_os_str().as_bytes());
    let wanted_attempt = attempt.map(|a| entry(ATTEMPT_MARKER, a.as_bytes()));
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for proc in procs.filter_map(Result::ok) {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A process of another user, or one that has just exited, cannot be read: not ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let has = |wanted: &[u8]| environ.split(|b| *b == 0).any(|var| var == wanted);
        if !has(&wanted_session) || wanted_attempt.as_deref().is_some_and(|a| !has(a)) {
            continue;
        }
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed.push(pid);
        }
    }
    wait_gone(&killed);
    killed
}

/// A SIGKILL is delivered asynchronously: the process may run on for a moment after `kill`
/// returns. Waits (briefly) until each is gone or a zombie, so that whoever starts the next
/// agent of the session never overlaps with the last one.
fn wait_gone(pids: &[i32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for pid in pids {
        while running(*pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn entry(key: &str, value: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
    entry.extend_from_slice(key.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(value);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn sleeper(env: &[(&str, &str)]) -> std::process::Child {
        let mut command = Command::new("sleep");
        command
            .arg("30")
            .env_remove(SESSION_MARKER)
            .env_remove(ATTEMPT_MARKER);
        for (k, v) in env {
            command.env(k, v);
        }
        // A session of its own, as an agent's escaped grandchild would have.
        command.process_group(0);
        let child = command.spawn().unwrap();
        // Until it has exec'd, /proc shows the test's own environment, not its.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(format!("/proc/{}/cmdline", child.id()))
            .is_ok_and(|cmdline| !cmdline.starts_with(b"sleep"))
        {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn kills_only_the_processes_that_name_the_session_and_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("26-11-24-x");
        let other = dir.path().join("26-11-24-y");
        let s = session.to_str().unwrap();
        let mut ours = sleeper(&[(SESSION_MARKER, s), (ATTEMPT_MARKER, "a1")]);
        let mut next_attempt = sleeper(&[(SESSION_MARKER, s), (ATTEMPT_MARKER, "a2")]);
        let mut other_session = sleeper(&[
            (SESSION_MARKER, other.to_str().unwrap()),
            (ATTEMPT_MARKER, "a1"),
        ]);
        let mut prefix = sleeper(&[(SESSION_MARKER, &format!("{s}-2")), (ATTEMPT_MARKER, "a1")]);
        let mut unmarked = sleeper(&[]);

        assert_eq!(kill_marked(&session, Some("a1")), vec![ours.id() as i32]);
        assert!(ours.wait().unwrap().code().is_none(), "killed by a signal");
        for child in [
            &mut next_attempt,
            &mut other_session,
            &mut prefix,
            &mut unmarked,
        ] {
            assert!(child.try_wait().unwrap().is_none(), "left alone");
        }
        // Without an attempt, everything of the session goes (a crashed worker's leftovers).
        assert_eq!(kill_marked(&session, None), vec![next_attempt.id() as i32]);
        next_attempt.wait().unwrap();
        for mut child in [other_session, prefix, unmarked] {
            assert!(child.try_wait().unwrap().is_none(), "left alone");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
