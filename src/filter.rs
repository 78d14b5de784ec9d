//! The `filter` command: judges a new message by its headers before it is fetched.
//! It runs without a shell with the headers on its stdin; its exit status is the
//! verdict (0 fetch, 1 delete without fetching, 2 leave it for now).

use std::io::{self, Write};
use std::time::Duration;

use crate::child::{describe, Watchdog};
use crate::policy::{Action, Reason};

/// What went wrong with a filter. Either way the message stays on the server. As
/// with an MDA (README, "Delivery targets"): a filter that cannot be started is a
/// configuration error (exit 78), one that fails or is killed a local failure (74),
/// one past `mda_timeout` a temporary one (75).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("the filter \"{program}\" could not be started ({source}); check \"filter\" in the configuration")]
    Spawn { program: String, source: io::Error },
    #[error("the filter \"{program}\" failed ({reason}; its verdicts are exit 0, 1 and 2); the message stays on the server")]
    Failed { program: String, reason: String },
    #[error("the filter \"{program}\" gave no verdict within mda_timeout ({seconds} s) and was killed; the message stays on the server")]
    Timeout { program: String, seconds: u64 },
}

/// Runs the filter on one message's headers and returns what to do with it.
pub fn judge(argv: &[String], headers: &[u8], timeout: Duration) -> Result<Action, FilterError> {
    let program = argv[0].clone();
    let failed = |reason: String| FilterError::Failed {
        program: program.clone(),
        reason,
    };
    let mut child = crate::child::spawn_fed(argv).map_err(|source| FilterError::Spawn {
        program: program.clone(),
        source,
    })?;
    let watchdog = Watchdog::start(&child, timeout);
    // Write from a thread: a filter that never reads must not block us past the
    // timeout. A filter may decide without reading everything, so a broken pipe is
    // not an error. The thread is not joined: a grandchild holding the pipe open
    // must not hold us either.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let headers = headers.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&headers);
    });
    let ended = watchdog
        .wait(&mut child)
        .map_err(|e| failed(e.to_string()))?;
    if ended.timed_out {
        return Err(FilterError::Timeout {
            program,
            seconds: timeout.as_secs(),
        });
    }
    match ended.status.code() {
        Some(0) => Ok(Action::Fetch),
        Some(1) => Ok(Action::Delete(Reason::Filter)),
        Some(2) => Ok(Action::Skip(Reason::Filter)),
        _ => Err(failed(describe(ended.status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_status_is_the_verdict() {
        let t = Duration::from_secs(10);
        let spam = sh("grep -q '^Subject: SPAM' && exit 1; exit 0");
        assert_eq!(
            judge(&spam, b"Subject: SPAM now\n\n", t).unwrap(),
            Action::Delete(Reason::Filter)
        );
        assert_eq!(
            judge(&spam, b"Subject: hello\n\n", t).unwrap(),
            Action::Fetch
        );
        assert_eq!(
            judge(&sh("exit 2"), b"x\n", t).unwrap(),
            Action::Skip(Reason::Filter)
        );
        assert!(matches!(
            judge(&sh("exit 9"), b"x\n", t),
            Err(FilterError::Failed { reason, .. }) if reason == "exit 9"
        ));
        assert!(matches!(
            judge(&sh("kill -9 $$"), b"x\n", t),
            Err(FilterError::Failed { reason, .. }) if reason == "killed by signal 9"
        ));
        assert!(matches!(
            judge(&["/nonexistent/filter".into()], b"x\n", t),
            Err(FilterError::Spawn { .. })
        ));
        // A timeout too large for the clock waits for the verdict instead of panicking.
        assert_eq!(
            judge(&sh("exit 0"), b"x\n", Duration::from_secs(u64::MAX)).unwrap(),
            Action::Fetch
        );
    }

    #[test]
    fn a_stuck_filter_is_killed() {
        let start = Instant::now();
        assert!(matches!(
            judge(
                &sh("sleep 30"),
                &vec![b'x'; 1 << 20],
                Duration::from_millis(200)
            ),
            Err(FilterError::Timeout { .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
