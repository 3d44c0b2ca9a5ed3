//! Tier 2: the real `samocode` binary, its real actor tree and the scripted agent, on a
//! throwaway git project per test.

mod e2e {
    mod attempt_run;
    mod bad_input;
    mod budget;
    mod daemon;
    mod daemon_log;
    pub mod fixture;
    mod full_session;
    mod guards;
    mod hostile;
    mod install;
    mod logs;
    mod misbehaviour;
    mod nats;
    mod profiles;
    mod supervision;
    mod telegram;
    mod telemetry;
    mod trouble;
}
