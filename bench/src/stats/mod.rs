//! Measurement logic, kept free of I/O so it can be unit-tested: rates,
//! loss accounting by sequence number, latency percentiles and the
//! resident-memory reading of a process.

pub mod latency;
pub mod loss;
pub mod rate;
pub mod rss;
