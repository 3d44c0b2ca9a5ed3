//! Noticing `_qa.md` edited by hand in the folders of sessions that wait for answers.
//!
//! One inotify instance for the whole daemon (the kernel allows few instances per user and
//! many watches), watching only the folders of sessions parked waiting for answers; an event
//! naming `_qa.md` becomes one message to the supervisor. Where inotify cannot be had, the
//! supervisor falls back to asking only those sessions, on a slow timer.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use ractor::ActorRef;

use super::SupervisorMsg;
use crate::session::store::QA;

/// Whether an event says a file's new contents are whole: its writer closed it, or it was
/// renamed into place (an editor's atomic save). A write in place is not: the part written so
/// far may read as every question answered, and the rest would never reach the agent.
fn is_written(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
            | notify::EventKind::Modify(ModifyKind::Name(_))
    )
}

pub struct FolderWatch {
    /// `None` when inotify is not available: the supervisor polls instead.
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
}

impl FolderWatch {
    pub fn new(supervisor: ActorRef<SupervisorMsg>) -> FolderWatch {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !is_written(&event.kind) {
                return;
            }
            for path in event.paths {
                if path.file_name().is_some_and(|n| n == QA)
                    && let Some(dir) = path.parent()
                {
                    let _ = supervisor.send_message(SupervisorMsg::FolderChanged {
                        dir: dir.to_path_buf(),
                    });
                }
            }
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch session folders; looking at waiting sessions every few seconds instead");
                None
            }
        };
        FolderWatch {
            watcher,
            watched: HashSet::new(),
        }
    }

    /// True when changes are noticed by events (no polling needed).
    pub fn is_live(&self) -> bool {
        self.watcher.is_some()
    }

    /// Watches `dir` (a session waiting for answers); true when it was not watched before, so
    /// the caller looks once at what changed before the watch began.
    pub fn watch(&mut self, dir: &Path) -> bool {
        if self.watched.contains(dir) {
            return false;
        }
        if let Some(watcher) = &mut self.watcher {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.to_path_buf());
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %dir.display(), "cannot watch the session folder; answers typed by hand need `samocode resume`")
                }
            }
        }
        false
    }

    /// Stops watching `dir`.
    pub fn unwatch(&mut self, dir: &Path) {
        if self.watched.remove(dir)
            && let Some(watcher) = &mut self.watcher
        {
            let _ = watcher.unwatch(dir);
        }
    }
}
