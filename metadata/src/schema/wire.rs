//! The stored form of every schema value: one format byte (`FORMAT`, today 1) then a protobuf
//! message (prost). docs/metadata.md lists each message's fields by number.
//!
//! Invariants:
//! - WI1: decoding never panics and never trusts a count or length: any byte string gives a
//!   value or `Corrupt` naming the key.
//! - WI2: fields are only ever added, with new numbers; a reader skips fields it does not know
//!   (protobuf), so older readers read newer values. A change older readers must not misread
//!   takes a new format byte, which they refuse.
//! - WI3: these are wire shapes only; schema/*.rs convert them to validated domain types.

use prost::Message;

use crate::error::MetaError;

/// The format byte every schema value starts with.
pub const FORMAT: u8 = 1;

/// Encodes `message` as a schema value.
pub fn encode<M: Message>(message: &M) -> bytes::Bytes {
    let mut out = Vec::with_capacity(1 + message.encoded_len());
    out.push(FORMAT);
    message.encode(&mut out).expect("a Vec grows as needed");
    out.into()
}

/// Decodes the schema value stored at `key` (WI1).
pub fn decode<M: Message + Default>(key: &str, value: &[u8]) -> Result<M, MetaError> {
    match value.split_first() {
        Some((&FORMAT, body)) => {
            M::decode(body).map_err(|e| MetaError::Corrupt(format!("{key}: undecodable value: {e}")))
        }
        Some((format, _)) => {
            Err(MetaError::Corrupt(format!("{key}: value format {format}, this build reads format {FORMAT}")))
        }
        None => Err(MetaError::Corrupt(format!("{key}: empty value"))),
    }
}

/// `cluster`.
#[derive(Clone, PartialEq, Message)]
pub struct ClusterInfo {
    /// Random, fixed at cluster creation (32 hex digits).
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub created_ms: u64,
}

/// `bookies/writable/<id>` and `bookies/readonly/<id>`.
#[derive(Clone, PartialEq, Message)]
pub struct BookieInfo {
    /// `host:port` clients connect to.
    #[prost(string, tag = "1")]
    pub endpoint: String,
    /// Storage shards (threads) the bookie runs.
    #[prost(uint32, tag = "2")]
    pub shards: u32,
    /// Placement labels (may be empty).
    #[prost(string, tag = "3")]
    pub rack: String,
    /// Placement labels (may be empty).
    #[prost(string, tag = "4")]
    pub zone: String,
    /// The bookie's software version.
    #[prost(string, tag = "5")]
    pub version: String,
    /// When this registration was made, ms since the Unix epoch.
    #[prost(uint64, tag = "6")]
    pub registered_ms: u64,
    /// Free bytes on its ledger disks at registration (placement input).
    #[prost(uint64, tag = "7")]
    pub free_bytes: u64,
}

/// `cookies/<id>`.
#[derive(Clone, PartialEq, Message)]
pub struct Cookie {
    /// The bookie's id.
    #[prost(string, tag = "1")]
    pub bookie_id: String,
    /// The cluster's instance id.
    #[prost(string, tag = "2")]
    pub instance_id: String,
    /// Journal directories, in configuration order.
    #[prost(string, repeated, tag = "3")]
    pub journal_dirs: Vec<String>,
    /// Ledger (segment storage) directories, in configuration order.
    #[prost(string, repeated, tag = "4")]
    pub ledger_dirs: Vec<String>,
    /// Random id written into every directory when it was formatted (32 hex digits).
    #[prost(string, tag = "5")]
    pub disk_id: String,
}

/// One ensemble of a segment: the bookies from `first_entry_id` on.
#[derive(Clone, PartialEq, Message)]
pub struct Ensemble {
    /// The first entry this ensemble holds.
    #[prost(uint64, tag = "1")]
    pub first_entry_id: u64,
    /// Bookie ids, `ensemble_size` of them, in striping order.
    #[prost(string, repeated, tag = "2")]
    pub bookies: Vec<String>,
}

/// `segments/<id>`.
#[derive(Clone, PartialEq, Message)]
pub struct SegmentMetadata {
    /// E.
    #[prost(uint32, tag = "1")]
    pub ensemble_size: u32,
    /// Qw.
    #[prost(uint32, tag = "2")]
    pub write_quorum_size: u32,
    /// Qa.
    #[prost(uint32, tag = "3")]
    pub ack_quorum_size: u32,
    /// 1 = CRC32C.
    #[prost(uint32, tag = "4")]
    pub digest_type: u32,
    /// The segment's master key, at most 64 bytes (field 5 held a digest of it before; the
    /// tag is kept).
    #[prost(bytes = "bytes", tag = "5")]
    pub master_key: bytes::Bytes,
    /// 1 = Open, 2 = InRecovery, 3 = Closed.
    #[prost(uint32, tag = "6")]
    pub state: u32,
    /// Closed: the last entry id + 1 (0: no entry).
    #[prost(uint64, tag = "7")]
    pub entry_count: u64,
    /// Closed: bytes of payload.
    #[prost(uint64, tag = "8")]
    pub length: u64,
    /// Ensembles by increasing `first_entry_id`, the first at 0.
    #[prost(message, repeated, tag = "9")]
    pub ensembles: Vec<Ensemble>,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "10")]
    pub created_ms: u64,
    /// The log the segment belongs to (`namespace/log`), empty when none.
    #[prost(string, tag = "11")]
    pub log: String,
    /// Its sequence number in that log.
    #[prost(uint64, tag = "12")]
    pub log_seq: u64,
}

/// `namespaces/<ns>`.
#[derive(Clone, PartialEq, Message)]
pub struct NamespaceInfo {
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "1")]
    pub created_ms: u64,
}

/// A position in a log: records are ordered by (segment, entry, slot).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Message)]
pub struct Dlsn {
    /// The segment's sequence number in its log.
    #[prost(uint64, tag = "1")]
    pub segment_seq: u64,
    /// The entry in the segment.
    #[prost(uint64, tag = "2")]
    pub entry_id: u64,
    /// The record's slot in the entry.
    #[prost(uint64, tag = "3")]
    pub slot: u64,
}

/// `logs/<ns>/<log>`.
#[derive(Clone, PartialEq, Message)]
pub struct LogMetadata {
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "1")]
    pub created_ms: u64,
    /// The highest transaction id of a completed segment, plus one (0: none yet).
    #[prost(uint64, tag = "2")]
    pub next_txid: u64,
    /// Records before this position are truncated (absent: none).
    #[prost(message, optional, tag = "3")]
    pub truncated_before: Option<Dlsn>,
    /// Increases at every writer takeover.
    #[prost(uint64, tag = "4")]
    pub writer_epoch: u64,
    /// The next segment sequence number to assign.
    #[prost(uint64, tag = "5")]
    pub next_segment_seq: u64,
}

/// `log-segments/<ns>/<log>/<seq>`.
#[derive(Clone, PartialEq, Message)]
pub struct LogSegment {
    /// The segment's sequence number in the log.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The segment (`segments/<id>`).
    #[prost(uint64, tag = "2")]
    pub segment_id: u64,
    /// 1 = InProgress, 2 = Completed.
    #[prost(uint32, tag = "3")]
    pub state: u32,
    /// Transaction id of its first record (0 with `record_count` 0: none).
    #[prost(uint64, tag = "4")]
    pub first_txid: u64,
    /// Completed: transaction id of its last record.
    #[prost(uint64, tag = "5")]
    pub last_txid: u64,
    /// Completed: records in it.
    #[prost(uint64, tag = "6")]
    pub record_count: u64,
    /// Completed: the last record's position (absent: no record).
    #[prost(message, optional, tag = "7")]
    pub last_dlsn: Option<Dlsn>,
    /// The writer epoch that created it.
    #[prost(uint64, tag = "8")]
    pub epoch: u64,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "9")]
    pub created_ms: u64,
    /// Completed: ms since the Unix epoch.
    #[prost(uint64, tag = "10")]
    pub completed_ms: u64,
}

/// `locks/<ns>/<log>`: the writer's ownership, bound to its lease.
#[derive(Clone, PartialEq, Message)]
pub struct WriterLock {
    /// Who holds it (free text: host, process, client id).
    #[prost(string, tag = "1")]
    pub owner: String,
    /// The log's `writer_epoch` this holder took.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub acquired_ms: u64,
}

/// `underreplicated/<segment id>`.
#[derive(Clone, PartialEq, Message)]
pub struct UnderReplicated {
    /// Bookies whose replicas of the segment are missing.
    #[prost(string, repeated, tag = "1")]
    pub missing: Vec<String>,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub since_ms: u64,
}

/// `deletions/<segment id>`: a deleted segment whose data is still to be deleted from bookies.
#[derive(Clone, PartialEq, Message)]
pub struct PendingDeletion {
    /// Bookies that may hold its entries (every ensemble's members).
    #[prost(string, repeated, tag = "1")]
    pub bookies: Vec<String>,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub queued_ms: u64,
}

/// `auditor`, and `underreplicated-locks/<segment id>`: a lease-bound claim.
#[derive(Clone, PartialEq, Message)]
pub struct Claim {
    /// Who holds it.
    #[prost(string, tag = "1")]
    pub owner: String,
    /// ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub since_ms: u64,
}
