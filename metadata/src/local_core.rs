//! `LocalCore`: the sans-I/O state machine of the embedded metadata store.
//!
//! Owns: the key map with versions, the store revision, leases and their deadlines, and the
//! recent history watches resume from. Does not own: durability (a shell logs each mutation
//! before it answers), clocks (`now` is an input), threads. The same core serves the
//! in-memory mode and, driven with seeded inputs, simulations.
//!
//! Invariants:
//! - LC1: every mutation (put, delete, a whole transaction, a lease expiry's deletions) takes
//!   the next revision; a key's version is the revision that last wrote it. Revisions never
//!   repeat or go back.
//! - LC2: a transaction applies all its operations or none; its conditions are all checked
//!   against the state before it.
//! - LC3: history holds every event after `history_start`, in revision order, so a watch from
//!   any later version sees each event exactly once; older requests get `Compacted`.
//! - LC4: a key bound to a lease is deleted (an event) in the revision that expires or revokes
//!   the lease; a put with a lease that is gone fails with `LeaseExpired`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::MetaError;
use crate::local_log::{LogRecord, StateImage};
use crate::{Cond, Event, EventKind, LeaseId, Op, Page, Version, Versioned};

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

    /// Applies a logged mutation at open (unconditionally, in log order) and logs nothing.
    pub fn replay(&mut self, record: LogRecord, now: Instant) -> Result<(), MetaError> {
        match record {
            LogRecord::Txn(ops) => {
                self.txn(ops, now)?;
            }
            LogRecord::Grant { id, ttl } => {
                self.lease_next = self.lease_next.max(id.0);
                let granted = self.grant(ttl, now);
                if granted != id {
                    return Err(MetaError::Invalid(format!(
                        "log grants lease {id:?}, replay made {granted:?}"
                    )));
                }
            }
            LogRecord::End(ids) => self.end(ids),
            LogRecord::State(image) => self.restore(*image, now),
        }
        self.log.clear();
        Ok(())
    }

    /// The whole state, to start a rewritten log with.
    pub fn image(&self) -> StateImage {
        StateImage {
            revision: self.revision(),
            lease_next: self.lease_next,
            keys: self
                .keys
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.version, e.created, e.lease))
                .collect(),
            leases: self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect(),
        }
    }

    fn restore(&mut self, image: StateImage, now: Instant) {
        self.revision = image.revision.0;
        self.lease_next = image.lease_next;
        self.leases = image
            .leases
            .into_iter()
            .map(|(id, ttl)| (id, Lease { ttl, deadline: now + ttl, keys: Vec::new() }))
            .collect();
        self.keys.clear();
        for (key, value, version, created, lease) in image.keys {
            if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.push(key.clone());
            }
            self.keys.insert(key, Entry { value, version, created, lease });
        }
        // History before the image is gone: watches from before it get Compacted (LC3).
        self.history.clear();
        self.history_start = self.revision;
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

    /// Keys under `prefix` after `after` (exclusive), at most `limit`, in key order.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for (key, e) in self.keys.range((start, std::ops::Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit.max(1) {
                more = true;
                break;
            }
            items.push((
                key.clone(),
                Versioned { value: e.value.clone(), version: e.version, created: e.created, lease: e.lease },
            ));
        }
        Page { items, more, revision: self.revision() }
    }

    fn check(&self, op: &Op, now: Instant) -> Result<(), MetaError> {
        let (key, cond) = match op {
            Op::Put { key, cond, lease, .. } => {
                if let Some(l) = lease
                    && self.leases.get(l).is_none_or(|lease| lease.deadline <= now)
                {
                    return Err(MetaError::LeaseExpired(*l));
                }
                (key, cond)
            }
            Op::Delete { key, cond } => (key, cond),
        };
        if key.is_empty() {
            return Err(MetaError::Invalid("empty key".into()));
        }
        let actual = self.keys.get(key.as_str()).map(|e| e.version);
        match (cond, actual) {
            (Cond::Any, _) => Ok(()),
            (Cond::Absent, None) => Ok(()),
            (Cond::Absent, Some(_)) => Err(MetaError::AlreadyExists(key.clone())),
            (Cond::Version(v), Some(a)) if *v == a => Ok(()),
            (Cond::Version(_), None) if matches!(op, Op::Delete { .. }) => {
                Err(MetaError::NotFound(key.clone()))
            }
            (Cond::Version(v), a) => {
                Err(MetaError::VersionConflict { key: key.clone(), expected: Some(*v), actual: a })
            }
        }
    }

    /// Applies operations atomically (LC2): all conditions are checked first, then every
    /// operation is applied in one new revision. Returns that revision.
    pub fn txn(&mut self, ops: Vec<Op>, now: Instant) -> Result<Version, MetaError> {
        if ops.is_empty() {
            return Ok(self.revision());
        }
        let mut seen = std::collections::HashSet::new();
        for op in &ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key, .. } => key,
            };
            if !seen.insert(key.as_str()) {
                return Err(MetaError::Invalid(format!("transaction touches {key} twice")));
            }
            self.check(op, now)?;
        }
        for op in &ops {
            if let Op::Delete { key, .. } = op
                && !self.keys.contains_key(key.as_str())
            {
                return Err(MetaError::NotFound(key.clone()));
            }
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

    /// Events under `prefix` with version `from` or later, in revision order (LC3).
    pub fn events_since(&self, prefix: &str, from: Version) -> Result<Vec<Event>, MetaError> {
        if from.0 <= self.history_start && self.history_start > 0 {
            return Err(MetaError::Compacted { requested: from, oldest: Version(self.history_start + 1) });
        }
        Ok(self.history.iter().filter(|e| e.version >= from && e.key.starts_with(prefix)).cloned().collect())
    }

    /// Grants a lease of `ttl`, alive until `now + ttl` unless kept alive.
    pub fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = LeaseId(self.lease_next);
        self.lease_next += 1;
        self.leases.insert(id, Lease { ttl, deadline: now + ttl, keys: Vec::new() });
        self.log.push(LogRecord::Grant { id, ttl });
        id
    }

    /// Extends a lease to `now + ttl`.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<(), MetaError> {
        match self.leases.get_mut(&id) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
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

    /// Expires the leases whose deadline passed (LC4); returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<LeaseId> {
        let mut gone: Vec<LeaseId> =
            self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        gone.sort();
        if !gone.is_empty() {
            self.end(gone.clone());
        }
        gone
    }

    /// The earliest lease deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' fixed starting instant: the core only compares instants it is given.
    #[expect(clippy::disallowed_methods, reason = "a test's starting point; the core takes time as input")]
    fn start() -> Instant {
        Instant::now()
    }

    fn put(key: &str, value: &str, cond: Cond) -> Op {
        Op::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()), cond, lease: None }
    }

    #[test]
    fn compare_and_set_has_one_winner_and_typed_errors() {
        let now = start();
        let mut core = LocalCore::new(100);
        let v1 = core.txn(vec![put("a", "1", Cond::Absent)], now).unwrap();
        assert_eq!(
            core.txn(vec![put("a", "x", Cond::Absent)], now),
            Err(MetaError::AlreadyExists("a".into()))
        );
        // Two writers read v1; the first CAS wins, the second gets the actual version.
        let v2 = core.txn(vec![put("a", "2", Cond::Version(v1))], now).unwrap();
        assert_eq!(
            core.txn(vec![put("a", "3", Cond::Version(v1))], now),
            Err(MetaError::VersionConflict { key: "a".into(), expected: Some(v1), actual: Some(v2) })
        );
        let got = core.get("a").unwrap();
        assert_eq!((got.value, got.version, got.created), (Bytes::from_static(b"2"), v2, v1));
        assert_eq!(
            core.txn(vec![Op::Delete { key: "b".into(), cond: Cond::Any }], now),
            Err(MetaError::NotFound("b".into()))
        );
    }

    #[test]
    fn transactions_are_all_or_nothing() {
        let now = start();
        let mut core = LocalCore::new(100);
        let v = core.txn(vec![put("a", "1", Cond::Absent), put("b", "1", Cond::Absent)], now).unwrap();
        assert_eq!(core.get("a").unwrap().version, core.get("b").unwrap().version);
        let bad = vec![put("a", "2", Cond::Version(v)), put("b", "2", Cond::Version(Version(99)))];
        assert!(matches!(core.txn(bad, now), Err(MetaError::VersionConflict { .. })));
        assert_eq!(core.get("a").unwrap().version, v, "nothing applied");
        assert_eq!(core.revision(), v);
        assert!(matches!(
            core.txn(vec![put("a", "1", Cond::Any), put("a", "2", Cond::Any)], now),
            Err(MetaError::Invalid(_))
        ));
    }

    #[test]
    fn list_pages_through_a_prefix() {
        let now = start();
        let mut core = LocalCore::new(100);
        for i in 0..25 {
            core.txn(vec![put(&format!("logs/{i:03}"), "x", Cond::Absent)], now).unwrap();
        }
        core.txn(vec![put("logz", "x", Cond::Absent)], now).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = core.list("logs/", after.as_deref(), 10);
            seen.extend(page.items.iter().map(|(k, _)| k.clone()));
            after = page.items.last().map(|(k, _)| k.clone());
            if !page.more {
                break;
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn watches_resume_without_gaps_or_repeats_and_compaction_is_reported() {
        let now = start();
        let mut core = LocalCore::new(8);
        let mut versions = Vec::new();
        for i in 0..5 {
            versions.push(core.txn(vec![put("k", &i.to_string(), Cond::Any)], now).unwrap());
        }
        let from = versions[2];
        let events = core.events_since("k", from).unwrap();
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), versions[2..]);
        // Resume from the last seen + 1: nothing repeated.
        let next = Version(events.last().unwrap().version.0 + 1);
        assert!(core.events_since("k", next).unwrap().is_empty());
        for i in 0..20 {
            core.txn(vec![put("k", &i.to_string(), Cond::Any)], now).unwrap();
        }
        assert!(matches!(core.events_since("k", from), Err(MetaError::Compacted { .. })));
    }

    #[test]
    fn leases_delete_their_keys_when_they_expire_or_are_revoked() {
        let now = start();
        let mut core = LocalCore::new(100);
        let lease = core.grant(Duration::from_secs(10), now);
        let op =
            Op::Put { key: "bookies/1".into(), value: Bytes::new(), cond: Cond::Absent, lease: Some(lease) };
        core.txn(vec![op], now).unwrap();
        core.keep_alive(lease, now + Duration::from_secs(8)).unwrap();
        assert!(core.expire(now + Duration::from_secs(12)).is_empty(), "kept alive");
        let before = core.revision();
        assert_eq!(core.expire(now + Duration::from_secs(19)), vec![lease]);
        assert!(core.get("bookies/1").is_none());
        let events = core.events_since("bookies/", Version(before.0 + 1)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(
            core.keep_alive(lease, now + Duration::from_secs(20)),
            Err(MetaError::LeaseExpired(lease))
        );
        let op = Op::Put { key: "x".into(), value: Bytes::new(), cond: Cond::Any, lease: Some(lease) };
        assert_eq!(core.txn(vec![op], now), Err(MetaError::LeaseExpired(lease)));
        let other = core.grant(Duration::from_secs(10), now);
        let op = Op::Put { key: "y".into(), value: Bytes::new(), cond: Cond::Any, lease: Some(other) };
        core.txn(vec![op], now).unwrap();
        core.revoke(other).unwrap();
        assert!(core.get("y").is_none());
    }

    /// Runs a random mix of puts, deletes, transactions, leased puts and lease expiries.
    fn drive(core: &mut LocalCore, ops: &[(u8, u8, u8)]) -> Vec<Version> {
        let mut now = start();
        let mut revisions = Vec::new();
        for (what, k, cond) in ops {
            let (what, k) = (*what, *k);
            let key = format!("k/{k}");
            let current = core.get(&key).map(|v| v.version);
            let cond = match cond {
                0 => Cond::Any,
                1 => Cond::Absent,
                _ => Cond::Version(current.unwrap_or(Version(7))),
            };
            let _ = match what {
                0 | 1 => core.txn(vec![put(&key, &format!("{k}{what}"), cond)], now).map(|_| ()),
                2 => core.txn(vec![Op::Delete { key, cond }], now).map(|_| ()),
                3 => {
                    let other = format!("k/{}", (k + 1) % 6);
                    core.txn(vec![put(&key, "t", cond), put(&other, "t", Cond::Any)], now).map(|_| ())
                }
                4 => {
                    let lease = core.grant(Duration::from_secs(u64::from(k) + 1), now);
                    let op = Op::Put { key, value: Bytes::from_static(b"l"), cond, lease: Some(lease) };
                    core.txn(vec![op], now).map(|_| ())
                }
                _ => {
                    now += Duration::from_secs(u64::from(k));
                    core.expire(now);
                    Ok(())
                }
            };
            revisions.push(core.revision());
        }
        revisions
    }

    fn state(core: &LocalCore) -> BTreeMap<String, (Bytes, Version)> {
        core.list("", None, usize::MAX).items.into_iter().map(|(k, v)| (k, (v.value, v.version))).collect()
    }

    proptest::proptest! {
        /// LC1 and LC3: replaying the history from the start rebuilds exactly the key map, and
        /// revisions only grow, whatever mix of operations ran.
        #[test]
        fn history_replays_to_the_state(ops in proptest::collection::vec((0u8..6, 0u8..6, 0u8..3), 1..120)) {
            let mut core = LocalCore::new(100_000);
            let revisions = drive(&mut core, &ops);
            proptest::prop_assert!(revisions.windows(2).all(|w| w[0] <= w[1]));
            let mut rebuilt = BTreeMap::new();
            for e in core.events_since("", Version(1)).unwrap() {
                match e.kind {
                    EventKind::Put => {
                        rebuilt.insert(e.key, (e.value, e.version));
                    }
                    EventKind::Delete => {
                        rebuilt.remove(&e.key);
                    }
                }
            }
            proptest::prop_assert_eq!(rebuilt, state(&core));
        }

        /// LL1: the log a core produced, encoded, decoded and replayed into an empty core,
        /// gives the same keys, versions and revision.
        #[test]
        fn the_log_replays_to_the_state(ops in proptest::collection::vec((0u8..6, 0u8..6, 0u8..3), 1..120)) {
            let mut core = LocalCore::new(100_000);
            drive(&mut core, &ops);
            let mut bytes = Vec::new();
            for record in core.take_log() {
                crate::local_log::encode(&record, &mut bytes);
            }
            let (records, end) = crate::local_log::decode_log(&bytes);
            proptest::prop_assert_eq!(end, crate::local_log::LogEnd::Clean);
            let mut replayed = LocalCore::new(100_000);
            for record in records {
                replayed.replay(record, start()).unwrap();
            }
            proptest::prop_assert_eq!(state(&replayed), state(&core));
            proptest::prop_assert_eq!(replayed.revision(), core.revision());
            proptest::prop_assert!(replayed.take_log().is_empty());
            // The image a rewritten log starts with replays to the same state too.
            let mut bytes = Vec::new();
            crate::local_log::encode(&LogRecord::State(Box::new(core.image())), &mut bytes);
            let (records, _) = crate::local_log::decode_log(&bytes);
            let mut restored = LocalCore::new(100_000);
            for record in records {
                restored.replay(record, start()).unwrap();
            }
            proptest::prop_assert_eq!(state(&restored), state(&core));
            proptest::prop_assert_eq!(restored.revision(), core.revision());
        }
    }
}
