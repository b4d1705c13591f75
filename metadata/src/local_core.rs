//! `LocalCore`: the sans-I/O state machine of the embedded metadata store.
//!
//! Owns: the key map with versions, the store revision, leases and their deadlines, the
//! recent history watches resume from, and the request limits (`KEY_BYTES_MAX`,
//! `VALUE_BYTES_MAX`, `TXN_OPS_MAX`, `TXN_BYTES_MAX`, `LEASE_TTL_MAX`) both backends apply.
//! Does not own: durability (a shell logs each mutation before it answers), clocks (`now` is
//! an input), threads. The same core serves the in-memory mode and, driven with seeded
//! inputs, simulations.
//!
//! Invariants:
//! - LC1: every mutation (put, delete, a whole transaction, a lease expiry's deletions) takes
//!   the next revision; a key's version is the revision that last wrote it. Revisions never
//!   repeat or go back.
//! - LC2: a transaction applies all its operations or none; its conditions are all checked
//!   against the state before it. Malformed requests (limits, empty keys, a key twice, a
//!   delete on `Cond::Absent`) answer `Invalid` before any condition is looked at; then the
//!   first failing operation names the error.
//! - LC3: history holds every event after `history_start`, in revision order, so a watch from
//!   any later version sees each event exactly once; older requests get `Compacted`.
//! - LC4: a key bound to a lease is deleted (an event) in the revision that expires or revokes
//!   the lease; a put with a lease that is gone fails with `LeaseExpired`.
//! - LC5: every key, value and transaction a request brings is within the limits (replay
//!   checks only a logged transaction's structure, so limits may change between builds), and
//!   every ttl is a whole number of milliseconds in `1 ms..=LEASE_TTL_MAX`: so every log record
//!   fits a frame (local_log.rs LL2) and replays exactly (LL1). Replay applies the same checks
//!   and answers `Corrupt` for a record that does not apply.
//! - LC6: revisions and lease ids stay below `COUNTER_MAX`; a transaction, grant or image
//!   that would pass it is `Invalid`, so no counter wraps whatever a log holds.
//!
//! Conditions (etcd's semantics; the etcd backend checks the same):
//!
//! | op     | cond         | key present, version a           | key missing                      |
//! |--------|--------------|----------------------------------|----------------------------------|
//! | Put    | Any          | ok                               | ok (creates)                     |
//! | Put    | Absent       | AlreadyExists                    | ok (creates)                     |
//! | Put    | Version(v)   | ok if a = v, else VersionConflict | VersionConflict{Some(v), None}  |
//! | Delete | Any          | ok                               | NotFound                         |
//! | Delete | Absent       | Invalid                          | Invalid                          |
//! | Delete | Version(v)   | ok if a = v, else VersionConflict | NotFound                        |

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::MetaError;
use crate::local_log::{LogRecord, StateImage};
use crate::{Cond, Event, EventKind, LeaseId, Op, Page, Version, Versioned};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 4 << 10;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Operations in one transaction at most (etcd's default `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;
/// Key and value bytes of one transaction, all operations together, at most: keeps a logged
/// transaction far below a log frame's limit (local_log.rs `RECORD_BODY_MAX`) and a request to
/// etcd, with its key prefixes and framing, under etcd's default `--max-request-bytes`
/// (1.5 MiB).
pub const TXN_BYTES_MAX: usize = 1280 << 10;
/// Longest lease ttl (etcd's `MaxLeaseTTL`, 9e9 seconds).
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(9_000_000_000);
/// Leases one End record ends at most: expiring more takes one revision per this many.
pub const END_LEASES_MAX: usize = 1 << 16;
/// Revisions and lease ids stay below this (LC6): 2^63 mutations is out of reach of any real
/// store (292,000 years at a million per second), so a log that claims more is corrupt, and
/// the counters can never overflow, whatever a log says.
pub const COUNTER_MAX: u64 = 1 << 63;

#[derive(Clone, Debug)]
struct Entry {
    value: Bytes,
    version: Version,
    created: Version,
    lease: Option<LeaseId>,
}

#[derive(Clone, Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: Vec<String>,
}

/// The embedded store's state.
#[derive(Debug)]
pub struct LocalCore {
    keys: BTreeMap<String, Entry>,
    revision: u64,
    leases: HashMap<LeaseId, Lease>,
    lease_next: u64,
    history: VecDeque<Event>,
    history_max: usize,
    /// Events at or before this revision are no longer in `history` (LC3).
    history_start: u64,
    /// Mutations to make durable before their replies (local_log.rs), in order.
    log: Vec<LogRecord>,
}

fn invalid(message: impl Into<String>) -> MetaError {
    MetaError::Invalid(message.into())
}

fn op_key(op: &Op) -> &str {
    match op {
        Op::Put { key, .. } | Op::Delete { key, .. } => key,
    }
}

/// Checks a transaction's shape and limits (LC2, LC5), before any condition. Both backends
/// apply it (store.rs `check_ops`).
pub(crate) fn validate(ops: &[Op]) -> Result<(), MetaError> {
    if ops.len() > TXN_OPS_MAX {
        return Err(invalid(format!("{} operations in one transaction (max {TXN_OPS_MAX})", ops.len())));
    }
    let mut seen = HashSet::with_capacity(ops.len());
    let mut bytes = 0;
    for op in ops {
        let key = op_key(op);
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(invalid(format!("key of {} bytes (1..={KEY_BYTES_MAX})", key.len())));
        }
        // etcd's request carries a key up to four times (compares, the operation, the read in
        // the else branch): counted so, both backends refuse the same transactions.
        bytes += 4 * key.len();
        match op {
            Op::Put { value, .. } if value.len() > VALUE_BYTES_MAX => {
                return Err(invalid(format!(
                    "value of {key} is {} bytes (max {VALUE_BYTES_MAX})",
                    value.len()
                )));
            }
            Op::Put { value, .. } => bytes += value.len(),
            Op::Delete { cond: Cond::Absent, .. } => {
                return Err(invalid(format!("delete of {key} on condition Absent")));
            }
            Op::Delete { .. } => {}
        }
        if !seen.insert(key) {
            return Err(invalid(format!("transaction touches {key} twice")));
        }
    }
    if bytes > TXN_BYTES_MAX {
        return Err(invalid(format!("transaction of {bytes} key and value bytes (max {TXN_BYTES_MAX})")));
    }
    Ok(())
}

/// The structure replay still requires of a logged transaction (no request limits): a
/// non-empty key at most once, no delete on condition Absent.
fn validate_structure(ops: &[Op]) -> Result<(), MetaError> {
    let mut seen = HashSet::with_capacity(ops.len().min(TXN_OPS_MAX));
    for op in ops {
        let key = op_key(op);
        if key.is_empty() || !seen.insert(key) {
            return Err(invalid(format!("key {key:?} empty or touched twice")));
        }
        if let Op::Delete { cond: Cond::Absent, .. } = op {
            return Err(invalid(format!("delete of {key} on condition Absent")));
        }
    }
    Ok(())
}

/// A ttl as the core keeps it (LC5): whole milliseconds, rounded up, in `1 ms..=LEASE_TTL_MAX`.
fn whole_ttl(ttl: Duration) -> Result<Duration, MetaError> {
    if ttl.is_zero() || ttl > LEASE_TTL_MAX {
        return Err(invalid(format!("lease ttl {ttl:?} (1 ns..={LEASE_TTL_MAX:?})")));
    }
    // At most 9e12 ms: fits.
    Ok(Duration::from_millis(u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)))
}

fn deadline(now: Instant, ttl: Duration) -> Result<Instant, MetaError> {
    now.checked_add(ttl).ok_or_else(|| invalid(format!("lease ttl {ttl:?} runs past the clock's range")))
}

fn corrupt(what: &str, e: MetaError) -> MetaError {
    MetaError::Corrupt(format!("metadata log: a {what} record does not apply: {e}"))
}

impl LocalCore {
    /// An empty store keeping at most `history_max` events for watches to resume from.
    pub fn new(history_max: usize) -> LocalCore {
        LocalCore {
            keys: BTreeMap::new(),
            revision: 0,
            leases: HashMap::new(),
            lease_next: 1,
            history: VecDeque::new(),
            history_max: history_max.max(1),
            history_start: 0,
            log: Vec::new(),
        }
    }

    /// The mutations since the last call, in order: the shell appends them durably before it
    /// answers the requests that made them (LL1).
    pub fn take_log(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.log)
    }

    /// Applies a logged mutation at open (in log order) and logs nothing. A record that does
    /// not apply (a delete of a missing key, a lease that does not exist, an image that is not
    /// first, ...) answers `Invalid` naming the log corrupt, and changes nothing (LC5).
    pub fn replay(&mut self, record: LogRecord, now: Instant) -> Result<(), MetaError> {
        let result = match record {
            // Request limits are not applied: a transaction durable under other limits (an
            // older build's) must replay; only its structure is checked.
            LogRecord::Txn(ops) => validate_structure(&ops)
                .and_then(|()| self.apply_txn(ops, now))
                .map(|_| ())
                .map_err(|e| corrupt("transaction", e)),
            LogRecord::Grant { id, ttl } => self.replay_grant(id, ttl, now),
            LogRecord::End(ids) => match ids.iter().find(|id| !self.leases.contains_key(id)) {
                Some(id) => Err(corrupt("lease end", MetaError::LeaseExpired(*id))),
                None => {
                    self.end(ids);
                    Ok(())
                }
            },
            LogRecord::State(image) => self.restore(*image, now).map_err(|e| corrupt("state image", e)),
        };
        self.log.clear();
        result
    }

    fn replay_grant(&mut self, id: LeaseId, ttl: Duration, now: Instant) -> Result<(), MetaError> {
        if id.0 < self.lease_next {
            let e = invalid(format!("lease {id:?} again (next is {})", self.lease_next));
            return Err(corrupt("lease grant", e));
        }
        let lease_next = self.lease_next;
        // Ids only grow (a gap is harmless); `grant` takes `lease_next`, so `id`.
        self.lease_next = id.0;
        match self.grant(ttl, now) {
            Ok(granted) => {
                debug_assert_eq!(granted, id);
                Ok(())
            }
            Err(e) => {
                self.lease_next = lease_next;
                Err(corrupt("lease grant", e))
            }
        }
    }

    /// The whole state, to start a rewritten log with (keys and leases in order).
    pub fn image(&self) -> StateImage {
        let mut leases: Vec<(LeaseId, Duration)> = self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
        leases.sort_unstable();
        StateImage {
            revision: self.revision(),
            lease_next: self.lease_next,
            keys: self
                .keys
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.version, e.created, e.lease))
                .collect(),
            leases,
        }
    }

    /// Replaces the state of a fresh core with `image`, checked whole first (LC5).
    fn restore(&mut self, image: StateImage, now: Instant) -> Result<(), MetaError> {
        if self.revision != 0 || self.lease_next != 1 || !self.keys.is_empty() || !self.leases.is_empty() {
            return Err(invalid("an image after other records (an image starts a log)"));
        }
        if image.revision.0 >= COUNTER_MAX || image.lease_next == 0 || image.lease_next > COUNTER_MAX {
            return Err(invalid(format!(
                "revision {} or next lease {} out of range",
                image.revision.0, image.lease_next
            )));
        }
        let mut leases = HashMap::with_capacity(image.leases.len());
        for (id, ttl) in image.leases {
            if id.0 >= image.lease_next || whole_ttl(ttl)? != ttl {
                return Err(invalid(format!("lease {id:?} with ttl {ttl:?}")));
            }
            let lease = Lease { ttl, deadline: deadline(now, ttl)?, keys: Vec::new() };
            if leases.insert(id, lease).is_some() {
                return Err(invalid(format!("lease {id:?} twice")));
            }
        }
        let mut keys = BTreeMap::new();
        for (key, value, version, created, lease) in image.keys {
            if key.is_empty() || key.len() > KEY_BYTES_MAX || value.len() > VALUE_BYTES_MAX {
                return Err(invalid(format!(
                    "key of {} bytes, value of {}: beyond the limits",
                    key.len(),
                    value.len()
                )));
            }
            if created.0 == 0 || created > version || version > image.revision {
                return Err(invalid(format!("{key} at {version:?}, created {created:?}")));
            }
            if let Some(l) = lease {
                leases.get_mut(&l).ok_or(MetaError::LeaseExpired(l))?.keys.push(key.clone());
            }
            if keys.insert(key.clone(), Entry { value, version, created, lease }).is_some() {
                return Err(invalid(format!("{key} twice")));
            }
        }
        self.revision = image.revision.0;
        self.lease_next = image.lease_next;
        self.leases = leases;
        self.keys = keys;
        // History before the image is gone: watches from before it get Compacted (LC3).
        self.history.clear();
        self.history_start = self.revision;
        Ok(())
    }

    /// The store's current revision.
    pub fn revision(&self) -> Version {
        Version(self.revision)
    }

    /// A key's value and versions.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.keys.get(key).map(|e| Versioned {
            value: e.value.clone(),
            version: e.version,
            created: e.created,
            lease: e.lease,
        })
    }

    /// Keys under `prefix` after `after` (exclusive; an `after` sorting before the prefix
    /// starts at the prefix), at most `limit` (0: no limit, as in etcd), in key order.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut items = Vec::new();
        let mut more = false;
        for (key, e) in self.keys.range::<str, _>((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            let value =
                Versioned { value: e.value.clone(), version: e.version, created: e.created, lease: e.lease };
            items.push((key.clone(), value));
        }
        Page { items, more, revision: self.revision() }
    }

    /// A put's lease, checked after every condition of the transaction held (as etcd does:
    /// compares first, then the operations).
    fn check_lease(&self, op: &Op, now: Instant) -> Result<(), MetaError> {
        if let Op::Put { lease: Some(l), .. } = op
            && self.leases.get(l).is_none_or(|lease| lease.deadline <= now)
        {
            return Err(MetaError::LeaseExpired(*l));
        }
        Ok(())
    }

    /// Checks one operation's condition against the state (the module doc's table).
    fn check(&self, op: &Op) -> Result<(), MetaError> {
        let actual = self.keys.get(op_key(op)).map(|e| e.version);
        match op {
            Op::Put { key, cond, .. } => match (cond, actual) {
                (Cond::Any, _) | (Cond::Absent, None) => Ok(()),
                (Cond::Absent, Some(_)) => Err(MetaError::AlreadyExists(key.clone())),
                (Cond::Version(v), a) if a == Some(*v) => Ok(()),
                (Cond::Version(v), a) => {
                    Err(MetaError::VersionConflict { key: key.clone(), expected: Some(*v), actual: a })
                }
            },
            Op::Delete { key, cond } => match (cond, actual) {
                (Cond::Absent, _) => Err(invalid(format!("delete of {key} on condition Absent"))),
                (_, None) => Err(MetaError::NotFound(key.clone())),
                (Cond::Any, Some(_)) => Ok(()),
                (Cond::Version(v), Some(a)) if a == *v => Ok(()),
                (Cond::Version(v), a) => {
                    Err(MetaError::VersionConflict { key: key.clone(), expected: Some(*v), actual: a })
                }
            },
        }
    }

    /// Applies operations atomically (LC2): the request is validated (limits: LC5), all
    /// conditions are checked, then every operation is applied in one new revision. Returns
    /// that revision (the current one for no operations).
    pub fn txn(&mut self, ops: Vec<Op>, now: Instant) -> Result<Version, MetaError> {
        validate(&ops)?;
        self.apply_txn(ops, now)
    }

    /// `txn` after its checks of shape and limits.
    fn apply_txn(&mut self, ops: Vec<Op>, now: Instant) -> Result<Version, MetaError> {
        if ops.is_empty() {
            return Ok(self.revision());
        }
        for op in &ops {
            self.check(op)?;
        }
        for op in &ops {
            self.check_lease(op, now)?;
        }
        if self.revision >= COUNTER_MAX {
            return Err(invalid(format!("revision {} at the limit", self.revision))); // LC6
        }
        self.revision += 1;
        let version = Version(self.revision);
        let logged = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease, .. } => {
                    Op::Put { key: key.clone(), value: value.clone(), cond: Cond::Any, lease: *lease }
                }
                Op::Delete { key, .. } => Op::Delete { key: key.clone(), cond: Cond::Any },
            })
            .collect();
        self.log.push(LogRecord::Txn(logged));
        for op in ops {
            match op {
                Op::Put { key, value, lease, .. } => {
                    let created = self.keys.get(&key).map_or(version, |e| e.created);
                    if let Some(old) = self.keys.get(&key).and_then(|e| e.lease)
                        && Some(old) != lease
                        && let Some(l) = self.leases.get_mut(&old)
                    {
                        l.keys.retain(|k| k != &key);
                    }
                    if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l))
                        && !l.keys.contains(&key)
                    {
                        l.keys.push(key.clone());
                    }
                    self.record(Event {
                        kind: EventKind::Put,
                        key: key.clone(),
                        value: value.clone(),
                        version,
                    });
                    self.keys.insert(key, Entry { value, version, created, lease });
                }
                Op::Delete { key, .. } => self.remove(key, version),
            }
        }
        Ok(version)
    }

    fn remove(&mut self, key: String, version: Version) {
        if let Some(e) = self.keys.remove(&key) {
            if let Some(l) = e.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.retain(|k| k != &key);
            }
            self.record(Event { kind: EventKind::Delete, key, value: Bytes::new(), version });
        }
    }

    fn record(&mut self, event: Event) {
        self.history.push_back(event);
        while self.history.len() > self.history_max {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.version.0;
            }
        }
        // Events of one revision leave together: none is served half (LC3).
        while self.history.front().is_some_and(|e| e.version.0 == self.history_start) {
            self.history.pop_front();
        }
    }

    /// Events under `prefix` with version `from` or later, in revision order (LC3);
    /// `Compacted` when the history no longer reaches back to `from`.
    ///
    /// `from = Version(0)` means live events only, starting after the current revision: it
    /// returns no history (a watcher from 0 sees the events of later revisions as they come).
    pub fn events_since(&self, prefix: &str, from: Version) -> Result<Vec<Event>, MetaError> {
        if from.0 == 0 {
            return Ok(Vec::new());
        }
        if from.0 <= self.history_start {
            return Err(MetaError::Compacted { requested: from, oldest: Version(self.history_start + 1) });
        }
        Ok(self.history.iter().filter(|e| e.version >= from && e.key.starts_with(prefix)).cloned().collect())
    }

    /// Grants a lease of `ttl` (rounded up to whole milliseconds: LC5), alive until
    /// `now + ttl` unless kept alive. `Invalid` for a zero ttl, one above `LEASE_TTL_MAX`, or
    /// a deadline past the clock's range.
    pub fn grant(&mut self, ttl: Duration, now: Instant) -> Result<LeaseId, MetaError> {
        let ttl = whole_ttl(ttl)?;
        let deadline = deadline(now, ttl)?;
        if self.lease_next >= COUNTER_MAX {
            return Err(invalid(format!("lease id {} at the limit", self.lease_next))); // LC6
        }
        let id = LeaseId(self.lease_next);
        self.lease_next += 1;
        self.leases.insert(id, Lease { ttl, deadline, keys: Vec::new() });
        self.log.push(LogRecord::Grant { id, ttl });
        Ok(id)
    }

    /// Extends a lease to `now + ttl`. `LeaseExpired` when it is gone; `Invalid` when the new
    /// deadline is past the clock's range.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<(), MetaError> {
        match self.leases.get_mut(&id) {
            Some(l) if l.deadline > now => {
                l.deadline = deadline(now, l.ttl)?;
                Ok(())
            }
            _ => Err(MetaError::LeaseExpired(id)),
        }
    }

    /// Ends a lease now, deleting its keys in one revision (LC4).
    pub fn revoke(&mut self, id: LeaseId) -> Result<Version, MetaError> {
        if !self.leases.contains_key(&id) {
            return Err(MetaError::LeaseExpired(id));
        }
        self.end(vec![id]);
        Ok(self.revision())
    }

    /// Ends leases (revoked or expired), deleting their keys in one revision (LC4).
    fn end(&mut self, ids: Vec<LeaseId>) {
        let mut keys = Vec::new();
        for id in &ids {
            if let Some(lease) = self.leases.remove(id) {
                keys.extend(lease.keys);
            }
        }
        self.log.push(LogRecord::End(ids));
        self.drop_keys(keys);
    }

    fn drop_keys(&mut self, keys: Vec<String>) -> Version {
        if keys.is_empty() {
            return self.revision();
        }
        self.revision += 1;
        let version = Version(self.revision);
        for key in keys {
            self.remove(key, version);
        }
        version
    }

    /// Expires the leases whose deadline passed (LC4), `END_LEASES_MAX` per revision; returns
    /// them.
    pub fn expire(&mut self, now: Instant) -> Vec<LeaseId> {
        let mut gone: Vec<LeaseId> =
            self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        gone.sort_unstable();
        for ids in gone.chunks(END_LEASES_MAX) {
            self.end(ids.to_vec());
        }
        gone
    }

    /// The earliest lease deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}

#[cfg(test)]
mod tests;
