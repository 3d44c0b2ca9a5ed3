//! The daemon's record of running agent process groups, and the cleanup a restarted daemon does
//! with it: a crashed daemon leaves its agents running (each is in its own process group), and
//! they must be gone before their sessions run again, or a session would run twice at once.
//!
//! Each running attempt is a file `<registry>/<pgid>` holding its session folder. A recorded
//! group is killed only if one of its processes carries [`MARKER`] in its environment, so a
//! process id reused by an unrelated program is left alone.

use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The environment variable every agent process inherits: the session folder it works for.
pub const MARKER: &str = "SAMOCODE_SESSION";

/// Records a running attempt's process group.
pub fn record(registry: &Path, pgid: i32, session_dir: &Path) {
    let _ = std::fs::create_dir_all(registry);
    if let Err(error) = std::fs::write(
        registry.join(pgid.to_string()),
        session_dir.as_os_str().as_encoded_bytes(),
    ) {
        tracing::warn!(%error, pgid, "cannot record the agent's process group");
    }
}

/// Removes a record.
pub fn forget(registry: &Path, pgid: i32) {
    let _ = std::fs::remove_file(registry.join(pgid.to_string()));
}

/// Kills every recorded group that still has one of our agents in it, and clears the record.
/// Returns the process groups killed.
pub fn kill_leftovers(registry: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(registry) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pgid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if group_is_ours(pgid) && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
            killed.push(pgid);
        }
        let _ = std::fs::remove_file(entry.path());
    }
    killed
}

/// True when some live process in group `pgid` carries the marker.
fn group_is_ours(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(Result::ok).any(|p| {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        process_group(pid) == Some(pgid) && has_marker(pid)
    })
}

fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    let _ppid = fields.next()?;
    fields.next()?.parse().ok()
}

fn has_marker(pid: i32) -> bool {
    let prefix = format!("{MARKER}=");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .any(|var| var.starts_with(prefix.as_bytes()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn kills_a_marked_group_and_spares_an_unmarked_one() {
        let registry = tempfile::tempdir().unwrap();
        let mut ours = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER, "/tmp/s")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut foreign = std::process::Command::new("sleep")
            .arg("30")
            .env_remove(MARKER)
            .process_group(0)
            .spawn()
            .unwrap();
        // Until both have exec'd, /proc shows the test's own environment, not theirs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for pid in [ours.id(), foreign.id()] {
            while std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| !cmdline.starts_with(b"sleep"))
            {
                assert!(std::time::Instant::now() < deadline, "sleep did not start");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        record(registry.path(), ours.id() as i32, Path::new("/tmp/s"));
        record(registry.path(), foreign.id() as i32, Path::new("/tmp/s"));
        let killed = kill_leftovers(registry.path());
        assert_eq!(killed, vec![ours.id() as i32]);
        assert!(ours.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(
            foreign.try_wait().unwrap().is_none(),
            "the unmarked group is left alone"
        );
        foreign.kill().unwrap();
        let _ = foreign.wait();
        assert_eq!(std::fs::read_dir(registry.path()).unwrap().count(), 0);
    }
}
