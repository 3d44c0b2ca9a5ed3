//! Budgets: the most a session may spend in money (USD), iterations and time before a person
//! must decide whether it goes on. Pure: what a budget is, what a session has spent against
//! it, whether it is reached, how much is left, and a person's raise.
//!
//! A session's own budget (its `start`/`run` flags and raises) is kept in `_state.json`; what
//! it leaves unset comes from the configuration of the worker driving it ([`Budget::over`]).
//! Time is the wall time of the session's agent attempts, summed: waiting at a gate, in the
//! queue or through a backoff does not count. Budgets are checked before each attempt, so an
//! attempt running when a budget passes finishes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::SessionState;

/// The limits of a session (or the defaults of every session). `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Seconds of agent time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_secs: Option<u64>,
}

/// Which limit of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Cost,
    Iterations,
    Time,
}

impl Limit {
    /// The word a person writes in `--raise-budget WORD=VALUE` and reads in a reason.
    pub fn word(self) -> &'static str {
        match self {
            Limit::Cost => "cost",
            Limit::Iterations => "iterations",
            Limit::Time => "time",
        }
    }

    /// A raise of this limit as a person would give it, for advice.
    pub fn example(self) -> &'static str {
        match self {
            Limit::Cost => "cost=40",
            Limit::Iterations => "iterations=100",
            Limit::Time => "time=12h",
        }
    }
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }

    /// This budget where it sets a limit, else `defaults`'.
    pub fn over(&self, defaults: &Budget) -> Budget {
        Budget {
            cost_usd: self.cost_usd.or(defaults.cost_usd),
            iterations: self.iterations.or(defaults.iterations),
            time_secs: self.time_secs.or(defaults.time_secs),
        }
    }

    /// The limits `self` sets, with those of `newer` in their place where it sets them.
    pub fn merged(&self, newer: &Budget) -> Budget {
        newer.over(self)
    }

    /// The first limit a session that has `spent` so much has reached. `new_iteration`: the
    /// next attempt would start an iteration (a retry of the current one does not spend the
    /// iteration budget).
    pub fn reached(&self, spent: &Spent, new_iteration: bool) -> Option<Reached> {
        if let Some(max) = self.cost_usd
            && cost_reached(spent.cost_usd, max)
        {
            return Some(Reached::new(Limit::Cost, spent, self));
        }
        if let Some(max) = self.iterations
            && new_iteration
            && spent.iterations >= max
        {
            return Some(Reached::new(Limit::Iterations, spent, self));
        }
        if let Some(max) = self.time_secs
            && spent.seconds >= max as f64
        {
            return Some(Reached::new(Limit::Time, spent, self));
        }
        None
    }

    /// What is left of each limit (none below zero).
    pub fn left(&self, spent: &Spent) -> Left {
        Left {
            cost_usd: self.cost_usd.map(|max| (max - spent.cost_usd).max(0.0)),
            iterations: self
                .iterations
                .map(|max| max.saturating_sub(spent.iterations)),
            time_secs: self
                .time_secs
                .map(|max| (max as f64 - spent.seconds).max(0.0) as u64),
        }
    }

    /// One limit as a person reads it (`$20.00`, `60 iterations`, `8h`); `None` when unset.
    pub fn show(&self, limit: Limit) -> Option<String> {
        match limit {
            Limit::Cost => self.cost_usd.map(money),
            Limit::Iterations => self.iterations.map(|n| n.to_string()),
            Limit::Time => self.time_secs.map(seconds),
        }
    }
}

/// What a session has spent against its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub cost_usd: f64,
    pub iterations: u32,
    /// Agent time, in seconds.
    pub seconds: f64,
}

impl Spent {
    pub fn of(state: &SessionState) -> Spent {
        Spent {
            cost_usd: state.usage.cost_usd,
            iterations: state.iteration,
            seconds: state.agent_seconds,
        }
    }
}

/// What is left of a budget; `None` where it sets no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Left {
    pub cost_usd: Option<f64>,
    pub iterations: Option<u32>,
    pub time_secs: Option<u64>,
}

/// A limit that is reached, with the figures a person needs to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Reached {
    pub limit: Limit,
    /// What is spent, as a person reads it (`$20.31`).
    pub spent: String,
    /// The limit, as a person reads it (`$20.00`).
    pub max: String,
}

impl Reached {
    fn new(limit: Limit, spent: &Spent, budget: &Budget) -> Reached {
        let spent = match limit {
            Limit::Cost => money(spent.cost_usd),
            Limit::Iterations => spent.iterations.to_string(),
            Limit::Time => seconds(spent.seconds as u64),
        };
        Reached {
            limit,
            spent,
            max: budget.show(limit).unwrap_or_default(),
        }
    }
}

impl fmt::Display for Reached {
    /// `cost budget reached: $20.31 of $20.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} budget reached: {} of {}",
            self.limit.word(),
            self.spent,
            self.max
        )
    }
}

/// The prefix of every budget reason, so a parked session can be recognised as budget-blocked.
pub fn is_budget_reason(reason: &str) -> bool {
    limit_of_reason(reason).is_some()
}

/// The limit a budget's block reason names.
pub fn limit_of_reason(reason: &str) -> Option<Limit> {
    [Limit::Cost, Limit::Iterations, Limit::Time]
        .into_iter()
        .find(|l| reason.starts_with(&format!("{} budget reached: ", l.word())))
}

/// Why a `resume` of a session cannot go on: it is blocked by a budget it still has reached
/// (with `defaults` under its own limits) once `raise` is applied (empty for a plain
/// `resume`). The sentence names the raise that would do, for the session called `name`. The
/// worker's and the daemon's check.
pub fn resume_refused(
    state: &SessionState,
    name: &str,
    raise: &Budget,
    defaults: &Budget,
) -> Option<String> {
    let super::RunState::Blocked { reason, .. } = &state.status else {
        return None;
    };
    if !is_budget_reason(reason) {
        return None;
    }
    let reached = state
        .budget
        .merged(raise)
        .over(defaults)
        .reached(&Spent::of(state), state.attempt == 0)?;
    if raise.show(reached.limit).is_some() {
        // A raise of the reached limit that is still too low: [`super::gate::raise`] says so.
        return None;
    }
    let example = reached.limit.example();
    let word = reached.limit.word();
    Some(match raise.is_empty() {
        true => format!(
            "session {name} is blocked: {reached}; raise it to go on, e.g. `samocode resume {name} --raise-budget {example}`"
        ),
        false => format!(
            "session {name} is blocked: {reached}, and this raise leaves the {word} limit as it is; nothing was changed: raise {word} too, e.g. `samocode resume {name} --raise-budget {example}`"
        ),
    })
}

/// Whether `spent` dollars reach a limit of `limit`. Sums of attempts' costs carry binary
/// rounding (eight attempts at $0.0125 make $0.09999999999999999): what is within a
/// billionth of a dollar of the limit reaches it.
pub fn cost_reached(spent: f64, limit: f64) -> bool {
    spent >= limit - 1e-9
}

/// Money as a person reads it: `$20.31`; to a hundredth of a cent where cents would round
/// it (`$0.0125`), so that a limit and what was spent differing by that much read apart.
pub fn money(usd: f64) -> String {
    let exact = format!("{usd:.4}");
    let cents = exact.trim_end_matches('0');
    let decimals = cents.len() - cents.find('.').map_or(cents.len(), |dot| dot + 1);
    if decimals <= 2 {
        format!("${usd:.2}")
    } else {
        format!("${cents}")
    }
}

fn seconds(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Why a limit's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "{0:?} is not a budget: give WORD=VALUE with WORD cost, iterations or time (cost=40, iterations=80, time=10h)"
    )]
    Form(String),
    #[error("{word}={value:?} is not valid: expected {expected}")]
    Value {
        word: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{0} is given more than once ({1}); give each limit once (--raise-budget {0}=VALUE)")]
    Twice(&'static str, String),
}

/// What each limit accepts, for the error messages of flags, settings and raises.
pub const COST_TEXT: &str = "an amount of US dollars from 0.01 to 1000000, such as 20 or 7.50";
pub const ITERATIONS_TEXT: &str = "a whole number of iterations from 1 to 100000";
pub const TIME_TEXT: &str = "a duration from 1m to 365 days, such as 90m, 8h or 2days";

/// A cost limit: dollars from a cent to a million.
pub fn parse_cost(text: &str) -> Option<f64> {
    let text = text.trim();
    let text = text.strip_prefix('$').unwrap_or(text);
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (0.01..=1_000_000.0).contains(v))
}

/// An iteration limit: from 1 to 100000.
pub fn parse_iterations(text: &str) -> Option<u32> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
}

/// A time limit in humantime (`8h`), from a minute to a year; returned in whole seconds.
pub fn parse_time(text: &str) -> Option<u64> {
    let duration = humantime::parse_duration(text.trim()).ok()?;
    (Duration::from_secs(60)..=Duration::from_secs(365 * 86400))
        .contains(&duration)
        .then_some(duration.as_secs())
}

impl Budget {
    /// Checks each limit given against the ranges a flag or a raise accepts, for a budget that
    /// came another way (a control request): the first out of range, as a raise would name it.
    pub fn check(&self) -> Result<(), BudgetError> {
        let bad = |word, value: String, expected| {
            Err(BudgetError::Value {
                word,
                value,
                expected,
            })
        };
        if let Some(cost) = self.cost_usd
            && !(cost.is_finite() && (0.01..=1_000_000.0).contains(&cost))
        {
            return bad("cost", cost.to_string(), COST_TEXT);
        }
        if let Some(n) = self.iterations
            && !(1..=100_000).contains(&n)
        {
            return bad("iterations", n.to_string(), ITERATIONS_TEXT);
        }
        if let Some(secs) = self.time_secs
            && !(60..=365 * 86400).contains(&secs)
        {
            return bad("time", format!("{secs}s"), TIME_TEXT);
        }
        Ok(())
    }
}

/// A raise, as `resume --raise-budget` takes it: `cost=40`, `iterations=80`, `time=10h`; the
/// limit becomes the value given (a new total, not an addition).
pub fn parse_raise(text: &str) -> Result<Budget, BudgetError> {
    let (word, value) = text
        .split_once('=')
        .ok_or_else(|| BudgetError::Form(text.to_string()))?;
    let bad = |word, expected| BudgetError::Value {
        word,
        value: value.to_string(),
        expected,
    };
    let mut budget = Budget::default();
    match word.trim() {
        "cost" => budget.cost_usd = Some(parse_cost(value).ok_or_else(|| bad("cost", COST_TEXT))?),
        "iterations" => {
            budget.iterations =
                Some(parse_iterations(value).ok_or_else(|| bad("iterations", ITERATIONS_TEXT))?)
        }
        "time" => budget.time_secs = Some(parse_time(value).ok_or_else(|| bad("time", TIME_TEXT))?),
        _ => return Err(BudgetError::Form(text.to_string())),
    }
    Ok(budget)
}

/// Several raises (`--raise-budget` repeated) as one budget, each limit given once: two
/// values for one limit (`cost=5 cost=6`) are a slip, not a choice of the later.
pub fn parse_raises<S: AsRef<str>>(texts: &[S]) -> Result<Budget, BudgetError> {
    texts.iter().try_fold(Budget::default(), |all, text| {
        let raise = parse_raise(text.as_ref())?;
        let twice = [
            ("cost", all.cost_usd.is_some() && raise.cost_usd.is_some()),
            (
                "iterations",
                all.iterations.is_some() && raise.iterations.is_some(),
            ),
            ("time", all.time_secs.is_some() && raise.time_secs.is_some()),
        ];
        match twice.into_iter().find(|(_, both)| *both) {
            Some((word, _)) => Err(BudgetError::Twice(
                word,
                texts
                    .iter()
                    .map(AsRef::as_ref)
                    .filter(|t| t.trim_start().starts_with(word))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            None => Ok(all.merged(&raise)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_raised_twice_in_one_command_is_refused() {
        let error = parse_raises(&["cost=5", "time=1h", "cost=6"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cost is given more than once (cost=5, cost=6); give each limit once (--raise-budget cost=VALUE)"
        );
        let both = parse_raises(&["cost=5", "iterations=9"]).unwrap();
        assert_eq!((both.cost_usd, both.iterations), (Some(5.0), Some(9)));
    }

    #[test]
    fn money_shows_the_fraction_of_a_cent_that_tells_two_amounts_apart() {
        assert_eq!(money(20.0), "$20.00");
        assert_eq!(money(20.31), "$20.31");
        assert_eq!(money(0.0125), "$0.0125");
        assert_eq!(money(0.026), "$0.026");
        assert_eq!(money(1.23456789), "$1.2346");
        // A budget reached by a fraction of a cent no longer reads "$0.01 of $0.01".
        let reached = Budget {
            cost_usd: Some(0.01),
            ..Budget::default()
        }
        .reached(&spent(0.0125, 1, 1.0), false)
        .unwrap();
        assert_eq!(reached.to_string(), "cost budget reached: $0.0125 of $0.01");
    }

    fn spent(cost_usd: f64, iterations: u32, seconds: f64) -> Spent {
        Spent {
            cost_usd,
            iterations,
            seconds,
        }
    }

    #[test]
    fn a_cost_budget_is_reached_at_its_figure_and_says_both_amounts() {
        let budget = Budget {
            cost_usd: Some(20.0),
            ..Budget::default()
        };
        assert_eq!(budget.reached(&spent(19.99, 5, 0.0), true), None);
        let reached = budget.reached(&spent(20.31, 5, 0.0), false).unwrap();
        assert_eq!(reached.to_string(), "cost budget reached: $20.31 of $20.00");
        assert!(is_budget_reason(&reached.to_string()));
        assert!(!is_budget_reason("iteration_limit_exceeded: ..."));
    }

    #[test]
    fn an_iteration_budget_stops_only_a_new_iteration() {
        let budget = Budget {
            iterations: Some(60),
            ..Budget::default()
        };
        assert_eq!(budget.reached(&spent(0.0, 59, 0.0), true), None);
        // The retry of iteration 60 still runs; iteration 61 does not.
        assert_eq!(budget.reached(&spent(0.0, 60, 0.0), false), None);
        assert_eq!(
            budget
                .reached(&spent(0.0, 60, 0.0), true)
                .unwrap()
                .to_string(),
            "iterations budget reached: 60 of 60"
        );
    }

    #[test]
    fn a_time_budget_counts_agent_time() {
        let budget = Budget {
            time_secs: Some(8 * 3600),
            ..Budget::default()
        };
        assert_eq!(
            budget.reached(&spent(0.0, 1, 8.0 * 3600.0 - 1.0), true),
            None
        );
        assert_eq!(
            budget
                .reached(&spent(0.0, 1, 8.0 * 3600.0 + 120.0), false)
                .unwrap()
                .to_string(),
            "time budget reached: 8h 2m of 8h"
        );
        let left = budget.left(&spent(0.0, 1, 3600.0));
        assert_eq!(left.time_secs, Some(7 * 3600));
        assert_eq!(left.cost_usd, None);
    }

    #[test]
    fn a_session_budget_falls_back_to_the_defaults_limit_by_limit() {
        let own = Budget {
            cost_usd: Some(40.0),
            ..Budget::default()
        };
        let defaults = Budget {
            cost_usd: Some(20.0),
            iterations: Some(60),
            time_secs: None,
        };
        assert_eq!(
            own.over(&defaults),
            Budget {
                cost_usd: Some(40.0),
                iterations: Some(60),
                time_secs: None
            }
        );
    }

    #[test]
    fn raises_parse_and_merge_and_bad_ones_say_why() {
        let raised = parse_raises(&["time=10h", "cost=$45.5"]).unwrap();
        assert_eq!(raised.cost_usd, Some(45.5));
        assert_eq!(raised.time_secs, Some(36000));
        assert_eq!(raised.iterations, None);
        assert_eq!(parse_raise("iterations=80").unwrap().iterations, Some(80));
        assert!(matches!(parse_raise("money=3"), Err(BudgetError::Form(_))));
        assert!(matches!(parse_raise("cost"), Err(BudgetError::Form(_))));
        let error = parse_raise("cost=-1").unwrap_err().to_string();
        assert!(
            error.contains("cost=\"-1\"") && error.contains("US dollars"),
            "{error}"
        );
        assert!(parse_raise("iterations=0").is_err());
        assert!(parse_raise("time=5s").is_err());
        assert!(parse_raise("cost=NaN").is_err());
    }

    #[test]
    fn old_state_budgets_read_as_none() {
        let budget: Budget = serde_json::from_str("{}").unwrap();
        assert!(budget.is_empty());
        let json = serde_json::to_string(&Budget {
            cost_usd: Some(20.0),
            ..Budget::default()
        })
        .unwrap();
        assert_eq!(json, r#"{"cost_usd":20.0}"#);
    }
}
