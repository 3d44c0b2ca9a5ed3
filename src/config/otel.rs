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

/// How spans travel: OTLP over HTTP, as protobuf (the default) or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    #[default]
    HttpProtobuf,
    HttpJson,
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
    pub protocol: OtlpProtocol,
}

pub(super) fn read(layers: &mut Layers) -> Otel {
    let url = |v: &str| {
        url::Url::parse(v)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|_| v.to_string())
    };
    const URL: &str = "an http or https URL, such as http://localhost:4318";
    let traces = layers.parsed("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None, URL, url);
    let base = layers.parsed("OTEL_EXPORTER_OTLP_ENDPOINT", None, URL, url);
    let metrics = layers.parsed("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None, URL, url);
    let under_base = |path: &str| {
        base.as_ref()
            .map(|b| format!("{}/v1/{path}", b.trim_end_matches('/')))
    };
    let endpoint = traces.or_else(|| under_base("traces"));
    let metrics_endpoint = metrics.or_else(|| under_base("metrics"));
    // gRPC is not built in (it would bring a second HTTP/2 stack); it is said, not ignored.
    const PROTOCOL: &str =
        "http/protobuf (the default) or http/json; this build does not export over grpc";
    let protocol = |v: &str| match v {
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        "http/json" => Some(OtlpProtocol::HttpJson),
        _ => None,
    };
    let general = layers.parsed("OTEL_EXPORTER_OTLP_PROTOCOL", None, PROTOCOL, protocol);
    let protocol = layers
        .parsed(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            None,
            PROTOCOL,
            protocol,
        )
        .or(general)
        .unwrap_or_default();
    let headers = layers
        .parsed(
            "OTEL_EXPORTER_OTLP_HEADERS",
            None,
            "name=value pairs separated by commas",
            key_value_list,
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
        protocol,
    }
}
