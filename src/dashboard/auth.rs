//! Who may use the dashboard: one-time login tokens, the session cookie they are exchanged
//! for, and the CSRF token tied to each cookie.
//!
//! `samocode dashboard` asks the daemon (over the 0600 control socket) for a login token; the
//! first request that shows it gets a random cookie (HttpOnly, SameSite=Strict) and the token
//! is void. A token not used within [`LOGIN_TTL`] expires. With `--http-token-file`, the
//! secret in that file also logs in (and is not used up): that is how a person on another
//! machine, who cannot reach the control socket, gets in. Tokens and cookies never reach a log.
//!
//! The state is a small map behind a mutex, held for a few map operations at a time and never
//! across an await: the dashboard is a set of request handlers, not an actor, and this is the
//! only state they share besides the watcher's feed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login token from `samocode dashboard` stays valid.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// A cookie unused for this long is forgotten (the person logs in again).
pub const VISIT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most browser sessions remembered at once; the least recently seen goes first. A bound,
/// so that logins cannot grow the daemon's memory without limit.
const MAX_VISITS: usize = 64;
/// The most unused login tokens kept at once, for the same reason.
const MAX_LOGINS: usize = 32;

/// The name of the session cookie.
pub const COOKIE: &str = "samocode_session";

/// A message shown once on the next page a browser session loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// A logged-in browser session, as a request handler sees it.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub cookie: String,
    /// The value every form of this browser session must send back as `csrf`.
    pub csrf: String,
}

struct Visit {
    csrf: String,
    flash: Option<Flash>,
    seen: Instant,
}

#[derive(Default)]
struct State {
    logins: Vec<(String, Instant)>,
    visits: HashMap<String, Visit>,
}

/// The dashboard's logins and browser sessions.
pub struct Auth {
    state: Mutex<State>,
    /// The secret of `--http-token-file`, when one is set.
    standing: Option<String>,
}

impl Auth {
    pub fn new(standing: Option<String>) -> Auth {
        Auth {
            state: Mutex::new(State::default()),
            standing,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only maps behind; they are still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh one-time login token.
    pub fn issue_login(&self) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut state = self.state();
        state.logins.retain(|(_, expires)| *expires > now);
        if state.logins.len() >= MAX_LOGINS {
            state.logins.remove(0);
        }
        state.logins.push((token.clone(), now + LOGIN_TTL));
        token
    }

    /// Exchanges a login token for a new cookie; `None` when the token is unknown, used or
    /// expired. A one-time token is void afterwards.
    pub fn exchange(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut state = self.state();
        state.logins.retain(|(_, expires)| *expires > now);
        let one_time = state
            .logins
            .iter()
            .position(|(known, _)| same(known, token));
        let standing = self.standing.as_deref().is_some_and(|s| same(s, token));
        match one_time {
            Some(index) => {
                state.logins.remove(index);
            }
            None if standing => {}
            None => return None,
        }
        state
            .visits
            .retain(|_, v| now.duration_since(v.seen) < VISIT_TTL);
        if state.visits.len() >= MAX_VISITS
            && let Some(oldest) = state
                .visits
                .iter()
                .min_by_key(|(_, v)| v.seen)
                .map(|(k, _)| k.clone())
        {
            state.visits.remove(&oldest);
        }
        let cookie = random_token();
        state.visits.insert(
            cookie.clone(),
            Visit {
                csrf: random_token(),
                flash: None,
                seen: now,
            },
        );
        Some(cookie)
    }

    /// The browser session of a cookie, when it is a live one.
    pub fn visitor(&self, cookie: &str) -> Option<Visitor> {
        let now = Instant::now();
        let mut state = self.state();
        let visit = state.visits.get_mut(cookie)?;
        if now.duration_since(visit.seen) >= VISIT_TTL {
            state.visits.remove(cookie);
            return None;
        }
        visit.seen = now;
        Some(Visitor {
            cookie: cookie.to_string(),
            csrf: visit.csrf.clone(),
        })
    }

    /// Leaves a message for the next page of this browser session.
    pub fn set_flash(&self, visitor: &Visitor, flash: Flash) {
        if let Some(visit) = self.state().visits.get_mut(&visitor.cookie) {
            visit.flash = Some(flash);
        }
    }

    /// Takes the message left for this browser session, if any.
    pub fn take_flash(&self, visitor: &Visitor) -> Option<Flash> {
        self.state()
            .visits
            .get_mut(&visitor.cookie)
            .and_then(|v| v.flash.take())
    }
}

/// True when a form's `csrf` field is this browser session's token.
pub fn csrf_ok(visitor: &Visitor, sent: Option<&str>) -> bool {
    sent.is_some_and(|sent| same(&visitor.csrf, sent))
}

/// The value of the session cookie in a `Cookie` header.
pub fn cookie_in(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value.trim())
    })
}

/// The `Set-Cookie` value for a new browser session. Without `Max-Age` it lasts as long as the
/// browser session; `Secure` would make it unusable over plain loopback HTTP, so a TLS proxy in
/// front is expected to add it.
pub fn set_cookie(cookie: &str) -> String {
    format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict")
}

/// Compares secrets in time that depends only on their lengths, so that response times do not
/// tell how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes from the operating system, as 64 hex digits.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The kernel's random source does not fail on Linux once booted; a token from anything
    // weaker must never be made, so a failure here is fatal for the request.
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_token_works_once() {
        let auth = Auth::new(None);
        let token = auth.issue_login();
        assert_eq!(token.len(), 64);
        let cookie = auth.exchange(&token).expect("first use logs in");
        assert!(
            auth.exchange(&token).is_none(),
            "the token is void after use"
        );
        let visitor = auth.visitor(&cookie).expect("the cookie is a live session");
        assert!(auth.visitor("not-a-cookie").is_none());
        assert!(csrf_ok(&visitor, Some(&visitor.csrf)));
        assert!(!csrf_ok(&visitor, None));
        assert!(!csrf_ok(&visitor, Some("guess")));
    }

    #[test]
    fn the_token_file_secret_logs_in_every_time() {
        let auth = Auth::new(Some("s".repeat(40)));
        assert!(auth.exchange(&"s".repeat(40)).is_some());
        assert!(auth.exchange(&"s".repeat(40)).is_some());
        assert!(auth.exchange(&"s".repeat(39)).is_none());
        assert!(auth.exchange("").is_none());
    }

    #[test]
    fn flash_messages_are_shown_once() {
        let auth = Auth::new(None);
        let cookie = auth.exchange(&auth.issue_login()).unwrap();
        let visitor = auth.visitor(&cookie).unwrap();
        let flash = Flash {
            ok: true,
            text: "approved".into(),
        };
        auth.set_flash(&visitor, flash.clone());
        assert_eq!(auth.take_flash(&visitor), Some(flash));
        assert_eq!(auth.take_flash(&visitor), None);
    }

    #[test]
    fn cookies_are_read_from_the_header() {
        assert_eq!(cookie_in("a=1; samocode_session=abc; b=2"), Some("abc"));
        assert_eq!(cookie_in("samocode_session_x=abc"), None);
        assert!(set_cookie("abc").contains("HttpOnly; SameSite=Strict"));
    }
}
