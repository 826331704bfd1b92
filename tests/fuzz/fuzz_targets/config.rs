//! Fuzz target: a config file and `OTEL_*` variables through `kotel run`'s and
//! `kotel config check`'s parsing and validation; header values must never show (see
//! `kotel_collector::fuzzing::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kotel_collector::fuzzing::config(data));
