//! `ReadItem` and `ReaderQueue`: what a segment reader hosted on the I/O thread delivered and
//! its consumer has not taken yet (entries in order, then the end or the failure), a
//! `Mailbox` taken one item at a time. The reader core bounds it (R4: it delivers only within
//! its read-ahead window, which the consumer frees by taking entries).

use bytes::Bytes;

use crate::segment_reader::ReaderError;

/// One thing a reader delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadItem {
    /// The next entry: its id and the caller's payload.
    Entry(u64, Bytes),
    /// A closed segment was read to its last entry.
    End,
    /// Reading stopped: an entry no member could supply, or the client closed.
    Failed(ReaderError),
}

/// What a reader hosted on the I/O thread delivered and its consumer has not taken yet.
pub(crate) type ReaderQueue = super::mailbox::Mailbox<ReadItem>;
