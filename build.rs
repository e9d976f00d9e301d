//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and writes the
//! descriptor set that gRPC reflection and the proto3 JSON printer use.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations/postgres");
    println!("cargo:rerun-if-changed=migrations/sqlite");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(["hostscan/v1/scan.proto"], ["proto"])?;
    fs::write(out_dir.join("hostscan_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .codec_path("crate::api::codec::Codec")
        // Written by hand in src/pb/event.rs: an event sent to many watchers
        // is encoded once and its bytes shared.
        .extern_path(".hostscan.v1.ScanEvent", "crate::pb::ScanEvent")
        .compile_fds(fds)?;
    Ok(())
}
