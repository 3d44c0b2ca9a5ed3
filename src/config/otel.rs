//! The OpenTelemetry settings: the standard `OTEL_*` variables, or the same names in lower
//! case in `config.toml` (`otel_exporter_otlp_endpoint = "http://..."`).

use std::fmt;

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

/// What the trace exporter is given.
pub(super) struct Otel {
    /// The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else the general endpoint with
    /// `/v1/traces` added, as the specification says.
    pub endpoint: Option<String>,
    /// The metrics URL: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else the general endpoint with
    /// `/v1/metrics` added. Metrics go only where one of the two names a place.
    pub metrics_endpoint: Option<String>,
    pub headers: OtlpHeaders,
    pub resource: Vec<(String, String)>,
    pub service_name: String,
    /// How spans travel (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else the general one).
    pub protocol: OtlpProtocol,
    /// How metrics travel (`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, else the general one).
    pub metrics_protocol: OtlpProtocol,
}

pub(super) fn read(layers: &mut Layers) -> Otel {
    const PROTOCOL: &str = "http/protobuf (the default), http/json or grpc";
    let protocol = |v: &str| match v {
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        "http/json" => Some(OtlpProtocol::HttpJson),
        "grpc" => Some(OtlpProtocol::Grpc),
        _ => None,
    };
    let general = layers.parsed("OTEL_EXPORTER_OTLP_PROTOCOL", None, PROTOCOL, protocol);
    let mut signal_protocol = |name: &str| {
        layers
            .parsed(name, None, PROTOCOL, protocol)
            .or(general)
            .unwrap_or_default()
    };
    let traces_protocol = signal_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    let metrics_protocol = signal_protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");

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
    let traces = endpoint(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        traces_protocol == OtlpProtocol::Grpc,
    );
    let metrics = endpoint(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        metrics_protocol == OtlpProtocol::Grpc,
    );
    let base_grpc = (traces.is_none() && traces_protocol == OtlpProtocol::Grpc)
        || (metrics.is_none() && metrics_protocol == OtlpProtocol::Grpc);
    let base = endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", base_grpc);
    // The general endpoint gets the signal's path over HTTP; gRPC takes it as it is (the
    // service name travels in the request), as the specification says.
    let under_base = |path: &str, protocol: OtlpProtocol| {
        base.as_ref().map(|b| match protocol {
            OtlpProtocol::Grpc => b.clone(),
            _ => format!("{}/v1/{path}", b.trim_end_matches('/')),
        })
    };
    let endpoint = traces.or_else(|| under_base("traces", traces_protocol));
    let metrics_endpoint = metrics.or_else(|| under_base("metrics", metrics_protocol));
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
    Otel {
        endpoint,
        metrics_endpoint,
        headers: OtlpHeaders(headers),
        resource,
        service_name,
        protocol: traces_protocol,
        metrics_protocol,
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
