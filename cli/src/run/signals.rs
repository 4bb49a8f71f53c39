//! Signals `zopp run` catches so it can pass them on to its child instead of dying first.
//!
//! A `SA_SIGINFO` handler writes the signal number, and whether the terminal sent it, to a
//! self-pipe (the only async-signal-safe thing it does); a thread turns the pipe into a
//! channel the supervisor awaits. Knowing the sender matters: a Ctrl-C typed at a terminal
//! reaches the whole foreground process group, the child included, so forwarding it again
//! would deliver it twice; a `kill` aimed at zopp alone must be forwarded.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use tokio::sync::mpsc;

/// Signals forwarded to the child.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Write end of the self-pipe, read by the handler (-1: none installed).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// One caught signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    /// Which signal.
    pub signal: Signal,
    /// Whether the kernel sent it on behalf of a terminal (Ctrl-C, Ctrl-\, hang-up) rather
    /// than a process calling `kill`.
    pub from_terminal: bool,
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: reading errno and the siginfo the kernel passed, and write(2), are all
    // async-signal-safe; errno is restored so the interrupted code does not see ours.
    unsafe {
        let errno = *libc::__errno_location();
        let fd = PIPE_WRITE.load(Ordering::Relaxed);
        if fd >= 0 {
            let from_terminal = !info.is_null() && (*info).si_code == libc::SI_KERNEL;
            let msg = [sig as u8, u8::from(from_terminal)];
            libc::write(fd, msg.as_ptr().cast(), msg.len());
        }
        *libc::__errno_location() = errno;
    }
}

/// Catches `signals` from now on and delivers them on the returned channel. Signals that
/// arrive before the child exists wait in the channel, so none is lost.
///
/// # Errors
/// The pipe or the handler cannot be set up.
pub fn catch(signals: &[Signal]) -> std::io::Result<mpsc::UnboundedReceiver<Caught>> {
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // The handler must never block: a full pipe just drops the signal number.
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(std::io::Error::from)?;
    let old = PIPE_WRITE.swap(write.as_raw_fd(), Ordering::SeqCst);
    // The write end lives as long as the process (the handler may run at any time).
    std::mem::forget(write);
    if old >= 0 {
        // SAFETY: `old` is a write end this function leaked earlier; nothing else owns it.
        unsafe { libc::close(old) };
    }
    let action = SigAction::new(
        SigHandler::SigAction(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for &s in signals {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { sigaction(s, &action) }.map_err(std::io::Error::from)?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("zopp-signals".into())
        .spawn(move || {
            let mut pipe = std::fs::File::from(read);
            let mut msg = [0u8; 2];
            while pipe.read_exact(&mut msg).is_ok() {
                let Ok(signal) = Signal::try_from(i32::from(msg[0])) else {
                    continue;
                };
                let caught = Caught {
                    signal,
                    from_terminal: msg[1] == 1,
                };
                if tx.send(caught).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_process_sees_the_signal_as_sent_by_a_process() {
        let mut rx = catch(&[Signal::SIGUSR2]).expect("install");
        nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR2).expect("kill self");
        let caught = rx.recv().await.expect("delivered");
        assert_eq!(
            caught,
            Caught {
                signal: Signal::SIGUSR2,
                from_terminal: false
            }
        );
    }
}
