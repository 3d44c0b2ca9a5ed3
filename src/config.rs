//! Everything a command needs to know, resolved once: the project file `.samocode`, the global
//! `config.toml`, the environment and the command-line flags, in that order of increasing
//! precedence (flag, then environment, then file, then default).
//!
//! This is the only module that reads the environment. What it returns is valid: directories
//! exist, durations parsed, numbers in range; every error names the key, its value, where it
//! came from, and what to do, and all of them are reported in one run.
//!
//! - `values`: the layers of one setting and the parsers with their ranges;
//! - `project`: `.samocode`; `file`: `config.toml`; `otel`, `telegram`: those settings;
//! - `profiles`: the `[profiles]` tables;
//! - `budget`: session and fleet budgets, and the `[prices]` tables.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod budget;
mod file;
mod otel;
mod profiles;
mod project;
mod remote;
mod telegram;
mod values;
pub(crate) use values::nearest;
pub use values::{basic_auth, split_userinfo, without_userinfo};

use crate::agent::env::{AgentEnv, EnvPolicy, Pattern};
use crate::session::untrusted::ReadError;
use values::{Layers, duration_between, number_between};

pub use budget::{BudgetFlags, BudgetSettings, Price, Prices, describe as describe_budget};
pub use otel::{OtlpExport, OtlpHeaders, OtlpProtocol};
pub use profiles::{EFFORTS, ModelChoice, ModelProfiles, ModelSpec};
pub use remote::{Engine, KubeSettings, NatsAuth, NatsSettings, RemoteSettings};
pub use telegram::TelegramSettings;
pub use values::{parse_duration, parse_parallel};
/// The name of the project file found by walking up from the working directory.
pub const PROJECT_FILE: &str = ".samocode";

/// Which agent CLI runs the iterations (by its name in an attempt spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// The agent's whole environment, as the policy of [`crate::agent::env`] keeps it.
    pub env: AgentEnv,
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
    /// Where spans are exported over OTLP (`None`: tracing is off).
    pub otlp_traces: Option<OtlpExport>,
    /// Where metrics are exported over OTLP (`None`: no metrics).
    pub otlp_metrics: Option<OtlpExport>,
    /// OTEL_EXPORTER_OTLP_HEADERS, parsed.
    pub otlp_headers: OtlpHeaders,
    /// OTEL_RESOURCE_ATTRIBUTES, parsed.
    pub otel_resource: Vec<(String, String)>,
    pub otel_service_name: String,
    /// How often ended spans are sent (`OTEL_BSP_SCHEDULE_DELAY`), when not samocode's 1 s.
    pub otel_span_delay: Option<Duration>,
    /// How often metrics are sent (`OTEL_METRIC_EXPORT_INTERVAL`), when not the SDK's 60 s.
    pub otel_metric_interval: Option<Duration>,
    /// RUST_LOG, for the log filter.
    pub log_filter: Option<String>,
    /// How log lines are written: text, or JSON lines (`--log-format`, SAMOCODE_LOG_FORMAT).
    pub log_format: crate::telemetry::LogFormat,
    /// Where the search for `.samocode` started (the working directory).
    pub searched_from: PathBuf,
    /// HOME: where `install` puts Claude Code's skills and commands (`~/.claude`).
    pub home: Option<PathBuf>,
    /// CODEX_HOME (default `~/.codex`): where `install` puts Codex's skills.
    pub codex_home: Option<PathBuf>,
    /// Where CODEX_HOME was set (`None`: defaulted to ~/.codex).
    pub codex_home_origin: Option<&'static str>,
    /// Where CLAUDE_PATH and CODEX_PATH were set (`None`: the bare default name).
    pub program_origins: [Option<&'static str>; 2],
    /// Faults to inject, for the tests of supervision (SAMOCODE_FAILPOINTS, comma separated;
    /// `supervisor-panic`: the supervisor panics on a status request).
    pub failpoints: Vec<String>,
    /// Where the daemon serves the web dashboard (SAMOCODE_HTTP, `--http`); `None` when off
    /// (`--no-http`, or the value `off`).
    pub http: Option<std::net::SocketAddr>,
    /// A file holding a secret that logs in to the dashboard (SAMOCODE_HTTP_TOKEN_FILE,
    /// `--http-token-file`); required to listen on an address other than loopback.
    pub http_token_file: Option<PathBuf>,
    /// Where the daemon's attempts run, and how to reach the engine.
    pub remote: RemoteSettings,
    /// Session and fleet budgets, and the prices of models that print none.
    pub budgets: BudgetSettings,
    /// The agent's environment policy, which a worker also applies to the variables an
    /// attempt names.
    pub env_policy: EnvPolicy,
}

impl Config {
    /// Checks what running agents needs beyond the settings' form: codex refuses to start when
    /// CODEX_HOME names a missing folder, so that is said up front rather than by every attempt.
    /// (`install` creates the folder, so it does not ask.)
    pub fn check_agent(&self) -> Result<(), ConfigError> {
        match (&self.codex_home, self.codex_home_origin) {
            (Some(home), Some(origin))
                if self.agent.provider == Provider::Codex && !home.is_dir() =>
            {
                Err(ConfigError::BadValue {
                    key: "CODEX_HOME".into(),
                    value: home.display().to_string(),
                    bare: false,
                    origin,
                    expected: "an existing directory (create it, or unset CODEX_HOME for ~/.codex)",
                })
            }
            // Agents of another engine start on other machines, where this one cannot look.
            _ if self.remote.engine == Engine::Local => self.check_program(self.agent.provider),
            _ => Ok(()),
        }
    }

    /// The running provider's CLI can be started: a path names an executable file, and a bare
    /// name is found in PATH. Checked before anything is made, where the spawn would fail
    /// only once a session folder and its worktree exist.
    pub fn check_program(&self, provider: Provider) -> Result<(), ConfigError> {
        let (key, origin, program) = match provider {
            Provider::Claude => (
                "CLAUDE_PATH",
                self.program_origins[0],
                &self.agent.claude_path,
            ),
            Provider::Codex => (
                "CODEX_PATH",
                self.program_origins[1],
                &self.agent.codex_path,
            ),
        };
        let executable = |path: &Path| path.metadata().is_ok_and(|m| m.is_file()) && runs(path);
        let found = match program.components().count() > 1 || program.is_absolute() {
            true => executable(program),
            false => std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
            }),
        };
        if found {
            return Ok(());
        }
        Err(ConfigError::BadValue {
            key: key.into(),
            value: program.display().to_string(),
            bare: false,
            origin: origin.unwrap_or("the default name"),
            expected: match provider {
                Provider::Claude => {
                    "an executable file, or a program in PATH (install Claude Code, or set CLAUDE_PATH to it; a relative path is taken from where it was set)"
                }
                Provider::Codex => {
                    "an executable file, or a program in PATH (install the Codex CLI, or set CODEX_PATH to it; a relative path is taken from where it was set)"
                }
            },
        })
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
    pub log_format: Option<String>,
    /// `--http ADDR`, or `off` for `--no-http`.
    pub http: Option<String>,
    pub http_token_file: Option<String>,
    /// `--executor` (supervise).
    pub executor: Option<String>,
    /// `--nats-url` (supervise, worker).
    pub nats_url: Option<String>,
    /// `--max-cost`, `--max-iterations`, `--max-time` (start, run), `--fleet-max-cost`
    /// (supervise).
    pub budget: BudgetFlags,
    /// The command cannot work without a project file.
    pub require_project: bool,
    /// The command works on no project of the person's (the demo, the scripted agent): none
    /// is looked for, so that a `.samocode` above the folder it runs in is not read.
    pub no_project: bool,
}

/// The world a configuration is read from, injected so tests need not touch the process.
#[derive(Debug, Clone)]
pub struct Sources {
    pub env: HashMap<String, String>,
    pub cwd: PathBuf,
}

impl Sources {
    /// The real environment and working directory. A variable that is not UTF-8 (`PWD`
    /// after a `cd` into a Latin-1 folder) is left out, unless it is a setting of samocode's
    /// or `HOME` or `PATH`, which is an error naming it; so is a working directory that is not UTF-8
    /// (session files keep paths as text).
    pub fn from_process() -> std::io::Result<Sources> {
        let mut env = HashMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    env.insert(name.to_string(), value);
                }
                Err(value)
                    if ["HOME", "PATH"].contains(&name) || values::SETTINGS.contains(&name) =>
                {
                    let shown = match values::SECRETS.contains(&name) {
                        true => "<hidden: it holds a secret>".to_string(),
                        false => without_userinfo(&format!("{value:?}")).into_owned(),
                    };
                    return Err(std::io::Error::other(format!(
                        "{name}={shown} is not valid UTF-8; samocode reads only UTF-8 settings and paths: give it a UTF-8 value"
                    )));
                }
                Err(_) => {}
            }
        }
        let cwd = std::env::current_dir().map_err(|e| {
            std::io::Error::other(format!("cannot read the current directory: {e}"))
        })?;
        if cwd.to_str().is_none() {
            return Err(std::io::Error::other(format!(
                "the current directory {cwd:?} is not valid UTF-8; samocode keeps paths as text in its files: work from a folder whose path is UTF-8"
            )));
        }
        Ok(Sources { env, cwd })
    }

    /// HOME, when it is an absolute path.
    fn home(&self) -> Option<PathBuf> {
        self.absolute_dir("HOME")
    }

    /// The folder the variable `key` names, when that is an absolute path: a relative one
    /// (ignored, as the XDG base directory specification says of its variables) would place
    /// the state directory and the configuration relative to wherever a command runs.
    pub fn absolute_dir(&self, key: &str) -> Option<PathBuf> {
        self.env
            .get(key)
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
    }
}

/// Why a configuration could not be resolved. Every variant names the key, the value where
/// there is one, and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `.samocode` in the working directory or its parents.
    #[error(
        "no .samocode project file in {0} or its parents; create one with MAIN_REPO=, WORKTREES= and SESSIONS= lines, or pass --config PATH"
    )]
    ProjectNotFound(PathBuf),
    /// `--config` names a folder, or nothing.
    #[error("--config: {problem}")]
    ConfigFlag { problem: String },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is a pipe, a device, too large or not UTF-8.
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    /// A `.samocode` line is not `KEY=VALUE`.
    #[error("{path}:{line}: expected KEY=VALUE, found {text:?}")]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// A key that is not a setting (in `.samocode` or `config.toml`).
    #[error("{place}: unknown setting {key:?}{}", .suggestion.as_ref().map(|s| format!("; did you mean {s}?")).unwrap_or_else(|| "; remove it".into()))]
    UnknownKey {
        /// The file (and line) it is in.
        place: String,
        key: String,
        suggestion: Option<String>,
    },
    /// A setting given in the file that does not hold it (a daemon's setting in `.samocode`,
    /// a project's in `config.toml`).
    #[error("{place}: {key} is not a setting of this file; {belongs}")]
    Misplaced {
        place: String,
        key: String,
        belongs: String,
    },
    /// A `.samocode` key given twice.
    #[error("{path}:{second}: {key} is given again (first on line {first}); keep one")]
    DuplicateKey {
        path: PathBuf,
        key: &'static str,
        first: usize,
        second: usize,
    },
    /// A required `.samocode` key is absent.
    #[error("{path}: {key} is required (the {what})")]
    MissingKey {
        path: PathBuf,
        key: &'static str,
        what: &'static str,
    },
    /// A required `.samocode` key with nothing after its `=`.
    #[error(
        "{path}:{line}: {key} is empty: expected the {what} (a path; `.` for the folder of this file)"
    )]
    EmptyKey {
        path: PathBuf,
        line: usize,
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
    /// A `.samocode` value of the wrong form.
    #[error("{path}:{line}: {key}={value:?} is not valid: expected {expected}")]
    ProjectValue {
        path: PathBuf,
        line: usize,
        key: &'static str,
        value: String,
        expected: String,
    },
    /// `config.toml` is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    BadToml { path: PathBuf, message: String },
    /// A setting has a value of the wrong form.
    #[error("{key}={} (from {origin}) is not valid: expected {expected}", shown_value(value, *bare))]
    BadValue {
        key: String,
        value: String,
        /// A TOML number, boolean, array or table, shown as TOML writes it (not quoted).
        bare: bool,
        origin: &'static str,
        expected: &'static str,
    },
    /// `keep_env` names variables that never reach an agent.
    #[error(
        "{key} (from {origin}) names {names}: samocode's own variables (its settings such as RUST_LOG or CLAUDE_MODEL, TELEGRAM_*, OTEL_*, SAMOCODE_*, git's repository variables) never reach an agent; remove them from it"
    )]
    OwnKept {
        key: String,
        names: String,
        origin: &'static str,
    },
    /// Nothing says where the state directory is.
    #[error(
        "no state directory: SAMOCODE_STATE_DIR is not set, and neither is HOME (for the default ~/.local/state/samocode) nor XDG_STATE_HOME, as an absolute path; set one of them{}",
        .earlier.as_ref().map(|p| format!(" (an earlier samocode kept it in {} with no HOME: SAMOCODE_STATE_DIR={} keeps the sessions its daemon owned)", p.display(), p.display())).unwrap_or_default()
    )]
    NoStateDir { earlier: Option<PathBuf> },
    /// One of two settings that only work together is set without the other.
    #[error("{key} is set (from {origin}) but {missing} is not; set both, or neither")]
    Incomplete {
        key: &'static str,
        origin: &'static str,
        missing: &'static str,
    },
    /// Several of the above, found in one pass.
    #[error("{} problems in the configuration:{}", .0.len(), .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Many(Vec<ConfigError>),
}

/// A setting's value in an error: quoted, unless it is a TOML value other than a string.
fn shown_value(value: &str, bare: bool) -> String {
    match bare {
        true => value.to_string(),
        false => format!("{value:?}"),
    }
}

/// The problems found while resolving, all of them reported at the end.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// `value` when nothing was wrong; else the one problem, or all of them.
    fn finish<T>(mut self, value: T) -> Result<T, ConfigError> {
        match self.0.len() {
            0 => Ok(value),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

/// How long one attempt may run: from a second (less cannot start a CLI) to a week.
const TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 86400));
const TIMEOUT_TEXT: &str =
    "a duration from 1s to 7 days, such as 90s, 30m or 2h, or a number of seconds";

/// Resolves the configuration of one command. Every problem in the flags, the environment,
/// `.samocode` and `config.toml` is collected, and all of them are reported together.
pub fn resolve(flags: &Flags, sources: &Sources) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let global = file::read(sources, &mut problems);
    let project = match &flags.config {
        Some(path) => {
            let path = absolute(&sources.cwd, path);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    let inside = path.join(".samocode");
                    problems.push(ConfigError::ConfigFlag {
                        problem: match inside.is_file() {
                            true => format!(
                                "{} is a folder; give its project file, {}",
                                path.display(),
                                inside.display()
                            ),
                            false => format!(
                                "{} is a folder, and holds no .samocode; give a project file",
                                path.display()
                            ),
                        },
                    });
                    None
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    problems.push(ConfigError::ConfigFlag {
                        problem: format!("{} does not exist", path.display()),
                    });
                    None
                }
                _ => project::read(&path, sources, &mut problems),
            }
        }
        None if flags.no_project => None,
        None => match find_project_file(&sources.cwd) {
            Some(path) => project::read(&path, sources, &mut problems),
            None if flags.require_project => {
                problems.push(ConfigError::ProjectNotFound(sources.cwd.clone()));
                None
            }
            None => None,
        },
    };
    misspelt_variables(sources, &mut problems);
    let profiles = profiles::from_toml(&global.table, &mut problems);
    let mut layers = Layers {
        env: &sources.env,
        file: &global,
        problems: &mut problems,
    };

    let provider = layers
        .parsed(
            "SAMOCODE_PROVIDER",
            flags.provider.as_ref().map(|v| ("--provider", v)),
            "claude or codex",
            |v| match v {
                "claude" => Some(Provider::Claude),
                "codex" => Some(Provider::Codex),
                _ => None,
            },
        )
        .unwrap_or(Provider::Claude);
    // Both timeouts are checked, whichever provider runs; --timeout sets the running one's.
    let timeout_of = |layers: &mut Layers, env: &str, chosen: Provider| {
        let flag = flags
            .timeout
            .as_ref()
            .filter(|_| provider == chosen)
            .map(|v| ("--timeout", v));
        layers
            .parsed(
                env,
                flag,
                TIMEOUT_TEXT,
                duration_between(TIMEOUT.0, TIMEOUT.1),
            )
            .unwrap_or(Duration::from_secs(1800))
    };
    let claude_timeout = timeout_of(&mut layers, "CLAUDE_TIMEOUT", Provider::Claude);
    let codex_timeout = timeout_of(&mut layers, "CODEX_TIMEOUT", Provider::Codex);
    // A bare name is looked up in PATH when the agent starts; a path is taken from where it
    // was given, never from the worktree the agent starts in.
    let program = |layers: &mut Layers, env: &str, default: &str| {
        let Some(found) = layers.get(env, None) else {
            return (PathBuf::from(default), None);
        };
        let path = match found.value.contains('/') {
            true => given_from(&found, sources)
                .join(expand_home(&found.value, sources))
                .components()
                .collect(),
            false => PathBuf::from(&found.value),
        };
        (path, Some(found.origin))
    };
    let (claude_path, claude_path_origin) = program(&mut layers, "CLAUDE_PATH", "claude");
    let (codex_path, codex_path_origin) = program(&mut layers, "CODEX_PATH", "codex");
    let claude_model = layers.parsed("CLAUDE_MODEL", None, MODEL_NAME, model_name);
    let codex_model = layers.parsed("CODEX_MODEL", None, MODEL_NAME, model_name);
    let claude_max_turns = layers
        .parsed(
            "CLAUDE_MAX_TURNS",
            None,
            "a whole number from 1 to 100000",
            number_between(1, 100_000),
        )
        .unwrap_or(300);
    let kill_grace = layers
        .parsed(
            "SAMOCODE_KILL_GRACE",
            None,
            "a duration from 0s to 10 minutes, such as 10s, or a number of seconds",
            duration_between(Duration::ZERO, Duration::from_secs(600)),
        )
        .unwrap_or(Duration::from_secs(10));
    let stall_timeout = layers
        .parsed(
            "SAMOCODE_STALL_TIMEOUT",
            None,
            "0 (off), or a duration from 1s to 7 days such as 10m",
            |v| parse_duration(v).filter(|d| d.is_zero() || (TIMEOUT.0..=TIMEOUT.1).contains(d)),
        )
        .filter(|d| !d.is_zero());
    let retry = RetryPolicy {
        max_attempts: layers
            .parsed(
                "SAMOCODE_MAX_RETRIES",
                None,
                "a whole number from 1 to 100",
                number_between(1, 100),
            )
            .unwrap_or(3),
        first_delay: layers
            .parsed(
                "SAMOCODE_RETRY_DELAY",
                None,
                "a duration from 0s to 5 minutes (the backoff's cap), or a number of seconds",
                duration_between(Duration::ZERO, Duration::from_secs(300)),
            )
            .unwrap_or(Duration::from_secs(5)),
        max_delay: Duration::from_secs(300),
    };
    let state_dir = match layers.get("SAMOCODE_STATE_DIR", None) {
        Some(found) => placed(&found, sources),
        None => default_state_dir(sources, layers.problems),
    };
    let control_socket = match layers.get("SAMOCODE_CONTROL", None) {
        Some(found) => placed(&found, sources),
        None => state_dir.join("control.sock"),
    };
    let max_parallel = layers
        .parsed(
            "SAMOCODE_MAX_PARALLEL",
            flags.max_parallel.as_ref().map(|v| ("--max-parallel", v)),
            "a whole number from 1 to 1000",
            values::parse_parallel,
        )
        .unwrap_or(4);
    let log_format = layers
        .parsed(
            "SAMOCODE_LOG_FORMAT",
            flags.log_format.as_ref().map(|v| ("--log-format", v)),
            "text or json",
            crate::telemetry::LogFormat::parse,
        )
        .unwrap_or_default();
    let failpoints = layers
        .text("SAMOCODE_FAILPOINTS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let http = layers
        .parsed(
            "SAMOCODE_HTTP",
            flags.http.as_ref().map(|v| ("--http", v)),
            "an IP address and port such as 127.0.0.1:7420, or off",
            |v| match v {
                "off" => Some(None),
                addr => addr.parse().ok().map(Some),
            },
        )
        .unwrap_or(Some(crate::dashboard::DEFAULT_ADDR));
    let http_token_file = layers
        .get(
            "SAMOCODE_HTTP_TOKEN_FILE",
            flags
                .http_token_file
                .as_ref()
                .map(|v| ("--http-token-file", v)),
        )
        .map(|found| placed(&found, sources));
    let telegram = telegram::read(&mut layers);
    let remote = remote::read(
        &mut layers,
        sources,
        flags.executor.as_ref(),
        flags.nats_url.as_ref(),
    );
    let otel = otel::read(&mut layers);
    let budgets = budget::read(&mut layers, &flags.budget, &global.table);
    let log_filter = layers.parsed(
        "RUST_LOG",
        None,
        "a log filter such as info or samocode=debug,warn",
        |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .ok()
                .map(|_| v.to_string())
        },
    );
    let codex_home_found = layers.get("CODEX_HOME", None);
    let codex_home_origin = codex_home_found.as_ref().map(|f| f.origin);
    let codex_home = match &codex_home_found {
        Some(found) => Some(placed(found, sources)),
        None => sources.home().map(|home| home.join(".codex")),
    };
    let policy = env_policy(&mut layers, &global);
    let mut env = policy.apply(&sources.env);
    // codex reads CODEX_HOME from its environment: one set in config.toml is passed on too,
    // to codex's agents only (as the environment's own is).
    if let (Some(home), Some(_)) = (&codex_home, codex_home_origin)
        && policy.allows("CODEX_HOME")
    {
        env.set_for(
            "CODEX_HOME",
            &home.display().to_string(),
            Some(Provider::Codex),
        );
    }

    let agent = AgentSettings {
        provider,
        claude_path,
        claude_model,
        claude_max_turns,
        codex_path,
        codex_model,
        profiles,
        effort: None,
        timeout: match provider {
            Provider::Claude => claude_timeout,
            Provider::Codex => codex_timeout,
        },
        kill_grace,
        stall_timeout,
        env,
    };
    let config = Config {
        project,
        agent,
        retry,
        state_dir,
        control_socket,
        max_parallel,
        telegram,
        otlp_traces: otel.traces,
        otlp_metrics: otel.metrics,
        otlp_headers: otel.headers,
        otel_resource: otel.resource,
        otel_span_delay: otel.span_delay,
        otel_metric_interval: otel.metric_interval,
        otel_service_name: otel.service_name,
        log_filter,
        log_format,
        searched_from: sources.cwd.clone(),
        home: sources.home(),
        codex_home,
        codex_home_origin,
        program_origins: [claude_path_origin, codex_path_origin],
        failpoints,
        http,
        http_token_file,
        remote,
        env_policy: policy,
        budgets,
    };
    problems.finish(config)
}

/// The agent's environment policy from `strip_env` and `keep_env` (the environment's
/// comma-separated `SAMOCODE_STRIP_ENV` / `SAMOCODE_KEEP_ENV` first, else config.toml's lists).
fn env_policy(layers: &mut Layers, global: &file::FileSettings) -> EnvPolicy {
    let mut patterns = |env: &str| -> Vec<Pattern> {
        let entries = match layers.get(env, None) {
            Some(found) if found.origin == "the environment" => {
                Some((file::split_list(&found.value), found))
            }
            _ => global.lists.get(&values::file_key(env)).map(|entries| {
                let found = values::Found {
                    value: entries.join(","),
                    key: values::file_key(env),
                    origin: "config.toml",
                };
                (entries.clone(), found)
            }),
        };
        let Some((entries, found)) = entries else {
            return Vec::new();
        };
        let parsed: Option<Vec<Pattern>> = entries.iter().map(|e| Pattern::parse(e)).collect();
        parsed.unwrap_or_else(|| {
            layers.bad(
                &found,
                env,
                "variable names or prefixes ending in *, such as AWS_SECRET_ACCESS_KEY or MYCORP_*",
            );
            Vec::new()
        })
    };
    let strip = patterns("SAMOCODE_STRIP_ENV");
    let keep = patterns("SAMOCODE_KEEP_ENV");
    // Asking to hand an agent one of samocode's own variables (a bot token) is a mistake to
    // be told of, not a wish dropped without a word.
    let own: Vec<&str> = keep
        .iter()
        .filter(|p| p.names_own())
        .map(crate::agent::env::Pattern::text)
        .collect();
    if !own.is_empty() {
        let (key, origin) = match layers.get("SAMOCODE_KEEP_ENV", None) {
            Some(found) if found.origin == "the environment" => (found.key, found.origin),
            _ => ("keep_env".to_string(), "config.toml"),
        };
        layers.problems.push(ConfigError::OwnKept {
            key,
            names: own.join(", "),
            origin,
        });
    }
    EnvPolicy { strip, keep }
}

/// Reads a project file named by absolute path (the daemon, for a session handed to it).
pub fn load_project(path: &Path) -> Result<Project, ConfigError> {
    let sources = Sources::from_process().map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut problems = Problems::default();
    let project = project::read(path, &sources, &mut problems);
    match problems.finish(project)? {
        Some(project) => Ok(project),
        None => Err(ConfigError::ProjectNotFound(path.to_path_buf())),
    }
}

/// The nearest `.samocode` up from `start`: a broken one there (a link to nothing, a pipe)
/// is found too, to be refused by its name, rather than passed over for a parent's project.
fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|candidate| std::fs::symlink_metadata(candidate).is_ok_and(|m| !m.is_dir()))
}

/// Variables of samocode's own that are not settings: the markers an agent's environment
/// carries, the test agent's and the tests' fault injection.
const OWN_VARIABLES: &[&str] = &[
    "SAMOCODE_SESSION",
    "SAMOCODE_ATTEMPT",
    "SAMOCODE_FAILPOINTS",
];

/// A `SAMOCODE_` variable a letter or two away from a setting is a typo whose setting would go
/// unset without a word (a cost limit not applied): a problem that names the setting. Other
/// variables of the prefix are left alone.
fn misspelt_variables(sources: &Sources, problems: &mut Problems) {
    let all: Vec<&str> = values::SETTINGS
        .iter()
        .chain(file::LISTS)
        .chain(OWN_VARIABLES)
        .copied()
        .collect();
    // The prefixes that are samocode's own (TELEGRAM_ by the settings samocode reads there).
    const PREFIXES: [&str; 2] = ["SAMOCODE_", "TELEGRAM_"];
    let prefix_of = |name: &str| PREFIXES.into_iter().find(|p| name.starts_with(p));
    let mut names: Vec<&String> = sources
        .env
        .keys()
        .filter(|k| prefix_of(k).is_some() && !k.starts_with("SAMOCODE_FAKE"))
        .filter(|k| !all.contains(&k.as_str()))
        .collect();
    names.sort();
    // A name's words after its prefix, a plural read as its singular (`MAX_RETRY`), and
    // without `MAX_` (`SAMOCODE_RETRIES` for SAMOCODE_MAX_RETRIES).
    let singular = |word: &str| match word.strip_suffix("IES") {
        Some(stem) => format!("{stem}Y"),
        None => word.strip_suffix('S').unwrap_or(word).to_string(),
    };
    let words = |name: &str| {
        let rest = name.split_once('_').map_or(name, |(_, rest)| rest);
        singular(
            rest.strip_prefix("MAX_")
                .or_else(|| rest.strip_prefix("MAX"))
                .unwrap_or(rest),
        )
    };
    for name in names {
        let prefix = prefix_of(name).unwrap_or_default();
        let rest = words(name);
        // A letter off in a short name, two in a long one (`MAX_COSTS`, `KILLGRACE`), never
        // a different word (`SAMOCODE_HOME`); or the very words of a setting of the agent's
        // (`SAMOCODE_TIMEOUT` for CLAUDE_TIMEOUT, `SAMOCODE_MAX_TURNS`).
        let limit = if rest.len() >= 8 { 2 } else { 1 };
        let agents = prefix == "SAMOCODE_" && ["TIMEOUT", "TURN"].contains(&rest.as_str());
        let near = all
            .iter()
            .filter_map(|k| {
                let d = values::distance(&rest, &words(k));
                match k.starts_with(prefix) {
                    true => (d <= limit).then_some((d, *k)),
                    false => (agents && d == 0).then_some((1, *k)),
                }
            })
            .min_by_key(|(d, _)| *d);
        if let Some((_, setting)) = near {
            problems.push(ConfigError::UnknownKey {
                place: "the environment".into(),
                key: name.clone(),
                suggestion: Some(format!(
                    "{setting} (or unset {name}, if it is not meant for samocode)"
                )),
            });
        }
    }
}

/// `$XDG_STATE_HOME/samocode`, else `~/.local/state/samocode`; with neither set, a problem
/// (a state directory under a shared folder would be anyone's).
fn default_state_dir(sources: &Sources, problems: &mut Problems) -> PathBuf {
    match sources.absolute_dir("XDG_STATE_HOME") {
        Some(dir) => dir.join("samocode"),
        None => match sources.home() {
            Some(home) => home.join(".local/state/samocode"),
            None => {
                // Where an earlier build put it with no HOME: its owned sessions are there.
                let earlier = Path::new("/tmp/.local/state/samocode");
                problems.push(ConfigError::NoStateDir {
                    earlier: earlier.is_dir().then(|| earlier.to_path_buf()),
                });
                PathBuf::from("/nonexistent/samocode-state")
            }
        },
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

/// Whether this user may execute `path`, and the kernel can: a binary, or a script whose
/// `#!` interpreter is there to run it (a script without one fails to start with "exec format
/// error", one naming a missing interpreter with "no such file").
fn runs(path: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    if access(path, AccessFlags::X_OK).is_err() {
        return false;
    }
    let mut head = [0u8; 256];
    let Ok(read) =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head))
    else {
        // Executable but not readable (mode 0711): only a binary runs so; let it try.
        return true;
    };
    let head = &head[..read];
    if head.starts_with(b"\x7fELF") {
        return elf_runs(path, head);
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return false;
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or(line);
    let interpreter = String::from_utf8_lossy(line);
    // The kernel splits the line at a space or a tab only: a CRLF script names an
    // interpreter ending in a carriage return, which is not there.
    let Some(interpreter) = interpreter
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .filter(|i| !i.is_empty())
    else {
        return false;
    };
    let interpreter = Path::new(interpreter);
    interpreter.is_file() && access(interpreter, AccessFlags::X_OK).is_ok()
}

/// Whether an ELF binary (`head`: its first bytes) can run here: built for this machine, and
/// its program loader (`PT_INTERP`), when it names one, is there (a binary of another
/// architecture fails with "exec format error", one whose loader is missing, an Alpine build
/// on a glibc system, with "no such file"). Only 64-bit little-endian files are read; another
/// kind is left for the kernel to judge.
fn elf_runs(path: &Path, head: &[u8]) -> bool {
    const EM_386: u16 = 3;
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    const PT_INTERP: u32 = 3;
    let ours: &[u16] = match std::env::consts::ARCH {
        "x86_64" => &[EM_X86_64, EM_386],
        "x86" => &[EM_386],
        "aarch64" => &[EM_AARCH64],
        _ => return true,
    };
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    // 64-bit (class 2), little-endian (data 1).
    if head.get(4) != Some(&2) || head.get(5) != Some(&1) {
        return true;
    }
    let Some(machine) = u16_at(head, 18) else {
        return true;
    };
    if !ours.contains(&machine) {
        return false;
    }
    // The program headers, read from the file: they may lie past the first bytes.
    let mut file = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut file));
    if read.is_err() {
        return true;
    }
    let u32_at = |at: usize| {
        file.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let u64_at = |at: usize| {
        file.get(at..at + 8)
            .map(|x| u64::from_le_bytes(x.try_into().expect("eight bytes")) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(32), u16_at(&file, 54), u16_at(&file, 56))
    else {
        return true;
    };
    for n in 0..usize::from(count) {
        let at = phoff + n * usize::from(size);
        if u32_at(at) != Some(PT_INTERP) {
            continue;
        }
        let (Some(offset), Some(length)) = (u64_at(at + 8), u64_at(at + 32)) else {
            return true;
        };
        let Some(name) = file.get(offset..offset + length) else {
            return true;
        };
        let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(name));
        return Path::new(name.as_ref()).exists();
    }
    true
}

/// The folder a relative path setting is taken from: that of `config.toml` for a value from
/// it (the same wherever a command runs), else the working directory.
fn given_from(found: &values::Found, sources: &Sources) -> PathBuf {
    match found.origin {
        "config.toml" => file::dir(sources).unwrap_or_else(|| sources.cwd.clone()),
        _ => sources.cwd.clone(),
    }
}

/// A path setting: `~` expanded, and a relative path taken from where it was given.
fn placed(found: &values::Found, sources: &Sources) -> PathBuf {
    absolute(
        &given_from(found, sources),
        Path::new(&expand_home(&found.value, sources)),
    )
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
mod tests;

/// What a model setting must be.
pub(crate) const MODEL_NAME: &str =
    "a model name (it goes to the agent CLI after --model, so it may not start with '-')";

/// A model name the agent CLI takes as one: not empty, not an option, no NUL byte.
pub(crate) fn model_name(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && !text.starts_with('-') && !text.contains('\0')).then(|| text.to_string())
}
