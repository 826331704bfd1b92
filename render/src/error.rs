//! The renderer's error type: what was wrong with a request, or what failed while rendering
//! or storing a picture.

/// Everything that can go wrong in `kotel-render`.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The request is larger than a configured bound.
    #[error("{what} is {got}, over the limit of {limit}: send less (fewer columns, rows or stacks) or raise the limit")]
    Limit {
        /// Which bound was hit, e.g. `heatmap columns`.
        what: &'static str,
        /// The configured bound.
        limit: u64,
        /// What the request had.
        got: u64,
    },
    /// The request is malformed (bad scale, NaN values, unknown format, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The SVG could not be turned into pixels (a bug in the SVG writer, not the caller's fault).
    #[error("rasterizing the SVG failed: {0}")]
    Raster(String),
    /// The artifact store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl RenderError {
    /// Whether the caller's request was at fault (bad or too big input) rather than the
    /// renderer: maps to INVALID_ARGUMENT / HTTP 400.
    pub fn is_client_error(&self) -> bool {
        matches!(self, RenderError::Limit { .. } | RenderError::Invalid(_))
    }
}
