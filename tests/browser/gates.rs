//! The two gates through the session page: the questions answered in the form (an option
//! that is not the suggestion, and a typed answer), the plan read and approved, and the
//! session followed to done without a reload.

use fantoccini::Locator;

use super::driver::{Browser, PATIENCE, Visitor, form_field, login_link, start_until_questions};
use super::fixture::{Project, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_the_questions_approve_the_plan_and_watch_it_reach_done() {
    let mut project = Project::new();
    // Implementation steps take a second each, so the page has something to follow.
    project.env("SAMOCODE_FAKE", "implementation=slow:1");
    let _daemon = project.daemon(&["--http", "127.0.0.1:0"]);
    let dir = start_until_questions(&project, "auth");
    let folder = dir.file_name().unwrap().to_string_lossy().into_owned();

    let (base, link) = login_link(&project);
    let browser = Browser::start().await;
    browser.goto(&link).await;
    // (A live update may be redrawing the row at the moment the page is read.)
    browser
        .wait_text(&format!("#row-{folder} a"), &folder)
        .await;
    browser
        .client
        .find(Locator::LinkText(&folder))
        .await
        .expect("the session's link on the fleet page")
        .click()
        .await
        .unwrap();
    browser.wait_text("#s-questions legend", "Q1").await;
    // The suggestion is preselected; pick the other option for Q1 and type an answer for Q2.
    let suggested = browser
        .client
        .find(Locator::Css("input[name=q1][value=samocode-demo]"))
        .await
        .unwrap();
    assert!(
        suggested.is_selected().await.unwrap(),
        "the suggestion is preselected"
    );
    browser
        .client
        .find(Locator::Css("input[name=q1][value=docs]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("input[name=q2_text]"))
        .await
        .unwrap()
        .send_keys("4, to keep steps small")
        .await
        .unwrap();
    browser.screenshot("session-questions").await;
    browser
        .client
        .find(Locator::Css("form.questions button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text(".flash", "answered").await;
    let qa = std::fs::read_to_string(dir.join("_qa.md")).unwrap();
    assert!(qa.contains("Answer: docs"), "{qa}");
    assert!(qa.contains("Answer: 4, to keep steps small"), "{qa}");

    // The plan arrives on the open page; it is read, then approved.
    browser.wait_text("#s-plan", "Approve the plan").await;
    let plan = browser.text("#s-plan article").await;
    assert!(plan.contains("Phase 1: scaffolding"), "{plan}");
    assert!(plan.contains("2.2 third step"), "{plan}");
    browser.screenshot_page("session-plan").await;
    browser
        .client
        .find(Locator::Css("#s-plan form.inline button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text(".flash", "approved the plan").await;

    // From here the page is not reloaded: the marker survives only on the same document.
    browser
        .js("window.samocodeMarker = 'same page'; return 0;")
        .await;
    browser.wait_text("#s-status .meta", "implementation").await;
    browser.wait_text("#s-status .meta", "done").await;
    assert_eq!(
        browser.js("return window.samocodeMarker;").await,
        "same page",
        "the page followed the session without a reload"
    );
    assert_eq!(project.session("auth").state()["status"]["state"], "done");
    // The last attempt's log came through the stream, and the chart counts every attempt.
    browser.wait_text("#log-lines", "wrote the summary").await;
    let attempts = project.session("auth").jsonl("_iterations.jsonl").len();
    browser
        .wait_js(
            "return Array.from(document.querySelectorAll('#s-timeline g.o-ok'))
                .reduce((sum, g) => sum + Number(g.dataset.attempts), 0);",
            serde_json::json!(attempts),
        )
        .await;
    let flow = browser.text("#s-flow").await;
    assert!(flow.contains("Plan approved by a person"), "{flow}");
    browser.goto(&format!("{base}/sessions/{folder}")).await;
    browser.screenshot_page("session-done").await;
    browser.close().await;
}

/// A session's page asked for by its short name (`/sessions/shortly`, as the command line and
/// the chat take it) said the daemon owns no such session.
#[test]
fn a_sessions_page_is_found_by_its_short_name() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "shortly");
    let page = visitor.page_named("shortly");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&visitor.folder), "{}", page.body);
    assert_eq!(visitor.page_named("nosuch").status, 404);
}

/// Two questions an agent numbered alike get fields of their own, and the form's answers
/// fill them in their order; an answer to the second alone is refused (it would fill the
/// first). Plain HTTP, as the form posts.
#[test]
fn questions_numbered_alike_are_answered_each_in_its_place() {
    let mut project = Project::new();
    project.env("SAMOCODE_FAKE", "requirements=twins");
    let visitor = Visitor::at_questions(&mut project, "twins");
    let page = visitor.page();
    assert_eq!(page.status, 200);
    for field in ["name=\"q1_text\"", "name=\"q1.2_text\""] {
        assert!(page.body.contains(field), "{field} not in the form");
    }
    let (csrf, qa) = (form_field(&page.body, "csrf"), form_field(&page.body, "qa"));
    let post = |form: &str| visitor.post("answer", &format!("csrf={csrf}&qa={qa}&{form}"));
    post("q1_text=&q1.2_text=4");
    let qa = visitor.questions();
    assert_eq!(qa.matches("Answer:\n").count(), 2, "nothing filled: {qa}");
    assert!(
        visitor.page().body.contains("in their order"),
        "the refusal is shown"
    );

    post("q1_text=demo-files&q1.2_text=4");
    let qa = visitor.questions();
    assert!(
        qa.contains("go?\nSuggested: samocode-demo\nAnswer: demo-files\n")
            && qa.contains("have?\nSuggested: 3\nAnswer: 4\n"),
        "{qa}"
    );
}

/// A questions form from a page loaded before an answer was given elsewhere (here the command
/// line) is refused, and that answer stays; the page shows the question answered. (The stale
/// form had written its preselected suggestion over the person's answer, without a word.)
#[test]
fn answers_from_a_page_older_than_the_questions_are_refused() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "stale");
    let loaded = visitor.page();
    let (csrf, qa) = (
        form_field(&loaded.body, "csrf"),
        form_field(&loaded.body, "qa"),
    );
    assert!(loaded.body.contains("name=\"q1\""));

    project
        .run(&["answer", "stale", "--q", "1", "docs"])
        .expect(0);
    let post = visitor.post(
        "answer",
        &format!("csrf={csrf}&qa={qa}&q1=samocode-demo&q2_text=5"),
    );
    assert_eq!(post.status, 303);
    let text = visitor.questions();
    assert!(text.contains("Answer: docs\n"), "{text}");
    assert!(
        !text.contains("Answer: 5"),
        "nothing of the stale form: {text}"
    );
    let after = visitor.page();
    assert!(
        after
            .body
            .contains("answered elsewhere since this page was loaded"),
        "the refusal is shown"
    );
    assert!(!after.body.contains("name=\"q1\""), "Q1 is shown answered");
    assert!(after.body.contains("name=\"q2_text\""), "Q2 is still open");
    // A form that does not say which questions it saw is refused the same way.
    let csrf_now = form_field(&after.body, "csrf");
    visitor.post("answer", &format!("csrf={csrf_now}&q2_text=5"));
    let text = visitor.questions();
    assert!(
        !text.contains("Answer: 5"),
        "a form without its version: {text}"
    );
}

/// Approving from a page loaded before the plan was sent back and written again would
/// approve a plan the person never read: refused, and the page shows the plan as it is now.
#[test]
fn an_approval_from_a_page_older_than_the_plan_is_refused() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "replanned");
    project
        .run(&["answer", "replanned", "--accept-suggestions"])
        .expect(0);
    // The plan waiting, and whether it is the one written again after the feedback.
    let plan_waits = |project: &Project, revised: bool| {
        let s = project.session("replanned");
        s.state()["status"]["for"] == "plan_approval"
            && s.artifacts("plan")
                .iter()
                .any(|f| s.read(f).contains("revised after feedback") == revised)
    };
    wait_for(PATIENCE, "the plan", || plan_waits(&project, false));
    let loaded = visitor.page();
    let (csrf, plan) = (
        form_field(&loaded.body, "csrf"),
        form_field(&loaded.body, "plan"),
    );
    project
        .run(&["reject", "replanned", "--reason", "smaller steps"])
        .expect(0);
    wait_for(PATIENCE, "the revised plan", || plan_waits(&project, true));
    // A form that says no plan (a page from before an upgrade), then one of the first plan.
    for (form, said) in [
        (format!("csrf={csrf}"), "does not say which plan it showed"),
        (
            format!("csrf={csrf}&plan={plan}"),
            "the plan changed since this page was loaded",
        ),
    ] {
        let post = visitor.post("approve", &form);
        assert_eq!(post.status, 303, "{}", post.body);
        let state = project.session("replanned").state();
        assert_eq!(state["status"]["for"], "plan_approval", "{state}");
        assert!(
            visitor.page().body.contains(said),
            "the refusal is shown: {said}"
        );
    }
    let after = visitor.page();
    let now = form_field(&after.body, "plan");
    assert_ne!(now, plan);
    let csrf = form_field(&after.body, "csrf");
    assert_eq!(
        visitor
            .post("approve", &format!("csrf={csrf}&plan={now}"))
            .status,
        303
    );
    wait_for(PATIENCE, "approved", || {
        project.session("replanned").state()["status"]["for"] != "plan_approval"
    });
}

/// A session page's stream sends only the sections that differ from the ones the page holds
/// (its first event had been the whole page again, artifacts and all).
#[test]
fn a_session_pages_stream_sends_only_sections_the_page_lacks() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "sections");
    let (base, folder, cookie) = (&visitor.base, &visitor.folder, &visitor.cookie);
    let page = visitor.page();
    // Each `<section … id="s-status" … data-v="…">`: its id and version.
    let attribute = |tag: &str, name: &str| {
        tag.split(&format!(" {name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    };
    let held: Vec<String> = page
        .body
        .split("<section ")
        .skip(1)
        .filter_map(|rest| {
            let tag = rest.split('>').next()?;
            Some(format!(
                "{}:{}",
                attribute(tag, "id")?,
                attribute(tag, "data-v")?
            ))
        })
        .collect();
    assert!(held.len() >= 3, "{held:?}");
    // What the stream sends within a second and a half of connecting.
    let first_events = |query: &str| {
        let host = base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        write!(
            stream,
            "GET /sessions/{folder}/events{query} HTTP/1.1\r\nHost: {host}\r\nCookie: samocode_session={cookie}\r\n\r\n"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let all = first_events("");
    assert!(all.contains("event: sections"), "{all}");
    let v: String = held.join(",").replace(':', "%3A").replace(',', "%2C");
    let lacking = first_events(&format!("?v={v}"));
    assert!(lacking.starts_with("HTTP/1.1 200"), "{lacking}");
    // (The timeline may differ: the wait it draws grows with the clock.)
    for id in ["s-status", "s-questions", "s-flow"] {
        assert!(all.contains(&format!("\"id\":\"{id}\"")), "{id} in {all}");
        assert!(
            !lacking.contains(&format!("\"id\":\"{id}\"")),
            "{id} in {lacking}"
        );
    }
}
