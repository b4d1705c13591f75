//! `BookieRegistry`: which bookies are up, writable or read-only (`bookies/writable/<id>`,
//! `bookies/readonly/<id>`, each bound to its bookie's lease), and the bookies' cookies
//! (`cookies/<id>`: the identity of the disks a bookie id was first started on).
//!
//! Owns: registration, moves between writable and read-only, deregistration, listings and the
//! membership watch; cookie creation, comparison and compare-and-set update.
//! Does not own: keeping the lease alive (`LeaseKeeper`), the cookie copies on the bookie's
//! disks (the bookie compares those with `cookie_differences`), placement.
//!
//! Invariants:
//! - BR1: an id is registered under at most one of the two paths, at every revision: a
//!   watcher or a listing never sees one bookie both writable and read-only.
//! - BR2: every transaction that creates a registration key also rewrites the bookie's cookie,
//!   unchanged, on condition of the cookie version read before the registrations were read.
//!   The cookie is the per-bookie serialisation point BR1 rests on (see below).
//! - BR3: a registration is bound to the registering lease and vanishes with it; a move keeps
//!   it bound to the same lease, and only that lease's holder may move it.
//! - BR4: cookies are created only if absent and changed only by compare-and-set; a stored
//!   value that does not decode (or breaks these rules) is `Corrupt` naming its key, never
//!   skipped.
//!
//! The registration race, and why the cookie guards it. The contract has no condition "this
//! key is absent" that does not also write the key, so "create `writable/<id>` only if
//! `readonly/<id>` is absent" is not one condition. Reading the other path first and then
//! creating races: a registration on each path reads the other absent and both create. So
//! `register` reads the cookie's version, then the other path, and commits the create
//! together with a rewrite of the cookie at that version. A registration created on the other
//! path after the cookie was read changed the cookie (BR2), so this transaction fails and is
//! retried from the reads; one created before is seen by the read of the other path, which
//! comes after. `set_read_only` does the same, so a move cannot slip a second key in either.
//! No window is left (BR1). Deletions (deregistration, a lease's end) need no guard: they
//! cannot put an id on two paths. The costs: a bookie needs its cookie before it registers
//! (as in BookKeeper, whose bookies check their cookie first at start), and a registration
//! changes the cookie's version, so an operator's `update_cookie` racing one answers
//! `VersionConflict` (re-read and retry). Keys written around this module break BR2.
//!
//! Listings answer one entry per key; an entry whose key or value does not decode is an
//! `Err(Corrupt)` naming its key, in place, so one bad value (a newer format, a hand-written
//! key) neither hides the other bookies nor goes unreported.

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::is_random_id;
use crate::error::MetaError;
use crate::schema::{self, BookieInfo, Cookie, wire};
use crate::store::MetadataStore;
use crate::watch::Watch;
use crate::{Cond, LeaseId, Op, Version, Versioned};

/// Attempts of a registration change before it gives up with the last conflict.
pub const REGISTER_ATTEMPTS: usize = 32;

/// A bookie's registration, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisteredBookie {
    /// The bookie's id.
    pub id: String,
    /// Registered under `bookies/readonly/`.
    pub read_only: bool,
    /// What it registered.
    pub info: BookieInfo,
    /// The registration key's version.
    pub version: Version,
    /// The lease it is bound to (BR3).
    pub lease: Option<LeaseId>,
}

/// Bookie registration and cookies in a store (see the module doc).
#[derive(Debug)]
pub struct BookieRegistry<S> {
    store: Arc<S>,
}

impl<S> Clone for BookieRegistry<S> {
    fn clone(&self) -> Self {
        BookieRegistry { store: self.store.clone() }
    }
}

fn put(key: String, value: Bytes, cond: Cond, lease: Option<LeaseId>) -> Op {
    Op::Put { key, value, cond, lease }
}

/// The error a registration gives up with after `REGISTER_ATTEMPTS` conflicts.
fn gave_up(last: Option<MetaError>, id: &str) -> MetaError {
    last.unwrap_or_else(|| MetaError::Unavailable(format!("bookie {id}: registration kept conflicting")))
}

/// Whether a failed registration transaction is worth re-reading and retrying: something it
/// read changed in between.
fn lost_race(e: &MetaError) -> bool {
    matches!(e, MetaError::VersionConflict { .. } | MetaError::NotFound(_) | MetaError::AlreadyExists(_))
}

/// A stored value that fails a check meant for requests is `Corrupt` naming its key.
fn stored_corrupt(key: &str, e: MetaError) -> MetaError {
    match e {
        MetaError::Invalid(why) => MetaError::Corrupt(format!("{key}: {why}")),
        other => other,
    }
}

fn decode_registration(key: &str, stored: Versioned) -> Result<RegisteredBookie, MetaError> {
    let (id, read_only) =
        schema::bookie_of(key).ok_or_else(|| MetaError::Corrupt(format!("{key}: not a bookie key")))?;
    schema::check_name("bookie", id).map_err(|e| stored_corrupt(key, e))?;
    Ok(RegisteredBookie {
        id: id.to_string(),
        read_only,
        info: wire::decode(key, &stored.value)?,
        version: stored.version,
        lease: stored.lease,
    })
}

impl<S: MetadataStore> BookieRegistry<S> {
    /// The registry of `store`.
    pub fn new(store: Arc<S>) -> BookieRegistry<S> {
        BookieRegistry { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Registers bookie `id` as writable (or read-only), bound to `lease`; the registration's
    /// version. `AlreadyExists` (naming the key found) when the id is registered on the other
    /// path (by any lease: `set_read_only` moves it) or on this one by another lease (a stale
    /// registration: wait for its lease to end); a repeat by the same lease on the same path
    /// answers the existing registration (a retry after `Unavailable`). `NotFound` (the
    /// cookie key) when the bookie has no cookie yet (BR2); `LeaseExpired` when the lease is
    /// gone.
    pub async fn register(
        &self,
        id: &str,
        info: &BookieInfo,
        lease: LeaseId,
        read_only: bool,
    ) -> Result<Version, MetaError> {
        schema::check_name("bookie", id)?;
        let (target, other) = (schema::bookie_key(id, read_only), schema::bookie_key(id, !read_only));
        let value = wire::encode(info);
        let mut last = None;
        for _ in 0..REGISTER_ATTEMPTS {
            // The cookie first, then the other path (see the module doc: the order matters).
            let guard = self.guard(id).await?;
            if self.store.get(&other).await?.is_some() {
                return Err(MetaError::AlreadyExists(other));
            }
            let ops = vec![put(target.clone(), value.clone(), Cond::Absent, Some(lease)), guard];
            match self.store.txn(ops).await {
                Ok(version) => return Ok(version),
                Err(MetaError::AlreadyExists(key)) => match self.store.get(&target).await? {
                    Some(held) if held.lease == Some(lease) => return Ok(held.version),
                    Some(_) => return Err(MetaError::AlreadyExists(key)),
                    // It vanished with its lease meanwhile: try again.
                    None => last = Some(MetaError::AlreadyExists(key)),
                },
                Err(e) if lost_race(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, id))
    }

    /// Moves bookie `id`'s registration to writable (or read-only) in one transaction, with
    /// `info` as its new value, still bound to `lease` (BR3); the new version. Already there:
    /// updates `info` in place. `NotFound` (the key it would move from) when the id is not
    /// registered; `AlreadyExists` (the key found) when it is registered by another lease.
    pub async fn set_read_only(
        &self,
        id: &str,
        info: &BookieInfo,
        lease: LeaseId,
        read_only: bool,
    ) -> Result<Version, MetaError> {
        schema::check_name("bookie", id)?;
        let (target, source) = (schema::bookie_key(id, read_only), schema::bookie_key(id, !read_only));
        let value = wire::encode(info);
        let mut last = None;
        for _ in 0..REGISTER_ATTEMPTS {
            let guard = self.guard(id).await?;
            // Both paths at one revision; a move after the guard's read fails the txn (guard).
            let [held_writable, held_read_only] = self.paths(id).await?;
            let (held_source, held_target) =
                if read_only { (held_writable, held_read_only) } else { (held_read_only, held_writable) };
            let ops = match (held_source, held_target) {
                (Some(_), Some(_)) => {
                    return Err(MetaError::Corrupt(format!("{source} and {target} both exist (BR1 broken)")));
                }
                (None, None) => return Err(MetaError::NotFound(source)),
                (None, Some(held)) => {
                    if held.lease != Some(lease) {
                        return Err(MetaError::AlreadyExists(target));
                    }
                    vec![put(target.clone(), value.clone(), Cond::Version(held.version), Some(lease))]
                }
                (Some(held), None) => {
                    if held.lease != Some(lease) {
                        return Err(MetaError::AlreadyExists(source));
                    }
                    vec![
                        Op::Delete { key: source.clone(), cond: Cond::Version(held.version) },
                        put(target.clone(), value.clone(), Cond::Absent, Some(lease)),
                        guard,
                    ]
                }
            };
            match self.store.txn(ops).await {
                Ok(version) => return Ok(version),
                Err(e) if lost_race(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, id))
    }

    /// Removes bookie `id`'s registration, whoever's lease it is bound to (an operator
    /// decommissioning; a stopping bookie may revoke its lease instead); the revision of the
    /// removal. `NotFound` (the writable key) when it is not registered.
    pub async fn deregister(&self, id: &str) -> Result<Version, MetaError> {
        schema::check_name("bookie", id)?;
        let mut last = None;
        for _ in 0..REGISTER_ATTEMPTS {
            let held = self.paths(id).await?;
            let ops: Vec<Op> = [false, true]
                .into_iter()
                .zip(held)
                .filter_map(|(read_only, held)| {
                    let key = schema::bookie_key(id, read_only);
                    held.map(|held| Op::Delete { key, cond: Cond::Version(held.version) })
                })
                .collect();
            if ops.is_empty() {
                return Err(MetaError::NotFound(schema::bookie_key(id, false)));
            }
            match self.store.txn(ops).await {
                Ok(version) => return Ok(version),
                Err(e) if lost_race(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(gave_up(last, id))
    }

    /// Bookie `id`'s registration; `None` when it is not registered. Both paths are read at one
    /// revision (`paths`), so a move can never show the bookie on both paths or on neither.
    pub async fn bookie(&self, id: &str) -> Result<Option<RegisteredBookie>, MetaError> {
        schema::check_name("bookie", id)?;
        match self.paths(id).await? {
            [None, None] => Ok(None),
            [Some(stored), None] => Ok(Some(decode_registration(&schema::bookie_key(id, false), stored)?)),
            [None, Some(stored)] => Ok(Some(decode_registration(&schema::bookie_key(id, true), stored)?)),
            [Some(_), Some(_)] => {
                Err(MetaError::Corrupt(format!("bookie {id} is registered on both paths (BR1 broken)")))
            }
        }
    }

    /// Bookie `id`'s registration keys, `[writable, read_only]`, read in one listing of
    /// `bookies/` (one revision on both backends).
    async fn paths(&self, id: &str) -> Result<[Option<Versioned>; 2], MetaError> {
        let mut held = [None, None];
        for (key, stored) in self.store.list(schema::BOOKIES, None, 0).await?.items {
            if let Some((b, read_only)) = schema::bookie_of(&key)
                && b == id
            {
                held[usize::from(read_only)] = Some(stored);
            }
        }
        Ok(held)
    }

    /// Writable bookies, in id order; an entry that does not decode is `Err(Corrupt)` naming
    /// its key, in place (see the module doc).
    pub async fn writable(&self) -> Result<Vec<Result<RegisteredBookie, MetaError>>, MetaError> {
        self.listing(schema::BOOKIES_WRITABLE).await
    }

    /// Read-only bookies, as `writable`.
    pub async fn read_only(&self) -> Result<Vec<Result<RegisteredBookie, MetaError>>, MetaError> {
        self.listing(schema::BOOKIES_READONLY).await
    }

    async fn listing(&self, prefix: &str) -> Result<Vec<Result<RegisteredBookie, MetaError>>, MetaError> {
        let (items, _) = self.store.list_all(prefix).await?;
        Ok(items.into_iter().map(|(key, stored)| decode_registration(&key, stored)).collect())
    }

    /// Changes to registrations (both paths) from version `from` on (MS4); an event's key
    /// parses back with `schema::bookie_of`. To follow membership without a gap: list, then
    /// watch from one past the listing's revision.
    pub async fn watch_bookies(&self, from: Version) -> Result<Watch, MetaError> {
        self.store.watch(schema::BOOKIES, from).await
    }

    /// The rewrite of bookie `id`'s cookie at its current version (BR2); `NotFound` (the
    /// cookie key) when it has none.
    async fn guard(&self, id: &str) -> Result<Op, MetaError> {
        let key = schema::cookie_key(id);
        match self.store.get(&key).await? {
            Some(cookie) => Ok(put(key, cookie.value, Cond::Version(cookie.version), None)),
            None => Err(MetaError::NotFound(key)),
        }
    }

    /// Bookie `id`'s cookie and its version; `None` when it has none.
    pub async fn cookie(&self, id: &str) -> Result<Option<(Cookie, Version)>, MetaError> {
        schema::check_name("bookie", id)?;
        let key = schema::cookie_key(id);
        let Some(stored) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let cookie: Cookie = wire::decode(&key, &stored.value)?;
        check_cookie_shape(&cookie).map_err(|e| stored_corrupt(&key, e))?;
        if cookie.bookie_id != id {
            return Err(MetaError::Corrupt(format!(
                "{key}: holds the cookie of bookie {:?}",
                cookie.bookie_id
            )));
        }
        Ok(Some((cookie, stored.version)))
    }

    /// Stores a new bookie's cookie; its version. `AlreadyExists` when the bookie has one
    /// (BR4): compare with `check_cookie` instead.
    pub async fn create_cookie(&self, cookie: &Cookie) -> Result<Version, MetaError> {
        check_cookie_shape(cookie)?;
        self.store.create(&schema::cookie_key(&cookie.bookie_id), wire::encode(cookie), None).await
    }

    /// Compares the cookie a bookie found on its disks with the stored one; the stored
    /// version when they match. `Invalid` listing every difference (see `cookie_differences`)
    /// when they do not; `NotFound` (the cookie key) when none is stored.
    pub async fn check_cookie(&self, id: &str, local: &Cookie) -> Result<Version, MetaError> {
        let (stored, version) =
            self.cookie(id).await?.ok_or_else(|| MetaError::NotFound(schema::cookie_key(id)))?;
        let differences = cookie_differences(&stored, local);
        if differences.is_empty() {
            return Ok(version);
        }
        Err(MetaError::Invalid(format!(
            "the cookie on bookie {id}'s disks does not match {}: {}",
            schema::cookie_key(id),
            differences.join("; ")
        )))
    }

    /// Replaces a bookie's cookie if its version is still `version` (an operator adding a
    /// disk); the new version. A registration changes the version too (BR2): on
    /// `VersionConflict`, re-read and retry.
    pub async fn update_cookie(&self, cookie: &Cookie, version: Version) -> Result<Version, MetaError> {
        check_cookie_shape(cookie)?;
        self.store.put_if(&schema::cookie_key(&cookie.bookie_id), wire::encode(cookie), version).await
    }
}

/// Checks what a cookie must hold: a valid bookie id, 32-hex-digit instance and disk ids, at
/// least one journal directory, no empty directory.
fn check_cookie_shape(cookie: &Cookie) -> Result<(), MetaError> {
    schema::check_name("bookie", &cookie.bookie_id)?;
    for (what, id) in [("instance id", &cookie.instance_id), ("disk id", &cookie.disk_id)] {
        if !is_random_id(id) {
            return Err(MetaError::Invalid(format!(
                "cookie of bookie {}: {what} {id:?} is not 32 lowercase hex digits",
                cookie.bookie_id
            )));
        }
    }
    let dirs = cookie.journal_dirs.iter().chain(&cookie.ledger_dirs);
    if cookie.journal_dirs.is_empty() || dirs.clone().any(String::is_empty) {
        return Err(MetaError::Invalid(format!(
            "cookie of bookie {}: needs at least one journal dir and no empty dir",
            cookie.bookie_id
        )));
    }
    Ok(())
}

/// Every difference between the `stored` cookie and the `local` one a bookie found on its
/// disks, one sentence each, saying what it likely means; empty when they match.
pub fn cookie_differences(stored: &Cookie, local: &Cookie) -> Vec<String> {
    let mut out = Vec::new();
    if stored.bookie_id != local.bookie_id {
        out.push(format!(
            "bookie id: stored {:?}, local {:?} (the disks belong to another bookie)",
            stored.bookie_id, local.bookie_id
        ));
    }
    if stored.instance_id != local.instance_id {
        out.push(format!(
            "instance id: stored {}, local {} (the disks were formatted for another cluster, \
             or the cluster was re-initialised)",
            stored.instance_id, local.instance_id
        ));
    }
    dirs_differences("journal dirs", &stored.journal_dirs, &local.journal_dirs, &mut out);
    dirs_differences("ledger dirs", &stored.ledger_dirs, &local.ledger_dirs, &mut out);
    if stored.disk_id != local.disk_id {
        out.push(format!(
            "disk id: stored {}, local {} (the disks were reformatted or swapped)",
            stored.disk_id, local.disk_id
        ));
    }
    out
}

fn dirs_differences(what: &str, stored: &[String], local: &[String], out: &mut Vec<String>) {
    let missing: Vec<&String> = stored.iter().filter(|d| !local.contains(d)).collect();
    let added: Vec<&String> = local.iter().filter(|d| !stored.contains(d)).collect();
    if !missing.is_empty() {
        out.push(format!("{what}: {missing:?} in the stored cookie but not configured (a disk removed?)"));
    }
    if !added.is_empty() {
        out.push(format!(
            "{what}: {added:?} configured but not in the stored cookie (a disk added: an operator \
             updates the cookie)"
        ));
    }
    if missing.is_empty() && added.is_empty() && stored != local {
        out.push(format!("{what}: configured in another order: stored {stored:?}, local {local:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie() -> Cookie {
        Cookie {
            bookie_id: "b1".into(),
            instance_id: "0".repeat(32),
            journal_dirs: vec!["/j".into()],
            ledger_dirs: vec!["/l1".into(), "/l2".into()],
            disk_id: "1".repeat(32),
        }
    }

    #[test]
    fn every_cookie_difference_is_named() {
        let stored = cookie();
        assert!(cookie_differences(&stored, &stored).is_empty());
        let local = Cookie {
            instance_id: "a".repeat(32),
            journal_dirs: vec!["/j".into(), "/j2".into()],
            ledger_dirs: vec!["/l1".into()],
            disk_id: "b".repeat(32),
            ..cookie()
        };
        let d = cookie_differences(&stored, &local);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].starts_with("instance id") && d[0].contains("another cluster"), "{d:?}");
        assert!(d[1].starts_with("journal dirs") && d[1].contains("/j2") && d[1].contains("added"));
        assert!(d[2].starts_with("ledger dirs") && d[2].contains("/l2") && d[2].contains("removed"));
        assert!(d[3].starts_with("disk id") && d[3].contains("reformatted"));
        let swapped = Cookie { ledger_dirs: vec!["/l2".into(), "/l1".into()], ..cookie() };
        assert_eq!(cookie_differences(&stored, &swapped).len(), 1);
        assert!(cookie_differences(&stored, &swapped)[0].contains("another order"));
    }

    #[test]
    fn malformed_cookies_are_refused() {
        check_cookie_shape(&cookie()).unwrap();
        for bad in [
            Cookie { bookie_id: "a/b".into(), ..cookie() },
            Cookie { instance_id: "xyz".into(), ..cookie() },
            Cookie { disk_id: String::new(), ..cookie() },
            Cookie { journal_dirs: vec![], ..cookie() },
            Cookie { ledger_dirs: vec![String::new()], ..cookie() },
        ] {
            assert!(matches!(check_cookie_shape(&bad), Err(MetaError::Invalid(_))), "{bad:?}");
        }
    }
}
