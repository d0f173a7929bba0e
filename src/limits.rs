//! Process limits blast depends on, and its own CPU time.

use std::time::Duration;

/// File descriptors blast needs besides its connections (stdio, epoll sets, eventfds,
/// the output files), per shard and overall.
const SPARE_FDS: u64 = 64;

fn get(resource: libc::__rlimit_resource_t) -> Result<libc::rlimit, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes to the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(lim)
}

/// Raise the soft limit to the hard one (as far as it goes) and return the new soft limit.
fn raise(resource: libc::__rlimit_resource_t) -> Result<u64, String> {
    let mut lim = get(resource)?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass. Failure leaves the old limit.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Ok(get(resource)?.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// Raise the open-files soft limit as far as the hard limit allows.
pub fn raise_nofile_soft() {
    let _ = raise(libc::RLIMIT_NOFILE);
}

/// Make room for `conns` sockets, or say why there is none.
pub fn raise_nofile(conns: usize) -> Result<(), String> {
    let have = raise(libc::RLIMIT_NOFILE)?;
    let need = conns as u64 + SPARE_FDS;
    if have < need {
        return Err(format!(
            "--conns {conns} needs about {need} open files but the limit is {have}; \
             raise it (ulimit -n) or use fewer connections"
        ));
    }
    Ok(())
}

/// User + system CPU time this process has used so far (every thread).
pub fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes to the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size of this process, in bytes.
pub fn peak_rss() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss as u64 * 1024
}
