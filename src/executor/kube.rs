//! The Kubernetes engine (cargo feature `kube`): one Job per attempt.
//!
//! A Job is named for the attempt's key (`samocode-<key>`, so a second launch of the same
//! attempt finds it: creating it again is a conflict, and the daemon attaches to it), labelled
//! with its session, attempt and epoch, with `backoffLimit: 0` and `restartPolicy: Never`: a
//! failed attempt is retried by the session's own policy, never by Kubernetes behind its back.
//! Its one container runs `samocode attempt-run` as PID 1 on the spec, which a ConfigMap owned
//! by the Job holds; the agent's secrets come from a Secret by reference (`envFrom`), never
//! from the spec. The daemon follows the pod's log (the runner's event lines), and when that
//! stream is cut (kubelet rotates logs) it reads the pod's log again for the result line. A
//! Job that failed without a result is a crashed attempt; deleting the Job cancels it (the pod
//! gets SIGTERM and its grace); after a restart the daemon finds live Jobs by label and
//! adopts them, reading the spec back from their ConfigMap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::AsyncBufReadExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, ResourceRequirements, SecretEnvSource,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};

use super::result::{AttemptResult, Event, Expected, apply};
use super::spec::{RemoteSpec, attempt_key};
use super::{AttemptExecutor, Host, LiveAttempt, Pending};
use crate::agent::AttemptSpec;
use crate::agent::launch::{ExitKind, Group, Launched};
use crate::config::KubeSettings;

/// The label every object of the engine carries, to find them again.
pub const MANAGED: (&str, &str) = ("app.kubernetes.io/managed-by", "samocode");
pub const SESSION_LABEL: &str = "samocode.dev/session";
pub const ATTEMPT_LABEL: &str = "samocode.dev/attempt";
pub const EPOCH_LABEL: &str = "samocode.dev/epoch";
pub const KEY_LABEL: &str = "samocode.dev/key";
/// Where the spec is mounted in the container.
const SPEC_DIR: &str = "/etc/samocode-spec";

/// The daemon's side of the engine.
pub struct KubeExecutor {
    client: kube::Client,
    settings: KubeSettings,
    /// How often a Job whose pod is not running yet is looked at.
    poll: Duration,
    /// How long a killed attempt's Job is followed for its result before it is given up.
    after_kill: Duration,
    /// How long a pod may stay unable to start (its image not pulled, its Secret missing)
    /// before the attempt ends saying so.
    stuck_for: Duration,
}

/// [`KubeExecutor::stuck_for`] by default: kubelet's back-off has tried a few pulls by then.
const STUCK_FOR: Duration = Duration::from_secs(120);
/// How long one look at the API (a list, a get, a log read) may take: the client has no limit
/// of its own, and a connection gone silent would hold the attempt.
const LOOK_LIMIT: Duration = Duration::from_secs(30);
/// The most a ConfigMap holds (Kubernetes refuses more).
const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

impl KubeExecutor {
    /// The cluster the daemon runs in (its service account), or the one the kubeconfig names.
    pub async fn connect(settings: &KubeSettings) -> Result<KubeExecutor, String> {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("cannot reach the Kubernetes API (in-cluster or the kubeconfig): {e}")
        })?;
        Ok(KubeExecutor::with_client(
            client,
            settings.clone(),
            Duration::from_secs(2),
        ))
    }

    pub fn with_client(client: kube::Client, settings: KubeSettings, poll: Duration) -> Self {
        KubeExecutor {
            client,
            settings,
            poll,
            after_kill: super::RESULT_AFTER_KILL,
            stuck_for: STUCK_FOR,
        }
    }

    /// Shorter waits, for tests: the give-up after a kill and the wait on a pod that cannot
    /// start.
    #[cfg(test)]
    pub fn with_patience(mut self, after_kill: Duration, stuck_for: Duration) -> Self {
        self.after_kill = after_kill;
        self.stuck_for = stuck_for;
        self
    }

    /// The Job of an attempt.
    pub fn job(&self, remote: &RemoteSpec) -> Job {
        job(&self.settings, remote)
    }
}

/// The name of an attempt's Job and of its ConfigMap.
pub fn job_name(key: &str) -> String {
    format!("samocode-{key}")
}

/// A label value from any text: at most 63 of `[A-Za-z0-9._-]`, letters or digits at the ends.
fn label_value(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn labels(remote: &RemoteSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED.0.to_string(), MANAGED.1.to_string()),
        (SESSION_LABEL.to_string(), label_value(&remote.session)),
        (ATTEMPT_LABEL.to_string(), label_value(remote.stem())),
        (EPOCH_LABEL.to_string(), remote.epoch.to_string()),
        (KEY_LABEL.to_string(), remote.key.clone()),
    ])
}

/// The Job of one attempt (pure: what the tests check).
pub fn job(settings: &KubeSettings, remote: &RemoteSpec) -> Job {
    let name = job_name(&remote.key);
    let labels = labels(remote);
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &remote.resources.cpu {
        limits.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &remote.resources.memory {
        limits.insert("memory".to_string(), Quantity(memory.clone()));
    }
    let container = Container {
        name: "attempt".into(),
        image: Some(settings.image.clone()),
        args: Some(vec![
            "attempt-run".into(),
            "--spec".into(),
            format!("{SPEC_DIR}/spec.json"),
            "--dir".into(),
            "/work".into(),
            "--host".into(),
            "pod/$(POD_NAME)".into(),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        // The agent's variables, secrets among them, by reference: the spec names them only.
        env_from: settings.secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "spec".into(),
                mount_path: SPEC_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "work".into(),
                mount_path: "/work".into(),
                ..Default::default()
            },
        ]),
        resources: (!limits.is_empty()).then(|| ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..Default::default()
        }),
        ..Default::default()
    };
    let grace = remote.kill_grace.as_secs() as i64 + 5;
    Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            // The time limit is the daemon's; this only ends a Job the daemon lost track of.
            active_deadline_seconds: Some(
                (remote.timeout + remote.kill_grace).as_secs() as i64 + 120,
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    termination_grace_period_seconds: Some(grace),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "spec".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: name.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "work".into(),
                            empty_dir: Some(Default::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl AttemptExecutor for KubeExecutor {
    fn engine(&self) -> &'static str {
        "kubernetes"
    }

    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
        Ok(start(self.driver(spec), None))
    }

    fn list_live(&self) -> Pending<'_, Vec<LiveAttempt>> {
        Box::pin(async move {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.settings.namespace);
            let selector = format!("{}={}", MANAGED.0, MANAGED.1);
            let list = jobs
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(std::io::Error::other)?;
            Ok(list
                .items
                .into_iter()
                .filter(|job| failed(job).is_none() && !succeeded(job))
                .filter_map(|job| {
                    let key = job.metadata.labels.as_ref()?.get(KEY_LABEL)?.clone();
                    Some(LiveAttempt { key, host: None })
                })
                .collect())
        })
    }

    fn adopts(&self) -> bool {
        true
    }

    fn adopt<'a>(&'a self, spec: &'a AttemptSpec) -> Pending<'a, Option<Launched>> {
        Box::pin(async move {
            let driver = self.driver(spec);
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.settings.namespace);
            // An API restarting with the daemon (a node's reboot) would have the attempt
            // given up while its Job runs on: it is asked a few times first.
            if self
                .patiently(|| jobs.get_opt(&driver.name))
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let maps: Api<ConfigMap> =
                Api::namespaced(self.client.clone(), &self.settings.namespace);
            let Some(map) = self.patiently(|| maps.get_opt(&driver.name)).await? else {
                return Ok(None);
            };
            let text = map
                .data
                .and_then(|mut data| data.remove("spec.json"))
                .unwrap_or_default();
            let remote: RemoteSpec = serde_json::from_str(&text).map_err(std::io::Error::other)?;
            let skip = std::fs::metadata(&spec.files.stdout).map_or(0, |m| m.len());
            Ok(Some(start(driver, Some((remote, skip)))))
        })
    }

    fn kill_leftovers(&self, _session_dir: &std::path::Path) -> Vec<i32> {
        Vec::new()
    }
}

/// How many times a call the API does not answer is made when adopting an attempt, a look
/// apart (about 30 s with the daemon's looks every 2 s).
const ADOPT_TRIES: u32 = 15;

impl KubeExecutor {
    /// `call`, made again a look later while the API fails or does not answer, up to
    /// [`ADOPT_TRIES`] times.
    async fn patiently<T, F>(&self, call: impl Fn() -> F) -> std::io::Result<T>
    where
        F: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match tokio::time::timeout(LOOK_LIMIT, call()).await {
                Ok(Ok(found)) => return Ok(found),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "no answer in time".to_string(),
            };
            if tries >= ADOPT_TRIES {
                return Err(std::io::Error::other(error));
            }
            tracing::warn!(%error, tries, "the Kubernetes API did not answer; asking again");
            tokio::time::sleep(self.poll).await;
        }
    }

    fn driver(&self, spec: &AttemptSpec) -> Driver {
        let key = attempt_key(&spec.session_dir, &spec.attempt_id);
        Driver {
            client: self.client.clone(),
            settings: self.settings.clone(),
            name: job_name(&key),
            spec: spec.clone(),
            host: Host::new("kubernetes"),
            killed: Arc::new(Notify::new()),
            cancelled: Arc::new(AtomicBool::new(false)),
            over: Arc::new(AtomicBool::new(false)),
            poll: self.poll,
            after_kill: self.after_kill,
            stuck_for: self.stuck_for,
        }
    }
}

#[derive(Clone)]
struct Driver {
    client: kube::Client,
    settings: KubeSettings,
    name: String,
    spec: AttemptSpec,
    host: Host,
    killed: Arc<Notify>,
    cancelled: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    poll: Duration,
    after_kill: Duration,
    stuck_for: Duration,
}

/// Starts the driver of an attempt (creating its Job, unless adopted).
fn start(driver: Driver, adopted: Option<(RemoteSpec, u64)>) -> Launched {
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let (exit_tx, exit_rx) = oneshot::channel();
    let host = driver.host.clone();
    let mut group = KubeGroup {
        driver: driver.clone(),
        task: None,
    };
    let task = tokio::spawn(async move {
        let mut writer = writer;
        let outcome = driver.run(adopted, &mut writer).await;
        drop(writer);
        let _ = exit_tx.send(outcome);
    });
    Launched {
        group: {
            group.task = Some(task.abort_handle());
            Box::new(group)
        },
        output: Box::pin(reader),
        // The pod's log carries the agent's standard error.
        errors: None,
        exit: Box::pin(async move {
            exit_rx.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the daemon stopped following the attempt",
                ))
            })
        }),
        input: None,
        host,
        // (A pod waiting to be scheduled counts against the time limit, as it did.)
        started: None,
    }
}

/// The Job's failure reason, when it failed.
fn failed(job: &Job) -> Option<String> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            c.reason
                .clone()
                .or_else(|| c.message.clone())
                .unwrap_or_else(|| "failed".into())
        })
}

/// Why a pending pod cannot start, when kubelet says it cannot: its image (not found, not
/// pulled) or its configuration (a Secret or ConfigMap it names is missing).
fn cannot_start(pod: &Pod) -> Option<String> {
    const STUCK: [&str; 6] = [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    ];
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK.contains(&reason).then(|| match &waiting.message {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_string(),
        })
    })
}

fn succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.succeeded)
        .is_some_and(|n| n > 0)
}

impl Driver {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    async fn run(
        &self,
        adopted: Option<(RemoteSpec, u64)>,
        out: &mut tokio::io::DuplexStream,
    ) -> std::io::Result<ExitKind> {
        let (remote, skip) = match adopted {
            Some(adopted) => adopted,
            None => (self.create().await?, 0),
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        // Output bytes already in the attempt log: a stream read again from its start skips them.
        let mut written = skip;
        let mut give_up: Option<tokio::time::Instant> = None;
        // Since when the pod has been stuck before its start (its image, its Secret).
        let mut stuck_since: Option<tokio::time::Instant> = None;
        loop {
            if let Some(at) = give_up
                && tokio::time::Instant::now() >= at
            {
                self.over.store(true, Ordering::SeqCst);
                // Given up on, but not left to run beside the attempt's retry: its Job is
                // deleted on behind the attempt's end until it is gone.
                self.delete_until_gone();
                return Ok(ExitKind::Signal("SIGKILL".into()));
            }
            // A call the API did not answer (a restart, a 503) is tried again at the next
            // look: the attempt runs on in its pod meanwhile, and its time limit bounds the
            // wait.
            let selector = format!("job-name={}", self.name);
            let listed = tokio::time::timeout(
                LOOK_LIMIT,
                pods.list(&ListParams::default().labels(&selector)),
            )
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())));
            let pod = match listed {
                Ok(list) => list.items.into_iter().next(),
                Err(error) => {
                    tracing::warn!(job = %self.name, %error, "cannot look at the attempt's pod; trying again");
                    None
                }
            };
            let started = pod
                .as_ref()
                .and_then(|p| p.status.as_ref()?.phase.clone())
                .is_some_and(|phase| phase != "Pending");
            if let (Some(pod), true) = (&pod, started) {
                stuck_since = None;
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                self.host.set(&format!("pod/{pod_name}"));
                let follow = LogParams {
                    follow: true,
                    ..Default::default()
                };
                let following = async {
                    let mut seen = 0u64;
                    let stream = pods.log_stream(&pod_name, &follow).await.ok()?;
                    let mut lines = stream.lines();
                    use futures_util::StreamExt;
                    while let Some(Ok(line)) = lines.next().await {
                        if let Some(result) = self.take(&line, out, &mut seen, &mut written).await {
                            return Some(result);
                        }
                    }
                    None
                };
                // A stream may go silent for good (a connection gone without a word): the
                // kill's give-up bounds the wait on it, as it bounds the looks.
                let followed = tokio::select! {
                    result = following => result,
                    () = self.given_up(&mut give_up) => None,
                };
                if let Some(result) = followed {
                    return self.finish(&remote, &result).await;
                }
                // The stream was cut (log rotation, a lost connection) or the pod ended: its
                // log, read again whole, ends with the result if there is one.
                let whole = LogParams::default();
                let read = tokio::select! {
                    read = tokio::time::timeout(LOOK_LIMIT, pods.logs(&pod_name, &whole)) => read.ok(),
                    () = self.given_up(&mut give_up) => None,
                };
                if let Some(Ok(text)) = read {
                    let mut seen = 0u64;
                    for line in text.lines() {
                        if let Some(result) = self.take(line, out, &mut seen, &mut written).await {
                            return self.finish(&remote, &result).await;
                        }
                    }
                }
            } else if let Some(reason) = pod.as_ref().and_then(cannot_start) {
                // kubelet tries again by itself (a registry may be back), so a while is given;
                // past it, the attempt ends saying why, instead of at its time limit.
                let since = *stuck_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= self.stuck_for {
                    self.over.store(true, Ordering::SeqCst);
                    self.delete().await;
                    return Err(std::io::Error::other(format!(
                        "the pod of Job {} cannot start: {reason}",
                        self.name
                    )));
                }
            }
            let job = tokio::time::timeout(LOOK_LIMIT, self.jobs().get_opt(&self.name))
                .await
                .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())));
            match job {
                Err(error) => {
                    tracing::warn!(job = %self.name, %error, "cannot look at the attempt's Job; trying again");
                }
                Ok(None) if self.cancelled.load(Ordering::SeqCst) => {
                    self.over.store(true, Ordering::SeqCst);
                    return Ok(ExitKind::Signal("SIGTERM".into()));
                }
                Ok(None) => {
                    return Err(std::io::Error::other(format!(
                        "the Job {} was deleted by someone else",
                        self.name
                    )));
                }
                Ok(Some(job)) => {
                    if let Some(reason) = failed(&job) {
                        self.over.store(true, Ordering::SeqCst);
                        self.delete().await;
                        return Ok(ExitKind::Signal(format!("the Job failed ({reason})")));
                    }
                    if succeeded(&job) {
                        self.over.store(true, Ordering::SeqCst);
                        self.delete().await;
                        return Err(std::io::Error::other(format!(
                            "the Job {} ended without a result",
                            self.name
                        )));
                    }
                    // Cancelled, and still there: the delete did not get through (the API was
                    // down); it is asked again until the Job is gone.
                    if self.cancelled.load(Ordering::SeqCst) {
                        self.delete().await;
                    }
                }
            }
            // The next look, or the give-up after a kill, whichever comes first.
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = self.given_up(&mut give_up) => {}
            }
        }
    }

    /// Returns once the attempt, killed, has been waited for as long as its result is waited
    /// for after a kill (never, while it is not killed).
    async fn given_up(&self, give_up: &mut Option<tokio::time::Instant>) {
        let at = match *give_up {
            Some(at) => at,
            None => {
                self.killed.notified().await;
                *give_up.insert(tokio::time::Instant::now() + self.after_kill)
            }
        };
        tokio::time::sleep_until(at).await;
    }

    /// Creates the Job, then its ConfigMap owned by it (the pod waits for the volume).
    async fn create(&self) -> std::io::Result<RemoteSpec> {
        let remote = super::spec::prepare(&self.spec).await?;
        let spec = serde_json::to_string(&remote).expect("specs serialize");
        // Checked before anything is made: Kubernetes refuses a larger ConfigMap.
        if spec.len() > CONFIG_MAP_LIMIT - 4096 {
            return Err(std::io::Error::other(format!(
                "the attempt's spec is {} KiB, over the 1 MiB a Kubernetes ConfigMap holds: its session folder holds too much text; move large files out of it",
                spec.len() / 1024
            )));
        }
        let job = job(&self.settings, &remote);
        let created = match self.jobs().create(&PostParams::default(), &job).await {
            Ok(job) => job,
            // Launched before, with the same attempt id: attach to it.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(remote);
            }
            Err(error) => return Err(std::io::Error::other(error)),
        };
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: job.metadata.labels.clone(),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: self.name.clone(),
                    uid: created.metadata.uid.clone().unwrap_or_default(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("spec.json".to_string(), spec)])),
            ..Default::default()
        };
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        if let Err(error) = maps.create(&PostParams::default(), &map).await {
            // Its Job would wait for the volume for ever.
            self.over.store(true, Ordering::SeqCst);
            self.delete().await;
            return Err(std::io::Error::other(error));
        }
        Ok(remote)
    }

    /// One log line: output goes to the attempt log (bytes already there skipped), the
    /// result is returned.
    async fn take(
        &self,
        line: &str,
        out: &mut tokio::io::DuplexStream,
        seen: &mut u64,
        written: &mut u64,
    ) -> Option<Box<AttemptResult>> {
        match serde_json::from_str::<Event>(line).ok()? {
            Event::Started { host, .. } => {
                self.host.set(&host);
                None
            }
            Event::Out { data, at, .. } => {
                let bytes = data.as_bytes();
                // Where it starts in the agent's output, as the runner counted it: a log read
                // again after kubelet rotated it starts part way, and is placed by it.
                if let Some(at) = at {
                    *seen = at;
                }
                let end = *seen + bytes.len() as u64;
                if end > *written {
                    let from = written.saturating_sub(*seen) as usize;
                    let _ = out.write_all(&bytes[from..]).await;
                    *written = end;
                }
                *seen = end;
                None
            }
            Event::Result(result) => Some(result),
            _ => None,
        }
    }

    async fn finish(
        &self,
        remote: &RemoteSpec,
        result: &AttemptResult,
    ) -> std::io::Result<ExitKind> {
        let expected = Expected {
            attempt_id: self.spec.attempt_id.clone(),
            epoch: remote.epoch,
            session_dir: self.spec.session_dir.clone(),
            workdir: self.spec.command.workdir.clone(),
            stderr_file: self.spec.files.stderr.clone(),
            repo_url: remote.repository.url.clone(),
            result_ref: remote.repository.result_ref.clone(),
            base_commit: remote.repository.base_commit.clone(),
        };
        self.over.store(true, Ordering::SeqCst);
        self.host.set(&result.host);
        let applied = apply(&expected, result).await;
        self.delete().await;
        match applied {
            Ok(()) => result.exit(),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        }
    }

    /// Deletes the Job (its pod and ConfigMap go with it); an API that does not answer within
    /// a look's time counts as a failed delete.
    async fn delete(&self) {
        let jobs = self.jobs();
        let deleted = tokio::time::timeout(
            LOOK_LIMIT,
            jobs.delete(&self.name, &DeleteParams::background()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(error)) => {
                tracing::warn!(job = %self.name, %error, "cannot delete the attempt's Job");
            }
            Err(_) => {
                tracing::warn!(job = %self.name, "cannot delete the attempt's Job: no answer in time");
            }
        }
    }

    /// Deletes the Job again, a look apart, until the API says it is gone (for an hour at
    /// most), in the background.
    fn delete_until_gone(&self) {
        let driver = self.clone();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(3600);
            while tokio::time::Instant::now() < until {
                driver.delete().await;
                let looked =
                    tokio::time::timeout(LOOK_LIMIT, driver.jobs().get_opt(&driver.name)).await;
                if let Ok(Ok(None)) = looked {
                    return;
                }
                tokio::time::sleep(driver.poll.max(Duration::from_secs(1))).await;
            }
            tracing::error!(job = %driver.name, "the attempt's Job could not be deleted for an hour; delete it by hand");
        });
    }
}

/// The attempt as a group: a signal deletes its Job (the pod gets SIGTERM and its grace).
struct KubeGroup {
    driver: Driver,
    task: Option<tokio::task::AbortHandle>,
}

impl Group for KubeGroup {
    fn signal(&self, signal: Signal) {
        if self.driver.over.load(Ordering::SeqCst) {
            return;
        }
        if signal == Signal::SIGKILL {
            self.driver.killed.notify_one();
        }
        if !self.driver.cancelled.swap(true, Ordering::SeqCst) {
            let driver = self.driver.clone();
            tokio::spawn(async move { driver.delete().await });
        }
    }

    fn sweep(&self, _settled: bool) {}

    fn describe(&self) -> String {
        format!("Kubernetes Job {}", self.driver.name)
    }
}

impl Drop for KubeGroup {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
