//! `_overview.md`, the notebook both the worker and the agent write.
//!
//! The worker owns four lines of `## Status` (`Phase:`, `Iteration:`, `Total Iterations:`,
//! `Blocked:`) and rewrites only those; every other byte, the agent's included, is kept as it
//! was. It also appends Flow Log lines for events it causes itself (an approval, say).

use super::phase::Phase;

const STATUS_HEADING: &str = "## Status";
const FLOW_LOG_HEADING: &str = "## Flow Log";

/// The values of the worker's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLines {
    pub phase: Phase,
    /// Iterations in the current phase, the running one included.
    pub iteration: u32,
    /// Iterations of the whole session.
    pub total_iterations: u32,
    /// The reason when blocked.
    pub blocked: Option<String>,
}

impl WorkerLines {
    fn rendered(&self) -> [(&'static str, String); 4] {
        let blocked = match &self.blocked {
            Some(reason) => one_line(reason),
            None => "no".to_string(),
        };
        [
            ("Phase", self.phase.to_string()),
            ("Iteration", self.iteration.to_string()),
            ("Total Iterations", self.total_iterations.to_string()),
            ("Blocked", blocked),
        ]
    }
}

/// What can be read back from an overview; values are raw text, absent when the line is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    pub phase: Option<String>,
    pub iteration: Option<String>,
    pub total_iterations: Option<String>,
    pub blocked: Option<String>,
    pub last_action: Option<String>,
    pub next: Option<String>,
    pub dive: Option<String>,
    pub task: Option<String>,
    pub flow_log: Vec<String>,
}

/// A new overview for a session that the worker is creating.
pub fn render_new(name: &str, dive: &str, task: &str, lines: &WorkerLines) -> String {
    let mut out = format!("# Session: {name}\n\n{STATUS_HEADING}\n");
    for (key, value) in lines.rendered() {
        out.push_str(&format!("{key}: {value}\n"));
    }
    out.push_str("Last Action: session created\nNext: investigate the dive\n\n");
    out.push_str(&format!(
        "## Dive\n{}\n\n## Task\n{}\n\n{FLOW_LOG_HEADING}\n",
        unheaded(dive.trim_end()),
        unheaded(task.trim_end())
    ));
    out
}

/// A person's text with its heading lines escaped (`\## Status`, which Markdown shows as the
/// words): a dive that quotes an issue with a `## Status` or `## Flow Log` section would
/// otherwise have the worker write its lines into the person's text.
pub fn unheaded(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match is_heading(split_eol(line).0) {
            true => format!("\\{line}"),
            false => line.to_string(),
        })
        .collect()
}

/// Rewrites the worker's lines of `## Status` and nothing else. A missing line is inserted after
/// the worker lines present (or right under the heading); a missing section is inserted after
/// the title.
pub fn apply_worker_lines(text: &str, lines: &WorkerLines) -> String {
    let values = lines.rendered();
    let mut out = String::with_capacity(text.len() + 128);
    let mut seen = [false; 4];
    let mut in_status = false;
    let mut status_found = false;
    // Where missing worker lines go: after the last worker line, else after the heading.
    let mut insert_at: Option<usize> = None;
    let mut insert_eol = "\n";

    for line in text.split_inclusive('\n') {
        let (body, eol) = split_eol(line);
        if is_heading(body) {
            in_status = body.trim_end() == STATUS_HEADING;
            if in_status && !status_found {
                status_found = true;
                out.push_str(line);
                insert_at = Some(out.len());
                insert_eol = if eol.is_empty() { "\n" } else { eol };
                if eol.is_empty() {
                    out.push('\n');
                    insert_at = Some(out.len());
                }
                continue;
            }
        }
        if in_status && let Some(i) = worker_key(body) {
            seen[i] = true;
            out.push_str(&format!("{}: {}", values[i].0, values[i].1));
            out.push_str(if eol.is_empty() { "" } else { eol });
            insert_at = Some(out.len());
            continue;
        }
        out.push_str(line);
    }

    let missing: String = values
        .iter()
        .zip(seen)
        .filter(|(_, seen)| !seen)
        .map(|((key, value), _)| format!("{key}: {value}{insert_eol}"))
        .collect();
    if missing.is_empty() {
        return out;
    }
    match insert_at {
        Some(at) => {
            // A worker line that ended the file without a newline needs one before the insert.
            if at == out.len() && !out.ends_with('\n') && !out.is_empty() {
                out.push_str(insert_eol);
                out.push_str(&missing);
            } else {
                out.insert_str(at, &missing);
            }
            out
        }
        None => insert_status_section(&out, &missing),
    }
}

fn insert_status_section(text: &str, lines: &str) -> String {
    let section = format!("{STATUS_HEADING}\n{lines}\n");
    // After the title line when the file starts with one, else at the very top.
    if let Some(first) = text.split_inclusive('\n').next()
        && first.starts_with("# ")
    {
        let rest = &text[first.len()..];
        let sep = if first.ends_with('\n') { "" } else { "\n" };
        return format!("{first}{sep}\n{section}{rest}");
    }
    format!("{section}{text}")
}

/// Appends `- [NNN @ MM-DD HH:MM] text` at the end of `## Flow Log` (creating the section when
/// there is none).
pub fn append_flow_log(text: &str, iteration: u32, stamp: &str, entry: &str) -> String {
    let line = format!("- [{iteration:03} @ {stamp}] {}\n", one_line(entry));
    let mut out = String::with_capacity(text.len() + line.len() + 16);
    let mut in_log = false;
    let mut done = false;
    let mut last_content_end = None;
    for chunk in text.split_inclusive('\n') {
        let (body, _) = split_eol(chunk);
        if is_heading(body) {
            if in_log && !done {
                insert_log_line(&mut out, last_content_end, &line);
                done = true;
            }
            in_log = body.trim_end() == FLOW_LOG_HEADING;
        }
        out.push_str(chunk);
        if in_log && !body.trim().is_empty() {
            if !chunk.ends_with('\n') {
                out.push('\n');
            }
            last_content_end = Some(out.len());
        }
    }
    if done {
        return out;
    }
    if in_log {
        insert_log_line(&mut out, last_content_end, &line);
        return out;
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(FLOW_LOG_HEADING);
    out.push('\n');
    out.push_str(&line);
    out
}

fn insert_log_line(out: &mut String, last_content_end: Option<usize>, line: &str) {
    match last_content_end {
        Some(at) => out.insert_str(at, line),
        None => out.push_str(line),
    }
}

/// Reads the Status lines, the Dive and Task sections and the Flow Log entries.
pub fn parse(text: &str) -> Overview {
    let mut overview = Overview::default();
    let mut section = String::new();
    let mut dive = Vec::new();
    let mut task = Vec::new();
    for line in text.lines() {
        if is_heading(line) {
            section = line.trim_end().to_string();
            continue;
        }
        match section.as_str() {
            STATUS_HEADING => {
                if let Some((key, value)) = line.split_once(':') {
                    let value = Some(value.trim().to_string());
                    match key.trim() {
                        "Phase" => overview.phase = value,
                        "Iteration" => overview.iteration = value,
                        "Total Iterations" => overview.total_iterations = value,
                        "Blocked" => overview.blocked = value,
                        "Last Action" => overview.last_action = value,
                        "Next" => overview.next = value,
                        _ => {}
                    }
                }
            }
            "## Dive" => dive.push(line),
            "## Task" => task.push(line),
            FLOW_LOG_HEADING if line.starts_with("- [") => {
                overview.flow_log.push(line.to_string());
            }
            _ => {}
        }
    }
    overview.dive = joined(&dive);
    overview.task = joined(&task);
    overview
}

/// The `Working Dir:` line the Python samocode wrote into its notebooks (the worktree its agents
/// worked in), when it names an absolute path.
pub fn legacy_working_dir(text: &str) -> Option<std::path::PathBuf> {
    text.lines().find_map(|line| {
        let (key, value) = line.trim_start_matches(['-', '*', ' ']).split_once(':')?;
        let key = key.trim().trim_matches('*');
        if !key.eq_ignore_ascii_case("working dir") {
            return None;
        }
        let path = std::path::PathBuf::from(value.trim().trim_matches('`'));
        path.is_absolute().then_some(path)
    })
}

fn joined(lines: &[&str]) -> Option<String> {
    let text = lines.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The index in the worker's line order when `body` is one of the worker's lines.
fn worker_key(body: &str) -> Option<usize> {
    let (key, _) = body.split_once(':')?;
    ["Phase", "Iteration", "Total Iterations", "Blocked"]
        .iter()
        .position(|k| *k == key)
}

fn is_heading(body: &str) -> bool {
    body.starts_with("# ") || body.starts_with("## ") || body == "#" || body == "##"
}

fn split_eol(line: &str) -> (&str, &str) {
    if let Some(body) = line.strip_suffix("\r\n") {
        (body, "\r\n")
    } else if let Some(body) = line.strip_suffix('\n') {
        (body, "\n")
    } else {
        (line, "")
    }
}

/// `text` on one line, its control characters shown as text (`\u{1b}`): a reason or an
/// entry may quote an agent's output, whose escape sequences would act on the terminal of
/// whoever reads the notebook.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::cli::output::visible(&joined).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(phase: Phase, iteration: u32, total: u32, blocked: Option<&str>) -> WorkerLines {
        WorkerLines {
            phase,
            iteration,
            total_iterations: total,
            blocked: blocked.map(str::to_string),
        }
    }

    #[test]
    fn new_overview_reads_back() {
        let text = render_new(
            "auth",
            "How is login done?",
            "Add JWT",
            &lines(Phase::Init, 0, 0, None),
        );
        let parsed = parse(&text);
        assert_eq!(parsed.phase.as_deref(), Some("init"));
        assert_eq!(parsed.blocked.as_deref(), Some("no"));
        assert_eq!(parsed.dive.as_deref(), Some("How is login done?"));
        assert_eq!(parsed.task.as_deref(), Some("Add JWT"));
    }

    /// A dive quoting an issue with its own `## Status` and `## Flow Log` sections: the worker
    /// writes its lines in its own sections, never in the person's text (found by the
    /// odd-machines hunt).
    #[test]
    fn a_persons_text_with_headings_never_takes_the_workers_lines() {
        let dive = "Issue text:\n## Status\nPhase: done\nBlocked: yes\n## Flow Log\n- old entry";
        let text = render_new("x", dive, "t", &lines(Phase::Init, 0, 0, None));
        let text = apply_worker_lines(&text, &lines(Phase::Requirements, 2, 3, None));
        let text = append_flow_log(&text, 2, "12-07 10:00", "asked questions");
        assert!(
            text.contains("\\## Status\nPhase: done\nBlocked: yes\n\\## Flow Log\n- old entry\n"),
            "{text}"
        );
        assert!(
            text.ends_with("## Flow Log\n- [002 @ 12-07 10:00] asked questions\n"),
            "{text}"
        );
        assert_eq!(parse(&text).phase.as_deref(), Some("requirements"));
    }

    #[test]
    fn an_agents_escape_sequences_reach_the_notebook_as_text() {
        let text = render_new("x", "d", "t", &lines(Phase::Init, 0, 0, None));
        let text = apply_worker_lines(
            &text,
            &lines(
                Phase::Investigation,
                1,
                1,
                Some("exit 1: \u{1b}]52;c;aGk=\u{7}\u{1b}[2J"),
            ),
        );
        let text = append_flow_log(&text, 1, "12-07 10:00", "blocked: \u{1b}[31mred\u{1b}[0m");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("Blocked: exit 1: "), "{text}");
    }

    #[test]
    fn rewrites_only_worker_lines_and_keeps_agent_text() {
        let before = "# Session: x\n\n## Status\nPhase: planning\nIteration: 2\nTotal Iterations: 9\nBlocked: no\nLast Action: wrote the plan\nNext: wait\n\n## Notes\nPhase: this line is not in Status\n\n## Flow Log\n- [009 @ 11-24 10:00] plan written\n";
        let after = apply_worker_lines(
            before,
            &lines(Phase::Implementation, 1, 10, Some("tests\nneed db")),
        );
        assert_eq!(
            after,
            "# Session: x\n\n## Status\nPhase: implementation\nIteration: 1\nTotal Iterations: 10\nBlocked: tests need db\nLast Action: wrote the plan\nNext: wait\n\n## Notes\nPhase: this line is not in Status\n\n## Flow Log\n- [009 @ 11-24 10:00] plan written\n"
        );
    }

    #[test]
    fn missing_lines_and_sections_are_added() {
        let after = apply_worker_lines(
            "## Status\nPhase: testing\nLast Action: x\n",
            &lines(Phase::Testing, 3, 4, None),
        );
        assert_eq!(
            after,
            "## Status\nPhase: testing\nIteration: 3\nTotal Iterations: 4\nBlocked: no\nLast Action: x\n"
        );
        let after = apply_worker_lines("# Title\nbody\n", &lines(Phase::Done, 1, 1, None));
        assert_eq!(
            after,
            "# Title\n\n## Status\nPhase: done\nIteration: 1\nTotal Iterations: 1\nBlocked: no\n\nbody\n"
        );
        let after = apply_worker_lines("", &lines(Phase::Done, 1, 1, None));
        assert_eq!(parse(&after).phase.as_deref(), Some("done"));
    }

    #[test]
    fn crlf_files_keep_their_line_endings() {
        let before = "## Status\r\nPhase: testing\r\nNext: y\r\n";
        let after = apply_worker_lines(before, &lines(Phase::Quality, 1, 2, None));
        assert_eq!(
            after,
            "## Status\r\nPhase: quality\r\nIteration: 1\r\nTotal Iterations: 2\r\nBlocked: no\r\nNext: y\r\n"
        );
    }

    #[test]
    fn flow_log_lines_go_at_the_end_of_the_section() {
        let text = "## Flow Log\n- [001 @ 11-24 10:00] a\n\n## Later\nz\n";
        let after = append_flow_log(text, 2, "11-24 10:05", "plan approved");
        assert_eq!(
            after,
            "## Flow Log\n- [001 @ 11-24 10:00] a\n- [002 @ 11-24 10:05] plan approved\n\n## Later\nz\n"
        );
        let after = append_flow_log("# T\n", 7, "11-24 10:05", "x");
        assert_eq!(after, "# T\n\n## Flow Log\n- [007 @ 11-24 10:05] x\n");
        assert_eq!(parse(&after).flow_log, vec!["- [007 @ 11-24 10:05] x"]);
    }

    fn agent_line() -> impl Strategy<Value = String> {
        // Any line that is neither a heading nor a worker line.
        "[A-Za-z0-9 .,:!?*_\\-\\[\\]@]{0,40}".prop_filter("not worker text", |l| {
            worker_key(l).is_none() && !is_heading(l)
        })
    }

    fn any_lines() -> impl Strategy<Value = WorkerLines> {
        (
            proptest::sample::select(Phase::ALL.to_vec()),
            0u32..200,
            0u32..2000,
            proptest::option::of("[a-z ]{1,20}"),
        )
            .prop_map(|(phase, iteration, total, blocked)| WorkerLines {
                phase,
                iteration,
                total_iterations: total,
                blocked: blocked.filter(|b| !b.trim().is_empty()),
            })
    }

    proptest! {
        /// Agent lines survive every rewrite in order; the worker lines read back; rewriting
        /// twice changes nothing more.
        #[test]
        fn rewrite_keeps_everything_else(
            before in proptest::collection::vec(agent_line(), 0..8),
            inside in proptest::collection::vec(agent_line(), 0..8),
            after in proptest::collection::vec(agent_line(), 0..8),
            old in any_lines(),
            new in any_lines(),
        ) {
            let text = format!(
                "# S\n{}\n## Status\nPhase: {}\n{}\n## Other\n{}\n",
                before.join("\n"), old.phase, inside.join("\n"), after.join("\n")
            );
            let once = apply_worker_lines(&text, &new);
            let twice = apply_worker_lines(&once, &new);
            prop_assert_eq!(&once, &twice);
            let kept: Vec<&str> = once.lines().filter(|l| worker_key(l).is_none()).collect();
            let original: Vec<&str> = text.lines().filter(|l| worker_key(l).is_none()).collect();
            prop_assert_eq!(kept, original);
            let parsed = parse(&once);
            let expected_phase = new.phase.to_string();
            prop_assert_eq!(parsed.phase.as_deref(), Some(expected_phase.as_str()));
            let expected_total = new.total_iterations.to_string();
            prop_assert_eq!(parsed.total_iterations.as_deref(), Some(expected_total.as_str()));
        }
    }
}
