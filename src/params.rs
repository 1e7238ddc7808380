//! Stream parameters of a detector: display mapping, geometry, rate and encoder
//! settings, changeable while viewers watch.
//!
//! One [`ParamsCell`] per configured detector holds the parameters in force (they survive
//! a stop and restart of the detector). HTTP handlers validate a change completely before
//! storing it ([`StreamParams::patched`]), so a rejected request changes nothing; the
//! encoder thread notices a new version at its next frame and applies it there (it owns
//! the mapper and the encoder).
//!
//! Two spellings reach this module: the clean JSON API (`PATCH /api/detectors/{name}/params`,
//! unknown fields rejected) and ImSwitch's `setStreamParameters` (its names mapped where
//! they have a meaning here, the others reported as ignored).

use lumacast_frame::{Colormap, DisplaySettings, Geometry, PixelFormat, Roi, WindowMode};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Range of `bitrate` (bit/s) accepted here; openh264 takes more, viewers do not.
pub const BITRATE_RANGE: (u32, u32) = (100_000, 50_000_000);
/// Range of `keyint` (frames between periodic IDRs; 0 = only the first and requested ones).
pub const KEYINT_RANGE: (u32, u32) = (0, 1000);
/// Range of `max_fps`.
pub const MAX_FPS_RANGE: (f64, f64) = (0.1, 240.0);
/// Largest `pixel_um` (µm per detector pixel) accepted: a metre per pixel.
pub const MAX_PIXEL_UM: f64 = 1e6;

/// A rejected parameter: which field and why. Maps to HTTP 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// What a change is validated against: the detector's frames.
#[derive(Debug, Clone, Copy)]
pub struct SourceShape {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

/// The parameters in force for one detector.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamParams {
    pub display: DisplaySettings,
    pub geometry: Geometry,
    /// Frames per second sent at most (`None`: the detector's own rate).
    pub max_fps: Option<f64>,
    /// Target bitrate in bit/s (`None`: chosen from the picture size).
    pub bitrate: Option<u32>,
    /// Frames between periodic IDRs (0 = only the first and requested ones).
    pub keyint: u32,
    /// The rendition ladder as size divisors, best first: `[1, 2, 4]` is full, half and
    /// quarter size; `[1]` turns the ladder off (every viewer gets the full size).
    pub ladder: Vec<u32>,
    /// The size of one detector pixel in the sample, µm (`None`: unknown). Not used to
    /// encode: viewers draw a scale bar with it and the values answers give lengths in µm.
    pub pixel_um: Option<f64>,
}

/// The ladder a detector starts with: full, half and quarter size.
pub const DEFAULT_LADDER: [u32; 3] = [1, 2, 4];

impl StreamParams {
    /// Defaults for a detector, with the bitrate (0 = from the picture size) and keyframe
    /// interval (0 = only the first and requested IDRs) from its configuration.
    pub fn new(bitrate: u32, keyint: u32, ladder: Vec<u32>) -> Self {
        StreamParams {
            display: DisplaySettings::default(),
            geometry: Geometry::default(),
            max_fps: None,
            bitrate: (bitrate > 0).then_some(bitrate),
            keyint,
            ladder,
            pixel_um: None,
        }
    }

    /// The parameters as the API shows them (one flat object, the same names PATCH takes).
    pub fn to_json(&self) -> Value {
        let (mode, min, max, low, high) = match self.display.window {
            WindowMode::Full => ("full", None, None, 0.1, 99.9),
            WindowMode::Manual { min, max } => ("manual", Some(min), Some(max), 0.1, 99.9),
            WindowMode::Auto {
                low_percent,
                high_percent,
            } => ("auto", None, None, low_percent, high_percent),
        };
        json!({
            "window_mode": mode,
            "window_min": min,
            "window_max": max,
            "low_percent": low,
            "high_percent": high,
            // As the decimal it was set from: 0.45, not f32 0.45 widened to
            // 0.44999998807907104.
            "gamma": self.display.gamma.to_string().parse::<f64>().ok(),
            "colormap": self.display.colormap.name(),
            "roi": self.geometry.roi.map(|r| json!({"x": r.x, "y": r.y, "width": r.width, "height": r.height})),
            "binning": self.geometry.binning,
            "max_width": self.geometry.max_width,
            "max_height": self.geometry.max_height,
            "max_fps": self.max_fps,
            "bitrate": self.bitrate,
            "keyint": self.keyint,
            "ladder": self.ladder,
            "pixel_um": self.pixel_um,
        })
    }

    /// These parameters with `patch` applied, fully validated against `shape`; `self` is
    /// untouched either way. `null` resets a field to its default. Unknown fields are
    /// rejected.
    pub fn patched(
        &self,
        patch: &Map<String, Value>,
        shape: SourceShape,
    ) -> Result<Self, ParamError> {
        let mut p = self.clone();
        let mut window_min: Option<Option<u32>> = None;
        let mut window_max: Option<Option<u32>> = None;
        let mut mode: Option<String> = None;
        let (mut low, mut high) = match p.display.window {
            WindowMode::Auto {
                low_percent,
                high_percent,
            } => (low_percent, high_percent),
            _ => (0.1, 99.9),
        };
        let mut percent_given = false;
        for (key, v) in patch {
            let k = key.as_str();
            match k {
                "window_mode" => {
                    mode = Some(match v {
                        Value::Null => "full".into(),
                        Value::String(s) => s.to_ascii_lowercase(),
                        _ => return Err(bad(k, "must be \"full\", \"manual\" or \"auto\"")),
                    })
                }
                "window_min" => window_min = Some(opt_u32(k, v)?),
                "window_max" => window_max = Some(opt_u32(k, v)?),
                "low_percent" => {
                    low = opt_f64(k, v)?.unwrap_or(0.1);
                    percent_given = true;
                }
                "high_percent" => {
                    high = opt_f64(k, v)?.unwrap_or(99.9);
                    percent_given = true;
                }
                "auto" => {
                    // Shorthand: `"auto": true` = auto window, `false` = full range.
                    match v {
                        Value::Bool(true) => mode = Some("auto".into()),
                        Value::Bool(false) | Value::Null => mode = Some("full".into()),
                        _ => return Err(bad(k, "must be true or false")),
                    }
                }
                "gamma" => p.display.gamma = opt_f64(k, v)?.unwrap_or(1.0) as f32,
                "colormap" => {
                    p.display.colormap = match v {
                        Value::Null => Colormap::Gray,
                        Value::String(s) => s.parse().map_err(|_| {
                            bad(
                                k,
                                format!(
                                    "unknown colour map \"{s}\" (known: {})",
                                    Colormap::all()
                                        .iter()
                                        .map(|c| c.name())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })?,
                        _ => return Err(bad(k, "must be a colour map name")),
                    }
                }
                "roi" => p.geometry.roi = parse_roi(k, v)?,
                "binning" => p.geometry.binning = opt_u32(k, v)?.unwrap_or(1),
                "max_width" => p.geometry.max_width = opt_u32(k, v)?.filter(|w| *w > 0),
                "max_height" => p.geometry.max_height = opt_u32(k, v)?.filter(|h| *h > 0),
                "max_fps" => {
                    p.max_fps = opt_f64(k, v)?.filter(|f| *f != 0.0);
                    if let Some(f) = p.max_fps {
                        if !(MAX_FPS_RANGE.0..=MAX_FPS_RANGE.1).contains(&f) {
                            return Err(bad(
                                k,
                                format!("{f} is outside {}..={}", MAX_FPS_RANGE.0, MAX_FPS_RANGE.1),
                            ));
                        }
                    }
                }
                "bitrate" => {
                    p.bitrate = opt_u32(k, v)?.filter(|b| *b > 0);
                    if let Some(b) = p.bitrate {
                        if !(BITRATE_RANGE.0..=BITRATE_RANGE.1).contains(&b) {
                            return Err(bad(
                                k,
                                format!(
                                    "{b} bit/s is outside {}..={}",
                                    BITRATE_RANGE.0, BITRATE_RANGE.1
                                ),
                            ));
                        }
                    }
                }
                "keyint" => {
                    let n = opt_u32(k, v)?.unwrap_or(60);
                    if !(KEYINT_RANGE.0..=KEYINT_RANGE.1).contains(&n) {
                        return Err(bad(
                            k,
                            format!("{n} is outside {}..={}", KEYINT_RANGE.0, KEYINT_RANGE.1),
                        ));
                    }
                    p.keyint = n;
                }
                "ladder" => p.ladder = parse_ladder(k, v)?,
                "pixel_um" => {
                    p.pixel_um = opt_f64(k, v)?.map(|u| check_pixel_um(k, u)).transpose()?
                }
                _ => return Err(bad(k, "unknown parameter")),
            }
        }

        // The window: an explicit mode wins; a bare min or max means "manual".
        let (cur_min, cur_max) = match p.display.window {
            WindowMode::Manual { min, max } => (min, max),
            _ => (0, shape.format.max_value()),
        };
        let mode = mode.or_else(|| {
            (window_min.is_some() || window_max.is_some()).then(|| "manual".to_string())
        });
        match mode.as_deref() {
            // Percentiles only mean something for the auto window: giving them selects it.
            None if percent_given => {
                p.display.window = WindowMode::Auto {
                    low_percent: low,
                    high_percent: high,
                }
            }
            None => {}
            Some("full") => p.display.window = WindowMode::Full,
            Some("manual") => {
                let min = window_min.map_or(cur_min, |m| m.unwrap_or(0));
                let max = window_max.map_or(cur_max, |m| m.unwrap_or(shape.format.max_value()));
                p.display.window = WindowMode::Manual { min, max };
            }
            Some("auto") => {
                p.display.window = WindowMode::Auto {
                    low_percent: low,
                    high_percent: high,
                }
            }
            Some(other) => {
                return Err(bad(
                    "window_mode",
                    format!("\"{other}\" is not one of \"full\", \"manual\", \"auto\""),
                ))
            }
        }
        p.display
            .validate(shape.format)
            .map_err(frame_error_to_param)?;
        p.geometry
            .validate(shape.width, shape.height)
            .map_err(frame_error_to_param)?;
        Ok(p)
    }
}

/// `pixel_um` (µm per detector pixel): finite, above 0, at most [`MAX_PIXEL_UM`].
pub fn check_pixel_um(field: &str, um: f64) -> Result<f64, ParamError> {
    if um.is_finite() && um > 0.0 && um <= MAX_PIXEL_UM {
        Ok(um)
    } else {
        Err(bad(
            field,
            format!("{um} µm per pixel is outside (0, {MAX_PIXEL_UM}]"),
        ))
    }
}

fn frame_error_to_param(e: lumacast_frame::FrameError) -> ParamError {
    match e {
        lumacast_frame::FrameError::InvalidParam { field, message } => bad(field, message),
        other => bad("params", other.to_string()),
    }
}

fn opt_u32(field: &str, v: &Value) -> Result<Option<u32>, ParamError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    return Err(bad(field, format!("{i} is negative")));
                }
                u32::try_from(i)
                    .map(Some)
                    .map_err(|_| bad(field, format!("{i} is too large")))
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => {
                        Ok(Some(f as u32))
                    }
                    Some(f) if f < 0.0 => Err(bad(field, format!("{f} is negative"))),
                    _ => Err(bad(field, format!("{n} is not a whole number"))),
                }
            }
        }
        _ => Err(bad(field, format!("must be a number, got {v}"))),
    }
}

fn opt_f64(field: &str, v: &Value) -> Result<Option<f64>, ParamError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(bad(field, format!("{n} is not a finite number"))),
        },
        _ => Err(bad(field, format!("must be a number, got {v}"))),
    }
}

fn parse_roi(field: &str, v: &Value) -> Result<Option<Roi>, ParamError> {
    let get = |o: &Map<String, Value>, k: &str| -> Result<u32, ParamError> {
        let sub = format!("{field}.{k}");
        opt_u32(&sub, o.get(k).unwrap_or(&Value::Null))?.ok_or_else(|| bad(&sub, "is required"))
    };
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(Roi {
            x: get(o, "x")?,
            y: get(o, "y")?,
            width: get(o, "width")?,
            height: get(o, "height")?,
        })),
        Value::Array(a) if a.len() == 4 => {
            let n = |i: usize| {
                opt_u32(field, &a[i])?.ok_or_else(|| bad(field, "must be [x, y, width, height]"))
            };
            Ok(Some(Roi {
                x: n(0)?,
                y: n(1)?,
                width: n(2)?,
                height: n(3)?,
            }))
        }
        _ => Err(bad(
            field,
            "must be {\"x\",\"y\",\"width\",\"height\"}, [x, y, width, height] or null",
        )),
    }
}

/// Translates ImSwitch's `setStreamParameters` names into ours. Returns the patch and
/// the names that have no meaning here (reported back, not rejected: ImSwitch clients
/// send their whole parameter set, including JPEG and STUN settings).
///
/// A body may carry both spellings of one setting (ImSwitch's frontend sends back the
/// `params` we answered, which hold both): ours is the more precise one and wins.
pub fn from_imswitch(
    params: &Map<String, Value>,
    shape: SourceShape,
) -> Result<(Map<String, Value>, Vec<String>), ParamError> {
    const OURS: &[&str] = &[
        "window_mode",
        "window_min",
        "window_max",
        "low_percent",
        "high_percent",
        "auto",
        "gamma",
        "colormap",
        "roi",
        "binning",
        "max_width",
        "max_height",
        "max_fps",
        "bitrate",
        "keyint",
        "ladder",
        "pixel_um",
    ];
    let mut patch = Map::new();
    let mut ignored = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "throttle_ms" => {
                // Minimum time between frames → a frame-rate cap. Below 1000/240 ms the
                // cap is above any rate sent here: no cap.
                let ms = opt_f64(k, v)?;
                match ms {
                    Some(ms) if ms < 0.0 => return Err(bad(k, format!("{ms} is negative"))),
                    Some(ms) if ms > 1000.0 / MAX_FPS_RANGE.0 => {
                        return Err(bad(
                            k,
                            format!(
                                "{ms} ms is over {} ms (a frame every 10 s)",
                                1000.0 / MAX_FPS_RANGE.0
                            ),
                        ))
                    }
                    Some(ms) if ms >= 1000.0 / MAX_FPS_RANGE.1 => {
                        patch.insert("max_fps".into(), json!(1000.0 / ms));
                    }
                    _ => {
                        patch.insert("max_fps".into(), Value::Null);
                    }
                }
            }
            "subsampling_factor" => {
                // ImSwitch's "no subsampling" is 1; 0 and null mean the same here.
                let f = opt_u32(k, v)?.filter(|f| *f > 0).unwrap_or(1);
                if f > lumacast_frame::MAX_BINNING {
                    return Err(bad(
                        k,
                        format!("{f} is outside 1..={}", lumacast_frame::MAX_BINNING),
                    ));
                }
                patch.insert("binning".into(), json!(f));
            }
            "crop_size" => {
                // A centred square (or [width, height]) crop.
                let (w, h) = match v {
                    Value::Null => {
                        patch.insert("roi".into(), Value::Null);
                        continue;
                    }
                    Value::Array(a) if a.len() == 2 => (
                        opt_u32(k, &a[0])?.unwrap_or(0),
                        opt_u32(k, &a[1])?.unwrap_or(0),
                    ),
                    _ => {
                        let n = opt_u32(k, v)?.unwrap_or(0);
                        (n, n)
                    }
                };
                if w == 0 || h == 0 {
                    patch.insert("roi".into(), Value::Null);
                } else if w > shape.width || h > shape.height {
                    return Err(bad(
                        k,
                        format!(
                            "{w}x{h} is larger than the {}x{} frame",
                            shape.width, shape.height
                        ),
                    ));
                } else {
                    patch.insert(
                        "roi".into(),
                        json!({"x": (shape.width - w) / 2, "y": (shape.height - h) / 2, "width": w, "height": h}),
                    );
                }
            }
            "bitrate_kbps" => {
                let kb = opt_f64(k, v)?;
                if let Some(kb) = kb.filter(|kb| *kb < 0.0) {
                    return Err(bad(k, format!("{kb} is negative")));
                }
                patch.insert("bitrate".into(), json!(kb.map(|kb| (kb * 1000.0) as u64)));
            }
            name if OURS.contains(&name) => {}
            other => ignored.push(other.to_string()),
        }
    }
    // Our own names last: they override ImSwitch's spelling of the same setting.
    for (k, v) in params {
        if OURS.contains(&k.as_str()) {
            patch.insert(k.clone(), v.clone());
        }
    }
    Ok((patch, ignored))
}

impl StreamParams {
    /// [`StreamParams::to_json`] plus ImSwitch's names for the same settings
    /// (`subsampling_factor`, `throttle_ms`, `crop_size`) and `protocol`, so that
    /// ImSwitch's frontend can read them and send them back unchanged.
    /// `max_width` keeps our meaning: `null` is no limit (ImSwitch writes 0; both are
    /// accepted). `crop_size` is `null` when the ROI is not a centred square.
    pub fn to_imswitch_json(&self, shape: SourceShape) -> Value {
        let mut v = self.to_json();
        let throttle_ms = self.max_fps.map_or(0, |f| (1000.0 / f).round() as u64);
        let crop_size = match self.geometry.roi {
            None => json!(0),
            Some(r)
                if r.width == r.height
                    && shape.width != u32::MAX
                    && r.width <= shape.width
                    && r.height <= shape.height
                    && r.x == (shape.width - r.width) / 2
                    && r.y == (shape.height - r.height) / 2 =>
            {
                json!(r.width)
            }
            Some(_) => Value::Null,
        };
        if let Value::Object(m) = &mut v {
            m.insert("protocol".into(), json!("webrtc"));
            m.insert("subsampling_factor".into(), json!(self.geometry.binning));
            m.insert("throttle_ms".into(), json!(throttle_ms));
            m.insert("crop_size".into(), crop_size);
        }
        v
    }
}

/// The parameters of one detector, shared between HTTP handlers (writers) and its encoder
/// thread (reader). A version counter lets the encoder thread check for a change with one
/// atomic load per frame.
#[derive(Debug)]
pub struct ParamsCell {
    current: Mutex<StreamParams>,
    version: AtomicU64,
}

impl ParamsCell {
    pub fn new(params: StreamParams) -> Self {
        ParamsCell {
            current: Mutex::new(params),
            version: AtomicU64::new(1),
        }
    }

    pub fn get(&self) -> StreamParams {
        self.lock().clone()
    }

    /// Applies `f` to the parameters in force; they change only if it succeeds.
    pub fn update<E>(
        &self,
        f: impl FnOnce(&StreamParams) -> Result<StreamParams, E>,
    ) -> Result<StreamParams, E> {
        let mut cur = self.lock();
        let new = f(&cur)?;
        if new != *cur {
            *cur = new.clone();
            self.version.fetch_add(1, Ordering::Release);
        }
        Ok(new)
    }

    /// Increases with every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamParams> {
        // Replaced as a whole under the lock: never half-written.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `ladder`: `null` (the default), `false` or `[1]` (off), `true` (the default), or the
/// size divisors best first: `[1, 2, 4]`. The first must be 1 (the top rendition is the
/// configured picture); each next one larger; at most four steps of at most 16.
pub fn ladder_from_json(v: &Value) -> Result<Vec<u32>, ParamError> {
    parse_ladder("ladder", v)
}

fn parse_ladder(k: &str, v: &Value) -> Result<Vec<u32>, ParamError> {
    match v {
        Value::Null | Value::Bool(true) => Ok(DEFAULT_LADDER.to_vec()),
        Value::Bool(false) => Ok(vec![1]),
        Value::Array(items) => {
            let steps: Vec<u32> = items
                .iter()
                .map(|x| {
                    x.as_u64()
                        .filter(|d| (1..=16).contains(d))
                        .map(|d| d as u32)
                        .ok_or_else(|| bad(k, "each step must be a whole divisor 1..=16"))
                })
                .collect::<Result<_, _>>()?;
            if steps.first() != Some(&1) {
                return Err(bad(k, "the first step must be 1 (the full-size rendition)"));
            }
            if steps.len() > lumacast_rtc::MAX_RENDITIONS {
                return Err(bad(
                    k,
                    format!("at most {} steps", lumacast_rtc::MAX_RENDITIONS),
                ));
            }
            if steps.windows(2).any(|w| w[1] <= w[0]) {
                return Err(bad(k, "steps must grow: [1, 2, 4]"));
            }
            Ok(steps)
        }
        _ => Err(bad(
            k,
            "must be true, false or a list of divisors like [1, 2, 4]",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: SourceShape = SourceShape {
        width: 1280,
        height: 720,
        format: PixelFormat::Mono16 { bit_depth: 12 },
    };

    fn patch(p: &StreamParams, v: Value) -> Result<StreamParams, ParamError> {
        p.patched(v.as_object().unwrap(), SHAPE)
    }

    #[test]
    fn manual_window_from_bare_min_and_max_and_back_to_full() {
        let p = StreamParams::new(0, 0, DEFAULT_LADDER.to_vec());
        let q = patch(&p, json!({"window_min": 100, "window_max": 900})).unwrap();
        assert_eq!(q.display.window, WindowMode::Manual { min: 100, max: 900 });
        let r = patch(&q, json!({"window_max": 2000})).unwrap();
        assert_eq!(
            r.display.window,
            WindowMode::Manual {
                min: 100,
                max: 2000
            }
        );
        let s = patch(&r, json!({"window_mode": "full"})).unwrap();
        assert_eq!(s.display.window, WindowMode::Full);
        let a = patch(&s, json!({"auto": true, "high_percent": 99.0})).unwrap();
        assert_eq!(
            a.display.window,
            WindowMode::Auto {
                low_percent: 0.1,
                high_percent: 99.0
            }
        );
        assert_eq!(a.to_json()["window_mode"], "auto");
    }

    #[test]
    fn every_bad_value_names_its_field_and_changes_nothing() {
        let p = StreamParams::new(0, 0, DEFAULT_LADDER.to_vec());
        for (body, field) in [
            (json!({"window_min": 900, "window_max": 100}), "window_min"),
            (json!({"window_min": -5}), "window_min"),
            (json!({"window_max": "a lot"}), "window_max"),
            (json!({"window_mode": "sideways"}), "window_mode"),
            (json!({"colormap": "rainbow"}), "colormap"),
            (json!({"gamma": 0}), "gamma"),
            (json!({"binning": 0}), "binning"),
            (json!({"max_width": -1}), "max_width"),
            (
                json!({"roi": {"x": 1200, "y": 0, "width": 200, "height": 100}}),
                "roi",
            ),
            (json!({"roi": {"x": 0, "y": 0, "width": 100}}), "roi.height"),
            (json!({"max_fps": 1000}), "max_fps"),
            (json!({"bitrate": 10}), "bitrate"),
            (json!({"keyint": 5000}), "keyint"),
            (json!({"ladder": [2, 4]}), "ladder"),
            (json!({"ladder": [1, 1]}), "ladder"),
            (json!({"ladder": [1, 2, 4, 8, 16]}), "ladder"),
            (json!({"ladder": [1, 0]}), "ladder"),
            (json!({"ladder": "x"}), "ladder"),
            (json!({"pixel_um": 0}), "pixel_um"),
            (json!({"pixel_um": -6.5}), "pixel_um"),
            (json!({"pixel_um": 2e6}), "pixel_um"),
            (json!({"pixel_um": "6.5"}), "pixel_um"),
            (json!({"brightness": 3}), "brightness"),
        ] {
            let e = patch(&p, body.clone()).unwrap_err();
            assert!(e.field.starts_with(field), "{body}: {e}");
        }
        assert_eq!(p, StreamParams::new(0, 0, DEFAULT_LADDER.to_vec()));
    }

    #[test]
    fn imswitch_names_map_onto_ours() {
        let m = json!({"max_width": 640, "throttle_ms": 100, "subsampling_factor": 2,
                       "crop_size": 512, "stun_servers": [], "jpeg_quality": 80});
        let (patch_map, ignored) = from_imswitch(m.as_object().unwrap(), SHAPE).unwrap();
        assert_eq!(ignored, vec!["jpeg_quality", "stun_servers"]);
        let p = StreamParams::new(0, 0, DEFAULT_LADDER.to_vec())
            .patched(&patch_map, SHAPE)
            .unwrap();
        assert_eq!(p.geometry.max_width, Some(640));
        assert_eq!(p.max_fps, Some(10.0));
        assert_eq!(p.geometry.binning, 2);
        assert_eq!(
            p.geometry.roi,
            Some(Roi {
                x: 384,
                y: 104,
                width: 512,
                height: 512
            })
        );
        let e = from_imswitch(json!({"crop_size": 4000}).as_object().unwrap(), SHAPE).unwrap_err();
        assert_eq!(e.field, "crop_size");
    }

    #[test]
    fn the_imswitch_view_reads_back_unchanged_and_ours_wins_over_theirs() {
        let p = StreamParams::new(0, 0, DEFAULT_LADDER.to_vec())
            .patched(
                json!({"max_fps": 20.0, "binning": 2, "gamma": 0.5,
                       "roi": {"x": 384, "y": 104, "width": 512, "height": 512}})
                .as_object()
                .unwrap(),
                SHAPE,
            )
            .unwrap();
        let v = p.to_imswitch_json(SHAPE);
        assert_eq!(v["throttle_ms"], 50);
        assert_eq!(v["subsampling_factor"], 2);
        assert_eq!(v["crop_size"], 512);
        assert_eq!(v["protocol"], "webrtc");
        // sent back as a whole (ImSwitch's frontend does): the same parameters
        let mut back = v.as_object().unwrap().clone();
        back.remove("protocol");
        let (patch_map, ignored) = from_imswitch(&back, SHAPE).unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(p.patched(&patch_map, SHAPE).unwrap(), p);
        // both spellings in one body: ours is the precise one
        let (patch_map, _) = from_imswitch(
            json!({"throttle_ms": 33, "max_fps": 25.0})
                .as_object()
                .unwrap(),
            SHAPE,
        )
        .unwrap();
        assert_eq!(patch_map["max_fps"], 25.0);
        // an off-centre ROI has no crop_size
        let q = p
            .patched(json!({"roi": [0, 0, 100, 100]}).as_object().unwrap(), SHAPE)
            .unwrap();
        assert_eq!(q.to_imswitch_json(SHAPE)["crop_size"], Value::Null);
        // ImSwitch's ranges, named by ImSwitch's field
        for (body, field) in [
            (json!({"throttle_ms": -1}), "throttle_ms"),
            (json!({"throttle_ms": 20000}), "throttle_ms"),
            (json!({"subsampling_factor": 9}), "subsampling_factor"),
            (json!({"bitrate_kbps": -3}), "bitrate_kbps"),
        ] {
            let e = from_imswitch(body.as_object().unwrap(), SHAPE).unwrap_err();
            assert_eq!(e.field, field, "{body}");
        }
        // a throttle shorter than 1/240 s is no cap at all
        let (patch_map, _) =
            from_imswitch(json!({"throttle_ms": 1}).as_object().unwrap(), SHAPE).unwrap();
        assert_eq!(patch_map["max_fps"], Value::Null);
    }

    #[test]
    fn cell_changes_version_only_on_real_change() {
        let cell = ParamsCell::new(StreamParams::new(0, 0, DEFAULT_LADDER.to_vec()));
        let v = cell.version();
        cell.update(|p| Ok::<_, ()>(p.clone())).unwrap();
        assert_eq!(cell.version(), v);
        assert!(cell.update(|_| Err::<StreamParams, _>(())).is_err());
        cell.update(|p| patch(p, json!({"gamma": 2.0}))).unwrap();
        assert_eq!(cell.version(), v + 1);
        assert_eq!(cell.get().display.gamma, 2.0);
    }

    #[test]
    fn gamma_reads_back_as_the_decimal_that_was_set() {
        for g in [0.45, 0.1, 2.2, 1.0, 10.0, 0.333] {
            let p = patch(
                &StreamParams::new(0, 0, DEFAULT_LADDER.to_vec()),
                json!({ "gamma": g }),
            )
            .unwrap();
            assert_eq!(p.to_json()["gamma"], json!(g), "{g}");
        }
    }
}
