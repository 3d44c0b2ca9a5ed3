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
        let mut usage = report.usage();
        let estimate = self.agent.provider == Provider::Claude && report.result.is_none();
        if estimate && let Some(spent) = crate::agent::stream::spent_before_result(log) {
            usage = spent;
        }
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        if (estimate || self.agent.provider == Provider::Codex)
            && usage.cost_usd == 0.0
            && tokens > 0
        {
            let reported = report.model.as_deref().filter(|m| *m != model);
            let priced_as = |m: &str| Some((m.to_string(), self.budgets.prices.cost(m, &usage)?));
            let priced = reported.and_then(priced_as).or_else(|| priced_as(model));
            match priced {
                Some((name, cost)) if estimate => {
                    usage.cost_usd = cost;
                    run.store.log(&format!(
                        "the attempt ended before claude printed its cost: {} estimated from the {} input and {} output tokens its log reports, at the price of {name}",
                        crate::protocol::budget::money(cost),
                        usage.input_tokens,
                        usage.output_tokens,
                    ));
                }
                Some((_, cost)) => usage.cost_usd = cost,
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
