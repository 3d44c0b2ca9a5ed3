//! The fleet page: opened from `samocode dashboard`'s link, it lists the sessions of a
//! scripted run with their state, counts them, filters them, and follows the daemon live.

use fantoccini::Locator;

use super::driver::{Browser, PATIENCE, login_link, start_until_questions};
use super::fixture::{Project, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_lists_a_scripted_runs_sessions_and_follows_them_live() {
    let mut project = Project::new();
    let _daemon = project.daemon(&["--http", "127.0.0.1:0"]);
    start_until_questions(&project, "alpha");
    start_until_questions(&project, "beta");
    // A third one is played to the end through the CLI.
    start_until_questions(&project, "gamma");
    project
        .run(&["answer", "gamma", "--accept-suggestions"])
        .expect(0);
    wait_for(PATIENCE, "gamma's plan", || {
        project.session("gamma").state()["status"]["for"] == "plan_approval"
    });
    project.run(&["approve", "gamma"]).expect(0);
    wait_for(PATIENCE, "gamma done", || {
        project.session("gamma").state()["status"]["state"] == "done"
    });

    let (base, link) = login_link(&project);
    let browser = Browser::start().await;
    browser.goto(&link).await;
    assert_eq!(
        browser.client.current_url().await.unwrap().path(),
        "/",
        "the login link lands on the fleet"
    );
    // Within a tick the watcher has seen gamma finish.
    browser.wait_text("tr[data-name$='-gamma']", "done").await;
    let alpha = browser.text("tr[data-name$='-alpha']").await;
    assert!(
        alpha.contains("requirements") && alpha.contains("waiting") && alpha.contains("qa answers"),
        "{alpha}"
    );
    let summary = browser.text("#summary").await;
    assert!(summary.contains("waiting 2"), "{summary}");
    assert!(summary.contains("done 1"), "{summary}");
    assert!(summary.contains("3 sessions"), "{summary}");

    // A session handed to the daemon now appears without a reload.
    browser
        .js("window.samocodeMarker = 'same page'; return 0;")
        .await;
    start_until_questions(&project, "delta");
    browser
        .wait_text("tr[data-name$='-delta']", "waiting")
        .await;
    browser.wait_text("#summary", "waiting 3").await;
    assert_eq!(
        browser.js("return window.samocodeMarker;").await,
        "same page",
        "the row came live, not by a reload"
    );
    browser.screenshot("fleet").await;

    // Filters: by state; the rest of the rows are hidden, and live rows follow the filter.
    browser.goto(&format!("{base}/?state=done")).await;
    let rows = browser
        .client
        .find_all(Locator::Css("#fleet-rows tr"))
        .await
        .unwrap();
    let mut shown = Vec::new();
    for row in rows {
        if row.is_displayed().await.unwrap() {
            shown.push(row.attr("data-name").await.unwrap().unwrap_or_default());
        }
    }
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].ends_with("-gamma"), "{shown:?}");

    // A narrow window turns rows into labelled cards.
    browser.goto(&base).await;
    browser.resize(420, 900).await;
    browser.screenshot("fleet-narrow").await;
    browser.close().await;
}
