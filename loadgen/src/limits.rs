//! What this machine lets loadgen do: descriptors (RLIMIT_NOFILE, raised to its hard limit),
//! memory (MemAvailable, and RLIMIT_AS when one is set), and local ports for one server
//! address (net.ipv4.ip_local_port_range). The binary checks its arguments against them
//! before it starts, so a run that cannot fit is refused with the numbers instead of failing
//! in its middle.

use std::io;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new (soft, hard) limits.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Bytes of memory loadgen may use: MemAvailable (or the physical memory when /proc says
/// nothing), and no more than RLIMIT_AS when that is set.
pub fn available_memory() -> Option<u64> {
    let from_proc = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemAvailable:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
        });
    // SAFETY: sysconf has no preconditions.
    let physical = || {
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages > 0 && page > 0).then(|| pages as u64 * page as u64)
    };
    let memory = from_proc.or_else(physical)?;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid rlimit.
    let address_space = (unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then_some(limit.rlim_cur);
    Some(address_space.map_or(memory, |a| a.min(memory)))
}

/// The local port range connections to one server address draw from.
pub fn local_port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|p| p.parse::<u32>().ok());
    let (low, high) = (ports.next()??, ports.next()??);
    (low <= high).then_some((low, high))
}

/// `bytes` in the largest binary unit that keeps it above 1, e.g. `4.0 PiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(99_999_999_999_999 * 50), "4.4 PiB");
    }

    #[test]
    fn the_machine_answers() {
        let (soft, hard) = raise_nofile().unwrap();
        assert_eq!(soft, hard, "the soft limit is raised to the hard one");
        assert!(available_memory().unwrap() > 1 << 20);
    }
}
