//! `samocode answer SESSION (--accept-suggestions | --q N TEXT ...)`: fills `_qa.md` (through
//! the daemon when it runs, else under the session lock); once every question is answered the
//! session can go on.

use clap::Args;

use super::{CliError, gate};
use crate::config::Config;
use crate::session::person::{Answers, PersonCommand};

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

pub async fn answer(args: AnswerArgs, config: &Config) -> Result<u8, CliError> {
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
    gate::command(config, &args.session, PersonCommand::Answer { answers }).await
}
