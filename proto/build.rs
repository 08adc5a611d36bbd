//! Generates the Rust types from `proto/` with the `protoc` shipped by protoc-bin-vendored, so a
//! fresh machine needs no system protobuf install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let files = [
        "proto/neurodata/chain/v1/tx.proto",
        "proto/neurodata/chain/v1/governance.proto",
        "proto/neurodata/chain/v1/state.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    prost_build::Config::new()
        .protoc_executable(protoc)
        .btree_map(["."])
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
