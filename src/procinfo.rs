//! This process's own resource use, read from `/proc/self` (Linux), for `/api/stats`,
//! the load program and the leak tests. Elsewhere every field is `None`.

/// A snapshot of what the process holds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcInfo {
    /// User + system CPU time so far, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

/// Hands memory that was freed back to the operating system where the allocator keeps
/// it (glibc keeps freed heap pages of its per-thread arenas: after a burst of viewers the
/// resident size would otherwise stay at the high-water mark for hours).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own heap; it takes glibc's locks
    // and has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at 2 (instead of 8 per core), unless the operator set
/// `MALLOC_ARENA_MAX`. Every thread that allocates under contention gets an arena, and
/// arenas are never given back: a burst of a hundred viewers would otherwise raise the
/// resident size for good. Call it first thing in `main`, before threads start.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc malloc tunable; called before other threads
        // exist, so no allocation races with it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn current() -> ProcInfo {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
    let cpu_seconds = stat.as_deref().and_then(|s| {
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    ProcInfo {
        cpu_seconds,
        rss_bytes: field("VmRSS:").map(|kb| kb * 1024),
        threads: field("Threads:"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let p = super::current();
        if cfg!(target_os = "linux") {
            assert!(p.cpu_seconds.is_some());
            assert!(p.rss_bytes.unwrap() > 1_000_000);
            assert!(p.threads.unwrap() >= 1);
            assert!(p.open_fds.unwrap() >= 3);
        }
    }
}
