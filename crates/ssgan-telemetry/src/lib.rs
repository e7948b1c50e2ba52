//! Logging to stderr, and OpenTelemetry traces and metrics over OTLP/gRPC, for every ssgan
//! process.
//!
//! [`init`] always installs the log output. The OTLP export starts only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces or metrics variant of it) is set. Then the
//! standard `OTEL_*` variables of the OpenTelemetry SDK apply, such as `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_METRIC_EXPORT_INTERVAL` and `OTEL_RESOURCE_ATTRIBUTES`. The
//! last can carry the `k8s.*` attributes that a pod spec fills from the downward API.
//!
//! Spans are exported from the project's own crates only, at debug level and above, so
//! that they do not clutter the log at its default level:
//! - `run` (one per attempt of a rank) and `step` (one per generator step, a root span of
//!   its own so that a ratio sampler keeps whole steps), with `ssgan.run_id` and
//!   `ssgan.rank`;
//! - `data`, `d_forward_backward` and `g_forward_backward` inside a step;
//! - `checkpoint.stage` and `checkpoint.upload`; `eval` for an FID evaluation.
//!
//! The metrics are in [`metrics`].
//!
//! TODO(telemetry): the collectives and the optimizer inside a step have no spans of their
//! own: a slow ring shows in the `ssgan.collective.duration` metric, but a trace shows only
//! a long `d_forward_backward` or `g_forward_backward`. The plan is a span per gradient
//! bucket in ssgan-model's step, sampled with the step.

pub mod metrics;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Runtime;
use tracing::Metadata;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Variables whose presence turns the OTLP export on.
const ENDPOINT_VARIABLES: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// Errors of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(
        "cannot build the OTLP exporter for {endpoint}: {source}. Check the OTEL_EXPORTER_OTLP_* variables."
    )]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed telemetry. Call [`Telemetry::shutdown`] before the process exits, so that
/// the last spans and metrics are sent.
pub struct Telemetry {
    export: Option<Export>,
}

/// The OTLP providers, with the runtime that drives their gRPC connections.
struct Export {
    endpoint: String,
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    // Declared last so that it drops after the providers that use it.
    runtime: Runtime,
}

/// Installs the log output on stderr and, when an OTLP endpoint is configured, the export
/// of spans and metrics as `service`.
///
/// `RUST_LOG` overrides `default_filter` for the log output; the export has its own filter
/// (see the crate documentation). Call this once, before other threads are started that
/// log, and after any code that must run while the process has a single thread, because
/// the export runs on threads of its own.
pub fn init(service: &str, default_filter: &str) -> Result<Telemetry, TelemetryError> {
    let export = match otlp_endpoint() {
        Some(endpoint) => Some(Export::start(service, endpoint)?),
        None => None,
    };
    let spans = export.as_ref().map(|export| {
        let tracer = export.tracer.tracer("ssgan");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(is_exported_span))
    });
    tracing_subscriber::registry()
        .with(log_layer(default_filter))
        .with(spans)
        .try_init()?;
    if let Some(export) = &export {
        tracing::debug!(endpoint = %export.endpoint, service, "exporting spans and metrics over OTLP");
    }
    Ok(Telemetry { export })
}

fn log_layer(default_filter: &str) -> impl Layer<Registry> + Send + Sync {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter)
}

/// Returns the configured endpoint, the general one first.
fn otlp_endpoint() -> Option<String> {
    ENDPOINT_VARIABLES
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

/// Selects the spans of the project's crates at debug level and above.
fn is_exported_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span()
        && metadata.target().starts_with("ssgan")
        && *metadata.level() <= tracing::Level::DEBUG
}

impl Export {
    fn start(service: &str, endpoint: String) -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(TelemetryError::Runtime)?;
        // tonic spawns each channel's worker task on the runtime it is created in.
        let providers = {
            let _context = runtime.enter();
            build_providers(resource(service))
        };
        let (tracer, meter) = providers.map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            source,
        })?;
        opentelemetry::global::set_meter_provider(meter.clone());
        Ok(Self {
            endpoint,
            tracer,
            meter,
            runtime,
        })
    }
}

/// Returns the resource of this process's spans and metrics. `OTEL_SERVICE_NAME`, which
/// the builder reads, wins over `service`.
fn resource(service: &str) -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        return builder.build();
    }
    builder.with_service_name(service.to_owned()).build()
}

/// Builds the tracer provider with a batch span exporter and the meter provider with a
/// periodic metric exporter, both over OTLP/gRPC.
fn build_providers(
    resource: Resource,
) -> Result<(SdkTracerProvider, SdkMeterProvider), opentelemetry_otlp::ExporterBuildError> {
    let spans = SpanExporter::builder().with_tonic().build()?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = MetricExporter::builder().with_tonic().build()?;
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}

impl Telemetry {
    /// Sends the spans and metrics still buffered and stops the export. Failures are
    /// logged, since the process is ending anyway.
    pub fn shutdown(self) {
        let Some(export) = self.export else {
            return;
        };
        if let Err(error) = export.tracer.shutdown() {
            tracing::warn!(endpoint = %export.endpoint, %error, "failed to send the last spans");
        }
        if let Err(error) = export.meter.shutdown() {
            tracing::warn!(endpoint = %export.endpoint, %error, "failed to send the last metrics");
        }
        export.runtime.shutdown_background();
    }
}
