//! The OpenTelemetry settings: the standard `OTEL_*` variables, or the same names in lower
//! case in `config.toml` (`otel_exporter_otlp_endpoint = "http://..."`).

use std::fmt;
use std::time::Duration;

use super::values::{Layers, key_value_list};

/// OTLP headers (often an authorization token); `Debug` shows their names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtlpHeaders(pub Vec<(String, String)>);

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// How spans and metrics travel: OTLP over HTTP, as protobuf (the default) or JSON, or over
/// gRPC (plaintext HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    #[default]
    HttpProtobuf,
    HttpJson,
    Grpc,
}

/// Where and how one signal (spans or metrics) is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The signal's URL: its own `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`, else the general
    /// endpoint, with `/v1/traces` or `/v1/metrics` added over HTTP and as it is over gRPC.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else the general one.
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`, else the general one (milliseconds); `None`:
    /// the exporter's 10 s.
    pub timeout: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_COMPRESSION` (else the general one) is `gzip`.
    pub gzip: bool,
}

/// What the exporters are given.
pub(super) struct Otel {
    /// Spans go only where an endpoint names a place.
    pub traces: Option<OtlpExport>,
    pub metrics: Option<OtlpExport>,
    pub headers: OtlpHeaders,
    pub resource: Vec<(String, String)>,
    pub service_name: String,
    /// `OTEL_BSP_SCHEDULE_DELAY`: how often ended spans are sent (samocode's default 1 s).
    pub span_delay: Option<Duration>,
    /// `OTEL_METRIC_EXPORT_INTERVAL`: how often metrics are sent (the SDK's 60 s).
    pub metric_interval: Option<Duration>,
}

const PROTOCOL: &str = "http/protobuf (the default), http/json or grpc";
const TIMEOUT: &str = "a whole number of milliseconds from 1 to 86400000 (the default is 10000)";
const COMPRESSION: &str = "gzip or none (the default)";

/// A signal's setting: its own variable (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`), else the
/// general one (`OTEL_EXPORTER_OTLP_TIMEOUT`). Both are checked, so a bad value is reported
/// even where the other wins.
fn per_signal<T: Copy>(
    layers: &mut Layers,
    setting: &str,
    expected: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> [Option<T>; 2] {
    let general = layers.parsed(
        &format!("OTEL_EXPORTER_OTLP_{setting}"),
        None,
        expected,
        &parse,
    );
    ["TRACES", "METRICS"].map(|signal| {
        layers
            .parsed(
                &format!("OTEL_EXPORTER_OTLP_{signal}_{setting}"),
                None,
                expected,
                &parse,
            )
            .or(general)
    })
}

pub(super) fn read(layers: &mut Layers) -> Otel {
    let protocols = per_signal(layers, "PROTOCOL", PROTOCOL, |v| match v {
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        "http/json" => Some(OtlpProtocol::HttpJson),
        "grpc" => Some(OtlpProtocol::Grpc),
        _ => None,
    })
    .map(Option::unwrap_or_default);
    let timeouts = per_signal(layers, "TIMEOUT", TIMEOUT, |v| {
        v.parse::<u64>()
            .ok()
            .filter(|ms| (1..=86_400_000).contains(ms))
            .map(Duration::from_millis)
    });
    let gzip = per_signal(layers, "COMPRESSION", COMPRESSION, |v| match v {
        "gzip" => Some(true),
        "none" => Some(false),
        _ => None,
    })
    .map(|g| g.unwrap_or(false));

    // gRPC goes in plaintext HTTP/2 (no TLS stack is built for it): an https address with
    // grpc is refused rather than sent in the clear or dropped.
    let mut endpoint = |name: &str, grpc: bool| {
        let (expected, schemes): (&'static str, &[&str]) = if grpc {
            (
                "an http URL, such as http://localhost:4317 (gRPC export is plaintext; for an \
                 https collector use http/protobuf)",
                &["http"],
            )
        } else {
            (
                "an http or https URL, such as http://localhost:4318",
                &["http", "https"],
            )
        };
        layers.parsed(name, None, expected, |v| {
            url::Url::parse(v)
                .ok()
                .filter(|u| schemes.contains(&u.scheme()))
                .map(|_| v.to_string())
        })
    };
    let grpc = protocols.map(|p| p == OtlpProtocol::Grpc);
    let own = [
        endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc[0]),
        endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", grpc[1]),
    ];
    let base_grpc = (own[0].is_none() && grpc[0]) || (own[1].is_none() && grpc[1]);
    let base = endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", base_grpc);
    // The general endpoint gets the signal's path over HTTP; gRPC takes it as it is (the
    // service name travels in the request), as the specification says.
    let [traces, metrics] = [(0, "traces"), (1, "metrics")].map(|(i, path)| {
        let endpoint = own[i].clone().or_else(|| {
            base.as_ref().map(|b| match protocols[i] {
                OtlpProtocol::Grpc => b.clone(),
                _ => format!("{}/v1/{path}", b.trim_end_matches('/')),
            })
        })?;
        Some(OtlpExport {
            endpoint,
            protocol: protocols[i],
            timeout: timeouts[i],
            gzip: gzip[i],
        })
    });
    let headers = layers
        .parsed(
            "OTEL_EXPORTER_OTLP_HEADERS",
            None,
            "name=value pairs separated by commas, names and values that HTTP headers can carry",
            header_list,
        )
        .unwrap_or_default();
    let resource = layers
        .parsed(
            "OTEL_RESOURCE_ATTRIBUTES",
            None,
            "key=value pairs separated by commas",
            key_value_list,
        )
        .unwrap_or_default();
    let service_name = layers
        .text("OTEL_SERVICE_NAME")
        .unwrap_or_else(|| "samocode".into());
    let millis = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|ms| (1..=86_400_000).contains(ms))
            .map(Duration::from_millis)
    };
    const INTERVAL: &str = "a whole number of milliseconds from 1 to 86400000";
    let span_delay = layers.parsed("OTEL_BSP_SCHEDULE_DELAY", None, INTERVAL, millis);
    let metric_interval = layers.parsed("OTEL_METRIC_EXPORT_INTERVAL", None, INTERVAL, millis);
    Otel {
        traces,
        metrics,
        headers: OtlpHeaders(headers),
        resource,
        service_name,
        span_delay,
        metric_interval,
    }
}

/// `key_value_list`, each pair a valid HTTP header (and so gRPC metadata): a header the
/// exporter would drop is refused here instead.
fn header_list(text: &str) -> Option<Vec<(String, String)>> {
    key_value_list(text)?
        .into_iter()
        .map(|(name, value)| {
            http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            http::HeaderValue::from_str(&value).ok()?;
            Some((name, value))
        })
        .collect()
}
