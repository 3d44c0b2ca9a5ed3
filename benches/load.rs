//! The supervision load run (issue 9): many sessions through both gates on one daemon, with
//! faults injected by the scripted agent into a tenth of the iterations (a crash, a hang past
//! the time limit, a bad signal, a 50 MB flood of stdout, a grandchild that escapes its
//! process group, a usage limit that resets 2 s later), and the daemon killed with SIGKILL at
//! three random moments and started again. It passes only if every session ends done, every
//! attempt log has its `_iterations.jsonl` row, no session ever ran two agents at once, every
//! `_state.json` parses, and no agent process is left; it prints the wall time, the daemon's
//! peak RSS and the counts.
//!
//! `cargo bench --bench load` runs it in full (500 sessions, `--max-parallel 32`, release
//! build); under `cargo test` a small version runs (20 sessions). `LOAD_SESSIONS`,
//! `LOAD_PARALLEL` and `LOAD_SEED` override the size, the cap and the random seed.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_samocode");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let number = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let sessions = number("LOAD_SESSIONS", if full { 500 } else { 20 }) as usize;
    let parallel = number("LOAD_PARALLEL", if full { 32 } else { 8 }) as usize;
    let seed = number(
        "LOAD_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let mut run = Load::new(sessions, parallel, seed);
    match run.go() {
        Ok(()) => println!("load run passed"),
        Err(failure) => {
            eprintln!("load run FAILED: {failure}");
            eprintln!("(the project is kept in {} for a look)", run.root.display());
            std::mem::forget(run);
            std::process::exit(1);
        }
    }
}

struct Load {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sessions: usize,
    parallel: usize,
    rng: u64,
    seed: u64,
}

impl Load {
    fn new(sessions: usize, parallel: usize, seed: u64) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in ["repo", "worktrees", "sessions", "home"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        git(&root.join("repo"), &["init", "-q", "-b", "main"]);
        std::fs::write(root.join("repo/README.md"), "# load\n").unwrap();
        git(&root.join("repo"), &["add", "."]);
        git(
            &root.join("repo"),
            &[
                "-c",
                "user.name=l",
                "-c",
                "user.email=l@l",
                "commit",
                "-qm",
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
        Load {
            _dir: dir,
            root,
            sessions,
            parallel,
            rng: seed | 1,
            seed,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift: enough for choosing moments, and repeatable from the printed seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0
    }

    fn daemon(&self) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["supervise", "--max-parallel", &self.parallel.to_string()])
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("CLAUDE_PATH", self.root.join("fake-claude"))
            .env("SAMOCODE_STATE_DIR", self.root.join("state"))
            .env("CLAUDE_TIMEOUT", "3s")
            .env("SAMOCODE_KILL_GRACE", "1s")
            .env("SAMOCODE_RETRY_DELAY", "0.05")
            .env("SAMOCODE_FAKE_STEPS", "1")
            .env("SAMOCODE_FAKE_CHAOS", format!("0.1:{}", self.seed))
            .env("SAMOCODE_FAKE_RUNNING", self.root.join("running"))
            .env("SAMOCODE_FAKE_PIDS", self.root.join("left-behind.pids"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = self.root.join("state/control.sock");
        let start = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon(child)
    }

    /// One control request; the connection is retried for a few seconds (a daemon just
    /// started may still be binding), and so is the exchange when the connection breaks before
    /// an answer (the daemon was killed by the run meanwhile).
    fn request(&self, request: Value) -> Result<Value, String> {
        let start = Instant::now();
        loop {
            match self.exchange(&request, start) {
                Err(Broken(_)) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(Broken(error)) => return Err(error),
                Ok(answer) => return answer,
            }
        }
    }

    fn exchange(&self, request: &Value, start: Instant) -> Result<Result<Value, String>, Broken> {
        let socket = self.root.join("state/control.sock");
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(stream) => break stream,
                Err(error) if start.elapsed() > Duration::from_secs(10) => {
                    let log =
                        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    return Ok(Err(format!(
                        "the daemon does not answer ({error}); its log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let broken = |e: std::io::Error| Broken(e.to_string());
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(broken)?;
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(broken)?;
        let mut answer = String::new();
        let read = BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(broken)?;
        if read == 0 {
            return Err(Broken("the connection closed without an answer".into()));
        }
        Ok(Ok(serde_json::from_str(&answer).unwrap_or(Value::Null)))
    }

    fn go(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let mut daemon = self.daemon();
        let mut peak_rss = 0u64;
        let project = self.root.join(".samocode");
        for i in 0..self.sessions {
            let answer = self.request(json!({
                "v": 1, "cmd": "start", "project": project, "session": format!("s{i:03}"),
                "dive": "d", "task": "t"
            }))?;
            if answer["reply"] != "done" {
                return Err(format!("start s{i:03}: {answer}"));
            }
        }
        // Iterations of a session with one implementation step: investigation, requirements
        // twice (asking, then answered), planning, implementation, testing, quality, done.
        let expected = (self.sessions * 8) as f64;
        let mut kills: Vec<f64> = (0..3).map(|_| 0.1 + 0.7 * self.random()).collect();
        kills.sort_by(f64::total_cmp);
        let mut killed = 0;
        let mut last_start = Instant::now();
        let mut answered: HashMap<PathBuf, u64> = HashMap::new();
        let deadline = Duration::from_secs(if self.sessions > 100 { 1800 } else { 300 });
        loop {
            let states = self.states();
            let done = states
                .values()
                .filter(|s| s["status"]["state"] == "done")
                .count();
            let progress = states
                .values()
                .map(|s| s["iteration"].as_u64().unwrap_or(0))
                .sum::<u64>() as f64
                / expected;
            if done == self.sessions {
                break;
            }
            if started.elapsed() > deadline {
                return Err(format!(
                    "not all done within {deadline:?}: {done} of {} done",
                    self.sessions
                ));
            }
            // Each daemon lives at least a second: three kills, three separate moments.
            if killed < kills.len()
                && progress >= kills[killed]
                && last_start.elapsed() >= Duration::from_secs(1)
            {
                peak_rss = peak_rss.max(rss_peak(daemon.0.id()));
                daemon.0.kill().unwrap();
                daemon.0.wait().unwrap();
                killed += 1;
                println!(
                    "  kill -9 of the daemon at {:.0}% of the iterations, {:.1}s in",
                    progress * 100.0,
                    started.elapsed().as_secs_f64()
                );
                daemon = self.daemon();
                last_start = Instant::now();
                continue;
            }
            for (dir, state) in &states {
                let iteration = state["iteration"].as_u64().unwrap_or(0);
                let command = match state["status"]["for"].as_str() {
                    Some("qa_answers") => json!({"verb": "answer", "answers": "suggestions"}),
                    Some("plan_approval") => json!({"verb": "approve"}),
                    _ => continue,
                };
                if answered.get(dir) == Some(&iteration) {
                    continue;
                }
                let answer =
                    self.request(json!({"v": 1, "cmd": "person", "dir": dir, "command": command}))?;
                if answer["reply"] == "done" {
                    answered.insert(dir.clone(), iteration);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let wall = started.elapsed();
        peak_rss = peak_rss.max(rss_peak(daemon.0.id()));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let code = daemon.0.wait().unwrap().code();
        if code != Some(0) {
            return Err(format!("the daemon ended with {code:?} on SIGTERM"));
        }
        self.check(wall, peak_rss, killed)
    }

    /// Every session's `_state.json`, by folder (an unreadable one is an error later).
    fn states(&self) -> BTreeMap<PathBuf, Value> {
        let mut states = BTreeMap::new();
        for entry in std::fs::read_dir(self.root.join("sessions")).unwrap() {
            let dir = entry.unwrap().path();
            if let Ok(text) = std::fs::read_to_string(dir.join("_state.json"))
                && let Ok(state) = serde_json::from_str(&text)
            {
                states.insert(dir, state);
            }
        }
        states
    }

    fn check(&self, wall: Duration, peak_rss: u64, kills: usize) -> Result<(), String> {
        let mut failures = Vec::new();
        let mut rows_total = 0;
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut faults: BTreeMap<String, usize> = BTreeMap::new();
        let mut iterations = 0;
        let dirs: Vec<PathBuf> = std::fs::read_dir(self.root.join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if dirs.len() != self.sessions {
            failures.push(format!(
                "{} session folders for {} sessions",
                dirs.len(),
                self.sessions
            ));
        }
        for dir in &dirs {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let state: Value = match std::fs::read_to_string(dir.join("_state.json"))
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(state) => state,
                Err(error) => {
                    failures.push(format!("{name}: _state.json does not parse: {error}"));
                    continue;
                }
            };
            if state["status"]["state"] != "done" {
                failures.push(format!("{name} ended {}", state["status"]));
            }
            iterations += state["iteration"].as_u64().unwrap_or(0);
            let rows: Vec<Value> = std::fs::read_to_string(dir.join("_iterations.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                .collect();
            let logs = std::fs::read_dir(dir.join("_logs"))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                        .count()
                })
                .unwrap_or(0);
            if rows.len() != logs {
                failures.push(format!(
                    "{name}: {} rows for {logs} attempt logs",
                    rows.len()
                ));
            }
            rows_total += rows.len();
            for row in &rows {
                *outcomes
                    .entry(row["outcome"].as_str().unwrap_or("unreadable").to_string())
                    .or_default() += 1;
            }
            for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(".chaos-") {
                    let fault = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let kind = fault.split(':').next().unwrap_or("").to_string();
                    *faults.entry(kind).or_default() += 1;
                }
            }
        }
        let running = std::fs::read_to_string(self.root.join("running.log")).unwrap_or_default();
        let mut most = 0;
        for line in running.lines() {
            let mut fields = line.split_whitespace();
            let all: usize = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            let same: usize = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            most = most.max(all);
            if same != 1 {
                failures.push(format!("two agents of one session at once: {line}"));
            }
        }
        let left = self.left_processes();
        if !left.is_empty() {
            failures.push(format!("{} agent processes left: {left:?}", left.len()));
        }

        println!(
            "load run: {} sessions, --max-parallel {}, seed {}",
            self.sessions, self.parallel, self.seed
        );
        println!("  wall time:            {:.1} s", wall.as_secs_f64());
        println!(
            "  daemon peak RSS:      {:.1} MB (the largest of its {} runs)",
            peak_rss as f64 / 1024.0,
            kills + 1
        );
        println!("  daemon kill -9s:      {kills}");
        println!("  iterations:           {iterations}");
        println!("  attempts (rows):      {rows_total}");
        println!("  attempt outcomes:     {outcomes:?}");
        println!("  faults injected:      {faults:?}");
        println!("  agents at once, most: {most} (cap {})", self.parallel);
        println!("  agent starts:         {}", running.lines().count());
        println!("  processes left:       {}", left.len());
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n  "))
        }
    }

    /// Live processes carrying the marker of one of this run's sessions: a process counts while
    /// any of its threads runs with the marker (one whose main thread has exited is a zombie
    /// leader, whose own `/proc/PID/environ` cannot be read, but whose threads' can).
    fn left_processes(&self) -> Vec<i32> {
        let prefix = format!("SAMOCODE_SESSION={}", self.root.join("sessions").display());
        let marked_and_running = |task: &Path| {
            let running = std::fs::read_to_string(task.join("stat")).is_ok_and(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            });
            running
                && std::fs::read(task.join("environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|v| v.starts_with(prefix.as_bytes()))
                })
        };
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                    tasks
                        .filter_map(Result::ok)
                        .any(|task| marked_and_running(&task.path()))
                })
            })
            .collect()
    }
}

/// A daemon process, killed if the run ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The peak resident set of a live process, in KiB (VmHWM).
fn rss_peak(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A control connection that broke before its answer came.
struct Broken(String);
