//! Every attempt is traced: spans reach an OTLP/HTTP receiver, and secrets do not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::fixture::Project;

/// Requests received: (path, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback OTLP/HTTP receiver that keeps every request (path and body).
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
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
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            keep.lock().unwrap().push((path, body));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn each_attempt_is_a_span_exported_over_otlp_without_secrets() {
    let (port, seen) = receiver();
    let mut project = Project::new();
    project
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_SERVICE_NAME", "samocode-trace-test")
        .env("ANTHROPIC_API_KEY", "sk-secret-never-traced")
        .env("TELEGRAM_BOT_TOKEN", "123:bot-secret-never-traced")
        // A token needs its chat; a closed port makes the notifier's posts fail at once.
        .env("TELEGRAM_CHAT_ID", "42")
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9");
    project
        .run(&["run", "--session", "traced", "--dive", "d", "--task", "t"])
        .expect(10);
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the exporter sent nothing");
    assert!(
        requests.iter().all(|(path, _)| path == "/v1/traces"),
        "{:?}",
        requests.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let body: Vec<u8> = requests.into_iter().flat_map(|(_, b)| b).collect();
    for expected in [
        "samocode-trace-test",
        "attempt",
        "investigation",
        "requirements",
        "26-",
        "outcome",
        "ok",
    ] {
        assert!(
            contains(&body, expected.as_bytes()),
            "{expected:?} not in the exported spans"
        );
    }
    for secret in ["sk-secret-never-traced", "bot-secret-never-traced"] {
        assert!(
            !contains(&body, secret.as_bytes()),
            "a secret reached the traces"
        );
    }
}
