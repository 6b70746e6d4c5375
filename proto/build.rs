fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so building needs nothing installed.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto");
    // our codec: undecodable messages are the sender's fault (INVALID_ARGUMENT)
    tonic_prost_build::configure().codec_path("crate::codec::Codec").compile_protos(
        &[
            "proto/oni/v1/learner.proto",
            "proto/oni/v1/annotator.proto",
            "proto/oni/v1/env_hub.proto",
            "proto/oni/v1/inference.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
