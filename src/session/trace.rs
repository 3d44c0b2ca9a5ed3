//! A session's trace, shaped as people read it: one `session` span per run segment (from a
//! start or resume to the next park or end), one `iteration` span under it per iteration, one
//! `attempt` span under that per agent attempt, and a `gate` span from a wait for a person to
//! their decision. Attributes follow the OpenTelemetry GenAI conventions where they fit
//! (`gen_ai.*`); samocode's own are under `samocode.*`.
//!
//! The spans are roots of their own trees (`parent: None` for the session span): the actor's
//! own tracing context lives as long as the actor and would swallow them. With no exporter
//! configured, they are disabled spans and cost nothing but their creation.

use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::protocol::journal::{AttemptOutcome, IterationRow};
use crate::protocol::state::TraceRef;
use crate::protocol::{RunState, SessionState, WaitFor};

/// The open spans of a session's actor.
#[derive(Default)]
pub struct Trace {
    session: Option<Span>,
    iteration: Option<(u32, Span)>,
    /// The outcome of the iteration's latest attempt: recorded on its span once, when it ends.
    /// (Recorded at each attempt, a retried iteration's log lines said every outcome in turn:
    /// `samocode.outcome="nonzero" samocode.outcome="ok"`.)
    outcome: std::sync::Mutex<Option<&'static str>>,
    gate: Option<Span>,
    /// The ids of a session span opened since the last [`Trace::opened`], for the state.
    opened: Option<TraceRef>,
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// The session's figures at the end of a segment, on its span.
fn totals(session: &Span, state: &SessionState) {
    session.record("samocode.phase.exit", tracing::field::display(state.phase));
    session.record("samocode.cost_usd", state.usage.cost_usd);
    session.record("gen_ai.usage.input_tokens", state.usage.input_tokens);
    session.record("gen_ai.usage.output_tokens", state.usage.output_tokens);
}

impl Trace {
    /// Ends every open span: the session's actor goes (a `samocode run` ends at its gate, a
    /// daemon stops). A gate still open ends with it: the person decides later, in another
    /// process. The session's span carries `state`'s totals (its phase, cost and tokens), as
    /// a park's does.
    pub fn end(&mut self, state: Option<&SessionState>) {
        if let Some(gate) = self.gate.take() {
            gate.record("samocode.decision", "pending");
        }
        self.end_iteration();
        if let (Some(session), Some(state)) = (&self.session, state) {
            totals(session, state);
        }
        self.session = None;
    }

    /// Ends the iteration's span, with its outcome.
    fn end_iteration(&mut self) {
        let outcome = self
            .outcome
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (Some((_, iteration)), Some(outcome)) = (self.iteration.take(), outcome) {
            iteration.record("samocode.outcome", outcome);
        }
    }

    /// Whether the run segment's span stays unended once `state` is saved: the session runs
    /// on, or waits at a gate (the gate's span, under the session's, keeps it open until the
    /// decision). A state saved parked otherwise (blocked, failed, stopped, done) is followed
    /// by the park that ends the span, and one saved past its gate by the decision that ends
    /// it: saying "open" then would have a later process end it a second time.
    pub fn open_after(&self, state: &SessionState) -> bool {
        let waiting = matches!(state.status, RunState::Waiting { .. });
        match (&self.session, &self.gate) {
            (Some(_), _) => waiting || crate::session::open::Settled::of(state).is_none(),
            (None, Some(_)) => waiting,
            (None, None) => false,
        }
    }

    /// Ends, in place of the process that opened it, a segment's span that process never
    /// ended (it was killed or crashed; the saved state says the span was open): under the
    /// span's own ids, so that what was exported under it finds its parent, with the error
    /// status. It ends now: when the process died is not known. The attempts of that segment
    /// a take-over journaled as interrupted (`interrupted`) get their spans under it, with
    /// their figures, since that process never exported them.
    pub fn end_left_open(state: &SessionState, saved: &TraceRef, interrupted: &[IterationRow]) {
        use opentelemetry::trace::{Span as _, SpanId, Status, TraceId, Tracer as _};
        let (Ok(trace), Ok(span)) = (
            TraceId::from_hex(&saved.trace_id),
            SpanId::from_hex(&saved.span_id),
        ) else {
            return;
        };
        let tracer = opentelemetry::global::tracer("samocode");
        let mut builder = tracer.span_builder("session").with_attributes([
            opentelemetry::KeyValue::new("samocode.session", state.name.clone()),
            opentelemetry::KeyValue::new("samocode.phase.exit", state.phase.to_string()),
            opentelemetry::KeyValue::new("samocode.left_open", true),
        ]);
        if let Some(started) = saved.started {
            builder = builder.with_start_time(std::time::SystemTime::from(started));
        }
        let mut ended = crate::telemetry::with_ids(trace, span, || {
            builder.start_with_context(&tracer, &opentelemetry::Context::new())
        });
        ended.set_status(Status::error(
            "the process that ran this segment ended without closing it (killed or crashed); the next segment, linked to it, carries on",
        ));
        for row in interrupted {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::TraceContextExt as _;
            let parent = opentelemetry::Context::new().with_remote_span_context(
                opentelemetry::trace::SpanContext::new(
                    trace,
                    span,
                    opentelemetry::trace::TraceFlags::SAMPLED,
                    false,
                    Default::default(),
                ),
            );
            let mut attempt = tracer
                .span_builder("attempt")
                .with_start_time(std::time::SystemTime::from(row.started_at))
                .with_attributes([
                    KeyValue::new("samocode.session", state.name.clone()),
                    KeyValue::new("samocode.iteration", i64::from(row.iteration)),
                    KeyValue::new("samocode.attempt", i64::from(row.attempt)),
                    KeyValue::new("samocode.phase", row.phase.to_string()),
                    KeyValue::new("gen_ai.provider.name", row.provider.clone()),
                    KeyValue::new("samocode.outcome", row.outcome.name()),
                    KeyValue::new("samocode.cost_usd", row.cost_usd),
                    KeyValue::new("gen_ai.usage.input_tokens", row.input_tokens as i64),
                    KeyValue::new("gen_ai.usage.output_tokens", row.output_tokens as i64),
                ])
                .start_with_context(&tracer, &parent);
            attempt.end_with_timestamp(std::time::SystemTime::from(row.ended_at));
        }
        ended.end();
    }

    /// The innermost open span (the iteration's, else the session's), for what is logged
    /// while the session's actor works.
    pub fn current(&self) -> Span {
        match (&self.iteration, &self.session) {
            (Some((_, iteration)), _) => iteration.clone(),
            (None, Some(session)) => session.clone(),
            (None, None) => Span::none(),
        }
    }

    /// The span for a new attempt of the state's current iteration, under the iteration's
    /// span (opened here with the session's when they are not open yet).
    pub fn attempt(
        &mut self,
        state: &SessionState,
        provider: &str,
        model: &str,
        profile: &str,
        effort: &str,
    ) -> Span {
        let mut opened = None;
        let session = self
            .session
            .get_or_insert_with(|| {
                let span = tracing::info_span!(
                    parent: None,
                    "session",
                    "samocode.session" = %state.name,
                    "gen_ai.provider.name" = provider,
                    "samocode.phase.entry" = %state.phase,
                    "samocode.phase.exit" = Empty,
                    "samocode.cost_usd" = Empty,
                    "gen_ai.usage.input_tokens" = Empty,
                    "gen_ai.usage.output_tokens" = Empty,
                    trace_id = Empty,
                    "otel.status_description" = Empty,
                );
                // Exported: its trace id goes into the log lines written inside it, and the
                // last segment's trace is linked.
                let context = span.context().span().span_context().clone();
                if context.is_valid() {
                    span.record("trace_id", tracing::field::display(context.trace_id()));
                    if let Some(last) = state.last_trace.as_ref().and_then(link_to) {
                        span.add_link(last);
                    }
                    opened = Some(TraceRef {
                        trace_id: context.trace_id().to_string(),
                        span_id: context.span_id().to_string(),
                        started: Some(jiff::Timestamp::now()),
                        open: true,
                        pid: Some(std::process::id()),
                    });
                }
                span
            })
            .clone();
        if opened.is_some() {
            self.opened = opened;
        }
        if self
            .iteration
            .as_ref()
            .is_none_or(|(number, _)| *number != state.iteration)
        {
            self.end_iteration();
            // (The session's name is on its parent: a log line written inside both says it
            // once.)
            let span = tracing::info_span!(
                parent: &session,
                "iteration",
                "samocode.iteration" = state.iteration,
                "samocode.phase" = %state.phase,
                "samocode.profile" = profile,
                "gen_ai.request.model" = model,
                "samocode.effort" = effort,
                "samocode.signal.status" = Empty,
                "samocode.next_phase" = Empty,
                "samocode.outcome" = Empty,
            );
            self.iteration = Some((state.iteration, span));
        }
        let iteration = &self.iteration.as_ref().expect("opened above").1;
        tracing::info_span!(
            parent: iteration,
            "attempt",
            "samocode.session" = %state.name,
            "samocode.iteration" = state.iteration,
            "samocode.attempt" = state.attempt,
            "gen_ai.provider.name" = provider,
            "gen_ai.request.model" = model,
            "gen_ai.response.model" = Empty,
            "gen_ai.usage.input_tokens" = Empty,
            "gen_ai.usage.output_tokens" = Empty,
            "samocode.cost_usd" = Empty,
            "samocode.outcome" = Empty,
            "samocode.exit_code" = Empty,
            "samocode.exit_signal" = Empty,
            "samocode.host" = Empty,
            "samocode.adopted" = false,
            "otel.status_description" = Empty,
        )
    }

    /// The ids of the session span opened since the last call, to keep in the state.
    pub fn opened(&mut self) -> Option<TraceRef> {
        self.opened.take()
    }

    /// The attempt's figures on its span, and its outcome on the iteration's.
    pub fn attempt_over(&self, span: &Span, row: &IterationRow) {
        span.record("samocode.outcome", row.outcome.name());
        // An attempt that failed is an error in a trace viewer; one refused for a usage limit,
        // or stopped by samocode, is not.
        let failed = !matches!(
            row.outcome,
            AttemptOutcome::Ok | AttemptOutcome::UsageLimit | AttemptOutcome::Interrupted
        );
        if failed {
            let why = row.detail.as_deref().unwrap_or(row.outcome.name());
            span.record("otel.status_description", why);
        }
        if let Some(host) = &row.host {
            span.record("samocode.host", host.as_str());
        }
        if let Some(code) = row.exit_code {
            span.record("samocode.exit_code", code);
        }
        if let Some(signal) = &row.exit_signal {
            span.record("samocode.exit_signal", signal.as_str());
        }
        if let Some(model) = &row.reported_model {
            span.record("gen_ai.response.model", model.as_str());
        }
        span.record("samocode.cost_usd", row.cost_usd);
        span.record("gen_ai.usage.input_tokens", row.input_tokens);
        span.record("gen_ai.usage.output_tokens", row.output_tokens);
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(row.outcome.name());
    }

    /// The signal the iteration's agent wrote, and where it leads.
    pub fn signal(&self, status: &str, next: Option<&str>) {
        if let Some((_, iteration)) = &self.iteration {
            iteration.record("samocode.signal.status", status);
            if let Some(next) = next {
                iteration.record("samocode.next_phase", next);
            }
        }
    }

    /// The session parks (or ends): its run segment's span closes with the totals; a wait for
    /// a person opens a `gate` span, linked to the iteration that asked.
    pub fn parked(&mut self, state: &SessionState, waiting: Option<WaitFor>) {
        let Some(session) = self.session.take() else {
            return;
        };
        totals(&session, state);
        if let RunState::Blocked { reason, .. } | RunState::Failed { reason, .. } = &state.status {
            session.record(
                "otel.status_description",
                format!("{}: {reason}", state.status.name()).as_str(),
            );
        }
        if let Some(wait_for) = waiting {
            let gate = tracing::info_span!(
                parent: &session,
                "gate",
                "samocode.session" = %state.name,
                "samocode.wait_for" = %wait_for,
                "samocode.decision" = Empty,
                "samocode.channel" = Empty,
            );
            if let Some((_, iteration)) = &self.iteration {
                gate.follows_from(iteration);
            }
            self.gate = Some(gate);
        }
        self.end_iteration();
    }

    /// A person's decision ends the gate's span: what was done, and through which channel.
    pub fn decided(&mut self, what: &str, by: Option<&str>) {
        if let Some(gate) = self.gate.take() {
            gate.record("samocode.decision", what);
            gate.record("samocode.channel", channel(by));
        }
    }
}

/// The span context of a span saved in the state (`None` when the ids do not parse).
fn link_to(saved: &TraceRef) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    Some(SpanContext::new(
        TraceId::from_hex(&saved.trace_id).ok()?,
        SpanId::from_hex(&saved.span_id).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The channel a person's command came through, from who gave it (`by @ann`: Telegram).
fn channel(by: Option<&str>) -> &'static str {
    match by {
        Some(by) if by.starts_with("by @") || by.starts_with("by Telegram user ") => "telegram",
        Some(by) if by.contains("command line") => "cli",
        Some(by) if by.contains("dashboard") => "dashboard",
        Some(by) if by.contains("_qa.md") => "file",
        Some(_) => "other",
        None => "cli",
    }
}

#[cfg(test)]
mod tests {
    use super::channel;

    #[test]
    fn the_channel_comes_from_who_gave_the_command() {
        assert_eq!(channel(Some("by @ann")), "telegram");
        assert_eq!(channel(Some("by Telegram user 42 (@boss)")), "telegram");
        assert_eq!(channel(Some("from the command line")), "cli");
        assert_eq!(channel(Some("in _qa.md")), "file");
    }
}
