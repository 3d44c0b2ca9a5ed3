//! Standard output of the commands, behind the `println!` and `print!` of `cli.rs`.
//!
//! A reader that stops reading (`samocode logs NAME | head -1`) closes the pipe; the next write
//! fails with EPIPE. Nothing the command prints after that can be seen, so it exits at once with
//! code 0, as `head` and the shell expect of a well-behaved producer. Any other failure to
//! write (a full disk behind a redirect) is an error, exit 1.

use std::fmt;
use std::io::Write;

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

fn write(print: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    let mut out = std::io::stdout().lock();
    match print(&mut out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("samocode: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
