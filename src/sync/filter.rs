//! The `filter` command: judges a new message by its headers before it is fetched.
//! It runs without a shell with the headers on its stdin; its exit status is the
//! verdict (0 fetch, 1 delete without fetching, 2 leave it for now).

use std::io;
use std::time::Duration;

use crate::sync::policy::{Action, Reason};
use crate::sys::child::{Outcome, Run, Stdin};

/// What went wrong with a filter. Either way the message stays on the server. As
/// with an MDA (README, "Delivery targets"): a filter that cannot be started is a
/// configuration error (exit 78), one that fails or is killed a local failure (74),
/// one past `mda_timeout` a temporary one (75).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    #[error("the filter \"{program}\" could not be started ({source}); check \"filter\" in the configuration")]
    Spawn { program: String, source: io::Error },
    #[error("the filter \"{program}\" failed ({reason}; its verdicts are exit 0, 1 and 2); the message stays on the server")]
    Failed { program: String, reason: String },
    #[error("the filter \"{program}\" gave no verdict within mda_timeout ({seconds} s) and was killed; the message stays on the server")]
    Timeout { program: String, seconds: u64 },
}

/// Runs the filter on one message's headers and returns what to do with it. The
/// headers are offered, not forced: a filter may decide without reading them all.
pub(crate) fn judge(
    argv: &[String],
    headers: &[u8],
    timeout: Duration,
) -> Result<Action, FilterError> {
    let program = argv[0].clone();
    let ended = Run::new(argv, timeout)
        .stdin(Stdin::Offer(headers.to_vec()))
        .run();
    match ended.outcome {
        Outcome::Exited(0) => Ok(Action::Fetch),
        Outcome::Exited(1) => Ok(Action::Delete(Reason::Filter)),
        Outcome::Exited(2) => Ok(Action::Skip(Reason::Filter)),
        Outcome::SpawnFailed(source) => Err(FilterError::Spawn { program, source }),
        Outcome::TimedOut => Err(FilterError::Timeout {
            program,
            seconds: timeout.as_secs(),
        }),
        other => Err(FilterError::Failed {
            program,
            reason: other.to_string(),
        }),
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
