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

use std::sync::Arc;
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
    task: tokio::task::AbortHandle,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and keeps it alive. Needs a tokio runtime with timers.
    pub async fn grant<S: MetadataStore + 'static>(
        store: Arc<S>,
        ttl: Duration,
    ) -> Result<LeaseKeeper, MetaError> {
        let lease = store.grant(ttl).await?;
        // Counted from before the grant: the store's clock started no earlier.
        let granted = Instant::now();
        let (tx, state) = watch::channel(None);
        let task = tokio::spawn(keep(store, lease, ttl, granted, tx)).abort_handle();
        Ok(LeaseKeeper { lease, ttl, state, task })
    }

    /// The lease.
    pub fn id(&self) -> LeaseId {
        self.lease
    }

    /// The ttl asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Not known to be lost (LK2).
    pub fn is_alive(&self) -> bool {
        self.state.borrow().is_none()
    }

    /// Resolves when the lease may be lost, with why (LK2).
    pub async fn lost(&mut self) -> MetaError {
        match self.state.wait_for(Option::is_some).await {
            Ok(e) => e.clone().unwrap_or(MetaError::LeaseExpired(self.lease)),
            Err(_) => MetaError::LeaseExpired(self.lease),
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
    mut answered: Instant,
    state: watch::Sender<Option<MetaError>>,
) {
    let mut wait = ttl / 3;
    let lost = |why: String| {
        tracing::warn!(lease = lease.0, why, "lease lost");
        let _ = state
            .send(Some(MetaError::Unavailable(format!("lease {}: {why}; it may have expired", lease.0))));
    };
    loop {
        // The store may expire the lease at `answered + ttl`: nothing waits past it.
        let deadline = answered + ttl;
        tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
        let asked = Instant::now();
        match tokio::time::timeout_at(deadline, store.keep_alive(lease)).await {
            Ok(Ok(())) => {
                // The store restarted the ttl no earlier than when it was asked.
                answered = asked;
                wait = ttl / 3;
            }
            Ok(Err(MetaError::LeaseExpired(_))) => {
                let _ = state.send(Some(MetaError::LeaseExpired(lease)));
                return;
            }
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::debug!(lease = lease.0, error = %e, "keep-alive failed; retrying");
                wait = ttl / 10;
            }
            Ok(Err(e)) => return lost(format!("no keep-alive answered within {ttl:?} ({e})")),
            Err(_) => return lost(format!("no keep-alive answered within {ttl:?}")),
        }
    }
}
