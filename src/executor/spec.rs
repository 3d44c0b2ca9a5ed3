//! What travels to a remote worker for one attempt: the [`AttemptSpec`] in wire form.
//!
//! A [`RemoteSpec`] holds what a machine without the session folder needs to run the
//! attempt: the provider's arguments and the context, the names of the environment variables
//! the agent gets (never their values: the worker takes the values from its own environment,
//! or from a Kubernetes Secret, so a secret never travels in a spec), the repository to fetch
//! with the base commit and the ref to push the agent's commits to, the session folder's
//! files the agent reads, the limits and the resources. The daemon's paths travel too, so that
//! the worker can point the context and the arguments at its own copies ([`RemoteSpec::rewrite`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::git_remote::GitRemote;
use crate::agent::AttemptSpec;
use crate::config::Provider;

/// The version of the wire format; a worker refuses a spec of another.
pub const WIRE_VERSION: u32 = 1;

/// The most bytes of one session file sent with a spec or returned in a result.
pub const FILE_LIMIT: u64 = crate::session::store::TEXT_LIMIT;
/// The most bytes of session files sent or returned for one attempt, all together.
pub const FILES_LIMIT: u64 = 16 << 20;

/// Files of the session folder that only the daemon writes: never sent, never taken back.
pub fn daemon_owned(path: &str) -> bool {
    use crate::session::store::{HISTORY, ITERATIONS, LOCK, LOGS, SESSION_LOG, STATE};
    let first = path.split('/').next().unwrap_or(path);
    [STATE, HISTORY, ITERATIONS, SESSION_LOG, LOCK, LOGS].contains(&first)
        || first.starts_with(".tmp-")
}

/// One file of the session folder, by its path relative to the folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    pub path: String,
    pub text: String,
}

/// Where the agent's code comes from and where its commits go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSpec {
    /// A URL (or path) both the daemon and the workers reach.
    pub url: String,
    /// The ref the daemon pushed the base commit to, which the worker fetches.
    pub base_ref: String,
    /// The commit the attempt starts from.
    pub base_commit: String,
    /// Where the worker pushes the agent's commits: `refs/samocode/<session>/<attempt>`.
    pub result_ref: String,
}

/// CPU and memory an engine may reserve for one attempt (Kubernetes requests and limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// One attempt, as a worker receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteSpec {
    pub v: u32,
    /// Unique among every attempt of every session ([`attempt_key`]): the engine's id for it.
    pub key: String,
    /// The session folder's name.
    pub session: String,
    /// The attempt within the session (its log, relative to the session folder).
    pub attempt_id: String,
    /// Which run of this attempt this is: 1, then one more for each delivery to another
    /// worker. A result of an older epoch than the newest one started is stale.
    pub epoch: u32,
    pub provider: Provider,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The context given to the agent (written to the context file of the session copy).
    pub context: String,
    /// The variables the agent gets, by name only.
    pub env: Vec<String>,
    /// The session folder on the daemon's machine.
    pub session_dir: PathBuf,
    /// The agent's working directory on the daemon's machine.
    pub workdir: PathBuf,
    /// The context file, relative to the session folder.
    pub context_file: String,
    pub repository: RepoSpec,
    #[serde(with = "millis")]
    pub timeout: Duration,
    #[serde(with = "millis")]
    pub kill_grace: Duration,
    /// Its publishing plus its time limit and grace. Kept on the wire for runners of earlier
    /// builds; a runner now counts the limit from its own start (a spec may wait in a queue).
    pub deadline: Timestamp,
    #[serde(default)]
    pub resources: Resources,
    /// The session folder's files the agent reads and may change.
    pub files: Vec<SessionFile>,
}

/// Why a spec could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("cannot read the attempt spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spec is not JSON of this version's shape.
    #[error("{path} is not an attempt spec of wire version {WIRE_VERSION}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The session folder's files are too large to travel.
    #[error(
        "the session folder's files take {bytes} bytes, more than the {FILES_LIMIT} an attempt may carry to a worker; move large files out of the session folder"
    )]
    TooLarge { bytes: u64 },
    /// A session file could not be read.
    #[error("cannot read {path} to send it to a worker: {message}")]
    File { path: PathBuf, message: String },
}

impl RemoteSpec {
    /// Builds the wire form of `spec`, reading the session folder's files.
    pub fn of(
        spec: &AttemptSpec,
        repository: RepoSpec,
        context: String,
        resources: Resources,
    ) -> Result<RemoteSpec, SpecError> {
        let session = folder_name(&spec.session_dir);
        let context_file = spec
            .files
            .context
            .strip_prefix(&spec.session_dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{}/context.md", crate::session::store::LOGS));
        let deadline = Timestamp::now()
            .checked_add(spec.timeout + spec.kill_grace)
            .unwrap_or(Timestamp::MAX);
        Ok(RemoteSpec {
            v: WIRE_VERSION,
            key: attempt_key(&spec.session_dir, &spec.attempt_id),
            session,
            attempt_id: spec.attempt_id.clone(),
            epoch: 1,
            provider: spec.command.provider,
            args: spec.command.args.clone(),
            stdin: spec.command.stdin.clone(),
            context,
            env: spec
                .command
                .env
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            session_dir: spec.session_dir.clone(),
            workdir: spec.command.workdir.clone(),
            context_file,
            repository,
            timeout: spec.timeout,
            kill_grace: spec.kill_grace,
            deadline,
            resources,
            files: snapshot(&spec.session_dir)?,
        })
    }

    /// Reads a spec file (`attempt-run --spec FILE`).
    pub fn read(path: &Path) -> Result<RemoteSpec, SpecError> {
        // A regular file of a sane size, never waited on: a named pipe hung `attempt-run`
        // beyond a signal's reach, and `/dev/zero` was read until memory ran out.
        let read = |source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = crate::session::untrusted::read_text(
            path,
            64 << 20,
            crate::session::untrusted::Links::Follow,
        )
        .map_err(|e| read(e.into_io()))?
        .ok_or_else(|| read(std::io::ErrorKind::NotFound.into()))?;
        let spec: RemoteSpec = serde_json::from_str(&text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if spec.v != WIRE_VERSION {
            return Err(SpecError::Parse {
                path: path.to_path_buf(),
                message: format!("it is of version {}", spec.v),
            });
        }
        Ok(spec)
    }

    /// `text` with the daemon's session folder and working directory replaced by this
    /// machine's copies (the longer path first, so that one inside the other is kept whole).
    pub fn rewrite(&self, text: &str, session_dir: &Path, workdir: &Path) -> String {
        let mut pairs = [
            (self.session_dir.display().to_string(), session_dir),
            (self.workdir.display().to_string(), workdir),
        ];
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut out = text.to_string();
        for (from, to) in pairs {
            if !from.is_empty() {
                out = out.replace(&from, &to.display().to_string());
            }
        }
        out
    }

    /// The stem of the attempt's log (`11-24-195400-001-investigation-a1`).
    pub fn stem(&self) -> &str {
        stem(&self.attempt_id)
    }
}

fn stem(attempt_id: &str) -> &str {
    let name = attempt_id.rsplit('/').next().unwrap_or(attempt_id);
    name.strip_suffix(".jsonl").unwrap_or(name)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The wire spec of a new attempt: the base commit pushed where the workers fetch it.
pub async fn prepare(spec: &AttemptSpec) -> std::io::Result<RemoteSpec> {
    let workdir = &spec.command.workdir;
    let base = git(workdir, &["rev-parse", "HEAD"]).await?;
    let shared = match git(workdir, &["config", "--get", "remote.samocode.url"]).await {
        Ok(url) if !url.is_empty() => Some(url),
        _ => None,
    };
    let url = match &shared {
        Some(url) => url.clone(),
        None => main_repository(workdir).await?,
    };
    let session = spec
        .session_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = spec
        .attempt_id
        .rsplit('/')
        .next()
        .unwrap_or(&spec.attempt_id)
        .trim_end_matches(".jsonl")
        .to_string();
    let base_ref = format!("refs/samocode/{session}/base");
    if shared.is_some() {
        let refspec = format!("HEAD:{base_ref}");
        let remote = GitRemote::of(&url);
        let push = ["push", "-q", "--force", "--", &remote.url, &refspec];
        git_to(workdir, &push, Some(&remote)).await?;
    } else {
        // The worktree shares the main repository's refs and objects: the ref is written in
        // place. (A push into it would run receive-pack there, which fails while another
        // session's worktree is being added.)
        git(workdir, &["update-ref", &base_ref, &base]).await?;
    }
    let context = spec.context.clone();
    // The spec is kept where the engine keeps it (a NATS stream, a ConfigMap): a user and
    // password in the remote's URL stay on this machine, and workers use git credentials of
    // their own.
    let sent = GitRemote::of(&url).url;
    if sent != url {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(remote = %sent, "the samocode remote's URL holds a user and password: workers are sent the URL without them, and fetch and push with git credentials of their own (an http.extraHeader in their environment, see README)");
        });
    }
    RemoteSpec::of(
        spec,
        RepoSpec {
            url: sent,
            base_ref,
            base_commit: base,
            result_ref: format!("refs/samocode/{session}/{stem}"),
        },
        context,
        Resources::default(),
    )
    .map_err(std::io::Error::other)
}

/// The repository a worktree belongs to (where workers fetch from when no `samocode` remote
/// names a shared server).
async fn main_repository(workdir: &Path) -> std::io::Result<String> {
    let common = git(
        workdir,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .await?;
    let common = Path::new(&common);
    Ok(match common.file_name() {
        Some(name) if name == ".git" => common.parent().unwrap_or(common),
        _ => common,
    }
    .display()
    .to_string())
}

async fn git(dir: &Path, args: &[&str]) -> std::io::Result<String> {
    git_to(dir, args, None).await
}

/// git in `dir`, with the credentials of the `remote` it talks to.
async fn git_to(dir: &Path, args: &[&str], remote: Option<&GitRemote>) -> std::io::Result<String> {
    super::git_remote::run_git(dir, args, remote)
        .await
        .map_err(|said| {
            std::io::Error::other(format!(
                "git {} in {}: {said}",
                args.join(" "),
                dir.display()
            ))
        })
}

/// The engine's id of an attempt: a short hash of the session folder's path (two projects may
/// have sessions of the same name) and the attempt log's stem, in the letters a NATS subject
/// token and a Kubernetes object name both take (`3f2a9c01-11-24-195400-001-testing-a1`).
pub fn attempt_key(session_dir: &Path, attempt_id: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: stable across builds and platforms, unlike std's hasher, so a restarted (or
    // upgraded) daemon computes the same key for the attempt its predecessor started.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in session_dir.as_os_str().as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let stem: String = stem(attempt_id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{hash:08x}-{stem}")
}

/// The session folder's files the agent reads, the daemon's own left out: every regular file,
/// in subfolders too, read without following links, at most [`FILE_LIMIT`] each (UTF-8 text:
/// the agent's notebook, questions and artifacts) and [`FILES_LIMIT`] together.
pub fn snapshot(session_dir: &Path) -> Result<Vec<SessionFile>, SpecError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for path in walk(session_dir) {
        let relative = path
            .strip_prefix(session_dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if relative.is_empty() || daemon_owned(&relative) {
            continue;
        }
        let text = match crate::session::untrusted::read_text(
            &path,
            FILE_LIMIT,
            crate::session::untrusted::Links::Refuse,
        ) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            // A file the agent made unreadable (a pipe, a link, not UTF-8) stays behind.
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "session file not sent to the worker");
                continue;
            }
        };
        total += text.len() as u64;
        if total > FILES_LIMIT {
            return Err(SpecError::TooLarge { bytes: total });
        }
        files.push(SessionFile {
            path: relative,
            text,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The regular files under `dir`, depth first, never through a link.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => found.push(entry.path()),
                _ => {}
            }
        }
    }
    found
}

/// Durations as whole milliseconds in the wire format.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_subject_tokens_and_object_names() {
        let key = attempt_key(
            Path::new("/p/sessions/26-11-24-a.b"),
            "_logs/11-24-195400-001-implementation-a1-2.jsonl",
        );
        assert_eq!(
            key,
            attempt_key(
                Path::new("/p/sessions/26-11-24-a.b"),
                "_logs/11-24-195400-001-implementation-a1-2.jsonl"
            )
        );
        assert!(
            key.ends_with("-11-24-195400-001-implementation-a1-2"),
            "{key}"
        );
        assert!(key.len() + "samocode-".len() <= 63, "a Job name: {key}");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let other = attempt_key(
            Path::new("/q/sessions/26-11-24-a.b"),
            "_logs/11-24-195400-001-implementation-a1-2.jsonl",
        );
        assert_ne!(key, other, "another project's session of the same name");
    }

    #[test]
    fn paths_are_rewritten_longest_first() {
        let spec = RemoteSpec {
            v: 1,
            key: "k".into(),
            session: "s".into(),
            attempt_id: "_logs/a.jsonl".into(),
            epoch: 1,
            provider: Provider::Claude,
            args: vec![],
            stdin: None,
            context: String::new(),
            env: vec![],
            session_dir: "/p/repo/sessions/s".into(),
            workdir: "/p/repo".into(),
            context_file: "_logs/a.context.md".into(),
            repository: RepoSpec {
                url: "/p/repo".into(),
                base_ref: "refs/samocode/s/base".into(),
                base_commit: "0".repeat(40),
                result_ref: "refs/samocode/s/a".into(),
            },
            timeout: Duration::from_secs(1),
            kill_grace: Duration::from_secs(1),
            deadline: Timestamp::now(),
            resources: Resources::default(),
            files: vec![],
        };
        let text = "Session path: /p/repo/sessions/s\nWorking directory: /p/repo\n";
        assert_eq!(
            spec.rewrite(text, Path::new("/w/session/s"), Path::new("/w/repo")),
            "Session path: /w/session/s\nWorking directory: /w/repo\n"
        );
    }

    #[test]
    fn the_daemons_files_never_travel() {
        for own in [
            "_state.json",
            "_iterations.jsonl",
            "_signal_history.jsonl",
            "session.log",
            "_worker.lock",
            "_logs/x.jsonl",
            ".tmp-123",
        ] {
            assert!(daemon_owned(own), "{own}");
        }
        for agent in [
            "_overview.md",
            "_qa.md",
            "_signal.json",
            "11-24-10:00-plan-x.md",
        ] {
            assert!(!daemon_owned(agent), "{agent}");
        }
    }
}
