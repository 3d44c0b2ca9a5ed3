//! Logs and traces, set up in one place.
//!
//! Logs go to standard error, filtered by RUST_LOG (default: samocode at info; from the
//! environment or config.toml, checked by the configuration), and for the daemon also to a
//! rotating file in its state directory, as text or JSON (`logging`). When an OTLP endpoint
//! is configured, spans are also exported over OTLP with the batch processor: over HTTP with
//! the blocking client (the async client panics in the exporter's own thread), or over gRPC,
//! whose connection lives on a small runtime of its own (the exporter's thread has none). The
//! `ractor` target is kept out of the OpenTelemetry layer, or every actor would become one
//! endless trace.

mod logging;
pub mod metrics;
mod rotating;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;
use crate::config::OtlpProtocol;
pub use logging::{LOG_FILE, LogFormat, Logging};

/// Keeps the exporter alive; call [`Telemetry::shutdown`] before exiting to flush spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    /// Drives the gRPC exporters' connections, when one is gRPC.
    grpc: Option<tokio::runtime::Runtime>,
}

/// Installs the global subscriber; call it before the tokio runtime starts, because the
/// exporter builds a blocking HTTP client. `logging` says how quiet the command's logs are and
/// whether they also go to a file (the daemon's).
pub fn init(config: &Config, logging: Logging) -> Telemetry {
    let logs = logging::layers(config.log_filter.as_deref(), config.log_format, &logging);

    let grpc = grpc_runtime(config);
    // A gRPC channel starts its connection task on the runtime it is built in.
    let _entered = grpc.as_ref().map(|runtime| runtime.enter());
    let provider = config.otlp_endpoint.as_ref().and_then(|endpoint| {
        // Headers and resource attributes come from the configuration (environment or
        // config.toml), which is the one place that reads them.
        let exporter = match config.otlp_protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_metadata(grpc_metadata(config))
                .build(),
            http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(http_protocol(http))
                .with_endpoint(endpoint.clone())
                .with_headers(config.otlp_headers.0.iter().cloned().collect())
                .build(),
        };
        match exporter {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_span_processor(batch(exporter))
                    .with_resource(resource(config))
                    .build(),
            ),
            Err(error) => {
                eprintln!("samocode: tracing export disabled: {error}");
                None
            }
        }
    });
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("samocode"))
            .with_filter(EnvFilter::new("samocode=info,ractor=off"))
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    let meters = config
        .otlp_metrics_endpoint
        .as_ref()
        .and_then(|endpoint| meter_provider(config, endpoint));
    if let Some(meters) = &meters {
        opentelemetry::global::set_meter_provider(meters.clone());
        metrics::enable();
    }
    drop(_entered);
    Telemetry {
        provider,
        meters,
        grpc,
    }
}

/// One worker thread for the gRPC connections, only when a signal goes over gRPC.
fn grpc_runtime(config: &Config) -> Option<tokio::runtime::Runtime> {
    let grpc =
        |endpoint: &Option<String>, protocol| endpoint.is_some() && protocol == OtlpProtocol::Grpc;
    if !grpc(&config.otlp_endpoint, config.otlp_protocol)
        && !grpc(&config.otlp_metrics_endpoint, config.otlp_metrics_protocol)
    {
        return None;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-grpc")
        .enable_all()
        .build()
        .inspect_err(|error| eprintln!("samocode: OTLP over gRPC disabled: {error}"))
        .ok()
}

/// OTEL_EXPORTER_OTLP_HEADERS as gRPC metadata (the configuration's check has refused any
/// name or value a header cannot carry).
fn grpc_metadata(config: &Config) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &config.otlp_headers.0 {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers)
}

/// The metrics pipeline: an OTLP exporter read every `OTEL_METRIC_EXPORT_INTERVAL` (60 s).
fn meter_provider(
    config: &Config,
    endpoint: &str,
) -> Option<opentelemetry_sdk::metrics::SdkMeterProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = match config.otlp_metrics_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.to_string())
            .with_metadata(grpc_metadata(config))
            .build(),
        http => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(http_protocol(http))
            .with_endpoint(endpoint.to_string())
            .with_headers(config.otlp_headers.0.iter().cloned().collect())
            .build(),
    };
    match exporter {
        Ok(exporter) => Some(
            opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource(config))
                .build(),
        ),
        Err(error) => {
            eprintln!("samocode: metrics export disabled: {error}");
            None
        }
    }
}

fn http_protocol(protocol: OtlpProtocol) -> opentelemetry_otlp::Protocol {
    match protocol {
        OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    }
}

fn resource(config: &Config) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_attributes(
            config
                .otel_resource
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(config.otel_service_name.clone())
        .build()
}

/// The batch processor, exporting what ended within the last second (not the SDK's 5 s), so
/// that an iteration shows up while its session runs; `OTEL_BSP_SCHEDULE_DELAY` still rules
/// when set.
fn batch(
    exporter: opentelemetry_otlp::SpanExporter,
) -> opentelemetry_sdk::trace::BatchSpanProcessor {
    let mut config = opentelemetry_sdk::trace::BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        config = config.with_scheduled_delay(std::time::Duration::from_secs(1));
    }
    opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

impl Telemetry {
    /// Flushes and stops the exporter; its blocking client must not run on a runtime thread.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        if let Some(meters) = self.meters {
            let _ = tokio::task::spawn_blocking(move || meters.shutdown()).await;
        }
        if let Some(grpc) = self.grpc {
            grpc.shutdown_background();
        }
    }
}
