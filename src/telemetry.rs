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
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;
use crate::config::{OtlpExport, OtlpProtocol};
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
    let provider = config.otlp_traces.as_ref().and_then(|traces| {
        // Headers and resource attributes come from the configuration (environment or
        // config.toml), which is the one place that reads them.
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match traces.protocol {
            OtlpProtocol::Grpc => over_grpc(builder.with_tonic(), traces, config).build(),
            _ => over_http(builder.with_http(), traces, config).build(),
        };
        match exporter {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_id_generator(Ids::default())
                    .with_span_processor(batch(exporter, config.otel_span_delay))
                    .with_resource(resource(config))
                    .build(),
            ),
            Err(error) => {
                crate::cli::output::error_line(format_args!(
                    "samocode: tracing export disabled: {error}"
                ));
                None
            }
        }
    });
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
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
        .otlp_metrics
        .as_ref()
        .and_then(|metrics| meter_provider(config, metrics));
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

thread_local! {
    /// The ids the next span made on this thread takes, set by [`with_ids`].
    static FORCED: std::cell::Cell<Option<(TraceId, SpanId)>> = const { std::cell::Cell::new(None) };
}

/// Random ids, unless [`with_ids`] gives the ones a span must have.
#[derive(Debug, Default)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        match FORCED.get() {
            Some((trace, _)) => trace,
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match FORCED.get() {
            Some((_, span)) => span,
            None => self.0.new_span_id(),
        }
    }
}

/// Runs `make`, whose one root span takes these ids: a span a killed process never ended is
/// ended by the next one under its own ids, so that the spans already exported under it find
/// their parent.
pub fn with_ids<R>(trace: TraceId, span: SpanId, make: impl FnOnce() -> R) -> R {
    FORCED.set(Some((trace, span)));
    let made = make();
    FORCED.set(None);
    made
}

/// One worker thread for the gRPC connections, only when a signal goes over gRPC.
fn grpc_runtime(config: &Config) -> Option<tokio::runtime::Runtime> {
    let grpc = |export: &Option<OtlpExport>| {
        export
            .as_ref()
            .is_some_and(|e| e.protocol == OtlpProtocol::Grpc)
    };
    if !grpc(&config.otlp_traces) && !grpc(&config.otlp_metrics) {
        return None;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-grpc")
        .enable_all()
        .build()
        .inspect_err(|error| {
            crate::cli::output::error_line(format_args!(
                "samocode: OTLP over gRPC disabled: {error}"
            ))
        })
        .ok()
}

/// OTEL_EXPORTER_OTLP_HEADERS as gRPC metadata (the configuration's check has refused any
/// name or value a header cannot carry).
fn grpc_metadata(
    config: &Config,
    export: &OtlpExport,
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &export_headers(config, export) {
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
    metrics: &OtlpExport,
) -> Option<opentelemetry_sdk::metrics::SdkMeterProvider> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match metrics.protocol {
        OtlpProtocol::Grpc => over_grpc(builder.with_tonic(), metrics, config).build(),
        _ => over_http(builder.with_http(), metrics, config).build(),
    };
    match exporter {
        Ok(exporter) => Some(
            opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_reader(match config.otel_metric_interval {
                    Some(interval) => opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
                        .with_interval(interval)
                        .build(),
                    None => opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build(),
                })
                .with_resource(resource(config))
                .build(),
        ),
        Err(error) => {
            crate::cli::output::error_line(format_args!(
                "samocode: metrics export disabled: {error}"
            ));
            None
        }
    }
}

/// A gRPC exporter's builder (spans or metrics) set as the configuration says, the headers
/// as metadata.
fn over_grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    export: &OtlpExport,
    config: &Config,
) -> B {
    let builder = match export.gzip {
        true => builder.with_compression(opentelemetry_otlp::Compression::Gzip),
        false => builder,
    };
    export_config(builder, export).with_metadata(grpc_metadata(config, export))
}

/// The headers every export carries: `OTEL_EXPORTER_OTLP_HEADERS`, and the user and password
/// of the endpoint's address as its `Authorization` (unless a header gives one): the
/// exporter is given the address without them, so that they reach no log of its own.
fn export_headers(config: &Config, export: &OtlpExport) -> Vec<(String, String)> {
    let mut headers = config.otlp_headers.0.clone();
    let given = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    if let Some((_, user, password)) = crate::config::split_userinfo(&export.endpoint)
        && !given
    {
        headers.push((
            "authorization".into(),
            crate::config::basic_auth(&user, &password),
        ));
    }
    headers
}

/// An HTTP exporter's builder (spans or metrics) set as the configuration says.
fn over_http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    export: &OtlpExport,
    config: &Config,
) -> B {
    let builder = match export.gzip {
        true => builder.with_compression(opentelemetry_otlp::Compression::Gzip),
        false => builder,
    };
    export_config(builder, export)
        .with_headers(export_headers(config, export).into_iter().collect())
}

/// The endpoint, the protocol and the timeout, as checked by the configuration (set here,
/// they override the exporter's own reading of the environment, so config.toml counts too).
/// Without gzip no compression is set: the variables then say `none` or nothing, so the
/// exporter's own reading finds none either.
fn export_config<B: WithExportConfig>(builder: B, export: &OtlpExport) -> B {
    let endpoint = crate::config::split_userinfo(&export.endpoint)
        .map_or_else(|| export.endpoint.clone(), |(plain, _, _)| plain);
    let builder = builder
        .with_endpoint(endpoint)
        .with_protocol(match export.protocol {
            OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
            OtlpProtocol::Grpc => opentelemetry_otlp::Protocol::Grpc,
        });
    match export.timeout {
        Some(timeout) => builder.with_timeout(timeout),
        None => builder,
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
/// that an iteration shows up while its session runs; `OTEL_BSP_SCHEDULE_DELAY` (checked
/// with the configuration) still rules when set.
fn batch(
    exporter: opentelemetry_otlp::SpanExporter,
    delay: Option<std::time::Duration>,
) -> opentelemetry_sdk::trace::BatchSpanProcessor {
    let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_scheduled_delay(delay.unwrap_or(std::time::Duration::from_secs(1)));
    opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

impl Telemetry {
    /// Flushes and stops the exporter; its blocking client must not run on a runtime thread.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        if let Some(meters) = self.meters.take() {
            let _ = tokio::task::spawn_blocking(move || meters.shutdown()).await;
        }
    }
}

impl Drop for Telemetry {
    /// The gRPC runtime is let go in the background: dropped the plain way inside another
    /// runtime (an early return from the command's async block), it would panic.
    fn drop(&mut self) {
        if let Some(grpc) = self.grpc.take() {
            grpc.shutdown_background();
        }
    }
}
