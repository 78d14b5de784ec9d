//! Where an account's password comes from — `password`, `password_command`, the
//! system keyring, or a prompt — and a wrapper that keeps it out of logs, error
//! messages and debug output.

use std::fmt;
use std::io::{self, IsTerminal};
use std::process::{Command, Stdio};

/// The keyring service name; entries are named `USER@HOST`.
pub const KEYRING_SERVICE: &str = "popfetch";

/// A password. Its `Debug` form is redacted; only [`Secret::expose`] reveals it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// How to obtain the password of an account.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// `password` in the (owner-only) config file.
    Inline(Secret),
    /// `password_command`, already split into program and arguments.
    Command(Vec<String>),
    /// Nothing configured: the keyring entry `USER@HOST`, else a prompt on a terminal.
    Keyring(String),
    /// Nothing to ask for (an OAuth token source that is not used).
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("password_command \"{program}\" could not be started")]
    Spawn { program: String, source: io::Error },
    #[error("password_command \"{program}\" failed ({status})")]
    Failed { program: String, status: String },
    #[error("password_command \"{program}\" printed no password")]
    Empty { program: String },
    #[error("no password is configured for {entry} and the keyring holds none; run `popfetch password set ACCOUNT`, or set password_command, or password in a config file only you can read")]
    NotStored { entry: String },
    #[error("no password is configured for {entry} and no keyring is reachable ({reason}), as in a cron job without a session bus; set password_command, or password in a config file only you can read")]
    NoKeyring { entry: String, reason: String },
    #[error("cannot read the password from the terminal")]
    Prompt(#[source] io::Error),
    #[error("nothing to read a secret from")]
    Missing,
}

impl PasswordSource {
    /// The password, running `password_command` if that is the source. The command
    /// runs without a shell; its stderr goes to ours, so a pinentry can prompt.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let argv = match self {
            PasswordSource::Inline(secret) => return Ok(secret.clone()),
            PasswordSource::Missing => return Err(SecretError::Missing),
            PasswordSource::Keyring(entry) => return from_keyring_or_prompt(entry),
            PasswordSource::Command(argv) => argv,
        };
        let program = argv[0].clone();
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|source| SecretError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(SecretError::Failed {
                program,
                status: output.status.to_string(),
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let first = stdout.lines().next().unwrap_or("").trim_end_matches('\r');
        if first.is_empty() {
            return Err(SecretError::Empty { program });
        }
        Ok(Secret(first.to_string()))
    }
}

/// The keyring entry, else a prompt when a person is at a terminal.
fn from_keyring_or_prompt(entry: &str) -> Result<Secret, SecretError> {
    let unreachable = match keyring_get(entry) {
        Ok(Some(secret)) => return Ok(secret),
        Ok(None) => None,
        Err(reason) => Some(reason),
    };
    if io::stdin().is_terminal() {
        let password = rpassword::prompt_password(format!("Password for {entry}: "))
            .map_err(SecretError::Prompt)?;
        return Ok(Secret(password));
    }
    Err(match unreachable {
        None => SecretError::NotStored {
            entry: entry.to_string(),
        },
        Some(reason) => SecretError::NoKeyring {
            entry: entry.to_string(),
            reason,
        },
    })
}

/// Reads the keyring entry: `Ok(None)` when there is none, `Err` when no keyring
/// can be reached.
fn keyring_get(entry: &str) -> Result<Option<Secret>, String> {
    let item = keyring::Entry::new(KEYRING_SERVICE, entry).map_err(|e| e.to_string())?;
    match item.get_password() {
        Ok(password) => Ok(Some(Secret(password))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Stores a password in the keyring under `entry`.
pub fn keyring_set(entry: &str, password: &Secret) -> Result<(), String> {
    keyring::Entry::new(KEYRING_SERVICE, entry)
        .and_then(|item| item.set_password(password.expose()))
        .map_err(|e| e.to_string())
}

/// Removes the keyring entry; `Ok(false)` if there was none.
pub fn keyring_delete(entry: &str) -> Result<bool, String> {
    let item = keyring::Entry::new(KEYRING_SERVICE, entry).map_err(|e| e.to_string())?;
    match item.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a new password: with a prompt on a terminal, else the first line of stdin
/// (so scripts can pipe it in without putting it in argv).
pub fn read_new_password(entry: &str) -> io::Result<Secret> {
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
    Ok(Secret(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> PasswordSource {
        PasswordSource::Command(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn first_line_of_the_command() {
        let s = command(&["printf", "s3cret\\nsecond\\n"])
            .resolve()
            .unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn failing_or_silent_command_is_an_error() {
        assert!(matches!(
            command(&["false"]).resolve(),
            Err(SecretError::Failed { .. })
        ));
        assert!(matches!(
            command(&["true"]).resolve(),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            command(&["/nonexistent/pw"]).resolve(),
            Err(SecretError::Spawn { .. })
        ));
    }
}
