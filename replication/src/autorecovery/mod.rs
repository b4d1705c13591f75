//! Autorecovery: re-replication of the replicas a lost bookie held (issue 6;
//! docs/rfcs/2026-11-26-replication.md, "Re-replication"; BookKeeper's Auditor and
//! ReplicationWorker, reference §1.9, which its etcd driver never had).
//!
//! - The **auditor** (one at a time, elected through `ReplicationQueue`) watches the bookie
//!   registry. A bookie whose registration vanished and stayed gone for `lost_bookie_grace` is
//!   lost; the auditor scans `segments/` and queues every segment naming it
//!   (`mark_under_replicated`).
//! - A **replication worker** claims a queued segment, copies the lost replicas of each
//!   ensemble to a replacement chosen by placement, replaces the lost bookie in that ensemble
//!   by compare-and-set, and completes the queue entry.
//!
//! Layout: `auditor` (core: lost-bookie detection with grace, what to queue), `worker` (core:
//! the copy plan of one segment, answer verdicts, the ensemble change), `shell` (tokio tasks:
//! the lease, election, watches, scans, claims, copies through `ClientPool`, recovery through
//! `ReplicationClient`). Entry point: `Autorecovery::start`.
//! Does not own: the queue's storage and claims (`ReplicationQueue`), placement, recovery
//! (`ReplicationClient::recover_segment`), deleting orphan copies from bookies.
//!
//! Invariants (each tested; cores in their files' tests, end to end in tests/autorecovery.rs):
//! - AR1 (grace): a bookie is lost only after no registry snapshot showed it registered for
//!   `lost_bookie_grace`; one that re-registers within the grace is never queued, and each
//!   disappearance is reported once. A bookie the segments name that the auditor never saw
//!   registered gets its grace from when the auditor first sees it named.
//! - AR2 (queueing): every segment naming a lost bookie in any ensemble is queued with the lost
//!   bookies it names; marking merges (RQ1), so repeating it is harmless.
//! - AR3 (what is copied): for each ensemble naming a missing bookie at index i, exactly the
//!   entries e of its range with i ∈ W(e) are copied, where the range is
//!   `[first, next_first)`, capped at one past the last entry when Closed. The last ensemble
//!   of an Open or InRecovery segment is the writer's and is never copied: within
//!   `open_segment_grace` (from the first marking) the worker leaves it to the writer; after,
//!   it fences and closes the segment (`recover_segment`) and copies it as closed.
//! - AR4 (valid copies only): an entry is copied only from the answer of a member of its
//!   write set whose bytes pass `entry_envelope::decode` for that segment and entry; they are
//!   written unchanged with a recovery ADD carrying the segment's master key. A Corrupt answer
//!   or bad envelope (logged), NoSuchEntry or a failure moves on to another member, for
//!   `read_rounds` rounds. An entry no member can supply stops the segment: it is not
//!   completed, its claim is released, and the failure is logged at error.
//! - AR5 (metadata): once a fragment is copied, the ensemble is changed by compare-and-set on
//!   the version read after the copy, and only its lost member's slot: the change happens
//!   only while that slot still names the lost bookie (else nothing to do), the replacement is
//!   not a member (else plan again), and the ensemble's range is within the copied one (else
//!   plan again); a conflict re-reads and decides again. A deleted segment drops the work.
//! - AR6 (completion): a queue entry is completed (at the version claimed, RQ3) only when no
//!   ensemble of the segment names a bookie it lists; otherwise the claim is released and the
//!   segment tried again after `retry_backoff` (or when the writer's grace ends).
//! - AR7 (one auditor): the auditor role runs only while its lease holds the `auditor` key; a
//!   standby waits for the seat to be vacant. No correctness rests on the election or on the
//!   claims (they spare duplicate work): marking merges, copying an entry twice is harmless
//!   (a bookie keeps one copy), and AR5's checks make a second worker's change a no-op.
//! - AR8 (no panics from inputs): a value from the metadata that does not decode (a segment,
//!   a registration, a queue entry) is logged and skipped; any bookie answer or transport
//!   error is judged (`worker::judge_read`, `judge_add`) and retried or skipped.
//! - AR9 (a bookie that returns): one that re-registers after it was queued is still replaced
//!   in the segments queued with it: the auditor's decision stands (a bookie that stayed away
//!   past the grace is not trusted to be complete, and the copies are cheap and idempotent).
//!   Until then it may serve reads as a source of last resort, and it is never chosen as a
//!   replacement for that segment. Its now unreferenced copies stay on its disks (garbage
//!   collection of over-replicated segments is later work).
//!
//! Fault model: bookies may vanish, return, answer errors or damaged bytes, or time out; the
//! metadata store may fail any call (the roles retry from a fresh read) or hold undecodable
//! values (AR8); a worker or auditor may die at any point (its lease ends its claims; every
//! step is idempotent). Not handled: an entry whose every copy is lost (reported, never
//! completed); segments written before issue 6, whose metadata holds a digest of the master
//! key instead of the key (their recovery ADDs are refused `WrongMasterKey`, reported).

pub mod auditor;
mod shell;
pub mod worker;

pub use shell::{Autorecovery, AutorecoveryConfig, AutorecoveryError, AutorecoveryStats};

// The metadata's master key bound is the wire protocol's (SG4): a stored key always fits an ADD.
const _: () =
    assert!(dlog_metadata::schema::segment::MASTER_KEY_BYTES_MAX == dlog_protocol::MASTER_KEY_BYTES_MAX);
