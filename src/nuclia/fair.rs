//! Fair shares of one credential's request budget between tenants (the namespaces of the
//! resources that make the calls). The budget itself is the client's rate limiter; this
//! decides who waits on it next: one caller per credential at a time, handed the turn round
//! robin over the tenants with calls waiting. A namespace with a hundred calls queued on a
//! shared `NucliaClusterCredential` delays another namespace's revocation by one call, not by
//! a hundred.
//!
//! The tenant is the task's: [`for_tenant`] sets it around a reconcile, so no call site passes
//! it along.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

tokio::task_local! {
    static TENANT: String;
}

/// Runs `f` with its Nuclia calls counted for `tenant`.
pub async fn for_tenant<F: Future>(tenant: String, f: F) -> F::Output {
    TENANT.scope(tenant, f).await
}

/// The tenant of the running task ("" outside [`for_tenant`]: the operator's own work).
pub fn current_tenant() -> String {
    TENANT.try_with(Clone::clone).unwrap_or_default()
}

/// The turns of every credential (by key).
#[derive(Default)]
pub struct Turns {
    inner: Mutex<HashMap<String, Lanes>>,
}

/// One credential's line: whether a caller holds the turn, and who waits, by tenant.
#[derive(Default)]
struct Lanes {
    busy: bool,
    /// Tenants with callers waiting, in the order their next caller is served.
    order: VecDeque<String>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Turn>>>,
}

/// The turn at one credential: held while waiting on its budget, passed on when dropped.
pub struct Turn {
    turns: Arc<Turns>,
    key: String,
    live: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.live {
            self.turns.pass(&self.key);
        }
    }
}

impl Turns {
    /// Waits for `tenant`'s turn at credential `key`.
    pub async fn turn(self: &Arc<Self>, key: &str, tenant: &str) -> Turn {
        let rx = {
            let Ok(mut all) = self.inner.lock() else {
                return self.held(key, false);
            };
            let lanes = all.entry(key.to_owned()).or_default();
            if !lanes.busy {
                lanes.busy = true;
                return self.held(key, true);
            }
            let (tx, rx) = oneshot::channel();
            let queue = lanes.waiting.entry(tenant.to_owned()).or_default();
            if queue.is_empty() {
                lanes.order.push_back(tenant.to_owned());
            }
            queue.push_back(tx);
            rx
        };
        // A caller that gives up drops its receiver: a turn sent to it is dropped with the
        // channel, which passes it on.
        rx.await.unwrap_or_else(|_| self.held(key, false))
    }

    fn held(self: &Arc<Self>, key: &str, live: bool) -> Turn {
        Turn {
            turns: self.clone(),
            key: key.to_owned(),
            live,
        }
    }

    /// Hands the turn at `key` to the next tenant in line (round robin), or frees it.
    fn pass(self: &Arc<Self>, key: &str) {
        loop {
            let next = {
                let Ok(mut all) = self.inner.lock() else {
                    return;
                };
                let Some(lanes) = all.get_mut(key) else {
                    return;
                };
                let next = next_in_line(lanes);
                if next.is_none() {
                    all.remove(key);
                    return;
                }
                next
            };
            let Some(tx) = next else { return };
            match tx.send(self.held(key, true)) {
                Ok(()) => return,
                // That caller is gone: the next one (not through Drop, which would recurse).
                Err(mut turn) => turn.live = false,
            }
        }
    }

    /// Credentials with a line (for the cache-size metric and tests).
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first caller of the first tenant in line; that tenant goes to the back if it has more.
fn next_in_line(lanes: &mut Lanes) -> Option<oneshot::Sender<Turn>> {
    let tenant = lanes.order.pop_front()?;
    let queue = lanes.waiting.get_mut(&tenant)?;
    let tx = queue.pop_front();
    if queue.is_empty() {
        lanes.waiting.remove(&tenant);
    } else {
        lanes.order.push_back(tenant);
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The order in which callers get the turn, each holding it for `hold`.
    async fn served(callers: Vec<(&'static str, u32)>, hold: Duration) -> Vec<String> {
        let turns = Arc::new(Turns::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        // The first caller takes the turn and holds it while the others line up.
        let first = turns.turn("cred", "setup").await;
        let mut tasks = Vec::new();
        for (tenant, n) in callers {
            for i in 0..n {
                let (t, o) = (turns.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let _turn = t.turn("cred", tenant).await;
                    o.lock().unwrap().push(format!("{tenant}{i}"));
                    tokio::time::sleep(hold).await;
                }));
                // Line up in this order.
                tokio::task::yield_now().await;
                while turns.inner.lock().unwrap()["cred"]
                    .waiting
                    .values()
                    .map(VecDeque::len)
                    .sum::<usize>()
                    < tasks.len()
                {
                    tokio::task::yield_now().await;
                }
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            turns.is_empty(),
            "the line is gone once everyone was served"
        );
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_tenant_with_one_call_waits_one_turn_not_the_whole_queue() {
        let order = served(vec![("a", 20), ("b", 1)], Duration::from_millis(1)).await;
        let b = order.iter().position(|o| o == "b0").unwrap();
        assert!(b <= 1, "b was served at {b}: {order:?}");
        // a's own calls keep their order
        let a: Vec<&String> = order.iter().filter(|o| o.starts_with('a')).collect();
        let mut sorted = a.clone();
        sorted.sort_by_key(|o| o[1..].parse::<u32>().unwrap());
        assert_eq!(a, sorted);
    }

    #[tokio::test]
    async fn tenants_alternate_while_both_wait() {
        let order = served(vec![("a", 4), ("b", 4)], Duration::from_millis(1)).await;
        let tenants: String = order.iter().map(|o| &o[..1]).collect();
        assert_eq!(tenants, "abababab");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_passes_its_turn_on() {
        let turns = Arc::new(Turns::default());
        let held = turns.turn("cred", "a").await;
        let gave_up = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.turn("cred", "b").await })
        };
        let next = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _t = turns.turn("cred", "c").await;
            })
        };
        while turns.inner.lock().unwrap()["cred"].waiting.len() < 2 {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("c gets the turn b gave up")
            .unwrap();
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn the_tenant_is_the_tasks() {
        assert_eq!(current_tenant(), "");
        let inner = for_tenant("team-a".into(), async { current_tenant() }).await;
        assert_eq!(inner, "team-a");
    }
}
