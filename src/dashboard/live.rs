//! Server-sent events: the live part of the pages, fed by the one shared watcher.
//!
//! A fleet page's stream forwards the watcher's fleet events as they are (rendered once for
//! every page), and after a gap (a new connection behind the page, or a page that fell
//! behind) sends the whole table once. A session page's stream renders that session's sections
//! again when the watcher reports it changed (at most once per [`SESSION_REFRESH`], reading
//! only what changed in the folder) and sends those whose version differs from the ones the
//! page holds, and appends the newest attempt's log as it grows. The page's script connects
//! again after a drop with an address that says what it holds now (`since`, the log's `file`
//! and `end`, the sections' versions `v`); the last event id (a browser's own reconnection)
//! is read too.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::App;
use super::auth::Visitor;
use super::pages;
use super::session_page;
use super::view::{LogTail, ReadCache, SessionView, newest_log};
use super::watcher::{Change, Fleet, Interest};
use crate::session::store::LOGS;

#[derive(Deserialize)]
pub struct FleetQuery {
    since: Option<u64>,
}

/// The id of the last event the browser saw, which it sends when it reconnects.
fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id")?.to_str().ok()
}

fn fleet_reset(fleet: &Fleet) -> Event {
    let payload = pages::fleet_event(fleet, &fleet.rows, &[]);
    // The payload is compact JSON: no line breaks, which SSE data would split.
    Event::default()
        .event("fleet")
        .id(fleet.generation.to_string())
        .data(format!("{{\"reset\":true,{}", &payload[1..]))
}

/// `GET /events`: the fleet page's stream.
pub async fn fleet_events(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<FleetQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before reading the snapshot, so no change falls between the two.
    let changes = app.feed.changes.subscribe();
    let since = last_event_id(&headers)
        .and_then(|id| id.parse().ok())
        .or(query.since);
    let fleet = app.feed.fleet.clone();
    let mut pending = VecDeque::new();
    let current = fleet.borrow().clone();
    if since != Some(current.generation) {
        pending.push_back(fleet_reset(&current));
    }
    let state = (changes, fleet, pending);
    let stream =
        futures_util::stream::unfold(state, |(mut changes, fleet, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((Ok(event), (changes, fleet, pending)));
                }
                match changes.recv().await {
                    Ok(change) => {
                        if let Change::Fleet {
                            generation,
                            payload,
                            ..
                        } = &*change
                        {
                            pending.push_back(
                                Event::default()
                                    .event("fleet")
                                    .id(generation.to_string())
                                    .data(payload.as_ref()),
                            );
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let current = fleet.borrow().clone();
                        pending.push_back(fleet_reset(&current));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A session page's sections are rendered again at most this often. A session whose agent
/// finishes an iteration every few minutes is shown at once; one that changes every second (a
/// flood of fast iterations) costs one read and render per page per interval, not per change.
pub const SESSION_REFRESH: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
pub struct SessionQuery {
    /// The log file name and the offset the page was rendered up to.
    file: Option<String>,
    end: Option<u64>,
    /// The versions of the sections the page holds, `ID:VERSION` separated by commas: only
    /// sections that differ are sent (a page's first event had been the whole page again).
    v: Option<String>,
}

/// What one session page's stream knows.
struct SessionFeed {
    name: String,
    dir: PathBuf,
    project: PathBuf,
    csrf: String,
    versions: HashMap<String, String>,
    /// What was read of the folder last time; moved into the blocking read and back.
    cache: Arc<Mutex<ReadCache>>,
    /// Keeps the watcher following this session's log while the page is open.
    _interest: Interest,
    /// A change was seen that the page does not show yet.
    dirty: bool,
    rendered_at: Instant,
    /// The log being followed (its file name) and how far it was sent.
    log: Option<(String, u64)>,
    pending: VecDeque<Event>,
}

/// `GET /sessions/NAME/events`: one session page's stream.
pub async fn session_events(
    State(app): State<App>,
    Extension(visitor): Extension<Visitor>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<SessionQuery>,
) -> Response {
    let Some((dir, project)) = app.locate(&name).await else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let changes = app.feed.changes.subscribe();
    // After a reconnect the last log event's id says where the page is: `FILE:END`.
    let log = match last_event_id(&headers).and_then(|id| id.rsplit_once(':')) {
        Some((file, end)) => end.parse().ok().map(|end| (file.to_string(), end)),
        None => query.file.zip(query.end),
    };
    let mut feed = SessionFeed {
        _interest: app.feed.interest(&name),
        name,
        dir,
        project,
        csrf: visitor.csrf,
        versions: query
            .v
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter_map(|pair| pair.split_once(':'))
            .map(|(id, version)| (id.to_string(), version.to_string()))
            .collect(),
        cache: Arc::default(),
        dirty: false,
        rendered_at: Instant::now(),
        log,
        pending: VecDeque::new(),
    };
    feed.refresh().await;
    // Lines written between the page's render and this connection.
    feed.follow_log(None).await;
    let stream =
        futures_util::stream::unfold((feed, changes), |(mut feed, mut changes)| async move {
            let event = feed.next_event(&mut changes).await?;
            Some((Ok::<_, Infallible>(event), (feed, changes)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl SessionFeed {
    /// The next event for the page; `None` when the watcher is gone.
    async fn next_event(&mut self, changes: &mut Receiver<Arc<Change>>) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let due = self.rendered_at + SESSION_REFRESH;
            if self.dirty && Instant::now() >= due {
                self.refresh().await;
                continue;
            }
            tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => match &*change {
                        Change::Fleet { sessions, .. } if sessions.contains(&self.name) => {
                            self.dirty = true;
                        }
                        Change::Log { session, path, .. } if *session == self.name => {
                            let path = path.clone();
                            self.follow_log(Some(path)).await;
                        }
                        _ => {}
                    },
                    Err(RecvError::Lagged(_)) => self.dirty = true,
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(due), if self.dirty => {}
            }
        }
    }

    /// Renders the sections again and queues those that changed, then catches up the log.
    async fn refresh(&mut self) {
        self.dirty = false;
        self.rendered_at = Instant::now();
        let (dir, project) = (self.dir.clone(), self.project.clone());
        let csrf = self.csrf.clone();
        let cache = self.cache.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            // Only this stream reads with this cache, one read at a time: never contended.
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            SessionView::read_again(&dir, &project, &mut cache)
                .ok()
                .map(|view| session_page::sections(&view, &csrf, Timestamp::now()))
        })
        .await
        .ok()
        .flatten();
        if let Some(sections) = rendered {
            let mut changed = Vec::new();
            for s in sections {
                if self.versions.get(s.id) != Some(&s.version) {
                    changed.push(serde_json::json!({"id": s.id, "v": s.version, "html": s.html}));
                    self.versions.insert(s.id.to_string(), s.version);
                }
            }
            if !changed.is_empty() {
                let data = serde_json::json!({ "sections": changed }).to_string();
                self.pending
                    .push_back(Event::default().event("sections").data(data));
            }
        }
    }

    /// Sends what the newest log (or `announced`) has beyond what the page holds.
    async fn follow_log(&mut self, announced: Option<PathBuf>) {
        let dir = self.dir.clone();
        let known = self.log.clone();
        let read = tokio::task::spawn_blocking(move || {
            let path = announced.or_else(|| newest_log(&dir.join(LOGS)))?;
            let file = file_name(&path);
            let tail = match &known {
                Some((same, end)) if *same == file => LogTail::read(&path, Some(*end)),
                // A log the page has not seen: from its beginning when it is new, else its end.
                Some(_) => LogTail::read(&path, Some(0)),
                None => LogTail::read(&path, None),
            };
            let reset = known.as_ref().is_none_or(|(same, _)| *same != file);
            Some((file, tail, reset))
        })
        .await
        .ok()
        .flatten();
        let Some((file, tail, reset)) = read else {
            return;
        };
        let moved = self
            .log
            .as_ref()
            .is_none_or(|(f, end)| *f != file || *end != tail.end);
        if !moved && tail.entries.is_empty() {
            return;
        }
        let id = format!("{file}:{}", tail.end);
        let data = serde_json::json!({
            "file": file,
            "reset": reset,
            "end": tail.end,
            "entries": tail.entries,
        })
        .to_string();
        self.log = Some((file, tail.end));
        self.pending
            .push_back(Event::default().event("log").id(id).data(data));
    }
}

fn file_name(path: &FsPath) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
