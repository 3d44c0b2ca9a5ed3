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
    /// Variables every command runs without, whatever the test's own environment holds.
    unset: Vec<String>,
}

impl Project {
    pub fn new() -> Project {
        Project::made(None)
    }

    /// A project whose folder (the one holding `.samocode`) has the name `folder`.
    #[allow(dead_code, reason = "the browser tests use it; e2e does not")]
    pub fn in_folder(folder: &str) -> Project {
        Project::made(Some(folder))
    }

    fn made(folder: Option<&str>) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut root = dir.path().canonicalize().unwrap();
        if let Some(folder) = folder {
            root.push(folder);
        }
        let repo = root.join("repo");
        let sessions = root.join("sessions");
        let worktrees = root.join("worktrees");
        for d in [&repo, &sessions, &worktrees, &root.join("home")] {
            std::fs::create_dir_all(d).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "# demo repo\n").unwrap();
        commit_all(&repo, "init");
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
            // Daemons of tests running side by side would all reach for the dashboard's
            // default port; the browser tests ask for one with `--http 127.0.0.1:0`.
            ("SAMOCODE_HTTP".to_string(), "off".to_string()),
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
            unset: Vec::new(),
        }
    }

    /// Sets an environment variable for every later command.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.unset.retain(|k| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Commits everything in the repository (a file a test wrote there) on its branch.
    #[allow(dead_code, reason = "the real CLI tests use it; e2e does not")]
    pub fn commit_all(&self, message: &str) {
        commit_all(&self.repo, message);
    }

    /// `status --json` run outside any project: every session the daemon owns.
    pub fn owned_status(&self) -> Vec<Value> {
        let out = self
            .command(&["status", "--json"])
            .current_dir("/")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Runs every later command without the environment variable `key`.
    #[allow(dead_code, reason = "the real CLI tests use it; e2e does not")]
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.unset.push(key.to_string());
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
        for k in &self.unset {
            cmd.env_remove(k);
        }
        cmd
    }

    /// [`Self::command`], run by `sh` after `ulimit ULIMIT` (e.g. `-S -n 64`).
    pub fn command_under(&self, ulimit: &str, args: &[&str]) -> Command {
        let direct = self.command(args);
        let script = format!("ulimit {ulimit} && exec \"$0\" \"$@\"");
        let mut shell = Command::new("sh");
        shell
            .args(["-c", &script, BIN])
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null());
        for (k, v) in direct.get_envs() {
            match v {
                Some(v) => shell.env(k, v),
                None => shell.env_remove(k),
            };
        }
        shell
    }

    /// Starts samocode in the background, its output discarded.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("samocode starts")
    }

    /// Has the scripted agents mark themselves running in a folder (`SAMOCODE_FAKE_RUNNING`),
    /// for [`running_agents`]; returns it.
    pub fn track_agents(&mut self) -> PathBuf {
        let running = self.root.join("running");
        self.env("SAMOCODE_FAKE_RUNNING", &running.display().to_string());
        running
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
    /// The contexts the attempts were given (`_logs/contexts.md`): (the attempt's log, the
    /// context), oldest first.
    pub fn contexts(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path("_logs/contexts.md")).unwrap_or_default();
        let mut contexts: Vec<(String, String)> = Vec::new();
        for line in text.split_inclusive('\n') {
            let mark = line
                .strip_prefix("===== ")
                .and_then(|l| l.trim_end().strip_suffix(" ====="));
            match (mark, contexts.last_mut()) {
                (Some(log), _) => contexts.push((log.to_string(), String::new())),
                (None, Some((_, context))) => context.push_str(line),
                (None, None) => {}
            }
        }
        contexts
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

/// Commits everything in the repository `repo`, as a test's own identity.
fn commit_all(repo: &Path, message: &str) {
    git(repo, &["add", "."]);
    git(
        repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
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

/// Whether any thread of `pid` runs: a process whose main thread has exited (a zombie leader)
/// is alive while its other threads are.
pub fn alive(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        state_in(&task.path().join("stat")).is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The state letter (`R`, `S`, `Z`...) a `/proc/.../stat` file gives, if it can be read.
pub fn state_in(stat: &Path) -> Option<String> {
    let stat = std::fs::read_to_string(stat).ok()?;
    let rest = stat.rsplit(')').next()?;
    rest.split_whitespace().next().map(str::to_string)
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_for(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `samocode supervise` process for a project, stopped (SIGKILL) when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub socket: PathBuf,
}

impl Project {
    /// The daemon's state directory (SAMOCODE_STATE_DIR, set for every command).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Starts the daemon and waits until its control socket answers.
    pub fn daemon(&mut self, extra: &[&str]) -> Daemon {
        self.daemon_under("", extra)
    }

    /// [`Self::daemon`], started by `sh` after `ulimit ULIMIT` (e.g. `-Sn 64`) when given.
    pub fn daemon_under(&mut self, ulimit: &str, extra: &[&str]) -> Daemon {
        let state = self.state_dir();
        self.env("SAMOCODE_STATE_DIR", &state.display().to_string());
        let mut args = vec!["supervise"];
        args.extend_from_slice(extra);
        let mut command = if ulimit.is_empty() {
            self.command(&args)
        } else {
            self.command_under(ulimit, &args)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("daemon.log"))
            .unwrap();
        let mut child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the daemon starts");
        let socket = state.join("control.sock");
        wait_for(
            Duration::from_secs(20),
            "the daemon's control socket",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the daemon exited ({status}): {}", self.daemon_log());
                }
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            },
        );
        Daemon { child, socket }
    }

    /// What the daemons of [`Self::daemon`] wrote to their standard output and error.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// `status --json` through whatever answers (daemon or files), parsed.
    pub fn status(&self) -> Vec<Value> {
        let run = self.run(&["status", "--json"]);
        run.expect(0);
        serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout()))
    }

    /// Drives a new session `name` with `run` through its questions (all suggestions taken) to
    /// its plan, where it waits for approval.
    pub fn to_the_plan_gate(&self, name: &str) -> Session {
        self.run(&["run", "--session", name, "--dive", "d", "--task", "t"])
            .expect(10);
        self.run(&["answer", name, "--accept-suggestions"])
            .expect(0);
        self.run(&["run", "--session", name]).expect(10);
        self.session(name)
    }

    /// [`Self::to_the_plan_gate`], and approves the plan: its next `run` implements.
    pub fn through_both_gates(&self, name: &str) {
        self.to_the_plan_gate(name);
        self.run(&["approve", name]).expect(0);
    }

    /// Answers the questions (with their suggestions) and approves the plan of every session
    /// in `rows` (from [`Self::status`]) that waits for a person.
    pub fn pass_gates(&self, rows: &[Value]) {
        for row in rows {
            let name = row["name"].as_str().unwrap();
            match row["waiting_for"].as_str() {
                Some("qa_answers") => {
                    let _ = self.run(&["answer", name, "--accept-suggestions"]);
                }
                Some("plan_approval") => {
                    let _ = self.run(&["approve", name]);
                }
                _ => {}
            }
        }
    }

    /// Plays the person: answers and approves every waiting session until all are done.
    pub fn drive_to_done(&self, sessions: usize, deadline: Duration) {
        let start = Instant::now();
        loop {
            let rows = self.status();
            let done = rows.iter().filter(|r| r["state"] == "done").count();
            if done == sessions && rows.len() == sessions {
                return;
            }
            self.pass_gates(&rows);
            for row in &rows {
                let name = row["name"].as_str().unwrap();
                assert!(
                    !matches!(row["state"].as_str(), Some("blocked" | "failed")),
                    "{name} ended {}: {}\n{}",
                    row["state"],
                    row["blocked_reason"],
                    std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < deadline,
                "not all done in time: {rows:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What `SAMOCODE_FAKE_RUNNING` recorded: (agents running, of them this session's) per start.
    pub fn concurrency(&self) -> Vec<(usize, usize)> {
        std::fs::read_to_string(self.root.join("running.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace();
                (
                    f.next().unwrap().parse().unwrap(),
                    f.next().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Daemon {
    /// Its process id.
    #[allow(dead_code, reason = "e2e uses it; the browser tests do not")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let code = self.child.wait().unwrap().code();
        std::mem::forget(self);
        code
    }

    /// SIGKILL, as a crash would.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live processes whose environment marks them as agents of the session in `dir`.
pub fn agents_of(dir: &Path) -> Vec<i32> {
    let marker = format!("SAMOCODE_SESSION={}", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                && alive(*pid)
        })
        .collect()
}

/// The pids of the scripted agents running now (from `SAMOCODE_FAKE_RUNNING` presence files).
pub fn running_agents(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .rsplit_once('.')
                        .and_then(|(_, p)| p.parse().ok())
                })
                .filter(|pid| alive(*pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// libfaketime's library, which Debian's `faketime` package installs (.ci/run does).
pub fn faketime_library() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|lib| lib.exists())
        .expect("libfaketime is installed (.ci/run installs Debian's faketime package)")
}

/// Puts a `git` of the test's own first on the project's PATH, in folder `name`: `script`
/// gets the real git's path and gives the script's text.
pub fn git_wrapper(project: &mut Project, name: &str, script: impl FnOnce(&str) -> String) {
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = project.root.join(name);
    std::fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("git");
    std::fs::write(&wrapper, script(real.trim())).unwrap();
    std::fs::set_permissions(
        &wrapper,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    project.env("PATH", &path);
}

/// A `git` on PATH whose `worktree add` of branch `held` waits until `gate` exists (a slow
/// checkout: a filter of the repository's fetching large files), touching `held` first.
pub fn holding_git(project: &mut Project, gate: &std::path::Path, held: &std::path::Path) {
    git_wrapper(project, "slow-git", |real| {
        format!(
            "#!/bin/sh\nnext=; b=\nfor a in \"$@\"; do\n  [ \"$next\" = b ] && b=$a\n  next=\n  [ \"$a\" = -b ] && next=b\ndone\nif [ \"$b\" = held ]; then\n  : > '{held}'\n  i=0; while [ ! -e '{gate}' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\nfi\nexec {real} \"$@\"\n",
            held = held.display(),
            gate = gate.display(),
        )
    });
}
