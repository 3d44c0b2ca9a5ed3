//! Tier 2, in process: the SupervisorActor and its SessionActors driven with a scripted
//! launcher (no processes) on a paused tokio clock, so that timers (backoff, time limits, kill
//! grace) fire exactly when the test lets time pass and every interleaving is the same run to
//! run.

mod lifecycle {
    mod budget;
    pub mod fake;
    mod session;
}
