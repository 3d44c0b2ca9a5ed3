//! A throwaway project: a git repository with one commit, WORKTREES and SESSIONS folders, a
//! `.samocode` file, and `claude` pointing at samocode's scripted agent. Removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_samocode");

pub struct Project {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub sessions: PathBuf,
    pub worktrees: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().unwrap();
        let repo = root.join("repo");
        let sessions = root.join("sessions");
        let worktrees = root.join("worktrees");
        for d in [&repo, &sessions, &worktrees, &root.join("home")] {
            std::fs::create_dir_all(d).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# demo repo\n").unwrap();
        git(&repo, &["add", "."]);
        git(
            &repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "init",
            ],
        );
        std::fs::write(
            root.join(".samocode"),
            "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\n",
        )
        .unwrap();
        let claude = root.join("fake-claude");
        std::fs::write(
            &claude,
            format!("#!/bin/sh\nexec '{BIN}' fake-agent \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec![
            ("CLAUDE_PATH".to_string(), claude.display().to_string()),
            ("HOME".to_string(), root.join("home").display().to_string()),
            ("SAMOCODE_RETRY_DELAY".to_string(), "0.05".to_string()),
            ("SAMOCODE_KILL_GRACE".to_string(), "1s".to_string()),
            (
                "SAMOCODE_FAKE_PIDS".to_string(),
                root.join("left-behind.pids").display().to_string(),
            ),
        ];
        Project {
            _dir: dir,
            root,
            repo,
            sessions,
            worktrees,
            env,
        }
    }

    /// Sets an environment variable for every later command.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.root)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SAMOCODE_FAKE")
            .env_remove("CLAUDE_TIMEOUT")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs samocode to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("samocode runs");
        Run(output)
    }

    /// The one folder of session `name`.
    pub fn session(&self, name: &str) -> Session {
        let matches: Vec<PathBuf> = std::fs::read_dir(&self.sessions)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with(&format!("-{name}"))
            })
            .collect();
        assert_eq!(matches.len(), 1, "one folder for {name}: {matches:?}");
        Session(matches[0].clone())
    }

    /// Pids the scripted agent left behind on purpose.
    pub fn left_behind(&self) -> Vec<i32> {
        std::fs::read_to_string(self.root.join("left-behind.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

pub struct Session(pub PathBuf);

impl Session {
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }
    pub fn state(&self) -> Value {
        serde_json::from_str(&self.read("_state.json")).unwrap()
    }
    pub fn jsonl(&self, file: &str) -> Vec<Value> {
        self.read(file)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}: {l}")))
            .collect()
    }
    pub fn logs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("_logs"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
    pub fn artifacts(&self, kind: &str) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&format!("-{kind}-")) && n.ends_with(".md"))
            .collect()
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_for(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
