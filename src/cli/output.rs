//! Standard output of the commands, behind the `println!` and `print!` of `cli.rs`, and
//! standard error, behind its `eprintln!`.
//!
//! A reader that stops reading (`samocode logs NAME | head -1`) closes the pipe; the next write
//! fails with EPIPE. Nothing the command prints after that can be seen, so it exits at once with
//! code 0, as `head` and the shell expect of a well-behaved producer. Any other failure to
//! write (a full disk behind a redirect) is an error, exit 1.
//!
//! A command that drives sessions (`run`, `supervise`, `demo`, `worker`) outlives its output
//! instead: when the terminal went away (a dropped ssh connection, a closed pane, a reader
//! that stopped), what it would print is dropped and the work goes on; its exit code still
//! says where the sessions stand. Standard error never stops a command: a line that cannot be
//! written there is lost.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the commands that drive sessions: output that cannot be written is dropped.
static DRIVING: AtomicBool = AtomicBool::new(false);
/// Standard output could not be written, and the command drives on without it.
static GONE: AtomicBool = AtomicBool::new(false);

/// For a command that drives sessions: from now on, output that cannot be written is dropped
/// and the command goes on.
pub fn drive_on_without_output() {
    DRIVING.store(true, Ordering::Relaxed);
}

/// Prints one line.
pub fn line(args: fmt::Arguments<'_>) {
    write(|out| {
        out.write_fmt(args)?;
        out.write_all(b"\n")
    })
}

/// Prints text as it is.
pub fn text(args: fmt::Arguments<'_>) {
    write(|out| out.write_fmt(args))
}

/// Prints one line on standard error; lost when it cannot be written (a terminal that hung
/// up answers EIO), where `eprintln!` would panic.
pub fn error_line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

fn write(print: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    match print(&mut out) {
        Ok(()) => {}
        // A reader or terminal that went away (EPIPE, EIO): nothing more can be shown there.
        Err(e)
            if DRIVING.load(Ordering::Relaxed)
                && (e.kind() == std::io::ErrorKind::BrokenPipe
                    || e.raw_os_error() == Some(nix::libc::EIO)) =>
        {
            GONE.store(true, Ordering::Relaxed);
            error_line(format_args!(
                "samocode: cannot write to standard output ({e}); going on without it"
            ));
        }
        // Any other failure loses this line, not the work.
        Err(e) if DRIVING.load(Ordering::Relaxed) => {
            error_line(format_args!(
                "samocode: cannot write to standard output: {e}"
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            error_line(format_args!(
                "samocode: cannot write to standard output: {e}"
            ));
            std::process::exit(1);
        }
    }
}
