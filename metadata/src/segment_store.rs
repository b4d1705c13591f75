//! `SegmentMetadataStore`: segments' metadata (`segments/<id>`) through typed, versioned
//! operations: create with a fresh id, read, compare-and-set update, delete, list, watch.
//!
//! Invariants:
//! - SS1: every update and delete is a compare-and-set on the version the caller read; a lost
//!   race is `VersionConflict`, never a silent overwrite. `modify` re-reads and retries.
//! - SS2: only valid metadata is written (`SegmentMetadata::encode` validates), and a stored
//!   value that does not decode is reported as `Corrupt` naming its key, never skipped.
//! - SS3: a segment's data may be dropped from bookies only when its key is gone
//!   (`confirm_deleted`): any doubt (an error) keeps the data.

use std::sync::Arc;

use crate::error::MetaError;
use crate::id_generator::IdGenerator;
use crate::schema::{self, SegmentMetadata};
use crate::store::MetadataStore;
use crate::watch::Watch;
use crate::{Version, Versioned};

/// Attempts of `modify` before it gives up with the last `VersionConflict`.
pub const MODIFY_ATTEMPTS: usize = 32;

/// Typed access to segments' metadata.
#[derive(Debug)]
pub struct SegmentMetadataStore<S> {
    store: Arc<S>,
    ids: IdGenerator<S>,
}

fn decode(key: &str, v: Versioned) -> Result<(SegmentMetadata, Version), MetaError> {
    Ok((SegmentMetadata::decode(key, &v.value)?, v.version))
}

impl<S: MetadataStore> SegmentMetadataStore<S> {
    /// Segments in `store`.
    pub fn new(store: Arc<S>) -> SegmentMetadataStore<S> {
        SegmentMetadataStore { ids: IdGenerator::new(store.clone()), store }
    }

    /// Creates a segment with a new id; its id and version.
    pub async fn create(&self, meta: &SegmentMetadata) -> Result<(u64, Version), MetaError> {
        let value = meta.encode()?;
        let mut last = None;
        // Ids do not repeat (ID1); a repeat is only possible after keys were copied between
        // stores, and is refused by the create, then a fresh id is drawn.
        for _ in 0..4 {
            let id = self.ids.next_id().await?;
            match self.store.create(&schema::segment_key(id), value.clone(), None).await {
                Ok(version) => return Ok((id, version)),
                Err(MetaError::AlreadyExists(key)) => last = Some(MetaError::AlreadyExists(key)),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| MetaError::Unavailable("no segment id".into())))
    }

    /// A segment's metadata and version; `None` when it does not exist.
    pub async fn get(&self, id: u64) -> Result<Option<(SegmentMetadata, Version)>, MetaError> {
        let key = schema::segment_key(id);
        self.store.get(&key).await?.map(|v| decode(&key, v)).transpose()
    }

    /// Replaces a segment's metadata if its version is still `version` (SS1).
    pub async fn update(
        &self,
        id: u64,
        meta: &SegmentMetadata,
        version: Version,
    ) -> Result<Version, MetaError> {
        self.store.put_if(&schema::segment_key(id), meta.encode()?, version).await
    }

    /// Read-modify-write with retries (SS1): `change` gets the current metadata and returns
    /// the new one, or `None` to leave it as it is (then the current one is returned), or an
    /// error to stop. `NotFound` when the segment does not exist.
    pub async fn modify(
        &self,
        id: u64,
        mut change: impl FnMut(&SegmentMetadata) -> Result<Option<SegmentMetadata>, MetaError> + Send,
    ) -> Result<(SegmentMetadata, Version), MetaError> {
        let mut conflict = None;
        for _ in 0..MODIFY_ATTEMPTS {
            let (current, version) =
                self.get(id).await?.ok_or_else(|| MetaError::NotFound(schema::segment_key(id)))?;
            let Some(next) = change(&current)? else { return Ok((current, version)) };
            match self.update(id, &next, version).await {
                Ok(v) => return Ok((next, v)),
                Err(e @ MetaError::VersionConflict { .. }) => conflict = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(conflict.unwrap_or_else(|| MetaError::Unavailable("modify: no attempt made".into())))
    }

    /// Deletes a segment's metadata if its version is still `version`.
    pub async fn delete(&self, id: u64, version: Version) -> Result<Version, MetaError> {
        self.store.delete_if(&schema::segment_key(id), version).await
    }

    /// Segments with ids after `after`, at most `limit` (0: all), in id order; and whether
    /// more follow.
    pub async fn list(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<(u64, SegmentMetadata, Version)>, bool), MetaError> {
        let after = after.map(schema::segment_key);
        let page = self.store.list(schema::SEGMENTS, after.as_deref(), limit).await?;
        let mut out = Vec::with_capacity(page.items.len());
        for (key, v) in page.items {
            let id = schema::segment_id_of(&key)
                .ok_or_else(|| MetaError::Corrupt(format!("{key}: not a segment key")))?;
            let (meta, version) = decode(&key, v)?;
            out.push((id, meta, version));
        }
        Ok((out, page.more))
    }

    /// Changes to one segment's metadata from version `from` (0: from now).
    pub async fn watch(&self, id: u64, from: Version) -> Result<Watch, MetaError> {
        // Keys are fixed width (SC2): the key is a prefix of no other segment's key.
        self.store.watch(&schema::segment_key(id), from).await
    }

    /// True when the segment's metadata is gone, so bookies may drop its data (SS3).
    pub async fn confirm_deleted(&self, id: u64) -> Result<bool, MetaError> {
        Ok(self.store.get(&schema::segment_key(id)).await?.is_none())
    }
}
