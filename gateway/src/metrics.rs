//! Prometheus metrics: calls by method and gRPC status, call latency by method, blob bytes in and
//! out, whether CometBFT is reachable, and the seconds left until each certificate the gateway
//! depends on expires (its TLS server certificate, its org's root CA, the member certificate it
//! signs key deliveries with), so an alert fires well before a certificate takes the gateway
//! down. Served as text on `/metrics`.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cert: &'static str,
}

/// A certificate the gateway depends on: the `cert` label of
/// `neurodata_gateway_certificate_expiry_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedCertificate {
    /// Its TLS server certificate (`tls_cert`): clients refuse the gateway once it expires.
    Server,
    /// Its org's current root CA, as the chain records it: every member certificate of the org,
    /// the gateway's own included, dies with it.
    OrgCa,
    /// The member certificate it signs key deliveries with (`delivery_cert`): deliveries stop
    /// once the chain refuses it.
    Delivery,
}

impl UsedCertificate {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            UsedCertificate::Server => "server",
            UsedCertificate::OrgCa => "org_ca",
            UsedCertificate::Delivery => "delivery",
        }
    }
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
    cert_expiry: Family<CertLabels, Gauge>,
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
        let cert_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "seconds until a certificate the gateway uses expires (negative: expired), by cert: \
             server (TLS), org_ca (the org's root CA on chain), delivery (key-delivery signer)",
            cert_expiry.clone(),
        );
        Arc::new(Metrics {
            registry,
            calls,
            latency,
            blob_bytes_in,
            blob_bytes_out,
            chain_up,
            cert_expiry,
        })
    }

    /// Sets the seconds from `now` until `cert` expires at `not_after` (Unix seconds).
    pub fn set_certificate_expiry(&self, cert: UsedCertificate, not_after: i64, now: i64) {
        self.cert_expiry
            .get_or_create(&CertLabels { cert: cert.label() })
            .set(not_after.saturating_sub(now));
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

/// The notAfter (Unix seconds) of the first certificate in a PEM file's bytes.
pub fn pem_not_after(pem: &[u8]) -> Result<i64, String> {
    let der = openssl::x509::X509::from_pem(pem)
        .and_then(|x| x.to_der())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    neurodata_abci::membership::certificate::validity(&der)
        .map(|(_, not_after)| not_after)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_seconds_until_each_used_certificate_expires() {
        let m = Metrics::new();
        m.set_certificate_expiry(UsedCertificate::Server, 1_000, 400);
        m.set_certificate_expiry(UsedCertificate::OrgCa, 100, 400);
        m.set_certificate_expiry(UsedCertificate::Delivery, 7_000, 400);
        m.set_certificate_expiry(UsedCertificate::Server, 1_000, 500);
        let text = m.render();
        for line in [
            "neurodata_gateway_certificate_expiry_seconds{cert=\"server\"} 500",
            "neurodata_gateway_certificate_expiry_seconds{cert=\"org_ca\"} -300",
            "neurodata_gateway_certificate_expiry_seconds{cert=\"delivery\"} 6600",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn reads_the_expiry_of_a_pem_certificate() {
        use neurodata_certs::{OrgCa, Validity};
        let ca = OrgCa::create("medlab", "Medlab", Validity::days_from(1_800_000_000, 2)).unwrap();
        let server = ca
            .issue_server("gw", &["localhost"], Validity::days_from(1_800_000_000, 1))
            .unwrap();
        assert_eq!(
            pem_not_after(&server.cert.to_pem().unwrap()),
            Ok(1_800_000_000 + 86_400)
        );
        assert!(pem_not_after(b"junk").is_err());
    }

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
