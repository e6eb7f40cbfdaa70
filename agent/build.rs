//! Generates the agent protocol's Rust code from `proto/agent.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from crates.io (protoc-bin-vendored) unless the builder names one in PROTOC,
    // so a fresh machine needs no system protobuf compiler.
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/agent.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/agent.proto");
    Ok(())
}
