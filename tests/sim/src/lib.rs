//! dlog-sim: a deterministic simulation of dlog's sans-I/O cores.
//!
//! One seed is one run (`run::run`): the real `ShardCore` of several bookies (journal only),
//! the real `SegmentWriter`, `Recovery` and `SegmentReader`, driven on one thread by a seeded
//! scheduler over a simulated disk (`disk`), network (`net`) and metadata store (`meta`), with
//! the fault mix the seed picks (`scenario`). Checkers watch during the run (`bookie`,
//! `history`) and after it (`auditor`); a seed that breaks one fails with its violations and
//! replays exactly (`cargo run -p dlog-sim -- --seed N`). docs/TESTING.md says what it proves.
//!
//! Invariant: nothing here reads the real clock or a thread's timing (world.rs, WD1), except
//! the one `Instant` cores' virtual time is added to, and the real journal replay at a
//! restart, whose result depends on the bytes alone.

mod auditor;
mod bookie;
mod disk;
mod history;
mod meta;
mod net;
mod queue;
mod reader;
mod recoverer;
pub mod run;
pub mod scenario;
mod world;
mod writer;

pub use net::NetStats;
pub use run::{Report, run, run_mutated};
pub use scenario::{FaultMix, Mutation, Scenario};
pub use world::Stats;
