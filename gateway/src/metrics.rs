//! Prometheus metrics: calls by method and gRPC status, call latency by method, blob bytes in and
//! out, and whether CometBFT is reachable. Served as text on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Blob bytes received.
    pub blob_bytes_in: Counter,
    /// Blob bytes sent.
    pub blob_bytes_out: Counter,
    /// 1 while CometBFT answers.
    pub chain_up: Gauge,
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("neurodata_gateway");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let (blob_bytes_in, blob_bytes_out, chain_up) =
            (Counter::default(), Counter::default(), Gauge::default());
        registry.register(
            "grpc_calls",
            "gRPC calls by method and status",
            calls.clone(),
        );
        registry.register(
            "grpc_call_seconds",
            "gRPC call latency until response headers",
            latency.clone(),
        );
        registry.register(
            "blob_bytes_in",
            "blob bytes uploaded",
            blob_bytes_in.clone(),
        );
        registry.register(
            "blob_bytes_out",
            "blob bytes downloaded",
            blob_bytes_out.clone(),
        );
        registry.register("chain_up", "1 while CometBFT RPC answers", chain_up.clone());
        Arc::new(Metrics {
            registry,
            calls,
            latency,
            blob_bytes_in,
            blob_bytes_out,
            chain_up,
        })
    }

    /// Records one call.
    pub fn observe(&self, method: &str, code: i32, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: format!("{:?}", tonic::Code::from(code)),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_calls_by_method_and_code() {
        let m = Metrics::new();
        m.observe(
            "/neurodata.gateway.v1.Tx/Broadcast",
            0,
            Duration::from_millis(3),
        );
        m.observe(
            "/neurodata.gateway.v1.Tx/Broadcast",
            14,
            Duration::from_millis(1),
        );
        let text = m.render();
        assert!(text.contains("neurodata_gateway_grpc_calls_total{method=\"/neurodata.gateway.v1.Tx/Broadcast\",code=\"Ok\"} 1"), "{text}");
        assert!(
            text.contains("neurodata_gateway_grpc_call_seconds_count"),
            "{text}"
        );
    }
}
