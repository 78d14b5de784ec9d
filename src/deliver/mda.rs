//! Delivery through an MDA command such as procmail or maildrop: run without a shell,
//! the message streamed to its stdin, its exit status deciding the outcome
//! (0 delivered, 75 deferred, anything else failed; sysexits(3)).

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use crate::sys::child::{Outcome, Run, Stdin};

use super::{
    envelope, Announce, Class, Context, DeliverError, Delivery, Kind, Recovered, Spec, Target,
    TargetError,
};

/// `mda:COMMAND ARGS`.
pub(crate) const KIND: Kind = Kind {
    name: "mda",
    takes: "COMMAND",
    parse: |rest, env| Ok(Delivery::new(Mda(env.command(rest)?))),
};

/// An MDA command split into program and arguments, `%F` and `%T` unsubstituted.
#[derive(Debug)]
struct Mda(Vec<String>);

impl fmt::Display for Mda {
    /// Each argument as one word that splits back to itself, quoted only if needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<_> = self.0.iter().map(|arg| word(arg)).collect();
        write!(f, "{}:{}", KIND.name, words.join(" "))
    }
}

fn word(arg: &str) -> std::borrow::Cow<'_, str> {
    let plain = !arg.starts_with('~')
        && !crate::sys::expand::is_shell_operator(arg)
        && shell_words::split(arg).is_ok_and(|words| words == [arg]);
    if plain {
        arg.into()
    } else {
        shell_words::quote(arg)
    }
}

impl Spec for Mda {
    fn open(&self, context: &Context) -> Result<Box<dyn Target>, DeliverError> {
        Ok(Box::new(MdaTarget::new(
            self.0.clone(),
            context.recipient.to_string(),
            context.mda_timeout,
        )))
    }
}

/// An MDA's failure: a verdict on one message, except when it cannot be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MdaError {
    #[error("the MDA \"{program}\" could not be started")]
    Spawn { program: String, source: io::Error },
    #[error("the MDA \"{program}\" failed ({reason})")]
    Failed { program: String, reason: String },
    #[error("the MDA \"{program}\" deferred the message (exit 75); the next run tries again")]
    Deferred { program: String },
    #[error("the MDA \"{program}\" took longer than mda_timeout ({seconds} s) and was killed")]
    Timeout { program: String, seconds: u64 },
}

impl TargetError for MdaError {
    fn class(&self) -> Class {
        match self {
            MdaError::Spawn { .. } => Class::Config,
            MdaError::Failed { .. } => Class::Failed,
            MdaError::Deferred { .. } | MdaError::Timeout { .. } => Class::Temporary,
        }
    }

    fn is_per_message(&self) -> bool {
        !matches!(self, MdaError::Spawn { .. })
    }
}

/// The location recorded for an MDA delivery: an MDA cannot be asked afterwards
/// whether it delivered, so recovery treats it as not delivered (at most the one
/// message in flight is delivered twice).
const LOCATION: &str = "mda";

/// EX_TEMPFAIL: the MDA asks us to try again later.
const EX_TEMPFAIL: i32 = 75;

pub(crate) struct MdaTarget {
    /// The command and its arguments, with `%F` and `%T` not yet substituted.
    argv: Vec<String>,
    recipient: String,
    timeout: Duration,
}

impl MdaTarget {
    pub(crate) fn new(argv: Vec<String>, recipient: String, timeout: Duration) -> MdaTarget {
        MdaTarget {
            argv,
            recipient,
            timeout,
        }
    }

    fn program(&self) -> String {
        self.argv[0].clone()
    }

    /// The arguments for one message. Values are substituted after the command was
    /// split, so a sender can never add an argument or reach a shell.
    fn arguments(&self, sender: &str) -> Vec<String> {
        self.argv
            .iter()
            .map(|arg| substitute(arg, sender, &self.recipient))
            .collect()
    }

    fn failed(&self, reason: impl Into<String>) -> DeliverError {
        MdaError::Failed {
            program: self.program(),
            reason: reason.into(),
        }
        .into()
    }

    /// Judges how the MDA ended; `fed` is how much of the message it was given.
    fn outcome(&self, outcome: Outcome, fed: u64) -> Result<u64, DeliverError> {
        match outcome {
            Outcome::Exited(0) => Ok(fed),
            Outcome::Exited(EX_TEMPFAIL) => Err(MdaError::Deferred {
                program: self.program(),
            }
            .into()),
            Outcome::SpawnFailed(source) => Err(MdaError::Spawn {
                program: self.program(),
                source,
            }
            .into()),
            Outcome::TimedOut => Err(MdaError::Timeout {
                program: self.program(),
                seconds: self.timeout.as_secs(),
            }
            .into()),
            Outcome::SourceFailed(e) => Err(DeliverError::Source(e)),
            Outcome::InputRefused(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(self.failed("it stopped reading the message before its end"))
            }
            Outcome::InputRefused(e) => Err(self.failed(format!("writing to it failed: {e}"))),
            other => Err(self.failed(other.to_string())),
        }
    }
}

fn substitute(arg: &str, sender: &str, recipient: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('F') => out.push_str(sender),
            Some('T') => out.push_str(recipient),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl Target for MdaTarget {
    fn deliver(&mut self, message: &mut dyn Read, announce: Announce) -> Result<u64, DeliverError> {
        let head = envelope::read_head(message).map_err(DeliverError::Source)?;
        let argv = self.arguments(&envelope::sender(&head));
        announce(LOCATION).map_err(DeliverError::State)?;
        // Streamed, so a message is never held whole; a broken source kills the
        // MDA before it sees an end of input and delivers a truncated message.
        let mut message = io::Cursor::new(head).chain(message);
        let ended = Run::new(&argv, self.timeout)
            .stdin(Stdin::Stream(&mut message))
            .run();
        self.outcome(ended.outcome, ended.fed)
    }

    fn recovers(&self) -> bool {
        false
    }

    fn recover(&mut self, location: &str) -> Result<Recovered, DeliverError> {
        if location != LOCATION {
            return Err(DeliverError::BadLocation {
                target: std::path::PathBuf::from(self.program()),
                location: location.to_string(),
            });
        }
        Ok(Recovered::NotDelivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mda(script: &str, timeout: Duration) -> MdaTarget {
        MdaTarget::new(
            vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                "%F".into(),
                "%T".into(),
            ],
            "rcpt".into(),
            timeout,
        )
    }

    fn verdict(result: &Result<u64, DeliverError>) -> Option<&MdaError> {
        result.as_ref().err()?.of_kind()
    }

    fn run(target: &mut MdaTarget, message: &[u8]) -> Result<u64, DeliverError> {
        target.deliver(&mut &message[..], &mut |_| Ok(()))
    }

    #[test]
    fn recovery_accepts_only_its_own_location() {
        let mut target = mda("cat >/dev/null", Duration::from_secs(10));
        assert_eq!(target.recover(LOCATION).unwrap(), Recovered::NotDelivered);
        for bad in ["/etc/passwd", "../x", ""] {
            assert!(matches!(
                target.recover(bad),
                Err(DeliverError::BadLocation { .. })
            ));
        }
    }

    #[test]
    fn substitution_stays_inside_one_argument() {
        assert_eq!(substitute("-f%F", "a b;rm -rf /", "t"), "-fa b;rm -rf /");
        assert_eq!(substitute("%T%%%x%", "s", "t"), "t%%x%");
    }

    #[test]
    fn exit_codes_decide() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {} && echo \"$1 $2\" >> {}",
            out.display(),
            out.display()
        );
        let n = run(
            &mut mda(&script, Duration::from_secs(10)),
            b"From: a@b\n\nhi\n",
        )
        .unwrap();
        assert_eq!(n, 14);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "From: a@b\n\nhi\na@b rcpt\n"
        );

        let deferred = run(
            &mut mda("cat >/dev/null; exit 75", Duration::from_secs(10)),
            b"x\n",
        );
        assert!(matches!(
            verdict(&deferred),
            Some(MdaError::Deferred { .. })
        ));
        let failed = run(
            &mut mda("cat >/dev/null; exit 1", Duration::from_secs(10)),
            b"x\n",
        );
        assert!(matches!(verdict(&failed), Some(MdaError::Failed { .. })));
        let killed = run(&mut mda("kill -9 $$", Duration::from_secs(10)), b"x\n");
        assert!(
            matches!(verdict(&killed), Some(MdaError::Failed { .. })),
            "{killed:?}"
        );
    }

    #[test]
    fn early_close_is_a_failure() {
        let big = vec![b'x'; 4 << 20];
        let result = run(
            &mut mda("head -c 10 >/dev/null", Duration::from_secs(10)),
            &big,
        );
        assert!(
            matches!(verdict(&result), Some(MdaError::Failed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn hung_mda_is_killed_at_the_timeout() {
        let start = std::time::Instant::now();
        let result = run(&mut mda("sleep 30", Duration::from_millis(300)), b"x\n");
        assert!(
            matches!(verdict(&result), Some(MdaError::Timeout { .. })),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));

        // It exits at once, leaving a grandchild that holds its stdin unread: the
        // message cannot be written whole, and the run still ends at the timeout.
        let start = std::time::Instant::now();
        let result = run(
            &mut mda(
                "exec 3<&0; sleep 10 <&3 & exit 0",
                Duration::from_millis(300),
            ),
            &vec![b'x'; 4 << 20],
        );
        assert!(
            matches!(verdict(&result), Some(MdaError::Timeout { .. })),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn broken_source_kills_the_mda_before_it_sees_eof() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
                }
                self.0 -= 1;
                buf[..3].copy_from_slice(b"ab\n");
                Ok(3)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut target = mda(
            &format!("cat > {0}.part && mv {0}.part {0}", out.display()),
            Duration::from_secs(10),
        );
        let result = target.deliver(&mut Broken(2), &mut |_| Ok(()));
        assert!(matches!(result, Err(DeliverError::Source(_))), "{result:?}");
        assert!(
            !out.exists(),
            "the MDA must not deliver a truncated message"
        );
    }
}
