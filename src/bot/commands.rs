//! The bot's commands, parsed by teloxide's `BotCommands` derive and registered as the chat's
//! command menu; what a pressed button means.

use teloxide::utils::command::{BotCommands, ParseError};

use crate::session::person::{Answers, PersonCommand};

// What a person can ask the bot (a plain comment: the derive would show a doc comment in /help).
#[derive(BotCommands, Clone, Debug, PartialEq)]
#[command(
    rename_rule = "lowercase",
    description = "samocode runs coding agents; these commands act on its sessions (NAME: the session's name):"
)]
pub enum Command {
    #[command(description = "the sessions")]
    Status,
    #[command(
        description = "NAME — one session in full: its state, newest Flow Log lines, open questions"
    )]
    Session(String),
    #[command(description = "NAME — approve the plan")]
    Approve(String),
    #[command(description = "NAME reason — send the plan back with what to change", parse_with = reject)]
    Reject(String, String),
    #[command(description = "NAME N text — answer question N", parse_with = answer)]
    Answer(String, u32, String),
    #[command(description = "NAME — accept every suggested answer")]
    Accept(String),
    #[command(description = "NAME — park the session")]
    Stop(String),
    #[command(description = "NAME — continue a stopped, blocked or failed session")]
    Resume(String),
    #[command(description = "NAME — the last 30 lines of its newest attempt")]
    Logs(String),
    #[command(description = "NAME text — guidance for its next iteration", parse_with = tell)]
    Tell(String, String),
    #[command(description = "these commands")]
    Help,
    #[command(hide)]
    Start,
}

impl Command {
    /// Parses a message; a command addressed to a named bot (`/approve@my_bot x`) counts too.
    pub fn read(text: &str) -> Result<Command, String> {
        let text = text.trim();
        let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let first = first.split('@').next().unwrap_or(first);
        let normal = format!("{first} {}", rest.trim());
        let command = Command::parse(normal.trim_end(), "").map_err(|error| {
            match error {
                // Short: in a group, it may be another bot's command.
                ParseError::UnknownCommand(command) => {
                    format!("unknown command {command}; /help lists this bot's")
                }
                ParseError::TooFewArguments { .. } | ParseError::IncorrectFormat(_) => {
                    format!("{first} needs more: see /help")
                }
                // It says what the command takes.
                ParseError::Custom(error) => error.to_string(),
                other => format!("{other}\n\n{}", Command::descriptions()),
            }
        })?;
        match &command {
            Command::Session(name)
            | Command::Approve(name)
            | Command::Accept(name)
            | Command::Stop(name)
            | Command::Resume(name)
            | Command::Logs(name)
                if name.trim().is_empty() =>
            {
                Err(format!(
                    "{first} needs the session's NAME: {first} NAME (see /help)"
                ))
            }
            _ => Ok(command),
        }
    }

    /// True when `text` is a command for this bot (`me`, its username, when known): it starts
    /// with `/` and names no other bot. Anything else in the chat is people talking.
    pub fn for_me(text: &str, me: Option<&str>) -> bool {
        let Some(command) = text.trim_start().strip_prefix('/') else {
            return false;
        };
        let first = command.split(char::is_whitespace).next().unwrap_or("");
        match (first.split_once('@'), me) {
            (Some((_, to)), Some(me)) => to.eq_ignore_ascii_case(me),
            _ => true,
        }
    }

    /// The session and the person's command, for the commands that act on a session.
    pub fn person(&self) -> Option<(&str, PersonCommand)> {
        Some(match self {
            Command::Approve(name) => (name, PersonCommand::Approve),
            Command::Reject(name, reason) => (
                name,
                PersonCommand::Reject {
                    reason: reason.clone(),
                },
            ),
            Command::Answer(name, number, text) => (
                name,
                PersonCommand::Answer {
                    answers: Answers::Given(vec![(*number, text.clone())]),
                },
            ),
            Command::Accept(name) => (
                name,
                PersonCommand::Answer {
                    answers: Answers::Suggestions,
                },
            ),
            Command::Stop(name) => (name, PersonCommand::Stop),
            Command::Resume(name) => (name, PersonCommand::Resume),
            _ => return None,
        })
    }
}

fn reject(input: String) -> Result<(String, String), ParseError> {
    name_and_text(input).map_err(|_| {
        ParseError::Custom("give the session's name and what to change: /reject NAME reason".into())
    })
}

fn tell(input: String) -> Result<(String, String), ParseError> {
    name_and_text(input).map_err(|_| {
        ParseError::Custom("give the session's name and the note: /tell NAME text".into())
    })
}

fn name_and_text(input: String) -> Result<(String, String), ParseError> {
    let input = input.trim();
    match input.split_once(char::is_whitespace) {
        Some((name, text)) if !text.trim().is_empty() => {
            Ok((name.to_string(), text.trim().to_string()))
        }
        _ => Err(ParseError::Custom(
            "give the session's name, then the text".into(),
        )),
    }
}

fn answer(input: String) -> Result<(String, u32, String), ParseError> {
    const USAGE: &str =
        "give the session's name, the question's number and the answer: /answer NAME N text";
    let (name, rest) = name_and_text(input).map_err(|_| ParseError::Custom(USAGE.into()))?;
    let (number, text) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| ParseError::Custom(USAGE.into()))?;
    let number = number
        .trim_start_matches(['Q', 'q'])
        .parse()
        .map_err(|_| ParseError::Custom(format!("{number:?} is not a question number").into()))?;
    Ok((name, number, text.trim().to_string()))
}

/// A pressed button: `VERB:SESSION:PARK` (the park it was sent for, in base 36; `VERB:SESSION`
/// in notices of earlier builds, or when the name leaves no room), or `opt:R:Q:I:SESSION` for
/// option I of question Q of round R (`opt:Q:I:SESSION`, without the round, in notices sent
/// before rounds were named).
#[derive(Debug, Clone, PartialEq)]
pub enum Press {
    Person {
        session: String,
        command: PersonCommand,
        park: Option<i64>,
    },
    /// Option `index` of question `question` (the bot reads its text from `_qa.md`).
    Option {
        session: String,
        /// `None` for a button of an older notice, which did not name its round.
        round: Option<u32>,
        question: u32,
        index: usize,
        park: Option<i64>,
    },
}

/// Parses the data of a pressed button.
pub fn press(data: &str) -> Option<Press> {
    let (verb, rest) = data.split_once(':')?;
    let command = match verb {
        "approve" => PersonCommand::Approve,
        "resume" => PersonCommand::Resume,
        "answer" => PersonCommand::Answer {
            answers: Answers::Suggestions,
        },
        "opt" => {
            // A session name holds no ':', so the count of parts tells the forms apart.
            let parts: Vec<&str> = rest.split(':').collect();
            let (round, numbers, park) = match parts.as_slice() {
                [round, question, index, session, park] => (
                    Some(round.parse().ok()?),
                    [question, index, session],
                    Some(from_base36(park)?),
                ),
                [round, question, index, session] => {
                    (Some(round.parse().ok()?), [question, index, session], None)
                }
                [question, index, session] => (None, [question, index, session], None),
                _ => return None,
            };
            let [question, index, session] = numbers;
            return Some(Press::Option {
                session: session.to_string(),
                round,
                question: question.parse().ok()?,
                index: index.parse().ok()?,
                park,
            });
        }
        _ => return None,
    };
    // A session name holds no ':': one more part is the park.
    let (session, park) = match rest.split_once(':') {
        Some((session, park)) => (session, Some(from_base36(park)?)),
        None => (rest, None),
    };
    Some(Press::Person {
        session: session.to_string(),
        command,
        park,
    })
}

/// `n` in base 36 (lower case), as a button's data names a park.
pub fn base36(n: i64) -> String {
    let mut n = n.unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).expect("a digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

fn from_base36(text: &str) -> Option<i64> {
    i64::from_str_radix(text, 36).ok().filter(|n| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(
            Command::read("/approve auth"),
            Ok(Command::Approve("auth".into()))
        );
        assert_eq!(
            Command::read("/approve@samocode_bot auth"),
            Ok(Command::Approve("auth".into()))
        );
        assert_eq!(
            Command::read("/reject auth split step 2"),
            Ok(Command::Reject("auth".into(), "split step 2".into()))
        );
        assert_eq!(
            Command::read("/answer auth Q2 yes please"),
            Ok(Command::Answer("auth".into(), 2, "yes please".into()))
        );
        assert_eq!(
            Command::read("/tell auth use the existing auth middleware"),
            Ok(Command::Tell(
                "auth".into(),
                "use the existing auth middleware".into()
            ))
        );
        assert_eq!(Command::read("/status"), Ok(Command::Status));
        assert!(
            Command::read("/reject auth")
                .unwrap_err()
                .contains("/reject NAME reason")
        );
        assert!(
            Command::read("/tell auth")
                .unwrap_err()
                .contains("/tell NAME text")
        );
        // `/answer NAME` alone: what /answer takes, not "give the session's name".
        for short in ["/answer hum", "/answer hum 2", "/answer"] {
            let said = Command::read(short).unwrap_err();
            assert!(said.contains("/answer NAME N text"), "{short}: {said}");
            assert!(!said.contains("/status"), "no whole help: {said}");
        }
        assert!(
            Command::read("/deploy auth")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(Command::read("/help").is_ok());
        assert!(
            Command::read("/approve")
                .unwrap_err()
                .contains("/approve needs the session's NAME")
        );
        assert!(Command::for_me(
            "/approve@samocode_bot x",
            Some("Samocode_Bot")
        ));
        assert!(Command::for_me("/approve x", Some("samocode_bot")));
        assert!(!Command::for_me(
            "/approve@other_bot x",
            Some("samocode_bot")
        ));
        assert!(!Command::for_me("hello there", Some("samocode_bot")));
        let help = Command::descriptions().to_string();
        for command in [
            "/status", "/session", "/approve", "/reject", "/answer", "/accept", "/stop", "/resume",
            "/logs", "/tell", "/help",
        ] {
            assert!(help.contains(command), "{command} in {help}");
        }
        assert!(!help.contains("/start"));
        // The derive's doc comment is not part of what people read.
        assert!(help.starts_with("samocode runs coding agents"), "{help}");
    }

    #[test]
    fn buttons_parse() {
        assert_eq!(
            press("answer:26-11-24-auth"),
            Some(Press::Person {
                session: "26-11-24-auth".into(),
                command: PersonCommand::Answer {
                    answers: Answers::Suggestions
                },
                park: None,
            })
        );
        // A button that names its park.
        let park = 1_796_000_000_123_i64;
        assert_eq!(
            press(&format!("approve:26-11-24-auth:{}", base36(park))),
            Some(Press::Person {
                session: "26-11-24-auth".into(),
                command: PersonCommand::Approve,
                park: Some(park),
            })
        );
        assert_eq!(press("approve:26-11-24-auth:!!"), None);
        assert_eq!(
            press(&format!("opt:3:2:1:auth:{}", base36(park))),
            Some(Press::Option {
                session: "auth".into(),
                round: Some(3),
                question: 2,
                index: 1,
                park: Some(park),
            })
        );
        assert_eq!(
            press("opt:3:2:1:auth"),
            Some(Press::Option {
                session: "auth".into(),
                round: Some(3),
                question: 2,
                index: 1,
                park: None,
            })
        );
        assert_eq!(
            press("opt:2:1:auth"),
            Some(Press::Option {
                session: "auth".into(),
                round: None,
                question: 2,
                index: 1,
                park: None,
            })
        );
        assert_eq!(press("opt:x:2:1:auth"), None);
        assert_eq!(press("opt:1:2:1:auth:more:x"), None);
        assert_eq!(press("opt:1:2:1:auth:!!"), None);
        assert_eq!(press("nonsense"), None);
    }
}
