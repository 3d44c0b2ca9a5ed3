//! Finding and killing an attempt's processes by the markers in their environment.
//!
//! Every process an agent starts inherits [`SESSION_MARKER`] (the session folder) and
//! [`ATTEMPT_MARKER`] (the attempt). A process that left the agent's process group (`setsid`)
//! is out of reach of `killpg`, and a worker that crashed left its agents running with nobody to
//! stop them; both are found here by reading `/proc/<pid>/environ` (a live thread's, when the
//! main thread has exited while others run), and killed only when the markers name the session
//! (and, at the end of an attempt, the attempt) being cleaned up, so an unrelated program, or
//! another session's agent, is never touched.
//!
//! Reading every process of the machine at the end of every attempt costs too much (half a
//! millisecond per hundred processes), so a worker makes itself the child subreaper of what it
//! starts ([`adopt_orphans`]): a descendant whose parent dies becomes the worker's own child
//! instead of init's. Once an attempt's group is gone, whatever of it is still alive is among
//! the worker's children ([`clear_attempt`]), a handful to look at. The worker also reaps those
//! adopted children when they die. A full scan remains for a dead predecessor's leftovers.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use super::launch::{ATTEMPT_MARKER, SESSION_MARKER};

/// Kills (SIGKILL) every live process whose environment names `session` and, when given,
/// `attempt`. Returns the pids it killed. This process itself is never among them.
pub fn kill_marked(session: &Path, attempt: Option<&str>) -> Vec<i32> {
    let wanted_session = entry(SESSION_MARKER, session.as_os_str().as_bytes());
    let wanted_attempt = attempt.map(|a| entry(ATTEMPT_MARKER, a.as_bytes()));
    // The session's folder itself: a marker that spells it another way (through a link the
    // project was reached by, a bind mount, a folder renamed since) names it all the same.
    let folder = identity(session);
    let prefix = entry(SESSION_MARKER, b"");
    let names_session = |var: &[u8]| {
        var == wanted_session.as_slice()
            || var.strip_prefix(prefix.as_slice()).is_some_and(|named| {
                folder.is_some()
                    && identity(Path::new(std::ffi::OsStr::from_bytes(named))) == folder
            })
    };
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
        let Some(environ) = environ_of(pid) else {
            continue;
        };
        let has = |wanted: &[u8]| environ.split(|b| *b == 0).any(|var| var == wanted);
        if !environ.split(|b| *b == 0).any(names_session)
            || wanted_attempt.as_deref().is_some_and(|a| !has(a))
        {
            continue;
        }
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed.push(pid);
        }
    }
    wait_gone(&killed);
    killed
}

/// The device and inode of the folder at `path` (links followed), when it can be looked at.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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

/// True while a thread of `pid` runs: its main thread, or, when that one has exited (a zombie
/// leader), any other.
fn running(pid: i32) -> bool {
    let alive = |stat: &Path| {
        std::fs::read_to_string(stat).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    };
    if alive(Path::new(&format!("/proc/{pid}/stat"))) {
        return true;
    }
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks
            .filter_map(Result::ok)
            .any(|task| alive(&task.path().join("stat")))
    })
}

/// The environment of `pid`, from `/proc`: its main thread's, or, when that one has exited while
/// others run (a zombie leader, whose `/proc/PID/environ` fails with ESRCH here, and may read
/// empty on older kernels), another thread's (the threads share it). `None` when none can be
/// read: gone, or another user's.
fn environ_of(pid: i32) -> Option<Vec<u8>> {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) if !environ.is_empty() => return Some(environ),
        Ok(_) => {}
        Err(error) if error.raw_os_error() == Some(nix::libc::ESRCH) => {}
        // Another user's, or gone.
        Err(_) => return None,
    }
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read(task.path().join("environ")).ok())
        .find(|environ| !environ.is_empty())
}

/// An agent's process found behind a request: one of its own ([`agent_behind`]), or one
/// below the worker that started it, whatever its environment (an orphan an agent left, its
/// markers cleared or set to another's, is adopted by that worker: [`descends_from`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAsker {
    /// A process of the attempt `attempt` of the session in folder `session` (its markers,
    /// or those of its nearest ancestor that carries them).
    Marked { session: PathBuf, attempt: String },
    /// Process `pid`, below the worker.
    BelowStarter { pid: i32 },
}

impl std::fmt::Display for AgentAsker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAsker::Marked { session, attempt } => write!(
                f,
                "the agent of session {} (attempt {attempt})",
                session
                    .file_name()
                    .map(|name| name.to_string_lossy())
                    .unwrap_or_else(|| session.to_string_lossy())
            ),
            AgentAsker::BelowStarter { pid } => {
                write!(f, "a process the daemon started (pid {pid})")
            }
        }
    }
}

/// Whose agent the process `pid` is by the markers: the attempt whose [`ATTEMPT_MARKER`] the
/// nearest of it and its ancestors carries (always [`AgentAsker::Marked`]). `None` for a
/// person's process. Whose session the marker names is for the caller to weigh: an agent
/// working on a project of its own (samocode's own tests, run by an agent) acts there as that
/// project's person.
pub fn agent_behind(pid: i32) -> Option<AgentAsker> {
    let value = |environ: &[u8], key: &str| {
        let prefix = entry(key, b"");
        environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_slice()))
            .map(|value| std::ffi::OsStr::from_bytes(value).to_os_string())
    };
    let mut at = pid;
    // Deep enough for any shell's nesting; a loop in a read of a changing tree ends too.
    for _ in 0..256 {
        if at <= 1 {
            return None;
        }
        if let Some(environ) = environ_of(at)
            && let Some(attempt) = value(&environ, ATTEMPT_MARKER)
        {
            let session = value(&environ, SESSION_MARKER).unwrap_or_default();
            return Some(AgentAsker::Marked {
                session: PathBuf::from(session),
                attempt: attempt.to_string_lossy().into_owned(),
            });
        }
        at = parent_of(at)?;
    }
    None
}

/// Whether process `pid` descends from process `ancestor` (by their parents, as they are now;
/// `ancestor` may be pid 1, a container's daemon).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..256 {
        match parent_of(at) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

/// The parent of process `pid`, from `/proc/PID/stat` (its name, in parentheses, may hold
/// spaces and parentheses: the fields are read after the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Held (shared) by whoever starts an agent in a group of its own, from before the spawn until
/// the new pid is known to its `live` table, and (exclusive) by [`reap_adopted`]: otherwise an
/// agent that exits at once could be taken for an adopted orphan and reaped here before it
/// is registered, and its own waiter would find no child (ECHILD).
static SPAWNING: RwLock<()> = RwLock::new(());

/// Starting an agent: hold the guard until its pid is in the table `live` reads.
pub fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Set once this process adopts the orphans of its descendants.
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// Makes this process the child subreaper of everything it starts (Linux's
/// `PR_SET_CHILD_SUBREAPER`); true when it is. Called once, at start, by a worker.
pub fn adopt_orphans() -> bool {
    let adopting = nix::sys::prctl::set_child_subreaper(true).is_ok();
    ADOPTING.store(adopting, Ordering::Relaxed);
    adopting
}

/// After SIGKILL to an attempt's process group `pgid`: kills every process of the attempt that
/// left the group, and reaps them; `settled` (the main process is reaped) also waits, briefly,
/// until the group is empty, so that nothing of it is missed.
/// `live` says whether a pid is the main process of a running agent (reaped by its own
/// waiter, never here). Returns the pids killed.
pub fn clear_attempt(
    pgid: i32,
    session: &Path,
    attempt: &str,
    settled: bool,
    live: &dyn Fn(i32) -> bool,
) -> Vec<i32> {
    if !ADOPTING.load(Ordering::Relaxed) {
        return kill_marked(session, Some(attempt));
    }
    let wanted_session = entry(SESSION_MARKER, session.as_os_str().as_bytes());
    let wanted_attempt = entry(ATTEMPT_MARKER, attempt.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut killed = Vec::new();
    loop {
        // Kernel order: a dying process hands its children over before it becomes a zombie,
        // so once the group is empty every escaped descendant is a child of ours (or of one).
        // The children are read after that check, once for both reaping and searching.
        let group_gone = killpg(Pid::from_raw(pgid), None).is_err();
        let adopted = reap_adopted(live);
        let mut found = false;
        for pid in adopted.running {
            let Some(environ) = environ_of(pid) else {
                continue;
            };
            let has = |wanted: &[u8]| environ.split(|b| *b == 0).any(|var| var == wanted);
            if has(&wanted_session) && has(&wanted_attempt) {
                found = true;
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    killed.push(pid);
                }
            }
        }
        if !settled || (group_gone && !found) || Instant::now() > deadline {
            break;
        }
        // A zombie just reaped may have been the group's last member: look again at once.
        if !adopted.reaped {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wait_gone(&killed);
    if !killed.is_empty() {
        reap_adopted(live);
    }
    killed
}

/// Reaps the adopted children that have died, outside any attempt's sweep: under an engine
/// that runs no agent here (NATS, Kubernetes), the orphans of the daemon's own commands (git's
/// detached maintenance after a merge) would otherwise stay zombies for the daemon's life.
/// `live` as for [`clear_attempt`].
pub fn reap_dead_orphans(live: &dyn Fn(i32) -> bool) {
    if ADOPTING.load(Ordering::Relaxed) {
        reap_adopted(live);
    }
}

/// What [`reap_adopted`] found among the adopted children.
struct Adopted {
    /// Those still running.
    running: Vec<i32>,
    /// Whether it reaped any.
    reaped: bool,
}

/// Reaps adopted children that died: zombies outside this process's own group (a child this
/// process started for itself, such as git, stays in its group and is left to its waiter) that
/// are not a running agent's main process. Returns the children that still run (but for the
/// running agents' main processes).
fn reap_adopted(live: &dyn Fn(i32) -> bool) -> Adopted {
    let _no_spawn = SPAWNING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let own = nix::unistd::getpgrp().as_raw();
    let mut adopted = Adopted {
        running: Vec::new(),
        reaped: false,
    };
    for pid in children() {
        if live(pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next();
        let pgid: i32 = fields.nth(1).and_then(|f| f.parse().ok()).unwrap_or(own);
        match state {
            Some("Z") if pgid != own => {
                // A zombie leader whose other threads still run is not reaped: it runs (only a
                // real reap lets the caller look again without a pause).
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => adopted.running.push(pid),
                    Ok(_) => adopted.reaped = true,
                    Err(_) => {}
                }
            }
            Some("Z" | "X") => {}
            _ => adopted.running.push(pid),
        }
    }
    adopted
}

/// The adopted children of this process. An orphan is handed to the subreaper's first live
/// thread, the main thread (which lives as long as the process), so only its list is read:
/// the other threads' lists hold the agents they started, which are never adopted orphans, and
/// a daemon may have dozens of threads (the blocking pool).
fn children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(list) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) else {
        return Vec::new();
    };
    list.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .collect()
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

    /// A command the agent runs to act as a person (`samocode answer` for its own questions)
    /// is known for an agent's: by its markers, also when it cleared them (its parent's are
    /// read), and below a worker that adopts what agents leave, whatever its environment.
    #[test]
    fn an_agents_process_is_known_for_one_and_a_persons_is_not() {
        use std::io::BufRead;
        let mut agent = Command::new("sh")
            .args([
                "-c",
                "env -u SAMOCODE_SESSION -u SAMOCODE_ATTEMPT sleep 30 & echo $!; wait",
            ])
            .env(SESSION_MARKER, "/p/sessions/26-12-07-own")
            .env(ATTEMPT_MARKER, "f7-a1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(agent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let cleared: i32 = line.trim().parse().unwrap();
        // Until it has exec'd, /proc shows the shell's own environment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(format!("/proc/{cleared}/cmdline"))
            .is_ok_and(|cmdline| !cmdline.starts_with(b"sleep"))
        {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let found = agent_behind(cleared).unwrap();
        assert_eq!(
            found,
            AgentAsker::Marked {
                session: PathBuf::from("/p/sessions/26-12-07-own"),
                attempt: "f7-a1".into()
            }
        );
        assert_eq!(
            found.to_string(),
            "the agent of session 26-12-07-own (attempt f7-a1)"
        );
        let mut person = sleeper(&[]);
        let pid = person.id() as i32;
        assert_eq!(agent_behind(pid), None);
        let me = std::process::id() as i32;
        assert!(descends_from(cleared, me) && descends_from(pid, me));
        assert!(!descends_from(me, pid));
        for child in [&mut agent, &mut person] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = kill(Pid::from_raw(cleared), Signal::SIGKILL);
    }

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

    /// One read of the adopted children both lists those that run (what the sweep searches for
    /// the attempt's markers) and reaps the dead, and says whether it reaped: the sweep then
    /// looks again at once instead of pausing.
    #[test]
    fn an_adopted_child_is_listed_while_it_runs_and_reaped_once_dead() {
        adopt_orphans();
        // sh starts sleep in its own group and exits: the sleep is orphaned and adopted here.
        let out = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .process_group(0)
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // Every other child is another test's business.
        let others = |p: i32| p != pid;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reap_adopted(&others).running.contains(&pid) {
            assert!(Instant::now() < deadline, "the orphan was not adopted");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        loop {
            let adopted = reap_adopted(&others);
            if adopted.reaped {
                assert!(
                    !adopted.running.contains(&pid),
                    "a reaped child is not running"
                );
                break;
            }
            assert!(Instant::now() < deadline, "the dead orphan was not reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_err(),
            "reaped, not left a zombie"
        );
    }

    /// An agent that exits at once, before its starter has entered it in the live table, is
    /// not reaped by a sweep running then: the sweep waits for the spawn to finish, and the
    /// agent's own waiter gets its exit status (without the gate: ECHILD).
    #[test]
    fn an_agent_exiting_before_it_is_registered_is_left_to_its_own_waiter() {
        adopt_orphans();
        let registered = std::sync::Arc::new(std::sync::Mutex::new(None::<i32>));
        let spawning = spawning();
        let mut child = Command::new("true").process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) {
            assert!(Instant::now() < deadline, "true did not exit");
            std::thread::sleep(Duration::from_millis(1));
        }
        let table = registered.clone();
        let sweep = std::thread::spawn(move || {
            // Only this test's child is the sweep's business: other tests' children are
            // theirs to wait for.
            reap_adopted(&|p| p != pid || *table.lock().unwrap() == Some(p));
        });
        std::thread::sleep(Duration::from_millis(50));
        *registered.lock().unwrap() = Some(pid);
        drop(spawning);
        sweep.join().unwrap();
        assert!(child.wait().unwrap().success());
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

    #[test]
    fn a_marker_that_reaches_the_session_by_another_path_names_it() {
        // The agent was started through a link to the sessions folder (or a bind mount, or
        // a folder renamed since): the next worker, looking by the real path, found nothing,
        // and its own agent ran beside the old one.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("sessions-real");
        std::fs::create_dir_all(real.join("26-11-24-x")).unwrap();
        std::fs::create_dir_all(real.join("26-11-24-y")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("sessions")).unwrap();
        let through_link = dir.path().join("sessions/26-11-24-x");
        let mut ours = sleeper(&[(SESSION_MARKER, through_link.to_str().unwrap())]);
        let mut other = sleeper(&[(
            SESSION_MARKER,
            dir.path().join("sessions/26-11-24-y").to_str().unwrap(),
        )]);
        assert_eq!(
            kill_marked(&real.join("26-11-24-x"), None),
            vec![ours.id() as i32]
        );
        ours.wait().unwrap();
        assert!(other.try_wait().unwrap().is_none(), "left alone");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
