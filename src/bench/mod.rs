//! Benchmarks run by `dlog bench`: each measures dlog against a baseline measured in the same
//! run, on the same directory, and reports ratios (this machine is shared and noisy, so absolute
//! numbers from different runs do not compare).

pub mod baseline;
pub mod compaction;
pub mod journal;
pub mod load;
pub mod metadata;
mod metadata_workload;
pub mod reads;
pub mod stats;
