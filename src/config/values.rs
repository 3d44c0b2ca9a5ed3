//! One setting at a time: the layers it may come from (flag, environment, `config.toml`), the
//! parsers with the ranges that make sense for each kind of value, and the nearest known name
//! for a misspelt one. A bad value is recorded with its key, value and source, and the reading
//! goes on, so that every problem is reported in one run.

use std::collections::HashMap;
use std::time::Duration;

use super::{ConfigError, Problems};

/// Every setting, by its environment name. In `config.toml` each is its name in lower case
/// without `SAMOCODE_` ([`file_key`]); nothing else is accepted there but `profiles`.
pub(super) const SETTINGS: &[&str] = &[
    "CLAUDE_PATH",
    "CLAUDE_MODEL",
    "CLAUDE_MAX_TURNS",
    "CLAUDE_TIMEOUT",
    "CODEX_PATH",
    "CODEX_MODEL",
    "CODEX_TIMEOUT",
    "CODEX_HOME",
    "SAMOCODE_PROVIDER",
    "SAMOCODE_MAX_RETRIES",
    "SAMOCODE_RETRY_DELAY",
    "SAMOCODE_KILL_GRACE",
    "SAMOCODE_STALL_TIMEOUT",
    "SAMOCODE_STATE_DIR",
    "SAMOCODE_CONTROL",
    "SAMOCODE_MAX_PARALLEL",
    "SAMOCODE_STRIP_ENV",
    "SAMOCODE_KEEP_ENV",
    "SAMOCODE_LOG_FORMAT",
    "SAMOCODE_FAILPOINTS",
    "SAMOCODE_HTTP",
    "SAMOCODE_HTTP_TOKEN_FILE",
    "SAMOCODE_EXECUTOR",
    "SAMOCODE_NATS_URL",
    "SAMOCODE_NATS_TOKEN",
    "SAMOCODE_NATS_NKEY_FILE",
    "SAMOCODE_NATS_ACK_WAIT",
    "SAMOCODE_KUBE_NAMESPACE",
    "SAMOCODE_KUBE_IMAGE",
    "SAMOCODE_KUBE_SECRET",
    "SAMOCODE_MAX_COST",
    "SAMOCODE_MAX_ITERATIONS",
    "SAMOCODE_MAX_TIME",
    "SAMOCODE_FLEET_MAX_COST",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_API_URL",
    "TELEGRAM_ALLOWED_USERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "RUST_LOG",
];

/// Settings whose values are secrets: an error about one never shows its value.
pub(super) const SECRETS: &[&str] = &[
    "TELEGRAM_BOT_TOKEN",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "SAMOCODE_NATS_TOKEN",
    // Paths, but one who pastes the seed or the token itself in its place must not see it
    // echoed.
    "SAMOCODE_NATS_NKEY_FILE",
    "SAMOCODE_HTTP_TOKEN_FILE",
];

/// The `config.toml` key of a setting: `SAMOCODE_MAX_RETRIES` is `max_retries`.
pub(super) fn file_key(env: &str) -> String {
    env.trim_start_matches("SAMOCODE_").to_ascii_lowercase()
}

/// A setting's raw value and where it came from.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub value: String,
    /// The name to show: the flag, the variable, or the file key.
    pub key: String,
    pub origin: &'static str,
}

/// The lookup of settings through the layers, recording what is wrong as it goes.
pub(super) struct Layers<'a> {
    pub env: &'a HashMap<String, String>,
    /// The settings of `config.toml`.
    pub file: &'a super::file::FileSettings,
    pub problems: &'a mut Problems,
}

impl Layers<'_> {
    /// The value of setting `env`: the flag when given, else the environment (an empty value
    /// counts as unset), else `config.toml`. A NUL byte is refused here, whatever the setting.
    pub fn get(&mut self, env: &str, flag: Option<(&'static str, &String)>) -> Option<Found> {
        let found = if let Some((name, value)) = flag {
            Found {
                value: value.clone(),
                key: name.to_string(),
                origin: "the command line",
            }
        } else if let Some(value) = self.env.get(env).filter(|v| !v.is_empty()) {
            Found {
                value: value.clone(),
                key: env.to_string(),
                origin: "the environment",
            }
        } else {
            let key = file_key(env);
            Found {
                value: self.file.scalars.get(&key)?.clone(),
                key,
                origin: "config.toml",
            }
        };
        if found.value.contains('\0') {
            self.bad(&found, env, "text without NUL bytes");
            return None;
        }
        Some(found)
    }

    /// The text of setting `env`, if set.
    pub fn text(&mut self, env: &str) -> Option<String> {
        self.get(env, None).map(|f| f.value)
    }

    /// Setting `env` parsed by `parse`; a value that does not parse is recorded as a problem
    /// naming what was `expected`, and reads as unset.
    pub fn parsed<T>(
        &mut self,
        env: &str,
        flag: Option<(&'static str, &String)>,
        expected: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let found = self.get(env, flag)?;
        let parsed = parse(found.value.trim());
        if parsed.is_none() {
            self.bad(&found, env, expected);
        }
        parsed
    }

    /// Records that `found` (setting `env`) is not what was `expected`.
    pub fn bad(&mut self, found: &Found, env: &str, expected: &'static str) {
        // A chat id holding a `:` is most likely the bot token pasted in its place.
        let secret =
            SECRETS.contains(&env) || (env == "TELEGRAM_CHAT_ID" && found.value.contains(':'));
        let value = if secret {
            "<hidden: it holds a secret>".to_string()
        } else {
            without_userinfo(&found.value).into_owned()
        };
        // A number or a boolean of `config.toml` is shown as it was written there.
        let bare = !secret
            && found.origin == "config.toml"
            && self
                .file
                .table
                .get(&found.key)
                .is_some_and(|v| v.is_integer() || v.is_float() || v.is_bool());
        self.problems.push(ConfigError::BadValue {
            key: found.key.clone(),
            value,
            bare,
            origin: found.origin,
            expected,
        });
    }
}

/// A duration in humantime (`90s`, `30m`, `2h`) or a plain number of seconds (`1800`, `0.5`).
/// Never panics: a number too large for a duration is `None`, like any other bad text.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return None;
        }
        return Duration::try_from_secs_f64(seconds).ok();
    }
    humantime::parse_duration(text).ok()
}

/// A parser of durations from `min` to `max`, both included.
pub(super) fn duration_between(min: Duration, max: Duration) -> impl Fn(&str) -> Option<Duration> {
    move |text| parse_duration(text).filter(|d| (min..=max).contains(d))
}

/// A parser of whole numbers from `min` to `max`, both included.
pub(super) fn number_between<T>(min: T, max: T) -> impl Fn(&str) -> Option<T>
where
    T: std::str::FromStr + PartialOrd + Copy,
{
    move |text| text.parse().ok().filter(|n| *n >= min && *n <= max)
}

/// The parallel limit of the daemon, for the flag, the setting and `samocode parallel`.
pub fn parse_parallel(text: &str) -> Option<usize> {
    number_between(1, 1000)(text.trim())
}

/// `k1=v1,k2=v2` pairs (OTLP headers, resource attributes), values percent-decoded as the
/// OpenTelemetry specification says; `None` when an entry has no `=` or an empty key.
pub(super) fn key_value_list(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (key, value) = entry.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            Some((key.to_string(), percent_decode(value.trim())?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The known word nearest to `word` (ignoring case), when it is close enough to be a typo.
pub(crate) fn nearest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .map(|candidate| (distance(&word, &candidate.to_ascii_lowercase()), candidate))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// The edit distance (insertions, deletions, substitutions, and swaps of neighbours).
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j]; three rows are kept for swaps.
    let mut two_back = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            current[j] = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(two_back[j - 2] + 1);
            }
        }
        two_back = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_humantime_and_never_panic() {
        assert_eq!(parse_duration("1800"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("later"), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("99999999999999999999"), None);
        assert_eq!(parse_duration("2e19"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
        assert_eq!(parse_duration("inf"), None);
        let timeout = duration_between(Duration::from_secs(1), Duration::from_secs(7 * 86400));
        assert_eq!(timeout("0"), None);
        assert_eq!(timeout("8d"), None);
        assert_eq!(timeout("7d"), Some(Duration::from_secs(7 * 86400)));
    }

    #[test]
    fn parallel_is_one_to_a_thousand() {
        assert_eq!(parse_parallel("0"), None);
        assert_eq!(parse_parallel("1"), Some(1));
        assert_eq!(parse_parallel("1000"), Some(1000));
        assert_eq!(parse_parallel("100000"), None);
        assert_eq!(parse_parallel("-3"), None);
    }

    #[test]
    fn typos_find_their_key_and_strangers_find_none() {
        let keys = ["MAIN_REPO", "WORKTREES", "SESSIONS", "BASE_BRANCH"];
        assert_eq!(nearest("MAIN_REOP", keys), Some("MAIN_REPO"));
        assert_eq!(nearest("main_repo", keys), Some("MAIN_REPO"));
        assert_eq!(nearest("SESSION", keys), Some("SESSIONS"));
        assert_eq!(nearest("BOGUS", keys), None);
        assert_eq!(
            nearest("unkown_key", ["max_retries", "rust_log"]),
            None,
            "too far from anything"
        );
        assert_eq!(
            nearest("max_retrys", ["max_retries", "rust_log"]),
            Some("max_retries")
        );
    }

    #[test]
    fn key_value_lists_decode_their_values() {
        assert_eq!(
            key_value_list("authorization=Bearer%20x, team = core"),
            Some(vec![
                ("authorization".into(), "Bearer x".into()),
                ("team".into(), "core".into())
            ])
        );
        assert_eq!(key_value_list("novalue"), None);
        assert_eq!(key_value_list("=x"), None);
        assert_eq!(key_value_list("a=%zz"), None);
    }
}

/// A `scheme://user:password@host/...` address split into the address without them and the
/// user and password (percent-decoded); `None` for one without.
pub fn split_userinfo(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    let (userinfo, server) = (&rest[..at], &rest[at + 1..end]);
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((
        format!("{scheme}://{server}{}", &rest[end..]),
        decode(user),
        decode(password),
    ))
}

/// The `Authorization` header value of HTTP basic authentication.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `text` with the user and password of every URL in it (`scheme://user:password@host`)
/// shown as `<hidden>`: an address may carry credentials, and addresses are shown (a dry run,
/// an error, a log line).
pub fn without_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    // Most text has no address with credentials: it goes back as it is, unread word by word.
    if !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::new();
    let mut hidden = false;
    // Word by word: an address ends at whitespace, and several in a list (`a://…,b://…`)
    // are taken one by one.
    let mut rest = text;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let mut addresses = word;
        while !addresses.is_empty() {
            // The next address starts at the next `scheme://` after this one's.
            let from = addresses.find("://").map_or(addresses.len(), |i| i + 3);
            let next = addresses[from..]
                .find("://")
                .and_then(|i| addresses[..from + i].rfind(',').map(|comma| comma + 1))
                .unwrap_or(addresses.len());
            let one = &addresses[..next];
            let (scheme, address) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            // Everything up to the last `@` of the address is its user and password: a
            // password may hold `/`, `#`, `,` or `@`, and hiding a path's `@` hides nothing
            // secret. Without a scheme, only what reads `user:password@host` is taken so.
            match address.rfind('@') {
                Some(at) if !scheme.is_empty() || address[..at].contains(':') => {
                    shown.push_str(scheme);
                    shown.push_str("<hidden>");
                    shown.push_str(&address[at..]);
                    hidden = true;
                }
                _ => shown.push_str(one),
            }
            addresses = &addresses[next..];
        }
        shown.push_str(&after[..space_end]);
        rest = &after[space_end..];
    }
    if !hidden {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(shown)
}

#[cfg(test)]
mod userinfo_tests {
    use super::without_userinfo;

    #[test]
    fn credentials_in_an_address_are_never_shown() {
        assert_eq!(
            without_userinfo("http://user:pw@localhost:4318/v1/traces"),
            "http://<hidden>@localhost:4318/v1/traces"
        );
        assert_eq!(
            without_userinfo("htp://user:p@ss@collector"),
            "htp://<hidden>@collector"
        );
        assert_eq!(
            without_userinfo("nats://a:b@h1:4222,nats://h2:4222,tls://t@h3"),
            "nats://<hidden>@h1:4222,nats://h2:4222,tls://<hidden>@h3"
        );
        assert_eq!(
            without_userinfo("nats://u:pa,ss@h:4222"),
            "nats://<hidden>@h:4222"
        );
        let plain = "http://localhost:4318/a/b";
        assert!(matches!(without_userinfo(plain), std::borrow::Cow::Borrowed(p) if p == plain));
        assert_eq!(without_userinfo("not a url"), "not a url");
        // A password that breaks the address's rules (`/`, `#`), and one without a scheme.
        assert_eq!(
            without_userinfo("nats://u:SECRET/TOML-7@h:4222"),
            "nats://<hidden>@h:4222"
        );
        assert_eq!(
            without_userinfo("http://u:SECRET#TOML-8@h:4318/v1"),
            "http://<hidden>@h:4318/v1"
        );
        assert_eq!(
            without_userinfo("u:SECRET-TOML-9@h:4318"),
            "<hidden>@h:4318"
        );
        // In a sentence, and beside an ssh address, which has no password.
        assert_eq!(
            without_userinfo("cannot reach nats://a:b@h:4222: refused; git@host:o/r.git"),
            "cannot reach nats://<hidden>@h:4222: refused; git@host:o/r.git"
        );
    }
}
