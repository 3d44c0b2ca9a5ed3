//! The fleet budget: the most the daemon's sessions may cost together. Pure bookkeeping for
//! the supervisor: the cost of every session it owns (as each last reported it, or as its
//! state said when it was opened), the limit, and whether people have been told.
//!
//! Once the sum reaches the limit, the supervisor grants no agent slot: every session's next
//! attempt waits, queued, and running attempts finish. People are told once. It is lifted by
//! `samocode resume --raise-budget cost=N` without a session name (for the daemon's life), or
//! by a restart with a higher `fleet_max_cost`; the owned sessions' costs are in their state
//! files, so a restart does not reset the sum.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::protocol::budget::{cost_reached, money};

#[derive(Debug, Default)]
pub struct Fleet {
    limit: Option<f64>,
    costs: HashMap<PathBuf, f64>,
    /// People were told the limit is reached (again only after it is lifted).
    told: bool,
    /// Where the limit people were last told of is kept, so that a restart past it does not
    /// tell them again (`None`: in memory only).
    record: Option<PathBuf>,
}

/// The file in the state directory that keeps the limit people were last told was reached.
pub const TOLD_FILE: &str = "fleet-told";

impl Fleet {
    pub fn new(limit: Option<f64>) -> Fleet {
        Fleet {
            limit,
            ..Fleet::default()
        }
    }

    /// Keeps the limit people are told of in `state_dir`; when the sessions' costs, counted
    /// at the start, already reach the very limit told of before, it is not told again.
    pub fn remembered_in(&mut self, state_dir: &Path) {
        let record = state_dir.join(TOLD_FILE);
        // Never waited on: a named pipe there would hang the supervisor.
        let told = crate::session::untrusted::read_text(
            &record,
            4096,
            crate::session::untrusted::Links::Refuse,
        )
        .ok()
        .flatten()
        .and_then(|text| text.trim().parse::<f64>().ok());
        if self.holds() && told.is_some() && told == self.limit {
            self.told = true;
        }
        self.record = Some(record);
    }

    /// The session in `dir` has cost `cost_usd` in all.
    pub fn record(&mut self, dir: &Path, cost_usd: f64) {
        self.costs.insert(dir.to_path_buf(), cost_usd);
    }

    /// What the sessions cost together: `0` for none (not the `-0` of an empty sum), and
    /// never more than the largest number (sessions each at that much would sum to infinity,
    /// which no reply can carry).
    pub fn spent(&self) -> f64 {
        self.costs
            .values()
            .fold(0.0, |sum: f64, cost| sum + cost)
            .min(f64::MAX)
    }

    pub fn limit(&self) -> Option<f64> {
        self.limit
    }

    /// True while new attempts must wait.
    pub fn holds(&self) -> bool {
        self.limit
            .is_some_and(|limit| cost_reached(self.spent(), limit))
    }

    /// The sentence to tell people, the first time the limit holds (once until it is lifted).
    pub fn news(&mut self) -> Option<(f64, f64)> {
        let limit = self.limit?;
        if self.holds() && !self.told {
            self.told = true;
            if let Some(record) = &self.record
                && let Err(error) =
                    crate::session::store::write_atomic(record, limit.to_string().as_bytes())
            {
                tracing::warn!(%error, "cannot keep the fleet budget's notice; a restart tells it again");
            }
            return Some((self.spent(), limit));
        }
        None
    }

    /// A person's raise of the limit; it must be above what is spent.
    pub fn raise(&mut self, cost_usd: f64) -> Result<String, String> {
        if self.limit.is_none() {
            // Most likely a session's raise without its name: nothing to raise here.
            return Err(format!(
                "this daemon has no fleet budget to raise; to raise a session's budget, name it (`samocode resume SESSION --raise-budget cost={cost_usd}`), or start the daemon with --fleet-max-cost for a fleet budget"
            ));
        }
        let spent = self.spent();
        if cost_reached(spent, cost_usd) {
            return Err(format!(
                "the fleet budget cost={cost_usd} is not above the {} the daemon's sessions have already spent; give a higher cost",
                money(spent)
            ));
        }
        self.limit = Some(cost_usd);
        self.told = false;
        // Lifted: a restart under the old limit is news again.
        if let Some(record) = &self.record {
            let _ = std::fs::remove_file(record);
        }
        Ok(format!(
            "the fleet budget is {} now ({} spent); new attempts run again",
            money(cost_usd),
            money(spent)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_once_the_sessions_together_reach_it_and_is_told_once() {
        let mut fleet = Fleet::new(Some(10.0));
        fleet.record(Path::new("/s/a"), 4.0);
        fleet.record(Path::new("/s/b"), 5.0);
        assert!(!fleet.holds());
        assert_eq!(fleet.news(), None);
        fleet.record(Path::new("/s/a"), 6.5);
        assert!(fleet.holds());
        assert_eq!(fleet.news(), Some((11.5, 10.0)));
        assert_eq!(fleet.news(), None, "told once");
        assert!(fleet.raise(11.0).unwrap_err().contains("$11.50"));
        assert!(fleet.raise(20.0).is_ok());
        assert!(!fleet.holds());
        fleet.record(Path::new("/s/b"), 14.0);
        assert_eq!(fleet.news(), Some((20.5, 20.0)), "told again after a raise");
        assert!(!Fleet::new(None).holds());
        // Without a fleet budget a raise is refused: it is a session's raise without its name
        // (it made a fleet budget of that amount without a word).
        let mut none = Fleet::new(None);
        let error = none.raise(5.0).unwrap_err();
        assert!(
            error.contains("no fleet budget") && error.contains("resume SESSION"),
            "{error}"
        );
        assert_eq!(none.limit(), None);
    }

    /// People told the limit is reached are not told again by a restart under it; after a
    /// raise lifted it, they are (they last heard that new attempts run again).
    #[test]
    fn a_restart_tells_of_the_limit_unless_people_were_told_of_it_last() {
        let state = tempfile::tempdir().unwrap();
        let restarted = |limit: f64| {
            let mut fleet = Fleet::new(Some(limit));
            fleet.record(Path::new("/s/a"), 0.05);
            fleet.remembered_in(state.path());
            fleet
        };
        let mut first = restarted(0.02);
        assert_eq!(first.news(), Some((0.05, 0.02)));
        assert_eq!(restarted(0.02).news(), None, "told before the restart");
        assert!(first.raise(1.0).is_ok());
        assert_eq!(restarted(0.02).news(), Some((0.05, 0.02)), "lifted since");
    }

    /// What `status` shows of the fleet: `$0.00` with no session (not `-0.00`), and a sum of
    /// absurd costs still a number a reply can carry (infinity made `status` fail).
    #[test]
    fn the_fleets_sum_is_a_number_a_reply_carries() {
        let empty = Fleet::new(Some(5.0)).spent();
        assert!(empty == 0.0 && empty.is_sign_positive());
        let mut absurd = Fleet::new(Some(5.0));
        absurd.record(Path::new("/s/a"), f64::MAX);
        absurd.record(Path::new("/s/b"), f64::MAX);
        assert_eq!(absurd.spent(), f64::MAX);
        assert!(serde_json::to_string(&absurd.spent()).unwrap() != "null");
    }
}
