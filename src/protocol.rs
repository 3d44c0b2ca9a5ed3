//! The samocode protocol as pure code: no files, no clocks, no processes.
//!
//! - [`phase`]: the phase table and the words of a signal;
//! - [`artifact`]: the agent's artifacts' names, their kind and their order;
//! - [`signal`]: `_signal.json` parsing and validation;
//! - [`overview`]: `_overview.md`, rewriting only the worker's lines;
//! - [`qa`]: `_qa.md` questions and answers;
//! - [`state`]: `_state.json`, and deriving it from a Python samocode session;
//! - [`profile`]: model profiles and the plan's choice of one;
//! - [`journal`]: the rows of `_signal_history.jsonl` and `_iterations.jsonl`;
//! - [`baseline`]: the tracked files of a worktree, and what a read-only attempt changed;
//! - [`budget`]: a session's budgets (cost, iterations, time), what is spent and what is left.

pub mod artifact;
pub mod baseline;
pub mod budget;
pub mod gate;
pub mod journal;
pub mod overview;
pub mod phase;
pub mod profile;
pub mod qa;
pub mod signal;
pub mod state;

pub use phase::{Needs, Phase, Status, WaitFor};
pub use profile::Profile;
pub use signal::{Rejection, Signal, SignalError, Verdict};
pub use state::{InFlightRecord, RunState, SessionState, Usage};

/// `text` as a shell reads it back, for a command a person is told to run: as it is when it
/// holds nothing a shell treats apart, else in single quotes (a path with a space, `$`, `;`
/// or a quote would run something else when pasted).
pub fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@+%,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// [`shell_word`] of a path.
pub fn shell_path(path: &std::path::Path) -> String {
    shell_word(&path.to_string_lossy())
}

/// At most `max` characters of `text` (`max` at least 1), ending in `…` when it was cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
        kept.push('…');
        kept
    }
}

/// The most characters of an agent's text (a signal's `reason` or `summary`) samocode takes
/// into its state, notebook and notices: an agent that wrote a megabyte there pushed the
/// notebook past what samocode reads, and sent dozens of messages. The whole signal is kept
/// with the attempt's logs.
pub const MAX_AGENT_TEXT: usize = 2_000;

/// `text` kept to [`MAX_AGENT_TEXT`] characters, saying so when it was cut.
pub fn bounded(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_AGENT_TEXT {
        text.to_string()
    } else {
        format!(
            "{} [cut at {MAX_AGENT_TEXT} of {count} characters: the whole signal is kept in _logs]",
            shorten(text, MAX_AGENT_TEXT)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    /// A path in advice a person pastes ran something else: `$HOME` expanded, a `;` ran a
    /// second command, a space split it.
    #[test]
    fn a_word_in_advice_reads_back_as_itself_in_a_shell() {
        for word in ["/tmp/p", "we ird $HOME ;'q\"u` é", "My Projects", "", "-rf"] {
            let shown = shell_word(word);
            let echoed = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {shown}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&echoed.stdout), word, "{shown}");
        }
        assert_eq!(shell_word("/tmp/p-1_2.x"), "/tmp/p-1_2.x");
    }
}
