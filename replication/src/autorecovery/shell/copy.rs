//! Copying one fragment: each entry read from a member of its write set that holds a valid
//! copy (AR4) and written as it is to the replacement with a recovery ADD carrying the
//! segment's master key, `copy_window` entries at a time, through the `ClientPool`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dlog_protocol::Request;
use tokio::task::JoinSet;

use crate::autorecovery::worker::{AddVerdict, Fragment, ReadVerdict, judge_add, judge_read};
use crate::transport::ClientPool;

/// Why a fragment's copy stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum CopyError {
    /// No member of the write set gave a valid copy of the entry in any round (AR4).
    #[error("entry {entry} is unreadable: no member of its write set gave a valid copy ({answers})")]
    Unreadable { entry: u64, answers: String },
    /// The replacement did not store the entry within its attempts.
    #[error("the replacement did not store entry {entry}: {why}")]
    Target { entry: u64, why: String },
    /// The replacement refused the entry for good (a wrong master key, a malformed request).
    #[error("the replacement refused entry {entry}: {why}")]
    Refused { entry: u64, why: String },
    /// A copy task ended abnormally.
    #[error("copy task failed: {0}")]
    Task(String),
}

/// How copies are paced (from `AutorecoveryConfig`).
#[derive(Clone, Copy, Debug)]
pub(super) struct CopySettings {
    pub(super) window: usize,
    pub(super) read_rounds: usize,
    pub(super) add_attempts: usize,
    pub(super) retry_delay: Duration,
}

/// Where to send what for one fragment.
pub(super) struct CopyJob<'a> {
    pub(super) fragment: &'a Fragment,
    pub(super) missing: &'a BTreeSet<String>,
    /// Each ensemble member's address, by index; `None` when it is not registered.
    pub(super) members: &'a [Option<SocketAddr>],
    pub(super) target: SocketAddr,
    pub(super) master_key: Bytes,
}

/// Copies every entry of the fragment to the target; the number copied. Stops at the first
/// entry that cannot be copied (the rest are abandoned: the fragment is tried again whole).
pub(super) async fn copy_fragment(
    pool: &ClientPool,
    job: CopyJob<'_>,
    settings: CopySettings,
) -> Result<u64, CopyError> {
    let segment = job.fragment.segment;
    let mut entries = job.fragment.entries();
    let mut tasks = JoinSet::new();
    let mut copied = 0;
    loop {
        while tasks.len() < settings.window {
            let Some(entry) = entries.next() else { break };
            let sources: Vec<(String, SocketAddr)> = job
                .fragment
                .sources(entry, job.missing)
                .into_iter()
                .filter_map(|i| {
                    let addr = job.members.get(i).copied().flatten()?;
                    Some((job.fragment.ensemble.get(i)?.clone(), addr))
                })
                .collect();
            let copy = EntryCopy {
                pool: pool.clone(),
                segment,
                entry,
                sources,
                target: job.target,
                master_key: job.master_key.clone(),
                settings,
            };
            tasks.spawn(copy.run());
        }
        match tasks.join_next().await {
            None => return Ok(copied),
            Some(Ok(Ok(()))) => copied += 1,
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(CopyError::Task(e.to_string())),
        }
    }
}

/// One entry's copy.
struct EntryCopy {
    pool: ClientPool,
    segment: u64,
    entry: u64,
    /// The members to read from, in order (`Fragment::sources`), with their addresses.
    sources: Vec<(String, SocketAddr)>,
    target: SocketAddr,
    master_key: Bytes,
    settings: CopySettings,
}

impl EntryCopy {
    async fn run(self) -> Result<(), CopyError> {
        let stored = self.read().await?;
        self.write(stored).await
    }

    /// The first valid copy from the sources, over `read_rounds` rounds (AR4).
    async fn read(&self) -> Result<Bytes, CopyError> {
        let (segment, entry) = (self.segment, self.entry);
        let mut answers = Vec::new();
        for round in 0..self.settings.read_rounds {
            if round > 0 {
                tokio::time::sleep(self.settings.retry_delay).await;
            }
            for (bookie, addr) in &self.sources {
                let answer = self.pool.submit(*addr, Request::Read { segment, entry, fence: None }).await;
                match judge_read(segment, entry, answer) {
                    ReadVerdict::Copy(stored) => return Ok(stored),
                    ReadVerdict::Absent => answers.push(format!("{bookie}: no such entry")),
                    ReadVerdict::Corrupt(why) => {
                        tracing::warn!(
                            segment, entry, bookie = %bookie, why = %why,
                            "autorecovery: damaged replica; reading another member"
                        );
                        answers.push(format!("{bookie}: corrupt ({why})"));
                    }
                    ReadVerdict::Failed(why) => answers.push(format!("{bookie}: {why}")),
                }
            }
        }
        if self.sources.is_empty() {
            answers.push("no member of the write set is registered".to_owned());
        }
        Err(CopyError::Unreadable { entry, answers: answers.join("; ") })
    }

    /// `stored` to the target with a recovery ADD, retried `add_attempts` times.
    async fn write(&self, stored: Bytes) -> Result<(), CopyError> {
        let (segment, entry) = (self.segment, self.entry);
        let mut why = String::new();
        for attempt in 0..self.settings.add_attempts {
            if attempt > 0 {
                tokio::time::sleep(self.settings.retry_delay).await;
            }
            let request = Request::Add {
                segment,
                entry,
                // No LAC: a copy tells a reader nothing new (the entry's range is settled).
                last_add_confirmed: None,
                master_key: self.master_key.clone(),
                payload: stored.clone(),
                recovery: true,
            };
            match judge_add(segment, entry, self.pool.submit(self.target, request).await) {
                AddVerdict::Stored => return Ok(()),
                AddVerdict::Retry(reason) => why = reason,
                AddVerdict::Fatal(reason) => return Err(CopyError::Refused { entry, why: reason }),
            }
        }
        Err(CopyError::Target { entry, why })
    }
}
