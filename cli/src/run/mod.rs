//! Process supervision for `zopp run`: start the child with its secrets, pass it the signals
//! zopp receives, mask its output when asked (through a pty when zopp's stdout is a terminal),
//! stop it gracefully for a restart, and turn its exit status into zopp's exit code.
//!
//! The child inherits zopp's stdin, stdout and stderr unless output is masked, so a terminal
//! stays a terminal and nothing sits between the child and its user.

pub mod hygiene;
pub mod pty;
pub mod pump;
pub mod signals;
pub mod watch;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zopp_formats::Masker;

use self::pump::{Pump, Sink};
use self::signals::Caught;

/// How long a pump may sit idle after the child exited before zopp stops waiting for it.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// What to run and how.
pub struct Spec<'a> {
    /// The program (looked up in `PATH`).
    pub program: &'a OsStr,
    /// Its arguments.
    pub args: &'a [OsString],
    /// Inherited variables the child must not see (zopp's own credentials).
    pub remove: Vec<OsString>,
    /// Variables to set on top of the inherited environment.
    pub env: Vec<(OsString, Vec<u8>)>,
    /// Mask the child's output with this masker.
    pub masker: Option<Masker>,
    /// With a masker: give the child a pseudo-terminal (zopp's stdout is a terminal).
    pub pty: bool,
}

impl std::fmt::Debug for Spec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("program", &self.program)
            .field("variables", &self.env.len())
            .field("masked", &self.masker.is_some())
            .field("pty", &self.pty)
            .finish_non_exhaustive()
    }
}

/// A running child.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    pumps: Vec<Pump>,
    /// zopp's end of the child's pty, kept to pass on window size changes.
    master: Option<OwnedFd>,
    /// zopp's terminal in raw mode while a pty child runs.
    raw: Option<pty::RawMode>,
}

/// The exit code a shell would report for `status`: the child's code, or 128 + the signal
/// that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    }
}

/// A pipe whose read end zopp keeps and whose write end the child gets.
fn pipe() -> io::Result<(std::fs::File, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((std::fs::File::from(r), w))
}

impl Running {
    /// Starts the child described by `spec`.
    ///
    /// # Errors
    /// The program cannot be started (not found, not executable) or a pipe or pty cannot be
    /// made.
    pub fn spawn(spec: Spec<'_>) -> io::Result<Self> {
        use std::os::unix::ffi::OsStringExt;
        let mut cmd = tokio::process::Command::new(spec.program);
        cmd.args(spec.args);
        for k in &spec.remove {
            cmd.env_remove(k);
        }
        for (k, v) in spec.env {
            cmd.env(k, OsString::from_vec(v));
        }
        crate::hardening::restore_core_limit_for(&mut cmd);
        // zopp must outlive a restart's SIGKILL of the child, never the other way round.
        cmd.kill_on_drop(false);
        let Some(masker) = spec.masker else {
            return Ok(Self {
                child: cmd.spawn()?,
                pumps: Vec::new(),
                master: None,
                raw: None,
            });
        };
        if !spec.pty {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            let child = cmd.spawn()?;
            // Close zopp's copies of the write ends, so the pumps see end of file when the
            // child (and whatever it started) is done.
            drop(cmd);
            let second = masker.fresh();
            return Ok(Self {
                child,
                pumps: vec![
                    Pump::start(out_r, Sink::Stdout, masker)?,
                    Pump::start(err_r, Sink::Stderr, second)?,
                ],
                master: None,
                raw: None,
            });
        }
        use std::io::IsTerminal;
        let p = pty::open()?;
        cmd.stdout(Stdio::from(p.slave.try_clone()?));
        let mut stderr_pipe = None;
        if io::stderr().is_terminal() {
            cmd.stderr(Stdio::from(p.slave.try_clone()?));
        } else {
            let (r, w) = pipe()?;
            cmd.stderr(Stdio::from(w));
            stderr_pipe = Some(r);
        }
        let interactive = io::stdin().is_terminal();
        if interactive {
            cmd.stdin(Stdio::from(p.slave.try_clone()?));
        }
        // SAFETY: the hook calls only async-signal-safe functions.
        unsafe { cmd.pre_exec(pty::make_controlling_terminal) };
        let child = cmd.spawn()?;
        // Only the child may hold the pty's child side now: once it (and anything it started)
        // closes it, reading the master fails with EIO, which ends the pump.
        drop(cmd);
        drop(p.slave);
        let mut raw = None;
        if interactive {
            pty::relay_stdin(p.master.try_clone()?)?;
            raw = pty::RawMode::enter();
        }
        let mut pumps = Vec::with_capacity(2);
        if let Some(r) = stderr_pipe {
            pumps.push(Pump::start(r, Sink::Stderr, masker.fresh())?);
        }
        pumps.push(Pump::start(
            std::fs::File::from(p.master.try_clone()?),
            Sink::Stdout,
            masker,
        )?);
        Ok(Self {
            child,
            pumps,
            master: Some(p.master),
            raw,
        })
    }

    /// The child's process id while it has not been reaped.
    fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// Sends `signal` to the child (nothing once it has been reaped, so a recycled pid is
    /// never hit).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// Passes on a signal zopp caught. One the terminal sent to the whole foreground process
    /// group already reached a child that shares zopp's terminal, so it is not sent twice; a
    /// child on its own pty gets everything.
    pub fn forward(&self, caught: Caught) {
        if caught.signal == Signal::SIGWINCH {
            if let Some(m) = &self.master {
                pty::copy_window_size(m.as_fd());
            }
            return;
        }
        if caught.from_terminal && self.master.is_none() {
            return;
        }
        self.signal(caught.signal);
    }

    /// Waits for the child to exit. Cancel-safe.
    ///
    /// # Errors
    /// Waiting failed (the child was reaped elsewhere).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// After the child exited: lets its output drain, restores the terminal, and returns the
    /// exit code.
    pub async fn finish(self, status: ExitStatus) -> u8 {
        pump::drain(&self.pumps, DRAIN_IDLE).await;
        drop(self.raw);
        exit_code(status)
    }

    /// Stops the child for a restart: SIGTERM, up to `grace` to exit, then SIGKILL.
    ///
    /// # Errors
    /// Waiting for the child failed.
    pub async fn stop(mut self, grace: Duration) -> io::Result<u8> {
        self.signal(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await?
            }
        };
        Ok(self.finish(status).await)
    }

    /// Whether zopp's own output went away while copying the child's (a closed pipe).
    pub fn output_closed(&self) -> bool {
        pump::any_broken(&self.pumps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_conventions() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(255 << 8)), 255);
        // Killed by SIGTERM (15) and SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[tokio::test]
    async fn masked_child_output_is_concealed_and_its_code_returned() {
        let args = [
            OsString::from("-c"),
            OsString::from(
                "printf 'v=%s\\n' \"$ZOPP_T_SECRET\"; echo \"$ZOPP_T_SECRET\" >&2; exit 3",
            ),
        ];
        let mut running = Running::spawn(Spec {
            remove: Vec::new(),
            program: OsStr::new("sh"),
            args: &args,
            env: vec![("ZOPP_T_SECRET".into(), b"hunter2-canary".to_vec())],
            masker: Some(Masker::new(["hunter2-canary"])),
            pty: false,
        })
        .expect("spawn");
        let status = running.wait().await.expect("wait");
        assert_eq!(running.finish(status).await, 3);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace_period() {
        let args = [
            OsString::from("-c"),
            OsString::from("trap '' TERM; while :; do sleep 0.05; done"),
        ];
        let running = Running::spawn(Spec {
            remove: Vec::new(),
            program: OsStr::new("sh"),
            args: &args,
            env: Vec::new(),
            masker: None,
            pty: false,
        })
        .expect("spawn");
        // Give the shell time to install its trap, or SIGTERM would end it at once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let code = running
            .stop(Duration::from_millis(200))
            .await
            .expect("stopped");
        assert_eq!(code, 137);
    }
}
