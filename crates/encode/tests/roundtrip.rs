//! Encoder/decoder round trips and stream-structure checks.

mod common;

use common::*;
use lumacast_encode::*;
use lumacast_frame::I420Frame;

const FPS_MS: i64 = 33;

fn ts(i: u64) -> i64 {
    i as i64 * FPS_MS
}

#[test]
fn assembly_matches_nasm_availability() {
    let info = build_info();
    println!("build_info: {info:?}");
    if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
        // Assembly without nasm is impossible; nasm without assembly is a stale openh264 build.
        assert_eq!(info.assembly, info.nasm_at_build, "{}", info.note);
        // The test command installs nasm: an encoder without its assembly (several times
        // slower) is a failure here, not a pass. LUMACAST_ALLOW_NO_ASM=1 opts out on purpose.
        if std::env::var_os("LUMACAST_ALLOW_NO_ASM").is_none() {
            assert!(
                info.assembly,
                "openh264 was built without its assembly (install nasm and rebuild, or set \
                 LUMACAST_ALLOW_NO_ASM=1): {}",
                info.note
            );
        }
    }
}

#[test]
fn encoder_and_decoder_are_send() {
    fn is_send<T: Send>() {}
    is_send::<Encoder>();
    is_send::<Decoder>();
}

#[test]
fn roundtrip_720p_default_config_60_frames() {
    let cfg = EncoderConfig::new(1280, 720);
    assert_eq!((cfg.threads, cfg.slices), (2, 4));
    let mut enc = Encoder::new(cfg).unwrap();
    let mut dec = Decoder::new().unwrap();
    let mut scene = Scene::new(1280, 720, 0);
    let mut worst = 0.0f64;
    for i in 0..60 {
        let frame = scene.frame(i);
        let out = enc.encode(&frame, ts(i)).unwrap();
        assert!(!out.skipped, "frame {i} skipped");
        assert_four_byte_start_codes(&out.data);
        if i == 0 {
            assert!(out.keyframe, "first frame must be an IDR");
            assert_idr_au(&out.data);
            let types = nal_types(&out.data);
            assert_eq!(&types[..2], &[NAL_SPS, NAL_PPS]);
            assert!(types.contains(&NAL_IDR));
        } else {
            assert!(!out.keyframe, "unexpected IDR at frame {i}");
            assert!(nal_types(&out.data).iter().all(|&t| t == NAL_SLICE));
        }
        let pic = dec
            .decode(&out.data)
            .unwrap_or_else(|e| panic!("frame {i}: {e}"))
            .unwrap_or_else(|| panic!("frame {i}: no picture"));
        assert_eq!((pic.width, pic.height), (1280, 720));
        assert_eq!(pic.y.len(), frame.y.len());
        assert_eq!(pic.u.len(), frame.u.len());
        let dy = mean_abs_diff(&pic.y, &frame.y);
        let du = mean_abs_diff(&pic.u, &frame.u);
        let dv = mean_abs_diff(&pic.v, &frame.v);
        assert!(dy < 6.0, "frame {i}: luma mean abs diff {dy}");
        assert!(du < 6.0 && dv < 6.0, "frame {i}: chroma diff {du} {dv}");
        worst = worst.max(dy);
    }
    println!("worst luma mean abs diff over 60 frames: {worst:.2}");
}

#[test]
fn sps_signals_constrained_baseline_level_and_range() {
    for (w, h, level) in [
        (640u32, 480u32, Some(31u8)),
        (1280, 720, Some(31)),
        (1920, 1080, None),
    ] {
        let mut enc = Encoder::new(EncoderConfig::new(w, h)).unwrap();
        let out = enc.encode(&Scene::new(w, h, 0).frame(0), 0).unwrap();
        let sps_nal = split_nals(&out.data).next().unwrap();
        let sps = parse_sps(sps_nal);
        println!("{w}x{h}: {sps:?}");
        assert_eq!(sps.profile_idc, 66, "baseline");
        assert_eq!(
            sps.constraint_flags & 0x40,
            0x40,
            "constraint_set1 (constrained baseline)"
        );
        if let Some(level) = level {
            assert_eq!(sps.level_idc, level);
        } else {
            assert!(sps.level_idc >= 40, "1080p needs level 4.0+");
        }
        assert_eq!((sps.width, sps.height), (w, h), "cropping");
        assert_eq!(sps.max_num_ref_frames, 1);
        assert_eq!(sps.full_range, Some(true));
        assert_eq!(sps.colour, Some((6, 6, 6)), "BT.601 / SMPTE 170M");
    }
    let cfg = EncoderConfig {
        full_range: false,
        ..EncoderConfig::new(320, 240)
    };
    let mut enc = Encoder::new(cfg).unwrap();
    let out = enc.encode(&Scene::new(320, 240, 0).frame(0), 0).unwrap();
    let sps = parse_sps(split_nals(&out.data).next().unwrap());
    assert_eq!(sps.full_range, Some(false));
}

#[test]
fn request_keyframe_yields_idr_with_parameter_sets_and_a_join_point() {
    let mut enc = Encoder::new(EncoderConfig::new(640, 480)).unwrap();
    let mut scene = Scene::new(640, 480, 0);
    let mut late_joiner: Option<Decoder> = None;
    for i in 0..20u64 {
        if i == 7 || i == 13 {
            enc.request_keyframe();
            enc.request_keyframe(); // idempotent until the next frame
        }
        let frame = scene.frame(i);
        let out = enc.encode(&frame, ts(i)).unwrap();
        let expect_idr = i == 0 || i == 7 || i == 13;
        assert_eq!(out.keyframe, expect_idr, "frame {i}");
        if expect_idr {
            assert_idr_au(&out.data);
        }
        if i == 7 {
            late_joiner = Some(Decoder::new().unwrap());
        }
        if let Some(dec) = late_joiner.as_mut() {
            // A viewer joining at the requested IDR decodes everything from there on.
            let pic = dec.decode(&out.data).unwrap().expect("picture");
            assert!(mean_abs_diff(&pic.y, &frame.y) < 6.0);
        }
    }
}

#[test]
fn periodic_idr_only_when_configured() {
    // keyframe_interval = 0: one IDR in 100 frames.
    let cfg = EncoderConfig {
        keyframe_interval: 0,
        ..EncoderConfig::new(640, 480)
    };
    let mut enc = Encoder::new(cfg).unwrap();
    let mut scene = Scene::new(640, 480, 0);
    let idrs: Vec<u64> = (0..100)
        .filter(|&i| enc.encode(&scene.frame(i), ts(i)).unwrap().keyframe)
        .collect();
    assert_eq!(idrs, vec![0]);

    // Default interval 60: IDRs at 0 and 60, each with SPS/PPS.
    let mut enc = Encoder::new(EncoderConfig::new(640, 480)).unwrap();
    let mut idrs = Vec::new();
    for i in 0..100 {
        let out = enc.encode(&scene.frame(i), ts(i)).unwrap();
        if out.keyframe {
            assert_idr_au(&out.data);
            idrs.push(i);
        }
    }
    assert_eq!(idrs, vec![0, 60]);
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let mut enc = Encoder::new(EncoderConfig::new(320, 240)).unwrap();
    let mut scene = Scene::new(320, 240, 0);
    let wrong = Scene::new(640, 480, 0).frame(0);
    match enc.encode(&wrong, 0) {
        Err(EncodeError::SizeMismatch {
            width: 320,
            height: 240,
            frame_width: 640,
            frame_height: 480,
        }) => {}
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    let mut short = scene.frame(0);
    short.u.truncate(10);
    let err = enc.encode(&short, 0).unwrap_err();
    assert!(
        matches!(err, EncodeError::BadPlane { plane: "U", .. }),
        "{err}"
    );
    println!("{err}");
    let empty = I420Frame::default();
    assert!(enc.encode(&empty, 0).is_err());
    // Still usable afterwards.
    let out = enc.encode(&scene.frame(1), 33).unwrap();
    assert!(out.keyframe);
    assert!(Encoder::new(EncoderConfig::new(15, 15)).is_err());
    assert!(Encoder::new(EncoderConfig::new(4000, 16)).is_err());
    assert!(Encoder::new(EncoderConfig {
        fps: 0.0,
        ..EncoderConfig::new(64, 64)
    })
    .is_err());
}

#[test]
fn decoder_survives_garbage() {
    let mut dec = Decoder::new().unwrap();
    assert_eq!(dec.decode(&[]).unwrap(), None);
    let mut rng = Rng(42);
    for len in [1usize, 3, 4, 5, 17, 100, 1000, 10_000] {
        let mut junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len > 8 {
            junk[..4].copy_from_slice(&[0, 0, 0, 1]);
        }
        let _ = dec.decode(&junk); // error or None, never a panic or crash
    }
    // A P-frame without its IDR: an error or no picture, not a crash.
    let mut enc = Encoder::new(EncoderConfig::new(320, 240)).unwrap();
    let mut scene = Scene::new(320, 240, 0);
    enc.encode(&scene.frame(0), 0).unwrap();
    let p = enc.encode(&scene.frame(1), 33).unwrap();
    let mut fresh = Decoder::new().unwrap();
    let r = fresh.decode(&p.data);
    assert!(!matches!(r, Ok(Some(_))), "{r:?}");
    // The same decoder recovers at the next IDR.
    enc.request_keyframe();
    let idr = enc.encode(&scene.frame(2), 66).unwrap();
    assert!(fresh.decode(&idr.data).unwrap().is_some());
}

#[test]
fn two_threads_and_slices_work_and_decode() {
    for (w, h, threads, slices) in [
        (1280u32, 720u32, 2u16, 2u16),
        (1920, 1080, 2, 4),
        (640, 480, 2, 2),
    ] {
        let cfg = EncoderConfig {
            threads,
            slices,
            ..EncoderConfig::new(w, h)
        };
        let mut enc = Encoder::new(cfg).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut scene = Scene::new(w, h, 2);
        for i in 0..10 {
            let frame = scene.frame(i);
            let out = enc.encode(&frame, ts(i)).unwrap();
            let types = nal_types(&out.data);
            let vcl = types
                .iter()
                .filter(|&&t| t == NAL_SLICE || t == NAL_IDR)
                .count();
            assert_eq!(vcl, usize::from(slices), "{w}x{h} frame {i}: {types:?}");
            let pic = dec.decode(&out.data).unwrap().expect("picture");
            assert_eq!((pic.width, pic.height), (w, h));
            let d = mean_abs_diff(&pic.y, &frame.y);
            assert!(d < 6.0, "{w}x{h} frame {i}: {d}");
        }
    }
}

/// Bytes produced for `frames` frames of noisy content.
fn encoded_bytes(enc: &mut Encoder, scene: &mut Scene, range: std::ops::Range<u64>) -> usize {
    range
        .map(|i| enc.encode(&scene.frame(i), ts(i)).unwrap().data.len())
        .sum()
}

#[test]
fn bitrate_is_roughly_respected_and_adjustable() {
    let cfg = EncoderConfig::new(1280, 720);
    let target = cfg.bitrate_bps;
    let mut enc = Encoder::new(cfg).unwrap();
    let mut scene = Scene::new(1280, 720, 12);
    let bytes = encoded_bytes(&mut enc, &mut scene, 0..60);
    let bps = bytes as f64 * 8.0 / 2.0; // 60 frames at 30 fps = 2 s
    let ratio = bps / f64::from(target);
    println!("60 noisy frames: {bytes} bytes = {bps:.0} bit/s, {ratio:.2}x target {target}");
    assert!((0.5..2.0).contains(&ratio), "ratio {ratio:.2}");

    // Quarter the rate: the following frames shrink accordingly.
    let before = encoded_bytes(&mut enc, &mut scene, 60..90);
    enc.set_bitrate(target / 4).unwrap();
    assert_eq!(enc.config().bitrate_bps, target / 4);
    let _settle = encoded_bytes(&mut enc, &mut scene, 90..105);
    let after = encoded_bytes(&mut enc, &mut scene, 105..135);
    println!("30 frames before: {before} bytes; after quartering: {after} bytes");
    assert!(after * 2 < before, "before {before}, after {after}");
    // Back up again works too, and nonsense is rejected without changing the rate.
    enc.set_bitrate(target).unwrap();
    assert!(enc.set_bitrate(0).is_err());
    assert_eq!(enc.config().bitrate_bps, target);
}

#[test]
fn edge_sizes_roundtrip() {
    for (w, h) in [(16u32, 16u32), (18, 34), (3840, 2160), (2160, 3840)] {
        let cfg = EncoderConfig::new(w, h);
        let mut enc = Encoder::new(cfg).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        let mut dec = Decoder::new().unwrap();
        let mut scene = Scene::new(w, h, 0);
        for i in 0..3 {
            let frame = scene.frame(i);
            let out = enc.encode(&frame, ts(i)).unwrap();
            let pic = dec.decode(&out.data).unwrap().expect("picture");
            assert_eq!((pic.width, pic.height), (w, h));
            let d = mean_abs_diff(&pic.y, &frame.y);
            assert!(d < 8.0, "{w}x{h} frame {i}: {d}");
        }
    }
}

#[test]
fn odd_slice_and_thread_settings_never_panic() {
    for (w, h, threads, slices) in [
        (64u32, 64u32, 4u16, 32u16),
        (16, 16, 2, 2),
        (320, 240, 4, 7),
    ] {
        let cfg = EncoderConfig {
            threads,
            slices,
            ..EncoderConfig::new(w, h)
        };
        match Encoder::new(cfg) {
            Ok(mut enc) => {
                let out = enc.encode(&Scene::new(w, h, 0).frame(0), 0).unwrap();
                assert!(out.keyframe);
                let pic = Decoder::new().unwrap().decode(&out.data).unwrap();
                assert!(pic.is_some());
            }
            Err(e) => println!("{w}x{h} {threads}t{slices}s rejected: {e}"),
        }
    }
}
