//! Realistic synthetic requests shared by the tests, benchmarks and the example.
#![allow(dead_code)]

use kotel_proto::render::v1::{
    ExemplarMarker, FoldedStack, Format, HeatmapColumn, RenderFlameRequest, RenderHeatmapRequest,
};

/// A tiny deterministic PRNG (xorshift64*), so data is the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A minute of `writev` latency for one process: a fast mode near 20µs, a slow mode near 4ms
/// that grows for a while (a disk stall), scale 3, 1 s columns, a few exemplars.
pub fn heatmap_request(columns: usize, buckets: usize) -> RenderHeatmapRequest {
    let scale = 3;
    let per_log2 = 8.0; // 2^scale buckets per doubling
    let offset = (-20.0f64 * per_log2) as i32; // ~1µs
    let mut rng = Rng::new(42);
    let start = 1_714_564_800_000_000_000u64;
    let mut cols = Vec::with_capacity(columns);
    for i in 0..columns {
        let stall = if (20..35).contains(&i) { 3.0 } else { 1.0 };
        let mut counts = vec![0u64; buckets];
        for (j, c) in counts.iter_mut().enumerate() {
            let log2 = (offset as f64 + j as f64) / per_log2;
            let fast = 400.0 * (-(log2 + 15.6).powi(2) / 0.8).exp();
            let slow = 30.0 * stall * (-(log2 + 8.0 - 0.1 * stall).powi(2) / 1.5).exp();
            let noise = 0.7 + 0.6 * rng.unit();
            *c = ((fast + slow) * noise) as u64;
        }
        cols.push(HeatmapColumn {
            zero_count: 0,
            offset,
            bucket_counts: counts,
        });
    }
    let markers = (0..5u8)
        .map(|k| ExemplarMarker {
            time_unix_nano: start + (8 + 11 * u64::from(k)) * 1_000_000_000 + 400_000_000,
            value_seconds: 0.004 * (1.0 + f64::from(k)),
            trace_id: (0..16u8).map(|b| (b * 17).wrapping_add(k)).collect(),
            span_id: (0..8).map(|b| b * 3 + k).collect(),
        })
        .collect();
    RenderHeatmapRequest {
        title: "postgres (pid 4242) writev".into(),
        labels: [
            ("host.name".to_string(), "db-1".to_string()),
            ("kotel.kind".to_string(), "writev".to_string()),
        ]
        .into_iter()
        .collect(),
        scale,
        start_unix_nano: start,
        column_width_nanos: 1_000_000_000,
        columns: cols,
        markers,
        formats: vec![Format::Svg as i32],
        width: 1000,
        height: 400,
        include_bytes: false,
    }
}

/// Off-CPU stacks of a small web server: epoll waits, disk reads, lock waits, `n` stacks.
pub fn flame_request(n: usize) -> RenderFlameRequest {
    let roots = [
        "nginx;ngx_worker_process_cycle;ngx_process_events_and_timers",
        "postgres;PostgresMain;exec_simple_query;PortalRun",
        "java;start_thread;JavaThread::run;Unsafe_Park",
    ];
    let mids = [
        "epoll_wait;entry_SYSCALL_64;do_syscall_64;__x64_sys_epoll_wait;do_epoll_wait",
        "pread64;entry_SYSCALL_64;do_syscall_64;ksys_pread64;vfs_read;ext4_file_read_iter;filemap_read;folio_wait_bit_common",
        "futex;entry_SYSCALL_64;do_syscall_64;__x64_sys_futex;do_futex;futex_wait;futex_wait_queue",
        "writev;entry_SYSCALL_64;do_syscall_64;do_writev;sock_write_iter;tcp_sendmsg;sk_stream_wait_memory",
        "fsync;entry_SYSCALL_64;do_syscall_64;do_fsync;ext4_sync_file;jbd2_log_wait_commit",
    ];
    let leaves = [
        "schedule_hrtimeout_range;schedule",
        "io_schedule;schedule",
        "schedule",
    ];
    let mut rng = Rng::new(7);
    let mut stacks = Vec::with_capacity(n);
    for i in 0..n {
        let r = roots[(rng.next() % 3) as usize];
        let m = mids[(rng.next() % 5) as usize];
        let l = leaves[(rng.next() % 3) as usize];
        let extra = if n > 50 {
            format!(";fn_{}", i % (n / 10).max(1))
        } else {
            String::new()
        };
        stacks.push(FoldedStack {
            stack: format!("{r}{extra};{m};{l}"),
            weight_nanos: 1_000_000 + rng.next() % 50_000_000,
        });
    }
    RenderFlameRequest {
        title: "Off-CPU time: nginx, postgres, java (60 s)".into(),
        stacks,
        formats: vec![Format::Svg as i32],
        include_bytes: false,
        width: 1200,
    }
}

/// Parses SVG text as XML and returns every element name, failing on ill-formed XML.
pub fn element_names(svg: &str) -> Vec<String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect()
}

/// Every attribute name on every element, e.g. to look for `on*` handlers.
pub fn attribute_names(svg: &str) -> Vec<String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("well-formed SVG");
    doc.descendants()
        .flat_map(|n| {
            n.attributes()
                .map(|a| a.name().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}
