//! A Bot API on 127.0.0.1 for the tests: it records every call in order, answers getUpdates
//! from a queue the test fills as Telegram does (an update comes again until a later call's
//! `offset` confirms it; an empty queue holds the call for its `timeout`, and a call its client
//! gave up on is counted), and fails on request (a 500, a 429 with `retry_after`, a slow
//! answer, or down for a while, when it drops every connection).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "123456:never-in-a-log";

/// A failure the API answers the next sending call with.
#[derive(Debug, Clone)]
pub enum Failure {
    ServerError,
    RetryAfter(u64),
    /// Drop every connection for this long, starting at the call it meets.
    Down(Duration),
    /// Answer the call after this long.
    Slow(Duration),
    /// A 400 with this description.
    Refused(String),
    /// A 401: the bot's token is refused (revoked in BotFather, say).
    Unauthorized,
    /// A 409 to getUpdates: another program polls the same bot.
    Conflict,
}

#[derive(Default)]
struct State {
    /// Every answered call: (method, body), in order.
    calls: Vec<(String, Value)>,
    updates: VecDeque<Value>,
    next_update: u64,
    next_message: i64,
    failures: VecDeque<Failure>,
    down_until: Option<Instant>,
    chat: i64,
    /// getUpdates calls whose client closed the connection before the answer.
    abandoned: usize,
    /// Texts whose first sendMessage gets a 500.
    fail_texts: Vec<String>,
    /// getUpdates calls still to be answered 409 (another program polls the bot).
    conflicts: usize,
    /// Texts whose every sendMessage is refused (400) with this description.
    refuse_texts: Vec<(String, String)>,
    /// The chat was upgraded to a supergroup with this id: what is sent to the old one is
    /// refused, naming the new id.
    migrated_to: Option<i64>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// The API of a chat with id `chat` (positive: private, negative: a group).
    pub fn start(chat: i64) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            chat,
            next_message: 100,
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, state));
            }
        });
        FakeApi { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails the next sending calls, in this order.
    /// Answers the next `calls` getUpdates calls with a 409, as when another program polls
    /// the same bot.
    pub fn conflict(&self, calls: usize) {
        self.state.lock().unwrap().conflicts += calls;
    }

    /// getUpdates calls still to be answered 409.
    pub fn conflicts_left(&self) -> usize {
        self.state.lock().unwrap().conflicts
    }

    pub fn fail(&self, failures: &[Failure]) {
        self.state
            .lock()
            .unwrap()
            .failures
            .extend(failures.iter().cloned());
    }

    pub fn is_down(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .down_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Answers the first sendMessage whose text contains `needle` with a 500.
    pub fn fail_text(&self, needle: &str) {
        self.state
            .lock()
            .unwrap()
            .fail_texts
            .push(needle.to_string());
    }

    /// Refuses every sendMessage whose text contains `needle` with a 400 and `description`.
    /// Upgrades the chat to a supergroup `to`, as Telegram does to a group that grows: sends to
    /// the old id are refused with the new one.
    pub fn migrate(&self, to: i64) {
        self.state.lock().unwrap().migrated_to = Some(to);
    }

    pub fn refuse_text(&self, needle: &str, description: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse_texts
            .push((needle.to_string(), description.to_string()));
    }

    /// How many getUpdates calls the bot gave up on before they were answered.
    pub fn abandoned_polls(&self) -> usize {
        self.state.lock().unwrap().abandoned
    }

    /// The answered calls of `method` (`sendmessage`, `editmessagetext`, ...).
    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Sent messages whose text contains `needle`.
    pub fn sent(&self, needle: &str) -> Vec<Value> {
        self.calls("sendmessage")
            .into_iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
            .collect()
    }

    fn push(&self, update: Value) {
        let mut state = self.state.lock().unwrap();
        state.next_update += 1;
        let mut update = update;
        update["update_id"] = json!(state.next_update);
        state.updates.push_back(update);
    }

    fn chat(&self) -> Value {
        let id = self.state.lock().unwrap().chat;
        if id > 0 {
            json!({"id": id, "type": "private", "first_name": "owner"})
        } else {
            json!({"id": id, "type": "group", "title": "team"})
        }
    }

    /// A text message from user `from`.
    pub fn text_from(&self, from: u64, name: &str, text: &str) {
        let chat = self.chat();
        self.push(
            json!({"message": {"message_id": 1, "date": 1_700_000_000, "chat": chat,
            "from": user(from, name), "text": text}}),
        );
    }

    /// A press of the button with `data` on message `message`.
    pub fn press(&self, from: u64, name: &str, message: i64, data: &str) {
        let chat = self.chat();
        self.push(
            json!({"callback_query": {"id": format!("q{message}"), "from": user(from, name),
            "chat_instance": "c", "data": data,
            "message": {"message_id": message, "date": 1_700_000_000, "chat": chat, "text": "x"}}}),
        );
    }
}

fn user(id: u64, name: &str) -> Value {
    json!({"id": id, "is_bot": false, "first_name": name, "username": name})
}

fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    if state
        .lock()
        .unwrap()
        .down_until
        .is_some_and(|until| Instant::now() < until)
    {
        return; // dropped: the service is down
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
    assert!(
        path.starts_with(&format!("/bot{TOKEN}/")),
        "the bot calls its own token's methods: {path}"
    );
    let sending = matches!(method.as_str(), "sendmessage" | "editmessagetext");
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        let text = request["text"].as_str().unwrap_or("");
        let refusal = s
            .refuse_texts
            .iter()
            .find(|(t, _)| text.contains(t.as_str()))
            .map(|(_, description)| description.clone());
        if sending
            && let Some(to) = s.migrated_to
            && request["chat_id"].as_i64() == Some(s.chat)
        {
            let body = json!({"ok": false, "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": to}})
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        let failure = match s.fail_texts.iter().position(|t| text.contains(t.as_str())) {
            _ if method == "sendmessage" && refusal.is_some() => {
                Some(Failure::Refused(refusal.unwrap_or_default()))
            }
            Some(i) if method == "sendmessage" => {
                s.fail_texts.remove(i);
                Some(Failure::ServerError)
            }
            _ if method == "getupdates" && s.conflicts > 0 => {
                s.conflicts -= 1;
                Some(Failure::Conflict)
            }
            _ if sending => s.failures.pop_front(),
            _ => None,
        };
        match failure {
            Some(Failure::Down(span)) => {
                s.down_until = Some(Instant::now() + span);
                return;
            }
            Some(Failure::Slow(pause)) => {
                drop(s);
                std::thread::sleep(pause);
                let mut s = state.lock().unwrap();
                s.calls.push((method.clone(), request.clone()));
                s.next_message += 1;
                let id = s.next_message;
                (
                    200,
                    json!({"ok": true, "result": {"message_id": id, "date": 1_700_000_000,
                           "chat": {"id": s.chat, "type": "private", "first_name": "owner"},
                           "text": request["text"]}}),
                )
            }
            Some(Failure::Refused(description)) => (
                400,
                json!({"ok": false, "error_code": 400, "description": description}),
            ),
            Some(Failure::Conflict) => (
                409,
                json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}),
            ),
            Some(Failure::Unauthorized) => (
                401,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            ),
            Some(Failure::ServerError) => (
                500,
                json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
            ),
            Some(Failure::RetryAfter(seconds)) => (
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry later",
                       "parameters": {"retry_after": seconds}}),
            ),
            None => {
                let chat = if s.chat > 0 {
                    json!({"id": s.chat, "type": "private", "first_name": "owner"})
                } else {
                    json!({"id": s.chat, "type": "group", "title": "team"})
                };
                let result = match method.as_str() {
                    "getupdates" => {
                        drop(s);
                        let Some(all) = updates(&state, &request, &stream) else {
                            state.lock().unwrap().abandoned += 1;
                            return;
                        };
                        state
                            .lock()
                            .unwrap()
                            .calls
                            .push((method.clone(), request.clone()));
                        let body = json!({"ok": true, "result": all}).to_string();
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        return;
                    }
                    "sendmessage" => {
                        s.next_message += 1;
                        json!({"message_id": s.next_message, "date": 1_700_000_000, "chat": chat,
                               "text": request["text"]})
                    }
                    "editmessagetext" => {
                        json!({"message_id": request["message_id"], "date": 1_700_000_000,
                               "chat": chat, "text": request["text"]})
                    }
                    // As Telegram does for a message the bot sent: the edited message.
                    "editmessagereplymarkup" => {
                        json!({"message_id": request["message_id"], "date": 1_700_000_000,
                               "chat": chat, "text": "(the message, its buttons gone)"})
                    }
                    "getme" => json!({"id": 1, "is_bot": true, "first_name": "samocode",
                                      "username": "samocode_bot", "can_join_groups": true,
                                      "can_read_all_group_messages": false,
                                      "supports_inline_queries": false,
                                      "has_main_web_app": false}),
                    _ => json!(true),
                };
                let mut recorded = request.clone();
                if method == "sendmessage" {
                    recorded["message_id"] = json!(s.next_message);
                }
                s.calls.push((method.clone(), recorded));
                (200, json!({"ok": true, "result": result}))
            }
        }
    };
    let body = answer.to_string();
    let reason = match status {
        200 => "OK",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The updates a getUpdates call gets: those its `offset` does not confirm, waiting up to its
/// `timeout` for one; `None` when the client closed the connection first.
fn updates(state: &Mutex<State>, request: &Value, stream: &TcpStream) -> Option<Vec<Value>> {
    let hold = Duration::from_secs(request["timeout"].as_u64().unwrap_or(0).min(30));
    // A negative offset asks for that many of the newest updates, forgetting every earlier
    // one, as Telegram does.
    if let Some(last) = request["offset"].as_i64().filter(|offset| *offset < 0) {
        let mut s = state.lock().unwrap();
        let keep = usize::try_from(last.unsigned_abs()).unwrap_or(usize::MAX);
        let forget = s.updates.len().saturating_sub(keep);
        s.updates.drain(..forget);
        return Some(s.updates.iter().cloned().collect());
    }
    let offset = request["offset"].as_u64().unwrap_or(0);
    let until = Instant::now() + hold;
    stream.set_nonblocking(true).unwrap();
    loop {
        {
            let mut s = state.lock().unwrap();
            s.updates
                .retain(|u| u["update_id"].as_u64().unwrap_or(0) >= offset);
            if !s.updates.is_empty() || Instant::now() >= until {
                stream.set_nonblocking(false).unwrap();
                return Some(s.updates.iter().cloned().collect());
            }
        }
        // A read of nothing (end of stream) is the client giving up on the call.
        if matches!(stream.peek(&mut [0u8; 1]), Ok(0)) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
