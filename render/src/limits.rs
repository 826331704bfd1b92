//! Bounds on render requests. Requests come from the network and from process data, so every
//! dimension that drives memory or CPU is capped; a violation names the limit it hit.

use kotel_proto::render::v1::{Format, RenderFlameRequest, RenderHeatmapRequest};
use prost::Message;

use crate::error::RenderError;

/// Smallest and largest OTLP exponential-histogram scale accepted.
pub const SCALE_RANGE: std::ops::RangeInclusive<i32> = -10..=20;

/// The bounds every request is checked against. `Default` gives the values the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Encoded request size in bytes (protobuf).
    pub max_request_bytes: u64,
    /// Heatmap time columns.
    pub max_columns: u64,
    /// Buckets in one heatmap column.
    pub max_buckets_per_column: u64,
    /// Exemplar markers on one heatmap.
    pub max_markers: u64,
    /// Labels on one heatmap.
    pub max_labels: u64,
    /// Bytes of one label key or value.
    pub max_label_bytes: u64,
    /// Bytes of a title.
    pub max_title_bytes: u64,
    /// Picture width or height in pixels.
    pub max_pixels_per_side: u64,
    /// Folded stacks in one flame graph request.
    pub max_stacks: u64,
    /// Frames in one folded stack.
    pub max_stack_depth: u64,
    /// Bytes of one folded stack string.
    pub max_stack_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 << 20,
            max_columns: 1_000,
            max_buckets_per_column: 400,
            max_markers: 1_000,
            max_labels: 32,
            max_label_bytes: 256,
            max_title_bytes: 256,
            max_pixels_per_side: 4_000,
            max_stacks: 100_000,
            max_stack_depth: 512,
            max_stack_bytes: 16 << 10,
        }
    }
}

fn bound(what: &'static str, limit: u64, got: u64) -> Result<(), RenderError> {
    if got > limit {
        Err(RenderError::Limit { what, limit, got })
    } else {
        Ok(())
    }
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Checks the requested formats: every value must be a known `Format`, else
/// [`RenderError::Invalid`].
pub fn check_formats(formats: &[i32]) -> Result<(), RenderError> {
    bound("formats", 8, len(formats.len()))?;
    for &f in formats {
        if Format::try_from(f).is_err() {
            return Err(RenderError::Invalid(format!(
                "unknown format {f}: use FORMAT_SVG (1) or FORMAT_PNG (2)"
            )));
        }
    }
    Ok(())
}

fn check_size(limits: &Limits, width: u32, height: u32) -> Result<(), RenderError> {
    bound(
        "picture width",
        limits.max_pixels_per_side,
        u64::from(width),
    )?;
    bound(
        "picture height",
        limits.max_pixels_per_side,
        u64::from(height),
    )?;
    if (width != 0 && width < 200) || (height != 0 && height < 120) {
        return Err(RenderError::Invalid(format!(
            "picture size {width}x{height} is too small: use at least 200x120, or 0 for the default"
        )));
    }
    Ok(())
}

/// Checks a heatmap request against `limits` and for malformed values:
/// [`RenderError::Limit`] names the first bound exceeded, [`RenderError::Invalid`] what is
/// malformed.
pub fn check_heatmap(req: &RenderHeatmapRequest, limits: &Limits) -> Result<(), RenderError> {
    bound(
        "request bytes",
        limits.max_request_bytes,
        len(req.encoded_len()),
    )?;
    bound("title bytes", limits.max_title_bytes, len(req.title.len()))?;
    bound("labels", limits.max_labels, len(req.labels.len()))?;
    for (k, v) in &req.labels {
        bound(
            "label bytes",
            limits.max_label_bytes,
            len(k.len().max(v.len())),
        )?;
    }
    bound(
        "heatmap columns",
        limits.max_columns,
        len(req.columns.len()),
    )?;
    for c in &req.columns {
        bound(
            "buckets per heatmap column",
            limits.max_buckets_per_column,
            len(c.bucket_counts.len()),
        )?;
    }
    bound(
        "exemplar markers",
        limits.max_markers,
        len(req.markers.len()),
    )?;
    check_size(limits, req.width, req.height)?;
    validate_heatmap(req)
}

/// Checks a heatmap request for malformed values (scale, column width, overflowing indices,
/// NaN or negative markers, bad id lengths, unknown formats), whatever its size.
pub fn validate_heatmap(req: &RenderHeatmapRequest) -> Result<(), RenderError> {
    check_formats(&req.formats)?;
    if !SCALE_RANGE.contains(&req.scale) {
        return Err(RenderError::Invalid(format!(
            "scale {} is outside the OTLP range {}..={}",
            req.scale,
            SCALE_RANGE.start(),
            SCALE_RANGE.end()
        )));
    }
    if req.column_width_nanos == 0 {
        return Err(RenderError::Invalid(
            "column_width_nanos is 0: give the width of one time column".into(),
        ));
    }
    let span = req
        .column_width_nanos
        .checked_mul(len(req.columns.len()))
        .and_then(|w| w.checked_add(req.start_unix_nano));
    if span.is_none() {
        return Err(RenderError::Invalid(
            "start_unix_nano + columns x column_width_nanos overflows 64 bits".into(),
        ));
    }
    for (i, c) in req.columns.iter().enumerate() {
        if i64::from(c.offset) + len(c.bucket_counts.len()) as i64 > i64::from(i32::MAX) {
            return Err(RenderError::Invalid(format!(
                "column {i}: offset {} + {} buckets overflows the bucket index",
                c.offset,
                c.bucket_counts.len()
            )));
        }
    }
    for (i, m) in req.markers.iter().enumerate() {
        if !m.value_seconds.is_finite() || m.value_seconds < 0.0 {
            return Err(RenderError::Invalid(format!(
                "marker {i}: value_seconds {} is not a finite, non-negative number",
                m.value_seconds
            )));
        }
        if !matches!(m.trace_id.len(), 0 | 16) || !matches!(m.span_id.len(), 0 | 8) {
            return Err(RenderError::Invalid(format!(
                "marker {i}: trace_id must be 16 bytes and span_id 8 bytes (or empty), got {} and {}",
                m.trace_id.len(),
                m.span_id.len()
            )));
        }
    }
    Ok(())
}

/// Checks a flame graph request against `limits` and for malformed values:
/// [`RenderError::Limit`] names the first bound exceeded, [`RenderError::Invalid`] what is
/// malformed.
pub fn check_flame(req: &RenderFlameRequest, limits: &Limits) -> Result<(), RenderError> {
    bound(
        "request bytes",
        limits.max_request_bytes,
        len(req.encoded_len()),
    )?;
    bound("title bytes", limits.max_title_bytes, len(req.title.len()))?;
    bound("folded stacks", limits.max_stacks, len(req.stacks.len()))?;
    for s in &req.stacks {
        bound(
            "folded stack bytes",
            limits.max_stack_bytes,
            len(s.stack.len()),
        )?;
        let depth = s.stack.split(';').count();
        bound("folded stack depth", limits.max_stack_depth, len(depth))?;
    }
    check_size(limits, req.width, 0)?;
    validate_flame(req)
}

/// Checks a flame graph request for malformed values (unknown formats, nothing to draw).
pub fn validate_flame(req: &RenderFlameRequest) -> Result<(), RenderError> {
    check_formats(&req.formats)?;
    let total = req
        .stacks
        .iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s.weight_nanos))
        .filter(|&t| t <= 1 << 62);
    if total.is_none() {
        return Err(RenderError::Invalid(
            "the folded stacks' weights add up to more than 2^62 ns".into(),
        ));
    }
    if !req.stacks.iter().any(|s| s.weight_nanos > 0) {
        return Err(RenderError::Invalid(
            "no folded stack has a weight above 0: nothing to draw".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kotel_proto::render::v1::{ExemplarMarker, FoldedStack, HeatmapColumn};

    fn heatmap() -> RenderHeatmapRequest {
        RenderHeatmapRequest {
            title: "t".into(),
            column_width_nanos: 1_000_000_000,
            columns: vec![HeatmapColumn {
                zero_count: 0,
                offset: -20,
                bucket_counts: vec![1, 2, 3],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn too_many_columns_names_the_limit() {
        let mut req = heatmap();
        req.columns = vec![HeatmapColumn::default(); 1_001];
        let err = check_heatmap(&req, &Limits::default()).unwrap_err();
        assert!(matches!(
            err,
            RenderError::Limit {
                what: "heatmap columns",
                limit: 1_000,
                got: 1_001
            }
        ));
        assert!(err
            .to_string()
            .contains("heatmap columns is 1001, over the limit of 1000"));
    }

    #[test]
    fn too_many_buckets_and_long_titles_are_rejected() {
        let mut req = heatmap();
        req.columns[0].bucket_counts = vec![1; 401];
        let err = check_heatmap(&req, &Limits::default()).unwrap_err();
        assert!(
            err.to_string().contains("buckets per heatmap column"),
            "{err}"
        );
        let mut req = heatmap();
        req.title = "x".repeat(257);
        assert!(check_heatmap(&req, &Limits::default())
            .unwrap_err()
            .to_string()
            .contains("title bytes"));
    }

    #[test]
    fn request_bytes_are_bounded() {
        let limits = Limits {
            max_request_bytes: 64,
            ..Limits::default()
        };
        let mut req = heatmap();
        req.columns[0].bucket_counts = vec![u64::MAX; 20];
        let err = check_heatmap(&req, &limits).unwrap_err();
        assert!(err.to_string().contains("request bytes"), "{err}");
    }

    #[test]
    fn malformed_heatmaps_are_invalid() {
        let limits = Limits::default();
        let mut req = heatmap();
        req.scale = 21;
        assert!(
            matches!(check_heatmap(&req, &limits), Err(RenderError::Invalid(m)) if m.contains("scale 21"))
        );
        let mut req = heatmap();
        req.column_width_nanos = 0;
        assert!(matches!(
            check_heatmap(&req, &limits),
            Err(RenderError::Invalid(_))
        ));
        let mut req = heatmap();
        req.markers.push(ExemplarMarker {
            value_seconds: f64::NAN,
            ..Default::default()
        });
        assert!(
            matches!(check_heatmap(&req, &limits), Err(RenderError::Invalid(m)) if m.contains("NaN"))
        );
        let mut req = heatmap();
        req.formats = vec![7];
        assert!(matches!(
            check_heatmap(&req, &limits),
            Err(RenderError::Invalid(_))
        ));
        let mut req = heatmap();
        req.start_unix_nano = u64::MAX;
        assert!(matches!(
            check_heatmap(&req, &limits),
            Err(RenderError::Invalid(_))
        ));
        assert!(check_heatmap(&heatmap(), &limits).is_ok());
    }

    #[test]
    fn flame_stacks_are_bounded() {
        let limits = Limits::default();
        let stack = |s: String| FoldedStack {
            stack: s,
            weight_nanos: 1,
        };
        let mut req = RenderFlameRequest {
            stacks: vec![stack(vec!["f"; 513].join(";"))],
            ..Default::default()
        };
        let err = check_flame(&req, &limits).unwrap_err();
        assert!(
            err.to_string().contains("folded stack depth is 513"),
            "{err}"
        );
        req.stacks = vec![stack("a".repeat(20_000))];
        assert!(check_flame(&req, &limits)
            .unwrap_err()
            .to_string()
            .contains("folded stack bytes"));
        req.stacks = vec![stack("a".into()); 100_001];
        assert!(check_flame(&req, &limits)
            .unwrap_err()
            .to_string()
            .contains("folded stacks is 100001"));
        req.stacks = vec![FoldedStack {
            stack: "a".into(),
            weight_nanos: 0,
        }];
        assert!(matches!(
            check_flame(&req, &limits),
            Err(RenderError::Invalid(_))
        ));
    }
}
