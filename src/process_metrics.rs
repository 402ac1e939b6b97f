//! The standard `process_*` metrics, read from `/proc` at scrape time.
//!
//! Linux only (seawall's deployment target). A field that cannot be read is left out of the
//! exposition rather than reported as zero, so a dashboard shows a gap instead of a lie.

use crate::metrics::Exposition;

/// Linux reports process times in USER_HZ ticks, fixed at 100 for the user-space ABI.
const USER_HZ: f64 = 100.0;

/// Appends CPU, memory, file descriptor, thread and start-time metrics.
pub fn render(out: &mut Exposition) {
    if let Some(stat) = read_stat() {
        out.single(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / USER_HZ,
        );
        if let Some(boot) = boot_time() {
            out.single(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + stat.start_ticks as f64 / USER_HZ,
            );
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status_field(&status, "VmSize:") {
        out.single(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Some(kib) = status_field(&status, "VmRSS:") {
        out.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Some(threads) = status_field(&status, "Threads:") {
        out.single(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            threads,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            entries.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        out.single(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces and parentheses; fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5), so field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// A numeric field of `/proc/self/status` such as `VmRSS:   1234 kB`.
fn status_field(status: &str, name: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("btime "))?;
    line[6..].trim().parse().ok()
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
