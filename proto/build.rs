//! Compiles the `.proto` contracts. `PROTOC` wins when set; otherwise the vendored protoc is used,
//! so a fresh machine needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/palisade/v1/common.proto",
        "proto/palisade/v1/catalog.proto",
        "proto/palisade/v1/admin.proto",
        "proto/palisade/v1/sync.proto",
        "proto/palisade/v1/raft.proto",
        "proto/palisade/v1/edge.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("palisade_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
