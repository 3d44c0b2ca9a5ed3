//! What the bot says, as pure functions: HTML notices (every piece of session text escaped),
//! inline buttons, long texts split under Telegram's 4096 characters on line boundaries.

use crate::notify::{Asked, Button, Notice, SessionEvent};
use crate::protocol::WaitFor;
use crate::session::open::Settled;

/// Telegram refuses longer messages.
pub const MAX_MESSAGE: usize = 4096;
/// Telegram refuses longer button data.
const MAX_CALLBACK: usize = 64;
/// Option labels longer than this are shortened on their buttons.
const MAX_LABEL: usize = 32;

/// Escapes text for Telegram's HTML parse mode.
///
/// Much of it was written by an agent: control characters and the marks that reorder text
/// (U+202E and its kin, which can make "exe.txt" read "txt.exe") are shown as text, as on the
/// terminal, never obeyed by the chat.
pub fn escape(text: &str) -> String {
    let shown = crate::cli::output::visible(text);
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A reply written for the command line, in the chat's own commands: "`samocode resume NAME`"
/// reads "/resume NAME", "`samocode tell NAME TEXT`" reads "/tell NAME text". Advice with the
/// command line's flags (`--raise-budget`, `--q`) has no command here and stays as it is.
pub fn for_chat(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("`samocode ") {
        let quoted = &rest[start + 1..];
        let Some(end) = quoted.find('`') else {
            break;
        };
        out.push_str(&rest[..start]);
        match chat_command(&quoted[..end]) {
            Some(command) => out.push_str(&command),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &quoted[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The command line's `--q N TEXT` (how to answer question N) as the chat's
/// `/answer SESSION N text`.
pub fn answer_for_chat(text: &str, session: &str) -> String {
    let Some(at) = text.find("--q ") else {
        return text.to_string();
    };
    let rest = &text[at + 4..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    match rest[digits..].strip_prefix(" TEXT") {
        Some(after) if digits > 0 => format!(
            "{}/answer {session} {} text{after}",
            &text[..at],
            &rest[..digits]
        ),
        _ => text.to_string(),
    }
}

/// The bot's command for a command line (`samocode VERB ARGS`), when it has one.
fn chat_command(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (verb, args) = (*words.get(1)?, words.get(2..).unwrap_or_default());
    if args.iter().any(|a| a.starts_with('-')) {
        return None;
    }
    let verb = match verb {
        "resume" | "approve" | "stop" | "tell" | "logs" | "answer" => verb,
        "status" if args.is_empty() => "status",
        "status" => "session",
        _ => return None,
    };
    let args = args.iter().map(|a| match *a {
        "TEXT" => "text",
        "SESSION" => "NAME",
        a => a,
    });
    Some(
        std::iter::once(format!("/{verb}"))
            .chain(args.map(str::to_string))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The notice for an event worth a person's attention; `None` for routine progress.
pub fn notice(event: &SessionEvent) -> Option<Notice> {
    let (session, html, buttons, open) = match event {
        SessionEvent::FleetBudgetReached { .. } => {
            // About every session, so it belongs to none and closes nothing.
            return Some(Notice {
                session: String::new(),
                open: false,
                html: format!("💸 {}", escape(&event.headline())),
                buttons: Vec::new(),
                dir: None,
                sent: Vec::new(),
            });
        }
        SessionEvent::UsageLimited { session, until } => (
            session,
            format!(
                "⏳ <b>{}</b> hit the provider's usage limit; it resumes by itself at {}.",
                escape(session),
                escape(&until.to_string())
            ),
            Vec::new(),
            false,
        ),
        SessionEvent::Broken {
            session, reason, ..
        } => (
            session,
            format!(
                "💥 <b>{}</b> cannot be opened: {}\nFix its files, then resume it.",
                escape(session),
                escape(reason)
            ),
            row(button("Resume", "resume", session)),
            true,
        ),
        SessionEvent::Settled {
            session,
            phase,
            settled,
            questions,
            ask,
            park,
        } => {
            let button =
                |label: &str, verb: &str, session: &str| parked_button(label, verb, session, *park);
            let name = format!("<b>{}</b>", escape(session));
            let (html, buttons) = match settled {
                Settled::Waiting {
                    wait_for: WaitFor::QaAnswers,
                } => asking(&name, session, questions, *park),
                Settled::Waiting {
                    wait_for: WaitFor::PlanApproval,
                } => {
                    let approve = row(button("Approve", "approve", session));
                    // A name too long for a button's data: the command instead.
                    let or = match approve.is_empty() {
                        true => format!("Reply <code>/approve {0}</code>, or", escape(session)),
                        false => "Or reply".to_string(),
                    };
                    (
                        format!(
                            "📋 {name} wrote a plan and waits for approval.\n{or} <code>/reject {} what to change</code>.",
                            escape(session)
                        ),
                        approve,
                    )
                }
                Settled::Waiting {
                    wait_for: WaitFor::HumanAction,
                } => (
                    match ask {
                        Some(next) => format!(
                            "✋ {name} waits for an action by a person: {}\nResume when it is done.",
                            escape(next)
                        ),
                        None => format!(
                            "✋ {name} waits for an action by a person (see Next: in _overview.md); resume when it is done."
                        ),
                    },
                    row(button("Resume", "resume", session)),
                ),
                // A budget is raised only from the command line: a Resume button could never
                // work, so the notice says what to run instead.
                Settled::Blocked { reason }
                    if crate::protocol::budget::is_budget_reason(reason) =>
                {
                    (
                        format!(
                            "⛔ {name} is blocked in {phase}: {}\nTo go on, raise it from the command line: <code>samocode resume {} --raise-budget {}=NEW_LIMIT</code>",
                            escape(reason),
                            escape(session),
                            reason.split(' ').next().unwrap_or("cost"),
                        ),
                        Vec::new(),
                    )
                }
                Settled::Blocked { reason } => (
                    format!(
                        "⛔ {name} is blocked in {phase}: {}{}",
                        escape(reason),
                        ask.as_deref()
                            .map(|needs| format!(" ({})", escape(needs)))
                            .unwrap_or_default()
                    ),
                    row(button("Resume", "resume", session)),
                ),
                Settled::Failed { reason } => (
                    format!("💥 {name} failed in {phase}: {}", escape(reason)),
                    row(button("Resume", "resume", session)),
                ),
                Settled::Done { summary } => (
                    format!(
                        "✅ {name} is done{}{}",
                        summary
                            .as_deref()
                            .map(|s| format!(": {}", escape(s)))
                            .unwrap_or_default(),
                        ask.as_deref()
                            .map(|a| format!("\n⚠️ {}", escape(a)))
                            .unwrap_or_default()
                    ),
                    Vec::new(),
                ),
                Settled::Stopped => (
                    format!("⏸ {name} is stopped in {phase}."),
                    row(button("Resume", "resume", session)),
                ),
                Settled::Continued { .. } => return None,
            };
            let open = !matches!(settled, Settled::Done { .. });
            (session, html, buttons, open)
        }
        SessionEvent::AttemptStarted { .. }
        | SessionEvent::AttemptFailed { .. }
        | SessionEvent::Unparked { .. } => return None,
    };
    Some(Notice {
        session: session.clone(),
        open,
        html,
        buttons,
        dir: None,
        sent: Vec::new(),
    })
}

/// The questions of a session waiting for answers, each with its options.
fn asking(
    name: &str,
    session: &str,
    questions: &[Asked],
    park: Option<i64>,
) -> (String, Vec<Vec<Button>>) {
    let (buttons, unbuttoned) = answer_buttons(session, questions, park);
    let mut html = format!("❓ {name} has questions:");
    for q in questions {
        html.push_str(&format!("\n\n<b>Q{}</b>: {}", q.number, escape(&q.text)));
        if !q.options.is_empty() {
            html.push_str(&format!("\nOptions: {}", escape(&q.options.join(" | "))));
        }
        if let Some(suggested) = &q.suggested {
            html.push_str(&format!("\nSuggested: {}", escape(suggested)));
        }
    }
    let session = escape(session);
    if buttons.is_empty() {
        html.push_str(&format!(
            "\n\nReply <code>/answer {session} N text</code> for each question{}.",
            match questions.iter().all(|q| q.suggested.is_some()) {
                true => format!(", or <code>/accept {session}</code> to take every suggestion"),
                false => String::new(),
            }
        ));
    } else {
        html.push_str(&format!(
            "\n\nPress an option{}, or reply <code>/answer {session} N text</code>.",
            if buttons
                .last()
                .is_some_and(|row| row[0].data.starts_with("answer:"))
            {
                ", accept all suggestions"
            } else {
                ""
            }
        ));
    }
    if let (Some(first), Some(last)) = (unbuttoned.first(), questions.last()) {
        html.push_str(&format!(
            "\nQ{first} to Q{} have no buttons (more than one message can hold): reply <code>/answer {session} N text</code> for them.",
            last.number
        ));
    }
    let mut twins: Vec<u32> = questions
        .iter()
        .filter(|q| {
            questions
                .iter()
                .any(|o| !std::ptr::eq(*q, o) && o.round == q.round && o.number == q.number)
        })
        .map(|q| q.number)
        .collect();
    twins.sort_unstable();
    twins.dedup();
    for number in twins {
        html.push_str(&format!(
            "\nMore than one question is numbered Q{number}: they have no buttons; reply <code>/answer {session} {number} text</code> once for each, in their order."
        ));
    }
    (html, buttons)
}

/// The most buttons Telegram takes on one message.
const MAX_BUTTONS: usize = 100;

/// The most bytes of buttons (labels, data and the JSON around them) a message is given:
/// Telegram refuses a keyboard of about 10 KB ("reply markup is too long").
const MAX_MARKUP: usize = 8_000;

/// One row per question with a button per option, then "Accept all suggestions" (when every
/// question has a suggestion: otherwise a press could only be refused). Rows stop where
/// Telegram would refuse the keyboard; the numbers of the questions left without buttons
/// come second.
fn answer_buttons(
    session: &str,
    questions: &[Asked],
    park: Option<i64>,
) -> (Vec<Vec<Button>>, Vec<u32>) {
    // Questions an agent numbered alike in one round get no option buttons: their data would
    // be the same, and the text asks for `/answer` instead.
    let twin = |q: &Asked| {
        questions
            .iter()
            .filter(|o| o.round == q.round && o.number == q.number)
            .count()
            > 1
    };
    let all = if questions.iter().all(|q| q.suggested.is_some()) {
        parked_button("Accept all suggestions", "answer", session, park)
    } else {
        Vec::new()
    };
    let cost = |row: &[Button]| -> (usize, usize) {
        // `{"text":"…","callback_data":"…"},` around each button.
        let bytes = row.iter().map(|b| b.label.len() + b.data.len() + 32).sum();
        (row.len(), bytes)
    };
    let (mut count, mut bytes) = cost(&all);
    let mut rows: Vec<Vec<Button>> = Vec::new();
    let mut left_out = Vec::new();
    for q in questions.iter().filter(|q| !twin(q)) {
        let row: Vec<Button> = q
            .options
            .iter()
            .enumerate()
            .filter_map(|(i, option)| {
                // The agent's text: shown, never obeyed (a U+202E in a label reversed it).
                let shown = crate::cli::output::visible(option);
                let label = format!("Q{}: {}", q.number, shorten(&shown, MAX_LABEL));
                // With the park: an option of a namesake's questions (a session of
                // another project) is refused by the session pressed for.
                let data = format!("opt:{}:{}:{i}:{session}", q.round, q.number);
                data_with_park(data, park).map(|data| Button { label, data })
            })
            .collect();
        if row.is_empty() {
            continue;
        }
        let (n, b) = cost(&row);
        if !left_out.is_empty() || count + n > MAX_BUTTONS || bytes + b > MAX_MARKUP {
            left_out.push(q.number);
            continue;
        }
        (count, bytes) = (count + n, bytes + b);
        rows.push(row);
    }
    rows.extend(row(all));
    (rows, left_out)
}

use crate::protocol::shorten;

fn row(buttons: Vec<Button>) -> Vec<Vec<Button>> {
    if buttons.is_empty() {
        Vec::new()
    } else {
        vec![buttons]
    }
}

/// A button of a parked session's notice (`VERB:SESSION:PARK`): see [`data_with_park`].
fn parked_button(label: &str, verb: &str, session: &str, park: Option<i64>) -> Vec<Button> {
    data_with_park(format!("{verb}:{session}"), park)
        .map(|data| Button {
            label: label.to_string(),
            data,
        })
        .into_iter()
        .collect()
}

fn button(label: &str, verb: &str, session: &str) -> Vec<Button> {
    parked_button(label, verb, session, None)
}

/// A button's data, naming the park too (`:PARK`, in base 36) when it has one, so that the
/// session refuses the press once it is parked otherwise; without the park when that would
/// not fit in Telegram's 64 bytes; none when even that does not fit (a name too long for
/// button data still gets its message, and the command works instead).
fn data_with_park(data: String, park: Option<i64>) -> Option<String> {
    park.map(|p| format!("{data}:{}", crate::bot::commands::base36(p)))
        .filter(|stamped| stamped.len() <= MAX_CALLBACK)
        .or_else(|| (data.len() <= MAX_CALLBACK).then_some(data))
}

/// Splits HTML into messages Telegram takes (at most [`MAX_MESSAGE`] characters each), on line
/// boundaries; a single longer line is cut, never inside an entity or a tag.
pub fn split(html: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    // Telegram refuses a message of only white space ("message text is empty"), and the rest
    // of the notice after it would never be sent: such a piece is left out.
    let push = |piece: &str, pieces: &mut Vec<String>| {
        let piece = piece.trim_end();
        if !piece.trim().is_empty() {
            pieces.push(piece.to_string());
        }
    };
    for line in html.split_inclusive('\n') {
        if current.chars().count() + line.chars().count() > MAX_MESSAGE && !current.is_empty() {
            push(&std::mem::take(&mut current), &mut pieces);
        }
        let mut line = line.to_string();
        while line.chars().count() > MAX_MESSAGE {
            let mut cut: String = line.chars().take(MAX_MESSAGE).collect();
            if let Some(open) = cut.rfind(['&', '<'])
                && open > 0
                && !cut[open..].contains([';', '>'])
            {
                cut.truncate(open);
            }
            line = line[cut.len()..].to_string();
            push(&cut, &mut pieces);
        }
        current.push_str(&line);
    }
    if !current.trim().is_empty() || pieces.is_empty() {
        pieces.push(current.trim_end().to_string());
    }
    pieces
}

/// The text a notice's message takes when it is closed with `line`: its last piece (the
/// message that carries the buttons) and the line; `None` when the two would pass
/// Telegram's limit, so that the buttons go and the line is sent apart.
pub fn closed(html: &str, line: &str) -> Option<String> {
    let last = split(html).pop().unwrap_or_default();
    let text = format!("{last}\n\n<i>{}</i>", escape(line));
    (text.chars().count() <= MAX_MESSAGE).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line's advice in a reply reads as the chat's own command, where there is one.
    #[test]
    fn advice_for_the_command_line_reads_as_the_chats_commands() {
        assert_eq!(
            for_chat("stopped x in planning; `samocode resume x` continues it"),
            "stopped x in planning; /resume x continues it"
        );
        assert_eq!(
            for_chat(
                "answered already; to change course, send a note with `samocode tell x TEXT` (its next iteration reads it)"
            ),
            "answered already; to change course, send a note with /tell x text (its next iteration reads it)"
        );
        // Flags have no command here; other quotes stay.
        let raise = "raise it: `samocode resume x --raise-budget cost=40`; see `_qa.md`";
        assert_eq!(for_chat(raise), raise);
        assert_eq!(
            for_chat("`samocode status`, `samocode status x`"),
            "/status, /session x"
        );
        assert_eq!(
            for_chat("a lone `samocode resume"),
            "a lone `samocode resume"
        );
        assert_eq!(
            for_chat("answer every question first (`samocode answer`)"),
            "answer every question first (/answer)"
        );
        assert_eq!(
            answer_for_chat(
                "question Q2 has no suggested answer; answer it with --q 2 TEXT",
                "x"
            ),
            "question Q2 has no suggested answer; answer it with /answer x 2 text"
        );
    }

    /// What an agent wrote reaches the chat with its control characters and reordering
    /// marks shown as text.
    #[test]
    fn an_agents_control_and_reordering_characters_are_shown_as_text() {
        assert_eq!(
            escape("a\u{7}b\u{1b}[31mc\u{202e}txt.exe <i>&\n"),
            "a^Gb^[[31mc&lt;U+202E&gt;txt.exe &lt;i&gt;&amp;\n"
        );
    }

    /// A session blocked by its budget gets no Resume button (a press could only be refused:
    /// a budget is raised from the command line), and the notice says what to run.
    #[test]
    fn a_budget_block_says_how_to_raise_it_and_offers_no_button() {
        let notice = notice(&settled(Settled::Blocked {
            reason: "cost budget reached: $0.0250 of $0.02".into(),
        }))
        .unwrap();
        assert!(notice.buttons.is_empty(), "{:?}", notice.buttons);
        assert!(
            notice.html.contains(
                "<code>samocode resume 26-11-24-auth --raise-budget cost=NEW_LIMIT</code>"
            ),
            "{}",
            notice.html
        );
    }

    /// No piece is only white space: Telegram refuses one as empty, and the pieces after it
    /// (the one with the buttons) were never sent.
    #[test]
    fn a_long_notice_has_no_empty_piece() {
        let first = "A".repeat(MAX_MESSAGE);
        let cases = [
            format!("{first}\n\n{}", "B".repeat(5000)),
            format!("{first}\n\n\n\n{}\n", "C".repeat(MAX_MESSAGE)),
            format!("x\n{}{}", " ".repeat(MAX_MESSAGE), "D".repeat(10)),
        ];
        for html in cases {
            let pieces = split(&html);
            assert!(
                pieces.iter().all(|p| !p.trim().is_empty()),
                "{:?}",
                pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
            );
            assert!(pieces.iter().all(|p| p.chars().count() <= MAX_MESSAGE));
            let kept: String = pieces
                .concat()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let given: String = html.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(kept, given, "nothing of the text is lost");
        }
    }

    #[test]
    fn a_long_notice_is_closed_on_its_last_piece_within_the_limit() {
        let question = format!("Q1: {}\n", "a".repeat(3000));
        let html = question.repeat(4);
        let text = closed(&html, "answered by @ann").unwrap();
        assert!(text.chars().count() <= MAX_MESSAGE, "{}", text.len());
        assert!(text.ends_with("<i>answered by @ann</i>"));
        assert_eq!(text.matches("Q1:").count(), 1, "only the last piece");
        // A last piece with no room for the line: closed apart.
        let full = "b".repeat(MAX_MESSAGE - 5);
        assert_eq!(closed(&full, "approved by @ann 14:02"), None);
        assert_eq!(
            closed("short", "done").as_deref(),
            Some("short\n\n<i>done</i>")
        );
    }
    use crate::protocol::Phase;

    fn settled(settled: Settled) -> SessionEvent {
        SessionEvent::Settled {
            session: "26-11-24-auth".into(),
            phase: Phase::Planning,
            settled,
            questions: Vec::new(),
            ask: None,
            park: None,
        }
    }

    #[test]
    fn notices_people_read() {
        let plan = notice(&settled(Settled::Waiting {
            wait_for: WaitFor::PlanApproval,
        }))
        .unwrap();
        assert_eq!(
            plan.html,
            "📋 <b>26-11-24-auth</b> wrote a plan and waits for approval.\nOr reply <code>/reject 26-11-24-auth what to change</code>."
        );
        assert_eq!(
            plan.buttons,
            vec![vec![Button {
                label: "Approve".into(),
                data: "approve:26-11-24-auth".into()
            }]]
        );
        assert!(plan.open);
        // A name too long for a button's data: the notice says the command instead (it said
        // only how to reject).
        let long = "26-11-24-".to_string() + &"a".repeat(56);
        let plan = notice(&SessionEvent::Settled {
            session: long.clone(),
            phase: Phase::Planning,
            settled: Settled::Waiting {
                wait_for: WaitFor::PlanApproval,
            },
            questions: Vec::new(),
            ask: None,
            park: None,
        })
        .unwrap();
        assert!(plan.buttons.is_empty());
        assert!(
            plan.html.contains(&format!(
                "Reply <code>/approve {long}</code>, or <code>/reject {long} what to change</code>."
            )),
            "{}",
            plan.html
        );
        let blocked = notice(&settled(Settled::Blocked {
            reason: "needs <db> & a key".into(),
        }))
        .unwrap();
        assert_eq!(
            blocked.html,
            "⛔ <b>26-11-24-auth</b> is blocked in planning: needs &lt;db&gt; &amp; a key"
        );
        // What the agent asks of the person is in the notice itself: a phone has no notebook.
        let asked = |settled: Settled, ask: &str| match self::settled(settled) {
            SessionEvent::Settled {
                session,
                phase,
                settled,
                questions,
                ..
            } => {
                notice(&SessionEvent::Settled {
                    session,
                    phase,
                    settled,
                    questions,
                    ask: Some(ask.into()),
                    park: None,
                })
                .unwrap()
                .html
            }
            _ => unreachable!(),
        };
        assert_eq!(
            asked(
                Settled::Waiting {
                    wait_for: WaitFor::HumanAction
                },
                "create the <Stripe> key"
            ),
            "✋ <b>26-11-24-auth</b> waits for an action by a person: create the &lt;Stripe&gt; key\nResume when it is done."
        );
        assert_eq!(
            asked(
                Settled::Blocked {
                    reason: "no database".into()
                },
                "needs environment"
            ),
            "⛔ <b>26-11-24-auth</b> is blocked in planning: no database (needs environment)"
        );
        let done = notice(&settled(Settled::Done {
            summary: Some("Added JWT".into()),
        }))
        .unwrap();
        assert_eq!(done.html, "✅ <b>26-11-24-auth</b> is done: Added JWT");
        assert!(done.buttons.is_empty() && !done.open);
        let progress = SessionEvent::AttemptStarted {
            session: "s".into(),
            phase: Phase::Testing,
            iteration: 1,
            attempt: 1,
        };
        assert_eq!(notice(&progress), None);
    }

    #[test]
    fn questions_get_a_button_per_option_and_one_for_all_suggestions() {
        let event = SessionEvent::Settled {
            session: "auth".into(),
            phase: Phase::Requirements,
            settled: Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            },
            questions: vec![
                Asked {
                    round: 2,
                    number: 1,
                    text: "Storage <kind>?".into(),
                    options: vec![
                        "files".into(),
                        "sqlite".into(),
                        "\u{202e}on ,sey\u{1b}]0;t\u{7}".into(),
                    ],
                    suggested: Some("files".into()),
                },
                Asked {
                    round: 2,
                    number: 2,
                    text: "Name?".into(),
                    options: Vec::new(),
                    suggested: None,
                },
            ],
            ask: None,
            park: None,
        };
        let n = notice(&event).unwrap();
        assert!(
            n.html.contains("<b>Q1</b>: Storage &lt;kind&gt;?"),
            "{}",
            n.html
        );
        // Q2 has no suggestion: Accept all could only be refused, and is not offered.
        let data = button_data(&n);
        assert_eq!(
            data,
            [vec!["opt:2:1:0:auth", "opt:2:1:1:auth", "opt:2:1:2:auth"]]
        );
        assert_eq!(n.buttons[0][1].label, "Q1: sqlite");
        // The agent's marks and codes are shown on a button as in the text, never obeyed.
        assert_eq!(n.buttons[0][2].label, "Q1: <U+202E>on ,sey^[]0;t^G");
        assert!(
            n.html
                .contains("Press an option, or reply <code>/answer auth N text</code>."),
            "{}",
            n.html
        );
    }

    #[test]
    fn questions_numbered_alike_in_one_round_get_no_buttons_and_are_pointed_to_answer() {
        let asked = |number: u32, text: &str| Asked {
            round: 1,
            number,
            text: text.into(),
            options: vec!["yes".into(), "no".into()],
            suggested: None,
        };
        let event = SessionEvent::Settled {
            session: "auth".into(),
            phase: Phase::Requirements,
            settled: Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            },
            questions: vec![asked(1, "Cache?"), asked(1, "Retry?"), asked(2, "Log?")],
            ask: None,
            park: None,
        };
        let n = notice(&event).unwrap();
        let data = button_data(&n);
        assert_eq!(data, [vec!["opt:1:2:0:auth", "opt:1:2:1:auth"]]);
        assert_eq!(
            n.html
                .matches("More than one question is numbered Q1")
                .count(),
            1,
            "{}",
            n.html
        );
        assert!(n.html.contains("/answer auth 1 text</code> once for each"));
    }

    #[test]
    fn long_texts_split_on_lines_and_long_names_lose_only_the_buttons() {
        let html = (0..400)
            .map(|i| format!("line {i}: x &amp; y"))
            .collect::<Vec<_>>()
            .join("\n");
        let pieces = split(&html);
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_MESSAGE));
        assert_eq!(pieces.join("\n"), html, "nothing lost, lines whole");
        let one_line = "&amp;".repeat(2000);
        assert!(split(&one_line).iter().all(|p| p.ends_with(';')));
        let name = format!("26-11-24-{}", "n".repeat(64));
        let message = notice(&SessionEvent::Settled {
            session: name,
            phase: Phase::Planning,
            settled: Settled::Stopped,
            questions: Vec::new(),
            ask: None,
            park: None,
        })
        .unwrap();
        assert!(message.buttons.is_empty());
    }

    /// Telegram refuses a keyboard of more than 100 buttons (or about 10 KB): a notice of
    /// 30 questions of 4 options each was refused for good, its last questions and every
    /// button lost. The buttons stop where they would not fit, Accept all is kept, and the
    /// text says which questions to answer with /answer.
    #[test]
    fn many_questions_get_the_buttons_telegram_takes_and_the_rest_are_pointed_to_answer() {
        let questions: Vec<Asked> = (1..=30)
            .map(|number| Asked {
                round: 1,
                number,
                text: format!("Question {number}?"),
                options: ["PostgreSQL", "SQLite файлы", "分布式存储", "ничего 🚫"]
                    .map(String::from)
                    .to_vec(),
                suggested: Some("PostgreSQL".into()),
            })
            .collect();
        let event = SessionEvent::Settled {
            session: "26-11-24-auth".into(),
            phase: Phase::Requirements,
            settled: Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            },
            questions,
            ask: None,
            park: Some(1_764_000_000_000),
        };
        let n = notice(&event).unwrap();
        let count: usize = n.buttons.iter().map(Vec::len).sum();
        let markup = serde_json::to_string(&n.buttons).unwrap().len();
        assert!(
            count <= 100 && markup <= 10_000,
            "{count} buttons, {markup} bytes"
        );
        let data = button_data(&n);
        assert_eq!(
            data.last().unwrap()[0],
            format!(
                "answer:26-11-24-auth:{}",
                crate::bot::commands::base36(1_764_000_000_000)
            )
        );
        let last = n.buttons[n.buttons.len() - 2][0].label.clone();
        let shown: u32 = last[1..last.find(':').unwrap()].parse().unwrap();
        assert!(shown < 30, "{last}");
        assert!(
            n.html.contains(&format!(
                "Q{} to Q30 have no buttons (more than one message can hold): reply <code>/answer 26-11-24-auth N text</code>",
                shown + 1
            )),
            "{}",
            n.html
        );
    }

    /// A notice whose buttons cannot be made (a name too long for button data) does not ask
    /// for a press: it names the commands.
    #[test]
    fn questions_without_buttons_are_answered_by_command() {
        let name = format!("26-11-24-{}", "n".repeat(64));
        let n = notice(&SessionEvent::Settled {
            session: name.clone(),
            phase: Phase::Requirements,
            settled: Settled::Waiting {
                wait_for: WaitFor::QaAnswers,
            },
            questions: vec![Asked {
                round: 1,
                number: 1,
                text: "Cache?".into(),
                options: vec!["yes".into(), "no".into()],
                suggested: Some("yes".into()),
            }],
            ask: None,
            park: None,
        })
        .unwrap();
        assert!(n.buttons.is_empty());
        assert!(!n.html.contains("Press"), "{}", n.html);
        assert!(
            n.html.contains(&format!(
                "Reply <code>/answer {name} N text</code> for each question, or <code>/accept {name}</code> to take every suggestion."
            )),
            "{}",
            n.html
        );
    }

    /// The data of a notice's buttons, row by row.
    fn button_data(n: &Notice) -> Vec<Vec<&str>> {
        n.buttons
            .iter()
            .map(|row| row.iter().map(|b| b.data.as_str()).collect())
            .collect()
    }
}
