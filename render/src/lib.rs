//! kotel's renderer: latency heatmaps and off-CPU flame graphs as SVG and PNG, kept in a
//! content-addressed artifact store and served over gRPC and HTTP. The collector can also use
//! [`Renderer`] in-process, without a server.
//!
//! ```no_run
//! use kotel_render::{Renderer, RendererConfig};
//! use kotel_proto::render::v1::{Format, HeatmapColumn, RenderHeatmapRequest};
//!
//! let renderer = Renderer::new(RendererConfig::new("/tmp/kotel-pictures", "file:///tmp/kotel-pictures"))?;
//! let resp = renderer.render_heatmap(&RenderHeatmapRequest {
//!     title: "nginx (pid 42) writev".into(),
//!     scale: 3,
//!     start_unix_nano: 1_714_564_800_000_000_000,
//!     column_width_nanos: 1_000_000_000,
//!     columns: vec![HeatmapColumn { zero_count: 0, offset: -100, bucket_counts: vec![1, 5, 2] }],
//!     formats: vec![Format::Svg as i32, Format::Png as i32],
//!     ..Default::default()
//! })?;
//! println!("{}", resp.artifacts[0].url); // file:///tmp/kotel-pictures/<sha256>.svg
//! # Ok::<(), kotel_render::RenderError>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod escape;
pub mod flame;
pub mod heatmap;
pub mod limits;
pub mod png;
pub mod report;
pub mod server;
pub mod store;

use std::path::PathBuf;

use kotel_proto::render::v1::{
    Artifact, Format, RenderFlameRequest, RenderHeatmapRequest, RenderResponse,
};
use sha2::{Digest, Sha256};

pub use error::RenderError;
pub use flame::flame_svg;
pub use heatmap::{heatmap_svg, HeatmapOptions};
pub use limits::Limits;
pub use png::svg_to_png;
pub use store::{Ext, Store, StoreConfig, StoreError};

/// How to build a [`Renderer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendererConfig {
    /// Directory of the artifact store (created if missing).
    pub store_dir: PathBuf,
    /// Prefix of artifact URLs: an artifact's URL is `<url_prefix>/<id>.<ext>` (a trailing
    /// `/` is ignored). A plain string: `http://host:4321/artifacts`, `file:///abs/dir`, or a
    /// relative path such as `.` or `pictures`.
    pub url_prefix: String,
    /// Size cap and TTL of the store.
    pub store: StoreConfig,
    /// Request bounds.
    pub limits: Limits,
    /// Heatmap options (the trace link template).
    pub heatmap: HeatmapOptions,
}

impl RendererConfig {
    /// A config with default limits, store cap and TTL, and no trace links.
    pub fn new(store_dir: impl Into<PathBuf>, url_prefix: impl Into<String>) -> Self {
        RendererConfig {
            store_dir: store_dir.into(),
            url_prefix: url_prefix.into(),
            store: StoreConfig::default(),
            limits: Limits::default(),
            heatmap: HeatmapOptions::default(),
        }
    }
}

/// Renders requests into the artifact store and describes the results. Synchronous and
/// CPU-bound (a 1000×400 heatmap as SVG+PNG takes a few milliseconds); safe to share between
/// threads. Async callers should call it from a blocking task.
#[derive(Debug)]
pub struct Renderer {
    store: Store,
    url_prefix: String,
    limits: Limits,
    heatmap: HeatmapOptions,
    /// Boxed: only the sidecar fills it, and a `Renderer` stays small to move.
    recent: Box<report::Recent>,
}

impl Renderer {
    /// Opens the store and checks the options (the trace link template must be http(s) or a
    /// path). Fails with [`RenderError::Invalid`] for a bad template and [`RenderError::Store`]
    /// when the store directory cannot be created.
    pub fn new(config: RendererConfig) -> Result<Renderer, RenderError> {
        config.heatmap.validate()?;
        Ok(Renderer {
            store: Store::open(config.store_dir, config.store)?,
            url_prefix: config.url_prefix.trim_end_matches('/').to_string(),
            limits: config.limits,
            heatmap: config.heatmap,
            recent: Box::default(),
        })
    }

    /// The newest requests per series, for the sidecar's report page (kept once enabled).
    pub fn recent(&self) -> &report::Recent {
        &self.recent
    }

    /// The heatmap options (the trace link template).
    pub fn heatmap_options(&self) -> &HeatmapOptions {
        &self.heatmap
    }

    /// The artifact store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The request bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The URL of the artifact `<id>.<ext>`: `<url_prefix>/<id>.<ext>`. The id is not checked.
    pub fn url(&self, id: &str, ext: Ext) -> String {
        format!("{}/{id}.{}", self.url_prefix, ext.as_str())
    }

    /// Checks, renders and stores a heatmap; one artifact per requested format (SVG when none).
    /// Fails with [`RenderError::Limit`] for a request over [`Limits`],
    /// [`RenderError::Invalid`] for a malformed one, [`RenderError::Raster`] when the PNG cannot
    /// be made and [`RenderError::Store`] when the store cannot write.
    pub fn render_heatmap(
        &self,
        req: &RenderHeatmapRequest,
    ) -> Result<RenderResponse, RenderError> {
        limits::check_heatmap(req, &self.limits)?;
        let svg = heatmap_svg(req, &self.heatmap)?;
        let (w, h) = heatmap::heatmap_size(req);
        let resp = self.finish(svg, (w, h), &req.formats, req.include_bytes)?;
        self.recent.heatmap(req, &resp);
        Ok(resp)
    }

    /// Checks, renders and stores a flame graph; one artifact per requested format (SVG when
    /// none). Fails as [`render_heatmap`](Renderer::render_heatmap) does.
    pub fn render_flame(&self, req: &RenderFlameRequest) -> Result<RenderResponse, RenderError> {
        limits::check_flame(req, &self.limits)?;
        let svg = flame_svg(req)?;
        let size = flame::svg_size(&svg)
            .ok_or_else(|| RenderError::Raster("flame graph SVG has no size".into()))?;
        let resp = self.finish(svg, size, &req.formats, req.include_bytes)?;
        self.recent.flame(req, &resp);
        Ok(resp)
    }

    fn finish(
        &self,
        svg: String,
        (w, h): (u32, u32),
        formats: &[i32],
        include_bytes: bool,
    ) -> Result<RenderResponse, RenderError> {
        let id = escape::hex(&Sha256::digest(svg.as_bytes()));
        let mut wanted: Vec<Ext> = formats
            .iter()
            .map(|&f| match Format::try_from(f) {
                Ok(Format::Png) => Ext::Png,
                _ => Ext::Svg,
            })
            .collect();
        if wanted.is_empty() {
            wanted.push(Ext::Svg);
        }
        let mut seen = Vec::with_capacity(2);
        let mut artifacts = Vec::with_capacity(wanted.len());
        for ext in wanted {
            if seen.contains(&ext) {
                continue;
            }
            seen.push(ext);
            // An identical picture is not rasterized twice: reuse the stored PNG.
            let bytes = match ext {
                Ext::Svg => svg.as_bytes().to_vec(),
                Ext::Png => match self.store.get(&format!("{id}.png"))? {
                    Some((bytes, _)) => bytes,
                    None => svg_to_png(&svg)?.0,
                },
            };
            self.store.put(&id, ext, &bytes)?;
            artifacts.push(Artifact {
                id: id.clone(),
                media_type: ext.media_type().into(),
                url: self.url(&id, ext),
                width: w,
                height: h,
                size_bytes: bytes.len() as u64,
                content: if include_bytes { bytes } else { Vec::new() },
            });
        }
        Ok(RenderResponse { artifacts })
    }
}
