//! Synchronous openh264 encoder with live-view settings.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::Once;

use bytes::Bytes;
use lumacast_frame::I420Frame;
use openh264_sys2 as sys;

use crate::{build_info, trace, EncodeError, EncoderConfig};

/// Lowest quantiser the rate control may use (openh264 clamps anything lower to 12).
pub const MIN_QP: i32 = 12;
/// Highest quantiser the rate control may use. At the full H.264 range the rate control can hold
/// the bitrate even for noisy detector images (frame skipping is off, so QP is its only lever);
/// a lower cap would trade bitrate overshoot, and with it network queueing, for sharper
/// pictures. Raise `bitrate_bps` for quality instead.
pub const MAX_QP: i32 = 51;
/// Macroblocks up to which level 3.1 is signalled (1280x720 = 3600 MBs, level 3.1's MaxFS);
/// openh264 raises the level itself when frame rate or bitrate need more. Larger pictures let
/// openh264 pick the level.
const LEVEL_3_1_MAX_MBS: u64 = 3600;

/// One encoded picture: a complete H.264 access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex-B access unit: every NAL unit with a 4-byte start code. An IDR access unit starts
    /// with SPS (type 7) and PPS (type 8). Empty when `skipped`.
    pub data: Bytes,
    /// True for an IDR picture (decodable on its own; carries SPS and PPS).
    pub keyframe: bool,
    /// True when openh264 skipped the frame (nothing to send). Rare: frame skipping is disabled.
    pub skipped: bool,
}

/// Vtable entries resolved once at creation.
#[derive(Clone, Copy)]
struct EncoderFns {
    initialize_ext: unsafe extern "C" fn(*mut sys::ISVCEncoder, *const sys::SEncParamExt) -> c_int,
    get_default_params:
        unsafe extern "C" fn(*mut sys::ISVCEncoder, *mut sys::SEncParamExt) -> c_int,
    uninitialize: unsafe extern "C" fn(*mut sys::ISVCEncoder) -> c_int,
    encode_frame: unsafe extern "C" fn(
        *mut sys::ISVCEncoder,
        *const sys::SSourcePicture,
        *mut sys::SFrameBSInfo,
    ) -> c_int,
    force_intra_frame: unsafe extern "C" fn(*mut sys::ISVCEncoder, bool) -> c_int,
    set_option:
        unsafe extern "C" fn(*mut sys::ISVCEncoder, sys::ENCODER_OPTION, *mut c_void) -> c_int,
}

impl EncoderFns {
    fn resolve(vtbl: &sys::ISVCEncoderVtbl) -> Result<Self, EncodeError> {
        use EncodeError::MissingFunction as Missing;
        Ok(Self {
            initialize_ext: vtbl.InitializeExt.ok_or(Missing("InitializeExt"))?,
            get_default_params: vtbl.GetDefaultParams.ok_or(Missing("GetDefaultParams"))?,
            uninitialize: vtbl.Uninitialize.ok_or(Missing("Uninitialize"))?,
            encode_frame: vtbl.EncodeFrame.ok_or(Missing("EncodeFrame"))?,
            force_intra_frame: vtbl.ForceIntraFrame.ok_or(Missing("ForceIntraFrame"))?,
            set_option: vtbl.SetOption.ok_or(Missing("SetOption"))?,
        })
    }
}

/// An openh264 H.264 encoder configured for live view: constrained baseline, CAVLC, no
/// B-frames, bitrate rate control without frame skipping, one reference frame, constant
/// SPS/PPS ids, SPS+PPS in front of every IDR.
///
/// Synchronous: [`Encoder::encode`] returns the access unit of the frame it was given (openh264
/// has no lookahead). One owner at a time; it may move between threads.
pub struct Encoder {
    raw: *mut sys::ISVCEncoder,
    fns: EncoderFns,
    initialized: bool,
    cfg: EncoderConfig,
    /// openh264 writes its per-frame output description here (about 7 KiB, kept off the stack).
    bs_info: Box<sys::SFrameBSInfo>,
}

// SAFETY: an openh264 encoder instance has no thread affinity (no thread-local state; its own
// worker threads are owned by the instance and joined in Uninitialize). `Encoder` is not `Sync`
// and every call takes `&mut self`, so it is only ever used from one thread at a time.
unsafe impl Send for Encoder {}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("cfg", &self.cfg).finish()
    }
}

impl Encoder {
    /// Creates and initialises an encoder; fails with [`EncodeError::InvalidConfig`] for values
    /// openh264 would reject or silently change, or [`EncodeError::Native`] if openh264 refuses.
    pub fn new(cfg: EncoderConfig) -> Result<Self, EncodeError> {
        cfg.validate()?;
        static WARN_NO_ASM: Once = Once::new();
        let info = build_info();
        if !info.assembly {
            WARN_NO_ASM.call_once(|| tracing::warn!("{}", info.note));
        }

        let mut raw: *mut sys::ISVCEncoder = ptr::null_mut();
        // SAFETY: WelsCreateSVCEncoder writes a new encoder pointer into the live local `raw`.
        let rc = unsafe { sys::source::APILoader::WelsCreateSVCEncoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(native("WelsCreateSVCEncoder", rc, &cfg));
        }
        // SAFETY: `raw` is a valid encoder, whose first field points to its static vtable.
        let fns = match unsafe { (*raw).as_ref() }.map(EncoderFns::resolve) {
            Some(Ok(fns)) => fns,
            other => {
                // SAFETY: `raw` was created above, is not initialised and is not used afterwards.
                unsafe { sys::source::APILoader::WelsDestroySVCEncoder(raw) };
                return Err(match other {
                    Some(Err(e)) => e,
                    _ => EncodeError::MissingFunction("ISVCEncoderVtbl"),
                });
            }
        };
        // From here on Drop destroys the encoder on every error path.
        let mut enc = Self {
            raw,
            fns,
            initialized: false,
            cfg,
            bs_info: Box::default(),
        };

        let mut level: c_int = trace::TRACE_LEVEL;
        enc.set_option(
            "SetOption(TRACE_LEVEL)",
            sys::ENCODER_OPTION_TRACE_LEVEL,
            &mut level,
        )?;
        let mut callback = trace::CALLBACK;
        enc.set_option(
            "SetOption(TRACE_CALLBACK)",
            sys::ENCODER_OPTION_TRACE_CALLBACK,
            &mut callback,
        )?;

        let mut params = sys::SEncParamExt::default();
        // SAFETY: `enc.raw` is a valid encoder and `params` a live, writable SEncParamExt.
        let rc = unsafe { (enc.fns.get_default_params)(enc.raw, &mut params) };
        if rc != 0 {
            return Err(native("GetDefaultParams", rc, &cfg));
        }
        apply_live_params(&mut params, &cfg);
        // SAFETY: `params` is a fully initialised SEncParamExt that outlives the call.
        let rc = unsafe { (enc.fns.initialize_ext)(enc.raw, &params) };
        if rc != 0 {
            return Err(native("InitializeExt", rc, &cfg));
        }
        enc.initialized = true;

        let mut format: c_int = sys::videoFormatI420;
        enc.set_option(
            "SetOption(DATAFORMAT)",
            sys::ENCODER_OPTION_DATAFORMAT,
            &mut format,
        )?;
        tracing::debug!(
            width = cfg.width,
            height = cfg.height,
            fps = cfg.fps,
            bitrate_bps = cfg.bitrate_bps,
            threads = cfg.threads,
            slices = cfg.slices,
            keyframe_interval = cfg.keyframe_interval,
            "openh264 encoder initialised"
        );
        Ok(enc)
    }

    /// The configuration in effect (including bitrate changes made with
    /// [`set_bitrate`](Self::set_bitrate)).
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Encodes one frame into one access unit.
    ///
    /// `timestamp_ms` is the frame's capture time in milliseconds and should increase; the rate
    /// control derives frame intervals from it (openh264 substitutes `1000/fps` steps for
    /// non-increasing values). A frame of another size returns [`EncodeError::SizeMismatch`]
    /// (re-create the encoder); planes shorter than the size requires return
    /// [`EncodeError::BadPlane`]. Never panics.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        timestamp_ms: i64,
    ) -> Result<EncodedFrame, EncodeError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        if frame.width != w || frame.height != h {
            return Err(EncodeError::SizeMismatch {
                width: w,
                height: h,
                frame_width: frame.width,
                frame_height: frame.height,
            });
        }
        let luma = w as usize * h as usize;
        let chroma = (w as usize / 2) * (h as usize / 2);
        for (plane, data, expected) in [
            ("Y", &frame.y, luma),
            ("U", &frame.u, chroma),
            ("V", &frame.v, chroma),
        ] {
            if data.len() < expected {
                return Err(EncodeError::BadPlane {
                    plane,
                    width: w,
                    height: h,
                    expected,
                    actual: data.len(),
                });
            }
        }

        // Dimensions are validated to 16..=3840, so these conversions are lossless.
        let (wi, hi) = (w as c_int, h as c_int);
        let pic = sys::SSourcePicture {
            iColorFormat: sys::videoFormatI420,
            iStride: [wi, wi / 2, wi / 2, 0],
            // openh264 only reads the source planes: WelsMoveMemoryWrapper copies exactly
            // width x height luma and (width/2) x (height/2) chroma bytes row by row into its
            // own picture. The pointers are `*mut` merely because the C struct is not const.
            pData: [
                frame.y.as_ptr().cast_mut(),
                frame.u.as_ptr().cast_mut(),
                frame.v.as_ptr().cast_mut(),
                ptr::null_mut(),
            ],
            iPicWidth: wi,
            iPicHeight: hi,
            uiTimeStamp: timestamp_ms,
            bPsnrY: false,
            bPsnrU: false,
            bPsnrV: false,
        };
        // SAFETY: `self.raw` is an initialised encoder. `pic` describes three planes that are at
        // least stride x rows long (checked above) and borrowed for the duration of the call;
        // openh264 does not keep the pointers. `bs_info` is a live, writable SFrameBSInfo.
        let rc = unsafe { (self.fns.encode_frame)(self.raw, &pic, &mut *self.bs_info) };
        if rc != 0 {
            return Err(native("EncodeFrame", rc, &self.cfg));
        }

        let info = &*self.bs_info;
        match info.eFrameType {
            sys::videoFrameTypeSkip => {
                return Ok(EncodedFrame {
                    data: Bytes::new(),
                    keyframe: false,
                    skipped: true,
                })
            }
            sys::videoFrameTypeInvalid => {
                return Err(native(
                    "EncodeFrame (returned videoFrameTypeInvalid)",
                    i64::from(info.eFrameType),
                    &self.cfg,
                ))
            }
            _ => {}
        }

        let mut data = Vec::with_capacity(usize::try_from(info.iFrameSizeInBytes).unwrap_or(0));
        let layers = usize::try_from(info.iLayerNum)
            .unwrap_or(0)
            .min(info.sLayerInfo.len());
        for layer in &info.sLayerInfo[..layers] {
            let nals = usize::try_from(layer.iNalCount).unwrap_or(0);
            if nals == 0 || layer.pNalLengthInByte.is_null() || layer.pBsBuf.is_null() {
                continue;
            }
            // SAFETY: openh264 sets `pNalLengthInByte` to an array of `iNalCount` ints for each
            // reported layer; it stays valid until the next EncodeFrame call.
            let lengths = unsafe { std::slice::from_raw_parts(layer.pNalLengthInByte, nals) };
            let total: usize = lengths
                .iter()
                .map(|&n| usize::try_from(n).unwrap_or(0))
                .sum();
            // SAFETY: a layer's NAL units lie back to back from `pBsBuf`, `total` bytes in all,
            // inside openh264's output buffer, valid until the next EncodeFrame call.
            let bytes = unsafe { std::slice::from_raw_parts(layer.pBsBuf, total) };
            data.extend_from_slice(bytes);
        }
        Ok(EncodedFrame {
            data: Bytes::from(data),
            keyframe: info.eFrameType == sys::videoFrameTypeIDR,
            skipped: false,
        })
    }

    /// Makes the next [`encode`](Self::encode) produce an IDR frame, preceded by SPS and PPS
    /// (for a joining viewer or a PLI/FIR). Cheap; calling it repeatedly before the next frame
    /// still yields one IDR.
    pub fn request_keyframe(&mut self) {
        // SAFETY: `self.raw` is an initialised encoder.
        let rc = unsafe { (self.fns.force_intra_frame)(self.raw, true) };
        if rc != 0 {
            tracing::warn!(code = rc, "openh264 ForceIntraFrame failed");
        }
    }

    /// Changes the target bitrate (bit/s) from the next frame on; the peak limit follows at
    /// twice the target. Fails for values outside the accepted range (see
    /// [`EncoderConfig::validate`]) or if openh264 refuses; the old rate then stays in force.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), EncodeError> {
        EncoderConfig {
            bitrate_bps,
            ..self.cfg
        }
        .validate()?;
        let target = i32::try_from(bitrate_bps).unwrap_or(i32::MAX);
        let max = EncoderConfig::max_bitrate_bps(bitrate_bps);
        // openh264 rejects a layer whose target exceeds its peak: raise the peak first when going
        // up, lower it last when going down.
        if bitrate_bps >= self.cfg.bitrate_bps {
            self.set_max_bitrate(max)?;
            self.set_target_bitrate(target)?;
        } else {
            self.set_target_bitrate(target)?;
            self.set_max_bitrate(max)?;
        }
        self.cfg.bitrate_bps = bitrate_bps;
        Ok(())
    }

    fn set_target_bitrate(&mut self, bps: i32) -> Result<(), EncodeError> {
        // SPATIAL_LAYER_ALL updates the total and rescales the (single) layer, as libwebrtc does.
        let mut info = sys::SBitrateInfo {
            iLayer: sys::SPATIAL_LAYER_ALL,
            iBitrate: bps,
        };
        self.set_option("SetOption(BITRATE)", sys::ENCODER_OPTION_BITRATE, &mut info)
    }

    fn set_max_bitrate(&mut self, bps: i32) -> Result<(), EncodeError> {
        // The rate control reads the layer's peak; the total is kept consistent for GetOption.
        for layer in [sys::SPATIAL_LAYER_0, sys::SPATIAL_LAYER_ALL] {
            let mut info = sys::SBitrateInfo {
                iLayer: layer,
                iBitrate: bps,
            };
            self.set_option(
                "SetOption(MAX_BITRATE)",
                sys::ENCODER_OPTION_MAX_BITRATE,
                &mut info,
            )?;
        }
        Ok(())
    }

    fn set_option<T>(
        &mut self,
        function: &'static str,
        option: sys::ENCODER_OPTION,
        value: &mut T,
    ) -> Result<(), EncodeError> {
        // SAFETY: `self.raw` is a valid encoder; every caller pairs `option` with the type
        // openh264 reads for it (int, WelsTraceCallback, SBitrateInfo) and `value` is live for
        // the call. openh264 copies the value and keeps no pointer to it.
        let rc = unsafe { (self.fns.set_option)(self.raw, option, (value as *mut T).cast()) };
        if rc != 0 {
            return Err(native(function, rc, &self.cfg));
        }
        Ok(())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from WelsCreateSVCEncoder and is destroyed exactly once, here;
        // Uninitialize (which joins openh264's worker threads) runs only after a successful
        // InitializeExt.
        unsafe {
            if self.initialized {
                (self.fns.uninitialize)(self.raw);
            }
            sys::source::APILoader::WelsDestroySVCEncoder(self.raw);
        }
    }
}

fn native(function: &'static str, code: impl Into<i64>, cfg: &EncoderConfig) -> EncodeError {
    EncodeError::Native {
        function,
        code: code.into(),
        width: cfg.width,
        height: cfg.height,
    }
}

/// Fills openh264's defaults with the live-view settings (see the crate documentation).
fn apply_live_params(p: &mut sys::SEncParamExt, cfg: &EncoderConfig) {
    // Validated: dimensions <= 3840, bitrate <= 1e9, threads <= 4, slices <= 32.
    let (w, h) = (cfg.width as c_int, cfg.height as c_int);
    let target = cfg.bitrate_bps as c_int;
    let max = EncoderConfig::max_bitrate_bps(cfg.bitrate_bps);

    p.iUsageType = sys::CAMERA_VIDEO_REAL_TIME;
    p.iPicWidth = w;
    p.iPicHeight = h;
    p.iTargetBitrate = target;
    p.iMaxBitrate = max;
    p.iRCMode = sys::RC_BITRATE_MODE;
    p.fMaxFrameRate = cfg.fps;
    p.iTemporalLayerNum = 1;
    p.iSpatialLayerNum = 1;
    p.iComplexityMode = cfg.complexity.to_native();
    p.uiIntraPeriod = cfg.keyframe_interval;
    p.iNumRefFrame = 1;
    p.eSpsPpsIdStrategy = sys::CONSTANT_ID;
    p.bPrefixNalAddingCtrl = false;
    p.bEnableSSEI = false;
    p.bSimulcastAVC = false;
    p.iPaddingFlag = 0;
    p.iEntropyCodingModeFlag = 0; // CAVLC (baseline has no CABAC)
    p.bEnableFrameSkip = false;
    p.iMaxQp = MAX_QP;
    p.iMinQp = MIN_QP;
    p.uiMaxNalSize = 0;
    p.bEnableLongTermReference = false;
    p.iLTRRefNum = 0;
    p.iMultipleThreadIdc = cfg.threads;
    p.bUseLoadBalancing = true;
    p.iLoopFilterDisableIdc = if cfg.deblocking { 0 } else { 1 };
    p.iLoopFilterAlphaC0Offset = 0;
    p.iLoopFilterBetaOffset = 0;
    // Pre-processing off. Denoising and background detection hide faint, real changes (on a
    // still, noisy scene background detection froze the noise and halved the bitrate) and cost
    // time on moving content (background detection: 720p 5.6 -> 8.0 ms per frame, 2 cores).
    // Scene-change detection would insert unrequested large I frames. Adaptive quantisation is
    // forced off by openh264 anyway.
    p.bEnableDenoise = false;
    p.bEnableBackgroundDetection = false;
    p.bEnableAdaptiveQuant = false;
    p.bEnableSceneChangeDetect = false;
    p.bEnableFrameCroppingFlag = true; // needed for heights like 1080 (not a multiple of 16)
    p.bIsLosslessLink = false;
    p.bPsnrY = false;
    p.bPsnrU = false;
    p.bPsnrV = false;

    let layer = &mut p.sSpatialLayers[0];
    layer.iVideoWidth = w;
    layer.iVideoHeight = h;
    layer.fFrameRate = cfg.fps;
    layer.iSpatialBitrate = target;
    layer.iMaxSpatialBitrate = max;
    layer.uiProfileIdc = sys::PRO_BASELINE;
    layer.uiLevelIdc = if cfg.macroblocks() <= LEVEL_3_1_MAX_MBS {
        sys::LEVEL_3_1
    } else {
        sys::LEVEL_UNKNOWN
    };
    if cfg.slices <= 1 {
        layer.sSliceArgument.uiSliceMode = sys::SM_SINGLE_SLICE;
        layer.sSliceArgument.uiSliceNum = 1;
    } else {
        layer.sSliceArgument.uiSliceMode = sys::SM_FIXEDSLCNUM_SLICE;
        layer.sSliceArgument.uiSliceNum = u32::from(cfg.slices);
    }
    layer.sSliceArgument.uiSliceMbNum = [0; 35];
    // VUI: sample range and BT.601 colour description, so browsers map Y exactly as intended.
    layer.bVideoSignalTypePresent = true;
    layer.uiVideoFormat = sys::VF_UNDEF as u8;
    layer.bFullRange = cfg.full_range;
    layer.bColorDescriptionPresent = true;
    layer.uiColorPrimaries = sys::CP_SMPTE170M as u8;
    layer.uiTransferCharacteristics = sys::TRC_SMPTE170M as u8;
    layer.uiColorMatrix = sys::CM_SMPTE170M as u8;
}
