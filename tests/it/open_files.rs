//! The open-file limit a started seawall gives itself, read back from `/proc`.

use nix::sys::resource::{Resource, getrlimit};

use crate::support::{Seawall, admin_get, metric};

/// 4096 proxy + 64 admin connections, 2 x 1024 tunnel sides and 256 in reserve.
const NEEDED_BY_DEFAULTS: u64 = 6464;

/// Seawall's soft and hard `Max open files`.
fn limits(seawall: &Seawall) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{}/limits", seawall.pid())).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_limit_is_raised_to_what_the_configuration_can_hold_open() {
    let (_, our_hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let hard = our_hard.min(8000);
    let seawall = Seawall::start_with_open_file_limit("", 512, hard);
    let expected = NEEDED_BY_DEFAULTS.min(hard);
    assert_eq!(limits(&seawall), (expected, hard));
    let metrics = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(metric(&metrics, "process_max_fds"), Some(expected as f64));
    if hard >= NEEDED_BY_DEFAULTS {
        assert!(
            seawall.logs().contains("open-file limit raised"),
            "{}",
            seawall.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_limit_below_the_need_is_used_whole_and_reported() {
    let seawall = Seawall::start_with_open_file_limit("", 256, 1000);
    assert_eq!(limits(&seawall), (1000, 1000));
    let logs = seawall.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("open-file limit is below"))
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    assert!(warning.contains(r#""needed":6464"#), "{warning}");
    assert!(warning.contains(r#""limit":1000"#), "{warning}");
    assert!(warning.contains(r#""level":"WARN""#), "{warning}");
    // Fewer connections than that need fewer files: no warning.
    let small = "[server]\nmax_connections = 200\nmax_upgraded_connections = 100\n";
    let seawall = Seawall::start_with_open_file_limit(small, 256, 1000);
    assert_eq!(limits(&seawall), (720, 1000));
    assert!(!seawall.logs().contains("open-file limit is below"));
}
