//! Benchmarks run by `dlog bench`.
