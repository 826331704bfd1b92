//! Fuzz target: ring-buffer records and histogram snapshots through kotel's decoder to spans,
//! JSON lines and OTLP metrics (see `kotel_collector::fuzzing::ring_buffer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kotel_collector::fuzzing::ring_buffer(data));
