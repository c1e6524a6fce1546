//! Housekeeping of the caches keyed by credential (verification lists, accounts, users,
//! credentials, the Nuclia rate limiters): a credential no resource uses any more (a
//! self-renewing token's predecessor, a rotated login, a deleted resource's) falls out of them,
//! so nothing grows with time. Each pass reports every cache's size as
//! `nuclia_operator_cache_entries`.

use std::sync::Arc;
use std::time::Duration;

use super::Context;

/// Evicts what has been idle for two verify intervals (a credential in use is touched at
/// least once per interval) and publishes the sizes, every half interval (5 s to 60 s).
pub(super) async fn housekeeping(ctx: Arc<Context>) {
    let verify = ctx.settings.verify_interval;
    let period = (verify / 2).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let idle = verify * 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (cache, entries) in evict(&ctx, idle) {
            ctx.metrics.set_cache_entries(cache, entries);
        }
    }
}

/// One pass: evicts and returns each cache's size after it.
pub(super) fn evict(ctx: &Context, idle: Duration) -> Vec<(&'static str, usize)> {
    vec![
        ("verification_lists", ctx.live.evict_stale(idle)),
        ("credentials", ctx.credentials.evict_idle(idle)),
        ("accounts", ctx.accounts.evict_idle(idle)),
        ("users", ctx.users.evict_idle(idle)),
        ("rate_limiters", ctx.nuclia.evict_idle_limiters()),
        (
            "cluster_credential_checks",
            ctx.cluster_checks.evict_idle(idle),
        ),
        // Per resource: forgotten when the resource goes.
        ("resources", ctx.resource_entries()),
    ]
}
