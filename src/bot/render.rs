//! What the bot says and what it understands, as pure functions: HTML messages (escaped, within
//! Telegram's 4096 characters), inline buttons, and the parsing of commands and button data.

use crate::notify::SessionEvent;
use crate::protocol::WaitFor;
use crate::session::open::Settled;
use crate::session::person::{Answers, PersonCommand};

/// Telegram refuses longer messages.
pub const MAX_MESSAGE: usize = 4096;
/// Telegram refuses longer button data.
const MAX_CALLBACK: usize = 64;

/// A button: its label and the data it sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: &'static str,
    pub data: String,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub html: String,
    pub buttons: Vec<Button>,
}

/// Escapes text for Telegram's HTML parse mode.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message for an event worth a person's attention; `None` for routine progress.
pub fn event(event: &SessionEvent) -> Option<Outgoing> {
    if let SessionEvent::UsageLimited { session, until } = event {
        return Some(Outgoing {
            html: format!(
                "⏳ <b>{}</b> hit the provider's usage limit; it resumes by itself at {}.",
                escape(session),
                escape(&until.to_string())
            ),
            buttons: Vec::new(),
        });
    }
    if let SessionEvent::Broken {
        session, reason, ..
    } = event
    {
        return Some(Outgoing {
            html: clip(format!(
                "💥 <b>{}</b> cannot be opened: {}\nFix the files, then resume it.",
                escape(session),
                escape(reason)
            )),
            buttons: button("Resume", "resume", session),
        });
    }
    let SessionEvent::Settled {
        session,
        phase,
        settled,
    } = event
    else {
        return None;
    };
    let name = format!("<b>{}</b>", escape(session));
    let (text, buttons) = match settled {
        Settled::Waiting {
            wait_for: WaitFor::QaAnswers,
        } => (
            format!(
                "❓ {name} has questions in _qa.md.\nAccept the suggested answers, or reply <code>/answer {0} N text</code>.",
                escape(session)
            ),
            button("Accept suggestions", "answer", session),
        ),
        Settled::Waiting {
            wait_for: WaitFor::PlanApproval,
        } => (
            format!(
                "📋 {name} wrote a plan and waits for approval.\nOr reply <code>/reject {0} what to change</code>.",
                escape(session)
            ),
            button("Approve", "approve", session),
        ),
        Settled::Waiting {
            wait_for: WaitFor::HumanAction,
        } => (
            format!(
                "✋ {name} waits for an action by a person (see Next: in _overview.md); resume when it is done."
            ),
            button("Resume", "resume", session),
        ),
        Settled::Blocked { reason } => (
            format!("⛔ {name} is blocked in {phase}: {}", escape(reason)),
            button("Resume", "resume", session),
        ),
        Settled::Failed { reason } => (
            format!("💥 {name} failed in {phase}: {}", escape(reason)),
            button("Resume", "resume", session),
        ),
        Settled::Done { summary } => (
            format!(
                "✅ {name} is done{}",
                summary
                    .as_deref()
                    .map(|s| format!(": {}", escape(s)))
                    .unwrap_or_default()
            ),
            Vec::new(),
        ),
        Settled::Stopped => (
            format!("⏸ {name} is stopped in {phase}."),
            button("Resume", "resume", session),
        ),
        Settled::Continued { .. } => return None,
    };
    Some(Outgoing {
        html: clip(text),
        buttons,
    })
}

fn button(label: &'static str, verb: &str, session: &str) -> Vec<Button> {
    let data = format!("{verb}:{session}");
    // A name too long for button data still gets its message; the command works instead.
    if data.len() <= MAX_CALLBACK {
        vec![Button { label, data }]
    } else {
        Vec::new()
    }
}

fn clip(text: String) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text;
    }
    let mut clipped: String = text.chars().take(MAX_MESSAGE - 1).collect();
    // Never cut an HTML entity or tag in half.
    if let Some(open) = clipped.rfind(['&', '<'])
        && !clipped[open..].contains([';', '>'])
    {
        clipped.truncate(open);
    }
    clipped.push('…');
    clipped
}

/// What a person asked the bot for.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// A person's command for one session (by folder or short name).
    Person {
        session: String,
        command: PersonCommand,
    },
    /// The list of sessions.
    Status,
    /// The commands the bot knows.
    Help,
}

/// The commands, as the help text lists them.
pub const HELP: &str = "/status — the sessions\n/approve NAME — approve the plan\n/reject NAME TEXT — send the plan back\n/answer NAME — accept the suggested answers\n/answer NAME N TEXT — answer question N\n/resume NAME, /stop NAME";

/// Parses a text command (`/approve auth`, `/answer auth 2 yes please`).
pub fn command(text: &str) -> Result<Ask, String> {
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or("").split('@').next().unwrap_or("");
    let session = words.next().map(str::to_string);
    let rest: Vec<&str> = words.collect();
    let need = |session: Option<String>| {
        session.ok_or_else(|| format!("{verb} needs a session name\n\n{HELP}"))
    };
    let command = match verb {
        "/status" => return Ok(Ask::Status),
        "/start" | "/help" => return Ok(Ask::Help),
        "/approve" => PersonCommand::Approve,
        "/resume" => PersonCommand::Resume,
        "/stop" => PersonCommand::Stop,
        "/reject" if rest.is_empty() => {
            return Err("/reject needs a reason: /reject NAME what to change".into());
        }
        "/reject" => PersonCommand::Reject {
            reason: rest.join(" "),
        },
        "/answer" if rest.is_empty() => PersonCommand::Answer {
            answers: Answers::Suggestions,
        },
        "/answer" => {
            let number = rest[0]
                .trim_start_matches(['Q', 'q'])
                .parse::<u32>()
                .map_err(|_| {
                    format!(
                        "/answer NAME N TEXT: {:?} is not a question number",
                        rest[0]
                    )
                })?;
            if rest.len() < 2 {
                return Err("/answer NAME N TEXT needs the answer text".into());
            }
            PersonCommand::Answer {
                answers: Answers::Given(vec![(number, rest[1..].join(" "))]),
            }
        }
        _ => return Err(format!("unknown command {verb:?}\n\n{HELP}")),
    };
    Ok(Ask::Person {
        session: need(session)?,
        command,
    })
}

/// Parses the data of a pressed button.
pub fn callback(data: &str) -> Option<Ask> {
    let (verb, session) = data.split_once(':')?;
    let command = match verb {
        "approve" => PersonCommand::Approve,
        "resume" => PersonCommand::Resume,
        "answer" => PersonCommand::Answer {
            answers: Answers::Suggestions,
        },
        _ => return None,
    };
    Some(Ask::Person {
        session: session.to_string(),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Phase;

    fn settled(settled: Settled) -> SessionEvent {
        SessionEvent::Settled {
            session: "26-11-24-auth".into(),
            phase: Phase::Planning,
            settled,
        }
    }

    #[test]
    fn messages_people_read() {
        let plan = event(&settled(Settled::Waiting {
            wait_for: WaitFor::PlanApproval,
        }))
        .unwrap();
        assert_eq!(
            plan.html,
            "📋 <b>26-11-24-auth</b> wrote a plan and waits for approval.\nOr reply <code>/reject 26-11-24-auth what to change</code>."
        );
        assert_eq!(
            plan.buttons,
            vec![Button {
                label: "Approve",
                data: "approve:26-11-24-auth".into()
            }]
        );

        let blocked = event(&settled(Settled::Blocked {
            reason: "needs <db> & a key".into(),
        }))
        .unwrap();
        assert_eq!(
            blocked.html,
            "⛔ <b>26-11-24-auth</b> is blocked in planning: needs &lt;db&gt; &amp; a key"
        );
        assert_eq!(blocked.buttons[0].data, "resume:26-11-24-auth");

        let done = event(&settled(Settled::Done {
            summary: Some("Added JWT".into()),
        }))
        .unwrap();
        assert_eq!(done.html, "✅ <b>26-11-24-auth</b> is done: Added JWT");
        assert!(done.buttons.is_empty());

        let progress = SessionEvent::AttemptStarted {
            session: "s".into(),
            phase: Phase::Testing,
            iteration: 1,
            attempt: 1,
        };
        assert_eq!(event(&progress), None);
    }

    #[test]
    fn long_text_is_clipped_and_long_names_lose_only_the_button() {
        let long = event(&settled(Settled::Failed {
            reason: "x&y ".repeat(2000),
        }))
        .unwrap();
        assert!(long.html.chars().count() <= MAX_MESSAGE);
        assert!(long.html.ends_with('…'));
        let name = format!("26-11-24-{}", "n".repeat(64));
        let message = event(&SessionEvent::Settled {
            session: name,
            phase: Phase::Planning,
            settled: Settled::Stopped,
        })
        .unwrap();
        assert!(message.buttons.is_empty());
    }

    #[test]
    fn a_usage_limit_says_when_the_session_resumes() {
        let message = event(&SessionEvent::UsageLimited {
            session: "26-11-24-a<b".into(),
            until: "2026-11-24T15:28:00Z".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(
            message.html,
            "⏳ <b>26-11-24-a&lt;b</b> hit the provider's usage limit; it resumes by itself at 2026-11-24T15:28:00Z."
        );
        assert!(message.buttons.is_empty());
    }

    #[test]
    fn commands_and_buttons_parse() {
        assert_eq!(
            command("/approve auth"),
            Ok(Ask::Person {
                session: "auth".into(),
                command: PersonCommand::Approve
            })
        );
        assert_eq!(
            command("/approve@samocode_bot auth"),
            Ok(Ask::Person {
                session: "auth".into(),
                command: PersonCommand::Approve
            })
        );
        assert_eq!(
            command("/reject auth split step 2"),
            Ok(Ask::Person {
                session: "auth".into(),
                command: PersonCommand::Reject {
                    reason: "split step 2".into()
                }
            })
        );
        assert_eq!(
            command("/answer auth Q2 yes please"),
            Ok(Ask::Person {
                session: "auth".into(),
                command: PersonCommand::Answer {
                    answers: Answers::Given(vec![(2, "yes please".into())])
                }
            })
        );
        assert_eq!(command("/status"), Ok(Ask::Status));
        assert!(
            command("/approve")
                .unwrap_err()
                .contains("needs a session name")
        );
        assert!(
            command("/reject auth")
                .unwrap_err()
                .contains("needs a reason")
        );
        assert!(
            command("/deploy auth")
                .unwrap_err()
                .contains("unknown command")
        );
        assert_eq!(
            callback("answer:26-11-24-auth"),
            Some(Ask::Person {
                session: "26-11-24-auth".into(),
                command: PersonCommand::Answer {
                    answers: Answers::Suggestions
                }
            })
        );
        assert_eq!(callback("nonsense"), None);
    }
}
