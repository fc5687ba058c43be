//! The library half of `berth-validator`: the `berth.v1.Validator` gRPC service behind
//! `berth-validator serve`, shared by the binary, its tests and the benchmarks.
//!
//! The validation itself lives in `berth-offers` (pure, synchronous); this crate only adapts
//! it to gRPC and owns the listening socket and the tokio runtime.

pub mod serve;
