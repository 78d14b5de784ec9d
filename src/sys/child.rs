//! The one runner for helper commands (filters, MDAs, password and token commands):
//! spawn without a shell, feed stdin, forward or capture stdout, bound the whole run
//! by a timeout that kills, and classify how it ended. Commands fed a message have
//! their stdout sent to our stderr, since our stdout belongs to popfetch's own
//! reports (`--json`, `list`); their stderr is ours, so a pinentry can prompt.
//!
//! The environment is popfetch's own, passed on unchanged (a pinentry needs
//! `DISPLAY` or `GPG_TTY`, procmail `HOME`). The runner has no way to add to it, so
//! nothing popfetch holds, a password or a token, can reach a child through it.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::process::{
    kill_process, kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions,
};

use crate::sys::copy::{self, CopyError};

/// What a command reads on its stdin.
pub(crate) enum Stdin<'a> {
    /// Nothing (`/dev/null`).
    Null,
    /// Bytes the command may read as little of as it likes (a filter may decide on
    /// the first header). Written from a thread that is never joined, so neither a
    /// command that never reads nor a grandchild holding the pipe can hold us.
    Offer(Vec<u8>),
    /// A stream the command must read to its end (a message for an MDA), copied on
    /// the caller's thread in large batches, never gathered whole. Writing gives up
    /// at the deadline. If the stream itself fails, the command is killed before its
    /// stdin closes: an end of input would make a truncated message look complete.
    Stream(&'a mut dyn Read),
}

/// Where a command's stdout goes.
pub(crate) enum Stdout {
    /// To our stderr.
    ToStderr,
    /// Nowhere (`/dev/null`).
    Null,
    /// Captured: the first line, at most `line_max` bytes without its end, then
    /// the rest drained up to `rest_max` bytes (`pass show` prints notes there).
    /// More is a runaway (`yes`), killed so it cannot fill our memory. The pipe is
    /// read to its end, so a grandchild keeping it open runs into the timeout.
    FirstLine { line_max: usize, rest_max: usize },
}

/// Which bound a captured stdout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The first line grew past `line_max` without a line end.
    FirstLine,
    /// More than `rest_max` followed the first line.
    Rest,
}

/// How a run ended. When several things went wrong, the first in this order wins:
/// an overflow, the timeout, a failed wait, a failed stdin, then the exit status.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(i32),
    Signalled(i32),
    /// Still running, or its stdin or stdout still held open, at the timeout; killed.
    TimedOut,
    SpawnFailed(io::Error),
    /// Its stdout passed a bound; killed.
    OutputTooLarge(Overflow),
    /// A streamed stdin was not written whole: the command stopped reading
    /// (`BrokenPipe`) or the write failed.
    InputRefused(io::Error),
    /// The stream feeding stdin failed; the command was killed before it could see
    /// an end of input.
    SourceFailed(io::Error),
    /// Waiting for the command failed.
    WaitFailed(io::Error),
}

impl fmt::Display for Outcome {
    /// For messages: "exit 9", "killed by signal 9".
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exit {code}"),
            Outcome::Signalled(signal) => write!(f, "killed by signal {signal}"),
            Outcome::TimedOut => f.write_str("killed at its timeout"),
            Outcome::SpawnFailed(e) => write!(f, "could not be started: {e}"),
            Outcome::OutputTooLarge(Overflow::FirstLine) => {
                f.write_str("killed for a first line past its bound")
            }
            Outcome::OutputTooLarge(Overflow::Rest) => {
                f.write_str("killed for output past its bound")
            }
            Outcome::InputRefused(e) | Outcome::SourceFailed(e) | Outcome::WaitFailed(e) => {
                e.fmt(f)
            }
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Ended {
    pub outcome: Outcome,
    /// How many bytes of a [`Stdin::Stream`] were written.
    pub fed: u64,
    /// The first line of a [`Stdout::FirstLine`], without its end.
    pub line: Vec<u8>,
}

/// One run of a command: `Run::new(argv, timeout)`, then what goes in and out.
pub(crate) struct Run<'a> {
    argv: &'a [String],
    timeout: Duration,
    stdin: Stdin<'a>,
    stdout: Stdout,
    /// A process group of its own, killed whole at the timeout.
    own_group: bool,
}

impl<'a> Run<'a> {
    /// `argv[0]` is the program, found in `PATH`; no shell runs it. A timeout too
    /// large for the clock never fires (no deadline arithmetic that could overflow).
    pub(crate) fn new(argv: &'a [String], timeout: Duration) -> Run<'a> {
        Run {
            argv,
            timeout,
            stdin: Stdin::Null,
            stdout: Stdout::ToStderr,
            own_group: false,
        }
    }

    /// Runs the command in a process group of its own, so that the timeout
    /// kills what it started too (a hook's `sleep`, a notifier it spawned), not
    /// only the command. Not for commands that may talk to the terminal (a
    /// pinentry): outside the terminal's foreground group they would stop.
    pub(crate) fn own_group(mut self) -> Run<'a> {
        self.own_group = true;
        self
    }

    pub(crate) fn stdin(mut self, stdin: Stdin<'a>) -> Run<'a> {
        self.stdin = stdin;
        self
    }

    pub(crate) fn stdout(mut self, stdout: Stdout) -> Run<'a> {
        self.stdout = stdout;
        self
    }

    /// Runs the command to its end, which comes by the timeout at the latest.
    pub(crate) fn run(self) -> Ended {
        let mut ended = Ended {
            outcome: Outcome::TimedOut,
            fed: 0,
            line: Vec::new(),
        };
        let mut child = match self.command().spawn() {
            Ok(child) => child,
            Err(e) => {
                ended.outcome = Outcome::SpawnFailed(e);
                return ended;
            }
        };
        let deadline = Instant::now().checked_add(self.timeout);
        let watchdog = Watchdog::start(&child, self.timeout, self.own_group);
        // Read on a thread: a grandchild that keeps the pipe open must not hold us
        // past the timeout, which killing the child alone cannot promise.
        let captured = match (self.stdout, child.stdout.take()) {
            (Stdout::FirstLine { line_max, rest_max }, Some(stdout)) => {
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    let _ = tx.send(read_first_line(stdout, line_max, rest_max));
                });
                Some(rx)
            }
            _ => None,
        };
        // An end the runner decides itself, killing the command.
        let mut cut = None;
        let mut fed = Ok(());
        match (self.stdin, child.stdin.take()) {
            (Stdin::Offer(bytes), Some(mut stdin)) => {
                thread::spawn(move || {
                    // A command may decide without reading everything.
                    let _ = stdin.write_all(&bytes);
                });
            }
            (Stdin::Stream(source), Some(stdin)) => {
                match stream(source, &stdin, deadline) {
                    Ok(n) => ended.fed = n,
                    Err(Fed::Source(e)) => {
                        let _ = child.kill();
                        fed = Err(Outcome::SourceFailed(e));
                    }
                    Err(Fed::Deadline) => {
                        let _ = child.kill();
                        cut = Some(Outcome::TimedOut);
                    }
                    Err(Fed::Refused(e)) => fed = Err(Outcome::InputRefused(e)),
                }
                // Closed only now, after any kill.
                drop(stdin);
            }
            _ => {}
        }
        if let Some(rx) = captured {
            let received = match deadline {
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Ok(line)) => ended.line = line,
                Ok(Err(overflow)) => {
                    let _ = child.kill();
                    cut = Some(Outcome::OutputTooLarge(overflow));
                }
                Err(_) => {
                    let _ = child.kill();
                    cut = cut.or(Some(Outcome::TimedOut));
                }
            }
        }
        let waited = watchdog.wait(&mut child);
        ended.outcome = match (cut, waited) {
            (Some(cut), _) => cut,
            (None, Ok((_, true))) => Outcome::TimedOut,
            (None, Err(e)) => Outcome::WaitFailed(e),
            (None, Ok((status, false))) => match fed {
                Err(failed) => failed,
                Ok(()) => classify(status),
            },
        };
        ended
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]).stderr(Stdio::inherit());
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        // The environment as popfetch was given it, not as it tuned it for TLS.
        for (name, value) in crate::net::found_env() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.stdin(match self.stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Offer(_) | Stdin::Stream(_) => Stdio::piped(),
        });
        command.stdout(match self.stdout {
            Stdout::ToStderr => io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            Stdout::FirstLine { .. } => Stdio::piped(),
            Stdout::Null => Stdio::null(),
        });
        command
    }
}

fn classify(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signalled(signal),
        // Stopped or continued: wait(2) reports neither unless asked.
        (None, None) => Outcome::WaitFailed(io::Error::other(status.to_string())),
    }
}

/// Why streaming stdin stopped early.
enum Fed {
    Source(io::Error),
    Refused(io::Error),
    Deadline,
}

/// Copies `source` into the command's stdin until its end, or the deadline.
fn stream(
    source: &mut dyn Read,
    stdin: &ChildStdin,
    deadline: Option<Instant>,
) -> Result<u64, Fed> {
    // Non-blocking, so a write waits in poll(2) and gives up at the deadline even
    // when a grandchild holds the pipe without reading: killing the child does not
    // close the grandchild's copy. Only our end changes; the command's is its own
    // open file description.
    let flags = fcntl_getfl(stdin).map_err(|e| Fed::Refused(e.into()))?;
    fcntl_setfl(stdin, flags | OFlags::NONBLOCK).map_err(|e| Fed::Refused(e.into()))?;
    let mut pipe = Bounded { stdin, deadline };
    copy::batched(source, &mut pipe).map_err(|e| match e {
        CopyError::Read(e) => Fed::Source(e),
        CopyError::Write(e) if e.kind() == io::ErrorKind::TimedOut => Fed::Deadline,
        CopyError::Write(e) => Fed::Refused(e),
    })
}

/// The longest single wait in poll(2): some systems refuse timeouts past
/// `c_int::MAX` milliseconds, and the loop looks at the deadline again anyway.
const POLL_MAX: Duration = Duration::from_secs(3600);

/// A non-blocking stdin whose writes wait at most until the deadline, then fail
/// with `TimedOut`.
struct Bounded<'a> {
    stdin: &'a ChildStdin,
    deadline: Option<Instant>,
}

impl Bounded<'_> {
    fn wait_writable(&self) -> io::Result<()> {
        loop {
            let wait = match self.deadline {
                None => POLL_MAX,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    left.min(POLL_MAX)
                }
            };
            let wait = Timespec::try_from(wait).map_err(io::Error::other)?;
            let mut fds = [PollFd::new(self.stdin, PollFlags::OUT)];
            match poll(&mut fds, Some(&wait)) {
                // Writable, or the reader is gone: the next write says which.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pipe = self.stdin;
        loop {
            match pipe.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads up to the first line end, then drains the rest, both bounded. A failed
/// read ends the output as if it had ended there.
fn read_first_line(
    mut stdout: impl Read,
    line_max: usize,
    rest_max: usize,
) -> Result<Vec<u8>, Overflow> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    let mut rest = 0usize;
    let mut in_first = true;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return Ok(line),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(line),
        };
        let mut chunk = &buf[..n];
        if in_first {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&chunk[..end]);
                    chunk = &chunk[end + 1..];
                    in_first = false;
                }
                None => {
                    line.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
            if line.len() > line_max {
                return Err(Overflow::FirstLine);
            }
        }
        rest += chunk.len();
        if rest > rest_max {
            return Err(Overflow::Rest);
        }
    }
}

/// Kills a child unless stopped within its timeout. The child is not reaped while
/// the watchdog runs, so its pid cannot be reused under us.
struct Watchdog {
    pid: Pid,
    cancel: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(child: &std::process::Child, timeout: Duration, group: bool) -> Watchdog {
        let pid = Pid::from_child(child);
        let (cancel, cancelled) = mpsc::channel();
        let thread = thread::spawn(move || {
            let fire = matches!(
                cancelled.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if fire {
                if group {
                    let _ = kill_process_group(pid, Signal::KILL);
                }
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
    /// watchdog, then reaps the child. Says whether the watchdog killed it.
    fn wait(self, child: &mut std::process::Child) -> io::Result<(ExitStatus, bool)> {
        // Wait for the exit without reaping, so the watchdog can still kill safely.
        let _ = waitid(
            WaitId::Pid(self.pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        );
        let _ = self.cancel.send(());
        let timed_out = self.thread.join().unwrap_or(true);
        let status = child.wait()?;
        Ok((status, timed_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn first_line() -> Stdout {
        Stdout::FirstLine {
            line_max: 16,
            rest_max: 64,
        }
    }

    /// Runs and checks that it ended well within `bound`.
    fn timed(run: Run, bound: Duration) -> Ended {
        let start = Instant::now();
        let ended = run.run();
        assert!(start.elapsed() < bound, "took {:?}", start.elapsed());
        ended
    }

    #[test]
    fn exits_and_signals_are_told_apart() {
        let t = Duration::from_secs(10);
        let exit = Run::new(&sh("exit 3"), t).run().outcome;
        assert!(matches!(exit, Outcome::Exited(3)), "{exit:?}");
        assert_eq!(exit.to_string(), "exit 3");
        let term = Run::new(&sh("kill -TERM $$"), t).run().outcome;
        assert!(matches!(term, Outcome::Signalled(15)), "{term:?}");
        let kill = Run::new(&sh("kill -9 $$"), t).run().outcome;
        assert_eq!(kill.to_string(), "killed by signal 9");
        let missing = Run::new(&["/nonexistent/helper".into()], t).run().outcome;
        assert!(matches!(missing, Outcome::SpawnFailed(_)), "{missing:?}");
    }

    #[test]
    fn a_huge_timeout_never_fires_and_never_panics() {
        let ended = Run::new(
            &sh("cat >/dev/null; echo pw"),
            Duration::from_secs(u64::MAX),
        )
        .stdout(first_line())
        .stdin(Stdin::Stream(&mut &b"x\n"[..]))
        .run();
        assert!(matches!(ended.outcome, Outcome::Exited(0)), "{ended:?}");
        assert_eq!(ended.line, b"pw");
    }

    #[test]
    fn a_stuck_command_is_killed_at_the_timeout() {
        let bound = Duration::from_secs(5);
        let t = Duration::from_millis(200);
        let silent = timed(Run::new(&sh("sleep 30"), t), bound);
        assert!(matches!(silent.outcome, Outcome::TimedOut), "{silent:?}");
        // One that never reads its stdin, offered or streamed.
        let big = vec![b'x'; 4 << 20];
        let offered = timed(
            Run::new(&sh("sleep 30"), t).stdin(Stdin::Offer(big.clone())),
            bound,
        );
        assert!(matches!(offered.outcome, Outcome::TimedOut), "{offered:?}");
        let streamed = timed(
            Run::new(&sh("sleep 30"), t).stdin(Stdin::Stream(&mut &big[..])),
            bound,
        );
        assert!(
            matches!(streamed.outcome, Outcome::TimedOut),
            "{streamed:?}"
        );
        // A first line in time, but no end.
        let lingering = timed(
            Run::new(&sh("echo pw; sleep 30"), t).stdout(first_line()),
            bound,
        );
        assert!(
            matches!(lingering.outcome, Outcome::TimedOut),
            "{lingering:?}"
        );
    }

    #[test]
    fn a_grandchild_holding_a_pipe_does_not_hold_us() {
        let bound = Duration::from_secs(5);
        let t = Duration::from_millis(300);
        // The command exits at once; a grandchild keeps the pipes without using them
        // (a shell gives a background job /dev/null as stdin unless told otherwise).
        let holds = sh("exec 3<&0; sleep 10 <&3 & exit 0");
        let read = timed(Run::new(&holds, t).stdout(first_line()), bound);
        assert!(matches!(read.outcome, Outcome::TimedOut), "{read:?}");
        let big = vec![b'x'; 4 << 20];
        let streamed = timed(
            Run::new(&holds, t).stdin(Stdin::Stream(&mut &big[..])),
            bound,
        );
        assert!(
            matches!(streamed.outcome, Outcome::TimedOut),
            "{streamed:?}"
        );
        // Offered input is not owed: the exit is the answer, at once.
        let offered = timed(
            Run::new(&holds, Duration::from_secs(10)).stdin(Stdin::Offer(big)),
            bound,
        );
        assert!(matches!(offered.outcome, Outcome::Exited(0)), "{offered:?}");
    }

    #[test]
    fn captured_output_is_bounded() {
        let bound = Duration::from_secs(5);
        let t = Duration::from_secs(10);
        let endless = timed(Run::new(&["yes".into()], t).stdout(first_line()), bound);
        assert!(
            matches!(endless.outcome, Outcome::OutputTooLarge(Overflow::Rest)),
            "{endless:?}"
        );
        let no_end = timed(
            Run::new(&sh("head -c 100000000 /dev/zero"), t).stdout(first_line()),
            bound,
        );
        assert!(
            matches!(no_end.outcome, Outcome::OutputTooLarge(Overflow::FirstLine)),
            "{no_end:?}"
        );
        let within = Run::new(&sh(r"printf '0123456789abcde\r\nnotes\n'"), t)
            .stdout(first_line())
            .run();
        assert!(matches!(within.outcome, Outcome::Exited(0)), "{within:?}");
        assert_eq!(within.line, b"0123456789abcde\r");
    }

    #[test]
    fn a_streamed_input_is_owed_whole() {
        let t = Duration::from_secs(10);
        let big = vec![b'x'; 4 << 20];
        let whole = Run::new(&sh("cat >/dev/null"), t)
            .stdin(Stdin::Stream(&mut &big[..]))
            .run();
        assert!(matches!(whole.outcome, Outcome::Exited(0)), "{whole:?}");
        assert_eq!(whole.fed, 4 << 20);
        // Exits well, but read only the start.
        let early = Run::new(&sh("head -c 10 >/dev/null"), t)
            .stdin(Stdin::Stream(&mut &big[..]))
            .run();
        assert!(
            matches!(&early.outcome, Outcome::InputRefused(e) if e.kind() == io::ErrorKind::BrokenPipe),
            "{early:?}"
        );
    }

    #[test]
    fn a_failed_source_kills_before_the_end_of_input() {
        /// The connection resets after the start of a message.
        struct Reset;
        impl Read for Reset {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        let mut source = (&b"From: a@b\n\nhalf a"[..]).chain(Reset);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let ended = Run::new(
            &sh(&format!("cat > {0}.part && mv {0}.part {0}", out.display())),
            Duration::from_secs(10),
        )
        .stdin(Stdin::Stream(&mut source))
        .run();
        assert!(
            matches!(ended.outcome, Outcome::SourceFailed(_)),
            "{ended:?}"
        );
        assert!(!out.exists(), "the command took a truncated input as whole");
    }
}
