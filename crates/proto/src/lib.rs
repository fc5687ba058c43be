//! Generated protobuf types for berth, and nothing else.
//!
//! The `.proto` sources live in the workspace's `proto/` directory and are berth's own files:
//! same packages, message names, field names and numbers as Apache Mesos (`mesos.v1`), so the
//! wire format is compatible. Code is generated at build time with protox (no system `protoc`).
//!
//! The `grpc` feature (off by default) adds the `berth::v1` module: berth's own gRPC
//! API (`berth.v1.Validator`), with tonic server and client code. Without it this crate
//! depends on prost alone.
//!
//! Idiomatic types, validation and the Mesos JSON form live in `berth-resources`.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// The `mesos` packages.
pub mod mesos {
    /// `package mesos.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));
    }
}

/// The `berth` packages (feature `grpc`).
#[cfg(feature = "grpc")]
pub mod berth {
    /// `package berth.v1`: the validator service (`proto/berth/v1/validator.proto`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/berth.v1.rs"));
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file compiled into this
/// crate; used by descriptor-driven codecs (the stout-compatible Mesos JSON codec).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor_set.bin"));
