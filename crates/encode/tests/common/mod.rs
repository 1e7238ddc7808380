//! Shared helpers: synthetic I420 frames and a minimal SPS parser.
#![allow(dead_code)]

use lumacast_encode::{nal_type, split_nals, NAL_IDR, NAL_PPS, NAL_SPS};
use lumacast_frame::I420Frame;

/// Deterministic xorshift generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A moving synthetic scene: a smooth textured background larger than the frame, viewed through
/// a window that pans 3 px right and 1 px down per frame, plus a bright square moving the other
/// way, plus optional fresh per-frame noise of amplitude `noise` (like a real detector).
pub struct Scene {
    width: u32,
    height: u32,
    texture: Vec<u8>,
    tex_w: usize,
    noise: u8,
    rng: Rng,
}

const PAN: usize = 256;

impl Scene {
    pub fn new(width: u32, height: u32, noise: u8) -> Self {
        let tex_w = width as usize + PAN;
        let tex_h = height as usize + PAN;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut texture = vec![0u8; tex_w * tex_h];
        for yy in 0..tex_h {
            for xx in 0..tex_w {
                // Smooth bands plus a fine checker and a little static grain: realistic detail.
                let a = ((xx * 7 + yy * 3) / 8) % 200;
                let b = if (xx / 8 + yy / 8) % 2 == 0 { 20 } else { 0 };
                let g = (rng.next() % 9) as usize;
                texture[yy * tex_w + xx] = (16 + a + b + g).min(255) as u8;
            }
        }
        Self {
            width,
            height,
            texture,
            tex_w,
            noise,
            rng,
        }
    }

    pub fn frame(&mut self, index: u64) -> I420Frame {
        let (w, h) = (self.width as usize, self.height as usize);
        let ox = (index as usize * 3) % PAN;
        let oy = index as usize % PAN;
        let mut y = vec![0u8; w * h];
        for row in 0..h {
            let src = (row + oy) * self.tex_w + ox;
            y[row * w..row * w + w].copy_from_slice(&self.texture[src..src + w]);
        }
        // Bright square moving left/up.
        let side = (w.min(h) / 6).max(4);
        let sx = (w - side) - (index as usize * 5) % (w - side);
        let sy = (h - side) - (index as usize * 2) % (h - side);
        for row in sy..sy + side {
            y[row * w + sx..row * w + sx + side].fill(235);
        }
        if self.noise > 0 {
            let amp = u64::from(self.noise) * 2 + 1;
            for px in y.iter_mut() {
                let n = (self.rng.next() % amp) as i32 - i32::from(self.noise);
                *px = (i32::from(*px) + n).clamp(0, 255) as u8;
            }
        }
        let (cw, ch) = (w / 2, h / 2);
        let mut u = vec![0u8; cw * ch];
        let mut v = vec![0u8; cw * ch];
        for row in 0..ch {
            for col in 0..cw {
                u[row * cw + col] = (96 + (col + ox / 2) % 64) as u8;
                v[row * cw + col] = (96 + (row + oy / 2) % 64) as u8;
            }
        }
        I420Frame {
            width: self.width,
            height: self.height,
            y,
            u,
            v,
            seq: index,
            ..Default::default()
        }
    }
}

/// Mean absolute difference of two equally long planes.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "plane sizes differ");
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// NAL unit types of an access unit, in order.
pub fn nal_types(au: &[u8]) -> Vec<u8> {
    split_nals(au).map(nal_type).collect()
}

/// Asserts that every NAL unit of `au` has a 4-byte start code.
pub fn assert_four_byte_start_codes(au: &[u8]) {
    assert!(
        au.starts_with(&[0, 0, 0, 1]),
        "AU does not start with 00 00 00 01"
    );
    let three = au.windows(3).filter(|w| *w == [0, 0, 1]).count();
    let four = au.windows(4).filter(|w| *w == [0, 0, 0, 1]).count();
    assert_eq!(three, four, "some NAL units use a 3-byte start code");
    assert_eq!(four, split_nals(au).count());
}

/// Asserts `au` is an IDR access unit starting with SPS and PPS, followed only by IDR slices.
pub fn assert_idr_au(au: &[u8]) {
    let types = nal_types(au);
    assert!(
        types.len() >= 3 && types[0] == NAL_SPS && types[1] == NAL_PPS,
        "IDR access unit must start with SPS, PPS: {types:?}"
    );
    assert!(
        types[2..].iter().all(|&t| t == NAL_IDR),
        "IDR access unit must contain only IDR slices after SPS/PPS: {types:?}"
    );
    assert_four_byte_start_codes(au);
}

/// The SPS fields the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
    pub max_num_ref_frames: u32,
    pub full_range: Option<bool>,
    pub colour: Option<(u8, u8, u8)>,
}

struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn bit(&mut self) -> u32 {
        let byte = self.data[self.pos / 8];
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        u32::from(b)
    }
    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |acc, _| (acc << 1) | self.bit())
    }
    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 {
            zeros += 1;
        }
        (1u32 << zeros) - 1 + self.bits(zeros)
    }
    fn se(&mut self) -> i32 {
        let k = self.ue();
        if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        }
    }
}

/// Parses a baseline-profile SPS NAL unit (without start code).
pub fn parse_sps(nal: &[u8]) -> SpsInfo {
    assert_eq!(nal_type(nal), NAL_SPS);
    // Remove emulation-prevention bytes (00 00 03 -> 00 00).
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in &nal[1..] {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: rbsp, pos: 0 };
    let profile_idc = r.bits(8) as u8;
    let constraint_flags = r.bits(8) as u8;
    let level_idc = r.bits(8) as u8;
    assert!(
        !matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128
        ),
        "high profiles not handled by this test parser"
    );
    let _sps_id = r.ue();
    let _log2_max_frame_num = r.ue();
    let poc_type = r.ue();
    if poc_type == 0 {
        r.ue();
    } else if poc_type == 1 {
        r.bit();
        r.se();
        r.se();
        let n = r.ue();
        for _ in 0..n {
            r.se();
        }
    }
    let max_num_ref_frames = r.ue();
    let _gaps = r.bit();
    let mbs_w = r.ue() + 1;
    let map_units_h = r.ue() + 1;
    let frame_mbs_only = r.bit();
    if frame_mbs_only == 0 {
        r.bit();
    }
    let _direct_8x8 = r.bit();
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit() == 1 {
        cl = r.ue();
        cr = r.ue();
        ct = r.ue();
        cb = r.ue();
    }
    let height_mul = 2 - frame_mbs_only;
    let width = mbs_w * 16 - 2 * (cl + cr);
    let height = map_units_h * 16 * height_mul - 2 * height_mul * (ct + cb);
    let mut full_range = None;
    let mut colour = None;
    if r.bit() == 1 {
        // VUI
        if r.bit() == 1 {
            let idc = r.bits(8);
            if idc == 255 {
                r.bits(32);
            }
        }
        if r.bit() == 1 {
            r.bit();
        }
        if r.bit() == 1 {
            let _video_format = r.bits(3);
            full_range = Some(r.bit() == 1);
            if r.bit() == 1 {
                colour = Some((r.bits(8) as u8, r.bits(8) as u8, r.bits(8) as u8));
            }
        }
    }
    SpsInfo {
        profile_idc,
        constraint_flags,
        level_idc,
        width,
        height,
        max_num_ref_frames,
        full_range,
        colour,
    }
}
