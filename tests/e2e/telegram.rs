//! The Telegram bot against a loopback fake of the Bot API: notifications with buttons, commands
//! and button presses from allowed users only, and a token that never reaches the log.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::fixture::{Project, wait_for};

const TOKEN: &str = "123456:never-in-a-log";
const CHAT: i64 = 42;
const ALLOWED: u64 = 7;

#[derive(Default)]
struct FakeApi {
    sent: Vec<Value>,
    updates: VecDeque<Value>,
    next_update: u64,
}

type Shared = Arc<Mutex<FakeApi>>;

fn chat() -> Value {
    json!({"id": CHAT, "type": "private", "first_name": "team"})
}

fn user(id: u64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": "person"})
}

/// A Bot API on 127.0.0.1 that answers getUpdates from a queue and records sendMessage.
fn fake_api() -> (u16, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let api: Shared = Arc::default();
    let shared = api.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let api = shared.clone();
            std::thread::spawn(move || serve(stream, api));
        }
    });
    (port, api)
}

fn serve(mut stream: std::net::TcpStream, api: Shared) {
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
    let result = match method.as_str() {
        "getupdates" => {
            let mut updates: Vec<Value> = api.lock().unwrap().updates.drain(..).collect();
            if updates.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                updates = api.lock().unwrap().updates.drain(..).collect();
            }
            json!(updates)
        }
        "sendmessage" => {
            let mut api = api.lock().unwrap();
            api.sent.push(request.clone());
            json!({"message_id": api.sent.len(), "date": 1_700_000_000, "chat": chat(), "text": request["text"]})
        }
        _ => json!(true),
    };
    let body = json!({"ok": true, "result": result}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn push(api: &Shared, update: Value) {
    let mut api = api.lock().unwrap();
    api.next_update += 1;
    let mut update = update;
    update["update_id"] = json!(api.next_update);
    api.updates.push_back(update);
}

fn text_from(api: &Shared, from: u64, text: &str) {
    push(
        api,
        json!({"message": {"message_id": 1, "date": 1_700_000_000, "chat": chat(), "from": user(from), "text": text}}),
    );
}

fn press(api: &Shared, from: u64, data: &str) {
    push(
        api,
        json!({"callback_query": {"id": "q1", "from": user(from), "chat_instance": "c", "data": data,
        "message": {"message_id": 1, "date": 1_700_000_000, "chat": chat(), "text": "x"}}}),
    );
}

fn sent_containing(api: &Shared, needle: &str) -> Option<Value> {
    api.lock()
        .unwrap()
        .sent
        .iter()
        .find(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
        .cloned()
}

#[test]
fn people_drive_a_session_from_telegram() {
    let (port, api) = fake_api();
    let mut project = Project::new();
    project
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_CHAT_ID", &CHAT.to_string())
        .env("TELEGRAM_API_URL", &format!("http://127.0.0.1:{port}"))
        .env("TELEGRAM_ALLOWED_USERS", &ALLOWED.to_string());
    let _daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "tg", "--dive", "d", "--task", "t"])
        .expect(0);
    let s = project.session("tg");
    let folder = s.0.file_name().unwrap().to_string_lossy().into_owned();

    wait_for(Duration::from_secs(30), "the questions message", || {
        sent_containing(&api, "has questions").is_some()
    });
    let asked = sent_containing(&api, "has questions").unwrap();
    assert_eq!(asked["chat_id"], CHAT);
    assert_eq!(asked["parse_mode"], "HTML");
    assert_eq!(
        asked["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        format!("answer:{folder}")
    );

    // Someone not in TELEGRAM_ALLOWED_USERS is refused and nothing happens.
    press(&api, 99, &format!("answer:{folder}"));
    wait_for(Duration::from_secs(10), "the refusal", || {
        sent_containing(&api, "not allowed").is_some()
    });
    assert_eq!(s.state()["status"]["for"], "qa_answers");

    press(&api, ALLOWED, &format!("answer:{folder}"));
    wait_for(Duration::from_secs(30), "the plan message", || {
        sent_containing(&api, "waits for approval").is_some()
    });
    assert!(s.read("_qa.md").contains("Answer: samocode-demo"));

    text_from(&api, ALLOWED, "/status");
    wait_for(Duration::from_secs(10), "the status reply", || {
        sent_containing(&api, "planning waiting").is_some()
    });
    text_from(&api, ALLOWED, "/approve tg");
    wait_for(Duration::from_secs(30), "done", || {
        sent_containing(&api, "is done").is_some()
    });
    assert_eq!(s.state()["status"]["state"], "done");
    let history = s.jsonl("_signal_history.jsonl");
    assert!(
        history
            .iter()
            .any(|r| r["status"] == "approve" && r["source"] == "person")
    );

    let log = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    assert!(!log.contains("never-in-a-log"), "the token reached the log");
}
