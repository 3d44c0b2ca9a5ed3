//! The supervisor's registry: one [`Entry`] per session, and the order in which queued
//! sessions get an agent slot. Pure bookkeeping, no IO, no messages but the ones that hand out
//! slots and wake watchers.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ractor::{ActorId, ActorRef, RpcReplyPort};

use super::{OwnedSession, Started};
use crate::protocol::WaitFor;
use crate::session::actor::SessionMsg;
use crate::session::name;
use crate::session::open::{Settled, StartRequest};

/// A session's claim on an agent slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    None,
    /// Waiting in the queue.
    Queued,
    /// Granted; given back when its attempt ends.
    Held,
}

/// Everything the supervisor knows of one session.
pub struct Entry {
    /// Its project file: with the folder, how to open it again.
    pub project: PathBuf,
    /// Its actor while one drives it.
    pub actor: Option<ActorRef<SessionMsg>>,
    pub slot: Slot,
    /// How it last settled; `None` while it runs or is runnable.
    pub settled: Option<Settled>,
    /// Callers waiting for it to settle.
    pub watchers: Vec<RpcReplyPort<Settled>>,
    /// When its actor was restarted, within the restart window.
    pub restarts: Vec<Instant>,
    /// Another worker (a `samocode run`, by its pid) held it when the daemon last tried to
    /// open it: the daemon looks again, and lists it as that worker's meanwhile.
    pub elsewhere: Option<u32>,
    /// Its folder's device and inode when it was listed: the folder renamed, it is still
    /// found by them.
    identity: Option<(u64, u64)>,
}

/// A folder's device and inode.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub struct Registry {
    entries: HashMap<PathBuf, Entry>,
    /// Which session an actor drives, to read supervision events.
    by_actor: HashMap<ActorId, PathBuf>,
    /// Sessions waiting for a slot, longest first.
    queue: VecDeque<PathBuf>,
    held: usize,
    max_parallel: usize,
    /// The fleet budget is reached: no slot is granted until it is lifted.
    hold: bool,
    /// Old folder names of sessions renamed before this daemon started, and where they are.
    aliases: HashMap<String, PathBuf>,
}

impl Registry {
    pub fn new(max_parallel: usize) -> Registry {
        Registry {
            entries: HashMap::new(),
            by_actor: HashMap::new(),
            queue: VecDeque::new(),
            held: 0,
            max_parallel: max_parallel.max(1),
            hold: false,
            aliases: HashMap::new(),
        }
    }

    pub fn get(&self, dir: &Path) -> Option<&Entry> {
        self.entries.get(dir)
    }

    /// The path an owned session is known by, for `dir` spelt as it is or another way to the
    /// same folder (through a link, a bind mount, a project folder moved and linked back).
    pub fn key_of(&self, dir: &Path) -> Option<PathBuf> {
        if self.entries.contains_key(dir) {
            return Some(dir.to_path_buf());
        }
        let wanted = identity(dir)?;
        self.entries
            .iter()
            .find(|(key, entry)| {
                identity(key) == Some(wanted)
                    // Renamed while listed: its old path is gone, the folder is the same.
                    || (entry.identity == Some(wanted) && std::fs::symlink_metadata(key).is_err())
            })
            .map(|(key, _)| key.clone())
    }

    /// Drops the session in `dir` from the registry (its folder was renamed: it is listed
    /// again under its new path). Its actor, if any, is already gone.
    pub fn forget(&mut self, dir: &Path) {
        self.drop_slot(dir);
        self.entries.remove(dir);
        self.by_actor.retain(|_, d| d != dir);
    }

    pub fn max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// For the metrics: slots held, sessions queued for one, and sessions by state.
    pub fn figures(&self) -> (usize, usize, Vec<(&'static str, u64)>) {
        let mut by_state: Vec<(&'static str, u64)> = [
            "running", "queued", "waiting", "blocked", "done", "failed", "stopped",
        ]
        .iter()
        .map(|state| (*state, 0))
        .collect();
        for entry in self.entries.values() {
            let state = state_word(entry.settled.as_ref(), entry.slot);
            if let Some(count) = by_state.iter_mut().find(|(s, _)| *s == state) {
                count.1 += 1;
            }
        }
        (self.held, self.queue.len(), by_state)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    pub fn set_max_parallel(&mut self, max: usize) {
        self.max_parallel = max.max(1);
        self.grant();
    }

    /// A session now driven by `actor`.
    pub fn driven(
        &mut self,
        dir: PathBuf,
        project: PathBuf,
        actor: ActorRef<SessionMsg>,
        settled: Option<Settled>,
        restarts: Vec<Instant>,
    ) {
        self.by_actor.insert(actor.get_id(), dir.clone());
        let entry = self.entry(dir, project);
        entry.actor = Some(actor);
        entry.settled = settled;
        entry.restarts = restarts;
        entry.elsewhere = None;
    }

    /// A session listed but not driven: finished, or one that could not be opened.
    pub fn parked_without_actor(&mut self, dir: PathBuf, project: PathBuf, settled: Settled) {
        let entry = self.entry(dir, project);
        entry.settled = Some(settled);
        entry.elsewhere = None;
    }

    /// A session another worker (`pid`) drives: listed, not driven, and not broken. True when
    /// that is news (it was not so marked already).
    pub fn driven_elsewhere(&mut self, dir: PathBuf, project: PathBuf, pid: u32) -> bool {
        let entry = self.entry(dir, project);
        let news = entry.elsewhere != Some(pid);
        entry.settled = None;
        entry.elsewhere = Some(pid);
        news
    }

    fn entry(&mut self, dir: PathBuf, project: PathBuf) -> &mut Entry {
        let entry = match self.entries.entry(dir) {
            std::collections::hash_map::Entry::Occupied(listed) => listed.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                let identity = identity(new.key());
                new.insert(Entry {
                    project: project.clone(),
                    actor: None,
                    slot: Slot::None,
                    settled: None,
                    watchers: Vec::new(),
                    restarts: Vec::new(),
                    elsewhere: None,
                    identity,
                })
            }
        };
        entry.project = project;
        entry
    }

    /// What a start request finds when the session is already here.
    pub fn started(&self, request: &StartRequest) -> Option<Started> {
        let sessions = &request.project.sessions;
        let (dir, entry) = self.entries.iter().find(|(dir, entry)| {
            entry.actor.is_some()
                && dir.parent() == Some(sessions.as_path())
                && dir.file_name().is_some_and(|folder| {
                    folder == request.name.as_str()
                        || name::short_name(&folder.to_string_lossy()) == request.name
                })
        })?;
        Some(Started {
            dir: dir.clone(),
            folder: dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            settled: entry.settled.clone(),
        })
    }

    /// The folder of the one session a name (folder or short name) means: one renamed in its
    /// sessions folder since it was listed is known by its new name.
    pub fn named(&self, session: &str) -> Result<PathBuf, String> {
        let found = by_name(self.entries.keys().map(PathBuf::as_path), session, |gone| {
            self.renamed_to(gone)
        });
        match found {
            // A folder renamed before this daemon started: its old name, on the buttons of
            // its notices from before, still finds it.
            // Unless a folder of that name is there again (another session's, not driven here).
            Err(_)
                if let Some(now) = self.aliases.get(session)
                    && !now.with_file_name(session).exists() =>
            {
                Ok(now.clone())
            }
            found => found,
        }
    }

    /// `old` (a folder name) names the session now at `dir`.
    pub fn alias(&mut self, old: String, dir: PathBuf) {
        self.aliases.insert(old, dir);
    }

    /// Where the folder listed at `gone` is now, when it was renamed beside where it was (one
    /// read of that folder; only for a name no folder there answers to).
    fn renamed_to(&self, gone: &Path) -> Option<PathBuf> {
        let wanted = self.entries.get(gone)?.identity?;
        std::fs::read_dir(gone.parent()?)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| identity(path) == Some(wanted))
    }

    /// Every session the daemon drives or drove, but those another worker drives now (shown
    /// as that worker's: their files and lock tell).
    pub fn owned(&self) -> Vec<OwnedSession> {
        let mut list: Vec<OwnedSession> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.elsewhere.is_none())
            .map(|(dir, entry)| OwnedSession {
                dir: dir.clone(),
                project: entry.project.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.dir.cmp(&b.dir));
        list
    }

    /// The sessions listed without an actor because they could not be opened, with why.
    pub fn broken(&self) -> Vec<crate::control::BrokenSession> {
        let mut list: Vec<crate::control::BrokenSession> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.actor.is_none())
            .filter_map(|(dir, entry)| match &entry.settled {
                Some(Settled::Failed { reason }) => Some(crate::control::BrokenSession {
                    dir: dir.clone(),
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect();
        list.sort_by(|a, b| a.dir.cmp(&b.dir));
        list
    }

    /// How many sessions an actor drives (each holds its folder's lock).
    pub fn driven_count(&self) -> usize {
        self.by_actor.len()
    }

    pub fn live_actors(&self) -> Vec<ActorRef<SessionMsg>> {
        self.entries
            .values()
            .filter_map(|e| e.actor.clone())
            .collect()
    }

    /// The actor of the session in `dir` if it is parked waiting for answers.
    pub fn waiting_for_answers(&self, dir: &Path) -> Option<ActorRef<SessionMsg>> {
        let entry = self.entries.get(dir)?;
        match entry.settled {
            Some(Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            }) => entry.actor.clone(),
            _ => None,
        }
    }

    pub fn all_waiting_for_answers(&self) -> Vec<ActorRef<SessionMsg>> {
        self.entries
            .keys()
            .filter_map(|dir| self.waiting_for_answers(dir))
            .collect()
    }

    /// Its actor is gone: frees its slot; returns its folder.
    pub fn actor_gone(&mut self, actor: ActorId) -> Option<PathBuf> {
        let dir = self.by_actor.remove(&actor)?;
        // A newer actor holds the path (the folder was made again and opened anew while this
        // one ran): this one's end changes nothing of it.
        if self
            .entries
            .get(&dir)
            .and_then(|entry| entry.actor.as_ref())
            .is_some_and(|newer| newer.get_id() != actor)
        {
            return None;
        }
        if let Some(entry) = self.entries.get_mut(&dir) {
            entry.actor = None;
        }
        self.drop_slot(&dir);
        Some(dir)
    }

    pub fn settled(&mut self, dir: &Path, settled: Settled) {
        if let Some(entry) = self.entries.get_mut(dir) {
            // Marked failed (after its restarts, or by itself): the restarts that led there
            // are spent; a later failure, after a person's resume, counts afresh.
            if matches!(settled, Settled::Failed { .. }) {
                entry.restarts.clear();
            }
            entry.settled = Some(settled);
            if entry.slot == Slot::Queued {
                entry.slot = Slot::None;
                self.queue.retain(|d| d != dir);
            }
        }
    }

    /// Answers everyone waiting on `dir`, if it has settled.
    pub fn tell_watchers(&mut self, dir: &Path) {
        if let Some(entry) = self.entries.get_mut(dir)
            && let Some(settled) = &entry.settled
        {
            for watcher in entry.watchers.drain(..) {
                let _ = watcher.send(settled.clone());
            }
        }
    }

    /// Replies once the session settles; at once if it has and nothing drives it (or, under the
    /// daemon, where a parked session keeps its actor).
    pub fn watch(&mut self, dir: PathBuf, reply: RpcReplyPort<Settled>, keep_parked: bool) {
        match self.entries.get_mut(&dir) {
            Some(entry) => match &entry.settled {
                Some(settled) if entry.actor.is_none() || keep_parked => {
                    let _ = reply.send(settled.clone());
                }
                _ => entry.watchers.push(reply),
            },
            None => drop(reply),
        }
    }

    pub fn request_slot(&mut self, dir: &Path) {
        if let Some(entry) = self.entries.get_mut(dir) {
            entry.settled = None;
            if entry.slot == Slot::None {
                entry.slot = Slot::Queued;
                self.queue.push_back(dir.to_path_buf());
            }
        }
        self.grant();
        // Not granted at once: the session is told it waits.
        if let Some(entry) = self.entries.get(dir)
            && entry.slot == Slot::Queued
            && let Some(actor) = &entry.actor
        {
            let _ = actor.send_message(SessionMsg::SlotQueued);
        }
    }

    pub fn release_slot(&mut self, dir: &Path) {
        self.drop_slot(dir);
    }

    fn drop_slot(&mut self, dir: &Path) {
        if let Some(entry) = self.entries.get_mut(dir) {
            match entry.slot {
                Slot::Held => self.held -= 1,
                Slot::Queued => self.queue.retain(|d| d != dir),
                Slot::None => {}
            }
            entry.slot = Slot::None;
        }
        self.grant();
    }

    /// Grants no slot while `hold` (the fleet budget is reached); queued sessions keep their
    /// place and get theirs once it is lifted.
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
        self.grant();
    }

    /// Grants free slots to the sessions queued longest.
    fn grant(&mut self) {
        while self.held < self.max_parallel && !self.hold {
            let Some(dir) = self.queue.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&dir) else {
                continue;
            };
            if entry.slot != Slot::Queued {
                continue;
            }
            match &entry.actor {
                Some(actor) if actor.send_message(SessionMsg::SlotGranted).is_ok() => {
                    entry.slot = Slot::Held;
                    self.held += 1;
                }
                _ => entry.slot = Slot::None,
            }
        }
    }
}

/// A session's state as the metrics count it. A runnable one runs while it holds a slot, and is
/// queued otherwise (for a slot, the fleet budget, or a usage limit's reset).
fn state_word(settled: Option<&Settled>, slot: Slot) -> &'static str {
    match settled {
        None | Some(Settled::Continued { .. }) if slot == Slot::Held => "running",
        None | Some(Settled::Continued { .. }) => "queued",
        Some(Settled::Waiting { .. }) => "waiting",
        Some(Settled::Blocked { .. }) => "blocked",
        Some(Settled::Done { .. }) => "done",
        Some(Settled::Failed { .. }) => "failed",
        Some(Settled::Stopped) => "stopped",
    }
}

/// The folder of the one session among `dirs` that `session` (a folder or short name) names.
/// A folder that is gone is no session to act on: the one `renamed` finds in its place is
/// (`None` where that is not known), else the refusal says the folder is gone.
pub fn by_name<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    session: &str,
    renamed: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    let (there, gone): (Vec<&Path>, Vec<&Path>) = dirs.into_iter().partition(|dir| dir.exists());
    let several = || format!("{session:?} names several sessions; use the full folder name");
    match name::named_among(there, session) {
        Ok(dir) => return Ok(dir.to_path_buf()),
        Err(0) => {}
        Err(_) => return Err(several()),
    }
    // Each gone folder with where it is now, if it was renamed: by its new name, or by its old
    // one (the buttons of its notices from before the rename carry it).
    let moved: Vec<(&Path, Option<PathBuf>)> =
        gone.into_iter().map(|dir| (dir, renamed(dir))).collect();
    let now = moved.iter().filter_map(|(_, now)| now.as_deref());
    match name::named_among(now, session) {
        Ok(dir) => return Ok(dir.to_path_buf()),
        Err(0) => {}
        Err(_) => return Err(several()),
    }
    match name::named_among(moved.iter().map(|(dir, _)| *dir), session) {
        Ok(dir) if let Some((_, Some(now))) = moved.iter().find(|(old, _)| *old == dir) => {
            Ok(now.clone())
        }
        Ok(dir) => Err(format!(
            "the folder of session {session:?} is gone from {} (moved, deleted, or on a disk not mounted): nothing was done; put it back, or hand it over from its new place with `samocode start --session {}` in its project",
            dir.display(),
            name::short_name(&dir.file_name().unwrap_or_default().to_string_lossy()),
        )),
        Err(_) => Err(format!(
            "the daemon drives no session {session:?} (a session run with samocode run is acted on from the command line)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runnable_session_without_a_slot_counts_as_queued_not_running() {
        assert_eq!(state_word(None, Slot::Held), "running");
        assert_eq!(state_word(None, Slot::Queued), "queued");
        // Held back by a usage limit or the fleet budget: no slot asked for.
        assert_eq!(state_word(None, Slot::None), "queued");
        assert_eq!(state_word(Some(&Settled::Stopped), Slot::None), "stopped");
    }

    /// A session whose folder is gone (a project moved, a disk not mounted) was "no session"
    /// to a command by its name, as if the daemon had never held it.
    #[test]
    fn a_name_whose_folder_is_gone_is_told_so() {
        let root = tempfile::tempdir().unwrap();
        let gone = root.path().join("26-12-07-login");
        let there = root.path().join("26-12-07-other");
        std::fs::create_dir(&there).unwrap();
        let mut registry = Registry::new(1);
        for dir in [&gone, &there] {
            registry.parked_without_actor(dir.clone(), root.path().into(), Settled::Stopped);
        }
        assert_eq!(registry.named("other"), Ok(there));
        let said = registry.named("login").unwrap_err();
        assert!(said.contains("is gone from"), "{said}");
        assert!(said.contains(&gone.display().to_string()), "{said}");
        assert!(said.contains("`samocode start --session login`"), "{said}");
        let said = registry.named("nothing").unwrap_err();
        assert!(said.starts_with("the daemon drives no session"), "{said}");
    }

    /// A folder renamed under the daemon took commands by its new name from the command line
    /// only: Telegram's, by name, found no such session until a restart.
    #[test]
    fn a_folder_renamed_since_it_was_listed_answers_to_its_new_name() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("26-12-07-login");
        std::fs::create_dir(&old).unwrap();
        let mut registry = Registry::new(1);
        registry.parked_without_actor(old.clone(), root.path().into(), Settled::Stopped);
        let new = root.path().join("26-12-07-signin");
        std::fs::rename(&old, &new).unwrap();
        assert_eq!(registry.named("signin"), Ok(new.clone()));
        assert_eq!(registry.named("26-12-07-signin"), Ok(new.clone()));
        // The old name too: the buttons of its notices from before the rename carry it.
        assert_eq!(registry.named("login"), Ok(new));
    }
}
