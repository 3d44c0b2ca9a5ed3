//! The agent's environment: an allowlist, decided here and nowhere else.
//!
//! The agent runs with its permissions skipped, on repository content that may be hostile, so
//! it gets what the agent CLIs and the tools they run need, and not samocode's own settings or
//! secrets. The policy is pure: [`crate::config`] (the only reader of the environment) hands it
//! the captured environment and the `strip_env` / `keep_env` settings, and the agent command
//! carries the result; the process starts from an empty environment plus exactly that.
//!
//! In order, first match wins:
//! 1. `strip_env` (a person's list) drops a variable, whatever else says;
//! 2. samocode's own settings are never handed on: `TELEGRAM_*` (the bot token among them),
//!    `OTEL_*` (the OTLP headers carry credentials), `RUST_LOG`, every `SAMOCODE_*` except the
//!    scripted test agent's `SAMOCODE_FAKE*` knobs, and samocode's `CLAUDE_PATH`,
//!    `CLAUDE_MODEL`, `CLAUDE_MAX_TURNS`, `CLAUDE_TIMEOUT`, `CODEX_PATH`, `CODEX_MODEL`,
//!    `CODEX_TIMEOUT`; also the git variables that would point the agent's git at another
//!    repository than its worktree (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, ...) and
//!    `CLAUDECODE` (a claude nested in a Claude Code session refuses to start);
//! 3. `keep_env` (a person's list) keeps a variable;
//! 4. the defaults below keep what the CLIs and common toolchains need; a provider's own
//!    variables (`ANTHROPIC_*`, `CLAUDE_*` for claude; `OPENAI_*`, `AZURE_OPENAI_*`,
//!    `CODEX_*` for codex) only for an agent of that provider, so neither CLI gets the other's
//!    key;
//! 5. anything else is dropped.
//!
//! A pattern is a variable name, or a prefix ending in `*` (`MYCORP_*`).

use std::collections::HashMap;
use std::fmt;

use crate::config::Provider;

/// Kept by name: the user's identity and shell basics, locale, temp dirs, proxies and
/// certificates, ssh-agent (git over ssh), claude's own switches and cloud routes, and the
/// homes of common toolchains the agent builds and tests with.
const KEPT_NAMES: &[&str] = &[
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TMP",
    "TEMP",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSH_AUTH_SOCK",
    "IS_SANDBOX",
    "MAX_THINKING_TOKENS",
    "MAX_MCP_OUTPUT_TOKENS",
    "BASH_DEFAULT_TIMEOUT_MS",
    "BASH_MAX_TIMEOUT_MS",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUD_ML_REGION",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "GOPROXY",
    "JAVA_HOME",
    "VIRTUAL_ENV",
    "PYENV_ROOT",
    "NVM_DIR",
    "VOLTA_HOME",
    "PNPM_HOME",
    "BUN_INSTALL",
    "DENO_DIR",
];

/// Kept by prefix: cloud credentials (Bedrock), locale, XDG folders, git's identity and
/// transport, CA bundles, node and npm, claude's `DISABLE_*` and `MCP_*` switches, and the
/// scripted test agent's knobs.
const KEPT_PREFIXES: &[&str] = &[
    "AWS_",
    "LC_",
    "XDG_",
    "GIT_",
    "SSL_CERT_",
    "NODE_",
    "npm_config_",
    "NPM_CONFIG_",
    "DISABLE_",
    "MCP_",
    "SAMOCODE_FAKE",
];

/// Kept by prefix for an agent of that provider only: its keys and settings.
const PROVIDER_PREFIXES: &[(Provider, &[&str])] = &[
    (Provider::Claude, &["ANTHROPIC_", "CLAUDE_"]),
    (Provider::Codex, &["OPENAI_", "AZURE_OPENAI_", "CODEX_"]),
];

/// Never handed on by name (rule 2).
const OWN_NAMES: &[&str] = &[
    "RUST_LOG",
    "CLAUDE_PATH",
    "CLAUDE_MODEL",
    "CLAUDE_MAX_TURNS",
    "CLAUDE_TIMEOUT",
    "CODEX_PATH",
    "CODEX_MODEL",
    "CODEX_TIMEOUT",
    "CLAUDECODE",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Never handed on by prefix (rule 2); `SAMOCODE_FAKE*` is let through before this applies.
const OWN_PREFIXES: &[&str] = &["TELEGRAM_", "OTEL_", "SAMOCODE_"];

/// A variable name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Parses `NAME` or `PREFIX*`; `None` for anything that cannot name a variable.
    pub fn parse(text: &str) -> Option<Pattern> {
        let name = text.strip_suffix('*').unwrap_or(text);
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        valid.then(|| Pattern(text.to_string()))
    }

    /// A pattern naming one of samocode's own variables, which never reach an agent (the
    /// test agent's `SAMOCODE_FAKE*` aside).
    pub fn names_own(&self) -> bool {
        let wildcard = self.0.ends_with('*');
        let name = self.0.strip_suffix('*').unwrap_or(&self.0);
        !name.starts_with("SAMOCODE_FAKE")
            && (OWN_NAMES.contains(&name)
                || OWN_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p) || (wildcard && name == p.trim_end_matches('_'))))
    }

    /// The pattern as it was written.
    pub fn text(&self) -> &str {
        &self.0
    }

    fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

/// The agent's environment policy: the defaults above plus a person's `strip_env` and
/// `keep_env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    pub strip: Vec<Pattern>,
    pub keep: Vec<Pattern>,
}

impl EnvPolicy {
    /// Whether an agent (of some provider) gets variable `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.keeps(name).is_some()
    }

    /// Which agents get variable `name`: every one (`Some(None)`), only one of a provider
    /// (`Some(Some(provider))`), or none.
    fn keeps(&self, name: &str) -> Option<Option<Provider>> {
        if self.strip.iter().any(|p| p.matches(name)) {
            return None;
        }
        let test_agent = name.starts_with("SAMOCODE_FAKE");
        let own = OWN_NAMES.contains(&name)
            || (!test_agent && OWN_PREFIXES.iter().any(|p| name.starts_with(p)));
        if own {
            return None;
        }
        if self.keep.iter().any(|p| p.matches(name))
            || KEPT_NAMES.contains(&name)
            || KEPT_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return Some(None);
        }
        PROVIDER_PREFIXES
            .iter()
            .find(|(_, prefixes)| prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(provider, _)| Some(*provider))
    }

    /// The variables of `env` an agent gets on a worker: what this (the worker's) policy
    /// keeps, and the variables the attempt names (what the daemon's `keep_env` added), unless
    /// this policy strips them or they are samocode's own. Values always come from `env`, the
    /// worker's own environment: an attempt carries names only.
    pub fn apply_named(&self, names: &[String], env: &HashMap<String, String>) -> AgentEnv {
        let mut policy = self.clone();
        policy.keep.extend(
            names
                .iter()
                .filter(|name| !name.ends_with('*'))
                .filter_map(|name| Pattern::parse(name)),
        );
        policy.apply(env)
    }

    /// The variables of `env` an agent gets, sorted by name (a provider's own ones until
    /// [`AgentEnv::of`] picks the provider).
    pub fn apply(&self, env: &HashMap<String, String>) -> AgentEnv {
        let mut kept: Vec<(String, String, Option<Provider>)> = env
            .iter()
            .filter_map(|(name, value)| {
                let only = self.keeps(name)?;
                Some((name.clone(), value.clone(), only))
            })
            .collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        AgentEnv(kept)
    }
}

/// The complete environment of an agent process, each variable with the provider whose agents
/// alone get it, if only one's do. Its `Debug` shows names only: values hold API keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgentEnv(Vec<(String, String, Option<Provider>)>);

impl AgentEnv {
    /// The environment of an agent of `provider`: without the other provider's variables.
    pub fn of(&self, provider: Provider) -> AgentEnv {
        AgentEnv(
            self.0
                .iter()
                .filter(|(_, _, only)| only.is_none_or(|p| p == provider))
                .cloned()
                .collect(),
        )
    }

    /// The variables, sorted by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v, _)| (k.as_str(), v.as_str()))
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _, _)| k.as_str()).collect()
    }

    /// Sets (or replaces) one variable, for every agent.
    pub fn set(&mut self, name: &str, value: &str) {
        self.set_for(name, value, None);
    }

    /// Sets (or replaces) one variable, for the agents of `only` (every agent for `None`).
    pub fn set_for(&mut self, name: &str, value: &str, only: Option<Provider>) {
        self.0.retain(|(k, _, _)| k != name);
        self.0.push((name.to_string(), value.to_string(), only));
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The same environment without `name`.
    pub fn without(&self, name: &str) -> AgentEnv {
        AgentEnv(
            self.0
                .iter()
                .filter(|(k, _, _)| k != name)
                .cloned()
                .collect(),
        )
    }
}

impl fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[&str]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|name| (name.to_string(), format!("value of {name}")))
            .collect()
    }

    #[test]
    fn the_cli_keeps_what_it_needs_and_loses_samocodes_secrets() {
        let all = env(&[
            "HOME",
            "PATH",
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "CODEX_HOME",
            "CLAUDE_CODE_USE_BEDROCK",
            "https_proxy",
            "LC_ALL",
            "GIT_AUTHOR_NAME",
            "SAMOCODE_FAKE",
            "SAMOCODE_FAKE_STEPS",
            "TELEGRAM_BOT_TOKEN",
            "TELEGRAM_CHAT_ID",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "SAMOCODE_STATE_DIR",
            "CLAUDE_TIMEOUT",
            "CLAUDECODE",
            "GIT_DIR",
            "RUST_LOG",
            "SOME_OTHER_SECRET",
        ]);
        let kept = EnvPolicy::default().apply(&all);
        assert_eq!(
            kept.names(),
            [
                "ANTHROPIC_API_KEY",
                "CLAUDE_CODE_USE_BEDROCK",
                "CODEX_HOME",
                "GIT_AUTHOR_NAME",
                "HOME",
                "LC_ALL",
                "OPENAI_API_KEY",
                "PATH",
                "SAMOCODE_FAKE",
                "SAMOCODE_FAKE_STEPS",
                "https_proxy",
            ]
        );
        assert!(!format!("{kept:?}").contains("value of"));
        // Neither CLI gets the other's key (or settings).
        let claude = kept.of(Provider::Claude);
        assert!(claude.names().contains(&"ANTHROPIC_API_KEY"));
        assert!(!claude.names().contains(&"OPENAI_API_KEY"));
        assert!(!claude.names().contains(&"CODEX_HOME"));
        let codex = kept.of(Provider::Codex);
        assert!(codex.names().contains(&"OPENAI_API_KEY"));
        assert!(codex.names().contains(&"CODEX_HOME"));
        assert!(!codex.names().contains(&"ANTHROPIC_API_KEY"));
        assert!(!codex.names().contains(&"CLAUDE_CODE_USE_BEDROCK"));
        // A person's keep_env hands one on to both.
        let kept_by_hand = EnvPolicy {
            strip: Vec::new(),
            keep: vec![Pattern::parse("OPENAI_API_KEY").unwrap()],
        }
        .apply(&all);
        assert!(
            kept_by_hand
                .of(Provider::Claude)
                .names()
                .contains(&"OPENAI_API_KEY")
        );
    }

    #[test]
    fn strip_wins_over_keep_and_keep_never_hands_on_samocodes_own() {
        let policy = EnvPolicy {
            strip: vec![
                Pattern::parse("AWS_*").unwrap(),
                Pattern::parse("HOME").unwrap(),
            ],
            keep: vec![
                Pattern::parse("MYCORP_*").unwrap(),
                Pattern::parse("AWS_REGION").unwrap(),
                Pattern::parse("TELEGRAM_BOT_TOKEN").unwrap(),
            ],
        };
        assert!(policy.allows("MYCORP_TOKEN"));
        assert!(!policy.allows("AWS_REGION"));
        assert!(!policy.allows("HOME"));
        assert!(!policy.allows("TELEGRAM_BOT_TOKEN"));
        assert!(policy.allows("PATH"));
        assert!(!EnvPolicy::default().allows("MYCORP_TOKEN"));
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        for ok in ["HOME", "MYCORP_*", "_X", "npm_config_*"] {
            assert!(Pattern::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "*", "A B", "1X", "A*B", "A-B"] {
            assert!(Pattern::parse(bad).is_none(), "{bad}");
        }
    }
}
