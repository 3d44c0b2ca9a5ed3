//! The open-files limit (`RLIMIT_NOFILE`) of the daemon and of a worker.
//!
//! The daemon keeps two files open for each session it drives (the session's folder and its
//! `_worker.lock`, both locked while it owns the session), a few for each session it is
//! opening (at most [`OPENING_AT_ONCE`] at once), and a few for each running agent (its two
//! pipes, its pidfd, its log, and a stderr log once the agent writes there). Linux starts processes with a soft limit of
//! 1024 as a rule, under what a fleet needs (1,000 sessions, or 256 agents at once), and a
//! hard limit far above it. So the daemon raises its soft limit to the hard one when it starts,
//! and checks that what it is asked to hold fits in it: a fleet over the limit is refused with
//! the numbers and what to do, instead of failing attempts at random with "Too many open
//! files".

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Sessions the daemon opens at once (their folder made or locked, their state read and
/// mended); the others wait for a turn.
pub const OPENING_AT_ONCE: usize = 8;
/// For each session being opened: its two locks, the state's spare and the folder's sync, a
/// file read, and a journal appended, at most.
const PER_OPENING: u64 = 8;
/// The daemon's own files: its lock, log and control socket, the runtime's descriptors and the
/// bot's connections, with room to spare (64), at most 64 control connections and 64 of the
/// dashboard's at once, and the sessions being opened.
const BASE: u64 = 64 + 64 + 64 + OPENING_AT_ONCE as u64 * PER_OPENING;
/// For each running agent: stdout and stderr pipes, the pidfd, the log, the stderr log, and
/// one more for the files a save or a sweep opens for a moment.
const PER_AGENT: u64 = 6;
/// For each session driven: its folder and its `_worker.lock`, both held locked.
const PER_SESSION: u64 = 2;
/// Where a hard limit of "unlimited" is taken to end (Linux's `nr_open` by default).
const UNLIMITED: u64 = 1 << 20;

/// The process's open-files limit, after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now: what the process may hold.
    pub limit: u64,
    /// The soft limit it started with.
    pub was: u64,
}

/// Raises the soft open-files limit to the hard one, and returns it. The agents inherit the
/// raised limit. When the limit cannot be read or set, it is left as it was.
pub fn raise() -> OpenFiles {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return OpenFiles {
            limit: UNLIMITED,
            was: UNLIMITED,
        };
    };
    let target = hard.min(UNLIMITED);
    if soft >= target || setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_err() {
        return OpenFiles {
            limit: soft,
            was: soft,
        };
    }
    OpenFiles {
        limit: target,
        was: soft,
    }
}

/// About how many files a daemon driving `sessions` sessions with up to `agents` agents at
/// once keeps open.
pub fn needed(sessions: usize, agents: usize) -> u64 {
    BASE + PER_SESSION * sessions as u64 + PER_AGENT * agents as u64
}

/// The most agents at once that fit in `limit` beside `sessions` sessions (0 when none does).
pub fn most_agents(limit: u64, sessions: usize) -> usize {
    let left = limit.saturating_sub(BASE + PER_SESSION * sessions as u64);
    (left / PER_AGENT) as usize
}

/// What a person does about a limit that is too low for `needed` files.
pub fn advice(needed: u64) -> String {
    // A round figure with room for the fleet to grow.
    let suggest = needed.saturating_mul(2).max(4096).next_power_of_two();
    format!(
        "raise it (`ulimit -n {suggest}` in the shell that starts samocode, or \
         LimitNOFILE={suggest} in its systemd unit) and start it again"
    )
}

/// Checks that `sessions` sessions and `agents` agents at once fit in `limit`; the error says
/// by how much they do not, and what to do.
pub fn check(limit: u64, sessions: usize, agents: usize) -> Result<(), String> {
    let needed = needed(sessions, agents);
    if needed <= limit {
        return Ok(());
    }
    Err(format!(
        "{sessions} sessions with up to {agents} agents at once need about {needed} open files, \
         over this process's limit of {limit}: {}",
        advice(needed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_over_the_limit_is_refused_with_its_numbers_and_what_to_do() {
        // Linux's usual soft limit against 1,000 sessions at 64 agents at once.
        let error = check(1024, 1000, 64).unwrap_err();
        assert!(error.contains("1000 sessions"), "{error}");
        assert!(error.contains("about 2640 open files"), "{error}");
        assert!(error.contains("limit of 1024"), "{error}");
        assert!(error.contains("ulimit -n 8192"), "{error}");
        assert!(error.contains("LimitNOFILE=8192"), "{error}");
        assert!(check(2640, 1000, 64).is_ok());
        // 10,000 parked sessions fit a hard limit of 524288 (systemd's default) easily.
        assert!(check(524_288, 10_000, 256).is_ok());
    }

    #[test]
    fn the_most_agents_that_fit_leave_room_for_the_sessions() {
        assert_eq!(most_agents(1024, 0), 128);
        assert_eq!(most_agents(1024, 350), 11);
        assert_eq!(most_agents(1024, 2000), 0);
        let agents = most_agents(1024, 350);
        assert!(check(1024, 350, agents).is_ok());
        assert!(check(1024, 350, agents + 1).is_err());
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let raised = raise();
        assert!(raised.limit >= soft);
        assert_eq!(raised.was, soft);
        assert!(raised.limit <= hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, raised.limit);
    }
}
