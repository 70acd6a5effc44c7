//! Measurement logic, kept free of I/O so it can be unit-tested: rates,
//! loss accounting by sequence number, latency percentiles, and the CPU
//! time and resident memory of processes and the disk use of a directory.

pub mod cpu;
pub mod disk;
pub mod latency;
pub mod loss;
pub mod rate;
pub mod rss;
