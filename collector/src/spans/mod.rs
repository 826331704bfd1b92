//! Which kernel events become spans: [`policy`] holds the one rule, shared by the kernel's
//! send decision (its thresholds become the probes' options) and by userspace, for the events
//! the kernel sends anyway (those of link targets).

pub mod policy;
