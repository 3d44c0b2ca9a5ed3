//! The NATS JetStream engine end to end: a real `nats-server` on loopback (JetStream on, a
//! token required), one daemon (`supervise --executor nats`) and workers in separate
//! directories standing in for hosts, the scripted agent.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fixture::{Project, alive, wait_for};

const TOKEN: &str = "nats-test-token-7f3a";

/// A `nats-server` with JetStream in a temp directory, on a free loopback port; stopped when
/// dropped.
struct NatsServer {
    child: Child,
    url: String,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 24MB\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ token: \"{TOKEN}\" }}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        NatsServer {
            child: NatsServer::spawn(&config, port),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            config,
            _dir: dir,
        }
    }

    fn spawn(config: &Path, port: u16) -> Child {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nats-server is installed (.ci/run installs it with apt-get)");
        let child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        wait_for(Duration::from_secs(20), "nats-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    }

    /// Kills the server and starts it again on the same port with its JetStream store gone
    /// (a server replaced, or its volume lost).
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self._dir.path().join("js"));
        self.child = NatsServer::spawn(&self.config, self.port);
    }

    /// Stops the server (SIGSTOP) for `down` and lets it go on: connections stay open and
    /// silent, as over a network cut that sends no reset.
    fn pause(&mut self, down: Duration, mut meanwhile: impl FnMut()) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let until = Instant::now() + down;
        while Instant::now() < until {
            meanwhile();
            std::thread::sleep(Duration::from_millis(100));
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }

    /// Kills the server, waits `down`, and starts it again on the same port and store.
    fn outage(&mut self, down: Duration, mut meanwhile: impl FnMut()) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let until = Instant::now() + down;
        while Instant::now() < until {
            meanwhile();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = NatsServer::spawn(&self.config, self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `samocode worker` process, killed when dropped.
struct Worker {
    child: Child,
    dir: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn worker(project: &Project, url: &str, dir: &str, name: Option<&str>) -> Worker {
    use std::os::unix::fs::DirBuilderExt;
    let dir = project.root.join(dir);
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let mut args = vec![
        "worker".to_string(),
        "--nats-url".into(),
        url.into(),
        "--slots".into(),
        "2".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if let Some(name) = name {
        args.extend(["--name".to_string(), name.to_string()]);
    }
    let log = std::fs::File::create(dir.join("worker.log")).unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = project
        .command(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the worker starts");
    Worker { child, dir }
}

/// The project's environment for the NATS engine: the token, a short AckWait, and the
/// scripted agent's presence files.
fn nats_project() -> Project {
    let mut project = Project::new();
    let running = project.root.join("running");
    project
        .env("SAMOCODE_NATS_TOKEN", TOKEN)
        .env("SAMOCODE_NATS_ACK_WAIT", "3s")
        .env("SAMOCODE_FAKE_RUNNING", &running.display().to_string());
    project
}

/// Live processes whose environment names a session copy under `dir` (a worker's agents).
fn agents_under(dir: &Path) -> Vec<i32> {
    let marker = format!("SAMOCODE_SESSION={}", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(marker.as_bytes()))
            }) && alive(*pid)
        })
        .collect()
}

/// Worker `host-1`, and session `name` started on the daemon: once its agent runs there, the
/// worker and the agent's pid.
fn running_on_one_worker(project: &Project, url: &str, name: &str) -> (Worker, i32) {
    let worker = worker(project, url, "host-1", Some("host-1"));
    project
        .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
        .expect(0);
    let work = worker.dir.join("work");
    wait_for(
        Duration::from_secs(30),
        "the agent running on host-1",
        || !agents_under(&work).is_empty(),
    );
    let agent = agents_under(&work)[0];
    (worker, agent)
}

/// The parent of process `pid`, while it runs.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command's name, which is in parentheses: state, then parent.
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// Two workers, `host-1` and `host-2`, and the session `name` started on the daemon.
fn two_workers_and(
    project: &Project,
    url: &str,
    name: &str,
) -> ([Worker; 2], super::fixture::Session) {
    let workers = ["host-1", "host-2"].map(|host| worker(project, url, host, Some(host)));
    project
        .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
        .expect(0);
    (workers, project.session(name))
}

/// The agents the workers run now.
/// The agents the workers run now: the marked processes whose parent is not marked (a git an
/// agent runs carries its marker too, and counted as a second agent, a CI run failed).
fn running(workers: &[Worker]) -> usize {
    workers
        .iter()
        .map(|w| {
            let marked = agents_under(&w.dir.join("work"));
            marked
                .iter()
                .filter(|pid| parent_of(**pid).is_none_or(|parent| !marked.contains(&parent)))
                .count()
        })
        .sum()
}

/// Waits up to `secs` for `session` to wait for answers, calling `meanwhile` every 100 ms;
/// fails with its log and the daemon's and workers' logs.
fn until_asked(
    project: &Project,
    session: &super::fixture::Session,
    workers: &[Worker],
    secs: u64,
    mut meanwhile: impl FnMut(),
) {
    let asked = Instant::now() + Duration::from_secs(secs);
    while !(session.path("_state.json").exists()
        && session.state()["status"]["for"] == "qa_answers")
    {
        assert!(
            Instant::now() < asked,
            "no questions within {secs} s: {}\n{}",
            session.read("session.log"),
            all_logs(project, workers)
        );
        meanwhile();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A bare repository beside the project, for a shared `samocode` remote.
fn shared_repository(project: &Project) -> PathBuf {
    let bare = project.root.join("shared.git");
    super::fixture::git(
        &project.root,
        &["init", "-q", "--bare", &bare.display().to_string()],
    );
    bare
}

/// The daemon's log, then each worker's.
fn all_logs(project: &Project, workers: &[Worker]) -> String {
    workers.iter().fold(project.daemon_log(), |log, w| {
        log + &std::fs::read_to_string(w.dir.join("worker.log")).unwrap_or_default()
    })
}

#[test]
fn six_sessions_through_both_gates_on_two_workers_survive_a_worker_killed_mid_attempt() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    // Every attempt takes a moment, so that one is caught running when its worker dies.
    project.env("SAMOCODE_FAKE", "*=slow:0.3");
    let daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let w1 = worker(&project, &nats.url, "host-1", Some("host-1"));
    // A list of servers, as README gives it (the client could not parse one).
    let w2 = worker(
        &project,
        &format!("{},{}", nats.url, nats.url),
        "host-2",
        None,
    );
    for n in 1..=6 {
        project
            .run(&[
                "start",
                "--session",
                &format!("s{n}"),
                "--dive",
                "How does it work?",
                "--task",
                "Build it",
            ])
            .expect(0);
    }

    // Once the first worker has finished attempts, kill it with SIGKILL while one of its
    // agents runs.
    let mut w1 = w1;
    let work1 = w1.dir.join("work");
    wait_for(
        Duration::from_secs(60),
        "an attempt finished on host-1",
        || {
            std::fs::read_dir(&project.sessions)
                .unwrap()
                .any(|session| {
                    std::fs::read_to_string(session.unwrap().path().join("_iterations.jsonl"))
                        .is_ok_and(|rows| rows.contains(r#""host":"host-1""#))
                })
        },
    );
    wait_for(
        Duration::from_secs(60),
        "an agent running on host-1",
        || !agents_under(&work1).is_empty(),
    );
    w1.child.kill().unwrap();
    w1.child.wait().unwrap();
    // Its attempt-run children stop their agents: nothing is left running for host-1.
    wait_for(Duration::from_secs(10), "host-1's agents to stop", || {
        agents_under(&work1).is_empty()
    });

    project.drive_to_done(6, Duration::from_secs(240));

    // Every attempt ran on a worker, on both of them, and one session never had two agents.
    let default_name = format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        w2.dir.display()
    );
    let mut hosts = std::collections::BTreeSet::new();
    for n in 1..=6 {
        let session = project.session(&format!("s{n}"));
        let rows = session.jsonl("_iterations.jsonl");
        for row in &rows {
            let host = row["host"].as_str().unwrap_or_default().to_string();
            assert!(
                host == "host-1" || host == default_name,
                "s{n}: attempt on {host:?}: {row}"
            );
            hosts.insert(host);
        }
        assert_eq!(session.state()["status"]["state"], "done");
        // The agent's commits came back into the session's worktree.
        let log = super::fixture::git(
            Path::new(session.state()["worktree"].as_str().unwrap()),
            &["log", "--oneline"],
        );
        assert!(log.contains("Implement step 3"), "s{n}: {log}");
        for file in session.logs().iter().filter(|f| f.ends_with(".jsonl")) {
            assert!(
                rows.iter()
                    .any(|r| r["log"].as_str().unwrap().ends_with(file.as_str())),
                "s{n}: the attempt log {file} has its row"
            );
        }
    }
    assert_eq!(hosts.len(), 2, "attempts ran on both workers: {hosts:?}");
    let rows: Vec<serde_json::Value> = project.status();
    assert!(
        rows.iter().all(|r| r["host"].is_string()),
        "status shows where the newest attempt ran: {rows:?}"
    );
    for (all, same) in project.concurrency() {
        assert!(
            same <= 1,
            "two agents of one session at once ({all} running)"
        );
    }
    assert!(
        project.daemon_log().contains("executor=\"nats\"")
            || project.daemon_log().contains("executor=nats"),
        "{}",
        project.daemon_log()
    );
    // The killed worker's attempt went to the other worker after the AckWait, as epoch 2.
    assert!(
        project
            .daemon_log()
            .contains("the attempt was given to another worker"),
        "{}",
        project.daemon_log()
    );
    drop(w2);
    for dir in ["host-1", "host-2"] {
        assert!(
            agents_under(&project.root.join(dir)).is_empty(),
            "no agent left on {dir}"
        );
    }
    // What the daemon's merges left (git's detached maintenance, adopted by the daemon) is
    // reaped at the next merge: at most the last merge's, not a few per session.
    let zombies = zombie_children(daemon.child.id() as i32);
    assert!(zombies.len() <= 3, "zombies of the daemon: {zombies:?}");
}

/// The children of `parent` that have died and were not reaped.
fn zombie_children(parent: i32) -> Vec<i32> {
    let list = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default();
    list.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| {
            super::fixture::state_in(Path::new(&format!("/proc/{pid}/stat"))).as_deref()
                == Some("Z")
        })
        .collect()
}

/// A daemon stopped (SIGTERM) while its attempt waits in the queue for a worker cancels it;
/// the next daemon takes the attempt up again, and the worker that finally takes the queued
/// copy says it was cancelled before it started: the session goes on, instead of waiting for
/// ever on an attempt nobody runs.
#[test]
fn an_attempt_cancelled_in_the_queue_by_a_stopping_daemon_is_run_again_after_its_restart() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    let daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    project
        .run(&["start", "--session", "queued", "--dive", "d", "--task", "t"])
        .expect(0);
    let session = project.session("queued");
    wait_for(Duration::from_secs(30), "the attempt queued", || {
        session.path("_state.json").exists() && !session.state()["in_flight"].is_null()
    });
    assert_eq!(daemon.terminate(), Some(0));
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let worker = worker(&project, &nats.url, "host-1", Some("host-1"));
    let asked = Instant::now() + Duration::from_secs(90);
    while session.state()["status"]["for"] != "qa_answers" {
        assert!(
            Instant::now() < asked,
            "the session went on: {}\n{}",
            session.read("session.log"),
            all_logs(&project, std::slice::from_ref(&worker))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restarted_daemon_adopts_the_attempt_still_running_on_a_worker() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation=slow:4");
    let daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (_worker, agent) = running_on_one_worker(&project, &nats.url, "long");
    let session = project.session("long");
    let in_flight = session.state()["in_flight"]["started_at"].clone();
    daemon.crash();

    let started = Instant::now();
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    wait_for(
        Duration::from_secs(60),
        "the session to wait for answers",
        || session.state()["status"]["for"] == "qa_answers",
    );
    let rows = session.jsonl("_iterations.jsonl");
    let investigation: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["phase"] == "investigation")
        .collect();
    assert_eq!(
        investigation.len(),
        1,
        "the attempt was adopted, not run again: {rows:#?}\n{}",
        project.daemon_log()
    );
    assert_eq!(investigation[0]["outcome"], "ok");
    assert_eq!(investigation[0]["host"], "host-1");
    // Its row starts when the first daemon started it, not at the adoption.
    assert_eq!(investigation[0]["started_at"], in_flight, "{rows:#?}");
    assert!(session.read("session.log").contains("adopted attempt"));
    assert!(!alive(agent), "the adopted agent finished on its worker");
    assert!(!session.artifacts("dive").is_empty(), "its dive came back");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_daemon_killed_after_a_remote_verdict_is_journaled_goes_on_without_running_it_again() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAILPOINTS", "kill-after-verdict");
    let mut daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let _worker = worker(&project, &nats.url, "host-1", Some("host-1"));
    project
        .run(&["start", "--session", "kv", "--dive", "d", "--task", "t"])
        .expect(0);
    wait_for(
        Duration::from_secs(60),
        "the daemon to die after the verdict",
        || daemon.child.try_wait().unwrap().is_some(),
    );
    std::mem::forget(daemon);
    let session = project.session("kv");
    assert!(!session.state()["in_flight"].is_null());

    project.env("SAMOCODE_FAILPOINTS", "");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    wait_for(
        Duration::from_secs(60),
        "the session to wait for answers",
        || session.state()["status"]["for"] == "qa_answers",
    );
    let rows = session.jsonl("_iterations.jsonl");
    let phases: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["phase"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [("investigation", "ok"), ("requirements", "ok")],
        "the finished attempt was neither adopted nor run again: {}",
        project.daemon_log()
    );
    assert!(
        session
            .read("session.log")
            .contains("taken from the journals"),
        "{}",
        session.read("session.log")
    );
}

/// Every host acks progress within the work queue's own ack wait, whatever its setting says:
/// a worker set to a longer one acked too late, and the attempt went to a second worker while
/// the first still ran it (two agents of one session at once).
#[test]
fn a_worker_with_another_ack_wait_setting_still_keeps_its_attempt() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation=slow:8");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    // The queue was made with 3 s; these workers are set to 30 s.
    project.env("SAMOCODE_NATS_ACK_WAIT", "30s");
    let (workers, session) = two_workers_and(&project, &nats.url, "once");
    let mut most = 0;
    wait_for(Duration::from_secs(60), "the questions", || {
        most = most.max(running(&workers));
        session.path("_state.json").exists() && session.state()["status"]["for"] == "qa_answers"
    });
    assert_eq!(most, 1, "one agent at a time:\n{}", project.daemon_log());
    assert!(
        !project.daemon_log().contains("given to another worker"),
        "{}",
        project.daemon_log()
    );
    let log = all_logs(&project, &workers);
    assert!(log.contains("the queue's is used"), "{log}");
}

#[test]
fn an_outage_of_nats_mid_attempt_never_runs_two_agents_of_a_session_at_once() {
    // Down for three AckWaits: JetStream gives the attempt to the next worker when it is back.
    one_agent_at_a_time_through(|nats, look| nats.outage(Duration::from_secs(10), look));
}

/// A server that goes silent (paused; a network cut without a reset) is not heard from: the
/// worker cannot know its progress reached JetStream, so it stops its agent before JetStream
/// gives the attempt to the other worker.
#[test]
fn a_silent_nats_mid_attempt_never_runs_two_agents_of_a_session_at_once() {
    one_agent_at_a_time_through(|nats, look| nats.pause(Duration::from_secs(10), look));
}

fn one_agent_at_a_time_through(break_nats: impl FnOnce(&mut NatsServer, &mut dyn FnMut())) {
    let mut nats = NatsServer::start();
    let mut project = nats_project();
    // Chatty: its output waits on NATS while it is out of reach.
    project.env("SAMOCODE_FAKE", "investigation@1=chatty:25");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (workers, session) = two_workers_and(&project, &nats.url, "outage");
    wait_for(Duration::from_secs(60), "the first agent", || {
        running(&workers) == 1
    });
    // The agents of the attempt the outage hits, each with its attempt marker, whenever more
    // than one is seen at once (to say which, should it happen).
    let mut seen_together = Vec::new();
    let mut look = || {
        let marked: Vec<i32> = workers
            .iter()
            .flat_map(|w| agents_under(&w.dir.join("work")))
            .collect();
        // An agent's own children (its git, its tools) carry its markers too: only the
        // processes whose parent is not marked are agents.
        let agents: Vec<String> = marked
            .iter()
            .copied()
            .filter(|pid| parent_of(*pid).is_none_or(|p| !marked.contains(&p)))
            .filter_map(|pid| {
                let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                let attempt = env
                    .split(|b| *b == 0)
                    .map(String::from_utf8_lossy)
                    .find(|v| v.starts_with("SAMOCODE_ATTEMPT="))?
                    .into_owned();
                attempt
                    .contains("investigation")
                    .then(|| format!("pid {pid} {attempt}"))
            })
            .collect();
        if agents.len() > 1 {
            seen_together.push(format!("{}: {agents:?}", jiff::Timestamp::now()));
        }
    };
    break_nats(&mut nats, &mut look);
    let asked = Instant::now() + Duration::from_secs(120);
    while !(session.path("_state.json").exists()
        && session.state()["status"]["for"] == "qa_answers")
    {
        assert!(
            Instant::now() < asked,
            "no questions within 120 s: {}\n{}",
            session.read("session.log"),
            all_logs(&project, &workers)
        );
        look();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_together.is_empty(),
        "one agent of the attempt at a time: {seen_together:#?}\n{}",
        all_logs(&project, &workers)
    );
}

/// A runner (`attempt-run`) killed outright leaves its agent in a process group of its own:
/// the worker kills the agent by its markers before it reports the attempt failed, so the
/// retry never runs beside it, and nothing is left behind.
#[test]
fn a_runner_killed_outright_leaves_no_agent_behind() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:30");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (worker, agent) = running_on_one_worker(&project, &nats.url, "orphan");
    let work = worker.dir.join("work");
    // Its runner: the agent's parent.
    let runner = parent_of(agent).expect("the agent's parent") as u32;
    let cmdline = std::fs::read(format!("/proc/{runner}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("attempt-run"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    super::fixture::signal(runner, nix::sys::signal::Signal::SIGKILL);
    wait_for(Duration::from_secs(15), "the orphaned agent gone", || {
        !alive(agent)
    });
    let session = project.session("orphan");
    wait_for(Duration::from_secs(60), "the questions", || {
        session.state()["status"]["for"] == "qa_answers"
    });
    for (all, same) in project.concurrency() {
        assert!(all <= 1 && same <= 1, "{:?}", project.concurrency());
    }
    assert!(agents_under(&work).is_empty());
}

/// A worker that could start no agent CLI at all would fail every attempt it took: it does
/// not start. An empty `--name` (the host its attempts record) is refused too.
#[test]
fn a_worker_that_can_run_no_agent_or_has_no_name_does_not_start() {
    let project = nats_project();
    let out = project
        .command(&["worker", "--nats-url", "nats://127.0.0.1:9", "--name", "w"])
        .env("CLAUDE_PATH", "/nonexistent/claude")
        .env("CODEX_PATH", "/nonexistent/codex")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CLAUDE_PATH") && stderr.contains("/nonexistent/claude"),
        "{stderr}"
    );
    let out = project
        .command(&["worker", "--nats-url", "nats://127.0.0.1:9", "--name", " "])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--name is empty"), "{stderr}");
}

/// A worker's folder holds the attempts' specs (the notebook, the context, the remote's
/// address): made for its user alone, and one that others may enter is refused, as the
/// daemon's state directory is (it was made 0755, its spec files 0644).
#[test]
fn a_workers_folder_is_its_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let project = nats_project();
    let state = project.root.join("worker-state");
    let out = project
        .command(&["worker", "--nats-url", "nats://127.0.0.1:9", "--name", "w"])
        .env("SAMOCODE_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("worker")), 0o700);
    // Its default folders as an earlier build made them (0755): made private, not refused
    // (a worker restarted by systemd after an upgrade refused them for ever).
    let old = project.root.join("old-state");
    std::fs::create_dir_all(old.join("worker")).unwrap();
    for dir in [&old, &old.join("worker")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = project
        .command(&["worker", "--nats-url", "nats://127.0.0.1:9", "--name", "w"])
        .env("SAMOCODE_STATE_DIR", &old)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    assert_eq!((mode(&old), mode(&old.join("worker"))), (0o700, 0o700));
    let open = project.root.join("open-worker");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = open.display().to_string();
    let out = project
        .command(&[
            "worker",
            "--nats-url",
            "nats://127.0.0.1:9",
            "--name",
            "w",
            "--dir",
            &dir,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&dir) && stderr.contains("chmod 700"),
        "{stderr}"
    );
}

/// A worker stopped politely (SIGTERM: `systemctl restart`) gives its running attempt back
/// for another worker to run as its next epoch: nothing is journaled for the stopped run and
/// no retry is used (it was journaled `crashed`, and three restarts failed the session).
#[test]
fn a_worker_stopped_with_sigterm_gives_its_attempt_back() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project
        .env("SAMOCODE_FAKE", "investigation=slow:4")
        .env("SAMOCODE_KILL_GRACE", "1s");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (mut first, _) = running_on_one_worker(&project, &nats.url, "restart");
    let second = worker(&project, &nats.url, "host-2", Some("host-2"));
    super::fixture::signal(first.child.id(), nix::sys::signal::Signal::SIGTERM);
    let stopped = first.child.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
    let session = project.session("restart");
    wait_for(Duration::from_secs(60), "the questions", || {
        session.state()["status"]["for"] == "qa_answers"
    });
    let logs = all_logs(&project, &[first, second]);
    let rows = session.jsonl("_iterations.jsonl");
    let investigation: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["phase"] == "investigation")
        .collect();
    assert_eq!(investigation.len(), 1, "{rows:#?}\n{logs}");
    assert_eq!(investigation[0]["outcome"], "ok", "{rows:#?}");
    assert_eq!(investigation[0]["host"], "host-2", "{rows:#?}");
    assert!(rows.iter().all(|r| r["outcome"] != "crashed"), "{rows:#?}");
    for (all, same) in project.concurrency() {
        assert!(all <= 1 && same <= 1, "{:?}", project.concurrency());
    }
}

/// A NATS server that lost its JetStream store (restarted empty) gets the streams and the
/// consumer back from the daemon and the workers, which go on: a session whose attempt was
/// queued when the store went runs it, and a new session runs (it had failed at once with
/// "no stream found", and the other stayed running with no agent anywhere).
#[test]
fn a_nats_server_that_lost_its_store_is_set_up_again() {
    let mut nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_MAX_RETRIES", "3");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    // No worker yet: the first session's attempt waits in the queue the server will lose.
    project
        .run(&["start", "--session", "queued", "--dive", "d", "--task", "t"])
        .expect(0);
    let queued = project.session("queued");
    wait_for(Duration::from_secs(30), "the attempt in flight", || {
        queued.path("_state.json").exists() && !queued.state()["in_flight"].is_null()
    });
    // (Its spec published: a restart cutting the publish itself fails that attempt, which is
    // retried, a case of its own.)
    std::thread::sleep(Duration::from_secs(2));
    nats.restart_empty();
    let workers = [worker(&project, &nats.url, "host-1", Some("host-1"))];
    project
        .run(&["start", "--session", "later", "--dive", "d", "--task", "t"])
        .expect(0);
    let later = project.session("later");
    let deadline = Instant::now() + Duration::from_secs(120);
    while ![&queued, &later]
        .iter()
        .all(|s| s.state()["status"]["for"] == "qa_answers")
    {
        assert!(
            Instant::now() < deadline,
            "both sessions at their questions: {:#?}\n{}",
            project.status(),
            all_logs(&project, &workers)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = all_logs(&project, &workers);
    // The session started after the loss runs as any; the one queued before it ran its
    // attempt once a worker took it again.
    let rows = later.jsonl("_iterations.jsonl");
    assert!(
        rows.iter().all(|r| r["outcome"] == "ok"),
        "{rows:#?}\n{logs}"
    );
    let rows = queued.jsonl("_iterations.jsonl");
    assert!(
        rows.iter()
            .any(|r| r["phase"] == "investigation" && r["outcome"] == "ok"),
        "{rows:#?}\n{logs}"
    );
}

/// A server that loses its store while a worker runs an attempt: the worker's end, published
/// into the streams made anew, is followed from their start, and the attempt ends with it,
/// run once. (The daemon had followed the new stream from the old one's sequence, missed the
/// end, and waited for the time limit, which failed the attempt.)
#[test]
fn an_attempt_running_when_the_server_lost_its_store_ends_with_its_worker() {
    let mut nats = NatsServer::start();
    let mut project = nats_project();
    project
        .env("CLAUDE_TIMEOUT", "90s")
        .env("SAMOCODE_MAX_RETRIES", "1")
        .env("SAMOCODE_FAKE", "investigation=chatty:9");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (workers, _agent) = running_on_one_worker(&project, &nats.url, "lost");
    // Most of its output is read before the loss: the new stream's few events after it (the
    // end among them) come at sequences the daemon had read past in the old one.
    std::thread::sleep(Duration::from_secs(7));
    nats.restart_empty();
    let session = project.session("lost");
    wait_for(Duration::from_secs(60), "the questions", || {
        session.state()["status"]["for"] == "qa_answers"
            || session.state()["status"]["state"] == "failed"
    });
    let rows = session.jsonl("_iterations.jsonl");
    let investigation: Vec<_> = rows
        .iter()
        .filter(|r| r["phase"] == "investigation")
        .collect();
    assert_eq!(
        investigation.len(),
        1,
        "{rows:#?}\n{}",
        all_logs(&project, std::slice::from_ref(&workers))
    );
    assert_eq!(investigation[0]["outcome"], "ok", "{rows:#?}");
}

/// An attempt's time limit counts from a worker's start, not from its wait in the queue: an
/// attempt queued longer than the limit (every worker busy, or none yet) runs when a worker
/// takes it (it was stopped as timed out before any agent ran, and the session failed).
#[test]
fn an_attempts_time_limit_does_not_count_its_wait_in_the_queue() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project
        .env("CLAUDE_TIMEOUT", "4s")
        .env("SAMOCODE_MAX_RETRIES", "1")
        .env("SAMOCODE_FAKE", "investigation=slow:1");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    project
        .run(&["start", "--session", "waits", "--dive", "d", "--task", "t"])
        .expect(0);
    // Longer than the limit with no worker to take it.
    std::thread::sleep(Duration::from_secs(6));
    let session = project.session("waits");
    assert_eq!(
        session.state()["status"]["state"],
        "running",
        "still queued"
    );
    let workers = [worker(&project, &nats.url, "host-1", Some("host-1"))];
    wait_for(Duration::from_secs(60), "the questions", || {
        session.state()["status"]["for"] == "qa_answers"
    });
    let rows = session.jsonl("_iterations.jsonl");
    assert!(
        rows.iter().all(|r| r["outcome"] == "ok"),
        "{rows:#?}\n{}",
        all_logs(&project, &workers)
    );
    // Nor does the time budget: the first attempt ran about 1 s of its 6 s and more.
    let seconds = rows[0]["seconds"].as_f64().unwrap();
    assert!(seconds < 4.0, "{rows:#?}");
}

/// Makes the work queue and its consumer as samocode does, except that JetStream gives an
/// attempt to workers at most `deliveries` times (samocode's own queue says 10): a queue an
/// operator made, where the end of the deliveries comes soon.
fn queue_giving_each_attempt(url: &str, deliveries: i64) {
    make_queue(url, deliveries, false);
}

/// Makes the work queue's consumer as samocode does (`deliveries`: its `max_deliver`), after
/// deleting the one there when `again` (an operator's reset: the consumer made again counts
/// every delivery afresh).
fn make_queue(url: &str, deliveries: i64, again: bool) {
    use async_nats::jetstream::{consumer, stream};
    use samocode::executor::nats::{WORK_STREAM, WORK_SUBJECT, WORKERS};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_token(TOKEN.into())
            .connect(url)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let work = js
            .get_or_create_stream(stream::Config {
                name: WORK_STREAM.into(),
                subjects: vec![WORK_SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .unwrap();
        if again {
            work.delete_consumer(WORKERS).await.unwrap();
        }
        work.get_or_create_consumer(
            WORKERS,
            consumer::pull::Config {
                durable_name: Some(WORKERS.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(3),
                max_deliver: deliveries,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    });
}

/// A delivery count that starts again at 1 (the consumer made again, or a server whose
/// consumer state lost the delivery) for an attempt whose worker died mid-run: the next worker
/// took that delivery for a second copy of an attempt someone else ran, acked it and ran
/// nothing, and the session waited for the attempt until its time limit. The claim its first
/// worker left says it is the same message: it runs, as the next epoch.
#[test]
fn an_attempt_whose_worker_died_runs_again_when_its_deliveries_are_counted_afresh() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:8");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (first, agent) = running_on_one_worker(&project, &nats.url, "afresh");
    // SIGKILL: its runner stops the agent when it dies.
    drop(first);
    wait_for(Duration::from_secs(15), "the first agent gone", || {
        !alive(agent)
    });
    make_queue(&nats.url, 10, true);
    let second = worker(&project, &nats.url, "host-2", Some("host-2"));
    let session = project.session("afresh");
    until_asked(&project, &session, std::slice::from_ref(&second), 90, || {});
    let log = all_logs(&project, std::slice::from_ref(&second));
    assert!(log.contains("given to another worker"), "{log}");
    assert!(!log.contains("not run key="), "{log}");
}

/// The queue's consumer made again while a worker runs an attempt (an operator's reset): the
/// new consumer hands the unacked message out again, counted as a first delivery. The worker
/// that claimed it still runs it (its events go on), so the delivery is left to it, and one
/// agent runs at a time.
#[test]
fn a_consumer_made_again_while_its_attempt_runs_does_not_run_it_twice() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:20");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (worker, _agent) = running_on_one_worker(&project, &nats.url, "remade");
    make_queue(&nats.url, 10, true);
    let workers = [worker];
    let session = project.session("remade");
    until_asked(&project, &session, &workers, 90, || {
        assert!(
            running(&workers) <= 1,
            "two agents at once: {}",
            all_logs(&project, &workers)
        );
    });
    let log = all_logs(&project, &workers);
    assert!(log.contains("still runs it"), "{log}");
    assert!(!log.contains("stale result"), "{log}");
}

/// A worker frozen (SIGSTOP, a paused machine) past its AckWait: the attempt goes to the other
/// worker as the next epoch. Woken, the frozen one stops its agent at once (it ran it to the
/// end, beside the next epoch's) and does not ack the message, which was the other's now:
/// its ack took the attempt from the queue, and when the other worker died too nothing ran
/// the attempt again until its time limit.
#[test]
fn a_worker_frozen_past_its_ack_wait_stops_its_agent_and_leaves_the_message() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:20");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (frozen, agent) = running_on_one_worker(&project, &nats.url, "frozen");
    let other = worker(&project, &nats.url, "host-2", Some("host-2"));
    let pid = frozen.child.id();
    super::fixture::signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let second = other.dir.join("work");
    wait_for(Duration::from_secs(60), "the next epoch on host-2", || {
        !agents_under(&second).is_empty()
    });
    super::fixture::signal(pid, nix::sys::signal::Signal::SIGCONT);
    wait_for(
        Duration::from_secs(15),
        "the frozen worker's agent stopped",
        || !alive(agent),
    );
    // The other dies too: the attempt must still be in the queue, for the woken worker.
    drop(other);
    let session = project.session("frozen");
    let workers = [frozen];
    until_asked(&project, &session, &workers, 120, || {});
    let log = all_logs(&project, &workers);
    assert!(log.contains("whole AckWait"), "{log}");
}

/// A second copy of an attempt's work message (published again past the queue's dedup
/// window: a daemon restarted much later) while a worker runs the first is acked and never
/// run beside it: the first worker's claim names the other message.
#[test]
fn a_second_copy_of_a_running_attempts_message_is_not_run_beside_it() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:6");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let (first, _agent) = running_on_one_worker(&project, &nats.url, "copy");
    copy_first_work_message(&nats.url);
    let second = worker(&project, &nats.url, "host-2", Some("host-2"));
    let workers = [first, second];
    let session = project.session("copy");
    until_asked(&project, &session, &workers, 60, || {
        assert!(running(&workers) <= 1, "{}", all_logs(&project, &workers));
    });
    let log = all_logs(&project, &workers);
    assert!(
        log.contains("not run") && log.contains("another copy of its work message runs"),
        "{log}"
    );
    assert!(!log.contains("given to another worker"), "{log}");
}

/// Publishes the work queue's first message again, as a message of its own.
fn copy_first_work_message(url: &str) {
    use samocode::executor::nats::{WORK_STREAM, WORK_SUBJECT};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_token(TOKEN.into())
            .connect(url)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let work = js.get_stream(WORK_STREAM).await.unwrap();
        let first = work.get_raw_message(1).await.unwrap();
        js.publish(WORK_SUBJECT, first.payload)
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// A daemon whose clock is 45 minutes ahead of the NATS server's: every attempt was past its
/// 30-minute limit at its start (its time counted from the server's stamp of the worker's
/// start), and the session failed after three attempts. A fresh attempt's time counts from
/// when the daemon hears of its start.
#[test]
fn a_daemons_clock_ahead_of_the_nats_servers_does_not_shorten_the_time_limit() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    project.env("SAMOCODE_FAKE", "investigation@1=slow:3");
    project
        .env(
            "LD_PRELOAD",
            &super::fixture::faketime_library().display().to_string(),
        )
        .env("FAKETIME", "+45m")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    for name in ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"] {
        project.unset(name);
    }
    let worker = worker(&project, &nats.url, "host-1", Some("host-1"));
    project
        .run(&["start", "--session", "skew", "--dive", "d", "--task", "t"])
        .expect(0);
    let session = project.session("skew");
    until_asked(&project, &session, std::slice::from_ref(&worker), 60, || {});
    let rows = session.jsonl("_iterations.jsonl");
    assert_eq!(rows[0]["outcome"], "ok", "{rows:#?}");
}

/// An attempt its workers give back every time (here: the one worker cannot write its spec
/// file) ends with why once the queue will give it no more, rather than wait for ever in a
/// queue that no longer hands it to anyone.
#[test]
fn an_attempt_given_back_until_its_deliveries_run_out_ends_saying_why() {
    let nats = NatsServer::start();
    queue_giving_each_attempt(&nats.url, 2);
    let mut project = nats_project();
    project.env("SAMOCODE_MAX_RETRIES", "1");
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let worker = worker(&project, &nats.url, "host-1", Some("host-1"));
    let specs = worker.dir.join("specs");
    wait_for(Duration::from_secs(20), "the worker's folders", || {
        specs.is_dir()
    });
    std::fs::remove_dir(&specs).unwrap();
    std::fs::write(&specs, "not a folder").unwrap();
    project
        .run(&[
            "start",
            "--session",
            "nowhere",
            "--dive",
            "d",
            "--task",
            "t",
        ])
        .expect(0);
    let session = project.session("nowhere");
    let asked = Instant::now() + Duration::from_secs(60);
    while !session.path("_iterations.jsonl").exists() {
        assert!(
            Instant::now() < asked,
            "the attempt never ended: {}\n{}",
            session.read("session.log"),
            all_logs(&project, std::slice::from_ref(&worker))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = session.jsonl("_iterations.jsonl");
    let detail = rows[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("host-1") && detail.contains("spec file") && detail.contains("2 times"),
        "{rows:#?}"
    );
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}

/// A server that answers every HTTP request with a 500, and keeps the `Authorization`
/// headers it was sent.
fn refusing_git_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim() != "" {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("authorization:") || lower.starts_with("x-corp:") {
                    kept.lock().unwrap().push(line.trim().to_string());
                }
                line.clear();
            }
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 500 no\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("127.0.0.1:{}", address.port()), seen)
}

/// A token in the `samocode` remote's address is on no command line and in no failure of
/// the daemon's own push of the base commit (not in the journal, the state, the next
/// attempt's context, the log); git gets it as the server's `Authorization` header.
#[test]
fn a_token_in_the_remotes_address_is_not_in_a_failed_push_of_the_base() {
    use base64::Engine as _;
    let nats = NatsServer::start();
    let (server, seen) = refusing_git_server();
    let mut project = nats_project();
    // git settings of the person's own, given through the environment: kept beside the
    // credentials.
    project
        .env("SAMOCODE_MAX_RETRIES", "2")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env("GIT_CONFIG_VALUE_0", "X-Corp: kept");
    let url = format!("http://x-access-token:ghp_SECRET456@{server}/repo.git");
    super::fixture::git(&project.repo, &["remote", "add", "samocode", &url]);
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    project
        .run(&["start", "--session", "pushed", "--dive", "d", "--task", "t"])
        .expect(0);
    let session = project.session("pushed");
    wait_for(Duration::from_secs(60), "the session to fail", || {
        session.path("_state.json").exists() && session.state()["status"]["state"] == "failed"
    });
    let rows = session.jsonl("_iterations.jsonl");
    let detail = rows[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("http://{server}/repo.git"))
            && detail.contains("not handed to the workers")
            && !detail.contains("how the agent ended"),
        "{rows:#?}"
    );
    assert_eq!(
        files_holding(&project.root, "ghp_SECRET456"),
        vec![project.repo.join(".git/config")],
        "the token is only where the person put it"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:ghp_SECRET456");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("Authorization: Basic {basic}")),
        "{seen:?}"
    );
    assert!(seen.contains(&"X-Corp: kept".to_string()), "{seen:?}");
}

/// A user and password in the NATS address go to the client as its credentials, the address
/// without them: the client's own debug log printed them.
#[test]
fn a_password_in_the_nats_address_is_in_no_log_even_at_debug() {
    let nats = NatsServer::start();
    let project = nats_project();
    let url = nats.url.replace("nats://", "nats://nuser:SECRET-NATSU@");
    let out = project
        .command(&["worker", "--nats-url", &url, "--name", "w"])
        .env("RUST_LOG", "debug")
        .env_remove("SAMOCODE_NATS_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("authorization"), "{said}");
    assert!(!said.contains("SECRET-NATSU"), "{said}");
}

/// The daemon's own push of an attempt's base to a shared `samocode` remote runs none of the
/// repository's hooks (a husky `pre-push: npm test` ran at every attempt, where no `stop`
/// reached it).
#[test]
fn the_daemons_push_to_a_shared_remote_runs_no_hook() {
    use std::os::unix::fs::PermissionsExt;
    let nats = NatsServer::start();
    let mut project = nats_project();
    let bare = shared_repository(&project);
    let url = bare.display().to_string();
    super::fixture::git(&project.repo, &["remote", "add", "samocode", &url]);
    let ran = project.root.join("pre-push-ran");
    let hook = project.repo.join(".git/hooks/pre-push");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho ran >> '{}'\n", ran.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    let workers = [worker(&project, &nats.url, "host-1", Some("host-1"))];
    project
        .run(&["start", "--session", "hooked", "--dive", "d", "--task", "t"])
        .expect(0);
    until_asked(&project, &project.session("hooked"), &workers, 60, || {});
    let pushed = super::fixture::git(&bare, &["for-each-ref"]);
    assert!(pushed.contains("/base"), "{pushed}");
    assert!(!ran.exists(), "the pre-push hook ran");
}

/// A token in the `samocode` remote's URL went into every attempt's spec, kept in the NATS
/// stream (or a Kubernetes ConfigMap) for anyone who can read it: the spec carries the URL
/// without it, and the workers fetch with credentials of their own.
#[test]
fn a_token_in_the_remotes_address_is_not_sent_to_the_workers() {
    let nats = NatsServer::start();
    let mut project = nats_project();
    let bare = shared_repository(&project);
    // The server, as git on the daemon's machine and on the worker reaches it.
    project
        .env("GIT_CONFIG_COUNT", "1")
        .env(
            "GIT_CONFIG_KEY_0",
            &format!("url.{}.insteadOf", bare.display()),
        )
        .env(
            "GIT_CONFIG_VALUE_0",
            "http://git.example.invalid/shared.git",
        );
    let url = "http://x-access-token:ghp_SECRET789@git.example.invalid/shared.git";
    super::fixture::git(&project.repo, &["remote", "add", "samocode", url]);
    let _daemon = project.daemon(&["--executor", "nats", "--nats-url", &nats.url]);
    project
        .run(&["start", "--session", "sent", "--dive", "d", "--task", "t"])
        .expect(0);
    // No worker yet: the attempt's spec waits in the stream, as the server keeps it.
    let s = project.session("sent");
    wait_for(Duration::from_secs(60), "the attempt sent", || {
        s.path("_state.json").exists() && s.state()["in_flight"].is_object()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        files_holding(nats._dir.path(), "ghp_SECRET789"),
        Vec::<PathBuf>::new(),
        "the token is in the NATS store"
    );
    let workers = [worker(&project, &nats.url, "host-1", Some("host-1"))];
    until_asked(&project, &s, &workers, 60, || {});
    assert_eq!(
        files_holding(&project.root, "ghp_SECRET789"),
        vec![project.repo.join(".git/config")],
        "the token is only where the person put it"
    );
}
