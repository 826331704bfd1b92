//! Generates the prost messages and tonic client/server for `kotel/render/v1/render.proto`
//! into `OUT_DIR`. Needs `protoc` (Debian: `protobuf-compiler`, installed by scripts/setup.sh).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=kotel/render/v1/render.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps iterate in key order, so renders of the same request are byte-identical.
        .btree_map(".")
        .compile_protos(&["kotel/render/v1/render.proto"], &["."])
        .map_err(|e| {
            format!(
                "compiling render.proto failed (is protoc installed? run scripts/setup.sh): {e}"
            )
        })?;
    Ok(())
}
