//! The two commands: `kotel capture` (a capture loop over the kernel source) and `kotel run`
//! (the agent). Each builds what it needs and prints what it did, nothing else.

pub mod capture;
pub mod run;
