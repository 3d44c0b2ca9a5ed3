//! The dashboard's server-side rendering: the fleet page of 1,000 sessions read from their
//! folders on disk and rendered (what a first page load after a restart costs), the same page
//! rendered from the watcher's snapshot (every later load), and the page of one long session.
//! Run with `cargo bench --bench dashboard`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use samocode::dashboard::pages::{self, Filter, Frame};
use samocode::dashboard::session_page;
use samocode::dashboard::view::{LogTail, SessionView};
use samocode::dashboard::watcher::Fleet;
use samocode::protocol::journal::{AttemptOutcome, HistoryRow, IterationRow, Source};
use samocode::protocol::overview;
use samocode::protocol::{Phase, RunState, SessionState, WaitFor};
use samocode::supervisor::OwnedSession;

const STATES: [&str; 5] = ["running", "waiting", "blocked", "done", "queued"];

/// A session folder as the worker and the agent leave it, with `attempts` journal rows.
fn session(dir: &Path, name: &str, i: usize, attempts: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let now = Timestamp::now();
    let mut state = SessionState::new(name, "how does login work?", "add JWT login", now);
    state.phase = Phase::ALL[1 + i % 6];
    // Never behind its own journal (samocode refuses such a state as put back from a backup).
    state.iteration = ((i % 40) as u32 + 1).max(attempts as u32);
    state.phase_iteration = (i % 7) as u32 + 1;
    state.usage.cost_usd = i as f64 * 0.013;
    state.status = match STATES[i % STATES.len()] {
        "running" => RunState::Running,
        "waiting" => RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            since: now,
        },
        "blocked" => RunState::Blocked {
            reason: "tests need a database server".into(),
            needs: None,
            since: now,
        },
        "done" => RunState::Done {
            summary: Some("added it".into()),
            at: now,
        },
        _ => RunState::Queued,
    };
    std::fs::write(
        dir.join("_state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    let mut notebook = overview::render_new(name, "dive", "task", &state.worker_lines());
    for n in 0..attempts {
        notebook = overview::append_flow_log(
            &notebook,
            n as u32,
            "11-24 10:00",
            &format!("implementation: did step {n} of the plan"),
        );
    }
    std::fs::write(dir.join("_overview.md"), notebook).unwrap();
    let mut journal = String::new();
    let mut history = String::new();
    for n in 0..attempts {
        let start = now - jiff::SignedDuration::from_secs((attempts - n) as i64 * 120);
        let row = IterationRow {
            started_at: start,
            ended_at: start + jiff::SignedDuration::from_secs(90),
            seconds: Some(90.0),
            iteration: n as u32 + 1,
            attempt: 1,
            phase: Phase::ALL[1 + n * 6 / attempts.max(1)],
            provider: "claude".into(),
            host: None,
            model: Some("sonnet".into()),
            reported_model: None,
            profile: None,
            effort: None,
            exit_code: Some(0),
            exit_signal: None,
            outcome: if n % 9 == 8 {
                AttemptOutcome::Nonzero
            } else {
                AttemptOutcome::Ok
            },
            detail: None,
            input_tokens: 1000,
            output_tokens: 300,
            cached_input_tokens: 0,
            cost_usd: 0.0125,
            agent_session_id: None,
            log: "_logs/x.jsonl".into(),
        };
        journal.push_str(&serde_json::to_string(&row).unwrap());
        journal.push('\n');
        let signal = HistoryRow {
            at: row.ended_at,
            iteration: row.iteration,
            attempt: 1,
            source: Source::Agent,
            from: row.phase,
            to: Some(row.phase),
            status: "continue".into(),
            accepted: true,
            reason: None,
            outcome: "next".into(),
            by: None,
        };
        history.push_str(&serde_json::to_string(&signal).unwrap());
        history.push('\n');
    }
    std::fs::write(dir.join("_iterations.jsonl"), journal).unwrap();
    std::fs::write(dir.join("_signal_history.jsonl"), history).unwrap();
    std::fs::write(
        dir.join("11-24-10:00-plan-steps.md"),
        "# Plan\n\n## Phase 1: x\n- [x] 1.1 a\n- [ ] 1.2 b\n",
    )
    .unwrap();
}

fn fleet_page(fleet: &Fleet) -> String {
    pages::frame(
        Frame {
            title: "Fleet",
            page: "fleet",
            events: Some(format!("/events?since={}", fleet.generation)),
            flash: None,
        },
        pages::fleet(fleet, &Filter::default(), Timestamp::now()),
    )
    .into_string()
}

fn dashboard(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join(".samocode");
    let owned: Vec<OwnedSession> = (0..1000)
        .map(|i| {
            let name = format!("26-11-24-session-{i:04}");
            let dir = root.path().join("sessions").join(&name);
            session(&dir, &name, i, 3);
            OwnedSession {
                dir,
                project: project.clone(),
            }
        })
        .collect();

    let mut group = c.benchmark_group("dashboard");
    group.sample_size(20);
    group.bench_function(
        "fleet page, 1000 sessions read from disk and rendered",
        |b| b.iter(|| fleet_page(&Fleet::read(black_box(&owned), 8, 4))),
    );
    let fleet = Fleet::read(&owned, 8, 4);
    let html = fleet_page(&fleet);
    assert_eq!(html.matches("<tr id=").count(), 1000);
    group.bench_function(
        "fleet page, 1000 sessions rendered from the snapshot",
        |b| b.iter(|| fleet_page(black_box(&fleet))),
    );

    let long = root.path().join("sessions").join("26-11-24-long");
    session(&long, "26-11-24-long", 3, 500);
    group.bench_function("session page, 500 attempts read and rendered", |b| {
        b.iter(|| {
            let view = SessionView::read(black_box(&long), &project).unwrap();
            session_page::page(&view, &LogTail::default(), "csrf", None, Timestamp::now())
                .into_string()
        })
    });
    let view = SessionView::read(&long, &project).unwrap();
    group.bench_function("session page, 500 attempts rendered", |b| {
        b.iter(|| session_page::sections(black_box(&view), "csrf", Timestamp::now()))
    });
    group.finish();
}

criterion_group!(benches, dashboard);
criterion_main!(benches);
