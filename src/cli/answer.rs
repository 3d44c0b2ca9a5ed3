//! `samocode answer SESSION (--accept-suggestions | --q N TEXT ...)`: fills `_qa.md` under the
//! session lock, and makes the session runnable once every question is answered.

use clap::Args;

use super::gate::{continue_hint, locked};
use super::{CliError, exit};
use crate::config::Config;
use crate::protocol::gate;
use crate::protocol::qa::{self, QaDoc};
use crate::session::person::{self, ActError};
use crate::session::store::QA;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("given").required(true).multiple(false))]
pub struct AnswerArgs {
    /// The session name.
    pub session: String,
    /// Answer every open question with its suggested answer.
    #[arg(long, group = "given")]
    pub accept_suggestions: bool,
    /// Answer question N with TEXT (repeatable: --q 1 "files" --q 2 "yes").
    #[arg(long = "q", num_args = 2, value_names = ["N", "TEXT"], action = clap::ArgAction::Append, group = "given")]
    pub answers: Vec<String>,
}

pub fn answer(args: AnswerArgs, config: &Config) -> Result<u8, CliError> {
    let store = locked(config, &args.session)?;
    let Some(text) = store.read(QA)? else {
        return Err(CliError::usage(anyhow::anyhow!(
            "session {} has no _qa.md: there is nothing to answer",
            store.name()
        )));
    };
    let filled = if args.accept_suggestions {
        qa::accept_suggestions(&text)?
    } else {
        let mut pairs = Vec::new();
        for pair in args.answers.chunks(2) {
            let number: u32 = pair[0]
                .trim_start_matches(['Q', 'q'])
                .parse()
                .map_err(|_| {
                    CliError::usage(anyhow::anyhow!(
                        "--q expects a question number, found {:?}",
                        pair[0]
                    ))
                })?;
            pairs.push((number, pair[1].clone()));
        }
        qa::fill(&text, &pairs)?
    };
    store.write_atomic(QA, filled.as_bytes())?;
    let doc = QaDoc::parse(&filled);
    let open: Vec<String> = doc.open().map(|q| format!("Q{}", q.number)).collect();
    if !open.is_empty() {
        println!("saved; still open: {}", open.join(", "));
        return Ok(exit::DONE);
    }
    let state = store.load_state()?;
    if gate::wakes_on_answers(&state, true) {
        person::act(&store, |s| {
            let mut effect = gate::resume(s, true)?;
            effect.verb = "answer";
            effect.flow_log = "Questions answered by a person; resuming".into();
            Ok(effect)
        })
        .map_err(|e| match e {
            ActError::Gate(e) => CliError::from(e),
            ActError::Store(e) => CliError::from(e),
        })?;
        println!("all questions of {} are answered", store.name());
        println!("{}", continue_hint(&store.name()));
    } else {
        println!("all questions of {} are answered", store.name());
    }
    Ok(exit::DONE)
}
