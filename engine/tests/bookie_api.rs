//! The embedded API end to end, on both backends: durable adds, reads, LAC, fencing, master
//! keys, reopen.

mod common;

use bytes::Bytes;
use common::{BACKENDS, add, config, key, payload};
use dlog_engine::{AddFlags, Bookie, EntryId, Error, SegmentId};

#[test]
fn bookie_add_read_reopen() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let bookie = Bookie::open(config(dir.path(), backend)).unwrap();
        assert!(bookie.direct_io());
        for segment in 1..=4u64 {
            let entries = (0..100).map(|e| add(segment, e, 10 + e as usize * 13)).collect();
            bookie.add_entries(entries).wait().unwrap();
        }
        bookie.add_entry(add(9, 0, 0)).wait().unwrap();
        for segment in 1..=4u64 {
            for e in [0u64, 1, 50, 99] {
                let got = bookie.read_entry(SegmentId(segment), EntryId(e)).wait().unwrap();
                assert_eq!(got, payload(segment, e, 10 + e as usize * 13));
            }
            let lac = bookie.read_last_add_confirmed(SegmentId(segment)).wait().unwrap();
            assert_eq!(lac, Some(EntryId(98)));
        }
        assert!(matches!(bookie.read_entry(SegmentId(1), EntryId(100)).wait(), Err(Error::NoSuchEntry(..))));
        assert!(matches!(
            bookie.read_last_add_confirmed(SegmentId(77)).wait(),
            Err(Error::NoSuchSegment(..))
        ));
        bookie.close();

        let bookie = Bookie::open(config(dir.path(), backend)).unwrap();
        let entries: u64 = bookie.replay_reports().iter().map(|r| r.entries).sum();
        assert_eq!(entries, 401);
        for segment in 1..=4u64 {
            for e in 0..100u64 {
                let got = bookie.read_entry(SegmentId(segment), EntryId(e)).wait().unwrap();
                assert_eq!(got, payload(segment, e, 10 + e as usize * 13), "{backend:?} {segment} {e}");
            }
        }
        assert_eq!(bookie.read_entry(SegmentId(9), EntryId(0)).wait().unwrap(), Bytes::new());
        // New writes after reopen go to a new file and replay again.
        bookie.add_entry(add(1, 100, 5)).wait().unwrap();
        bookie.close();
        let bookie = Bookie::open(config(dir.path(), backend)).unwrap();
        assert_eq!(bookie.read_entry(SegmentId(1), EntryId(100)).wait().unwrap(), payload(1, 100, 5));
        assert_eq!(bookie.read_last_add_confirmed(SegmentId(1)).wait().unwrap(), Some(EntryId(99)));
    }
}

/// The RWF_DSYNC flush path (one write per batch, no separate fdatasync) on both backends:
/// durable adds, reads and a reopen.
#[test]
fn bookie_dsync_add_read_reopen() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), backend);
        config.journal_sync = dlog_engine::JournalSync::Dsync;
        let bookie = Bookie::open(config.clone()).unwrap();
        for segment in 1..=3u64 {
            let entries = (0..50).map(|e| add(segment, e, 1 + e as usize * 97)).collect();
            bookie.add_entries(entries).wait().unwrap();
        }
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        for segment in 1..=3u64 {
            for e in 0..50u64 {
                let got = bookie.read_entry(SegmentId(segment), EntryId(e)).wait().unwrap();
                assert_eq!(got, payload(segment, e, 1 + e as usize * 97), "{backend:?}");
            }
        }
    }
}

#[test]
fn bookie_fence_and_master_key() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let bookie = Bookie::open(config(dir.path(), backend)).unwrap();
        let seg = SegmentId(5);
        for e in 0..10 {
            bookie.add_entry(add(5, e, 100)).wait().unwrap();
        }
        // Wrong key: refused for adds, fences and LAC writes.
        let mut wrong = add(5, 10, 100);
        wrong.master_key = Bytes::from_static(b"other");
        assert!(matches!(bookie.add_entry(wrong).wait(), Err(Error::WrongMasterKey(s)) if s == seg));
        assert!(matches!(
            bookie.fence(seg, Bytes::from_static(b"other")).wait(),
            Err(Error::WrongMasterKey(_))
        ));
        bookie.write_last_add_confirmed(seg, key(), EntryId(9)).wait().unwrap();
        assert_eq!(bookie.fence(seg, key()).wait().unwrap(), Some(EntryId(9)));
        // Fenced: plain adds and LAC writes refused, recovery adds accepted.
        assert!(matches!(bookie.add_entry(add(5, 10, 100)).wait(), Err(Error::Fenced(s)) if s == seg));
        assert!(matches!(
            bookie.write_last_add_confirmed(seg, key(), EntryId(10)).wait(),
            Err(Error::Fenced(_))
        ));
        let mut recovery = add(5, 10, 100);
        recovery.flags = AddFlags::RECOVERY;
        bookie.add_entry(recovery).wait().unwrap();
        // Fencing an unknown segment creates it fenced, with that key.
        assert_eq!(bookie.fence(SegmentId(6), key()).wait().unwrap(), None);
        assert!(matches!(bookie.add_entry(add(6, 0, 1)).wait(), Err(Error::Fenced(_))));
        // A batch with a mix: per-entry errors by index.
        let mut mixed = vec![add(5, 11, 1), add(7, 0, 1), add(7, 1, 1)];
        mixed[2].master_key = Bytes::from_static(b"x");
        let errors = bookie.add_entries(mixed).wait().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(matches!(errors[0], (0, Error::Fenced(_))));
        assert!(matches!(errors[1], (2, Error::WrongMasterKey(_))));
        bookie.close();

        // All of it survives a restart: fence, key, LAC, the recovery add.
        let bookie = Bookie::open(config(dir.path(), backend)).unwrap();
        assert!(matches!(bookie.add_entry(add(5, 11, 100)).wait(), Err(Error::Fenced(_))));
        assert!(matches!(bookie.add_entry(add(6, 0, 1)).wait(), Err(Error::Fenced(_))));
        let mut wrong = add(7, 2, 1);
        wrong.master_key = Bytes::from_static(b"x");
        assert!(matches!(bookie.add_entry(wrong).wait(), Err(Error::WrongMasterKey(_))));
        assert_eq!(bookie.read_last_add_confirmed(seg).wait().unwrap(), Some(EntryId(9)));
        assert_eq!(bookie.read_entry(seg, EntryId(10)).wait().unwrap(), payload(5, 10, 100));
        assert!(bookie.read_entry(SegmentId(7), EntryId(0)).wait().is_ok());
        assert!(matches!(bookie.read_entry(SegmentId(7), EntryId(1)).wait(), Err(Error::NoSuchEntry(..))));
    }
}
