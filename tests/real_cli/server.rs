//! The scripted model server: a small HTTP/1.1 server on 127.0.0.1 that speaks just enough of
//! the Anthropic Messages API and the OpenAI Responses API (both streaming) for the real CLIs.
//!
//! Each model request that carries a samocode context is answered with one shell tool call
//! that runs samocode's scripted agent on that context (the phase's real work, then
//! `_signal.json`); the request after it, whose input ends with the tool's result, gets a
//! closing text message. Requests without a context (the CLIs' own side requests) get a short
//! text answer. Faults queued with [`ModelServer::fault`] replace the answers of the next
//! context-carrying requests. Every request is recorded.
//!
//! One thread per connection and `Connection: close` on every answer keep it simple; the CLIs
//! make a handful of requests per attempt.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{anthropic, openai};

/// A way the next context-carrying request is answered instead of the script.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 529 with an `overloaded_error` body (Anthropic) or 529 Service Unavailable (OpenAI).
    Overloaded,
    /// 429 saying the usage limit is reached until this unix time.
    UsageLimit { reset_at: i64 },
    /// 401 with an authentication error.
    BadKey,
    /// Accept the request and never answer.
    Hang,
    /// 200 with a body that is not an event stream.
    Garbage,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    /// The fault it was answered with, if any.
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    calls: u64,
}

pub struct ModelServer {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    _scratch: tempfile::TempDir,
}

/// What the tool calls need to know: the samocode binary and where to put context files.
struct Script {
    bin: PathBuf,
    scratch: PathBuf,
}

impl ModelServer {
    /// Starts the server on a free port; `bin` is the samocode binary whose scripted agent
    /// the tool calls run.
    pub fn start(bin: &Path) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let scratch = tempfile::tempdir().expect("temp dir");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Script {
            bin: bin.to_path_buf(),
            scratch: scratch.path().to_path_buf(),
        });
        let (s, st) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (s, st, script) = (s.clone(), st.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &s, &st, &script);
                });
            }
        });
        ModelServer {
            port,
            shared,
            stop,
            _scratch: scratch,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues a fault for the next context-carrying request (faults are used in order).
    pub fn fault(&self, fault: Fault) {
        self.shared.lock().unwrap().faults.push(fault);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        // Wakes the accept loop (and any hanging answer) so that the threads end.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A parsed request head and body.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-encoding" => panic!("the model server cannot read a {value} request body"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Request { method, path, body }))
}

fn serve(
    mut stream: TcpStream,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    script: &Script,
) -> std::io::Result<()> {
    let Some(request) = read_request(&stream)? else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let context = find_context(&body);
    let api = if request.path.starts_with("/v1/messages") {
        Some(Api::Anthropic)
    } else if request.path.starts_with("/v1/responses") {
        Some(Api::OpenAi)
    } else {
        None
    };
    let (fault, call) = {
        let mut shared = shared.lock().unwrap();
        let fault = (api.is_some() && context.is_some() && !shared.faults.is_empty())
            .then(|| shared.faults.remove(0));
        shared.calls += 1;
        shared.requests.push(Recorded {
            path: request.path.clone(),
            body: body.clone(),
            fault: fault.clone(),
        });
        (fault, shared.calls)
    };
    let Some(api) = api else {
        // `HEAD /` (claude's reachability check) and anything else the CLIs ask on the side.
        let status = if request.method == "HEAD" && request.path == "/" {
            "200 OK"
        } else {
            "404 Not Found"
        };
        return respond(&mut stream, status, "application/json", b"{}", &[]);
    };
    match fault {
        Some(Fault::Hang) => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        Some(Fault::Garbage) => respond(
            &mut stream,
            "200 OK",
            "text/event-stream",
            b"this is not an event stream\n\n\x00\x01garbage\n\n",
            &[],
        ),
        Some(fault) => {
            let (status, body, headers) = match api {
                Api::Anthropic => anthropic::error(&fault),
                Api::OpenAi => openai::error(&fault),
            };
            let headers: Vec<(&str, String)> =
                headers.iter().map(|(k, v)| (*k, v.clone())).collect();
            respond(
                &mut stream,
                status,
                "application/json",
                body.to_string().as_bytes(),
                &headers,
            )
        }
        None => {
            let answer = match (&context, last_input_is_tool_result(api, &body)) {
                (Some(context), false) => Answer::Tool(script.command(context, call)),
                (Some(_), true) => Answer::Text("The samocode iteration is done.".into()),
                (None, _) => Answer::Text("OK".into()),
            };
            let events = match api {
                Api::Anthropic => anthropic::stream(&body, &answer, call),
                Api::OpenAi => openai::stream(&body, &answer, call),
            };
            respond(
                &mut stream,
                "200 OK",
                "text/event-stream",
                events.as_bytes(),
                &[],
            )
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Api {
    Anthropic,
    OpenAi,
}

/// What the model says in one turn.
pub enum Answer {
    /// One shell tool call with this command.
    Tool(String),
    /// A closing text message.
    Text(String),
}

impl Script {
    /// The shell command that does the phase's work: the scripted agent on this context,
    /// passed by a file so that the command line stays short.
    fn command(&self, context: &str, call: u64) -> String {
        let file = self.scratch.join(format!("context-{call}.md"));
        std::fs::write(&file, context).expect("write the context file");
        format!(
            "'{}' fake-agent --append-system-prompt \"$(cat '{}')\"",
            self.bin.display(),
            file.display()
        )
    }
}

/// The samocode context in a request: in the first string that holds a `Session:` line
/// followed by a `Session path:` line, the text from that line on (claude puts it after its
/// own system prompt, codex after nothing).
fn find_context(body: &Value) -> Option<String> {
    match body {
        Value::String(text) => text.match_indices("Session: ").find_map(|(start, _)| {
            let context = &text[start..];
            let mut lines = context.lines();
            lines.next();
            let at_line_start = start == 0 || text[..start].ends_with('\n');
            (at_line_start && lines.next()?.starts_with("Session path: "))
                .then(|| context.to_string())
        }),
        Value::Array(items) => items.iter().find_map(find_context),
        Value::Object(map) => map.values().find_map(find_context),
        _ => None,
    }
}

/// True when the conversation's last input is the result of our tool call.
fn last_input_is_tool_result(api: Api, body: &Value) -> bool {
    match api {
        Api::Anthropic => body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_array())
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result")),
        Api::OpenAi => body["input"]
            .as_array()
            .and_then(|items| items.last())
            .is_some_and(|item| item["type"] == "function_call_output"),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}
