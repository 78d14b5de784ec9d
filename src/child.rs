//! Helper commands (MDAs, filters, password and token commands): run without a
//! shell, and bounded in time by one watchdog that kills a child still running at
//! its deadline. Commands fed a message have their stdout sent to our stderr, since
//! our stdout belongs to popfetch's own reports (`--json`, `list`).

use std::io;
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rustix::process::{kill_process, waitid, Pid, Signal, WaitId, WaitIdOptions};

/// Starts `argv` with a pipe on its stdin.
pub fn spawn_fed(argv: &[String]) -> io::Result<Child> {
    let stdout = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
}

/// Starts `argv` with nothing on its stdin and a pipe on its stdout; its stderr is
/// ours, so a pinentry can prompt.
pub fn spawn_reading(argv: &[String]) -> io::Result<Child> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Kills a child unless stopped within its timeout. The child is not reaped while
/// the watchdog runs, so its pid cannot be reused under us. A timeout too large for
/// the clock simply never fires (no deadline arithmetic that could overflow).
pub struct Watchdog {
    pid: Pid,
    cancel: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

/// How a watched child ended.
pub struct Ended {
    pub status: ExitStatus,
    /// The watchdog killed it at its timeout.
    pub timed_out: bool,
}

impl Watchdog {
    pub fn start(child: &Child, timeout: Duration) -> Watchdog {
        let pid = Pid::from_child(child);
        let (cancel, cancelled) = mpsc::channel();
        let thread = thread::spawn(move || {
            let fire = matches!(
                cancelled.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if fire {
                let _ = kill_process(pid, Signal::KILL);
            }
            fire
        });
        Watchdog {
            pid,
            cancel,
            thread,
        }
    }

    /// Waits for the child to end (killed at the timeout at the latest), stops the
    /// watchdog, then reaps the child.
    pub fn wait(self, child: &mut Child) -> io::Result<Ended> {
        // Wait for the exit without reaping, so the watchdog can still kill safely.
        let _ = waitid(
            WaitId::Pid(self.pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        );
        let _ = self.cancel.send(());
        let timed_out = self.thread.join().unwrap_or(true);
        let status = child.wait()?;
        Ok(Ended { status, timed_out })
    }
}

/// Describes an exit status that is not success, for messages: "exit 9", "killed by
/// signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_huge_timeout_never_fires_and_never_panics() {
        let mut child = spawn_reading(&["true".into()]).unwrap();
        let watchdog = Watchdog::start(&child, Duration::from_secs(u64::MAX));
        let ended = watchdog.wait(&mut child).unwrap();
        assert!(ended.status.success() && !ended.timed_out);
    }

    #[test]
    fn a_stuck_child_is_killed_at_the_timeout() {
        let start = Instant::now();
        let mut child = spawn_reading(&["sleep".into(), "30".into()]).unwrap();
        let watchdog = Watchdog::start(&child, Duration::from_millis(200));
        let ended = watchdog.wait(&mut child).unwrap();
        assert!(ended.timed_out);
        assert_eq!(describe(ended.status), "killed by signal 9");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
