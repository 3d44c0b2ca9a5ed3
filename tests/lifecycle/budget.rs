//! Budgets: a session that reaches one is blocked for a person with the figures, goes on once
//! a person raises it, and a fleet budget holds every session's next attempt, told once.

use std::time::Duration;

use samocode::config::BudgetSettings;
use samocode::control::{self, Request, Response};
use samocode::protocol::budget::Budget;
use samocode::session::person::PersonCommand;

use super::fake::{FakeAgent, World};

/// A result event that reports `cost` dollars, as claude prints it.
async fn costs(agent: &FakeAgent, cost: f64) {
    agent
        .say(&format!(
            r#"{{"type":"result","subtype":"success","is_error":false,"total_cost_usd":{cost},"usage":{{"input_tokens":100,"output_tokens":10}}}}"#
        ))
        .await;
}

async fn ask(world: &World, request: Request) -> Response {
    control::ask(&world.supervisor, request).await
}

fn person(world: &World, command: PersonCommand) -> Request {
    Request::Person {
        dir: world.session.clone(),
        command,
        by: None,
    }
}

const STAY: &str = r#"{"status":"continue","phase":"investigation"}"#;

#[tokio::test(start_paused = true)]
async fn a_session_stops_at_its_cost_budget_then_goes_on_with_a_raised_one_and_finishes() {
    let mut world = World::new(true).await;
    let budget = Budget {
        cost_usd: Some(0.5),
        ..Budget::default()
    };
    world.start_named("26-11-24-life", budget).await;
    let first = world.next_agent().await;
    costs(&first, 0.3).await;
    first.finish(STAY);
    let second = world.next_agent().await;
    costs(&second, 0.31).await;
    second.finish(STAY);
    world.idle(Duration::from_secs(3600)).await;
    assert!(
        world.agents.try_recv().is_err(),
        "no attempt past the budget: {:?}",
        world.journal.events()
    );

    let state = world.state();
    assert_eq!(state["status"]["state"], "blocked", "{state}");
    assert_eq!(
        state["status"]["reason"],
        "cost budget reached: $0.61 of $0.50"
    );
    assert_eq!(state["status"]["needs"], "human_decision");
    assert_eq!(state["budget"]["cost_usd"], 0.5);
    let overview = std::fs::read_to_string(world.session.join("_overview.md")).unwrap();
    assert!(
        overview.contains(
            "Blocked by samocode: cost budget reached: $0.61 of $0.50; `samocode resume life --raise-budget cost=N` goes on"
        ),
        "{overview}"
    );
    let told: Vec<String> = world
        .notices
        .headlines()
        .into_iter()
        .filter(|h| h.contains("budget"))
        .collect();
    assert_eq!(
        told,
        ["26-11-24-life: blocked in investigation: cost budget reached: $0.61 of $0.50"]
    );

    // A plain resume cannot go on while the budget holds; it says what would.
    match ask(&world, person(&world, PersonCommand::Resume)).await {
        Response::Error { message, code } => {
            assert_eq!(code, 2);
            assert!(
                message.contains("--raise-budget cost=") && message.contains("$0.61 of $0.50"),
                "{message}"
            );
        }
        other => panic!("resume was not refused: {other:?}"),
    }
    // A raise below what is spent is refused; a raise above it goes on.
    let low = Budget {
        cost_usd: Some(0.6),
        ..Budget::default()
    };
    match ask(
        &world,
        person(&world, PersonCommand::RaiseBudget { budget: low }),
    )
    .await
    {
        Response::Error { message, .. } => assert!(message.contains("$0.61"), "{message}"),
        other => panic!("a raise below the spending was taken: {other:?}"),
    }
    let raised = Budget {
        cost_usd: Some(2.0),
        ..Budget::default()
    };
    world
        .person(PersonCommand::RaiseBudget { budget: raised })
        .await;
    assert_eq!(world.state()["budget"]["cost_usd"], 2.0);

    // On to the end, through the plan gate.
    for signal in [
        r#"{"status":"continue","phase":"requirements"}"#,
        r#"{"status":"continue","phase":"planning"}"#,
        r#"{"status":"waiting","phase":"planning","for":"plan_approval"}"#,
    ] {
        world.next_agent().await.finish(signal);
    }
    world.idle(Duration::from_secs(1)).await;
    world.person(PersonCommand::Approve).await;
    // (Not through testing: its read-only check runs git, a real process the paused clock
    // does not wait for.)
    for signal in [
        r#"{"status":"continue","phase":"quality"}"#,
        r#"{"status":"continue","phase":"done"}"#,
        r#"{"status":"done","phase":"done","summary":"finished within the raised budget"}"#,
    ] {
        world.next_agent().await.finish(signal);
    }
    world.idle(Duration::from_secs(1)).await;
    let state = world.state();
    assert_eq!(state["status"]["state"], "done", "{state}");
    let cost = state["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.61).abs() < 1e-9, "{cost}");
}

#[tokio::test(start_paused = true)]
async fn an_iteration_budget_stops_the_next_iteration_and_a_raise_lets_it_run() {
    let mut world = World::new(true).await;
    let budget = Budget {
        iterations: Some(2),
        ..Budget::default()
    };
    world.start_named("26-11-24-life", budget).await;
    // A failed attempt is retried within its iteration: retries do not spend iterations.
    world.next_agent().await.exit(1);
    world.next_agent().await.finish(STAY);
    world.next_agent().await.finish(STAY);
    world.idle(Duration::from_secs(3600)).await;
    assert!(world.agents.try_recv().is_err());
    let state = world.state();
    assert_eq!(
        state["status"]["reason"],
        "iterations budget reached: 2 of 2"
    );
    assert_eq!(state["iteration"], 2);

    let raised = Budget {
        iterations: Some(3),
        ..Budget::default()
    };
    world
        .person(PersonCommand::RaiseBudget { budget: raised })
        .await;
    let third = world.next_agent().await;
    assert!(
        third.spec.files.relative_log().contains("-003-"),
        "{:?}",
        third.spec.files.relative_log()
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_budget_already_spent_blocks_before_any_attempt() {
    let mut world = World::with_budgets(
        true,
        BudgetSettings {
            defaults: Budget {
                time_secs: Some(3600),
                ..Budget::default()
            },
            ..BudgetSettings::default()
        },
    )
    .await;
    // Two hours of agent time, from earlier runs.
    let file = world.session.join("_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state["agent_seconds"] = 7200.0.into();
    std::fs::write(&file, state.to_string()).unwrap();

    world.start().await;
    world.idle(Duration::from_secs(60)).await;
    assert!(world.agents.try_recv().is_err());
    assert_eq!(
        world.state()["status"]["reason"],
        "time budget reached: 2h of 1h"
    );
    let raised = Budget {
        time_secs: Some(3 * 3600),
        ..Budget::default()
    };
    world
        .person(PersonCommand::RaiseBudget { budget: raised })
        .await;
    world.next_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_fleet_budget_holds_every_sessions_next_attempt_and_is_told_once() {
    let mut world = World::with_budgets(
        true,
        BudgetSettings {
            fleet_cost_usd: Some(1.0),
            ..BudgetSettings::default()
        },
    )
    .await;
    world.add_session("26-11-24-other");
    world.start().await;
    world.start_named("26-11-24-other", Budget::default()).await;
    let a = world.next_agent().await;
    let b = world.next_agent().await;
    costs(&a, 0.6).await;
    a.finish(STAY);
    // Under the fleet budget still: the first session's next attempt runs.
    let a2 = world.next_agent().await;
    costs(&b, 0.6).await;
    b.finish(STAY);
    // (Time for the second session to report what it spent.)
    world.idle(Duration::from_secs(1)).await;
    // Reached: the running attempt finishes, and no new one starts in either session.
    a2.finish(STAY);
    world.idle(Duration::from_secs(24 * 3600)).await;
    assert!(
        world.agents.try_recv().is_err(),
        "{:?}",
        world.journal.events()
    );
    let told: Vec<String> = world
        .notices
        .headlines()
        .into_iter()
        .filter(|h| h.contains("fleet budget"))
        .collect();
    assert_eq!(told.len(), 1, "{:?}", world.notices.headlines());
    assert!(told[0].contains("$1.20 of $1.00"), "{told:?}");
    match ask(&world, Request::Status).await {
        Response::Sessions { fleet, .. } => {
            let fleet = fleet.unwrap();
            assert!(fleet.held);
            assert_eq!(fleet.max_cost_usd, Some(1.0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.state()["status"]["state"], "queued");

    // Raised: both sessions run again.
    match ask(&world, Request::RaiseFleetBudget { cost_usd: 5.0 }).await {
        Response::Done { message } => assert!(message.contains("$5.00"), "{message}"),
        other => panic!("{other:?}"),
    }
    world.next_agent().await;
    world.next_agent().await;
}

#[tokio::test(start_paused = true)]
async fn a_codex_attempt_is_priced_from_the_table_and_counts_against_the_budget() {
    let mut world = World::codex(BudgetSettings {
        defaults: Budget {
            cost_usd: Some(1.0),
            ..Budget::default()
        },
        ..BudgetSettings::default()
    })
    .await;
    world.start().await;
    let agent = world.next_agent().await;
    // Codex prints tokens and no price; the standard profile's model is gpt-5.1-codex.
    agent
        .say(r#"{"type":"turn.completed","usage":{"input_tokens":1000000,"cached_input_tokens":400000,"output_tokens":100000}}"#)
        .await;
    agent.finish(STAY);
    world.idle(Duration::from_secs(60)).await;
    let rows = world.rows();
    assert_eq!(rows[0]["model"], "gpt-5.1-codex");
    // 600k fresh input at $1.25, 400k cached at $0.125, 100k output at $10 per million.
    let cost = rows[0]["cost_usd"].as_f64().unwrap();
    assert!((cost - 1.8).abs() < 1e-9, "{cost}");
    let state = world.state();
    assert_eq!(state["usage"]["cached_input_tokens"], 400_000);
    assert_eq!(
        state["status"]["reason"],
        "cost budget reached: $1.80 of $1.00"
    );
}
