//! The session page: its status and actions, the questions as a form, the newest plan with
//! Approve and Reject, the timeline chart, cost per phase, the Flow Log, the artifacts and
//! the newest attempt's log.
//!
//! The page is a list of sections, each with a version (a hash of its HTML). The live stream
//! sends the sections again when the session changes; the script replaces only those whose
//! version differs and that the person is not typing in. Every form posts to the session's own
//! path with the browser session's `csrf` token, and works without the script.

use std::hash::{Hash, Hasher};

use jiff::Timestamp;
use maud::{Markup, PreEscaped, html};

use super::auth::Flash;
use super::markdown;
use super::pages::{self, Frame};
use super::timeline::{self, Chart, Input};
use super::view::{LogTail, SessionView};
use crate::protocol::{Phase, RunState, WaitFor};

/// One part of the page that live updates may replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub id: &'static str,
    pub version: String,
    pub html: String,
}

fn section(id: &'static str, shown: bool, inner: Markup) -> Section {
    let inner = inner.into_string();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (shown, without_ages(&inner)).hash(&mut hasher);
    let version = format!("{:016x}", hasher.finish());
    let html = html! {
        section id=(id) .card data-v=(version) hidden[!shown] { (PreEscaped(&inner)) }
    }
    .into_string();
    Section { id, version, html }
}

/// A section's HTML without the text of its ages (`<time data-age>5m</time>`), which the
/// page's script keeps current itself. A version that changed with the clock would have live
/// updates replace the section, and the form a person is about to press, every minute for
/// nothing. (`data-age>` cannot come from escaped text: `>` is escaped there.)
fn without_ages(html: &str) -> std::borrow::Cow<'_, str> {
    const TAG_END: &str = "data-age>";
    if !html.contains(TAG_END) {
        return std::borrow::Cow::Borrowed(html);
    }
    let mut kept = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(TAG_END) {
        let text = at + TAG_END.len();
        let Some(end) = rest[text..].find("</time>") else {
            break;
        };
        kept.push_str(&rest[..text]);
        rest = &rest[text + end..];
    }
    kept.push_str(rest);
    std::borrow::Cow::Owned(kept)
}

/// The whole page.
pub fn page(
    view: &SessionView,
    log: &LogTail,
    csrf: &str,
    flash: Option<Flash>,
    now: Timestamp,
) -> Markup {
    let name = &view.row.name;
    pages::frame(
        Frame {
            title: name,
            page: "session",
            events: Some(format!("/sessions/{name}/events")),
            flash,
        },
        html! {
            p.crumbs { a href="/" { "Fleet" } " / " (name) }
            @for s in sections(view, csrf, now) {
                // The log sits before the artifacts, the longest part of the page.
                @if s.id == "s-artifacts" { (log_section(log)) }
                (PreEscaped(s.html))
            }
        },
    )
}

/// The sections that live updates replace, in page order.
pub fn sections(view: &SessionView, csrf: &str, now: Timestamp) -> Vec<Section> {
    vec![
        section("s-status", true, status(view, csrf, now)),
        section(
            "s-questions",
            view.qa.as_ref().is_some_and(|qa| !qa.questions.is_empty()),
            questions(view, csrf),
        ),
        section("s-plan", view.plan().is_some(), plan(view, csrf)),
        section("s-timeline", true, chart(view, now)),
        section("s-costs", !view.iterations.is_empty(), costs(view)),
        section("s-flow", true, flow_log(view)),
        section("s-artifacts", !view.artifacts.is_empty(), artifacts(view)),
    ]
}

/// A form that posts one verb to the session, with the CSRF token.
fn action(name: &str, verb: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("/sessions/{name}/{verb}")) {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" class=(class) { (label) }
        }
    }
}

fn status(view: &SessionView, csrf: &str, now: Timestamp) -> Markup {
    let r = &view.row;
    let s = &view.state;
    let waiting_for = match &s.status {
        RunState::Waiting { wait_for, .. } => Some(*wait_for),
        _ => None,
    };
    let can_stop = s.status.stoppable() && !matches!(s.status, RunState::Stopped { .. });
    let can_resume = match &s.status {
        RunState::Blocked { .. } | RunState::Failed { .. } | RunState::Stopped { .. } => true,
        RunState::Waiting { wait_for, .. } => *wait_for == WaitFor::HumanAction,
        RunState::Queued => s.not_before.is_some(),
        _ => false,
    };
    html! {
        h1 { (r.name) }
        p.meta {
            span class=(format!("badge st-{}", r.state)) { (r.state) }
            @if let Some(w) = waiting_for { " for " strong { (w.to_string().replace('_', " ")) } }
            " · project " strong { (r.project) }
            " · phase " strong { (r.phase) }
            " · iteration " (r.iteration) " (" (r.total_iterations) " in all)"
            " · " (format!("${:.4}", r.cost_usd))
            " · " (r.input_tokens) " tokens in, " (r.output_tokens) " out"
            " · updated " (pages::age_of(&r.updated_at, now)) " ago"
        }
        dl.facts {
            @if let Some(reason) = &r.blocked_reason { dt { "Reason" } dd { (reason) } }
            @if let Some(at) = &r.resumes_at { dt { "Resumes at" } dd { (at) " (the provider's usage limit resets)" } }
            @if let RunState::Done { summary: Some(summary), .. } = &s.status { dt { "Summary" } dd { (summary) } }
            dt { "Last action" } dd { (r.last_action.as_deref().unwrap_or("–")) }
            dt { "Next" } dd { (r.next.as_deref().unwrap_or("–")) }
            dt { "Task" } dd { (s.task) }
            @if let (Some(w), Some(b)) = (&s.worktree, &s.branch) {
                dt { "Worktree" } dd { code { (w.display()) } " on branch " code { (b) } }
            }
        }
        @if can_stop || can_resume {
            div.actions {
                @if can_resume { (action(&r.name, "resume", csrf, "Resume", "primary")) }
                @if can_stop { (action(&r.name, "stop", csrf, "Stop", "danger")) }
            }
        }
    }
}

fn questions(view: &SessionView, csrf: &str) -> Markup {
    let Some(qa) = &view.qa else {
        return html! {};
    };
    let open: Vec<_> = qa.open().collect();
    let answered: Vec<_> = qa.questions.iter().filter(|q| q.answer.is_some()).collect();
    let name = &view.row.name;
    html! {
        h2 { "Questions" }
        @if !open.is_empty() {
            form.questions method="post" action=(format!("/sessions/{name}/answer")) {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(version) = &view.qa_version {
                    input type="hidden" name="qa" value=(version);
                }
                @for (k, q) in open.iter().enumerate() {
                    // Questions an agent numbered alike: `qN`, `qN.2`… in file order.
                    @let place = open[..k].iter().filter(|o| o.number == q.number).count() + 1;
                    @let field = match place {
                        1 => format!("q{}", q.number),
                        _ => format!("q{}.{place}", q.number),
                    };
                    @let custom = q.suggested.as_ref().filter(|s| !q.options.contains(s));
                    fieldset {
                        legend { "Q" (q.number) ": " (q.text) }
                        @for (i, option) in q.options.iter().enumerate() {
                            @let id = format!("{field}-{i}");
                            div.choice {
                                input type="radio" id=(id) name=(field) value=(option)
                                    checked[q.suggested.as_deref() == Some(option.as_str())];
                                label for=(id) {
                                    (option)
                                    @if q.suggested.as_deref() == Some(option.as_str()) { " " small { "(suggested)" } }
                                }
                            }
                        }
                        @let text_id = format!("{field}-text");
                        label.other for=(text_id) {
                            @if q.options.is_empty() { "Answer" } @else { "Or your own answer" }
                        }
                        input type="text" id=(text_id) name=(format!("{field}_text"))
                            value=[custom.map(String::as_str)];
                    }
                }
                button.primary type="submit" { "Send answers" }
            }
        }
        @if !answered.is_empty() {
            details {
                summary { (answered.len()) " answered" }
                dl.answers {
                    @for q in &answered {
                        dt { "Q" (q.number) ": " (q.text) }
                        dd { (q.answer.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

fn plan(view: &SessionView, csrf: &str) -> Markup {
    let Some(plan) = view.plan() else {
        return html! {};
    };
    let name = &view.row.name;
    let awaiting = matches!(
        view.state.status,
        RunState::Waiting {
            wait_for: WaitFor::PlanApproval,
            ..
        }
    );
    html! {
        h2 { "Plan " small { code { (plan.file) } } }
        // Open while it waits for approval; afterwards one click away, so the chart comes first.
        details.plan open[awaiting] {
            summary { @if awaiting { "The plan waits for your approval" } @else { "Show the plan" } }
            article.markdown { (PreEscaped(markdown::render(&plan.text))) }
            @if plan.cut { p.note { "The plan is longer than the page shows; the file has the rest." } }
        }
        @if awaiting {
            div.gate {
                form.inline method="post" action=(format!("/sessions/{name}/approve")) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="plan" value=(plan.version());
                    button type="submit" class="primary" { "Approve the plan" }
                }
                form.reject method="post" action=(format!("/sessions/{name}/reject")) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="plan" value=(plan.version());
                    label for="reason" { "Or send it back to planning with a reason" }
                    textarea #reason name="reason" rows="3" required {}
                    button.danger type="submit" { "Reject" }
                }
            }
        }
    }
}

fn chart(view: &SessionView, now: Timestamp) -> Markup {
    let s = &view.state;
    // A failed session waits for a person: its chart runs up to now, as a blocked one's does.
    let finished = matches!(s.status, RunState::Done { .. });
    let end = if finished {
        view.iterations
            .iter()
            .map(|r| r.ended_at)
            .chain(view.history.iter().map(|h| h.at))
            .max()
            .unwrap_or(s.updated_at)
            .max(s.updated_at)
    } else {
        now
    };
    let chart = Chart::build(&Input {
        iterations: &view.iterations,
        history: &view.history,
        created_at: s.created_at,
        running_since: matches!(s.status, RunState::Running).then_some(s.updated_at),
        parked: matches!(
            s.status,
            RunState::Waiting { .. }
                | RunState::Blocked { .. }
                | RunState::Failed { .. }
                | RunState::Stopped { .. }
        ),
        now: end,
    });
    let used: Vec<Phase> = Phase::ALL
        .iter()
        .copied()
        .filter(|p| view.iterations.iter().any(|r| r.phase == *p))
        .collect();
    html! {
        h2 { "Timeline" }
        figure {
            (chart.render())
            figcaption {
                ul.legend {
                    @for phase in &used {
                        li { span class=(format!("key {}", timeline::phase_class(*phase))) {} (phase) }
                    }
                    li { span.key.o-ok {} "attempt ok" }
                    li { span.key.o-fail {} "attempt failed" }
                    li { span.key.o-limit {} "usage limit" }
                    li { span.key.wait {} "waiting for a person" }
                    li { span.key.blocked {} "blocked" }
                }
            }
        }
    }
}

/// Attempts, time, tokens and cost per phase, from `_iterations.jsonl`.
fn costs(view: &SessionView) -> Markup {
    struct Sum {
        attempts: usize,
        millis: i64,
        input: u64,
        output: u64,
        cost: f64,
    }
    let mut sums: Vec<(Phase, Sum)> = Vec::new();
    for row in &view.iterations {
        let index = match sums.iter().position(|(p, _)| *p == row.phase) {
            Some(i) => i,
            None => {
                sums.push((
                    row.phase,
                    Sum {
                        attempts: 0,
                        millis: 0,
                        input: 0,
                        output: 0,
                        cost: 0.0,
                    },
                ));
                sums.len() - 1
            }
        };
        let sum = &mut sums[index].1;
        sum.attempts += 1;
        sum.millis += (row.took() * 1000.0) as i64;
        sum.input += row.input_tokens;
        sum.output += row.output_tokens;
        sum.cost += row.cost_usd;
    }
    sums.sort_by_key(|(p, _)| Phase::ALL.iter().position(|q| q == p));
    let spent = |ms: i64| {
        timeline::duration(
            Timestamp::UNIX_EPOCH,
            Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH),
        )
    };
    html! {
        h2 { "Cost and tokens per phase" }
        div.table-wrap {
            table.costs {
                thead { tr {
                    th scope="col" { "Phase" } th scope="col" { "Attempts" } th scope="col" { "Agent time" }
                    th scope="col" { "Tokens in" } th scope="col" { "Tokens out" } th scope="col" { "Cost" }
                } }
                tbody {
                    @for (phase, s) in &sums {
                        tr {
                            th scope="row" { (phase) }
                            td data-label="Attempts" { (s.attempts) }
                            td data-label="Agent time" { (spent(s.millis)) }
                            td data-label="Tokens in" { (s.input) }
                            td data-label="Tokens out" { (s.output) }
                            td data-label="Cost" { (format!("${:.4}", s.cost)) }
                        }
                    }
                }
                tfoot { tr {
                    th scope="row" { "all" }
                    td { (view.iterations.len()) }
                    td { (spent(sums.iter().map(|(_, s)| s.millis).sum())) }
                    td { (view.state.usage.input_tokens) }
                    td { (view.state.usage.output_tokens) }
                    td { (format!("${:.4}", view.state.usage.cost_usd)) }
                } }
            }
        }
    }
}

/// The most Flow Log lines a page shows (the newest).
const FLOW_LINES: usize = 200;

fn flow_log(view: &SessionView) -> Markup {
    let lines = &view.overview.flow_log;
    let shown = &lines[lines.len().saturating_sub(FLOW_LINES)..];
    html! {
        h2 { "Flow Log" }
        @if shown.is_empty() {
            p.note { "Nothing logged yet." }
        } @else {
            @if shown.len() < lines.len() { p.note { "The newest " (shown.len()) " of " (lines.len()) " lines." } }
            ol.flow {
                @for line in shown { li { (line.trim_start_matches("- ")) } }
            }
        }
    }
}

fn artifacts(view: &SessionView) -> Markup {
    html! {
        h2 { "Artifacts" }
        @for artifact in view.artifacts.iter().rev() {
            details {
                summary { (artifact.title) " " small { code { (artifact.file) } } }
                article.markdown { (PreEscaped(markdown::render(&artifact.text))) }
                @if artifact.cut { p.note { "Cut here; the file has the rest." } }
            }
        }
    }
}

/// The newest attempt's readable log; the live stream appends to it.
fn log_section(log: &LogTail) -> Markup {
    let path = log
        .path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    html! {
        section #s-log .card {
            h2 { "Newest attempt's log " small { code #log-file { (path.as_deref().unwrap_or("none yet")) } } }
            ol #log-lines .log data-file=[path.as_deref()] data-end=(log.end) aria-live="off" {
                @for entry in &log.entries { li { (entry) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sections_version_does_not_change_with_the_clock_alone() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("26-11-25-aging");
        let store = crate::session::store::SessionStore::create(&folder).unwrap();
        let then = Timestamp::now();
        let mut state = crate::protocol::SessionState::new("26-11-25-aging", "d", "t", then);
        store.save(&mut state).unwrap();
        let view = SessionView::read(&folder, &dir.path().join(".samocode")).unwrap();
        let status = |now: Timestamp| {
            sections(&view, "csrf", now)
                .into_iter()
                .find(|s| s.id == "s-status")
                .unwrap()
        };
        let (soon, later) = (
            status(then + jiff::SignedDuration::from_secs(5)),
            status(then + jiff::SignedDuration::from_mins(10)),
        );
        assert_ne!(
            soon.html, later.html,
            "the age is in the page: 5s, then 10m"
        );
        assert_eq!(soon.version, later.version);
        // A change of what the section says is a new version.
        assert_eq!(without_ages("<p>a</p>"), "<p>a</p>");
        assert_eq!(
            without_ages("<time datetime=\"x\" data-age>5m</time> ago <time data-age>1h</time>"),
            "<time datetime=\"x\" data-age></time> ago <time data-age></time>"
        );
    }
}
