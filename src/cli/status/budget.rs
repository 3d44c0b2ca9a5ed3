//! What `status` says about money and budgets: the budget of a session (its own limits over
//! the configured defaults) with what is left of each limit, and, for one session in full, its
//! cost per phase from `_iterations.jsonl`.

use serde::Serialize;

use crate::protocol::SessionState;
use crate::protocol::budget::{self, Budget, Left, Limit, Spent};
use crate::protocol::journal::IterationRow;
use crate::session::SessionFolder;
use crate::session::store::ITERATIONS;

/// A session's budget in `status --json`; absent when no limit is set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetView {
    pub max_cost_usd: Option<f64>,
    pub max_iterations: Option<u32>,
    pub max_time_secs: Option<u64>,
    /// What is left of each limit (`null` where none is set; never below zero).
    pub left: Left,
    /// The wall time of its agent attempts, summed (what the time limit counts).
    pub agent_seconds: f64,
}

impl BudgetView {
    pub fn of(state: &SessionState, defaults: &Budget) -> Option<BudgetView> {
        let budget = state.budget.over(defaults);
        (!budget.is_empty()).then(|| BudgetView {
            max_cost_usd: budget.cost_usd,
            max_iterations: budget.iterations,
            max_time_secs: budget.time_secs,
            left: budget.left(&Spent::of(state)),
            agent_seconds: state.agent_seconds,
        })
    }

    /// `cost $20.00 ($4.31 left), iterations 60 (52 left), time none`.
    pub fn line(&self) -> String {
        let budget = Budget {
            cost_usd: self.max_cost_usd,
            iterations: self.max_iterations,
            time_secs: self.max_time_secs,
        };
        let left = |limit: Limit| match limit {
            Limit::Cost => self.left.cost_usd.map(budget::money),
            Limit::Iterations => self.left.iterations.map(|n| n.to_string()),
            Limit::Time => self
                .left
                .time_secs
                .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string()),
        };
        [Limit::Cost, Limit::Iterations, Limit::Time]
            .iter()
            .map(|l| match (budget.show(*l), left(*l)) {
                (Some(max), Some(left)) => format!("{} {max} ({left} left)", l.word()),
                _ => format!("{} none", l.word()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one phase has cost, from the session's attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseCost {
    pub phase: String,
    pub cost_usd: f64,
    pub attempts: u32,
}

/// The cost of each phase the session has run, in the order first run; read a row at a time,
/// so a journal of any length counts whole.
pub fn by_phase(folder: &SessionFolder) -> Result<Vec<PhaseCost>, crate::session::StoreError> {
    let mut phases: Vec<PhaseCost> = Vec::new();
    folder.each_row(ITERATIONS, |row: IterationRow| {
        let phase = row.phase.to_string();
        match phases.iter_mut().find(|p| p.phase == phase) {
            Some(sum) => {
                sum.cost_usd += row.cost_usd;
                sum.attempts += 1;
            }
            None => phases.push(PhaseCost {
                phase,
                cost_usd: row.cost_usd,
                attempts: 1,
            }),
        }
    })?;
    Ok(phases)
}

/// `investigation $0.03, requirements $0.01`.
pub fn phases_line(phases: &[PhaseCost]) -> String {
    phases
        .iter()
        .map(|p| format!("{} {}", p.phase, budget::money(p.cost_usd)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_line_says_each_limit_and_what_is_left() {
        let mut state = SessionState::new("26-11-24-x", "d", "t", jiff::Timestamp::now());
        state.usage.cost_usd = 15.69;
        state.iteration = 8;
        state.budget.cost_usd = Some(20.0);
        let defaults = Budget {
            iterations: Some(60),
            ..Budget::default()
        };
        let view = BudgetView::of(&state, &defaults).unwrap();
        assert_eq!(
            view.line(),
            "cost $20.00 ($4.31 left), iterations 60 (52 left), time none"
        );
        state.budget = Budget::default();
        assert_eq!(BudgetView::of(&state, &Budget::default()), None);
    }
}
