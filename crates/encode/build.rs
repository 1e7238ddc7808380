//! Detects whether openh264-sys2's build can use nasm, with the same rule it applies.
//!
//! openh264-sys2 0.9.9 (feature `source`) compiles its x86 assembly with the `nasm-rs` crate:
//! assembly is used when the target is x86/x86_64, `OPENH264_NO_ASM` is unset, and a `nasm`
//! binary answers `-v` (the `NASM` environment variable if set, else `nasm` on `PATH`). When that
//! fails it silently falls back to plain C, which is about 3x slower, and never rebuilds itself
//! once nasm appears (its build script has no rerun triggers for that), hence the advice to run
//! `cargo clean -p openh264-sys2`.
//!
//! This script exports `LUMACAST_OPENH264_ASM=1|0` to the crate. It only describes what nasm
//! availability *is now*; the crate additionally asks the linked library at run time (see
//! `build_info()` in `src/build_info.rs`), which is the authoritative answer.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn nasm_candidates() -> Vec<PathBuf> {
    if let Some(explicit) = env::var_os("NASM") {
        return vec![PathBuf::from(explicit)];
    }
    let path = env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("nasm"))
        .chain(env::split_paths(&path).map(|p| p.join("nasm")))
        .collect()
}

fn nasm_works(candidate: &PathBuf) -> bool {
    match Command::new(candidate).arg("-v").output() {
        Ok(out) => out.status.success() && String::from_utf8_lossy(&out.stdout).contains("NASM"),
        Err(_) => false,
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=NASM");
    println!("cargo:rerun-if-env-changed=OPENH264_NO_ASM");

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let x86 = arch == "x86" || arch == "x86_64";

    // Reason codes read by src/build_info.rs.
    let (asm, reason) = if !x86 {
        // openh264-sys2 has no nasm step for other architectures (ARM uses .S files via cc).
        (false, "arch")
    } else if env::var("OPENH264_NO_ASM").is_ok() {
        println!(
            "cargo:warning=OPENH264_NO_ASM is set: openh264 is built without assembly (about 3x slower)"
        );
        (false, "disabled")
    } else if nasm_candidates().iter().any(nasm_works) {
        (true, "nasm")
    } else {
        println!(
            "cargo:warning=nasm not found: openh264 is built without assembly (about 3x slower); \
             install nasm and run cargo clean -p openh264-sys2"
        );
        (false, "no-nasm")
    };

    println!(
        "cargo:rustc-env=LUMACAST_OPENH264_ASM={}",
        if asm { "1" } else { "0" }
    );
    println!("cargo:rustc-env=LUMACAST_OPENH264_ASM_REASON={reason}");
}
