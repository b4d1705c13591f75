//! `Tag`: the `u64` a writer's request is submitted with, naming what it was (kind, entry,
//! ensemble index) so its answer maps back; and `TransportFailure`, the writer's view of a
//! request that got no answer.

use crate::transport::TransportError;

/// Entry ids are below this (2^56): the rest of a `Tag` holds the ensemble index and the kind.
pub const ENTRY_ID_LIMIT: u64 = 1 << ENTRY_BITS;

const ENTRY_BITS: u32 = 56;
const INDEX_BITS: u32 = 6;
const KIND_BIT: u64 = 1 << (ENTRY_BITS + INDEX_BITS);
/// Not set by the writer; left to the shell (a tag with it set is never the writer's).
const RESERVED_BIT: u64 = 1 << 63;

/// What a request to a bookie was: the `Tag` says it, so its answer maps back (W6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// An ADD of the tag's entry.
    Add,
    /// A WRITE_LAC of the tag's LAC.
    WriteLastAddConfirmed,
}

/// The `u64` a request is submitted with (`Connection::submit(tag, ..)`): bits 0..56 the entry
/// (for a WRITE_LAC, the LAC written), bits 56..62 the ensemble index, bit 62 the kind, bit 63
/// clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u64);

impl Tag {
    pub(crate) fn new(kind: TagKind, entry: u64, bookie_index: usize) -> Tag {
        assert!(entry < ENTRY_ID_LIMIT, "entry {entry} does not fit a tag");
        assert!(bookie_index < 1 << INDEX_BITS, "ensemble index {bookie_index} does not fit a tag");
        let kind_bit = match kind {
            TagKind::Add => 0,
            TagKind::WriteLastAddConfirmed => KIND_BIT,
        };
        Tag(entry | (bookie_index as u64) << ENTRY_BITS | kind_bit)
    }

    /// The tag a transport completion carries.
    pub fn from_raw(raw: u64) -> Tag {
        Tag(raw)
    }

    /// The value to submit the request with.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The request's kind, or `None` for a tag the writer never makes (bit 63 set).
    pub fn kind(self) -> Option<TagKind> {
        if self.0 & RESERVED_BIT != 0 {
            None
        } else if self.0 & KIND_BIT != 0 {
            Some(TagKind::WriteLastAddConfirmed)
        } else {
            Some(TagKind::Add)
        }
    }

    /// The entry of an ADD, or the LAC of a WRITE_LAC.
    pub fn entry(self) -> u64 {
        self.0 & (ENTRY_ID_LIMIT - 1)
    }

    /// The ensemble index the request went to.
    pub fn bookie_index(self) -> usize {
        ((self.0 >> ENTRY_BITS) & ((1 << INDEX_BITS) - 1)) as usize
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({:?} entry {} bookie {})", self.kind(), self.entry(), self.bookie_index())
    }
}

/// Why a request got no answer from its bookie (the writer's view of a `TransportError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportFailure {
    /// No answer within the request timeout.
    Timeout,
    /// The connection was lost with the request in flight (or could not be made).
    Disconnected,
    /// The request itself cannot be sent (over the limits, or not encodable): a fault of the
    /// entry, not of the bookie.
    Invalid,
    /// Anything else (malformed answer, busy, closed, ...).
    Other,
}

impl From<&TransportError> for TransportFailure {
    fn from(error: &TransportError) -> Self {
        match error {
            TransportError::Timeout => TransportFailure::Timeout,
            TransportError::Disconnected { .. }
            | TransportError::Connect { .. }
            | TransportError::Unavailable { .. } => TransportFailure::Disconnected,
            TransportError::TooLarge { .. } | TransportError::Invalid(_) => TransportFailure::Invalid,
            _ => TransportFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for (kind, entry, index) in [
            (TagKind::Add, 0, 0),
            (TagKind::Add, ENTRY_ID_LIMIT - 1, 63),
            (TagKind::WriteLastAddConfirmed, 12345, 7),
        ] {
            let tag = Tag::from_raw(Tag::new(kind, entry, index).raw());
            assert_eq!((tag.kind(), tag.entry(), tag.bookie_index()), (Some(kind), entry, index));
            assert_eq!(tag.raw() & RESERVED_BIT, 0);
        }
        assert_eq!(Tag::from_raw(RESERVED_BIT).kind(), None);
    }
}
