//! One sync per account at a time: an exclusive flock(2) on a lock file in the state
//! directory. The kernel drops the lock when its holder dies, so the lock of a killed
//! run never blocks the next one.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::durable::open_private;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("another popfetch is syncing this account (lock {path} is held); it will be fetched on a later run")]
    Held { path: PathBuf },
    #[error("a popfetch daemon is already running for this user (its lock {path} is held); stop it first, or send it SIGHUP to reload")]
    DaemonRunning { path: PathBuf },
    #[error("cannot lock {path}")]
    Io { path: PathBuf, source: io::Error },
}

impl LockError {
    /// Whether `err` says another popfetch holds the account: a run that did
    /// not happen, rather than one that failed.
    pub(crate) fn held(err: &anyhow::Error) -> bool {
        err.chain()
            .any(|cause| matches!(cause.downcast_ref(), Some(LockError::Held { .. })))
    }
}

/// Held for as long as the account is being synced.
#[derive(Debug)]
pub(crate) struct AccountLock {
    _file: File,
}

impl AccountLock {
    /// Takes the lock at once or fails: a cron run must not queue up behind another.
    pub(crate) fn acquire(path: &Path) -> Result<AccountLock, LockError> {
        let io_error = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = open_private(path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => Ok(AccountLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                path: path.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let first = AccountLock::acquire(&path).unwrap();
        assert!(matches!(
            AccountLock::acquire(&path),
            Err(LockError::Held { .. })
        ));
        drop(first);
        AccountLock::acquire(&path).unwrap();
    }
}
