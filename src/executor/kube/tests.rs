//! The Kubernetes engine against a scripted API server (a tower service answering the
//! client's requests), and the manifests of `deploy/kubernetes/` against the API's types.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::agent::AgentCommand;
use crate::executor::result::End;
use crate::session::store::AttemptFiles;

/// One request the client made: method, path with query, body.
type Seen = (String, String, Value);

/// A scripted API: `answer` gives each request its status and body (status 0: no answer, the
/// connection left silent); every request is kept.
fn api(
    answer: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let record = seen.clone();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let answer = answer.clone();
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let method = parts.method.to_string();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            record
                .lock()
                .unwrap()
                .push((method.clone(), path.clone(), body));
            let (status, text) = answer(&method, &path);
            if status == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(text.into_bytes()))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(service, "samocode"), seen)
}

fn settings() -> KubeSettings {
    KubeSettings {
        namespace: "samocode".into(),
        image: "registry.example/samocode:1".into(),
        secret: Some("samocode-agent".into()),
    }
}

/// A session folder and a worktree with one commit, and the spec of an attempt on them.
struct Place {
    _dir: tempfile::TempDir,
    spec: AttemptSpec,
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn place() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let repo = root.join("repo");
    let session = root.join("sessions").join("26-11-24-kube");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(session.join("_logs")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "x\n").unwrap();
    git(&repo, &["add", "."]);
    git(
        &repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    std::fs::write(session.join("_overview.md"), "# kube\n").unwrap();
    let stem = session.join("_logs/11-24-120000-001-investigation-a1");
    let files = AttemptFiles {
        stdout: stem.with_extension("jsonl"),
        stderr: stem.with_extension("stderr.log"),
        context: stem.with_extension("context.md"),
    };
    std::fs::write(&files.context, "Session path: x\n").unwrap();
    std::fs::write(&files.stdout, "").unwrap();
    let spec = AttemptSpec {
        command: AgentCommand {
            provider: crate::config::Provider::Claude,
            program: PathBuf::from("claude"),
            args: vec!["-p".into(), "go".into()],
            workdir: repo,
            env: Default::default(),
            stdin: None,
        },
        files,
        timeout: Duration::from_secs(600),
        kill_grace: Duration::from_secs(10),
        stall: None,
        session_dir: session,
        attempt_id: "_logs/11-24-120000-001-investigation-a1.jsonl".into(),
        context: "Session path: x\n".into(),
    };
    Place { _dir: dir, spec }
}

/// The ConfigMap of the attempt of `place`, as a live Job's would hold its spec.
fn spec_map(place: &Place) -> String {
    let remote = RemoteSpec::of(
        &place.spec,
        crate::executor::spec::RepoSpec {
            url: "/repo".into(),
            base_ref: "refs/samocode/s/base".into(),
            base_commit: "0".repeat(40),
            result_ref: "refs/samocode/s/a".into(),
        },
        "context".into(),
        Default::default(),
    )
    .unwrap();
    json!({"metadata": {"name": "m"}, "data": {"spec.json": serde_json::to_string(&remote).unwrap()}}).to_string()
}

fn key_of(spec: &AttemptSpec) -> String {
    attempt_key(&spec.session_dir, &spec.attempt_id)
}

fn pod(phase: &str) -> String {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "samocode-job-pod"}, "status": {"phase": phase}}
    ]})
    .to_string()
}

fn job_status(status: Value) -> String {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "uid": "u-1"}, "status": status})
        .to_string()
}

fn gone() -> (u16, String) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
            .to_string(),
    )
}

#[tokio::test]
async fn a_job_is_created_with_the_attempts_spec_and_labels_and_its_result_applied() {
    let place = place();
    let key = key_of(&place.spec);
    let events = [
        json!({"event": "started", "key": key, "epoch": 1, "host": "pod/samocode-job-pod"}),
        json!({"event": "out", "epoch": 1, "data": "{\"type\":\"system\",\"subtype\":\"init\"}\n"}),
        json!({"event": "result", "key": key, "attempt_id": place.spec.attempt_id, "epoch": 1,
               "host": "pod/samocode-job-pod", "end": {"how": "exited", "code": 0},
               "changed": [{"path": "_signal.json", "text": "{\"status\":\"continue\",\"phase\":\"requirements\"}"}],
               "deleted": [], "stderr": "warming up\n"}),
    ];
    let log: String = events.iter().map(|e| format!("{e}\n")).collect();
    let (client, seen) = api(move |method, path| match (method, path) {
        ("POST", p) if p.contains("/jobs") => (201, job_status(json!({}))),
        ("POST", p) if p.contains("/configmaps") => {
            (201, json!({"metadata": {"name": "c"}}).to_string())
        }
        ("GET", p) if p.contains("/pods?") => (200, pod("Running")),
        ("GET", p) if p.contains("/log") => (200, log.clone()),
        ("DELETE", _) => (200, job_status(json!({}))),
        _ => gone(),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let launched = executor.launch(&place.spec).unwrap();
    let host = launched.host.clone();
    let mut output = String::new();
    let mut reader = launched.output;
    let exit = launched.exit.await.unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut output)
        .await
        .unwrap();
    assert_eq!(exit, ExitKind::Code(0));
    assert_eq!(host.get(), "pod/samocode-job-pod");
    assert!(output.contains(r#""subtype":"init""#), "{output}");
    let signal = std::fs::read_to_string(place.spec.session_dir.join("_signal.json")).unwrap();
    assert!(signal.contains("requirements"));
    let stderr = std::fs::read_to_string(&place.spec.files.stderr).unwrap();
    assert_eq!(stderr, "warming up\n");

    let seen = seen.lock().unwrap().clone();
    let (_, path, job) = seen
        .iter()
        .find(|(m, p, _)| m == "POST" && p.contains("/jobs"))
        .expect("a Job was created");
    assert!(
        path.starts_with("/apis/batch/v1/namespaces/samocode/jobs"),
        "{path}"
    );
    assert_eq!(job["metadata"]["name"], format!("samocode-{key}"));
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["samocode.dev/session"], "26-11-24-kube");
    assert_eq!(
        labels["samocode.dev/attempt"],
        "11-24-120000-001-investigation-a1"
    );
    assert_eq!(labels["samocode.dev/epoch"], "1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "samocode");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/samocode:1");
    assert_eq!(container["args"][0], "attempt-run");
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"], "samocode-agent",
        "secrets by reference"
    );
    // The spec travels in a ConfigMap owned by the Job, with names of variables, no values.
    let (_, _, map) = seen
        .iter()
        .find(|(m, p, _)| m == "POST" && p.contains("/configmaps"))
        .expect("the spec's ConfigMap was created");
    assert_eq!(map["metadata"]["ownerReferences"][0]["kind"], "Job");
    let spec: RemoteSpec =
        serde_json::from_str(map["data"]["spec.json"].as_str().unwrap()).unwrap();
    assert_eq!(spec.key, key);
    assert!(
        seen.iter()
            .any(|(m, p, _)| m == "DELETE" && p.contains(&format!("/jobs/samocode-{key}?"))),
        "the Job is deleted once its result is in: {seen:#?}"
    );
}

#[tokio::test]
async fn a_failed_job_without_a_result_is_a_crashed_attempt() {
    let place = place();
    let (client, _) = api(|method, path| match (method, path) {
        ("POST", p) if p.contains("/jobs") => (201, job_status(json!({}))),
        ("POST", _) => (201, json!({"metadata": {}}).to_string()),
        ("GET", p) if p.contains("/pods?") => (200, pod("Failed")),
        ("GET", p) if p.contains("/log") => (200, "not an event\n".into()),
        ("GET", p) if p.contains("/jobs/") => (
            200,
            job_status(json!({"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]})),
        ),
        ("DELETE", _) => (200, job_status(json!({}))),
        _ => gone(),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let exit = executor.launch(&place.spec).unwrap().exit.await.unwrap();
    assert_eq!(
        exit,
        ExitKind::Signal("the Job failed (DeadlineExceeded)".into())
    );
    // Which the session reads as a crashed attempt.
    let end = match exit {
        ExitKind::Signal(name) => crate::agent::ProcessEnd::Signaled(name),
        ExitKind::Code(code) => crate::agent::ProcessEnd::Exited(code),
    };
    assert!(matches!(end, crate::agent::ProcessEnd::Signaled(_)));
}

#[tokio::test]
async fn cancel_deletes_the_job() {
    let place = place();
    let key = key_of(&place.spec);
    let deleted = Arc::new(Mutex::new(false));
    let flag = deleted.clone();
    let (client, seen) = api(move |method, path| match (method, path) {
        ("POST", p) if p.contains("/jobs") => (201, job_status(json!({}))),
        ("POST", _) => (201, json!({"metadata": {}}).to_string()),
        ("GET", p) if p.contains("/pods?") => (200, pod("Pending")),
        ("GET", p) if p.contains("/jobs/") && !*flag.lock().unwrap() => {
            (200, job_status(json!({"active": 1})))
        }
        ("DELETE", _) => {
            *flag.lock().unwrap() = true;
            (200, job_status(json!({})))
        }
        _ => gone(),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let launched = executor.launch(&place.spec).unwrap();
    // Once the Job is there, samocode stops the attempt.
    for _ in 0..500 {
        if seen.lock().unwrap().iter().any(|(m, _, _)| m == "POST") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    launched.group.signal(Signal::SIGTERM);
    let exit = tokio::time::timeout(Duration::from_secs(20), launched.exit)
        .await
        .expect("the attempt ends once its Job is gone")
        .unwrap();
    assert_eq!(exit, ExitKind::Signal("SIGTERM".into()));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(m, p, _)| m == "DELETE" && p.contains(&format!("/jobs/samocode-{key}"))),
        "cancel deleted the Job"
    );
}

#[tokio::test]
async fn a_restarted_daemon_finds_live_jobs_by_label_and_adopts_its_attempt() {
    let place = place();
    let key = key_of(&place.spec);
    let map = spec_map(&place);
    let live_job = json!({"metadata": {"name": format!("samocode-{key}"), "labels": {"samocode.dev/key": key}}, "status": {"active": 1}});
    let failed_job = json!({"metadata": {"name": "samocode-old", "labels": {"samocode.dev/key": "old"}},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
    let list = json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": [live_job, failed_job]}).to_string();
    let result = json!({"event": "result", "key": key, "attempt_id": place.spec.attempt_id, "epoch": 1,
        "host": "pod/p", "end": {"how": "exited", "code": 3}, "changed": [], "deleted": [], "stderr": ""});
    let (client, seen) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/jobs?") => (200, list.clone()),
        ("GET", p) if p.contains("/jobs/") => (200, job_status(json!({"active": 1}))),
        ("GET", p) if p.contains("/configmaps/") => (200, map.clone()),
        ("GET", p) if p.contains("/pods?") => (200, pod("Running")),
        ("GET", p) if p.contains("/log") => (200, format!("{result}\n")),
        ("DELETE", _) => (200, job_status(json!({}))),
        _ => gone(),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let live = executor.list_live().await.unwrap();
    assert_eq!(
        live,
        vec![LiveAttempt {
            key: key.clone(),
            host: None
        }],
        "the failed Job is not live"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, p, _)| p.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsamocode")),
        "{:#?}",
        seen.lock().unwrap()
    );
    let adopted = executor.adopt(&place.spec).await.unwrap().expect("adopted");
    assert_eq!(adopted.exit.await.unwrap(), ExitKind::Code(3));
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p, _)| m == "POST" && p.contains("/jobs")),
        "an adopted attempt is not created again"
    );
    let _ = End::Exited { code: 3 };
}

/// The manifests of `deploy/kubernetes/` as the API's own types read them: every document
/// parses as its kind, with the fields the daemon needs.
#[test]
fn the_kubernetes_manifests_pass_the_schema_check() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut kinds = Vec::new();
    let mut role = None;
    let mut statefulset = None;
    for file in ["rbac.yaml", "statefulset.yaml", "values.example.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let parsed = match kind.as_str() {
                "ServiceAccount" => serde_json::from_value::<ServiceAccount>(value).map(drop),
                "Role" => serde_json::from_value::<Role>(value).map(|r| role = Some(r)),
                "RoleBinding" => serde_json::from_value::<RoleBinding>(value).map(drop),
                "StatefulSet" => {
                    serde_json::from_value::<StatefulSet>(value).map(|s| statefulset = Some(s))
                }
                "ConfigMap" => serde_json::from_value::<ConfigMap>(value).map(drop),
                "Secret" => serde_json::from_value::<Secret>(value).map(drop),
                other => panic!("{file}: an unexpected kind {other:?}"),
            };
            parsed.unwrap_or_else(|e| panic!("{file}: {kind}: {e}"));
            kinds.push(kind);
        }
    }
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "StatefulSet",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let rules = role.unwrap().rules.unwrap();
    let grants = |resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.resources
                .as_ref()
                .is_some_and(|x| x.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (resource, verb) in [
        ("jobs", "create"),
        ("jobs", "delete"),
        ("jobs", "list"),
        ("pods", "list"),
        ("pods/log", "get"),
        ("configmaps", "create"),
    ] {
        assert!(
            grants(resource, verb),
            "the Role lets the daemon {verb} {resource}"
        );
    }
    let set = statefulset.unwrap();
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "one daemon: the single writer");
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("samocode"));
    let args = pod.containers[0].args.clone().unwrap();
    assert_eq!(args, ["supervise", "--executor", "kubernetes"]);
    assert!(
        spec.volume_claim_templates.is_some_and(|v| !v.is_empty()),
        "the daemon's files outlive its pod"
    );
}

/// The events of an attempt that prints `lines` and ends with exit 0, each output event
/// placed at its offset in the agent's output (`at`), as the runner sends them.
fn events_of(place: &Place, lines: &[&str]) -> Vec<String> {
    let key = key_of(&place.spec);
    let mut at = 0u64;
    let mut events =
        vec![json!({"event": "started", "key": key, "epoch": 1, "host": "pod/p"}).to_string()];
    for line in lines {
        let data = format!("{line}\n");
        events.push(json!({"event": "out", "epoch": 1, "data": data, "at": at}).to_string());
        at += data.len() as u64;
    }
    events.push(
        json!({"event": "result", "key": key, "attempt_id": place.spec.attempt_id, "epoch": 1,
               "host": "pod/p", "end": {"how": "exited", "code": 0},
               "changed": [], "deleted": [], "stderr": ""})
        .to_string(),
    );
    events
}

fn running_job(method: &str, path: &str) -> Option<(u16, String)> {
    match (method, path) {
        ("POST", p) if p.contains("/jobs") => Some((201, job_status(json!({})))),
        ("POST", _) => Some((201, json!({"metadata": {}}).to_string())),
        ("GET", p) if p.contains("/jobs/") => Some((200, job_status(json!({"active": 1})))),
        ("DELETE", _) => Some((200, job_status(json!({})))),
        _ => None,
    }
}

fn unavailable() -> (u16, String) {
    (
        503,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503, "message": "the server is restarting"})
            .to_string(),
    )
}

/// An API that fails a look now and then (a restart, a 503) costs the attempt nothing: it
/// is looked at again, and its result taken as usual.
#[tokio::test]
async fn a_failed_look_at_the_api_is_tried_again_not_the_end_of_the_attempt() {
    let place = place();
    let log: String = events_of(&place, &["one"]).join("\n") + "\n";
    let looks = Arc::new(Mutex::new(0u32));
    let count = looks.clone();
    let (client, _) = api(move |method, path| {
        if path.contains("/pods?") {
            let mut n = count.lock().unwrap();
            *n += 1;
            // The first two looks at the pod, and the first at the Job, are not answered.
            return if *n <= 2 {
                unavailable()
            } else {
                (200, pod("Running"))
            };
        }
        if path.contains("/jobs/") && method == "GET" && *count.lock().unwrap() <= 2 {
            return unavailable();
        }
        if path.contains("/log") {
            return (200, log.clone());
        }
        running_job(method, path).unwrap_or_else(gone)
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let exit = executor.launch(&place.spec).unwrap().exit.await.unwrap();
    assert_eq!(exit, ExitKind::Code(0));
}

/// A log stream that goes silent for good (a connection gone without a word) does not hold
/// the attempt past its kill: it is given up once the wait for its result is over.
#[tokio::test]
async fn a_silent_log_stream_does_not_outlive_the_kill() {
    let place = place();
    let (client, _) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/pods?") => (200, pod("Running")),
        ("GET", p) if p.contains("/log") => (0, String::new()),
        _ => running_job(method, path).unwrap_or_else(gone),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10))
        .with_patience(Duration::from_millis(500), STUCK_FOR);
    let launched = executor.launch(&place.spec).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    launched.group.signal(Signal::SIGTERM);
    launched.group.signal(Signal::SIGKILL);
    let exit = tokio::time::timeout(Duration::from_secs(20), launched.exit)
        .await
        .expect("given up after the kill");
    assert_eq!(exit.unwrap(), ExitKind::Signal("SIGKILL".into()));
}

/// A cancel whose delete the API did not take (it was down) is asked again until the Job is
/// gone: no Job runs on beside the attempt's retry.
#[tokio::test]
async fn a_cancel_is_asked_again_until_the_job_is_gone() {
    let place = place();
    let deletes = Arc::new(Mutex::new(0u32));
    let count = deletes.clone();
    let (client, _) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/pods?") => (200, pod("Pending")),
        ("DELETE", _) => {
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n == 1 {
                unavailable()
            } else {
                (200, job_status(json!({})))
            }
        }
        ("GET", p) if p.contains("/jobs/") && *count.lock().unwrap() >= 2 => gone(),
        _ => running_job(method, path).unwrap_or_else(gone),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let launched = executor.launch(&place.spec).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    launched.group.signal(Signal::SIGTERM);
    let exit = tokio::time::timeout(Duration::from_secs(20), launched.exit)
        .await
        .expect("the attempt ends once its Job is gone");
    assert_eq!(exit.unwrap(), ExitKind::Signal("SIGTERM".into()));
    assert!(*deletes.lock().unwrap() >= 2);
}

/// A pod that cannot start (its image cannot be pulled) ends the attempt saying why, once
/// kubelet has had a while to try, not at the attempt's time limit; its Job is deleted.
#[tokio::test]
async fn a_pod_whose_image_cannot_be_pulled_ends_the_attempt_saying_so() {
    let place = place();
    let stuck = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [
            {"name": "attempt", "image": "registry.example/samocode:1", "imageID": "", "ready": false,
             "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
             "message": "Back-off pulling image \"registry.example/samocode:1\""}}}]}}
    ]})
    .to_string();
    let (client, seen) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/pods?") => (200, stuck.clone()),
        _ => running_job(method, path).unwrap_or_else(gone),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10))
        .with_patience(
            crate::executor::RESULT_AFTER_KILL,
            Duration::from_millis(200),
        );
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        executor.launch(&place.spec).unwrap().exit,
    )
    .await
    .expect("the attempt ends");
    let error = exit.unwrap_err().to_string();
    assert!(
        error.contains("cannot start")
            && error.contains("ImagePullBackOff")
            && error.contains("samocode:1"),
        "{error}"
    );
    assert!(seen.lock().unwrap().iter().any(|(m, _, _)| m == "DELETE"));
}

/// After kubelet rotates the pod's log, the API serves only its newest part: read again, it is
/// placed by the offsets the runner sent, so what the agent printed after the cut (its result
/// line with the cost) reaches the attempt log, and nothing is written twice.
#[tokio::test]
async fn a_log_read_again_after_rotation_keeps_what_came_after_the_cut() {
    let place = place();
    let events = events_of(&place, &["first", "second", "third with the cost"]);
    // The stream carries the start and the first line, then is cut.
    let streamed = format!("{}\n{}\n", events[0], events[1]);
    // The log as the API serves it after the rotation: from the second line on.
    let rotated = events[2..].join("\n") + "\n";
    let (client, _) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/pods?") => (200, pod("Running")),
        ("GET", p) if p.contains("/log") && p.contains("follow=true") => (200, streamed.clone()),
        ("GET", p) if p.contains("/log") => (200, rotated.clone()),
        _ => running_job(method, path).unwrap_or_else(gone),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let launched = executor.launch(&place.spec).unwrap();
    let mut reader = launched.output;
    let exit = launched.exit.await.unwrap();
    let mut output = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut output)
        .await
        .unwrap();
    assert_eq!(exit, ExitKind::Code(0));
    assert_eq!(output, "first\nsecond\nthird with the cost\n");
}

/// A session folder too large for a ConfigMap is refused before anything is made, saying
/// what to do.
#[tokio::test]
async fn a_spec_too_large_for_a_configmap_makes_no_job() {
    let place = place();
    std::fs::write(
        place.spec.session_dir.join("big-notes.md"),
        "x".repeat(1_100_000),
    )
    .unwrap();
    let (client, seen) = api(move |method, path| running_job(method, path).unwrap_or_else(gone));
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let exit = executor.launch(&place.spec).unwrap().exit.await;
    let error = exit.unwrap_err().to_string();
    assert!(
        error.contains("1 MiB") && error.contains("move large files out"),
        "{error}"
    );
    assert!(
        !seen.lock().unwrap().iter().any(|(m, _, _)| m == "POST"),
        "nothing made"
    );
}

/// A restarted daemon whose first looks at the API fail (the API restarting with it) asks
/// again, and adopts the Job still running, instead of giving its attempt up beside it.
#[tokio::test]
async fn adopting_asks_an_api_that_does_not_answer_again() {
    let place = place();
    let map = spec_map(&place);
    let looks = Arc::new(Mutex::new(0u32));
    let count = looks.clone();
    let (client, _) = api(move |method, path| match (method, path) {
        ("GET", p) if p.contains("/jobs/") => {
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n <= 3 {
                unavailable()
            } else {
                (200, job_status(json!({"active": 1})))
            }
        }
        ("GET", p) if p.contains("/configmaps/") => (200, map.clone()),
        ("GET", p) if p.contains("/pods?") => (200, pod("Pending")),
        _ => running_job(method, path).unwrap_or_else(gone),
    });
    let executor = KubeExecutor::with_client(client, settings(), Duration::from_millis(10));
    let adopted = executor.adopt(&place.spec).await.unwrap();
    assert!(adopted.is_some(), "the live Job is adopted");
    assert!(*looks.lock().unwrap() > 3);
}
