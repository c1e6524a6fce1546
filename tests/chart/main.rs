//! The `chart` test binary: the Helm chart and what ships with it, one module per subject.
//!
//! - [`deploy`]: the chart installed on the real apiserver, the operator with the chart's
//!   ServiceAccount, leader election between processes, `/metrics` and the probes.
//! - [`alerts`]: the chart's alert rules under `promtool` (no control plane).
//! - [`dashboard`]: the Grafana dashboard's ConfigMap, its queries under `promtool`, and their
//!   metric names against a running operator's `/metrics`.
//! - [`argo_health`]: the Argo CD health script under `lua5.1`, on fixtures and on live objects.
//! - [`uninstall`]: `docs/uninstall.md` followed on a control plane of the test's own.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod argo_health;
mod dashboard;
mod deploy;
mod uninstall;
