//! A scripted launcher: each launch hands the test a [`FakeAgent`] to play, and every signal
//! samocode sends to the agent's group is written in one ordered journal of events
//! (`launch 1`, `term 1`, `kill 1`, ...), so a test can assert what happened in which order.
//! A fake obeys SIGKILL always and SIGTERM when told to; it can be made to panic on SIGTERM,
//! which is a panic inside the AgentProcess actor that sends it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use samocode::agent::AttemptSpec;
use samocode::agent::launch::{ExitKind, Group, Launched};
use samocode::config::{AgentSettings, BudgetSettings, Project, Provider, RetryPolicy};
use samocode::executor::{AttemptExecutor, Host};
use samocode::notify::outbox::OpenMessage;
use samocode::notify::{Notice, Pending, SendError, SessionEvent, Sink};
use samocode::protocol::budget::Budget;
use samocode::protocol::{Phase, SessionState};
use samocode::session::SessionStore;
use samocode::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

/// How a fake takes SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerm {
    Exit,
    Ignore,
    Panic,
}

/// The ordered journal of what happened to every fake.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn push(&self, event: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One launched agent's shared parts: its stdout writer and its exit, taken when it ends.
struct Body {
    out: Option<DuplexStream>,
    exit: Option<oneshot::Sender<ExitKind>>,
}

impl Body {
    fn end(&mut self, how: ExitKind) {
        self.out.take();
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(how);
        }
    }
}

/// The test's handle on one launched agent.
pub struct FakeAgent {
    pub number: usize,
    pub spec: AttemptSpec,
    body: Arc<Mutex<Body>>,
    journal: Journal,
}

impl FakeAgent {
    /// Prints a line on stdout.
    pub async fn say(&self, line: &str) {
        let out = self.body.lock().unwrap().out.take();
        if let Some(mut out) = out {
            out.write_all(format!("{line}\n").as_bytes()).await.unwrap();
            self.body.lock().unwrap().out = Some(out);
        }
    }

    /// Writes `signal` as `_signal.json` and exits 0.
    pub fn finish(&self, signal: &str) {
        std::fs::write(self.spec.session_dir.join("_signal.json"), signal).unwrap();
        self.exit(0);
    }

    /// Exits with `code` (closing stdout).
    pub fn exit(&self, code: i32) {
        self.journal.push(format!("exit {} {code}", self.number));
        self.body.lock().unwrap().end(ExitKind::Code(code));
    }

    /// Ends without anyone learning how: its stdout closes and its exit is never told (a
    /// remote engine that became unreachable).
    pub fn lose(&self) {
        self.journal.push(format!("lost {}", self.number));
        let mut body = self.body.lock().unwrap();
        body.out.take();
        body.exit.take();
    }

    /// True while it has not ended.
    pub fn alive(&self) -> bool {
        self.body.lock().unwrap().exit.is_some()
    }
}

struct FakeGroup {
    number: usize,
    body: Arc<Mutex<Body>>,
    journal: Journal,
    on_term: OnTerm,
}

impl Group for FakeGroup {
    fn signal(&self, signal: Signal) {
        let mut body = self.body.lock().unwrap_or_else(|p| p.into_inner());
        let alive = body.exit.is_some();
        match signal {
            Signal::SIGKILL => {
                if alive {
                    self.journal.push(format!("kill {}", self.number));
                }
                body.end(ExitKind::Signal("SIGKILL".into()));
            }
            Signal::SIGTERM if alive => {
                self.journal.push(format!("term {}", self.number));
                match self.on_term {
                    OnTerm::Exit => body.end(ExitKind::Signal("SIGTERM".into())),
                    OnTerm::Ignore => {}
                    OnTerm::Panic => {
                        drop(body);
                        panic!("the fake agent's group panics on SIGTERM");
                    }
                }
            }
            _ => {}
        }
    }

    fn sweep(&self, _settled: bool) {}

    fn describe(&self) -> String {
        format!("fake group {}", self.number)
    }
}

/// A launched fake: its session folder, its body and its number.
type Live = (PathBuf, Arc<Mutex<Body>>, usize);

/// The launcher: hands each launched agent to the test through a channel.
pub struct FakeLauncher {
    agents: mpsc::UnboundedSender<FakeAgent>,
    journal: Journal,
    on_term: Mutex<OnTerm>,
    count: Mutex<usize>,
    /// Live fakes by session folder, for `kill_leftovers`.
    live: Mutex<Vec<Live>>,
}

impl FakeLauncher {
    pub fn set_on_term(&self, on_term: OnTerm) {
        *self.on_term.lock().unwrap() = on_term;
    }
}

impl AttemptExecutor for FakeLauncher {
    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
        let number = {
            let mut count = self.count.lock().unwrap();
            *count += 1;
            *count
        };
        let (out, read) = tokio::io::duplex(64 * 1024);
        let (exit_tx, exit_rx) = oneshot::channel();
        let body = Arc::new(Mutex::new(Body {
            out: Some(out),
            exit: Some(exit_tx),
        }));
        self.journal.push(format!("launch {number}"));
        self.live
            .lock()
            .unwrap()
            .push((spec.session_dir.clone(), body.clone(), number));
        let _ = self.agents.send(FakeAgent {
            number,
            spec: spec.clone(),
            body: body.clone(),
            journal: self.journal.clone(),
        });
        Ok(Launched {
            started: None,
            group: Box::new(FakeGroup {
                number,
                body,
                journal: self.journal.clone(),
                on_term: *self.on_term.lock().unwrap(),
            }),
            output: Box::pin(read),
            errors: None,
            exit: Box::pin(async move {
                exit_rx
                    .await
                    .map_err(|_| std::io::Error::other("the fake agent was dropped"))
            }),
            input: None,
            host: Host::local(),
        })
    }

    fn kill_leftovers(&self, session_dir: &Path) -> Vec<i32> {
        let mut killed = Vec::new();
        for (dir, body, number) in self.live.lock().unwrap().iter() {
            let mut body = body.lock().unwrap_or_else(|p| p.into_inner());
            if dir == session_dir && body.exit.is_some() {
                self.journal.push(format!("leftover killed {number}"));
                body.end(ExitKind::Signal("SIGKILL".into()));
                killed.push(*number as i32);
            }
        }
        killed
    }
}

/// A sink that keeps every event, for asserting what people were told.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    pub fn headlines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Sink for Recorder {
    fn render(&self, event: &SessionEvent) -> Option<Notice> {
        Some(Notice {
            session: String::new(),
            open: false,
            html: event.headline(),
            buttons: Vec::new(),
            dir: None,
            sent: Vec::new(),
        })
    }

    fn send<'a>(&'a self, notice: &'a Notice) -> Pending<'a, Result<Vec<i64>, SendError>> {
        self.0.lock().unwrap().push(notice.html.clone());
        Box::pin(async { Ok(vec![1]) })
    }

    fn close<'a>(
        &'a self,
        _message: &'a OpenMessage,
        _line: &'a str,
    ) -> Pending<'a, Result<(), SendError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A project on disk with one session already in investigation, and a supervisor driving it
/// with the fake launcher.
pub struct World {
    _dir: tempfile::TempDir,
    pub project: Project,
    pub session: PathBuf,
    pub journal: Journal,
    pub launcher: Arc<FakeLauncher>,
    pub agents: mpsc::UnboundedReceiver<FakeAgent>,
    pub notices: Recorder,
    pub supervisor: ractor::ActorRef<SupervisorMsg>,
}

pub const RETRY_DELAY: Duration = Duration::from_secs(5);
pub const KILL_GRACE: Duration = Duration::from_secs(10);
pub const TIMEOUT: Duration = Duration::from_secs(1800);

impl World {
    pub async fn new(keep_parked: bool) -> World {
        World::with_budgets(keep_parked, BudgetSettings::default()).await
    }

    /// The same, with budgets and prices.
    pub async fn with_budgets(keep_parked: bool, budgets: BudgetSettings) -> World {
        World::build(keep_parked, budgets, Provider::Claude).await
    }

    /// The same, with codex's output format.
    pub async fn codex(budgets: BudgetSettings) -> World {
        World::build(true, budgets, Provider::Codex).await
    }

    async fn build(keep_parked: bool, budgets: BudgetSettings, provider: Provider) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in ["repo", "worktrees", "sessions"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let file = root.join(".samocode");
        std::fs::write(
            &file,
            "MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\n",
        )
        .unwrap();
        let project = Project {
            file,
            main_repo: root.join("repo"),
            worktrees: root.join("worktrees"),
            sessions: root.join("sessions"),
            base_branch: None,
            branch_prefix: None,
        };
        // A session past init, with its worktree a plain folder: no git is needed.
        let session = past_init(&project, "26-11-24-life");

        let journal = Journal::default();
        let (tx, agents) = mpsc::unbounded_channel();
        let launcher = Arc::new(FakeLauncher {
            agents: tx,
            journal: journal.clone(),
            on_term: Mutex::new(OnTerm::Exit),
            count: Mutex::new(0),
            live: Mutex::new(Vec::new()),
        });
        let notices = Recorder::default();
        let supervisor = SupervisorActor {
            agent: AgentSettings {
                provider,
                claude_path: PathBuf::from("fake"),
                claude_model: None,
                claude_max_turns: 10,
                codex_path: PathBuf::from("codex"),
                codex_model: None,
                profiles: Default::default(),
                effort: None,
                timeout: TIMEOUT,
                kill_grace: KILL_GRACE,
                stall_timeout: None,
                env: Default::default(),
            },
            retry: RetryPolicy {
                max_attempts: 3,
                first_delay: RETRY_DELAY,
                max_delay: Duration::from_secs(60),
            },
            keep_parked,
            state_dir: None,
            sink: Some(Arc::new(notices.clone())),
            outbox: None,
            launcher: launcher.clone(),
            failpoints: Vec::new(),
            budgets: Arc::new(budgets),
        };
        let (supervisor, _) = ractor::Actor::spawn(
            None,
            supervisor,
            SupervisorArgs {
                max_parallel: 2,
                open_files: None,
                fleet_costs: Vec::new(),
            },
        )
        .await
        .unwrap();
        World {
            _dir: dir,
            project,
            session,
            journal,
            launcher,
            agents,
            notices,
            supervisor,
        }
    }

    /// Hands the session to the supervisor.
    pub async fn start(&self) {
        self.start_named("26-11-24-life", Budget::default()).await
    }

    /// Makes another session past init, as `new` makes the first; returns its folder.
    pub fn add_session(&self, folder: &str) -> PathBuf {
        past_init(&self.project, folder)
    }

    /// Hands the session in folder `name` to the supervisor with the budget `start --max-*`
    /// would give it.
    pub async fn start_named(&self, name: &str, budget: Budget) {
        let request = samocode::session::open::StartRequest {
            project: self.project.clone(),
            name: name.into(),
            dive: None,
            task: None,
            once: false,
            budget,
        };
        let started = self
            .supervisor
            .call(
                |reply| SupervisorMsg::StartSession { request, reply },
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        match started {
            ractor::rpc::CallResult::Success(Ok(_)) => {}
            ractor::rpc::CallResult::Success(Err(error)) => panic!("not started: {error}"),
            _ => panic!("the supervisor did not answer the start"),
        }
    }

    /// The next launched agent (time passes as the actors need it to).
    pub async fn next_agent(&mut self) -> FakeAgent {
        tokio::time::timeout(Duration::from_secs(24 * 3600), self.agents.recv())
            .await
            .expect("an agent is launched")
            .expect("the launcher is alive")
    }

    /// A person's command through the control requests, as the CLI sends it.
    pub async fn person(&self, command: samocode::session::person::PersonCommand) -> String {
        let request = samocode::control::Request::Person {
            dir: self.session.clone(),
            command,
            by: None,
        };
        match samocode::control::ask(&self.supervisor, request).await {
            samocode::control::Response::Done { message } => message,
            other => panic!("the command was refused: {other:?}"),
        }
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.session.join("_state.json")).unwrap())
            .unwrap()
    }

    pub fn rows(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.session.join("_iterations.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Lets simulated time pass with nothing else to do (the clock jumps timer to timer).
    pub async fn idle(&self, span: Duration) {
        tokio::time::sleep(span).await;
    }
}

/// Makes session `folder` as its init leaves it, its worktree git's files of one laid out by
/// hand (no git runs: the check before each attempt reads only them), and returns the
/// session's folder.
fn past_init(project: &Project, folder: &str) -> PathBuf {
    let session = project.sessions.join(folder);
    let tree = samocode::session::worktree::Worktree {
        path: project.worktrees.join(folder),
        branch: folder.to_string(),
    };
    samocode::session::worktree::lay_out_by_hand(&project.main_repo, &tree).unwrap();
    let store = SessionStore::create(&session).unwrap();
    let mut state = SessionState::new(&store.name(), "d", "t", jiff::Timestamp::now());
    state.worktree = Some(tree.path);
    state.branch = Some(tree.branch);
    // Its base known, as an init records it: no git runs to look for it (a git forked by one
    // test holds a copy of every open file, another test's session lock among them).
    state.base = Some(samocode::protocol::state::BaseRef {
        branch: "main".into(),
        commit: "0".repeat(40),
    });
    state.enter_phase(Phase::Investigation);
    store.save(&mut state).unwrap();
    session
}
