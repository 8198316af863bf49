//! The binary's process settings for memory (see `src/alloc.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `THP_enabled` of `/proc/<pid>/status`: 0 once the process turned huge pages off.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))?;
    line.trim().parse().ok()
}

/// A running `mako` has transparent huge pages off (they cost clusters a fifth of their CPU
/// in page zeroing on a 2-core VM); the flag is the kernel's, inherited by the servers it starts.
#[cfg(target_os = "linux")]
#[test]
fn a_running_mako_has_transparent_huge_pages_off() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["demo", "--duration", "2", "--keys", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run mako demo");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        seen = thp_enabled(pid).or(seen);
        if seen == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, Some(0), "THP_enabled of the running mako");
}
