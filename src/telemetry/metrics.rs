//! Metrics over OTLP, when an endpoint is configured: what the fleet does and costs.
//!
//! The instruments come from the global meter provider, set by [`super::init`] before anything
//! records; with no endpoint it is OpenTelemetry's no-op provider, and [`enabled`] lets the
//! callers skip even gathering the figures.
//!
//! - `samocode.attempts` (counter): attempts by `samocode.outcome`, `samocode.phase`;
//! - `samocode.iterations` (counter): iterations begun, by `samocode.phase`;
//! - `gen_ai.client.token.usage` (counter, tokens): by `gen_ai.provider.name`,
//!   `gen_ai.request.model`, `gen_ai.token.type` (`input`, `output`);
//! - `samocode.cost` (counter, USD): by provider and model;
//! - `samocode.attempt.duration` (histogram, s): by outcome and phase;
//! - `samocode.agents.running`, `samocode.agents.queued` (gauges);
//! - `samocode.sessions` (gauge): sessions by `samocode.state`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

use crate::protocol::journal::IterationRow;

static ENABLED: AtomicBool = AtomicBool::new(false);

struct Instruments {
    attempts: Counter<u64>,
    iterations: Counter<u64>,
    tokens: Counter<u64>,
    cost: Counter<f64>,
    duration: Histogram<f64>,
    running: Gauge<u64>,
    queued: Gauge<u64>,
    sessions: Gauge<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("samocode");
        Instruments {
            attempts: meter
                .u64_counter("samocode.attempts")
                .with_description("Agent attempts, by outcome")
                .build(),
            iterations: meter
                .u64_counter("samocode.iterations")
                .with_description("Iterations begun, by phase")
                .build(),
            tokens: meter
                .u64_counter("gen_ai.client.token.usage")
                .with_unit("{token}")
                .build(),
            cost: meter.f64_counter("samocode.cost").with_unit("USD").build(),
            duration: meter
                .f64_histogram("samocode.attempt.duration")
                .with_unit("s")
                .build(),
            running: meter.u64_gauge("samocode.agents.running").build(),
            queued: meter.u64_gauge("samocode.agents.queued").build(),
            sessions: meter.u64_gauge("samocode.sessions").build(),
        }
    })
}

/// Called once the exporting provider is the global one.
pub(super) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// True when metrics are exported (worth gathering).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An attempt's row, as it is journaled.
pub fn attempt(row: &IterationRow) {
    if !enabled() {
        return;
    }
    let m = instruments();
    let phase = KeyValue::new("samocode.phase", row.phase.to_string());
    let outcome = KeyValue::new("samocode.outcome", row.outcome.name());
    m.attempts.add(1, &[outcome.clone(), phase.clone()]);
    if row.attempt == 1 {
        m.iterations.add(1, std::slice::from_ref(&phase));
    }
    let provider = KeyValue::new("gen_ai.provider.name", row.provider.clone());
    let model = KeyValue::new(
        "gen_ai.request.model",
        row.model.clone().unwrap_or_default(),
    );
    for (kind, count) in [("input", row.input_tokens), ("output", row.output_tokens)] {
        m.tokens.add(
            count,
            &[
                provider.clone(),
                model.clone(),
                KeyValue::new("gen_ai.token.type", kind),
            ],
        );
    }
    m.cost.add(row.cost_usd, &[provider, model]);
    m.duration.record(row.took(), &[outcome, phase]);
}

/// The daemon's figures: agents running and queued, sessions by state.
pub fn fleet(running: usize, queued: usize, sessions: &[(&'static str, u64)]) {
    if !enabled() {
        return;
    }
    let m = instruments();
    m.running.record(running as u64, &[]);
    m.queued.record(queued as u64, &[]);
    for (state, count) in sessions {
        m.sessions
            .record(*count, &[KeyValue::new("samocode.state", *state)]);
    }
}
