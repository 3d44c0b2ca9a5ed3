//! The control socket of `samocode supervise`: one JSON request per connection, one JSON
//! response, each on one line, both carrying the protocol version `v`.
//!
//! The socket lives in the daemon's state directory (or at SAMOCODE_CONTROL), mode 0600 inside a
//! 0700 directory: only the user who runs the daemon can drive it. The server is a task owned
//! by the daemon that turns each request into a [`SupervisorMsg`] and waits for the answer
//! ([`ask`], always with a timeout); it holds no session state. A client that sends more than
//! [`MAX_REQUEST`] bytes, or nothing for [`READ_TIMEOUT`], gets an error and is dropped, and
//! accept errors (out of file descriptors) back off instead of spinning, so one bad client
//! never keeps the others waiting.
//! [`ask`] is also the one way an in-process adapter (the web dashboard, the bot) sends the
//! same requests; `dashboard` requests are answered here from the [`DashboardHandle`],
//! without the supervisor.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::dashboard::DashboardHandle;
use crate::protocol::budget::Budget;
use crate::session::person::PersonCommand;
use crate::supervisor::{OwnedSession, SupervisorMsg};

/// The version of the request and response shapes below.
pub const VERSION: u32 = 1;

/// The longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 1024 * 1024;
/// How long a client may take to send its request, and to take the reply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take in the daemon before the client hears it did not answer; the
/// longest is a start, which opens the session's folder first.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client waits for the daemon's answer: the daemon's own limit for a request,
/// and some.
pub const CLIENT_WAIT: Duration = Duration::from_secs(ANSWER_TIMEOUT.as_secs() + 30);
/// Connections served at once; more wait to be accepted. Each holds at most one request.
const MAX_CONNECTIONS: usize = 64;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Take over a session (new or existing) of the project whose `.samocode` file is given
    /// (an absolute path).
    Start {
        project: PathBuf,
        session: String,
        dive: Option<String>,
        task: Option<String>,
        /// The session's own budget (`--max-cost` ...), kept in its `_state.json`.
        #[serde(default, skip_serializing_if = "Budget::is_empty")]
        budget: Budget,
    },
    /// A person's command for a session the daemon owns, by folder. `by` says who gave it
    /// and where (`from the command line`, `by @ann`), for the journals and the chat.
    Person {
        dir: PathBuf,
        command: PersonCommand,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The same, by folder name or short name (the bot knows no paths). `park`: the park the
    /// person saw (a button's: the millisecond its session entered that state); the command is
    /// refused when the session is parked otherwise now.
    Named {
        session: String,
        command: PersonCommand,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        park: Option<i64>,
    },
    /// The sessions the daemon owns.
    Status,
    /// Change the cap on running agents (1 to 1000).
    Parallel { max: usize },
    /// Raise the fleet budget to `cost_usd` (`samocode resume --raise-budget cost=N` without a
    /// session), for the daemon's life.
    RaiseFleetBudget { cost_usd: f64 },
    /// The web dashboard's address and a fresh one-time login token (`samocode dashboard`).
    Dashboard,
}

impl Request {
    /// The request's `cmd`, with the person's verb for a session command (`person approve`).
    fn name(&self) -> String {
        match self {
            Request::Start { .. } => "start".into(),
            Request::Person { command, .. } | Request::Named { command, .. } => {
                format!("person {}", command.verb())
            }
            Request::Status => "status".into(),
            Request::Parallel { .. } => "parallel".into(),
            Request::RaiseFleetBudget { .. } => "raise_fleet_budget".into(),
            Request::Dashboard => "dashboard".into(),
        }
    }

    /// Whether only a person may ask it: all but `status` (a dashboard login opens the gates
    /// too).
    fn a_persons(&self) -> bool {
        !matches!(self, Request::Status)
    }
}

/// The agent of this daemon's that process `pid` is, if it is one: below the daemon (its
/// agents' orphans are adopted by it), or marked as the agent of a session it owns. An agent
/// of another daemon's or worker's session (an agent running samocode's own tests, whose
/// daemons are of their own) is that project's person here.
async fn agent_of_ours(
    pid: i32,
    supervisor: &ActorRef<SupervisorMsg>,
) -> Option<crate::agent::reaper::AgentAsker> {
    use crate::agent::reaper::{AgentAsker, agent_behind, descends_from};
    // Below this daemon whatever its markers say (an agent may clear them, or set them to
    // another's).
    if descends_from(pid, std::process::id() as i32) {
        return Some(AgentAsker::BelowStarter { pid });
    }
    let agent = agent_behind(pid)?;
    let AgentAsker::Marked { session, .. } = &agent else {
        return Some(agent);
    };
    let Response::Sessions { sessions, .. } = ask(supervisor, Request::Status).await else {
        return None;
    };
    sessions
        .iter()
        .any(|owned| crate::session::worktree::same_dir(&owned.dir, session))
        .then_some(agent)
}

/// Why a person's request from `asker` is refused: it is an agent's, which may not open its
/// own gates (answer its questions, approve a plan) nor act on other sessions, budgets and
/// logins.
pub fn not_a_person(asker: &str) -> String {
    format!(
        "refused: this comes from {asker}, and an agent may not act as a person: answers, approvals, stops, notes, budgets, logins and new sessions are people's (from a terminal, Telegram or the dashboard); an agent that needs a person says so in its signal (`waiting` or `blocked`)"
    )
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// A sentence for the person.
    Done { message: String },
    /// The owned sessions and the concurrency figures.
    Sessions {
        sessions: Vec<OwnedSession>,
        max_parallel: usize,
        running: usize,
        /// What the owned sessions cost together, against the fleet budget.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fleet: Option<FleetFigures>,
        /// Owned sessions the daemon could not open, with why: they wait for a person's
        /// `resume`, whatever their files still say.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        broken: Vec<BrokenSession>,
        /// The daemon's budget for a session that sets none of its own (what its sessions
        /// are held to, whatever the asking command's own settings say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_defaults: Option<Box<Budget>>,
    },
    /// The request failed; `code` is the exit code the CLI should use.
    Error { message: String, code: u8 },
    /// Where the dashboard listens, and a token that logs in once.
    Dashboard { url: String, token: String },
}

/// An owned session the daemon could not open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokenSession {
    pub dir: PathBuf,
    pub reason: String,
}

/// The fleet budget as the daemon stands against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFigures {
    /// What the owned sessions have cost together.
    pub cost_usd: f64,
    /// The fleet budget, when there is one.
    pub max_cost_usd: Option<f64>,
    /// The budget is reached: new attempts wait.
    pub held: bool,
}

impl FleetFigures {
    /// One line for a person, when there is a fleet budget.
    pub fn line(&self) -> Option<String> {
        use crate::protocol::budget::money;
        let max = self.max_cost_usd?;
        Some(if self.held {
            format!(
                "fleet budget reached: {} of {}; new attempts wait (`samocode resume --raise-budget cost=N` lifts it)",
                money(self.cost_usd),
                money(max)
            )
        } else {
            format!(
                "fleet budget: {} of {} spent, {} left",
                money(self.cost_usd),
                money(max),
                money(max - self.cost_usd)
            )
        })
    }
}

impl Response {
    /// The reply's kind, as `reply` spells it.
    fn kind(&self) -> &'static str {
        match self {
            Response::Done { .. } => "done",
            Response::Sessions { .. } => "sessions",
            Response::Error { .. } => "error",
            Response::Dashboard { .. } => "dashboard",
        }
    }

    pub fn error(message: String, code: u8) -> Response {
        Response::Error { message, code }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be used.
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon closed the connection before it answered: it was stopping, or died.
    #[error(
        "control socket {path}: the daemon closed the connection before answering (it may be stopping); whether the command was applied is not known: `samocode status SESSION` shows where the session stands, and the command may be given again"
    )]
    NoAnswer { path: PathBuf },
    /// The daemon took the request and said nothing for longer than it ever takes to answer.
    #[error(
        "control socket {path}: the daemon did not answer within {}; it may be overloaded or out of open files (its log says); whether the command was applied is not known: `samocode status` shows where things stand",
        humantime::format_duration(*.waited)
    )]
    Silent { path: PathBuf, waited: Duration },
    /// The other side spoke something else.
    #[error("control socket {path}: unreadable message: {message}")]
    Protocol { path: PathBuf, message: String },
    /// The socket path is taken by something that is not a stale samocode socket.
    #[error(
        "control socket {path}: {what}; samocode uses this path only when nothing is there or a socket no daemon answers; point SAMOCODE_CONTROL elsewhere"
    )]
    Occupied { path: PathBuf, what: String },
    /// The socket's path is longer than a socket address holds.
    #[error(
        "control socket {path}: the path is {bytes} bytes, and a socket's may have at most 107; set SAMOCODE_CONTROL (or SAMOCODE_STATE_DIR) to a shorter path"
    )]
    TooLong { path: PathBuf, bytes: usize },
}

/// Connects to a running daemon; `None` when none listens at `path`.
pub async fn connect(path: &Path) -> Result<Option<UnixStream>, ControlError> {
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ControlError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Sends one request on a connection and reads its response.
pub async fn call(
    mut stream: UnixStream,
    path: &Path,
    request: Request,
) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: request,
    })
    .expect("requests serialize");
    line.push(b'\n');
    let gone = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
            ControlError::NoAnswer {
                path: path.to_path_buf(),
            }
        }
        _ => io(source),
    };
    stream.write_all(&line).await.map_err(gone)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    // The daemon answers within its own limit for a request (or says it timed out): silence
    // past it is a daemon that cannot serve, not a slow command.
    let waited = CLIENT_WAIT;
    let read = tokio::time::timeout(waited, reader.read_line(&mut answer))
        .await
        .map_err(|_| ControlError::Silent {
            path: path.to_path_buf(),
            waited,
        })?;
    if read.map_err(gone)? == 0 {
        return Err(ControlError::NoAnswer {
            path: path.to_path_buf(),
        });
    }
    let envelope: Envelope<Response> =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(envelope.body)
}

/// The socket the daemon listens on; removed on drop if it is still this one. Made again
/// when its file is gone while the daemon runs (see [`Socket::keep`]).
pub struct Socket {
    path: PathBuf,
    bound: std::sync::Mutex<Bound>,
    /// Something else is at the path: said once, not at every look.
    said_taken: std::sync::atomic::AtomicBool,
}

struct Bound {
    listener: Arc<UnixListener>,
    /// (device, inode) of the socket file this daemon made.
    identity: (u64, u64),
}

/// How often the daemon looks that its socket file is still its own.
const KEEP_EVERY: Duration = Duration::from_secs(5);

impl Socket {
    fn bound(&self) -> std::sync::MutexGuard<'_, Bound> {
        self.bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn listener(&self) -> Arc<UnixListener> {
        self.bound().listener.clone()
    }

    /// Makes the socket again when its file is gone (deleted by hand, by a cleaner of its
    /// folder, or by an agent): every command would have found no daemon until a restart.
    /// Something else at the path is left there, and said once.
    async fn keep(&self) {
        let identity = self.bound().identity;
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == identity => return,
            Ok(_) => {
                if !self
                    .said_taken
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(socket = %self.path.display(), "the control socket's path holds something else now; commands reach this daemon again once it is removed (the socket is then made again within 5 s)");
                }
                return;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return,
        }
        match bind_at(&self.path).await {
            Ok(bound) => {
                *self.bound() = bound;
                tracing::warn!(socket = %self.path.display(), "the control socket was gone; made again");
            }
            Err(error) => {
                tracing::warn!(socket = %self.path.display(), %error, "the control socket is gone and cannot be made again")
            }
        }
    }

    /// Removes the socket file if it is still this daemon's (another daemon may have taken
    /// the path since): at the daemon's end, whoever still holds the socket.
    pub fn close(&self) {
        let identity = self.bound().identity;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
    }
}

/// A socket's path has room for 107 bytes: a longer one is a setting to change, not an error
/// of the system. Checked before anything is made for the socket.
pub fn fits(path: &Path) -> Result<(), ControlError> {
    let bytes = path.as_os_str().len();
    match bytes > 107 {
        true => Err(ControlError::TooLong {
            path: path.to_path_buf(),
            bytes,
        }),
        false => Ok(()),
    }
}

/// Binds the socket with mode 0600. The path is used only when nothing is there, or when what
/// is there is a socket that no live daemon answers (the leftover of a crashed one).
pub async fn bind(path: &Path) -> Result<Socket, ControlError> {
    Ok(Socket {
        path: path.to_path_buf(),
        bound: std::sync::Mutex::new(bind_at(path).await?),
        said_taken: std::sync::atomic::AtomicBool::new(false),
    })
}

async fn bind_at(path: &Path) -> Result<Bound, ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ControlError::Occupied {
                    path: path.to_path_buf(),
                    what: "a live daemon answers on it".into(),
                });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(meta) => {
            let what = if meta.is_dir() {
                "it is a directory"
            } else if meta.file_type().is_symlink() {
                "it is a symbolic link"
            } else {
                "it is an existing file, not a socket"
            };
            return Err(ControlError::Occupied {
                path: path.to_path_buf(),
                what: what.into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fits(path)?;
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    Ok(Bound {
        listener: Arc::new(listener),
        identity: (meta.dev(), meta.ino()),
    })
}

/// Serves requests until the task is aborted, keeping the socket there.
pub async fn serve(
    socket: Arc<Socket>,
    supervisor: ActorRef<SupervisorMsg>,
    dashboard: DashboardHandle,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut pause = Duration::from_millis(10);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let listener = socket.listener();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tokio::time::sleep(KEEP_EVERY) => {
                socket.keep().await;
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                pause = Duration::from_millis(10);
                stream
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to be given back.
                tracing::warn!(%error, "control socket: accept failed; backing off");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let supervisor = supervisor.clone();
        let dashboard = dashboard.clone();
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Err(error) = answer(stream, supervisor, dashboard).await {
                tracing::debug!(%error, "control connection failed");
            }
            drop(permit);
        });
    }
}

async fn answer(
    stream: UnixStream,
    supervisor: ActorRef<SupervisorMsg>,
    dashboard: DashboardHandle,
) -> std::io::Result<()> {
    // Who asks: a process of an agent's (by its markers, or below this daemon, which adopts
    // what agents leave) is no person.
    let asker = stream.peer_cred().ok().and_then(|cred| cred.pid());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
    let mut line = Vec::new();
    let response = match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
    {
        Err(_) => Response::error(
            format!(
                "no request within {}",
                humantime::format_duration(READ_TIMEOUT)
            ),
            2,
        ),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST => {
            Response::error(format!("the request is longer than {MAX_REQUEST} bytes"), 2)
        }
        Ok(Ok(_)) => match parse_request(&line) {
            Ok(request) => {
                let agent = match (request.a_persons(), asker) {
                    (true, Some(pid)) => agent_of_ours(pid, &supervisor).await,
                    _ => None,
                };
                match (agent, request) {
                    (Some(agent), request) => {
                        tracing::warn!(request = %request.name(), %agent, "an agent's process asked as a person; refused");
                        Response::error(not_a_person(&agent.to_string()), 2)
                    }
                    (None, Request::Dashboard) => dashboard.login(),
                    (None, request) => {
                        use tracing::Instrument;
                        // A short root span per request, outside the server task's own context.
                        let span = tracing::info_span!(
                            parent: None,
                            "control",
                            "samocode.request" = %request.name(),
                            "samocode.reply" = tracing::field::Empty,
                        );
                        let response = ask(&supervisor, request).instrument(span.clone()).await;
                        span.record("samocode.reply", response.kind());
                        response
                    }
                }
            }
            Err(response) => response,
        },
    };
    let mut out = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: response,
    })
    .expect("responses serialize");
    out.push(b'\n');
    // A client that never reads a long reply (`status` of a large fleet) would hold one of the
    // connections for good.
    match tokio::time::timeout(READ_TIMEOUT, write.write_all(&out)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read the reply",
        )),
    }
}

/// Reads one request line as the daemon does: the envelope, its version, and the texts it
/// carries, none of which may hold a NUL byte. An unreadable one is the error to answer.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    match serde_json::from_slice::<Envelope<Request>>(line) {
        Ok(envelope)
            if envelope.v == VERSION
                && let Some(key) = unknown_key(line, &envelope) =>
        {
            Err(Response::error(
                format!(
                    "the request's {key} is not a field of a `{}` request (a misspelt name?); nothing was done",
                    envelope.body.name()
                ),
                2,
            ))
        }
        Ok(envelope) if envelope.v == VERSION && gives_no_answer(&envelope.body) => {
            Err(Response::error(
                "the answer command gives no answers: list (question number, text) pairs, or ask for the suggestions; nothing was done".into(),
                2,
            ))
        }
        Ok(envelope) if envelope.v == VERSION => match nul_in(&envelope.body) {
            Some(what) => Err(Response::error(
                format!("the {what} contains a NUL byte; remove it"),
                2,
            )),
            None => match budget_of(&envelope.body).map(|budget| budget.check()) {
                Some(Err(error)) => Err(Response::error(format!("budget {error}"), 2)),
                _ => Ok(envelope.body),
            },
        },
        Ok(envelope) => Err(Response::error(
            format!(
                "control protocol version {} is not supported (the daemon speaks {VERSION}); use the same samocode binary for both",
                envelope.v
            ),
            2,
        )),
        Err(e) => Err(Response::error(
            match misspelt_field(line, &e) {
                Some((key, field)) => format!(
                    "the request's {key} is not a field of its request (a misspelt `{field}`?); nothing was done"
                ),
                None => format!("unreadable request: {e}"),
            },
            2,
        )),
    }
}

/// For a request refused for a missing field, the key written in its place: one a letter or
/// two from it (`sesion` for `session`), with its path (`command.txet`), and the field.
fn misspelt_field(line: &[u8], error: &serde_json::Error) -> Option<(String, String)> {
    use serde_json::Value;
    fn go(value: &Value, path: &str, field: &str) -> Option<String> {
        let Value::Object(fields) = value else {
            return None;
        };
        for (name, inner) in fields {
            let here = match path {
                "" => name.clone(),
                _ => format!("{path}.{name}"),
            };
            if name != field && crate::config::nearest(name, [field]).is_some() {
                return Some(here);
            }
            if let Some(found) = go(inner, &here, field) {
                return Some(found);
            }
        }
        None
    }
    let message = error.to_string();
    let field = message
        .strip_prefix("missing field `")?
        .split_once('`')?
        .0
        .to_string();
    let raw: Value = serde_json::from_slice(line).ok()?;
    go(&raw, "", &field).map(|key| (key, field))
}

/// The first key of the request `line` its parsed form has no place for (`budget.cost`):
/// serde passes over unknown keys, and a misspelt one would be a setting silently lost.
fn unknown_key(line: &[u8], parsed: &Envelope<Request>) -> Option<String> {
    use serde_json::Value;
    // A budget leaves its unset limits out when written: they are known all the same.
    const BUDGET: [&str; 3] = ["cost_usd", "iterations", "time_secs"];
    // Where the request has a budget: a budget with no limit set is left out whole.
    let budget_at = match &parsed.body {
        Request::Start { .. } => Some("budget"),
        Request::Person {
            command: PersonCommand::RaiseBudget { .. },
            ..
        }
        | Request::Named {
            command: PersonCommand::RaiseBudget { .. },
            ..
        } => Some("command.budget"),
        _ => None,
    };
    fn go(
        raw: &Value,
        known: Option<&Value>,
        path: &str,
        budget_at: Option<&str>,
    ) -> Option<String> {
        let Value::Object(fields) = raw else {
            return None;
        };
        for (name, value) in fields {
            let here = match path {
                "" => name.clone(),
                _ => format!("{path}.{name}"),
            };
            let inner = known.and_then(|k| k.get(name));
            let budget = budget_at == Some(here.as_str())
                || (budget_at == Some(path) && BUDGET.contains(&name.as_str()));
            if inner.is_none() && !budget && !unset(value) {
                return Some(here);
            }
            if let Some(found) = go(value, inner, &here, budget_at) {
                return Some(found);
            }
        }
        None
    }
    // What a writer may spell out for a default it could also leave out.
    fn unset(value: &Value) -> bool {
        match value {
            Value::Null | Value::Bool(false) => true,
            Value::Object(fields) => fields.is_empty(),
            _ => false,
        }
    }
    let raw: Value = serde_json::from_slice(line).ok()?;
    let known = serde_json::to_value(parsed).ok()?;
    go(&raw, Some(&known), "", budget_at)
}

/// The budget a request carries, checked like the flags that give one (a fleet raise as a
/// cost).
fn budget_of(request: &Request) -> Option<Budget> {
    match request {
        Request::Start { budget, .. } => Some(*budget),
        Request::Person {
            command: PersonCommand::RaiseBudget { budget },
            ..
        }
        | Request::Named {
            command: PersonCommand::RaiseBudget { budget },
            ..
        } => Some(*budget),
        Request::RaiseFleetBudget { cost_usd } => Some(Budget {
            cost_usd: Some(*cost_usd),
            ..Budget::default()
        }),
        _ => None,
    }
}

/// Sends one control request to the supervisor and waits (at most [`ANSWER_TIMEOUT`]) for its
/// answer. Every adapter (the socket, the bot, the demo) asks through here.
pub async fn ask(supervisor: &ActorRef<SupervisorMsg>, request: Request) -> Response {
    let result = supervisor
        .call(
            |reply| SupervisorMsg::Control { request, reply },
            Some(ANSWER_TIMEOUT),
        )
        .await;
    match result {
        Ok(CallResult::Success(response)) => response,
        Ok(CallResult::Timeout) => Response::error(
            format!(
                "the daemon did not answer within {}",
                humantime::format_duration(ANSWER_TIMEOUT)
            ),
            1,
        ),
        _ => Response::error("the daemon is shutting down".into(), 1),
    }
}

/// An `answer` with an empty list of answers, which would be "saved" having saved nothing.
fn gives_no_answer(request: &Request) -> bool {
    use crate::session::person::Answers;
    matches!(
        request,
        Request::Person { command, .. } | Request::Named { command, .. }
            if matches!(command, PersonCommand::Answer { answers: Answers::Given(pairs) } if pairs.is_empty())
    )
}

/// The first text of a request that holds a NUL byte (no file name or argument can).
fn nul_in(request: &Request) -> Option<&'static str> {
    use crate::session::person::Answers;
    let command_texts = |command: &PersonCommand| -> Vec<(&'static str, String)> {
        match command {
            PersonCommand::Reject { reason } => vec![("reason", reason.clone())],
            PersonCommand::Tell { text, .. } => vec![("note", text.clone())],
            PersonCommand::Answer {
                answers: Answers::Given(pairs),
            } => pairs.iter().map(|(_, a)| ("answer", a.clone())).collect(),
            _ => Vec::new(),
        }
    };
    let mut texts: Vec<(&'static str, String)> = Vec::new();
    match request {
        Request::Start {
            project,
            session,
            dive,
            task,
            ..
        } => {
            texts.push(("project", project.display().to_string()));
            texts.push(("session", session.clone()));
            texts.extend(dive.iter().map(|d| ("dive", d.clone())));
            texts.extend(task.iter().map(|t| ("task", t.clone())));
        }
        Request::Person { dir, command, by } => {
            texts.push(("dir", dir.display().to_string()));
            texts.extend(by.iter().map(|b| ("name of who acts (`by`)", b.clone())));
            texts.extend(command_texts(command));
        }
        Request::Named {
            session,
            command,
            by,
            ..
        } => {
            texts.push(("session", session.clone()));
            texts.extend(by.iter().map(|b| ("name of who acts (`by`)", b.clone())));
            texts.extend(command_texts(command));
        }
        Request::Status
        | Request::Parallel { .. }
        | Request::RaiseFleetBudget { .. }
        | Request::Dashboard => {}
    }
    texts
        .into_iter()
        .find(|(_, text)| text.contains('\0'))
        .map(|(what, _)| what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::budget::COST_TEXT;

    /// A daemon that stops between taking a request and answering it: the person is told
    /// that, and how to find out whether it was applied, not "EOF while parsing".
    #[tokio::test]
    async fn a_connection_closed_before_the_answer_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        let stream = connect(&path).await.unwrap().unwrap();
        let error = call(stream, &path, Request::Status).await.unwrap_err();
        assert!(matches!(error, ControlError::NoAnswer { .. }), "{error}");
        assert!(error.to_string().contains("samocode status"), "{error}");
    }

    #[tokio::test]
    async fn a_socket_path_too_long_for_a_socket_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x".repeat(120)).join("control.sock");
        let error = match bind(&path).await {
            Err(error) => error.to_string(),
            Ok(_) => panic!("bound"),
        };
        assert!(
            error.contains("at most 107") && error.contains("SAMOCODE_CONTROL"),
            "{error}"
        );
    }

    /// A daemon that cannot serve (its connection waits in the socket's queue, or it hangs)
    /// does not keep a command waiting for ever.
    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_never_answers_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // Bound, never accepting: the connection is made in the kernel's queue.
        let _listener = UnixListener::bind(&path).unwrap();
        let stream = connect(&path).await.unwrap().unwrap();
        let error = call(stream, &path, Request::Status).await.unwrap_err();
        assert!(matches!(error, ControlError::Silent { .. }), "{error}");
        assert!(
            error.to_string().contains("did not answer within 1m 30s"),
            "{error}"
        );
    }

    fn refused(line: &str) -> String {
        match parse_request(line.as_bytes()) {
            Err(Response::Error { message, code, .. }) => {
                assert_eq!(code, 2, "{message}");
                message
            }
            other => panic!("{line}: {other:?}"),
        }
    }

    /// A budget through the socket is held to the ranges of the flags that give one: a
    /// negative cost blocked the session at once, and a huge raise printed 300 digits.
    #[test]
    fn a_budget_out_of_range_is_refused_as_the_flags_refuse_it() {
        let start = |budget: &str| {
            format!(
                r#"{{"v":1,"cmd":"start","project":"/p/.samocode","session":"s","budget":{budget}}}"#
            )
        };
        let message = refused(&start(r#"{"cost_usd":-3}"#));
        assert!(
            message.contains("cost=\"-3\" is not valid") && message.contains(COST_TEXT),
            "{message}"
        );
        assert!(refused(&start(r#"{"iterations":0}"#)).contains("iterations="));
        assert!(refused(&start(r#"{"time_secs":18446744073709551615}"#)).contains("time="));
        let raise = r#"{"v":1,"cmd":"person","dir":"/s","command":{"verb":"raise_budget","budget":{"cost_usd":1e308}}}"#;
        assert!(refused(raise).contains("cost="));
        assert!(refused(r#"{"v":1,"cmd":"raise_fleet_budget","cost_usd":-1}"#).contains("cost="));
        assert!(
            parse_request(start(r#"{"cost_usd":5,"iterations":30,"time_secs":3600}"#).as_bytes())
                .is_ok()
        );
        assert!(parse_request(start("{}").as_bytes()).is_ok());
    }

    /// A misspelt key was ignored: the session started with no budget at all, and said yes.
    #[test]
    fn a_request_with_a_key_the_daemon_does_not_know_is_refused_by_its_name() {
        let start = |rest: &str| {
            format!(r#"{{"v":1,"cmd":"start","project":"/p/.samocode","session":"s"{rest}}}"#)
        };
        let message = refused(&start(r#","budget":{"cost":5,"iterations":3}"#));
        assert!(message.contains("budget.cost"), "{message}");
        assert!(refused(&start(r#","budget":{"cost":5}"#)).contains("budget.cost"));
        // A budget where the request has none is a key like any other.
        assert!(refused(r#"{"v":1,"cmd":"status","budget":{"cost_usd":5}}"#).contains("budget"));
        let raise = r#"{"v":1,"cmd":"named","session":"s","command":{"verb":"raise_budget","budget":{"cost":5,"iterations":9}}}"#;
        assert!(
            refused(raise).contains("command.budget.cost"),
            "{}",
            refused(raise)
        );
        let none = r#"{"v":1,"cmd":"named","session":"s","command":{"verb":"answer","answers":{"given":[]}}}"#;
        assert!(
            refused(none).contains("gives no answers"),
            "{}",
            refused(none)
        );
        assert!(refused(&start(r#","budgte":{"cost_usd":5}"#)).contains("budgte"));
        let tell = r#"{"v":1,"cmd":"named","session":"s","command":{"verb":"tell","text":"x","nwo":true}}"#;
        assert!(refused(tell).contains("command.nwo"));
        // What the daemon's own clients send, defaults spelt out or left out, is taken.
        assert!(parse_request(start(r#","dive":null,"budget":{}"#).as_bytes()).is_ok());
        let named = r#"{"v":1,"cmd":"named","session":"s","command":{"verb":"tell","text":"x","now":false},"by":null,"park":null}"#;
        assert!(parse_request(named.as_bytes()).is_ok());
    }

    /// A misspelt required field was reported as missing (`missing field \`session\``), leaving
    /// the writer to find which of its keys was meant.
    #[test]
    fn a_misspelt_required_field_is_named_with_the_field_it_misses() {
        let message = refused(r#"{"v":1,"cmd":"start","project":"/p/.samocode","sesion":"s"}"#);
        assert!(message.contains("sesion"), "{message}");
        assert!(message.contains("session"), "{message}");
        let message =
            refused(r#"{"v":1,"cmd":"named","session":"s","command":{"verb":"tell","txet":"x"}}"#);
        assert!(message.contains("command.txet"), "{message}");
        assert!(message.contains("`text`"), "{message}");
        // A field that is simply missing is said to be so.
        let message = refused(r#"{"v":1,"cmd":"start","project":"/p/.samocode"}"#);
        assert!(message.contains("missing field `session`"), "{message}");
    }
}
