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

/// What the trace exporter is given.
pub(super) struct Otel {
    /// The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else the general endpoint with
    /// `/v1/traces` added, as the specification says.
    pub endpoint: Option<String>,
    pub headers: OtlpHeaders,
    pub resource: Vec<(String, String)>,
    pub service_name: String,
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
    let endpoint =
        traces.or_else(|| base.map(|b| format!("{}/v1/traces", b.trim_end_matches('/'))));
    // This build exports over HTTP with protobuf only; another protocol is said, not ignored.
    layers.parsed(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        None,
        "http/protobuf (this build exports OTLP over HTTP with protobuf only)",
        |v| (v == "http/protobuf").then_some(()),
    );
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
        headers: OtlpHeaders(headers),
        resource,
        service_name,
    }
}
