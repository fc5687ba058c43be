//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates prost code.
//! The encoded file descriptor set is written next to the code so that the Mesos JSON codec
//! in `berth-resources` can walk the schema.
//!
//! With the `grpc` feature, `proto/berth/v1/` is compiled too, into prost messages and tonic
//! server and client code; its Mesos types refer to the `mesos.v1` module generated here, and
//! the descriptor set stays the Mesos one (the feature changes nothing for the codec).
//!
//! With the `csi` feature, `proto/csi/v1/csi.proto` (our own file, CSI spec v1.12.0 names and
//! numbers) is compiled into prost messages and a tonic client; `csi-server` adds the server
//! traits (used by test plugins only).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a target directory shared
    // by two checkouts of the same sources reuses the compiled script.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [root.join("mesos/v1/mesos.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("berth_descriptor_set.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(fds)?;
    #[cfg(feature = "grpc")]
    grpc(&root)?;
    #[cfg(feature = "csi")]
    csi(&root)?;
    Ok(())
}

/// Generates `csi.v1.rs`: the CSI Identity and Node messages and the tonic client (plus the
/// server traits with the `csi-server` feature, for test plugins). The request messages that
/// carry `secrets` get no derived `Debug`: `src/lib.rs` implements a redacting one.
#[cfg(feature = "csi")]
fn csi(root: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let files = [root.join("csi/v1/csi.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // The descriptor set keeps `google/protobuf/wrappers.proto`: prost-build resolves
    // `BoolValue` through it and maps it to `Option<bool>` (nothing is generated for it).
    let fds = protox::compile(&files, [root])?;
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(cfg!(feature = "csi-server"))
        .build_client(true)
        .skip_debug([
            ".csi.v1.NodeStageVolumeRequest",
            ".csi.v1.NodePublishVolumeRequest",
            ".csi.v1.NodeExpandVolumeRequest",
        ])
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

/// Generates `berth.v1.rs`: messages and the tonic `Validator` server and client.
#[cfg(feature = "grpc")]
fn grpc(root: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        root.join("berth/v1/validator.proto"),
        root.join("berth/v1/isolator.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // The Mesos files stay in the set so prost can inspect the Mesos messages our fields
    // embed; `extern_path` makes it refer to the `mesos.v1` module generated above instead of
    // generating it again.
    let fds = protox::compile(&files, [root])?;
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".mesos.v1", "crate::mesos::v1")
        // `mesos.v1.Offer.Operation` is ~6.5 KiB inline; tonic moves the request through
        // several futures, and those copies alone made a Validate call ~15 % slower.
        .boxed(".berth.v1.ValidateRequest.operation")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
