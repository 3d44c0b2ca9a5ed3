//! The session folder on disk (PROTOCOL.md section 2).
//!
//! [`SessionFolder`] reads; [`SessionStore`] is a folder held under the worker lock, and is the
//! only way to write. State and notebook files are replaced atomically (temp file in the same
//! folder, fsync, rename), journals are appended line by line and fsynced (an accepted
//! `continue`'s rows in the background, carried by the state until then), attempt logs are
//! created new and never overwritten.
//!
//! Every file here can also be touched by the agent, so every read goes through
//! [`super::untrusted`]: no link followed, no blocking, regular files only, capped (the signal
//! at [`SIGNAL_LIMIT`], every other file at [`TEXT_LIMIT`]); appends refuse links and pipes too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jiff::{Timestamp, Zoned};
use nix::libc;
use serde::Serialize;

use crate::protocol::journal::{HistoryRow, IterationRow};
use crate::protocol::overview;
use crate::protocol::state::{LegacyError, SessionState};
use crate::protocol::{Phase, SignalError};

use super::untrusted::{self, Links, ReadError};

pub const STATE: &str = "_state.json";
pub const OVERVIEW: &str = "_overview.md";
pub const SIGNAL: &str = "_signal.json";
pub const HISTORY: &str = "_signal_history.jsonl";
pub const ITERATIONS: &str = "_iterations.jsonl";
pub const QA: &str = "_qa.md";
pub const LOGS: &str = "_logs";
pub const SESSION_LOG: &str = "session.log";
pub const LOCK: &str = "_worker.lock";
/// The contexts the attempts were given, one after another.
pub const CONTEXTS: &str = "_logs/contexts.md";
/// Frames the name of an attempt's log in [`CONTEXTS`].
pub const CONTEXT_MARK: &str = "=====";

/// The most samocode reads of `_signal.json`: a signal is a few hundred bytes.
pub const SIGNAL_LIMIT: u64 = 1 << 20;

/// How much of each journal's end a state is checked against when it is read (a dozen rows
/// or more): enough for the rows since a park; every opening of every session reads it.
const CHECKED_TAIL: u64 = 8 << 10;
/// The most samocode reads of any other session file (`_overview.md`, `_qa.md`,
/// `_state.json`, a plan): a notebook of hundreds of iterations stays far below it.
pub const TEXT_LIMIT: u64 = 4 << 20;

/// Why a session folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another worker holds the session's lock.
    #[error("another worker is driving session {dir}{}; wait for it to end, or stop it where it runs (Ctrl-C in the terminal of a `samocode run`), then try again", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },
    /// `_state.json` is not a state this build understands.
    #[error(
        "{path} is not a valid samocode state file: {message}; nothing was changed. If a later samocode wrote it, drive this session with that build; if it was edited by hand, undo the edit. Only as a last resort move it away: a new state is derived from _overview.md, its cost read back from _iterations.jsonl, but the gate it waited at, its budget and its notes are lost, and its phase starts again"
    )]
    BadState { path: PathBuf, message: String },
    /// `_state.json` is older than the session's journals.
    #[error(
        "{path} is older than the session's journals ({why}): put back from a backup, or copied from an older folder? Driven so, the session would run its finished work again and forget what a person decided since; nothing was changed. Put back the newest _state.json, or move this one away: a new state is derived from the journals and _overview.md (where the journals last left it)"
    )]
    Behind { path: PathBuf, why: String },
    /// The session's state names another folder, and a session beside it records the same
    /// worktree: one folder is a copy of the other.
    #[error(
        "{} and {} record one worktree ({}): one folder is a copy of the other (`cp -a`), and driven, both sessions' agents would work in one checkout; nothing was changed. Remove the copy; for a session of its own, `samocode start --session OTHER-NAME --dive ... --task ...`",
        .dir.display(),
        .other.display(),
        .worktree.display()
    )]
    Copied {
        dir: PathBuf,
        other: PathBuf,
        worktree: PathBuf,
    },
    /// A Python samocode overview could not be read.
    #[error("{path}: {source}")]
    Legacy {
        path: PathBuf,
        #[source]
        source: LegacyError,
    },
    /// The folder holds neither `_state.json` nor `_overview.md`.
    #[error(
        "{0} is not a samocode session (no _state.json or _overview.md); move it out of the sessions folder, or choose another session name"
    )]
    NotASession(PathBuf),
    /// A session file is a link, a pipe, too large or not UTF-8 (or could not be read).
    #[error(transparent)]
    Unreadable(#[from] ReadError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces a file atomically: a temp file beside it, fsync, rename, then fsync of the
/// directory, so that a crash (of the worker or of the machine) leaves either the old or the
/// new contents, never half of one and never a rename that is lost. Safe with several writers.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io("cannot create a temp file in", dir))?;
    temp.write_all(contents).map_err(io("cannot write", path))?;
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(file_mode()))
            .map_err(io("cannot set the mode of", path))?;
    }
    temp.as_file()
        .sync_data()
        .map_err(io("cannot sync", path))?;
    temp.persist(path)
        .map_err(|e| io("cannot replace", path)(e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync the directory", dir))
}

/// The time of a Flow Log line, `MM-DD HH:MM` in local time.
fn flow_stamp() -> String {
    Zoned::now().strftime("%m-%d %H:%M").to_string()
}

/// A journal a row was appended to without waiting for the disk, still open.
pub type Unsynced = (PathBuf, File);

/// Waits until what was appended to journals, through the files the appends used, is on the
/// disk. Blocking; run in the background.
pub fn sync_appended(files: Vec<Unsynced>) -> Result<(), StoreError> {
    for (path, file) in files {
        file.sync_data().map_err(io("cannot sync", &path))?;
    }
    Ok(())
}

/// Waits until what was appended to the session's two journals is on the disk, whoever
/// appended it (a worker that was killed, say).
pub fn sync_journals(dir: &Path) -> Result<(), StoreError> {
    for file in [ITERATIONS, HISTORY] {
        let path = dir.join(file);
        // Read-only is enough to sync; a link or a pipe in a journal's place is not synced
        // through (the append refused it already).
        if let Some(journal) = untrusted::open(&path, Links::Refuse)? {
            journal.sync_data().map_err(io("cannot sync", &path))?;
        }
    }
    Ok(())
}

/// Replaces a file of a locked session folder atomically, for its one writer, without waiting
/// for the rename itself to reach the disk: after a crash of the machine the file holds the
/// old or the new contents, whole.
///
/// The new contents are written and synced into a spare file beside it, `.NAME.prev`, which is
/// then exchanged with the file in one atomic rename (`RENAME_EXCHANGE`): the spare keeps the
/// previous version and is reused by the next replace. Creating a new file for every replace
/// costs more than all the rest of an iteration on ext4 (inode allocation). A spare that is not
/// a plain file of ours with one link (a link, a pipe, a hard link to another file) is removed,
/// never written through; where the exchange is not supported a plain rename takes its place.
fn replace(path: &Path, contents: &[u8]) -> Result<Replaced, StoreError> {
    let spare_path = spare_of(path);
    let (mut spare, old_len) = open_spare(&spare_path).map_err(io("cannot write", &spare_path))?;
    // Written over in place and only then cut to length: truncating to zero first would free
    // and reallocate its blocks, and ext4 flushes a file truncated to zero when it is renamed,
    // which cost more than the rest of the replace.
    spare
        .write_all(contents)
        .and_then(|()| match old_len > contents.len() as u64 {
            true => spare.set_len(contents.len() as u64),
            false => Ok(()),
        })
        .and_then(|()| spare.sync_data())
        .map_err(io("cannot write", &spare_path))?;
    drop(spare);
    match exchange(&spare_path, path) {
        Ok(()) => Ok(Replaced::Exchanged),
        // No file yet, or a filesystem without the exchange: a plain rename.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            std::fs::rename(&spare_path, path)
                .map(|()| Replaced::Renamed)
                .map_err(io("cannot replace", path))
        }
        Err(errno) => Err(io("cannot replace", path)(errno.into())),
    }
}

/// Appends `bytes`, whole lines, to `file` (open for reading and appending) so that every line
/// of it stays whole: a last line left cut (by a crash, or by a full disk before this fix) is
/// ended first, so the new line never joins it, and a write that fails (a full disk) is cut
/// back off, so no part of it stays to join the next.
/// `len` is the file's length, as its metadata just read gives it.
pub fn append_whole(file: &mut File, len: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut last = [b'\n'];
    if len > 0 {
        file.read_exact_at(&mut last, len - 1)?;
    }
    let written = match last {
        [b'\n'] => file.write_all(bytes),
        _ => file.write_all(&[b"\n", bytes].concat()),
    };
    if let Err(error) = written {
        let _ = file.set_len(len);
        return Err(error);
    }
    Ok(())
}

/// The last `limit` bytes of a file, as text (empty when it cannot be read).
pub fn tail(path: &Path, limit: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(limit)));
    let mut bytes = Vec::new();
    let _ = file.take(limit).read_to_end(&mut bytes);
    String::from_utf8_lossy(from_a_character(&bytes, len > limit)).into_owned()
}

/// `bytes` from their first whole character, when they were cut from a longer text (`cut`):
/// a window that begins inside a UTF-8 character begins at the next one.
pub fn from_a_character(bytes: &[u8], cut: bool) -> &[u8] {
    let inside = match cut {
        true => bytes
            .iter()
            .take(3)
            .take_while(|b| (0x80..0xC0).contains(*b))
            .count(),
        false => 0,
    };
    &bytes[inside..]
}

/// The stderr log beside an attempt's stdout log (`X.jsonl`: `X.stderr.log`), made when the
/// agent first writes there.
pub fn stderr_log_of(log: &Path) -> PathBuf {
    log.with_extension("stderr.log")
}

/// Where an attempt log stands among a session's: its iteration, its attempt and the number a
/// second log of the same second got (`-2`), from its name; a name not of that form first.
pub fn log_order(path: &Path) -> Option<(u32, u32, u32)> {
    let stem = path.file_stem()?.to_str()?;
    let fields: Vec<&str> = stem.split('-').collect();
    let iteration = fields.get(3)?.parse().ok()?;
    let attempt = fields.get(5)?.strip_prefix('a')?.parse().ok()?;
    let again = match fields.get(6) {
        Some(n) => n.parse().ok()?,
        None => 1,
    };
    Some((iteration, attempt, again))
}

/// How a [`replace`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Replaced {
    /// The spare now holds the version before: [`undo_replace`] puts it back.
    Exchanged,
    /// There was no version before (or no exchange on this filesystem): nothing to put back.
    Renamed,
}

/// Puts back the version a [`replace`] of `path` that exchanged has replaced (the two names
/// swap again), for a change that must not stand alone when the next write failed.
fn undo_replace(path: &Path) -> Result<(), StoreError> {
    exchange(&spare_of(path), path).map_err(|errno| io("cannot put back", path)(errno.into()))
}

/// The spare a [`replace`] of `path` writes into: `.NAME.prev` beside it.
fn spare_of(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(".{name}.prev"))
}

/// Swaps the names `a` and `b` in one atomic rename (`RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
}

/// Opens the spare of a replace for writing at its start, with its length: the one left by the
/// last replace when it is a plain file of this user with no other name, else a new one.
fn open_spare(path: &Path) -> std::io::Result<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let existing = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match existing {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() && meta.nlink() == 1 && meta.uid() == nix::unistd::geteuid().as_raw()
            {
                // The file it becomes has the mode a new file gets (left 0600 by earlier
                // builds, the session's files flipped between two modes at every write).
                if meta.mode() & 0o777 != file_mode() {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(file_mode()))?;
                }
                return Ok((file, meta.len()));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // A symbolic link (ELOOP), a pipe without a reader (ENXIO): not ours to write
        // through; its name goes. A directory is refused.
        Err(_) => remove_any(path)?,
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    Ok((file, 0))
}

/// The mode a new file of this process gets: 0666 under its umask, as the session's other
/// files (the journals, the logs) get it. Read once, from `/proc/self/status` (setting the
/// umask to read it would race other threads' creations); 022 where it cannot be read.
pub fn file_mode() -> u32 {
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .unwrap_or(0o022);
        0o666 & !umask
    })
}

/// Removes the link, pipe or file that has this name; a directory is an error.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(std::io::Error::other(
            "it is a directory, where samocode keeps the previous version of a file: move it away",
        )),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A session folder, for reading.
#[derive(Debug, Clone)]
pub struct SessionFolder {
    dir: PathBuf,
}

impl SessionFolder {
    pub fn new(dir: impl Into<PathBuf>) -> SessionFolder {
        SessionFolder { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder name (`YY-MM-DD-name`).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Reads a file of the folder (at most [`TEXT_LIMIT`] bytes of UTF-8, never through a link
    /// or a pipe); `None` when it does not exist.
    pub fn read(&self, file: &str) -> Result<Option<String>, StoreError> {
        Ok(untrusted::read_text(
            &self.path(file),
            TEXT_LIMIT,
            Links::Refuse,
        )?)
    }

    /// The state: `_state.json`, else derived from a Python samocode `_overview.md`.
    pub fn load_state(&self) -> Result<SessionState, StoreError> {
        let path = self.path(STATE);
        if let Some(text) = self.read(STATE)? {
            let state: SessionState =
                serde_json::from_str(&text).map_err(|e| StoreError::BadState {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if state.schema != crate::protocol::state::SCHEMA {
                return Err(StoreError::BadState {
                    path,
                    message: format!(
                        "schema {} is a later samocode's (this build reads 1)",
                        state.schema
                    ),
                });
            }
            if let Some(why) = self.journaled_since(&state) {
                return Err(StoreError::Behind { path, why });
            }
            // Named after another folder (copied, or renamed): a copy is refused.
            if state.name != self.name()
                && let Some(worktree) = &state.worktree
                && let Some(other) = self.beside_on(worktree)
            {
                return Err(StoreError::Copied {
                    dir: self.dir.clone(),
                    other,
                    worktree: worktree.clone(),
                });
            }
            return Ok(state);
        }
        let Some(text) = self.read(OVERVIEW)? else {
            return Err(StoreError::NotASession(self.dir.clone()));
        };
        // A Python run that stopped at a gate left its signal saying which.
        let signal = self.read(SIGNAL).ok().flatten();
        let mut state = SessionState::from_legacy_overview(
            &self.name(),
            &text,
            signal.as_deref(),
            Timestamp::now(),
        )
        .map_err(|source| StoreError::Legacy {
            path: self.path(OVERVIEW),
            source,
        })?;
        // A samocode session whose state was moved away (the advice of `BadState`): what its
        // attempts cost, their agent time and their agent sessions are in its journal.
        let mut last_attempt: Option<IterationRow> = None;
        self.each_row(ITERATIONS, |row: IterationRow| {
            state.spend(&row);
            state.iteration = state.iteration.max(row.iteration);
            last_attempt = Some(row);
        })?;
        self.where_the_journals_left_it(&mut state, last_attempt.as_ref())?;
        Ok(state)
    }

    /// Another session folder beside this one whose state records `worktree` (read as JSON
    /// alone, never checked further).
    fn beside_on(&self, worktree: &Path) -> Option<PathBuf> {
        let sessions = self.dir.parent()?;
        std::fs::read_dir(sessions)
            .ok()?
            .filter_map(Result::ok)
            // A link beside it (its old name kept pointing at it after a rename) is no copy.
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.path())
            .filter(|dir| *dir != self.dir && !super::worktree::same_dir(dir, &self.dir))
            .find(|dir| {
                let Ok(Some(text)) = untrusted::read_text(&dir.join(STATE), 4 << 20, Links::Refuse)
                else {
                    return false;
                };
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|state| state["worktree"].as_str().map(PathBuf::from))
                    .is_some_and(|theirs| super::worktree::same_dir(&theirs, worktree))
            })
    }

    /// What the journals hold that `state` came before, when they hold any: an older state put
    /// back (a backup restored, a file copied), which would run finished work again and forget
    /// what a person decided since. An iteration journaled after the state's own; or the state
    /// parked (at a gate, blocked, stopped) where a later accepted row of its iteration let it
    /// go on (a person's `approve`, `resume`, answers). A journal that cannot be read says so
    /// where it is used, not here.
    fn journaled_since(&self, state: &SessionState) -> Option<String> {
        use crate::protocol::RunState;
        // Only the journals' ends are read: every opening of every session (a daemon's start
        // with thousands of them, `status`) passes here.
        if let Ok(Some(row)) = self
            .newest_rows::<IterationRow>(ITERATIONS)
            .map(|mut rows| rows.next())
            && row.iteration > state.iteration
        {
            return Some(format!(
                "it is at iteration {}, _iterations.jsonl has iteration {}",
                state.iteration, row.iteration
            ));
        }
        let parked = matches!(
            state.status,
            RunState::Waiting { .. }
                | RunState::Blocked { .. }
                | RunState::Stopped { .. }
                | RunState::Failed { .. }
        );
        if !parked {
            return None;
        }
        let since = state.status.since()?;
        // The verdict of the attempt the state has in flight: a person stopped the session as
        // its agent ended, and the worker died after journaling the verdict, before saving
        // the state that takes it (the next worker takes it, see `recover::take_over`).
        let own_verdict = |row: &HistoryRow| {
            state.in_flight.is_some()
                && row.source == crate::protocol::journal::Source::Agent
                && (row.iteration, row.attempt) == (state.iteration, state.attempt)
        };
        // Any row since its park that let it go on: after an approval, a stop or a block at
        // the next launch may follow, and the approval is lost all the same.
        let went_on = self
            .newest_rows::<HistoryRow>(HISTORY)
            .ok()?
            .take_while(|row| row.at > since)
            .find(|row| {
                row.accepted
                    && matches!(row.outcome.as_str(), "queued" | "next")
                    && row.iteration >= state.iteration
                    && !own_verdict(row)
            })?;
        Some(format!(
            "it is {}, and _signal_history.jsonl has `{}` since, which let it go on",
            state.status.name(),
            went_on.status
        ))
    }

    /// A samocode session's state derived again (its `_state.json` deleted or moved away, its
    /// notebook perhaps an older one): where its last accepted verdict or person's command
    /// left it, by `_signal_history.jsonl` (a gate it waited at, a phase it moved on to),
    /// rather than where the notebook says. Without, its approval was lost and its planning
    /// paid again; with an older notebook, finished work ran again.
    fn where_the_journals_left_it(
        &self,
        state: &mut SessionState,
        last_attempt: Option<&IterationRow>,
    ) -> Result<(), StoreError> {
        use crate::protocol::{RunState, WaitFor};
        let rows = self.last_rows::<HistoryRow>(HISTORY)?;
        // The rows that moved the session: its verdicts and a person's commands (not a note,
        // nor a budget raised while it ran), and the parks the worker decided (not accepted,
        // with their reason); a refused signal retried moved nothing.
        let moved = |row: &&HistoryRow| {
            row.status != "tell"
                && (row.accepted || matches!(row.outcome.as_str(), "blocked" | "failed"))
                && row.outcome != "running"
        };
        let mut decisive = rows.iter().rev().filter(moved);
        let Some(last) = decisive.next() else {
            return Ok(());
        };
        state.iteration = state.iteration.max(last.iteration);
        let since = last.at;
        // As the agent's signal, kept beside its last attempt's log, says.
        let kept = || -> Result<Option<RunState>, StoreError> {
            match last_attempt {
                Some(row) => super::recover::settled_by(self, &row.log, row),
                None => Ok(None),
            }
        };
        // The row's reason, or where to find it.
        let said = |word: &str| {
            last.reason
                .clone()
                .unwrap_or_else(|| format!("{word} (see _signal_history.jsonl)"))
        };
        let gate_of = |phase: Phase| match phase {
            Phase::Requirements => WaitFor::QaAnswers,
            Phase::Planning => WaitFor::PlanApproval,
            _ => WaitFor::HumanAction,
        };
        match last.outcome.as_str() {
            "next" | "queued" => {
                state.phase = last.to.unwrap_or(last.from);
                state.status = RunState::Queued;
            }
            "stopped" => {
                state.phase = last.to.unwrap_or(last.from);
                // Stopped at a gate: the gate it waited at before, which `resume` goes back to.
                let waiting_for = match decisive.next() {
                    Some(before) if before.outcome == "waiting" => match kept()? {
                        Some(RunState::Waiting { wait_for, .. }) => Some(wait_for),
                        _ => Some(gate_of(before.from)),
                    },
                    _ => None,
                };
                state.status = RunState::Stopped {
                    at: since,
                    waiting_for,
                };
            }
            "failed" => {
                state.phase = last.from;
                state.status = RunState::Failed {
                    reason: said("failed"),
                    at: since,
                };
            }
            // A block the worker decided: its row's reason.
            "blocked" if !last.accepted => {
                state.phase = last.from;
                state.status = RunState::Blocked {
                    reason: said("blocked"),
                    needs: None,
                    since,
                };
            }
            parked @ ("waiting" | "blocked" | "done") => {
                state.phase = last.from;
                state.status = kept()?.unwrap_or_else(|| match parked {
                    "waiting" => RunState::Waiting {
                        wait_for: gate_of(last.from),
                        since,
                    },
                    "blocked" => RunState::Blocked {
                        reason: said("blocked"),
                        needs: None,
                        since,
                    },
                    _ => RunState::Done {
                        summary: None,
                        at: since,
                    },
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the folder holds a samocode session's journals (a session whose `_state.json`
    /// went missing, not one of the Python samocode).
    pub fn has_journals(&self) -> bool {
        [ITERATIONS, HISTORY]
            .iter()
            .any(|file| std::fs::symlink_metadata(self.path(file)).is_ok())
    }

    /// Calls `each` with every row of a journal, oldest first, read a line at a time; lines
    /// that are not rows of this kind are left out.
    pub fn each_row<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
        mut each: impl FnMut(T),
    ) -> Result<(), StoreError> {
        use std::io::BufRead;
        let path = self.path(file);
        let Some(journal) = untrusted::open(&path, Links::Refuse)? else {
            return Ok(());
        };
        for line in std::io::BufReader::new(journal).split(b'\n') {
            let line = line.map_err(io("cannot read", &path))?;
            if let Ok(row) = serde_json::from_slice(&line) {
                each(row);
            }
        }
        Ok(())
    }

    /// The text of `_signal.json`, or the protocol error of its absence, or of a signal that
    /// is not a small regular file (a pipe, a link, too large, not UTF-8): the agent made it,
    /// so the attempt is retried with the reason, then blocked, like any protocol error.
    pub fn read_signal(&self) -> Result<Result<String, SignalError>, StoreError> {
        Ok(
            match untrusted::read_text(&self.path(SIGNAL), SIGNAL_LIMIT, Links::Refuse) {
                Ok(Some(text)) => Ok(text),
                Ok(None) => Err(SignalError::Missing),
                Err(error) => Err(SignalError::Unreadable(error.to_string())),
            },
        )
    }

    /// The `_iterations.jsonl` row of the attempt whose log is `log`, if it was journaled.
    /// Rows are appended in order, so an attempt being taken over is among the last ones.
    pub fn journaled(&self, log: &str) -> Result<Option<IterationRow>, StoreError> {
        if let Some(row) = self.find_row(ITERATIONS, |row: &IterationRow| row.log == log)? {
            return Ok(Some(row));
        }
        // A row another build wrote (an outcome this one does not know, after a rollback): the
        // attempt is journaled all the same, its usage counts, and it is not journaled twice.
        // Read as interrupted: its verdict is not one this build can act on.
        let Some(mut value) =
            self.find_row(ITERATIONS, |row: &serde_json::Value| row["log"] == log)?
        else {
            return Ok(None);
        };
        let outcome = value["outcome"].to_string();
        value["outcome"] = serde_json::Value::from("interrupted");
        Ok(serde_json::from_value::<IterationRow>(value)
            .ok()
            .map(|mut row| {
                row.detail = Some(format!(
                    "journaled by another samocode build with outcome {outcome}"
                ));
                row
            }))
    }

    /// The last row of a journal that `wanted` picks: looked for among the last rows first,
    /// then, when not there, in the whole journal (a row longer than the tail, such as a
    /// `worktree_mutated` detail listing every changed path, may hide it), a line at a time.
    fn find_row<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
        wanted: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, StoreError> {
        let found = self.last_rows::<T>(file)?.into_iter().rev().find(&wanted);
        if found.is_some() {
            return Ok(found);
        }
        let path = self.path(file);
        let Some(journal) = untrusted::open(&path, Links::Refuse)? else {
            return Ok(None);
        };
        use std::io::BufRead;
        let mut last = None;
        for line in std::io::BufReader::new(journal).split(b'\n') {
            let line = line.map_err(io("cannot read", &path))?;
            if let Ok(row) = serde_json::from_slice::<T>(&line)
                && wanted(&row)
            {
                last = Some(row);
            }
        }
        Ok(last)
    }

    /// The phase an attempt's journaled verdict moved the session on to, when the agent's
    /// signal was an accepted `continue` (its `_signal_history.jsonl` row).
    pub fn continued_to(&self, attempt: &IterationRow) -> Result<Option<Phase>, StoreError> {
        Ok(self
            .verdict_of(attempt)?
            .filter(|row| row.outcome == "next")
            .map(|row| row.to.unwrap_or(row.from)))
    }

    /// The accepted verdict of an attempt's signal, as `_signal_history.jsonl` journaled it.
    pub fn verdict_of(&self, attempt: &IterationRow) -> Result<Option<HistoryRow>, StoreError> {
        let verdict = self
            .last_rows::<HistoryRow>(HISTORY)?
            .into_iter()
            .rev()
            .find(|row| {
                row.iteration == attempt.iteration
                    && row.attempt == attempt.attempt
                    && row.source == crate::protocol::journal::Source::Agent
            });
        Ok(verdict.filter(|row| row.accepted))
    }

    /// The attempts the take-over of a dead worker journaled as interrupted since `since` (a
    /// segment's start), from the journal's last rows: their spans were never exported.
    pub fn interrupted_since(&self, since: Option<Timestamp>) -> Vec<IterationRow> {
        let since = since.unwrap_or(Timestamp::MIN);
        self.last_rows::<IterationRow>(ITERATIONS)
            .unwrap_or_default()
            .into_iter()
            .filter(|row| {
                // Started within the segment (an attempt's start is taken after its segment
                // opens); one of an earlier segment started before.
                row.outcome == crate::protocol::journal::AttemptOutcome::Interrupted
                    && row.started_at >= since
                    && row
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains(super::recover::FOUND_BY_NEXT))
            })
            .collect()
    }

    /// The whole rows among the last [`TAIL`] bytes of a journal, oldest first; lines that are
    /// not rows of this kind are left out.
    fn last_rows<T: serde::de::DeserializeOwned>(&self, file: &str) -> Result<Vec<T>, StoreError> {
        self.rows_in_tail(file, 64 << 10)
    }

    /// The whole rows among the last `tail` bytes of a journal, oldest first.
    fn rows_in_tail<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
        tail: u64,
    ) -> Result<Vec<T>, StoreError> {
        let bytes = self.tail_of(file, tail)?;
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }

    /// The rows among the last [`CHECKED_TAIL`] bytes of a journal, newest first, each read
    /// only when it is asked for (most checks want one or two).
    fn newest_rows<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
    ) -> Result<impl Iterator<Item = T>, StoreError> {
        let bytes = self.tail_of(file, CHECKED_TAIL)?;
        let lines: Vec<Vec<u8>> = bytes
            .rsplit(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Ok(lines
            .into_iter()
            .filter_map(|line| serde_json::from_slice(&line).ok()))
    }

    /// The whole lines among the last `tail` bytes of a journal (at most 64 KiB).
    fn tail_of(&self, file: &str, tail: u64) -> Result<Vec<u8>, StoreError> {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 64 << 10;
        let tail = tail.min(TAIL);
        let path = self.path(file);
        let Some(mut f) = untrusted::open(&path, Links::Refuse)? else {
            return Ok(Vec::new());
        };
        let len = f.metadata().map_err(io("cannot read", &path))?.len();
        let start = len.saturating_sub(tail);
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.take(tail).read_to_end(&mut bytes))
            .map_err(io("cannot read", &path))?;
        // Begun inside a line: that line is not whole.
        if start > 0 {
            let first = memchr::memchr(b'\n', &bytes).map_or(bytes.len(), |at| at + 1);
            bytes.drain(..first);
        }
        Ok(bytes)
    }

    /// The newest attempt log, if any: the one of the highest iteration and attempt its name
    /// carries (`MM-DD-HHMMSS-NNN-phase-aK`), not the latest time in its name, which has no
    /// year (an attempt on January 1st is newer than one on December 31st).
    pub fn latest_log(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.path(LOGS))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .max_by(|a, b| log_order(a).cmp(&log_order(b)).then_with(|| a.cmp(b)))
    }

    /// Takes the worker lock, or reports who holds it.
    pub fn lock(self) -> Result<SessionStore, StoreError> {
        let path = self.path(LOCK);
        match crate::lockfile::acquire_folder(&self.dir, &path) {
            Ok(file) => Ok(SessionStore {
                folder: self,
                lock: Some(file),
            }),
            Err(crate::lockfile::LockError::Held { pid }) => Err(StoreError::Locked {
                dir: self.dir.clone(),
                pid,
            }),
            Err(crate::lockfile::LockError::Io(e)) => Err(io("cannot lock", &self.dir)(e)),
        }
    }
}

/// A session folder held by this worker; released when dropped.
#[derive(Debug)]
pub struct SessionStore {
    folder: SessionFolder,
    /// The flock of the session folder (and of its `_worker.lock`), held while this is.
    lock: Option<crate::lockfile::FolderLock>,
}

impl SessionStore {
    /// Whether the session's path now leads to another folder than the one this store holds
    /// locked (deleted and made again by someone else, who holds that one's lock).
    pub fn replaced(&self) -> bool {
        self.lock
            .as_ref()
            .is_some_and(|lock| lock.replaced_at(self.dir()))
    }
}

impl std::ops::Deref for SessionStore {
    type Target = SessionFolder;
    fn deref(&self) -> &SessionFolder {
        &self.folder
    }
}

/// The files of one agent attempt.
#[derive(Debug, Clone)]
pub struct AttemptFiles {
    /// stdout, `_logs/<MM-DD-HHMMSS>-<NNN>-<phase>-a<K>.jsonl`.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The context given to the agent, kept for audit and for large contexts.
    pub context: PathBuf,
}

impl AttemptFiles {
    /// Where the attempt's `_signal.json` is kept once read: `<attempt>.signal.json`.
    pub fn signal(&self) -> PathBuf {
        self.stdout.with_extension("signal.json")
    }

    /// The stdout log relative to the session folder, as recorded in `_iterations.jsonl`.
    pub fn relative_log(&self) -> String {
        format!(
            "{LOGS}/{}",
            self.stdout
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        )
    }
}

impl SessionStore {
    /// Lets go of the worker lock now rather than when the store is dropped (an actor's state
    /// may outlive the actor inside its termination event).
    pub fn release(&mut self) {
        self.lock.take();
    }

    /// Creates the folder of a new session (the caller has validated the name).
    pub fn create(dir: &Path) -> Result<SessionStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        SessionFolder::new(dir).lock()
    }

    /// Makes a new session folder whole or not at all: it is built under a hidden name beside
    /// it (`.NAME.new`, which `status` passes over), `first` writes its first files there,
    /// and only then is it renamed into place. A worker killed midway leaves the hidden folder
    /// alone, which the next creation of the name removes; never a folder that is neither a
    /// session nor free for a new one.
    pub fn create_whole(
        dir: &Path,
        first: impl FnOnce(&SessionStore) -> Result<(), StoreError>,
    ) -> Result<SessionStore, StoreError> {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        let parent = dir.parent().unwrap_or(Path::new("."));
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let building = parent.join(format!(".{name}.new"));
        match std::fs::symlink_metadata(&building) {
            // Refused while another creation holds it; removed once nobody does.
            Ok(meta) if meta.is_dir() => {
                let left = SessionFolder::new(&building).lock()?;
                std::fs::remove_dir_all(&building).map_err(io("cannot remove", &building))?;
                drop(left);
            }
            // Not ours (a link, a file): its name goes, never what it names.
            Ok(_) => std::fs::remove_file(&building).map_err(io("cannot remove", &building))?,
            Err(_) => {}
        }
        std::fs::create_dir(&building).map_err(io("cannot create", &building))?;
        let mut store = SessionFolder::new(&building).lock()?;
        first(&store)?;
        renameat2(
            AT_FDCWD,
            &building,
            AT_FDCWD,
            dir,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|errno| io("cannot create", dir)(errno.into()))?;
        sync_dir(parent)?;
        store.folder.dir = dir.to_path_buf();
        Ok(store)
    }

    /// Replaces a file of the session atomically and durably (see [`replace`]; the lock
    /// makes this the file's one writer).
    pub fn write_atomic(&self, file: &str, contents: &[u8]) -> Result<Replaced, StoreError> {
        let replaced = replace(&self.path(file), contents)?;
        sync_dir(&self.dir)?;
        Ok(replaced)
    }

    /// Puts back the version of `file` that the last [`Self::write_atomic`] replaced, when it
    /// exchanged one (`replaced`).
    pub fn undo_write(&self, file: &str, replaced: Replaced) -> Result<(), StoreError> {
        if replaced == Replaced::Exchanged {
            undo_replace(&self.path(file))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Saves the state and mirrors it into the worker's lines of `_overview.md`.
    ///
    /// Both files are replaced, then one sync of the folder makes both renames durable: the
    /// state's before the caller goes on (an agent is started only once its in-flight record
    /// is on the disk), the notebook's before its spare is written over by the next save.
    ///
    /// The notebook goes first: when it cannot be written, `_state.json` is left as it was, so
    /// a caller that keeps its state in memory until the save succeeds never disagrees with
    /// the disk. (The notebook's lines may be a save ahead of the state, as after a crash.)
    pub fn save(&self, state: &mut SessionState) -> Result<(), StoreError> {
        self.save_noting(state, None)
    }

    /// [`Self::save`], with `entry` appended to `## Flow Log` in the same write of the notebook:
    /// what the worker decided goes to disk with the state it decided, in one sync of the folder.
    pub fn save_noting(
        &self,
        state: &mut SessionState,
        entry: Option<&str>,
    ) -> Result<(), StoreError> {
        let saved = self.mirror_worker_lines(state, entry).and_then(|notebook| {
            // A state that cannot be saved takes the notebook's new lines back with it: the
            // Flow Log never records a decision the state does not hold.
            self.replace_state(state).inspect_err(|_| {
                if notebook == Some(Replaced::Exchanged) {
                    let _ = undo_replace(&self.path(OVERVIEW));
                }
            })
        });
        // Also after a failed state: the notebook's exchange must be on the disk before the
        // next save writes over its spare.
        sync_dir(&self.dir)?;
        saved
    }

    /// Saves `_state.json` alone: the notebook's worker lines stay as they are until the next
    /// [`Self::save`] (for a save that only tells `status` what the session does now).
    pub fn save_state(&self, state: &mut SessionState) -> Result<(), StoreError> {
        self.replace_state(state)?;
        sync_dir(&self.dir)
    }

    fn replace_state(&self, state: &mut SessionState) -> Result<(), StoreError> {
        state.updated_at = Timestamp::now();
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        replace(&self.path(STATE), &json).map(|_| ())
    }

    /// Writes the state's worker lines, and the Flow Log line `entry` when there is one, into
    /// `_overview.md` when that changes it (how, when it did). A crash may leave the lines a save behind or ahead
    /// of the state; the next save makes them agree.
    fn mirror_worker_lines(
        &self,
        state: &SessionState,
        entry: Option<&str>,
    ) -> Result<Option<Replaced>, StoreError> {
        let current = self.read(OVERVIEW)?;
        let mut updated = match &current {
            Some(text) => overview::apply_worker_lines(text, &state.worker_lines()),
            None => {
                overview::render_new(&state.name, &state.dive, &state.task, &state.worker_lines())
            }
        };
        if let Some(entry) = entry {
            updated = overview::append_flow_log(&updated, state.iteration, &flow_stamp(), entry);
        }
        if current.as_deref() == Some(updated.as_str()) {
            return Ok(None);
        }
        replace(&self.path(OVERVIEW), updated.as_bytes()).map(Some)
    }

    /// Moves the `_signal.json` an attempt wrote, once read, beside the attempt's log: the
    /// journal of what each attempt signalled, and no file deleted per iteration. (Without a
    /// filesystem journal, ext4 skips over every inode deleted in the last minute each time it
    /// makes a file: at 250 iterations a second that search was 40% of the daemon's CPU.)
    /// Anything but a plain file stays, for [`Self::remove_signal`]; so does the signal when
    /// the move fails.
    pub fn keep_signal(&self, files: &AttemptFiles) {
        let path = self.path(SIGNAL);
        if !std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file()) {
            return;
        }
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        let target = files.signal();
        if let Err(errno) = renameat2(
            AT_FDCWD,
            &path,
            AT_FDCWD,
            &target,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            tracing::debug!(%errno, target = %target.display(), "the signal stays; it is deleted before the next attempt");
        }
    }

    /// Deletes `_signal.json` before an attempt (a link or a pipe goes, not what it names).
    pub fn remove_signal(&self) -> Result<(), StoreError> {
        let path = self.path(SIGNAL);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot delete", &path)(e)),
        }
    }

    /// Appends to the journals the rows a state carries that they lack (their sync had not
    /// ended when the machine stopped), durably, and clears them from the state. Returns how
    /// many were missing. Call it (before [`super::recover::take_over`]) when the state
    /// carries rows or an attempt in flight.
    pub fn restore_unsynced(&self, state: &mut SessionState) -> Result<usize, StoreError> {
        // A worker killed before its sync ended leaves rows that are in memory only: they go
        // to the disk first, so what is found below (or replayed by the take-over) stays
        // found. A last line a machine stop cut is ended by the next append
        // ([`append_whole`]), so no row joins it.
        sync_journals(&self.dir)?;
        let rows = std::mem::take(&mut state.unsynced);
        let mut missing = 0;
        for row in &rows.iterations {
            if self.journaled(&row.log)?.is_none() {
                self.append_iteration(row)?;
                missing += 1;
            }
        }
        for row in rows.history.iter().chain(&rows.unjournaled) {
            if self.find_row(HISTORY, |r: &HistoryRow| r == row)?.is_none() {
                self.append_history(row)?;
                missing += 1;
            }
        }
        Ok(missing)
    }

    /// Appends, durably, the person's history rows the state carries because the journal
    /// could not take them when their command was saved, and drops from the state those it
    /// appended. Rows stay (for the next try) while the journal still refuses them.
    pub fn journal_waiting(&self, state: &mut SessionState) {
        while let Some(row) = state.unsynced.unjournaled.first() {
            if self.append_history(row).is_err() {
                return;
            }
            state.unsynced.unjournaled.remove(0);
        }
    }

    pub fn append_history(&self, row: &HistoryRow) -> Result<(), StoreError> {
        self.append_json(HISTORY, row, true).map(drop)
    }

    pub fn append_iteration(&self, row: &IterationRow) -> Result<(), StoreError> {
        self.append_json(ITERATIONS, row, true).map(drop)
    }

    /// Appends a row of an accepted `continue` without waiting for the disk, and returns the
    /// journal (with its path) for the caller to sync; until then, the caller keeps the row in
    /// the state it saves next.
    pub fn append_history_unsynced(&self, row: &HistoryRow) -> Result<Unsynced, StoreError> {
        self.append_json(HISTORY, row, false)
            .map(|file| (self.path(HISTORY), file))
    }

    /// See [`Self::append_history_unsynced`].
    pub fn append_iteration_unsynced(&self, row: &IterationRow) -> Result<Unsynced, StoreError> {
        self.append_json(ITERATIONS, row, false)
            .map(|file| (self.path(ITERATIONS), file))
    }

    fn append_json(
        &self,
        file: &str,
        row: &impl Serialize,
        durable: bool,
    ) -> Result<File, StoreError> {
        let mut line = serde_json::to_vec(row).expect("rows serialize");
        line.push(b'\n');
        self.append_with(file, &line, durable)
    }

    /// Appends one whole write to `file`; `durable` waits until it is on the disk. Returns the
    /// file, open.
    fn append_with(&self, file: &str, bytes: &[u8], durable: bool) -> Result<File, StoreError> {
        let path = self.path(file);
        // Never through a link the agent planted, and never blocked on a pipe it made.
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        let meta = f.metadata().map_err(io("cannot open", &path))?;
        if !meta.is_file() {
            return Err(io("cannot append to", &path)(std::io::Error::other(
                "not a regular file; move it away",
            )));
        }
        // One write call per row, so a crash leaves whole lines; fsync so none is lost.
        append_whole(&mut f, meta.len(), bytes).map_err(io("cannot append to", &path))?;
        if durable {
            f.sync_data().map_err(io("cannot sync", &path))?;
        }
        Ok(f)
    }

    /// Appends the context an attempt was given to `_logs/contexts.md` (for audit: one growing
    /// file rather than a new one per attempt), under a line naming the attempt's log. The
    /// caller passes the context whole, or its own part followed by a pointer to an earlier
    /// entry that holds the rest ([`super::context::standing_as_in`]).
    pub fn append_context(&self, log: &str, context: &str, rest: &str) -> Result<(), StoreError> {
        let entry = format!("{CONTEXT_MARK} {log} {CONTEXT_MARK}\n{context}{rest}\n");
        self.append_with(CONTEXTS, entry.as_bytes(), false)
            .map(drop)
    }

    /// Appends a line to `session.log`.
    pub fn log(&self, message: &str) {
        let line = format!(
            "{} {message}\n",
            Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(Timestamp::now())
        );
        // Not synced: the worker's own diary, and every line of it is also in the journals
        // or the state that were.
        if let Err(error) = self.append_with(SESSION_LOG, line.as_bytes(), false) {
            tracing::warn!(%error, "session.log not written");
        }
    }

    /// Names the files of a new attempt, not yet created: a name in use gets a numeric suffix,
    /// so no log is ever reused. The log is made by [`SessionStore::create_log`] once the attempt
    /// is recorded in the state, so that a crash in between leaves no log without its record.
    pub fn attempt_files(
        &self,
        iteration: u32,
        phase: Phase,
        attempt: u32,
    ) -> Result<AttemptFiles, StoreError> {
        let logs = self.path(LOGS);
        std::fs::create_dir_all(&logs).map_err(io("cannot create", &logs))?;
        let stamp = Zoned::now().strftime("%m-%d-%H%M%S").to_string();
        let base = format!("{stamp}-{iteration:03}-{phase}-a{attempt}");
        let stem = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|stem| std::fs::symlink_metadata(logs.join(format!("{stem}.jsonl"))).is_err())
            .expect("some suffix is free");
        let stdout = logs.join(format!("{stem}.jsonl"));
        Ok(AttemptFiles {
            stderr: stderr_log_of(&stdout),
            context: logs.join(format!("{stem}.context.md")),
            stdout,
        })
    }

    /// Creates the attempt's stdout log (new: an existing file is never written over), open
    /// for appending.
    pub fn create_log(&self, files: &AttemptFiles) -> Result<File, StoreError> {
        OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&files.stdout)
            .map_err(io("cannot create", &files.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RunState, WaitFor};

    #[test]
    fn second_lock_reports_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let err = SessionFolder::new(store.dir()).lock().unwrap_err();
        match err {
            StoreError::Locked { pid, .. } => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        drop(store);
        SessionFolder::new(dir.path().join("26-11-24-x"))
            .lock()
            .unwrap();
    }

    #[test]
    fn a_long_journal_is_searched_from_its_end_and_a_cut_line_is_left_out() {
        use crate::protocol::journal::Source;
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let now = Timestamp::now();
        let row = |iteration: u32| IterationRow {
            // Long rows, so the journal is many times the part that is read.
            detail: Some("x".repeat(997)),
            input_tokens: 1,
            output_tokens: 1,
            cost_usd: 0.5,
            ..IterationRow::ok(
                iteration,
                Phase::Implementation,
                &format!("_logs/{iteration}.jsonl"),
                now,
                now,
            )
        };
        for iteration in 1..=300 {
            store.append_iteration(&row(iteration)).unwrap();
        }
        assert!(std::fs::metadata(store.path(ITERATIONS)).unwrap().len() > 4 * (64 << 10));
        let last = store.journaled("_logs/300.jsonl").unwrap().unwrap();
        assert_eq!(last.iteration, 300);
        let rows = store.last_rows::<IterationRow>(ITERATIONS).unwrap();
        assert!(
            rows.len() > 40
                && rows
                    .windows(2)
                    .all(|w| w[1].iteration == w[0].iteration + 1)
        );
        assert!(store.journaled("_logs/301.jsonl").unwrap().is_none());
        // A row longer than the tail, then short ones: still found.
        let mut long = row(301);
        long.detail = Some("y".repeat(100 << 10));
        store.append_iteration(&long).unwrap();
        store.append_iteration(&row(302)).unwrap();
        assert_eq!(
            store
                .journaled("_logs/301.jsonl")
                .unwrap()
                .map(|r| r.iteration),
            Some(301)
        );
        assert_eq!(
            store
                .journaled("_logs/5.jsonl")
                .unwrap()
                .map(|r| r.iteration),
            Some(5),
            "an old row is found in the whole journal"
        );

        let verdict = |outcome: &str, to: Option<Phase>, source: Source| HistoryRow {
            at: now,
            iteration: 300,
            attempt: 1,
            source,
            from: Phase::Implementation,
            to,
            status: "continue".into(),
            accepted: true,
            reason: None,
            outcome: outcome.into(),
            by: None,
        };
        assert_eq!(store.continued_to(&last).unwrap(), None, "no verdict yet");
        store
            .append_history(&verdict("next", Some(Phase::Testing), Source::Agent))
            .unwrap();
        assert_eq!(store.continued_to(&last).unwrap(), Some(Phase::Testing));
        store
            .append_history(&verdict("next", None, Source::Agent))
            .unwrap();
        assert_eq!(
            store.continued_to(&last).unwrap(),
            Some(Phase::Implementation),
            "the last verdict of the attempt; no phase named: the same phase"
        );
        store
            .append_history(&verdict("done", None, Source::Agent))
            .unwrap();
        assert_eq!(store.continued_to(&last).unwrap(), None, "not a continue");
    }

    #[test]
    fn rows_a_state_carries_are_restored_once_and_only_where_missing() {
        use crate::protocol::journal::Source;
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let now = Timestamp::now();
        let row =
            |n: u32| IterationRow::ok(n, Phase::Testing, &format!("_logs/{n}.jsonl"), now, now);
        let verdict = |n: u32| HistoryRow {
            at: now,
            iteration: n,
            attempt: 1,
            source: Source::Agent,
            from: Phase::Testing,
            to: None,
            status: "continue".into(),
            accepted: true,
            reason: None,
            outcome: "next".into(),
            by: None,
        };
        let mut state = SessionState::new("26-11-24-x", "d", "t", now);
        // Iteration 1's rows made it to the disk; iteration 2's were lost with the machine,
        // which cut the history's last line in the middle.
        store.append_iteration(&row(1)).unwrap();
        store.append_history(&verdict(1)).unwrap();
        store
            .append_with(HISTORY, b"{\"at\":\"2026-", false)
            .unwrap();
        state.unsynced.iterations = vec![row(1), row(2)];
        state.unsynced.history = vec![verdict(1), verdict(2)];
        assert_eq!(store.restore_unsynced(&mut state).unwrap(), 2);
        assert!(state.unsynced.is_empty());
        let journal = |file: &str| {
            std::fs::read_to_string(store.path(file))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!((journal(ITERATIONS), journal(HISTORY)), (2, 3));
        assert_eq!(store.journaled("_logs/2.jsonl").unwrap(), Some(row(2)));
        assert_eq!(
            store.last_rows::<HistoryRow>(HISTORY).unwrap(),
            [verdict(1), verdict(2)],
            "the cut line is ended and left out; the restored row is whole"
        );
        // Opened again with the same rows carried (the state was not saved since): nothing
        // is written twice.
        state.unsynced.iterations = vec![row(2)];
        state.unsynced.history = vec![verdict(2)];
        assert_eq!(store.restore_unsynced(&mut state).unwrap(), 0);
        assert_eq!((journal(ITERATIONS), journal(HISTORY)), (2, 3));
    }

    /// The state, the notebook and `_qa.md` get the mode every new file of the process gets,
    /// at every write: they were 0600 beside 0644 journals, and flipped between the two, so a
    /// group member's `status` could not read a shared session (found by the odd-machines
    /// hunt).
    #[test]
    fn replaced_files_keep_the_mode_new_files_get() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let mode = |file: &str| {
            std::fs::metadata(store.path(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        std::fs::write(store.path(QA), "## Q1: a?\nAnswer:\n").unwrap();
        let journal_like = mode(QA);
        assert_eq!(journal_like, file_mode());
        for n in 0..3 {
            let _ = store
                .write_atomic(QA, format!("## Q1: a?\nAnswer: {n}\n").as_bytes())
                .unwrap();
            assert_eq!(mode(QA), journal_like, "write {n}");
        }
        // A spare an earlier build left 0600 takes the mode at its next use.
        std::fs::set_permissions(
            spare_of(&store.path(QA)),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        for n in 3..5 {
            let _ = store
                .write_atomic(QA, format!("## Q1: a?\nAnswer: {n}\n").as_bytes())
                .unwrap();
            assert_eq!(mode(QA), journal_like, "write {n}");
        }
        write_atomic(&store.path("other"), b"x").unwrap();
        assert_eq!(mode("other"), journal_like);
    }

    #[test]
    fn replace_reuses_one_spare_that_keeps_the_previous_version() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("_state.json");
        let spare = dir.path().join("._state.json.prev");
        assert_eq!(replace(&file, b"one").unwrap(), Replaced::Renamed);
        let first = std::fs::metadata(&file).unwrap().ino();
        assert_eq!(replace(&file, b"two").unwrap(), Replaced::Exchanged);
        assert_eq!(std::fs::read(&spare).unwrap(), b"one");
        assert_eq!(replace(&file, b"three").unwrap(), Replaced::Exchanged);
        assert_eq!(std::fs::read(&file).unwrap(), b"three");
        assert_eq!(std::fs::read(&spare).unwrap(), b"two");
        // No new file per replace: the two files trade places.
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), first);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // The spare is written over in place: shorter contents leave nothing of the longer.
        let _ = replace(&file, b"4").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"4");
        let _ = replace(&file, b"").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"");
        assert_eq!(std::fs::read(&spare).unwrap(), b"4");
        // An exchange is undone by another: the version before is back, the new one spare.
        undo_replace(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"4");
        assert_eq!(std::fs::read(&spare).unwrap(), b"");
    }

    #[test]
    fn a_spare_that_is_a_link_a_hard_link_or_a_pipe_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "keep").unwrap();
        let file = dir.path().join("_overview.md");
        let spare = dir.path().join("._overview.md.prev");
        std::fs::write(&file, "old").unwrap();

        std::os::unix::fs::symlink(&secret, &spare).unwrap();
        let _ = replace(&file, b"new 1").unwrap();
        std::fs::remove_file(&spare).unwrap();
        std::fs::hard_link(&secret, &spare).unwrap();
        let _ = replace(&file, b"new 2").unwrap();
        std::fs::remove_file(&spare).unwrap();
        nix::unistd::mkfifo(&spare, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let _ = replace(&file, b"new 3").unwrap();

        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new 3");
        assert_eq!(std::fs::read_to_string(&spare).unwrap(), "new 2");

        std::fs::remove_file(&spare).unwrap();
        std::fs::create_dir(&spare).unwrap();
        let error = replace(&file, b"new 4").unwrap_err().to_string();
        assert!(
            error.contains("._overview.md.prev") && error.contains("move it away"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new 3");
    }

    #[test]
    fn save_writes_state_and_overview_and_keeps_agent_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let mut state = SessionState::new("26-11-24-x", "dive", "task", Timestamp::now());
        store.save(&mut state).unwrap();
        let text = store.read(OVERVIEW).unwrap().unwrap();
        let _ = store
            .write_atomic(
                OVERVIEW,
                text.replace("Next: investigate the dive", "Next: mine")
                    .as_bytes(),
            )
            .unwrap();
        state.enter_phase(Phase::Investigation);
        state.phase_iteration = 1;
        state.iteration = 1;
        store.save(&mut state).unwrap();
        let text = store.read(OVERVIEW).unwrap().unwrap();
        assert!(text.contains("Phase: investigation\n"), "{text}");
        assert!(text.contains("Next: mine\n"), "{text}");
        assert_eq!(store.load_state().unwrap(), state);
        let leftovers: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_save_noting_a_decision_writes_the_notebook_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let mut state = SessionState::new("26-11-24-x", "dive", "task", Timestamp::now());
        state.iteration = 7;
        store.save(&mut state).unwrap();
        let before = store.read(OVERVIEW).unwrap().unwrap();
        state.enter_phase(Phase::Implementation);
        store
            .save_noting(&mut state, Some("Plan approved by a person"))
            .unwrap();
        let text = store.read(OVERVIEW).unwrap().unwrap();
        assert!(text.contains("Phase: implementation\n"), "{text}");
        let log = text.split("## Flow Log").nth(1).unwrap();
        let line = log.lines().find(|l| l.contains("Plan approved")).unwrap();
        assert!(line.starts_with("- [007 @ "), "{line}");
        assert!(line.ends_with("] Plan approved by a person"), "{line}");
        // One replace: the spare keeps the notebook as it was before the save, not a version
        // with the new lines and without the Flow Log line.
        let spare = std::fs::read_to_string(store.dir().join("._overview.md.prev")).unwrap();
        assert_eq!(spare, before);
        assert_eq!(store.load_state().unwrap(), state);
    }

    /// A session saved waiting for plan approval, and the state its approval makes.
    fn at_the_plan_gate(dir: &Path) -> (SessionStore, SessionState, SessionState) {
        let store = SessionStore::create(&dir.join("26-11-24-x")).unwrap();
        let mut state = SessionState::new("26-11-24-x", "dive", "task", Timestamp::now());
        state.status = RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            since: Timestamp::now(),
        };
        store.save(&mut state).unwrap();
        let mut approved = state.clone();
        approved.enter_phase(Phase::Implementation);
        approved.status = RunState::Queued;
        (store, state, approved)
    }

    /// Puts a directory where the spare of `file` goes, so that its next replace fails.
    fn blocked_spare(store: &SessionStore, file: &str) -> PathBuf {
        let spare = spare_of(&store.path(file));
        let _ = std::fs::remove_file(&spare);
        std::fs::create_dir(&spare).unwrap();
        spare
    }

    #[test]
    fn a_notebook_that_cannot_be_written_leaves_the_state_unsaved() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state, mut approved) = at_the_plan_gate(dir.path());
        let saved = std::fs::read(store.dir().join("_state.json")).unwrap();
        // A directory where the notebook's spare goes (an agent's doing) is never written
        // through; the save fails, and must not be half done.
        let spare = blocked_spare(&store, OVERVIEW);
        let error = store
            .save_noting(&mut approved, Some("Plan approved by a person"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("._overview.md.prev"), "{error}");
        assert_eq!(
            std::fs::read(store.dir().join("_state.json")).unwrap(),
            saved
        );
        assert_eq!(store.load_state().unwrap(), state);
        // Once the directory is moved away, the same save goes through.
        std::fs::remove_dir(&spare).unwrap();
        store
            .save_noting(&mut approved, Some("Plan approved by a person"))
            .unwrap();
        assert_eq!(store.load_state().unwrap(), approved);
    }

    #[test]
    fn a_state_that_cannot_be_saved_takes_the_notebooks_new_lines_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut state, mut approved) = at_the_plan_gate(dir.path());
        // Saved again, so that the notebook has a spare and its next replace exchanges.
        store.save(&mut state).unwrap();
        let notebook = store.read(OVERVIEW).unwrap().unwrap();
        let spare = blocked_spare(&store, STATE);
        let error = store
            .save_noting(&mut approved, Some("Plan approved by a person"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("._state.json.prev"), "{error}");
        assert_eq!(store.read(OVERVIEW).unwrap().unwrap(), notebook);
        assert_eq!(store.load_state().unwrap(), state);
        std::fs::remove_dir(&spare).unwrap();
        store
            .save_noting(&mut approved, Some("Plan approved by a person"))
            .unwrap();
        let notebook = store.read(OVERVIEW).unwrap().unwrap();
        assert_eq!(notebook.matches("Plan approved by a person").count(), 1);
        assert!(notebook.contains("Phase: implementation"), "{notebook}");
    }

    #[test]
    fn an_append_after_a_cut_line_starts_on_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "{\"whole\":1}\n{\"cut").unwrap();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        for row in [b"{\"next\":2}\n", b"{\"then\":3}\n"] {
            let len = file.metadata().unwrap().len();
            append_whole(&mut file, len, row).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"whole\":1}\n{\"cut\n{\"next\":2}\n{\"then\":3}\n"
        );
        let empty = dir.path().join("new.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&empty)
            .unwrap();
        append_whole(&mut file, 0, b"a\n").unwrap();
        assert_eq!(std::fs::read_to_string(&empty).unwrap(), "a\n");
    }

    #[test]
    fn the_newest_log_is_the_highest_iteration_also_across_new_year() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        assert_eq!(store.latest_log(), None);
        let logs = store.dir().join(LOGS);
        std::fs::create_dir_all(&logs).unwrap();
        for name in [
            "12-31-235958-009-implementation-a1.jsonl",
            "01-01-000003-010-implementation-a1.jsonl",
            "01-01-000009-010-implementation-a2.jsonl",
            "01-01-000009-010-implementation-a2-2.jsonl",
            "12-31-235959-009-implementation-a3.jsonl",
        ] {
            std::fs::write(logs.join(name), "").unwrap();
        }
        assert_eq!(
            store.latest_log().unwrap().file_name().unwrap(),
            "01-01-000009-010-implementation-a2-2.jsonl"
        );
        assert!(
            log_order(Path::new("01-01-000009-010-implementation-a2.jsonl"))
                > log_order(Path::new("12-31-235959-009-implementation-a3.jsonl"))
        );
    }

    #[test]
    fn a_new_session_folder_appears_whole_or_not_at_all() {
        let sessions = tempfile::tempdir().unwrap();
        let dir = sessions.path().join("26-11-24-x");
        let building = sessions.path().join(".26-11-24-x.new");
        let state = || SessionState::new("26-11-24-x", "dive", "task", Timestamp::now());
        // A creation that fails midway (as a kill would stop it) leaves no folder of the name.
        let failed = SessionStore::create_whole(&dir, |store| {
            store.save(&mut state())?;
            Err(io("cannot write", store.dir())(std::io::Error::other(
                "stopped",
            )))
        });
        assert!(failed.is_err());
        assert!(!dir.exists() && building.exists());
        // The next creation clears what was left, and the folder it makes is a session.
        let store = SessionStore::create_whole(&dir, |store| store.save(&mut state())).unwrap();
        assert_eq!(store.dir(), dir);
        assert!(!building.exists());
        assert_eq!(store.load_state().unwrap().name, "26-11-24-x");
        // Its lock moved with it.
        assert!(matches!(
            SessionFolder::new(&dir).lock(),
            Err(StoreError::Locked { .. })
        ));
        // A link planted where the folder is built is removed, never written through.
        drop(store);
        let outside = tempfile::tempdir().unwrap();
        let other = sessions.path().join("26-11-24-y");
        std::os::unix::fs::symlink(outside.path(), sessions.path().join(".26-11-24-y.new"))
            .unwrap();
        SessionStore::create_whole(&other, |store| store.save(&mut state())).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A name that exists is never replaced.
        assert!(SessionStore::create_whole(&dir, |_| Ok(())).is_err());
        assert!(SessionFolder::new(&dir).load_state().is_ok());
    }

    #[test]
    fn a_persons_rows_the_journal_refused_are_journaled_once_it_takes_them() {
        use crate::protocol::journal::Source;
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let row = |status: &str| HistoryRow {
            at: Timestamp::now(),
            iteration: 1,
            attempt: 0,
            source: Source::Person,
            from: Phase::Planning,
            to: Some(Phase::Implementation),
            status: status.into(),
            accepted: true,
            reason: None,
            outcome: "queued".into(),
            by: None,
        };
        let mut state = SessionState::new("26-11-24-x", "d", "t", Timestamp::now());
        state.unsynced.unjournaled = vec![row("approve"), row("tell")];
        // Refused (a directory where the journal is): both wait.
        let journal = store.path(HISTORY);
        std::fs::create_dir(&journal).unwrap();
        store.journal_waiting(&mut state);
        assert_eq!(state.unsynced.unjournaled.len(), 2);
        std::fs::remove_dir(&journal).unwrap();
        store.journal_waiting(&mut state);
        assert!(state.unsynced.is_empty());
        let statuses: Vec<String> = store
            .last_rows::<HistoryRow>(HISTORY)
            .unwrap()
            .into_iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, ["approve", "tell"], "in order, once");
    }

    #[test]
    fn attempt_logs_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::create(&dir.path().join("26-11-24-x")).unwrap();
        let a = store.attempt_files(1, Phase::Testing, 1).unwrap();
        store.create_log(&a).unwrap();
        let b = store.attempt_files(1, Phase::Testing, 1).unwrap();
        store.create_log(&b).unwrap();
        assert_ne!(a.stdout, b.stdout);
        assert!(a.relative_log().starts_with("_logs/"));
        assert!(a.relative_log().ends_with("-001-testing-a1.jsonl"));
    }
}
