//! The `cluster` test binary: the operator's behaviour, one module per subject, sharing one
//! build and, under `tests/run.sh`, the one local control plane of the run (`tests/common`).
//! Each test has its own namespace, its own `nuclia-fake` and its own operator process, so the
//! modules' tests run side by side (libtest's threads) as they did in separate binaries.
//!
//! - [`nuclia_client`]: the Nuclia client against `nuclia-fake` over loopback HTTP (no cluster).
//! - [`crds`]: the CRDs on a real kube-apiserver: current, installable, explained, validated.
//! - [`runtime`]: the HTTP endpoints, and leader election against the apiserver.
//! - [`operator`]: a personal token and a KB key from issue to deletion, conflicts, bad input.
//! - [`every_kind`]: the scenarios every kind passes (repair, crash, Orphan, abandon).
//! - [`kb_keys`], [`nua_keys`], [`cluster_credentials`], [`secret_formats`]: one kind or
//!   feature each.
//! - [`regressions`]: the defects of issue 26, as a user meets them.
//! - [`windows`]: rotation windows and `spec.suspend`.
//!
//! `tests/run.sh kb_keys::` (or any part of a test's path) runs a part of it.

#[path = "../common/mod.rs"]
mod common;

mod cluster_credentials;
mod crds;
mod every_kind;
mod kb_keys;
mod nua_keys;
mod nuclia_client;
mod operator;
mod regressions;
mod runtime;
mod secret_formats;
mod windows;
