//! The performance harness (issue 13): what samocode adds on top of the agents it runs,
//! measured against the floor of running the same minimal agent (`samocode-bench-agent`)
//! without it, side by side in one run. It prints its figures; `benches/README.md` keeps the
//! latest ones beside the targets.
//!
//! `cargo bench --bench perf -- MODE` with MODE one of:
//! - `overhead [N]`: one session looping in implementation for N iterations (200) under
//!   `samocode run`, against spawning the agent N times in a bare loop, the two in turns;
//! - `scale [SESSIONS] [PARALLEL] [ITERATIONS]`: SESSIONS (1000) sessions of ITERATIONS (5)
//!   1-second iterations on one daemon at `--max-parallel PARALLEL` (64): iterations per
//!   second against the ideal, the daemon's peak RSS, its CPU per iteration against its
//!   floor (the session store's calls and the spawns in one thread, [`floor`]), and
//!   `samocode status` latency;
//! - `parked [SESSIONS]`: SESSIONS (10000) sessions parked at the plan gate: a daemon's RSS, and
//!   how long a restart takes to resume them;
//! - `ingest [MB]`: an agent printing MB (500) of stream-json: the daemon's CPU seconds per 100
//!   MB and peak memory;
//! - `latency [AGENTS]`: from an agent's exit to the next agent's spawn, and from `approve` to
//!   the next spawn, p50 and p99, idle and with AGENTS (256) agents running;
//! - `quick`: small versions of overhead, scale and ingestion, as ratios to their floors,
//!   checked against `benches/baseline.json` (fails when one is twice as bad): the regression
//!   check `.ci/run` runs. `quick --record` writes the baseline;
//! - `pairs BUILD_A BUILD_B [ROUNDS]`: two builds of samocode in ROUNDS (40) alternating pairs
//!   of `samocode run`, for differences of a few percent.
//!
//! Every mode first prints what making one file costs in its project (the disk's state; see
//! benches/README.md, "The disk").
//!
//! Under `cargo test` (no `--bench`) a tiny overhead run checks that the harness still works.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use samocode::protocol::{Phase, RunState, SessionState, WaitFor};
use samocode::session::SessionStore;
use serde_json::{Value, json};

const SAMOCODE: &str = env!("CARGO_BIN_EXE_samocode");
const AGENT: &str = env!("CARGO_BIN_EXE_samocode-bench-agent");

fn main() {
    // Deletes the projects when `main` returns or a measurement panics.
    let _spent = Spent;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let bench = std::env::args().any(|a| a == "--bench");
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    if !bench {
        // `cargo test`: the harness still runs.
        let figures = overhead(20);
        assert!(figures.samocode_ms > 0.0 && figures.floor_ms > 0.0);
        return;
    }
    match args.first().map(String::as_str) {
        Some("overhead") => {
            overhead(number(1, 200) as usize);
        }
        Some("scale") => {
            let iterations = number(3, 5).max(3);
            scale(
                number(1, 1000) as usize,
                number(2, 64) as usize,
                iterations,
                1000,
            );
        }
        Some("parked") => parked(number(1, 10_000) as usize),
        Some("ingest") => {
            ingest(number(1, 500));
        }
        Some("latency") => latency(number(1, 256) as usize),
        Some("quick") => quick(args.iter().any(|a| a == "--record")),
        Some("tracing") => tracing_cost(number(1, 200) as usize),
        Some("pairs") if args.len() >= 3 => {
            // Absolute: the builds run in the throwaway project's folder.
            let build = |arg: &String| {
                std::fs::canonicalize(arg).unwrap_or_else(|e| {
                    eprintln!("pairs: cannot find the build {arg}: {e}");
                    std::process::exit(2)
                })
            };
            pairs([build(&args[1]), build(&args[2])], number(3, 40) as usize)
        }
        _ => {
            eprintln!(
                "usage: cargo bench --bench perf -- overhead|scale|parked|ingest|latency|tracing|quick|pairs BUILD_A BUILD_B [ROUNDS]"
            );
            std::process::exit(2);
        }
    }
}

/// A throwaway project with sessions already past the plan gate (or parked at it).
struct Project {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

/// Projects done with, deleted when the bench ends ([`delete_spent`]) rather than when each is
/// dropped. On ext4 without a journal (the project machine), making a file skips every inode
/// deleted in the last one to six minutes, so a project deleted between two measurements made
/// the second one slower: up to half of the daemon's CPU (benches/README.md, "The disk").
static SPENT: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            SPENT.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        }
    }
}

fn delete_spent() {
    SPENT.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Calls [`delete_spent`] when dropped: at the end of `main`, also when it panics.
struct Spent;

impl Drop for Spent {
    fn drop(&mut self) {
        delete_spent();
    }
}

/// What making one empty file costs in `dir`, in µs (the median of 200): the figure that shows
/// whether the disk is slowed by recent deletions (15 to 20 µs on the project machine without
/// them, hundreds with).
fn file_cost_us(dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut costs: Vec<f64> = (0..200)
        .map(|i| {
            let started = Instant::now();
            std::fs::File::create_new(dir.join(format!("f{i}"))).unwrap();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    costs.sort_by(f64::total_cmp);
    costs[costs.len() / 2]
}

impl Project {
    fn new() -> Project {
        let mut dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // `BENCH_KEEP=1`: the project stays, to be run again by hand (strace, perf).
        if std::env::var_os("BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("project kept at {}", root.display());
        }
        for d in ["repo", "worktrees", "sessions", "home", "state"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("state"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::write(
            root.join(".samocode"),
            "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\n",
        )
        .unwrap();
        println!(
            "disk: one new file costs {:.0} µs in this project (see benches/README.md, \"The disk\")",
            file_cost_us(&root.join("probe"))
        );
        Project {
            dir: Some(dir),
            root,
        }
    }

    /// A session in `phase`: runnable, or with `waiting` parked at the plan gate (made so,
    /// without having run).
    fn session(&self, name: &str, phase: Phase, waiting: bool) -> PathBuf {
        let dir = self.root.join("sessions").join(format!("26-11-24-{name}"));
        // Past its init, with a worktree of its own as an init leaves it: git's files of one
        // laid out by hand (no git is needed, and none of its cost is measured; the check
        // before each attempt reads only them).
        let tree = samocode::session::worktree::Worktree {
            path: self.root.join("worktrees").join(format!("26-11-24-{name}")),
            branch: name.to_string(),
        };
        samocode::session::worktree::lay_out_by_hand(&self.root.join("repo"), &tree).unwrap();
        let store = SessionStore::create(&dir).unwrap();
        let mut state = SessionState::new(&store.name(), "d", "t", jiff::Timestamp::now());
        state.worktree = Some(tree.path);
        state.branch = Some(tree.branch);
        state.enter_phase(phase);
        if waiting {
            state.status = RunState::Waiting {
                wait_for: WaitFor::PlanApproval,
                since: jiff::Timestamp::now(),
            };
        }
        store.save(&mut state).unwrap();
        dir
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(SAMOCODE), args)
    }

    /// After a `run` of `session` that stopped at its phase's limit of iterations (100), gives
    /// the phase 100 more.
    fn resume_at_limit(&self, session: &str, run: std::process::ExitStatus) {
        assert_eq!(run.code(), Some(11), "run stops at the phase's limit");
        let resume = self
            .command(&["resume", session])
            .stdout(Stdio::null())
            .status();
        assert!(resume.unwrap().success());
    }

    /// [`Self::command`], of another build of samocode.
    fn command_of(&self, samocode: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(samocode);
        command
            .args(args)
            .current_dir(&self.root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("CLAUDE_PATH", AGENT)
            .env("SAMOCODE_STATE_DIR", self.root.join("state"))
            .env("SAMOCODE_KEEP_ENV", "BENCH_*")
            .env("SAMOCODE_HTTP", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    fn daemon(&self, parallel: usize, env: &[(&str, String)]) -> Daemon {
        let log = std::fs::File::create(self.root.join("daemon.log")).unwrap();
        let mut command = self.command(&["supervise", "--max-parallel", &parallel.to_string()]);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
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
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, socket }
    }

    fn iterations(&self) -> u64 {
        std::fs::read_dir(self.root.join("sessions"))
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path().join("_state.json")).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|s| s["iteration"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Agents of this project running now whose session's name contains `what`.
    fn agents_running(&self, what: &str) -> usize {
        let pattern = format!("{}/sessions/26-11-24-{what}", self.root.display());
        let out = Command::new("pgrep")
            .args(["-c", "-f", &pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    fn done(&self) -> usize {
        std::fs::read_dir(self.root.join("sessions"))
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path().join("_state.json")).ok())
            .filter(|t| t.contains("\"state\": \"done\""))
            .count()
    }
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn request(&self, request: Value) -> Value {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or(Value::Null)
    }

    /// User plus system CPU seconds so far.
    fn cpu(&self) -> f64 {
        let (user, system) = self.cpu_split();
        user + system
    }

    /// The daemon's CPU seconds so far, `(user, system)`.
    fn cpu_split(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let seconds = |i: usize| fields[i].parse::<f64>().unwrap() / 100.0;
        (seconds(11), seconds(12))
    }

    /// Peak resident set, in MB.
    fn peak_rss(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so that the daemon ends its agents; SIGKILL if it takes too long.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Overhead {
    floor_ms: f64,
    samocode_ms: f64,
}

/// One session looping in implementation under `samocode run`, against the same agent
/// spawned in a bare loop.
fn overhead(n: usize) -> Overhead {
    overhead_with(n, &[])
}

/// The same, with settings for `samocode run` (`name`, `value`).
fn overhead_with(n: usize, env: &[(&str, String)]) -> Overhead {
    let project = Project::new();
    let dir = project.session("loop", Phase::Implementation, false);
    // The floor: the agent with the context samocode would give it, spawned n times.
    let state: SessionState =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_state.json")).unwrap()).unwrap();
    let context = samocode::session::context::render(&samocode::session::context::ContextInput {
        state: &state,
        session_dir: &dir,
        workdir: &project.root.join("repo"),
        time_limit: Duration::from_secs(1800),
        now: jiff::Timestamp::now(),
        memory: None,
    });
    // The two are measured in turns, a block of spawns before each `samocode run`, so that
    // the machine's drift over the run (other guests, the disk's writeback) weighs on both
    // alike: measured one after the other, the difference moved by 0.5 ms between runs.
    let spawn_floor = |count: usize| {
        let started = Instant::now();
        for _ in 0..count {
            let status = Command::new(AGENT)
                .args(["--append-system-prompt", &context, "-p", "x"])
                .current_dir(project.root.join("repo"))
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        started.elapsed()
    };
    let (mut floor, mut samocode) = (Duration::ZERO, Duration::ZERO);
    let (mut done, mut spawned) = (0, 0);
    // samocode: a phase runs at most 100 iterations, then blocks; a resume gives it 100 more.
    let per_run = Phase::Implementation.rules().max_iterations as usize;
    while done < n {
        let count = per_run.min(n - done);
        floor += spawn_floor(count);
        spawned += count;
        let started = Instant::now();
        let run = project
            .command(&["run", "--session", "loop"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let before = done;
        done = iteration_of(&dir) as usize;
        assert!(
            done > before,
            "samocode run made no iteration: {}",
            std::fs::read_to_string(dir.join("session.log")).unwrap_or_default()
        );
        if done < n {
            project.resume_at_limit("loop", run);
        }
        samocode += started.elapsed();
    }
    let figures = Overhead {
        floor_ms: floor.as_secs_f64() * 1000.0 / spawned as f64,
        samocode_ms: samocode.as_secs_f64() * 1000.0 / done as f64,
    };
    println!(
        "overhead: {done} iterations; floor {:.2} ms per spawn; samocode {:.2} ms per iteration; samocode adds {:.2} ms per iteration (target: under 1 ms)",
        figures.floor_ms,
        figures.samocode_ms,
        figures.samocode_ms - figures.floor_ms
    );
    figures
}

/// The session's iteration counter, from its `_state.json`.
fn iteration_of(dir: &Path) -> u64 {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_state.json")).unwrap()).unwrap();
    state["iteration"].as_u64().unwrap()
}

/// Two builds of samocode, compared in alternating pairs: each round runs `samocode run` for
/// a phase's 100 iterations with one build, then with the other (which goes first alternates),
/// in the same session. A difference of a few percent, which `overhead` cannot see through
/// the machine's drift between its runs, shows in the pairs' differences.
fn pairs(builds: [PathBuf; 2], rounds: usize) {
    let project = Project::new();
    let dir = project.session("loop", Phase::Implementation, false);
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let before = iteration_of(&dir);
            let started = Instant::now();
            let run = project
                .command_of(&builds[which], &["run", "--session", "loop"])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            times[which].push(elapsed / (iteration_of(&dir) - before) as f64);
            project.resume_at_limit("loop", run);
        }
    }
    let mut differences: Vec<f64> = times[1].iter().zip(&times[0]).map(|(b, a)| b - a).collect();
    let faster = differences.iter().filter(|d| **d < 0.0).count();
    let mean = differences.iter().sum::<f64>() / differences.len() as f64;
    for (build, mut runs) in builds.iter().zip(times) {
        println!(
            "pairs: {}: {:.3} ms per iteration (median of {rounds} runs of a phase's 100)",
            build.display(),
            percentiles(&mut runs).0
        );
    }
    println!(
        "pairs: the second build minus the first, per iteration: median {:+.3} ms, mean {mean:+.3} ms; the second faster in {faster} of {rounds} pairs",
        percentiles(&mut differences).0
    );
}

struct Scale {
    per_second: f64,
    ideal: f64,
    cpu_ms: f64,
    rss_mb: f64,
}

/// Sessions of `per_session` iterations (all but two in implementation, then quality and
/// done), each agent sleeping `sleep_ms`, on one daemon.
fn scale(sessions: usize, parallel: usize, per_session: u64, sleep_ms: u64) -> Scale {
    let project = Project::new();
    for i in 0..sessions {
        project.session(&format!("s{i:05}"), Phase::Implementation, false);
    }
    let daemon = project.daemon(
        parallel,
        &[
            // Implementation, then quality and done.
            ("BENCH_STEPS", (per_session - 2).to_string()),
            ("BENCH_SLEEP_MS", sleep_ms.to_string()),
        ],
    );
    let (user_before, system_before) = daemon.cpu_split();
    let file = project.root.join(".samocode");
    let started = Instant::now();
    for i in 0..sessions {
        let answer = daemon.request(json!({"v": 1, "cmd": "start", "project": file,
            "session": format!("26-11-24-s{i:05}")}));
        assert_eq!(answer["reply"], "done", "{answer}");
    }
    let mut status_ms = Vec::new();
    let mut last_status = Instant::now();
    while project.done() < sessions {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the sessions did not finish"
        );
        if last_status.elapsed() > Duration::from_secs(3) {
            let t = Instant::now();
            let status = project.command(&["status", "--json"]).output().unwrap();
            assert!(status.status.success());
            status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            last_status = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let iterations = project.iterations();
    let (user, system) = daemon.cpu_split();
    let (user, system) = (user - user_before, system - system_before);
    let cpu = user + system;
    let waves = (iterations as f64 / parallel.min(sessions) as f64).ceil();
    let ideal_seconds = waves * sleep_ms as f64 / 1000.0;
    let rss_mb = daemon.peak_rss();
    drop(daemon);
    let dirs: Vec<PathBuf> = (0..sessions)
        .map(|i| project.root.join(format!("sessions/26-11-24-s{i:05}")))
        .collect();
    let floor = floor(&dirs, per_session);
    let figures = Scale {
        per_second: iterations as f64 / elapsed,
        ideal: iterations as f64 / ideal_seconds,
        cpu_ms: cpu * 1000.0 / iterations as f64,
        rss_mb,
    };
    status_ms.sort_by(f64::total_cmp);
    println!(
        "scale: {sessions} sessions of {per_session} iterations, --max-parallel {parallel}: {iterations} iterations in {elapsed:.1} s = {:.1} per second, {:.0}% of the ideal {:.1} (target: 90%); daemon CPU {:.3} ms per iteration (target: under 0.5); peak RSS {:.1} MB (target at 1000 sessions: under 60); status {} ms (median of {})",
        figures.per_second,
        100.0 * figures.per_second / figures.ideal,
        figures.ideal,
        figures.cpu_ms,
        figures.rss_mb,
        status_ms
            .get(status_ms.len() / 2)
            .map_or("-".into(), |m| format!("{m:.0}")),
        status_ms.len()
    );
    let user_ms = user * 1000.0 / iterations as f64;
    println!(
        "scale: the floor of the daemon's CPU, the session store's calls and the spawns of its iterations in one thread: {:.3} ms per iteration ({:.3} the files, {:.3} the spawn; {:.3} of it in user space); the daemon adds {:.3} ms ({:.3} in user space: the daemon's {user_ms:.3} against the floor's {:.3})",
        floor.files + floor.spawn,
        floor.files,
        floor.spawn,
        floor.user,
        figures.cpu_ms - floor.files - floor.spawn,
        user_ms - floor.user,
        floor.user,
    );
    figures
}

/// This thread's CPU seconds so far, `(user, system)`.
fn thread_cpu() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<nix::libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        nix::libc::getrusage(nix::libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// The floor of the daemon's CPU per iteration, in ms.
struct Floor {
    /// The file work.
    files: f64,
    /// Starting the agent and reading its output to the end.
    spawn: f64,
    /// The part of both spent in user space.
    user: f64,
}

/// The floor of the daemon's CPU per iteration.
///
/// A session's iteration at saturation through the session store's own calls, in the
/// daemon's order, in one thread with nothing else (no actors, no runtime, no tracing, no
/// parsing of the agent's output, no sweep of its process group), in the sessions' own
/// folders, round robin, `per_session` times each: before the attempt, the signal deleted,
/// the attempt's files named, the context appended, the state and the notebook's lines saved
/// (`SessionStore::save`), the attempt's log made and a `session.log` line; after it, the log
/// written, the signal read and kept, the session's last row of each journal appended again
/// and both synced, a `session.log` line, and the state saved alone, as a queued session's
/// (`SessionStore::save_state`). The state has no in-flight record: a little less to write
/// than the daemon's. `spawn` is the agent started with its output piped to the end, and
/// waited for.
fn floor(dirs: &[PathBuf], per_session: u64) -> Floor {
    use samocode::protocol::journal::{HistoryRow, IterationRow};
    use samocode::session::store::{SessionFolder, sync_appended};
    struct Session {
        store: SessionStore,
        state: SessionState,
        context: String,
        /// The length of the context's own part, before the text its phase's contexts share.
        own: usize,
        /// The entry of `_logs/contexts.md` that holds the standing text, once written.
        journaled: Option<String>,
        iteration: IterationRow,
        history: HistoryRow,
    }
    fn last_row<T: serde::de::DeserializeOwned>(dir: &Path, journal: &str) -> T {
        let text = std::fs::read_to_string(dir.join(journal)).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
    let mut sessions: Vec<Session> = dirs
        .iter()
        .map(|dir| {
            let store = SessionFolder::new(dir).lock().unwrap();
            let state = store.load_state().unwrap();
            let (context, own) = samocode::session::context::render_parts(
                &samocode::session::context::ContextInput {
                    state: &state,
                    session_dir: dir,
                    workdir: dir,
                    time_limit: Duration::from_secs(1800),
                    now: jiff::Timestamp::now(),
                    memory: None,
                },
            );
            Session {
                store,
                state,
                context,
                own,
                journaled: None,
                iteration: last_row(dir, "_iterations.jsonl"),
                history: last_row(dir, "_signal_history.jsonl"),
            }
        })
        .collect();
    let since = |t: (f64, f64)| {
        let now = thread_cpu();
        now.0 - t.0 + now.1 - t.1
    };
    let (mut files, mut spawn) = (0.0, 0.0);
    let user_before = thread_cpu().0;
    for _ in 0..per_session {
        for session in &mut sessions {
            let Session {
                store,
                state,
                context,
                own,
                journaled,
                iteration,
                history,
            } = session;
            let t = thread_cpu();
            // A new iteration, so that the notebook's lines change as the daemon's do.
            state.iteration += 1;
            state.phase_iteration += 1;
            store.remove_signal().unwrap();
            // Named as the daemon names them (the session's iteration).
            let attempt = store
                .attempt_files(state.iteration, state.phase, 1)
                .unwrap();
            // As the daemon journals contexts: the standing text once, then a pointer to it.
            let log = attempt.relative_log();
            match journaled {
                Some(earlier) => {
                    let rest = samocode::session::context::standing_as_in(earlier);
                    store.append_context(&log, &context[..*own], &rest).unwrap();
                }
                None => {
                    store.append_context(&log, context, "").unwrap();
                    *journaled = Some(log);
                }
            }
            store.save(state).unwrap();
            let mut log = store.create_log(&attempt).unwrap();
            store.log("floor: iteration started");
            files += since(t);
            let t = thread_cpu();
            let output = Command::new(AGENT)
                .args(["--append-system-prompt", context.as_str(), "-p", "x"])
                .env_clear()
                .current_dir(store.dir())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(output.status.success());
            spawn += since(t);
            let t = thread_cpu();
            log.write_all(&output.stdout).unwrap();
            drop(log);
            store.read_signal().unwrap().unwrap();
            store.keep_signal(&attempt);
            let journals = vec![
                store.append_iteration_unsynced(iteration).unwrap(),
                store.append_history_unsynced(history).unwrap(),
            ];
            sync_appended(journals).unwrap();
            store.log("floor: continue");
            store.save_state(state).unwrap();
            files += since(t);
        }
    }
    let user = thread_cpu().0 - user_before;
    let ms = |seconds: f64| seconds * 1000.0 / (dirs.len() as u64 * per_session) as f64;
    Floor {
        files: ms(files),
        spawn: ms(spawn),
        user: ms(user),
    }
}

/// Many sessions parked at the plan gate: a daemon's memory, and how long a restart takes
/// to take them all over again.
fn parked(sessions: usize) {
    let project = Project::new();
    let file = project.root.join(".samocode");
    let mut owned = String::new();
    for i in 0..sessions {
        let dir = project.session(&format!("p{i:05}"), Phase::Planning, true);
        owned.push_str(&json!({"dir": dir, "project": file}).to_string());
        owned.push('\n');
    }
    std::fs::write(project.root.join("state/sessions.jsonl"), owned).unwrap();
    for round in ["start", "restart"] {
        let started = Instant::now();
        let daemon = project.daemon(4, &[]);
        loop {
            let answer = daemon.request(json!({"v": 1, "cmd": "status"}));
            if answer["sessions"].as_array().map_or(0, Vec::len) == sessions {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "not all resumed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let resumed = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "parked ({round}): {sessions} sessions at the plan gate resumed in {:.2} s; daemon peak RSS {:.1} MB (target at 10000: under 250)",
            resumed.as_secs_f64(),
            daemon.peak_rss()
        );
    }
}

struct Ingest {
    cpu_per_100mb: f64,
    rss_mb: f64,
    floor_per_100mb: f64,
}

/// One agent printing `mb` megabytes of stream-json: what reading it costs the daemon.
fn ingest(mb: u64) -> Ingest {
    let project = Project::new();
    project.session("flood", Phase::Implementation, false);
    // The floor: the agent's output read by `cat` into /dev/null, for the same bytes.
    let floor_dir = project.root.join("floor");
    std::fs::create_dir_all(&floor_dir).unwrap();
    // The best of three: the floor is what the machine can do.
    let floor = (0..3)
        .map(|_| {
            let started = Instant::now();
            let flood = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "BENCH_FLOOD_MB={mb} '{AGENT}' --append-system-prompt 'Session path: {}\nPhase: implementation\n' -p x | cat > /dev/null",
                    floor_dir.display()
                ))
                .status()
                .unwrap();
            assert!(flood.success(), "the floor's pipe failed");
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let daemon = project.daemon(
        1,
        &[
            ("BENCH_FLOOD_MB", mb.to_string()),
            ("BENCH_STEPS", "1".into()),
        ],
    );
    let cpu_before = daemon.cpu();
    let file = project.root.join(".samocode");
    let answer = daemon
        .request(json!({"v": 1, "cmd": "start", "project": file, "session": "26-11-24-flood"}));
    assert_eq!(answer["reply"], "done", "{answer}");
    let started = Instant::now();
    while project.done() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the flood did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = daemon.cpu() - cpu_before;
    // Four floods: the implementation step, quality and done print theirs too.
    let total_mb = 3.0 * mb as f64;
    let figures = Ingest {
        cpu_per_100mb: cpu * 100.0 / total_mb,
        rss_mb: daemon.peak_rss(),
        floor_per_100mb: floor * 100.0 / mb as f64,
    };
    println!(
        "ingest: {total_mb:.0} MB of stream-json: daemon CPU {:.3} s per 100 MB = {:.0} MB/s on one core (target: 300); peak RSS {:.1} MB; the bare pipe to cat: {:.3} s per 100 MB",
        figures.cpu_per_100mb,
        100.0 / figures.cpu_per_100mb.max(1e-9),
        figures.rss_mb,
        figures.floor_per_100mb
    );
    figures
}

/// Reaction times, from the agents' own clock stamps (`BENCH_TIMES`): from one agent's exit
/// to the start of the next agent of the same session, and from an `approve` sent on the
/// control socket to the start of the agent it lets run. p50 and p99, idle and with `agents`
/// sleeping agents running. Both include the spawn of the next agent process itself.
fn latency(agents: usize) {
    const LOOPS: usize = 4;
    const GATES: usize = 40;
    for busy in [0, agents] {
        let project = Project::new();
        let times = project.root.join("times.log");
        for i in 0..busy {
            project.session(&format!("busy{i:04}"), Phase::Implementation, false);
        }
        for i in 0..LOOPS {
            project.session(&format!("loop{i}"), Phase::Implementation, false);
        }
        // The gates reach their gate as a person's sessions do, through a planning attempt
        // (the bench agent's plan waits for approval): the files an attempt leaves are there
        // when the approval comes, as they are in real use, and are not made by the approval.
        let mut gates = Vec::new();
        for i in 0..GATES {
            gates.push(project.session(&format!("gate{i:02}"), Phase::Planning, false));
        }
        let daemon = project.daemon(
            busy + LOOPS + GATES,
            &[
                ("BENCH_TIMES", times.display().to_string()),
                ("BENCH_STEPS", "0".into()),
                ("BENCH_SLEEP_MS", "600000".into()),
                ("BENCH_SLEEP_MATCH", "-busy".into()),
            ],
        );
        let file = project.root.join(".samocode");
        let start = |name: String| {
            let answer =
                daemon.request(json!({"v": 1, "cmd": "start", "project": file, "session": name}));
            assert_eq!(answer["reply"], "done", "{answer}");
        };
        for i in 0..busy {
            start(format!("26-11-24-busy{i:04}"));
        }
        let waited = Instant::now();
        while project.agents_running("busy") < busy {
            assert!(
                waited.elapsed() < Duration::from_secs(120),
                "the busy agents did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for i in 0..GATES {
            start(format!("26-11-24-gate{i:02}"));
        }
        let waited = Instant::now();
        while !gates.iter().all(|dir| at_plan_gate(dir)) {
            assert!(
                waited.elapsed() < Duration::from_secs(120),
                "the gates' planning attempts did not reach the gate"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Four sessions, one after the other, loop in implementation until the phase's limit
        // of 100 iterations: one at a time, so that they do not wait for each other.
        for i in 0..LOOPS {
            start(format!("26-11-24-loop{i}"));
            let waited = Instant::now();
            while read_times(&times)
                .iter()
                .filter(|t| t.0.contains("-loop"))
                .count()
                < (i + 1) * 100
            {
                assert!(
                    waited.elapsed() < Duration::from_secs(600),
                    "loop{i} did not reach its limit"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let runs = read_times(&times);
        let mut exit_to_spawn = Vec::new();
        for i in 0..LOOPS {
            let mut mine: Vec<_> = runs
                .iter()
                .filter(|t| t.0.ends_with(&format!("-loop{i}")))
                .collect();
            mine.sort_by_key(|t| t.1);
            for pair in mine.windows(2) {
                exit_to_spawn.push((pair[1].1 as f64 - pair[0].2 as f64) / 1e6);
            }
        }
        // Each gate approved in turn, once the last one's agent has started; then stopped.
        let mut approvals = Vec::new();
        for dir in &gates {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let sent = now_ns();
            let answer = daemon.request(json!({"v": 1, "cmd": "person", "dir": dir,
                "command": {"verb": "approve"}}));
            assert_eq!(answer["reply"], "done", "{answer}");
            let waited = Instant::now();
            let first = loop {
                // The implementation attempt the approval started, not the planning one.
                if let Some(run) = read_times(&times)
                    .into_iter()
                    .find(|t| t.0 == name && t.1 > sent)
                {
                    break run;
                }
                assert!(
                    waited.elapsed() < Duration::from_secs(60),
                    "{name}'s agent did not start"
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            approvals.push((dir.clone(), sent, first.1));
            daemon.request(json!({"v": 1, "cmd": "person", "dir": dir,
                "command": {"verb": "stop"}}));
        }
        let mut approve_to_spawn: Vec<f64> = approvals
            .iter()
            .map(|(_, sent, started)| (*started as f64 - *sent as f64) / 1e6)
            .collect();
        let (p50, p99) = percentiles(&mut exit_to_spawn);
        let (a50, a99) = percentiles(&mut approve_to_spawn);
        println!(
            "latency with {busy} busy agents: exit to next spawn p50 {p50:.2} ms, p99 {p99:.2} ms ({} samples); approve to spawn p50 {a50:.2} ms, p99 {a99:.2} ms ({} samples) (target: p99 under 20 ms)",
            exit_to_spawn.len(),
            approve_to_spawn.len()
        );
        // Where the time went: the median of each stage, and the slowest approval's stages,
        // once the stopped attempts' rows are written (the last one's may still be on its way).
        let waited = Instant::now();
        let stages: Vec<[f64; 3]> = loop {
            let stages: Vec<[f64; 3]> = approvals
                .iter()
                .map(|(dir, sent, started)| approval_stages(dir, *sent, *started))
                .collect();
            if stages.iter().flatten().all(|v| !v.is_nan())
                || waited.elapsed() > Duration::from_secs(10)
            {
                break stages;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let median = |k: usize| {
            let mut values: Vec<f64> = stages
                .iter()
                .map(|s| s[k])
                .filter(|v| !v.is_nan())
                .collect();
            match values.is_empty() {
                true => f64::NAN,
                false => percentiles(&mut values).0,
            }
        };
        let slowest = (0..approvals.len())
            .max_by_key(|&i| approvals[i].2.saturating_sub(approvals[i].1))
            .map(|i| stages[i])
            .unwrap_or([f64::NAN; 3]);
        println!(
            "  approve to spawn by stage (to the history row, to the AgentProcess's start, to the agent's own start): medians {:.2}, {:.2}, {:.2} ms; the slowest approval {:.2}, {:.2}, {:.2} ms",
            median(0),
            median(1),
            median(2),
            slowest[0],
            slowest[1],
            slowest[2]
        );
    }
}

/// What traces cost an iteration: `overhead` with tracing off (nothing configured), with an
/// endpoint nobody listens on (spans made and their export failing), and exporting to a
/// loopback receiver that accepts everything.
fn tracing_cost(n: usize) {
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in receiver.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buffer = [0u8; 65536];
                // Reads whatever comes and answers every request 200, keeping the connection.
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/x-protobuf\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for (what, env) in [
        ("off", vec![]),
        (
            "on, nobody listening",
            vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{closed}"),
            )],
        ),
        (
            "exporting",
            vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )],
        ),
    ] {
        let figures = overhead_with(n, &env);
        println!(
            "tracing {what}: samocode adds {:.2} ms per iteration over the floor",
            figures.samocode_ms - figures.floor_ms
        );
    }
}

/// Whether the session at `dir` is parked at the plan gate.
fn at_plan_gate(dir: &Path) -> bool {
    let state: Value = std::fs::read(dir.join("_state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    state["status"]["state"] == "waiting" && state["status"]["for"] == "plan_approval"
}

/// Where one approval's time went, in ms, from the session's journals: from the approval sent
/// to its history row (the state saved with it), from there to the start of the first
/// attempt's AgentProcess (its row's `started_at`: the history row synced, the slot, the
/// context, the in-flight save and the log made), and from there to the agent's own start (the
/// spawn and the exec). A stage the journals do not date (yet) is `NaN`.
fn approval_stages(dir: &Path, sent: u128, started: u128) -> [f64; 3] {
    let ns = |text: &str| {
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_nanosecond() as u128)
            .ok()
    };
    let rows = |file: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let recorded = rows("_signal_history.jsonl")
        .iter()
        .find(|row| row["status"] == "approve")
        .and_then(|row| ns(row["at"].as_str()?));
    let in_flight = rows("_iterations.jsonl")
        .iter()
        .filter_map(|row| ns(row["started_at"].as_str()?))
        .find(|at| *at > sent);
    let ms = |from: Option<u128>, to: Option<u128>| match (from, to) {
        (Some(from), Some(to)) if to >= from => (to - from) as f64 / 1e6,
        _ => f64::NAN,
    };
    [
        ms(Some(sent), recorded),
        ms(recorded, in_flight),
        ms(in_flight, Some(started)),
    ]
}

/// The agents' lines: session folder, start and exit in wall-clock nanoseconds.
fn read_times(path: &Path) -> Vec<(String, u128, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let name = parts.next()?.to_string();
            let start = parts.next()?.parse().ok()?;
            let exit = parts.next()?.parse().ok()?;
            Some((name, start, exit))
        })
        .collect()
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The median and the 99th percentile.
fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() * q / 100).min(values.len() - 1)];
    (at(50), at(99))
}

/// The regression check: quick runs, as ratios to their floors, against the ones recorded
/// for the same build profile (a debug build's samocode is slower than a release build's, and
/// its floor is the same). A figure twice as bad as recorded is measured again before it
/// fails the check: on a shared machine one run can be slowed by anything.
fn quick(record: bool) {
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline.json");
    let mut baseline: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| json!({}));
    if record {
        let ratios = quick_ratios();
        baseline[profile] = ratios.clone();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&baseline).unwrap() + "\n",
        )
        .unwrap();
        println!(
            "recorded {ratios} for the {profile} profile in {}",
            path.display()
        );
        return;
    }
    let Some(recorded) = baseline.get(profile).cloned() else {
        eprintln!(
            "{} has no figures for the {profile} profile: record them with `cargo bench --bench perf{} -- quick --record`",
            path.display(),
            if profile == "dev" {
                " --profile dev"
            } else {
                ""
            }
        );
        std::process::exit(1);
    };
    let mut worse = Vec::new();
    for round in 1..=2 {
        let ratios = quick_ratios();
        worse.clear();
        for key in ["overhead", "scale", "ingest"] {
            let now = ratios[key].as_f64().unwrap();
            let then = recorded[key].as_f64().unwrap();
            println!(
                "quick {key} ({profile}, run {round}): {now:.2} times its floor (recorded: {then:.2})"
            );
            if now > 2.0 * then {
                worse.push(format!("{key}: {now:.2} against {then:.2}"));
            }
        }
        if worse.is_empty() {
            return;
        }
    }
    eprintln!(
        "performance regressed to twice the recorded ratio in two runs: {}",
        worse.join("; ")
    );
    delete_spent();
    std::process::exit(1);
}

/// The quick figures as ratios to their floors (larger is worse).
fn quick_ratios() -> Value {
    let overhead = overhead(60);
    let scale = scale(60, 16, 5, 200);
    let ingest = ingest(50);
    json!({
        "overhead": overhead.samocode_ms / overhead.floor_ms,
        "scale": scale.ideal / scale.per_second,
        "ingest": ingest.cpu_per_100mb / ingest.floor_per_100mb,
    })
}
