//! Session text is text: an agent's Flow Log line with a `<script>` tag, raw HTML in an
//! artifact and a `javascript:` link all show as text (or lose their link), on the first load
//! and when they arrive live, and no script of theirs runs.

use std::io::Write;

use super::driver::{Browser, login_link, start_until_questions};
use super::fixture::Project;

const EVIL: &str = "<script>window.injected = 1; document.title = 'pwned'</script>";
const EVIL_IMG: &str = "<img src=x onerror=\"window.injected = 2\">";

fn agent_writes_flow_log(overview: &std::path::Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(overview)
        .unwrap();
    writeln!(file, "- [002 @ 11-24 10:00] requirements: {text}").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_script_tag_shows_as_text() {
    let mut project = Project::new();
    let _daemon = project.daemon(&["--http", "127.0.0.1:0"]);
    let dir = start_until_questions(&project, "hostile");
    let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
    // What a hostile or confused agent could write into the folder it owns.
    agent_writes_flow_log(&dir.join("_overview.md"), &format!("{EVIL} {EVIL_IMG}"));
    std::fs::write(
        dir.join("11-24-10:00-dive-hostile.md"),
        format!("# Findings\n\n{EVIL}\n\n[click me](javascript:window.injected=3)\n"),
    )
    .unwrap();

    let (base, link) = login_link(&project);
    let browser = Browser::start().await;
    browser.goto(&link).await;
    browser.goto(&format!("{base}/sessions/{folder}")).await;
    let flow = browser.wait_text("#s-flow", "<script>").await;
    assert!(flow.contains(EVIL), "the line shows as written: {flow}");
    assert!(flow.contains(EVIL_IMG), "{flow}");

    // Another line arrives while the page is open: through the live stream, still text.
    agent_writes_flow_log(
        &dir.join("_overview.md"),
        "<script>window.injected = 4</script> live",
    );
    browser
        .wait_text("#s-flow", "<script>window.injected = 4</script> live")
        .await;

    let probe = browser
        .js(
            "return {
                injected: window.injected === undefined ? null : window.injected,
                title: document.title,
                scripts: Array.from(document.scripts).map(s => s.getAttribute('src')),
                images: document.images.length,
                jsLinks: Array.from(document.links).filter(a => a.protocol === 'javascript:').length,
                artifact: document.querySelector('#s-artifacts').textContent,
            };",
        )
        .await;
    assert_eq!(probe["injected"], serde_json::Value::Null, "{probe}");
    assert_eq!(probe["title"], format!("{folder} · samocode"), "{probe}");
    let scripts = probe["scripts"].as_array().cloned().unwrap_or_default();
    assert!(
        scripts.len() == 1
            && scripts[0]
                .as_str()
                .is_some_and(|s| s.starts_with("/assets/app.js?v=")),
        "the page's one script: {probe}"
    );
    assert_eq!(probe["images"], 0, "{probe}");
    assert_eq!(probe["jsLinks"], 0, "{probe}");
    let artifact = probe["artifact"].as_str().unwrap_or_default();
    assert!(
        artifact.contains(EVIL) && artifact.contains("click me"),
        "{artifact}"
    );

    browser
        .js("document.querySelector('#s-flow').scrollIntoView(); return 0;")
        .await;
    browser.screenshot("escaped-script").await;
    browser.close().await;
}
