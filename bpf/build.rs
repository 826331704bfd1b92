//! Compiles the BPF object with clang and generates its libbpf-rs skeleton into `OUT_DIR`.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC_DIR: &str = "src/bpf";
/// (source, skeleton file) of kotel's probes.
const PROBES: (&str, &str) = ("src/bpf/kotel.bpf.c", "kotel.skel.rs");
/// (source, skeleton file) of the empty programs benchmarks measure as the floor: built only
/// with the `bench` feature.
const FLOOR: (&str, &str) = ("src/bpf/floor.bpf.c", "floor.skel.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        other => panic!("kotel's vendored vmlinux.h is for x86_64; no BPF build for {other}"),
    };

    let bench = env::var_os("CARGO_FEATURE_BENCH").is_some();
    let objects = std::iter::once(PROBES).chain(bench.then_some(FLOOR));
    for (source, skeleton) in objects {
        SkeletonBuilder::new()
            .source(source)
            .clang_args([
                format!("-D__TARGET_ARCH_{target_arch}"),
                format!("-I{SRC_DIR}"),
                // v3: 32-bit jumps and atomic fetch-and-add (kernel 5.12+, older than any tp_btf
                // user of task storage).
                "-mcpu=v3".to_string(),
                "-Wall".to_string(),
                "-Werror".to_string(),
            ])
            .build_and_generate(out.join(skeleton))
            .unwrap_or_else(|e| {
                panic!(
                    "building {source} failed: is clang installed (apt-get install clang)? {e:#}"
                )
            });
    }

    println!("cargo:rerun-if-changed={SRC_DIR}");
}
