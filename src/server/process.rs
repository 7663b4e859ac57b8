//! Reads the process and host facts that `stats` reports.

use std::sync::Arc;

use crate::engine::{CpuTimes, ProcessInfo};

/// Facts about this process and host, read once (CPU times are read on each `stats`).
pub fn process_info() -> ProcessInfo {
    let (hostname, os, platform) = uname();
    let mut id = [0u8; 8];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ (u128::from(std::process::id()) << 64);
    for (i, b) in id.iter_mut().enumerate() {
        *b = (seed >> (i * 13)) as u8;
    }
    let instance_id = id.iter().map(|b| format!("{b:02x}")).collect();
    ProcessInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        instance_id,
        hostname,
        os,
        platform,
        cpu_times: Arc::new(cpu_times),
    }
}

fn cpu_times() -> CpuTimes {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer is always permitted.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return CpuTimes::default();
    }
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    CpuTimes {
        user_micros: micros(ru.ru_utime),
        system_micros: micros(ru.ru_stime),
    }
}

fn uname() -> (String, String, String) {
    // SAFETY: uname fills the zeroed struct with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.nodename), field(&u.version), field(&u.machine))
}
