//! Typed client for the Nuclia HTTP API.
