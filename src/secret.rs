//! Where an account's password comes from, and a wrapper that keeps it out of logs,
//! error messages and debug output.

use std::fmt;
use std::io;
use std::process::{Command, Stdio};

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
    /// Nothing configured.
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
    #[error("no password is configured; set password_command, or password in a config file only you can read")]
    Missing,
}

impl PasswordSource {
    /// The password, running `password_command` if that is the source. The command
    /// runs without a shell; its stderr goes to ours, so a pinentry can prompt.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let argv = match self {
            PasswordSource::Inline(secret) => return Ok(secret.clone()),
            PasswordSource::Missing => return Err(SecretError::Missing),
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
