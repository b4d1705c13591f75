//! `Net`: the simulated network between clients and bookies: delay, loss (a connection reset),
//! duplication, reordering, partitions and swizzle-clogging.
//!
//! The model: a client has one connection to each bookie. A lost message resets that
//! connection (its requests in flight fail `Disconnected`, as TCP would report it); a message
//! across a partition vanishes silently (its request times out); a clogged bookie's messages
//! wait until it is unclogged. With `fifo`, a connection delivers in order (TCP); without,
//! in any order (stronger than TCP: the cores must not depend on order).
//!
//! Invariant N1: while `faults_on` is false (after the fault window), every message is
//! delivered, once, after an ordinary delay.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::FaultMix;

/// What happens to one message.
pub(crate) enum Fate {
    /// Delivered at these times (more than one: duplicated).
    Deliver(Vec<Duration>),
    /// Lost: the connection resets at this time.
    Reset(Duration),
    /// Lost silently (a partition): the request times out.
    Vanish,
}

/// Fault counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost with a connection reset.
    pub resets: u64,
    /// Messages lost to a partition.
    pub partitioned: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Messages held by a clog.
    pub clogged: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Clogs made.
    pub clogs: u64,
}

impl NetStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &NetStats) {
        let NetStats { delivered, resets, partitioned, duplicated, clogged, partitions, clogs } = *other;
        self.delivered += delivered;
        self.resets += resets;
        self.partitioned += partitioned;
        self.duplicated += duplicated;
        self.clogged += clogged;
        self.partitions += partitions;
        self.clogs += clogs;
    }
}

/// The network (N1).
#[derive(Default)]
pub(crate) struct Net {
    /// (client, bookie) links cut, until when.
    cut: BTreeMap<(usize, usize), Duration>,
    /// Bookies clogged, until when.
    clogged: BTreeMap<usize, Duration>,
    /// FIFO: the last delivery time per (client, bookie, towards the bookie).
    last: BTreeMap<(usize, usize, bool), Duration>,
    pub(crate) stats: NetStats,
}

impl Net {
    /// The fate of a message between `client` and `bookie` sent at `now`.
    #[allow(clippy::too_many_arguments, reason = "one decision, all of its inputs")]
    pub(crate) fn transmit(
        &mut self,
        rng: &mut ChaCha8Rng,
        faults: &FaultMix,
        faults_on: bool,
        now: Duration,
        client: usize,
        bookie: usize,
        to_bookie: bool,
    ) -> Fate {
        if faults_on {
            if self.cut.get(&(client, bookie)).is_some_and(|until| *until > now) {
                self.stats.partitioned += 1;
                return Fate::Vanish;
            }
            if faults.p_drop > 0.0 && rng.random_bool(faults.p_drop) {
                self.stats.resets += 1;
                return Fate::Reset(now + Duration::from_micros(rng.random_range(100..50_000)));
            }
        }
        let mut delay = Duration::from_nanos(
            rng.random_range(faults.net_delay_min.as_nanos() as u64..=faults.net_delay_max.as_nanos() as u64),
        );
        if faults_on && rng.random_bool(0.02) {
            delay *= rng.random_range(2..20);
        }
        let mut at = now + delay;
        if let Some(until) = self.clogged.get(&bookie).filter(|until| **until > now) {
            self.stats.clogged += 1;
            at = at.max(*until + delay);
        }
        if faults.fifo || !faults_on {
            let last = self.last.entry((client, bookie, to_bookie)).or_default();
            at = at.max(*last + Duration::from_nanos(1));
            *last = at;
        }
        self.stats.delivered += 1;
        let mut times = vec![at];
        if faults_on && to_bookie && faults.p_duplicate > 0.0 && rng.random_bool(faults.p_duplicate) {
            self.stats.duplicated += 1;
            times.push(at + Duration::from_micros(rng.random_range(1..20_000)));
        }
        Fate::Deliver(times)
    }

    /// Cuts the links between `clients` and `bookies` until `until`.
    pub(crate) fn partition(&mut self, clients: &[usize], bookies: &[usize], until: Duration) {
        self.stats.partitions += 1;
        for c in clients {
            for b in bookies {
                self.cut.insert((*c, *b), until);
            }
        }
    }

    /// Clogs `bookie` until `until`.
    pub(crate) fn clog(&mut self, bookie: usize, until: Duration) {
        self.stats.clogs += 1;
        self.clogged.insert(bookie, until);
    }

    /// Lifts every partition and clog (N1).
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
        self.clogged.clear();
    }
}
