//! A session's history as a drawn chart: inline SVG, made on the server.
//!
//! Three lanes on one time axis: the phases as colored bands, each agent attempt as a bar
//! (its length is its duration, its color its outcome), and the time spent waiting for a
//! person (a gate, or blocked) as hatched bars. Every shape carries a `<title>`, so hovering or
//! a screen reader tells the figures; the table of cost per phase beside it says the same in
//! text. Colors come from the stylesheet through class names: no inline style, which the
//! Content-Security-Policy would refuse.

use jiff::Timestamp;
use maud::{Markup, html};

use crate::protocol::Phase;
use crate::protocol::journal::{AttemptOutcome, HistoryRow, IterationRow, Source};

/// The drawing's coordinate system: a fixed viewBox, scaled to the page's width by the browser.
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 88.0;
const RIGHT: f64 = 992.0;
/// Bars narrower than this are widened so that a short attempt stays visible and hoverable.
const MIN_WIDTH: f64 = 2.0;

/// One shape on a lane, in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub from: Timestamp,
    pub to: Timestamp,
    /// The CSS class that colors it.
    pub class: String,
    /// Short text drawn inside when it fits.
    pub label: String,
    /// The hover text.
    pub title: String,
    /// How many attempts it stands for (attempts closer than the drawing can tell apart are
    /// drawn as one bar).
    pub count: usize,
}

/// The chart's content before it is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub start: Timestamp,
    pub end: Timestamp,
    pub phases: Vec<Span>,
    pub attempts: Vec<Span>,
    pub waits: Vec<Span>,
    /// The attempts journaled, and the phase runs (each entry into a phase): the bars and
    /// bands stand for them, merged where the drawing cannot tell them apart.
    pub attempt_count: usize,
    pub phase_runs: usize,
}

/// What the chart is drawn from.
pub struct Input<'a> {
    pub iterations: &'a [IterationRow],
    pub history: &'a [HistoryRow],
    pub created_at: Timestamp,
    /// Whether an attempt is running now, and since when at the latest.
    pub running_since: Option<Timestamp>,
    /// Whether the session still waits for a person or is blocked now.
    pub parked: bool,
    /// The end of the axis: now for a live session, its last event for a finished one.
    pub now: Timestamp,
}

impl Chart {
    pub fn build(input: &Input<'_>) -> Chart {
        let mut attempts: Vec<&IterationRow> = input.iterations.iter().collect();
        attempts.sort_by_key(|r| r.started_at);
        let start = attempts
            .first()
            .map(|r| r.started_at.min(input.created_at))
            .unwrap_or(input.created_at);
        // Checked: a start at the end of time (a hand-edited file) panicked the page.
        let end = input.now.max(
            start
                .checked_add(jiff::SignedDuration::from_secs(1))
                .unwrap_or(start),
        );

        let mut phases: Vec<Span> = Vec::new();
        for row in &attempts {
            match phases.last_mut() {
                Some(band) if band.class == phase_class(row.phase) => {}
                Some(band) => {
                    band.to = row.started_at;
                    phases.push(band_for(row.phase, row.started_at));
                }
                None => phases.push(band_for(row.phase, row.started_at)),
            }
        }
        if let Some(band) = phases.last_mut() {
            band.to = end;
        }
        for band in &mut phases {
            band.title = format!("{} for {}", band.label, duration(band.from, band.to));
        }
        let phase_runs = phases.len();

        // One drawing unit of time, times the narrowest bar: attempts closer than that merge,
        // and so do phase runs shorter than that.
        let resolution =
            (end.as_millisecond() - start.as_millisecond()) as f64 / (RIGHT - LEFT) * MIN_WIDTH;
        let phases = merged_bands(phases, resolution as i64);
        let mut bars = merged(&attempts, resolution as i64);
        if let Some(since) = input.running_since {
            let from = attempts
                .last()
                .map(|r| r.ended_at.max(since))
                .unwrap_or(since);
            bars.push(Span {
                from,
                to: end,
                class: "o-running".into(),
                label: String::new(),
                title: format!("attempt running for {}", duration(from, end)),
                count: 1,
            });
        }

        Chart {
            start,
            end,
            phases,
            attempts: bars,
            waits: waits(input, &attempts, end),
            attempt_count: attempts.len() + usize::from(input.running_since.is_some()),
            phase_runs,
        }
    }

    /// The chart as inline SVG.
    pub fn render(&self) -> Markup {
        let span = (self.end.as_millisecond() - self.start.as_millisecond()).max(1) as f64;
        let x = |t: Timestamp| {
            LEFT + (t.as_millisecond() - self.start.as_millisecond()) as f64 / span * (RIGHT - LEFT)
        };
        let lane = |spans: &[Span], y: f64, h: f64| {
            html! {
                @for s in spans {
                    @let x0 = x(s.from);
                    @let w = (x(s.to) - x0).max(MIN_WIDTH);
                    g class=(s.class) data-attempts=(s.count) {
                        title { (s.title) }
                        rect x=(n(x0)) y=(n(y)) width=(n(w)) height=(n(h)) rx="2" {}
                        @if !s.label.is_empty() && w > 8.0 * s.label.len() as f64 {
                            text x=(n(x0 + 4.0)) y=(n(y + h / 2.0 + 4.0)) { (s.label) }
                        }
                    }
                }
            }
        };
        let ticks: Vec<(f64, String)> = (0..=4)
            .map(|i| {
                let ms = self.start.as_millisecond() as f64 + span * f64::from(i) / 4.0;
                let t = Timestamp::from_millisecond(ms as i64).unwrap_or(self.start);
                (x(t), clock(t, span))
            })
            .collect();
        let count = |n: usize, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        let summary = format!(
            "{} in {} over {}; {} for a person",
            count(self.attempt_count, "attempt", "attempts"),
            count(self.phase_runs, "phase run", "phase runs"),
            duration(self.start, self.end),
            count(self.waits.len(), "wait", "waits")
        );
        html! {
            svg.timeline viewBox=(format!("0 0 {WIDTH} 132")) role="img" aria-label=(summary) {
                title { (summary) }
                text.lane x="4" y="30" { "phases" }
                (lane(&self.phases, 14.0, 24.0))
                text.lane x="4" y="62" { "attempts" }
                (lane(&self.attempts, 48.0, 20.0))
                text.lane x="4" y="92" { "waits" }
                (lane(&self.waits, 78.0, 20.0))
                line.axis x1=(n(LEFT)) y1="106" x2=(n(RIGHT)) y2="106" {}
                @for (i, (tx, label)) in ticks.iter().enumerate() {
                    line.axis x1=(n(*tx)) y1="106" x2=(n(*tx)) y2="110" {}
                    text.tick x=(n(*tx)) y="124" text-anchor=(match i { 0 => "start", 4 => "end", _ => "middle" }) { (label) }
                }
            }
        }
    }
}

/// The phases' bands, where consecutive runs each shorter than `resolution_ms` (phases sending
/// each other back and forth, thousands of times in a long session) become one band of mixed
/// phases: the drawing could not show them apart, and the page would grow with every run.
fn merged_bands(bands: Vec<Span>, resolution_ms: i64) -> Vec<Span> {
    const MIXED: &str = "ph-mixed";
    let short = |band: &Span| band.to.as_millisecond() - band.from.as_millisecond() < resolution_ms;
    let mut out: Vec<Span> = Vec::new();
    // The phases of the last band when it is a mixed one, and how many runs it holds.
    let mut names: Vec<String> = Vec::new();
    let mut runs = 0;
    for band in bands {
        match out.last_mut() {
            Some(last) if short(&band) && (last.class == MIXED || short(last)) => {
                if last.class != MIXED {
                    names = vec![std::mem::take(&mut last.label)];
                    runs = 1;
                    last.class = MIXED.into();
                }
                if !names.contains(&band.label) {
                    names.push(band.label);
                }
                runs += 1;
                last.to = band.to;
                last.title = format!(
                    "{runs} phase runs ({}) for {}",
                    names.join(", "),
                    duration(last.from, last.to)
                );
            }
            _ => out.push(band),
        }
    }
    out
}

/// The attempts' bars; consecutive attempts with the same outcome less than `resolution_ms`
/// apart become one bar, so that thousands of attempts draw as at most a few hundred bars.
fn merged(attempts: &[&IterationRow], resolution_ms: i64) -> Vec<Span> {
    struct Group<'a> {
        first: &'a IterationRow,
        last: &'a IterationRow,
        to: Timestamp,
        count: usize,
        cost: f64,
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    for row in attempts {
        match groups.last_mut() {
            Some(group)
                if group.last.outcome == row.outcome
                    && row.started_at.as_millisecond() - group.to.as_millisecond()
                        < resolution_ms =>
            {
                group.last = row;
                group.to = group.to.max(row.ended_at);
                group.count += 1;
                group.cost += row.cost_usd;
            }
            _ => groups.push(Group {
                first: row,
                last: row,
                to: row.ended_at,
                count: 1,
                cost: row.cost_usd,
            }),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let (from, outcome) = (g.first.started_at, g.first.outcome);
            let title = if g.count == 1 {
                format!(
                    "iteration {} attempt {} · {} · {} · {} · ${:.4}",
                    g.first.iteration,
                    g.first.attempt,
                    g.first.phase,
                    duration(from, g.to),
                    outcome.name(),
                    g.cost
                )
            } else {
                let phases = match g.first.phase == g.last.phase {
                    true => g.first.phase.to_string(),
                    false => format!("{} to {}", g.first.phase, g.last.phase),
                };
                let iterations = match g.first.iteration == g.last.iteration {
                    true => format!("iteration {}", g.first.iteration),
                    false => format!("iterations {} to {}", g.first.iteration, g.last.iteration),
                };
                format!(
                    "{iterations} · {} attempts · {phases} · {} · {} · ${:.4}",
                    g.count,
                    duration(from, g.to),
                    outcome.name(),
                    g.cost
                )
            };
            Span {
                from,
                to: g.to,
                class: outcome_class(outcome).to_string(),
                label: String::new(),
                title,
                count: g.count,
            }
        })
        .collect()
}

/// Gate waits and blocked stretches: from the signal or rule that parked the session to the
/// person's command (or the next attempt) that moved it on, or to now while it still waits.
fn waits(input: &Input<'_>, attempts: &[&IterationRow], end: Timestamp) -> Vec<Span> {
    let mut out = Vec::new();
    for (i, row) in input.history.iter().enumerate() {
        // Parked by the agent's signal, by a signal refused for good, or by samocode itself (a
        // protocol error, a budget, a failure after the retries): those rows are not accepted.
        let parked = match row.source {
            Source::Person => false,
            Source::Worker => matches!(row.outcome.as_str(), "blocked" | "failed"),
            Source::Agent => row.outcome == "blocked" || (row.accepted && row.outcome == "waiting"),
        };
        if !parked {
            continue;
        }
        let by_person = input.history[i + 1..]
            .iter()
            .find(|later| later.source == Source::Person)
            .map(|later| later.at);
        let next_attempt = attempts
            .iter()
            .map(|a| a.started_at)
            .find(|started| *started > row.at);
        let until = match (by_person, next_attempt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (to, still) = match until {
            Some(to) => (to, false),
            None if input.parked => (end, true),
            None => continue,
        };
        let (class, what) = if row.outcome == "blocked" {
            ("blocked", "blocked".to_string())
        } else if row.outcome == "failed" {
            ("blocked", "failed".to_string())
        } else {
            ("wait", format!("waiting for {}", gate_of(row.from)))
        };
        out.push(Span {
            from: row.at,
            to,
            class: class.into(),
            label: String::new(),
            count: 0,
            title: format!(
                "{what} {} {}",
                if still { "for" } else { "took" },
                duration(row.at, to)
            ),
        });
    }
    out
}

fn gate_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Requirements => "answers",
        Phase::Planning => "plan approval",
        _ => "a person",
    }
}

fn band_for(phase: Phase, from: Timestamp) -> Span {
    Span {
        from,
        to: from,
        class: phase_class(phase),
        label: phase.to_string(),
        title: String::new(),
        count: 0,
    }
}

/// The CSS class of a phase's band (also used by the legend).
pub fn phase_class(phase: Phase) -> String {
    format!("ph-{phase}")
}

/// The CSS class of an attempt's outcome: ok, a failure, or a usage limit.
pub fn outcome_class(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Ok => "o-ok",
        AttemptOutcome::UsageLimit => "o-limit",
        _ => "o-fail",
    }
}

/// A human duration: `0.4s`, `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
pub fn duration(from: Timestamp, to: Timestamp) -> String {
    let ms = (to.as_millisecond() - from.as_millisecond()).max(0);
    if ms < 10_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A tick label in this machine's time zone; with the date once the axis spans a day.
fn clock(t: Timestamp, span_ms: f64) -> String {
    let zoned = t.to_zoned(jiff::tz::TimeZone::system());
    let format = if span_ms >= 86_400_000.0 {
        "%m-%d %H:%M"
    } else if span_ms >= 600_000.0 {
        "%H:%M"
    } else {
        "%H:%M:%S"
    };
    zoned.strftime(format).to_string()
}

/// A coordinate with one decimal: enough for a 1000-unit drawing, and short.
fn n(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn attempt(phase: Phase, from: i64, to: i64, outcome: AttemptOutcome) -> IterationRow {
        IterationRow {
            outcome,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: 0.01,
            ..IterationRow::ok(1, phase, "_logs/x.jsonl", at(from), at(to))
        }
    }

    fn history(at_s: i64, source: Source, from: Phase, status: &str, outcome: &str) -> HistoryRow {
        HistoryRow {
            at: at(at_s),
            iteration: 1,
            attempt: 1,
            source,
            from,
            to: Some(from),
            status: status.into(),
            accepted: true,
            reason: None,
            outcome: outcome.into(),
            by: None,
        }
    }

    #[test]
    fn phases_attempts_and_gate_waits() {
        let iterations = [
            attempt(Phase::Requirements, 0, 10, AttemptOutcome::Ok),
            attempt(Phase::Requirements, 100, 110, AttemptOutcome::Nonzero),
            attempt(Phase::Requirements, 111, 120, AttemptOutcome::Ok),
            attempt(Phase::Planning, 120, 150, AttemptOutcome::Ok),
        ];
        let history = [
            history(10, Source::Agent, Phase::Requirements, "waiting", "waiting"),
            history(90, Source::Person, Phase::Requirements, "answer", "queued"),
            history(150, Source::Agent, Phase::Planning, "waiting", "waiting"),
        ];
        let chart = Chart::build(&Input {
            iterations: &iterations,
            history: &history,
            created_at: at(-5),
            running_since: None,
            parked: true,
            now: at(200),
        });
        let names: Vec<&str> = chart.phases.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(names, ["requirements", "planning"]);
        assert_eq!(chart.phases[0].to, at(120));
        assert_eq!(chart.phases[1].to, at(200));
        let classes: Vec<&str> = chart.attempts.iter().map(|a| a.class.as_str()).collect();
        // The last two touch: at this scale they are one bar of two attempts.
        assert_eq!(classes, ["o-ok", "o-fail", "o-ok"]);
        assert_eq!(chart.attempts[2].count, 2);
        assert_eq!(chart.waits.len(), 2);
        assert_eq!((chart.waits[0].from, chart.waits[0].to), (at(10), at(90)));
        assert_eq!(chart.waits[0].title, "waiting for answers took 1m 20s");
        assert_eq!(chart.waits[1].to, at(200), "still waiting: up to now");
        let svg = chart.render().into_string();
        assert_eq!(svg.matches("<rect").count(), 2 + 3 + 2);
        assert!(svg.contains("class=\"wait\""), "{svg}");
    }

    /// Blocks and failures samocode itself made (their rows are the worker's, not accepted
    /// signals) are drawn as waits for a person, as the agent's own block is.
    #[test]
    fn blocks_and_failures_of_the_worker_are_waits_too() {
        let iterations = [
            attempt(Phase::Investigation, 0, 10, AttemptOutcome::ProtocolError),
            attempt(Phase::Investigation, 100, 110, AttemptOutcome::Nonzero),
        ];
        let mut blocked = history(10, Source::Worker, Phase::Investigation, "-", "blocked");
        blocked.accepted = false;
        let mut failed = history(110, Source::Worker, Phase::Investigation, "-", "failed");
        failed.accepted = false;
        let history = [
            blocked,
            history(90, Source::Person, Phase::Investigation, "resume", "queued"),
            failed,
        ];
        let chart = Chart::build(&Input {
            iterations: &iterations,
            history: &history,
            created_at: at(0),
            running_since: None,
            parked: true,
            now: at(200),
        });
        assert_eq!(chart.waits.len(), 2, "{:?}", chart.waits.len());
        assert_eq!(chart.waits[0].title, "blocked took 1m 20s");
        assert_eq!(chart.waits[1].title, "failed for 1m 30s");
    }

    #[test]
    fn attempts_closer_than_the_drawing_shows_become_one_bar() {
        // A thousand attempts of a second each over a day: far more than 900 units can show.
        let mut iterations: Vec<IterationRow> = (0..1000)
            .map(|i| {
                attempt(
                    Phase::Implementation,
                    i * 80,
                    i * 80 + 1,
                    AttemptOutcome::Ok,
                )
            })
            .collect();
        iterations[500].outcome = AttemptOutcome::Nonzero;
        let chart = Chart::build(&Input {
            iterations: &iterations,
            history: &[],
            created_at: at(0),
            running_since: None,
            parked: false,
            now: at(80_000),
        });
        assert!(chart.attempts.len() <= 5, "{} bars", chart.attempts.len());
        assert_eq!(chart.attempts.iter().map(|b| b.count).sum::<usize>(), 1000);
        assert_eq!(
            chart.attempts[1].class, "o-fail",
            "a failure keeps its own bar"
        );
        assert!(
            chart.attempts[0].title.contains("500 attempts"),
            "{}",
            chart.attempts[0].title
        );
    }

    /// Testing and quality sending each other back and forth thousands of times: a bounded
    /// number of bands, and the chart's label counts what happened, not what is drawn.
    #[test]
    fn phase_runs_closer_than_the_drawing_shows_become_one_band() {
        let iterations: Vec<IterationRow> = (0..4000)
            .map(|i| {
                let phase = if i % 2 == 0 {
                    Phase::Testing
                } else {
                    Phase::Quality
                };
                attempt(phase, i * 20, i * 20 + 1, AttemptOutcome::Ok)
            })
            .collect();
        let chart = Chart::build(&Input {
            iterations: &iterations,
            history: &[],
            created_at: at(0),
            running_since: None,
            parked: false,
            now: at(80_000),
        });
        assert!(chart.phases.len() <= 3, "{} bands", chart.phases.len());
        assert_eq!(chart.phases[0].class, "ph-mixed");
        assert!(
            chart.phases[0].title.contains("(testing, quality)"),
            "{}",
            chart.phases[0].title
        );
        assert_eq!((chart.attempt_count, chart.phase_runs), (4000, 4000));
        let svg = chart.render().into_string();
        assert!(svg.contains("4000 attempts in 4000 phase runs"), "{svg}");
        assert!(svg.len() < 20_000, "{} bytes", svg.len());
    }

    #[test]
    fn a_session_without_attempts_still_draws() {
        let chart = Chart::build(&Input {
            iterations: &[],
            history: &[],
            created_at: at(0),
            running_since: Some(at(0)),
            parked: false,
            now: at(0),
        });
        assert_eq!(chart.attempts.len(), 1, "the running attempt");
        assert!(chart.render().into_string().starts_with("<svg"));
    }

    #[test]
    fn a_session_created_at_the_end_of_time_still_draws() {
        // A hand-edited `created_at`: the page's connection was dropped by a panic.
        let chart = Chart::build(&Input {
            iterations: &[],
            history: &[],
            created_at: Timestamp::MAX,
            running_since: None,
            parked: false,
            now: at(0),
        });
        assert!(chart.render().into_string().starts_with("<svg"));
    }
}
