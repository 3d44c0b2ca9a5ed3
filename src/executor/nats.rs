//! The NATS JetStream engine: the daemon publishes attempts to a work queue and `samocode
//! worker` processes on other hosts run them.
//!
//! Two streams, created by whichever side connects first:
//! - `SAMOCODE_WORK` (subject `samocode.work`, work-queue retention): one message per attempt,
//!   its [`RemoteSpec`], published with `Nats-Msg-Id` set to the attempt's key, so that a spec
//!   published twice is stored once. Workers share one durable pull consumer; a worker holds
//!   the message, acking "in progress" while its agent runs, and acks it at the end. A worker
//!   that dies stops acking: after the consumer's AckWait (`SAMOCODE_NATS_ACK_WAIT`) JetStream
//!   gives the attempt to another worker, as the next epoch (past every epoch claimed).
//! - `SAMOCODE_ATTEMPTS` (subjects `samocode.attempt.<key>.events`, `.spec`, `.claim` and
//!   `.cancel`, kept a week): the attempt's spec (so a restarted daemon can publish it again),
//!   the worker's events ([`Event`]: started, output, heartbeats, the result), the workers'
//!   claims ([`Claim`]: which copy of the work message runs, as which epoch), and the daemon's
//!   cancel requests. Being a stream, it keeps them for a daemon that was down: a restarted
//!   daemon replays an attempt's events and adopts it.
//!
//! Fencing: the daemon takes output and the result only of the newest epoch started, so a
//! worker given up for dead that comes back late changes nothing; a worker that picks up an
//! attempt already cancelled, or already over, acks it and runs nothing.

mod attempt;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};

use super::result::Event;
use super::spec::RemoteSpec;
use super::{AttemptExecutor, LiveAttempt, Pending};
use crate::agent::AttemptSpec;
use crate::agent::launch::Launched;
use crate::config::{NatsAuth, NatsSettings};

pub const WORK_STREAM: &str = "SAMOCODE_WORK";
pub const WORK_SUBJECT: &str = "samocode.work";
pub const ATTEMPTS_STREAM: &str = "SAMOCODE_ATTEMPTS";
/// The durable consumer every worker pulls from.
pub const WORKERS: &str = "samocode-workers";
/// How long the attempts stream keeps an attempt's events.
const KEEP_EVENTS: Duration = Duration::from_secs(7 * 86400);
/// Deliveries of one attempt before JetStream gives up on it (each one a worker that died
/// or was stopped while running it).
const MAX_DELIVER: i64 = 10;

/// The subject of an attempt's events.
pub fn events_subject(key: &str) -> String {
    format!("samocode.attempt.{key}.events")
}

/// The subject of an attempt's cancel requests.
pub fn cancel_subject(key: &str) -> String {
    format!("samocode.attempt.{key}.cancel")
}

/// The subject of the workers' claims on an attempt ([`Claim`]).
pub fn claim_subject(key: &str) -> String {
    format!("samocode.attempt.{key}.claim")
}

/// A worker's claim on an attempt, stored before it runs one: which work message it runs
/// (its stream sequence) and as which epoch. A second copy of the work message (another
/// sequence) is not run beside it, and a new delivery of the same message runs as a newer
/// epoch than any claimed, whatever delivery count JetStream gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    pub work: u64,
    pub epoch: u32,
    pub host: String,
}

/// A cancel request: stop the agent with its grace (`kill`: the grace is over).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cancel {
    pub kill: bool,
}

/// Why the engine could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server did not answer, or refused the credentials.
    #[error(
        "cannot connect to NATS at {url}: {detail}; check SAMOCODE_NATS_URL and the credentials"
    )]
    Connect { url: String, detail: String },
    /// The nkey seed file could not be read.
    #[error("cannot read the nkey seed file {path}: {detail}")]
    Nkey { path: String, detail: String },
    /// A stream or consumer could not be made (JetStream off, or another configuration).
    #[error(
        "cannot set up JetStream {what} on {url}: {detail}; is JetStream enabled (nats-server -js)?"
    )]
    Setup {
        url: String,
        what: &'static str,
        detail: String,
    },
}

/// A connection with the streams and the consumer in place.
#[derive(Clone)]
pub struct Link {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub work: jetstream::stream::Stream,
    pub attempts: jetstream::stream::Stream,
    pub settings: NatsSettings,
}

impl Link {
    /// Connects with the configured credentials and makes sure the streams exist.
    pub async fn connect(settings: &NatsSettings) -> Result<Link, NatsError> {
        // As shown in errors: without the credentials an address may carry.
        let url = crate::config::without_userinfo(&settings.url).into_owned();
        // One server, or several separated by commas (the client tries them in turn). A user
        // and password in an address go to the client as its credentials, the address without
        // them: the client's own debug log prints the addresses it connects to.
        let mut login = None;
        let servers: Vec<String> = settings
            .url
            .split(',')
            .map(str::trim)
            .map(|server| match crate::config::split_userinfo(server) {
                Some((plain, user, password)) => {
                    login.get_or_insert((user, password));
                    plain
                }
                None => server.to_string(),
            })
            .collect();
        let mut options = async_nats::ConnectOptions::new()
            .name("samocode")
            .connection_timeout(Duration::from_secs(10));
        if let Some((user, password)) = login {
            options = options.user_and_password(user, password);
        }
        match &settings.auth {
            NatsAuth::None => {}
            NatsAuth::Token(token) => options = options.token(token.clone()),
            NatsAuth::NkeyFile(path) => {
                let seed = std::fs::read_to_string(path).map_err(|e| NatsError::Nkey {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                options = options.nkey(seed.trim().to_string());
            }
        }
        let client = options
            .connect(servers)
            .await
            .map_err(|e| NatsError::Connect {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let (work, attempts, consumer) = set_up(&js, settings, &url).await?;
        // The queue's ack wait is what whoever made it set; a setting here does not change it.
        // Progress is acked within it, so every host uses the queue's own, whatever its
        // SAMOCODE_NATS_ACK_WAIT says (a worker acking by a longer one of its own let the
        // attempt be redelivered to a second worker while the first still ran it).
        let mut settings = settings.clone();
        let queue_wait = consumer.cached_info().config.ack_wait;
        if !queue_wait.is_zero() && queue_wait != settings.ack_wait {
            tracing::warn!(
                queue = %humantime::format_duration(queue_wait),
                here = %humantime::format_duration(settings.ack_wait),
                "the work queue's ack wait differs from SAMOCODE_NATS_ACK_WAIT here; the queue's is used"
            );
            settings.ack_wait = queue_wait;
        }
        Ok(Link {
            client,
            js,
            work,
            attempts,
            settings,
        })
    }

    /// Makes the streams and the work queue's consumer again where they are missing (a
    /// server that lost its JetStream store), and returns the consumer. The streams' handles
    /// of this link go by name, so they serve again once the streams exist.
    pub async fn ensure(&self) -> Result<PullConsumer, NatsError> {
        let url = crate::config::without_userinfo(&self.settings.url).into_owned();
        let (_, _, consumer) = set_up(&self.js, &self.settings, &url).await?;
        Ok(consumer)
    }

    /// The last event of attempt `key`, if it has any.
    pub async fn last_event(&self, key: &str) -> std::io::Result<Option<Event>> {
        self.last(&events_subject(key)).await
    }

    /// Whether attempt `key` was asked to stop.
    pub async fn cancelled(&self, key: &str) -> std::io::Result<bool> {
        Ok(self.last::<Cancel>(&cancel_subject(key)).await?.is_some())
    }

    /// The stream sequence of attempt `key`'s last event (0: none): it moves while a worker
    /// runs the attempt.
    pub async fn last_event_sequence(&self, key: &str) -> std::io::Result<u64> {
        Ok(self
            .last_stored::<serde::de::IgnoredAny>(&events_subject(key))
            .await?
            .map_or(0, |(_, sequence)| sequence))
    }

    /// The last claim on attempt `key`, with its sequence in the stream (what the next claim
    /// expects to follow).
    pub async fn last_claim(&self, key: &str) -> std::io::Result<Option<(Claim, u64)>> {
        self.last_stored(&claim_subject(key)).await
    }

    /// Stores `claim` on attempt `key` if the last claim stored is still the one at stream
    /// sequence `after` (0: none): false when another worker claimed it meanwhile.
    pub async fn claim(&self, key: &str, claim: &Claim, after: u64) -> std::io::Result<bool> {
        use jetstream::context::PublishErrorKind;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            after.to_string().as_str(),
        );
        let body = serde_json::to_vec(claim).expect("claims serialize");
        let stored = async {
            self.js
                .publish_with_headers(claim_subject(key), headers, body.into())
                .await?
                .await
        };
        match stored.await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(error) => Err(std::io::Error::other(error)),
        }
    }

    async fn last<T: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
    ) -> std::io::Result<Option<T>> {
        Ok(self.last_stored(subject).await?.map(|(value, _)| value))
    }

    /// The last message of `subject` in the attempts stream, and its sequence there.
    async fn last_stored<T: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
    ) -> std::io::Result<Option<(T, u64)>> {
        use jetstream::stream::LastRawMessageErrorKind;
        match self.attempts.get_last_raw_message_by_subject(subject).await {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(|value| Some((value, message.sequence)))
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Publishes `payload` to `subject` of a stream and waits for the stream to store it.
    pub async fn store(
        &self,
        subject: String,
        payload: Vec<u8>,
        id: Option<&str>,
    ) -> std::io::Result<()> {
        let limit = self.client.server_info().max_payload;
        if payload.len() > limit {
            return Err(std::io::Error::other(format!(
                "a message of {} bytes is larger than the NATS server's max_payload of {limit}; raise max_payload in the server's configuration",
                payload.len()
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = id {
            headers.insert("Nats-Msg-Id", id);
        }
        let payload = bytes::Bytes::from(payload);
        let publish = || async {
            self.js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await?
                .await
                .map(drop)
        };
        use jetstream::context::PublishErrorKind;
        match publish().await {
            Ok(()) => Ok(()),
            // No stream takes it (the server lost its store): made again, and sent once more.
            // Only then: after any other failure the message may have been stored.
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => {
                match self.ensure().await {
                    Ok(_) => publish().await.map_err(std::io::Error::other),
                    Err(_) => Err(std::io::Error::other(error)),
                }
            }
            Err(error) => Err(std::io::Error::other(error)),
        }
    }

    /// Publishes the spec to the work queue (stored once per key).
    pub async fn enqueue(&self, spec: &RemoteSpec) -> std::io::Result<()> {
        let body = serde_json::to_vec(spec).expect("specs serialize");
        self.store(WORK_SUBJECT.into(), body, Some(&spec.key)).await
    }
}

/// Makes sure the two streams and the work queue's consumer exist, as `settings` says.
async fn set_up(
    js: &jetstream::Context,
    settings: &NatsSettings,
    url: &str,
) -> Result<
    (
        jetstream::stream::Stream,
        jetstream::stream::Stream,
        PullConsumer,
    ),
    NatsError,
> {
    let setup = |what: &'static str| {
        let url = url.to_string();
        move |e: async_nats::Error| NatsError::Setup {
            url,
            what,
            detail: e.to_string(),
        }
    };
    let work = js
        .get_or_create_stream(jetstream::stream::Config {
            name: WORK_STREAM.into(),
            subjects: vec![WORK_SUBJECT.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(|e| setup("stream SAMOCODE_WORK")(e.into()))?;
    let attempts = js
        .get_or_create_stream(jetstream::stream::Config {
            name: ATTEMPTS_STREAM.into(),
            subjects: vec!["samocode.attempt.>".into()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: KEEP_EVENTS,
            ..Default::default()
        })
        .await
        .map_err(|e| setup("stream SAMOCODE_ATTEMPTS")(e.into()))?;
    let consumer = work
        .get_or_create_consumer(
            WORKERS,
            jetstream::consumer::pull::Config {
                durable_name: Some(WORKERS.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup("consumer samocode-workers")(e.into()))?;
    Ok((work, attempts, consumer))
}

/// The daemon's side: attempts go to the workers through NATS.
pub struct NatsExecutor {
    link: Link,
}

impl NatsExecutor {
    pub async fn connect(settings: &NatsSettings) -> Result<NatsExecutor, NatsError> {
        Ok(NatsExecutor {
            link: Link::connect(settings).await?,
        })
    }
}

impl AttemptExecutor for NatsExecutor {
    fn engine(&self) -> &'static str {
        "nats"
    }

    fn launch(&self, spec: &AttemptSpec) -> std::io::Result<Launched> {
        Ok(attempt::start(self.link.clone(), spec.clone(), None))
    }

    fn list_live(&self) -> Pending<'_, Vec<LiveAttempt>> {
        Box::pin(async move {
            use futures_util::TryStreamExt;
            let mut subjects = self
                .link
                .attempts
                .info_with_subjects("samocode.attempt.*.events")
                .await
                .map_err(std::io::Error::other)?;
            let mut live = Vec::new();
            while let Some((subject, _count)) =
                subjects.try_next().await.map_err(std::io::Error::other)?
            {
                let key = subject
                    .trim_start_matches("samocode.attempt.")
                    .trim_end_matches(".events")
                    .to_string();
                match self.link.last_event(&key).await? {
                    Some(Event::Result(_)) | None => {}
                    Some(Event::Started { host, .. }) => live.push(LiveAttempt {
                        key,
                        host: Some(host),
                    }),
                    Some(_) => live.push(LiveAttempt { key, host: None }),
                }
            }
            Ok(live)
        })
    }

    fn adopts(&self) -> bool {
        true
    }

    fn adopt<'a>(&'a self, spec: &'a AttemptSpec) -> Pending<'a, Option<Launched>> {
        Box::pin(async move {
            let key = super::spec::attempt_key(&spec.session_dir, &spec.attempt_id);
            // Only an attempt this engine was given, whose result the daemon has not applied
            // (a purged attempt has no events left).
            let Some(queued) = attempt::queued_spec(&self.link, &key).await? else {
                return Ok(None);
            };
            let skip = std::fs::metadata(&spec.files.stdout).map_or(0, |m| m.len());
            Ok(Some(attempt::start(
                self.link.clone(),
                spec.clone(),
                Some(attempt::Adoption { queued, skip }),
            )))
        })
    }

    fn kill_leftovers(&self, _session_dir: &std::path::Path) -> Vec<i32> {
        // The agents run on the workers, which stop them themselves.
        Vec::new()
    }
}
