//! Writes a report page of synthetic data: `N` processes × 4 probes, a heatmap for each of the
//! 200 slowest series and a flame graph of 5 000 stacks. For measuring how the page copes at the
//! cardinality limit (see docs/report.md): `cargo run -p kotel-render --release --example
//! synthetic_report -- 2000 /tmp/report.html`.

use kotel_render::report::{
    report_html, Exemplar, Flame, HeatmapColumnData, HeatmapSeries, ReportData, Row,
};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let out = args.next().unwrap_or_else(|| "report.html".into());
    let start = 1_796_583_737_000_000_000u64;
    let probes = ["tcp_send", "runqueue", "offcpu", "writev"];
    let mut rows = Vec::new();
    let mut heatmaps = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for pid in 1000..1000 + n {
        for (k, probe) in probes.iter().enumerate() {
            let p99 = 1_000 + rand() % 50_000_000;
            rows.push(Row {
                pid,
                name: format!("worker-{pid}"),
                exe: String::new(),
                probe: (*probe).into(),
                state: if *probe == "offcpu" {
                    "uninterruptible".into()
                } else {
                    String::new()
                },
                kernel_thread: pid % 10 == 0,
                count: 1 + rand() % 100_000,
                p50_ns: p99 / 10,
                p99_ns: p99,
                max_ns: p99 * 2,
                bytes: (k == 0 || k == 3).then(|| rand() % 100_000_000),
            });
        }
    }
    let mut slowest: Vec<&Row> = rows.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.p99_ns));
    for r in slowest.into_iter().take(200) {
        heatmaps.push(HeatmapSeries {
            pid: r.pid,
            name: r.name.clone(),
            probe: r.probe.clone(),
            start_unix_nano: start,
            column_width_nanos: 1_000_000_000,
            scale: 3,
            columns: (0..60)
                .map(|_| HeatmapColumnData {
                    zero_count: 0,
                    offset: -160 + (rand() % 40) as i32,
                    counts: (0..60).map(|_| rand() % 50).collect(),
                })
                .collect(),
            exemplar: Some(Exemplar {
                time_unix_nano: start + 30_000_000_000,
                value_ns: r.max_ns,
                trace_id: "ab".repeat(16),
                span_id: "01".repeat(8),
            }),
            pictures: Vec::new(),
        });
    }
    let stacks = (0..5000)
        .map(|i| {
            (
                format!("main;loop{};io_wait{};schedule", i % 40, i % 997),
                1_000 + rand() % 1_000_000,
            )
        })
        .collect();
    let data = ReportData {
        title: format!("kotel report: synthetic, {n} processes × 4 probes"),
        generated_unix_nano: start + 60_000_000_000,
        live: false,
        refresh_seconds: 5,
        trace_url_template: "http://localhost:16686/trace/{trace_id}".into(),
        rows,
        heatmaps,
        flame: Some(Flame {
            title: "Off-CPU time by stack".into(),
            stacks,
            pictures: Vec::new(),
        }),
        notes: Vec::new(),
    };
    let html = report_html(&data);
    std::fs::write(&out, &html)?;
    println!("wrote {out}: {} bytes", html.len());
    Ok(())
}
