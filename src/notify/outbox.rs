//! The durable outbox of notices: a JSON-lines file in the state directory
//! (`outbox/<owner>.jsonl`) where every notice is appended, and fsynced, before it is sent, and
//! marked sent only once the sink has accepted it. A notifier that starts (after a crash, a
//! restart, or a `samocode run` that ended before its notices went out) replays what is not
//! marked sent, in order.
//!
//! The file holds [`Entry`] lines: a notice, a close (the edit of a session's open message
//! once the session has moved on), and the mark that one of them was delivered, with the ids
//! of the messages it became. It is compacted when it grows: what is kept is what is still to
//! be sent, and the sent notices whose message is still open for an edit.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Notice;

/// One line of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// A notice to send.
    Notice { id: u64, notice: Notice },
    /// Edit the session's open message: remove its buttons and add `line`. `dir`: the
    /// session's folder (absent in older lines), so that another folder's session of the name
    /// never has its message closed by this one.
    Close {
        id: u64,
        session: String,
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<PathBuf>,
        /// This message of the session's, rather than the one open now (an older one left
        /// with its buttons: the daemon's, while a `run` drove the session on).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<OpenMessage>,
    },
    /// Entry `id` was delivered; the messages it became (the last one holds the buttons).
    Sent { id: u64, messages: Vec<i64> },
    /// Entry `id` was refused for good by the sink (it is not replayed).
    Dropped { id: u64, reason: String },
    /// Entry `id`, a long notice, went out in part: its first pieces became `messages`.
    Pieces { id: u64, messages: Vec<i64> },
    /// The folder `old` of session `from` was renamed to `dir` (session `to`): its open message
    /// and what waits to be sent for it are the renamed session's from here on.
    Renamed {
        id: u64,
        from: String,
        to: String,
        old: PathBuf,
        dir: PathBuf,
    },
}

/// A sent notice whose message a later close will edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenMessage {
    pub message: i64,
    pub html: String,
    /// Its session's folder, when the notice named it.
    pub dir: Option<PathBuf>,
}

/// What a notifier starts from: the entries still to deliver, in order, and the open
/// messages by session.
#[derive(Debug, Default)]
pub struct Replay {
    pub pending: VecDeque<Entry>,
    pub open: HashMap<String, OpenMessage>,
    pub next_id: u64,
}

/// The daemon's outbox in its state directory.
pub fn daemon_outbox(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox").join("daemon.jsonl")
}

/// The outbox of a `samocode run` of session `name` (one run per session at a time).
pub fn run_outbox(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("outbox").join(format!("run-{name}.jsonl"))
}

/// Lines past which the file is compacted.
const COMPACT_AT: usize = 2000;

pub struct Outbox {
    path: PathBuf,
    file: File,
    lines: usize,
    /// The file's length after the last whole line: a write that fails half way is cut back
    /// to it, so that the next line is not glued to a torn one.
    len: u64,
    /// The `outbox-full` failpoint: every write fails half way, as on a full disk.
    full: bool,
    /// Lines past which the file is compacted ([`COMPACT_AT`]; 0 under the `outbox-compact`
    /// failpoint: at every record).
    compact_at: usize,
    /// Held (flock) for as long as this notifier owns the outbox: another process can tell
    /// whether an outbox is orphaned.
    _lock: File,
}

impl Outbox {
    /// Opens (creating) the outbox at `path`, takes it over, and reads what it holds. Fails with
    /// `WouldBlock` while another notifier owns it.
    pub fn open(path: &Path) -> std::io::Result<(Outbox, Replay)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot make {}: {e}", dir.display()))
            })?;
        }
        // Named, whatever went wrong: "Permission denied" alone stopped the daemon.
        let named = |e: std::io::Error, what: &Path| match e.kind() {
            std::io::ErrorKind::WouldBlock => e,
            kind => std::io::Error::new(kind, format!("cannot open {}: {e}", what.display())),
        };
        let lock = lock(path).map_err(|e| named(e, &path.with_extension("lock")))?;
        let entries = read(path)?;
        let replay = replay(&entries);
        let file = crate::session::untrusted::open_for_writing(
            OpenOptions::new().create(true).append(true),
            path,
        )
        .map_err(|e| named(e, path))?;
        let mut outbox = Outbox {
            path: path.to_path_buf(),
            file,
            lines: entries.len(),
            len: 0,
            full: false,
            compact_at: COMPACT_AT,
            _lock: lock,
        };
        outbox.compact(&replay)?;
        Ok((outbox, replay))
    }

    /// Appends an entry, durably.
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("outbox entries serialize");
        line.push(b'\n');
        // One write per line, so a crash leaves whole lines; a write that failed part way (a
        // full disk) is cut back, so that the next line starts on its own.
        let written = if self.full {
            self.file
                .write_all(&line[..line.len() / 2])
                .and_then(|()| Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC)))
        } else {
            self.file.write_all(&line)
        };
        if let Err(error) = written {
            let _ = self.file.set_len(self.len);
            return Err(error);
        }
        self.len += line.len() as u64;
        self.lines += 1;
        self.file.sync_data()
    }

    /// Keeps `session`'s open message, sent from elsewhere (a `samocode run`), so that a
    /// restarted notifier can still close it.
    pub fn keep_open(&mut self, session: &str, message: &OpenMessage) -> std::io::Result<()> {
        open_entries(session, message)
            .iter()
            .try_for_each(|entry| self.append(entry))
    }

    /// The `outbox-full` failpoint: from now on every write fails half way.
    pub fn fail_writes(&mut self) {
        self.full = true;
    }

    /// The `outbox-compact` failpoint: from now on the file is compacted at every record.
    pub fn compact_always(&mut self) {
        self.compact_at = 0;
    }

    /// Rewrites the file with only what still matters, once it has grown past its limit.
    pub fn compact_if_large(&mut self, replay: &Replay) -> std::io::Result<()> {
        if self.lines > self.compact_at {
            self.compact(replay)?;
        }
        Ok(())
    }

    fn compact(&mut self, replay: &Replay) -> std::io::Result<()> {
        let mut kept: Vec<Entry> = Vec::new();
        // The open messages, as notices already sent, so a close can still find them.
        let mut open: Vec<(&String, &OpenMessage)> = replay.open.iter().collect();
        open.sort_by_key(|(_, m)| m.message);
        for (session, message) in open {
            kept.extend(open_entries(session, message));
        }
        kept.extend(replay.pending.iter().cloned());
        let mut text = Vec::new();
        for entry in &kept {
            text.extend(serde_json::to_vec(entry).expect("outbox entries serialize"));
            text.push(b'\n');
        }
        crate::session::store::write_atomic(&self.path, &text).map_err(std::io::Error::other)?;
        self.file = crate::session::untrusted::open_for_writing(
            OpenOptions::new().append(true),
            &self.path,
        )?;
        self.lines = kept.len();
        self.len = text.len() as u64;
        Ok(())
    }
}

/// Takes the lock of the outbox at `path` (its `.lock` file beside it).
fn lock(path: &Path) -> std::io::Result<File> {
    let lock = crate::session::untrusted::open_for_writing(
        OpenOptions::new().create(true).truncate(false).write(true),
        &path.with_extension("lock"),
    )?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::ErrorKind::WouldBlock.into()),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    use crate::session::untrusted::{Links, read_bytes};
    // Never waited on, and bounded (compaction keeps it far smaller).
    let bytes = read_bytes(path, 256 << 20, Links::Refuse)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .unwrap_or_default();
    // A line cut short by a crash mid-write (even inside a character) is skipped: its notice
    // was never sent. So is one of a kind this build does not know (a later build's), which
    // compaction would drop: said, so that a downgrade does not lose it without a word.
    let mut skipped = 0;
    let entries = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| {
            let entry = serde_json::from_slice(line).ok();
            skipped += usize::from(entry.is_none());
            entry
        })
        .collect();
    if skipped > 0 {
        tracing::warn!(outbox = %path.display(), lines = skipped, "lines of the outbox cannot be read (cut short by a crash, or written by another build of samocode); they are skipped");
    }
    Ok(entries)
}

/// Takes over the outboxes of `samocode run`s that ended before their notices went out (their
/// lock is free): hands what each left to send, and its open messages, to `keep`, and only
/// then removes it (while its lock is held: a crash in between sends its notices twice, never
/// loses them). An outbox with nothing left to send stays where it is: the next `run` of its
/// session closes the message it left open (taken, that message would keep its buttons).
///
/// `looked` remembers the outboxes found with nothing to send, by size and modification time:
/// one unchanged since is not locked and read again.
pub fn adopt_orphans(own: &Path, looked: &mut Looked, keep: &mut dyn FnMut(Replay)) {
    adopt_orphans_taking(own, looked, &take_away, keep)
}

/// [`adopt_orphans`], with `take` the removal of an outbox once adopted.
fn adopt_orphans_taking(
    own: &Path,
    looked: &mut Looked,
    take: &dyn Fn(&Path) -> std::io::Result<()>,
    keep: &mut dyn FnMut(Replay),
) {
    let Some(dir) = own.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut seen = HashMap::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path == own || !name.starts_with("run-") || !name.ends_with(".jsonl") {
            continue;
        }
        let mark = entry
            .metadata()
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        if let Some(mark) = mark
            && looked.0.get(&path) == Some(&mark)
        {
            seen.insert(path, mark);
            continue;
        }
        let Ok(_lock) = lock(&path) else {
            continue;
        };
        let orphan = match read(&path) {
            Ok(entries) => replay(&entries),
            Err(_) => continue,
        };
        if orphan.pending.is_empty() {
            if let Some(mark) = mark {
                seen.insert(path, mark);
            }
            continue;
        }
        keep(orphan);
        if let Err(error) = take(&path) {
            // Not taken again while it is as it was: its notices went out every 15 s.
            tracing::warn!(outbox = %path.display(), %error, "a finished run's outbox cannot be removed or emptied: its notices are sent now, and will be again after a restart of the daemon or by the session's next run; make the outbox folder writable");
            if let Some(mark) = mark {
                seen.insert(path, mark);
            }
        }
    }
    looked.0 = seen;
}

/// Removes a run's outbox whose contents were taken, with its lock file; one its folder
/// keeps (not writable) is emptied instead: left whole, it would be taken again.
fn take_away(path: &Path) -> std::io::Result<()> {
    if let Err(removing) = std::fs::remove_file(path) {
        crate::session::untrusted::open_for_writing(OpenOptions::new().write(true), path)
            .and_then(|file| file.set_len(0))
            .map_err(|_| removing)?;
    }
    let _ = std::fs::remove_file(path.with_extension("lock"));
    Ok(())
}

/// Run outboxes a daemon found with nothing to send, by size and modification time.
#[derive(Debug, Default)]
pub struct Looked(HashMap<PathBuf, (u64, std::time::SystemTime)>);

/// The message a finished `samocode run` of `session` (its folder name) left open, taken from
/// the run's outbox beside `own` (which then goes): for a daemon about to send that session's
/// next notice, so that the old message loses its buttons when the daemon drives the session
/// on. `None` while a run holds the outbox, when it has notices left to send (those are
/// adopted whole), and when the run's session is in another folder than `folder` (another
/// project's namesake).
pub fn take_run_open(
    own: &Path,
    session: &str,
    folder: Option<&Path>,
    keep: impl FnOnce(&OpenMessage),
) -> Option<OpenMessage> {
    let dir = own.parent()?;
    let short = crate::session::name::short_name(session);
    for name in [session, short] {
        let path = dir.join(format!("run-{name}.jsonl"));
        if !path.exists() {
            continue;
        }
        let Ok(_lock) = lock(&path) else {
            continue;
        };
        let Ok(entries) = read(&path) else {
            continue;
        };
        let mut left = replay(&entries);
        if !left.pending.is_empty() {
            continue;
        }
        let Some(open) = left.open.remove(session) else {
            continue;
        };
        if let (Some(ours), Some(theirs)) = (folder, &open.dir)
            && !same_folder(ours, theirs)
        {
            continue;
        }
        // Kept where the daemon keeps its own before the run's outbox goes.
        keep(&open);
        // Kept, it would close the message again at each of the session's notices.
        if let Err(error) = take_away(&path) {
            tracing::warn!(outbox = %path.display(), %error, "a finished run's outbox cannot be removed or emptied: the message it left open is closed by the daemon, and perhaps again by the session's next run; make the outbox folder writable");
        }
        return Some(open);
    }
    None
}

/// True when two paths name one folder (also through a link, or moved and linked back).
pub(crate) fn same_folder(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    a == b
        || match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
}

/// An open message as the outbox keeps one: a notice already sent, without its buttons, under
/// an id of its own above every notice's.
fn open_entries(session: &str, message: &OpenMessage) -> [Entry; 2] {
    let id = u64::MAX - message.message as u64;
    [
        Entry::Notice {
            id,
            notice: Notice {
                session: session.to_string(),
                open: true,
                html: message.html.clone(),
                buttons: Vec::new(),
                dir: message.dir.clone(),
                sent: Vec::new(),
            },
        },
        Entry::Sent {
            id,
            messages: vec![message.message],
        },
    ]
}

impl Replay {
    /// Makes what belongs to session `from` in folder `old` (its open message, its notices and
    /// closes still to send) session `to`'s in folder `dir`: closes given under the new name
    /// find the message sent under the old one.
    pub fn rename(&mut self, from: &str, to: &str, old: &Path, dir: &Path) {
        rename_in(&mut self.open, self.pending.iter_mut(), from, to, old, dir);
    }
}

fn rename_in<'a>(
    open: &mut HashMap<String, OpenMessage>,
    pending: impl Iterator<Item = &'a mut Entry>,
    from: &str,
    to: &str,
    old: &Path,
    dir: &Path,
) {
    // Another folder's session of the old name (a namesake run's) keeps what is its own.
    let of_it = |session: &str, at: Option<&Path>| session == from && at.is_none_or(|at| at == old);
    if let Some(message) = open.remove(from) {
        if of_it(from, message.dir.as_deref()) {
            let message = OpenMessage {
                dir: Some(dir.to_path_buf()),
                ..message
            };
            open.insert(to.to_string(), message);
        } else {
            open.insert(from.to_string(), message);
        }
    }
    for entry in pending {
        let (session, at) = match entry {
            Entry::Notice { notice, .. } => (&mut notice.session, &mut notice.dir),
            Entry::Close { session, dir, .. } => (session, dir),
            _ => continue,
        };
        if of_it(session, at.as_deref()) {
            *session = to.to_string();
            *at = Some(dir.to_path_buf());
        }
    }
}

/// What the entries leave to do.
pub fn replay(entries: &[Entry]) -> Replay {
    let mut pending: Vec<Entry> = Vec::new();
    let mut open: HashMap<String, OpenMessage> = HashMap::new();
    let mut next_id = 0;
    for entry in entries {
        match entry {
            Entry::Notice { id, .. } | Entry::Close { id, .. } => {
                if *id < u64::MAX / 2 {
                    next_id = next_id.max(id + 1);
                }
                pending.push(entry.clone());
            }
            Entry::Sent { id, messages } => {
                if let Some(at) = pending.iter().position(|e| entry_id(e) == *id) {
                    match pending.remove(at) {
                        Entry::Notice { notice, .. } if notice.open => {
                            if let Some(message) = messages.last() {
                                open.insert(
                                    notice.session.clone(),
                                    OpenMessage {
                                        message: *message,
                                        html: notice.html,
                                        dir: notice.dir,
                                    },
                                );
                            }
                        }
                        // The session's open message, or the one it names when that is it.
                        Entry::Close {
                            session, message, ..
                        } if message.as_ref().is_none_or(|closed| {
                            open.get(&session).map(|m| m.message) == Some(closed.message)
                        }) =>
                        {
                            open.remove(&session);
                        }
                        _ => {}
                    }
                }
            }
            Entry::Dropped { id, .. } => pending.retain(|e| entry_id(e) != *id),
            Entry::Pieces { id, messages } => {
                for entry in &mut pending {
                    if let Entry::Notice { id: of, notice } = entry
                        && of == id
                    {
                        notice.sent = messages.clone();
                    }
                }
            }
            Entry::Renamed {
                id,
                from,
                to,
                old,
                dir,
            } => {
                next_id = next_id.max(id + 1);
                rename_in(&mut open, pending.iter_mut(), from, to, old, dir);
            }
        }
    }
    Replay {
        pending: pending.into(),
        open,
        next_id,
    }
}

/// The same entry under another id.
pub fn renumber(entry: Entry, id: u64) -> Entry {
    match entry {
        Entry::Notice { notice, .. } => Entry::Notice { id, notice },
        Entry::Close {
            session,
            line,
            dir,
            message,
            ..
        } => Entry::Close {
            id,
            session,
            line,
            dir,
            message,
        },
        Entry::Sent { messages, .. } => Entry::Sent { id, messages },
        Entry::Dropped { reason, .. } => Entry::Dropped { id, reason },
        Entry::Pieces { messages, .. } => Entry::Pieces { id, messages },
        Entry::Renamed {
            from, to, old, dir, ..
        } => Entry::Renamed {
            id,
            from,
            to,
            old,
            dir,
        },
    }
}

pub fn entry_id(entry: &Entry) -> u64 {
    match entry {
        Entry::Notice { id, .. }
        | Entry::Close { id, .. }
        | Entry::Sent { id, .. }
        | Entry::Dropped { id, .. }
        | Entry::Pieces { id, .. }
        | Entry::Renamed { id, .. } => *id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: u64, session: &str, open: bool) -> Entry {
        Entry::Notice {
            id,
            notice: Notice {
                session: session.into(),
                open,
                html: format!("notice {id}"),
                buttons: Vec::new(),
                dir: None,
                sent: Vec::new(),
            },
        }
    }

    /// A named pipe in the outbox folder hung the daemon's notifier, and with it the whole
    /// daemon, beyond a SIGTERM's reach: refused at once, by name.
    #[test]
    fn an_outbox_or_its_lock_that_is_a_named_pipe_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = |path: &Path| {
            let made = std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .unwrap();
            assert!(made.success());
        };
        let outbox = dir.path().join("outbox/run-x.jsonl");
        std::fs::create_dir_all(outbox.parent().unwrap()).unwrap();
        fifo(&outbox);
        let error = Outbox::open(&outbox).err().unwrap().to_string();
        assert!(
            error.contains("named pipe") || error.contains("not a regular file"),
            "{error}"
        );
        assert!(
            take_run_open(&dir.path().join("outbox/daemon.jsonl"), "x", None, |_| ()).is_none()
        );
        let locked = dir.path().join("outbox/daemon.jsonl");
        fifo(&locked.with_extension("lock"));
        let error = Outbox::open(&locked).err().unwrap().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }

    #[test]
    fn replay_keeps_what_was_not_sent_in_order_and_the_open_messages() {
        let entries = vec![
            notice(0, "a", true),
            notice(1, "b", false),
            Entry::Sent {
                id: 0,
                messages: vec![10, 11],
            },
            notice(2, "a", false),
            Entry::Close {
                id: 3,
                session: "a".into(),
                line: "approved".into(),
                dir: None,
                message: None,
            },
            Entry::Dropped {
                id: 1,
                reason: "chat not found".into(),
            },
        ];
        let replay = replay(&entries);
        let ids: Vec<u64> = replay.pending.iter().map(entry_id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(
            replay.open["a"].message, 11,
            "the last piece holds the buttons"
        );
        assert_eq!(replay.next_id, 4);
    }

    /// A folder renamed under the daemon: after a restart, its message sent under the old name
    /// is open under the new one, and a close of the old name still to send follows it; a
    /// namesake's of another folder stays its own.
    #[test]
    fn a_renamed_sessions_open_message_and_closes_follow_it_across_a_restart() {
        let at = |dir: &str, mut entry: Entry| {
            match &mut entry {
                Entry::Notice { notice, .. } => notice.dir = Some(dir.into()),
                Entry::Close { dir: d, .. } => *d = Some(dir.into()),
                _ => {}
            }
            entry
        };
        let close = |id, session: &str| Entry::Close {
            id,
            session: session.into(),
            line: "approved".into(),
            dir: None,
            message: None,
        };
        let entries = vec![
            at("/s/a", notice(0, "a", true)),
            Entry::Sent {
                id: 0,
                messages: vec![10],
            },
            at("/t/a", close(1, "a")),
            at("/s/a", close(2, "a")),
            Entry::Renamed {
                id: 3,
                from: "a".into(),
                to: "b".into(),
                old: "/s/a".into(),
                dir: "/s/b".into(),
            },
        ];
        let replay = replay(&entries);
        assert!(!replay.open.contains_key("a"));
        assert_eq!(replay.open["b"].message, 10);
        assert_eq!(replay.open["b"].dir.as_deref(), Some(Path::new("/s/b")));
        let sessions: Vec<&str> = replay
            .pending
            .iter()
            .map(|entry| match entry {
                Entry::Close { session, .. } => session.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(sessions, ["a", "b"], "the namesake's close stays its own");
        assert_eq!(replay.next_id, 4);
    }

    /// What [`adopt_orphans_taking`] hands over, gathered.
    fn gathered(
        own: &Path,
        looked: &mut Looked,
        take: &dyn Fn(&Path) -> std::io::Result<()>,
    ) -> Replay {
        let mut all = Replay::default();
        adopt_orphans_taking(own, looked, take, &mut |orphan| {
            all.pending.extend(orphan.pending);
            all.open.extend(orphan.open);
        });
        all
    }

    /// A daemon killed as it took over what a run left lost those notices: the run's outbox
    /// was removed before they were in the daemon's. They are handed over while it is there.
    #[test]
    fn a_run_outbox_is_there_until_its_notices_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("outbox/daemon.jsonl");
        let run = dir.path().join("outbox/run-s.jsonl");
        std::fs::create_dir_all(run.parent().unwrap()).unwrap();
        std::fs::write(
            &run,
            format!(
                "{}\n",
                serde_json::to_string(&notice(0, "s", true)).unwrap()
            ),
        )
        .unwrap();
        let mut kept = 0;
        adopt_orphans(&own, &mut Looked::default(), &mut |orphan| {
            assert!(run.exists(), "removed before its notices were kept");
            kept += orphan.pending.len();
        });
        assert_eq!(kept, 1);
        assert!(!run.exists());
    }

    /// A run's outbox with nothing left to send stays for the session's next run, and is not
    /// locked and read again until it changes; once it holds a notice to send, it is adopted.
    #[test]
    fn a_run_outbox_with_nothing_to_send_is_left_and_looked_at_again_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("outbox/daemon.jsonl");
        let run = dir.path().join("outbox/run-s.jsonl");
        std::fs::create_dir_all(run.parent().unwrap()).unwrap();
        let line = |entry: &Entry| format!("{}\n", serde_json::to_string(entry).unwrap());
        let sent = Entry::Sent {
            id: 0,
            messages: vec![7],
        };
        std::fs::write(&run, line(&notice(0, "s", true)) + &line(&sent)).unwrap();
        let mut looked = Looked::default();
        assert!(gathered(&own, &mut looked, &take_away).pending.is_empty());
        assert!(run.exists(), "left for the next run");
        // Not locked again (which would make its lock file) while unchanged.
        std::fs::remove_file(run.with_extension("lock")).unwrap();
        assert!(gathered(&own, &mut looked, &take_away).pending.is_empty());
        assert!(!run.with_extension("lock").exists());
        let mut file = std::fs::OpenOptions::new().append(true).open(&run).unwrap();
        std::io::Write::write_all(&mut file, line(&notice(1, "s", true)).as_bytes()).unwrap();
        let adopted = gathered(&own, &mut looked, &take_away);
        assert_eq!(adopted.pending.len(), 1);
        assert_eq!(adopted.open["s"].message, 7);
        assert!(!run.exists());
    }

    /// A run's outbox the daemon could not remove after taking its notices (a folder not
    /// writable) was taken again at every look: the same notice sent every 15 s, forever.
    #[test]
    fn a_run_outbox_that_cannot_be_removed_is_emptied_or_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("outbox/daemon.jsonl");
        let run = dir.path().join("outbox/run-s.jsonl");
        std::fs::create_dir_all(run.parent().unwrap()).unwrap();
        let line = |entry: &Entry| format!("{}\n", serde_json::to_string(entry).unwrap());
        let refused = |_: &Path| Err(std::io::ErrorKind::PermissionDenied.into());
        std::fs::write(&run, line(&notice(0, "s", true))).unwrap();
        let mut looked = Looked::default();
        assert_eq!(gathered(&own, &mut looked, &refused).pending.len(), 1);
        assert!(gathered(&own, &mut looked, &refused).pending.is_empty());
        // Changed since (the session's next run wrote to it): taken again.
        std::fs::write(
            &run,
            line(&notice(0, "s", true)) + &line(&notice(1, "s", true)),
        )
        .unwrap();
        assert_eq!(gathered(&own, &mut looked, &refused).pending.len(), 2);
        // A folder that keeps its files: the outbox is emptied.
        let empty = |path: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(0)
        };
        std::fs::write(&run, line(&notice(2, "s", true))).unwrap();
        let mut looked = Looked::default();
        assert_eq!(gathered(&own, &mut looked, &empty).pending.len(), 1);
        assert!(gathered(&own, &mut looked, &empty).pending.is_empty());
    }

    /// An open message kept from elsewhere (a run's) is found again by a notifier reopening
    /// the outbox, as one it sent itself, and counts no id of its own notices.
    #[test]
    fn an_open_message_kept_from_a_run_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox/daemon.jsonl");
        let (mut outbox, _) = Outbox::open(&path).unwrap();
        let message = OpenMessage {
            message: 101,
            html: "<b>s</b> has questions".into(),
            dir: None,
        };
        outbox.keep_open("26-12-07-s", &message).unwrap();
        drop(outbox);
        let (_, replay) = Outbox::open(&path).unwrap();
        assert!(replay.pending.is_empty());
        assert_eq!(replay.open["26-12-07-s"], message);
        assert_eq!(replay.next_id, 0);
    }

    #[test]
    fn the_file_survives_reopening_and_compaction_keeps_what_matters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox/daemon.jsonl");
        let (outbox, replay) = Outbox::open(&path).unwrap();
        assert!(replay.pending.is_empty());
        drop(outbox);
        // A long history, written as a notifier would have (without a sync per line here).
        let mut text = std::fs::read(&path).unwrap();
        for id in 0..3000 {
            text.extend(serde_json::to_vec(&notice(id, "s", id == 5)).unwrap());
            text.push(b'\n');
            if id != 2999 {
                let sent = Entry::Sent {
                    id,
                    messages: vec![id as i64],
                };
                text.extend(serde_json::to_vec(&sent).unwrap());
                text.push(b'\n');
            }
        }
        // A crash mid-write leaves half a line.
        text.extend(b"{\"op\":\"notice\",\"id\":30");
        std::fs::write(&path, text).unwrap();
        let (mut outbox, replay) = Outbox::open(&path).unwrap();
        assert_eq!(replay.pending.len(), 1);
        assert_eq!(entry_id(&replay.pending[0]), 2999);
        assert_eq!(replay.open["s"].message, 5);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 10, "compacted to {lines} lines");
        outbox
            .append(&Entry::Sent {
                id: 2999,
                messages: vec![2999],
            })
            .unwrap();
        drop(outbox);
        let (_, replay) = Outbox::open(&path).unwrap();
        assert!(replay.pending.is_empty());
        assert_eq!(
            replay.open["s"].message, 5,
            "the open message outlives compaction"
        );
        assert_eq!(replay.next_id, 3000);
    }
}
