//! The shard core's read path: entries still in the journal are read back with one aligned
//! read each, and checked (kind, ids, CRC) before they are returned. An entry whose bytes fail
//! the check answers `Corrupt`; a missing entry answers `NoSuchEntry` unless replay found
//! damage that may have held it, then `Corrupt` (recovery must not mistake damage for absence).

use bytes::Bytes;

use super::{OP_READ, Output, ShardCore};
use crate::constants::{RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::error::Error;
use crate::ids::{EntryId, SegmentId};
use crate::io::buf::{AlignedBuf, round_up};
use crate::io::{Completion, DiskOp};
use crate::journal::record::{self, RecordKind};
use crate::shard::location_index::Location;
use crate::shard::request::Reply;

/// A read waiting for its completion.
#[derive(Debug)]
pub(super) struct PendingRead<T> {
    pub(super) reply: T,
    pub(super) segment: SegmentId,
    pub(super) entry: EntryId,
    pub(super) location: Location,
    pub(super) skew: usize,
}

impl<T> ShardCore<T> {
    pub(super) fn start_read(&mut self, segment: SegmentId, entry: EntryId, reply: T) {
        let Some(location) = self.index.get(segment, entry) else {
            let error = if self.damage.is_empty() {
                Error::NoSuchEntry(segment, entry)
            } else {
                Error::Corrupt {
                    segment,
                    entry,
                    detail: format!(
                        "not found, and journal damage may have held it: {}",
                        self.damage.join("; ")
                    ),
                }
            };
            self.out.push_back(Output::Reply(reply, Reply::Entry(Err(error))));
            return;
        };
        let start = location.offset - location.offset % SECTOR_BYTES as u64;
        let end = round_up(
            (location.offset + RECORD_HEADER_BYTES as u64) as usize + location.len as usize,
            SECTOR_BYTES,
        );
        let skew = (location.offset - start) as usize;
        let mut buf = AlignedBuf::with_capacity(end - start as usize);
        buf.set_len(end - start as usize);
        let op = self.op_id(OP_READ);
        self.reads.insert(op, PendingRead { reply, segment, entry, location, skew });
        self.out.push_back(Output::Disk(op, DiskOp::Read { file: location.file, offset: start, buf }));
    }

    pub(super) fn on_read_completed(&mut self, completion: Completion) {
        let read = self.reads.remove(&completion.op).expect("a read completion belongs to a read");
        let PendingRead { reply, segment, entry, location, skew } = read;
        let result = match completion.result {
            Err((op, source)) => Err(Error::Io {
                op,
                file: format!("journal {}", location.file).into(),
                offset: location.offset,
                source,
            }),
            Ok(()) => {
                let bytes = &completion.buf.as_slice()[..completion.bytes.min(completion.buf.len())];
                match bytes.get(skew..).map(|b| record::decode(b, location.file.0)) {
                    Some(Ok((h, payload)))
                        if h.kind == RecordKind::Entry
                            && h.segment_id == segment.0
                            && h.entry_id == entry.0 =>
                    {
                        Ok(Bytes::copy_from_slice(payload))
                    }
                    other => Err(Error::Corrupt {
                        segment,
                        entry,
                        detail: format!(
                            "journal {} offset {}: {:?}",
                            location.file,
                            location.offset,
                            other.map(|r| r.map(|(h, _)| h))
                        ),
                    }),
                }
            }
        };
        self.out.push_back(Output::Reply(reply, Reply::Entry(result)));
    }
}
