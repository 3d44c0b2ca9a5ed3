//! A log file that rotates by size: when the next line would take the file past its limit, the
//! file becomes `NAME.1`, `NAME.1` becomes `NAME.2` and so on, the oldest is dropped, and a new
//! file starts. A line is never split between two files.
//!
//! Written here on std rather than taken from a crate: tracing-appender rotates only by time,
//! and the crates that rotate by size (file-rotate, rolling-file) bring chrono, and file-rotate
//! also compression, for what is a rename loop and a byte count.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The log file being written and the rotation policy.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    /// Rotated files kept besides the current one (`NAME.1` to `NAME.{keep}`).
    keep: usize,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens `path` for appending (creating it, and its folder with mode 0700, when missing).
    /// The file holds the daemon's own lines: mode 0600, like the rest of the state folder.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = open(path, false)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// `NAME.n`, the n-th newest rotated file.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file = open(&self.path, true)?;
        } else {
            // Renaming over the oldest drops it; a gap (a file removed by hand) is skipped.
            for n in (1..self.keep).rev() {
                match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = open(&self.path, true)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Rotates first when `len` more bytes would pass the limit; a line longer than the limit
    /// still goes whole into a file of its own.
    fn make_room(&mut self, len: usize) -> io::Result<()> {
        if self.size > 0 && self.size + len as u64 > self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }
}

fn open(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    // Never waited on: a named pipe in its place would hang the start.
    crate::session::untrusted::open_for_writing(options.create(true).mode(0o600), path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.make_room(buf.len())?;
        let written = self.file.write(buf)?;
        self.size += written as u64;
        Ok(written)
    }

    // The log layer writes each line with one `write_all`: deciding on rotation once, for the
    // whole buffer, is what keeps a line in one file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.make_room(buf.len())?;
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn rotates_at_the_limit_keeps_the_newest_files_and_never_splits_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/samocode.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        // 40 lines of 24 bytes: four lines fill a file, so ten files' worth, of which three stay.
        for i in 0..40 {
            log.write_all(format!("line {i:03} of the log....\n").as_bytes())
                .unwrap();
        }
        let names = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("line {i:03} of the log...."))
                .collect()
        };
        let all = names(40);
        assert_eq!(lines(&path), all[36..]);
        assert_eq!(lines(&log.rotated(1)), all[32..36]);
        assert_eq!(lines(&log.rotated(2)), all[28..32]);
        assert!(!log.rotated(3).exists(), "only two rotated files are kept");
        for file in [path.clone(), log.rotated(1), log.rotated(2)] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 100);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
    }

    #[test]
    fn a_reopened_log_counts_what_it_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samocode.log");
        std::fs::write(&path, "x".repeat(90) + "\n").unwrap();
        let mut log = RotatingFile::open(&path, 100, 5).unwrap();
        log.write_all(b"a line that does not fit\n").unwrap();
        assert_eq!(lines(&path), ["a line that does not fit"]);
        assert_eq!(lines(&log.rotated(1)), ["x".repeat(90)]);
        // A line longer than the limit still goes whole, into a file of its own.
        let long = "y".repeat(300);
        log.write_all(format!("{long}\n").as_bytes()).unwrap();
        log.write_all(b"next\n").unwrap();
        assert_eq!(lines(&log.rotated(1)), [long]);
        assert_eq!(lines(&path), ["next"]);
    }
}
