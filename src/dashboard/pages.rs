//! The page frame, the fleet page, the login page and error pages, as maud templates: every
//! value interpolated with `(...)` is HTML-escaped, so session text (names, reasons, the
//! agent's last action) is shown as text. The frame loads one stylesheet and one script from
//! `/assets/`, never inline code, as the Content-Security-Policy demands.

use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::auth::Flash;
use super::watcher::{Fleet, FleetRow};

/// The states a session can be in, in the order the fleet counts them.
pub const STATES: [&str; 8] = [
    "running", "queued", "waiting", "blocked", "failed", "stopped", "done", "error",
];

/// Asset URLs carry the build's version so a new binary's files are not taken from the cache.
/// It is a digest of the files themselves, so that a build whose script or stylesheet changed
/// is never served from a cache of the last one under the same package version.
pub fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a: a stable digest, the same in every build of the same files.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in super::server::CSS.bytes().chain(super::server::JS.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    })
}

/// What the page frame needs besides its content.
pub struct Frame<'a> {
    pub title: &'a str,
    /// `fleet`, `session` or `plain`: which enhancement the script applies.
    pub page: &'static str,
    /// The event stream of the page, when it has one.
    pub events: Option<String>,
    pub flash: Option<Flash>,
}

/// The HTML document around a page's content.
pub fn frame(frame: Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (frame.title) " · samocode" }
                link rel="stylesheet" href=(format!("/assets/app.css?v={}", asset_version()));
                script src=(format!("/assets/app.js?v={}", asset_version())) defer {}
            }
            body data-page=(frame.page) data-events=[frame.events.as_deref()] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "samocode" }
                        a href="/" { "Fleet" }
                    }
                    span #live.live aria-live="polite" hidden { "live" }
                    span #offline.offline role="status" hidden { "not live any more (the daemon restarted, or the login ended): reload the page" }
                }
                main #main tabindex="-1" {
                    @if let Some(flash) = &frame.flash {
                        p.flash.ok[flash.ok].error[!flash.ok] role="status" { (flash.text) }
                    }
                    (content)
                }
            }
        }
    }
}

/// The fleet page's filters, from its query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// A state name, or `active` for every state but done.
    #[serde(default)]
    pub state: Option<String>,
    /// A project's folder, or its name (which two projects may share).
    #[serde(default)]
    pub project: Option<String>,
    /// Part of the session's name.
    #[serde(default)]
    pub q: Option<String>,
}

impl Filter {
    pub fn matches(&self, row: &FleetRow) -> bool {
        let state_ok = match self.state.as_deref().filter(|s| !s.is_empty()) {
            None => true,
            Some("active") => row.row.state != "done",
            Some(state) => row.row.state == state,
        };
        let project_ok = self
            .project
            .as_deref()
            .filter(|p| !p.is_empty())
            .is_none_or(|p| project_folder(row) == p || row.row.project == p);
        let name_ok = self
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .is_none_or(|q| row.row.name.contains(q));
        state_ok && project_ok && name_ok
    }
}

/// The folder of a row's project (the one holding its `.samocode`), which tells apart two
/// projects of one name.
fn project_folder(row: &FleetRow) -> String {
    row.project_file
        .parent()
        .unwrap_or(&row.project_file)
        .display()
        .to_string()
}

/// The project filter's choices: each project's folder, shown by its name, or by its folder
/// where another project has the same name.
fn project_choices(fleet: &Fleet) -> Vec<(String, String)> {
    let mut projects: Vec<(String, &str)> = fleet
        .rows
        .iter()
        .map(|r| (project_folder(r), r.row.project.as_str()))
        .collect();
    projects.sort_unstable();
    projects.dedup();
    projects
        .iter()
        .map(|(folder, name)| {
            let shared = projects.iter().filter(|(_, n)| n == name).count() > 1;
            let label = if shared {
                folder.clone()
            } else {
                name.to_string()
            };
            (folder.clone(), label)
        })
        .collect()
}

/// The fleet page's content.
pub fn fleet(fleet: &Fleet, filter: &Filter, now: Timestamp) -> Markup {
    let projects = project_choices(fleet);
    let selected = |value: &str, current: &Option<String>| current.as_deref() == Some(value);
    html! {
        h1 { "Fleet" }
        (summary(fleet))
        form.filters method="get" action="/" role="search" aria-label="Filter sessions" {
            label {
                "State "
                select name="state" {
                    option value="" { "any" }
                    option value="active" selected[selected("active", &filter.state)] { "active (not done)" }
                    @for state in STATES {
                        option value=(state) selected[selected(state, &filter.state)] { (state) }
                    }
                }
            }
            label {
                "Project "
                select name="project" {
                    option value="" { "any" }
                    @for (folder, label) in &projects {
                        option value=(folder) selected[selected(folder, &filter.project)] { (label) }
                    }
                }
            }
            label {
                "Name "
                input type="search" name="q" value=[filter.q.as_deref()] placeholder="part of a name";
            }
            button type="submit" { "Filter" }
            a href="/" { "Clear" }
        }
        div.table-wrap {
            table.fleet {
                caption.visually-hidden { "Sessions the daemon owns" }
                thead {
                    tr {
                        th scope="col" { "Session" }
                        th scope="col" { "Project" }
                        th scope="col" { "Phase" }
                        th scope="col" { "State" }
                        th scope="col" { "Iteration" }
                        th scope="col" { "Waiting on" }
                        th scope="col" { "Cost" }
                        th scope="col" { "Age" }
                        th scope="col" { "Last action" }
                    }
                }
                tbody #fleet-rows {
                    @for row in &fleet.rows {
                        (fleet_row(row, !filter.matches(row), now))
                    }
                }
            }
        }
        @if fleet.rows.is_empty() {
            p #empty { "The daemon owns no sessions yet. " code { "samocode start --session NAME --dive … --task …" } " hands it one." }
        }
    }
}

/// Counts by state and the agents against the cap.
pub fn summary(fleet: &Fleet) -> Markup {
    let count = |state: &str| fleet.rows.iter().filter(|r| r.row.state == state).count();
    html! {
        section #summary aria-label="Fleet summary" {
            p.agents {
                strong { (fleet.running) } " of " (fleet.max_parallel) " agents running · "
                strong { (count("queued")) } " queued · "
                (fleet.rows.len()) " sessions"
            }
            // Reached, it holds every queued session: said where the queue is counted.
            @if let Some((line, held)) = &fleet.budget {
                p class=(if *held { "fleet-budget held" } else { "fleet-budget" }) { (line) }
            }
            ul.counts {
                @for state in STATES {
                    li {
                        a class=(format!("badge st-{state}")) href=(format!("/?state={state}")) {
                            (state) " " strong { (count(state)) }
                        }
                    }
                }
            }
        }
    }
}

/// One row of the fleet table. `hidden` when the page's filter leaves it out.
pub fn fleet_row(row: &FleetRow, hidden: bool, now: Timestamp) -> Markup {
    let r = &row.row;
    let waiting = r
        .waiting_for
        .as_deref()
        .map(|w| w.replace('_', " "))
        .or_else(|| r.blocked_reason.clone())
        .or_else(|| r.error.clone())
        .or_else(|| {
            r.resumes_at
                .as_ref()
                .map(|at| format!("usage limit until {at}"))
        })
        // A line of the table: the session's page has the whole text.
        .map(|w| crate::protocol::shorten(&w, 160));
    html! {
        tr id=(format!("row-{}", r.name)) data-state=(r.state) data-project=(project_folder(row)) data-project-name=(r.project) data-name=(r.name) hidden[hidden] {
            td data-label="Session" { a href=(format!("/sessions/{}", r.name)) { (r.name) } }
            td data-label="Project" { (r.project) }
            td data-label="Phase" { (r.phase) }
            td data-label="State" { span class=(format!("badge st-{}", r.state)) { (r.state) } }
            td data-label="Iteration" { (r.iteration) "/" (r.total_iterations) }
            td data-label="Waiting on" { (waiting.as_deref().unwrap_or("–")) }
            td data-label="Cost" { (crate::protocol::budget::money(r.cost_usd)) }
            td data-label="Age" { (age_of(r.age_from(), now)) }
            td.last data-label="Last action" { (r.last_action.as_deref().unwrap_or("–")) }
        }
    }
}

/// A `<time>` that the script keeps current.
pub fn age_of(updated_at: &str, now: Timestamp) -> Markup {
    let text = match updated_at.parse::<Timestamp>() {
        Ok(then) => ago(then, now),
        Err(_) => "–".into(),
    };
    html! { time datetime=(updated_at) data-age { (text) } }
}

/// `42s`, `5m`, `3h`, `2d`, as the status table says it.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let s = (now.as_second() - then.as_second()).max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The fleet page's live event: the changed rows, the removed ones, the new counts.
pub fn fleet_event(
    fleet: &Fleet,
    changed: &[std::sync::Arc<FleetRow>],
    removed: &[String],
) -> String {
    let now = Timestamp::now();
    let rows: Vec<serde_json::Value> = changed
        .iter()
        .map(|row| {
            serde_json::json!({
                "id": format!("row-{}", row.row.name),
                "html": fleet_row(row, false, now).into_string(),
            })
        })
        .collect();
    let removed: Vec<String> = removed.iter().map(|name| format!("row-{name}")).collect();
    serde_json::json!({
        "gen": fleet.generation,
        "rows": rows,
        "removed": removed,
        "summary": summary(fleet).into_string(),
    })
    .to_string()
}

/// The login page: a link from `samocode dashboard` logs in at once; this form takes a token
/// pasted by hand (or the secret of `--http-token-file`).
pub fn login(problem: Option<&str>) -> Markup {
    frame(
        Frame {
            title: "Log in",
            page: "plain",
            events: None,
            flash: problem.map(|p| Flash {
                ok: false,
                text: p.to_string(),
            }),
        },
        html! {
            h1 { "Log in to the samocode dashboard" }
            p { "Run " code { "samocode dashboard" } " on the machine of the daemon: it prints a link that logs in once. Or paste a token here." }
            form.login method="post" action="/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// A page that says what went wrong and where to go.
pub fn problem(title: &str, text: &str) -> Markup {
    problem_page(title, text, None)
}

/// A page that says what went wrong, with a link (`href`, its text) to go on from.
pub fn problem_leading(title: &str, text: &str, to: (&str, &str)) -> Markup {
    problem_page(title, text, Some(to))
}

fn problem_page(title: &str, text: &str, to: Option<(&str, &str)>) -> Markup {
    frame(
        Frame {
            title,
            page: "plain",
            events: None,
            flash: None,
        },
        html! {
            h1 { (title) }
            p { (text) }
            @if let Some((href, label)) = to {
                p { a href=(href) { (label) } }
            }
            p { a href="/" { "Back to the fleet" } }
        },
    )
}
