//! Where attempts run: the engine (`local`, `nats`, `kubernetes`) and its settings. The NATS
//! credentials (a token, or the path of an nkey seed file) are secrets: they come from the
//! environment or `config.toml`, never from the command line, and no log line or error
//! shows them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{Layers, duration_between};
use super::{ConfigError, Sources};

/// The engine that runs the daemon's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// Agent processes on this machine.
    #[default]
    Local,
    /// `samocode worker` processes pulling attempts from NATS JetStream.
    Nats,
    /// One Kubernetes Job per attempt (a build with the `kube` feature).
    Kubernetes,
}

impl Engine {
    fn parse(text: &str) -> Option<Engine> {
        match text {
            "local" => Some(Engine::Local),
            "nats" => Some(Engine::Nats),
            "kubernetes" | "kube" => Some(Engine::Kubernetes),
            _ => None,
        }
    }
}

/// How to reach NATS.
#[derive(Clone)]
pub struct NatsSettings {
    pub url: String,
    pub auth: NatsAuth,
    /// How long an attempt taken by a worker that stopped reporting stays with it before
    /// JetStream gives it to another worker.
    pub ack_wait: Duration,
}

/// NATS credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// SAMOCODE_NATS_TOKEN.
    Token(String),
    /// SAMOCODE_NATS_NKEY_FILE: a file holding an nkey seed.
    NkeyFile(PathBuf),
}

impl fmt::Debug for NatsSettings {
    // The token is a secret: it never reaches a log line, even through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            NatsAuth::None => "none".to_string(),
            NatsAuth::Token(_) => "token <redacted>".to_string(),
            NatsAuth::NkeyFile(path) => format!("nkey file {}", path.display()),
        };
        f.debug_struct("NatsSettings")
            .field("url", &super::values::without_userinfo(&self.url))
            .field("auth", &auth)
            .field("ack_wait", &self.ack_wait)
            .finish()
    }
}

/// What a Kubernetes Job of an attempt is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// The namespace of the Jobs (SAMOCODE_KUBE_NAMESPACE, default `samocode`).
    pub namespace: String,
    /// The image whose entry point is `samocode attempt-run` (SAMOCODE_KUBE_IMAGE).
    pub image: String,
    /// The Secret whose keys become the agent's environment (SAMOCODE_KUBE_SECRET).
    pub secret: Option<String>,
}

/// The engine and the settings it needs.
#[derive(Debug, Clone, Default)]
pub struct RemoteSettings {
    pub engine: Engine,
    /// Set when a NATS URL is given (the `nats` engine and `samocode worker` need it).
    pub nats: Option<NatsSettings>,
    pub kube: Option<KubeSettings>,
}

/// The engine settings from the flags (`--executor`, `--nats-url`), the environment and
/// `config.toml`.
pub(super) fn read(
    layers: &mut Layers,
    sources: &Sources,
    executor_flag: Option<&String>,
    nats_url_flag: Option<&String>,
) -> RemoteSettings {
    let engine = layers
        .parsed(
            "SAMOCODE_EXECUTOR",
            executor_flag.map(|v| ("--executor", v)),
            match cfg!(feature = "kube") {
                true => "local, nats or kubernetes",
                false => {
                    "local or nats (kubernetes needs a samocode built with `--features kube`; the Dockerfile's --build-arg SAMOCODE_FEATURES=kube)"
                }
            },
            |text| Engine::parse(text).filter(|e| cfg!(feature = "kube") || *e != Engine::Kubernetes),
        )
        .unwrap_or_default();
    let url = layers.parsed(
        "SAMOCODE_NATS_URL",
        nats_url_flag.map(|v| ("--nats-url", v)),
        "a NATS server URL such as nats://127.0.0.1:4222 (several separated by commas)",
        |v| {
            v.split(',')
                .all(|one| {
                    url::Url::parse(one.trim())
                        .is_ok_and(|u| matches!(u.scheme(), "nats" | "tls" | "ws" | "wss"))
                })
                .then(|| v.to_string())
        },
    );
    let token = layers.text("SAMOCODE_NATS_TOKEN");
    let nkey = layers.get("SAMOCODE_NATS_NKEY_FILE", None);
    let nkey_file = nkey.as_ref().and_then(|found| {
        let path = super::placed(found, sources);
        if path.is_file() {
            Some(path)
        } else {
            layers.bad(
                found,
                "SAMOCODE_NATS_NKEY_FILE",
                "an existing file holding an nkey seed",
            );
            None
        }
    });
    let auth = match (token, nkey_file) {
        (Some(_), Some(_)) => {
            layers.problems.push(ConfigError::BadValue {
                key: "SAMOCODE_NATS_TOKEN".into(),
                value: "<hidden: it holds a secret>".into(),
                bare: false,
                origin: "the environment or config.toml",
                expected: "either a token or an nkey file (SAMOCODE_NATS_NKEY_FILE), not both",
            });
            NatsAuth::None
        }
        (Some(token), None) => NatsAuth::Token(token),
        (None, Some(file)) => NatsAuth::NkeyFile(file),
        (None, None) => NatsAuth::None,
    };
    let ack_wait = layers
        .parsed(
            "SAMOCODE_NATS_ACK_WAIT",
            None,
            "a duration from 1s to 1 hour, such as 30s",
            duration_between(Duration::from_secs(1), Duration::from_secs(3600)),
        )
        .unwrap_or(Duration::from_secs(30));
    if engine == Engine::Nats && url.is_none() {
        layers.problems.push(ConfigError::Incomplete {
            key: "SAMOCODE_EXECUTOR",
            origin: "the command line, the environment or config.toml",
            missing: "SAMOCODE_NATS_URL (or --nats-url)",
        });
    }
    let namespace = layers
        .text("SAMOCODE_KUBE_NAMESPACE")
        .unwrap_or_else(|| "samocode".into());
    let image = layers.text("SAMOCODE_KUBE_IMAGE");
    let secret = layers.text("SAMOCODE_KUBE_SECRET");
    if engine == Engine::Kubernetes && image.is_none() {
        layers.problems.push(ConfigError::Incomplete {
            key: "SAMOCODE_EXECUTOR",
            origin: "the command line, the environment or config.toml",
            missing: "SAMOCODE_KUBE_IMAGE (the image that runs samocode attempt-run)",
        });
    }
    RemoteSettings {
        engine,
        nats: url.map(|url| NatsSettings {
            url,
            auth,
            ack_wait,
        }),
        kube: image.map(|image| KubeSettings {
            namespace,
            image,
            secret,
        }),
    }
}
