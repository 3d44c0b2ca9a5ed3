//! The web dashboard that `samocode supervise` serves: the fleet at a glance, one page per
//! session, and the same actions as the CLI and Telegram. A thin adapter like the bot: it holds
//! no session logic and writes no session file.
//!
//! - every action is one control request ([`crate::control::ask`]) to the supervisor, exactly
//!   what the CLI sends through the socket;
//! - pages read the session folders read-only, through the session and protocol readers;
//! - live updates are server-sent events from one shared [`watcher`] task, which notices
//!   changes by `stat` once a second and fans them out to every open page;
//! - it listens on loopback (`127.0.0.1:7420`) unless told otherwise; another address needs a
//!   token file. A request needs the session cookie that a one-time login token (from
//!   `samocode dashboard`, through the 0600 control socket) sets; every form carries a CSRF
//!   token; session text is escaped, markdown sanitised; a Content-Security-Policy allows only
//!   the one compiled-in script ([`auth`], `server.rs`).
//!
//! The HTTP server and the watcher each run under a small supervising loop that restarts them
//! with backoff if they end or panic; dropping the [`Dashboard`] stops both.
//!
//! Modules: [`auth`] (tokens, cookies, CSRF), [`watcher`] (the change feed), [`view`] (reading a
//! session folder), [`pages`] and [`session_page`] (the HTML), [`timeline`] (the SVG chart),
//! [`markdown`] (sanitised rendering); `server.rs`, `routes.rs` and `live.rs` (HTTP, pages and
//! actions, event streams).

pub mod auth;
mod capped;
mod live;
pub mod markdown;
pub mod pages;
mod routes;
mod server;
pub mod session_page;
pub mod timeline;
pub mod view;
pub mod watcher;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::Response;
use crate::supervisor::SupervisorMsg;
use auth::Auth;
use watcher::Feed;

/// Where the dashboard listens unless told otherwise.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));

/// The shortest secret accepted in a token file.
const MIN_TOKEN: usize = 32;

/// A token file's path as an error shows it: one that is not there may be the secret itself,
/// pasted in the path's place, and is not echoed.
fn shown_path(path: &std::path::Path, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            "named by --http-token-file (SAMOCODE_HTTP_TOKEN_FILE; not shown: it may be the secret itself)"
                .into()
        }
        _ => path.display().to_string(),
    }
}

/// Why the dashboard refused its settings.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A non-loopback address without a token file.
    #[error(
        "the dashboard address {0} is not a loopback address; to listen there, give a secret with --http-token-file FILE (people type it at the login page), or keep 127.0.0.1 and put a TLS proxy in front (see the README)"
    )]
    NotLoopback(SocketAddr),
    /// The token file could not be read.
    #[error(
        "cannot read the dashboard token file {}: {source}",
        shown_path(path, source)
    )]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token file is readable by other users.
    #[error(
        "the dashboard token file {} is readable by other users; make it private with `chmod 600 {word}`",
        .0.display(),
        word = crate::protocol::shell_path(.0)
    )]
    TokenFileOpen(PathBuf),
    /// The token file holds too short a secret.
    #[error(
        "the dashboard token file {path} holds a secret of {len} characters; put one of at least {MIN_TOKEN} in it, for example with `openssl rand -hex 32 > {}`",
        crate::protocol::shell_path(.path)
    )]
    WeakToken { path: PathBuf, len: usize },
}

/// What every request handler shares.
#[derive(Clone)]
pub struct App {
    supervisor: ActorRef<SupervisorMsg>,
    auth: Arc<Auth>,
    feed: Feed,
}

/// What the control socket needs of the dashboard: its address and fresh login tokens.
#[derive(Clone)]
pub struct DashboardHandle(Arc<Listening>);

enum Listening {
    On { url: String, auth: Arc<Auth> },
    Off { reason: String },
}

impl DashboardHandle {
    /// A dashboard that does not run, and why.
    pub fn off(reason: impl Into<String>) -> DashboardHandle {
        DashboardHandle(Arc::new(Listening::Off {
            reason: reason.into(),
        }))
    }

    /// The answer to a `dashboard` control request: the URL and a new one-time login token.
    pub fn login(&self) -> Response {
        match &*self.0 {
            Listening::On { url, auth } => Response::Dashboard {
                url: url.clone(),
                token: auth.issue_login(),
            },
            Listening::Off { reason } => Response::Error {
                message: reason.clone(),
                code: 2,
            },
        }
    }
}

/// The running dashboard; dropping it stops the server and the watcher.
pub struct Dashboard {
    handle: DashboardHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dashboard {
    pub fn handle(&self) -> DashboardHandle {
        self.handle.clone()
    }

    fn off(reason: String) -> Dashboard {
        Dashboard {
            handle: DashboardHandle::off(reason),
            tasks: Vec::new(),
        }
    }

    /// Checks the dashboard's settings (a non-loopback address needs a private token file of
    /// a long enough secret), which the daemon does before it makes anything, so that a
    /// refusal leaves no file. The token file's secret, when one is given.
    pub fn check(config: &Config) -> Result<Option<String>, DashboardError> {
        let Some(addr) = config.http else {
            return Ok(None);
        };
        let standing = config
            .http_token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        if !addr.ip().is_loopback() && standing.is_none() {
            return Err(DashboardError::NotLoopback(addr));
        }
        Ok(standing)
    }

    /// Starts the dashboard the configuration asks for. Refused settings are an error; an
    /// address already in use is not (the daemon runs on without a dashboard, logs why, and
    /// `samocode dashboard` says so), since the daemon's work does not depend on it.
    pub async fn start(
        config: &Config,
        supervisor: ActorRef<SupervisorMsg>,
    ) -> Result<Dashboard, DashboardError> {
        let Some(addr) = config.http else {
            return Ok(Dashboard::off(
                "the dashboard is off (supervise --no-http, or SAMOCODE_HTTP=off)".into(),
            ));
        };
        let standing = Self::check(config)?;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%addr, %error, "the dashboard cannot listen; the daemon runs without it");
                return Ok(Dashboard::off(format!(
                    "the dashboard could not listen on {addr}: {error}; start the daemon with another --http ADDR"
                )));
            }
        };
        let (url, listener) = match listener.local_addr().and_then(|local| {
            let listener = listener.into_std()?;
            Ok((base_url(local), listener))
        }) {
            Ok(found) => found,
            Err(error) => return Ok(Dashboard::off(format!("the dashboard failed: {error}"))),
        };
        let auth = Arc::new(Auth::new(standing));
        let (publisher, feed) = watcher::channel();
        let app = App {
            supervisor: supervisor.clone(),
            auth: auth.clone(),
            feed,
        };
        let watching = tokio::spawn(supervised("watcher", move || {
            watcher::run(supervisor.clone(), publisher.clone(), watcher::TICK)
        }));
        let serving = tokio::spawn(supervised("server", move || {
            let app = app.clone();
            // Each run serves the same socket; a restart does not give the port away.
            let listener = listener
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std);
            async move {
                match listener {
                    Ok(listener) => {
                        let listener = capped::Capped::new(listener);
                        if let Err(error) = axum::serve(listener, server::router(app)).await {
                            tracing::error!(%error, "the dashboard server stopped");
                        }
                    }
                    Err(error) => tracing::error!(%error, "the dashboard cannot use its socket"),
                }
            }
        }));
        // The URL alone: the login token is never logged.
        tracing::info!(%url, "dashboard listening; `samocode dashboard` prints a login link");
        Ok(Dashboard {
            handle: DashboardHandle(Arc::new(Listening::On { url, auth })),
            tasks: vec![watching, serving],
        })
    }
}

/// The address people open: loopback for a wildcard bind, brackets around IPv6.
fn base_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{}", local.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", local.port()),
    }
}

fn read_token_file(path: &std::path::Path) -> Result<String, DashboardError> {
    let io = |source| DashboardError::TokenFile {
        path: path.to_path_buf(),
        source,
    };
    use crate::session::untrusted::{Links, open};
    // A regular file, never waited on (a named pipe would hang the start), and small.
    let file = match open(path, Links::Follow) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(io(std::io::ErrorKind::NotFound.into())),
        Err(error) => return Err(io(error.into_io())),
    };
    let meta = file.metadata().map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(DashboardError::TokenFileOpen(path.to_path_buf()));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 64 << 10), &mut text)
        .map_err(io)?;
    let secret = text.trim().to_string();
    if secret.chars().count() < MIN_TOKEN {
        return Err(DashboardError::WeakToken {
            path: path.to_path_buf(),
            len: secret.chars().count(),
        });
    }
    Ok(secret)
}

/// Runs the task `make` builds, and builds and runs it again after it ends or panics, waiting
/// 1 s, then twice as long each time up to a minute (back to 1 s after a minute of good run).
async fn supervised<F, Fut>(part: &'static str, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Aborts the task it holds when dropped, so that aborting the loop stops the task too.
    struct Owned(JoinHandle<()>);
    impl Drop for Owned {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut task = Owned(tokio::spawn(make()));
        let ended = (&mut task.0).await;
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        match ended {
            Err(error) if error.is_panic() => {
                tracing::error!(part, "a dashboard task panicked; restarting it")
            }
            _ => tracing::warn!(part, "a dashboard task ended; restarting it"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Flags, Sources, resolve};

    fn config(flags: Flags, env: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("HOME".to_string(), dir.path().display().to_string())])
                .collect(),
            cwd: dir.path().to_path_buf(),
        };
        resolve(&flags, &sources)
    }

    #[test]
    fn the_address_comes_from_the_flag_the_environment_or_the_default() {
        assert_eq!(
            config(Flags::default(), &[]).unwrap().http,
            Some(DEFAULT_ADDR)
        );
        let off = Flags {
            http: Some("off".into()),
            ..Flags::default()
        };
        assert_eq!(
            config(off, &[("SAMOCODE_HTTP", "127.0.0.1:9")])
                .unwrap()
                .http,
            None
        );
        let env = config(Flags::default(), &[("SAMOCODE_HTTP", "127.0.0.2:8080")]).unwrap();
        assert_eq!(env.http, Some("127.0.0.2:8080".parse().unwrap()));
        let bad = Flags {
            http: Some("localhost".into()),
            ..Flags::default()
        };
        let error = config(bad, &[]).unwrap_err().to_string();
        assert!(
            error.contains("--http") && error.contains("127.0.0.1:7420"),
            "{error}"
        );
    }

    #[test]
    fn token_files_must_be_private_and_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_token_file(&path),
            Err(DashboardError::WeakToken { len: 5, .. })
        ));
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "k".repeat(40));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_token_file(&path),
            Err(DashboardError::TokenFileOpen(_))
        ));
    }

    #[test]
    fn urls_name_a_reachable_address() {
        assert_eq!(
            base_url("0.0.0.0:7420".parse().unwrap()),
            "http://127.0.0.1:7420"
        );
        assert_eq!(base_url("[::1]:80".parse().unwrap()), "http://[::1]:80");
    }
}
