//! Fuzz target: OTLP request bodies (protobuf and JSON, plain or gzip; traces, metrics, logs)
//! through the receiver's decoding, the peer lookup and linking to what is forwarded (see
//! `kotel_collector::fuzzing::otlp_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kotel_collector::fuzzing::otlp_request(data));
