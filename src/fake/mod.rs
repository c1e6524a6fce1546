//! `nuclia-fake`: an in-memory Nuclia API server.
