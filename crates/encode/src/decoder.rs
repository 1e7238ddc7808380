//! openh264 decoder, for tests and latency probes.

use std::os::raw::{c_int, c_long, c_uchar, c_void};
use std::ptr;

use openh264_sys2 as sys;

use crate::{trace, EncodeError};

/// A decoded picture with tightly packed I420 planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPicture {
    /// Width in pixels (after SPS cropping).
    pub width: u32,
    /// Height in pixels (after SPS cropping).
    pub height: u32,
    /// Luma, `width * height` bytes, stride = `width`.
    pub y: Vec<u8>,
    /// Cb, `ceil(width/2) * ceil(height/2)` bytes, stride = `ceil(width/2)`.
    pub u: Vec<u8>,
    /// Cr, same layout as `u`.
    pub v: Vec<u8>,
}

#[derive(Clone, Copy)]
struct DecoderFns {
    initialize: unsafe extern "C" fn(*mut sys::ISVCDecoder, *const sys::SDecodingParam) -> c_long,
    uninitialize: unsafe extern "C" fn(*mut sys::ISVCDecoder) -> c_long,
    decode_frame_no_delay: unsafe extern "C" fn(
        *mut sys::ISVCDecoder,
        *const c_uchar,
        c_int,
        *mut *mut c_uchar,
        *mut sys::SBufferInfo,
    ) -> sys::DECODING_STATE,
    set_option:
        unsafe extern "C" fn(*mut sys::ISVCDecoder, sys::DECODER_OPTION, *mut c_void) -> c_long,
}

impl DecoderFns {
    fn resolve(vtbl: &sys::ISVCDecoderVtbl) -> Result<Self, EncodeError> {
        use EncodeError::MissingFunction as Missing;
        Ok(Self {
            initialize: vtbl.Initialize.ok_or(Missing("Initialize"))?,
            uninitialize: vtbl.Uninitialize.ok_or(Missing("Uninitialize"))?,
            decode_frame_no_delay: vtbl
                .DecodeFrameNoDelay
                .ok_or(Missing("DecodeFrameNoDelay"))?,
            set_option: vtbl.SetOption.ok_or(Missing("SetOption"))?,
        })
    }
}

/// An openh264 H.264 decoder fed whole access units (`DecodeFrameNoDelay`: a picture comes out
/// of the call that receives its last slice). Error concealment is off, so a broken stream
/// yields errors instead of patched pictures.
pub struct Decoder {
    raw: *mut sys::ISVCDecoder,
    fns: DecoderFns,
    initialized: bool,
}

// SAFETY: an openh264 decoder instance has no thread affinity (single-threaded decoding, no
// thread-local state). `Decoder` is not `Sync` and all calls take `&mut self`.
unsafe impl Send for Decoder {}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    /// Creates and initialises a decoder.
    pub fn new() -> Result<Self, EncodeError> {
        let mut raw: *mut sys::ISVCDecoder = ptr::null_mut();
        // SAFETY: WelsCreateDecoder writes a new decoder pointer into the live local `raw`.
        let rc = unsafe { sys::source::APILoader::WelsCreateDecoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(native("WelsCreateDecoder", rc));
        }
        // SAFETY: `raw` is a valid decoder, whose first field points to its static vtable.
        let fns = match unsafe { (*raw).as_ref() }.map(DecoderFns::resolve) {
            Some(Ok(fns)) => fns,
            other => {
                // SAFETY: `raw` was created above, is not initialised and is not used afterwards.
                unsafe { sys::source::APILoader::WelsDestroyDecoder(raw) };
                return Err(match other {
                    Some(Err(e)) => e,
                    _ => EncodeError::MissingFunction("ISVCDecoderVtbl"),
                });
            }
        };
        let mut dec = Self {
            raw,
            fns,
            initialized: false,
        };

        let mut level: c_int = trace::TRACE_LEVEL;
        dec.set_option(
            "SetOption(TRACE_LEVEL)",
            sys::DECODER_OPTION_TRACE_LEVEL,
            &mut level,
        )?;
        let mut callback = trace::CALLBACK;
        dec.set_option(
            "SetOption(TRACE_CALLBACK)",
            sys::DECODER_OPTION_TRACE_CALLBACK,
            &mut callback,
        )?;

        let param = sys::SDecodingParam {
            uiTargetDqLayer: u8::MAX,
            eEcActiveIdc: sys::ERROR_CON_DISABLE,
            sVideoProperty: sys::SVideoProperty {
                size: std::mem::size_of::<sys::SVideoProperty>() as u32,
                eVideoBsType: sys::VIDEO_BITSTREAM_AVC,
            },
            ..Default::default()
        };
        // SAFETY: `dec.raw` is a valid decoder; `param` is initialised and outlives the call.
        let rc = unsafe { (dec.fns.initialize)(dec.raw, &param) };
        if rc != 0 {
            return Err(native("Initialize", rc));
        }
        dec.initialized = true;
        let mut ec: c_int = sys::ERROR_CON_DISABLE;
        dec.set_option(
            "SetOption(ERROR_CON_IDC)",
            sys::DECODER_OPTION_ERROR_CON_IDC,
            &mut ec,
        )?;
        Ok(dec)
    }

    /// Decodes one Annex-B access unit (e.g. SPS+PPS+IDR, or one P-frame's slices).
    ///
    /// Returns `Ok(None)` when the input completed no picture (parameter sets only, or empty
    /// input) and an error when openh264 reports a bitstream problem. Never panics.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<DecodedPicture>, EncodeError> {
        if annexb.is_empty() {
            return Ok(None);
        }
        let len = c_int::try_from(annexb.len()).map_err(|_| EncodeError::Decode {
            state: sys::dsInvalidArgument,
            description: "input longer than 2 GiB".into(),
            len: annexb.len(),
        })?;
        let mut dst: [*mut c_uchar; 3] = [ptr::null_mut(); 3];
        let mut info = sys::SBufferInfo::default();
        // SAFETY: `self.raw` is an initialised decoder; openh264 reads `len` bytes from the
        // borrowed input (it copies what it keeps) and writes three plane pointers into `dst`
        // and the picture description into `info`, both live locals.
        let state = unsafe {
            (self.fns.decode_frame_no_delay)(
                self.raw,
                annexb.as_ptr(),
                len,
                dst.as_mut_ptr(),
                &mut info,
            )
        };
        if state != sys::dsErrorFree {
            return Err(EncodeError::Decode {
                state,
                description: describe_state(state),
                len: annexb.len(),
            });
        }
        if info.iBufferStatus != 1 || dst.iter().any(|p| p.is_null()) {
            return Ok(None);
        }
        // SAFETY: with iBufferStatus == 1 the union holds `sSystemBuffer` (the only variant).
        let sys_buf = unsafe { info.UsrData.sSystemBuffer };
        let (w, h) = (sys_buf.iWidth, sys_buf.iHeight);
        let (luma_stride, chroma_stride) = (sys_buf.iStride[0], sys_buf.iStride[1]);
        if w <= 0 || h <= 0 || luma_stride < w || chroma_stride < (w + 1) / 2 {
            return Err(EncodeError::Decode {
                state,
                description: format!(
                    "decoder returned an inconsistent picture: {w}x{h}, strides {luma_stride}/{chroma_stride}"
                ),
                len: annexb.len(),
            });
        }
        // All positive and bounded by the checks above.
        let (w, h) = (w as usize, h as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        // SAFETY: openh264 returned a picture of `h` rows of `luma_stride` bytes in dst[0] and
        // `ch` rows of `chroma_stride` bytes in dst[1] and dst[2]; the buffers stay valid until
        // the next decoder call, and are only read here.
        let (y, u, v) = unsafe {
            (
                copy_plane(dst[0], luma_stride as usize, w, h),
                copy_plane(dst[1], chroma_stride as usize, cw, ch),
                copy_plane(dst[2], chroma_stride as usize, cw, ch),
            )
        };
        Ok(Some(DecodedPicture {
            width: w as u32,
            height: h as u32,
            y,
            u,
            v,
        }))
    }

    fn set_option<T>(
        &mut self,
        function: &'static str,
        option: sys::DECODER_OPTION,
        value: &mut T,
    ) -> Result<(), EncodeError> {
        // SAFETY: `self.raw` is a valid decoder; callers pair `option` with the type openh264
        // reads for it (int or WelsTraceCallback), and `value` is live for the call.
        let rc = unsafe { (self.fns.set_option)(self.raw, option, (value as *mut T).cast()) };
        if rc != 0 {
            return Err(native(function, rc));
        }
        Ok(())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from WelsCreateDecoder and is destroyed exactly once, here,
        // after Uninitialize if it was initialised.
        unsafe {
            if self.initialized {
                (self.fns.uninitialize)(self.raw);
            }
            sys::source::APILoader::WelsDestroyDecoder(self.raw);
        }
    }
}

/// Copies `rows` rows of `width` bytes from a plane with `stride` bytes per row.
///
/// # Safety
/// `src` must be valid for reads of `stride * (rows - 1) + width` bytes.
unsafe fn copy_plane(src: *const u8, stride: usize, width: usize, rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * rows);
    for row in 0..rows {
        // SAFETY: row `row` starts at `row * stride` and has `width` readable bytes (contract).
        let line = unsafe { std::slice::from_raw_parts(src.add(row * stride), width) };
        out.extend_from_slice(line);
    }
    out
}

fn native(function: &'static str, code: impl Into<i64>) -> EncodeError {
    EncodeError::Native {
        function,
        code: code.into(),
        width: 0,
        height: 0,
    }
}

fn describe_state(state: sys::DECODING_STATE) -> String {
    const NAMES: [(sys::DECODING_STATE, &str); 11] = [
        (sys::dsFramePending, "frame pending"),
        (sys::dsRefLost, "reference lost"),
        (sys::dsBitstreamError, "bitstream error"),
        (sys::dsDepLayerLost, "dependency layer lost"),
        (sys::dsNoParamSets, "no parameter sets"),
        (sys::dsDataErrorConcealed, "data error concealed"),
        (sys::dsRefListNullPtrs, "reference list null pointers"),
        (sys::dsInvalidArgument, "invalid argument"),
        (sys::dsInitialOptExpected, "initialisation expected"),
        (sys::dsOutOfMemory, "out of memory"),
        (sys::dsDstBufNeedExpan, "destination buffer too small"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if names.is_empty() {
        format!("unknown state {state:#x}")
    } else {
        names.join(", ")
    }
}
