//! Copies a child's output to zopp's stdout or stderr through a [`Masker`], on its own thread,
//! so a secret value never reaches the terminal even when it arrives split across reads.
//!
//! A pump ends at end of file (or EIO, which is how a pty reports that the child side
//! closed). A grandchild that keeps the pipe open after the child exits would hold it open
//! forever, so the supervisor stops waiting once a pump has sat idle in `read` for a while
//! after the child is gone; a pump that is busy writing (a slow reader of zopp's output) is
//! always waited for, so no output is cut short.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zopp_formats::Masker;

/// Where a pump writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// zopp's stdout.
    Stdout,
    /// zopp's stderr.
    Stderr,
}

const RUNNING: u8 = 0;
const READING: u8 = 1;
const DONE: u8 = 2;

/// A running pump.
#[derive(Debug)]
pub struct Pump {
    state: Arc<AtomicU8>,
    /// Set when the destination is gone (zopp's stdout closed): nothing more can be shown.
    broken: Arc<AtomicBool>,
}

impl Pump {
    /// Starts copying `source` to `sink`, masked by `masker`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(source: std::fs::File, sink: Sink, masker: Masker) -> io::Result<Self> {
        let state = Arc::new(AtomicU8::new(RUNNING));
        let broken = Arc::new(AtomicBool::new(false));
        let (st, br) = (Arc::clone(&state), Arc::clone(&broken));
        std::thread::Builder::new()
            .name("zopp-mask".into())
            .spawn(move || {
                let result = match sink {
                    Sink::Stdout => copy(source, io::stdout(), masker, &st),
                    Sink::Stderr => copy(source, io::stderr(), masker, &st),
                };
                if result.is_err() {
                    br.store(true, Ordering::SeqCst);
                }
                st.store(DONE, Ordering::SeqCst);
            })?;
        Ok(Self { state, broken })
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::SeqCst) == DONE
    }

    fn is_reading(&self) -> bool {
        self.state.load(Ordering::SeqCst) == READING
    }
}

/// Reads until end of file, masking, and flushes after every chunk so interactive output
/// appears as soon as it is safe to show.
fn copy(
    mut source: std::fs::File,
    mut out: impl Write,
    mut masker: Masker,
    state: &AtomicU8,
) -> io::Result<()> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        state.store(READING, Ordering::SeqCst);
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: the pty's last child-side descriptor closed. Anything else: the source is
            // unusable; either way the stream is over.
            Err(_) => break,
        };
        state.store(RUNNING, Ordering::SeqCst);
        let shown = zeroize::Zeroizing::new(masker.push(&buf[..n]));
        out.write_all(&shown)?;
        out.flush()?;
    }
    state.store(RUNNING, Ordering::SeqCst);
    let rest = zeroize::Zeroizing::new(masker.finish());
    out.write_all(&rest)?;
    out.flush()
}

/// Waits for `pumps` to drain after the child exited. Returns once every pump is done, or
/// once every pump still running has been idle in `read` for `idle` (a grandchild is holding
/// the stream open).
pub async fn drain(pumps: &[Pump], idle: Duration) {
    let mut idle_since: Option<Instant> = None;
    loop {
        if pumps.iter().all(Pump::is_done) {
            return;
        }
        let waiting = pumps.iter().all(|p| p.is_done() || p.is_reading());
        match (waiting, idle_since) {
            (false, _) => idle_since = None,
            (true, None) => idle_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= idle => return,
            (true, Some(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a pump found its destination closed.
pub fn any_broken(pumps: &[Pump]) -> bool {
    pumps.iter().any(|p| p.broken.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_masks_values_split_across_reads() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut w = std::fs::File::from(w);
        let writer = std::thread::spawn(move || {
            w.write_all(b"key=hunt").expect("write");
            w.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(30));
            w.write_all(b"er2-canary\n").expect("write");
        });
        let mut out = Vec::new();
        let state = AtomicU8::new(RUNNING);
        copy(
            std::fs::File::from(r),
            &mut out,
            Masker::new(["hunter2-canary"]),
            &state,
        )
        .expect("copy");
        writer.join().expect("writer");
        assert_eq!(out, b"key=<concealed by zopp>\n");
    }
}
