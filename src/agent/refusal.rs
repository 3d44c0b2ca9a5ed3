//! What a failed attempt's output says about why it failed, when the reason changes what the
//! worker does next: a usage limit parks the session until the time the provider names, bad
//! credentials block it at once. Everything else (an overloaded API included) is an ordinary
//! failed attempt, retried with backoff.
//!
//! The CLIs print the provider's error in their result text (claude: `Invalid API key`,
//! `Claude AI usage limit reached|<unix time>`, with the HTTP status beside it) or in error
//! events (codex: `You've hit your usage limit. Try again at 3:27 PM.`), so the check reads
//! text, case-insensitively, and looks for a reset time in it: a unix time, a delay, or a
//! clock time, in the zone the message names (claude: `resets 5pm (Europe/Berlin)`) or else
//! this machine's, which is the one the CLI printed it in. Time zones come from jiff's
//! bundled database, so this works on machines without /usr/share/zoneinfo.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use super::AttemptReport;

/// Why the provider refused to run the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The account's usage limit is reached; it resets at `until` when the message says when.
    UsageLimit {
        until: Option<Timestamp>,
        message: String,
    },
    /// The API key or login was refused; retrying cannot help.
    Authentication { message: String },
}

/// The refusal a failed attempt's report shows, if any.
pub fn of_report(report: &AttemptReport, now: Timestamp, tz: &TimeZone) -> Option<Refusal> {
    if let Some(result) = &report.result
        && let Some(status @ (401 | 403)) = result.api_status
    {
        let message = match &result.text {
            Some(text) => short(text),
            None => format!("the provider answered HTTP {status}"),
        };
        return Some(Refusal::Authentication { message });
    }
    // Only an error's text: the agent's own words (its last message, a summary of work that
    // mentions limits) are not the provider refusing it. Nor is what the CLI retried itself
    // (codex's `Reconnecting... 1/5 (…)`): when that was why it gave up, its last error says so.
    let texts = report
        .result
        .iter()
        .filter(|r| r.is_error)
        .filter_map(|r| r.text.as_deref())
        .chain(
            report
                .errors
                .iter()
                .map(String::as_str)
                .filter(|e| !e.trim_start().to_lowercase().starts_with("reconnecting")),
        );
    texts.rev().find_map(|t| of_text(t, now, tz))
}

/// What to do about a failed attempt whose CLI refused the way samocode starts it, which no
/// retry can change: claude will not skip its permission prompts for root outside a sandbox.
pub fn of_setup(detail: &str) -> Option<&'static str> {
    detail
        .contains("cannot be used with root/sudo privileges")
        .then_some(
        "claude will not skip its permission prompts for root: run samocode as a user that is not root, or, only inside a sandbox (a container or a VM of its own), set IS_SANDBOX=1 in samocode's environment (the agent gets it); then `samocode resume`",
    )
}

/// The refusal one message describes, if any.
pub fn of_text(text: &str, now: Timestamp, tz: &TimeZone) -> Option<Refusal> {
    let lower = text.to_lowercase();
    // claude names the limit it hit: `You've hit your weekly limit`, `You've reached your
    // Fable 5 limit`.
    let named_limit = ["hit your ", "reached your "].iter().any(|m| {
        lower
            .split(m)
            .skip(1)
            .any(|rest| rest.chars().take(40).collect::<String>().contains("limit"))
    });
    // A rate limit (requests or tokens a minute) is not the account's usage limit: it passes
    // in seconds, and is retried as any failure is.
    let limit_reached = lower
        .match_indices("limit reached")
        .any(|(at, _)| !lower[..at].trim_end().ends_with("rate"));
    let usage_limit = named_limit
        || limit_reached
        || ["usage limit", "usage_limit"]
            .iter()
            .any(|m| lower.contains(m));
    if usage_limit {
        return Some(Refusal::UsageLimit {
            until: reset_time(&lower, now, tz),
            message: short(text),
        });
    }
    let authentication = [
        "authentication_error",
        "authentication failed",
        "invalid api key",
        "invalid x-api-key",
        "incorrect api key",
        "401 unauthorized",
        "status 401",
        "api error: 401",
        "please run /login",
    ]
    .iter()
    .any(|m| lower.contains(m))
        // codex without its key: ``Missing environment variable: `OPENAI_API_KEY` ``.
        || (lower.contains("missing environment variable") && lower.contains("api_key"));
    authentication.then(|| Refusal::Authentication {
        message: short(text),
    })
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// A reset time in a usage-limit message (already lower case).
fn reset_time(lower: &str, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    epoch_time(lower)
        .or_else(|| delay(lower, now))
        .or_else(|| clock_time(lower, now, tz))
}

/// A unix time after `|` or after a word containing "reset" (`resets_at: 1767225600`).
fn epoch_time(lower: &str) -> Option<Timestamp> {
    let epoch = |digits: &str| {
        let seconds: i64 = digits.parse().ok()?;
        // Ten digits: a plausible unix time (2001 to 2286), not a count of seconds.
        (digits.len() == 10).then(|| Timestamp::from_second(seconds).ok())?
    };
    if let Some(after) = lower.split('|').nth(1)
        && let Some(at) = epoch(leading_number(after))
    {
        return Some(at);
    }
    ["resets_at", "reset_at", "resets at", "reset at", "reset"]
        .iter()
        .find_map(|marker| {
            lower.split(marker).skip(1).find_map(|rest| {
                let start = rest.find(|c: char| c.is_ascii_digit())?;
                (start <= 4).then(|| epoch(leading_number(&rest[start..])))?
            })
        })
}

/// A delay: `resets_in_seconds: 30`, `try again in 30 seconds`, `retry after 30`.
fn delay(lower: &str, now: Timestamp) -> Option<Timestamp> {
    [
        "resets_in_seconds",
        "try again in",
        "retry after",
        "retry-after",
    ]
    .iter()
    .find_map(|marker| {
        let rest = lower.split(marker).nth(1)?;
        let start = rest.find(|c: char| c.is_ascii_digit())?;
        let seconds = (start <= 4).then(|| seconds_in(&rest[start..]))??;
        now.checked_add(SignedDuration::from_secs(seconds)).ok()
    })
}

/// The seconds a spoken delay names: `30`, `5 minutes`, `2 hours 30 minutes`, `1 day, 3 hours
/// and 5 minutes`. A number without a unit is seconds; an unknown unit is no delay.
fn seconds_in(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    loop {
        let digits = leading_number(rest);
        if digits.is_empty() {
            break;
        }
        // A fraction: `4.5 hours`.
        let fraction = rest[digits.len()..]
            .strip_prefix('.')
            .map(leading_number)
            .filter(|f| !f.is_empty());
        let number = match fraction {
            Some(fraction) => &rest[..digits.len() + 1 + fraction.len()],
            None => digits,
        };
        let count: f64 = number.parse().ok()?;
        rest = rest[number.len()..].trim_start();
        let unit = rest
            .split(|c: char| !c.is_alphabetic())
            .next()
            .unwrap_or("");
        let scale = match unit {
            "" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            _ => return None,
        };
        let seconds = count * scale as f64;
        if !seconds.is_finite() || seconds > i64::MAX as f64 / 2.0 {
            return None;
        }
        total = total.checked_add(seconds.round() as i64)?;
        rest = rest[unit.len()..].trim_start_matches([',', ' ']);
        rest = rest.strip_prefix("and ").unwrap_or(rest);
        if unit.is_empty() {
            break;
        }
    }
    Some(total)
}

/// A clock time after "try again at" or "resets": `3:27 pm`, `5pm`, `15:27`, optionally after
/// a date (`nov 25th, 2026 3:27 pm`, `nov 25, 3pm`). A time named to the minute resets within
/// that minute, so the session waits for the minute's end; a time without a date that has
/// passed today is tomorrow's.
fn clock_time(lower: &str, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let today = now.to_zoned(tz.clone()).date();
    ["try again at", "resets at", "resets", "reset at"]
        .iter()
        .find_map(|marker| {
            let rest = lower.split(marker).nth(1)?.trim_start();
            let (date, rest) = match leading_date(rest, today) {
                Some((date, rest)) => (Some(date), rest),
                None => (None, rest),
            };
            let (time, precise_to_minute, rest) = leading_clock(rest)?;
            // claude names the zone it printed the time in: `5pm (Europe/Berlin)`.
            let zone = rest
                .trim_start()
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .and_then(|(name, _)| TimeZone::get(name).ok())
                .unwrap_or_else(|| tz.clone());
            let day = date.unwrap_or_else(|| now.to_zoned(zone.clone()).date());
            let mut at = day.to_datetime(time).to_zoned(zone).ok()?;
            if precise_to_minute {
                at = at.checked_add(1.minute()).ok()?;
            }
            if date.is_none() && at.timestamp() < now {
                at = at.checked_add(1.day()).ok()?;
            }
            Some(at.timestamp())
        })
}

/// `nov 25th, 2026 at `, `nov 25, `, `nov 25 `: a month name, a day, perhaps a year.
fn leading_date(text: &str, today: Date) -> Option<(Date, &str)> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| text.starts_with(m))? as i8 + 1;
    let rest = text
        .trim_start_matches(|c: char| c.is_alphabetic())
        .trim_start();
    let day: i8 = leading_number(rest).parse().ok()?;
    let rest = rest
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches(|c: char| c.is_alphabetic())
        .trim_start_matches([',', ' ']);
    let rest = rest.strip_prefix("at ").unwrap_or(rest);
    let date = match leading_number(rest) {
        digits if digits.len() == 4 => {
            let rest = rest[4..].trim_start_matches([',', ' ']);
            let rest = rest.strip_prefix("at ").unwrap_or(rest);
            return Some((Date::new(digits.parse().ok()?, month, day).ok()?, rest));
        }
        // Without a year: the next such day (a reset is never in the past).
        _ => Date::new(today.year(), month, day).ok()?,
    };
    // `today` is the machine's; the date may be of the zone the message names, whose day
    // may be a day behind (a reset this evening in Berlin, named on a Tokyo machine whose
    // date is tomorrow's): only a date more than that behind is next year's.
    if date < today.checked_sub(2.days()).ok()? {
        return Some((Date::new(today.year() + 1, month, day).ok()?, rest));
    }
    Some((date, rest))
}

/// `3:27 pm`, `3:27pm`, `5pm`, `15:27`; true when the minutes were named; and the text after.
fn leading_clock(text: &str) -> Option<(Time, bool, &str)> {
    let hour: i8 = leading_number(text).parse().ok()?;
    let mut rest = &text[leading_number(text).len()..];
    let mut minute = 0i8;
    let named = rest.starts_with(':');
    if named {
        let digits = leading_number(&rest[1..]);
        if digits.len() != 2 {
            return None;
        }
        minute = digits.parse().ok()?;
        rest = &rest[3..];
    }
    let rest = rest.trim_start();
    let (hour, rest) = if let Some(after) = rest.strip_prefix("pm") {
        (if hour == 12 { 12 } else { hour + 12 }, after)
    } else if let Some(after) = rest.strip_prefix("am") {
        (if hour == 12 { 0 } else { hour }, after)
    } else if named {
        (hour, rest)
    } else {
        // A bare number is not a clock time.
        return None;
    };
    Some((Time::new(hour, minute, 0, 0).ok()?, named, rest))
}

fn leading_number(text: &str) -> &str {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn until(text: &str) -> Option<Timestamp> {
        match of_text(text, now(), &utc()) {
            Some(Refusal::UsageLimit { until, .. }) => until,
            other => panic!("{text}: not a usage limit: {other:?}"),
        }
    }

    fn at(text: &str) -> Option<Timestamp> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn usage_limits_with_a_unix_reset_time() {
        let reset = Timestamp::from_second(1_795_000_000).ok();
        for text in [
            "API Error: Request rejected (429) · Claude AI usage limit reached|1795000000",
            r#"API Error: 429 {"error":{"type":"rate_limit_error","message":"usage limit reached, resets_at 1795000000"}}"#,
        ] {
            assert_eq!(until(text), reset, "{text}");
        }
    }

    #[test]
    fn usage_limits_with_a_delay_or_none() {
        assert_eq!(
            until("usage_limit_reached: try again in 30 seconds"),
            at("2026-11-24T12:00:30Z")
        );
        assert_eq!(
            until("usage limit reached, try again in 5 minutes"),
            at("2026-11-24T12:05:00Z")
        );
        assert_eq!(until("usage limit reached"), None);
    }

    #[test]
    fn claudes_named_limits_are_usage_limits() {
        // claude names the limit it hit: its session (five hours), week, or one model's.
        for (text, reset) in [
            (
                "You've hit your session limit · resets 2:10pm (America/Chicago)",
                "2026-11-24T20:11:00Z",
            ),
            (
                "You've hit your weekly limit · resets Dec 10 at 9am (Europe/Berlin)",
                "2026-12-10T08:00:00Z",
            ),
            (
                "You've hit your Opus limit · resets 3:45pm",
                "2026-11-24T15:46:00Z",
            ),
            ("You've reached your Fable 5 limit.", ""),
        ] {
            let expected = (!reset.is_empty()).then(|| reset.parse().unwrap());
            assert_eq!(until(text), expected, "{text}");
        }
    }

    #[test]
    fn a_dated_reset_in_a_zone_a_day_behind_the_machine_is_this_year() {
        // 19:00 UTC on Dec 7: already Dec 8 in Tokyo, still Dec 7 in Berlin. The reset was
        // read as Dec 7 of the next year, and the session parked for a year.
        let now: Timestamp = "2026-12-07T19:00:00Z".parse().unwrap();
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let text = "You've hit your weekly limit · resets Dec 7 at 11pm (Europe/Berlin)";
        match of_text(text, now, &tokyo) {
            Some(Refusal::UsageLimit { until, .. }) => {
                assert_eq!(until, at("2026-12-07T22:00:00Z"), "{text}")
            }
            other => panic!("{other:?}"),
        }
        // Named in January on a December day: next year's.
        let text = "You've hit your weekly limit · resets Jan 2 at 9am (Europe/Berlin)";
        match of_text(text, now, &tokyo) {
            Some(Refusal::UsageLimit { until, .. }) => {
                assert_eq!(until, at("2027-01-02T08:00:00Z"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delays_in_days_hours_and_minutes_add_up() {
        assert_eq!(
            until("You've hit your usage limit. Upgrade to Pro or try again in 4 days."),
            at("2026-11-28T12:00:00Z")
        );
        assert_eq!(
            until("usage limit reached; try again in 2 hours 30 minutes"),
            at("2026-11-24T14:30:00Z")
        );
        assert_eq!(
            until("usage limit reached; try again in 1 day, 3 hours and 5 minutes."),
            at("2026-11-25T15:05:00Z")
        );
        assert_eq!(
            until("usage limit reached; try again in 4.5 hours"),
            at("2026-11-24T16:30:00Z")
        );
        // A unit it does not know is no delay at all, not seconds.
        assert_eq!(
            until("usage limit reached; try again in 2 fortnights"),
            None
        );
    }

    #[test]
    fn usage_limits_with_a_clock_time_wait_for_the_end_of_its_minute() {
        // codex: the reset rounded down to its minute, in local time.
        assert_eq!(
            until("You’ve hit your usage limit. Try again at 3:27 PM."),
            at("2026-11-24T15:28:00Z")
        );
        // Already past today: tomorrow.
        assert_eq!(
            until("You've hit your usage limit. Try again at 9:05 AM."),
            at("2026-11-25T09:06:00Z")
        );
        assert_eq!(
            until("You've hit your usage limit. Try again at Nov 26th, 2026 3:27 PM."),
            at("2026-11-26T15:28:00Z")
        );
        // claude: the hour only, and the zone it printed it in.
        assert_eq!(
            until("You've hit your limit · resets 5pm (Europe/Berlin)"),
            at("2026-11-24T16:00:00Z")
        );
        assert_eq!(
            until("You've hit your limit · resets Nov 25, 2027, 5:30pm (America/New_York)"),
            at("2027-11-25T22:31:00Z")
        );
        assert_eq!(
            until("You've hit your limit · resets 5pm"),
            at("2026-11-24T17:00:00Z")
        );
        assert_eq!(
            until("You've hit your limit · resets Nov 25, 3pm"),
            at("2026-11-25T15:00:00Z")
        );
        // A day without a year that has passed is next year's.
        assert_eq!(
            until("You've hit your limit · resets Jan 2, 3pm"),
            at("2027-01-02T15:00:00Z")
        );
        // In the machine's zone, like the CLI that printed it.
        let berlin = TimeZone::fixed(jiff::tz::offset(1));
        let Some(Refusal::UsageLimit { until, .. }) =
            of_text("usage limit. Try again at 3:27 PM.", now(), &berlin)
        else {
            panic!("not a usage limit")
        };
        assert_eq!(until, at("2026-11-24T14:28:00Z"));
    }

    #[test]
    fn a_report_is_read_by_its_status_then_its_texts_newest_first() {
        let report = |status: Option<u16>, text: &str, errors: &[&str]| AttemptReport {
            end: super::super::ProcessEnd::Exited(1),
            status: Some(super::super::launch::ExitKind::Code(1)),
            note: None,
            started_at: now(),
            ended_at: now(),
            ran: None,
            model: None,
            agent_session_id: None,
            result: Some(super::super::stream::RunResult {
                is_error: true,
                subtype: None,
                text: Some(text.into()),
                session_id: None,
                api_status: status,
                denied: 0,
                usage: Default::default(),
            }),
            output_bytes: 0,
            errors: errors.iter().map(|e| e.to_string()).collect(),
            host: None,
        };
        // claude's wording changes; its status does not.
        assert_eq!(
            of_report(&report(Some(401), "Fix external key", &[]), now(), &utc()),
            Some(Refusal::Authentication {
                message: "Fix external key".into()
            })
        );
        assert_eq!(
            of_report(&report(Some(529), "Overloaded", &[]), now(), &utc()),
            None
        );
        // The agent's own words about limits are not a refusal: only an error's are.
        let mut worked = report(
            None,
            "Done: the banner now says Claude AI usage limit reached|1795000000",
            &[],
        );
        worked.result.as_mut().unwrap().is_error = false;
        assert_eq!(of_report(&worked, now(), &utc()), None);
        // codex: the error events, the last one first.
        let codex = report(
            None,
            "The turn failed.",
            &[
                "Reconnecting... 1/1",
                "usage limit reached, try again in 60 seconds",
            ],
        );
        assert!(matches!(
            of_report(&codex, now(), &utc()),
            Some(Refusal::UsageLimit { until: Some(_), .. })
        ));
        // What codex retried itself (a rate limit) is not why it gave up: a stream cut after
        // it is an ordinary failure, counted against the retries.
        let retried = report(
            None,
            "The turn failed.",
            &[
                "Reconnecting... 1/1 (rate limit exceeded: Rate limit reached for gpt-5 on tokens per min. Please try again in 1s.)",
                "stream disconnected before completion",
            ],
        );
        assert_eq!(of_report(&retried, now(), &utc()), None);
        // A rate limit as the last word is not the account's usage limit either.
        assert_eq!(
            of_text(
                "Rate limit reached for gpt-5 on tokens per min. Please try again in 1s.",
                now(),
                &utc()
            ),
            None
        );
    }

    #[test]
    fn authentication_errors_and_others() {
        for text in [
            "Invalid API key · Fix external API key",
            r#"API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            "unexpected status 401 Unauthorized: Incorrect API key provided, url: http://x/v1/responses",
            "Missing environment variable: `OPENAI_API_KEY`.",
        ] {
            assert!(
                matches!(
                    of_text(text, now(), &utc()),
                    Some(Refusal::Authentication { .. })
                ),
                "{text}"
            );
        }
        for text in [
            "API Error: 529 overloaded_error",
            "unexpected status 529 <unknown status code>: overloaded",
            "the agent exited with code 1",
            "API Error: API returned an empty or malformed response (HTTP 200)",
        ] {
            assert_eq!(of_text(text, now(), &utc()), None, "{text}");
        }
    }
}
