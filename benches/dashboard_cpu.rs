//! What the dashboard's live updates cost the daemon: the real `samocode supervise` with the
//! scripted agent at a steady rate of iterations, its CPU time (user + system) read from
//! `/proc/PID/stat`. Prints the figures; run with `cargo bench --bench dashboard_cpu`. Under
//! `cargo test` it runs a short smoke version of the same, so that the measuring code keeps
//! working.
//!
//! - A daemon without the dashboard (`--no-http`) gives the baseline.
//! - A daemon with it is measured in alternating windows: no page open, ten open pages (five
//!   fleet pages, five session pages, each reading its event stream as a browser would), ten
//!   pages, none, and so on. Pairing the windows on one daemon keeps the comparison fair on a
//!   machine whose other load drifts; each window's CPU is divided by its iterations, and the
//!   difference is given at 100 iterations/s.
//!
//! The agent is held to a steady pace by a wrapper that sleeps before it starts: with
//! [`SESSIONS`] sessions running at once, the rate is near `SESSIONS / PACE` per second. Every
//! session stays in investigation (`*=stay`); when it reaches the phase's iteration limit it
//! blocks and is resumed, as a person would.

#[allow(dead_code)]
#[path = "../tests/e2e/fixture.rs"]
mod fixture;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fixture::{Daemon, Project, wait_for};

/// Sessions running at once (the daemon's cap is the same).
const SESSIONS: usize = 20;
/// The agent's pause before each iteration.
const PACE: &str = "0.18";
/// Open pages in the measured windows.
const PAGES: usize = 10;
/// The pause before every window (after pages open, their first render is a page load).
const SETTLE: Duration = Duration::from_secs(2);

struct Plan {
    warmup: Duration,
    window: Duration,
    pairs: usize,
}

fn main() {
    let plan = match std::env::args().any(|a| a == "--bench") {
        true => Plan {
            warmup: Duration::from_secs(5),
            window: Duration::from_secs(15),
            pairs: 4,
        },
        false => Plan {
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(2),
            pairs: 1,
        },
    };
    // The sessions' files on tmpfs: the figures are about CPU, not about this disk's fsync.
    if Path::new("/dev/shm").is_dir() {
        // SAFETY: set before any other thread of this program exists.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    println!(
        "dashboard_cpu: {SESSIONS} sessions, agent pace {PACE}s, {}s windows, {} pairs{}",
        plan.window.as_secs(),
        plan.pairs,
        if plan.pairs == 1 {
            " (smoke run; `cargo bench --bench dashboard_cpu` for figures)"
        } else {
            ""
        }
    );

    // The baseline follows the same schedule as the measured daemon below (its sessions'
    // files grow alike), so that their averages compare.
    let (baseline_project, baseline_daemon) = fleet(&["--no-http"]);
    std::thread::sleep(plan.warmup);
    let mut baseline = Vec::new();
    for _ in 0..plan.pairs * 2 {
        std::thread::sleep(SETTLE);
        let m = window(&baseline_project, &baseline_daemon, plan.window, None);
        report("no dashboard (--no-http)", &m);
        baseline.push(m);
    }
    drop(baseline_daemon);

    let (project, daemon) = fleet(&["--http", "127.0.0.1:0"]);
    std::thread::sleep(plan.warmup);
    let mut idle = Vec::new();
    let mut open = Vec::new();
    // Alternating order (idle, open, open, idle, ...) so that a slow drift of the daemon's
    // cost over time (its sessions' files grow) does not count as the pages' cost.
    for pair in 0..plan.pairs {
        for open_pages in [pair % 2 == 1, pair % 2 == 0] {
            if open_pages {
                let pages = Pages::open(&project, PAGES);
                // The pages' first render is a page load, not the stream: let it pass.
                std::thread::sleep(SETTLE);
                let m = window(&project, &daemon, plan.window, Some(&pages));
                report(&format!("dashboard, {PAGES} pages open"), &m);
                open.push(m);
                pages.close();
            } else {
                std::thread::sleep(SETTLE);
                let m = window(&project, &daemon, plan.window, None);
                report("dashboard, no page open", &m);
                idle.push(m);
            }
        }
    }
    drop(daemon);

    let per_iteration = |ms: &[Measure]| {
        ms.iter().map(|m| m.cpu_seconds).sum::<f64>() / ms.iter().map(|m| m.iterations).sum::<f64>()
    };
    if plan.pairs == 1 {
        println!("smoke run done: a debug build over 2 s windows gives no figures worth reading");
        return;
    }
    // CPU seconds per iteration times 100 iterations per second: the share of one core.
    let at_100 = |seconds_per_iteration: f64| seconds_per_iteration * 100.0 * 100.0;
    println!(
        "at 100 iterations/s: daemon CPU {:.2}% without the dashboard, {:.2}% with it and no page, \
         {:.2}% with {PAGES} pages; the event stream to {PAGES} pages adds {:.2} points",
        at_100(per_iteration(&baseline)),
        at_100(per_iteration(&idle)),
        at_100(per_iteration(&open)),
        at_100(per_iteration(&open)) - at_100(per_iteration(&idle)),
    );
}

struct Measure {
    seconds: f64,
    iterations: f64,
    cpu_seconds: f64,
    events: u64,
    bytes: u64,
}

fn report(label: &str, m: &Measure) {
    println!(
        "{label:<28} {:>6.1} iterations/s  daemon CPU {:>5.2}%  {:.3} ms per iteration{}",
        m.iterations / m.seconds,
        m.cpu_seconds / m.seconds * 100.0,
        m.cpu_seconds * 1000.0 / m.iterations.max(1.0),
        if m.bytes > 0 {
            format!(
                "  {} events, {} KiB/s to the pages",
                m.events,
                m.bytes / 1024 / m.seconds.max(1.0) as u64
            )
        } else {
            String::new()
        }
    );
}

/// A project with [`SESSIONS`] sessions iterating at a steady pace under a daemon.
fn fleet(flags: &[&str]) -> (Project, Daemon) {
    let mut project = Project::new();
    let paced = project.root.join("paced-claude");
    std::fs::write(
        &paced,
        format!(
            "#!/bin/sh\nsleep {PACE}\nexec '{}' fake-agent \"$@\"\n",
            fixture::BIN
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&paced, std::fs::Permissions::from_mode(0o755)).unwrap();
    project.env("CLAUDE_PATH", &paced.display().to_string());
    project.env("SAMOCODE_FAKE", "*=stay");
    let cap = SESSIONS.to_string();
    let mut args = vec!["--max-parallel", cap.as_str()];
    args.extend_from_slice(flags);
    let daemon = project.daemon(&args);
    for i in 0..SESSIONS {
        project
            .run(&[
                "start",
                "--session",
                &format!("s{i:02}"),
                "--dive",
                "d",
                "--task",
                "t",
            ])
            .expect(0);
    }
    wait_for(Duration::from_secs(60), "every session iterating", || {
        project
            .status()
            .iter()
            .filter(|r| r["total_iterations"].as_u64() > Some(1))
            .count()
            == SESSIONS
    });
    (project, daemon)
}

/// One measured window, with a person resuming sessions at their iteration limit meanwhile.
fn window(project: &Project, daemon: &Daemon, length: Duration, pages: Option<&Pages>) -> Measure {
    let pid = daemon.child.id();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let resumer = scope.spawn(|| keep_resuming(project, &stop));
        let (cpu0, it0, t0) = (cpu_ticks(pid), iterations(project), Instant::now());
        let (e0, b0) = pages.map(Pages::counts).unwrap_or_default();
        std::thread::sleep(length);
        let (cpu1, it1, elapsed) = (cpu_ticks(pid), iterations(project), t0.elapsed());
        let (e1, b1) = pages.map(Pages::counts).unwrap_or_default();
        stop.store(true, Ordering::Relaxed);
        resumer.join().unwrap();
        Measure {
            seconds: elapsed.as_secs_f64(),
            iterations: (it1 - it0) as f64,
            // Clock ticks are hundredths of a second on Linux (CLK_TCK = 100).
            cpu_seconds: (cpu1 - cpu0) as f64 / 100.0,
            events: e1 - e0,
            bytes: b1 - b0,
        }
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Agent attempts recorded so far, over every session.
fn iterations(project: &Project) -> u64 {
    std::fs::read_dir(&project.sessions)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            std::fs::read_to_string(e.path().join("_iterations.jsonl"))
                .map(|t| t.lines().count() as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// Resumes sessions that reached investigation's iteration limit, until told to stop.
fn keep_resuming(project: &Project, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for entry in std::fs::read_dir(&project.sessions)
            .unwrap()
            .filter_map(Result::ok)
        {
            let state: serde_json::Value =
                std::fs::read_to_string(entry.path().join("_state.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            if state["status"]["state"] == "blocked" {
                let _ = project.run(&["resume", &entry.file_name().to_string_lossy()]);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Open pages: threads reading event streams, counting events and bytes.
struct Pages {
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Pages {
    /// Logs in once and opens `count` streams: fleet pages and session pages, alternately.
    fn open(project: &Project, count: usize) -> Pages {
        let run = project.run(&["dashboard", "--no-open"]);
        run.expect(0);
        let link = run.stdout().lines().next().unwrap().to_string();
        let (base, login_path) = link.split_at(link.find("/login").unwrap());
        let host = base.trim_start_matches("http://").to_string();
        let cookie = login(&host, login_path);
        let names: Vec<String> = project
            .status()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        let pages = Pages {
            stop: Arc::default(),
            events: Arc::default(),
            bytes: Arc::default(),
            readers: Vec::new(),
        };
        let readers = (0..count)
            .map(|page| {
                let path = match page % 2 {
                    0 => "/events".to_string(),
                    _ => format!("/sessions/{}/events", names[page % names.len()]),
                };
                let (host, cookie) = (host.clone(), cookie.clone());
                let (stop, events, bytes) = (
                    pages.stop.clone(),
                    pages.events.clone(),
                    pages.bytes.clone(),
                );
                std::thread::spawn(move || {
                    read_stream(&host, &path, &cookie, &stop, &events, &bytes)
                })
            })
            .collect();
        Pages { readers, ..pages }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        for reader in self.readers {
            let _ = reader.join();
        }
    }
}

/// Logs in with the one-time link; returns the session cookie.
fn login(host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let line = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("the login sets a cookie");
    line.split_once("samocode_session=")
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Reads an event stream as a page would, counting events and bytes, until told to stop.
fn read_stream(
    host: &str,
    path: &str,
    cookie: &str,
    stop: &AtomicBool,
    events: &AtomicU64,
    bytes: &AtomicU64,
) {
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: samocode_session={cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut buffer = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                let count = buffer[..n].windows(7).filter(|w| w == b"\nevent:").count();
                events.fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(_) => continue,
        }
    }
}
