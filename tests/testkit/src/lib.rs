//! kotel-testkit: what kotel's tests share, in one place and out of the shipped crates. OTLP
//! requests to send, receive and compare ([`otlp`]), a small `/proc` tree whose processes the
//! linker can find ([`proc_tree`]), and test certificates ([`pki`]). Used by the collector's
//! and the renderer's tests, the fuzz seed generator and, behind the collector's `fuzzing`
//! feature, the fuzz entry points; never by a release build.
#![warn(missing_docs)]

pub mod otlp;
pub mod pki;
pub mod proc_tree;
