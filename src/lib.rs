//! nuclia-token-operator: Nuclia credentials as Kubernetes resources.
//!
//! The library holds all logic; the binaries in `src/bin` only wire it together.
//! - [`clock`]: the engine's clock (real time; a simulation moves it).
//! - [`crd`]: the custom resources and the names shared by everything else.
//! - [`cluster_credential`]: `NucliaClusterCredential`, its namespace policy and its resolution.
//! - [`crds`]: every CRD as installed, and the generated YAML files.
//! - [`duration`]: the Go-style duration syntax of the CRDs and the flags.
//! - [`nuclia`]: the typed HTTP client for the Nuclia API.
//! - [`fake`]: `nuclia-fake`, an in-memory Nuclia API server for tests, the demo and users' CI.
//! - [`lifecycle`]: the pure decision of what to do next with a credential, shared by every kind.
//! - [`runtime`]: configuration, logging, `/metrics` `/healthz` `/readyz`, leader election.

pub mod clock;
pub mod cluster_credential;
pub mod controller;
pub mod crd;
pub mod crds;
pub mod duration;
pub mod error;
pub mod fake;
pub mod issuer;
pub mod lifecycle;
pub mod nuclia;
pub mod runtime;
