//! Telegram: the notifier's [`Sink`] and the two-way bot, a thin adapter with no session logic.
//!
//! As a sink it renders events into HTML notices with inline buttons (`render`), splits long
//! ones on line boundaries, and closes a notice once its session moved on: the buttons go and a
//! line says what happened, by whom and when. Delivery, retries and the durable outbox are the
//! notifier's; this file only says whether Telegram took a message (and when to try again: a
//! 429's `retry_after`, a 5xx or a network error are "later", any other refusal is final).
//!
//! As a bot it long-polls `getUpdates` itself (backing off after errors), on a client whose
//! timeout outlasts the poll (teloxide's default one gives up on an idle poll first, and each
//! give-up backed its listener off, up to a minute deaf), and keeps its place in the updates
//! in the state directory, written before a batch of updates is acted on: a daemon that dies
//! while acting on one starts after the batch, so a command is applied once or not at all.
//! Telegram's own wait (a 429's `retry_after`) is kept, and the bot asks for its own name
//! until it learns it (to leave other bots' commands alone). It parses commands with the `BotCommands` derive (`commands`, registered as
//! the chat's menu), and turns commands and button presses into the same control requests as
//! the CLI. Who may act: in a private chat (`TELEGRAM_CHAT_ID` positive) its owner, and anyone
//! in `TELEGRAM_ALLOWED_USERS`; in a group only the latter. Anyone else changes nothing, is
//! told so once, and is logged by id without the text. The token is part of every request URL,
//! so error texts are scrubbed of it before they reach a log.

pub mod commands;
pub mod render;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use ractor::ActorRef;
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode, UpdateKind,
};
use teloxide::utils::command::BotCommands;

use crate::config::TelegramSettings;
use crate::control::{Request, Response};
use crate::notify::outbox::OpenMessage;
use crate::notify::{Notice, Pending, SendError, SessionEvent, Sink};
use crate::protocol::qa::QaDoc;
use crate::session::SessionFolder;
use crate::session::person::{Answers, PersonCommand};
use crate::supervisor::SupervisorMsg;
use commands::{Command, Press};

/// Why the bot could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// TELEGRAM_API_URL is not a URL.
    #[error("TELEGRAM_API_URL {0:?} is not a valid URL")]
    ApiUrl(String),
    /// The HTTP client could not be made.
    #[error("cannot set up the Telegram client: {0}")]
    Client(String),
}

/// How long one `getUpdates` call waits for an update (Telegram's long poll).
const POLL_SECONDS: u32 = 25;
/// How long a request that sends or edits a message may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the Bot API and the chat that hears about sessions.
#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    /// The same bot on a client that waits out a long poll.
    poller: Bot,
    /// The pieces of a long notice already sent, by the notice's text, while the rest is
    /// tried again: a failure on a later piece does not send the earlier ones twice.
    sent: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>>,
    /// The chat notices go to: TELEGRAM_CHAT_ID, or the supergroup Telegram says that group
    /// became (until a restart reads the setting again).
    chat: std::sync::Arc<std::sync::atomic::AtomicI64>,
    token: String,
    allowed: Vec<u64>,
    /// Replies to people, sent in order by a task of their own while the bot polls: a reply
    /// Telegram is slow to take (or asks to wait for) no longer holds up the next update, whose
    /// button answer Telegram refuses after 15 s.
    replies: Option<tokio::sync::mpsc::UnboundedSender<(ChatId, String)>>,
}

impl Telegram {
    pub fn new(settings: &TelegramSettings) -> Result<Telegram, BotError> {
        // A Telegram slower than teloxide's 17 s would have the notice sent again beside the
        // first (its buttons never closed): a minute, then it counts as unreachable.
        let sender = teloxide::net::default_reqwest_settings()
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|error| BotError::Client(error.to_string()))?;
        let mut bot = Bot::with_client(settings.token.clone(), sender);
        let client = teloxide::net::default_reqwest_settings()
            .timeout(Duration::from_secs(u64::from(POLL_SECONDS) + 10))
            .build()
            .map_err(|error| BotError::Client(error.to_string()))?;
        let mut poller = Bot::with_client(settings.token.clone(), client);
        if let Some(url) = &settings.api_url {
            let parsed = url::Url::parse(url).map_err(|_| BotError::ApiUrl(url.clone()))?;
            bot = bot.set_api_url(parsed.clone());
            poller = poller.set_api_url(parsed);
        }
        Ok(Telegram {
            bot,
            poller,
            sent: Default::default(),
            chat: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(settings.chat_id)),
            token: settings.token.clone(),
            allowed: settings.allowed_users.clone(),
            replies: None,
        })
    }

    /// The chat notices go to.
    fn chat(&self) -> ChatId {
        ChatId(self.chat.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// True when `user` may drive sessions: listed, or the owner of the private chat.
    pub fn may_act(&self, user: u64) -> bool {
        let chat = self.chat().0;
        self.allowed.contains(&user) || (chat > 0 && chat as u64 == user)
    }

    /// The token never reaches a log, even inside an error that quotes the request URL.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.token, "<token>")
    }

    fn classify(&self, error: RequestError) -> SendError {
        match error {
            RequestError::RetryAfter(after) => SendError::Later(Some(after.duration())),
            // The group became a supergroup (Telegram upgrades a group as it grows): a fault of
            // the chat, not of this notice. Notices go to the new id from now on, and the log
            // says to set it, for the next start.
            RequestError::MigrateToChatId(to) => {
                let from = self.chat.swap(to.0, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    "the Telegram group {from} was upgraded to the supergroup {to}: notices go there from now on; set TELEGRAM_CHAT_ID={to} for the next start"
                );
                SendError::Later(Some(Duration::ZERO))
            }
            RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => {
                tracing::warn!(error = %self.scrub(&error.to_string()), "telegram unreachable");
                SendError::Later(None)
            }
            // A refusal teloxide does not know by its text ("Bad Request: not enough rights to
            // send text messages to the chat", "Forbidden: bot is not a member of the
            // supergroup chat") is final like the ones it knows: tried again, it would hold
            // up every later notice for as long as it lasts.
            RequestError::Api(ApiError::Unknown(text)) if is_refusal(&text) => {
                SendError::Refused(self.scrub(&text))
            }
            // The token itself refused (revoked, while a new one is being set): a fault of the
            // whole bot, not of this notice. Every notice waits, in order, until it is taken
            // again (after the fix and a restart); none is dropped.
            RequestError::Api(ApiError::InvalidToken) => {
                tracing::error!(
                    "Telegram refuses the bot token (TELEGRAM_BOT_TOKEN): notices wait in the outbox until it is taken again; set the right token and restart samocode"
                );
                SendError::Later(None)
            }
            // A server error comes back as an API error teloxide does not know.
            RequestError::Api(ApiError::Unknown(text)) => {
                tracing::warn!(error = %self.scrub(&text), "telegram answered with an error");
                SendError::Later(None)
            }
            other => SendError::Refused(self.scrub(&other.to_string())),
        }
    }

    async fn send_pieces(&self, notice: &Notice) -> Result<Vec<i64>, SendError> {
        let pieces = render::split(&notice.html);
        let last = pieces.len() - 1;
        let progress = |ids: Option<Vec<i64>>| {
            let mut sent = self.sent.lock().expect("never poisoned");
            match ids {
                Some(ids) => drop(sent.insert(notice.html.clone(), ids)),
                None => drop(sent.remove(&notice.html)),
            }
        };
        // Sent in part before: by this process, or (recorded in the outbox) by the last.
        let mut ids = self
            .sent
            .lock()
            .expect("never poisoned")
            .get(&notice.html)
            .cloned()
            .unwrap_or_else(|| notice.sent.clone());
        for (i, piece) in pieces.into_iter().enumerate().skip(ids.len()) {
            let mut request = self
                .bot
                .send_message(self.chat(), piece)
                .parse_mode(ParseMode::Html);
            if i == last && !notice.buttons.is_empty() {
                request = request.reply_markup(keyboard(&notice.buttons));
            }
            match request.await {
                Ok(message) => ids.push(i64::from(message.id.0)),
                Err(error) => {
                    let error = self.classify(error);
                    // Kept for the next try, unless there will be none.
                    progress(match error {
                        SendError::Later(_) if !ids.is_empty() => Some(ids),
                        _ => None,
                    });
                    return Err(error);
                }
            }
        }
        progress(None);
        Ok(ids)
    }

    async fn close_message(&self, message: &OpenMessage, line: &str) -> Result<(), SendError> {
        // The open message is the notice's last piece: it is edited as that piece, never as the
        // whole notice (over Telegram's limit, the edit would be refused for good).
        let id = MessageId(message.message as i32);
        let done = |result: Result<Message, RequestError>| match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(error) => Err(error),
        };
        let closed = match render::closed(&message.html, line) {
            Some(html) => done(
                self.bot
                    .edit_message_text(self.chat(), id, html)
                    .parse_mode(ParseMode::Html)
                    .await,
            ),
            // No room for the line: the buttons go, and the line follows (a retry finds the
            // buttons gone already and sends the line).
            None => match done(self.bot.edit_message_reply_markup(self.chat(), id).await) {
                // As a reply to the message it closes, which names the session.
                Ok(()) => self
                    .bot
                    .send_message(self.chat(), format!("<i>{}</i>", render::escape(line)))
                    .parse_mode(ParseMode::Html)
                    .reply_parameters(
                        teloxide::types::ReplyParameters::new(id).allow_sending_without_reply(),
                    )
                    .await
                    .map(drop),
                Err(error) => Err(error),
            },
        };
        closed.map_err(|error| self.classify(error))
    }

    /// Replies `text` in `chat`: queued for the replies' task while the bot polls.
    async fn say(&self, chat: ChatId, text: &str) {
        if let Some(replies) = &self.replies
            && replies.send((chat, text.to_string())).is_ok()
        {
            return;
        }
        self.reply(chat, text).await;
    }

    /// Sends a reply, waiting out what Telegram asks to wait for (429) and a network's short
    /// failure, a few times; a reply given up on is logged by its start.
    async fn reply(&self, chat: ChatId, text: &str) {
        const TRIES: u32 = 4;
        for piece in render::split(&render::escape(text)) {
            let mut tries = 0;
            loop {
                tries += 1;
                let sent = self
                    .bot
                    .send_message(chat, piece.clone())
                    .parse_mode(ParseMode::Html)
                    .await;
                let wait = match &sent {
                    Ok(_) => break,
                    Err(RequestError::RetryAfter(after)) => after.duration(),
                    Err(RequestError::Network(_) | RequestError::Io(_)) => Duration::from_secs(2),
                    Err(_) => Duration::ZERO,
                };
                if let Err(error) = sent
                    && (wait.is_zero() || tries >= TRIES)
                {
                    let begins: String = text.chars().take(60).collect();
                    tracing::warn!(error = %self.scrub(&error.to_string()), reply = %begins, "telegram reply not sent");
                    return;
                }
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
            }
        }
    }

    /// Reads updates until the task is aborted, and acts on them; `place` keeps the next
    /// update's id across restarts.
    pub async fn poll(mut self, supervisor: ActorRef<SupervisorMsg>, place: PathBuf) {
        let (replies, mut queued) = tokio::sync::mpsc::unbounded_channel::<(ChatId, String)>();
        let sender = self.clone();
        // Ends when the poll does (its sender goes with it).
        tokio::spawn(async move {
            while let Some((chat, text)) = queued.recv().await {
                sender.reply(chat, &text).await;
            }
        });
        self.replies = Some(replies);
        // The menu names commands without their slash.
        let menu = Command::bot_commands().into_iter().map(|mut c| {
            c.command = c.command.trim_start_matches('/').to_string();
            c
        });
        if let Err(error) = self.bot.set_my_commands(menu).await {
            tracing::warn!(error = %self.scrub(&error.to_string()), "cannot register the bot's command menu");
        }
        // Never waited on: a named pipe there held the poll (and the daemon's exit) for good.
        // One that cannot be read does not replay what Telegram still holds (up to a day of
        // commands, acted on already): the backlog is passed over, and said to be.
        let mut skip_backlog = false;
        let mut next: Option<i32> = match crate::session::untrusted::read_text(
            &place,
            64,
            crate::session::untrusted::Links::Refuse,
        ) {
            Ok(text) => text.and_then(|text| text.trim().parse().ok()),
            Err(error) => {
                tracing::warn!(%error, "the place in Telegram's updates cannot be read; commands sent while the daemon was down are passed over (send them again)");
                skip_backlog = true;
                None
            }
        };
        let mut told: HashSet<u64> = HashSet::new();
        // Its own username, to tell its commands from other bots' in a group; asked again
        // until Telegram answers (the daemon may start before the network).
        let mut me: Option<String> = None;
        let mut pause = Duration::from_secs(1);
        let mut told_conflict = false;
        loop {
            if me.is_none() {
                match self.poller.get_me().await {
                    Ok(found) => me = found.user.username.clone(),
                    Err(error) => {
                        tracing::warn!(error = %self.scrub(&error.to_string()), "cannot learn the bot's own name yet; until then a command to any bot is taken")
                    }
                }
            }
            let mut request = self.poller.get_updates().timeout(POLL_SECONDS);
            if skip_backlog {
                // The newest update only, to learn the place after it; not acted on.
                request = self.poller.get_updates().timeout(0).offset(-1);
            } else if let Some(next) = next {
                request = request.offset(next);
            }
            let updates = match request.await {
                Ok(updates) => updates,
                Err(error) => {
                    // Telegram's own wait when it names one (429), else a doubling backoff.
                    let wait = match &error {
                        RequestError::RetryAfter(after) => after.duration(),
                        _ => pause,
                    };
                    if matches!(
                        &error,
                        RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
                    ) {
                        // Said once as an error: the commands people send go to whichever
                        // program Telegram answers, and the other never hears of them.
                        if !told_conflict {
                            told_conflict = true;
                            tracing::error!(
                                "another program reads this bot's updates (a second samocode daemon, or any bot program, with the same TELEGRAM_BOT_TOKEN): commands sent in the chat reach only one of them, and a command for a session this daemon drives may be lost; give each daemon a bot of its own"
                            );
                        }
                        tokio::time::sleep(wait).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    tracing::warn!(error = %self.scrub(&error.to_string()), wait = %humantime::format_duration(wait), "telegram polling failed; trying again");
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            pause = Duration::from_secs(1);
            if std::mem::take(&mut skip_backlog) {
                next = updates
                    .last()
                    .and_then(|last| i32::try_from(last.id.0).ok())
                    .map(|id| id.saturating_add(1));
                continue;
            }
            let Some(last) = updates.last() else {
                continue;
            };
            // At most once: the place after the whole batch is kept before any of it is acted
            // on (a daemon that dies half way loses the rest of the batch, never repeats it).
            let after = i32::try_from(last.id.0).map_or(i32::MAX, |id| id.saturating_add(1));
            next = Some(after);
            let file = place.clone();
            let kept = tokio::task::spawn_blocking(move || {
                crate::session::store::write_atomic(&file, after.to_string().as_bytes())
                    .map_err(|error| error.to_string())
            })
            .await
            .unwrap_or_else(|error| Err(error.to_string()));
            if let Err(why) = kept {
                tracing::error!(error = %why, "cannot keep the place in Telegram's updates; this batch is not acted on");
                self.say(
                    self.chat(),
                    &format!("not done: samocode cannot keep its place in Telegram's updates ({why}); send the command again once that is fixed"),
                )
                .await;
                continue;
            }
            for update in updates {
                self.handle(update.kind, &supervisor, &mut told, me.as_deref())
                    .await;
            }
        }
    }

    async fn handle(
        &self,
        kind: UpdateKind,
        supervisor: &ActorRef<SupervisorMsg>,
        told: &mut HashSet<u64>,
        me: Option<&str>,
    ) {
        let (user, chat, by, action) = match kind {
            UpdateKind::Message(message) => {
                let Some(text) = message.text() else { return };
                if !Command::for_me(text, me) {
                    return;
                }
                let Some(from) = message.from.as_ref() else {
                    return;
                };
                (from.id.0, message.chat.id, who(from), Err(text.to_string()))
            }
            UpdateKind::CallbackQuery(query) => {
                let chat = query
                    .message
                    .as_ref()
                    .map(|m| m.chat().id)
                    .unwrap_or(self.chat());
                let message = query.message.as_ref().map(|m| i64::from(m.id().0));
                (
                    query.from.id.0,
                    chat,
                    who(&query.from),
                    Ok((
                        query.id.clone(),
                        query.data.clone().unwrap_or_default(),
                        message,
                    )),
                )
            }
            _ => return,
        };
        if !self.may_act(user) {
            tracing::warn!(user, "telegram update from a user who may not act; ignored");
            if let Ok((query, _, _)) = &action {
                let _ = self
                    .bot
                    .answer_callback_query(query.clone())
                    .text("You may not drive these sessions.")
                    .await;
            }
            if told.insert(user) {
                self.say(
                    chat,
                    "You may not drive samocode sessions here; nothing was changed.",
                )
                .await;
            }
            return;
        }
        match action {
            Err(text) => {
                let answer = self.command(&text, &by, supervisor).await;
                self.say(chat, &answer).await;
            }
            Ok((query, data, message)) => {
                let answer = match commands::press(&data) {
                    Some(press) => match self.stale(&press, message, supervisor).await {
                        Some(problem) => problem,
                        None => self.pressed(press, &by, supervisor).await,
                    },
                    None => "unknown button".into(),
                };
                // The short answer shows on the button; a failure also goes to the chat.
                let short: String = answer.chars().take(190).collect();
                let _ = self.bot.answer_callback_query(query).text(short).await;
                if answer.starts_with("not done") {
                    self.say(chat, &answer).await;
                }
            }
        }
    }

    async fn command(&self, text: &str, by: &str, supervisor: &ActorRef<SupervisorMsg>) -> String {
        use tracing::Instrument;
        // A short root span per command: its name only, never its text (it may quote a secret).
        let name = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        let span = tracing::info_span!(parent: None, "bot_command", "samocode.command" = name);
        self.run_command(text, by, supervisor)
            .instrument(span)
            .await
    }

    async fn run_command(
        &self,
        text: &str,
        by: &str,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> String {
        let command = match Command::read(text) {
            Ok(command) => command,
            Err(problem) => return problem,
        };
        if let Some((session, person)) = command.person() {
            return self.act(session, person, by, None, supervisor).await;
        }
        match command {
            Command::Help | Command::Start => Command::descriptions().to_string(),
            Command::Status => self.status(supervisor).await,
            Command::Session(name) => match self.folder(&name, supervisor).await {
                Ok(folder) => describe(&folder),
                Err(problem) => problem,
            },
            Command::Logs(name) => match self.folder(&name, supervisor).await {
                Ok(folder) => match crate::cli::logs::last_lines(&folder, 30) {
                    Ok(lines) => logs_reply(&lines, &name),
                    Err(error) => format!("cannot read the logs: {error}"),
                },
                Err(problem) => problem,
            },
            Command::Tell(name, text) => {
                let tell = PersonCommand::Tell { text, now: false };
                self.act(&name, tell, by, None, supervisor).await
            }
            _ => "unknown command".into(),
        }
    }

    /// Why a button pressed on `message` must not act: the session has a newer message (a
    /// plan written again, a new round of questions, a notice still to be sent), whose
    /// content the person pressing has not seen. A message the daemon's notifier does not
    /// know as the session's (a `samocode run`'s) is left to the command's own checks.
    async fn stale(
        &self,
        press: &Press,
        message: Option<i64>,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> Option<String> {
        let session = match press {
            // An option that names its round is checked against the rounds, which says more.
            Press::Option { round: Some(_), .. } => return None,
            Press::Person { session, .. } | Press::Option { session, .. } => session,
        };
        let notifier = crate::notify::NotifierHandle::of_supervisor(supervisor.get_id());
        let latest = notifier.latest(session).await?;
        let older = latest.newer || latest.open.zip(message).is_some_and(|(open, m)| open != m);
        older.then(|| {
            format!(
                "not done: {}",
                crate::session::actor::not_its_latest(session)
            )
        })
    }

    async fn pressed(
        &self,
        press: Press,
        by: &str,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> String {
        match press {
            Press::Person {
                session,
                command,
                park,
            } => self.act(&session, command, by, park, supervisor).await,
            Press::Option {
                session,
                round,
                question,
                index,
                park,
            } => {
                let folder = match self.folder(&session, supervisor).await {
                    Ok(folder) => folder,
                    Err(problem) => return format!("not done: {problem}"),
                };
                let qa = folder
                    .read(crate::session::store::QA)
                    .ok()
                    .flatten()
                    .map(|text| QaDoc::parse(&text))
                    .unwrap_or_default();
                match pressed_option(&qa, round, question, index) {
                    Ok(text) => {
                        let answer = PersonCommand::Answer {
                            answers: Answers::Given(vec![(question, text)]),
                        };
                        self.act(&session, answer, by, park, supervisor).await
                    }
                    Err(problem) => format!("not done: {problem}"),
                }
            }
        }
    }

    async fn act(
        &self,
        session: &str,
        command: PersonCommand,
        by: &str,
        park: Option<i64>,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> String {
        let request = Request::Named {
            session: session.to_string(),
            command,
            by: Some(by.to_string()),
            park,
        };
        // The daemon's words are the command line's: its advice reads as the chat's commands.
        match crate::control::ask(supervisor, request).await {
            Response::Done { message } => render::for_chat(&message),
            Response::Error { message, .. } => format!(
                "not done: {}",
                render::answer_for_chat(&render::for_chat(&message), session)
            ),
            Response::Sessions { .. } | Response::Dashboard { .. } => "unexpected answer".into(),
        }
    }

    /// The folder of the session the daemon owns under `name` (found as a command by that
    /// name finds it: one renamed under the daemon too).
    async fn folder(
        &self,
        name: &str,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> Result<SessionFolder, String> {
        let session = name.to_string();
        let asked = supervisor
            .call(
                |reply| SupervisorMsg::Locate { session, reply },
                Some(crate::control::ANSWER_TIMEOUT),
            )
            .await;
        match asked {
            Ok(ractor::rpc::CallResult::Success(found)) => found.map(SessionFolder::new),
            _ => Err("the daemon did not answer".into()),
        }
    }

    async fn status(&self, supervisor: &ActorRef<SupervisorMsg>) -> String {
        let Response::Sessions {
            sessions,
            max_parallel,
            running,
            fleet,
            ..
        } = crate::control::ask(supervisor, Request::Status).await
        else {
            return "the daemon did not answer".into();
        };
        let mut lines = vec![format!(
            "{running} of at most {max_parallel} agents running"
        )];
        if let Some(line) = fleet.as_ref().and_then(crate::control::FleetFigures::line) {
            lines.push(line);
        }
        // Read off the async threads; finished sessions are counted, not listed: a daemon
        // that has driven hundreds answered with a message per hundred lines.
        let listed = tokio::task::spawn_blocking(move || {
            let mut done = 0usize;
            let mut listed = Vec::new();
            for owned in sessions {
                let folder = SessionFolder::new(&owned.dir);
                match folder.load_state() {
                    Ok(state) if matches!(state.status, crate::protocol::RunState::Done { .. }) => {
                        done += 1
                    }
                    Ok(state) => listed.push(format!(
                        "{} — {} {} (iteration {})",
                        folder.name(),
                        state.phase,
                        state.status.name(),
                        state.iteration
                    )),
                    Err(error) => listed.push(format!("{} — {error}", folder.name())),
                }
            }
            if done > 0 {
                listed.push(format!(
                    "{done} finished session{} not listed (`samocode status` shows them)",
                    if done == 1 { "" } else { "s" }
                ));
            }
            listed
        })
        .await
        .unwrap_or_default();
        lines.extend(listed);
        lines.join("\n")
    }
}

impl Sink for Telegram {
    fn render(&self, event: &SessionEvent) -> Option<Notice> {
        render::notice(event)
    }

    fn send<'a>(&'a self, notice: &'a Notice) -> Pending<'a, Result<Vec<i64>, SendError>> {
        Box::pin(self.send_pieces(notice))
    }

    fn close<'a>(
        &'a self,
        message: &'a OpenMessage,
        line: &'a str,
    ) -> Pending<'a, Result<(), SendError>> {
        Box::pin(self.close_message(message, line))
    }

    fn sent_in_part(&self, notice: &Notice) -> Vec<i64> {
        self.sent
            .lock()
            .expect("never poisoned")
            .get(&notice.html)
            .cloned()
            .unwrap_or_default()
    }
}

/// A person as the chat knows them: `@username`, or their first name.
/// Who acted, for the journal and the message: `by @ann`, or for a user without a username
/// `by Telegram user 42 (Ann)`, so that a first name (which anyone may set to "@boss") never
/// reads as someone's username.
fn who(user: &teloxide::types::User) -> String {
    match &user.username {
        Some(name) => format!("by @{name}"),
        None => format!("by Telegram user {} ({})", user.id.0, user.first_name),
    }
}

/// Whether an error text from Telegram is a refusal of the request (a 4xx: its description
/// begins with the status's name), not a server's trouble (a 5xx) to wait out.
fn is_refusal(text: &str) -> bool {
    ["Bad Request", "Forbidden", "Unauthorized", "Not Found"]
        .iter()
        .any(|status| text.trim_start().starts_with(status))
}

fn keyboard(rows: &[Vec<crate::notify::Button>]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows.iter().map(|row| {
        row.iter()
            .map(|b| InlineKeyboardButton::callback(b.label.clone(), b.data.clone()))
            .collect::<Vec<_>>()
    }))
}

/// One session in full, for `/session`: its state, newest Flow Log lines, open questions.
fn describe(folder: &SessionFolder) -> String {
    let state = match folder.load_state() {
        Ok(state) => state,
        Err(error) => return format!("{}: {error}", folder.name()),
    };
    let mut lines = vec![
        format!(
            "{}: {} in {}",
            folder.name(),
            state.status.name(),
            state.phase
        ),
        format!(
            "iteration {} in the phase, {} in all; {} spent",
            state.phase_iteration,
            state.iteration,
            crate::protocol::budget::money(state.usage.cost_usd)
        ),
    ];
    match &state.status {
        crate::protocol::RunState::Waiting { wait_for, .. } => {
            lines.push(format!("waiting for {wait_for}"))
        }
        crate::protocol::RunState::Blocked { reason, .. }
        | crate::protocol::RunState::Failed { reason, .. } => {
            lines.push(format!("reason: {reason}"))
        }
        _ => {}
    }
    if let Some(at) = state.usage_limit_until(jiff::Timestamp::now()) {
        lines.push(format!(
            "resumes at {at} (the provider's usage limit resets)"
        ));
    }
    if let Ok(Some(text)) = folder.read(crate::session::store::OVERVIEW) {
        let log = crate::protocol::overview::parse(&text).flow_log;
        if !log.is_empty() {
            lines.push("flow log (newest):".into());
            lines.extend(log.iter().rev().take(5).rev().map(|l| format!("  {l}")));
        }
    }
    if let Ok(Some(text)) = folder.read(crate::session::store::QA) {
        let doc = QaDoc::parse(&text);
        let open: Vec<_> = doc.open().collect();
        if !open.is_empty() {
            lines.push("open questions:".into());
            lines.extend(open.iter().map(|q| format!("  Q{}: {}", q.number, q.text)));
        }
    }
    lines.join("\n")
}

/// The text of the option a button names, when its question is still the one `_qa.md` asks
/// under that number: a later round numbers its questions again, so a button of an earlier
/// round must not answer the later round's question of the same number.
fn pressed_option(
    qa: &QaDoc,
    round: Option<u32>,
    question: u32,
    index: usize,
) -> Result<String, String> {
    let numbered: Vec<&crate::protocol::qa::Question> = qa
        .questions
        .iter()
        .filter(|q| q.number == question)
        .collect();
    let pressed = match round {
        // Two questions an agent numbered alike in one round would share their buttons' data:
        // a press could not say which of them it answers.
        Some(round) if numbered.iter().filter(|q| q.round == round).count() > 1 => {
            return Err(format!(
                "more than one question of this round is numbered Q{question}, so a button cannot say which; reply /answer SESSION {question} TEXT, once per question, in their order"
            ));
        }
        Some(round) => numbered.iter().find(|q| q.round == round),
        // An older notice's button names no round: it is clear only while one question has
        // the number.
        None if numbered.len() > 1 => {
            return Err(format!(
                "this button is from an older notice and more than one question is numbered Q{question}; reply /answer SESSION {question} TEXT"
            ));
        }
        None => numbered.first(),
    };
    let Some(pressed) = pressed else {
        return Err(format!("Q{question} has no such option any more"));
    };
    let last = qa.questions.iter().map(|q| q.round).max().unwrap_or(1);
    if pressed.round < last {
        return Err(format!(
            "this button is from round {} of the questions; the session asks round {last} now: use the buttons of its latest notice",
            pressed.round
        ));
    }
    pressed
        .options
        .get(index)
        .cloned()
        .ok_or_else(|| format!("Q{question} has no such option any more"))
}

/// The longest line of a `/logs` reply, in characters.
const LOG_LINE_CHARS: usize = 300;
/// The most a `/logs` reply holds, in characters: one message.
const LOG_REPLY_CHARS: usize = 3_500;

/// The reply to `/logs NAME`: the last lines, each cut at [`LOG_LINE_CHARS`], as many of them
/// as one message holds (one line of an agent's 200,000 characters was 49 messages).
fn logs_reply(lines: &[String], name: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut size = 0;
    for line in lines.iter().rev() {
        let line = crate::protocol::shorten(line, LOG_LINE_CHARS);
        size += line.chars().count() + 1;
        if size > LOG_REPLY_CHARS {
            break;
        }
        kept.push(line);
    }
    let left = lines.len() - kept.len();
    if left > 0 {
        kept.push(format!(
            "({left} earlier line(s) left out: `samocode logs {name}` shows them)"
        ));
    }
    kept.reverse();
    kept.join("\n")
}

#[cfg(test)]
mod tests {
    use super::{logs_reply, pressed_option, who};

    #[test]
    fn a_logs_reply_is_one_message_whatever_the_lines() {
        let huge = vec!["start".to_string(), "x".repeat(200_000), "end".to_string()];
        let reply = logs_reply(&huge, "s");
        assert!(
            reply.chars().count() <= super::LOG_REPLY_CHARS + 100,
            "{}",
            reply.len()
        );
        assert!(
            reply.starts_with("start\nxxx") && reply.ends_with("…\nend"),
            "{reply}"
        );
        let many: Vec<String> = (0..30)
            .map(|n| format!("{n} {}", "y".repeat(250)))
            .collect();
        let reply = logs_reply(&many, "s");
        assert!(reply.chars().count() <= super::LOG_REPLY_CHARS + 100);
        assert!(
            reply.starts_with("(17 earlier line(s) left out: `samocode logs s`"),
            "{reply}"
        );
        assert!(reply.ends_with(&many[29]));
        assert_eq!(logs_reply(&["a".into(), "b".into()], "s"), "a\nb");
    }
    use crate::protocol::qa::QaDoc;

    #[test]
    fn an_option_button_answers_only_the_question_it_was_shown_with() {
        let qa = QaDoc::parse(
            "# Questions\n\n## Q1: Where?\nOptions: here | there\nAnswer: there\n\n# Round 2\n\n## Q1: Colour?\nOptions: red | blue\nAnswer:\n",
        );
        assert_eq!(pressed_option(&qa, Some(2), 1, 1), Ok("blue".into()));
        let stale = pressed_option(&qa, Some(1), 1, 0).unwrap_err();
        assert!(
            stale.contains("round 1") && stale.contains("round 2"),
            "{stale}"
        );
        assert!(
            pressed_option(&qa, Some(2), 1, 2).is_err(),
            "no third option"
        );
        assert!(pressed_option(&qa, Some(3), 1, 0).is_err(), "no round 3");
        // A button of an older notice, which named no round, is clear only while one question
        // has its number.
        let older = pressed_option(&qa, None, 1, 0).unwrap_err();
        assert!(older.contains("/answer"), "{older}");
        let one = QaDoc::parse("# Questions\n\n## Q1: Where?\nOptions: here | there\nAnswer:\n");
        assert_eq!(pressed_option(&one, None, 1, 0), Ok("here".into()));
        // Two questions numbered alike in one round: a press cannot say which it answers.
        let twins = QaDoc::parse(
            "# Questions\n\n## Q1: Where?\nOptions: here | there\nAnswer:\n\n## Q1: Colour?\nOptions: red | blue\nAnswer:\n",
        );
        let refused = pressed_option(&twins, Some(1), 1, 1).unwrap_err();
        assert!(refused.contains("/answer SESSION 1"), "{refused}");
    }

    #[test]
    fn a_first_name_never_reads_as_a_username() {
        let user = |username: Option<&str>, first: &str| teloxide::types::User {
            id: teloxide::types::UserId(42),
            is_bot: false,
            first_name: first.into(),
            last_name: None,
            username: username.map(str::to_string),
            language_code: None,
            is_premium: false,
            added_to_attachment_menu: false,
        };
        assert_eq!(who(&user(Some("ann"), "Ann")), "by @ann");
        let spoof = who(&user(None, "@boss"));
        assert_eq!(spoof, "by Telegram user 42 (@boss)");
        assert!(!spoof.starts_with("by @"));
    }
}
