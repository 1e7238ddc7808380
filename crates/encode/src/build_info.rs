//! Whether the linked openh264 uses its SIMD assembly.
//!
//! openh264-sys2 silently builds plain C when nasm is missing (about 3x slower), and it does not
//! rebuild when nasm is installed later. Two sources are combined here:
//!
//! - the authoritative one, asked at run time: openh264's own `WelsCPUFeatureDetect()` (exported
//!   with C linkage from the statically linked library) is compiled as `return 0;` when the
//!   library was built without assembly (`X86_ASM` undefined), and returns the CPU's feature
//!   flags (MMX, SSE2, ... on any x86_64) when it was built with it;
//! - what `build.rs` saw: whether a working `nasm` was on `PATH` when this crate was built, used
//!   to tell "install nasm" apart from "nasm is there now, clean the stale openh264 build".

use std::os::raw::c_int;
use std::sync::OnceLock;

// SAFETY (for the declaration): `uint32_t WelsCPUFeatureDetect(int32_t* pNumberOfLogicProcessors)`
// is declared inside `extern "C"` in openh264's codec/common/inc/cpu.h and defined in
// codec/common/src/cpu.cpp, which openh264-sys2 compiles into the `openh264_common` static
// library for every target; the signature below matches it.
unsafe extern "C" {
    fn WelsCPUFeatureDetect(number_of_logical_processors: *mut c_int) -> u32;
}

/// How the linked openh264 was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// True when openh264 runs its SIMD assembly (x86 via nasm, or ARM NEON).
    pub assembly: bool,
    /// True when a working `nasm` was found while building this crate (x86 only).
    pub nasm_at_build: bool,
    /// openh264's CPU feature flags as it detected them (0 without assembly).
    pub cpu_flags: u32,
    /// One sentence for logs and status pages, with the fix when assembly is off.
    pub note: &'static str,
}

/// Reports whether openh264 was built with assembly; computed once, cheap afterwards.
pub fn build_info() -> BuildInfo {
    static INFO: OnceLock<BuildInfo> = OnceLock::new();
    *INFO.get_or_init(detect)
}

fn detect() -> BuildInfo {
    let mut cores: c_int = 0;
    // SAFETY: the function only runs CPUID (or reads HWCAP on ARM) and writes one int through the
    // pointer, which points to a live local.
    let cpu_flags = unsafe { WelsCPUFeatureDetect(&mut cores) };
    let assembly = cpu_flags != 0;
    let nasm_at_build = env!("LUMACAST_OPENH264_ASM") == "1";
    let reason = env!("LUMACAST_OPENH264_ASM_REASON");
    let x86 = cfg!(any(target_arch = "x86", target_arch = "x86_64"));
    let note = match (assembly, x86, reason) {
        (true, true, _) => "openh264 runs its x86 SIMD assembly (built with nasm)",
        (true, false, _) => "openh264 runs its SIMD assembly for this CPU",
        (false, false, _) => "openh264 has no assembly for this target: plain C, slower",
        (false, true, "disabled") => {
            "openh264 was built without assembly because OPENH264_NO_ASM is set (about 3x slower)"
        }
        (false, true, "nasm") => {
            "openh264 was built without assembly although nasm is installed now (stale build from \
             before nasm): run `cargo clean -p openh264-sys2` (and `--release`) and rebuild; \
             encoding is about 3x slower until then"
        }
        (false, true, _) => {
            "openh264 was built without assembly because nasm was not found (about 3x slower): \
             install nasm, run `cargo clean -p openh264-sys2` (and `--release`) and rebuild"
        }
    };
    BuildInfo {
        assembly,
        nasm_at_build,
        cpu_flags,
        note,
    }
}
