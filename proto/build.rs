//! Generates the Rust types (prost) and, with the `grpc` feature, the gateway's gRPC services
//! (tonic) from `proto/` with the `protoc` shipped by protoc-bin-vendored, so a fresh machine
//! needs no system protobuf install.
//! Also writes the file descriptor set the gateway serves through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let files = [
        "proto/neurodata/chain/v1/tx.proto",
        "proto/neurodata/chain/v1/governance.proto",
        "proto/neurodata/chain/v1/state.proto",
        "proto/neurodata/chain/v1/market.proto",
        "proto/neurodata/chain/v1/training.proto",
        "proto/neurodata/chain/v1/models.proto",
        "proto/neurodata/gateway/v1/gateway.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc).btree_map(["."]);
    // A card inline would make `PublishModel`, hence `Message`, many times its other variants.
    config.boxed(".neurodata.chain.v1.PublishModel.card");
    // Service stubs only with the `grpc` feature; the messages are generated either way.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .file_descriptor_set_path(out.join("neurodata_descriptor.bin"))
        .compile_protos_with_config(config, &files, &["proto"])?;
    Ok(())
}
