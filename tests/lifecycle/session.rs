//! The SessionActor's lifecycle under a person's commands, timers, restarts and panics.

use std::time::Duration;

use samocode::session::person::PersonCommand;

use super::fake::{KILL_GRACE, OnTerm, RETRY_DELAY, World};

const NEXT: &str = r#"{"status":"continue","phase":"requirements"}"#;

#[tokio::test(start_paused = true)]
async fn stop_then_resume_before_the_stopped_agent_is_gone_runs_again() {
    let mut world = World::new(true).await;
    world.launcher.set_on_term(OnTerm::Ignore);
    world.start().await;
    let first = world.next_agent().await;

    // The stop reaches an agent that does not die of SIGTERM; the resume comes before it
    // is killed at the end of its grace.
    world.person(PersonCommand::Stop).await;
    assert!(first.alive(), "the agent is still in its grace period");
    assert_eq!(world.state()["status"]["state"], "stopped");
    world.person(PersonCommand::Resume).await;

    // The grace passes, the old agent is killed, and only then does a new attempt start.
    let second = world.next_agent().await;
    assert!(!first.alive());
    assert_eq!(
        world.journal.events(),
        ["launch 1", "term 1", "kill 1", "launch 2"]
    );
    let rows = world.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "interrupted");
    assert_eq!(rows[0]["exit_signal"], "SIGKILL");
    assert_eq!(world.state()["status"]["state"], "running");

    second.finish(NEXT);
    let third = world.next_agent().await;
    assert!(third.spec.files.relative_log().contains("requirements"));
}

#[tokio::test(start_paused = true)]
async fn a_backoff_timer_from_before_a_stop_does_nothing_and_nobody_is_told_twice() {
    let mut world = World::new(true).await;
    world.start().await;
    let first = world.next_agent().await;
    first.exit(1);
    // The failure schedules a retry after the backoff; the stop comes first.
    world.person(PersonCommand::Stop).await;
    world.idle(RETRY_DELAY * 100).await;
    assert!(
        world.agents.try_recv().is_err(),
        "the stale timer started no attempt: {:?}",
        world.journal.events()
    );
    assert_eq!(world.state()["status"]["state"], "stopped");
    let stopped: Vec<String> = world
        .notices
        .headlines()
        .into_iter()
        .filter(|h| h.contains("stopped"))
        .collect();
    assert_eq!(stopped.len(), 1, "{:?}", world.notices.headlines());

    // Stopped once more, with a backoff pending, and resumed: the new attempt fails later
    // than the first, so its own backoff ends later than the stale one would.
    world.person(PersonCommand::Resume).await;
    let second = world.next_agent().await;
    second.exit(1);
    world.person(PersonCommand::Stop).await;
    world.person(PersonCommand::Resume).await;
    let third = world.next_agent().await;
    world.idle(Duration::from_secs(3)).await;
    third.exit(1);
    world.idle(RETRY_DELAY - Duration::from_secs(1)).await;
    assert!(
        world.agents.try_recv().is_err(),
        "a stale backoff started the retry early: {:?}",
        world.journal.events()
    );
    let fourth = world.next_agent().await;
    fourth.finish(NEXT);
    world.next_agent().await;
    world.idle(RETRY_DELAY * 100).await;
    assert!(world.agents.try_recv().is_err());
}

/// An attempt whose end could not be learned (NATS unreachable) is retried with backoff like
/// a crash; it used to fail the session at once, as if the agent could not be started.
#[tokio::test(start_paused = true)]
async fn an_attempt_whose_end_is_lost_is_retried_not_failed() {
    let mut world = World::new(true).await;
    world.start().await;
    let first = world.next_agent().await;
    first.lose();
    let second = world.next_agent().await;
    assert!(second.spec.files.relative_log().contains("-a2"));
    let row = &world.rows()[0];
    assert_eq!(row["outcome"], "crashed");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains("did not run to an end samocode could learn"),
        "{row}"
    );
    second.finish(NEXT);
    world.next_agent().await;
    assert_ne!(world.state()["status"]["state"], "failed");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_attempt_keeps_its_tokens() {
    let mut world = World::new(true).await;
    world.start().await;
    let first = world.next_agent().await;
    first
        .say(r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"usage":{"input_tokens":700,"output_tokens":70}}"#)
        .await;
    world.person(PersonCommand::Stop).await;
    world.idle(KILL_GRACE * 2).await;
    let state = world.state();
    assert_eq!(state["usage"]["input_tokens"], 700, "{state}");
    assert_eq!(state["usage"]["cost_usd"], 0.5);
    assert_eq!(world.rows()[0]["input_tokens"], 700);
}

#[tokio::test(start_paused = true)]
async fn a_session_restarted_mid_attempt_kills_its_old_agent_before_the_new_one_starts() {
    let mut world = World::new(true).await;
    world.start().await;
    let first = world.next_agent().await;
    // The session actor is killed (as a crash would end it) while its agent runs.
    let session = world
        .supervisor
        .get_children()
        .into_iter()
        .find(|child| child.get_name().is_none())
        .expect("the session actor");
    session.kill();
    let second = world.next_agent().await;
    assert!(!first.alive());
    let events = world.journal.events();
    let killed = events
        .iter()
        .position(|e| e == "kill 1" || e == "leftover killed 1")
        .expect("the first agent was killed");
    let relaunched = events.iter().position(|e| e == "launch 2").unwrap();
    assert!(killed < relaunched, "{events:?}");
    // The interrupted attempt has its row, and the new one is the iteration's next attempt.
    let rows = world.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "interrupted");
    assert!(second.spec.files.relative_log().ends_with("-a2.jsonl"));
}

#[tokio::test(start_paused = true)]
async fn a_panic_inside_the_agent_actor_kills_its_group_and_counts_as_a_crash() {
    let mut world = World::new(true).await;
    world.launcher.set_on_term(OnTerm::Panic);
    world.start().await;
    let first = world.next_agent().await;
    // Past the time limit the actor sends SIGTERM, and panics doing it.
    world
        .idle(super::fake::TIMEOUT + Duration::from_secs(1))
        .await;
    assert!(
        !first.alive(),
        "the guard killed the group when the actor died"
    );
    let events = world.journal.events();
    assert_eq!(&events[..3], ["launch 1", "term 1", "kill 1"], "{events:?}");
    world.launcher.set_on_term(OnTerm::Exit);
    let second = world.next_agent().await;
    let rows = world.rows();
    assert_eq!(rows[0]["outcome"], "crashed", "{rows:?}");
    assert!(
        rows[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the agent's watcher failed"),
        "{}",
        rows[0]
    );
    second.finish(NEXT);
    world.next_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_notifier_is_restarted_and_later_notices_reach_people() {
    let mut world = World::new(true).await;
    world.start().await;
    let first = world.next_agent().await;
    let notifier = world
        .supervisor
        .get_children()
        .into_iter()
        .find(|child| {
            child
                .get_name()
                .is_some_and(|n| n.starts_with("samocode-notifier"))
        })
        .expect("the notifier");
    notifier.kill();
    world.idle(Duration::from_secs(1)).await;
    first.finish(r#"{"status":"blocked","phase":"investigation","reason":"needs a key"}"#);
    world.idle(Duration::from_secs(1)).await;
    assert!(
        world
            .notices
            .headlines()
            .iter()
            .any(|h| h.contains("blocked in investigation: needs a key")),
        "{:?}",
        world.notices.headlines()
    );
}

#[tokio::test(start_paused = true)]
async fn a_finished_attempt_leaves_no_timer_behind() {
    // Each attempt arms its time limit; an attempt that ends before it must not leave the timer
    // (and with it the attempt's actor and mailbox) alive until the limit would have passed.
    let mut world = World::new(true).await;
    world.start().await;
    let stay = r#"{"status":"continue","phase":"investigation"}"#;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let mut agent = world.next_agent().await;
    agent.finish(stay);
    agent = world.next_agent().await;
    let before = tasks();
    for _ in 0..12 {
        agent.finish(stay);
        agent = world.next_agent().await;
    }
    let after = tasks();
    assert!(
        after <= before + 2,
        "{} tasks more after 12 finished attempts",
        after - before
    );
}
