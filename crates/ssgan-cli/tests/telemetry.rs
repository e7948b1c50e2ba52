//! OTLP export: `ssgan train` sends its spans and metrics to a collector on 127.0.0.1 when
//! OTEL_EXPORTER_OTLP_ENDPOINT is set.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tonic::{Request, Response, Status};

mod common;

use common::{repo, ssgan};

/// Everything the collector received.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts an OTLP/gRPC collector on 127.0.0.1 and returns its endpoint URL.
fn start_collector(runtime: &tokio::runtime::Runtime, received: &Received) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    runtime.spawn(server);
    endpoint
}

fn string_value(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::IntValue(number) => Some(number.to_string()),
        _ => None,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let found = attributes.iter().find(|attribute| attribute.key == key)?;
    string_value(&found.value)
}

/// Builds `ssgan train` of a width-2 model for `steps` steps into `storage`.
fn train(storage: &Path, run_id: &str, steps: u64) -> Command {
    let config = repo().join("configs/cifar10-cpu-demo.toml");
    let mut command = ssgan();
    command
        .args([
            "--threads",
            "2",
            "train",
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--storage", storage.to_str().unwrap(), "--run-id", run_id])
        .args(["--set", "model.ch=2", "--set", "train.batch_size=8"])
        .args(["--set", "loss.rotated_batch_size=8"])
        .arg(format!("--steps={steps}"));
    command
}

#[test]
fn train_exports_spans_and_metrics() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received = Received::default();
    let endpoint = start_collector(&runtime, &received);
    let dir = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "traced", 2)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=trainer-0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    let traces = received.traces.lock().unwrap().clone();
    let resource_spans: Vec<_> = traces.iter().flat_map(|t| &t.resource_spans).collect();
    let resource = resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        attribute(&resource.attributes, "service.name").as_deref(),
        Some("ssgan")
    );
    assert_eq!(
        attribute(&resource.attributes, "k8s.pod.name").as_deref(),
        Some("trainer-0")
    );
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let names: BTreeSet<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    for expected in [
        "run",
        "step",
        "data",
        "d_forward_backward",
        "g_forward_backward",
        "checkpoint.stage",
        "checkpoint.upload",
    ] {
        assert!(names.contains(expected), "no {expected} span in {names:?}");
    }
    let steps: Vec<_> = spans.iter().filter(|span| span.name == "step").collect();
    assert_eq!(steps.len(), 2, "{names:?}");
    for step in steps {
        assert!(step.parent_span_id.is_empty(), "a step span has a parent");
        let run_id = attribute(&step.attributes, "ssgan.run_id");
        assert_eq!(run_id.as_deref(), Some("traced"));
    }

    let metrics = received.metrics.lock().unwrap().clone();
    let names: BTreeSet<String> = metrics
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|metric| metric.name.clone())
        .collect();
    for expected in [
        "ssgan.loss_d",
        "ssgan.rotation_accuracy",
        "ssgan.step.duration",
        "ssgan.data_wait.duration",
        "ssgan.collective.duration",
        "ssgan.checkpoint.size",
    ] {
        assert!(
            names.contains(expected),
            "no {expected} metric in {names:?}"
        );
    }
}

#[test]
fn unreachable_collector_leaves_training_intact() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "dark", 1)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let checkpoint = dir
        .path()
        .join("runs/dark/checkpoints/0000000001/MANIFEST.json");
    assert!(checkpoint.is_file(), "{log}");
}
