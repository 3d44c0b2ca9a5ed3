//! Telegram: the NotifierActor's sink and the two-way bot, a thin adapter with no session logic.
//!
//! Events go out as HTML messages with inline buttons (approve a plan, accept the suggested
//! answers, resume). The bot long-polls for updates and turns commands and button presses from
//! allowed users (TELEGRAM_ALLOWED_USERS) into control requests to the supervisor; anyone else
//! is told no. The daemon works fully without it. The token is part of every request URL, so
//! error texts are scrubbed of it before they reach a log.

pub mod render;

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, ParseMode, UpdateKind};

use crate::config::TelegramSettings;
use crate::control::{Request, Response};
use crate::notify::SessionEvent;
use crate::supervisor::SupervisorMsg;
use render::Ask;

/// Why the bot could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// TELEGRAM_API_URL is not a URL.
    #[error("TELEGRAM_API_URL {0:?} is not a valid URL")]
    ApiUrl(String),
}

/// A connection to the Bot API and the chat that hears about sessions.
#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    chat: ChatId,
    token: String,
    allowed: Vec<u64>,
}

impl Telegram {
    pub fn new(settings: &TelegramSettings) -> Result<Telegram, BotError> {
        let mut bot = Bot::new(settings.token.clone());
        if let Some(url) = &settings.api_url {
            let parsed = url::Url::parse(url).map_err(|_| BotError::ApiUrl(url.clone()))?;
            bot = bot.set_api_url(parsed);
        }
        Ok(Telegram {
            bot,
            chat: ChatId(settings.chat_id),
            token: settings.token.clone(),
            allowed: settings.allowed_users.clone(),
        })
    }

    /// Tells the chat about an event, when it is one a person should see.
    pub async fn notify(&self, event: &SessionEvent) {
        if let Some(message) = render::event(event) {
            self.send(self.chat, message).await;
        }
    }

    async fn send(&self, chat: ChatId, message: render::Outgoing) {
        let mut request = self
            .bot
            .send_message(chat, message.html)
            .parse_mode(ParseMode::Html);
        if !message.buttons.is_empty() {
            let row = message
                .buttons
                .into_iter()
                .map(|b| InlineKeyboardButton::callback(b.label, b.data))
                .collect::<Vec<_>>();
            request = request.reply_markup(InlineKeyboardMarkup::new(vec![row]));
        }
        if let Err(error) = request.await {
            tracing::warn!(error = %self.scrub(&error.to_string()), "telegram message not sent");
        }
    }

    async fn reply(&self, chat: ChatId, text: String) {
        let html = render::escape(&text);
        self.send(
            chat,
            render::Outgoing {
                html,
                buttons: Vec::new(),
            },
        )
        .await;
    }

    /// The token never reaches a log, even inside an error that quotes the request URL.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.token, "<token>")
    }

    /// Long-polls for updates until the task is aborted, and acts on them.
    pub async fn poll(self, supervisor: ActorRef<SupervisorMsg>) {
        let mut offset: i32 = 0;
        loop {
            let updates = match self.bot.get_updates().offset(offset).timeout(25).await {
                Ok(updates) => updates,
                Err(error) => {
                    tracing::warn!(error = %self.scrub(&error.to_string()), "telegram polling failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            for update in updates {
                offset = offset.max(update.id.0 as i32 + 1);
                self.handle(update.kind, &supervisor).await;
            }
        }
    }

    async fn handle(&self, kind: UpdateKind, supervisor: &ActorRef<SupervisorMsg>) {
        let (user, chat, ask) = match kind {
            UpdateKind::Message(message) => {
                let Some(text) = message.text() else { return };
                let user = message.from.as_ref().map(|u| u.id.0);
                (user, message.chat.id, render::command(text))
            }
            UpdateKind::CallbackQuery(query) => {
                let _ = self.bot.answer_callback_query(query.id.clone()).await;
                let chat = query
                    .message
                    .as_ref()
                    .map(|m| m.chat().id)
                    .unwrap_or(self.chat);
                let ask = query
                    .data
                    .as_deref()
                    .and_then(render::callback)
                    .ok_or_else(|| "unknown button".to_string());
                (Some(query.from.id.0), chat, ask)
            }
            _ => return,
        };
        if !user.is_some_and(|u| self.allowed.contains(&u)) {
            tracing::warn!(user = ?user, "telegram command from a user not in TELEGRAM_ALLOWED_USERS ignored");
            self.reply(
                chat,
                "You are not allowed to drive samocode sessions.".into(),
            )
            .await;
            return;
        }
        let answer = match ask {
            Err(problem) => problem,
            Ok(Ask::Help) => render::HELP.to_string(),
            Ok(Ask::Status) => self.status(supervisor).await,
            Ok(Ask::Person { session, command }) => {
                match control(supervisor, Request::Named { session, command }).await {
                    Response::Done { message } => message,
                    Response::Error { message, .. } => format!("not done: {message}"),
                    Response::Sessions { .. } | Response::Dashboard { .. } => {
                        "unexpected answer".into()
                    }
                }
            }
        };
        self.reply(chat, answer).await;
    }

    async fn status(&self, supervisor: &ActorRef<SupervisorMsg>) -> String {
        let Response::Sessions {
            sessions,
            max_parallel,
            running,
        } = control(supervisor, Request::Status).await
        else {
            return "the daemon did not answer".into();
        };
        let mut lines = vec![format!(
            "{running} of at most {max_parallel} agents running"
        )];
        for owned in sessions {
            let folder = crate::session::SessionFolder::new(&owned.dir);
            let line = match folder.load_state() {
                Ok(state) => format!(
                    "{} — {} {} (iteration {})",
                    folder.name(),
                    state.phase,
                    state.status.name(),
                    state.iteration
                ),
                Err(error) => format!("{} — {error}", folder.name()),
            };
            lines.push(line);
        }
        lines.join("\n")
    }
}

async fn control(supervisor: &ActorRef<SupervisorMsg>, request: Request) -> Response {
    match supervisor
        .call(|reply| SupervisorMsg::Control { request, reply }, None)
        .await
    {
        Ok(CallResult::Success(response)) => response,
        _ => Response::Error {
            message: "the daemon is stopping".into(),
            code: 1,
        },
    }
}
