//! Compiles the BPF object with clang and generates its libbpf-rs skeleton into `OUT_DIR`.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC_DIR: &str = "src/bpf";
const MAIN: &str = "src/bpf/kotel.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        other => panic!("kotel's vendored vmlinux.h is for x86_64; no BPF build for {other}"),
    };

    SkeletonBuilder::new()
        .source(MAIN)
        .clang_args([
            format!("-D__TARGET_ARCH_{target_arch}"),
            format!("-I{SRC_DIR}"),
            "-Wall".to_string(),
            "-Werror".to_string(),
        ])
        .build_and_generate(out.join("kotel.skel.rs"))
        .expect("building the BPF object failed: is clang installed (apt-get install clang)?");

    println!("cargo:rerun-if-changed={SRC_DIR}");
}
