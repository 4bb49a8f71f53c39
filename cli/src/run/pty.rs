//! The pseudo-terminal `zopp run --mask` gives its child when zopp's own stdout is a
//! terminal: the child still sees a TTY (and keeps its colours, progress bars and line
//! buffering) while every byte it prints passes through the masker.
//!
//! zopp puts its own terminal in raw mode and relays keystrokes to the pty, so Ctrl-C, Ctrl-Z
//! and line editing are handled by the pty's line discipline for the child, exactly as the
//! real terminal would; the original mode is restored when the [`RawMode`] guard drops.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// Both ends of a fresh pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// zopp's end: reads what the child prints, takes what the user types.
    pub master: OwnedFd,
    /// The child's end: its controlling terminal and stdout.
    pub slave: OwnedFd,
}

/// The window size of the terminal on `fd`, if it is one.
fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some(ws)
}

/// Opens a pty shaped like zopp's own terminal (its size and, when stdin is a terminal, its
/// settings).
///
/// # Errors
/// The system has no free pseudo-terminal.
pub fn open() -> io::Result<Pty> {
    let stdout = io::stdout();
    let size = window_size(stdout.as_fd());
    let stdin = io::stdin();
    let modes = if stdin.is_terminal() {
        tcgetattr(stdin.as_fd()).ok()
    } else {
        None
    };
    let pair = openpty(size.as_ref(), modes.as_ref()).map_err(io::Error::from)?;
    for fd in [&pair.master, &pair.slave] {
        // Neither end may leak into the child except as the stdio it is given.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
    })
}

/// Copies zopp's terminal size to the pty (after a SIGWINCH); the kernel then tells the
/// child's foreground process group.
pub fn copy_window_size(master: BorrowedFd<'_>) {
    if let Some(ws) = window_size(io::stdout().as_fd()) {
        // SAFETY: TIOCSWINSZ reads one `winsize` from the struct we pass.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Runs in the child between fork and exec: start a new session and make the pty on stdout
/// its controlling terminal, so the child gets its own job control and terminal signals.
///
/// # Safety
/// Calls only async-signal-safe functions, as required after `fork`.
pub fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe; fd 1 is the pty slave by now.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(1, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// zopp's own terminal in raw mode; restores the saved mode on drop.
pub struct RawMode {
    saved: Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}

impl RawMode {
    /// Switches stdin's terminal to raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Relays what the user types to the pty until stdin ends or the pty closes. Runs on its
/// own thread, which is left blocked in `read` when the child exits first (the process is
/// about to end).
pub fn relay_stdin(master: OwnedFd) -> io::Result<()> {
    let mut pty = std::fs::File::from(master);
    std::thread::Builder::new()
        .name("zopp-pty-input".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if pty.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    #[test]
    fn a_child_on_the_pty_sees_a_terminal_and_its_output_comes_back() {
        let pty = open().expect("a free pty");
        let out = std::fs::File::from(pty.slave.try_clone().expect("dup"));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "[ -t 1 ] && echo tty || echo pipe"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::null());
        // SAFETY: the hook calls only async-signal-safe functions.
        unsafe { cmd.pre_exec(make_controlling_terminal) };
        let mut child = cmd.spawn().expect("spawn");
        // The command holds a copy of the child side until dropped.
        drop(cmd);
        drop(pty.slave);
        let status = child.wait().expect("wait");
        assert!(status.success());
        let mut master = std::fs::File::from(pty.master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        // EIO once the last slave descriptor is closed: that is the end of the output.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(text.contains("tty\r\n"), "{text:?}");
        assert!(!text.contains("pipe"), "{text:?}");
    }
}
