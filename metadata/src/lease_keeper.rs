//! `LeaseKeeper`: holds a lease alive from a tokio task and says when it may be lost.
//!
//! Owns: one lease, its keep-alive task, and the lease's known state.
//!
//! Invariants:
//! - LK1: keep-alives go every `ttl / 3`; a failed one is retried every `ttl / 10`.
//! - LK2: the keeper reports the lease lost as soon as the store says it is gone
//!   (`LeaseExpired`) or when no keep-alive has been answered for `ttl` — from then on the
//!   store may have expired it, so the holder must stop acting on it (a bookie re-registers, a
//!   writer stops writing). It never reports a lease alive that the store may have expired.
//! - LK3: dropping the keeper stops the task without revoking (the lease then expires after
//!   its ttl); `revoke` ends it now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::MetaError;
use crate::store::MetadataStore;
use crate::{LeaseId, Version};

/// Keeps one lease alive (see the module doc).
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: LeaseId,
    ttl: Duration,
    state: watch::Receiver<Option<MetaError>>,
    /// When the store may expire the lease: the last answered keep-alive's asking time + ttl.
    /// Shared with the task, so the handle answers from it even when the task cannot run.
    deadline: Arc<Mutex<Instant>>,
    task: tokio::task::AbortHandle,
}

fn read(deadline: &Mutex<Instant>) -> Instant {
    *deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and keeps it alive. Needs a tokio runtime with timers.
    pub async fn grant<S: MetadataStore + 'static>(
        store: Arc<S>,
        ttl: Duration,
    ) -> Result<LeaseKeeper, MetaError> {
        // Counted from before the grant: the store's clock started no earlier.
        let asked = Instant::now();
        let lease = store.grant(ttl).await?;
        let deadline = Arc::new(Mutex::new(asked + ttl));
        let (tx, state) = watch::channel(None);
        let task = tokio::spawn(keep(store, lease, ttl, deadline.clone(), tx)).abort_handle();
        Ok(LeaseKeeper { lease, ttl, state, deadline, task })
    }

    /// The lease.
    pub fn id(&self) -> LeaseId {
        self.lease
    }

    /// The ttl asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Not known to be lost (LK2): no loss reported, and the deadline not passed (checked
    /// here, so a starved task cannot make a lost lease look alive).
    pub fn is_alive(&self) -> bool {
        self.state.borrow().is_none() && Instant::now() < read(&self.deadline)
    }

    /// Resolves when the lease may be lost, with why (LK2): at a reported loss, or at the
    /// deadline if no keep-alive moved it.
    pub async fn lost(&mut self) -> MetaError {
        loop {
            let deadline = read(&self.deadline);
            tokio::select! {
                changed = self.state.wait_for(Option::is_some) => {
                    return match changed {
                        Ok(e) => e.clone().unwrap_or(MetaError::LeaseExpired(self.lease)),
                        Err(_) => MetaError::LeaseExpired(self.lease),
                    };
                }
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= read(&self.deadline) {
                        return MetaError::Unavailable(format!(
                            "lease {}: no keep-alive answered within {:?}; it may have expired",
                            self.lease.0, self.ttl
                        ));
                    }
                }
            }
        }
    }

    /// Ends the lease now (its keys are deleted); the revision of the deletion.
    pub async fn revoke<S: MetadataStore>(self, store: &S) -> Result<Version, MetaError> {
        self.task.abort();
        store.revoke(self.lease).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort(); // LK3
    }
}

async fn keep<S: MetadataStore>(
    store: Arc<S>,
    lease: LeaseId,
    ttl: Duration,
    deadline: Arc<Mutex<Instant>>,
    state: watch::Sender<Option<MetaError>>,
) {
    let mut wait = ttl / 3;
    let lost = |why: String| {
        tracing::warn!(lease = lease.0, why, "lease lost");
        let _ = state
            .send(Some(MetaError::Unavailable(format!("lease {}: {why}; it may have expired", lease.0))));
    };
    loop {
        // The store may expire the lease at the deadline: nothing waits past it.
        let until = read(&deadline);
        tokio::time::sleep_until((Instant::now() + wait).min(until)).await;
        let asked = Instant::now();
        match tokio::time::timeout_at(until, store.keep_alive(lease)).await {
            Ok(Ok(())) => {
                // The store restarted the ttl no earlier than when it was asked.
                *deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = asked + ttl;
                wait = ttl / 3;
            }
            Ok(Err(MetaError::LeaseExpired(_))) => {
                let _ = state.send(Some(MetaError::LeaseExpired(lease)));
                return;
            }
            Ok(Err(e)) if Instant::now() < until => {
                tracing::debug!(lease = lease.0, error = %e, "keep-alive failed; retrying");
                wait = ttl / 10;
            }
            Ok(Err(e)) => return lost(format!("no keep-alive answered within {ttl:?} ({e})")),
            Err(_) => return lost(format!("no keep-alive answered within {ttl:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    /// LK2 when the keeper's task cannot run: the handle still says "lost" once the deadline
    /// passed, as the store (its own thread) expires the lease.
    #[test]
    fn a_starved_keeper_never_says_alive_past_the_deadline() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = Arc::new(LocalStore::in_memory().unwrap());
        let mut keeper =
            runtime.block_on(LeaseKeeper::grant(store.clone(), Duration::from_millis(300))).unwrap();
        assert!(keeper.is_alive());
        // Block the runtime's only thread past the ttl: no keep-alive can be sent.
        #[expect(clippy::disallowed_methods, reason = "the test starves the runtime on purpose")]
        std::thread::sleep(Duration::from_millis(800));
        assert!(!keeper.is_alive(), "alive past the deadline");
        assert_eq!(
            runtime.block_on(store.keep_alive(keeper.id())),
            Err(MetaError::LeaseExpired(keeper.id()))
        );
        let lost = runtime.block_on(keeper.lost());
        assert!(matches!(lost, MetaError::Unavailable(_) | MetaError::LeaseExpired(_)), "{lost:?}");
    }
}
