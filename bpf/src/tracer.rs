//! The safe loader: opens the skeleton, writes the options into `.rodata`, loads, attaches the
//! programs the kernel supports, and reads the ring buffer, histograms and drop counters.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::mem::{offset_of, MaybeUninit};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};

use crate::abi::{self, RawHistogram, RawHistogramKey, EVENT_SIZE};
use crate::buckets::BucketTable;
use crate::libbpf_log;
use crate::preflight::{self, LeftOut};
use crate::probe::{Hook, HookPlan, LIFECYCLE_EXEC, LIFECYCLE_EXIT, SCHED_WITH_EXIT};
use crate::skel::{KotelSkel, KotelSkelBuilder};
use crate::stack_maps::{
    self, StackGenerations, StackRef, DEFAULT_STACK_STORAGE, MAX_STACK_HOLD, SWITCH_OUT_GENERATION,
};
use crate::{LoadError, Probe, ProbeSet};

/// What to capture and how. Every field is applied before the BPF object loads.
#[derive(Debug, Clone)]
pub struct TracerConfig {
    /// Probes to run; those the kernel cannot run are left out with a warning.
    pub probes: ProbeSet,
    /// Events at or above this duration go through the ring buffer; all are counted in the
    /// histograms.
    pub min_latency_ns: u64,
    /// Off-CPU intervals in an interruptible wait (idle sleeps) go through the ring buffer
    /// only at or above this duration, and never when `None`; a value below `min_latency_ns`
    /// counts as `min_latency_ns`. Link targets send every interval whatever its length.
    pub min_sleep_latency_ns: Option<u64>,
    /// Only these processes (thread group ids) when non-empty.
    pub pids: Vec<u32>,
    /// Only tasks in this cgroup v2 or below it, when set.
    pub cgroup: Option<CgroupFilter>,
    /// OTLP exponential histogram scale of the in-kernel histograms, in
    /// [`MIN_SCALE`](crate::buckets::MIN_SCALE)..=[`MAX_SCALE`](crate::buckets::MAX_SCALE)
    /// ([`Tracer::start`] refuses others).
    pub scale: i32,
    /// Ring buffer size in bytes: a power of two, at least 4096 ([`Tracer::start`] refuses
    /// others).
    pub ring_buffer_bytes: u32,
    /// Take kernel and user stacks of the events that go to userspace: off-CPU intervals, and
    /// `writev` and TCP sends at or above the threshold (at the call's end, in the caller).
    pub capture_stacks: bool,
    /// Distinct stacks each of the two stack-map generations holds (a new one begins at every
    /// [`poll`](Tracer::poll)); about 1 KiB of kernel memory each, twice. 1..=65536.
    pub stack_storage_size: u32,
    /// Whether kernel threads' scheduler intervals reach userspace as events. Off: they are
    /// still counted in the histograms, but send nothing through the ring buffer.
    pub kernel_threads: bool,
    /// Kernel BTF to use for CO-RE, and to find `tp_btf` tracepoints.
    pub btf_path: PathBuf,
    /// Where classic tracepoints are looked up (tracefs mounts), in order.
    pub tracefs: Vec<PathBuf>,
    /// Send exec/exit records of traced processes through the ring buffer.
    pub lifecycle: bool,
    /// How many (process, probe) histograms the kernel keeps at once; a slot is recycled
    /// once its process has exited and its final counts have been read ([`Tracer::recycle`]).
    /// An event that finds no free slot is counted in its probe's overflow histogram
    /// ([`OVERFLOW_PID`]) and in [`DropCounts::hist_full`]. Each takes about 5 KiB of kernel
    /// memory. At least 1.
    pub max_histograms: u32,
}

impl Default for TracerConfig {
    fn default() -> Self {
        Self {
            probes: ProbeSet::defaults(),
            min_latency_ns: 1_000_000,
            min_sleep_latency_ns: Some(1_000_000),
            pids: Vec::new(),
            cgroup: None,
            scale: 3,
            ring_buffer_bytes: 8 << 20,
            capture_stacks: true,
            stack_storage_size: DEFAULT_STACK_STORAGE,
            kernel_threads: false,
            btf_path: PathBuf::from(preflight::SYSFS_BTF),
            tracefs: preflight::TRACEFS_ROOTS.iter().map(PathBuf::from).collect(),
            max_histograms: 1024,
            lifecycle: false,
        }
    }
}

/// A cgroup v2 directory to trace, with everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupFilter {
    /// The cgroup's id (the inode number of its directory).
    pub id: u64,
    /// Its depth below the cgroup v2 root (the root is 0).
    pub level: u32,
}

/// One in-kernel histogram as read from the map.
#[derive(Debug, Clone, Copy)]
pub struct HistogramSnapshot {
    /// The owner process (thread group id), or [`OVERFLOW_PID`] for a series' overflow
    /// histogram.
    pub pid: u32,
    /// What it measures: a `KOTEL_KIND_*` histogram series ([`abi::kind`], below
    /// [`abi::kind::HIST_KINDS`]).
    pub kind: u8,
    /// The kernel's counters, durations in nanoseconds; bucket `i` is OTLP index
    /// `offset + i` of the tracer's [`BucketTable`].
    pub raw: RawHistogram,
}

/// Everything the BPF side could not record, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Ring-buffer reservation failures, per `KOTEL_KIND_*`.
    pub ringbuf: [u64; abi::kind::COUNT],
    /// Events of processes that found no free histogram slot: counted in the overflow
    /// histogram ([`OVERFLOW_PID`]) instead of their own.
    pub hist_full: u64,
    /// Events missed because task storage could not be allocated.
    pub task_storage: u64,
    /// Exec/exit records that did not fit in the ring buffer.
    pub lifecycle: u64,
    /// Events whose stacks could not be stored (a different stack in the bucket, or the map
    /// full), were held too long ([`MAX_STACK_HOLD`](crate::MAX_STACK_HOLD)), or were read
    /// after their generation's map was emptied.
    pub stack: u64,
    /// Events of threads still running after their process's exit retired its histograms:
    /// counted in the overflow histogram ([`OVERFLOW_PID`]).
    pub hist_exited: u64,
    /// Switch-ins the `sched_switch` tracepoint never delivered, closed at `sched_exit_tp`
    /// instead (their intervals timed from there): nothing lost.
    pub switch_late: u64,
    /// Off-CPU intervals lost because their switch-in was never delivered and the kernel has no
    /// `sched_exit_tp` to close them.
    pub switch_unseen: u64,
    /// Run-queue waits lost because the wakeup that began them, or the switch-in that ended
    /// them, never reached kotel.
    pub wait_unseen: u64,
    /// Ring-buffer records of the wrong size (never expected).
    pub malformed: u64,
}

impl DropCounts {
    /// Events that did not reach userspace through the ring buffer.
    pub fn lost_events(&self) -> u64 {
        self.ringbuf.iter().sum()
    }
}

/// A loaded and attached set of kotel probes. Dropping it detaches every program.
pub struct Tracer {
    // Field order is drop order: stop reading, detach, then close the object.
    ringbuf: RingBuffer<'static>,
    batch: Rc<RefCell<Vec<u8>>>,
    malformed: Rc<Cell<u64>>,
    links: Vec<(&'static str, Link)>,
    skel: KotelSkel<'static>,
    table: BucketTable,
    plan: HookPlan,
    fallbacks: Vec<String>,
    left_out: LeftOut,
    /// Retired slots taken from the kernel, waiting out [`RETIRE_GRACE`] before their final
    /// read.
    cooling: VecDeque<([u8; 4], Instant)>,
    recycled: u64,
    capacity: u32,
    stacks: StackGenerations,
}

/// The pid of the kernel's per-kind overflow histograms: events of processes that found no
/// free histogram slot (counted in [`DropCounts::hist_full`]) or ran after their process's
/// exit ([`DropCounts::hist_exited`]). No traced process has pid 0.
pub const OVERFLOW_PID: u32 = 0;

/// How long a retired slot waits between leaving the kernel's retired list and its final read.
///
/// A slot is retired only once every thread of its process has passed do_exit's `live`
/// countdown, so none of them can be inside a traced syscall any more: what can still be
/// running against the slot is a scheduler-path program (run-queue or off-CPU at a switch or
/// wakeup, with preemption disabled) that checked its cached slot just before the retire, and
/// that finishes its few atomic adds within microseconds. The grace is a thousand times that.
pub const RETIRE_GRACE: Duration = Duration::from_millis(2);

impl Tracer {
    /// Checks privileges and BTF, loads the programs configured by `cfg` and attaches them.
    /// A probe the kernel lacks a tracepoint for, or whose program the verifier refuses, is
    /// left out (see [`left_out`](Tracer::left_out)) or moved to a fallback hook set (see
    /// [`fallbacks`](Tracer::fallbacks)) rather than failing the start.
    ///
    /// Fails with [`LoadError::Privileges`] without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN),
    /// [`LoadError::NoBtf`] when `cfg.btf_path` does not exist, [`LoadError::Config`] for a
    /// scale, ring buffer size or histogram capacity out of range,
    /// [`LoadError::NothingToAttach`] when no wanted probe can run, [`LoadError::Attach`] when
    /// a program does not attach, and [`LoadError::Libbpf`] when libbpf fails to open, load or
    /// fill the object.
    pub fn start(cfg: &TracerConfig) -> Result<Tracer, LoadError> {
        preflight::check_privileges()?;
        preflight::check_btf(&cfg.btf_path)?;
        preflight::raise_memlock();
        let table = BucketTable::new(cfg.scale).map_err(|e| LoadError::Config(e.to_string()))?;
        let ring = cfg.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(LoadError::Config(format!(
                "ring buffer size {ring} must be a power of two of at least 4096 bytes"
            )));
        }
        if cfg.max_histograms == 0 {
            return Err(LoadError::Config(
                "the histogram capacity must be at least 1".into(),
            ));
        }
        if !(1..=abi::stack_id::MAX_ENTRIES).contains(&cfg.stack_storage_size) {
            return Err(LoadError::Config(format!(
                "the stack storage size {} must be between 1 and {}",
                cfg.stack_storage_size,
                abi::stack_id::MAX_ENTRIES
            )));
        }
        let kernel = preflight::KernelHooks::read(&cfg.btf_path, cfg.tracefs.clone())?;
        let (plan, left_out, mut fallbacks) = preflight::plan_hooks(&kernel, cfg.probes);
        if plan.probes().is_empty() {
            return Err(LoadError::NothingToAttach {
                missing: left_out
                    .iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }

        let (skel, plan, left_out) =
            Self::load_what_loads(cfg, &kernel, plan, left_out, &mut fallbacks, &table)?;
        for pid in &cfg.pids {
            skel.maps
                .pid_filter
                .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
                .map_err(LoadError::libbpf("filling the pid filter"))?;
        }

        let mut links = Vec::new();
        for hook in hooks_to_attach(&plan, cfg.lifecycle) {
            let prog = skel
                .object()
                .progs_mut()
                .find(|p| p.name() == hook.program)
                .ok_or_else(|| {
                    LoadError::Config(format!("the BPF object has no program {}", hook.program))
                })?;
            let link = prog.attach().map_err(|source| LoadError::Attach {
                tracepoint: hook.tracepoint,
                source,
            })?;
            // Newest first: dropping the vector detaches in reverse attach order.
            links.insert(0, (hook.program, link));
        }

        let batch = Rc::new(RefCell::new(Vec::with_capacity(64 * 1024)));
        let malformed = Rc::new(Cell::new(0u64));
        let mut rb = RingBufferBuilder::new();
        {
            let batch = Rc::clone(&batch);
            let malformed = Rc::clone(&malformed);
            rb.add(&skel.maps.events, move |data: &[u8]| {
                if data.len() == EVENT_SIZE {
                    batch.borrow_mut().extend_from_slice(data);
                } else {
                    malformed.set(malformed.get() + 1);
                }
                0
            })
            .map_err(LoadError::libbpf("opening the ring buffer"))?;
        }
        let ringbuf = rb
            .build()
            .map_err(LoadError::libbpf("opening the ring buffer"))?;

        // Off-CPU stacks taken at the switch-out must outlive their wait; every other stack is
        // taken when its event is sent. Maps no program writes need no new generations.
        let generation = if !takes_stacks(cfg, &plan) {
            Duration::MAX
        } else if plan.probes().contains(Probe::Offcpu)
            && !plan.uses(Probe::Offcpu, SCHED_WITH_EXIT)
        {
            SWITCH_OUT_GENERATION
        } else {
            Duration::ZERO
        };
        Ok(Tracer {
            ringbuf,
            batch,
            malformed,
            links,
            skel,
            table,
            plan,
            fallbacks,
            left_out,
            cooling: VecDeque::new(),
            recycled: 0,
            capacity: cfg.max_histograms,
            stacks: StackGenerations::new(generation),
        })
    }

    /// Loads the probes in `plan`. A kernel may refuse one probe's program (a BTF field it
    /// reads is absent, or the verifier of an older kernel rejects it); then each probe is tried
    /// alone, on its hook set and then on each later set the kernel has, and runs on the first
    /// that loads (said in `fallbacks`); a probe none of whose sets loads is left out with the
    /// kernel's reason. Fails only when no probe loads.
    fn load_what_loads(
        cfg: &TracerConfig,
        kernel: &preflight::KernelHooks,
        plan: HookPlan,
        mut left_out: LeftOut,
        fallbacks: &mut Vec<String>,
        table: &BucketTable,
    ) -> Result<(KotelSkel<'static>, HookPlan, LeftOut), LoadError> {
        let (all, log) = match libbpf_log::captured(|| Self::load(cfg, &plan, table)) {
            (Ok(skel), _) => return Ok((skel, plan, left_out)),
            (Err(e), log) => (e, log),
        };
        let mut kept = HookPlan::default();
        for (probe, chosen) in plan.iter() {
            let sets = probe.spec().hook_sets;
            let from = sets.iter().position(|s| s.name == chosen.name).unwrap_or(0);
            let mut refused: Option<(&str, String)> = None;
            for set in sets[from..].iter().filter(|s| kernel.missing(s).is_empty()) {
                let mut alone = HookPlan::default();
                alone.choose(probe, set);
                match libbpf_log::captured(|| Self::load(cfg, &alone, table)) {
                    (Ok(_), _) => {
                        kept.choose(probe, set);
                        if let Some((name, why)) = &refused {
                            fallbacks.push(format!(
                                "probe {probe} runs on {} (fallback): this kernel refused its \
                                 program on {name}: {why}",
                                set.name
                            ));
                        }
                        break;
                    }
                    (Err(e), log) => {
                        let why = libbpf_log::why_refused(&log).unwrap_or_else(|| e.to_string());
                        refused.get_or_insert((set.name, why));
                    }
                }
            }
            if kept.set_of(probe).is_none() {
                let why = refused.map_or_else(|| all.to_string(), |(_, why)| why);
                left_out.push((
                    probe,
                    format!("probe {probe} left out: this kernel refused its program: {why}"),
                ));
            }
        }
        if kept.probes().is_empty() {
            eprint!("{log}");
            return Err(all);
        }
        let skel = Self::load(cfg, &kept, table)?;
        Ok((skel, kept, left_out))
    }

    /// Opens the BPF object, configures it for `plan` and loads it: only the programs of the
    /// plan's hooks (and kotel's lifecycle hooks) load.
    fn load(
        cfg: &TracerConfig,
        plan: &HookPlan,
        table: &BucketTable,
    ) -> Result<KotelSkel<'static>, LoadError> {
        let active = plan.probes();
        let ring = cfg.ring_buffer_bytes;
        // The skeleton borrows its object storage for its whole life; the tracer lives as long
        // as it likes, so the (pointer-sized) storage is leaked once per tracer.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut builder = KotelSkelBuilder::default();
        if cfg.btf_path.as_path() != std::path::Path::new(preflight::SYSFS_BTF) {
            builder
                .obj_builder
                .btf_custom_path(&cfg.btf_path)
                .map_err(LoadError::libbpf("setting the BTF path"))?;
        }
        let mut open = builder
            .open(storage)
            .map_err(LoadError::libbpf("opening the BPF object"))?;

        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has a .rodata section");
        ro.enable_writev = active.contains(Probe::Writev);
        ro.enable_tcp_send = active.contains(Probe::TcpSend);
        ro.enable_runqueue = active.contains(Probe::Runqueue);
        ro.enable_offcpu = active.contains(Probe::Offcpu);
        ro.writev_on_raw = plan.uses(Probe::Writev, "raw_syscalls");
        ro.tcp_send_on_raw = plan.uses(Probe::TcpSend, "raw_syscalls");
        ro.stacks_at_switch_in = plan.uses(Probe::Offcpu, SCHED_WITH_EXIT);
        ro.capture_stacks = cfg.capture_stacks;
        ro.send_kernel_threads = cfg.kernel_threads;
        ro.enable_lifecycle = cfg.lifecycle;
        ro.min_latency_ns = cfg.min_latency_ns;
        ro.min_sleep_latency_ns = cfg
            .min_sleep_latency_ns
            .map_or(u64::MAX, |ns| ns.max(cfg.min_latency_ns));
        ro.max_stack_hold_ns = MAX_STACK_HOLD.as_nanos() as u64;
        ro.self_pid = std::process::id();
        ro.filter_pids = !cfg.pids.is_empty();
        ro.filter_cgroup_id = cfg.cgroup.map_or(0, |c| c.id);
        ro.filter_cgroup_level = cfg.cgroup.map_or(0, |c| c.level);
        ro.nr_write = libc::SYS_write;
        ro.nr_writev = libc::SYS_writev;
        ro.nr_sendto = libc::SYS_sendto;
        ro.nr_sendmsg = libc::SYS_sendmsg;
        ro.n_buckets = table.bounds().len() as u32;
        ro.bucket_bounds[..table.bounds().len()].copy_from_slice(table.bounds());
        ro.wakeup_bytes = u64::from(ring / 4);
        ro.hist_capacity = cfg.max_histograms;

        open.maps
            .events
            .set_max_entries(ring)
            .map_err(LoadError::libbpf("sizing the ring buffer"))?;
        open.maps
            .hists
            .set_max_entries(cfg.max_histograms + abi::kind::HIST_KINDS as u32)
            .map_err(LoadError::libbpf("sizing the histogram maps"))?;
        for map in [
            &mut open.maps.hist_slots,
            &mut open.maps.free_slots,
            &mut open.maps.retired_slots,
        ] {
            map.set_max_entries(cfg.max_histograms)
                .map_err(LoadError::libbpf("sizing the histogram maps"))?;
        }
        let stack_entries = if takes_stacks(cfg, plan) {
            cfg.stack_storage_size
        } else {
            1
        };
        for map in [&mut open.maps.stacks_even, &mut open.maps.stacks_odd] {
            map.set_max_entries(stack_entries)
                .map_err(LoadError::libbpf("sizing the stack maps"))?;
        }
        let wanted: Vec<&str> = hooks_to_attach(plan, cfg.lifecycle)
            .iter()
            .map(|h| h.program)
            .collect();
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            prog.set_autoload(wanted.contains(&name.as_str()));
        }

        open.load()
            .map_err(LoadError::libbpf("loading the BPF programs"))
    }

    /// Recycles the histogram slots of exited processes and returns their final counts, each
    /// exactly once: slots taken from the kernel's retired list at least [`RETIRE_GRACE`] ago
    /// are read, zeroed and handed back to the kernel's free list; those retired since are
    /// taken now and read on a later call. Call it often (every drain): a process's slots are
    /// reusable only after it. The caller owns the final counts from here on; a live
    /// [`histograms`](Tracer::histograms) read never returns a retired slot.
    ///
    /// Fails with [`LoadError::Libbpf`] when a map operation on the slot queues or the
    /// histogram array fails (never expected on a loaded object).
    pub fn recycle(&mut self) -> Result<Vec<HistogramSnapshot>, LoadError> {
        let now = Instant::now();
        let maps = &self.skel.maps;
        let mut ready = Vec::new();
        while let Some(&(slot, at)) = self.cooling.front() {
            if now.duration_since(at) < RETIRE_GRACE {
                break;
            }
            ready.push(slot);
            self.cooling.pop_front();
        }
        while let Some(v) = maps
            .retired_slots
            .lookup_and_delete(&[])
            .map_err(LoadError::libbpf("taking a retired histogram slot"))?
        {
            if let Ok(slot) = <[u8; 4]>::try_from(v.as_slice()) {
                self.cooling.push_back((slot, now));
            }
        }
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let gen = offset_of!(RawHistogram, gen);
        let mut value = vec![0u8; std::mem::size_of::<RawHistogram>()];
        let mut zero = vec![0u8; value.len()];
        let mut finals = Vec::with_capacity(ready.len());
        for key in ready {
            if !maps
                .hists
                .lookup_into(&key, &mut value, MapFlags::ANY)
                .map_err(LoadError::libbpf("reading a retired histogram"))?
            {
                continue;
            }
            if let Some(raw) = abi::histogram_from_bytes(&value) {
                finals.push(HistogramSnapshot {
                    pid: raw.pid,
                    kind: raw.kind as u8,
                    raw,
                });
            }
            // Zero everything but the generation, which only the kernel moves.
            zero[gen..gen + 4].copy_from_slice(&value[gen..gen + 4]);
            maps.hists
                .update(&key, &zero, MapFlags::ANY)
                .map_err(LoadError::libbpf("zeroing a retired histogram"))?;
            maps.free_slots
                .update(&[], &key, MapFlags::ANY)
                .map_err(LoadError::libbpf("returning a histogram slot"))?;
            self.recycled += 1;
        }
        Ok(finals)
    }

    /// Like [`recycle`](Tracer::recycle), but returns the final counts of every slot retired
    /// so far, waiting out the grace for the latest ones. For the last read, after
    /// [`detach`](Tracer::detach). Fails as [`recycle`](Tracer::recycle) does.
    pub fn recycle_all(&mut self) -> Result<Vec<HistogramSnapshot>, LoadError> {
        let mut finals = self.recycle()?;
        if !self.cooling.is_empty() {
            std::thread::sleep(RETIRE_GRACE);
            finals.extend(self.recycle()?);
        }
        Ok(finals)
    }

    /// Histogram slots recycled since the start (final counts read, slot reusable).
    pub fn recycled_histograms(&self) -> u64 {
        self.recycled
    }

    /// Detaches every program and waits until the ones already running on other CPUs have
    /// returned: nothing enters the ring buffer or the histograms afterwards, while both stay
    /// readable for a final drain that misses nothing.
    pub fn detach(&mut self) {
        if self.links.is_empty() {
            return;
        }
        self.links.clear();
        wait_for_running_programs();
    }

    /// Makes process `pid` a link target: from now on every event of it reaches userspace,
    /// whatever its length, so sums over application spans are complete. Fails with
    /// [`LoadError::Libbpf`] when the link-target map is full (4096 processes).
    pub fn add_link_target(&mut self, pid: u32) -> Result<(), LoadError> {
        self.skel
            .maps
            .link_pids
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(LoadError::libbpf("adding a link target"))?;
        self.bump_link_gen();
        Ok(())
    }

    /// Stops treating `pid` as a link target (it exited). Unknown pids are fine.
    pub fn remove_link_target(&mut self, pid: u32) {
        if self.skel.maps.link_pids.delete(&pid.to_ne_bytes()).is_ok() {
            self.bump_link_gen();
        }
    }

    fn bump_link_gen(&mut self) {
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            // The .bss is mmapped: the programs see this write.
            bss.link_gen = bss.link_gen.wrapping_add(1).max(1);
        }
    }

    /// Probes that were loaded and attached.
    pub fn active_probes(&self) -> ProbeSet {
        self.plan.probes()
    }

    /// The hook set each running probe got.
    pub fn hook_plan(&self) -> &HookPlan {
        &self.plan
    }

    /// One line for each probe that runs on a fallback hook set, naming what the kernel lacks.
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Each wanted probe that is not running, with why: the kernel lacks its tracepoint, or
    /// refused its program.
    pub fn left_out(&self) -> &[(Probe, String)] {
        &self.left_out
    }

    /// Names of the attached programs.
    pub fn attached_programs(&self) -> Vec<&'static str> {
        self.links.iter().rev().map(|(n, _)| *n).collect()
    }

    /// The bucket table loaded into the kernel.
    pub fn bucket_table(&self) -> &BucketTable {
        &self.table
    }

    /// Waits up to `timeout` for a wakeup (the kernel wakes only when the buffer fills up),
    /// then drains every record, calling `on_record` with each [`EVENT_SIZE`]-byte record
    /// (records of another size are counted in [`DropCounts::malformed`]). Returns the number
    /// drained. An interrupted wait (EINTR) is not an error; any other failure of the ring
    /// buffer is [`LoadError::Libbpf`].
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_record: impl FnMut(&[u8]),
    ) -> Result<usize, LoadError> {
        self.next_stack_generation()?;
        let ret = self.ringbuf.poll_raw(timeout);
        if ret < 0 && ret != -libc::EINTR {
            return Err(LoadError::Libbpf {
                step: "reading the ring buffer",
                source: libbpf_rs::Error::from_raw_os_error(-ret),
            });
        }
        // poll only consumes after a wakeup; records submitted without one wait here.
        let ret = self.ringbuf.consume_raw();
        if ret < 0 && ret != -libc::EINTR {
            return Err(LoadError::Libbpf {
                step: "reading the ring buffer",
                source: libbpf_rs::Error::from_raw_os_error(-ret),
            });
        }
        let mut batch = self.batch.borrow_mut();
        let n = batch.len() / EVENT_SIZE;
        for record in batch.chunks_exact(EVENT_SIZE) {
            on_record(record);
        }
        batch.clear();
        Ok(n)
    }

    /// Reads every in-kernel histogram: the slot map says which (pid, kind) owns which slot.
    /// Events that found no slot of their own come as one histogram per series with pid
    /// [`OVERFLOW_PID`]. Fails with [`LoadError::Libbpf`] when a map cannot be read.
    pub fn histograms(&self) -> Result<Vec<HistogramSnapshot>, LoadError> {
        let slots = &self.skel.maps.hist_slots;
        let mut out = Vec::new();
        for key in slots.keys() {
            let Some(slot) = slots
                .lookup(&key, MapFlags::ANY)
                .map_err(LoadError::libbpf("reading a histogram slot"))?
            else {
                continue; // removed between listing and reading
            };
            let (Some(k), Ok(slot)) = (key_from_bytes(&key), <[u8; 4]>::try_from(slot.as_slice()))
            else {
                continue;
            };
            let value = self
                .skel
                .maps
                .hists
                .lookup(&slot, MapFlags::ANY)
                .map_err(LoadError::libbpf("reading a histogram"))?;
            if let Some(raw) = value.as_deref().and_then(abi::histogram_from_bytes) {
                out.push(HistogramSnapshot {
                    pid: k.pid,
                    kind: k.kind as u8,
                    raw,
                });
            }
        }
        // The overflow histograms: events that found no slot of their own.
        for kind in 0..abi::kind::HIST_KINDS as u32 {
            let key = (self.capacity + kind).to_ne_bytes();
            let value = self
                .skel
                .maps
                .hists
                .lookup(&key, MapFlags::ANY)
                .map_err(LoadError::libbpf("reading an overflow histogram"))?;
            if let Some(raw) = value.as_deref().and_then(abi::histogram_from_bytes) {
                if raw.zero_count > 0 || raw.buckets.iter().any(|&c| c > 0) {
                    out.push(HistogramSnapshot {
                        pid: OVERFLOW_PID,
                        kind: kind as u8,
                        raw,
                    });
                }
            }
        }
        out.sort_by_key(|h| (h.pid, h.kind));
        Ok(out)
    }

    /// Sums the per-CPU drop counters. Fails with [`LoadError::Libbpf`] when the counter map
    /// cannot be read.
    pub fn drops(&self) -> Result<DropCounts, LoadError> {
        let map = &self.skel.maps.drops;
        let slot = |idx: u32| -> Result<u64, LoadError> {
            let per_cpu = map
                .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(LoadError::libbpf("reading drop counters"))?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|v| {
                    v.get(..8)
                        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                })
                .sum())
        };
        let mut d = DropCounts::default();
        for (k, n) in d.ringbuf.iter_mut().enumerate() {
            *n = slot(k as u32)?;
        }
        d.hist_full = slot(abi::drop::HIST_FULL)?;
        d.task_storage = slot(abi::drop::TASK_STORAGE)?;
        d.lifecycle = slot(abi::drop::LIFECYCLE)?;
        d.stack = slot(abi::drop::STACK)? + self.stacks.expired();
        d.hist_exited = slot(abi::drop::HIST_EXITED)?;
        d.switch_late = slot(abi::drop::SWITCH_LATE)?;
        d.switch_unseen = slot(abi::drop::SWITCH_UNSEEN)?;
        d.wait_unseen = slot(abi::drop::WAIT_UNSEEN)?;
        d.malformed = self.malformed.get();
        Ok(d)
    }

    /// Instruction pointers of an event's kernel and user stacks, innermost first; `None`
    /// for a missing or unknown id, and for both when their generation's map has been emptied
    /// since (counted once in [`DropCounts::stack`]). Read a drain's stacks before the next
    /// [`poll`](Tracer::poll).
    pub fn event_stacks(
        &self,
        kernel: Option<i32>,
        user: Option<i32>,
    ) -> (Option<Vec<u64>>, Option<Vec<u64>>) {
        let (kernel, user) = (kernel.and_then(StackRef::of), user.and_then(StackRef::of));
        // Both were taken in one generation.
        if [kernel, user]
            .iter()
            .flatten()
            .any(|r| !self.stacks.readable(*r))
        {
            self.stacks.count_expired();
            return (None, None);
        }
        let read = |r: StackRef| {
            let maps = &self.skel.maps;
            let map = if r.odd() {
                &maps.stacks_odd
            } else {
                &maps.stacks_even
            };
            stack_maps::read(map, r.bucket)
        };
        (kernel.and_then(read), user.and_then(read))
    }

    /// Begins a new stack generation when the current one has lasted long enough: the map of
    /// the one before last is emptied and the kernel moves to it.
    fn next_stack_generation(&mut self) -> Result<(), LoadError> {
        let maps = &self.skel.maps;
        let next = self
            .stacks
            .next(Instant::now(), &maps.stacks_even, &maps.stacks_odd)
            .map_err(LoadError::libbpf("emptying a stack map"))?;
        if let Some(epoch) = next {
            let bss = self
                .skel
                .maps
                .bss_data
                .as_deref_mut()
                .expect("the BPF object has a .bss section");
            // The .bss is mmapped: the programs see this write.
            bss.stack_epoch = epoch;
        }
        Ok(())
    }
}

/// Whether any probe of `plan` takes stacks: off-CPU intervals, slow `writev` and TCP sends,
/// unless stacks are off.
fn takes_stacks(cfg: &TracerConfig, plan: &HookPlan) -> bool {
    let active = plan.probes();
    cfg.capture_stacks
        && [Probe::Offcpu, Probe::Writev, Probe::TcpSend]
            .iter()
            .any(|p| active.contains(*p))
}

/// Every hook to load and attach, in attach order: the plan's (closing hooks before opening
/// ones), then kotel's own: exec when lifecycle records are wanted, and always the exit, which
/// retires a process's histogram slots.
fn hooks_to_attach(plan: &HookPlan, lifecycle: bool) -> Vec<Hook> {
    let mut hooks = plan.hooks();
    if lifecycle {
        hooks.push(LIFECYCLE_EXEC);
    }
    hooks.push(LIFECYCLE_EXIT);
    hooks
}

fn key_from_bytes(bytes: &[u8]) -> Option<RawHistogramKey> {
    if bytes.len() != std::mem::size_of::<RawHistogramKey>() {
        return None;
    }
    Some(RawHistogramKey {
        pid: u32::from_ne_bytes(bytes[0..4].try_into().ok()?),
        kind: u32::from_ne_bytes(bytes[4..8].try_into().ok()?),
    })
}

/// `membarrier(2)` command that returns after an RCU grace period (`synchronize_rcu`).
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// Waits until every BPF program that was running when its link went away has returned.
/// Unregistering a tracepoint's program does not wait for the instances already running on
/// other CPUs; they run with preemption disabled, an RCU read-side section, so one RCU grace
/// period covers them, which `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for. Where it is
/// unavailable (a `nohz_full` kernel refuses it), [`RETIRE_GRACE`] is waited out instead: a
/// program finishes its few map updates in microseconds.
fn wait_for_running_programs() {
    // SAFETY: membarrier takes no pointers; MEMBARRIER_CMD_GLOBAL with flags 0 only blocks.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(RETIRE_GRACE);
    }
}
