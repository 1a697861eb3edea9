//! Memory readings for benchmarks (`peak_rss_bytes`).

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), in bytes.
/// `None` where the file is not available (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_at_least_current() {
        // Current first: the high-water mark read afterwards can only be larger, even while
        // other test threads allocate in between.
        let cur = super::current_rss_bytes();
        if let (Some(peak), Some(cur)) = (super::peak_rss_bytes(), cur) {
            assert!(peak >= cur && cur > 0);
        }
    }
}
