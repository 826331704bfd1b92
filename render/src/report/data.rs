//! What the report page shows, as the JSON embedded in it. Times are Unix nanoseconds,
//! latencies nanoseconds; the page formats them.

use serde::Serialize;

/// Everything on one report page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportData {
    /// The page's heading, e.g. `kotel report: myhost`.
    pub title: String,
    /// When the data was taken (Unix ns).
    pub generated_unix_nano: u64,
    /// Whether the page is still being rewritten: it then reloads itself every
    /// `refresh_seconds`, keeping the reader's sort, filter and zoom (in the URL's fragment).
    pub live: bool,
    /// Seconds between reloads of a live page.
    pub refresh_seconds: u64,
    /// Exemplar links: `{trace_id}` and `{span_id}` are replaced; empty: the trace id is shown.
    pub trace_url_template: String,
    /// One row per process, probe and (off-CPU) state, as the terminal summary prints them.
    pub rows: Vec<Row>,
    /// Heatmap data of the series that have it (the slowest, bounded).
    pub heatmaps: Vec<HeatmapSeries>,
    /// The off-CPU flame graph's stacks, when any were captured.
    pub flame: Option<Flame>,
    /// Lines the reader should know (what was left out and why).
    pub notes: Vec<String>,
}

/// One row of the summary table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Process id.
    pub pid: u32,
    /// The kernel's name of the process (`comm`).
    pub name: String,
    /// The executable's name when it says more than `name` (empty otherwise).
    pub exe: String,
    /// The probe (`tcp_send`, `runqueue`, `offcpu`, `writev`).
    pub probe: String,
    /// Off-CPU state (`interruptible`, `uninterruptible`); empty for other probes.
    pub state: String,
    /// Whether the process is a kernel thread (hidden by default).
    pub kernel_thread: bool,
    /// Events counted.
    pub count: u64,
    /// Median, as the terminal summary computes it (upper bound of its bucket).
    pub p50_ns: u64,
    /// 99th percentile, likewise.
    pub p99_ns: u64,
    /// Largest event.
    pub max_ns: u64,
    /// Bytes moved (writev, tcp_send); `None` for probes that move none.
    pub bytes: Option<u64>,
}

/// A heatmap's columns: what the series gained in each column's time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeatmapSeries {
    /// Process id.
    pub pid: u32,
    /// The process's name.
    pub name: String,
    /// The probe.
    pub probe: String,
    /// Start of the first column (Unix ns).
    pub start_unix_nano: u64,
    /// Width of a column (ns).
    pub column_width_nanos: u64,
    /// OTLP exponential scale of the bucket indices.
    pub scale: i32,
    /// The columns, oldest first.
    pub columns: Vec<HeatmapColumnData>,
    /// The slowest event with a span, when there is one.
    pub exemplar: Option<Exemplar>,
    /// The rendered picture files (relative URLs), SVG first, when drawn.
    pub pictures: Vec<String>,
}

/// One column of a heatmap: an exponential histogram's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeatmapColumnData {
    /// Events of zero length.
    pub zero_count: u64,
    /// Bucket index of `counts[0]`.
    pub offset: i32,
    /// Counts per bucket.
    pub counts: Vec<u64>,
}

/// An exemplar: the slowest event of its series that became a span.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Exemplar {
    /// When it ended (Unix ns).
    pub time_unix_nano: u64,
    /// How long it took (ns).
    pub value_ns: u64,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
}

/// The off-CPU flame graph's input.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flame {
    /// What it shows.
    pub title: String,
    /// Folded stacks (root first, `;`-joined) with their weight in nanoseconds.
    pub stacks: Vec<(String, u64)>,
    /// The rendered picture files (relative URLs), when drawn.
    pub pictures: Vec<String>,
}
