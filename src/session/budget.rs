//! A session's spending and its budget, as its SessionActor keeps them: each attempt's cost
//! (priced from the configured table when the provider prints none, as codex does) and agent
//! time are added to the state; before each attempt the budget is checked, and a session that
//! has reached a limit is blocked with `needs: human_decision` and a reason naming the limit
//! and the figures (`cost budget reached: $20.31 of $20.00`). A plain `resume` of a session
//! blocked so is refused while the limit still holds: `resume --raise-budget` goes on.

use super::actor::{SessionActor, SessionReport, SessionRun};
use crate::agent::AttemptReport;
use crate::config::Provider;
use crate::protocol::budget::{self, Reached, Spent};
use crate::protocol::{Needs, RunState, SessionState, Usage};

impl SessionActor {
    /// The session's budget: its own limits over the configured defaults.
    pub(super) fn budget_of(&self, state: &SessionState) -> budget::Budget {
        state.budget.over(&self.budgets.defaults)
    }

    /// Before an attempt: the limit the session has reached, if any. A retry of the current
    /// iteration does not spend the iteration budget.
    pub(super) fn budget_reached(&self, state: &SessionState) -> Option<Reached> {
        self.budget_of(state)
            .reached(&Spent::of(state), state.attempt == 0)
    }

    /// Blocks the session for a reached limit: the history row, the state with the Flow Log
    /// line that names the command that goes on, and the notice (through the notifier's outbox).
    pub(super) fn block_for_budget(
        &self,
        run: &mut SessionRun,
        reached: Reached,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let reason = reached.to_string();
        let status = RunState::Blocked {
            reason: reason.clone(),
            needs: Some(Needs::HumanDecision),
            since: jiff::Timestamp::now(),
        };
        let flow = format!(
            "Blocked by samocode: {reason}; `samocode resume {} --raise-budget {}=N` goes on",
            super::name::short_name(&run.state.name),
            reached.limit.word()
        );
        self.park(run, status, &reason, true, &flow)
    }

    /// What an attempt spent: its usage as the agent reported it, its cost priced from
    /// `[prices]` when the provider printed none. A claude attempt that ended before its
    /// result (stopped at its time limit, killed, crashed) printed no cost: the tokens its
    /// messages report in its log (`log`) are priced instead, rather than counting $0.
    pub(super) fn price(
        &self,
        run: &SessionRun,
        model: &str,
        report: &AttemptReport,
        log: &std::path::Path,
    ) -> Usage {
        if self.agent.provider == Provider::Claude && report.result.is_none() {
            // The model the agent reported first, then the profile's.
            let reported = report.model.as_deref().filter(|m| *m != model);
            let models: Vec<&str> = reported.into_iter().chain([model]).collect();
            return estimate_unreported(
                &run.store,
                log,
                &models,
                &self.budgets.prices,
                "the attempt ended before claude printed its cost",
            )
            .unwrap_or_default();
        }
        let mut usage = report.usage();
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        if self.agent.provider == Provider::Codex && usage.cost_usd == 0.0 && tokens > 0 {
            let reported = report.model.as_deref().filter(|m| *m != model);
            let priced = reported
                .and_then(|m| self.budgets.prices.cost(m, &usage))
                .or_else(|| self.budgets.prices.cost(model, &usage));
            match priced {
                Some(cost) => usage.cost_usd = cost,
                None => run.store.log(&format!(
                    "no price for model {model}: its tokens count as $0 against the budget; add [prices.\"{model}\"] to config.toml"
                )),
            }
        }
        usage
    }

    /// Tells the supervisor what the session has cost in all (the fleet budget sums these).
    pub(super) fn report_spent(&self, run: &SessionRun) {
        if self
            .supervisor
            .send_message(SessionReport::Spent {
                dir: run.store.dir().to_path_buf(),
                cost_usd: run.state.usage.cost_usd,
            })
            .is_err()
        {
            tracing::debug!("the supervisor is gone");
        }
    }

    /// Why a `resume` cannot go on: the session is blocked by a budget it still has reached,
    /// and `raise` (empty for a plain `resume`) leaves that limit in place. The sentence names
    /// the raise that would do.
    pub(super) fn resume_refused(
        &self,
        state: &SessionState,
        raise: &budget::Budget,
    ) -> Option<String> {
        budget::resume_refused(
            state,
            super::name::short_name(&state.name),
            raise,
            &self.budgets.defaults,
        )
    }
}

/// The usage of a claude attempt that ended before printing its cost (stopped at its time
/// limit or stall, killed, crashed, or its worker died): the tokens its messages report in its
/// log (`log`), priced at the first of `models` that `prices` knows. `session.log` says how the
/// cost was estimated (`what` names the attempt), or that its tokens count as $0. `None` when
/// the log reports no tokens.
pub(super) fn estimate_unreported(
    store: &super::store::SessionStore,
    log: &std::path::Path,
    models: &[&str],
    prices: &crate::config::Prices,
    what: &str,
) -> Option<Usage> {
    let mut spent = crate::agent::stream::spent_before_result(log)?;
    let priced = models
        .iter()
        .find_map(|model| Some((*model, prices.cost(model, &spent)?)));
    match priced {
        Some((model, cost)) => {
            spent.cost_usd = cost;
            store.log(&format!(
                "{what}: {} estimated from the {} input and {} output tokens its log reports, at the price of {model}",
                crate::protocol::budget::money(cost),
                spent.input_tokens,
                spent.output_tokens,
            ));
        }
        None => {
            let model = models.first().copied().unwrap_or("(unknown)");
            store.log(&format!(
                "{what}, and model {model} has no price: its tokens count as $0 against the budget; add [prices.\"{model}\"] to config.toml"
            ));
        }
    }
    Some(spent)
}
