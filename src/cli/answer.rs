//! `samocode answer SESSION (--accept-suggestions | --q N TEXT ...)`: fills `_qa.md` under the
//! session lock, and makes the session runnable once every question is answered.

use clap::Args;

use super::gate::{continue_hint, locked};
use super::{CliError, exit};
use crate::config::Config;
use crate::session::person::{self, Answers};

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
    let answers = if args.accept_suggestions {
        Answers::Suggestions
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
        Answers::Given(pairs)
    };
    let answered = person::answer(&store, &answers)?;
    if !answered.open.is_empty() {
        let open: Vec<String> = answered.open.iter().map(|n| format!("Q{n}")).collect();
        println!("saved; still open: {}", open.join(", "));
        return Ok(exit::DONE);
    }
    println!("all questions of {} are answered", store.name());
    if answered.resumed {
        println!("{}", continue_hint(&store.name()));
    }
    Ok(exit::DONE)
}
