//! The operator's clock: real time, unless the lifecycle simulation runs the engine on a clock
//! of its own.
//!
//! Every "now" that a decision depends on (due times, grace ends, deadlines, the age of a
//! shared list) is read here, so the simulation (`controller::tests::sim`) can move time by
//! days in a millisecond and replay a seed exactly. The simulated time is task-local: only the
//! task that set it sees it, tests running side by side keep the real clock, and production
//! never sets one.

use chrono::{DateTime, Utc};
use std::future::Future;

tokio::task_local! {
    static FROZEN: DateTime<Utc>;
}

/// Now, as the engine sees it.
pub fn now() -> DateTime<Utc> {
    FROZEN.try_with(|t| *t).unwrap_or_else(|_| Utc::now())
}

/// Runs `f` with the clock standing at `at`.
pub async fn frozen_at<F: Future>(at: DateTime<Utc>, f: F) -> F::Output {
    FROZEN.scope(at, f).await
}
