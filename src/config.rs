//! Everything a command needs to know, resolved once: the project file `.samocode`, the global
//! `config.toml`, the environment and the command-line flags, in that order of increasing
//! precedence (flag, then environment, then file, then default).
//!
//! This is the only module that reads the environment. What it returns is valid: directories
//! exist, durations parsed, numbers in range; every error names the key, where it came from,
//! and what to do.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod profiles;

pub use profiles::{EFFORTS, ModelChoice, ModelProfiles, ModelSpec};
/// The name of the project file found by walking up from the working directory.
pub const PROJECT_FILE: &str = ".samocode";

/// Which agent CLI runs the iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Claude,
    Codex,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Claude => "claude",
            Provider::Codex => "codex",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The project file: where the repository, worktrees and sessions are.
#[derive(Debug, Clone)]
pub struct Project {
    /// The `.samocode` file itself.
    pub file: PathBuf,
    pub main_repo: PathBuf,
    pub worktrees: PathBuf,
    pub sessions: PathBuf,
    pub base_branch: Option<String>,
    pub branch_prefix: Option<String>,
}

/// How agent processes are started and watched.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub provider: Provider,
    pub claude_path: PathBuf,
    pub claude_model: Option<String>,
    pub claude_max_turns: u32,
    pub codex_path: PathBuf,
    pub codex_model: Option<String>,
    /// What each model profile means for each provider (`[profiles.<provider>.<profile>]`).
    pub profiles: ModelProfiles,
    /// The reasoning effort of one attempt, set from its profile by [`AgentSettings::for_attempt`]
    /// (codex takes it as `model_reasoning_effort`; claude has no such flag).
    pub effort: Option<String>,
    /// The hard limit of one attempt.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace: Duration,
    /// An attempt silent for this long is stopped as stalled (SAMOCODE_STALL_TIMEOUT; off
    /// unless set, since a long tool call prints nothing while it runs).
    pub stall_timeout: Option<Duration>,
}

impl AgentSettings {
    /// The configured provider's CLI.
    pub fn program(&self) -> &Path {
        match self.provider {
            Provider::Claude => &self.claude_path,
            Provider::Codex => &self.codex_path,
        }
    }

    /// The configured provider's model, when one is set.
    pub fn model(&self) -> Option<&str> {
        match self.provider {
            Provider::Claude => self.claude_model.as_deref(),
            Provider::Codex => self.codex_model.as_deref(),
        }
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per iteration before the session fails (SAMOCODE_MAX_RETRIES).
    pub max_attempts: u32,
    /// The first backoff step; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The pause before attempt `next_attempt` (2 for the first retry).
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(16);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// Telegram notifications, when both a token and a chat are set.
#[derive(Clone)]
pub struct TelegramSettings {
    pub token: String,
    pub chat_id: i64,
    pub api_url: Option<String>,
    /// Telegram user ids whose commands and button presses the bot obeys.
    pub allowed_users: Vec<u64>,
}

impl fmt::Debug for TelegramSettings {
    // The token is a secret: it never reaches a log line, even through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("token", &"<redacted>")
            .field("chat_id", &self.chat_id)
            .field("api_url", &self.api_url)
            .field("allowed_users", &self.allowed_users)
            .finish()
    }
}

/// The resolved configuration of one command.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absent when the command does not need a project and none was found.
    pub project: Option<Project>,
    pub agent: AgentSettings,
    pub retry: RetryPolicy,
    pub state_dir: PathBuf,
    /// The daemon's control socket (SAMOCODE_CONTROL, else `control.sock` in the state dir).
    pub control_socket: PathBuf,
    /// Agents the daemon runs at once.
    pub max_parallel: usize,
    pub telegram: Option<TelegramSettings>,
    /// OTLP traces endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT).
    pub otlp_endpoint: Option<String>,
    pub otel_service_name: String,
    /// RUST_LOG, for the log filter.
    pub log_filter: Option<String>,
    /// Where the search for `.samocode` started (the working directory).
    pub searched_from: PathBuf,
    /// HOME: where `install` puts Claude Code's skills and commands (`~/.claude`).
    pub home: Option<PathBuf>,
    /// CODEX_HOME (default `~/.codex`): where `install` puts Codex's skills.
    pub codex_home: Option<PathBuf>,
    /// CODEX_HOME was set (rather than defaulted to ~/.codex).
    pub codex_home_set: bool,
    /// Where the daemon serves the web dashboard (SAMOCODE_HTTP, `--http`); `None` when off
    /// (`--no-http`, or the value `off`).
    pub http: Option<std::net::SocketAddr>,
    /// A file holding a secret that logs in to the dashboard (SAMOCODE_HTTP_TOKEN_FILE,
    /// `--http-token-file`); required to listen on an address other than loopback.
    pub http_token_file: Option<PathBuf>,
}

impl Config {
    /// Checks what running agents needs beyond the settings' form: codex refuses to start when
    /// CODEX_HOME names a missing folder, so that is said up front rather than by every attempt.
    /// (`install` creates the folder, so it does not ask.)
    pub fn check_agent(&self) -> Result<(), ConfigError> {
        match &self.codex_home {
            Some(home)
                if self.agent.provider == Provider::Codex
                    && self.codex_home_set
                    && !home.is_dir() =>
            {
                Err(ConfigError::BadValue {
                    key: "CODEX_HOME".into(),
                    value: home.display().to_string(),
                    origin: "the environment",
                    expected: "an existing directory (create it, or unset CODEX_HOME for ~/.codex)",
                })
            }
            _ => Ok(()),
        }
    }

    /// The project, or an error telling the user how to make one.
    pub fn project(&self) -> Result<&Project, ConfigError> {
        self.project
            .as_ref()
            .ok_or_else(|| ConfigError::ProjectNotFound(self.searched_from.clone()))
    }
}

/// What the command line says; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub provider: Option<String>,
    pub timeout: Option<String>,
    pub max_parallel: Option<String>,
    /// `--http ADDR`, or `off` for `--no-http`.
    pub http: Option<String>,
    pub http_token_file: Option<String>,
    /// The command cannot work without a project file.
    pub require_project: bool,
}

/// The world a configuration is read from, injected so tests need not touch the process.
#[derive(Debug, Clone)]
pub struct Sources {
    pub env: HashMap<String, String>,
    pub cwd: PathBuf,
}

impl Sources {
    /// The real environment and working directory.
    pub fn from_process() -> std::io::Result<Sources> {
        Ok(Sources {
            env: std::env::vars().collect(),
            cwd: std::env::current_dir()?,
        })
    }

    fn home(&self) -> Option<PathBuf> {
        self.env.get("HOME").map(PathBuf::from)
    }
}

/// Why a configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `.samocode` in the working directory or its parents.
    #[error(
        "no .samocode project file in {0} or its parents; create one with MAIN_REPO=, WORKTREES= and SESSIONS= lines, or pass --config PATH"
    )]
    ProjectNotFound(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `.samocode` line is not `KEY=VALUE`.
    #[error("{path}:{line}: expected KEY=VALUE, found {text:?}")]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// A required `.samocode` key is absent.
    #[error("{path}: {key} is required (the {what})")]
    MissingKey {
        path: PathBuf,
        key: &'static str,
        what: &'static str,
    },
    /// A `.samocode` directory does not exist.
    #[error("{path}: {key}={dir} is not an existing directory; create it or fix the path")]
    NotADirectory {
        path: PathBuf,
        key: &'static str,
        dir: PathBuf,
    },
    /// `config.toml` is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    BadToml { path: PathBuf, message: String },
    /// A setting has a value of the wrong form.
    #[error("{key}={value:?} (from {origin}) is not valid: expected {expected}")]
    BadValue {
        key: String,
        value: String,
        origin: &'static str,
        expected: &'static str,
    },
}

/// One layered lookup: flag, environment, config.toml.
struct Layers<'a> {
    sources: &'a Sources,
    file: HashMap<String, String>,
}

impl Layers<'_> {
    /// The value of setting `env` (file key: its lowercase form without `SAMOCODE_`).
    fn get(&self, env: &str) -> Option<(String, &'static str)> {
        if let Some(v) = self.sources.env.get(env).filter(|v| !v.is_empty()) {
            return Some((v.clone(), "the environment"));
        }
        let key = env.trim_start_matches("SAMOCODE_").to_ascii_lowercase();
        self.file.get(&key).map(|v| (v.clone(), "config.toml"))
    }

    fn parsed<T>(
        &self,
        env: &str,
        flag: Option<&String>,
        expected: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let found = match flag {
            Some(v) => Some((v.clone(), "the command line")),
            None => self.get(env),
        };
        let Some((value, origin)) = found else {
            return Ok(None);
        };
        let key = match flag {
            Some(_) => flag_name(env).to_string(),
            None => env.to_string(),
        };
        parse(value.trim()).map(Some).ok_or(ConfigError::BadValue {
            key,
            value,
            origin,
            expected,
        })
    }
}

/// The command-line flag that sets the same thing as `env`.
fn flag_name(env: &str) -> &'static str {
    match env {
        "SAMOCODE_PROVIDER" => "--provider",
        "SAMOCODE_MAX_PARALLEL" => "--max-parallel",
        "SAMOCODE_HTTP" => "--http",
        "SAMOCODE_HTTP_TOKEN_FILE" => "--http-token-file",
        _ => "--timeout",
    }
}

/// Resolves the configuration of one command.
pub fn resolve(flags: &Flags, sources: &Sources) -> Result<Config, ConfigError> {
    let global = read_global_file(sources)?;
    let layers = Layers {
        sources,
        file: scalar_settings(&global),
    };
    let project = match &flags.config {
        Some(path) => Some(read_project(&absolute(&sources.cwd, path), sources)?),
        None => match find_project_file(&sources.cwd) {
            Some(path) => Some(read_project(&path, sources)?),
            None if flags.require_project => {
                return Err(ConfigError::ProjectNotFound(sources.cwd.clone()));
            }
            None => None,
        },
    };

    const DURATION: &str = "a duration such as 90s, 30m or 2h, or a number of seconds";
    let provider = layers
        .parsed(
            "SAMOCODE_PROVIDER",
            flags.provider.as_ref(),
            "claude or codex",
            |v| match v {
                "claude" => Some(Provider::Claude),
                "codex" => Some(Provider::Codex),
                _ => None,
            },
        )?
        .unwrap_or(Provider::Claude);
    let timeout_env = match provider {
        Provider::Claude => "CLAUDE_TIMEOUT",
        Provider::Codex => "CODEX_TIMEOUT",
    };
    let timeout = layers
        .parsed(
            timeout_env,
            flags.timeout.as_ref(),
            DURATION,
            parse_duration,
        )?
        .unwrap_or(Duration::from_secs(1800));
    let path = |env: &str, default: &str| {
        layers
            .get(env)
            .map(|(v, _)| PathBuf::from(expand_home(&v, sources)))
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let agent = AgentSettings {
        provider,
        claude_path: path("CLAUDE_PATH", "claude"),
        claude_model: layers.get("CLAUDE_MODEL").map(|(v, _)| v),
        claude_max_turns: layers
            .parsed("CLAUDE_MAX_TURNS", None, "a positive whole number", |v| {
                v.parse().ok().filter(|n| *n > 0)
            })?
            .unwrap_or(300),
        codex_path: path("CODEX_PATH", "codex"),
        codex_model: layers.get("CODEX_MODEL").map(|(v, _)| v),
        profiles: profiles::from_toml(&global)?,
        effort: None,
        timeout,
        kill_grace: layers
            .parsed("SAMOCODE_KILL_GRACE", None, DURATION, parse_duration)?
            .unwrap_or(Duration::from_secs(10)),
        stall_timeout: layers
            .parsed("SAMOCODE_STALL_TIMEOUT", None, DURATION, parse_duration)?
            .filter(|d| !d.is_zero()),
    };
    let retry = RetryPolicy {
        max_attempts: layers
            .parsed(
                "SAMOCODE_MAX_RETRIES",
                None,
                "a whole number from 1 to 100",
                |v| v.parse().ok().filter(|n| (1..=100).contains(n)),
            )?
            .unwrap_or(3),
        first_delay: layers
            .parsed("SAMOCODE_RETRY_DELAY", None, DURATION, parse_duration)?
            .unwrap_or(Duration::from_secs(5)),
        max_delay: Duration::from_secs(300),
    };
    let state_dir = match layers.get("SAMOCODE_STATE_DIR") {
        Some((dir, _)) => absolute(&sources.cwd, Path::new(&expand_home(&dir, sources))),
        None => default_state_dir(sources),
    };
    let control_socket = match layers.get("SAMOCODE_CONTROL") {
        Some((path, _)) => absolute(&sources.cwd, Path::new(&expand_home(&path, sources))),
        None => state_dir.join("control.sock"),
    };
    let max_parallel = layers
        .parsed(
            "SAMOCODE_MAX_PARALLEL",
            flags.max_parallel.as_ref(),
            "a whole number from 1 to 1000",
            |v| v.parse().ok().filter(|n| (1..=1000).contains(n)),
        )?
        .unwrap_or(4);
    let telegram = match (
        layers.get("TELEGRAM_BOT_TOKEN"),
        layers.get("TELEGRAM_CHAT_ID"),
    ) {
        (Some((token, _)), Some((chat, origin))) => Some(TelegramSettings {
            token,
            chat_id: chat.trim().parse().map_err(|_| ConfigError::BadValue {
                key: "TELEGRAM_CHAT_ID".into(),
                value: chat.clone(),
                origin,
                expected: "a numeric chat id",
            })?,
            api_url: layers.get("TELEGRAM_API_URL").map(|(v, _)| v),
            allowed_users: layers
                .parsed(
                    "TELEGRAM_ALLOWED_USERS",
                    None,
                    "Telegram user ids separated by commas",
                    |v| {
                        v.split([',', ' '])
                            .filter(|id| !id.is_empty())
                            .map(|id| id.parse().ok())
                            .collect::<Option<Vec<u64>>>()
                    },
                )?
                .unwrap_or_default(),
        }),
        _ => None,
    };
    // The traces variable is the full URL; the general one is a base that gets the signal path.
    let nonempty = |key: &str| sources.env.get(key).filter(|v| !v.is_empty());
    let otlp_endpoint = nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .cloned()
        .or_else(|| {
            nonempty("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        });
    let http = layers
        .parsed(
            "SAMOCODE_HTTP",
            flags.http.as_ref(),
            "an IP address and port such as 127.0.0.1:7420, or off",
            |v| match v {
                "off" => Some(None),
                addr => addr.parse().ok().map(Some),
            },
        )?
        .unwrap_or(Some(crate::dashboard::DEFAULT_ADDR));
    let http_token_file = layers.parsed(
        "SAMOCODE_HTTP_TOKEN_FILE",
        flags.http_token_file.as_ref(),
        "a file path",
        |v| Some(absolute(&sources.cwd, Path::new(&expand_home(v, sources)))),
    )?;
    let codex_home_set = sources.env.contains_key("CODEX_HOME");
    let codex_home = match sources.env.get("CODEX_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Some(absolute(
            &sources.cwd,
            Path::new(&expand_home(dir, sources)),
        )),
        None => sources.home().map(|home| home.join(".codex")),
    };
    Ok(Config {
        project,
        agent,
        retry,
        state_dir,
        control_socket,
        max_parallel,
        telegram,
        otlp_endpoint,
        otel_service_name: sources
            .env
            .get("OTEL_SERVICE_NAME")
            .cloned()
            .unwrap_or_else(|| "samocode".into()),
        log_filter: sources.env.get("RUST_LOG").cloned(),
        searched_from: sources.cwd.clone(),
        home: sources.home(),
        codex_home,
        codex_home_set,
        http,
        http_token_file,
    })
}

/// A duration in humantime (`90s`, `30m`, `2h`) or a plain number of seconds (`1800`, `0.5`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    humantime::parse_duration(text).ok()
}

/// Reads a project file named by absolute path (the daemon, for a session handed to it).
pub fn load_project(path: &Path) -> Result<Project, ConfigError> {
    let sources = Sources::from_process().map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    read_project(path, &sources)
}

fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|candidate| candidate.is_file())
}

fn read_project(path: &Path, sources: &Sources) -> Result<Project, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut values = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::BadLine {
                path: path.to_path_buf(),
                line: index + 1,
                text: raw.to_string(),
            });
        };
        let value = value.trim().trim_matches('"').trim_matches('\'');
        values.insert(key.trim().to_string(), value.to_string());
    }
    let dir = |key: &'static str, what: &'static str| -> Result<PathBuf, ConfigError> {
        let value = values.get(key).ok_or(ConfigError::MissingKey {
            path: path.to_path_buf(),
            key,
            what,
        })?;
        let dir = absolute(base, Path::new(&expand_home(value, sources)));
        if !dir.is_dir() {
            return Err(ConfigError::NotADirectory {
                path: path.to_path_buf(),
                key,
                dir,
            });
        }
        Ok(dir)
    };
    Ok(Project {
        file: path.to_path_buf(),
        main_repo: dir("MAIN_REPO", "git repository the agents work on")?,
        worktrees: dir("WORKTREES", "folder for the sessions' git worktrees")?,
        sessions: dir("SESSIONS", "folder for the session folders")?,
        base_branch: values.get("BASE_BRANCH").filter(|v| !v.is_empty()).cloned(),
        branch_prefix: values
            .get("BRANCH_PREFIX")
            .map(|v| v.trim_matches('/').to_string())
            .filter(|v| !v.is_empty()),
    })
}

/// The global `config.toml` as a table; empty when there is none.
fn read_global_file(sources: &Sources) -> Result<toml::Table, ConfigError> {
    let dir = match sources.env.get("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match sources.home() {
            Some(home) => home.join(".config"),
            None => return Ok(toml::Table::new()),
        },
    };
    let path = dir.join("samocode").join("config.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::BadToml {
            path: path.clone(),
            message: e.message().to_string(),
        })
}

/// The top-level scalar settings of `config.toml`, as text (tables such as `profiles` aside).
fn scalar_settings(table: &toml::Table) -> HashMap<String, String> {
    table
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return None,
            };
            Some((key.clone(), text))
        })
        .collect()
}

fn default_state_dir(sources: &Sources) -> PathBuf {
    match sources.env.get("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("samocode"),
        None => sources
            .home()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(".local/state/samocode"),
    }
}

fn expand_home(value: &str, sources: &Sources) -> String {
    match (value.strip_prefix('~'), sources.home()) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.display())
        }
        _ => value.to_string(),
    }
}

fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    joined.canonicalize().unwrap_or(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Profile;

    fn sources(dir: &Path, env: &[(&str, &str)]) -> Sources {
        let mut map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("HOME".into(), dir.join("home").display().to_string());
        Sources {
            env: map,
            cwd: dir.to_path_buf(),
        }
    }

    fn project_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "repo",
            "wt",
            "sessions",
            "home/.config/samocode",
            "sub/deeper",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join(".samocode"),
            "# comment\nMAIN_REPO=repo\nWORKTREES = wt\nSESSIONS=\"sessions\"\nBRANCH_PREFIX=feat/\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn project_found_by_walking_up_and_paths_made_absolute() {
        let dir = project_dir();
        let mut s = sources(dir.path(), &[]);
        s.cwd = dir.path().join("sub/deeper");
        let config = resolve(&Flags::default(), &s).unwrap();
        let project = config.project.unwrap();
        assert!(project.main_repo.is_absolute());
        assert!(project.sessions.ends_with("sessions"));
        assert_eq!(project.branch_prefix.as_deref(), Some("feat"));
        assert_eq!(config.agent.timeout, Duration::from_secs(1800));
        assert_eq!(config.retry.max_attempts, 3);
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = project_dir();
        std::fs::write(
            dir.path().join("home/.config/samocode/config.toml"),
            "claude_timeout = 60\nmax_retries = 5\nclaude_model = \"from-file\"\n",
        )
        .unwrap();
        let s = sources(dir.path(), &[("CLAUDE_TIMEOUT", "2m")]);
        let config = resolve(&Flags::default(), &s).unwrap();
        assert_eq!(config.agent.timeout, Duration::from_secs(120));
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.agent.claude_model.as_deref(), Some("from-file"));
        let flags = Flags {
            timeout: Some("90s".into()),
            ..Flags::default()
        };
        assert_eq!(
            resolve(&flags, &s).unwrap().agent.timeout,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn errors_name_the_key_and_the_path() {
        let dir = project_dir();
        std::fs::write(
            dir.path().join(".samocode"),
            "MAIN_REPO=repo\nWORKTREES=wt\nSESSIONS=nope\n",
        )
        .unwrap();
        let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("SESSIONS="), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");

        std::fs::write(
            dir.path().join(".samocode"),
            "MAIN_REPO=repo\nWORKTREES=wt\n",
        )
        .unwrap();
        let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("SESSIONS is required"), "{err}");

        let project = project_dir();
        let err = resolve(
            &Flags::default(),
            &sources(project.path(), &[("CLAUDE_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("CLAUDE_TIMEOUT=\"soon\""), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let flags = Flags {
            require_project: true,
            ..Flags::default()
        };
        let err = resolve(&flags, &sources(empty.path(), &[])).unwrap_err();
        assert!(
            err.to_string().contains("no .samocode project file"),
            "{err}"
        );
    }

    #[test]
    fn profiles_default_per_provider_and_config_toml_overrides_them() {
        let dir = project_dir();
        let config = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap();
        let profiles = &config.agent.profiles;
        let claude: Vec<&str> = Profile::ALL
            .iter()
            .map(|p| profiles.get(Provider::Claude, *p).model.as_str())
            .collect();
        assert_eq!(claude, ["haiku", "sonnet", "opus", "opus"]);
        assert_eq!(profiles.get(Provider::Codex, Profile::Max).effort, "xhigh");
        assert_eq!(config.home, Some(dir.path().join("home")));
        assert_eq!(config.codex_home, Some(dir.path().join("home/.codex")));

        std::fs::write(
            dir.path().join("home/.config/samocode/config.toml"),
            "max_retries = 4\n[profiles.claude.strong]\nmodel = \"opus-next\"\n[profiles.codex.light]\neffort = \"minimal\"\n",
        )
        .unwrap();
        let s = sources(dir.path(), &[("CODEX_HOME", "/elsewhere/codex")]);
        let config = resolve(&Flags::default(), &s).unwrap();
        assert_eq!(config.retry.max_attempts, 4);
        let strong = config.agent.profiles.get(Provider::Claude, Profile::Strong);
        assert_eq!(
            (strong.model.as_str(), strong.effort.as_str()),
            ("opus-next", "high")
        );
        let light = config.agent.profiles.get(Provider::Codex, Profile::Light);
        assert_eq!(light.effort, "minimal");
        assert_eq!(config.codex_home, Some(PathBuf::from("/elsewhere/codex")));
        // With codex as the provider, a CODEX_HOME that does not exist is refused before any
        // agent runs (install may still create it).
        let s = sources(
            dir.path(),
            &[
                ("CODEX_HOME", "/elsewhere/codex"),
                ("SAMOCODE_PROVIDER", "codex"),
            ],
        );
        let codex = resolve(&Flags::default(), &s).unwrap();
        let error = codex.check_agent().unwrap_err().to_string();
        assert!(
            error.starts_with("CODEX_HOME=\"/elsewhere/codex\" (from the environment) is not valid: expected an existing directory"),
            "{error}"
        );

        let choice = config.agent.choose(Profile::Strong);
        assert_eq!(
            (choice.model.as_str(), choice.explicit),
            ("opus-next", false)
        );
        let attempt = config.agent.for_attempt(&choice);
        assert_eq!(attempt.claude_model.as_deref(), Some("opus-next"));
        assert_eq!(attempt.effort.as_deref(), Some("high"));
        let pinned = resolve(
            &Flags::default(),
            &sources(dir.path(), &[("CLAUDE_MODEL", "pinned")]),
        )
        .unwrap();
        let choice = pinned.agent.choose(Profile::Light);
        assert_eq!(
            (choice.model.as_str(), choice.effort.as_str()),
            ("pinned", "low")
        );
        assert!(choice.explicit);
    }

    #[test]
    fn bad_profiles_name_their_key() {
        let dir = project_dir();
        let file = dir.path().join("home/.config/samocode/config.toml");
        for (text, key) in [
            (
                "[profiles.gemini.light]\nmodel = \"x\"\n",
                "profiles.gemini",
            ),
            (
                "[profiles.claude.huge]\nmodel = \"x\"\n",
                "profiles.claude.huge",
            ),
            (
                "[profiles.claude.max]\neffort = \"extreme\"\n",
                "profiles.claude.max.effort",
            ),
            (
                "[profiles.claude.max]\nmodel = \"\"\n",
                "profiles.claude.max.model",
            ),
            (
                "[profiles.claude.max]\nmodl = \"x\"\n",
                "profiles.claude.max.modl",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = resolve(&Flags::default(), &sources(dir.path(), &[])).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{key}=")), "{err}");
        }
    }

    #[test]
    fn durations_accept_seconds_and_humantime() {
        assert_eq!(parse_duration("1800"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("later"), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(30),
        };
        let delays: Vec<u64> = (2..7).map(|a| policy.delay_before(a).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
    }
}
