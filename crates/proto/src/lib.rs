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
    /// `package berth.v1`: the validator service (`proto/berth/v1/validator.proto`) and the
    /// isolator service (`proto/berth/v1/isolator.proto`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/berth.v1.rs"));
    }
}

/// The `csi` packages (feature `csi`).
#[cfg(feature = "csi")]
pub mod csi {
    /// `package csi.v1`: the CSI Identity and Node services (`proto/csi/v1/csi.proto`, spec
    /// v1.12.0 names and numbers). Requests that carry `secrets` have a `Debug` that prints
    /// only the secret keys, never their values.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));

        struct RedactedSecrets<'a>(&'a ::std::collections::HashMap<String, String>);

        impl ::core::fmt::Debug for RedactedSecrets<'_> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut keys: Vec<&String> = self.0.keys().collect();
                keys.sort();
                f.debug_map()
                    .entries(keys.into_iter().map(|k| (k, "<redacted>")))
                    .finish()
            }
        }

        impl ::core::fmt::Debug for NodeStageVolumeRequest {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct("NodeStageVolumeRequest")
                    .field("volume_id", &self.volume_id)
                    .field("publish_context", &self.publish_context)
                    .field("staging_target_path", &self.staging_target_path)
                    .field("volume_capability", &self.volume_capability)
                    .field("secrets", &RedactedSecrets(&self.secrets))
                    .field("volume_context", &self.volume_context)
                    .finish()
            }
        }

        impl ::core::fmt::Debug for NodePublishVolumeRequest {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct("NodePublishVolumeRequest")
                    .field("volume_id", &self.volume_id)
                    .field("publish_context", &self.publish_context)
                    .field("staging_target_path", &self.staging_target_path)
                    .field("target_path", &self.target_path)
                    .field("volume_capability", &self.volume_capability)
                    .field("readonly", &self.readonly)
                    .field("secrets", &RedactedSecrets(&self.secrets))
                    .field("volume_context", &self.volume_context)
                    .finish()
            }
        }

        impl ::core::fmt::Debug for NodeExpandVolumeRequest {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct("NodeExpandVolumeRequest")
                    .field("volume_id", &self.volume_id)
                    .field("volume_path", &self.volume_path)
                    .field("capacity_range", &self.capacity_range)
                    .field("staging_target_path", &self.staging_target_path)
                    .field("volume_capability", &self.volume_capability)
                    .field("secrets", &RedactedSecrets(&self.secrets))
                    .finish()
            }
        }
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file compiled into this
/// crate; used by descriptor-driven codecs (the stout-compatible Mesos JSON codec).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor_set.bin"));
