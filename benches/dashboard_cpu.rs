//! What the dashboard's live updates cost the daemon: the real `samocode supervise` with the
//! scripted agent at a steady rate of iterations, its CPU time read from `/proc/PID/stat`,
//! first without the dashboard (`--no-http`), then with it and no page open, then with ten
//! open pages (five fleet pages, five session pages) reading the event streams. Prints the
//! figures; run with `cargo bench --bench dashboard_cpu`. Under `cargo test` it runs a short
//! smoke version of the same, so that the measuring code keeps working.
//!
//! The agent is held to a steady pace by a wrapper that sleeps before it starts: with
//! `SESSIONS` sessions running at once, each iteration takes about `PACE` plus the work, so the
//! rate is near `SESSIONS / PACE`. Every session stays in investigation (`*=stay`); when it
//! reaches the phase's iteration limit it blocks and is resumed, as a person would.

#[allow(dead_code)]
#[path = "../tests/e2e/fixture.rs"]
mod fixture;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fixture::{Project, wait_for};

/// Sessions running at once (the daemon's cap is the same).
const SESSIONS: usize = 20;
/// The agent's pause before each iteration.
const PACE: &str = "0.18";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (warmup, window) = match full {
        true => (Duration::from_secs(5), Duration::from_secs(30)),
        false => (Duration::from_secs(1), Duration::from_secs(2)),
    };
    // The sessions' files on tmpfs: the figures are about CPU, not about this disk's fsync.
    if Path::new("/dev/shm").is_dir() {
        // SAFETY: set before any other thread of this program exists.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    println!(
        "dashboard_cpu: {SESSIONS} sessions, agent pace {PACE}s, {}s windows{}",
        window.as_secs(),
        if full {
            ""
        } else {
            " (smoke run; `cargo bench --bench dashboard_cpu` for figures)"
        }
    );
    let without = measure(&["--no-http"], 0, warmup, window);
    let idle = measure(&["--http", "127.0.0.1:0"], 0, warmup, window);
    let pages = measure(&["--http", "127.0.0.1:0"], 10, warmup, window);
    for (label, m) in [
        ("no dashboard (--no-http)", &without),
        ("dashboard, no page open", &idle),
        ("dashboard, 10 pages open", &pages),
    ] {
        println!(
            "{label:<28} {:>6.1} iterations/s  daemon CPU {:>5.2}%  ({:.3} ms CPU per iteration){}",
            m.rate,
            m.cpu_percent,
            m.cpu_percent * 10.0 / m.rate.max(0.001),
            if m.events > 0 {
                format!("  {} events, {} KiB to the pages", m.events, m.bytes / 1024)
            } else {
                String::new()
            }
        );
    }
    // Normalised per iteration, then scaled to 100 iterations/s: the runs differ a little in rate.
    let per_iteration = |m: &Measure| m.cpu_percent / m.rate.max(0.001);
    println!(
        "the event stream to 10 pages adds {:.2} percentage points of one core at 100 iterations/s \
         ({:.2} for the dashboard with no page open)",
        (per_iteration(&pages) - per_iteration(&without)) * 100.0,
        (per_iteration(&idle) - per_iteration(&without)) * 100.0,
    );
}

struct Measure {
    rate: f64,
    cpu_percent: f64,
    events: u64,
    bytes: u64,
}

fn measure(flags: &[&str], pages: usize, warmup: Duration, window: Duration) -> Measure {
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
    let mut args = vec!["--max-parallel", "20"];
    args.extend_from_slice(flags);
    let daemon = project.daemon(&args);
    let pid = daemon.child.id();
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
    wait_for(Duration::from_secs(60), "every session running", || {
        project
            .status()
            .iter()
            .filter(|r| r["total_iterations"].as_u64() > Some(1))
            .count()
            == SESSIONS
    });

    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    if pages > 0 {
        let run = project.run(&["dashboard", "--no-open"]);
        run.expect(0);
        let link = run.stdout().lines().next().unwrap().to_string();
        let (base, token_path) = link.split_at(link.find("/login").unwrap());
        let host = base.trim_start_matches("http://").to_string();
        let cookie = login(&host, token_path);
        let names: Vec<String> = project
            .status()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        for page in 0..pages {
            let path = match page % 2 {
                0 => "/events".to_string(),
                _ => format!("/sessions/{}/events", names[page % names.len()]),
            };
            let (host, cookie) = (host.clone(), cookie.clone());
            let (stop, events, bytes) = (stop.clone(), events.clone(), bytes.clone());
            readers.push(std::thread::spawn(move || {
                read_stream(&host, &path, &cookie, &stop, &events, &bytes)
            }));
        }
    }

    let (cpu0, it0, cpu1, it1, elapsed, e0, b0, e1, b1) = std::thread::scope(|scope| {
        let resumer = scope.spawn(|| keep_resuming(&project, &stop));
        std::thread::sleep(warmup);
        let (cpu0, it0, t0) = (cpu_ticks(pid), iterations(&project), Instant::now());
        let (e0, b0) = (
            events.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
        );
        std::thread::sleep(window);
        let (cpu1, it1, elapsed) = (cpu_ticks(pid), iterations(&project), t0.elapsed());
        let (e1, b1) = (
            events.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
        );
        stop.store(true, Ordering::Relaxed);
        resumer.join().unwrap();
        (cpu0, it0, cpu1, it1, elapsed, e0, b0, e1, b1)
    });
    drop(daemon);
    for reader in readers {
        let _ = reader.join();
    }
    let seconds = elapsed.as_secs_f64();
    Measure {
        rate: (it1 - it0) as f64 / seconds,
        // Clock ticks are hundredths of a second on Linux (CLK_TCK = 100).
        cpu_percent: (cpu1 - cpu0) as f64 / seconds,
        events: e1 - e0,
        bytes: b1 - b0,
    }
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
                let chunk = &buffer[..n];
                let count = chunk.windows(7).filter(|w| w == b"\nevent:").count();
                events.fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(_) => continue,
        }
    }
}
