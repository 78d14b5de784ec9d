//! Exit status in the sysexits(3) style, so that cron wrappers can tell "retry later"
//! from "fix your config", and the one function that maps an error to it.

use std::process::ExitCode;

use crate::config::secret::SecretError;
use crate::config::ConfigError;
use crate::deliver::{Class, DeliverError};
use crate::net::TlsConfigError;
use crate::oauth::grant;
use crate::oauth::login::LoginError;
use crate::oauth::redirect::RedirectError;
use crate::oauth::store::{RefreshError, StoreError};
use crate::pop3::ErrorKind;
use crate::sync::auth::ChoiceError;
use crate::sync::filter::FilterError;
use crate::sync::lock::LockError;
use crate::sync::state::StateError;

/// The exit codes popfetch uses. With several accounts the highest one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    /// EX_USAGE: bad command line.
    Usage = 64,
    /// EX_UNAVAILABLE: connect, DNS, TLS handshake or certificate failure.
    Unavailable = 69,
    /// EX_SOFTWARE: a bug in popfetch.
    Software = 70,
    /// EX_IOERR: local I/O failed (delivery or state).
    IoError = 74,
    /// EX_TEMPFAIL: try again later.
    TempFail = 75,
    /// EX_PROTOCOL: the server broke the protocol.
    Protocol = 76,
    /// EX_NOPERM: authentication rejected.
    NoPerm = 77,
    /// EX_CONFIG: configuration error.
    Config = 78,
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The exit code for an error: the first typed error in its chain decides.
pub(crate) fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = crate::sync::connect::pop3_error(cause) {
            return match e.kind() {
                ErrorKind::Unavailable => Exit::Unavailable,
                ErrorKind::Temporary => Exit::TempFail,
                ErrorKind::Protocol => Exit::Protocol,
                ErrorKind::Auth => Exit::NoPerm,
                ErrorKind::Config => Exit::Config,
            };
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::UnknownAccount { .. } => Exit::Usage,
                _ => Exit::Config,
            };
        }
        if let Some(e) = cause.downcast_ref::<DeliverError>() {
            return match e.class() {
                Class::Failed => Exit::IoError,
                Class::Temporary => Exit::TempFail,
                Class::Config => Exit::Config,
                Class::Unavailable => Exit::Unavailable,
                Class::Auth => Exit::NoPerm,
            };
        }
        if let Some(e) = cause.downcast_ref::<FilterError>() {
            return match e {
                FilterError::Spawn { .. } => Exit::Config,
                FilterError::Failed { .. } => Exit::IoError,
                FilterError::Timeout { .. } => Exit::TempFail,
            };
        }
        if cause
            .downcast_ref::<crate::cmd::adopt::NoAnswer>()
            .is_some()
        {
            return Exit::Usage;
        }
        // What the user typed or piped in is not what was asked for.
        if let Some(LoginError::Redirect(RedirectError::Pasted) | LoginError::NotAToken(_)) =
            cause.downcast_ref()
        {
            return Exit::Usage;
        }
        let oauth = if let Some(e) = cause.downcast_ref::<RefreshError>() {
            Some(e.class())
        } else if let Some(e) = cause.downcast_ref::<LoginError>() {
            Some(e.class())
        } else if let Some(e) = cause.downcast_ref::<StoreError>() {
            Some(e.class())
        } else {
            cause
                .downcast_ref::<grant::Error>()
                .map(grant::Error::class)
        };
        if let Some(class) = oauth {
            return match class {
                grant::Class::NeedsLogin => Exit::NoPerm,
                grant::Class::Temporary => Exit::TempFail,
                grant::Class::Config => Exit::Config,
                grant::Class::Protocol => Exit::Protocol,
                grant::Class::Local => Exit::IoError,
            };
        }
        if let Some(e) = cause.downcast_ref::<SecretError>() {
            return if e.is_temporary() {
                Exit::TempFail
            } else {
                Exit::Config
            };
        }
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return match e {
                // Another mailbox's state where this one's belongs: fixed by hand.
                StateError::Foreign { .. } => Exit::Config,
                _ => Exit::IoError,
            };
        }
        if let Some(e) = cause.downcast_ref::<LockError>() {
            return match e {
                LockError::Held { .. } | LockError::DaemonRunning { .. } => Exit::TempFail,
                LockError::Io { .. } => Exit::IoError,
            };
        }
        if cause.is::<TlsConfigError>() || cause.is::<ChoiceError>() {
            return Exit::Config;
        }
    }
    Exit::Software
}
