//! Process plumbing: configuration, telemetry, HTTP endpoints, leader election.
