//! The messages of the remote protocol (`dlog://`), as prost structs written by hand (no
//! protoc), and their conversions to and from the contract's types. docs/metadata.md
//! "Remote access" lists every field by number.
//!
//! Owns: the wire shapes (`Request`, `Reply` and what they carry) and the mapping of every
//! `MetaError` variant onto `WireError` and back.
//! Does not own: framing (codec.rs), connections (client.rs, server.rs).
//!
//! Invariants:
//! - RW1: every `MetaError` variant crosses the wire typed and comes back equal
//!   (`from_wire(to_wire(e)) == e`); a code this build does not know reads as `Unavailable`
//!   naming it (the outcome is unknown to this side).
//! - RW2: converting what a peer sent never panics and never trusts a code: an unknown op,
//!   condition or event kind, or a ttl that is not a duration, is an error, not a guess.
//! - RW3: fields are only ever added, with new numbers (protobuf skips unknown ones); a change
//!   an older peer must not misread takes a new preamble (codec.rs `PREAMBLE`).

use std::time::Duration;

use bytes::Bytes;
use prost::{Message, Oneof};

use crate::error::MetaError;
use crate::{Cond, Event, EventKind, LeaseId, Op, Page, Version, Versioned};

/// Client to server: one call, or the cancel of a watch.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Request {
    /// Chosen by the client, never reused on a connection; a watch's id is the id of the
    /// request that started it.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// What is asked (absent: a kind this build does not know, a bad frame).
    #[prost(oneof = "Call", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub(crate) call: Option<Call>,
}

/// The calls of `MetadataStore`, plus `Cancel`.
#[derive(Clone, PartialEq, Oneof)]
pub(crate) enum Call {
    /// `get(key)`: answered `Found` or `Absent`.
    #[prost(string, tag = "2")]
    Get(String),
    /// `txn(ops)`: answered `Version`.
    #[prost(message, tag = "3")]
    Txn(TxnCall),
    /// `list(prefix, after, limit)`: answered `Page`.
    #[prost(message, tag = "4")]
    List(ListCall),
    /// `watch(prefix, from)`: answered `WatchStarted`, then `Events` and at most one
    /// `WatchEnd` carrying this request's id.
    #[prost(message, tag = "5")]
    Watch(WatchCall),
    /// `grant(ttl)`: answered `Lease`.
    #[prost(message, tag = "6")]
    Grant(GrantCall),
    /// `keep_alive(lease)`: answered `Done`.
    #[prost(uint64, tag = "7")]
    KeepAlive(u64),
    /// `revoke(lease)`: answered `Version`.
    #[prost(uint64, tag = "8")]
    Revoke(u64),
    /// Stops the watch of this id; no answer (events already sent may still arrive).
    #[prost(uint64, tag = "9")]
    Cancel(u64),
}

/// A transaction's operations.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TxnCall {
    #[prost(message, repeated, tag = "1")]
    pub(crate) ops: Vec<OpMsg>,
}

/// One operation: `kind` 1 = put, 2 = delete; `cond` 1 = any, 2 = absent, 3 = version.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OpMsg {
    #[prost(uint32, tag = "1")]
    pub(crate) kind: u32,
    #[prost(string, tag = "2")]
    pub(crate) key: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) value: Bytes,
    #[prost(uint32, tag = "4")]
    pub(crate) cond: u32,
    /// The version of `cond` 3.
    #[prost(uint64, tag = "5")]
    pub(crate) version: u64,
    #[prost(uint64, optional, tag = "6")]
    pub(crate) lease: Option<u64>,
}

/// A listing's arguments (`limit` 0: no limit).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ListCall {
    #[prost(string, tag = "1")]
    pub(crate) prefix: String,
    #[prost(string, optional, tag = "2")]
    pub(crate) after: Option<String>,
    #[prost(uint64, tag = "3")]
    pub(crate) limit: u64,
}

/// A watch's arguments.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WatchCall {
    #[prost(string, tag = "1")]
    pub(crate) prefix: String,
    #[prost(uint64, tag = "2")]
    pub(crate) from: u64,
}

/// A lease's ttl, exactly: `secs` seconds and `nanos` (< 10^9) nanoseconds.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct GrantCall {
    #[prost(uint64, tag = "1")]
    pub(crate) secs: u64,
    #[prost(uint32, tag = "2")]
    pub(crate) nanos: u32,
}

/// Server to client: the answer to a request, a watch's events or end, or (id 0) a
/// connection-level message.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Reply {
    /// The request's id (a watch's id for `Events` and `WatchEnd`); 0 for `Heartbeat` and for
    /// the `Error` a server sends before closing a connection over a bad frame.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(oneof = "Answer", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12")]
    pub(crate) answer: Option<Answer>,
}

/// What a `Reply` carries.
#[derive(Clone, PartialEq, Oneof)]
pub(crate) enum Answer {
    /// The call failed with this error.
    #[prost(message, tag = "2")]
    Error(WireError),
    /// `get`: the key (its `key` field empty).
    #[prost(message, tag = "3")]
    Found(KeyValueMsg),
    /// `get`: no such key.
    #[prost(message, tag = "4")]
    Absent(Empty),
    /// `txn`, `revoke`: the revision.
    #[prost(uint64, tag = "5")]
    Version(u64),
    /// `list`.
    #[prost(message, tag = "6")]
    Page(PageMsg),
    /// `grant`: the lease id.
    #[prost(uint64, tag = "7")]
    Lease(u64),
    /// `keep_alive`.
    #[prost(message, tag = "8")]
    Done(Empty),
    /// `watch`: it is registered; the version it starts at (`from`, or the resolved revision
    /// for `from = 0`).
    #[prost(uint64, tag = "9")]
    WatchStarted(u64),
    /// Events of a watch, in revision order.
    #[prost(message, tag = "10")]
    Events(EventsMsg),
    /// The watch is over: the error its store gave.
    #[prost(message, tag = "11")]
    WatchEnd(WireError),
    /// Sent on an idle connection so the client can tell it is alive.
    #[prost(message, tag = "12")]
    Heartbeat(Empty),
}

impl Answer {
    /// The variant's name, for errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Answer::Error(_) => "Error",
            Answer::Found(_) => "Found",
            Answer::Absent(_) => "Absent",
            Answer::Version(_) => "Version",
            Answer::Page(_) => "Page",
            Answer::Lease(_) => "Lease",
            Answer::Done(_) => "Done",
            Answer::WatchStarted(_) => "WatchStarted",
            Answer::Events(_) => "Events",
            Answer::WatchEnd(_) => "WatchEnd",
            Answer::Heartbeat(_) => "Heartbeat",
        }
    }
}

/// No fields.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Empty {}

/// A key's value and versions (`key` empty in a `Found`).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct KeyValueMsg {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) value: Bytes,
    #[prost(uint64, tag = "3")]
    pub(crate) version: u64,
    #[prost(uint64, tag = "4")]
    pub(crate) created: u64,
    #[prost(uint64, optional, tag = "5")]
    pub(crate) lease: Option<u64>,
}

/// One page of a listing.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PageMsg {
    #[prost(message, repeated, tag = "1")]
    pub(crate) items: Vec<KeyValueMsg>,
    #[prost(bool, tag = "2")]
    pub(crate) more: bool,
    #[prost(uint64, tag = "3")]
    pub(crate) revision: u64,
}

/// Consecutive events of one watch. `complete`: the last event ends its revision; otherwise
/// the revision continues in the next `Events` (a revision too large for one message).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct EventsMsg {
    #[prost(message, repeated, tag = "1")]
    pub(crate) events: Vec<EventMsg>,
    #[prost(bool, tag = "2")]
    pub(crate) complete: bool,
}

/// One change: `kind` 1 = put, 2 = delete.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct EventMsg {
    #[prost(uint32, tag = "1")]
    pub(crate) kind: u32,
    #[prost(string, tag = "2")]
    pub(crate) key: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) value: Bytes,
    #[prost(uint64, tag = "4")]
    pub(crate) version: u64,
}

/// A `MetaError`, typed (RW1). `code`: 1 VersionConflict (key, expected, actual), 2 NotFound
/// (key), 3 AlreadyExists (key), 4 LeaseExpired (lease), 5 Compacted (requested, oldest),
/// 6 Invalid (text), 7 Corrupt (text), 8 Unavailable (text), 9 Fenced (key, epoch, current),
/// 10 Unauthorized (text).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireError {
    #[prost(uint32, tag = "1")]
    pub(crate) code: u32,
    #[prost(string, tag = "2")]
    pub(crate) text: String,
    #[prost(string, tag = "3")]
    pub(crate) key: String,
    #[prost(uint64, optional, tag = "4")]
    pub(crate) expected: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    pub(crate) actual: Option<u64>,
    #[prost(uint64, tag = "6")]
    pub(crate) lease: u64,
    #[prost(uint64, tag = "7")]
    pub(crate) requested: u64,
    #[prost(uint64, tag = "8")]
    pub(crate) oldest: u64,
    #[prost(uint64, tag = "9")]
    pub(crate) epoch: u64,
    #[prost(uint64, tag = "10")]
    pub(crate) current: u64,
}

const PUT: u32 = 1;
const DELETE: u32 = 2;
const COND_ANY: u32 = 1;
const COND_ABSENT: u32 = 2;
const COND_VERSION: u32 = 3;

/// `error` as it crosses the wire (RW1).
pub(crate) fn to_wire(error: &MetaError) -> WireError {
    let mut w = WireError { code: 0, ..WireError::default() };
    match error {
        MetaError::VersionConflict { key, expected, actual } => {
            w.code = 1;
            w.key = key.clone();
            w.expected = expected.map(|v| v.0);
            w.actual = actual.map(|v| v.0);
        }
        MetaError::NotFound(key) => (w.code, w.key) = (2, key.clone()),
        MetaError::AlreadyExists(key) => (w.code, w.key) = (3, key.clone()),
        MetaError::LeaseExpired(lease) => (w.code, w.lease) = (4, lease.0),
        MetaError::Compacted { requested, oldest } => {
            (w.code, w.requested, w.oldest) = (5, requested.0, oldest.0);
        }
        MetaError::Invalid(text) => (w.code, w.text) = (6, text.clone()),
        MetaError::Corrupt(text) => (w.code, w.text) = (7, text.clone()),
        MetaError::Unavailable(text) => (w.code, w.text) = (8, text.clone()),
        MetaError::Fenced { key, epoch, current } => {
            (w.code, w.key, w.epoch, w.current) = (9, key.clone(), *epoch, *current);
        }
        MetaError::Unauthorized(text) => (w.code, w.text) = (10, text.clone()),
    }
    w
}

/// The `MetaError` a peer sent (RW1).
pub(crate) fn from_wire(w: WireError) -> MetaError {
    match w.code {
        1 => MetaError::VersionConflict {
            key: w.key,
            expected: w.expected.map(Version),
            actual: w.actual.map(Version),
        },
        2 => MetaError::NotFound(w.key),
        3 => MetaError::AlreadyExists(w.key),
        4 => MetaError::LeaseExpired(LeaseId(w.lease)),
        5 => MetaError::Compacted { requested: Version(w.requested), oldest: Version(w.oldest) },
        6 => MetaError::Invalid(w.text),
        7 => MetaError::Corrupt(w.text),
        8 => MetaError::Unavailable(w.text),
        9 => MetaError::Fenced { key: w.key, epoch: w.epoch, current: w.current },
        10 => MetaError::Unauthorized(w.text),
        code => MetaError::Unavailable(format!("metadata server: error of unknown code {code}: {}", w.text)),
    }
}

/// `ops` as they cross the wire.
pub(crate) fn ops_to_wire(ops: Vec<Op>) -> TxnCall {
    let cond = |cond: Cond| match cond {
        Cond::Any => (COND_ANY, 0),
        Cond::Absent => (COND_ABSENT, 0),
        Cond::Version(v) => (COND_VERSION, v.0),
    };
    let ops = ops
        .into_iter()
        .map(|op| match op {
            Op::Put { key, value, cond: c, lease } => {
                let (cond, version) = cond(c);
                OpMsg { kind: PUT, key, value, cond, version, lease: lease.map(|l| l.0) }
            }
            Op::Delete { key, cond: c } => {
                let (cond, version) = cond(c);
                OpMsg { kind: DELETE, key, value: Bytes::new(), cond, version, lease: None }
            }
        })
        .collect();
    TxnCall { ops }
}

/// The operations a client sent; `Invalid` naming a code this build does not know (RW2).
pub(crate) fn ops_from_wire(txn: TxnCall) -> Result<Vec<Op>, MetaError> {
    // Refused before anything is converted: a frame of many tiny ops must not cost a copy.
    if txn.ops.len() > crate::store::TXN_OPS_MAX {
        let count = txn.ops.len();
        return Err(MetaError::Invalid(format!(
            "a transaction of {count} operations (max {})",
            crate::store::TXN_OPS_MAX
        )));
    }
    txn.ops
        .into_iter()
        .map(|op| {
            let cond = match op.cond {
                COND_ANY => Cond::Any,
                COND_ABSENT => Cond::Absent,
                COND_VERSION => Cond::Version(Version(op.version)),
                other => return Err(MetaError::Invalid(format!("{}: unknown condition {other}", op.key))),
            };
            match op.kind {
                PUT => Ok(Op::Put { key: op.key, value: op.value, cond, lease: op.lease.map(LeaseId) }),
                DELETE => Ok(Op::Delete { key: op.key, cond }),
                other => Err(MetaError::Invalid(format!("{}: unknown operation {other}", op.key))),
            }
        })
        .collect()
}

/// A ttl as it crosses the wire, exactly.
pub(crate) fn ttl_to_wire(ttl: Duration) -> GrantCall {
    GrantCall { secs: ttl.as_secs(), nanos: ttl.subsec_nanos() }
}

/// The ttl a client sent; `Invalid` for nanoseconds of a second or more (RW2: `Duration::new`
/// would carry them into the seconds and could overflow).
pub(crate) fn ttl_from_wire(grant: &GrantCall) -> Result<Duration, MetaError> {
    if grant.nanos >= 1_000_000_000 {
        return Err(MetaError::Invalid(format!("lease ttl with {} nanoseconds", grant.nanos)));
    }
    Ok(Duration::new(grant.secs, grant.nanos))
}

/// A key's value as it crosses the wire (`key` empty for a `get`).
pub(crate) fn versioned_to_wire(key: String, v: Versioned) -> KeyValueMsg {
    KeyValueMsg {
        key,
        value: v.value,
        version: v.version.0,
        created: v.created.0,
        lease: v.lease.map(|l| l.0),
    }
}

/// The key and value a server sent.
pub(crate) fn versioned_from_wire(kv: KeyValueMsg) -> (String, Versioned) {
    let versioned = Versioned {
        value: kv.value,
        version: Version(kv.version),
        created: Version(kv.created),
        lease: kv.lease.map(LeaseId),
    };
    (kv.key, versioned)
}

/// A page as it crosses the wire.
pub(crate) fn page_to_wire(page: Page) -> PageMsg {
    PageMsg {
        items: page.items.into_iter().map(|(k, v)| versioned_to_wire(k, v)).collect(),
        more: page.more,
        revision: page.revision.0,
    }
}

/// The page a server sent.
pub(crate) fn page_from_wire(page: PageMsg) -> Page {
    Page {
        items: page.items.into_iter().map(versioned_from_wire).collect(),
        more: page.more,
        revision: Version(page.revision),
    }
}

/// An event as it crosses the wire.
pub(crate) fn event_to_wire(event: Event) -> EventMsg {
    let kind = match event.kind {
        EventKind::Put => PUT,
        EventKind::Delete => DELETE,
    };
    EventMsg { kind, key: event.key, value: event.value, version: event.version.0 }
}

/// The event a server sent; `None` for a kind this build does not know (RW2).
pub(crate) fn event_from_wire(event: EventMsg) -> Option<Event> {
    let kind = match event.kind {
        PUT => EventKind::Put,
        DELETE => EventKind::Delete,
        _ => return None,
    };
    Some(Event { kind, key: event.key, value: event.value, version: Version(event.version) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<MetaError> {
        vec![
            MetaError::VersionConflict { key: "a".into(), expected: Some(Version(3)), actual: None },
            MetaError::VersionConflict { key: "b".into(), expected: None, actual: Some(Version(0)) },
            MetaError::NotFound("n".into()),
            MetaError::AlreadyExists("e".into()),
            MetaError::LeaseExpired(LeaseId(u64::MAX)),
            MetaError::Compacted { requested: Version(2), oldest: Version(9) },
            MetaError::Invalid("why".into()),
            MetaError::Corrupt("k: bad".into()),
            MetaError::Unavailable("down".into()),
            MetaError::Fenced { key: "logs/n/l".into(), epoch: 4, current: 5 },
            MetaError::Unauthorized("etcd: permission denied".into()),
        ]
    }

    #[test]
    fn every_error_round_trips_typed() {
        for error in every_error() {
            let bytes = to_wire(&error).encode_to_vec();
            let back = from_wire(WireError::decode(bytes.as_slice()).unwrap());
            assert_eq!(back, error);
        }
        let unknown = from_wire(WireError { code: 77, text: "x".into(), ..WireError::default() });
        assert!(matches!(unknown, MetaError::Unavailable(m) if m.contains("77")));
    }

    #[test]
    fn ops_round_trip_and_unknown_codes_are_refused() {
        let ops = vec![
            Op::Put {
                key: "a".into(),
                value: Bytes::from_static(b"v"),
                cond: Cond::Any,
                lease: Some(LeaseId(0)),
            },
            Op::Put { key: "b".into(), value: Bytes::new(), cond: Cond::Absent, lease: None },
            Op::Delete { key: "c".into(), cond: Cond::Version(Version(7)) },
        ];
        assert_eq!(ops_from_wire(ops_to_wire(ops.clone())).unwrap(), ops);
        for (kind, cond) in [(3, 1), (1, 0), (2, 4), (0, 1)] {
            let op = OpMsg { kind, cond, key: "k".into(), ..OpMsg::default() };
            assert!(matches!(ops_from_wire(TxnCall { ops: vec![op] }), Err(MetaError::Invalid(_))));
        }
    }

    #[test]
    fn ttls_round_trip_and_bad_nanos_are_refused() {
        for ttl in [Duration::from_millis(300), Duration::new(9_000_000_000, 999_999_999), Duration::MAX] {
            assert_eq!(ttl_from_wire(&ttl_to_wire(ttl)).unwrap(), ttl);
        }
        let bad = GrantCall { secs: u64::MAX, nanos: 1_000_000_000 };
        assert!(matches!(ttl_from_wire(&bad), Err(MetaError::Invalid(_))));
    }

    #[test]
    fn events_and_pages_round_trip() {
        let event =
            Event { kind: EventKind::Delete, key: "k".into(), value: Bytes::new(), version: Version(5) };
        assert_eq!(event_from_wire(event_to_wire(event.clone())), Some(event));
        assert_eq!(event_from_wire(EventMsg { kind: 9, ..EventMsg::default() }), None);
        let v = Versioned {
            value: Bytes::from_static(b"x"),
            version: Version(3),
            created: Version(2),
            lease: Some(LeaseId(1)),
        };
        let page = Page { items: vec![("a".into(), v)], more: true, revision: Version(4) };
        assert_eq!(page_from_wire(page_to_wire(page.clone())), page);
    }
}
