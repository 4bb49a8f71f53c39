//! Keeps the keys this process holds out of core dumps: at start, `zopp` marks itself not
//! dumpable (`PR_SET_DUMPABLE` 0, which also keeps other processes of the same user from
//! attaching to it or reading its `/proc/PID/mem`) and lowers its soft core-size limit to 0.
//!
//! A command started by `zopp run` gets the soft limit zopp inherited back (the kernel resets
//! dumpability at `exec`), so zopp's own hardening never changes how that command may dump.
//! Linux only; elsewhere both are no-ops.

use std::sync::OnceLock;

/// The soft core-size limit zopp started with, once [`disable_core_dumps`] lowered it.
#[cfg(target_os = "linux")]
static INHERITED_CORE_LIMIT: OnceLock<libc::rlim_t> = OnceLock::new();
#[cfg(not(target_os = "linux"))]
static INHERITED_CORE_LIMIT: OnceLock<u64> = OnceLock::new();

/// Marks this process not dumpable and sets its soft `RLIMIT_CORE` to 0. Failures are reported
/// as text and leave the process as it was (they never stop zopp: a sandbox may forbid both).
///
/// # Errors
/// The system call that failed, with its error.
#[cfg(target_os = "linux")]
pub fn disable_core_dumps() -> Result<(), String> {
    // The kernel reads every argument as an unsigned long.
    let zero: libc::c_ulong = 0;
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, zero, zero, zero, zero) };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_DUMPABLE, 0) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_CORE) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let inherited = limit.rlim_cur;
    limit.rlim_cur = 0;
    // SAFETY: `limit` is a valid rlimit; lowering the soft limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_CORE, 0) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let _ = INHERITED_CORE_LIMIT.set(inherited);
    Ok(())
}

/// No-op outside Linux.
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn disable_core_dumps() -> Result<(), String> {
    Ok(())
}

/// Arranges for `cmd`'s process to get back the soft core-size limit zopp inherited, when
/// [`disable_core_dumps`] lowered it.
#[cfg(target_os = "linux")]
pub fn restore_core_limit_for(cmd: &mut tokio::process::Command) {
    let Some(&inherited) = INHERITED_CORE_LIMIT.get() else {
        return;
    };
    let restore = move || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit are async-signal-safe system calls on a stack value,
        // as pre_exec requires.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                limit.rlim_cur = inherited.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe { cmd.pre_exec(restore) };
}

/// No-op outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn restore_core_limit_for(_cmd: &mut tokio::process::Command) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// nextest runs each test in its own process, so this changes nothing else.
    #[test]
    fn process_is_not_dumpable_and_has_no_core_limit() {
        disable_core_dumps().expect("hardening applies");
        let zero: libc::c_ulong = 0;
        // SAFETY: PR_GET_DUMPABLE takes no pointer.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_DUMPABLE, zero, zero, zero, zero) },
            0
        );
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: valid writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!(limit.rlim_cur, 0);
        assert!(INHERITED_CORE_LIMIT.get().is_some());
    }
}
