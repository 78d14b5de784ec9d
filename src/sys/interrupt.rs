//! Ctrl-C during a sync: the progress bars are cleared, one line says that nothing
//! was lost, and popfetch exits 130 at once.
//!
//! Exiting at once is what keeps an interrupt safe: it has exactly the effect of a
//! kill at that instant, which the crash-safety design already covers. Nothing is
//! recorded before its delivery is durable, and a DELE takes effect only when the
//! server enters the UPDATE state at QUIT (RFC 1939 §6), which an exit without QUIT
//! never reaches; a delivery cut short is found by recovery on the next run. A
//! "graceful" stop that went on talking to the server would only add states.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicI32, Ordering};

use indicatif::{MultiProgress, ProgressDrawTarget};

/// The write end of the pipe the signal handler wakes the watcher through.
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// The line printed on an interrupt.
pub(crate) const NOTICE: &str = "popfetch: interrupted: nothing lost, run sync again";

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe calls here: one write(2) to wake the watcher.
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: writing one byte from a static buffer to a pipe we own.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// The terminal settings to put back, while echoing of control characters is off.
pub(crate) struct Installed {
    saved: Option<libc::termios>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        restore(self.saved.as_ref());
    }
}

fn restore(saved: Option<&libc::termios>) {
    if let Some(saved) = saved {
        // SAFETY: puts back settings read from the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

/// Handles SIGINT until the returned guard is dropped: a watcher thread clears
/// `bars`, prints the notice and exits with `code` (130). Without a pipe or a handler, SIGINT
/// keeps its default (a kill, just as safe, only silent).
///
/// With bars on a terminal, the echo of control characters is turned off meanwhile:
/// a bar line fills the terminal's width, so an echoed "^C" would wrap onto a line
/// of its own, and clearing the bars would then leave the top one standing.
pub(crate) fn install(bars: Option<MultiProgress>, code: i32) -> Installed {
    let mut saved = None;
    if bars.is_some() {
        // SAFETY: tcgetattr fills a termios; an error leaves the terminal alone.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut termios) } == 0 {
            let mut quiet = termios;
            quiet.c_lflag &= !libc::ECHOCTL;
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } == 0 {
                saved = Some(termios);
            }
        }
    }
    let installed = Installed { saved };
    let Some([read, write]) = cloexec_pipe() else {
        return installed;
    };
    WAKE.store(write, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let saved = saved;
            let mut byte = 0u8;
            loop {
                // SAFETY: reading one byte into a local.
                let n = unsafe { libc::read(read, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    break;
                }
                if n == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    return;
                }
            }
            if let Some(bars) = &bars {
                let _ = bars.clear();
                bars.set_draw_target(ProgressDrawTarget::hidden());
            }
            let mut err = std::io::stderr().lock();
            // The terminal echoed ^C where the cursor was: start a clean line.
            let start = if std::io::stderr().is_terminal() {
                "\r\x1b[2K"
            } else {
                ""
            };
            let _ = writeln!(err, "{start}{NOTICE}");
            let _ = err.flush();
            restore(saved.as_ref());
            // SAFETY: _exit ends the process at once, like the kill it stands for;
            // no destructor runs that could write half a record.
            unsafe { libc::_exit(code) };
        });
    if spawned.is_err() {
        return installed;
    }
    // SAFETY: a plain handler that only writes to a pipe; SA_RESTART keeps reads
    // and writes elsewhere from failing with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    installed
}

/// A pipe whose ends are closed in children (a filter or MDA must not hold the
/// wake-up pipe): pipe2(2) where there is one, else pipe(2) then FD_CLOEXEC
/// (macOS has no pipe2; nothing is spawned before this runs).
fn cloexec_pipe() -> Option<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pipe2 fills the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: pipe fills the two descriptors; fcntl only sets their flags.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return None;
            }
            for fd in fds {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Some(fds)
}
