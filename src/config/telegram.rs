//! The Telegram settings: a bot token and a chat (both, or neither), the users the bot obeys,
//! and a self-hosted Bot API server. The token is a secret: no log line or error shows it.

use std::fmt;

use super::ConfigError;
use super::values::Layers;

/// Telegram notifications, when both a token and a chat are set.
#[derive(Clone)]
pub struct TelegramSettings {
    pub token: String,
    pub chat_id: i64,
    pub api_url: Option<String>,
    /// Telegram user ids whose commands and button presses the bot obeys.
    pub allowed_users: Vec<u64>,
}

impl fmt::Debug for TelegramSettings {
    // The token is a secret: it never reaches a log line, even through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("token", &"<redacted>")
            .field("chat_id", &self.chat_id)
            .field("api_url", &self.api_url)
            .field("allowed_users", &self.allowed_users)
            .finish()
    }
}

/// Telegram, when both a token and a chat are set; one without the other is an error.
pub(super) fn read(layers: &mut Layers) -> Option<TelegramSettings> {
    let token = layers.get("TELEGRAM_BOT_TOKEN", None);
    let chat = layers.get("TELEGRAM_CHAT_ID", None);
    let api_url = layers.parsed("TELEGRAM_API_URL", None, "an http or https URL", |v| {
        url::Url::parse(v)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|_| v.to_string())
    });
    let allowed_users = layers
        .parsed(
            "TELEGRAM_ALLOWED_USERS",
            None,
            "Telegram user ids separated by commas",
            |v| {
                v.split([',', ' '])
                    .filter(|id| !id.is_empty())
                    .map(|id| id.parse().ok())
                    .collect::<Option<Vec<u64>>>()
            },
        )
        .unwrap_or_default();
    // Checked, so that a token with a space or a line end (pasted from a file) is not sent,
    // percent-encoded, where no scrub of the token's own text finds it again.
    let token_ok = token.as_ref().is_none_or(|found| {
        let valid = found.value.split_once(':').is_some_and(|(bot, secret)| {
            !bot.is_empty()
                && bot.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !valid {
            layers.bad(
                found,
                "TELEGRAM_BOT_TOKEN",
                "a bot token as BotFather gives it: digits, `:`, then letters, digits, `-` and `_`, without spaces or line ends",
            );
        }
        valid
    });
    let chat_id = chat.as_ref().and_then(|found| {
        // No chat has id 0: a placeholder left in a template.
        let parsed = found.value.trim().parse::<i64>().ok().filter(|id| *id != 0);
        if parsed.is_none() {
            layers.bad(found, "TELEGRAM_CHAT_ID", "a numeric chat id, not 0");
        }
        parsed
    });
    match (token, chat) {
        (Some(_), Some(_)) if !token_ok => None,
        (Some(token), Some(_)) => Some(TelegramSettings {
            token: token.value,
            chat_id: chat_id?,
            api_url,
            allowed_users,
        }),
        (Some(token), None) => {
            layers.problems.push(ConfigError::Incomplete {
                key: "TELEGRAM_BOT_TOKEN",
                origin: token.origin,
                missing: "TELEGRAM_CHAT_ID (the chat the notifier posts to)",
            });
            None
        }
        (None, Some(chat)) => {
            layers.problems.push(ConfigError::Incomplete {
                key: "TELEGRAM_CHAT_ID",
                origin: chat.origin,
                missing: "TELEGRAM_BOT_TOKEN (the bot that posts)",
            });
            None
        }
        (None, None) => None,
    }
}
