//! Empty BPF programs on the hooks kotel could use for writev, attached only by benchmarks to
//! measure the floor: what the tracepoint mechanism costs before kotel does any work.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use crate::{preflight, LoadError};

#[allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    dead_code,
    unused_imports
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

/// Which pair of hooks to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorHooks {
    /// `raw_syscalls:sys_enter`/`sys_exit` through tp_btf, as kotel uses.
    RawSyscalls,
    /// `syscalls:sys_enter_writev`/`sys_exit_writev`.
    WritevSyscall,
    /// kotel's hooks, keeping the writev enter time per thread in task storage and taking the
    /// difference at exit: the least any syscall-latency tracer does.
    Timed,
}

/// Attached empty programs; dropping detaches them.
pub struct Floor {
    _links: Vec<Link>,
    _skel: skel::FloorSkel<'static>,
}

impl Floor {
    /// Loads the floor object and attaches the chosen pair.
    pub fn attach(hooks: FloorHooks) -> Result<Floor, LoadError> {
        preflight::check_privileges()?;
        preflight::raise_memlock();
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::FloorSkelBuilder::default()
            .open(storage)
            .map_err(LoadError::libbpf("opening the floor object"))?;
        let raw = hooks == FloorHooks::RawSyscalls;
        open.progs.floor_raw_enter.set_autoload(raw);
        open.progs.floor_raw_exit.set_autoload(raw);
        open.progs.floor_syscalls_enter.set_autoload(!raw);
        open.progs.floor_syscalls_exit.set_autoload(!raw);
        let skel = open
            .load()
            .map_err(LoadError::libbpf("loading the floor object"))?;
        let progs = if raw {
            [&skel.progs.floor_raw_enter, &skel.progs.floor_raw_exit]
        } else {
            [
                &skel.progs.floor_syscalls_enter,
                &skel.progs.floor_syscalls_exit,
            ]
        };
        let links = progs
            .into_iter()
            .map(|p| {
                p.attach()
                    .map_err(LoadError::libbpf("attaching a floor program"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Floor {
            _links: links,
            _skel: skel,
        })
    }
}
