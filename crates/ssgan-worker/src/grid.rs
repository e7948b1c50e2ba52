//! PNG grids of generated images.

use std::io::Cursor;

use candle_core::{DType, Tensor};
use image::{ImageFormat, Rgb, RgbImage};

use crate::error::{Result, WorkerError};

/// Pixels of background between and around the tiles.
const GAP: u32 = 2;
const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);

/// Encodes images [N, 3, H, W] with values in [0, 1] as a PNG grid of `columns` columns.
pub fn png_grid(images: &Tensor, columns: usize) -> Result<Vec<u8>> {
    let (n, _, h, w) = images.dims4()?;
    let rows = n.div_ceil(columns.max(1));
    let pixels = to_bytes(images)?;
    let tile = |extent: usize, count: usize| count as u32 * (extent as u32 + GAP) + GAP;
    let mut canvas = RgbImage::from_pixel(tile(w, columns), tile(h, rows), BACKGROUND);
    for index in 0..n {
        let origin = origin_of(index, columns, (h, w));
        draw_tile(
            &mut canvas,
            &pixels[index * 3 * h * w..(index + 1) * 3 * h * w],
            (h, w),
            origin,
        );
    }
    let mut out = Cursor::new(Vec::new());
    canvas
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| WorkerError::Image(e.to_string()))?;
    Ok(out.into_inner())
}

fn to_bytes(images: &Tensor) -> Result<Vec<u8>> {
    let scaled = (images.to_dtype(DType::F32)?.clamp(0.0, 1.0)? * 255.0)?.round()?;
    let values = scaled.flatten_all()?.to_vec1::<f32>()?;
    Ok(values.into_iter().map(|v| v as u8).collect())
}

fn origin_of(index: usize, columns: usize, (h, w): (usize, usize)) -> (u32, u32) {
    let (row, col) = ((index / columns) as u32, (index % columns) as u32);
    (GAP + col * (w as u32 + GAP), GAP + row * (h as u32 + GAP))
}

/// Copies one channel-major image into the canvas at `origin` (x, y).
fn draw_tile(canvas: &mut RgbImage, image: &[u8], (h, w): (usize, usize), (x0, y0): (u32, u32)) {
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let at = y * w + x;
            let pixel = Rgb([image[at], image[plane + at], image[2 * plane + at]]);
            canvas.put_pixel(x0 + x as u32, y0 + y as u32, pixel);
        }
    }
}
