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
//!
//! Much of what the commands print was written by an agent (its messages, `Last Action:`, a
//! blocked signal's reason, the questions), and the agent works on content that may be
//! hostile. So every line goes out through [`visible`]: a control character reaches the
//! terminal as text (`^[` for ESC, as `cat -v` shows it), never as an order to the terminal
//! (erase a line, set the clipboard, change the title).

use std::borrow::Cow;
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
    let text = shown(args);
    write(|out| {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")
    })
}

/// Prints text as it is, its control characters made visible.
pub fn text(args: fmt::Arguments<'_>) {
    let text = shown(args);
    write(|out| out.write_all(text.as_bytes()))
}

/// Prints one line on standard error; lost when it cannot be written (a terminal that hung
/// up answers EIO), where `eprintln!` would panic.
pub fn error_line(args: fmt::Arguments<'_>) {
    let text = shown(args);
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

fn shown(args: fmt::Arguments<'_>) -> String {
    match args.as_str() {
        Some(text) => visible(text).into_owned(),
        None => visible(&args.to_string()).into_owned(),
    }
}

/// `text` with every control character but the newline and the tab written out: C0 and DEL
/// in caret notation (`^[`, `^M`, `^?`), C1 (U+0080 to U+009F, which some terminals also
/// obey) as `<U+009B>`; and the marks that reorder text (U+202A to U+202E, U+2066 to U+2069,
/// which can make "exe.txt" read "txt.exe") and the line and paragraph separators (U+2028,
/// U+2029) as `<U+202E>`.
pub fn visible(text: &str) -> Cow<'_, str> {
    match visible_bytes(text.as_bytes(), false) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(bytes) => Cow::Owned(
            String::from_utf8(bytes).expect("only whole characters are replaced, by ASCII"),
        ),
    }
}

/// [`visible`] on UTF-8 bytes; with `colour`, an ESC that begins one of the log's own colour
/// codes (`ESC [ 1;32 m`: bold, dim, italic, red to purple text, reset) is kept as it is. Not
/// others: concealed text, or black on black, could hide a line as well as erasing it.
pub fn visible_bytes(bytes: &[u8], colour: bool) -> Cow<'_, [u8]> {
    let plain = |(i, b): (usize, &u8)| {
        (*b >= 0x20 || *b == b'\n' || *b == b'\t')
            && *b != 0x7f
            && *b != 0xc2
            && !(*b == 0xe2 && reorders(&bytes[i..]))
    };
    if bytes.iter().enumerate().all(plain) {
        return Cow::Borrowed(bytes);
    }
    let mut shown = Vec::with_capacity(bytes.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let taken = match b {
            b'\n' | b'\t' => {
                shown.push(b);
                1
            }
            0x1b if colour && colour_code(&bytes[i..]).is_some() => {
                let len = colour_code(&bytes[i..]).unwrap_or(1);
                shown.extend_from_slice(&bytes[i..i + len]);
                len
            }
            0x00..=0x1f => {
                shown.extend_from_slice(&[b'^', b'@' + b]);
                1
            }
            0x7f => {
                shown.extend_from_slice(b"^?");
                1
            }
            // U+0080 to U+009F in UTF-8.
            0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => {
                shown.extend_from_slice(format!("<U+{:04X}>", bytes[i + 1]).as_bytes());
                2
            }
            0xe2 if reorders(&bytes[i..]) => {
                let c =
                    0x2000 | (u32::from(bytes[i + 1] & 0x3f) << 6) | u32::from(bytes[i + 2] & 0x3f);
                shown.extend_from_slice(format!("<U+{c:04X}>").as_bytes());
                3
            }
            _ => {
                shown.push(b);
                1
            }
        };
        i += taken;
    }
    Cow::Owned(shown)
}

/// `value` as pretty JSON whose text is safe on a terminal: serde_json escapes C0 inside
/// strings but leaves DEL, C1 and the marks that reorder text raw, so those are escaped too
/// (`\u007f`, `\u009b`, `\u202e`). The data stays exactly what it was, for the programs
/// that read it (a mark shown as `<U+202E>` could not be read back); outside strings JSON
/// holds no such character.
pub fn json(value: &impl serde::Serialize) -> String {
    let escapes = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
    };
    let text = serde_json::to_string_pretty(value).expect("values serialize");
    if !text.contains(escapes) {
        return text;
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if escapes(c) => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Whether `bytes` begin with a mark that reorders text (U+202A to U+202E, U+2066 to U+2069)
/// or the line and paragraph separators (U+2028, U+2029: a new line to some viewers, none to
/// others), in UTF-8.
fn reorders(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0xe2, 0x80, 0xa8..=0xae, ..] | [0xe2, 0x81, 0xa6..=0xa9, ..]
    )
}

/// The length of the log's colour code (`ESC [`, parameters separated by `;`, `m`) that
/// `bytes` begins with.
fn colour_code(bytes: &[u8]) -> Option<usize> {
    const OURS: [&[u8]; 9] = [b"0", b"1", b"2", b"3", b"31", b"32", b"33", b"34", b"35"];
    let rest = bytes.strip_prefix(b"\x1b[")?;
    let params = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    let ours = rest[..params]
        .split(|b| *b == b';')
        .all(|param| OURS.contains(&param));
    (ours && rest.get(params) == Some(&b'm')).then_some(2 + params + 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_every_character_and_shows_none_to_the_terminal() {
        let hostile = "FAILED\u{1b}[2K\r\u{7f}\u{85}\u{9b}2J Ä ☃ exe\u{202e}txt.\u{2066}x";
        let text = json(&serde_json::json!({ "reason": hostile }));
        assert!(
            !text.contains(|c: char| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["reason"], hostile);
        assert_eq!(visible(&text), text);
    }

    #[test]
    fn control_characters_reach_the_terminal_as_text() {
        assert!(matches!(visible("plain\ttext\nÄ ☃"), Cow::Borrowed(_)));
        // Erase the line and overwrite it; set the clipboard; ring; a C1 CSI; DEL.
        let hostile =
            "tests FAILED\u{1b}[2K\rtests passed\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{9b}2J\u{7f}";
        assert_eq!(
            visible(hostile),
            "tests FAILED^[[2K^Mtests passed^[]52;c;cm0gLXJmIH4=^G<U+009B>2J^?"
        );
        assert_eq!(visible("\u{0}"), "^@");
        // Marks that reorder text; other punctuation of that block stays.
        assert_eq!(
            visible("a\u{202e}txt.exe\u{2066}b\u{2069} — …"),
            "a<U+202E>txt.exe<U+2066>b<U+2069> — …"
        );
        // Line and paragraph separators: a row split in some viewers, not in others.
        assert_eq!(visible("a\u{2028}b\u{2029}c"), "a<U+2028>b<U+2029>c");
        // Colour codes are kept only when asked for, and only they.
        let line = "\u{1b}[32mINFO\u{1b}[0m reason=x\u{1b}[2K\u{1b}]0;t\u{7}";
        assert_eq!(
            visible_bytes(line.as_bytes(), true).as_ref(),
            b"\x1b[32mINFO\x1b[0m reason=x^[[2K^[]0;t^G"
        );
        assert_eq!(
            visible_bytes(line.as_bytes(), false).as_ref(),
            b"^[[32mINFO^[[0m reason=x^[[2K^[]0;t^G"
        );
        // Not another colour code: concealed, or black on black.
        assert_eq!(
            visible_bytes(b"\x1b[8mhidden\x1b[30;40m", true).as_ref(),
            b"^[[8mhidden^[[30;40m"
        );
        // A lone 0xC2 (a cut character) is left to the writer's own UTF-8 handling.
        assert_eq!(visible_bytes(b"a\xc2", false).as_ref(), b"a\xc2");
    }
}
