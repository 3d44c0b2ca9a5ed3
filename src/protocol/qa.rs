//! `_qa.md`: questions the agent asks, answers a person gives (PROTOCOL.md section 5).
//!
//! Filling answers rewrites only `Answer:` lines; everything else in the file stays as it was.
//!
//! `--q N` names a question by its number. An agent may number two questions alike (two
//! `Q1`s); then each `--q 1` answers the next open one in file order, so both can be
//! answered (`--q 1 A --q 1 B`, or `--accept-suggestions`), and the open list shows both.

/// One question of `_qa.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The number after `Q`.
    pub number: u32,
    /// 1 for `# Questions`, N for `# Round N`.
    pub round: u32,
    pub text: String,
    pub options: Vec<String>,
    pub suggested: Option<String>,
    /// The answer text; `None` while the `Answer:` line is empty.
    pub answer: Option<String>,
    /// The zero-based line of `Answer:`, when there is one.
    answer_line: Option<usize>,
}

/// The questions of `_qa.md`, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QaDoc {
    pub questions: Vec<Question>,
}

/// Why answers could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QaError {
    /// `_qa.md` holds no `## QN:` question.
    #[error("_qa.md has no questions (expected \"## Q1: ...\" headings)")]
    NoQuestions,
    /// `--q N` names a question that is not in the file.
    #[error("_qa.md has no question Q{number}; it asks {asked}")]
    UnknownQuestion { number: u32, asked: String },
    /// One command gave a question two answers (more `--q N` than questions numbered N).
    #[error(
        "Q{0} is given more than one answer; give each question one answer (--q {0} TEXT once)"
    )]
    AnsweredTwice(u32),
    /// A question has no `Answer:` line to fill.
    #[error("question Q{0} in _qa.md has no \"Answer:\" line; add one or edit the file by hand")]
    NoAnswerLine(u32),
    /// `--accept-suggestions` met a question without `Suggested:`.
    #[error("question Q{0} has no suggested answer; answer it with --q {0} TEXT")]
    NoSuggestion(u32),
    /// An answer was empty.
    #[error("the answer to Q{0} is empty")]
    EmptyAnswer(u32),
    /// An answer holds a NUL byte.
    #[error("the answer to Q{0} contains a NUL byte; remove it")]
    NulInAnswer(u32),
    /// An answer longer than `_qa.md` takes from a person.
    #[error(
        "the answer to Q{number} is {bytes} bytes, over the limit of {max} bytes: put a long text in a file in the repository and answer with where it is"
    )]
    AnswerTooLong {
        number: u32,
        bytes: usize,
        max: usize,
    },
}

/// The longest answer a person may give, in bytes: `_qa.md` is read back with a size cap, and
/// a file over it could not be read at all.
pub const MAX_ANSWER: usize = 16 * 1024;

impl QaDoc {
    /// Reads every `## QN: text` question and its `Options:`, `Suggested:` and `Answer:` lines.
    pub fn parse(text: &str) -> QaDoc {
        let mut questions: Vec<Question> = Vec::new();
        let mut round = 1;
        for (index, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("# Round ") {
                round = rest.trim().parse().unwrap_or(round + 1);
                continue;
            }
            if let Some((number, text)) = question_heading(line) {
                questions.push(Question {
                    number,
                    round,
                    text,
                    options: Vec::new(),
                    suggested: None,
                    answer: None,
                    answer_line: None,
                });
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some(question) = questions.last_mut() else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("Options:") {
                question.options = rest
                    .split('|')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect();
            } else if let Some(rest) = line.strip_prefix("Suggested:") {
                question.suggested = non_empty(rest);
            } else if let Some(rest) = line.strip_prefix("Answer:")
                && question.answer_line.is_none()
            {
                question.answer = non_empty(rest);
                question.answer_line = Some(index);
            }
        }
        QaDoc { questions }
    }

    /// True when there is at least one question and every `Answer:` line has text.
    pub fn is_answered(&self) -> bool {
        !self.questions.is_empty() && self.questions.iter().all(|q| q.answer.is_some())
    }

    /// The questions still without an answer.
    pub fn open(&self) -> impl Iterator<Item = &Question> {
        self.questions.iter().filter(|q| q.answer.is_none())
    }

    /// The question `--q number` fills: the first open one of that number not already filled
    /// by this same command (`taken`), so that questions numbered alike are answered in file
    /// order; else the last one of that number (a later round wins, and an answer may be
    /// changed).
    fn target(&self, number: u32, taken: &[usize]) -> Option<usize> {
        let numbered = || {
            self.questions
                .iter()
                .enumerate()
                .filter(move |(_, q)| q.number == number)
        };
        numbered()
            .find(|(i, q)| q.answer.is_none() && !taken.contains(i))
            .or_else(|| numbered().next_back())
            .map(|(i, _)| i)
    }
}

/// Fills the given answers (question number, text) into `text`, replacing those `Answer:` lines.
pub fn fill(text: &str, answers: &[(u32, String)]) -> Result<String, QaError> {
    let doc = QaDoc::parse(text);
    if doc.questions.is_empty() {
        return Err(QaError::NoQuestions);
    }
    let mut taken = Vec::new();
    for (number, _) in answers {
        let index = doc
            .target(*number, &taken)
            .ok_or_else(|| QaError::UnknownQuestion {
                number: *number,
                asked: {
                    // Each number once, in file order (rounds may number theirs alike).
                    let mut numbers: Vec<u32> = Vec::new();
                    for q in &doc.questions {
                        if !numbers.contains(&q.number) {
                            numbers.push(q.number);
                        }
                    }
                    let numbers: Vec<String> = numbers.iter().map(|n| format!("Q{n}")).collect();
                    numbers.join(", ")
                },
            })?;
        if taken.contains(&index) {
            return Err(QaError::AnsweredTwice(*number));
        }
        taken.push(index);
    }
    let by_index: Vec<(usize, &str)> = taken
        .iter()
        .zip(answers)
        .map(|(index, (_, answer))| (*index, answer.as_str()))
        .collect();
    fill_at(text, &doc, &by_index)
}

/// Fills answers into the questions at these positions of `doc`.
fn fill_at(text: &str, doc: &QaDoc, answers: &[(usize, &str)]) -> Result<String, QaError> {
    let mut replacements = Vec::new();
    for (index, answer) in answers {
        let question = &doc.questions[*index];
        let number = question.number;
        let line = question.answer_line.ok_or(QaError::NoAnswerLine(number))?;
        if answer.contains('\0') {
            return Err(QaError::NulInAnswer(number));
        }
        let answer = answer.split_whitespace().collect::<Vec<_>>().join(" ");
        if answer.is_empty() {
            return Err(QaError::EmptyAnswer(number));
        }
        if answer.len() > MAX_ANSWER {
            return Err(QaError::AnswerTooLong {
                number,
                bytes: answer.len(),
                max: MAX_ANSWER,
            });
        }
        replacements.push((line, answer));
    }
    Ok(replace_answer_lines(text, &replacements))
}

/// Answers every open question with its `Suggested:` text.
pub fn accept_suggestions(text: &str) -> Result<String, QaError> {
    let doc = QaDoc::parse(text);
    if doc.questions.is_empty() {
        return Err(QaError::NoQuestions);
    }
    let answers = doc
        .questions
        .iter()
        .enumerate()
        .filter(|(_, q)| q.answer.is_none())
        .map(|(index, q)| {
            q.suggested
                .as_deref()
                .map(|s| (index, s))
                .ok_or(QaError::NoSuggestion(q.number))
        })
        .collect::<Result<Vec<_>, _>>()?;
    fill_at(text, &doc, &answers)
}

fn replace_answer_lines(text: &str, replacements: &[(usize, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (index, line) in text.split_inclusive('\n').enumerate() {
        match replacements.iter().rev().find(|(l, _)| *l == index) {
            Some((_, answer)) => {
                let eol = &line[line.trim_end_matches(['\r', '\n']).len()..];
                out.push_str(&format!("Answer: {answer}{eol}"));
            }
            None => out.push_str(line),
        }
    }
    out
}

fn question_heading(line: &str) -> Option<(u32, String)> {
    let rest = line.strip_prefix("## Q")?;
    let (number, text) = rest.split_once(':')?;
    Some((number.trim().parse().ok()?, text.trim().to_string()))
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "# Questions\n\n## Q1: Which storage should sessions use?\nOptions: files | sqlite\nSuggested: files\nAnswer:\n\n## Q2: Keep the old API?\nAnswer: yes\n\n# Round 2\n\n## Q3: Port?\nSuggested: 8080\nAnswer:   \n";

    #[test]
    fn parses_protocol_format() {
        let doc = QaDoc::parse(SAMPLE);
        assert_eq!(doc.questions.len(), 3);
        let q1 = &doc.questions[0];
        assert_eq!(q1.text, "Which storage should sessions use?");
        assert_eq!(q1.options, ["files", "sqlite"]);
        assert_eq!(q1.suggested.as_deref(), Some("files"));
        assert_eq!(q1.answer, None);
        assert_eq!(doc.questions[1].answer.as_deref(), Some("yes"));
        assert_eq!(doc.questions[2].round, 2);
        assert!(!doc.is_answered());
        assert_eq!(doc.open().map(|q| q.number).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn two_answers_to_one_question_are_refused_not_one_dropped() {
        assert_eq!(
            fill(SAMPLE, &[(1, "first".into()), (1, "second".into())]),
            Err(QaError::AnsweredTwice(1))
        );
    }

    #[test]
    fn fill_rewrites_only_answer_lines() {
        let filled = fill(SAMPLE, &[(1, "sqlite,\nplease".into())]).unwrap();
        assert_eq!(
            filled,
            SAMPLE.replacen("Answer:\n\n## Q2", "Answer: sqlite, please\n\n## Q2", 1)
        );
        let all = accept_suggestions(&filled).unwrap();
        let doc = QaDoc::parse(&all);
        assert!(doc.is_answered());
        assert_eq!(doc.questions[0].answer.as_deref(), Some("sqlite, please"));
        assert_eq!(doc.questions[2].answer.as_deref(), Some("8080"));
    }

    #[test]
    fn errors_name_the_question() {
        assert_eq!(
            fill(SAMPLE, &[(9, "x".into())]),
            Err(QaError::UnknownQuestion {
                number: 9,
                asked: "Q1, Q2, Q3".into()
            })
        );
        assert_eq!(
            fill(SAMPLE, &[(1, "  ".into())]),
            Err(QaError::EmptyAnswer(1))
        );
        assert_eq!(fill("# Questions\n", &[]), Err(QaError::NoQuestions));
        let no_suggestion = "## Q1: a?\nAnswer:\n## Q2: b?\nAnswer:\n";
        assert_eq!(
            accept_suggestions(no_suggestion),
            Err(QaError::NoSuggestion(1))
        );
        assert!(!QaDoc::parse("").is_answered());
    }

    #[test]
    fn two_questions_numbered_alike_can_both_be_answered() {
        let twins = "# Questions\n\n## Q1: First?\nSuggested: a\nAnswer:\n\n## Q1: Second?\nSuggested: b\nAnswer:\n";
        let filled = fill(twins, &[(1, "one".into()), (1, "two".into())]).unwrap();
        let doc = QaDoc::parse(&filled);
        assert!(doc.is_answered(), "{filled}");
        assert_eq!(doc.questions[0].answer.as_deref(), Some("one"));
        assert_eq!(doc.questions[1].answer.as_deref(), Some("two"));
        // One at a time works too: each --q 1 takes the next open one.
        let first = fill(twins, &[(1, "one".into())]).unwrap();
        assert_eq!(QaDoc::parse(&first).open().count(), 1);
        let second = fill(&first, &[(1, "two".into())]).unwrap();
        assert!(QaDoc::parse(&second).is_answered());
        // And so do the suggestions.
        let suggested = QaDoc::parse(&accept_suggestions(twins).unwrap());
        let answers: Vec<_> = suggested
            .questions
            .iter()
            .map(|q| q.answer.clone())
            .collect();
        assert_eq!(answers, [Some("a".into()), Some("b".into())]);
        // Once both are answered, --q 1 changes the last one.
        let changed = QaDoc::parse(&fill(&second, &[(1, "three".into())]).unwrap());
        assert_eq!(changed.questions[1].answer.as_deref(), Some("three"));
        assert_eq!(
            fill(twins, &[(1, "a\0b".into())]),
            Err(QaError::NulInAnswer(1))
        );
        // An answer is capped, so that `_qa.md` stays readable (it has a size cap).
        let long = "x".repeat(MAX_ANSWER + 1);
        let error = fill(twins, &[(1, long)]).unwrap_err();
        assert!(
            error.to_string().contains("over the limit of 16384 bytes"),
            "{error}"
        );
        assert!(fill(twins, &[(1, "x".repeat(MAX_ANSWER))]).is_ok());
    }

    proptest! {
        /// Filling any answer keeps every other line byte for byte and reads back.
        #[test]
        fn fill_round_trips(answer in "[A-Za-z0-9][A-Za-z0-9 ,.]{0,30}", which in 1u32..=3) {
            let filled = fill(SAMPLE, &[(which, answer.clone())]).unwrap();
            let doc = QaDoc::parse(&filled);
            let q = doc.questions.iter().find(|q| q.number == which).unwrap();
            let expected = answer.split_whitespace().collect::<Vec<_>>().join(" ");
            prop_assert_eq!(q.answer.as_deref(), Some(expected.as_str()));
            let changed = SAMPLE.lines().zip(filled.lines()).filter(|(a, b)| a != b).count();
            prop_assert!(changed <= 1);
            prop_assert_eq!(SAMPLE.lines().count(), filled.lines().count());
        }
    }
}
