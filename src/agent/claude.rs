//! The Claude Code CLI as an agent provider: the command line of one attempt.

use std::path::Path;

use super::{AgentCommand, PROMPT};
use crate::config::{AgentSettings, Provider};
use crate::session::context;

/// The command for one attempt. The context goes into the system prompt, or, when it is too
/// large for one argument, into `context_file`, which the agent is told to read.
pub fn command(
    settings: &AgentSettings,
    context: &str,
    context_file: &Path,
    workdir: &Path,
) -> AgentCommand {
    let mut args: Vec<String> = vec![
        "--dangerously-skip-permissions".into(),
        // The user's settings only: a repository's own `.claude/settings*.json` could set the
        // CLI's environment (send the API key to another server), run hooks before the model
        // acts, or take away the bypass, all without the model's help.
        "--setting-sources".into(),
        "user".into(),
    ];
    if let Some(model) = &settings.claude_model {
        args.extend(["--model".into(), model.clone()]);
    }
    args.extend([
        "--max-turns".into(),
        settings.claude_max_turns.to_string(),
        "--verbose".into(),
        "--output-format".into(),
        "stream-json".into(),
        "--append-system-prompt".into(),
        if context.len() <= context::INLINE_LIMIT {
            // An argument cannot hold a NUL byte (the spawn would fail as if claude were
            // missing); one that came in with a person's or the agent's text is made visible.
            context.replace('\0', "\u{FFFD}")
        } else {
            context::pointer_to(context_file)
        },
        "-p".into(),
        PROMPT.into(),
    ]);
    AgentCommand {
        provider: Provider::Claude,
        program: settings.claude_path.clone(),
        args,
        workdir: workdir.to_path_buf(),
        // A CLAUDECODE variable inherited from an interactive Claude Code session makes the
        // child believe it is nested inside one (the policy drops it; a keep_env cannot).
        env: settings.env.of(Provider::Claude).without("CLAUDECODE"),
        stdin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn settings() -> AgentSettings {
        AgentSettings {
            provider: Provider::Claude,
            claude_path: PathBuf::from("claude"),
            claude_model: Some("opus".into()),
            claude_max_turns: 300,
            codex_path: PathBuf::from("codex"),
            codex_model: None,
            profiles: Default::default(),
            effort: None,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
            stall_timeout: None,
            env: Default::default(),
        }
    }

    #[test]
    fn small_context_goes_inline_large_by_file() {
        let cmd = command(&settings(), "ctx", Path::new("/s/ctx.md"), Path::new("/w"));
        let line = cmd.args.join(" ");
        assert!(line.starts_with("--dangerously-skip-permissions --setting-sources user --model opus --max-turns 300 --verbose --output-format stream-json --append-system-prompt ctx -p "), "{line}");

        let big = "x".repeat(200 * 1024);
        let cmd = command(&settings(), &big, Path::new("/s/ctx.md"), Path::new("/w"));
        assert!(cmd.args.iter().all(|a| a.len() < 128 * 1024));
        assert!(cmd.args.iter().any(|a| a.contains("/s/ctx.md")));

        let mut with_nested = settings();
        with_nested.env.set("CLAUDECODE", "1");
        with_nested.env.set("ANTHROPIC_API_KEY", "k");
        let cmd = command(&with_nested, "ctx", Path::new("/s/ctx.md"), Path::new("/w"));
        assert_eq!(cmd.env.names(), ["ANTHROPIC_API_KEY"]);

        let cmd = command(&settings(), "a\0b", Path::new("/s/ctx.md"), Path::new("/w"));
        assert!(cmd.args.iter().all(|a| !a.contains('\0')));
    }
}
