//! Routes openh264's log lines (stderr by default) into `tracing`.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

/// openh264 log level handed to the codec: warnings and errors only (openh264 formats every
/// message at or below this level, so a chattier level would cost time per frame).
pub(crate) const TRACE_LEVEL: c_int = openh264_sys2::WELS_LOG_WARNING;

/// `WelsTraceCallback`: openh264 errors become `warn`, warnings `debug` (openh264 warns about
/// deliberate settings such as disabled frame skipping on every initialisation), the rest `trace`.
///
/// Called from openh264, possibly on its worker threads; it must not unwind.
pub(crate) unsafe extern "C" fn trace_callback(
    _ctx: *mut c_void,
    level: c_int,
    message: *const c_char,
) {
    if message.is_null() {
        return;
    }
    // SAFETY: openh264 passes a NUL-terminated buffer (`char pBuf[MAX_LOG_SIZE]`, filled by
    // vsnprintf) that lives for the duration of this call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    let text = text.trim_end();
    if level <= openh264_sys2::WELS_LOG_ERROR {
        tracing::warn!(target: "openh264", "{text}");
    } else if level <= openh264_sys2::WELS_LOG_WARNING {
        tracing::debug!(target: "openh264", "{text}");
    } else {
        tracing::trace!(target: "openh264", "{text}");
    }
}

/// The callback as the `WelsTraceCallback` type `SetOption(*_TRACE_CALLBACK)` expects a pointer to.
pub(crate) const CALLBACK: openh264_sys2::WelsTraceCallback = Some(trace_callback);
