//! SVG → PNG through usvg and resvg, with a bundled font (DejaVu Sans) so text renders the
//! same on every machine whatever fonts it has installed.

use std::sync::{Arc, OnceLock};

use resvg::tiny_skia;
use resvg::usvg::{self, fontdb};

use crate::error::RenderError;

/// DejaVu Sans, bundled (license in `render/fonts/LICENSE-DejaVu.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
/// The family name of the bundled font.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// The font database, loaded once: the bundled font only, with every generic family
/// (`sans-serif`, `serif`, `monospace`, `cursive`, `fantasy`) mapped to it.
pub fn fontdb() -> Arc<fontdb::Database> {
    static DB: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = fontdb::Database::new();
        db.load_font_source(fontdb::Source::Binary(Arc::new(DEJAVU_SANS)));
        db.set_sans_serif_family(FONT_FAMILY);
        db.set_serif_family(FONT_FAMILY);
        db.set_monospace_family(FONT_FAMILY);
        db.set_cursive_family(FONT_FAMILY);
        db.set_fantasy_family(FONT_FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// Rasterizes `svg` at its own size and encodes it as PNG (fast compression). Returns the PNG
/// bytes, width and height in pixels. Fails with [`RenderError::Raster`] when the SVG does not
/// parse, its pixmap cannot be allocated or the PNG encoder fails.
pub fn svg_to_png(svg: &str) -> Result<(Vec<u8>, u32, u32), RenderError> {
    let opts = usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        fontdb: fontdb(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opts).map_err(|e| RenderError::Raster(e.to_string()))?;
    let size = tree.size().to_int_size();
    let (w, h) = (size.width(), size.height());
    let mut pixmap = tiny_skia::Pixmap::new(w, h)
        .ok_or_else(|| RenderError::Raster(format!("cannot allocate a {w}x{h} pixmap")))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    let png = encode(&mut pixmap)?;
    Ok((png, w, h))
}

/// Encodes a pixmap as 8-bit RGBA PNG with fast compression (un-premultiplying alpha).
fn encode(pixmap: &mut tiny_skia::Pixmap) -> Result<Vec<u8>, RenderError> {
    let (w, h) = (pixmap.width(), pixmap.height());
    let data = pixmap.data_mut();
    for px in data.chunks_exact_mut(4) {
        let a = px[3];
        if a != 0 && a != 255 {
            for c in &mut px[..3] {
                *c = ((u16::from(*c) * 255 + u16::from(a) / 2) / u16::from(a)).min(255) as u8;
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() / 8);
    let err = |e: png::EncodingError| RenderError::Raster(format!("PNG encoding failed: {e}"));
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::FilterType::Up);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(pixmap.data()).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
