//! Scripted and property tests of `WriterCore`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::log::entry_codec::decode_entry;

#[expect(clippy::disallowed_methods, reason = "a fixed start for the scripted clock")]
fn t0() -> Instant {
    Instant::now()
}

/// (segment, entry id, its records' transaction ids and payloads).
type Sent = (u64, u64, Vec<(u64, Vec<u8>)>);

fn settings(transmit: TransmitPolicy) -> CoreSettings {
    CoreSettings {
        transmit,
        roll_bytes: 1 << 20,
        roll_age: Duration::from_secs(3600),
        record_bytes_max: 1000,
        entry_bytes_max: 4096,
    }
}

fn drain(core: &mut WriterCore) -> Vec<CoreOutput> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn transmits(outputs: &[CoreOutput]) -> Vec<Sent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            CoreOutput::Transmit { seq, entry_id, payload } => {
                let d = decode_entry(payload).unwrap();
                Some((*seq, *entry_id, d.records.iter().map(|r| (r.txid, r.payload.to_vec())).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn immediate_sends_each_record_once_its_segment_exists() {
    let t0 = t0();
    let mut core = WriterCore::new(settings(TransmitPolicy::immediate()), 1, None).unwrap();
    let a = core.write(None, b"a", t0).unwrap();
    let b = core.write(None, b"b", t0).unwrap();
    assert_eq!((a.dlsn, a.txid, a.ticket), (Dlsn::new(1, 0, 0), 0, 0));
    assert_eq!((b.dlsn, b.txid, b.ticket), (Dlsn::new(1, 1, 0), 1, 1));
    let out = drain(&mut core);
    assert!(matches!(out[..], [CoreOutput::OpenSegment { seq: 1, first_txid: 0 }]), "{out:?}");
    core.segment_ready(1);
    let out = drain(&mut core);
    assert_eq!(transmits(&out), [(1, 0, vec![(0, b"a".to_vec())]), (1, 1, vec![(1, b"b".to_vec())])]);
    core.on_acked(1, 0);
    core.on_acked(1, 1);
    let out = drain(&mut core);
    assert!(matches!(out[..], [CoreOutput::Acked { through: 0 }, CoreOutput::Acked { through: 1 }]));
    assert_eq!(core.flush(), None, "everything is acknowledged");
}

#[test]
fn transaction_ids_must_increase_and_are_assigned_after_the_last() {
    let t0 = t0();
    let mut core = WriterCore::new(settings(TransmitPolicy::immediate()), 4, Some(99)).unwrap();
    assert!(matches!(
        core.write(Some(99), b"x", t0),
        Err(LogError::TxidNotIncreasing { txid: 99, last: 99 })
    ));
    assert_eq!(core.write(None, b"x", t0).unwrap().txid, 100);
    assert_eq!(core.write(Some(200), b"x", t0).unwrap().txid, 200);
    assert!(matches!(core.write(Some(150), b"x", t0), Err(LogError::TxidNotIncreasing { .. })));
    assert_eq!(core.write(None, b"x", t0).unwrap().txid, 201);
    assert!(matches!(
        core.write(None, &[0; 1001], t0),
        Err(LogError::RecordTooLarge { bytes: 1001, max: 1000 })
    ));
    let mut last = WriterCore::new(settings(TransmitPolicy::immediate()), 1, Some(u64::MAX)).unwrap();
    assert!(matches!(last.write(None, b"x", t0), Err(LogError::TxidsExhausted)));
    // The largest id is never given, so it is never assigned twice (after a restart too).
    assert!(matches!(core.write(Some(u64::MAX), b"x", t0), Err(LogError::TxidsExhausted)));
    assert_eq!(core.write(Some(u64::MAX - 1), b"x", t0).unwrap().txid, u64::MAX - 1);
}

#[test]
fn records_gather_while_entries_are_in_flight() {
    let t0 = t0();
    let policy = TransmitPolicy { max_bytes: 1 << 20, max_delay: None, eager_in_flight: 1 };
    let mut core = WriterCore::new(settings(policy), 1, None).unwrap();
    core.write(None, b"first", t0).unwrap();
    core.segment_ready(1);
    let accepted: Vec<Accepted> = (0..5).map(|_| core.write(None, b"more", t0).unwrap()).collect();
    assert!(accepted.iter().all(|a| a.ticket == 1 && a.dlsn.entry_id == 1));
    assert_eq!(accepted[4].dlsn.slot, 4);
    let out = drain(&mut core);
    assert_eq!(transmits(&out).len(), 1, "only the first went out");
    core.on_acked(1, 0);
    let out = drain(&mut core);
    let sent = transmits(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.len(), 5, "the five gathered records went as one entry");
}

#[test]
fn size_and_delay_bound_an_entry() {
    let t0 = t0();
    let policy = TransmitPolicy::batched(100, Duration::from_millis(2));
    let mut core = WriterCore::new(settings(policy), 1, None).unwrap();
    core.segment_ready(1);
    core.write(None, &[1; 30], t0).unwrap();
    core.segment_ready(1);
    assert_eq!(core.next_deadline(), Some(t0 + Duration::from_millis(2)));
    core.on_tick(t0 + Duration::from_millis(1));
    assert!(transmits(&drain(&mut core)).is_empty());
    core.on_tick(t0 + Duration::from_millis(2));
    assert_eq!(transmits(&drain(&mut core)).len(), 1, "due");
    for _ in 0..3 {
        core.write(None, &[1; 30], t0).unwrap();
    }
    // 16 + 2 * 42 bytes >= 100: sent without waiting.
    assert_eq!(transmits(&drain(&mut core))[0].2.len(), 2);
    // An entry never grows past the segments' limit.
    let mut big =
        WriterCore::new(settings(TransmitPolicy::batched(1 << 20, Duration::from_secs(1))), 1, None).unwrap();
    big.segment_ready(1);
    for _ in 0..9 {
        big.write(None, &[0; 1000], t0).unwrap();
    }
    big.segment_ready(1);
    let sent = transmits(&drain(&mut big));
    assert!(sent.iter().all(|(_, _, records)| records.len() <= 4), "{}", sent.len());
}

#[test]
fn a_roll_seals_the_segment_and_sends_the_next_only_after_its_acks() {
    let t0 = t0();
    let mut s = settings(TransmitPolicy::immediate());
    s.roll_bytes = 50;
    let mut core = WriterCore::new(s, 1, None).unwrap();
    core.write(None, &[0; 40], t0).unwrap();
    core.segment_ready(1);
    drain(&mut core);
    let second = core.write(None, b"x", t0).unwrap();
    assert_eq!(second.dlsn, Dlsn::new(2, 0, 0), "the first segment reached roll_bytes");
    let out = drain(&mut core);
    match &out[..] {
        [CoreOutput::SealSegment { seq: 1, summary }, CoreOutput::OpenSegment { seq: 2, first_txid: 1 }] => {
            assert_eq!(summary.record_count, 1);
            assert_eq!(summary.last_dlsn, Some(Dlsn::new(1, 0, 0)));
            assert_eq!((summary.last_txid, summary.last_entry), (Some(0), Some(0)));
        }
        other => panic!("{other:?}"),
    }
    core.segment_ready(2);
    assert!(transmits(&drain(&mut core)).is_empty(), "segment 1 still has an entry in flight (WC3)");
    core.on_acked(1, 0);
    let out = drain(&mut core);
    assert_eq!(transmits(&out), [(2, 0, vec![(1, b"x".to_vec())])]);
}

#[test]
fn a_failure_fails_everything_unacknowledged_and_later_writes() {
    let t0 = t0();
    let mut core = WriterCore::new(settings(TransmitPolicy::immediate()), 1, None).unwrap();
    core.segment_ready(1);
    for _ in 0..3 {
        core.write(None, b"r", t0).unwrap();
    }
    core.segment_ready(1);
    core.on_acked(1, 0);
    drain(&mut core);
    core.on_failed(LogError::Fenced { log: "l".into() });
    let out = drain(&mut core);
    assert!(matches!(out[..], [CoreOutput::Failed { from: 1, error: LogError::Fenced { .. } }]), "{out:?}");
    assert!(matches!(core.write(None, b"r", t0), Err(LogError::Fenced { .. })));
    core.on_acked(1, 1);
    assert!(drain(&mut core).is_empty(), "a late ack changes nothing");
}

#[test]
fn close_seals_after_the_last_entry() {
    let t0 = t0();
    let mut core =
        WriterCore::new(settings(TransmitPolicy::batched(1 << 20, Duration::from_secs(1))), 7, None).unwrap();
    core.write(Some(10), b"a", t0).unwrap();
    core.write(Some(11), b"b", t0).unwrap();
    assert_eq!(core.close(), Some(0));
    assert!(matches!(core.write(None, b"c", t0), Err(LogError::Closed)));
    core.segment_ready(7);
    let out = drain(&mut core);
    assert!(
        matches!(out.last(), Some(CoreOutput::SealSegment { seq: 7, summary }) if summary.record_count == 2
        && summary.last_txid == Some(11) && summary.last_dlsn == Some(Dlsn::new(7, 0, 1)))
    );
    assert_eq!(transmits(&out).len(), 1);
}

#[derive(Clone, Debug)]
enum Step {
    Write(usize),
    Ack,
    Tick(u64),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..300).prop_map(Step::Write),
        4 => Just(Step::Ack),
        1 => (0u64..5).prop_map(Step::Tick),
        1 => Just(Step::Flush),
    ]
}

proptest! {
    /// Whatever the policy and the order of events: what is transmitted decodes to exactly the
    /// records accepted, at the DLSNs given at the call, entry ids dense per segment; tickets
    /// are acknowledged in order; sealed segments summarise what they got.
    #[test]
    fn transmitted_entries_hold_every_record_at_its_dlsn(
        max_bytes in 0usize..2000,
        eager in 0usize..4,
        roll_bytes in 200u64..5000,
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let t0 = t0();
        let delay = Some(Duration::from_millis(2));
        let mut s = settings(TransmitPolicy { max_bytes, max_delay: delay, eager_in_flight: eager });
        s.roll_bytes = roll_bytes;
        let mut core = WriterCore::new(s, 1, None).unwrap();
        let mut accepted: BTreeMap<Dlsn, (u64, usize, u64)> = BTreeMap::new();
        let mut stored: BTreeMap<Dlsn, (u64, usize)> = BTreeMap::new();
        let mut next_entry: BTreeMap<u64, u64> = BTreeMap::new();
        let mut sent: std::collections::VecDeque<(u64, u64)> = Default::default();
        let mut acked: Option<u64> = None;
        let mut sealed: BTreeMap<u64, SegmentSummary> = BTreeMap::new();
        let mut now = t0;
        let mut last_dlsn = None;
        for step in steps.into_iter().chain([Step::Flush]) {
            match step {
                Step::Write(len) => {
                    let a = core.write(None, &vec![7; len], now).unwrap();
                    prop_assert!(last_dlsn < Some(a.dlsn));
                    last_dlsn = Some(a.dlsn);
                    accepted.insert(a.dlsn, (a.txid, len, a.ticket));
                }
                Step::Ack => {
                    if let Some((seq, entry)) = sent.pop_front() {
                        core.on_acked(seq, entry);
                    }
                }
                Step::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    core.on_tick(now);
                }
                Step::Flush => {
                    core.flush();
                }
            }
            while let Some(output) = core.poll_output() {
                match output {
                    CoreOutput::OpenSegment { seq, .. } => core.segment_ready(seq),
                    CoreOutput::Transmit { seq, entry_id, payload } => {
                        let expected = next_entry.entry(seq).or_insert(0);
                        prop_assert_eq!(entry_id, *expected, "dense entry ids");
                        *expected += 1;
                        let d = decode_entry(&payload).unwrap();
                        for (slot, r) in d.records.iter().enumerate() {
                            stored.insert(Dlsn::new(seq, entry_id, slot as u64), (r.txid, r.payload.len()));
                        }
                        sent.push_back((seq, entry_id));
                    }
                    CoreOutput::SealSegment { seq, summary } => {
                        prop_assert!(sealed.insert(seq, summary).is_none());
                    }
                    CoreOutput::Acked { through } => {
                        prop_assert_eq!(through, acked.map_or(0, |a| a + 1), "in order");
                        acked = Some(through);
                    }
                    CoreOutput::Failed { .. } => prop_assert!(false, "no failure was injected"),
                }
            }
        }
        // Ack the rest: everything accepted was transmitted.
        while let Some((seq, entry)) = sent.pop_front() {
            core.on_acked(seq, entry);
            while let Some(output) = core.poll_output() {
                if let CoreOutput::Transmit { seq, entry_id, payload } = output {
                    // Entries held back by WC3 until the previous segment's acks.
                    let d = decode_entry(&payload).unwrap();
                    for (slot, r) in d.records.iter().enumerate() {
                        stored.insert(Dlsn::new(seq, entry_id, slot as u64), (r.txid, r.payload.len()));
                    }
                    sent.push_back((seq, entry_id));
                }
            }
        }
        let expected: BTreeMap<Dlsn, (u64, usize)> = accepted.iter().map(|(d, (t, l, _))| (*d, (*t, *l))).collect();
        prop_assert_eq!(&stored, &expected);
        for (seq, summary) in sealed {
            let records: Vec<_> = stored.range(Dlsn::segment_start(seq)..Dlsn::segment_start(seq + 1)).collect();
            prop_assert_eq!(summary.record_count, records.len() as u64);
            prop_assert_eq!(summary.last_dlsn, records.last().map(|(d, _)| **d));
            prop_assert_eq!(summary.last_txid, records.last().map(|(_, (t, _))| *t));
        }
    }
}
