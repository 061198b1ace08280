//! What the benches read from /proc: a process's memory and the machine's.

/// A `kB` field of /proc/PID/status (`"VmRSS:"`, `"VmHWM:"`), in KiB; `None` if the process
/// or the field is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, field)
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `Slab` and `MemAvailable` from /proc/meminfo, in kB.
pub fn meminfo() -> (i64, i64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Slab:"), field("MemAvailable:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tkproxy\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(12_345));
        assert_eq!(status_field(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let own = status_kib(std::process::id(), "VmRSS:").expect("our own RSS");
        assert!(own > 0);
    }
}
