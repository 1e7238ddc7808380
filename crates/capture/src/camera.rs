//! Local cameras (webcams, UVC/V4L2 devices) through nokhwa, producing RGB8 frames.
//!
//! nokhwa needs libclang at build time, so it sits behind the `camera` feature. Without
//! it the same API exists and fails with [`CaptureError::CameraFeatureDisabled`], whose
//! message tells the user how to rebuild; callers need no `cfg` of their own.
//!
//! [`CaptureError::CameraFeatureDisabled`]: crate::CaptureError::CameraFeatureDisabled

/// A camera the system reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Index to pass to [`CameraSource::open`].
    pub index: u32,
    /// Human-readable device name.
    pub name: String,
    /// Backend-specific description (e.g. driver and bus).
    pub description: String,
}

#[cfg(feature = "camera")]
mod imp {
    use std::sync::mpsc;
    use std::time::{Instant, SystemTime};

    use lumacast_frame::{Frame, PixelFormat};
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
        Resolution,
    };
    use nokhwa::Camera;

    use super::CameraInfo;
    use crate::{CaptureError, FrameSource, SourceInfo};

    fn err(context: &str, e: impl std::fmt::Display) -> CaptureError {
        CaptureError::Camera(format!("{context}: {e}"))
    }

    /// An opened, streaming camera.
    ///
    /// nokhwa's `Camera` is not `Send` (some platform backends are thread-affine), so it
    /// lives on a private worker thread `cam-{index}` for its whole life; this handle
    /// asks it for one frame per [`next_frame`](FrameSource::next_frame) call. Dropping
    /// the handle ends the worker, which closes the device.
    pub struct CameraSource {
        requests: mpsc::Sender<()>,
        frames: mpsc::Receiver<Result<Frame, CaptureError>>,
        index: u32,
        info: SourceInfo,
    }

    impl std::fmt::Debug for CameraSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CameraSource")
                .field("index", &self.index)
                .field("info", &self.info)
                .finish_non_exhaustive()
        }
    }

    impl CameraSource {
        /// Opens camera `index` at the mode closest to `width` x `height` @ `fps` and
        /// starts streaming. The device may pick another mode; [`describe`] reports the
        /// one actually in use.
        ///
        /// [`describe`]: crate::FrameSource::describe
        pub fn open(index: u32, width: u32, height: u32, fps: u32) -> Result<Self, CaptureError> {
            let (opened_tx, opened_rx) = mpsc::channel();
            let (req_tx, req_rx) = mpsc::channel::<()>();
            let (frame_tx, frame_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("cam-{index}"))
                .spawn(move || {
                    let mut camera = match open_camera(index, width, height, fps) {
                        Ok(camera) => {
                            let mode = camera.camera_format();
                            let _ = opened_tx.send(Ok((
                                mode.resolution().width(),
                                mode.resolution().height(),
                                mode.frame_rate(),
                            )));
                            camera
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let mut seq = 0;
                    // Ends when the CameraSource (request sender) is dropped.
                    while req_rx.recv().is_ok() {
                        let frame = read_frame(&mut camera, index, seq);
                        seq += 1;
                        if frame_tx.send(frame).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| err("cannot start camera thread", e))?;
            let (w, h, rate) = opened_rx
                .recv()
                .map_err(|_| CaptureError::Camera(format!("camera {index} thread died")))??;
            tracing::info!(index, width = w, height = h, fps = rate, "camera opened");
            Ok(CameraSource {
                requests: req_tx,
                frames: frame_rx,
                index,
                info: SourceInfo {
                    kind: "camera",
                    width: w,
                    height: h,
                    format: PixelFormat::Rgb8,
                    fps: f64::from(rate),
                },
            })
        }
    }

    /// Runs on the worker thread: opens the device with the first format request it
    /// accepts and starts the stream.
    fn open_camera(index: u32, width: u32, height: u32, fps: u32) -> Result<Camera, CaptureError> {
        let wanted = Resolution::new(width, height);
        // Cameras differ in what they offer: try compressed then raw at the wanted mode,
        // then anything the RGB decoder can handle.
        let requests = [
            RequestedFormatType::Closest(CameraFormat::new(wanted, FrameFormat::MJPEG, fps)),
            RequestedFormatType::Closest(CameraFormat::new(wanted, FrameFormat::YUYV, fps)),
            RequestedFormatType::HighestResolution(wanted),
            RequestedFormatType::AbsoluteHighestFrameRate,
        ];
        let mut last_error = None;
        for request in requests {
            match Camera::new(
                CameraIndex::Index(index),
                RequestedFormat::new::<RgbFormat>(request),
            ) {
                Ok(mut camera) => {
                    camera
                        .open_stream()
                        .map_err(|e| err(&format!("cannot start camera {index}"), e))?;
                    return Ok(camera);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let e = last_error.map_or_else(|| "no format request".to_string(), |e| e.to_string());
        Err(err(&format!("cannot open camera {index}"), e))
    }

    /// Runs on the worker thread: blocks in the driver for the next frame, stamps it and
    /// decodes it to RGB8.
    fn read_frame(camera: &mut Camera, index: u32, seq: u64) -> Result<Frame, CaptureError> {
        let buffer = camera
            .frame()
            .map_err(|e| err(&format!("camera {index} read failed"), e))?;
        let (captured_at, captured_mono) = (SystemTime::now(), Instant::now());
        let res = buffer.resolution();
        let (w, h) = (res.width(), res.height());
        let mut data = vec![0u8; w as usize * h as usize * 3];
        buffer
            .decode_image_to_buffer::<RgbFormat>(&mut data)
            .map_err(|e| err(&format!("camera {index} frame decode failed"), e))?;
        let mut frame = Frame::new(w, h, PixelFormat::Rgb8, seq, data)?;
        frame.captured_at = captured_at;
        frame.captured_mono = captured_mono;
        Ok(frame)
    }

    impl FrameSource for CameraSource {
        fn describe(&self) -> SourceInfo {
            self.info.clone()
        }

        /// Blocks until the camera delivers its next frame (decoded to RGB8).
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            let gone = || CaptureError::Camera(format!("camera {} thread ended", self.index));
            self.requests.send(()).map_err(|_| gone())?;
            self.frames.recv().map_err(|_| gone())?
        }
    }

    /// Lists the cameras of the platform's native backend.
    pub fn list_cameras() -> Result<Vec<CameraInfo>, CaptureError> {
        let cameras = nokhwa::query(ApiBackend::Auto).map_err(|e| err("cannot list cameras", e))?;
        Ok(cameras
            .into_iter()
            .enumerate()
            .map(|(i, c)| CameraInfo {
                index: c.index().as_index().unwrap_or(i as u32),
                name: c.human_name(),
                description: c.description().to_string(),
            })
            .collect())
    }
}

#[cfg(not(feature = "camera"))]
mod imp {
    use lumacast_frame::Frame;

    use super::CameraInfo;
    use crate::{CaptureError, FrameSource, SourceInfo};

    /// Placeholder for builds without the `camera` feature; it cannot be constructed.
    #[derive(Debug)]
    pub struct CameraSource {
        never: std::convert::Infallible,
    }

    impl CameraSource {
        /// Always fails with [`CaptureError::CameraFeatureDisabled`] in this build.
        pub fn open(
            _index: u32,
            _width: u32,
            _height: u32,
            _fps: u32,
        ) -> Result<Self, CaptureError> {
            Err(CaptureError::CameraFeatureDisabled)
        }
    }

    impl FrameSource for CameraSource {
        fn describe(&self) -> SourceInfo {
            match self.never {}
        }

        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            match self.never {}
        }
    }

    /// Always fails with [`CaptureError::CameraFeatureDisabled`] in this build.
    pub fn list_cameras() -> Result<Vec<CameraInfo>, CaptureError> {
        Err(CaptureError::CameraFeatureDisabled)
    }
}

pub use imp::{list_cameras, CameraSource};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CaptureError;

    #[cfg(not(feature = "camera"))]
    #[test]
    fn disabled_without_feature() {
        assert!(matches!(
            CameraSource::open(0, 640, 480, 30),
            Err(CaptureError::CameraFeatureDisabled)
        ));
        assert!(matches!(
            list_cameras(),
            Err(CaptureError::CameraFeatureDisabled)
        ));
    }

    /// Opening a camera that cannot exist must fail cleanly, not panic.
    #[cfg(feature = "camera")]
    #[test]
    fn missing_device_is_a_clear_error() {
        match CameraSource::open(4000, 640, 480, 30) {
            Err(CaptureError::Camera(msg)) => assert!(msg.contains("4000"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
