//! The client's I/O thread: one compio runtime that hosts a connection per bookie and drives
//! the sans-I/O cores (`SegmentWriter`, `Recovery`) hosted on it. Requests go out with
//! `Connection::submit` under a shell tag; one task per connection takes its completions in
//! batches and routes each to its core; one ticker task calls the cores' `on_tick` at their
//! deadlines (and sleeps while none has one). There is
//! no task per request. Metadata work runs on the tokio runtime and comes back as a command.
//!
//! Invariants:
//! - IO1: every request a core emits gets exactly one answer into that core: the bookie's, or
//!   a transport failure (also when its connection cannot be made, or when it dies).
//! - IO2: no core input is given while another input of the same core is being handled (no
//!   re-entrancy): failures found while sending are queued and given afterwards.
//! - IO3: an add's reply goes out in entry order, once, when the writer completes the entry.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ticker never sleeps less than this (a core whose deadline stays in the past must not
/// make it spin).
const TICK_MIN: Duration = Duration::from_micros(50);

use bytes::Bytes;
use dlog_protocol::{Request, Response};

use super::metadata_ops::BookieAddr;
use super::reader_queue::{ReadItem, ReaderQueue};
use super::{Command, Inner, MetadataRunner, Reply};
use crate::recovery::{RecoveredEnd, Recovery, RecoveryError, RecoveryOutput, RecoveryTag};
use crate::segment_reader::{self, SegmentReader};
use crate::segment_writer::{Output, SegmentWriter, Tag, TransportFailure, WriterError};
use crate::transport::{BookieClient, ClientConfig, Connection, TransportError};

/// A bookie on this thread: its id, its client, and requests waiting for a connection or
/// for room on it.
struct Link {
    id: String,
    client: Option<BookieClient>,
    waiting: VecDeque<(u64, Request)>,
    connecting: bool,
    /// The connection a completion task runs for.
    pumped: Option<Rc<Connection>>,
    /// Without an address: when the registry was last asked for one.
    looked_up: Option<Instant>,
    /// When its client's backoff was last ended because the registry showed it (at most once
    /// per `LOOKUP_EVERY`: a bookie registered but unreachable still backs off).
    nudged: Option<Instant>,
}

/// A bookie without an address is looked up in the registry again at most this often.
const LOOKUP_EVERY: Duration = Duration::from_secs(1);

/// The caller's end of one add.
type AddReply = Reply<Result<u64, WriterError>>;

struct WriterCore {
    writer: SegmentWriter<u32>,
    /// Adds not yet accepted by the writer (its window was full), in order.
    queued: VecDeque<(Bytes, AddReply)>,
    /// Replies of adds in the order they were made (IO3): accepted ones (`None`) wait for their
    /// entry's completion; refused ones carry their error and go out after every add before
    /// them.
    replies: VecDeque<(Option<WriterError>, AddReply)>,
    close: Option<Reply<Result<(), WriterError>>>,
    /// `close` was asked for; the writer is told once the `close_after` adds queued before it
    /// were accepted (or refused). Adds made after it are refused with `Closed`, in order.
    close_pending: bool,
    close_after: usize,
    /// The handle was dropped: the core goes once every add made is answered.
    abandoned: bool,
}

impl WriterCore {
    /// Sends the refusals at the front of the replies (nothing before them is pending).
    fn flush_refusals(&mut self) {
        while self.replies.front().is_some_and(|(error, _)| error.is_some()) {
            let (error, reply) = self.replies.pop_front().expect("front");
            reply.send(Err(error.expect("a refusal")));
        }
    }
}

struct RecoveryCore {
    recovery: Recovery<u32>,
    segment: u64,
    reply: Option<Reply<Result<RecoveredEnd, RecoveryError>>>,
}

struct ReaderCore {
    reader: SegmentReader<u32>,
    queue: Arc<ReaderQueue>,
}

impl Drop for ReaderCore {
    /// However the core goes (closed, removed, or the thread unwinding), its consumer gets
    /// `None` once it took what was delivered (CL2).
    fn drop(&mut self) {
        self.queue.close();
    }
}

enum Core {
    Writer(Box<WriterCore>),
    Recovery(Box<RecoveryCore>),
    Reader(Box<ReaderCore>),
    /// One request whose answer goes straight back to its caller (READ_LAC for a reader's
    /// start, DELETE_SEGMENT for truncation).
    Request(Reply<Result<Response, TransportError>>),
}

impl Core {
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Core::Writer(w) => w.writer.next_deadline(),
            Core::Recovery(r) => r.recovery.next_deadline(),
            Core::Reader(r) => r.reader.next_deadline(),
            // The transport's request timeout answers it.
            Core::Request(_) => None,
        }
    }
}

/// What the ticker task sleeps for, and how to wake it early.
#[derive(Default)]
struct Ticker {
    /// The deadline it sleeps until (`None`: it waits for a rearm).
    planned: Option<Instant>,
    waker: Option<std::task::Waker>,
    rearmed: bool,
}

pub(crate) struct State {
    config: ClientConfig,
    links: Vec<Link>,
    by_id: HashMap<String, u32>,
    cores: HashMap<u64, Core, foldhash::fast::RandomState>,
    /// The time of the input being handled: read once per batch of answers or commands.
    clock: Instant,
    ticker: Ticker,
    next_core: u64,
    /// Shell tag -> (core, the core's tag, the bookie).
    routes: HashMap<u64, (u64, u64, u32), foldhash::fast::RandomState>,
    next_tag: u64,
    /// Failures found while sending, given after the current input (IO2).
    deferred: VecDeque<(u64, u32, Result<Response, TransportError>)>,
    metadata: Arc<dyn MetadataRunner>,
    inner: Arc<Inner>,
}

type Shared = Rc<RefCell<State>>;

#[expect(clippy::disallowed_methods, reason = "the I/O thread is a shell and owns the clock")]
fn now() -> Instant {
    Instant::now()
}

/// Runs the I/O thread until the mailbox closes.
pub(crate) async fn run(inner: Arc<Inner>, config: ClientConfig, metadata: Arc<dyn MetadataRunner>) {
    let state = Rc::new(RefCell::new(State {
        config,
        links: Vec::new(),
        by_id: HashMap::new(),
        cores: HashMap::default(),
        clock: now(),
        ticker: Ticker::default(),
        next_core: 0,
        routes: HashMap::default(),
        next_tag: 0,
        deferred: VecDeque::new(),
        metadata,
        inner: inner.clone(),
    }));
    let ticker = compio::runtime::spawn(tick(state.clone()));
    while let Some(commands) = inner.mailbox.take().await {
        for command in commands {
            handle(&state, command);
        }
        settle(&state);
    }
    drop(ticker);
    let mut state = state.borrow_mut();
    for core in state.cores.values() {
        if let Core::Reader(r) = core {
            r.queue.close();
        }
    }
    for link in &state.links {
        if let Some(client) = &link.client {
            client.close();
        }
    }
    state.cores.clear();
}

fn handle(shared: &Shared, command: Command) {
    let mut state = shared.borrow_mut();
    state.clock = now();
    match command {
        Command::OpenWriter { segment, master_key, quorum, ensemble, settings, reply } => {
            let ensemble: Vec<u32> = ensemble.iter().map(|b| state.intern(b)).collect();
            match SegmentWriter::new(segment, master_key, quorum, ensemble, settings, now()) {
                Ok(writer) => {
                    let id = state.next_core;
                    state.next_core += 1;
                    let core = WriterCore {
                        writer,
                        queued: VecDeque::new(),
                        replies: VecDeque::new(),
                        close: None,
                        close_pending: false,
                        close_after: 0,
                        abandoned: false,
                    };
                    state.cores.insert(id, Core::Writer(Box::new(core)));
                    reply.send(Ok(id));
                }
                Err(e) => reply.send(Err(e.to_string())),
            }
        }
        Command::Add { core, payload, reply } => match state.cores.get_mut(&core) {
            Some(Core::Writer(w)) => {
                w.queued.push_back((payload, reply));
                state.drive(shared, core);
            }
            _ => reply.send(Err(WriterError::Closed)),
        },
        Command::Close { core, reply } => match state.cores.get_mut(&core) {
            Some(Core::Writer(w)) if w.close.is_none() => {
                // The writer is told once the adds queued before the close are accepted.
                w.close = Some(reply);
                w.close_pending = true;
                w.close_after = w.queued.len();
                state.drive(shared, core);
            }
            _ => reply.send(Err(WriterError::Closed)),
        },
        Command::Found { bookie } => {
            state.intern(&bookie);
        }
        Command::Request { bookie, request, reply } => {
            let index = state.intern(&bookie);
            let id = state.next_core;
            state.next_core += 1;
            state.cores.insert(id, Core::Request(reply));
            state.submit(shared, id, 0, index, request);
        }
        Command::Abandon { core } => {
            if let Some(Core::Writer(w)) = state.cores.get_mut(&core) {
                w.abandoned = true;
                state.drive(shared, core);
            }
        }
        Command::Recover { segment, master_key, quorum, ensembles, settings, reply } => {
            let ensembles = ensembles
                .into_iter()
                .map(|(first, bookies)| (first, bookies.iter().map(|b| state.intern(b)).collect()))
                .collect();
            match Recovery::new(segment, master_key, quorum, ensembles, settings) {
                Ok(mut recovery) => {
                    recovery.start(now());
                    let id = state.next_core;
                    state.next_core += 1;
                    let core = RecoveryCore { recovery, segment, reply: Some(reply) };
                    state.cores.insert(id, Core::Recovery(Box::new(core)));
                    state.drive(shared, id);
                }
                Err(e) => reply.send(Err(e)),
            }
        }
        Command::OpenReader { segment, quorum, ensembles, first_entry, end, settings, queue, reply } => {
            let ensembles = ensembles
                .into_iter()
                .map(|(first, bookies)| (first, bookies.iter().map(|b| state.intern(b)).collect()))
                .collect();
            match SegmentReader::new(segment, quorum, ensembles, first_entry, end, settings, now()) {
                Ok(reader) => {
                    let id = state.next_core;
                    state.next_core += 1;
                    state.cores.insert(id, Core::Reader(Box::new(ReaderCore { reader, queue })));
                    reply.send(Ok(id));
                    state.drive(shared, id);
                }
                Err(e) => reply.send(Err(e.to_string())),
            }
        }
        Command::Consumed { core, through } => {
            if let Some(Core::Reader(r)) = state.cores.get_mut(&core) {
                r.reader.consumed(through, now());
                state.drive(shared, core);
            }
        }
        Command::ReaderMetadata { core, ensembles, end } => {
            let ensembles = ensembles
                .into_iter()
                .map(|(first, bookies)| (first, bookies.iter().map(|b| state.intern(b)).collect()))
                .collect();
            if let Some(Core::Reader(r)) = state.cores.get_mut(&core) {
                if let Err(error) = r.reader.on_metadata(ensembles, end, now()) {
                    tracing::warn!(segment = r.reader.segment_id(), %error, "segment metadata refused by its reader");
                }
                state.drive(shared, core);
            }
        }
        Command::CloseReader { core } => {
            if let Some(Core::Reader(r)) = state.cores.remove(&core) {
                r.queue.close();
            }
        }
        Command::EnsembleChanged { core, result } => {
            let result = result.map(|bookies| bookies.iter().map(|b| state.intern(b)).collect());
            if let Some(Core::Writer(w)) = state.cores.get_mut(&core) {
                w.writer.on_ensemble_changed(result, now());
                state.drive(shared, core);
            }
        }
        Command::WriterClosed { core, result } => {
            if let Some(Core::Writer(w)) = state.cores.get_mut(&core) {
                w.writer.on_closed(result);
                state.drive(shared, core);
            }
        }
        Command::RecoveryReplaced { core, result } => {
            let result = result.map(|bookies| bookies.iter().map(|b| state.intern(b)).collect());
            let at = state.clock;
            if let Some(Core::Recovery(r)) = state.cores.get_mut(&core) {
                r.recovery.on_replaced(result, at);
                state.drive(shared, core);
            }
        }
        Command::RecoveryClosed { core, result } => {
            if let Some(Core::Recovery(r)) = state.cores.get_mut(&core) {
                r.recovery.on_closed(result.map_err(RecoveryError::Metadata));
                state.drive(shared, core);
            }
        }
    }
}

/// Gives the deferred failures (IO2), until none are left.
fn settle(shared: &Shared) {
    loop {
        let mut state = shared.borrow_mut();
        let Some((tag, bookie, result)) = state.deferred.pop_front() else { return };
        state.answer(shared, tag, bookie, result);
    }
}

/// Calls every core's `on_tick` when its deadline passed. Sleeps until the nearest deadline,
/// or, with none, until a core gets one (`State::rearm`): an idle client does not wake.
async fn tick(shared: Shared) {
    loop {
        let next = {
            let mut state = shared.borrow_mut();
            let next = state.cores.values().filter_map(Core::next_deadline).min();
            state.ticker.planned = next;
            next
        };
        let woken = std::future::poll_fn(|cx| {
            let mut state = shared.borrow_mut();
            if std::mem::take(&mut state.ticker.rearmed) {
                return std::task::Poll::Ready(());
            }
            state.ticker.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        });
        match next {
            Some(at) => {
                let _ = compio::time::timeout_at(at.max(now() + TICK_MIN), woken).await;
            }
            None => woken.await,
        }
        let at = now();
        let mut state = shared.borrow_mut();
        state.clock = at;
        let due: Vec<u64> = state
            .cores
            .iter()
            .filter(|(_, core)| core.next_deadline().is_some_and(|d| d <= at))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match state.cores.get_mut(&id) {
                Some(Core::Writer(w)) => w.writer.on_tick(at),
                Some(Core::Recovery(r)) => r.recovery.on_tick(at),
                Some(Core::Reader(r)) => r.reader.on_tick(at),
                Some(Core::Request(_)) | None => continue,
            }
            state.drive(&shared, id);
        }
        drop(state);
        settle(&shared);
    }
}

/// Takes one connection's completions in batches and routes them (IO1).
async fn pump(shared: Shared, bookie: u32, connection: Rc<Connection>) {
    loop {
        let batch = connection.completions().await;
        let mut state = shared.borrow_mut();
        state.clock = now();
        match batch {
            Ok(results) => {
                let mut touched: Vec<u64> = Vec::new();
                for (tag, result) in results {
                    if let Some(core) = state.give(tag, bookie, result)
                        && touched.last() != Some(&core)
                        && !touched.contains(&core)
                    {
                        touched.push(core);
                    }
                }
                for core in touched {
                    state.drive(&shared, core);
                }
                state.flush(&shared, bookie);
            }
            Err(_) => {
                if state.links[bookie as usize].pumped.as_ref().is_some_and(|c| Rc::ptr_eq(c, &connection)) {
                    state.links[bookie as usize].pumped = None;
                }
                // Requests that waited for room on this connection go to the next one.
                state.flush(&shared, bookie);
                drop(state);
                settle(&shared);
                return;
            }
        }
        drop(state);
        settle(&shared);
    }
}

impl State {
    fn intern(&mut self, bookie: &BookieAddr) -> u32 {
        if let Some(index) = self.by_id.get(&bookie.id) {
            let link = &mut self.links[*index as usize];
            // A bookie seen again at another address (restarted elsewhere), or with one when it
            // had none: the client follows it. Requests in flight on the old connection fail
            // and are answered as such.
            if let Some(addr) = bookie.addr
                && link.client.as_ref().is_none_or(|c| c.addr() != addr)
            {
                if let Some(old) = link.client.take() {
                    old.close();
                }
                link.pumped = None;
                link.client = Some(BookieClient::with_valid_config(addr, self.config.clone()));
            } else if let Some(client) = link.client.as_ref().filter(|_| bookie.addr.is_some())
                && link.nudged.is_none_or(|at| self.clock >= at + LOOKUP_EVERY)
            {
                // Just looked up in the registry at the same address: registered, so probably
                // back; a reader must not wait out a backoff grown while it was down.
                link.nudged = Some(self.clock);
                client.nudge();
            }
            return *index;
        }
        let index = self.links.len() as u32;
        let client =
            bookie.addr.map(|addr: SocketAddr| BookieClient::with_valid_config(addr, self.config.clone()));
        self.links.push(Link {
            id: bookie.id.clone(),
            client,
            waiting: VecDeque::new(),
            connecting: false,
            pumped: None,
            looked_up: None,
            nudged: None,
        });
        self.by_id.insert(bookie.id.clone(), index);
        index
    }

    /// Sends `request` for `core` (its tag `core_tag`) to `bookie`; a failure to send is
    /// deferred (IO2).
    fn submit(&mut self, shared: &Shared, core: u64, core_tag: u64, bookie: u32, request: Request) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.routes.insert(tag, (core, core_tag, bookie));
        let link = &mut self.links[bookie as usize];
        let Some(client) = &link.client else {
            // Not registered: no address to try (the writer replaces it; recovery retries). The
            // registry is asked again now and then: a bookie that comes back gets a client.
            let error =
                TransportError::Disconnected { reason: format!("bookie {} is not registered", link.id) };
            self.deferred.push_back((tag, bookie, Err(error)));
            if link.looked_up.is_none_or(|at| self.clock >= at + LOOKUP_EVERY) {
                link.looked_up = Some(self.clock);
                let inner = self.inner.clone();
                self.metadata.lookup(
                    link.id.clone(),
                    Box::new(move |found| {
                        if let Some(bookie) = found {
                            let _ = inner.mailbox.push(Command::Found { bookie });
                        }
                    }),
                );
            }
            return;
        };
        if link.waiting.is_empty()
            && let Some(connection) = client.live()
        {
            if link.pumped.as_ref().is_none_or(|c| !Rc::ptr_eq(c, &connection)) {
                link.pumped = Some(connection.clone());
                compio::runtime::spawn(pump(shared.clone(), bookie, connection.clone())).detach();
            }
            // Only this thread submits on the connection, so room checked is room had.
            if connection.in_flight() < self.config.in_flight_max {
                if let Err(error) = connection.submit(tag, request) {
                    self.deferred.push_back((tag, bookie, Err(error)));
                }
                return;
            }
        }
        self.wait(shared, bookie, tag, request);
    }

    fn wait(&mut self, shared: &Shared, bookie: u32, tag: u64, request: Request) {
        let link = &mut self.links[bookie as usize];
        link.waiting.push_back((tag, request));
        if link.connecting || link.client.as_ref().is_some_and(|c| c.live().is_some()) {
            return;
        }
        link.connecting = true;
        let client = link.client.clone().expect("waiting requests have a client");
        let shared = shared.clone();
        compio::runtime::spawn(async move {
            let result = client.connected().await;
            let mut state = shared.borrow_mut();
            state.links[bookie as usize].connecting = false;
            match result {
                Ok(_) => state.flush(&shared, bookie),
                Err(error) => {
                    let waiting = std::mem::take(&mut state.links[bookie as usize].waiting);
                    for (tag, _) in waiting {
                        state.deferred.push_back((tag, bookie, Err(error.clone())));
                    }
                }
            }
            drop(state);
            settle(&shared);
        })
        .detach();
    }

    /// Sends what waits for `bookie` while its connection has room.
    fn flush(&mut self, shared: &Shared, bookie: u32) {
        let link = &mut self.links[bookie as usize];
        if link.waiting.is_empty() {
            return;
        }
        let Some(connection) = link.client.as_ref().and_then(BookieClient::live) else {
            if !link.connecting
                && let Some((tag, request)) = link.waiting.pop_front()
            {
                // Reconnect: `wait` starts a connect.
                self.wait(shared, bookie, tag, request);
            }
            return;
        };
        if link.pumped.as_ref().is_none_or(|c| !Rc::ptr_eq(c, &connection)) {
            link.pumped = Some(connection.clone());
            compio::runtime::spawn(pump(shared.clone(), bookie, connection.clone())).detach();
        }
        // Only this thread submits on the connection, so room checked is room had: no
        // request is lost to a Busy refusal.
        while connection.in_flight() < self.config.in_flight_max
            && let Some((tag, request)) = link.waiting.pop_front()
        {
            if let Err(error) = connection.submit(tag, request) {
                self.deferred.push_back((tag, bookie, Err(error)));
            }
        }
    }

    /// Routes one answer to its core (IO1) and drives it.
    fn answer(&mut self, shared: &Shared, tag: u64, bookie: u32, result: Result<Response, TransportError>) {
        self.clock = now();
        if let Some(core) = self.give(tag, bookie, result) {
            self.drive(shared, core);
        }
    }

    /// Gives one answer to its core (IO1), without driving it; the core, if it is still there.
    fn give(&mut self, tag: u64, bookie: u32, result: Result<Response, TransportError>) -> Option<u64> {
        let (core, core_tag, to) = self.routes.remove(&tag)?;
        debug_assert_eq!(to, bookie);
        if matches!(self.cores.get(&core), Some(Core::Request(_))) {
            if let Some(Core::Request(reply)) = self.cores.remove(&core) {
                reply.send(result);
            }
            return None;
        }
        let result = result.map_err(|e| TransportFailure::from(&e));
        let now = self.clock;
        match self.cores.get_mut(&core) {
            Some(Core::Writer(w)) => w.writer.on_response(Tag::from_raw(core_tag), &bookie, result, now),
            Some(Core::Recovery(r)) => {
                r.recovery.on_response(RecoveryTag::from_raw(core_tag), &bookie, result, now)
            }
            Some(Core::Reader(r)) => {
                r.reader.on_response(segment_reader::Tag::from_raw(core_tag), result, now)
            }
            // Answered above.
            Some(Core::Request(_)) | None => return None,
        }
        Some(core)
    }

    /// Acts on everything `core` has to say.
    fn drive(&mut self, shared: &Shared, core: u64) {
        self.drive_core(shared, core);
        if let Some(deadline) = self.cores.get(&core).and_then(Core::next_deadline) {
            self.rearm(deadline);
        }
    }

    /// Wakes the ticker if `deadline` comes before what it sleeps for.
    fn rearm(&mut self, deadline: Instant) {
        if self.ticker.planned.is_none_or(|planned| deadline < planned) {
            self.ticker.planned = Some(deadline);
            self.ticker.rearmed = true;
            if let Some(waker) = self.ticker.waker.take() {
                waker.wake();
            }
        }
    }

    fn drive_core(&mut self, shared: &Shared, core: u64) {
        match self.cores.remove(&core) {
            Some(Core::Writer(mut w)) => {
                let done = self.drive_writer(shared, core, &mut w);
                if !done {
                    self.cores.insert(core, Core::Writer(w));
                }
            }
            Some(Core::Recovery(mut r)) => {
                let done = self.drive_recovery(shared, core, &mut r);
                if !done {
                    self.cores.insert(core, Core::Recovery(r));
                }
            }
            Some(Core::Reader(mut r)) => {
                self.drive_reader(shared, core, &mut r);
                self.cores.insert(core, Core::Reader(r));
            }
            Some(request @ Core::Request(_)) => {
                self.cores.insert(core, request);
            }
            None => {}
        }
    }

    /// True when the writer is done (closed or failed and drained).
    fn drive_writer(&mut self, shared: &Shared, core: u64, w: &mut WriterCore) -> bool {
        let at = self.clock;
        loop {
            // Feed queued adds while the window has room; a refused add answers in its place.
            // The close goes to the writer right after the adds made before it.
            loop {
                if w.close_pending && w.close_after == 0 {
                    w.close_pending = false;
                    if let Err(e) = w.writer.close(at)
                        && let Some(reply) = w.close.take()
                    {
                        reply.send(Err(e));
                    }
                }
                let Some((payload, _)) = w.queued.front() else { break };
                let answer = match w.writer.add(payload.clone(), at) {
                    Ok(_) => None,
                    Err(WriterError::WindowFull) => break,
                    Err(error) => Some(error),
                };
                let (_, reply) = w.queued.pop_front().expect("front");
                w.replies.push_back((answer, reply));
                w.close_after = w.close_after.saturating_sub(1);
            }
            w.flush_refusals();
            let Some(output) = w.writer.poll_output() else { break };
            match output {
                Output::Send { bookie_index, tag, request } => {
                    let bookie = match &request {
                        Request::Add { entry, .. } => w.writer.ensemble_of(*entry)[bookie_index],
                        _ => w.writer.ensemble()[bookie_index],
                    };
                    self.submit(shared, core, tag.raw(), bookie, request);
                }
                Output::Completed { entry, result } => {
                    if let Some((_, reply)) = w.replies.pop_front() {
                        reply.send(result.map(|()| entry));
                    }
                    w.flush_refusals();
                }
                Output::ChangeEnsemble { first_entry, replace } => {
                    let current: Vec<String> =
                        w.writer.ensemble().iter().map(|b| self.links[*b as usize].id.clone()).collect();
                    let segment = w.writer.segment_id();
                    let inner = self.inner.clone();
                    let replace: Vec<usize> = replace.iter().collect();
                    tracing::info!(segment, first_entry, ?replace, "ensemble change");
                    self.metadata.change_ensemble(
                        segment,
                        first_entry,
                        current,
                        replace,
                        Box::new(move |result| {
                            let _ = inner.mailbox.push(Command::EnsembleChanged { core, result });
                        }),
                    );
                }
                Output::CloseRequested { last_entry, length } => {
                    let segment = w.writer.segment_id();
                    let inner = self.inner.clone();
                    self.metadata.close_written(
                        segment,
                        last_entry,
                        length,
                        Box::new(move |result| {
                            let _ = inner.mailbox.push(Command::WriterClosed { core, result });
                        }),
                    );
                }
                Output::Closed(result) => {
                    if let Some(reply) = w.close.take() {
                        reply.send(result);
                    }
                    // Closed: every add made was answered; later ones find no core (`Closed`).
                    return true;
                }
                Output::BookieFailed { bookie_index, entry } => {
                    let bookie = w.writer.ensemble_of(entry).get(bookie_index).copied();
                    let id = bookie.map(|b| self.links[b as usize].id.as_str()).unwrap_or("?");
                    tracing::debug!(
                        segment = w.writer.segment_id(),
                        entry,
                        bookie = id,
                        "bookie failed an add"
                    );
                }
                Output::LastAddConfirmed(_) => {}
            }
        }
        // An abandoned writer goes once every add made and its close were answered.
        w.abandoned && w.close.is_none() && !w.close_pending && w.queued.is_empty() && w.replies.is_empty()
    }

    fn drive_reader(&mut self, shared: &Shared, core: u64, r: &mut ReaderCore) {
        while let Some(output) = r.reader.poll_output() {
            match output {
                segment_reader::Output::Send { bookie, tag, request } => {
                    self.submit(shared, core, tag.raw(), bookie, request)
                }
                // A queue is closed only when its core goes: these pushes cannot be refused.
                segment_reader::Output::Entry { entry, payload } => {
                    let _ = r.queue.push(ReadItem::Entry(entry, payload));
                }
                segment_reader::Output::End => {
                    let _ = r.queue.push(ReadItem::End);
                }
                segment_reader::Output::Failed(error) => {
                    let _ = r.queue.push(ReadItem::Failed(error));
                }
                segment_reader::Output::BadReplica { entry, bookie } => {
                    let id = &self.links[bookie as usize].id;
                    tracing::warn!(segment = r.reader.segment_id(), entry, bookie = %id, "bad replica");
                }
                segment_reader::Output::LastAddConfirmed(_) => {}
            }
        }
    }

    fn drive_recovery(&mut self, shared: &Shared, core: u64, r: &mut RecoveryCore) -> bool {
        while let Some(output) = r.recovery.poll_output() {
            match output {
                RecoveryOutput::Send { bookie, tag, request } => {
                    self.submit(shared, core, tag.raw(), bookie, request)
                }
                RecoveryOutput::CloseRequested(end) => {
                    let inner = self.inner.clone();
                    let change = r.recovery.ensemble_change(&end).map(|ensembles| {
                        ensembles
                            .into_iter()
                            .map(|(first, bookies)| {
                                (first, bookies.iter().map(|b| self.links[*b as usize].id.clone()).collect())
                            })
                            .collect()
                    });
                    self.metadata.close_recovered(
                        r.segment,
                        end,
                        change,
                        Box::new(move |result| {
                            let _ = inner.mailbox.push(Command::RecoveryClosed { core, result });
                        }),
                    );
                }
                RecoveryOutput::ReplaceBookies { replace } => {
                    let current: Vec<String> = r
                        .recovery
                        .last_add_ensemble()
                        .iter()
                        .map(|b| self.links[*b as usize].id.clone())
                        .collect();
                    let inner = self.inner.clone();
                    tracing::info!(segment = r.segment, ?replace, "replacing bookies for recovery adds");
                    self.metadata.choose_replacements(
                        r.segment,
                        current,
                        replace.iter().collect(),
                        Box::new(move |result| {
                            let _ = inner.mailbox.push(Command::RecoveryReplaced { core, result });
                        }),
                    );
                }
                RecoveryOutput::Done(result) => {
                    if let Some(reply) = r.reply.take() {
                        reply.send(result);
                    }
                    return true;
                }
            }
        }
        false
    }
}
