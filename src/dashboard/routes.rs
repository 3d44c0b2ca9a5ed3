//! The dashboard's pages and actions. A page reads the session files (on the blocking pool); an
//! action is one control request to the supervisor, exactly what the CLI would send, followed
//! by a redirect back to the page with the daemon's answer as a one-time message.

use std::path::PathBuf;

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::App;
use super::auth::{self, Flash, Visitor};
use super::pages::{self, Filter, Frame};
use super::session_page;
use super::view::{LogTail, SessionView};
use crate::cli::status::GONE;
use crate::control::{self, Request, Response as Answer};
use crate::session::StoreError;
use crate::session::person::{Answers, PersonCommand};

/// `GET /`: the fleet.
pub async fn fleet(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Query(filter): Query<Filter>,
) -> Html<String> {
    let fleet = app.feed.fleet.borrow().clone();
    let page = pages::frame(
        Frame {
            title: "Fleet",
            page: "fleet",
            events: Some(format!("/events?since={}", fleet.generation)),
            flash: app.auth.take_flash(&visitor),
        },
        pages::fleet(&fleet, &filter, Timestamp::now()),
    );
    Html(page.into_string())
}

/// `GET /sessions/NAME`: one session.
pub async fn session(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path(name): Path<String>,
) -> Response {
    let Some((dir, project)) = app.locate(&name).await else {
        return not_owned(&name);
    };
    let folder = dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        SessionView::read(&dir, &project).map(|view| (view, LogTail::newest(&dir)))
    })
    .await;
    match read {
        Ok(Ok((view, log))) => {
            let flash = app.auth.take_flash(&visitor);
            let page = session_page::page(&view, &log, &visitor.csrf, flash, Timestamp::now());
            Html(page.into_string()).into_response()
        }
        Ok(Err(StoreError::NotASession(_))) if !folder.exists() => (
            StatusCode::GONE,
            Html(
                pages::problem(
                    "Cannot read the session",
                    &format!("{}: {GONE}.", folder.display()),
                )
                .into_string(),
            ),
        )
            .into_response(),
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::problem("Cannot read the session", &error.to_string()).into_string()),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn not_owned(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(
            pages::problem(
                "No such session",
                &format!("The daemon owns no session {name:?}."),
            )
            .into_string(),
        ),
    )
        .into_response()
}

/// `POST /sessions/NAME/VERB`: approve, reject, answer, stop or resume.
pub async fn act(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path((name, verb)): Path<(String, String)>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A request that is no form carries no token either: refused as one without it. A form
    // over the size limit is said to be that.
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Html(
                    pages::problem(
                        "Too large",
                        "The form is larger than the dashboard takes (2 MB), so nothing was done. Put a long text in a file in the repository and answer with where it is.",
                    )
                    .into_string(),
                ),
            )
                .into_response();
        }
        Err(_) => return forbidden(),
    };
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if !auth::csrf_ok(&visitor, field("csrf")) {
        return forbidden();
    }
    let command = match verb.as_str() {
        "approve" => Ok(PersonCommand::Approve),
        "stop" => Ok(PersonCommand::Stop),
        "resume" => Ok(PersonCommand::Resume),
        "reject" => match field("reason").map(str::trim).filter(|r| !r.is_empty()) {
            Some(reason) => Ok(PersonCommand::Reject {
                reason: reason.to_string(),
            }),
            None => Err("say why the plan goes back: the reason is empty".to_string()),
        },
        "answer" => answers(&fields).map(|answers| PersonCommand::Answer { answers }),
        _ => return missing(),
    };
    let Some((dir, _)) = app.locate(&name).await else {
        return not_owned(&name);
    };
    // Answers from a page older than `_qa.md` (answered meanwhile from elsewhere) would be
    // written over the newer ones: refused, and the page shows the questions as they are.
    let command = match (command, field("qa")) {
        (Ok(PersonCommand::Answer { .. }), seen) if !qa_is(&dir, seen).await => Err(
            "the questions were answered elsewhere since this page was loaded: they are shown as they are now; answer what is still open".to_string(),
        ),
        (command, _) => command,
    };
    // Likewise a plan approved or rejected from a page older than the plan (sent back and
    // written again meanwhile) would be one the person never read.
    let command = match (command, field("plan")) {
        // A page from before the dashboard carried the plan's digest (an upgrade).
        (Ok(PersonCommand::Approve | PersonCommand::Reject { .. }), None) => Err(
            "this page does not say which plan it showed (it was loaded before samocode was upgraded): the page shows the plan now; read it, then approve or reject it".to_string(),
        ),
        (Ok(PersonCommand::Approve | PersonCommand::Reject { .. }), seen)
            if !plan_is(&dir, seen).await =>
        {
            Err("the plan changed since this page was loaded: the page shows it as it is now; read it, then approve or reject it".to_string())
        }
        (command, _) => command,
    };
    let flash = match command {
        Err(problem) => Flash {
            ok: false,
            text: problem,
        },
        Ok(command) => {
            match control::ask(
                &app.supervisor,
                Request::Person {
                    dir,
                    command,
                    by: Some("from the dashboard".into()),
                },
            )
            .await
            {
                Answer::Done { message } => Flash {
                    ok: true,
                    text: message,
                },
                Answer::Error { message, .. } => Flash {
                    ok: false,
                    text: format!("not done: {message}"),
                },
                _ => Flash {
                    ok: false,
                    text: "the daemon gave an unexpected answer".into(),
                },
            }
        }
    };
    app.auth.set_flash(&visitor, flash);
    Redirect::to(&format!("/sessions/{name}")).into_response()
}

/// Whether session `dir`'s `_qa.md` is still the one of version `seen` (a form without the
/// version, not made by a page of this build, is taken as stale).
async fn qa_is(dir: &std::path::Path, seen: Option<&str>) -> bool {
    let folder = crate::session::SessionFolder::new(dir);
    let read = tokio::task::spawn_blocking(move || folder.read(crate::session::store::QA)).await;
    match read {
        Ok(Ok(Some(text))) => Some(super::view::qa_version(&text).as_str()) == seen,
        // Unreadable now: the daemon's own answer says why.
        _ => true,
    }
}

/// Whether the session's newest plan is the one of version `seen` (a form without one is
/// not).
async fn plan_is(dir: &std::path::Path, seen: Option<&str>) -> bool {
    let dir = dir.to_path_buf();
    let now = tokio::task::spawn_blocking(move || super::view::plan_version(&dir)).await;
    match now {
        Ok(now) => now.as_deref() == seen && seen.is_some(),
        // The read did not finish: the daemon's own answer decides.
        Err(_) => true,
    }
}

/// The answers of the questions form: for question N, the text field `qN_text` when filled,
/// else the chosen option `qN`. Questions left empty stay open. Questions an agent numbered
/// alike are `qN`, `qN.2`, `qN.3`… in file order, and answers fill them in that order, so an
/// answer to a later one needs the earlier ones answered too.
fn answers(fields: &[(String, String)]) -> Result<Answers, String> {
    // (number, its place among the questions of that number, answer)
    let mut given: Vec<(u32, u32, String)> = Vec::new();
    for (key, value) in fields {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let Some(rest) = key.strip_prefix('q') else {
            continue;
        };
        let (field, typed) = match rest.strip_suffix("_text") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let (number, place) = match field.split_once('.') {
            Some((number, place)) => (number, place.parse::<u32>().ok()),
            None => (field, Some(1)),
        };
        let (Ok(number), Some(place)) = (number.parse::<u32>(), place) else {
            continue;
        };
        match given
            .iter_mut()
            .find(|(n, p, _)| (*n, *p) == (number, place))
        {
            Some(entry) if typed => entry.2 = value.to_string(),
            Some(_) => {}
            None => given.push((number, place, value.to_string())),
        }
    }
    if given.is_empty() {
        return Err("no answer was given: choose an option or write one".into());
    }
    given.sort_by_key(|(n, p, _)| (*n, *p));
    for (number, place, _) in &given {
        let earlier = given.iter().filter(|(n, p, _)| n == number && p < place);
        if earlier.count() + 1 != *place as usize {
            return Err(format!(
                "more than one question is numbered Q{number}, and answers fill them in their order: answer the ones before the one you answered too"
            ));
        }
    }
    Ok(Answers::Given(
        given.into_iter().map(|(n, _, text)| (n, text)).collect(),
    ))
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(
            pages::problem(
                "Refused",
                "The form did not carry this browser session's token (csrf), so nothing was done. Reload the page and try again.",
            )
            .into_string(),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `GET /login[?token=T]`: the link `samocode dashboard` prints, or the login form.
pub async fn login_link(State(app): State<App>, Query(query): Query<LoginQuery>) -> Response {
    match query.token {
        Some(token) => login_with(&app, &token),
        None => Html(pages::login(None).into_string()).into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: a token typed into the form.
pub async fn login_form(State(app): State<App>, Form(form): Form<LoginForm>) -> Response {
    login_with(&app, form.token.trim())
}

fn login_with(app: &App, token: &str) -> Response {
    match app.auth.exchange(token) {
        Some(cookie) => {
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&auth::set_cookie(&cookie)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Html(
                pages::login(Some(
                    "That token is not valid: it was used already, it expired, or it was mistyped. Run `samocode dashboard` for a new link.",
                ))
                .into_string(),
            ),
        )
            .into_response(),
    }
}

/// The actions a session page posts to (`/sessions/NAME/VERB`).
pub const ACTIONS: [&str; 5] = ["approve", "reject", "answer", "stop", "resume"];

/// The session and word of an address `/sessions/NAME/WORD`.
pub fn session_word(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("/sessions/")?
        .split_once('/')
        .filter(|(name, _)| !name.is_empty())
}

/// The session of an action's address (`/sessions/NAME/VERB`, VERB one of [`ACTIONS`]).
pub fn action_of(path: &str) -> Option<&str> {
    session_word(path)
        .filter(|(_, verb)| ACTIONS.contains(verb))
        .map(|(name, _)| name)
}

/// Any path the dashboard does not serve (after login).
pub async fn not_found() -> Response {
    missing()
}

fn missing() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::problem("Not found", "The dashboard has no such page.").into_string()),
    )
        .into_response()
}

impl App {
    /// The folder and project file of a session the daemon owns, by folder name: from the
    /// watcher's snapshot, else (a session handed over within the last tick) from the daemon.
    pub async fn locate(&self, name: &str) -> Option<(PathBuf, PathBuf)> {
        let found = self
            .feed
            .fleet
            .borrow()
            .find(name)
            .map(|row| (row.dir.clone(), row.project_file.clone()));
        if found.is_some() {
            return found;
        }
        match control::ask(&self.supervisor, Request::Status).await {
            // By its folder name or short name, as the command line and the chat find it; two
            // of that name: neither, rather than one at a guess.
            Answer::Sessions { sessions, .. } => {
                // A folder gone since is found by its name too: its page says it is gone.
                let mut named = sessions
                    .iter()
                    .filter(|o| o.dir.file_name().is_some_and(|n| n == name));
                let dir = match (named.next(), named.next()) {
                    (Some(one), None) => one.dir.clone(),
                    (Some(_), Some(_)) => return None,
                    _ => crate::supervisor::by_name(
                        sessions.iter().map(|o| o.dir.as_path()),
                        name,
                        |_| None,
                    )
                    .ok()?,
                };
                sessions
                    .into_iter()
                    .find(|o| o.dir == dir)
                    .map(|o| (o.dir, o.project))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn typed_answers_win_over_choices_and_empty_ones_stay_open() {
        let given = answers(&fields(&[
            ("csrf", "x"),
            ("q2", "3"),
            ("q1", "files"),
            ("q1_text", "  sqlite, after all "),
            ("q3_text", ""),
        ]))
        .unwrap();
        assert_eq!(
            given,
            Answers::Given(vec![(1, "sqlite, after all".into()), (2, "3".into())])
        );
        assert!(answers(&fields(&[("csrf", "x"), ("q1_text", " ")])).is_err());
    }

    #[test]
    fn questions_numbered_alike_are_answered_in_their_order() {
        let given = answers(&fields(&[
            ("q1", "here"),
            ("q1.2_text", "3"),
            ("q1.2", "2"),
            ("q2", "yes"),
        ]))
        .unwrap();
        assert_eq!(
            given,
            Answers::Given(vec![(1, "here".into()), (1, "3".into()), (2, "yes".into())])
        );
        // The second Q1 alone would fill the first: refused.
        let refused = answers(&fields(&[("q1", ""), ("q1.2_text", "3")])).unwrap_err();
        assert!(refused.contains("in their order"), "{refused}");
    }
}
