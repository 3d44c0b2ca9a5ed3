//! samocode: parse the command line, resolve the configuration, set up logs and traces, run
//! the command, exit with its code. See the library docs for the design.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use samocode::cli::{self, Cli, CliError};
use samocode::config::Sources;
use samocode::shutdown::Shutdown;
use samocode::telemetry;

/// The git variables that name a repository, a work tree or an index other than the one a
/// command's `-C` finds.
const GIT_LOCATION: [&str; 6] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE",
];

fn main() -> ExitCode {
    // A test double's role, before anything starts a thread: see the function.
    samocode::fake_agent::become_zombie_leader_if_asked();
    // samocode's own git commands work on MAIN_REPO and the worktrees they name with `-C`:
    // variables that point git elsewhere (set in a git hook, or by a wrapper) must not win.
    for name in GIT_LOCATION {
        // SAFETY: nothing else runs yet (no thread was started) to read the environment.
        unsafe { std::env::remove_var(name) };
    }
    let cli = Cli::parse();
    if cli::private_memory(&cli) {
        // An agent runs as the same user; it may not read samocode's secrets through /proc.
        // (Its own execve makes the agent readable again, as samocode's reaper needs.)
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    let sources = match Sources::from_process() {
        Ok(sources) => sources,
        Err(error) => {
            return report(CliError::usage(anyhow::anyhow!("{error}")));
        }
    };
    let config = match cli::configure(&cli, &sources) {
        Ok(config) => config,
        Err(error) => return report(error),
    };
    // Before the runtime: the trace exporter builds a blocking HTTP client.
    let telemetry = telemetry::init(&config, cli::logging(&cli, &config));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli::worker_threads(&cli) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(CliError::failure(error)),
    };
    let outcome = runtime.block_on(async {
        // SIGINT, SIGTERM and SIGHUP ask a command that stops agents to stop (a second one
        // asks to stop at once); any other command keeps their default, and ends at once.
        let shutdown = if cli::stops_on_request(&cli) {
            match Shutdown::from_signals() {
                Ok(shutdown) => shutdown,
                Err(error) => {
                    return Err(CliError::failure(anyhow::anyhow!(
                        "cannot watch for signals: {error}"
                    )));
                }
            }
        } else {
            Shutdown::new().1
        };
        let outcome = cli::dispatch(cli, config, sources, shutdown).await;
        telemetry.shutdown().await;
        outcome
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => report(error),
    }
}

fn report(error: CliError) -> ExitCode {
    // Not `eprintln!`: it panics when standard error is a terminal that hung up.
    // The causes in one line, each once: many errors say their cause in their own text and
    // keep it as their source too.
    let mut text = error.error.to_string();
    for cause in error.error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    // An error may quote what an agent wrote (a signal's reason): its control characters are
    // shown, not obeyed.
    let text = cli::output::visible(&without_os_codes(&text)).into_owned();
    let _ = writeln!(std::io::stderr(), "samocode: {text}");
    ExitCode::from(error.code)
}

/// The text without the standard library's ` (os error N)`: the words before it say it.
fn without_os_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        let after = &rest[at + " (os error ".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        out.push_str(&rest[..at]);
        match after[digits..].strip_prefix(')') {
            Some(tail) if digits > 0 => rest = tail,
            _ => {
                out.push_str(" (os error ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_os_error_number_is_left_out_of_what_people_read() {
        assert_eq!(
            super::without_os_codes(
                "cannot read the dashboard token file /x: No such file or directory (os error 2)"
            ),
            "cannot read the dashboard token file /x: No such file or directory"
        );
        assert_eq!(
            super::without_os_codes("a (os error x) b"),
            "a (os error x) b"
        );
    }
}
