//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`.
//!
//! Histograms are bucketed (bounded memory) and an upkeep thread drains their pending
//! samples every few seconds, so nothing grows when nobody scrapes.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds in seconds for latency histograms: fine below 30 ms, where we live.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.015, 0.020, 0.025, 0.030,
    0.040, 0.050, 0.075, 0.100, 0.250, 0.500, 1.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first call (later calls, e.g. several servers in one test
/// process, share it). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}
