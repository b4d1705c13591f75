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

/// A `Pending` polled once as a future and then waited on, or polled again, still resolves.
#[test]
fn pending_future_then_wait() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let dir = tempfile::tempdir().unwrap();
    let bookie = Bookie::open(config(dir.path(), BACKENDS[0])).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = bookie.add_entry(add(1, 0, 10));
    if let Poll::Ready(result) = std::pin::Pin::new(&mut pending).poll(&mut cx) {
        result.unwrap();
    } else {
        pending.wait().unwrap();
    }
    let mut pending = bookie.add_entry(add(1, 1, 10));
    let _ = std::pin::Pin::new(&mut pending).poll(&mut cx);
    let result = loop {
        if let Some(result) = pending.poll_ready() {
            break result;
        }
        std::thread::yield_now();
    };
    result.unwrap();
    assert_eq!(bookie.read_entry(SegmentId(1), EntryId(1)).wait().unwrap(), payload(1, 1, 10));
}

/// O_DIRECT is probed per directory and the policy follows the probe: `Required` refuses to
/// open where the probe says no (tmpfs before Linux 6.6), `Optional` falls back to buffered
/// I/O there, `Disabled` never uses it. Run on tmpfs and on the test directory's filesystem.
#[test]
fn direct_io_policy_follows_probe() {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if std::path::Path::new("/dev/shm").is_dir() {
        dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    for dir in dirs {
        let mut config = config(dir.path(), BACKENDS[0]);
        std::fs::create_dir_all(dir.path().join("shard-0")).unwrap();
        let supported = dlog_engine::io::direct::probe(&dir.path().join("shard-0")).unwrap();
        config.direct_io = dlog_engine::DirectIo::Required;
        match Bookie::open(config.clone()) {
            Ok(bookie) => {
                assert!(supported, "Required opened where the probe says no");
                assert!(bookie.direct_io());
            }
            Err(dlog_engine::OpenError::DirectIoUnsupported(path)) => {
                assert!(!supported && path.starts_with(dir.path()));
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        for (policy, expect) in
            [(dlog_engine::DirectIo::Optional, supported), (dlog_engine::DirectIo::Disabled, false)]
        {
            config.direct_io = policy;
            for backend in BACKENDS {
                config.backend = backend;
                let bookie = Bookie::open(config.clone()).unwrap();
                assert_eq!(bookie.direct_io(), expect, "{policy:?} {backend:?}");
                let e = bookie
                    .read_last_add_confirmed(SegmentId(2))
                    .wait()
                    .map_or(0, |l| l.map_or(0, |l| l.0 + 1));
                bookie.add_entry(add(2, e, 100)).wait().unwrap();
                assert_eq!(bookie.read_entry(SegmentId(2), EntryId(e)).wait().unwrap(), payload(2, e, 100));
            }
        }
    }
}

/// Bad configurations are refused with the field named, before anything is touched.
#[test]
fn config_validation_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), BACKENDS[0]);
    type Break = Box<dyn Fn(&mut dlog_engine::BookieConfig)>;
    let cases: Vec<(&str, Break)> = vec![
        ("shard_count", Box::new(|c| c.shard_count = 0)),
        ("batch_bytes_max", Box::new(|c| c.batch_bytes_max = 100)),
        ("writes_in_flight_max", Box::new(|c| c.writes_in_flight_max = 0)),
        ("writes_in_flight_max", Box::new(|c| c.writes_in_flight_max = 17)),
        ("entry_bytes_max", Box::new(|c| c.entry_bytes_max = 0)),
        ("journal_file_bytes", Box::new(|c| c.journal_file_bytes = 4097)),
        ("journal_file_bytes", Box::new(|c| c.journal_file_bytes = 4096)),
        ("queue_capacity", Box::new(|c| c.queue_capacity = 0)),
        ("journal_dirs", Box::new(|c| c.journal_dirs.clear())),
    ];
    for (field, break_it) in cases {
        let mut config = base.clone();
        break_it(&mut config);
        match Bookie::open(config) {
            Err(dlog_engine::OpenError::Config(message)) => assert!(message.contains(field), "{message}"),
            Err(e) => panic!("{field}: expected a config error, got {e}"),
            Ok(_) => panic!("{field}: a bad config opened"),
        }
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a refused config wrote files");
    // A different shard count on an existing directory is refused too.
    Bookie::open(base.clone()).unwrap().close();
    let mut other = base;
    other.shard_count = 3;
    match Bookie::open(other) {
        Err(dlog_engine::OpenError::Layout { reason, .. }) => {
            assert!(reason.contains("shard_count"), "{reason}")
        }
        Err(e) => panic!("expected a layout error, got {e}"),
        Ok(_) => panic!("opened with another shard count"),
    }
}

/// Shards spread over several journal directories (shard n in dir n % dirs), each with its own
/// layout file; entries of every shard survive a reopen.
#[test]
fn several_journal_dirs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut config = config(a.path(), BACKENDS[0]);
    config.journal_dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
    config.shard_count = 4;
    let bookie = Bookie::open(config.clone()).unwrap();
    let entries: Vec<_> = (0..32u64).flat_map(|s| (0..4).map(move |e| add(s, e, 64))).collect();
    bookie.add_entries(entries).wait().unwrap();
    bookie.close();
    for (dir, shards) in [(a.path(), [0, 2]), (b.path(), [1, 3])] {
        assert!(dir.join("dlog-layout").is_file());
        for shard in shards {
            assert!(dir.join(format!("shard-{shard}")).is_dir(), "shard {shard} in {}", dir.display());
        }
    }
    let bookie = Bookie::open(config).unwrap();
    for s in 0..32u64 {
        for e in 0..4 {
            assert_eq!(bookie.read_entry(SegmentId(s), EntryId(e)).wait().unwrap(), payload(s, e, 64));
        }
    }
}

/// Entries larger than a batch get a batch of their own (an oversized buffer), up to
/// `entry_bytes_max`; larger ones, and over-long master keys, are refused as invalid requests.
#[test]
fn large_entries_and_invalid_requests() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), backend);
        assert_eq!(config.batch_bytes_max, 64 << 10);
        let bookie = Bookie::open(config.clone()).unwrap();
        let sizes = [200 << 10, 1 << 20, 10, 70 << 10, config.entry_bytes_max];
        let entries = sizes.iter().enumerate().map(|(e, len)| add(4, e as u64, *len)).collect();
        bookie.add_entries(entries).wait().unwrap();
        let too_big = add(4, 9, config.entry_bytes_max + 1);
        assert!(matches!(bookie.add_entry(too_big).wait(), Err(Error::InvalidRequest(_))));
        let mut long_key = add(5, 0, 1);
        long_key.master_key = Bytes::from(vec![7u8; 65]);
        assert!(matches!(bookie.add_entry(long_key).wait(), Err(Error::InvalidRequest(_))));
        bookie.close();
        let bookie = Bookie::open(config).unwrap();
        for (e, len) in sizes.iter().enumerate() {
            let got = bookie.read_entry(SegmentId(4), EntryId(e as u64)).wait().unwrap();
            assert_eq!(got, payload(4, e as u64, *len), "{backend:?} entry {e}");
        }
        assert!(matches!(bookie.read_entry(SegmentId(4), EntryId(9)).wait(), Err(Error::NoSuchEntry(..))));
    }
}

/// A checkpoint journals every segment's durable state after its mark before reclaiming files:
/// after a restart, a fenced segment is still fenced, a wrong key still refused and the LAC
/// still known, even though the records that set them were in reclaimed files.
#[test]
fn checkpoint_keeps_fence_key_and_lac_across_reclaim() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), backend);
        config.shard_count = 1;
        config.journal_file_bytes = 4 << 20;
        config.entry_bytes_max = 64 << 10;
        config.storage_mode = dlog_engine::StorageMode::JournalOnly;
        let bookie = Bookie::open(config.clone()).unwrap();
        for e in 0..20 {
            bookie.add_entry(add(7, e, 100)).wait().unwrap();
        }
        bookie.add_entry(add(8, 0, 100)).wait().unwrap();
        assert_eq!(bookie.fence(SegmentId(7), key()).wait().unwrap(), Some(EntryId(18)));
        // Fill a few files so that the ones holding those records rotate out.
        let filler: Vec<_> = (0..160).map(|e| add(9, e, 60 << 10)).collect();
        for chunk in filler.chunks(16) {
            bookie.add_entries(chunk.to_vec()).wait().unwrap();
        }
        let shard = dlog_engine::ShardId(0);
        let mark = bookie.journal_position(shard).wait().unwrap();
        assert!(mark.file.0 >= 2, "{mark:?}");
        bookie.checkpoint(shard, mark).wait().unwrap();
        let journal = dir.path().join("shard-0");
        assert!(!journal.join("journal-0000000000000000.log").exists(), "file 0 was reclaimed");
        // A mark that is not a batch boundary is refused.
        let inside = dlog_engine::JournalMark { file: mark.file, offset: mark.offset - 4096 };
        assert!(matches!(bookie.checkpoint(shard, inside).wait(), Err(Error::InvalidRequest(_))));
        bookie.close();

        let bookie = Bookie::open(config).unwrap();
        assert!(matches!(bookie.add_entry(add(7, 20, 1)).wait(), Err(Error::Fenced(_))), "{backend:?}");
        let mut wrong = add(8, 1, 1);
        wrong.master_key = Bytes::from_static(b"not the key");
        assert!(matches!(bookie.add_entry(wrong).wait(), Err(Error::WrongMasterKey(_))), "{backend:?}");
        assert_eq!(bookie.read_last_add_confirmed(SegmentId(7)).wait().unwrap(), Some(EntryId(18)));
        bookie.add_entry(add(8, 1, 1)).wait().unwrap();
    }
}

/// One process per journal directory: a second open of a live bookie's directories is refused
/// (`InUse`), and the directory is free again once the first closes.
#[test]
fn a_journal_directory_is_opened_by_one_bookie_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = dlog_engine::BookieConfig::new(dir.path().join("journal"));
    let first = dlog_engine::Bookie::open(config.clone()).unwrap();
    match dlog_engine::Bookie::open(config.clone()) {
        Err(dlog_engine::OpenError::InUse(path)) => assert_eq!(path, dir.path().join("journal")),
        other => panic!("{other:?}"),
    }
    first.close();
    dlog_engine::Bookie::open(config).unwrap().close();
}
