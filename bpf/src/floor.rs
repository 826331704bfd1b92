//! Empty BPF programs on the hooks kotel could use for writev, attached only by benchmarks to
//! measure the floor: what the tracepoint mechanism costs before kotel does any work.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
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
    /// The TCP probe's socket tracepoints, `tcp:tcp_sendmsg_locked` and
    /// `sock:sock_send_length`.
    TcpSocket,
    /// The same, with the least a timer of TCP sends does: the start in task storage at the
    /// first, the difference at the second.
    TcpTimed,
    /// The same timer with the start in a per-CPU slot instead of task storage: not a correct
    /// timer (a send that sleeps or migrates loses its start), only a measure of what task
    /// storage costs.
    TcpPerCpu,
}

impl FloorHooks {
    /// The programs this floor attaches.
    fn programs(self) -> [&'static str; 2] {
        match self {
            FloorHooks::RawSyscalls => ["floor_raw_enter", "floor_raw_exit"],
            FloorHooks::WritevSyscall => ["floor_syscalls_enter", "floor_syscalls_exit"],
            FloorHooks::Timed => ["floor_timed_enter", "floor_timed_exit"],
            FloorHooks::TcpSocket => ["floor_tcp_begin", "floor_tcp_end"],
            FloorHooks::TcpTimed => ["floor_tcp_timed_begin", "floor_tcp_timed_end"],
            FloorHooks::TcpPerCpu => ["floor_tcp_pcpu_begin", "floor_tcp_pcpu_end"],
        }
    }
}

/// Attached empty programs; dropping detaches them.
pub struct Floor {
    _links: Vec<Link>,
    _skel: skel::FloorSkel<'static>,
}

impl Floor {
    /// Loads the floor object and attaches the chosen pair. Fails with
    /// [`LoadError::Privileges`] without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and with
    /// [`LoadError::Libbpf`] when the kernel refuses to load or attach the pair.
    pub fn attach(hooks: FloorHooks) -> Result<Floor, LoadError> {
        preflight::check_privileges()?;
        preflight::raise_memlock();
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::FloorSkelBuilder::default()
            .open(storage)
            .map_err(LoadError::libbpf("opening the floor object"))?;
        let wanted = hooks.programs();
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            prog.set_autoload(wanted.contains(&name.as_str()));
        }
        let skel = open
            .load()
            .map_err(LoadError::libbpf("loading the floor object"))?;
        let mut links = Vec::new();
        for prog in skel.object().progs_mut() {
            if wanted.contains(&prog.name().to_string_lossy().as_ref()) {
                links.push(
                    prog.attach()
                        .map_err(LoadError::libbpf("attaching a floor program"))?,
                );
            }
        }
        Ok(Floor {
            _links: links,
            _skel: skel,
        })
    }
}
