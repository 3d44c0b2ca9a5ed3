//! `samocode logs SESSION [--follow]`: the newest attempt's output, readably (`render` turns
//! each event into text).
//!
//! The log is streamed in fixed chunks through a line splitter that holds at most
//! `LINE_CAP` bytes of one line (`lines`), so the time is linear in the log's size and the
//! memory bounded whatever the length of its lines. `--follow` watches the session's `_logs`
//! folder (inotify, through `notify`) and reads only what was appended; when a newer attempt's
//! log appears it first reads the old one to its end, its unfinished last line included, then
//! moves on. A closed standard output (`| head`) ends the command quietly. What the agent
//! wrote is printed with its control characters made visible (`output::visible`).

mod lines;
mod render;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use clap::Args;
use notify::{RecursiveMode, Watcher};

use super::output::visible;
use super::{CliError, exit};
use crate::config::Config;
use crate::session::SessionFolder;
use crate::session::store::{LOGS, STATE};
use crate::session::untrusted::{self, Links};
use lines::{Line, Lines};
pub use render::readable;

/// The most of one log line that is read and shown. The agents' events are far smaller; a
/// longer line (a flood, a huge tool result) is announced with its length and its start, so
/// that memory stays bounded whatever an agent printed.
const LINE_CAP: usize = 4 * 1024 * 1024;

/// How much of the log one read takes.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The session name.
    pub session: String,
    /// Keep printing as the attempt writes, and move on to newer attempts.
    #[arg(long, short)]
    pub follow: bool,
}

/// Why the logs could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// An attempt log could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An attempt log is not a regular file of the session's.
    #[error(transparent)]
    Unsafe(#[from] untrusted::ReadError),
    /// The session's folder could not be watched for new output.
    #[error("cannot watch {path} for new output: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// Standard output failed for another reason than its reader going away.
    #[error("cannot write to standard output: {0}")]
    Write(#[source] io::Error),
    /// Standard output was closed by its reader (`samocode logs NAME | head`).
    #[error("standard output was closed")]
    Closed,
}

impl From<io::Error> for LogsError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::BrokenPipe => LogsError::Closed,
            _ => LogsError::Write(error),
        }
    }
}

pub async fn logs(args: LogsArgs, config: &Config) -> Result<u8, CliError> {
    let folder = SessionFolder::new(super::gate::session_dir(config, &args.session).await?);
    // Reading files and waiting on file events block; they get a thread of their own.
    let shown = tokio::task::spawn_blocking(move || {
        let mut out = Printer::new(io::stdout());
        if args.follow {
            follow(&folder, &mut out)
        } else {
            newest(&folder, &mut out)
        }
    })
    .await
    .map_err(CliError::failure)?;
    match shown {
        Ok(()) | Err(LogsError::Closed) => Ok(exit::DONE),
        Err(error) => Err(CliError::failure(error)),
    }
}

/// Prints the newest attempt's log to its end.
fn newest<W: Write>(folder: &SessionFolder, out: &mut Printer<W>) -> Result<(), LogsError> {
    let Some(path) = folder.latest_log() else {
        writeln!(out.out, "{} has no attempt logs yet", folder.name())?;
        return Ok(out.out.flush()?);
    };
    let mut attempt = Attempt::open(path, out)?;
    attempt.read_new(out)?;
    attempt.finish(out)?;
    Ok(out.out.flush()?)
}

/// The last `n` readable lines of the newest attempt (for the bot's `/logs`), its header
/// first.
pub fn last_lines(folder: &SessionFolder, n: usize) -> Result<Vec<String>, LogsError> {
    let mut out = Printer::new(Vec::new());
    newest(folder, &mut out)?;
    let bytes = out
        .out
        .into_inner()
        .map_err(|e| LogsError::Write(e.into_error()))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<String> = lines.first().map(|h| h.to_string()).into_iter().collect();
    shown.extend(
        lines
            .iter()
            .skip(1)
            .skip(lines.len().saturating_sub(n + 1))
            .map(|l| l.to_string()),
    );
    Ok(shown)
}

/// What wakes `--follow`: a change in the session's folder or its `_logs`, or the reader of
/// standard output going away.
enum Wake {
    Files(notify::Result<notify::Event>),
    ReaderGone,
}

/// Prints the newest attempt's log and whatever is appended to it, and each newer attempt's
/// log as it appears, until standard output is closed or the process is stopped.
///
/// An attempt is read to its end, its unfinished last line and its standard error included,
/// once it is over: when a newer attempt's log appears, or when the session's state no longer
/// records it as in flight (it ended at a gate, blocked, failed or finished). `_logs` is
/// watched again when it is made anew, and a log cut shorter than what was read is read again
/// from its start. The end of standard output's reader (`| head`) is noticed while nothing is
/// written too.
fn follow<W: Write>(folder: &SessionFolder, out: &mut Printer<W>) -> Result<(), LogsError> {
    let logs_dir = folder.path(LOGS);
    let (sender, events) = mpsc::channel();
    let gone = sender.clone();
    std::thread::spawn(move || {
        if wait_for_reader_to_go() {
            let _ = gone.send(Wake::ReaderGone);
        }
    });
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver lives as long as the loop below; a failed send only happens on the way out.
        let _ = sender.send(Wake::Files(event));
    })
    .map_err(|source| LogsError::Watch {
        path: logs_dir.clone(),
        source,
    })?;
    let mut watch = |path: &Path| {
        watcher
            .watch(path, RecursiveMode::NonRecursive)
            .map_err(|source| LogsError::Watch {
                path: path.to_path_buf(),
                source,
            })
    };
    // The watches are set before the first read, so that whatever is written after that read
    // raises an event. The session folder tells of `_state.json` and of `_logs` made anew;
    // `_logs` (the inode watched) of the attempts' logs.
    watch(folder.dir())?;
    let mut watched_logs: Option<u64> = None;
    let mut current: Option<Attempt> = None;
    if folder.latest_log().is_none() {
        writeln!(
            out.out,
            "{} has no attempt logs yet; waiting for the first",
            folder.name()
        )?;
        out.out.flush()?;
    }
    let (mut look_for_newer, mut look_at_state) = (true, true);
    let (mut told_undriven, mut looked) = (false, std::time::Instant::now());
    loop {
        let logs_now = std::fs::metadata(&logs_dir)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if logs_now != watched_logs {
            if logs_now.is_some() {
                watch(&logs_dir)?;
            }
            watched_logs = logs_now;
            look_for_newer = true;
        }
        if look_for_newer {
            while let Some(newer) = folder.latest_log().filter(|p| {
                current.as_ref().is_none_or(|c| {
                    let order = crate::session::store::log_order;
                    (order(&c.path), &c.path) < (order(p), p)
                })
            }) {
                // The end of an attempt is never lost: the old log is read to its end, its
                // unfinished last line included, before the next one starts.
                if let Some(old) = current.as_mut().filter(|old| !old.finished) {
                    old.read_new(out)?;
                    old.finish(out)?;
                }
                current = Some(Attempt::open(newer, out)?);
                look_at_state = true;
            }
        }
        if let Some(attempt) = current.as_mut() {
            attempt.read_new(out)?;
            if look_at_state && !attempt.finished && is_over(folder, &attempt.path) {
                attempt.finish(out)?;
            }
        }
        out.out.flush()?;

        // A worker killed mid-attempt (`kill -9` of the daemon) leaves the attempt in flight
        // with nobody to end it (its agent may still print): said once, rather than follow in
        // silence. Looked at every few seconds, whether or not anything is written.
        let first = loop {
            let woken = events.recv_timeout(LOOK_FOR_WORKER);
            if looked.elapsed() >= LOOK_FOR_WORKER {
                looked = std::time::Instant::now();
                // An attempt still open, or a session that would run (a worker stopped between
                // two attempts, or journaled its attempt as it stopped).
                let open = current.as_ref().is_some_and(|c| !c.finished)
                    || folder.load_state().is_ok_and(|s| s.runs_when_driven());
                let undriven = open && !super::status::driven(folder);
                if undriven && !told_undriven {
                    eprintln!(
                        "samocode: nobody drives {} now: its worker stopped; the next one takes it over (`samocode status {}`)",
                        folder.name(),
                        crate::session::name::short_name(&folder.name())
                    );
                }
                told_undriven = undriven;
            }
            match woken {
                Ok(first) => break first,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        (look_for_newer, look_at_state) = (false, false);
        let path = current.as_ref().map(|c| c.path.as_path());
        // Events arrive by the dozen while an agent writes; one read answers them all.
        for wake in std::iter::once(first).chain(events.try_iter()) {
            let Wake::Files(event) = wake else {
                return Err(LogsError::Closed);
            };
            look_for_newer |= may_be_new_attempt(&event, path);
            look_at_state |= touches_state(&event);
        }
    }
}

/// How often `--follow` looks whether a worker still drives the session while nothing happens.
const LOOK_FOR_WORKER: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether an event can mean that the session's state changed.
fn touches_state(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => {
            event.need_rescan()
                || event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| n == STATE))
        }
        Err(_) => true,
    }
}

/// Whether the attempt logged at `log` is over: the session's state, when it can be read,
/// records no attempt in flight, or another one.
fn is_over(folder: &SessionFolder, log: &Path) -> bool {
    let Ok(state) = folder.load_state() else {
        return false;
    };
    state
        .in_flight
        .is_none_or(|flight| folder.dir().join(&flight.log) != log)
}

/// Blocks until the reader of standard output is gone (a closed pipe, a terminal that hung
/// up); returns false when that cannot be told (standard output is a file, or poll failed).
fn wait_for_reader_to_go() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    loop {
        // No event asked for: only the ones always reported, an error (the reader closed a
        // pipe) or a hang-up. A file or /dev/null never reports either, and this waits on.
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                    return true;
                }
                if revents.contains(PollFlags::POLLNVAL) {
                    return false;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Whether an event can mean that a newer attempt log exists: anything but a change to the
/// log being read (a write to it only needs a read).
fn may_be_new_attempt(event: &notify::Result<notify::Event>, current: Option<&Path>) -> bool {
    match event {
        Ok(event) => {
            event.need_rescan()
                || event.paths.iter().any(|p| {
                    Some(p.as_path()) != current && p.extension().is_some_and(|e| e == "jsonl")
                })
        }
        Err(_) => true,
    }
}

/// One attempt log being read: where the reading stands in it.
struct Attempt {
    path: PathBuf,
    file: File,
    lines: Lines,
    /// Read to its end, its standard error shown.
    finished: bool,
}

impl Attempt {
    /// Opens the log and prints its header line.
    fn open<W: Write>(path: PathBuf, out: &mut Printer<W>) -> Result<Attempt, LogsError> {
        // The agent can write in the session folder: a log that is no longer a regular file
        // (a pipe, a link) is refused rather than read.
        let file = untrusted::open(&path, Links::Refuse)?.ok_or_else(|| LogsError::Read {
            path: path.clone(),
            source: io::ErrorKind::NotFound.into(),
        })?;
        writeln!(out.out, "== {}", path.display())?;
        Ok(Attempt {
            path,
            file,
            lines: Lines::new(out.cap),
            finished: false,
        })
    }

    /// Prints every line completed since the last read; the file's own offset remembers where
    /// that was, so nothing is read twice.
    fn read_new<W: Write>(&mut self, out: &mut Printer<W>) -> Result<(), LogsError> {
        use std::io::{Seek, SeekFrom};
        let read = |source| LogsError::Read {
            path: self.path.clone(),
            source,
        };
        // A log cut shorter than what was read (by hand: a log is only ever appended to) is
        // read again from its start, rather than from the middle of a line later.
        let at = self.file.stream_position().map_err(read)?;
        let len = self.file.metadata().map_err(read)?.len();
        if len < at {
            self.file.seek(SeekFrom::Start(0)).map_err(read)?;
            self.lines = Lines::new(out.cap);
            writeln!(
                out.out,
                "[the log was cut to {len} bytes while it was read; reading it again from its start]"
            )?;
        }
        loop {
            let read = self.file.read(&mut out.chunk);
            let count = match read {
                Ok(0) => return Ok(()),
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LogsError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            let Printer {
                out: writer,
                chunk,
                cap,
            } = out;
            self.lines
                .feed(&chunk[..count], &mut |line| print_line(writer, *cap, line))?;
        }
    }

    /// Prints the last line when the attempt ended without a newline, then what the agent
    /// wrote to standard error, if anything (a CLI that fails at its start often says why
    /// only there).
    fn finish<W: Write>(&mut self, out: &mut Printer<W>) -> Result<(), LogsError> {
        self.finished = true;
        let Printer {
            out: writer, cap, ..
        } = out;
        self.lines
            .finish(&mut |line| print_line(writer, *cap, line))?;
        print_stderr(&self.path, &mut out.out)
    }
}

/// The most of an attempt's standard error `logs` prints: its end.
const STDERR_TAIL: u64 = 16 * 1024;

/// Prints the end of the attempt's `.stderr.log` beside `log`, when there is one.
fn print_stderr(log: &Path, out: &mut impl Write) -> Result<(), LogsError> {
    use std::io::{Seek, SeekFrom};
    let path = crate::session::store::stderr_log_of(log);
    let Some(mut file) = untrusted::open(&path, Links::Refuse)? else {
        return Ok(());
    };
    let read = |source| LogsError::Read {
        path: path.clone(),
        source,
    };
    let len = file.metadata().map_err(read)?.len();
    let start = len.saturating_sub(STDERR_TAIL);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(STDERR_TAIL).read_to_end(&mut bytes))
        .map_err(read)?;
    let text = String::from_utf8_lossy(crate::session::store::from_a_character(&bytes, start > 0));
    if text.trim().is_empty() {
        return Ok(());
    }
    match start {
        0 => writeln!(out, "-- standard error:")?,
        _ => writeln!(
            out,
            "-- standard error (its last {STDERR_TAIL} of {len} bytes):"
        )?,
    }
    for line in text.trim_end().lines() {
        writeln!(out, "   {}", visible(line))?;
    }
    Ok(())
}

/// Standard output, buffered, and the one read buffer every attempt reuses.
struct Printer<W: Write> {
    out: BufWriter<W>,
    chunk: Vec<u8>,
    cap: usize,
}

impl<W: Write> Printer<W> {
    fn new(out: W) -> Printer<W> {
        Printer {
            out: BufWriter::new(out),
            chunk: vec![0; CHUNK],
            cap: LINE_CAP,
        }
    }
}

/// One log line as a person reads it; nothing for lines with nothing to show.
fn print_line(out: &mut impl Write, cap: usize, line: Line<'_>) -> io::Result<()> {
    match line {
        Line::Whole(bytes) => match readable(String::from_utf8_lossy(bytes).trim()) {
            Some(text) => writeln!(out, "{}", visible(&text)),
            None => Ok(()),
        },
        Line::Cut { start, len } => writeln!(
            out,
            "[a line of {len} bytes, longer than the {} shown of a line; it begins: {}]",
            size(cap),
            visible(&render::shorten(String::from_utf8_lossy(start).trim(), 300))
        ),
    }
}

/// A size in whole MiB or KiB, as the cap is set.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `logs` prints for a log with these bytes.
    fn shown(log: &[u8], cap: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("01-01-000000-001-investigation-a1.jsonl");
        std::fs::write(&path, log).unwrap();
        let mut out = Printer::new(Vec::new());
        out.cap = cap;
        let mut attempt = Attempt::open(path.clone(), &mut out).unwrap();
        attempt.read_new(&mut out).unwrap();
        attempt.finish(&mut out).unwrap();
        let text = String::from_utf8(out.out.into_inner().unwrap()).unwrap();
        text.strip_prefix(&format!("== {}\n", path.display()))
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_large_log_is_shown_line_for_line_across_many_reads() {
        // Ten thousand events of varied length: many reads, lines split between them.
        let mut log = String::new();
        let mut expected = String::new();
        for i in 0..10_000 {
            let text = format!("step {i} {}", "word ".repeat(i % 40));
            log.push_str(&format!(
                "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}]}}}}\n"
            ));
            expected.push_str(&format!("{text}\n"));
            if i % 1000 == 0 {
                log.push_str("{\"type\":\"user\",\"message\":{\"content\":[]}}\nplain text\n");
                expected.push_str("plain text\n");
            }
        }
        log.push_str(r#"{"type":"result","subtype":"success","total_cost_usd":0.5,"num_turns":9}"#);
        expected.push_str("[result: success · $0.5000 · 9 turns]\n");
        assert!(log.len() > 4 * CHUNK);
        assert_eq!(shown(log.as_bytes(), LINE_CAP), expected);
    }

    #[test]
    fn an_overlong_line_is_announced_with_its_length_and_start() {
        let long = format!(
            "{{\"type\":\"user\",\"message\":{{\"content\":\"{}\"}}}}",
            "y".repeat(3 * CHUNK)
        );
        let log = format!("before\n{long}\nafter\n");
        let text = shown(log.as_bytes(), CHUNK);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!((lines[0], lines[2]), ("before", "after"));
        assert!(
            lines[1].starts_with(&format!(
                "[a line of {} bytes, longer than the 64 KiB shown of a line; it begins: {{\"type\":\"user\",\"message\":{{\"content\":\"yyy",
                long.len()
            )),
            "{}",
            &lines[1][..200]
        );
        assert!(lines[1].len() < 500, "only the start is shown");
    }
}
