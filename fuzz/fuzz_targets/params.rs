//! Stream parameters from untrusted JSON: our PATCH names and ImSwitch's names, checked
//! against a few frame shapes. Nothing may panic; whatever is accepted must map a frame.
//! Run: cargo +nightly fuzz run params -- -max_total_time=600
#![no_main]

use libfuzzer_sys::fuzz_target;
use lumacast::params::{from_imswitch, SourceShape, StreamParams};
use lumacast_frame::{DisplayMapper, Frame, I420Frame, PixelFormat};

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(data) else {
        return;
    };
    for (w, h, format) in [
        (64, 48, PixelFormat::Mono16 { bit_depth: 12 }),
        (33, 17, PixelFormat::Mono8),
        (40, 30, PixelFormat::Rgb8),
    ] {
        let shape = SourceShape {
            width: w,
            height: h,
            format,
        };
        let base = StreamParams::new(0, 60, vec![1, 2, 4]);
        let mut accepted = vec![];
        if let Ok(p) = base.patched(&map, shape) {
            accepted.push(p);
        }
        if let Ok((patch, _ignored)) = from_imswitch(&map, shape) {
            if let Ok(p) = base.patched(&patch, shape) {
                accepted.push(p);
            }
        }
        for p in accepted {
            let data = vec![0x5au8; (w * h) as usize * format.bytes_per_pixel()];
            let frame = Frame::new(w, h, format, 0, data).unwrap();
            let mut mapper = DisplayMapper::new(p.display, p.geometry);
            let mut out = I420Frame::default();
            // Accepted parameters must not make a frame of that shape unmappable.
            mapper
                .map(&frame, &mut out)
                .expect("accepted parameters map the frame");
        }
    }
});
