//! The `filter` command: judges a new message by its headers before it is fetched.
//! It runs without a shell with the headers on its stdin; its exit status is the
//! verdict (0 fetch, 1 delete without fetching, 2 leave it for now).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::policy::{Action, Reason};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("the filter \"{program}\" could not be started")]
    Spawn { program: String, source: io::Error },
    #[error("the filter \"{program}\" failed ({reason}); the message stays on the server")]
    Failed { program: String, reason: String },
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
    // Write from a thread: a filter that never reads must not block us past the
    // timeout. A filter may decide without reading everything, so a broken pipe is
    // not an error.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let headers = headers.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&headers);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no verdict within {} s", timeout.as_secs())));
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    let _ = writer.join();
    match status.code() {
        Some(0) => Ok(Action::Fetch),
        Some(1) => Ok(Action::Delete(Reason::Filter)),
        Some(2) => Ok(Action::Skip(Reason::Filter)),
        Some(code) => Err(failed(format!("exit {code}; 0, 1 and 2 are verdicts"))),
        None => Err(failed(status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(judge(&sh("exit 9"), b"x\n", t).is_err());
        assert!(judge(&["/nonexistent/filter".into()], b"x\n", t).is_err());
    }

    #[test]
    fn a_stuck_filter_is_killed() {
        let start = Instant::now();
        assert!(judge(
            &sh("sleep 30"),
            &vec![b'x'; 1 << 20],
            Duration::from_millis(200)
        )
        .is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
