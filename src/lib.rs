//! nuclia-token-operator: Nuclia credentials as Kubernetes resources.
//!
//! The library holds all logic; the binaries in `src/bin` only wire it together.
//! - [`crd`]: the two custom resources and the names shared by everything else.
//! - [`nuclia`]: the typed HTTP client for the Nuclia API.
//! - [`fake`]: `nuclia-fake`, an in-memory Nuclia API server for tests, the demo and users' CI.

pub mod crd;
pub mod fake;
pub mod nuclia;
