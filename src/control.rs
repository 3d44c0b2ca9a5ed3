//! The control socket of `samocode supervise`: one JSON request per connection, one JSON
//! response, each on one line, both carrying the protocol version `v`.
//!
//! The socket lives in the daemon's state directory (or at SAMOCODE_CONTROL), mode 0600 inside a
//! 0700 directory: only the user who runs the daemon can drive it. The server is a task owned
//! by the daemon that turns each request into a [`SupervisorMsg`] and waits for the answer; it
//! holds no session state. [`ask`] is the one way an in-process adapter (the web dashboard)
//! sends the same requests. `dashboard` requests are answered here from the
//! [`DashboardHandle`], without the supervisor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::dashboard::DashboardHandle;
use crate::session::person::PersonCommand;
use crate::supervisor::{OwnedSession, SupervisorMsg};

/// The version of the request and response shapes below.
pub const VERSION: u32 = 1;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Take over a session (new or existing) of the project whose `.samocode` file is given.
    Start {
        project: PathBuf,
        session: String,
        dive: Option<String>,
        task: Option<String>,
    },
    /// A person's command for a session the daemon owns, by folder.
    Person {
        dir: PathBuf,
        command: PersonCommand,
    },
    /// The same, by folder name or short name (the bot knows no paths).
    Named {
        session: String,
        command: PersonCommand,
    },
    /// The sessions the daemon owns.
    Status,
    /// Change the cap on running agents.
    Parallel { max: usize },
    /// The web dashboard's address and a fresh one-time login token (`samocode dashboard`).
    Dashboard,
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
    },
    /// The request failed; `code` is the exit code the CLI should use.
    Error { message: String, code: u8 },
    /// Where the dashboard listens, and a token that logs in once.
    Dashboard { url: String, token: String },
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
    /// The other side spoke something else.
    #[error("control socket {path}: unreadable message: {message}")]
    Protocol { path: PathBuf, message: String },
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

/// Sends one request and reads its response.
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
    stream.write_all(&line).await.map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(io)?;
    let envelope: Envelope<Response> =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(envelope.body)
}

/// Binds the socket with mode 0600 (a stale file from a crashed daemon is replaced: the caller
/// holds the daemon lock, so no live daemon uses it).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until the supervisor stops.
pub async fn serve(
    listener: UnixListener,
    supervisor: ActorRef<SupervisorMsg>,
    dashboard: DashboardHandle,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let supervisor = supervisor.clone();
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, supervisor, dashboard).await {
                tracing::warn!(%error, "control connection failed");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    supervisor: ActorRef<SupervisorMsg>,
    dashboard: DashboardHandle,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Envelope<Request>>(&line) {
        Ok(envelope) if envelope.v == VERSION => match envelope.body {
            Request::Dashboard => dashboard.login(),
            request => ask(&supervisor, request).await,
        },
        Ok(envelope) => Response::Error {
            message: format!(
                "control protocol version {} is not supported (the daemon speaks {VERSION}); use the same samocode binary for both",
                envelope.v
            ),
            code: 2,
        },
        Err(e) => Response::Error {
            message: format!("unreadable request: {e}"),
            code: 2,
        },
    };
    let mut out = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: response,
    })
    .expect("responses serialize");
    out.push(b'\n');
    write.write_all(&out).await
}

/// How long [`ask`] waits for the supervisor. Its handlers do no blocking work, so an answer
/// that takes longer means the daemon is stuck or stopping, and the caller is better told so.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one control request to the supervisor and waits for its answer, at most
/// [`ASK_TIMEOUT`]; every failure comes back as an error response, never a hang.
pub async fn ask(supervisor: &ActorRef<SupervisorMsg>, request: Request) -> Response {
    let result = supervisor
        .call(
            |reply| SupervisorMsg::Control { request, reply },
            Some(ASK_TIMEOUT),
        )
        .await;
    match result {
        Ok(CallResult::Success(response)) => response,
        Ok(CallResult::Timeout) => Response::Error {
            message: format!(
                "the daemon did not answer within {}s",
                ASK_TIMEOUT.as_secs()
            ),
            code: 1,
        },
        _ => Response::Error {
            message: "the daemon is shutting down".into(),
            code: 1,
        },
    }
}
