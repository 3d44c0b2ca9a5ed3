//! Reading files that an agent can write, replace or remove: everything in a session folder,
//! and the project's own configuration files.
//!
//! The agent runs with its permissions skipped, on repository content that may be hostile. So
//! a read here never blocks (`O_NONBLOCK`: a `mkfifo _signal.json` cannot hang the worker),
//! never follows a symbolic link unless the caller allows it (`O_NOFOLLOW`: a link to
//! `/dev/zero` or `/etc/passwd` is refused, not read), accepts only a regular file (checked on
//! the opened descriptor, so the file cannot be swapped between the check and the read), and
//! never reads more than a cap (a 300 MB file is refused, not loaded).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// Whether the last component of a path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A link is an error: session files are samocode's own and never links.
    Refuse,
    /// A link is followed: a person's `.samocode` or `config.toml` is often a dotfile link.
    Follow,
}

/// Why a file that must be a small regular text file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The path is a symbolic link, and links are refused here.
    #[error(
        "{path} is a symbolic link; samocode does not follow links out of the session folder: replace it with a regular file"
    )]
    Symlink { path: PathBuf },
    /// The path is a symbolic link to nothing (its target moved or was removed).
    #[error("{path} is a link to {target}, which does not exist; mend the link or remove it")]
    Dangling { path: PathBuf, target: PathBuf },
    /// The path is a directory, a named pipe, a device or a socket.
    #[error("{path} is {kind}, not a regular file; replace it with a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file is larger than samocode reads.
    #[error("{path} is {size} bytes, over the limit of {cap} bytes samocode reads; shorten it")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text (byte {at} is not); save it as UTF-8")]
    NotUtf8 { path: PathBuf, at: usize },
    /// Opening or reading failed for another reason (permissions, IO).
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReadError {
    /// The error as an IO error that does not name the path again, for a message that does.
    pub fn into_io(self) -> std::io::Error {
        match self {
            ReadError::Io { source, .. } => source,
            ReadError::Symlink { .. } => std::io::Error::other("it is a symbolic link"),
            ReadError::Dangling { target, .. } => std::io::Error::other(format!(
                "it is a link to {}, which does not exist",
                target.display()
            )),
            ReadError::NotRegular { kind, .. } => {
                std::io::Error::other(format!("it is {kind}, not a regular file"))
            }
            ReadError::TooLarge { size, cap, .. } => std::io::Error::other(format!(
                "it is {size} bytes, over the limit of {cap} bytes samocode reads"
            )),
            ReadError::NotUtf8 { at, .. } => {
                std::io::Error::other(format!("it is not UTF-8 text (byte {at} is not)"))
            }
        }
    }
}

/// Opens `path` for reading without blocking; `None` when nothing is there. The result is a
/// regular file (checked on the descriptor), not yet read.
pub fn open(path: &Path, links: Links) -> Result<Option<File>, ReadError> {
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(file) => file,
        // A link followed to nothing is not "no file": a dotfile's target moved, and what it
        // set would be lost without a word.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::read_link(path) {
                Ok(target) => Err(ReadError::Dangling {
                    path: path.to_path_buf(),
                    target,
                }),
                Err(_) => Ok(None),
            };
        }
        // O_NOFOLLOW on a link fails with ELOOP.
        Err(e) if links == Links::Refuse && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadError::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ReadError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let kind = file
        .metadata()
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .file_type();
    let described = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    };
    match described {
        None => Ok(Some(file)),
        Some(kind) => Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Opens `path` with `options` for writing, never waiting (a named pipe there, with no
/// reader, would hang the caller beyond a SIGTERM's reach): a regular file only.
pub fn open_for_writing(options: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    let not_regular = || {
        std::io::Error::other(format!(
            "{} is not a regular file (a named pipe, a device or a folder); remove it",
            path.display()
        ))
    };
    let file = options
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO | libc::EISDIR) => not_regular(),
            _ => e,
        })?;
    match file.metadata()?.is_file() {
        true => Ok(file),
        false => Err(not_regular()),
    }
}

/// Reads `path` as UTF-8 text of at most `cap` bytes; `None` when nothing is there.
pub fn read_text(path: &Path, cap: u64, links: Links) -> Result<Option<String>, ReadError> {
    let Some(bytes) = read_bytes(path, cap, links)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| ReadError::NotUtf8 {
            path: path.to_path_buf(),
            at: e.utf8_error().valid_up_to(),
        })
}

/// Reads the bytes of `path`, a regular file of at most `cap` bytes; `None` when nothing is
/// there.
pub fn read_bytes(path: &Path, cap: u64, links: Links) -> Result<Option<Vec<u8>>, ReadError> {
    let Some(file) = open(path, links)? else {
        return Ok(None);
    };
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    if size > cap {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size,
            cap,
        });
    }
    // The file may grow after the size was taken: read one byte past the cap to tell.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            cap,
        });
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn regular_files_are_read_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.md");
        assert!(read_text(&path, 10, Links::Refuse).unwrap().is_none());
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(
            read_text(&path, 10, Links::Refuse).unwrap().as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_signal.json");
        let made = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success());
        let error = read_text(&path, 1 << 20, Links::Refuse).unwrap_err();
        assert!(
            error.to_string().contains("is a named pipe (FIFO)"),
            "{error}"
        );
    }

    #[test]
    fn links_are_refused_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let error = read_text(&zero, 1 << 20, Links::Refuse).unwrap_err();
        assert!(matches!(error, ReadError::Symlink { .. }), "{error}");
        // Followed, the device is still not a regular file.
        let error = read_text(&zero, 1 << 20, Links::Follow).unwrap_err();
        assert!(error.to_string().contains("is a device"), "{error}");

        let target = dir.path().join("real.toml");
        std::fs::write(&target, "x = 1").unwrap();
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            read_text(&link, 100, Links::Follow).unwrap().as_deref(),
            Some("x = 1")
        );
        assert!(read_text(&link, 100, Links::Refuse).is_err());
        std::fs::remove_file(&target).unwrap();
        let error = read_text(&link, 100, Links::Follow).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("which does not exist; mend the link"),
            "{error}"
        );
    }

    #[test]
    fn large_directories_and_binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let error = read_text(&big, 1024, Links::Refuse).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("2048 bytes, over the limit of 1024"),
            "{error}"
        );
        let error = read_text(dir.path(), 1024, Links::Refuse).unwrap_err();
        assert!(error.to_string().contains("is a directory"), "{error}");
        let binary = dir.path().join("bin");
        std::fs::write(&binary, b"ok\xff\xfe").unwrap();
        let error = read_text(&binary, 1024, Links::Refuse).unwrap_err();
        assert!(error.to_string().contains("byte 2 is not"), "{error}");
    }
}
