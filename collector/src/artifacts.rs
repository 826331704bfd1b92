//! Pictures for the metrics: a rolling latency heatmap per (process, probe) series that had
//! slow events, and per probe with stacks (`writev`, `tcp_send`, `offcpu`) a flame graph of
//! the interval's slow events weighted by their time, rendered in-process (files in the output folder
//! plus `index.html`, bounded in number by [`PictureFiles`], and every version in the
//! size-capped `artifacts/` store) or by the `kotel-render` sidecar over gRPC. Their URLs ride
//! on the exemplars and on the exemplars' spans. Rendering is rate-limited and never blocks
//! export: when the renderer fails or is unreachable the picture is skipped and counted.
//!
//! An `https://` sidecar is reached over TLS only ([`sidecar_tls`], from `[render.tls]`): its
//! certificate is verified against `ca_file` (or the system's roots), and a client
//! certificate is presented when the sidecar requires mutual TLS. There is no plaintext
//! fallback: a failed handshake skips the picture, counted, with the reason in the log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use kotel_bpf::Probe;
use kotel_proto::render::v1::renderer_client::RendererClient;
use kotel_proto::render::v1::{
    Artifact, ExemplarMarker, FoldedStack, Format, HeatmapColumn, RenderFlameRequest,
    RenderHeatmapRequest, RenderResponse,
};
use kotel_render::{Renderer, RendererConfig};

use crate::config::RenderSettings;
use crate::enrich::semconv::{KOTEL_KIND, PROCESS_PID};
use crate::model::Histogram;
use crate::otlp::expo;
use crate::otlp::metrics::ExemplarCandidate;
use crate::picture_files::PictureFiles;
use crate::report::PictureInputs;

/// Columns in a heatmap's rolling window.
pub const WINDOW_COLUMNS: usize = 60;
/// Most heatmaps rendered per export interval.
const MAX_RENDERS_PER_INTERVAL: usize = 16;
/// Series of ended processes whose last window is kept (for their heatmap and the report page).
pub const MAX_EXITED_SERIES: usize = 256;
/// Most distinct folded stacks kept per flame graph and interval.
const MAX_STACKS: usize = 20_000;
/// Deadline of one sidecar call.
const SIDECAR_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a picture lives, as the exemplar and span attributes carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// URL of the PNG (or SVG when no PNG was made).
    pub url: String,
    /// sha256 of the SVG.
    pub id: String,
    /// `image/png` or `image/svg+xml`.
    pub media_type: String,
}

/// Where the report page links each series' pictures and the flame graph's.
#[derive(Debug, Default)]
pub struct PictureLinks {
    /// Per (process, probe): relative file names (in-process) or URLs (sidecar), SVG first.
    pub series: HashMap<(u32, Probe), Vec<String>>,
    /// The flame graph's.
    pub flame: Vec<String>,
}

/// The series a picture's stem (`heatmap-<pid>-<probe>`) names.
fn series_of_stem(stem: &str) -> Option<(u32, Probe)> {
    let (pid, probe) = stem.strip_prefix("heatmap-")?.split_once('-')?;
    let probe = Probe::ALL.into_iter().find(|p| p.name() == probe)?;
    Some((pid.parse().ok()?, probe))
}

/// How pictures get rendered.
pub enum Backend {
    /// The renderer library, writing into the output folder.
    InProcess {
        /// The renderer (its store is the output folder's `artifacts/`).
        renderer: Renderer,
        /// The pictures kept in the output folder under their names.
        files: PictureFiles,
    },
    /// The `kotel-render` sidecar.
    Sidecar {
        /// Its gRPC endpoint.
        endpoint: String,
        /// TLS settings for an `https://` endpoint.
        tls: Option<tonic::transport::ClientTlsConfig>,
        /// A runtime to call it on.
        runtime: tokio::runtime::Handle,
    },
}

/// Heatmap history and rendering state. Single-threaded.
pub struct Artifacts {
    backend: Backend,
    column_width: Duration,
    previous: HashMap<(u32, Probe), Histogram>,
    columns: HashMap<(u32, Probe), VecDeque<(u64, Histogram)>>,
    rendered: HashMap<(u32, Probe), u64>,
    flames: BTreeMap<Probe, FlameInterval>,
    /// Every off-CPU stack of the run with its time, for the report page's own flame graph.
    page_stacks: HashMap<String, u64>,
    failed_this_interval: bool,
    /// Final histograms of processes that exited since the last sample: their last column.
    ended: Vec<Histogram>,
    /// Series of processes that ended, kept as they were (newest last, at most
    /// [`MAX_EXITED_SERIES`]).
    exited: HashSet<(u32, Probe)>,
    exited_order: VecDeque<(u32, Probe)>,
    /// Sidecar pictures' URLs per series (SVG first) and of the flame graph, for the report.
    sidecar_urls: HashMap<(u32, Probe), Vec<String>>,
    sidecar_flame_urls: Vec<String>,
    /// Pictures made.
    pub made: u64,
    /// Pictures skipped because rendering failed or the renderer was unreachable.
    pub skipped: u64,
}

/// One probe's stacks of the interval so far: folded stack → time, and when the first came.
#[derive(Debug, Default)]
struct FlameInterval {
    stacks: HashMap<String, u64>,
    since_unix_nano: u64,
}

/// `HH:MM:SS` of a Unix time in nanoseconds, UTC.
fn clock_time(unix_nano: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(unix_nano);
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    rfc3339.get(11..19).unwrap_or_default().to_string()
}

/// The histograms of one heatmap each: a process's off-CPU states merged into one.
fn per_picture(histograms: &[Histogram]) -> BTreeMap<(u32, Probe), Histogram> {
    let mut out: BTreeMap<(u32, Probe), Histogram> = BTreeMap::new();
    for h in histograms {
        match out.entry((h.pid, h.kind)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Histogram {
                    offcpu_state: None,
                    ..h.clone()
                });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => expo::merge(o.get_mut(), h),
        }
    }
    out
}

fn hash_request(req: &RenderHeatmapRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.title.hash(&mut h);
    for c in &req.columns {
        (c.zero_count, c.offset, &c.bucket_counts).hash(&mut h);
    }
    for m in &req.markers {
        (m.time_unix_nano, &m.span_id).hash(&mut h);
    }
    h.finish()
}

impl Artifacts {
    /// In-process rendering into `dir`, as `[render]` says: `trace_url_template` makes
    /// exemplar markers links, `max_pictures` bounds the pictures kept in `dir` and
    /// `store_max_bytes` the `artifacts/` store.
    pub fn in_process(dir: &Path, render: &RenderSettings) -> Result<Artifacts, String> {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut cfg = RendererConfig::new(
            abs.join("artifacts"),
            format!("file://{}/artifacts", abs.display()),
        );
        cfg.heatmap.trace_url_template = render.trace_url_template.clone();
        cfg.store.max_bytes = render.store_max_bytes;
        let renderer = Renderer::new(cfg).map_err(|e| e.to_string())?;
        let files = PictureFiles::open(&abs, render.max_pictures);
        Ok(Self::new(Backend::InProcess { renderer, files }))
    }

    /// Rendering by the sidecar at `endpoint`, over TLS with `tls` (see [`sidecar_tls`]).
    pub fn sidecar(
        endpoint: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
        runtime: tokio::runtime::Handle,
    ) -> Artifacts {
        Self::new(Backend::Sidecar {
            endpoint: endpoint.to_string(),
            tls,
            runtime,
        })
    }

    fn new(backend: Backend) -> Artifacts {
        Artifacts {
            backend,
            column_width: Duration::from_secs(1),
            previous: HashMap::new(),
            columns: HashMap::new(),
            rendered: HashMap::new(),
            flames: BTreeMap::new(),
            page_stacks: HashMap::new(),
            failed_this_interval: false,
            ended: Vec::new(),
            exited: HashSet::new(),
            exited_order: VecDeque::new(),
            sidecar_urls: HashMap::new(),
            sidecar_flame_urls: Vec::new(),
            made: 0,
            skipped: 0,
        }
    }

    /// Picture files deleted from the output folder because more than `render.max_pictures`
    /// were kept (in-process rendering; an SVG and a PNG count two).
    pub fn removed_pictures(&self) -> u64 {
        match &self.backend {
            Backend::InProcess { files, .. } => files.removed(),
            Backend::Sidecar { .. } => 0,
        }
    }

    /// Files the output folder's `artifacts/` store deleted: over `render.store_max_bytes`, or
    /// an hour old (in-process rendering).
    pub fn removed_from_store(&self) -> u64 {
        match &self.backend {
            Backend::InProcess { renderer, .. } => renderer.store().removed(),
            Backend::Sidecar { .. } => 0,
        }
    }

    /// How often [`Artifacts::sample`] should run.
    pub fn column_width(&self) -> Duration {
        self.column_width
    }

    /// Keeps the final histograms of processes that exited (their kernel slots are gone): the
    /// next sample adds what they gained since the last one as their last column.
    pub fn retire(&mut self, finals: &[Histogram]) {
        self.ended
            .extend(finals.iter().filter(|h| h.count > 0).cloned());
    }

    /// Adds one column per series: what the cumulative kernel histograms (and the final ones
    /// of processes that exited since) gained since the last sample, ending at `now` (Unix
    /// ns); a series with nothing new (its process quiet or gone) gets an empty column, so its
    /// window ages out. A process's two off-CPU histograms (one per state) make one picture:
    /// every off-CPU wait of the process, idle or blocked, as the flame graph shows them, with
    /// the exemplar of the slowest.
    pub fn sample(&mut self, histograms: &[Histogram], now: u64) {
        let ended = per_picture(&std::mem::take(&mut self.ended));
        let live = per_picture(histograms);
        // A process that ended keeps its last window as it was, neither aged nor redrawn (it
        // has nothing new), among the newest MAX_EXITED_SERIES of them: a storm of
        // short-lived processes cannot hold a window each for a minute.
        for key in live.keys() {
            self.exited.remove(key);
        }
        for key in ended.keys() {
            if !live.contains_key(key) && self.exited.insert(*key) {
                self.exited_order.push_back(*key);
            }
        }
        let mut current = ended;
        current.extend(live);
        let exited = &self.exited;
        let idle: Vec<(u32, Probe)> = self
            .columns
            .keys()
            .filter(|k| !current.contains_key(k) && !exited.contains(k))
            .copied()
            .collect();
        for key in idle {
            let Some(q) = self.columns.get_mut(&key) else {
                continue;
            };
            let empty = q.back().map(|(_, h)| Histogram {
                count: 0,
                sum_ns: 0,
                max_ns: 0,
                zero_count: 0,
                bytes: 0,
                clamped: 0,
                bucket_counts: Vec::new(),
                ..h.clone()
            });
            if let Some(empty) = empty {
                q.push_back((now, empty));
            }
            while q.len() > WINDOW_COLUMNS {
                q.pop_front();
            }
            if q.iter().all(|(_, h)| h.count == 0) {
                self.columns.remove(&key);
                self.rendered.remove(&key);
                self.previous.remove(&key);
            }
        }
        let live: std::collections::HashSet<(u32, Probe)> = current.keys().copied().collect();
        for (key, h) in current {
            self.add_column(key, &h, now);
        }
        // Past the cap, the oldest ended processes' windows go (after this sample's columns,
        // so that none comes back as a live series).
        while self.exited_order.len() > MAX_EXITED_SERIES {
            if let Some(key) = self.exited_order.pop_front() {
                if self.exited.remove(&key) {
                    self.columns.remove(&key);
                    self.rendered.remove(&key);
                    self.previous.remove(&key);
                }
            }
        }
        // Snapshots of processes gone, whose windows aged out, go too.
        let columns = &self.columns;
        self.previous
            .retain(|k, _| live.contains(k) || columns.contains_key(k));
        self.exited_order.retain(|k| columns.contains_key(k));
        self.exited.retain(|k| columns.contains_key(k));
    }

    /// Gives each series of `wanted` that has no column yet its first one, ending `now`, from
    /// the live histograms or the final ones of processes that exited since the last
    /// [`sample`](Artifacts::sample): a series whose first events came after the last sample
    /// would otherwise have no heatmap to draw at this interval's end, and none later either
    /// once its slow events are past.
    pub fn sample_new_series(
        &mut self,
        histograms: &[Histogram],
        wanted: &dyn Fn(&(u32, Probe)) -> bool,
        now: u64,
    ) {
        let mut all = self.ended.clone();
        all.extend_from_slice(histograms);
        for (key, h) in per_picture(&all) {
            if wanted(&key) && !self.columns.contains_key(&key) {
                self.add_column(key, &h, now);
            }
        }
    }

    /// One column of series `key`: what its cumulative histogram `h` gained since the last.
    fn add_column(&mut self, key: (u32, Probe), h: &Histogram, now: u64) {
        let delta = match self.previous.get(&key) {
            Some(prev) => expo::subtract(h, prev).unwrap_or_else(|| h.clone()),
            None => h.clone(),
        };
        self.previous.insert(key, h.clone());
        let q = self.columns.entry(key).or_default();
        q.push_back((now, delta));
        while q.len() > WINDOW_COLUMNS {
            q.pop_front();
        }
        // A series whose whole window is empty (its process went quiet or exited) is
        // dropped; only its last cumulative snapshot stays, bounded by the kernel's slots.
        if q.iter().all(|(_, h)| h.count == 0) {
            self.columns.remove(&key);
            self.rendered.remove(&key);
        }
    }

    /// Adds a slow event's stack (root first, `;`-joined, [`crate::kernel::folded`]) to its
    /// probe's flame graph of this interval, weighted by the event's time; `now` is when it
    /// was seen (Unix ns). Beyond `MAX_STACKS` (20 000) distinct stacks a new one is left out.
    pub fn add_stack(&mut self, probe: Probe, folded: String, weight_ns: u64, now: u64) {
        let f = self.flames.entry(probe).or_insert_with(|| FlameInterval {
            stacks: HashMap::new(),
            since_unix_nano: now,
        });
        if probe == Probe::Offcpu
            && (self.page_stacks.len() < MAX_STACKS || self.page_stacks.contains_key(&folded))
        {
            *self.page_stacks.entry(folded.clone()).or_default() += weight_ns;
        }
        if f.stacks.len() < MAX_STACKS || f.stacks.contains_key(&folded) {
            *f.stacks.entry(folded).or_default() += weight_ns;
        }
    }

    /// Renders the heatmaps of the series in `slowest` (those with slow events this
    /// interval), at most a few per call, skipping unchanged pictures. Returns their refs.
    pub fn render_heatmaps(
        &mut self,
        slowest: &HashMap<(u32, Probe), ExemplarCandidate>,
        names: &dyn Fn(u32) -> String,
    ) -> HashMap<(u32, Probe), ArtifactRef> {
        let mut out = HashMap::new();
        self.failed_this_interval = false;
        // The slowest series first: with a per-interval cap, those are the pictures worth most.
        let mut keys: Vec<_> = slowest.keys().copied().collect();
        keys.sort_by_key(|k| (std::cmp::Reverse(slowest[k].duration_ns), *k));
        for key in keys.into_iter().take(MAX_RENDERS_PER_INTERVAL) {
            let Some(cols) = self.columns.get(&key) else {
                continue;
            };
            let Some((first_end, _)) = cols.front() else {
                continue;
            };
            let width = self.column_width.as_nanos() as u64;
            let (pid, probe) = key;
            let e = slowest[&key];
            let scale = cols.back().map(|(_, h)| h.scale).unwrap_or(3);
            let req = RenderHeatmapRequest {
                title: format!("{} (pid {pid}) {} latency", names(pid), probe.name()),
                labels: [
                    (PROCESS_PID.to_string(), pid.to_string()),
                    (KOTEL_KIND.to_string(), probe.name().to_string()),
                ]
                .into_iter()
                .collect(),
                scale,
                start_unix_nano: first_end.saturating_sub(width),
                column_width_nanos: width,
                columns: cols
                    .iter()
                    .map(|(_, h)| HeatmapColumn {
                        zero_count: h.zero_count,
                        offset: h.offset,
                        bucket_counts: h.bucket_counts.clone(),
                    })
                    .collect(),
                markers: vec![ExemplarMarker {
                    time_unix_nano: e.time_unix_nano,
                    value_seconds: e.duration_ns as f64 / 1e9,
                    trace_id: e.trace_id.to_vec(),
                    span_id: e.span_id.to_vec(),
                }],
                formats: vec![Format::Svg as i32, Format::Png as i32],
                width: 1000,
                height: 400,
                include_bytes: matches!(self.backend, Backend::InProcess { .. }),
            };
            let digest = hash_request(&req);
            if self.rendered.get(&key) == Some(&digest) {
                continue;
            }
            let stem = format!("heatmap-{pid}-{}", probe.name());
            match self.render(|b| b.heatmap(&req), &stem, &req.title) {
                Some((r, urls)) => {
                    self.rendered.insert(key, digest);
                    if matches!(self.backend, Backend::Sidecar { .. }) {
                        self.sidecar_urls.insert(key, urls);
                    }
                    out.insert(key, r);
                }
                // One failure skips the rest of this interval: an unreachable renderer must
                // not hold up the loop that drains the kernel's ring buffer.
                None => {
                    self.failed_this_interval = true;
                    break;
                }
            }
        }
        out
    }

    /// Renders each probe's flame graph of the interval ending `now` (Unix ns) from the slow
    /// events' stacks added since the last call, titled with the probe and the window, and
    /// starts the next interval. A probe without stacks this interval keeps its last picture.
    pub fn render_flames(&mut self, now: u64) -> Vec<(Probe, ArtifactRef)> {
        let flames = std::mem::take(&mut self.flames);
        let mut out = Vec::new();
        if self.failed_this_interval {
            return out;
        }
        for (probe, f) in flames {
            let mut stacks: Vec<FoldedStack> = f
                .stacks
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .map(|(stack, weight_nanos)| FoldedStack {
                    stack,
                    weight_nanos,
                })
                .collect();
            if stacks.is_empty() {
                continue;
            }
            stacks.sort_by(|a, b| a.stack.cmp(&b.stack));
            let req = RenderFlameRequest {
                title: format!(
                    "{} latency by stack, {}\u{2013}{} UTC",
                    probe.name(),
                    clock_time(f.since_unix_nano),
                    clock_time(now)
                ),
                stacks,
                formats: vec![Format::Svg as i32, Format::Png as i32],
                include_bytes: matches!(self.backend, Backend::InProcess { .. }),
                width: 1200,
            };
            let stem = format!("{}-flame", probe.name());
            match self.render(|b| b.flame(&req), &stem, &req.title) {
                Some((r, urls)) => {
                    if probe == Probe::Offcpu && matches!(self.backend, Backend::Sidecar { .. }) {
                        self.sidecar_flame_urls = urls;
                    }
                    out.push((probe, r));
                }
                None => {
                    self.failed_this_interval = true;
                    break;
                }
            }
        }
        out
    }

    /// What the report page needs: each series' columns, the stacks and the picture files
    /// (relative names in the output folder; the sidecar's URLs).
    pub fn report_inputs(&self) -> (PictureInputs<'_>, PictureLinks) {
        let mut links = PictureLinks::default();
        match &self.backend {
            Backend::InProcess { files, .. } => {
                for (stem, _, f) in files.drawn() {
                    if stem == "offcpu-flame" {
                        links.flame = f;
                    } else if let Some(key) = series_of_stem(stem) {
                        links.series.insert(key, f);
                    }
                }
            }
            Backend::Sidecar { .. } => {
                links.series = self.sidecar_urls.clone();
                links.flame = self.sidecar_flame_urls.clone();
            }
        }
        (
            PictureInputs {
                columns: &self.columns,
                column_width: self.column_width,
                stacks: &self.page_stacks,
            },
            links,
        )
    }

    fn render(
        &mut self,
        call: impl FnOnce(&Backend) -> Result<RenderResponse, String>,
        stem: &str,
        title: &str,
    ) -> Option<(ArtifactRef, Vec<String>)> {
        let resp = match call(&self.backend) {
            Ok(r) => r,
            Err(e) => {
                self.skipped += 1;
                if self.skipped == 1 || self.skipped.is_power_of_two() {
                    tracing::warn!(error = %e, skipped = self.skipped, "kotel.artifact.skipped");
                }
                return None;
            }
        };
        self.made += 1;
        let pick = |media: &str| resp.artifacts.iter().find(|a| a.media_type == media);
        let best: &Artifact = pick("image/png").or_else(|| pick("image/svg+xml"))?;
        let mut url = best.url.clone();
        let mut urls: Vec<String> = resp.artifacts.iter().map(|a| a.url.clone()).collect();
        urls.sort_by_key(|u| !u.ends_with(".svg"));
        if let Backend::InProcess { files, .. } = &mut self.backend {
            // Stable, readable names next to the OTLP files; the URL points at them.
            let ext = |a: &Artifact| {
                if a.media_type == "image/png" {
                    "png"
                } else {
                    "svg"
                }
            };
            let written: Vec<(&str, &[u8])> = resp
                .artifacts
                .iter()
                .map(|a| (ext(a), a.content.as_slice()))
                .collect();
            match files.put(stem, title, &written, ext(best)) {
                Ok(path) => url = format!("file://{}", path.display()),
                Err(e) => {
                    self.skipped += 1;
                    if self.skipped == 1 || self.skipped.is_power_of_two() {
                        tracing::warn!(
                            error = %e,
                            stem,
                            skipped = self.skipped,
                            "kotel.artifact.not_written"
                        );
                    }
                    return None;
                }
            }
        }
        Some((
            ArtifactRef {
                url,
                id: best.id.clone(),
                media_type: best.media_type.clone(),
            },
            urls,
        ))
    }
}

impl Backend {
    fn heatmap(&self, req: &RenderHeatmapRequest) -> Result<RenderResponse, String> {
        match self {
            Backend::InProcess { renderer, .. } => {
                renderer.render_heatmap(req).map_err(|e| e.to_string())
            }
            Backend::Sidecar {
                endpoint,
                tls,
                runtime,
            } => {
                let req = req.clone();
                sidecar_call(endpoint, tls, runtime, |mut c| async move {
                    c.render_heatmap(req).await
                })
            }
        }
    }

    fn flame(&self, req: &RenderFlameRequest) -> Result<RenderResponse, String> {
        match self {
            Backend::InProcess { renderer, .. } => {
                renderer.render_flame(req).map_err(|e| e.to_string())
            }
            Backend::Sidecar {
                endpoint,
                tls,
                runtime,
            } => {
                let req = req.clone();
                sidecar_call(endpoint, tls, runtime, |mut c| async move {
                    c.render_flame(req).await
                })
            }
        }
    }
}

/// The TLS settings for the sidecar from `[render]`: `None` for an `http://` (or no)
/// renderer, else its CA (or the system's roots) and, for mutual TLS, the client certificate.
/// The files are read and checked now, so a bad one stops the agent at startup; the error
/// names the field and the file, never a key.
pub fn sidecar_tls(
    render: &crate::config::RenderSettings,
) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    use kotel_tls::{read_certs, read_key, TlsFile};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if !render.renderer.starts_with("https://") {
        return Ok(None);
    }
    kotel_tls::install_crypto_provider();
    let t = &render.tls;
    let named = |e: kotel_tls::TlsError| format!("render.tls.{}: {e}", e.file().config_key());
    let read = |p: &Path, file| {
        std::fs::read(p).map_err(|e| {
            named(kotel_tls::TlsError::File {
                file,
                path: p.to_path_buf(),
                message: format!("cannot read it: {e}"),
            })
        })
    };
    let mut tls = ClientTlsConfig::new();
    if t.ca_file.as_os_str().is_empty() {
        tls = tls.with_native_roots();
    } else {
        read_certs(TlsFile::Ca, &t.ca_file).map_err(named)?;
        tls = tls.ca_certificate(Certificate::from_pem(read(&t.ca_file, TlsFile::Ca)?));
    }
    if !t.cert_file.as_os_str().is_empty() {
        read_certs(TlsFile::Cert, &t.cert_file).map_err(named)?;
        read_key(&t.key_file).map_err(named)?;
        tls = tls.identity(Identity::from_pem(
            read(&t.cert_file, TlsFile::Cert)?,
            read(&t.key_file, TlsFile::Key)?,
        ));
    }
    Ok(Some(tls))
}

/// An error with its causes, e.g. "transport error: invalid peer certificate: UnknownIssuer".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One call to the sidecar, connection (and TLS handshake) included, within
/// [`SIDECAR_TIMEOUT`].
fn sidecar_call<F, Fut>(
    endpoint: &str,
    tls: &Option<tonic::transport::ClientTlsConfig>,
    runtime: &tokio::runtime::Handle,
    call: F,
) -> Result<RenderResponse, String>
where
    F: FnOnce(RendererClient<tonic::transport::Channel>) -> Fut + Send + 'static,
    Fut:
        std::future::Future<Output = Result<tonic::Response<RenderResponse>, tonic::Status>> + Send,
{
    let mut target = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("renderer {endpoint}: {}", error_chain(&e)))?;
    if let Some(tls) = tls {
        target = target
            .tls_config(tls.clone())
            .map_err(|e| format!("renderer {endpoint}: TLS: {}", error_chain(&e)))?;
    }
    let endpoint = endpoint.to_string();
    runtime.block_on(async move {
        let attempt = async {
            let channel = target
                .connect()
                .await
                .map_err(|e| format!("renderer {endpoint}: {}", error_chain(&e)))?;
            call(RendererClient::new(channel))
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| format!("renderer {endpoint}: {}", error_chain(&e)))
        };
        tokio::time::timeout(SIDECAR_TIMEOUT, attempt)
            .await
            .map_err(|_| "renderer timed out".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_offcpu_picture_per_process_holds_both_states() {
        use crate::model::OffcpuState;
        let state = |s, values: &[u64]| Histogram {
            offcpu_state: Some(s),
            ..Histogram::of(Probe::Offcpu, 7, 3, values)
        };
        let hs = [
            state(OffcpuState::Uninterruptible, &[2_000_000, 3_000_000]),
            state(OffcpuState::Interruptible, &[1_000, 4_000_000_000]),
            Histogram::of(Probe::Runqueue, 7, 3, &[5_000]),
        ];
        let pictures = per_picture(&hs);
        assert_eq!(pictures.len(), 2);
        let off = &pictures[&(7, Probe::Offcpu)];
        assert_eq!(
            (off.count, off.max_ns, off.offcpu_state),
            (4, 4_000_000_000, None)
        );
        assert_eq!(off.bucket_counts.iter().sum::<u64>(), 4);
        assert_eq!(pictures[&(7, Probe::Runqueue)].count, 1);
    }

    fn scratch() -> (std::path::PathBuf, Artifacts) {
        let dir = std::env::temp_dir().join(format!(
            "kotel-artifacts-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Artifacts::in_process(&dir, &RenderSettings::default()).unwrap();
        (dir, a)
    }

    #[test]
    fn a_process_first_seen_in_its_final_counts_gets_a_column_at_draw_time() {
        let (dir, mut a) = scratch();
        a.sample(&[], 1_000);
        // Four slow waits, then the process exits before the next sample.
        a.retire(&[Histogram::of(Probe::Runqueue, 7, 3, &[2_000_000; 4])]);
        a.sample_new_series(&[], &|_| true, 1_500);
        let counts = |a: &Artifacts| -> Vec<u64> {
            a.columns[&(7, Probe::Runqueue)]
                .iter()
                .map(|(_, h)| h.count)
                .collect()
        };
        assert_eq!(counts(&a), [4]);
        // The next sample counts those events once, not twice.
        a.sample(&[], 2_000);
        assert_eq!(counts(&a), [4, 0]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_series_first_seen_after_the_last_sample_gets_a_column_when_wanted() {
        let (dir, mut a) = scratch();
        a.sample(&[], 1_000);
        let hs = [
            Histogram::of(Probe::Offcpu, 8, 3, &[30_000_000]),
            Histogram::of(Probe::Runqueue, 9, 3, &[3_000_000]),
        ];
        a.sample_new_series(&hs, &|k| *k == (8, Probe::Offcpu), 1_400);
        assert_eq!(
            a.columns.keys().copied().collect::<Vec<_>>(),
            [(8, Probe::Offcpu)]
        );
        // A series that already has columns gets none out of turn.
        a.sample_new_series(&hs, &|_| true, 1_600);
        assert_eq!(a.columns[&(8, Probe::Offcpu)].len(), 1);
        assert_eq!(a.columns[&(9, Probe::Runqueue)].len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_exited_process_gets_its_last_column_and_keeps_it_among_the_newest() {
        let mut a = Artifacts::sidecar(
            "http://127.0.0.1:1",
            None,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .handle()
                .clone(),
        );
        let first = Histogram::of(Probe::TcpSend, 9, 3, &[10_000]);
        a.sample(std::slice::from_ref(&first), 1_000);
        // It exits between samples with two more events; its kernel slot is gone.
        a.retire(&[Histogram::of(
            Probe::TcpSend,
            9,
            3,
            &[10_000, 20_000, 30_000],
        )]);
        a.sample(&[], 2_000);
        let q = &a.columns[&(9, Probe::TcpSend)];
        let counts: Vec<u64> = q.iter().map(|(_, h)| h.count).collect();
        assert_eq!(counts, [1, 2], "the final column holds what it gained");
        for t in 0..WINDOW_COLUMNS as u64 {
            a.sample(&[], 3_000 + t);
        }
        assert_eq!(
            a.columns[&(9, Probe::TcpSend)].len(),
            2,
            "kept as it was, not aged"
        );
        // Only the newest MAX_EXITED_SERIES ended processes keep theirs.
        let storm: Vec<Histogram> = (100..100 + MAX_EXITED_SERIES as u32)
            .map(|pid| Histogram::of(Probe::TcpSend, pid, 3, &[10_000]))
            .collect();
        a.retire(&storm);
        a.sample(&[], 10_000);
        assert!(
            !a.columns.contains_key(&(9, Probe::TcpSend)),
            "the oldest went first"
        );
        assert!(!a.previous.contains_key(&(9, Probe::TcpSend)));
        assert_eq!(a.columns.len(), MAX_EXITED_SERIES);
    }
}
