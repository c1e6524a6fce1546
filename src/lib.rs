//! nuclia-token-operator: Nuclia credentials as Kubernetes resources.
//!
//! The library holds all logic; the binaries in `src/bin` only wire it together. The in-memory
//! Nuclia server the tests run against is the `nuclia-fake` crate (`crates/nuclia-fake`), a
//! dev-dependency of this one.
//! - [`clock`]: the engine's clock (real time; a simulation moves it).
//! - [`crd`]: the custom resources and the names shared by everything else.
//! - [`cluster_credential`]: `NucliaClusterCredential`, its namespace policy and its resolution.
//! - [`crds`]: every CRD as installed, and the generated YAML files.
//! - [`duration`]: the Go-style duration syntax of the CRDs and the flags.
//! - [`nuclia`]: the typed HTTP client for the Nuclia API.
//! - [`issuer`]: minting and revoking at Nuclia, one file per credential kind.
//! - [`controller`]: the controllers of every kind around one lifecycle engine.
//! - [`error`]: the library's error, with a bounded label per variant.
//! - [`lifecycle`]: the pure decision of what to do next with a credential, shared by every kind.
//! - [`runtime`]: configuration, logging, `/metrics` `/healthz` `/readyz`, leader election.
//! - [`windows`]: rotation windows, weekly periods in a time zone when scheduled renewals run.

pub mod clock;
pub mod cluster_credential;
pub mod controller;
pub mod crd;
pub mod crds;
pub mod duration;
pub mod error;
pub mod issuer;
pub mod lifecycle;
pub mod nuclia;
pub mod runtime;
pub mod windows;
