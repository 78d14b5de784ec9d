//! Where an account's password comes from — `password`, `password_command`, the
//! system keyring, or a prompt — and the commands that print a secret
//! (`password_command`, `oauth_token_command`, `oauth_client_secret_command`).

use std::io::{self, IsTerminal};
use std::time::Duration;

use crate::secret::{Secret, KEYRING_SERVICE};
use crate::sys::child::{Outcome, Overflow, Run, Stdout};
use crate::sys::expand::{is_shell_operator, sh_c, toml_string};

/// The most a command's first line (the secret) may hold: an OAuth access token
/// runs to a few KiB, a password to far less.
const FIRST_LINE_MAX: usize = 16 * 1024;

/// The most read after the first line (`pass show` prints notes there) before the
/// command is taken as runaway and killed, so `yes` cannot fill our memory.
const REST_MAX: usize = 64 * 1024;

/// `password_command` or `oauth_token_command`: the command as written, split into
/// program and arguments, and how long it may run.
#[derive(Debug, Clone)]
pub(crate) struct SecretCommand {
    /// The config key, for messages.
    pub key: &'static str,
    /// The command as written in the config, for the `sh -c` hint.
    pub text: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// How to obtain the password of an account.
#[derive(Debug, Clone)]
pub(crate) enum PasswordSource {
    /// `password` in the (owner-only) config file.
    Inline(Secret),
    /// `password_command` or `oauth_token_command`.
    Command(SecretCommand),
    /// Nothing configured: the keyring entry `USER@HOST`, else a prompt on a terminal.
    Keyring(String),
    /// Nothing to ask for (an OAuth token source that is not used).
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("{key} \"{program}\" could not be started{hint}")]
    Spawn {
        key: &'static str,
        program: String,
        hint: String,
        source: io::Error,
    },
    #[error("{key} \"{program}\" failed ({status}){hint}")]
    Failed {
        key: &'static str,
        program: String,
        status: String,
        hint: String,
    },
    #[error("{key} \"{program}\" printed nothing on its first line{hint}")]
    Empty {
        key: &'static str,
        program: String,
        hint: String,
    },
    #[error("{key} \"{program}\" printed {what} and was killed; it must print the secret on its first line and end")]
    Runaway {
        key: &'static str,
        program: String,
        what: String,
    },
    #[error("{key} \"{program}\" did not finish within timeout ({seconds} s) and was killed")]
    Timeout {
        key: &'static str,
        program: String,
        seconds: u64,
    },
    #[error("no password is configured for {entry} and the keyring holds none; run `popfetch password set ACCOUNT`, or set password_command, or password in a config file only you can read")]
    NotStored { entry: String },
    #[error("no password is configured for {entry}, and no Secret Service (the desktop keyring) is running, as in cron or over ssh; set password_command, for example password_command = \"pass show mail/{entry}\"")]
    NoSecretService { entry: String },
    #[error("cannot read the password from the terminal")]
    Prompt(#[source] io::Error),
    #[error("nothing to read a secret from")]
    Missing,
}

impl SecretError {
    /// A command that was slow (a pinentry nobody answered) may do better later.
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(self, SecretError::Timeout { .. })
    }
}

impl PasswordSource {
    /// The password, running the command if that is the source.
    pub(crate) fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            PasswordSource::Inline(secret) => Ok(secret.clone()),
            PasswordSource::Missing => Err(SecretError::Missing),
            PasswordSource::Keyring(entry) => from_keyring_or_prompt(entry),
            PasswordSource::Command(command) => command.run(),
        }
    }
}

impl SecretCommand {
    /// Runs the command without a shell, with nothing on its stdin; its stderr goes
    /// to ours, so a pinentry can prompt. Reads its first line, bounded in size, and
    /// waits at most `timeout`.
    pub(crate) fn run(&self) -> Result<Secret, SecretError> {
        let program = self.argv[0].clone();
        let ended = Run::new(&self.argv, self.timeout)
            .stdout(Stdout::FirstLine {
                line_max: FIRST_LINE_MAX,
                rest_max: REST_MAX,
            })
            .run();
        let runaway = |what| SecretError::Runaway {
            key: self.key,
            program: program.clone(),
            what,
        };
        match ended.outcome {
            Outcome::Exited(0) => {}
            Outcome::SpawnFailed(source) => {
                return Err(SecretError::Spawn {
                    key: self.key,
                    program,
                    hint: self.shell_hint(),
                    source,
                })
            }
            Outcome::OutputTooLarge(Overflow::FirstLine) => {
                return Err(runaway(format!(
                    "more than {} KiB without a line end",
                    FIRST_LINE_MAX / 1024
                )))
            }
            Outcome::OutputTooLarge(Overflow::Rest) => {
                return Err(runaway(format!("more than {} KiB", REST_MAX / 1024)))
            }
            Outcome::TimedOut => return Err(self.timed_out(program)),
            Outcome::WaitFailed(e) => {
                return Err(SecretError::Failed {
                    key: self.key,
                    program,
                    status: e.to_string(),
                    hint: String::new(),
                })
            }
            other => {
                return Err(SecretError::Failed {
                    key: self.key,
                    program,
                    status: other.to_string(),
                    hint: self.shell_hint(),
                })
            }
        }
        let line = String::from_utf8_lossy(&ended.line);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return Err(SecretError::Empty {
                key: self.key,
                program,
                hint: self.shell_hint(),
            });
        }
        Ok(Secret::new(line.to_string()))
    }

    fn timed_out(&self, program: String) -> SecretError {
        SecretError::Timeout {
            key: self.key,
            program,
            seconds: self.timeout.as_secs(),
        }
    }

    /// When the command looks written for a shell, says that none runs it and how
    /// to ask for one; else nothing.
    fn shell_hint(&self) -> String {
        if !looks_like_shell(&self.argv) {
            return String::new();
        }
        format!(
            "; it runs without a shell, so write {} = {}",
            self.key,
            toml_string(&sh_c(&self.text))
        )
    }
}

/// Whether a command looks written for a shell: an operator, a variable, a `~` not
/// at the start of an argument (a leading one is expanded), a backquote, a glob, or
/// quotes left over after splitting (quoting meant for a shell inside the command).
pub(crate) fn looks_like_shell(argv: &[String]) -> bool {
    argv.iter().any(|arg| {
        is_shell_operator(arg)
            || arg.contains(['$', '`', '\'', '"', '|', '>', '<', ';', '*'])
            || arg.contains("&&")
            || arg.get(1..).is_some_and(|rest| rest.contains('~'))
    })
}

/// The keyring entry, else a prompt when a person is at a terminal.
fn from_keyring_or_prompt(entry: &str) -> Result<Secret, SecretError> {
    let unreachable = match keyring_get(entry) {
        Ok(Some(secret)) => return Ok(secret),
        Ok(None) => false,
        Err(()) => true,
    };
    if io::stdin().is_terminal() {
        // The POP3 login and a delivery target's login are made at once (see
        // `sync::open_state_and_session`); their prompts take turns.
        static PROMPT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = PROMPT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let password = rpassword::prompt_password(format!("Password for {entry}: "))
            .map_err(SecretError::Prompt)?;
        return Ok(Secret::new(password));
    }
    let entry = entry.to_string();
    Err(if unreachable {
        SecretError::NoSecretService { entry }
    } else {
        SecretError::NotStored { entry }
    })
}

/// Reads the keyring entry: `Ok(None)` when there is none, `Err` when no keyring
/// can be reached. The keyring's own text is not shown: it names D-Bus internals,
/// not the fix.
fn keyring_get(entry: &str) -> Result<Option<Secret>, ()> {
    let item = keyring::Entry::new(KEYRING_SERVICE, entry).map_err(|_| ())?;
    match item.get_password() {
        Ok(password) => Ok(Some(Secret::new(password))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(_) => Err(()),
    }
}

/// What to say when the keyring fails: no Secret Service is the usual cause.
fn keyring_failure(e: keyring::Error) -> String {
    match e {
        keyring::Error::PlatformFailure(_)
        | keyring::Error::NoStorageAccess(_)
        | keyring::Error::NoDefaultStore => "no Secret Service (the desktop keyring) is running, as in cron or over ssh; set password_command in the config instead".to_string(),
        other => other.to_string(),
    }
}

/// Stores a password in the keyring under `entry`.
pub(crate) fn keyring_set(entry: &str, password: &Secret) -> Result<(), String> {
    keyring::Entry::new(KEYRING_SERVICE, entry)
        .and_then(|item| item.set_password(password.expose()))
        .map_err(keyring_failure)
}

/// Removes the keyring entry; `Ok(false)` if there was none.
pub(crate) fn keyring_delete(entry: &str) -> Result<bool, String> {
    let item = keyring::Entry::new(KEYRING_SERVICE, entry).map_err(keyring_failure)?;
    match item.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(keyring_failure(e)),
    }
}

/// Reads a new password: with a prompt on a terminal, else the first line of stdin
/// (so scripts can pipe it in without putting it in argv).
pub(crate) fn read_new_password(entry: &str) -> io::Result<Secret> {
    let line = if io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {entry}: "))?
    } else {
        let mut line = String::new();
        io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the password is empty",
        ));
    }
    Ok(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn command_text(text: &str, timeout: Duration) -> PasswordSource {
        PasswordSource::Command(SecretCommand {
            key: "password_command",
            text: text.to_string(),
            argv: shell_words::split(text).unwrap(),
            timeout,
        })
    }

    fn command(text: &str) -> PasswordSource {
        command_text(text, Duration::from_secs(10))
    }

    #[test]
    fn first_line_of_the_command() {
        let s = command(r"printf 's3cret\nsecond\n'").resolve().unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn failing_or_silent_command_is_an_error() {
        assert!(matches!(
            command("false").resolve(),
            Err(SecretError::Failed { .. })
        ));
        assert!(matches!(
            command("true").resolve(),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            command("/nonexistent/pw").resolve(),
            Err(SecretError::Spawn { .. })
        ));
    }

    #[test]
    fn endless_output_is_cut_short() {
        let start = Instant::now();
        let err = command("yes").resolve().unwrap_err();
        assert!(matches!(err, SecretError::Runaway { .. }), "{err}");
        let err = command("head -c 100000000 /dev/zero")
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("16 KiB"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        // A few lines after the first are normal (`pass show` prints notes there).
        let s = command(r"printf 'pw\nurl: x\nlogin: y\n'")
            .resolve()
            .unwrap();
        assert_eq!(s.expose(), "pw");
    }

    #[test]
    fn a_slow_command_times_out_once() {
        // Silent; a line in time but no exit; an exit but a grandchild holding stdout.
        for text in [
            "sleep 30",
            "sh -c 'echo pw; sleep 30'",
            "sh -c 'sleep 30 & exit 0'",
        ] {
            let start = Instant::now();
            let err = command_text(text, Duration::from_millis(300))
                .resolve()
                .unwrap_err();
            assert!(matches!(err, SecretError::Timeout { .. }), "{text}: {err}");
            assert!(err.is_temporary());
            assert!(start.elapsed() < Duration::from_secs(5), "{text}");
        }
    }

    #[test]
    fn a_shell_ism_gets_the_sh_c_hint() {
        let err = command("cat /nonexistent/$USER-pw").resolve().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("runs without a shell"), "{text}");
        assert!(
            text.contains(r#"password_command = "sh -c 'cat /nonexistent/$USER-pw'""#),
            "{text}"
        );
        let plain = command("false").resolve().unwrap_err().to_string();
        assert!(!plain.contains("shell"), "{plain}");
    }
}
