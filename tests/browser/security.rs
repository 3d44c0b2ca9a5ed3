//! Who may do what: without the session cookie every page and action is refused with the
//! login form; with it, an action without this browser session's CSRF token is refused and
//! changes nothing; a login link works once.

use fantoccini::Locator;

use super::driver::{Browser, Visitor, http, login_link, start_until_questions};
use super::fixture::Project;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_cookie_or_the_csrf_token_are_refused() {
    let mut project = Project::new();
    let _daemon = project.daemon(&["--http", "127.0.0.1:0"]);
    let dir = start_until_questions(&project, "guarded");
    let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
    let state = || project.session("guarded").state()["status"]["state"].clone();
    let (base, link) = login_link(&project);

    // No cookie: a browser that never logged in sees the login form, for any path.
    let stranger = Browser::start().await;
    stranger.goto(&format!("{base}/sessions/{folder}")).await;
    stranger
        .wait_text("h1", "Log in to the samocode dashboard")
        .await;
    assert!(
        !stranger.client.source().await.unwrap().contains(&folder),
        "nothing of the session is shown"
    );
    stranger.screenshot("refused-no-cookie").await;
    for (method, path) in [
        ("GET", "/".to_string()),
        ("GET", "/events".to_string()),
        ("GET", format!("/sessions/{folder}")),
        ("POST", format!("/sessions/{folder}/stop")),
        ("GET", "/no/such/page".to_string()),
    ] {
        let answer = http(&base, method, &path, None, Some("csrf=x"));
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.body);
    }
    let forged = http(&base, "GET", "/", Some("0123456789abcdef"), None);
    assert_eq!(forged.status, 401, "an unknown cookie is no cookie");
    stranger.close().await;

    // Logged in: the link works once, and sets an HttpOnly, SameSite=Strict cookie.
    let person = Browser::start().await;
    person.goto(&link).await;
    person.wait_text("h1", "Fleet").await;
    let again = http(&base, "GET", &link[base.len()..], None, None);
    assert_eq!(again.status, 401, "a used login link is void");
    let cookie = person.session_cookie().await;
    let fresh = http(
        &base,
        "GET",
        &login_link(&project).1[base.len()..],
        None,
        None,
    );
    let set = fresh.header("set-cookie").unwrap_or_default();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let csp = fresh.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");

    // With the cookie but without the CSRF token (or with another one), nothing is done.
    for form in [None, Some("csrf="), Some("csrf=0123456789abcdef")] {
        let answer = http(
            &base,
            "POST",
            &format!("/sessions/{folder}/stop"),
            Some(&cookie),
            form.or(Some("")),
        );
        assert_eq!(answer.status, 403, "{form:?}: {}", answer.body);
    }
    // No form at all (no body, no content type): refused the same way.
    let bare = http(
        &base,
        "POST",
        &format!("/sessions/{folder}/stop"),
        Some(&cookie),
        None,
    );
    assert_eq!(bare.status, 403, "a POST with no form: {}", bare.body);
    assert_eq!(state(), "waiting");

    // The same in the browser: the Stop form with its token taken out is refused. The edit
    // is announced as a person's would be (an input event), so that a live update of the
    // section does not put a fresh form with its token back before the click.
    person.goto(&format!("{base}/sessions/{folder}")).await;
    person
        .js("const token = document.querySelector('form[action$=\"/stop\"] input[name=csrf]'); token.value = ''; token.dispatchEvent(new Event('input', { bubbles: true })); return 0;")
        .await;
    person
        .client
        .find(Locator::Css("form[action$='/stop'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    person.wait_text("h1", "Refused").await;
    person.screenshot("refused-no-csrf").await;
    assert_eq!(state(), "waiting", "the refused form changed nothing");

    // And with the token the page carries, the same form works.
    person.goto(&format!("{base}/sessions/{folder}")).await;
    person
        .client
        .find(Locator::Css("form[action$='/stop'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    person.wait_text(".flash", "stopped").await;
    assert_eq!(state(), "stopped");
    person.close().await;
}

/// A page whose live stream the daemon no longer takes (restarted: the login is gone) says so
/// and asks for a reload, instead of standing still as if nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_off_by_a_restart_says_it_is_not_live_any_more() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut project = Project::new();
    let daemon = project.daemon(&["--http", &address]);
    let dir = start_until_questions(&project, "restarted");
    let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
    let (base, link) = login_link(&project);
    let browser = Browser::start().await;
    browser.goto(&link).await;
    browser.goto(&format!("{base}/sessions/{folder}")).await;
    browser
        .wait_js(
            "return document.getElementById('live').hidden;",
            false.into(),
        )
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('offline').hidden;")
            .await,
        true
    );
    assert_eq!(daemon.terminate(), Some(0));
    let _daemon = project.daemon(&["--http", &address]);
    browser
        .wait_js(
            "return document.getElementById('offline').hidden;",
            false.into(),
        )
        .await;
    let said = browser.text("#offline").await;
    assert!(said.contains("reload the page"), "{said}");
    browser.close().await;
}

/// A form over the size limit is refused as too large, not as one without its token.
#[test]
fn a_form_too_large_is_said_to_be_so() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "large");
    let form = format!("csrf=x&q2_text={}", "a".repeat(2 * 1024 * 1024 + 64 * 1024));
    let answer = visitor.post("answer", &form);
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(
        answer.body.contains("larger than the dashboard takes"),
        "{}",
        answer.body
    );
}

/// An address the dashboard cannot read, or an action's address visited instead of posted,
/// gets a page that says what is wrong and leads back, like every other refusal.
#[test]
fn a_malformed_address_or_a_visited_action_gets_a_page_saying_so() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "odd");
    let get = |path: &str| http(&visitor.base, "GET", path, Some(&visitor.cookie), None);
    let visited = get(&format!("/sessions/{}/approve", visitor.folder));
    assert_eq!(visited.status, 405, "{}", visited.body);
    assert!(
        visited.body.contains("<html")
            && visited.body.contains("button")
            && visited
                .body
                .contains(&format!("/sessions/{}", visitor.folder)),
        "{}",
        visited.body
    );
    let unknown = get(&format!("/sessions/{}/bogus", visitor.folder));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    for path in ["/?state=a&state=b", "/sessions/%FF"] {
        let malformed = get(path);
        assert_eq!(malformed.status, 400, "{path}: {}", malformed.body);
        assert!(
            malformed.body.contains("<html") && malformed.body.contains("Back to the fleet"),
            "{path}: {}",
            malformed.body
        );
    }
}

/// A session whose folder was deleted under the daemon: its page says the folder is gone,
/// not that it holds no session.
#[test]
fn a_session_whose_folder_was_deleted_says_so() {
    let mut project = Project::new();
    let visitor = Visitor::at_questions(&mut project, "gone");
    std::fs::remove_dir_all(&visitor.dir).unwrap();
    let page = visitor.page();
    assert_eq!(page.status, 410, "{}", page.body);
    assert!(
        page.body.contains("its folder is gone (moved or deleted)")
            && !page.body.contains("move it out"),
        "{}",
        page.body
    );
}
