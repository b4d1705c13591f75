//! The journal: the shard's group-committed write-ahead log, in the formats and with the
//! recovery rules of docs/format.md.
//!
//! Owns: record framing (`record`), batch layout (`batch`), file headers (`file_header`), the
//! directory layout and checkpoint file (`files`), file preparation and reclaim (`preparer`),
//! replay and damage classification (`replay`). The group commit policy itself lives in the
//! shard core, which decides when a batch closes.
//!
//! Invariants (cited by the code):
//! - J1: an entry is acknowledged only after the flush covering its record completed.
//! - J2: every journal write starts and ends on a sector boundary.
//! - J3: a record is valid only in the file use (epoch) that wrote it.

pub mod batch;
pub mod file_header;
pub mod files;
pub mod preparer;
pub mod record;
pub mod replay;
