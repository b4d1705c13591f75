//! Journal replay: rebuilds a shard's state from its journal files, and decides what a damaged
//! region is. The rules, and why they are sound: docs/format.md#recovery-rules.
//!
//! Batches are read in order from the checkpoint, and each must carry the next batch number
//! (a gap means acknowledged batches are missing: damage). Where the next batch is not valid
//! (zeroes, bytes of an earlier use of a recycled file, a checksum mismatch, a bad length),
//! replay looks ahead for valid batches of this file's epoch, as far as
//! `writes_in_flight_max + 1` batches could reach:
//! - nothing found, and a later file holds batches: this file's end (the writer moved on only
//!   once all of it was durable, C3; lost batches would show as a gap at the next file).
//! - nothing found in the last file: the end of the journal. If the bytes there were damaged
//!   (not zero, not stale) it is a torn tail, cut off by zeroing it.
//! - only batches with numbers inside the in-flight window: they were written concurrently
//!   with the torn batch and never acknowledged (acks go in order, C1). Torn tail: cut off
//!   together with them.
//! - a batch at least `writes_in_flight_max` beyond, or found batches while later files hold
//!   batches: submitted only after the damaged one was durable (C2, C3), so this is damage to
//!   acknowledged data. `Strict` refuses to start, naming file and offset;
//!   `TruncateTornTail` reports it, skips to the next valid batch and goes on.
//!
//! Reading: one reader thread per shard streams all its files in 4 MiB O_DIRECT reads, two in
//! flight, while the shard thread parses. The reader reports every failure as an error and
//! marks when it has read everything; a reader that stops otherwise is an error too, never an
//! early end of the journal.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::JournalRecovery;
use crate::constants::{JOURNAL_FILE_HEADER_BYTES, RECORD_HEADER_BYTES, SECTOR_BYTES};
use crate::error::{IoOp, OpenError};
use crate::ids::{EntryId, FileSeq, SegmentId};
use crate::io::buf::AlignedBuf;
use crate::io::uring::UringDisk;
use crate::io::waker::Waker;
use crate::io::{Disk, DiskOp, direct};
use crate::journal::file_header::FileHeader;
use crate::journal::files::ShardDir;
use crate::journal::record::{self, DecodeError, LAC_NONE, RecordKind};
use crate::shard::core::CoreStart;
use crate::shard::location_index::Location;
use crate::shard::segment_state::SegmentState;

/// Bytes per read during replay.
pub const REPLAY_CHUNK_BYTES: usize = 4 << 20;
/// Chunks read ahead of the parser.
pub const REPLAY_READ_AHEAD: usize = 2;
/// Reads outstanding at once during replay.
pub const REPLAY_READS_IN_FLIGHT: usize = 2;

/// A region cut off as a torn tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The file.
    pub file: PathBuf,
    /// Start of the cut.
    pub offset: u64,
    /// Bytes zeroed.
    pub bytes: u64,
}

/// What replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Journal files read.
    pub files: usize,
    /// Valid batches applied.
    pub batches: u64,
    /// Entry records applied.
    pub entries: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
    /// The torn tail cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// Damage tolerated under `TruncateTornTail`, each naming file and offset.
    pub damage: Vec<String>,
    /// Files wholly before the checkpoint, found and deleted (a reclaim a crash interrupted).
    pub obsolete: Vec<FileSeq>,
    /// Time taken.
    pub elapsed: Duration,
}

/// Sequential reader of one file with a read-ahead thread.
struct ChunkReader {
    chunks: Option<Receiver<Chunk>>,
    /// Set by the reader once it has delivered every file: only then is a closed channel the
    /// end of the journal.
    finished: Arc<AtomicBool>,
    /// The file the parser is on: the reader stops reading files before it.
    wanted: Arc<AtomicUsize>,
    returns: Sender<AlignedBuf>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A chunk: (file index, offset, buffer, bytes read), or the read error.
type Chunk = std::io::Result<(usize, u64, AlignedBuf, usize)>;

impl ChunkReader {
    /// Reads each `(file, start, end)` in turn, on one thread, so one sequential stream (and
    /// one set of buffers) serves the whole replay.
    fn new(files: Vec<(File, u64, u64)>) -> ChunkReader {
        let wanted = Arc::new(AtomicUsize::new(0));
        let wanted_by_reader = wanted.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let finished_by_reader = finished.clone();
        let (chunk_tx, chunks) = bounded(REPLAY_READ_AHEAD);
        let (returns, return_rx) = bounded::<AlignedBuf>(REPLAY_READ_AHEAD + REPLAY_READS_IN_FLIGHT + 2);
        let thread = std::thread::Builder::new()
            .name("dlog-replay-read".into())
            .spawn(move || {
                let buffer =
                    || return_rx.try_recv().unwrap_or_else(|_| AlignedBuf::with_capacity(REPLAY_CHUNK_BYTES));
                let mut disk = UringDisk::new().ok();
                let wanted = &*wanted_by_reader;
                for (index, (file, start, end)) in files.into_iter().enumerate() {
                    let more = match disk.take() {
                        Some(d) => {
                            let (d, more) = read_uring(d, index, file, start, end, &chunk_tx, buffer, wanted);
                            disk = d;
                            more
                        }
                        None => read_blocking(index, &file, start, end, &chunk_tx, buffer, wanted),
                    };
                    if !more {
                        return;
                    }
                }
                finished_by_reader.store(true, Ordering::Release);
            })
            .expect("spawn replay reader");
        ChunkReader { chunks: Some(chunks), finished, wanted, returns, thread: Some(thread) }
    }
}

/// Reads `[start, end)` with `REPLAY_READS_IN_FLIGHT` reads outstanding, delivering chunks in
/// order. Several reads in flight keep the device busy while one completes.
/// Returns the disk for the next file (None if it failed) and whether to go on.
#[expect(clippy::too_many_arguments, reason = "one file's read, with its stream and stop flag")]
fn read_uring(
    mut disk: UringDisk,
    index: usize,
    file: File,
    start: u64,
    end: u64,
    chunks: &Sender<Chunk>,
    mut buffer: impl FnMut() -> AlignedBuf,
    wanted: &AtomicUsize,
) -> (Option<UringDisk>, bool) {
    let Ok(waker) = Waker::new() else {
        return (None, read_blocking(index, &file, start, end, chunks, buffer, wanted));
    };
    let fallback = match file.try_clone() {
        Ok(f) => f,
        Err(e) => {
            let _ = chunks.send(Err(e));
            return (None, false);
        }
    };
    if disk.register_file(FileSeq(0), file).is_err() {
        return (None, read_blocking(index, &fallback, start, end, chunks, buffer, wanted));
    }
    let mut next_submit = start;
    let mut next_deliver = start;
    let mut done: std::collections::BTreeMap<u64, (AlignedBuf, usize, Option<std::io::Error>)> =
        std::collections::BTreeMap::new();
    let mut completions = Vec::new();
    loop {
        if wanted.load(Ordering::Relaxed) > index {
            next_submit = end; // The parser is done with this file: read no more of it.
            done.clear();
        }
        while next_submit < end && disk.in_flight() < REPLAY_READS_IN_FLIGHT {
            let mut buf = buffer();
            let want = ((end - next_submit) as usize).min(REPLAY_CHUNK_BYTES);
            buf.set_len(want);
            disk.submit(next_submit, DiskOp::Read { file: FileSeq(0), offset: next_submit, buf });
            next_submit += want as u64;
        }
        if disk.in_flight() == 0 && done.is_empty() {
            disk.unregister_file(FileSeq(0));
            return (Some(disk), true);
        }
        if let Err(e) = disk.reap(&mut completions, Some(Duration::from_secs(1)), &waker) {
            let _ = chunks.send(Err(e));
            return (None, false);
        }
        for c in completions.drain(..) {
            done.insert(c.op, (c.buf, c.bytes, c.result.err().map(|(_, e)| e)));
        }
        while let Some((buf, bytes, error)) = done.remove(&next_deliver) {
            let want = buf.len();
            let chunk = match error {
                Some(e) => Err(e),
                None => Ok((index, next_deliver, buf, bytes)),
            };
            let failed = chunk.is_err();
            if chunks.send(chunk).is_err() || failed {
                return (None, false);
            }
            if bytes < want {
                // The file ended early; wait out reads still in flight, then the next file.
                while disk.in_flight() > 0 {
                    if let Err(e) = disk.reap(&mut completions, Some(Duration::from_secs(1)), &waker) {
                        let _ = chunks.send(Err(e));
                        return (None, false);
                    }
                    completions.clear();
                }
                disk.unregister_file(FileSeq(0));
                return (Some(disk), true);
            }
            next_deliver += want as u64;
        }
    }
}

/// Reads `[start, end)` one blocking read at a time (where io_uring is refused). Returns
/// whether to go on with the next file.
fn read_blocking(
    index: usize,
    file: &File,
    start: u64,
    end: u64,
    chunks: &Sender<Chunk>,
    mut buffer: impl FnMut() -> AlignedBuf,
    wanted: &AtomicUsize,
) -> bool {
    let mut offset = start;
    while offset < end && wanted.load(Ordering::Relaxed) <= index {
        let mut buf = buffer();
        let want = ((end - offset) as usize).min(REPLAY_CHUNK_BYTES);
        buf.set_len(want);
        let (done, result) = direct::read_full_at(file, buf.as_mut_slice(), offset);
        let failed = result.is_err();
        let short = done < want;
        if chunks.send(result.map(|()| (index, offset, buf, done))).is_err() || failed {
            return false;
        }
        if short {
            return true;
        }
        offset += want as u64;
    }
    true
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        // Dropping the receiver makes the reader's next send fail, so it stops reading.
        self.chunks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The shard's read stream: the reader, a chunk read too far (the next file's), and the byte
/// buffer windows reuse.
struct Stream {
    reader: ChunkReader,
    peeked: Option<(usize, u64, AlignedBuf, usize)>,
    bytes: Vec<u8>,
}

/// A sliding window of one file's bytes over the stream.
struct Window<'a> {
    stream: &'a mut Stream,
    index: usize,
    start: u64,
    path: PathBuf,
    eof: bool,
}

impl Window<'_> {
    fn open(stream: &mut Stream, index: usize, start: u64, path: PathBuf) -> Window<'_> {
        stream.bytes.clear();
        stream.reader.wanted.store(index, Ordering::Relaxed);
        Window { stream, index, start, path, eof: false }
    }

    fn end(&self) -> u64 {
        self.start + self.stream.bytes.len() as u64
    }

    fn next_chunk(&mut self) -> Result<Option<(usize, u64, AlignedBuf, usize)>, OpenError> {
        if let Some(chunk) = self.stream.peeked.take() {
            return Ok(Some(chunk));
        }
        let Some(chunks) = &self.stream.reader.chunks else { return Ok(None) };
        match chunks.recv() {
            Ok(Ok(chunk)) => Ok(Some(chunk)),
            Ok(Err(source)) => Err(OpenError::Io { op: IoOp::Read, file: self.path.clone(), source }),
            Err(_) if self.stream.reader.finished.load(Ordering::Acquire) => Ok(None),
            Err(_) => Err(OpenError::Io {
                op: IoOp::Read,
                file: self.path.clone(),
                source: std::io::Error::other("the replay reader stopped before the end of the journal"),
            }),
        }
    }

    /// Makes the window cover `[.., end)` if the file has those bytes.
    fn fill_to(&mut self, end: u64) -> Result<(), OpenError> {
        while self.end() < end && !self.eof {
            let Some((index, offset, buf, done)) = self.next_chunk()? else {
                self.eof = true;
                break;
            };
            if index < self.index || (index == self.index && offset + (done as u64) <= self.end()) {
                let _ = self.stream.reader.returns.try_send(buf);
                continue; // An earlier file's tail, or bytes already seen.
            }
            if index > self.index {
                self.stream.peeked = Some((index, offset, buf, done));
                self.eof = true;
                break;
            }
            assert_eq!(offset, self.end(), "chunks of a file arrive in order");
            self.stream.bytes.extend_from_slice(&buf.as_slice()[..done]);
            if done < buf.len() {
                self.eof = true;
            }
            let _ = self.stream.reader.returns.try_send(buf);
        }
        Ok(())
    }

    /// Bytes `[from, to)`, fewer if the file ends first.
    fn get(&mut self, from: u64, to: u64) -> Result<&[u8], OpenError> {
        assert!(from >= self.start);
        self.fill_to(to)?;
        let bytes = &self.stream.bytes;
        let a = ((from - self.start) as usize).min(bytes.len());
        let b = ((to - self.start) as usize).min(bytes.len());
        Ok(&bytes[a..b])
    }

    /// Forgets bytes before `offset`.
    fn discard_before(&mut self, offset: u64) {
        let n = offset.saturating_sub(self.start) as usize;
        if n >= REPLAY_CHUNK_BYTES * 2 && n <= self.stream.bytes.len() {
            self.stream.bytes.drain(..n);
            self.start += n as u64;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Parsed {
    kind: RecordKind,
    segment: u64,
    entry: u64,
    lac: u64,
    at: u64,
    len: u32,
}

enum BatchRead {
    Valid {
        seq: u64,
        len: u64,
    },
    /// Never written or written by an earlier use of the file: an end, not damage.
    End,
    Damaged(String),
    /// The batch header itself does not decode (checksum, malformed): damage, or in a recycled
    /// file possibly bytes of its earlier use (see `replay`).
    Unreadable(String),
}

struct FileScan<'a, 'w> {
    window: Window<'w>,
    header: FileHeader,
    records: &'a mut Vec<Parsed>,
    keys: &'a mut Vec<(u64, Bytes)>,
    /// Entry payloads in record order, when replay keeps them (entry logs mode).
    payloads: Option<&'a mut Vec<Bytes>>,
}

impl FileScan<'_, '_> {
    fn read_batch(&mut self, pos: u64) -> Result<BatchRead, OpenError> {
        let epoch = self.header.epoch();
        let file_bytes = self.header.file_bytes;
        let head = self.window.get(pos, pos + RECORD_HEADER_BYTES as u64)?;
        let header = match record::decode(head, epoch) {
            Ok((h, _)) => h,
            Err(DecodeError::Zero | DecodeError::StaleEpoch) => return Ok(BatchRead::End),
            Err(DecodeError::Short) if head.len() < RECORD_HEADER_BYTES => return Ok(BatchRead::End),
            Err(e) => return Ok(BatchRead::Unreadable(format!("batch header: {e:?}"))),
        };
        if header.kind != RecordKind::Batch {
            return Ok(BatchRead::Damaged(format!("expected a batch record, found {:?}", header.kind)));
        }
        let len = header.segment_id;
        let limit = self.header.batch_bytes_limit.max(SECTOR_BYTES as u64);
        if len == 0 || len % SECTOR_BYTES as u64 != 0 || len > limit || pos + len > file_bytes {
            return Ok(BatchRead::Damaged(format!("batch length {len} is impossible")));
        }
        let seq = header.entry_id;
        let record_count = header.last_add_confirmed;
        let bytes = self.window.get(pos, pos + len)?;
        if (bytes.len() as u64) < len {
            return Ok(BatchRead::Damaged("file ends inside the batch".into()));
        }
        self.records.clear();
        self.keys.clear();
        // One copy of the batch; entries are slices of it.
        let batch_copy = match self.payloads.as_mut() {
            Some(payloads) => {
                payloads.clear();
                Some(Bytes::copy_from_slice(bytes))
            }
            None => None,
        };
        let mut at = RECORD_HEADER_BYTES;
        let mut count = 0u64;
        loop {
            if at == bytes.len() {
                break;
            }
            let (h, payload) = match record::decode(&bytes[at..], epoch) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(BatchRead::Damaged(format!("record at batch offset {at}: {e:?}")));
                }
            };
            let end = at + RECORD_HEADER_BYTES + h.payload_len as usize;
            if end > bytes.len() {
                return Ok(BatchRead::Damaged(format!("record at batch offset {at} overruns")));
            }
            match h.kind {
                RecordKind::Padding => {
                    if end != bytes.len() {
                        return Ok(BatchRead::Damaged("padding does not end the batch".into()));
                    }
                    break;
                }
                RecordKind::Batch => {
                    return Ok(BatchRead::Damaged(format!("batch record inside batch at {at}")));
                }
                RecordKind::RunHeader | RecordKind::RunFooter => {
                    return Ok(BatchRead::Damaged(format!("entry log record inside batch at {at}")));
                }
                RecordKind::MasterKey => self.keys.push((h.segment_id, Bytes::copy_from_slice(payload))),
                RecordKind::Entry => {
                    if let (Some(payloads), Some(copy)) = (self.payloads.as_mut(), &batch_copy) {
                        payloads.push(copy.slice(at + RECORD_HEADER_BYTES..end));
                    }
                }
                _ => {}
            }
            count += 1;
            self.records.push(Parsed {
                kind: h.kind,
                segment: h.segment_id,
                entry: h.entry_id,
                lac: h.last_add_confirmed,
                at: pos + at as u64,
                len: h.payload_len,
            });
            at = end;
        }
        if count != record_count {
            return Ok(BatchRead::Damaged(format!("{count} records, batch says {record_count}")));
        }
        Ok(BatchRead::Valid { seq, len })
    }

    /// Valid batch headers of this epoch at sector boundaries in `[from, to)`: (offset, seq, len).
    fn look_ahead(&mut self, from: u64, to: u64) -> Result<Vec<(u64, u64, u64)>, OpenError> {
        let epoch = self.header.epoch();
        let mut found = Vec::new();
        let mut pos = from;
        while pos + RECORD_HEADER_BYTES as u64 <= to {
            let head = self.window.get(pos, pos + RECORD_HEADER_BYTES as u64)?;
            if head.len() < RECORD_HEADER_BYTES {
                break;
            }
            if let Ok((h, _)) = record::decode(head, epoch)
                && h.kind == RecordKind::Batch
            {
                found.push((pos, h.entry_id, h.segment_id));
            }
            pos += SECTOR_BYTES as u64;
        }
        Ok(found)
    }
}

/// A journal file opened for replay, with its header read once.
struct Opened {
    seq: FileSeq,
    path: PathBuf,
    file: File,
    header: Result<FileHeader, String>,
    /// Whether a valid batch header of the file's epoch sits at replay's start in it.
    has_batches: bool,
}

/// Opens journal file `seq`, reads its header block and the sector where replay starts in it.
fn open_for_replay(dir: &ShardDir, seq: FileSeq, start: u64, direct_io: bool) -> Result<Opened, OpenError> {
    let path = dir.journal_path(seq);
    let io_error = |op: IoOp, path: &PathBuf| {
        let file = path.clone();
        move |source| OpenError::Io { op, file, source }
    };
    let file = direct::open_read(&path, direct_io).map_err(io_error(IoOp::Open, &path))?;
    let mut block = AlignedBuf::with_capacity(JOURNAL_FILE_HEADER_BYTES);
    block.set_len(JOURNAL_FILE_HEADER_BYTES);
    let (n, read) = direct::read_full_at(&file, block.as_mut_slice(), 0);
    read.map_err(io_error(IoOp::Read, &path))?;
    let header = FileHeader::decode(&block.as_slice()[..n]);
    let has_batches = match &header {
        Ok(h) => {
            // `start` is sector-aligned (checked with the checkpoint), so one aligned read.
            let (n, read) = direct::read_full_at(&file, block.as_mut_slice(), start);
            read.map_err(io_error(IoOp::Read, &path))?;
            matches!(record::decode(&block.as_slice()[..n], h.epoch()), Ok((r, _)) if r.kind == RecordKind::Batch)
        }
        Err(_) => false,
    };
    Ok(Opened { seq, path, file, header, has_batches })
}

/// Replays a shard's journal. Returns the state to start the core from, and a report. Torn
/// tails are zeroed on disk before returning.
pub fn replay(
    dir: &ShardDir,
    policy: JournalRecovery,
    direct_io: bool,
    keep_payloads: bool,
) -> Result<(CoreStart, ReplayReport), OpenError> {
    #[expect(clippy::disallowed_methods, reason = "replay runs in the shell; elapsed is a report")]
    let started = Instant::now();
    let checkpoint = dir.read_checkpoint()?;
    let (live, recycled) = dir.list()?;
    let mut start = CoreStart { checkpoint, ..CoreStart::default() };
    let mut report = ReplayReport::default();
    let first = checkpoint.map_or(FileSeq(0), |c| c.file);
    let (obsolete, files): (Vec<FileSeq>, Vec<FileSeq>) = live.iter().partition(|s| **s < first);
    if let Some(c) = checkpoint
        && (c.offset < JOURNAL_FILE_HEADER_BYTES as u64 || c.offset % SECTOR_BYTES as u64 != 0)
    {
        return Err(OpenError::Layout {
            path: dir.path.join("checkpoint"),
            reason: format!("checkpoint offset {} is not a batch boundary", c.offset),
        });
    }
    // Files wholly before the checkpoint are left over from a reclaim a crash interrupted.
    for seq in &obsolete {
        let path = dir.journal_path(*seq);
        std::fs::remove_file(&path).map_err(|source| OpenError::Io { op: IoOp::Open, file: path, source })?;
    }
    report.obsolete = obsolete;
    start.file_seq_next = live.iter().chain(recycled.iter()).map(|s| s.0 + 1).max().unwrap_or(0);
    let start_of = |seq: FileSeq| match checkpoint {
        Some(c) if c.file == seq => c.offset,
        _ => JOURNAL_FILE_HEADER_BYTES as u64,
    };
    let mut opened = Vec::with_capacity(files.len());
    for seq in &files {
        opened.push(open_for_replay(dir, *seq, start_of(*seq), direct_io)?);
    }
    let with_batches: Vec<bool> = opened.iter().map(|o| o.has_batches).collect();
    // Check every header first, so one stream can then read all files in order.
    let mut readable = Vec::with_capacity(files.len());
    for (i, Opened { seq, path, file, header, .. }) in opened.into_iter().enumerate() {
        let later_has_batches = with_batches[i + 1..].iter().any(|b| *b);
        match header {
            Ok(h) if h.file_seq == seq && h.shard_id == dir.shard => {
                readable.push((seq, path, h, file, later_has_batches));
            }
            Ok(h) => {
                let reason = format!(
                    "header names file {} of shard {} but this is file {seq} of shard {}",
                    h.file_seq, h.shard_id.0, dir.shard.0
                );
                return Err(OpenError::Layout { path, reason });
            }
            Err(reason) if reason.starts_with("format version") => {
                // Written by another version: refuse rather than skip what we cannot read.
                return Err(OpenError::Layout { path, reason });
            }
            Err(reason) => {
                if policy == JournalRecovery::Strict || later_has_batches {
                    return Err(OpenError::JournalCorrupt { file: path, offset: 0, reason });
                }
                report.damage.push(format!("{}: unreadable header: {reason}", path.display()));
            }
        }
    }
    let mut sources = Vec::with_capacity(readable.len());
    for (seq, path, header, file, _) in &readable {
        let file = file.try_clone().map_err(|source| OpenError::Io {
            op: IoOp::Open,
            file: path.clone(),
            source,
        })?;
        sources.push((file, start_of(*seq), header.file_bytes));
    }
    let mut stream = Stream { reader: ChunkReader::new(sources), peeked: None, bytes: Vec::new() };
    let mut torn: Option<(PathBuf, u64, u64)> = None;
    let mut last_seq: Option<u64> = None;
    let mut records = Vec::new();
    let mut keys = Vec::new();
    let mut payloads = Vec::new();
    'files: for (index, (seq, path, header, _, later_has_batches)) in readable.iter().enumerate() {
        let (seq, header, later_has_batches) = (*seq, *header, *later_has_batches);
        start.files.push(seq);
        if start_of(seq) != JOURNAL_FILE_HEADER_BYTES as u64 {
            start.boundaries.entry(seq).or_default().push(start_of(seq));
        }
        report.files += 1;
        let mut pos = start_of(seq);
        let window = Window::open(&mut stream, index, pos, path.clone());
        let mut scan = FileScan {
            window,
            header,
            records: &mut records,
            keys: &mut keys,
            payloads: keep_payloads.then_some(&mut payloads),
        };
        let in_flight = u64::from(header.writes_in_flight_max.max(1));
        loop {
            scan.window.discard_before(pos);
            if pos + RECORD_HEADER_BYTES as u64 > header.file_bytes {
                continue 'files;
            }
            let outcome = scan.read_batch(pos)?;
            let expected = last_seq.map(|s| s.saturating_add(1));
            let damage = match outcome {
                BatchRead::Valid { seq: batch_seq, len } if expected.is_none_or(|e| e == batch_seq) => {
                    let kept = scan.payloads.as_deref().map(Vec::as_slice);
                    apply(&mut start, &mut report, seq, scan.records, scan.keys, kept);
                    report.batches += 1;
                    report.bytes += len;
                    last_seq = Some(batch_seq);
                    pos += len;
                    start.boundaries.entry(seq).or_default().push(pos);
                    continue;
                }
                BatchRead::Valid { seq: batch_seq, .. } => {
                    // Batches are contiguous within a file, and a file is started only once
                    // the previous one is durable (C3): a gap means acknowledged batches are
                    // missing. Never a torn tail.
                    let reason = format!(
                        "batch {batch_seq} where {} was expected: acknowledged batches are missing",
                        expected.unwrap_or(0)
                    );
                    if policy == JournalRecovery::Strict {
                        return Err(OpenError::JournalCorrupt { file: path.clone(), offset: pos, reason });
                    }
                    tracing::error!(file = %path.display(), offset = pos, %reason, "journal damage skipped");
                    report.damage.push(format!("{}@{pos}: {reason}", path.display()));
                    last_seq = batch_seq.checked_sub(1);
                    continue;
                }
                BatchRead::End => None,
                BatchRead::Damaged(reason) | BatchRead::Unreadable(reason) => Some(reason),
            };
            // An end or damage: look as far ahead as batches in flight could have reached.
            let reach = (in_flight + 1).saturating_mul(header.batch_bytes_limit.max(SECTOR_BYTES as u64));
            let ahead_to = header.file_bytes.min(pos.saturating_add(reach));
            let found: Vec<(u64, u64, u64)> = scan
                .look_ahead(pos + SECTOR_BYTES as u64, ahead_to)?
                .into_iter()
                .filter(|(_, s, _)| last_seq.is_none_or(|l| *s > l))
                .collect();
            // A file the writer moved on from (later files hold batches) was wholly durable
            // when it did (C3). With nothing valid ahead in this file, this is its end, whatever
            // the bytes here are (a recycled file keeps its earlier use's bytes, cut anywhere):
            // if batches were lost here, the next file's first batch number shows the gap, and
            // that is reported as damage there.
            if later_has_batches && found.is_empty() {
                continue 'files;
            }
            let first_expected = expected.or(found.iter().map(|f| f.1).min()).unwrap_or(0);
            let beyond_window = found.iter().any(|(_, s, _)| *s >= first_expected.saturating_add(in_flight));
            let corrupt = beyond_window || (later_has_batches && !found.is_empty());
            if corrupt {
                let reason = damage.unwrap_or_else(|| "a durable batch is missing".into());
                let reason = format!(
                    "{reason}; {} valid batches follow{}",
                    found.len(),
                    if later_has_batches { " and later files hold batches" } else { "" }
                );
                if policy == JournalRecovery::Strict {
                    return Err(OpenError::JournalCorrupt { file: path.clone(), offset: pos, reason });
                }
                tracing::error!(file = %path.display(), offset = pos, %reason, "journal damage skipped");
                report.damage.push(format!("{}@{pos}: {reason}", path.display()));
                match found.iter().min_by_key(|f| f.0) {
                    Some(&(offset, next_seq, _)) => {
                        pos = offset;
                        last_seq = next_seq.checked_sub(1);
                        continue;
                    }
                    None => continue 'files,
                }
            }
            if damage.is_some() || !found.is_empty() {
                let end = found.iter().map(|(o, _, l)| o.saturating_add(*l)).max().unwrap_or(0);
                let zero_to = end.max(pos + SECTOR_BYTES as u64).min(header.file_bytes);
                torn = Some((path.clone(), pos, zero_to));
                break 'files;
            }
            continue 'files;
        }
    }
    drop(stream);
    if let Some((path, from, to)) = torn {
        zero_range(&path, from, to, direct_io)?;
        tracing::warn!(file = %path.display(), offset = from, bytes = to - from, "journal torn tail cut off");
        report.torn_tail = Some(TornTail { file: path, offset: from, bytes: to - from });
    }
    start.batch_seq_next = last_seq.map_or(0, |s| s.saturating_add(1));
    start.damage = report.damage.clone();
    report.elapsed = started.elapsed();
    Ok((start, report))
}

fn apply(
    start: &mut CoreStart,
    report: &mut ReplayReport,
    file: FileSeq,
    records: &[Parsed],
    keys: &[(u64, Bytes)],
    payloads: Option<&[Bytes]>,
) {
    let mut keys = keys.iter();
    let mut payloads = payloads.map(|p| p.iter());
    for r in records {
        let segment = SegmentId(r.segment);
        match r.kind {
            RecordKind::MasterKey => {
                let (_, key) = keys.next().expect("one key per key record");
                let state = start.segments.entry(segment).or_insert_with(|| SegmentState::new(key.clone()));
                state.master_key.get_or_insert_with(|| key.clone());
                state.key_journaled = true;
            }
            RecordKind::Entry => {
                match payloads.as_mut() {
                    Some(payloads) => {
                        let payload = payloads.next().expect("one payload per entry record").clone();
                        start.replayed.push((segment, r.entry, payload));
                    }
                    None => {
                        let location = Location { file, offset: r.at, len: r.len };
                        start.index.insert(segment, EntryId(r.entry), location);
                    }
                }
                let state = start.segments.entry(segment).or_insert_with(unknown_key_state);
                state.observe_lac((r.lac != LAC_NONE).then_some(r.lac));
                report.entries += 1;
            }
            RecordKind::Fence => {
                start.segments.entry(segment).or_insert_with(unknown_key_state).fenced = true;
            }
            RecordKind::Delete => {
                start.segments.entry(segment).or_insert_with(unknown_key_state).deleted = true;
            }
            RecordKind::Lac => {
                start.segments.entry(segment).or_insert_with(unknown_key_state).observe_lac(Some(r.entry));
            }
            RecordKind::Batch | RecordKind::Padding | RecordKind::RunHeader | RecordKind::RunFooter => {}
        }
    }
}

fn unknown_key_state() -> SegmentState {
    let mut state = SegmentState::new(Bytes::new());
    state.master_key = None;
    state
}

/// Overwrites `[from, to)` with zeroes and flushes.
fn zero_range(path: &std::path::Path, from: u64, to: u64, direct_io: bool) -> Result<(), OpenError> {
    let file = direct::open(path, direct_io).map_err(|source| OpenError::Io {
        op: IoOp::Open,
        file: path.to_path_buf(),
        source,
    })?;
    let mut zeros = AlignedBuf::with_capacity(1 << 20);
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeros.capacity());
        zeros.set_len(n);
        file.write_all_at(zeros.as_slice(), at).map_err(|source| OpenError::Io {
            op: IoOp::Write,
            file: path.to_path_buf(),
            source,
        })?;
        at += n as u64;
    }
    file.sync_data().map_err(|source| OpenError::Io { op: IoOp::Flush, file: path.to_path_buf(), source })
}
