//! Placing records in the open journal batch: an entry (with its segment's master key the
//! first time, S3), or a control record (fence, explicit LAC), after the checks that refuse a
//! request before anything is journaled (size, key, fence, deletion, read-only).

use std::time::Instant;

use bytes::Bytes;

use super::{Effect, ShardCore, control_header};
use crate::constants::{MASTER_KEY_BYTES_MAX, RECORD_HEADER_BYTES};
use crate::error::Error;
use crate::ids::SegmentId;
use crate::journal::record::{self, LAC_NONE, RecordHeader, RecordKind};
use crate::shard::request::AddEntry;
use crate::shard::segment_state::SegmentState;

#[derive(Clone, Copy, Debug)]
pub(super) enum ControlRecord {
    Fence,
    Lac(u64),
}

impl<T> ShardCore<T> {
    pub(super) fn check_key(&self, segment: SegmentId, master_key: &Bytes) -> Result<(), Error> {
        if master_key.len() > MASTER_KEY_BYTES_MAX {
            return Err(Error::InvalidRequest(format!(
                "master key of {} bytes exceeds {MASTER_KEY_BYTES_MAX}",
                master_key.len()
            )));
        }
        match self.segments.get(&segment) {
            Some(SegmentState { master_key: Some(key), .. }) if key != master_key => {
                Err(Error::WrongMasterKey(segment))
            }
            _ => Ok(()),
        }
    }

    /// Journals one entry. Ok(Some(batch seq)), Ok(None) when it must wait (stalled), or the
    /// reason it is refused.
    pub(super) fn place_entry(&mut self, add: &AddEntry, now: Instant) -> Result<Option<u64>, Error> {
        if add.payload.len() > self.settings.entry_bytes_max {
            return Err(Error::InvalidRequest(format!(
                "entry of {} bytes exceeds entry_bytes_max {}",
                add.payload.len(),
                self.settings.entry_bytes_max
            )));
        }
        self.check_key(add.segment, &add.master_key)?;
        if self.segments.get(&add.segment).is_some_and(|s| s.deleted) {
            return Err(Error::Deleted(add.segment));
        }
        if self.read_only && !add.flags.is_recovery() {
            return Err(Error::NoSpace(self.settings.shard));
        }
        if let Some(state) = self.segments.get(&add.segment)
            && state.fenced
            && !add.flags.is_recovery()
        {
            return Err(Error::Fenced(add.segment));
        }
        if self.cache_full() {
            return Ok(None);
        }
        let key_needed = !self.segments.get(&add.segment).is_some_and(|s| s.key_journaled);
        let key_bytes = if key_needed { record::record_bytes(add.master_key.len()) } else { 0 };
        let need = key_bytes + record::record_bytes(add.payload.len());
        if !self.ensure_room(need, now) {
            return Ok(None);
        }
        // The kept key is a copy: the caller's `Bytes` may be a slice of a larger buffer (a
        // network receive buffer) that a long-lived segment would otherwise pin.
        let state = self
            .segments
            .entry(add.segment)
            .or_insert_with(|| SegmentState::new(Bytes::copy_from_slice(&add.master_key)));
        let batch = self.batch.as_mut().expect("ensure_room opened a batch");
        if key_needed {
            state.key_journaled = true;
            state.master_key = Some(Bytes::copy_from_slice(&add.master_key));
            let header = control_header(RecordKind::MasterKey, add.segment, 0, add.master_key.len());
            batch.builder.push(&header, &add.master_key);
        }
        let lac = add.last_add_confirmed.map(|l| l.0);
        let header = RecordHeader {
            kind: RecordKind::Entry,
            flags: add.flags.0,
            payload_len: add.payload.len() as u32,
            segment_id: add.segment.0,
            entry_id: add.entry.0,
            last_add_confirmed: lac.unwrap_or(LAC_NONE),
        };
        let at = batch.builder.push(&header, &add.payload);
        batch.effects.push(Effect::Entry {
            segment: add.segment,
            entry: add.entry.0,
            at: at as u32,
            len: add.payload.len() as u32,
            lac,
            payload: add.payload.clone(),
        });
        let seq = batch.builder.seq();
        self.saw_lac(add.segment, lac);
        Ok(Some(seq))
    }

    pub(super) fn place_control(
        &mut self,
        segment: SegmentId,
        master_key: &Bytes,
        control: ControlRecord,
        now: Instant,
    ) -> Result<Option<u64>, Error> {
        self.check_key(segment, master_key)?;
        if self.segments.get(&segment).is_some_and(|s| s.deleted) {
            return Err(Error::Deleted(segment));
        }
        if let (ControlRecord::Lac(_), Some(state)) = (control, self.segments.get(&segment))
            && state.fenced
        {
            return Err(Error::Fenced(segment));
        }
        let key_needed = !self.segments.get(&segment).is_some_and(|s| s.key_journaled);
        let key_bytes = if key_needed { record::record_bytes(master_key.len()) } else { 0 };
        if !self.ensure_room(key_bytes + RECORD_HEADER_BYTES, now) {
            return Ok(None);
        }
        let state = self
            .segments
            .entry(segment)
            .or_insert_with(|| SegmentState::new(Bytes::copy_from_slice(master_key)));
        let batch = self.batch.as_mut().expect("ensure_room opened a batch");
        if key_needed {
            state.key_journaled = true;
            state.master_key = Some(Bytes::copy_from_slice(master_key));
            let header = control_header(RecordKind::MasterKey, segment, 0, master_key.len());
            batch.builder.push(&header, master_key);
        }
        match control {
            ControlRecord::Fence => {
                state.fenced = true;
                batch.builder.push(&control_header(RecordKind::Fence, segment, 0, 0), &[]);
            }
            ControlRecord::Lac(lac) => {
                batch.builder.push(&control_header(RecordKind::Lac, segment, lac, 0), &[]);
                batch.effects.push(Effect::Lac { segment, lac });
                let seq = batch.builder.seq();
                self.saw_lac(segment, Some(lac));
                return Ok(Some(seq));
            }
        }
        Ok(Some(batch.builder.seq()))
    }
}
