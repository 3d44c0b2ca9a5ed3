//! What a session page shows, read from the session folder (read-only, through the session
//! and protocol readers): the state and its status row, the notebook, the questions, the two
//! journals, the artifacts and the newest attempt's readable log.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;

use crate::cli::logs::readable;
use crate::cli::status::SessionRow;
use crate::protocol::SessionState;
use crate::protocol::journal::{HistoryRow, IterationRow};
use crate::protocol::overview::{self, Overview};
use crate::protocol::qa::QaDoc;
use crate::session::store::{HISTORY, ITERATIONS, LOGS, OVERVIEW, QA};
use crate::session::{SessionFolder, StoreError};

/// How much of an artifact is rendered; the rest is cut with a note (an agent can write a huge
/// file, and the page must stay readable).
const ARTIFACT_LIMIT: usize = 200 * 1024;
/// How much of the end of an attempt log a page starts with.
const LOG_TAIL: u64 = 256 * 1024;
/// The most log entries a page holds.
pub const LOG_ENTRIES: usize = 400;

/// A markdown file the agent wrote into the session folder.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The file name.
    pub file: String,
    /// The name without its time prefix and `.md` (`plan-steps`).
    pub title: String,
    pub text: String,
    /// The text was cut (at 200 KiB).
    pub cut: bool,
}

impl Artifact {
    pub fn is_plan(&self) -> bool {
        is_plan_title(&self.title)
    }

    /// A digest of the artifact as shown (its name and text): the plan form carries it, so
    /// that a plan approved or rejected is the one the page showed.
    pub fn version(&self) -> String {
        qa_version(&format!("{}\n{}", self.file, self.text))
    }
}

/// Whether an artifact of this title (`plan-steps`) is a plan.
fn is_plan_title(title: &str) -> bool {
    title.starts_with("plan-") || title == "plan"
}

/// [`Artifact::version`] of the session's newest plan now, if it has one (only that file is
/// read).
pub fn plan_version(dir: &Path) -> Option<String> {
    let files = artifact_files(dir).ok()?;
    let newest = files
        .iter()
        .rev()
        .find(|file| is_plan_title(&title_of(file)))?;
    read_artifact(dir, newest).map(|plan| plan.version())
}

/// The end of the newest attempt log, as readable entries.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// The log's path, when there is one.
    pub path: Option<PathBuf>,
    pub entries: Vec<String>,
    /// The byte offset up to which the log was read (after its last complete line).
    pub end: u64,
}

/// A short fingerprint of `_qa.md`'s text: it changes whenever an answer is given.
pub fn qa_version(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Everything a session page shows.
#[derive(Debug)]
pub struct SessionView {
    pub row: SessionRow,
    pub state: SessionState,
    pub overview: Overview,
    pub qa: Option<QaDoc>,
    /// [`qa_version`] of `_qa.md` as read: the questions form carries it, so that answers
    /// given on a page older than the file are refused rather than written over newer ones.
    pub qa_version: Option<String>,
    pub iterations: Vec<IterationRow>,
    pub history: Vec<HistoryRow>,
    /// Oldest first.
    pub artifacts: Vec<Artifact>,
}

/// What a live page keeps between two reads of the same folder, so that a read costs what
/// changed: the journals are append-only and are read from where the last read stopped, and
/// an artifact is read again only when its size or time changed.
#[derive(Default)]
pub struct ReadCache {
    iterations: Journal<IterationRow>,
    history: Journal<HistoryRow>,
    artifacts: HashMap<String, (u64, Option<SystemTime>, Artifact)>,
}

/// The rows of one journal read so far.
struct Journal<T> {
    rows: Vec<T>,
    /// The byte offset after the last complete line read, and the file it was read from.
    end: u64,
    inode: u64,
}

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Journal {
            rows: Vec::new(),
            end: 0,
            inode: 0,
        }
    }
}

impl<T: DeserializeOwned + Clone> Journal<T> {
    /// Reads the lines appended since the last call; starts over when the file was replaced
    /// or shortened. A line that does not parse (a torn last line) is skipped. `keep`: the
    /// cache lives on (a live page), so the rows are copied; otherwise they are handed over.
    fn update(&mut self, path: &Path, keep: bool) -> Vec<T> {
        let Ok(Some(mut file)) = open_untrusted(path) else {
            *self = Journal::default();
            return Vec::new();
        };
        let (len, inode) = file
            .metadata()
            .map(|m| (m.len(), m.ino()))
            .unwrap_or((0, 0));
        if inode != self.inode || len < self.end {
            *self = Journal {
                inode,
                ..Journal::default()
            };
        }
        if len > self.end && file.seek(SeekFrom::Start(self.end)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.take(len - self.end).read_to_end(&mut bytes);
            if let Some(last) = bytes.iter().rposition(|b| *b == b'\n') {
                self.end += last as u64 + 1;
                let text = String::from_utf8_lossy(&bytes[..last]);
                self.rows
                    .extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
            }
        }
        match keep {
            true => self.rows.clone(),
            false => std::mem::take(&mut self.rows),
        }
    }
}

impl SessionView {
    /// Reads a session folder; fails only when its state cannot be read.
    pub fn read(dir: &Path, project_file: &Path) -> Result<SessionView, StoreError> {
        // A cache thrown away after: the journals' rows are handed over, not copied (a long
        // session's whole history twice, per view, raised the daemon's memory for good).
        SessionView::read_with(dir, project_file, &mut ReadCache::default(), false)
    }

    /// Reads a session folder again, reading only what changed since `cache` was filled.
    pub fn read_again(
        dir: &Path,
        project_file: &Path,
        cache: &mut ReadCache,
    ) -> Result<SessionView, StoreError> {
        SessionView::read_with(dir, project_file, cache, true)
    }

    fn read_with(
        dir: &Path,
        project_file: &Path,
        cache: &mut ReadCache,
        keep: bool,
    ) -> Result<SessionView, StoreError> {
        let folder = SessionFolder::new(dir);
        let state = folder.load_state()?;
        let row = SessionRow::of_owned(&folder, &state, project_file);
        let overview = folder
            .read(OVERVIEW)?
            .map(|t| overview::parse(&t))
            .unwrap_or_default();
        let qa_text = folder.read(QA)?;
        let qa_version = qa_text.as_deref().map(qa_version);
        let qa = qa_text.map(|t| QaDoc::parse(&t));
        Ok(SessionView {
            row,
            state,
            overview,
            qa,
            qa_version,
            iterations: cache.iterations.update(&folder.path(ITERATIONS), keep),
            history: cache.history.update(&folder.path(HISTORY), keep),
            artifacts: artifacts(dir, &mut cache.artifacts)?,
        })
    }

    /// The newest plan, if the agent wrote one.
    pub fn plan(&self) -> Option<&Artifact> {
        self.artifacts.iter().rev().find(|a| a.is_plan())
    }
}

/// The agent's markdown files: every `.md` in the folder but the notebook and the questions,
/// oldest first by the time their names start with, from the day the session was created.
fn artifacts(
    dir: &Path,
    cache: &mut HashMap<String, (u64, Option<SystemTime>, Artifact)>,
) -> Result<Vec<Artifact>, StoreError> {
    let files = artifact_files(dir)?;
    cache.retain(|file, _| files.contains(file));
    Ok(files
        .into_iter()
        .filter_map(|file| {
            let meta = std::fs::symlink_metadata(dir.join(&file)).ok()?;
            let mark = (meta.len(), meta.modified().ok());
            if let Some((len, time, artifact)) = cache.get(&file)
                && (*len, *time) == mark
            {
                return Some(artifact.clone());
            }
            let artifact = read_artifact(dir, &file)?;
            cache.insert(file, (mark.0, mark.1, artifact.clone()));
            Some(artifact)
        })
        .collect())
}

/// The names of the agent's markdown files in `dir`, in [`artifacts`]'s order.
fn artifact_files(dir: &Path) -> Result<Vec<String>, StoreError> {
    let io = |source| StoreError::Io {
        action: "cannot list",
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && !name.starts_with('_') && !name.starts_with('.'))
        .collect();
    let created = dir
        .file_name()
        .and_then(|name| crate::protocol::artifact::created(&name.to_string_lossy()));
    crate::protocol::artifact::sort_by_made(&mut files, created, |file| {
        crate::session::profile::made_at(&dir.join(file))
    });
    Ok(files)
}

/// Opens a session's file for a page: never through a link, never waiting (a named pipe would
/// hold a thread of the daemon's blocking pool for good; a few hundred views of one, every
/// thread, and with them every session's work); a regular file only.
fn open_untrusted(
    path: &Path,
) -> Result<Option<std::fs::File>, crate::session::untrusted::ReadError> {
    crate::session::untrusted::open(path, crate::session::untrusted::Links::Refuse)
}

/// One of the agent's markdown files, as a page shows it (cut at [`ARTIFACT_LIMIT`]).
fn read_artifact(dir: &Path, file: &str) -> Option<Artifact> {
    let file_in = open_untrusted(&dir.join(file)).ok()??;
    // Never more than the page shows (a link to /dev/zero took a gigabyte of the daemon).
    let mut bytes = Vec::new();
    file_in
        .take(ARTIFACT_LIMIT as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let cut = bytes.len() > ARTIFACT_LIMIT;
    bytes.truncate(ARTIFACT_LIMIT);
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Cut inside a character: up to it.
        Err(error) if cut && error.utf8_error().error_len().is_none() => {
            let whole = error.utf8_error().valid_up_to();
            let mut bytes = error.into_bytes();
            bytes.truncate(whole);
            String::from_utf8(bytes).ok()?
        }
        Err(_) => return None,
    };
    Some(Artifact {
        title: title_of(file),
        file: file.to_string(),
        text,
        cut,
    })
}

/// `11-24-10:00-plan-steps.md` -> `plan-steps`.
fn title_of(file: &str) -> String {
    let stem = file.strip_suffix(".md").unwrap_or(file);
    let bytes = stem.as_bytes();
    let stamped = bytes.len() > 12
        && bytes[..11].iter().enumerate().all(|(i, b)| match i {
            2 | 5 => *b == b'-',
            8 => *b == b':',
            _ => b.is_ascii_digit(),
        })
        && bytes[11] == b'-';
    if stamped {
        stem[12..].to_string()
    } else {
        stem.to_string()
    }
}

/// The newest attempt log in a `_logs` folder (by name, which starts with the time). One pass
/// over the names, keeping only the greatest: a long session's folder holds thousands of files.
pub fn newest_log(logs: &Path) -> Option<PathBuf> {
    // By the iteration and attempt its name carries, as `samocode logs` orders them: the time
    // in a name has no year (an attempt on January 1st is newer than one on December 31st).
    let order = |name: &std::ffi::OsStr| {
        (
            crate::session::store::log_order(Path::new(name)),
            name.to_owned(),
        )
    };
    let mut newest: Option<std::ffi::OsString> = None;
    for entry in std::fs::read_dir(logs).ok()?.filter_map(Result::ok) {
        let name = entry.file_name();
        if name.as_encoded_bytes().ends_with(b".jsonl")
            && newest.as_deref().is_none_or(|n| order(&name) > order(n))
        {
            newest = Some(name);
        }
    }
    newest.map(|name| logs.join(name))
}

impl LogTail {
    /// The end of the newest attempt log of a session.
    pub fn newest(dir: &Path) -> LogTail {
        match newest_log(&dir.join(LOGS)) {
            Some(path) => LogTail::read(&path, None),
            None => LogTail::default(),
        }
    }

    /// Reads the complete lines of `path` from byte `from` (or, without it, from near the end),
    /// as readable entries, keeping at most [`LOG_ENTRIES`]. Never more than [`LOG_TAIL`] bytes
    /// are read: from further back than that (a log the page has not seen, or one that grew by
    /// hundreds of megabytes), only its last [`LOG_TAIL`] bytes are, from a line's start.
    pub fn read(path: &Path, from: Option<u64>) -> LogTail {
        let mut tail = LogTail {
            path: Some(path.to_path_buf()),
            entries: Vec::new(),
            end: from.unwrap_or(0),
        };
        let Ok(Some(mut file)) = open_untrusted(path) else {
            return tail;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let wanted = from.unwrap_or(0).min(len);
        let start = wanted.max(len.saturating_sub(LOG_TAIL));
        // Jumped into the middle of the file: its first line there is partial and skipped.
        // Read from the byte before, so that a line that begins right at `start` is kept.
        let jumped = start > wanted;
        let base = if jumped { start - 1 } else { start };
        if file.seek(SeekFrom::Start(base)).is_err() {
            return tail;
        }
        let mut bytes = Vec::new();
        let _ = file.take(len - base).read_to_end(&mut bytes);
        // The window lies inside one line longer than itself: said, not shown as nothing.
        let inside_one_line = || {
            format!(
                "(a line of more than {} KiB the page does not show: `samocode logs` shows its start)",
                LOG_TAIL >> 10
            )
        };
        let first = if jumped {
            match bytes.iter().position(|b| *b == b'\n') {
                // The window's only line end is its last byte: all of it is one line's end.
                Some(newline) if newline + 1 == bytes.len() => {
                    tail.end = len;
                    tail.entries.push(inside_one_line());
                    return tail;
                }
                Some(newline) => newline + 1,
                None => {
                    tail.end = start;
                    return tail;
                }
            }
        } else {
            0
        };
        let Some(last_newline) = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .filter(|n| *n >= first)
        else {
            tail.end = base + first as u64;
            return tail;
        };
        tail.end = base + last_newline as u64 + 1;
        let text = String::from_utf8_lossy(&bytes[first..=last_newline]);
        tail.entries = text
            .lines()
            .filter_map(|line| readable(line.trim()))
            .collect();
        if tail.entries.len() > LOG_ENTRIES {
            tail.entries.drain(..tail.entries.len() - LOG_ENTRIES);
        }
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page's plan, the one approved from it, is the revision of a plan rejected in the same
    /// minute, though the revision's name sorts first.
    #[test]
    fn a_plan_revised_in_the_minute_of_the_rejected_one_is_the_page_plan() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            std::fs::write(dir.path().join(name), format!("# {name}\n- [ ] 1.1 x\n")).unwrap()
        };
        write("12-07-19:05-plan-zeta.md");
        // Past the filesystem clock's tick, so that the two files' times differ.
        std::thread::sleep(std::time::Duration::from_millis(50));
        write("12-07-19:05-plan-alpha.md");
        let shown = artifacts(dir.path(), &mut HashMap::new()).unwrap();
        let files: Vec<&str> = shown.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(
            files,
            ["12-07-19:05-plan-zeta.md", "12-07-19:05-plan-alpha.md"]
        );
        assert_eq!(
            plan_version(dir.path()),
            Some(shown[1].version()),
            "the page's plan is the revision"
        );
    }

    /// A named pipe among a session's markdown files, journals or logs held a thread of the
    /// daemon for good at each view of its page (after a few hundred, the daemon answered
    /// nothing), and a link to /dev/zero took a gigabyte: neither is read, a big file is read
    /// only as far as the page shows it.
    #[test]
    fn a_page_reads_no_pipe_no_link_and_no_more_than_it_shows() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let fifo = |name: &str| {
            nix::unistd::mkfifo(
                &d.join(name),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap()
        };
        fifo("12-07-23:59-notes-pipe.md");
        fifo("_iterations.jsonl");
        fifo("log.jsonl");
        std::os::unix::fs::symlink("/dev/zero", d.join("12-07-23:58-notes-zero.md")).unwrap();
        let big = format!("# Plan\n{}", "\u{e9}".repeat(ARTIFACT_LIMIT));
        std::fs::write(d.join("12-07-23:57-plan-big.md"), &big).unwrap();
        let (done, read) = std::sync::mpsc::channel();
        let folder = d.clone();
        std::thread::spawn(move || {
            let shown = artifacts(&folder, &mut HashMap::new()).unwrap();
            let rows = Journal::<serde_json::Value>::default()
                .update(&folder.join("_iterations.jsonl"), false);
            let log = LogTail::read(&folder.join("log.jsonl"), None);
            let _ = done.send((shown, rows.len(), log.entries.len()));
        });
        let (shown, rows, entries) = read
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a page waited on a named pipe");
        assert_eq!((rows, entries), (0, 0));
        let files: Vec<&str> = shown.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(files, ["12-07-23:57-plan-big.md"]);
        assert!(shown[0].cut);
        assert!(shown[0].text.len() <= ARTIFACT_LIMIT);
        assert!(big.starts_with(&shown[0].text));
    }

    #[test]
    fn the_newest_log_is_of_the_latest_iteration_across_the_new_year() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "12-31-235942-002-requirements-a1.jsonl",
            "01-01-000031-004-planning-a1.jsonl",
            "01-01-000010-003-requirements-a2.jsonl",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(
            newest_log(dir.path()),
            Some(dir.path().join("01-01-000031-004-planning-a1.jsonl"))
        );
    }

    /// A page's log is read from at most [`LOG_TAIL`] bytes back, whatever it asks for: a log
    /// of hundreds of megabytes (an agent's flood) never comes into the daemon's memory whole.
    #[test]
    fn a_log_is_read_from_its_tail_however_far_back_the_page_asks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let line = |n: usize| format!("line {n:07} {}\n", "x".repeat(100));
        let lines = (LOG_TAIL as usize / line(0).len()) * 3;
        let text: String = (0..lines).map(line).collect();
        std::fs::write(&path, &text).unwrap();
        let len = text.len() as u64;
        for from in [Some(0), Some(10), None] {
            let tail = LogTail::read(&path, from);
            assert_eq!(tail.end, len, "{from:?}");
            assert_eq!(tail.entries.len(), LOG_ENTRIES, "{from:?}");
            assert!(
                tail.entries
                    .last()
                    .unwrap()
                    .starts_with(&format!("line {:07}", lines - 1))
            );
            // Whole lines only: the partial one where the window begins is not shown.
            assert!(
                tail.entries.iter().all(|e| e.len() == line(0).len() - 1),
                "{from:?}"
            );
        }
        // Grown by more than the window since the page's last read: the tail, again whole lines.
        let more: String = (lines..lines * 2).map(line).collect();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, more.as_bytes()).unwrap();
        let tail = LogTail::read(&path, Some(len));
        assert_eq!(tail.end, len + more.len() as u64);
        assert!(tail.entries.iter().all(|e| e.len() == line(0).len() - 1));
        // Within the window, from where the page stopped, every line.
        let tail = LogTail::read(&path, Some(tail.end - 3 * line(0).len() as u64));
        assert_eq!(tail.entries.len(), 3);
        // Lines further back than the window are not read at all: a long last line leaves
        // only itself to show, which the page says it does not (it showed nothing).
        let long = dir.path().join("long.jsonl");
        let early: String = (0..1000).map(line).collect();
        std::fs::write(
            &long,
            format!("{early}{}\n", "z".repeat(LOG_TAIL as usize * 2)),
        )
        .unwrap();
        let tail = LogTail::read(&long, Some(0));
        assert_eq!(
            tail.entries,
            [
                "(a line of more than 256 KiB the page does not show: `samocode logs` shows its start)"
            ]
        );
        // A line that begins right where the window does is kept.
        let exact = dir.path().join("exact.jsonl");
        let big = "y".repeat(LOG_TAIL as usize - 1) + "\n";
        std::fs::write(&exact, format!("first\n{big}")).unwrap();
        let tail = LogTail::read(&exact, Some(0));
        assert_eq!(tail.entries.len(), 1);
        assert_eq!(tail.entries[0].len(), LOG_TAIL as usize - 1);
    }

    #[test]
    fn artifact_titles_lose_their_time() {
        assert_eq!(title_of("11-24-10:00-plan-steps.md"), "plan-steps");
        assert_eq!(
            title_of("11-24-10:00-test-report-results.md"),
            "test-report-results"
        );
        assert_eq!(title_of("notes.md"), "notes");
    }

    #[test]
    fn journals_are_read_again_from_where_they_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut journal: Journal<u32> = Journal::default();
        assert!(journal.update(&path, true).is_empty(), "no file yet");
        std::fs::write(&path, "1\n2\n3").unwrap();
        assert_eq!(
            journal.update(&path, true),
            [1, 2],
            "the torn last line waits"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"3\n4\n").unwrap();
        assert_eq!(journal.update(&path, true), [1, 2, 33, 4]);
        let replaced = dir.path().join("new");
        std::fs::write(&replaced, "7\n").unwrap();
        std::fs::rename(&replaced, &path).unwrap();
        assert_eq!(
            journal.update(&path, true),
            [7],
            "a replaced file is read anew"
        );
    }

    #[test]
    fn a_log_is_read_by_complete_lines_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let first = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"one"}]}}"#;
        let second = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"two"}]}}"#;
        std::fs::write(&path, format!("{first}\n{second}\n{{\"type\":\"assis")).unwrap();
        let tail = LogTail::read(&path, None);
        assert_eq!(tail.entries, ["one", "two"]);
        assert_eq!(tail.end as usize, first.len() + second.len() + 2);
        let next = LogTail::read(&path, Some(first.len() as u64 + 1));
        assert_eq!(next.entries, ["two"]);
        assert_eq!(next.end, tail.end);
    }
}
