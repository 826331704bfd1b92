//! Latency heatmaps in the manner of Brendan Gregg's: x = time columns, y = latency on a log
//! axis, colour = how many events fell in a cell (whole events: each bucket lands whole in the
//! row holding its middle, so the legend counts events, never fractions of one). A pure
//! function from a request to SVG text; the same request always gives the same bytes.

use std::fmt::Write as _;

use kotel_proto::render::v1::{ExemplarMarker, RenderHeatmapRequest};

use crate::error::RenderError;
use crate::escape::{escape, hex, push_escaped, url_component};

/// Default picture width in pixels.
pub const DEFAULT_WIDTH: u32 = 1000;
/// Default picture height in pixels.
pub const DEFAULT_HEIGHT: u32 = 400;
/// Most display rows a heatmap has; histogram buckets are merged into these.
pub const MAX_ROWS: usize = 64;

/// The hot palette, from few events (pale yellow) to many (dark red).
const PALETTE: [&str; 9] = [
    "#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026",
    "#800026",
];
const P50_COLOR: &str = "#1565c0";
const P99_COLOR: &str = "#6a1b9a";
const RATE_COLOR: &str = "#2e7d32";
const MARKER_COLOR: &str = "#00b0ff";

const LEFT: u32 = 58;
const RIGHT: u32 = 112;
const TOP: u32 = 44;
const BOTTOM: u32 = 34;

/// Options that come from the renderer's configuration rather than the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeatmapOptions {
    /// Link target for exemplar markers, e.g. `http://localhost:16686/trace/{trace_id}`.
    /// `{trace_id}` and `{span_id}` are replaced by the marker's ids in lowercase hex. Empty:
    /// markers are drawn without links.
    pub trace_url_template: String,
}

impl HeatmapOptions {
    /// Checks that the template is an `http://`, `https://` or path-absolute (`/...`) URL, so
    /// no marker link can carry a `javascript:` or `data:` URL; an empty template is fine.
    /// Anything else is [`RenderError::Invalid`].
    pub fn validate(&self) -> Result<(), RenderError> {
        let t = self.trace_url_template.trim_start().to_ascii_lowercase();
        if t.is_empty()
            || t.starts_with("http://")
            || t.starts_with("https://")
            || t.starts_with('/')
        {
            Ok(())
        } else {
            Err(RenderError::Invalid(format!(
                "trace URL template {:?} must start with http://, https:// or /",
                self.trace_url_template
            )))
        }
    }
}

/// The picture size a request asks for, with defaults filled in.
pub fn heatmap_size(req: &RenderHeatmapRequest) -> (u32, u32) {
    let w = if req.width == 0 {
        DEFAULT_WIDTH
    } else {
        req.width
    };
    let h = if req.height == 0 {
        DEFAULT_HEIGHT
    } else {
        req.height
    };
    (w.max(200), h.max(120))
}

/// A bucket of one column as a range of log10(seconds) with its count.
struct Bucket {
    lo: f64,
    hi: f64,
    count: u64,
}

fn buckets(req: &RenderHeatmapRequest, col: usize) -> impl Iterator<Item = Bucket> + '_ {
    let step = std::f64::consts::LOG10_2 / f64::powi(2.0, req.scale);
    let c = &req.columns[col];
    c.bucket_counts
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(move |(j, &count)| {
            let idx = f64::from(c.offset) + j as f64;
            Bucket {
                lo: idx * step,
                hi: (idx + 1.0) * step,
                count,
            }
        })
}

/// Renders the heatmap as SVG text. Checks the request for malformed values (not for size:
/// that is [`crate::limits::check_heatmap`]'s job): [`RenderError::Invalid`] as
/// [`crate::limits::validate_heatmap`] says. The document is drawn back to front: title,
/// cells, axes, the p50/p99/rate lines, the legend, then the exemplar markers on top.
pub fn heatmap_svg(
    req: &RenderHeatmapRequest,
    opts: &HeatmapOptions,
) -> Result<String, RenderError> {
    crate::limits::validate_heatmap(req)?;
    let g = Geometry::of(req);
    let grid = display_grid(req, &g);
    let max = grid.iter().copied().fold(0.0f64, f64::max);

    let mut s = String::with_capacity(16 * 1024);
    let (w, h) = (g.w, g.h);
    let _ = write!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="#ffffff"/>
"##
    );
    title(&mut s, req, &g);
    cells(&mut s, &g, &grid, max);
    axes(&mut s, req, &g);
    lines(&mut s, req, &g);
    legend(&mut s, &g, max);
    markers(&mut s, req, &g, opts);
    s.push_str("</svg>\n");
    Ok(s)
}

/// Where things go: the picture's size, the plot area, the latency domain in whole decades
/// of seconds and the display grid's rows and columns.
struct Geometry {
    w: u32,
    h: u32,
    plot: Plot,
    plot_h: f64,
    ncols: usize,
    nrows: usize,
    /// Lowest and highest decade shown (log10 of seconds).
    d0: f64,
    d1: f64,
    /// The window's end (Unix nanoseconds) and length (nanoseconds).
    end: u64,
    total: u64,
}

impl Geometry {
    fn of(req: &RenderHeatmapRequest) -> Geometry {
        let (w, h) = heatmap_size(req);
        let plot = Plot {
            x0: f64::from(LEFT),
            x1: f64::from(w - RIGHT),
            y0: f64::from(TOP),
            y1: f64::from(h - BOTTOM),
        };
        let ncols = req.columns.len();
        // Latency domain in whole decades of seconds, from the data (and markers), 1ns..1000s.
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..ncols {
            for b in buckets(req, i) {
                lo = lo.min(b.lo);
                hi = hi.max(b.hi);
            }
        }
        for m in &req.markers {
            if m.value_seconds > 0.0 {
                lo = lo.min(m.value_seconds.log10());
                hi = hi.max(m.value_seconds.log10());
            }
        }
        let (d0, d1) = if lo.is_finite() && hi.is_finite() {
            let d0 = lo.floor().clamp(-9.0, 2.0);
            let d1 = hi.ceil().clamp(d0 + 1.0, 3.0);
            (d0, d1)
        } else {
            (-6.0, 0.0)
        };
        let plot_h = plot.y1 - plot.y0;
        let total = req.column_width_nanos.saturating_mul(ncols as u64);
        Geometry {
            w,
            h,
            nrows: MAX_ROWS.min((plot_h / 4.0) as usize).max(1),
            plot,
            plot_h,
            ncols,
            d0,
            d1,
            end: req.start_unix_nano.saturating_add(total),
            total,
        }
    }

    /// The height of a latency (log10 of seconds), clamped to the plot.
    fn y_of(&self, log10s: f64) -> f64 {
        self.plot.y1 - ((log10s - self.d0) / (self.d1 - self.d0)).clamp(0.0, 1.0) * self.plot_h
    }

    /// The left edge of column `i`, on a whole pixel.
    fn col_x(&self, i: usize) -> f64 {
        (self.plot.x0 + (self.plot.x1 - self.plot.x0) * i as f64 / self.ncols.max(1) as f64).round()
    }

    /// The bottom edge of row `r`, on a whole pixel.
    fn row_y(&self, r: usize) -> f64 {
        (self.plot.y1 - self.plot_h * r as f64 / self.nrows as f64).round()
    }
}

/// The display grid, column by column: each bucket's whole count in the row holding the
/// middle of its range in log space (counts are conserved and stay whole; out-of-range
/// buckets land on the edge rows).
fn display_grid(req: &RenderHeatmapRequest, g: &Geometry) -> Vec<f64> {
    let (ncols, nrows, d0) = (g.ncols, g.nrows, g.d0);
    let mut grid = vec![0.0f64; ncols * nrows];
    let scale_rows = nrows as f64 / (g.d1 - d0);
    for (i, col) in req.columns.iter().enumerate() {
        let cells = &mut grid[i * nrows..(i + 1) * nrows];
        cells[0] += col.zero_count as f64;
        for b in buckets(req, i) {
            let mid = ((b.lo + b.hi) / 2.0 - d0) * scale_rows;
            let r = (mid.max(0.0) as usize).min(nrows - 1);
            cells[r] += b.count as f64;
        }
    }
    grid
}

/// Title (process, kind, time window) and labels.
fn title(s: &mut String, req: &RenderHeatmapRequest, g: &Geometry) {
    let window = format!(
        "{} – {} UTC ({} × {})",
        utc(req.start_unix_nano, true),
        utc(g.end, false),
        g.ncols,
        duration(req.column_width_nanos)
    );
    let title = if req.title.is_empty() {
        "latency heatmap".to_string()
    } else {
        truncate(&req.title, 120)
    };
    s.push_str(r#"<text x="8" y="17" font-size="14" font-weight="bold">"#);
    push_escaped(s, &title);
    s.push_str(r#"<tspan font-weight="normal" font-size="11" dx="8">"#);
    push_escaped(s, &window);
    s.push_str("</tspan></text>\n");
    if !req.labels.is_empty() {
        let labels: Vec<String> = req.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let max_chars = (g.w as usize).saturating_sub(16) / 6;
        s.push_str(r##"<text x="8" y="34" fill="#555555">"##);
        push_escaped(s, &truncate(&labels.join("  "), max_chars));
        s.push_str("</text>\n");
    }
}

/// Cells: one path per colour, integer pixel edges, no anti-aliasing; a note when empty.
fn cells(s: &mut String, g: &Geometry, grid: &[f64], max: f64) {
    let (ncols, nrows, plot) = (g.ncols, g.nrows, &g.plot);
    let mut paths: Vec<String> = vec![String::new(); PALETTE.len()];
    let mut levels = vec![0usize; grid.len()];
    if max > 0.0 {
        let denom = (1.0 + max).ln();
        for (k, &v) in grid.iter().enumerate() {
            if v > 0.0 {
                let t = (1.0 + v).ln() / denom;
                levels[k] = 1 + ((t * PALETTE.len() as f64) as usize).min(PALETTE.len() - 1);
            }
        }
    }
    for i in 0..ncols {
        let (xa, xb) = (g.col_x(i), g.col_x(i + 1));
        let mut r = 0;
        while r < nrows {
            let level = levels[i * nrows + r];
            // Merge vertical runs of the same colour into one rectangle.
            let mut run = r + 1;
            while run < nrows && levels[i * nrows + run] == level {
                run += 1;
            }
            if level > 0 {
                let (ya, yb) = (g.row_y(run), g.row_y(r));
                let _ = write!(
                    paths[level - 1],
                    "M{xa} {ya}h{}v{}h-{}z",
                    xb - xa,
                    yb - ya,
                    xb - xa
                );
            }
            r = run;
        }
    }
    s.push_str(r#"<g shape-rendering="crispEdges">"#);
    for (color, d) in PALETTE.iter().zip(&paths) {
        if !d.is_empty() {
            let _ = write!(s, r#"<path fill="{color}" d="{d}"/>"#);
        }
    }
    s.push_str("</g>\n");
    if ncols == 0 || max == 0.0 {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888888">no events in this window</text>"##,
            (plot.x0 + plot.x1) / 2.0,
            (plot.y0 + plot.y1) / 2.0
        );
    }
}

/// Frame, latency ticks, time ticks and their grid lines.
fn axes(s: &mut String, req: &RenderHeatmapRequest, g: &Geometry) {
    let (plot, plot_h, ncols) = (&g.plot, g.plot_h, g.ncols);
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999999" shape-rendering="crispEdges"/>"##,
        plot.x0,
        plot.y0,
        plot.x1 - plot.x0,
        plot_h
    );
    let mut grid_d = String::new();
    s.push_str(r#"<g text-anchor="end">"#);
    let mut e = g.d0;
    while e <= g.d1 + 1e-9 {
        let y = g.y_of(e).round();
        let _ = write!(grid_d, "M{} {y}H{}", plot.x0 - 4.0, plot.x1);
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}">{}</text>"#,
            plot.x0 - 6.0,
            y + 4.0,
            decade_label(e)
        );
        e += 1.0;
    }
    s.push_str("</g>\n");

    // Time ticks.
    let total = g.total;
    let step = time_step(total);
    let first = req.start_unix_nano.div_ceil(step).saturating_mul(step);
    s.push_str(r#"<g text-anchor="middle">"#);
    let mut t = first;
    while ncols > 0 && t <= g.end {
        let x = (plot.x0 + (plot.x1 - plot.x0) * (t - req.start_unix_nano) as f64 / total as f64)
            .round();
        let _ = write!(grid_d, "M{x} {}V{}", plot.y0, plot.y1 + 4.0);
        let _ = write!(
            s,
            r#"<text x="{x}" y="{}">{}</text>"#,
            plot.y1 + 15.0,
            clock(t, step < 1_000_000_000)
        );
        t = match t.checked_add(step) {
            Some(t) => t,
            None => break,
        };
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        r##"<path d="{grid_d}" stroke="#000000" stroke-opacity="0.12" fill="none" shape-rendering="crispEdges"/>"##
    );
}

/// p50 / p99 step lines and the event rate on its own linear axis.
fn lines(s: &mut String, req: &RenderHeatmapRequest, g: &Geometry) {
    let (plot, plot_h, ncols) = (&g.plot, g.plot_h, g.ncols);
    let y_of = |log10s: f64| g.y_of(log10s);
    let column_secs = req.column_width_nanos as f64 / 1e9;
    let mut p50 = Vec::with_capacity(ncols);
    let mut p99 = Vec::with_capacity(ncols);
    let mut rates = Vec::with_capacity(ncols);
    for (i, col) in req.columns.iter().enumerate() {
        let total =
            col.zero_count as f64 + col.bucket_counts.iter().map(|&c| c as f64).sum::<f64>();
        rates.push(total / column_secs);
        p50.push(quantile(req, i, total, 0.50).map(y_of));
        p99.push(quantile(req, i, total, 0.99).map(y_of));
    }
    let rate_max = nice_ceil(rates.iter().copied().fold(0.0f64, f64::max));
    let rate_y: Vec<Option<f64>> = rates
        .iter()
        .map(|&r| Some(plot.y1 - r / rate_max * plot_h))
        .collect();
    let col_x = |i: usize| g.col_x(i);
    for (ys, color, extra) in [
        (&rate_y, RATE_COLOR, r#" stroke-dasharray="4 3""#),
        (&p50, P50_COLOR, ""),
        (&p99, P99_COLOR, ""),
    ] {
        let d = step_path(ys, &col_x);
        if !d.is_empty() {
            let _ = writeln!(
                s,
                r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"{extra}/>"#
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<g fill="{RATE_COLOR}"><text x="{}" y="{}">{}/s</text><text x="{}" y="{}">0/s</text></g>"##,
        plot.x1 + 4.0,
        plot.y0 + 9.0,
        si(rate_max),
        plot.x1 + 4.0,
        plot.y1
    );
}

/// The colour legend and the key for the lines.
fn legend(s: &mut String, g: &Geometry, max: f64) {
    let (plot, plot_h) = (&g.plot, g.plot_h);
    let lx = f64::from(g.w) - 52.0;
    let sw = plot_h / PALETTE.len() as f64;
    s.push_str(r#"<g shape-rendering="crispEdges">"#);
    for (k, color) in PALETTE.iter().enumerate() {
        let ya = (plot.y1 - sw * (k + 1) as f64).round();
        let yb = (plot.y1 - sw * k as f64).round();
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{ya}" width="10" height="{}" fill="{color}"/>"#,
            yb - ya
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        r#"<g font-size="10"><text x="{}" y="{}">{}</text><text x="{}" y="{}">1</text><text x="{}" y="{}" text-anchor="middle">events/cell</text></g>"#,
        lx + 13.0,
        plot.y0 + 9.0,
        whole(max),
        lx + 13.0,
        plot.y1,
        lx + 5.0,
        plot.y0 - 4.0
    );
    let ky = f64::from(g.h) - 6.0;
    let kx = plot.x1 - 170.0;
    let _ = writeln!(
        s,
        r#"<g font-size="10"><path d="M{kx} {y}h16" stroke="{P50_COLOR}" stroke-width="2"/><text x="{}" y="{ky}">p50</text><path d="M{} {y}h16" stroke="{P99_COLOR}" stroke-width="2"/><text x="{}" y="{ky}">p99</text><path d="M{} {y}h16" stroke="{RATE_COLOR}" stroke-width="2" stroke-dasharray="4 3"/><text x="{}" y="{ky}">events/s</text></g>"#,
        kx + 20.0,
        kx + 50.0,
        kx + 70.0,
        kx + 100.0,
        kx + 120.0,
        y = ky - 4.0
    );
}

/// Exemplar markers inside the window, linked to their traces.
fn markers(s: &mut String, req: &RenderHeatmapRequest, g: &Geometry, opts: &HeatmapOptions) {
    if g.ncols == 0 || g.total == 0 {
        return;
    }
    let plot = &g.plot;
    for m in &req.markers {
        if m.time_unix_nano < req.start_unix_nano || m.time_unix_nano > g.end {
            continue;
        }
        let x = plot.x0
            + (plot.x1 - plot.x0) * (m.time_unix_nano - req.start_unix_nano) as f64
                / g.total as f64;
        let y = if m.value_seconds > 0.0 {
            g.y_of(m.value_seconds.log10())
        } else {
            plot.y1
        };
        marker(s, m, x, y, opts);
    }
}

struct Plot {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

fn marker(s: &mut String, m: &ExemplarMarker, x: f64, y: f64, opts: &HeatmapOptions) {
    let trace = hex(&m.trace_id);
    let span = hex(&m.span_id);
    let link = !opts.trace_url_template.is_empty() && !trace.is_empty();
    if link {
        let href = opts
            .trace_url_template
            .replace("{trace_id}", &url_component(&trace))
            .replace("{span_id}", &url_component(&span));
        let _ = write!(s, r#"<a href="{}" target="_top">"#, escape(&href));
    } else {
        s.push_str("<g>");
    }
    let _ = write!(
        s,
        r##"<title>exemplar {} trace {trace} span {span}</title><path d="M{:.1} {:.1}l5 5l-5 5l-5 -5z" fill="{MARKER_COLOR}" stroke="#000000"/>"##,
        seconds(m.value_seconds),
        x,
        y - 5.0
    );
    s.push_str(if link { "</a>\n" } else { "</g>\n" });
}

/// The `q` quantile of column `i` as log10(seconds), interpolated in log space within its
/// bucket; `None` for an empty column. Values in the zero bucket map to the bottom edge.
fn quantile(req: &RenderHeatmapRequest, i: usize, total: f64, q: f64) -> Option<f64> {
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut cum = req.columns[i].zero_count as f64;
    if rank <= cum {
        return Some(f64::NEG_INFINITY);
    }
    let mut last = None;
    for b in buckets(req, i) {
        let c = b.count as f64;
        if cum + c >= rank {
            return Some(b.lo + (rank - cum) / c * (b.hi - b.lo));
        }
        cum += c;
        last = Some(b.hi);
    }
    last
}

/// A step line across columns: horizontal at each column's value, vertical joins between
/// neighbours, gaps where a column has no value.
fn step_path(ys: &[Option<f64>], col_x: &dyn Fn(usize) -> f64) -> String {
    let mut d = String::new();
    let mut prev = false;
    for (i, y) in ys.iter().enumerate() {
        match y {
            Some(y) => {
                if prev {
                    let _ = write!(d, "V{y:.1}H{}", col_x(i + 1));
                } else {
                    let _ = write!(d, "M{} {y:.1}H{}", col_x(i), col_x(i + 1));
                }
                prev = true;
            }
            None => prev = false,
        }
    }
    d
}

fn decade_label(e: f64) -> &'static str {
    const LABELS: [&str; 13] = [
        "1ns", "10ns", "100ns", "1µs", "10µs", "100µs", "1ms", "10ms", "100ms", "1s", "10s",
        "100s", "1000s",
    ];
    LABELS[((e + 9.0).round() as usize).min(LABELS.len() - 1)]
}

/// Rounds up to 1, 2 or 5 × 10^k (at least 1).
fn nice_ceil(v: f64) -> f64 {
    if v.is_nan() || v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// A count or rate with an SI suffix and fixed formatting.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 10.0 || v == 0.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

/// A whole count: exact below 1000, then with an SI suffix.
fn whole(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0}")
    } else {
        si(v)
    }
}

/// A duration in seconds as a short human string.
fn seconds(v: f64) -> String {
    match v {
        v if v >= 1.0 => format!("{v:.3}s"),
        v if v >= 1e-3 => format!("{:.3}ms", v * 1e3),
        v if v >= 1e-6 => format!("{:.3}µs", v * 1e6),
        v => format!("{:.0}ns", v * 1e9),
    }
}

fn duration(nanos: u64) -> String {
    if nanos % 1_000_000_000 == 0 {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{}µs", nanos / 1_000)
    }
}

fn time_step(total: u64) -> u64 {
    const STEPS: [u64; 25] = [
        1_000_000,
        2_000_000,
        5_000_000,
        10_000_000,
        20_000_000,
        50_000_000,
        100_000_000,
        200_000_000,
        500_000_000,
        1_000_000_000,
        2_000_000_000,
        5_000_000_000,
        10_000_000_000,
        15_000_000_000,
        30_000_000_000,
        60_000_000_000,
        120_000_000_000,
        300_000_000_000,
        600_000_000_000,
        900_000_000_000,
        1_800_000_000_000,
        3_600_000_000_000,
        7_200_000_000_000,
        21_600_000_000_000,
        86_400_000_000_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|&s| total / s <= 6)
        .unwrap_or(STEPS[STEPS.len() - 1].max(total / 6))
}

/// `HH:MM:SS` (with milliseconds when `millis`) of a Unix-nanosecond time, UTC.
fn clock(unix_nano: u64, millis: bool) -> String {
    let secs = unix_nano / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    if millis {
        format!("{h:02}:{m:02}:{s:02}.{:03}", (unix_nano / 1_000_000) % 1000)
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `YYYY-MM-DD HH:MM:SS` (or just the clock) of a Unix-nanosecond time, UTC.
fn utc(unix_nano: u64, with_date: bool) -> String {
    if !with_date {
        return clock(unix_nano, unix_nano % 1_000_000_000 != 0);
    }
    // Howard Hinnant's civil_from_days.
    let days = (unix_nano / 86_400_000_000_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {}",
        clock(unix_nano, unix_nano % 1_000_000_000 != 0)
    )
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_proto::render::v1::HeatmapColumn;

    fn req(columns: Vec<HeatmapColumn>) -> RenderHeatmapRequest {
        RenderHeatmapRequest {
            title: "nginx (pid 42) writev".into(),
            scale: 2,
            start_unix_nano: 1_714_564_800_000_000_000,
            column_width_nanos: 1_000_000_000,
            columns,
            ..Default::default()
        }
    }

    #[test]
    fn dates_and_labels_are_fixed_format() {
        assert_eq!(utc(1_714_564_800_000_000_000, true), "2024-05-01 12:00:00");
        assert_eq!(utc(0, true), "1970-01-01 00:00:00");
        assert_eq!(decade_label(-6.0), "1µs");
        assert_eq!(decade_label(1.0), "10s");
        assert_eq!(nice_ceil(1234.0), 2000.0);
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(seconds(0.0015), "1.500ms");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // scale 0: bucket k covers (2^k, 2^(k+1)]; 100 events in bucket -10 (~1ms).
        let mut r = req(vec![HeatmapColumn {
            zero_count: 0,
            offset: -10,
            bucket_counts: vec![100],
        }]);
        r.scale = 0;
        let p = quantile(&r, 0, 100.0, 0.5).unwrap();
        let v = 10f64.powf(p);
        assert!(v > 2f64.powi(-10) && v < 2f64.powi(-9), "{v}");
        assert_eq!(quantile(&r, 0, 0.0, 0.5), None);
    }

    #[test]
    fn same_input_same_bytes_and_cells_grouped_by_colour() {
        let cols = (0..60)
            .map(|i| HeatmapColumn {
                zero_count: 1,
                offset: -80 + (i % 7),
                bucket_counts: (0..40).map(|j| ((i * j) % 13) as u64).collect(),
            })
            .collect();
        let r = req(cols);
        let a = heatmap_svg(&r, &HeatmapOptions::default()).unwrap();
        let b = heatmap_svg(&r, &HeatmapOptions::default()).unwrap();
        assert_eq!(a, b);
        assert!(a.matches("<path fill=").count() <= PALETTE.len());
        roxmltree::Document::parse(&a).unwrap();
    }

    #[test]
    fn empty_and_extreme_inputs_render() {
        let opts = HeatmapOptions::default();
        assert!(heatmap_svg(&req(vec![]), &opts)
            .unwrap()
            .contains("no events"));
        let mut r = req(vec![HeatmapColumn {
            zero_count: 5,
            offset: i32::MAX - 2,
            bucket_counts: vec![1, 1],
        }]);
        r.scale = -10;
        let svg = heatmap_svg(&r, &opts).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
        r.columns[0].offset = i32::MIN;
        r.scale = 20;
        roxmltree::Document::parse(&heatmap_svg(&r, &opts).unwrap()).unwrap();
    }

    #[test]
    fn marker_links_use_the_template_with_hex_ids() {
        let mut r = req(vec![HeatmapColumn {
            zero_count: 0,
            offset: -40,
            bucket_counts: vec![3, 4],
        }]);
        r.markers.push(ExemplarMarker {
            time_unix_nano: r.start_unix_nano + 500_000_000,
            value_seconds: 0.001,
            trace_id: vec![0xAB; 16],
            span_id: vec![0x01; 8],
        });
        let opts = HeatmapOptions {
            trace_url_template: "http://localhost:16686/trace/{trace_id}?span={span_id}&x=1".into(),
        };
        let svg = heatmap_svg(&r, &opts).unwrap();
        assert!(svg.contains(&format!(
            r#"<a href="http://localhost:16686/trace/{}?span=0101010101010101&amp;x=1""#,
            "ab".repeat(16)
        )));
        assert!(HeatmapOptions {
            trace_url_template: "javascript:alert(1)//{trace_id}".into()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn cells_and_the_legend_count_whole_events() {
        // Fine buckets (scale 5) over a few decades: many straddle display rows.
        let cols = (0..10)
            .map(|i| HeatmapColumn {
                zero_count: 0,
                offset: -600 + i * 7,
                bucket_counts: (0..200).map(|j| (i as u64 * 31 + j) % 5).collect(),
            })
            .collect();
        let mut r = req(cols);
        r.scale = 5;
        let g = Geometry::of(&r);
        let grid = display_grid(&r, &g);
        assert!(
            grid.iter().all(|v| v.fract() == 0.0),
            "whole events per cell"
        );
        let total: u64 = r.columns.iter().flat_map(|c| c.bucket_counts.iter()).sum();
        assert_eq!(
            grid.iter().sum::<f64>() as u64,
            total,
            "every event in one cell"
        );
        let svg = heatmap_svg(&r, &HeatmapOptions::default()).unwrap();
        let max = grid.iter().copied().fold(0.0, f64::max);
        assert!(
            svg.contains(&format!(">{max:.0}</text>")),
            "legend top is the largest count"
        );
        assert!(svg.contains(">events/cell</text>"));
    }
}
