//! Sessions are traced: spans reach an OTLP/HTTP receiver, decoded here as a collector would,
//! shaped session > iteration > attempt with gates, and secrets do not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::fixture::Project;
use std::time::Duration;

/// Requests received: (path, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback OTLP/HTTP receiver that keeps every request (path and body).
fn receiver() -> (u16, Received) {
    let (port, seen, _) = receiver_keeping("authorization");
    (port, seen)
}

/// [`receiver`], also keeping the values of every request's header `kept`.
fn receiver_keeping(kept: &'static str) -> (u16, Received, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let values = Arc::new(Mutex::new(Vec::new()));
    let keep_values = values.clone();
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
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if name.eq_ignore_ascii_case(kept) {
                        keep_values.lock().unwrap().push(value.trim().to_string());
                    }
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
    (port, seen, values)
}

/// A project whose commands export spans and metrics to the receiver on `port`.
fn exporting_to(port: u16) -> Project {
    let mut project = Project::new();
    project.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    );
    project
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits until the receiver has the span of a session's first (investigation) iteration.
fn first_iteration_exported(seen: &Received) {
    super::fixture::wait_for(
        Duration::from_secs(30),
        "the first iteration's span",
        || {
            decode(&seen.lock().unwrap())
                .0
                .iter()
                .any(|s| s.name == "iteration" && s.attributes["samocode.phase"] == "investigation")
        },
    );
}

/// A decoded span: name, trace, id, parent, attributes (as text), how many links.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: std::collections::HashMap<String, String>,
    links: usize,
    /// The status: 0 unset, 1 ok, 2 error; and its message.
    status: (i32, String),
}

impl Span {
    /// Asserts that the span carries each of these attributes.
    fn has(&self, keys: &[&str]) {
        for key in keys {
            assert!(
                self.attributes.contains_key(*key),
                "{key} missing: {self:?}"
            );
        }
    }
}

/// Every span of every request, decoded as the OTLP collector would; and the service names.
fn decode(requests: &[(String, Vec<u8>)]) -> (Vec<Span>, Vec<String>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for (_, body) in requests.iter().filter(|(path, _)| path == "/v1/traces") {
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("the exporter sends OTLP protobuf");
        for resource in request.resource_spans {
            for kv in resource.resource.iter().flat_map(|r| &r.attributes) {
                if kv.key == "service.name" {
                    services.push(text(&kv.value));
                }
            }
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        name: span.name,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                        links: span.links.len(),
                        status: span.status.map(|s| (s.code, s.message)).unwrap_or_default(),
                    });
                }
            }
        }
    }
    (spans, services)
}

/// A session through its questions and to the plan gate, in two runs: each run is a trace
/// of its own, `session` > `iteration` > `attempt`, and each park opens a `gate`.
#[test]
fn a_session_is_traced_as_session_iteration_and_attempt_spans_over_otlp_without_secrets() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project
        .env("OTEL_SERVICE_NAME", "samocode-trace-test")
        .env("ANTHROPIC_API_KEY", "sk-secret-never-traced")
        .env("TELEGRAM_BOT_TOKEN", "123:bot-secret-never-traced")
        // A token needs its chat; a closed port makes the notifier's posts fail at once.
        .env("TELEGRAM_CHAT_ID", "42")
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9");
    project.to_the_plan_gate("traced");

    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the exporter sent nothing");
    assert!(
        requests
            .iter()
            .all(|(path, _)| path == "/v1/traces" || path == "/v1/metrics"),
        "{:?}",
        requests.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let (spans, services) = decode(&requests);
    assert!(
        services.iter().all(|s| s == "samocode-trace-test"),
        "{services:?}"
    );
    let named = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let by_id = |id: &[u8]| spans.iter().find(|s| s.id == id);

    let sessions = named("session");
    assert_eq!(sessions.len(), 2, "one session span per run: {spans:#?}");
    assert_ne!(
        sessions[0].trace, sessions[1].trace,
        "each run is a trace of its own"
    );
    for session in &sessions {
        assert!(session.parent.is_empty(), "the session span is the root");
        assert!(session.attributes["samocode.session"].ends_with("-traced"));
        assert_eq!(session.attributes["gen_ai.provider.name"], "claude");
        session.has(&["samocode.phase.exit", "samocode.cost_usd"]);
    }
    // Every span tells the session's story: none is a stray trace of its own.
    let strays: Vec<&str> = spans
        .iter()
        .filter(|s| !sessions.iter().any(|session| session.trace == s.trace))
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        strays.is_empty(),
        "spans outside the session's traces: {strays:?}"
    );
    assert_eq!(
        sessions[0].attributes["samocode.phase.entry"],
        "investigation"
    );
    assert_eq!(sessions[1].attributes["samocode.phase.exit"], "planning");

    let iterations = named("iteration");
    assert!(iterations.len() >= 3, "{iterations:#?}");
    for iteration in &iterations {
        let parent = by_id(&iteration.parent).expect("the iteration's parent was exported");
        assert_eq!(parent.name, "session");
        assert_eq!(parent.trace, iteration.trace);
        iteration.has(&[
            "samocode.signal.status",
            "gen_ai.request.model",
            "samocode.profile",
        ]);
    }
    assert!(
        iterations
            .iter()
            .any(|i| i.attributes["samocode.phase"] == "investigation"
                && i.attributes.get("samocode.next_phase").map(String::as_str)
                    == Some("requirements")),
        "{iterations:#?}"
    );

    let attempts = named("attempt");
    assert_eq!(
        attempts.len(),
        iterations.len(),
        "one attempt per iteration here"
    );
    for attempt in &attempts {
        let parent = by_id(&attempt.parent).expect("the attempt's parent was exported");
        assert_eq!(parent.name, "iteration");
        assert_eq!(parent.trace, attempt.trace);
        assert_eq!(attempt.attributes["samocode.outcome"], "ok");
        assert_eq!(attempt.attributes["gen_ai.provider.name"], "claude");
        assert_eq!(attempt.attributes["samocode.exit_code"], "0");
        attempt.has(&[
            "gen_ai.request.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "samocode.cost_usd",
        ]);
    }

    let gates = named("gate");
    let waits: Vec<&str> = gates
        .iter()
        .map(|g| g.attributes["samocode.wait_for"].as_str())
        .collect();
    assert_eq!(waits, ["qa_answers", "plan_approval"], "{gates:#?}");
    for gate in &gates {
        // Each run ended at its gate: the decision comes after it, in another process.
        assert_eq!(gate.attributes["samocode.decision"], "pending", "{gate:?}");
        assert_eq!(
            by_id(&gate.parent).map(|p| p.name.as_str()),
            Some("session")
        );
        assert_eq!(gate.links, 1, "linked to the iteration that asked");
    }

    let body: Vec<u8> = requests.into_iter().flat_map(|(_, b)| b).collect();
    for secret in ["sk-secret-never-traced", "bot-secret-never-traced"] {
        assert!(
            !contains(&body, secret.as_bytes()),
            "a secret reached the traces"
        );
    }
}

/// A failed attempt, and a session that failed, are errors in a trace viewer, with why.
#[test]
fn failures_are_error_spans_with_the_reason() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project.env("SAMOCODE_FAKE", "investigation=exit:3");
    project
        .run(&["run", "--session", "broken", "--dive", "d", "--task", "t"])
        .expect(1);
    let (spans, _) = decode(&seen.lock().unwrap());
    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "attempt").collect();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    for attempt in attempts {
        assert_eq!(attempt.status.0, 2, "{attempt:?}");
        assert!(
            attempt.status.1.contains("exited with code 3"),
            "{attempt:?}"
        );
    }
    let session = spans.iter().find(|s| s.name == "session").unwrap();
    assert_eq!(session.status.0, 2, "{session:?}");
    assert!(session.status.1.starts_with("failed: "), "{session:?}");
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`: the same spans, as OTLP JSON.
#[test]
fn spans_go_as_json_when_the_protocol_says_http_json() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project.env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    project
        .run(&["run", "--session", "json", "--dive", "d", "--task", "t"])
        .expect(10);
    let mut spans = Vec::new();
    for (path, body) in seen.lock().unwrap().iter() {
        if path == "/v1/metrics" {
            continue;
        }
        assert_eq!(path, "/v1/traces");
        let request: serde_json::Value =
            serde_json::from_slice(body).expect("the exporter sends JSON");
        for resource in request["resourceSpans"].as_array().unwrap() {
            for scope in resource["scopeSpans"].as_array().unwrap() {
                spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    let id_of = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))["spanId"]
            .clone()
    };
    let session = id_of("session");
    let iteration = spans.iter().find(|s| s["name"] == "iteration").unwrap();
    assert_eq!(iteration["parentSpanId"], session);
    let attempt = spans.iter().find(|s| s["name"] == "attempt").unwrap();
    assert_eq!(attempt["parentSpanId"], iteration["spanId"]);
}

/// Per gRPC call: its path, its `x-team` metadata, whether its message came gzipped.
type Calls = Arc<Mutex<Vec<(String, String, bool)>>>;

/// A loopback OTLP/gRPC receiver (plaintext HTTP/2, as a collector on port 4317 would be):
/// keeps each call's path and its one message (the 5-byte gRPC frame header removed, gzip
/// undone) and, per call, its `x-team` metadata and whether it came compressed; answers with
/// an empty response and `grpc-status: 0`.
fn grpc_receiver() -> (u16, Received, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let teams = Arc::new(Mutex::new(Vec::new()));
    let keep_teams = teams.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let (keep, keep_teams) = (keep.clone(), keep_teams.clone());
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        let (keep, keep_teams) = (keep.clone(), keep_teams.clone());
                        let team = request
                            .headers()
                            .get("x-team")
                            .map(|t| t.to_str().unwrap_or_default().to_string())
                            .unwrap_or_default();
                        tokio::spawn(async move {
                            let path = request.uri().path().to_string();
                            let mut body = request.into_body();
                            let mut frame = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                frame.extend_from_slice(&chunk);
                            }
                            let compressed = frame[0] == 1;
                            let length =
                                u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
                            let mut message = frame[5..5 + length].to_vec();
                            if compressed {
                                let mut plain = Vec::new();
                                flate2::read::GzDecoder::new(message.as_slice())
                                    .read_to_end(&mut plain)
                                    .expect("gzip, as grpc-encoding says");
                                message = plain;
                            }
                            keep_teams
                                .lock()
                                .unwrap()
                                .push((path.clone(), team, compressed));
                            keep.lock().unwrap().push((path, message));
                            let response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let Ok(mut send) = respond.send_response(response, false) else {
                                return;
                            };
                            let _ = send.send_data(bytes::Bytes::from_static(&[0; 5]), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let _ = send.send_trailers(trailers);
                        });
                    }
                });
            }
        });
    });
    (port, seen, teams)
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`: the same trace and the metrics reach a gRPC collector
/// at the general endpoint as it is, with the headers as metadata, and the spans gzipped when
/// `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` says so.
#[test]
fn spans_and_metrics_go_over_grpc_when_the_protocol_says_grpc() {
    let (port, seen, calls) = grpc_receiver();
    let mut project = exporting_to(port);
    project
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-team=core")
        .env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip");
    project
        .run(&["run", "--session", "grpc", "--dive", "d", "--task", "t"])
        .expect(10);
    let received = seen.lock().unwrap().clone();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), received.len());
    const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    assert!(
        received
            .iter()
            .all(|(path, _)| path == TRACES || path == METRICS),
        "{:?}",
        received.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (path, team, compressed) in &calls {
        assert_eq!(team, "core", "every call carries the headers as metadata");
        assert_eq!(
            *compressed,
            path == TRACES,
            "only spans are gzipped: {calls:?}"
        );
    }
    // The same messages as over HTTP, under the HTTP paths for the decoders.
    let requests: Vec<(String, Vec<u8>)> = received
        .into_iter()
        .map(|(path, body)| {
            let http = if path == TRACES {
                "/v1/traces"
            } else {
                "/v1/metrics"
            };
            (http.to_string(), body)
        })
        .collect();
    let (spans, _) = decode(&requests);
    let one = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let (session, iteration, attempt) = (one("session"), one("iteration"), one("attempt"));
    assert!(session.parent.is_empty());
    assert_eq!(iteration.parent, session.id);
    assert_eq!(attempt.parent, iteration.id);
    assert_eq!(attempt.attributes["gen_ai.provider.name"], "claude");
    let values = metric_values(&requests);
    let attempts: f64 = values
        .iter()
        .filter(|((name, _), _)| name == "samocode.attempts")
        .map(|(_, v)| v)
        .sum();
    let rows = project.session("grpc").jsonl("_iterations.jsonl");
    assert_eq!(attempts, rows.len() as f64, "{values:#?}");
}

/// Under the daemon, the person's decisions close the gate spans (with the verb and the
/// channel), and every control request is a short span of its own.
#[test]
fn the_daemons_gates_carry_the_decision_and_control_requests_are_spans() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "gated", "--dive", "d", "--task", "t"])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    // SIGTERM: the daemon flushes its spans before it exits.
    daemon.terminate();
    let (spans, _) = decode(&seen.lock().unwrap());
    let gates: Vec<(String, String, String)> = spans
        .iter()
        .filter(|s| s.name == "gate")
        .map(|g| {
            (
                g.attributes["samocode.wait_for"].clone(),
                g.attributes
                    .get("samocode.decision")
                    .cloned()
                    .unwrap_or_default(),
                g.attributes
                    .get("samocode.channel")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        gates.contains(&("plan_approval".into(), "approved".into(), "cli".into())),
        "{gates:?}"
    );
    assert!(
        gates
            .iter()
            .any(|(wait, decision, _)| wait == "qa_answers" && decision == "answered"),
        "{gates:?}"
    );
    // The daemon's log lines written inside a session's span carry its trace id.
    let log = std::fs::read_to_string(project.root.join("daemon.log")).unwrap();
    let journaled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("attempt journaled"))
        .collect();
    assert!(!journaled.is_empty(), "{log}");
    for session in spans.iter().filter(|s| s.name == "session") {
        let hex: String = session.trace.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            journaled
                .iter()
                .any(|l| l.contains(&format!("trace_id={hex}"))),
            "{hex} in no line of {journaled:#?}"
        );
    }
    let requests: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "control")
        .map(|s| s.attributes["samocode.request"].as_str())
        .collect();
    for expected in ["start", "status", "person approve"] {
        assert!(
            requests.contains(&expected),
            "{expected} not in {requests:?}"
        );
    }
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "session")
            .any(|s| s.attributes["samocode.phase.exit"] == "done"),
        "a run segment ends at done"
    );
}

/// The last value of every metric data point (they are cumulative): by metric name and its
/// attributes (`key=value` joined, sorted).
fn metric_values(
    requests: &[(String, Vec<u8>)],
) -> std::collections::HashMap<(String, String), f64> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    use prost::Message;
    let key = |attributes: &[KeyValue]| {
        let mut pairs: Vec<String> = attributes
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => s.clone(),
                    other => format!("{other:?}"),
                };
                format!("{}={value}", kv.key)
            })
            .collect();
        pairs.sort();
        pairs.join(",")
    };
    let mut values = std::collections::HashMap::new();
    for (path, body) in requests {
        if path != "/v1/metrics" {
            continue;
        }
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        for metric in request
            .resource_metrics
            .into_iter()
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics)
        {
            let number = |v: Option<Value>| match v {
                Some(Value::AsInt(i)) => i as f64,
                Some(Value::AsDouble(d)) => d,
                None => f64::NAN,
            };
            match metric.data {
                Some(Data::Sum(sum)) => {
                    for point in sum.data_points {
                        values.insert(
                            (metric.name.clone(), key(&point.attributes)),
                            number(point.value),
                        );
                    }
                }
                Some(Data::Gauge(gauge)) => {
                    for point in gauge.data_points {
                        values.insert(
                            (metric.name.clone(), key(&point.attributes)),
                            number(point.value),
                        );
                    }
                }
                Some(Data::Histogram(histogram)) => {
                    for point in histogram.data_points {
                        values.insert(
                            (metric.name.clone(), key(&point.attributes)),
                            point.count as f64,
                        );
                    }
                }
                _ => {}
            }
        }
    }
    values
}

/// With an endpoint, the daemon sends metrics whose figures are the session's own journal.
#[test]
fn metrics_count_what_the_journal_holds() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project.env("OTEL_METRIC_EXPORT_INTERVAL", "300");
    let daemon = project.daemon(&[]);
    project
        .run(&[
            "start",
            "--session",
            "counted",
            "--dive",
            "d",
            "--task",
            "t",
        ])
        .expect(0);
    project.drive_to_done(1, Duration::from_secs(60));
    daemon.terminate();
    let rows = project.session("counted").jsonl("_iterations.jsonl");
    let values = metric_values(&seen.lock().unwrap());
    let total = |name: &str, filter: &dyn Fn(&str) -> bool| -> f64 {
        values
            .iter()
            .filter(|((n, attributes), _)| n == name && filter(attributes))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(!values.is_empty(), "no metrics arrived");
    assert_eq!(
        total("samocode.attempts", &|a| a.contains("samocode.outcome=ok")),
        rows.len() as f64,
        "{values:#?}"
    );
    let iterations: std::collections::HashSet<u64> = rows
        .iter()
        .map(|r| r["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(
        total("samocode.iterations", &|_| true),
        iterations.len() as f64
    );
    let input: u64 = rows
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total("gen_ai.client.token.usage", &|a| a
            .contains("gen_ai.token.type=input")),
        input as f64
    );
    let cost: f64 = rows.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    assert!((total("samocode.cost", &|_| true) - cost).abs() < 1e-9);
    assert_eq!(
        total("samocode.attempt.duration", &|_| true),
        rows.len() as f64
    );
    assert_eq!(
        values[&(
            "samocode.sessions".to_string(),
            "samocode.state=done".to_string()
        )],
        1.0
    );
    assert_eq!(
        values[&("samocode.agents.running".to_string(), String::new())],
        0.0
    );
}

/// An iteration's span is exported when it ends, while its session still runs.
#[test]
fn an_iteration_is_exported_while_its_session_still_runs() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    // The second iteration takes a minute: the session is still running meanwhile.
    project.env("SAMOCODE_FAKE", "requirements=slow:60");
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "live", "--dive", "d", "--task", "t"])
        .expect(0);
    first_iteration_exported(&seen);
    let rows = project.status();
    assert_eq!(rows[0]["state"], "running", "{rows:?}");
    assert_eq!(rows[0]["phase"], "requirements", "{rows:?}");
    daemon.terminate();
    // The segment a clean stop ended carries the session's figures, as a park's does (it
    // had only its entry phase: found by the story hunt).
    let (spans, _) = decode(&seen.lock().unwrap());
    let session = spans
        .iter()
        .find(|s| s.name == "session")
        .expect("the session span, ended by the stop");
    session.has(&[
        "samocode.phase.exit",
        "samocode.cost_usd",
        "gen_ai.usage.input_tokens",
    ]);
    assert_eq!(session.attributes["samocode.phase.exit"], "requirements");
}

/// A daemon killed mid-session never ends its `session` span; the next daemon stands in for
/// it, under its ids, so that the spans the killed one exported are not orphans, and the
/// span says why it ended.
#[test]
fn a_session_span_a_crash_left_open_is_closed_by_the_next_daemon() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    // The killed daemon's agent lives on, and the next daemon adopts it until it ends.
    project.env("SAMOCODE_FAKE", "requirements@1=slow:8");
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "cut", "--dive", "d", "--task", "t"])
        .expect(0);
    first_iteration_exported(&seen);
    daemon.crash();
    let _daemon = project.daemon(&[]);
    let s = project.session("cut");
    super::fixture::wait_for(Duration::from_secs(60), "the questions", || {
        s.state()["status"]["for"] == "qa_answers"
    });
    project
        .run(&["answer", "cut", "--accept-suggestions"])
        .expect(0);
    super::fixture::wait_for(
        Duration::from_secs(60),
        "the next segment's span, ended by the answer",
        || {
            decode(&seen.lock().unwrap()).0.iter().any(|s| {
                s.name == "session"
                    && s.attributes.get("samocode.phase.exit").map(String::as_str)
                        == Some("requirements")
                    && s.status.0 == 0
            })
        },
    );
    let (spans, _) = decode(&seen.lock().unwrap());
    let ids: std::collections::HashSet<&[u8]> = spans.iter().map(|s| s.id.as_slice()).collect();
    let orphans: Vec<&Span> = spans
        .iter()
        .filter(|s| !s.parent.is_empty() && !ids.contains(s.parent.as_slice()))
        .filter(|s| s.attributes.contains_key("samocode.session"))
        .collect();
    assert!(
        orphans.is_empty(),
        "spans whose parent never came: {orphans:#?}"
    );
    let cut: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "session" && s.status.0 == 2)
        .collect();
    assert_eq!(cut.len(), 1, "{spans:#?}");
    assert!(
        cut[0].status.1.contains("ended without closing"),
        "{:?}",
        cut[0]
    );
    assert!(
        cut[0].attributes["samocode.session"].ends_with("-cut"),
        "{:?}",
        cut[0]
    );
    // The attempt the crash cut has its span under that segment, with what it spent, as
    // every attempt has (it had none: found by the story hunt).
    let interrupted: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "attempt"
                && s.attributes.get("samocode.outcome").map(String::as_str) == Some("interrupted")
        })
        .collect();
    assert_eq!(interrupted.len(), 1, "{spans:#?}");
    assert_eq!(interrupted[0].parent, cut[0].id);
    interrupted[0].has(&["samocode.cost_usd", "gen_ai.usage.input_tokens"]);
    // The next segment is linked to the one the crash cut.
    let next = spans
        .iter()
        .find(|s| s.name == "session" && s.status.0 == 0 && s.links == 1)
        .expect("a linked session span");
    assert_eq!(
        next.attributes["samocode.session"],
        cut[0].attributes["samocode.session"]
    );
}

/// A segment that ended (the session blocked, no gate open) is not ended again by the next
/// daemon, even when the one that ended it was killed later.
#[test]
fn a_segment_ended_before_a_crash_is_not_ended_again() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project.env(
        "SAMOCODE_FAKE",
        r#"investigation=signal:{"status":"blocked","phase":"investigation","reason":"need a db"}"#,
    );
    let daemon = project.daemon(&[]);
    project
        .run(&["start", "--session", "ended", "--dive", "d", "--task", "t"])
        .expect(0);
    let sessions = || {
        decode(&seen.lock().unwrap())
            .0
            .into_iter()
            .filter(|s| s.name == "session")
            .collect::<Vec<_>>()
    };
    super::fixture::wait_for(Duration::from_secs(30), "the segment's span", || {
        !sessions().is_empty()
    });
    daemon.crash();
    let daemon = project.daemon(&[]);
    // The next daemon has opened the session (it stays blocked) and exported what it would.
    std::thread::sleep(Duration::from_secs(3));
    daemon.terminate();
    let spans = sessions();
    assert_eq!(spans.len(), 1, "{spans:#?}");
}

/// A user and password in the OTLP endpoint's address are sent as its `Authorization` (they
/// were never sent at all), and no log has them, even at debug level where the HTTP client
/// logs its connections.
#[test]
fn credentials_in_the_otlp_endpoint_are_sent_as_authorization_and_never_logged() {
    let (port, _, seen) = receiver_keeping("authorization");
    let mut project = Project::new();
    project
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://otuser:SECRET-OTELU@127.0.0.1:{port}"),
        )
        .env("RUST_LOG", "debug");
    let run = project.run(&[
        "run",
        "--session",
        "authed",
        "--dive",
        "d",
        "--task",
        "t",
        "--once",
    ]);
    run.expect(0);
    assert!(!run.stderr().contains("SECRET-OTELU"), "{}", run.stderr());
    let seen = seen.lock().unwrap().clone();
    // base64 of `otuser:SECRET-OTELU`
    assert!(
        seen.iter()
            .any(|a| a == "Basic b3R1c2VyOlNFQ1JFVC1PVEVMVQ=="),
        "{seen:?}"
    );
}

/// An attempt a person's command found interrupted (its `run` killed, then `samocode resume`
/// took it over before any worker) has its span too, under the dead segment the next worker
/// ends (it had none: found by the last read).
#[test]
fn an_attempt_a_persons_command_found_interrupted_has_its_span() {
    let (port, seen) = receiver();
    let mut project = exporting_to(port);
    project.env("SAMOCODE_FAKE", "investigation@1=hang");
    let mut run = project.spawn(&["run", "--session", "rb", "--dive", "d", "--task", "t"]);
    // Its attempt recorded in flight (the log alone may come before the record).
    super::fixture::wait_for(Duration::from_secs(20), "the attempt in flight", || {
        std::fs::read_dir(&project.sessions).is_ok_and(|folders| {
            folders.flatten().any(|f| {
                std::fs::read_to_string(f.path().join("_state.json"))
                    .is_ok_and(|state| state.contains("\"in_flight\""))
            })
        })
    });
    run.kill().unwrap();
    run.wait().unwrap();
    project.run(&["resume", "rb"]).expect(2);
    project.run(&["run", "--session", "rb"]).expect(10);

    super::fixture::wait_for(
        Duration::from_secs(30),
        "the interrupted attempt's span",
        || {
            decode(&seen.lock().unwrap()).0.iter().any(|s| {
                s.name == "attempt"
                    && s.attributes.get("samocode.outcome").map(String::as_str)
                        == Some("interrupted")
            })
        },
    );
    let (spans, _) = decode(&seen.lock().unwrap());
    let cut = spans
        .iter()
        .find(|s| s.name == "session" && s.status.0 == 2)
        .expect("the dead segment, ended by the next worker");
    let interrupted = spans
        .iter()
        .find(|s| s.name == "attempt" && s.attributes["samocode.outcome"] == "interrupted")
        .unwrap();
    assert_eq!(interrupted.parent, cut.id);
}
