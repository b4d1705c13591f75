//! The bookie's deletion check wired to the metadata store: a deleted segment's data stays on
//! the bookie while its metadata exists (or the store cannot answer), and is dropped at the
//! next open once the metadata is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog::deletion_check::MetadataDeletionCheck;
use dlog_engine::{
    AddEntry, AddFlags, Backend, Bookie, BookieConfig, DeletionCheck, DeletionHook, EntryId, SegmentId,
    ShardId,
};
use dlog_metadata::schema::{DigestType, SegmentMetadata, SegmentState};
use dlog_metadata::{LocalStore, SegmentMetadataStore};
use std::sync::atomic::{AtomicUsize, Ordering};

fn config(dir: &std::path::Path) -> BookieConfig {
    let mut config = BookieConfig::new(dir);
    config.shard_count = 1;
    config.pin_shards = false;
    config.journal_file_bytes = 8 << 20;
    config.entry_bytes_max = 1 << 20;
    config.idle_spin_us = 0;
    config.backend = Backend::Portable;
    config.write_cache_bytes_max = 4 << 20;
    config.entry_log_bytes = 2 << 20;
    config.compaction_live_fraction = 0.6;
    config.compaction_bytes_per_s = 1 << 30;
    config
}

fn add(segment: u64, entry: u64) -> AddEntry {
    AddEntry {
        segment: SegmentId(segment),
        entry: EntryId(entry),
        last_add_confirmed: entry.checked_sub(1).map(EntryId),
        master_key: Bytes::from_static(b"key"),
        payload: Bytes::from(vec![entry as u8; 4000]),
        flags: AddFlags::NONE,
    }
}

fn segment() -> SegmentMetadata {
    SegmentMetadata {
        ensemble_size: 1,
        write_quorum_size: 1,
        ack_quorum_size: 1,
        digest_type: DigestType::Crc32c,
        master_key: Bytes::new(),
        state: SegmentState::Open,
        ensembles: BTreeMap::from([(0, vec!["b1".into()])]),
        created_ms: 0,
        owner: None,
    }
}

/// Counts the engine's questions, so the test knows the check was asked before it looks.
struct Counted<C>(C, AtomicUsize);

impl<C: DeletionCheck> DeletionCheck for Counted<C> {
    fn confirm_deleted(&self, segment: SegmentId) -> bool {
        let answer = self.0.confirm_deleted(segment);
        self.1.fetch_add(1, Ordering::SeqCst);
        answer
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    panic!("{what}: not within 30 s");
}

#[test]
fn segment_data_is_dropped_only_once_its_metadata_is_gone() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let meta_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(meta_dir.path()).unwrap());
    let segments = SegmentMetadataStore::new(store.clone());
    let (doomed, version) = runtime.block_on(segments.create(&segment())).unwrap();
    let (kept, _) = runtime.block_on(segments.create(&segment())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let check = Arc::new(Counted(
        MetadataDeletionCheck::new(store.clone(), runtime.handle().clone()),
        AtomicUsize::new(0),
    ));
    config.deletion_check = Some(DeletionHook(check.clone()));
    let bookie = Bookie::open(config.clone()).unwrap();
    for e in 0..200 {
        bookie.add_entries(vec![add(doomed, e), add(kept, e)]).wait().unwrap();
    }
    bookie.flush().unwrap();
    // Deleted on the bookie while the metadata still exists: nothing is dropped.
    bookie.delete_segment(SegmentId(doomed)).wait().unwrap();
    bookie.flush().unwrap();
    wait_for("the deletion check asked", || check.1.load(Ordering::SeqCst) > 0);
    let s = bookie.stats(ShardId(0)).unwrap();
    assert_eq!((s.deleted_bytes, s.entry_logs_deleted), (0, 0), "dropped while its metadata exists: {s:?}");
    bookie.close();

    // The metadata is deleted: the next open confirms and the data goes; the other stays.
    runtime.block_on(segments.delete(doomed, version)).unwrap();
    let bookie = Bookie::open(config).unwrap();
    wait_for("the confirmed deletion dropped the data", || {
        bookie.stats(ShardId(0)).unwrap().deleted_bytes > 0
    });
    for e in 0..200 {
        let got = bookie.read_entry(SegmentId(kept), EntryId(e)).wait().unwrap();
        assert_eq!(got.len(), 4000);
    }
    bookie.close();
}

/// A metadata store that cannot be reached.
struct Down;

fn down<T>() -> Result<T, dlog_metadata::MetaError> {
    Err(dlog_metadata::MetaError::Unavailable("down".into()))
}

impl dlog_metadata::MetadataStore for Down {
    async fn get(&self, _: &str) -> Result<Option<dlog_metadata::Versioned>, dlog_metadata::MetaError> {
        down()
    }
    async fn txn(
        &self,
        _: Vec<dlog_metadata::Op>,
    ) -> Result<dlog_metadata::Version, dlog_metadata::MetaError> {
        down()
    }
    async fn list(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<dlog_metadata::Page, dlog_metadata::MetaError> {
        down()
    }
    async fn watch(
        &self,
        _: &str,
        _: dlog_metadata::Version,
    ) -> Result<dlog_metadata::Watch, dlog_metadata::MetaError> {
        down()
    }
    async fn grant(&self, _: Duration) -> Result<dlog_metadata::LeaseId, dlog_metadata::MetaError> {
        down()
    }
    async fn keep_alive(&self, _: dlog_metadata::LeaseId) -> Result<(), dlog_metadata::MetaError> {
        down()
    }
    async fn revoke(
        &self,
        _: dlog_metadata::LeaseId,
    ) -> Result<dlog_metadata::Version, dlog_metadata::MetaError> {
        down()
    }
}

#[test]
fn a_store_that_cannot_answer_keeps_the_data() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let unreachable = MetadataDeletionCheck::new(Arc::new(Down), runtime.handle().clone());
    assert!(!unreachable.confirm_deleted(SegmentId(1)), "an unreachable store confirmed a deletion");
    let empty =
        MetadataDeletionCheck::new(Arc::new(LocalStore::in_memory().unwrap()), runtime.handle().clone());
    assert!(empty.confirm_deleted(SegmentId(1)), "a segment with no metadata is confirmed deleted");
}
