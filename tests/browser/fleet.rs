//! The fleet page: opened from `samocode dashboard`'s link, it lists the sessions of a
//! scripted run with their state, counts them, filters them, and follows the daemon live.

use fantoccini::Locator;

use super::driver::{Browser, PATIENCE, http, login_cookie, login_link, start_until_questions};
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

/// Two projects in folders of the same name, one daemon: the project filter offers each,
/// told apart by where it is, and shows only the sessions of the one chosen.
#[test]
fn projects_of_the_same_folder_name_are_filtered_apart() {
    let mut alpha = Project::in_folder("app");
    let _daemon = alpha.daemon(&["--http", "127.0.0.1:0"]);
    let mut beta = Project::in_folder("app");
    beta.env(
        "SAMOCODE_STATE_DIR",
        &alpha.state_dir().display().to_string(),
    );
    start_until_questions(&alpha, "one");
    start_until_questions(&beta, "two");
    let (base, link) = login_link(&alpha);
    let cookie = login_cookie(&base, &link);
    let mut fleet = http(&base, "GET", "/", Some(&cookie), None);
    wait_for(PATIENCE, "the fleet page to list both sessions", || {
        fleet = http(&base, "GET", "/", Some(&cookie), None);
        fleet.body.contains("-one\"") && fleet.body.contains("-two\"")
    });
    for project in [&alpha, &beta] {
        let folder = project.root.display().to_string();
        assert!(
            fleet.body.contains(&format!("option value=\"{folder}\"")),
            "no choice of {folder} in {}",
            fleet.body
        );
    }
    let chosen = http(
        &base,
        "GET",
        &format!("/?project={}", alpha.root.display()),
        Some(&cookie),
        None,
    );
    // A row's opening tag, which carries `hidden` when the filter leaves it out.
    let row = |name: &str| {
        chosen
            .body
            .split("<tr ")
            .map(|r| r.split('>').next().unwrap_or_default())
            .find(|tag| tag.contains(&format!("-{name}\"")))
            .unwrap_or_else(|| panic!("no row of {name} in {}", chosen.body))
            .to_string()
    };
    assert!(!row("one").contains("hidden"), "{}", row("one"));
    assert!(row("two").contains("hidden"), "{}", row("two"));
}
