//! The protocol work the worker does on every iteration: parse and validate a signal, rewrite
//! the worker's lines of a long notebook, read `_qa.md`. Run with `cargo bench`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use samocode::protocol::overview::{self, WorkerLines};
use samocode::protocol::qa::QaDoc;
use samocode::protocol::{Phase, Signal};

fn notebook(entries: usize) -> String {
    let mut text = String::from(
        "# Session: bench\n\n## Status\nPhase: implementation\nIteration: 3\nTotal Iterations: 40\nBlocked: no\nLast Action: x\nNext: y\n\n## Dive\nd\n\n## Flow Log\n",
    );
    for i in 0..entries {
        text.push_str(&format!("- [{i:03} @ 11-24 10:00] implementation: did step {i} with a fairly long description of it\n"));
    }
    text
}

fn protocol(c: &mut Criterion) {
    let signal =
        r#"{"status": "continue", "phase": "testing", "note": "unknown fields are ignored"}"#;
    c.bench_function("signal parse + validate", |b| {
        b.iter(|| {
            Signal::parse(black_box(signal))
                .unwrap()
                .validate(Phase::Implementation)
                .unwrap()
        })
    });

    let long = notebook(2000);
    let lines = WorkerLines {
        phase: Phase::Testing,
        iteration: 1,
        total_iterations: 41,
        blocked: None,
    };
    c.bench_function("overview rewrite, 2000 Flow Log lines", |b| {
        b.iter(|| overview::apply_worker_lines(black_box(&long), &lines))
    });
    c.bench_function("overview append Flow Log, 2000 lines", |b| {
        b.iter(|| {
            overview::append_flow_log(
                black_box(&long),
                41,
                "11-24 10:00",
                "testing: ran the suite",
            )
        })
    });

    let mut qa = String::from("# Questions\n");
    for i in 1..=50 {
        qa.push_str(&format!(
            "\n## Q{i}: question {i}?\nOptions: a | b\nSuggested: a\nAnswer:\n"
        ));
    }
    c.bench_function("qa parse, 50 questions", |b| {
        b.iter(|| QaDoc::parse(black_box(&qa)))
    });
}

criterion_group!(benches, protocol);
criterion_main!(benches);
