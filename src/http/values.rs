//! Raw values of the newest frame where the scientist points:
//! `GET /api/detectors/{name}/values` with one of
//!
//! * `?x=X&y=Y`: the value of one pixel;
//! * `?x0=..&y0=..&x1=..&y1=..`: a line profile, the pixels a Bresenham line from
//!   `(x0, y0)` to `(x1, y1)` visits, both ends included, at most [`MAX_LINE_SAMPLES`];
//! * `?rect=X,Y,W,H`: min, max and mean (and the pixel count) of a rectangle.
//!
//! Coordinates are detector pixels of the full raw frame (ROI, binning and the size
//! limit of the stream do not change them). Mono8 and Mono16 give one number per pixel
//! (Mono16 in raw 16-bit units), Rgb8 `[r, g, b]` (statistics per channel). Errors: 400
//! naming the parameter (missing, malformed, outside the frame, line too long), 404 for
//! an unknown detector, 409 when the detector is not running or has no frame yet (as
//! snapshots and histograms).
//!
//! When the detector's pixel size is known (the `pixel_um` stream parameter), the answer
//! also gives it and the same places in µm from the frame's top-left corner: a point's
//! `x_um`, `y_um` (its pixel's top-left corner), a line's `length_um` (between the two end
//! pixels' centres), a rectangle's `x_um`, `y_um`, `width_um`, `height_um`.

use super::stream::latest_frame;
use super::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::Json;
use lumacast_frame::{Frame, PixelFormat};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most samples one line profile returns.
pub const MAX_LINE_SAMPLES: usize = 4096;

/// The query keys this endpoint reads (`access_token` is the auth layer's).
const KEYS: [&str; 8] = ["x", "y", "x0", "y0", "x1", "y1", "rect", "access_token"];

enum Request {
    Point(u32, u32),
    Line((u32, u32), (u32, u32)),
    Rect(u32, u32, u32, u32),
}

fn int(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "\"{key}\" must be an integer (pixels), got \"{v}\""
            ))
        }),
    }
}

fn parse(q: &HashMap<String, String>) -> Result<Request, ApiError> {
    if let Some(k) = q.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter \"{k}\": use x&y (a pixel), x0&y0&x1&y1 (a line) or \
             rect=x,y,w,h (a rectangle)"
        )));
    }
    let point = ["x", "y"].iter().any(|k| q.contains_key(*k));
    let line = ["x0", "y0", "x1", "y1"].iter().any(|k| q.contains_key(*k));
    let rect = q.contains_key("rect");
    match (point, line, rect) {
        (false, false, false) => Err(ApiError::BadRequest(
            "say where: x&y (a pixel), x0&y0&x1&y1 (a line) or rect=x,y,w,h (a rectangle)".into(),
        )),
        (true, false, false) => {
            let need = |k: &str| {
                int(q, k)?.ok_or_else(|| ApiError::BadRequest(format!("\"{k}\" is missing")))
            };
            Ok(Request::Point(
                coord("x", need("x")?)?,
                coord("y", need("y")?)?,
            ))
        }
        (false, true, false) => {
            let need = |k: &str| -> Result<u32, ApiError> {
                coord(
                    k,
                    int(q, k)?.ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "\"{k}\" is missing (a line needs x0, y0, x1, y1)"
                        ))
                    })?,
                )
            };
            Ok(Request::Line(
                (need("x0")?, need("y0")?),
                (need("x1")?, need("y1")?),
            ))
        }
        (false, false, true) => {
            let text = &q["rect"];
            let parts: Vec<&str> = text.split(',').map(str::trim).collect();
            let nums: Option<Vec<i64>> = parts.iter().map(|p| p.parse().ok()).collect();
            match nums.as_deref() {
                Some(&[x, y, w, h]) if x >= 0 && y >= 0 && w > 0 && h > 0 => Ok(Request::Rect(
                    coord("rect", x)?,
                    coord("rect", y)?,
                    coord("rect", w)?,
                    coord("rect", h)?,
                )),
                _ => Err(ApiError::BadRequest(format!(
                    "\"rect\" must be x,y,w,h (integers, x and y >= 0, w and h >= 1), got \"{text}\""
                ))),
            }
        }
        _ => Err(ApiError::BadRequest(
            "ask for one thing: x&y, or x0&y0&x1&y1, or rect".into(),
        )),
    }
}

fn coord(key: &str, v: i64) -> Result<u32, ApiError> {
    u32::try_from(v).map_err(|_| {
        ApiError::BadRequest(format!(
            "\"{key}\" = {v} is outside the frame (negative or too large)"
        ))
    })
}

fn inside(key_x: &str, key_y: &str, x: u32, y: u32, f: &Frame) -> Result<(), ApiError> {
    if x >= f.width {
        return Err(ApiError::BadRequest(format!(
            "\"{key_x}\" = {x} is outside the frame: columns are 0..={}",
            f.width - 1
        )));
    }
    if y >= f.height {
        return Err(ApiError::BadRequest(format!(
            "\"{key_y}\" = {y} is outside the frame: rows are 0..={}",
            f.height - 1
        )));
    }
    Ok(())
}

/// The value of pixel (x, y), inside the frame: one number, or `[r, g, b]`.
fn value(f: &Frame, x: u32, y: u32) -> Value {
    let i = y as usize * f.width as usize + x as usize;
    match f.format {
        PixelFormat::Mono8 => json!(f.data[i]),
        PixelFormat::Mono16 { .. } => json!(u16::from_le_bytes([f.data[2 * i], f.data[2 * i + 1]])),
        PixelFormat::Rgb8 => json!(&f.data[3 * i..3 * i + 3]),
    }
}

/// The pixels of a Bresenham line from `a` to `b`, both included.
fn bresenham(a: (u32, u32), b: (u32, u32)) -> Vec<(u32, u32)> {
    let (mut x, mut y) = (i64::from(a.0), i64::from(a.1));
    let (x1, y1) = (i64::from(b.0), i64::from(b.1));
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    let mut out = Vec::with_capacity((dx.max(-dy) + 1) as usize);
    loop {
        out.push((x as u32, y as u32));
        if x == x1 && y == y1 {
            return out;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Min, max and sum per channel of a rectangle inside the frame.
fn rect_stats(f: &Frame, x: u32, y: u32, w: u32, h: u32) -> (Vec<u32>, Vec<u32>, Vec<u64>) {
    let ch = if f.format == PixelFormat::Rgb8 { 3 } else { 1 };
    let (mut lo, mut hi, mut sum) = (vec![u32::MAX; ch], vec![0u32; ch], vec![0u64; ch]);
    let bpp = f.format.bytes_per_pixel();
    for row in y..y + h {
        let start = (row as usize * f.width as usize + x as usize) * bpp;
        let line = &f.data[start..start + w as usize * bpp];
        let mut take = |c: usize, v: u32| {
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
            sum[c] += u64::from(v);
        };
        match f.format {
            PixelFormat::Mono8 => line.iter().for_each(|&v| take(0, u32::from(v))),
            PixelFormat::Mono16 { .. } => line
                .chunks_exact(2)
                .for_each(|c| take(0, u32::from(u16::from_le_bytes([c[0], c[1]])))),
            PixelFormat::Rgb8 => line.chunks_exact(3).for_each(|p| {
                for (c, &v) in p.iter().enumerate() {
                    take(c, u32::from(v));
                }
            }),
        }
    }
    (lo, hi, sum)
}

/// One number for a mono frame, an `[r, g, b]` array for an RGB one.
fn per_channel<T: serde::Serialize>(v: Vec<T>) -> Value {
    if v.len() == 1 {
        json!(v[0])
    } else {
        json!(v)
    }
}

/// `v` µm, rounded to a picometre (no binary fractions like 19.500000000000004 in the
/// answer).
fn um(v: f64) -> Value {
    json!((v * 1e6).round() / 1e6)
}

/// `GET /api/detectors/{name}/values`: see the module documentation.
pub async fn values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    state.detectors.resolve(Some(&name))?;
    let req = parse(&q)?;
    let pixel_um = state.detectors.params(&name)?.0.get().pixel_um;
    let (frame, _) = latest_frame(&state, &name)?;
    let captured_us = frame
        .captured_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut out = json!({
        "status": "success",
        "detector": name,
        "seq": frame.seq,
        "captured_at_us": captured_us,
        "frame": {
            "width": frame.width,
            "height": frame.height,
            "pixel_format": frame.format.name(),
            "max_value": frame.format.max_value(),
        },
        "pixel_um": pixel_um,
    });
    match req {
        Request::Point(x, y) => {
            inside("x", "y", x, y, &frame)?;
            out["kind"] = json!("point");
            out["x"] = json!(x);
            out["y"] = json!(y);
            out["value"] = value(&frame, x, y);
            if let Some(p) = pixel_um {
                out["x_um"] = um(f64::from(x) * p);
                out["y_um"] = um(f64::from(y) * p);
            }
        }
        Request::Line(a, b) => {
            inside("x0", "y0", a.0, a.1, &frame)?;
            inside("x1", "y1", b.0, b.1, &frame)?;
            let n = a.0.abs_diff(b.0).max(a.1.abs_diff(b.1)) as usize + 1;
            if n > MAX_LINE_SAMPLES {
                return Err(ApiError::BadRequest(format!(
                    "the line from (x0, y0) to (x1, y1) has {n} samples, over the limit of \
                     {MAX_LINE_SAMPLES}"
                )));
            }
            let values: Vec<Value> = bresenham(a, b)
                .into_iter()
                .map(|(x, y)| value(&frame, x, y))
                .collect();
            out["kind"] = json!("line");
            out["from"] = json!([a.0, a.1]);
            out["to"] = json!([b.0, b.1]);
            out["method"] = json!("bresenham");
            out["count"] = json!(values.len());
            out["values"] = Value::Array(values);
            if let Some(p) = pixel_um {
                let (dx, dy) = (f64::from(a.0.abs_diff(b.0)), f64::from(a.1.abs_diff(b.1)));
                out["length_um"] = um(dx.hypot(dy) * p);
            }
        }
        Request::Rect(x, y, w, h) => {
            inside("rect", "rect", x, y, &frame)?;
            if u64::from(x) + u64::from(w) > u64::from(frame.width)
                || u64::from(y) + u64::from(h) > u64::from(frame.height)
            {
                return Err(ApiError::BadRequest(format!(
                    "\"rect\" {w}x{h} at ({x}, {y}) does not fit in the {}x{} frame",
                    frame.width, frame.height
                )));
            }
            let f = frame.clone();
            let (lo, hi, sum) =
                tokio::task::spawn_blocking(move || rect_stats(&f, x, y, w, h)).await?;
            let count = u64::from(w) * u64::from(h);
            let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / count as f64).collect();
            out["kind"] = json!("rect");
            out["rect"] = json!({"x": x, "y": y, "width": w, "height": h});
            out["count"] = json!(count);
            out["min"] = per_channel(lo);
            out["max"] = per_channel(hi);
            out["mean"] = per_channel(mean);
            if let Some(p) = pixel_um {
                out["x_um"] = um(f64::from(x) * p);
                out["y_um"] = um(f64::from(y) * p);
                out["width_um"] = um(f64::from(w) * p);
                out["height_um"] = um(f64::from(h) * p);
            }
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::bresenham;

    #[test]
    fn bresenham_includes_both_ends() {
        assert_eq!(bresenham((0, 0), (3, 0)), [(0, 0), (1, 0), (2, 0), (3, 0)]);
        assert_eq!(bresenham((2, 2), (0, 0)), [(2, 2), (1, 1), (0, 0)]);
        assert_eq!(bresenham((5, 5), (5, 5)), [(5, 5)]);
        let l = bresenham((0, 0), (10, 3));
        assert_eq!(l.len(), 11);
        assert_eq!(l[10], (10, 3));
    }
}
